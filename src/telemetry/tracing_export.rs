//! Optional OpenTelemetry trace export (OTLP over gRPC): each call's
//! `request` span becomes a server span named after the gRPC method (or the
//! HTTP path), child of the caller's W3C `traceparent` when it sends one.

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct TracingGuard(SdkTracerProvider);

impl TracingGuard {
    /// Sends every finished span now.
    pub fn flush(&self) {
        let _ = self.0.force_flush();
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// The provider exporting to `endpoint`, and the layer that feeds it.
pub fn layer<S>(
    endpoint: &str,
    service_name: &str,
) -> anyhow::Result<(
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    TracingGuard,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("resource-broker");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        TracingGuard(provider),
    ))
}

/// Makes `span` a child of the trace named by the request's `traceparent`.
pub fn join_caller_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    if headers.contains_key(&TRACEPARENT) {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let _ = span.set_parent(parent);
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

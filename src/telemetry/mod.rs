//! Logs and metrics: set-up of the `tracing` subscriber, the per-request
//! layer, and the Prometheus registry.

pub mod metrics;
mod request_log;
pub mod tracing_export;

pub use request_log::{REQUEST_ID, log_requests, logged};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};
pub use tracing_export::TracingGuard;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// `format` picks human text or one JSON object per line (with the request
/// id of the call each line belongs to). With an OTLP endpoint, spans are
/// exported too; keep the guard alive until exit so they are flushed.
pub fn init(config: &LogConfig) -> anyhow::Result<Option<TracingGuard>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, guard) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (layer, guard) = tracing_export::layer(endpoint, &config.otel_service_name)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let registry = tracing_subscriber::registry().with(otel).with(filter);
    let result = match config.log_format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    // A second call (tests, `broker dev`) keeps the first subscriber.
    drop(result);
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    Ok(guard)
}

/// Logs to stderr only, for `broker mcp-stdio`, whose stdout is the protocol.
pub fn init_stderr() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
        .try_init();
}

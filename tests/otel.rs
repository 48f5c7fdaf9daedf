//! Optional trace export: with an OTLP endpoint set, every call becomes a
//! server span named after its method, joined to the caller's trace. The
//! collector here is a real OTLP/gRPC TraceService on loopback.
//! (Its own test binary: the tracing subscriber is process-global.)

mod common;

use std::time::Duration;

use common::TestBroker;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use resource_broker::{
    config::{LogConfig, LogFormat},
    proto::QueryRequest,
};
use tokio::sync::mpsc;

struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_exported_as_spans_in_the_callers_trace() {
    let (tx, mut exported) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let guard = resource_broker::telemetry::init(&LogConfig {
        log_format: LogFormat::Text,
        otlp_endpoint: Some(endpoint),
        otel_service_name: "broker-under-test".into(),
    })
    .unwrap()
    .expect("export is on");

    let broker = TestBroker::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(QueryRequest {
        sql: "SELECT 1".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    broker.database().await.query(request).await.unwrap();
    guard.flush();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let batch = tokio::time::timeout_at(deadline, exported.recv())
            .await
            .expect("the Query span was not exported within 10 s")
            .unwrap();
        for resource in &batch.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|a| a.key == "service.name");
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                if span.name == "/broker.v1.Database/Query" {
                    assert_eq!(
                        hex::encode(&span.trace_id),
                        trace_id,
                        "the span joins the caller's trace"
                    );
                    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
                    let service = format!("{:?}", service.and_then(|a| a.value.as_ref()));
                    assert!(service.contains("broker-under-test"), "{service}");
                    return;
                }
            }
        }
    }
}

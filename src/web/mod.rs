//! The plain HTTP/1.1 doorway on the gRPC port: the seed's `GET /health`
//! (for load balancers and unmigrated agents), its `POST /call_tool`, and a
//! JSON 404 for the rest.

pub mod call_tool;
mod health;
mod metrics;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};

use crate::health::Health;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct WebState {
    pub health: Health,
    /// The broker.v1 services in-process: HTTP doorways call them as gRPC
    /// clients, so they share every layer (logs, metrics, policy) with gRPC.
    pub grpc: crate::server::InProcess,
    /// For pool gauges at scrape time.
    pub db: crate::database::Database,
}

/// Routes for plain HTTP clients.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/health", get(health::handler))
        .route("/metrics", get(metrics::handler))
        .route(
            "/call_tool",
            post(call_tool::handler).layer(DefaultBodyLimit::max(call_tool::MAX_REQUEST_BYTES)),
        )
        .with_state(state)
}

/// Answers requests no route matched: gRPC clients get UNIMPLEMENTED, HTTP
/// clients a JSON 404.
pub async fn fallback(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let path = request.uri().path().to_owned();
        return tonic::Status::unimplemented(format!("unknown method {path}")).into_http();
    }
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no route for {} {}", request.method(), request.uri().path()) })),
    )
        .into_response()
}

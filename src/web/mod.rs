//! The plain HTTP/1.1 doorway on the gRPC port: the seed's `GET /health`
//! (for load balancers and unmigrated agents), its `POST /call_tool`,
//! `GET /metrics`, and JSON errors (404, 405) for the rest.

pub mod call_tool;
mod health;
mod metrics;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request},
    http::{StatusCode, header::ALLOW},
    middleware::{self, Next},
    response::{IntoResponse, Response},
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
        .layer(middleware::from_fn(method_not_allowed_as_json))
}

/// A route called with the wrong method: 405 with `{"error"}` (and the
/// `Allow` header) instead of axum's empty body, like every other error.
async fn method_not_allowed_as_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let message = format!("method {method} is not allowed on {path} (allowed: {allowed})");
    let mut json = (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response();
    if let Some(allow) = allow {
        json.headers_mut().insert(ALLOW, allow);
    }
    json
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

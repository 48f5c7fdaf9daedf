//! The plain HTTP/1.1 doorway on the gRPC port: the seed's `GET /health`
//! (for load balancers and unmigrated agents) and a JSON 404 for the rest.

mod health;

use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::get};

use crate::health::Health;

/// Routes for plain HTTP clients.
pub fn router(health: Health) -> Router {
    Router::new().route("/health", get(health::handler)).with_state(health)
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

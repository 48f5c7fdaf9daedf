//! `GET /health` in the seed's shape, from the same probes as grpc.health.v1:
//! 200 when every backend is up, 503 (naming the failing backend) otherwise.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use super::WebState;
use crate::health::BackendState;

pub async fn handler(State(state): State<WebState>) -> (StatusCode, Json<Value>) {
    let snapshot = state.health.snapshot();
    let word = |state: &BackendState| match state {
        BackendState::Ok => "ok",
        BackendState::Starting => "starting",
        BackendState::Down(_) => "error",
    };
    let (code, status) = if snapshot.serving() {
        (StatusCode::OK, "healthy")
    } else if snapshot.draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    };
    let body = json!({
        "status": status,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "services": {
            "postgresql": word(&snapshot.postgres),
            "s3": word(&snapshot.s3),
        },
    });
    (code, Json(body))
}

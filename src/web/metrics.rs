//! `GET /metrics`: Prometheus text exposition (OpenMetrics format).

use axum::{extract::State, http::header, response::IntoResponse};

use super::WebState;
use crate::telemetry::metrics::metrics;

pub async fn handler(State(state): State<WebState>) -> impl IntoResponse {
    state.db.record_pool_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().encode(),
    )
}

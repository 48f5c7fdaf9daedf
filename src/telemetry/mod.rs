//! Logs and metrics: set-up of the `tracing` subscriber, the per-request
//! layer, and the Prometheus registry.

pub mod metrics;
mod request_log;

pub use request_log::{REQUEST_ID, log_requests};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// `format` picks human text or one JSON object per line (with the request
/// id of the call each line belongs to).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
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
}

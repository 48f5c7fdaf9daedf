//! Logs: set-up of the `tracing` subscriber and the per-request log line.

mod request_log;

pub use request_log::log_requests;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber: `RUST_LOG` filters (default `info`),
/// `format` picks human text or one JSON object per line.
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
                    .with_current_span(false),
            )
            .try_init(),
    };
    // A second call (tests, `broker dev`) keeps the first subscriber.
    drop(result);
}

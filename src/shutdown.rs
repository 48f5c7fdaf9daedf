//! The shutdown signal: SIGTERM (how ECS stops a task) or SIGINT (Ctrl-C).

use tokio::signal::unix::{SignalKind, signal as unix_signal};

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let (Ok(mut term), Ok(mut int)) = (
        unix_signal(SignalKind::terminate()),
        unix_signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; the broker will only stop when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

//! Deadlines: the client's `grpc-timeout` bounds all work of a call. The
//! layer stops waiting at the deadline (dropping the handler's future, which
//! cancels backend work: see `database::cancel`), and publishes the deadline
//! to the code below it so that retries and statement timeouts fit inside.

use std::{future::Future, time::Duration};

use axum::{extract::Request, middleware::Next, response::Response};
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Time left before the current call's deadline, if it has one.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Runs `work` with a deadline `timeout` from now (used by tests and the layer).
pub async fn scope<F: Future>(timeout: Duration, work: F) -> F::Output {
    DEADLINE.scope(Instant::now() + timeout, work).await
}

/// Axum middleware for gRPC routes: enforces `grpc-timeout`.
pub async fn enforce(request: Request, next: Next) -> Response {
    let Some(timeout) = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| parse_grpc_timeout(v.to_str().ok()?))
    else {
        return next.run(request).await;
    };
    match tokio::time::timeout(timeout, scope(timeout, next.run(request))).await {
        Ok(response) => response,
        Err(_) => tonic::Status::deadline_exceeded(format!("deadline of {timeout:?} exceeded"))
            .into_http(),
    }
}

/// Parses gRPC's `grpc-timeout` header: up to 8 digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_inside_a_scope_only() {
        assert_eq!(remaining(), None);
        scope(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(remaining(), Some(Duration::from_millis(1500)));
        })
        .await;
    }
}

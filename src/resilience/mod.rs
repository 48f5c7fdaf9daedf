//! Keeping the broker up when its backends are not. A [`Guard`] per backend
//! combines a circuit breaker and a retry policy around every backend call;
//! [`deadline`] and [`load_shed`] are request layers.

pub mod breaker;
pub mod deadline;
pub mod load_shed;
pub mod retry;

use std::{future::Future, time::Duration};

use clap::Args;

use crate::{config::parse_duration, telemetry::metrics::metrics};
pub use breaker::Breaker;
pub use retry::{RetryBudget, RetryPolicy};

/// Breaker, retry and load-shedding settings (defaults from the seed).
#[derive(Debug, Clone, Args)]
pub struct ResilienceConfig {
    /// Consecutive backend failures that open a circuit breaker.
    #[arg(long, env = "BROKER_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long an open breaker fails calls at once before a trial call.
    #[arg(long, env = "BROKER_BREAKER_RECOVERY", default_value = "60s", value_parser = parse_duration)]
    pub breaker_recovery: Duration,

    /// Attempts per idempotent call (1 disables retries).
    #[arg(long, env = "BROKER_RETRY_ATTEMPTS", default_value_t = 3)]
    pub retry_attempts: u32,

    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, env = "BROKER_RETRY_BASE_DELAY", default_value = "50ms", value_parser = parse_duration)]
    pub retry_base_delay: Duration,

    /// Longest retry delay.
    #[arg(long, env = "BROKER_RETRY_MAX_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Requests served at once; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "BROKER_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Requests one caller may have in flight at once; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "BROKER_MAX_IN_FLIGHT_PER_CALLER", default_value_t = 256)]
    pub max_in_flight_per_caller: usize,

    /// Deadline of a unary call whose client sent no grpc-timeout.
    #[arg(long, env = "BROKER_DEFAULT_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub default_deadline: Duration,

    /// Deadline of a GetObject or PutObject stream whose client sent no
    /// grpc-timeout (an hour moves 1 GiB at 300 KB/s).
    #[arg(long, env = "BROKER_STREAM_DEADLINE", default_value = "1h", value_parser = parse_duration)]
    pub stream_deadline: Duration,

    /// Longest deadline a client may ask for; a longer grpc-timeout is lowered to it.
    #[arg(long, env = "BROKER_MAX_DEADLINE", default_value = "1h", value_parser = parse_duration)]
    pub max_deadline: Duration,
}

impl ResilienceConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.breaker_failures == 0 {
            anyhow::bail!("BROKER_BREAKER_FAILURES must be at least 1");
        }
        if self.retry_attempts == 0 {
            anyhow::bail!("BROKER_RETRY_ATTEMPTS must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_in_flight_per_caller == 0 {
            anyhow::bail!(
                "BROKER_MAX_IN_FLIGHT and BROKER_MAX_IN_FLIGHT_PER_CALLER must be at least 1"
            );
        }
        if self.default_deadline.is_zero() || self.stream_deadline.is_zero() {
            anyhow::bail!("BROKER_DEFAULT_DEADLINE and BROKER_STREAM_DEADLINE must be positive");
        }
        if self.default_deadline.max(self.stream_deadline) > self.max_deadline {
            anyhow::bail!(
                "BROKER_MAX_DEADLINE ({:?}) is shorter than BROKER_DEFAULT_DEADLINE or BROKER_STREAM_DEADLINE",
                self.max_deadline
            );
        }
        Ok(())
    }

    /// The deadline layer's settings.
    pub fn deadlines(&self) -> deadline::Deadlines {
        deadline::Deadlines {
            unary: self.default_deadline,
            stream: self.stream_deadline,
            max: self.max_deadline,
        }
    }
}

/// What the guard needs to know about a backend's errors.
pub trait BackendError: std::fmt::Display {
    /// The backend may answer differently if asked again (it was unreachable,
    /// overloaded or timed out), as opposed to an answer such as "not found".
    fn is_transient(&self) -> bool;
    /// The error says the backend is failing (counts against the breaker);
    /// by default, the transient errors.
    fn trips_breaker(&self) -> bool {
        self.is_transient()
    }
    /// The error for a call refused by an open breaker.
    fn unavailable(message: String) -> Self;
    /// The error for an attempt still unanswered at the call's deadline.
    fn deadline_exceeded(message: String) -> Self;
}

/// Whether a call may safely run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads: retried on transient errors.
    Idempotent,
    /// Writes: never retried, since their outcome is unknown after an error.
    Once,
}

/// Breaker and retries for one backend.
#[derive(Clone)]
pub struct Guard {
    backend: &'static str,
    breaker: Breaker,
    retry: RetryPolicy,
    budget: RetryBudget,
}

impl Guard {
    pub fn new(backend: &'static str, config: &ResilienceConfig) -> Self {
        Self {
            backend,
            breaker: Breaker::new(backend, config.breaker_failures, config.breaker_recovery),
            retry: RetryPolicy {
                attempts: config.retry_attempts,
                base_delay: config.retry_base_delay,
                max_delay: config.retry_max_delay,
            },
            budget: RetryBudget::default(),
        }
    }

    /// Runs `attempt` under the breaker, retrying transient failures of
    /// idempotent calls with backoff while the budget and the call's
    /// deadline allow. Each attempt runs under the time left before the
    /// deadline: one still unanswered then counts against the breaker (a
    /// hung backend must open it) and ends the call with DEADLINE_EXCEEDED.
    pub async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        idempotency: Idempotency,
        mut attempt: F,
    ) -> Result<T, E>
    where
        E: BackendError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.budget.deposit();
        let mut tries: u32 = 0;
        loop {
            let Some(permit) = self.breaker.try_acquire() else {
                return Err(E::unavailable(format!(
                    "{} circuit breaker is open after repeated failures; calls fail fast until a trial call succeeds",
                    self.backend
                )));
            };
            let started = tokio::time::Instant::now();
            let outcome = match deadline::remaining() {
                Some(left) => tokio::time::timeout(left, attempt()).await.ok(),
                None => Some(attempt().await),
            };
            let elapsed = started.elapsed().as_secs_f64();
            let Some(result) = outcome else {
                metrics().backend_call(self.backend, operation, false, elapsed);
                permit.failure();
                tracing::debug!(
                    backend = self.backend,
                    operation,
                    "backend call still unanswered at the deadline"
                );
                return Err(E::deadline_exceeded(format!(
                    "{} did not answer {operation} before the call's deadline",
                    self.backend
                )));
            };
            let transient = matches!(&result, Err(e) if e.is_transient());
            let failing = matches!(&result, Err(e) if e.trips_breaker());
            metrics().backend_call(self.backend, operation, result.is_ok(), elapsed);
            // Only an unreachable backend counts against the breaker: "not
            // found" or a syntax error is the backend working as it should.
            if failing {
                permit.failure()
            } else {
                permit.success()
            }
            let Err(error) = result else { return result };
            if transient {
                tracing::debug!(backend = self.backend, operation, error = %error, "backend call failed");
            }
            tries += 1;
            let retry =
                transient && idempotency == Idempotency::Idempotent && tries < self.retry.attempts;
            if !retry {
                return Err(error);
            }
            let delay = self.retry.delay(tries);
            if deadline::remaining().is_some_and(|left| left <= delay) || !self.budget.withdraw() {
                return Err(error);
            }
            tracing::debug!(backend = self.backend, operation, attempt = tries, error = %error, ?delay, "retrying");
            metrics()
                .backend_retries
                .get_or_create(&crate::telemetry::metrics::BackendOnly {
                    backend: self.backend.into(),
                })
                .inc();
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Down,
        Answer,
        Late,
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl BackendError for TestError {
        fn is_transient(&self) -> bool {
            matches!(self, TestError::Down)
        }
        fn unavailable(_: String) -> Self {
            TestError::Down
        }
        fn deadline_exceeded(_: String) -> Self {
            TestError::Late
        }
    }

    fn config() -> ResilienceConfig {
        ResilienceConfig {
            breaker_failures: 5,
            breaker_recovery: Duration::from_secs(60),
            retry_attempts: 3,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(1),
            max_in_flight: 10,
            max_in_flight_per_caller: 10,
            default_deadline: Duration::from_secs(60),
            stream_deadline: Duration::from_secs(3600),
            max_deadline: Duration::from_secs(3600),
        }
    }

    async fn failing(
        guard: &Guard,
        idempotency: Idempotency,
        error: fn() -> TestError,
    ) -> (u32, Duration) {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let result: Result<(), TestError> = guard
            .call("op", idempotency, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(error()) }
            })
            .await;
        assert!(result.is_err());
        (calls.load(Ordering::SeqCst), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_retry_transient_errors_with_backoff() {
        let guard = Guard::new("test", &config());
        let (calls, elapsed) = failing(&guard, Idempotency::Idempotent, || TestError::Down).await;
        assert_eq!(calls, 3);
        // Two sleeps: ~100 ms then ~200 ms, each jittered to between half and all of it.
        assert!(
            elapsed >= Duration::from_millis(150) && elapsed <= Duration::from_millis(300),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_and_definite_answers_are_never_retried() {
        let guard = Guard::new("test", &config());
        assert_eq!(
            failing(&guard, Idempotency::Once, || TestError::Down)
                .await
                .0,
            1
        );
        assert_eq!(
            failing(&guard, Idempotency::Idempotent, || TestError::Answer)
                .await
                .0,
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let guard = Guard::new("test", &config());
        let (calls, _) = deadline::scope(
            Duration::from_millis(120),
            failing(&guard, Idempotency::Idempotent, || TestError::Down),
        )
        .await;
        // The second delay (~200 ms) would pass the deadline.
        assert!(calls <= 2, "{calls}");
    }

    #[tokio::test(start_paused = true)]
    async fn definite_answers_do_not_open_the_breaker() {
        let guard = Guard::new("test", &config());
        for _ in 0..20 {
            failing(&guard, Idempotency::Once, || TestError::Answer).await;
        }
        assert!(guard.breaker.try_acquire().is_some());
        for _ in 0..5 {
            failing(&guard, Idempotency::Once, || TestError::Down).await;
        }
        assert!(
            guard.breaker.try_acquire().is_none(),
            "five transient failures open it"
        );
        assert_eq!(
            failing(&guard, Idempotency::Idempotent, || TestError::Answer)
                .await
                .0,
            0,
            "open: no call made"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_unanswered_at_the_deadline_open_the_breaker() {
        let guard = Guard::new("test", &config());
        for _ in 0..5 {
            let calls = AtomicU32::new(0);
            let result: Result<(), TestError> = deadline::scope(
                Duration::from_secs(2),
                guard.call("op", Idempotency::Idempotent, || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::future::pending()
                }),
            )
            .await;
            assert_eq!(result, Err(TestError::Late));
            assert_eq!(calls.load(Ordering::SeqCst), 1, "a timeout is not retried");
        }
        assert!(
            guard.breaker.try_acquire().is_none(),
            "five timeouts in a row open it"
        );
    }

    #[test]
    fn half_open_lets_one_trial_through_and_refuses_the_rest_at_once() {
        failsafe::clock::freeze(|clock| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let guard = Guard::new("test", &config());
            runtime.block_on(async {
                for _ in 0..5 {
                    failing(&guard, Idempotency::Once, || TestError::Down).await;
                }
            });
            clock.advance(Duration::from_secs(61));
            runtime.block_on(async {
                let trial = guard.call("op", Idempotency::Once, || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, TestError>("trial")
                });
                let others = async {
                    // Polled after the trial started: refused without a call.
                    tokio::task::yield_now().await;
                    let mut refused = 0;
                    for _ in 0..3 {
                        let (calls, _) =
                            failing(&guard, Idempotency::Idempotent, || TestError::Answer).await;
                        assert_eq!(calls, 0);
                        refused += 1;
                    }
                    refused
                };
                let (trial, refused) = tokio::join!(trial, others);
                assert_eq!(trial, Ok("trial"));
                assert_eq!(refused, 3);
                assert_eq!(
                    failing(&guard, Idempotency::Once, || TestError::Answer)
                        .await
                        .0,
                    1,
                    "the good trial closed it"
                );
            });
        });
    }
}

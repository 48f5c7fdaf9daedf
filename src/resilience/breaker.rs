//! A circuit breaker per backend (failsafe's state machine): after N
//! consecutive transient failures it opens and calls fail at once; after the
//! recovery time one trial call is let through, and its success closes it.

use std::time::Duration;

use failsafe::{
    Config, Instrument, StateMachine,
    backoff::{self, Constant},
    failure_policy::{self, ConsecutiveFailures},
};

use crate::telemetry::metrics::{BackendOnly, metrics};

/// Publishes state changes to the logs and the `broker_circuit_breaker_state` gauge.
#[derive(Clone)]
pub struct Observer {
    backend: &'static str,
}

impl Observer {
    fn set(&self, state: i64) {
        metrics()
            .breaker_state
            .get_or_create(&BackendOnly {
                backend: self.backend.into(),
            })
            .set(state);
    }
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        tracing::warn!(backend = self.backend, "circuit breaker opened");
        self.set(2);
    }

    fn on_half_open(&self) {
        tracing::info!(
            backend = self.backend,
            "circuit breaker half-open: next call is a trial"
        );
        self.set(1);
    }

    fn on_closed(&self) {
        tracing::info!(backend = self.backend, "circuit breaker closed");
        self.set(0);
    }
}

/// One backend's breaker; clones share state.
#[derive(Clone)]
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<Constant>, Observer>,
}

impl Breaker {
    pub fn new(backend: &'static str, failures: u32, recovery: Duration) -> Self {
        let observer = Observer { backend };
        observer.set(0);
        let policy = failure_policy::consecutive_failures(failures, backoff::constant(recovery));
        Self {
            machine: Config::new()
                .failure_policy(policy)
                .instrument(observer)
                .build(),
        }
    }

    /// Whether a call may go to the backend now.
    pub fn permits(&self) -> bool {
        self.machine.is_call_permitted()
    }

    pub fn success(&self) {
        self.machine.on_success();
    }

    pub fn failure(&self) {
        self.machine.on_error();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        // failsafe keeps its own clock; freeze it to step through time.
        failsafe::clock::freeze(|clock| {
            let breaker = Breaker::new("test", 5, Duration::from_secs(60));
            for _ in 0..4 {
                breaker.failure();
            }
            breaker.success();
            for _ in 0..4 {
                breaker.failure();
            }
            assert!(breaker.permits(), "a success resets the count");
            breaker.failure();
            assert!(!breaker.permits(), "five in a row open it");

            clock.advance(Duration::from_secs(59));
            assert!(!breaker.permits());
            clock.advance(Duration::from_secs(2));
            assert!(breaker.permits(), "half-open after the recovery time");
            breaker.failure();
            assert!(!breaker.permits(), "a failed trial opens it again");

            clock.advance(Duration::from_secs(61));
            assert!(breaker.permits());
            breaker.success();
            assert!(breaker.permits(), "a good trial closes it");
        });
    }
}

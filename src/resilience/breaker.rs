//! A circuit breaker per backend (failsafe's state machine): after N
//! consecutive transient failures it opens and calls fail at once; after the
//! recovery time it is half-open and admits exactly one trial call (failsafe
//! alone would admit every call), whose success closes it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use failsafe::{
    Config, Instrument, StateMachine,
    backoff::{self, Constant},
    failure_policy::{self, ConsecutiveFailures},
};

use crate::telemetry::metrics::{BackendOnly, metrics};

const CLOSED: i64 = 0;
const HALF_OPEN: i64 = 1;
const OPEN: i64 = 2;

/// Mirrors state changes into the breaker, the logs and the
/// `broker_circuit_breaker_state` gauge.
#[derive(Clone)]
pub struct Observer {
    backend: &'static str,
    state: Arc<AtomicI64>,
}

impl Observer {
    fn set(&self, state: i64) {
        self.state.store(state, Ordering::SeqCst);
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
        self.set(OPEN);
    }

    fn on_half_open(&self) {
        tracing::info!(
            backend = self.backend,
            "circuit breaker half-open: next call is a trial"
        );
        self.set(HALF_OPEN);
    }

    fn on_closed(&self) {
        tracing::info!(backend = self.backend, "circuit breaker closed");
        self.set(CLOSED);
    }
}

/// One backend's breaker; clones share state.
#[derive(Clone)]
pub struct Breaker {
    machine: StateMachine<ConsecutiveFailures<Constant>, Observer>,
    state: Arc<AtomicI64>,
    /// Held while admitting a call; `true` while a trial call is out.
    trial: Arc<Mutex<bool>>,
}

impl Breaker {
    pub fn new(backend: &'static str, failures: u32, recovery: Duration) -> Self {
        let observer = Observer {
            backend,
            state: Arc::default(),
        };
        observer.set(CLOSED);
        let state = observer.state.clone();
        let policy = failure_policy::consecutive_failures(failures, backoff::constant(recovery));
        Self {
            machine: Config::new()
                .failure_policy(policy)
                .instrument(observer)
                .build(),
            state,
            trial: Arc::default(),
        }
    }

    /// Admits a call, or refuses it: open, or half-open with the trial call
    /// already out. The call reports its outcome through the permit.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut trial = self.trial.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock, so that the Open → HalfOpen transition (and the
        // observer's record of it) happens for one caller at a time.
        if !self.machine.is_call_permitted() {
            return None;
        }
        let is_trial = self.state.load(Ordering::SeqCst) == HALF_OPEN;
        if is_trial {
            if *trial {
                return None;
            }
            *trial = true;
        }
        Some(Permit {
            breaker: self.clone(),
            trial: is_trial,
        })
    }

    fn end_trial(&self) {
        *self.trial.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

/// Leave to make one call. Report [`Permit::success`] or
/// [`Permit::failure`]; dropped without either (the call was abandoned), it
/// gives no verdict, and a trial slot goes to the next caller.
pub struct Permit {
    breaker: Breaker,
    trial: bool,
}

impl Permit {
    /// The backend answered.
    pub fn success(self) {
        self.breaker.machine.on_success();
    }

    /// The backend is failing.
    pub fn failure(self) {
        self.breaker.machine.on_error();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // After the verdict (if any) is recorded, so that the next caller
        // sees the state it produced.
        if self.trial {
            self.breaker.end_trial();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(breaker: &Breaker) {
        breaker.try_acquire().expect("admitted").failure();
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_trial() {
        // failsafe keeps its own clock; freeze it to step through time.
        failsafe::clock::freeze(|clock| {
            let breaker = Breaker::new("test", 5, Duration::from_secs(60));
            for _ in 0..4 {
                fail(&breaker);
            }
            breaker.try_acquire().unwrap().success();
            for _ in 0..4 {
                fail(&breaker);
            }
            assert!(
                breaker.try_acquire().is_some(),
                "a success resets the count"
            );
            fail(&breaker);
            assert!(breaker.try_acquire().is_none(), "five in a row open it");

            clock.advance(Duration::from_secs(59));
            assert!(breaker.try_acquire().is_none());
            clock.advance(Duration::from_secs(2));
            fail(&breaker);
            assert!(
                breaker.try_acquire().is_none(),
                "a failed trial opens it again"
            );

            clock.advance(Duration::from_secs(61));
            breaker.try_acquire().expect("a trial").success();
            assert!(breaker.try_acquire().is_some(), "a good trial closes it");
            assert!(breaker.try_acquire().is_some());
        });
    }

    #[test]
    fn half_open_admits_one_trial_at_a_time() {
        failsafe::clock::freeze(|clock| {
            let breaker = Breaker::new("test", 1, Duration::from_secs(60));
            fail(&breaker);
            clock.advance(Duration::from_secs(61));

            let trial = breaker.try_acquire().expect("the trial call");
            assert!(
                breaker.try_acquire().is_none(),
                "others are refused while the trial is out"
            );
            drop(trial);
            let trial = breaker
                .try_acquire()
                .expect("an abandoned trial frees the slot");
            assert!(breaker.try_acquire().is_none());
            trial.success();
            let (a, b) = (breaker.try_acquire(), breaker.try_acquire());
            assert!(a.is_some() && b.is_some(), "closed: everyone is admitted");
        });
    }
}

//! Retry timing and the retry budget that keeps retries from multiplying
//! load on a backend that is already struggling.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

/// Exponential backoff with "equal jitter": attempt n waits between half and
/// all of `base * 2^(n-1)`, capped at `max_delay`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(16));
        let capped = exponential.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// A token bucket: each call adds `RATIO` of a token, each retry takes one.
/// With the floor of `MIN_TOKENS`, retries stay under ~20% of traffic plus a
/// few, however many calls fail.
#[derive(Clone)]
pub struct RetryBudget {
    tokens: Arc<Mutex<f64>>,
}

const RATIO: f64 = 0.2;
const MIN_TOKENS: f64 = 10.0;
const MAX_TOKENS: f64 = 100.0;

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            tokens: Arc::new(Mutex::new(MIN_TOKENS)),
        }
    }
}

impl RetryBudget {
    pub fn deposit(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        *tokens = (*tokens + RATIO).min(MAX_TOKENS);
    }

    /// Takes a token for one retry, if there is one.
    pub fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_a_cap() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for _ in 0..100 {
            let first = policy.delay(1);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let second = policy.delay(2);
            assert!(
                second >= Duration::from_millis(100) && second <= Duration::from_millis(200),
                "{second:?}"
            );
            let capped = policy.delay(10);
            assert!(
                capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300),
                "{capped:?}"
            );
        }
    }

    #[test]
    fn the_budget_limits_a_retry_storm() {
        let budget = RetryBudget::default();
        // 100 calls that all want to retry: the floor plus 20% of them.
        let granted = (0..100)
            .filter(|_| {
                budget.deposit();
                budget.withdraw()
            })
            .count();
        assert!((25..=35).contains(&granted), "{granted}");
    }
}

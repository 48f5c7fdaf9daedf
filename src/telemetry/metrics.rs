//! Every Prometheus metric of the broker, named `broker_<noun>_<unit>`, in
//! one place. Recorded by the request layer, the backends and the breakers;
//! served as Prometheus text on `GET /metrics`.

use std::{
    borrow::Cow,
    sync::{LazyLock, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `/broker.v1.Database/Query`, or an HTTP path.
    pub method: Cow<'static, str>,
    /// gRPC status code as tonic names it (`Ok`, `NotFound`, `Cancelled`
    /// for a stream that ended without a status, ...), or the HTTP status.
    pub code: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `s3` or `postgresql`.
    pub backend: Cow<'static, str>,
    pub operation: Cow<'static, str>,
    /// `ok` or `error`.
    pub outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendOnly {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `idle` or `in_use`.
    pub state: String,
}

/// Latency histogram buckets shared by every duration metric.
#[derive(Clone)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        // 50 µs .. ~105 s.
        Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
    }
}

/// The broker's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, LatencyBuckets>,
    pub requests_in_flight: Gauge,
    pub requests_shed: Family<BackendOnly, Counter>,
    pub backend_duration: Family<BackendLabels, Histogram, LatencyBuckets>,
    pub backend_retries: Family<BackendOnly, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<BackendOnly, Gauge>,
    pub pool_connections: Family<PoolLabels, Gauge>,
    pub pool_max_connections: Gauge,
    pub pool_acquire_duration: Histogram,
    pub pool_acquire_timeouts: Counter,
    pub pool_waiting: Gauge,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(LatencyBuckets),
            requests_in_flight: Gauge::default(),
            requests_shed: Family::default(),
            backend_duration: Family::new_with_constructor(LatencyBuckets),
            backend_retries: Family::default(),
            breaker_state: Family::default(),
            pool_connections: Family::default(),
            pool_max_connections: Gauge::default(),
            pool_acquire_duration: LatencyBuckets.new_metric(),
            pool_acquire_timeouts: Counter::default(),
            pool_waiting: Gauge::default(),
        };
        {
            let mut r = metrics.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "broker_requests",
                "Requests finished, by method and status",
                metrics.requests.clone(),
            );
            r.register(
                "broker_request_duration_seconds",
                "Request latency, by method and status",
                metrics.request_duration.clone(),
            );
            r.register(
                "broker_requests_in_flight",
                "Requests being served",
                metrics.requests_in_flight.clone(),
            );
            r.register(
                "broker_requests_shed",
                "Requests refused with RESOURCE_EXHAUSTED, by limit (global or caller)",
                metrics.requests_shed.clone(),
            );
            r.register(
                "broker_backend_call_duration_seconds",
                "Latency of calls to S3 and PostgreSQL",
                metrics.backend_duration.clone(),
            );
            r.register(
                "broker_backend_retries",
                "Retried backend calls",
                metrics.backend_retries.clone(),
            );
            r.register(
                "broker_circuit_breaker_state",
                "Circuit breaker state per backend: 0 closed, 1 half-open, 2 open",
                metrics.breaker_state.clone(),
            );
            r.register(
                "broker_pg_pool_connections",
                "PostgreSQL pool connections, by state",
                metrics.pool_connections.clone(),
            );
            r.register(
                "broker_pg_pool_max_connections",
                "PostgreSQL pool size limit",
                metrics.pool_max_connections.clone(),
            );
            r.register(
                "broker_pg_pool_acquire_duration_seconds",
                "Time waiting for a pooled PostgreSQL connection",
                metrics.pool_acquire_duration.clone(),
            );
            r.register(
                "broker_pg_pool_acquire_timeouts",
                "Waits for a pooled connection that timed out",
                metrics.pool_acquire_timeouts.clone(),
            );
            r.register(
                "broker_pg_pool_waiting",
                "Callers waiting for a pooled PostgreSQL connection",
                metrics.pool_waiting.clone(),
            );
        }
        metrics
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// Counts a caller waiting for a pooled connection until the returned
    /// guard is dropped (also when the wait is abandoned).
    pub fn pool_wait(&self) -> Waiting {
        self.pool_waiting.inc();
        Waiting(self.pool_waiting.clone())
    }

    /// Records one backend call.
    pub fn backend_call(
        &self,
        backend: &'static str,
        operation: &'static str,
        ok: bool,
        seconds: f64,
    ) {
        self.backend_duration
            .get_or_create(&BackendLabels {
                backend: backend.into(),
                operation: operation.into(),
                outcome: if ok { "ok" } else { "error" }.into(),
            })
            .observe(seconds);
    }
}

/// One caller counted in a gauge; see [`Metrics::pool_wait`].
#[must_use = "the caller counts as waiting only while the guard lives"]
pub struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_callers_are_counted_until_served_or_gone() {
        let metrics = Metrics::new();
        let served = metrics.pool_wait();
        let abandoned = tokio::spawn({
            let waiting = metrics.pool_wait();
            async move {
                let _waiting = waiting;
                std::future::pending::<()>().await
            }
        });
        assert_eq!(metrics.pool_waiting.get(), 2);
        drop(served);
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(metrics.pool_waiting.get(), 0);
        assert!(metrics.encode().contains("broker_pg_pool_waiting 0"));
    }
}

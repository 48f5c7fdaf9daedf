//! Backend health: a background probe of S3 and PostgreSQL whose results feed
//! both `grpc.health.v1` and `GET /health`. A backend that fails its probe
//! makes its service NOT_SERVING; the next good probe brings it back.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    database::Database,
    grpc::{DATABASE_SERVICE, OBJECT_STORE_SERVICE},
    object_store::S3Store,
};

/// What the last probe of one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendState {
    /// Not probed yet.
    Starting,
    Ok,
    /// The probe failed; the text says why (safe to show).
    Down(String),
}

impl BackendState {
    pub fn is_ok(&self) -> bool {
        *self == BackendState::Ok
    }
}

/// The health of the whole broker at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub s3: BackendState,
    pub postgres: BackendState,
    /// Shutting down: everything reports NOT_SERVING.
    pub draining: bool,
}

impl HealthSnapshot {
    /// Every backend is up and the broker is not draining.
    pub fn serving(&self) -> bool {
        !self.draining && self.s3.is_ok() && self.postgres.is_ok()
    }
}

/// Shared, observable health state.
#[derive(Clone)]
pub struct Health {
    state: Arc<watch::Sender<HealthSnapshot>>,
}

impl Default for Health {
    fn default() -> Self {
        let (state, _) = watch::channel(HealthSnapshot {
            s3: BackendState::Starting,
            postgres: BackendState::Starting,
            draining: false,
        });
        Self {
            state: Arc::new(state),
        }
    }
}

impl Health {
    pub fn snapshot(&self) -> HealthSnapshot {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthSnapshot> {
        self.state.subscribe()
    }

    /// Marks the broker as shutting down.
    pub fn set_draining(&self) {
        self.state.send_modify(|s| s.draining = true);
    }

    fn record(&self, s3: BackendState, postgres: BackendState) {
        self.state.send_if_modified(|current| {
            let changed = current.s3 != s3 || current.postgres != postgres;
            for (name, old, new) in [
                ("s3", &current.s3, &s3),
                ("postgresql", &current.postgres, &postgres),
            ] {
                match new {
                    BackendState::Down(reason) if old != new => {
                        tracing::warn!(backend = name, reason = %reason, "backend unhealthy")
                    }
                    BackendState::Ok if old != new => {
                        tracing::info!(backend = name, "backend healthy")
                    }
                    _ => {}
                }
            }
            current.s3 = s3;
            current.postgres = postgres;
            changed
        });
    }
}

/// Probes both backends every `interval`, forever.
pub async fn run_probes(health: Health, store: S3Store, db: Database, interval: Duration) {
    // A probe slower than this counts as a failure.
    let timeout = interval.max(Duration::from_secs(5));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (s3, postgres) = tokio::join!(
            probe(timeout, async {
                store.probe().await.map_err(|e| e.to_string())
            }),
            probe(timeout, async {
                db.probe().await.map_err(|e| e.to_string())
            }),
        );
        health.record(s3, postgres);
    }
}

async fn probe(timeout: Duration, check: impl Future<Output = Result<(), String>>) -> BackendState {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => BackendState::Ok,
        Ok(Err(reason)) => BackendState::Down(reason),
        Err(_) => BackendState::Down(format!("no answer within {timeout:?}")),
    }
}

/// The gRPC health service names, overall first.
const SERVICES: [&str; 3] = ["", OBJECT_STORE_SERVICE, DATABASE_SERVICE];

/// Mirrors every change of `health` into the gRPC health service. Once
/// draining, it ends every Watch stream (after its NOT_SERVING message), so
/// that a watcher does not hold its connection open for the whole drain.
pub async fn feed_reporter(health: Health, mut reporter: HealthReporter) {
    let mut changes = health.subscribe();
    loop {
        let snapshot = changes.borrow_and_update().clone();
        if snapshot.draining {
            for service in SERVICES {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
                // Dropping a service's channel ends its watchers; Check
                // keeps answering NOT_SERVING from the new one.
                reporter.clear_service_status(service).await;
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            return;
        }
        let status = |up: bool| {
            if up && !snapshot.draining {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        reporter
            .set_service_status(OBJECT_STORE_SERVICE, status(snapshot.s3.is_ok()))
            .await;
        reporter
            .set_service_status(DATABASE_SERVICE, status(snapshot.postgres.is_ok()))
            .await;
        reporter
            .set_service_status("", status(snapshot.serving()))
            .await;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

//! The connection pool's manager: how bb8 opens, checks and discards
//! PostgreSQL connections. A connection whose statement was abandoned
//! mid-flight is poisoned: it is cancelled on the server and never handed
//! out again, so a late cancel request cannot hit another caller's statement.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_postgres::{CancelToken, Client, Config, NoTls};

/// A pooled connection.
pub struct PgConnection {
    client: Client,
    poisoned: Arc<AtomicBool>,
}

impl Deref for PgConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl PgConnection {
    /// Arms server-side cancellation for the work that follows.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            token: Some(self.client.cancel_token()),
            poisoned: self.poisoned.clone(),
        }
    }
}

/// Tells callers waiting for a connection that opening one just failed, so
/// that they fail at once instead of waiting out the acquire timeout while
/// the database is down.
#[derive(Clone, Default)]
pub struct ConnectFailures(Arc<tokio::sync::Notify>);

impl ConnectFailures {
    /// Resolves at the next failed connection attempt.
    pub fn next(&self) -> tokio::sync::futures::Notified<'_> {
        self.0.notified()
    }

    fn failed(&self) {
        self.0.notify_waiters();
    }
}

/// Opens connections with a fixed configuration.
pub struct Manager {
    config: Config,
    round_trip_on_checkout: bool,
    failures: ConnectFailures,
}

impl Manager {
    /// bb8 checks every connection on checkout: a connection whose socket
    /// has closed (the server restarted, the network cut it while it sat
    /// idle) is always discarded there, for free; with
    /// `round_trip_on_checkout` the check also sends an empty query.
    pub fn new(config: Config, round_trip_on_checkout: bool, failures: ConnectFailures) -> Self {
        Self {
            config,
            round_trip_on_checkout,
            failures,
        }
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConnection, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await.inspect_err(|e| {
            tracing::debug!(error = %e, "cannot open a database connection");
            self.failures.failed();
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed with an error");
            }
        });
        Ok(PgConnection {
            client,
            poisoned: Arc::default(),
        })
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), tokio_postgres::Error> {
        if conn.client.is_closed() || self.round_trip_on_checkout {
            // On a closed client this fails at once without I/O.
            conn.client.simple_query("").await.map(drop)
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client.is_closed() || conn.poisoned.load(Ordering::SeqCst)
    }
}

/// Cancels its connection's statement and poisons the connection when
/// dropped while armed (the call's future was dropped mid-statement).
pub struct CancelOnDrop {
    token: Option<CancelToken>,
    poisoned: Arc<AtomicBool>,
}

impl CancelOnDrop {
    /// The work finished, well or badly: nothing to cancel.
    pub fn disarm(mut self) {
        self.token = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        self.poisoned.store(true, Ordering::SeqCst);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = token.cancel_query(NoTls).await {
                    tracing::warn!(error = %e, "cancelling an abandoned statement failed");
                }
            });
        }
    }
}

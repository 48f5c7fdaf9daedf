//! The connection pool's manager: how bb8 opens, checks and discards
//! PostgreSQL connections. A connection whose statement was abandoned
//! mid-flight is poisoned: it is cancelled on the server and never handed
//! out again, so a late cancel request cannot hit another caller's statement.
//! Each connection keeps the statements it prepared, so that a repeated
//! statement skips the Parse round trip.

use std::{
    collections::{HashMap, VecDeque},
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_postgres::{CancelToken, Client, Config, NoTls, Statement};

/// Statements kept prepared per connection.
const CACHED_STATEMENTS: usize = 128;
/// Longer SQL texts are prepared each time instead of kept.
const CACHED_SQL_BYTES: usize = 8 * 1024;

/// A pooled connection.
pub struct PgConnection {
    client: Client,
    poisoned: Arc<AtomicBool>,
    statements: StatementCache<Statement>,
}

/// The statements a connection has prepared, by SQL text; the oldest goes
/// first when full (dropping a tokio-postgres statement closes it on the
/// server; the caller closes an evicted statement of its own).
pub(super) struct StatementCache<S> {
    /// foldhash, randomly seeded: looked up on every call, by texts of
    /// authenticated callers.
    by_sql: HashMap<String, S, foldhash::fast::RandomState>,
    order: VecDeque<String>,
}

impl<S> Default for StatementCache<S> {
    fn default() -> Self {
        Self {
            by_sql: HashMap::default(),
            order: VecDeque::new(),
        }
    }
}

impl<S: Clone> StatementCache<S> {
    pub(super) fn get(&self, sql: &str) -> Option<S> {
        self.by_sql.get(sql).cloned()
    }

    /// Keeps `statement` (unless its SQL is too long to keep); returns the
    /// one it evicted, if any.
    pub(super) fn insert(&mut self, sql: &str, statement: S) -> Option<S> {
        if sql.len() > CACHED_SQL_BYTES || self.by_sql.contains_key(sql) {
            return None;
        }
        let mut evicted = None;
        if self.order.len() >= CACHED_STATEMENTS
            && let Some(oldest) = self.order.pop_front()
        {
            evicted = self.by_sql.remove(&oldest);
        }
        self.order.push_back(sql.to_owned());
        self.by_sql.insert(sql.to_owned(), statement);
        evicted
    }

    pub(super) fn remove(&mut self, sql: &str) -> Option<S> {
        let removed = self.by_sql.remove(sql);
        if removed.is_some() {
            self.order.retain(|s| s != sql);
        }
        removed
    }
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

    /// The statement this connection already prepared for `sql`, if any.
    pub fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements.get(sql)
    }

    /// Keeps a statement prepared on this connection for the next call.
    pub fn remember(&mut self, sql: &str, statement: Statement) {
        self.statements.insert(sql, statement);
    }

    /// Forgets a statement whose plan PostgreSQL no longer accepts.
    pub fn forget(&mut self, sql: &str) {
        self.statements.remove(sql);
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

/// Why a pooled connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
    /// Query's own connections ([`super::wire`]); the message is for logs.
    #[error("{0}")]
    Wire(String),
    #[error("the database did not complete the connection within {0:?}")]
    TimedOut(Duration),
}

/// Runs `connecting` within the configuration's connect timeout, start-up
/// and authentication included (a server that accepts and never answers
/// must not hold a pool slot), and tells waiting callers when it fails.
pub(super) async fn open<C>(
    config: &Config,
    failures: &ConnectFailures,
    connecting: impl Future<Output = Result<C, ConnectError>>,
) -> Result<C, ConnectError> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::MAX);
    let result = match tokio::time::timeout(limit, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(ConnectError::TimedOut(limit)),
    };
    result.inspect_err(|e| {
        tracing::debug!(error = %e, "cannot open a database connection");
        failures.failed();
    })
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
    type Error = ConnectError;

    async fn connect(&self) -> Result<PgConnection, ConnectError> {
        // tokio-postgres's connect_timeout covers the TCP connect only.
        let connecting = async {
            self.config
                .connect(NoTls)
                .await
                .map_err(ConnectError::Postgres)
        };
        let (client, connection) = open(&self.config, &self.failures, connecting).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "database connection closed with an error");
            }
        });
        Ok(PgConnection {
            client,
            poisoned: Arc::default(),
            statements: StatementCache::default(),
        })
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), ConnectError> {
        if conn.client.is_closed() || self.round_trip_on_checkout {
            // On a closed client this fails at once without I/O.
            conn.client
                .simple_query("")
                .await
                .map(drop)
                .map_err(ConnectError::Postgres)
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

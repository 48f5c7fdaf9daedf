//! The database domain: typed statements against one PostgreSQL database
//! through two bb8 pools. Query runs read-only, in one protocol cycle, on
//! connections of its own ([`wire`], [`read`]); Execute and Transaction
//! write on tokio-postgres ([`session`]); InitSchema creates the documents
//! schema.

mod checks;
mod codec;
mod error;
mod pipeline;
mod pool;
mod read;
mod rows;
mod schema;
mod session;
mod value;
mod wire;

use std::{future::Future, sync::Arc, time::Duration};

use bb8::{Pool, PooledConnection};

pub use checks::{MAX_PARAMS, MAX_SQL_BYTES, MAX_TRANSACTION_STATEMENTS};
pub use codec::{PG_EPOCH_MICROS, decode};
pub use error::DatabaseError;
pub use schema::SCHEMA_TABLES;
pub use value::{Cell, Column, ExecuteResult, RawCells, Rows, Statement, Value, bytea_hex};

use crate::{
    config::{LimitsConfig, PostgresConfig},
    resilience::{
        Guard,
        Idempotency::{Idempotent, Once},
        ResilienceConfig,
    },
    telemetry::metrics::metrics,
};

pub type Result<T, E = DatabaseError> = std::result::Result<T, E>;

type PgPool = Pool<pool::Manager>;
/// Query's pool: connections of the broker's own protocol code ([`wire`]).
type ReadPool = Pool<wire::Manager>;

/// What one call may cost the database and the broker.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows a Query returns at most (and when it asks for 0); rows a
    /// write may return.
    pub max_rows: u32,
    /// Bytes of result data one call may return.
    pub max_result_bytes: usize,
    /// The session's statement_timeout: a call's deadline may lower it, never raise it.
    pub statement_timeout: Duration,
}

/// Both pools' settings.
fn pool_builder<M: bb8::ManageConnection>(config: &PostgresConfig) -> bb8::Builder<M> {
    Pool::builder()
        .min_idle(Some(config.pool_min))
        .max_size(config.pool_max)
        .connection_timeout(config.acquire_timeout)
        .idle_timeout(Some(config.idle_timeout))
        .max_lifetime(Some(config.max_lifetime))
        .test_on_check_out(true)
        .retry_connection(false)
}

/// A connection from a pool (`getting` is its `get`), timed for the
/// metrics. Waiting ends early if opening one fails: the database is
/// unreachable, and the caller learns it now.
async fn acquire<C, M>(
    failures: &pool::ConnectFailures,
    getting: impl Future<Output = Result<C, bb8::RunError<M>>>,
) -> Result<C>
where
    DatabaseError: From<bb8::RunError<M>>,
{
    let started = std::time::Instant::now();
    let failed = failures.next();
    let waiting = metrics().pool_wait();
    let result = tokio::select! {
        biased;
        result = getting => result.map_err(DatabaseError::from),
        () = failed => Err(DatabaseError::Unavailable("cannot connect to the database".into())),
    };
    drop(waiting);
    metrics()
        .pool_acquire_duration
        .observe(started.elapsed().as_secs_f64());
    if matches!(result, Err(DatabaseError::PoolTimeout)) {
        metrics().pool_acquire_timeouts.inc();
    }
    result
}

/// A pooled PostgreSQL database.
#[derive(Clone)]
pub struct Database {
    /// Writes, InitSchema.
    pool: PgPool,
    /// Query: the read role's connections when one is configured.
    read_pool: ReadPool,
    /// Query's calls, shared out over `read_pool`.
    reads: pipeline::Pipeline,
    pool_max: u32,
    connect_failures: pool::ConnectFailures,
    limits: Limits,
    guard: Guard,
}

impl Database {
    /// Creates the pool. Connections open lazily, so the broker starts (and
    /// reports NOT_SERVING) even while PostgreSQL is down.
    pub fn connect(
        config: &PostgresConfig,
        limits: &LimitsConfig,
        resilience: &ResilienceConfig,
    ) -> anyhow::Result<Self> {
        let connect_failures = pool::ConnectFailures::default();
        let write_config = config.connect_config()?;
        let read_config = config
            .read_connect_config()?
            .unwrap_or_else(|| write_config.clone());
        let pool = pool_builder(config).build_unchecked(pool::Manager::new(
            write_config,
            config.test_on_checkout,
            connect_failures.clone(),
        ));
        let read_pool = pool_builder(config).build_unchecked(wire::Manager::new(
            read_config,
            // One result row at most the result cap (and its framing).
            limits.max_result_bytes().saturating_add(64 * 1024),
            config.test_on_checkout,
            connect_failures.clone(),
        ));
        let limits = Limits {
            max_rows: limits.max_rows,
            max_result_bytes: limits.max_result_bytes(),
            statement_timeout: config.statement_timeout,
        };
        let reads = pipeline::Pipeline::new(
            read_pool.clone(),
            connect_failures.clone(),
            limits,
            config.pipeline_depth as usize,
        );
        Ok(Self {
            pool,
            read_pool,
            reads,
            pool_max: config.pool_max,
            connect_failures,
            limits,
            guard: Guard::new("postgresql", resilience),
        })
    }

    /// A pooled connection for Query: the read role's, when there is one.
    async fn read_connection(&self) -> Result<PooledConnection<'_, wire::Manager>> {
        self.checkout(&self.read_pool).await
    }

    /// A pooled connection for writes.
    async fn connection(&self) -> Result<PooledConnection<'_, pool::Manager>> {
        self.checkout(&self.pool).await
    }

    /// A connection from `pool`.
    async fn checkout<'p, M>(&self, pool: &'p Pool<M>) -> Result<PooledConnection<'p, M>>
    where
        M: bb8::ManageConnection<Error = pool::ConnectError>,
    {
        acquire(&self.connect_failures, pool.get()).await
    }

    /// The row cap applied when a Query asks for 0 rows.
    pub fn max_rows(&self) -> u32 {
        self.limits.max_rows
    }

    /// Runs one read-only statement and returns at most `max_rows` rows
    /// (0: the configured cap, which is also the most one may ask for).
    pub async fn query(&self, statement: Statement, max_rows: u32) -> Result<Rows> {
        checks::check_statement(&statement)?;
        let limit = match max_rows {
            0 => self.limits.max_rows,
            n => n.min(self.limits.max_rows),
        };
        let statement = Arc::new(statement);
        // Read-only, so safe to retry when the connection failed.
        self.guard
            .call("Query", Idempotent, || {
                self.reads.query(statement.clone(), limit)
            })
            .await
    }

    /// Runs one write statement.
    pub async fn execute(&self, statement: &Statement) -> Result<ExecuteResult> {
        checks::check_write(statement)?;
        self.guard
            .call("Execute", Once, || async {
                let mut conn = self.connection().await?;
                session::execute(&mut conn, statement, &self.limits).await
            })
            .await
    }

    /// Runs statements atomically: every one, or (on the first error) none.
    pub async fn transaction(&self, statements: &[Statement]) -> Result<Vec<ExecuteResult>> {
        checks::check_transaction(statements)?;
        self.guard
            .call("Transaction", Once, || async {
                let mut conn = self.connection().await?;
                session::transaction(&mut conn, statements, &self.limits).await
            })
            .await
    }

    /// Creates the documents schema if missing and lists its tables.
    pub async fn init_schema(&self) -> Result<Vec<String>> {
        self.guard
            .call("InitSchema", Once, || async {
                let mut conn = self.connection().await?;
                let cancel = conn.cancel_on_drop();
                schema::create(&mut conn).await?;
                cancel.disarm();
                Ok(SCHEMA_TABLES.iter().map(|t| (*t).to_owned()).collect())
            })
            .await
    }

    /// Publishes the pool's state to the metrics.
    pub fn record_pool_metrics(&self) {
        use crate::telemetry::metrics::{PoolLabels, metrics};
        // Both pools together: Query's and the writes'.
        let (mut idle, mut open) = (0, 0);
        for state in [self.pool.state(), self.read_pool.state()] {
            idle += i64::from(state.idle_connections);
            open += i64::from(state.connections);
        }
        let in_use = open - idle;
        let gauge = |name: &str| {
            metrics()
                .pool_connections
                .get_or_create(&PoolLabels { state: name.into() })
                .clone()
        };
        gauge("idle").set(idle);
        gauge("in_use").set(in_use);
        metrics()
            .pool_max_connections
            .set(2 * i64::from(self.pool_max));
    }

    /// Checks that a connection can be had and answers (for health probes).
    pub async fn probe(&self) -> Result<()> {
        self.guard
            .call("Probe", Once, || async {
                let conn = self.connection().await?;
                conn.simple_query("SELECT 1").await?;
                let mut conn = self.read_connection().await?;
                conn.ping().await?;
                Ok(())
            })
            .await
    }
}

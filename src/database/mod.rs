//! The database domain: typed statements against one PostgreSQL database
//! through a bb8 connection pool. Query runs read-only; Execute and
//! Transaction write; InitSchema creates the documents schema.

mod checks;
mod codec;
mod error;
mod pool;
mod rows;
mod schema;
mod session;
mod value;

use std::time::Duration;

use bb8::{Pool, PooledConnection};

pub use checks::{MAX_PARAMS, MAX_SQL_BYTES, MAX_TRANSACTION_STATEMENTS};
pub use error::DatabaseError;
pub use schema::SCHEMA_TABLES;
pub use value::{Column, ExecuteResult, Rows, Statement, Value, bytea_hex};

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
type Connection<'a> = PooledConnection<'a, pool::Manager>;

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

/// A pooled PostgreSQL database.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    /// Query's pool when a read role is configured (else Query uses `pool`).
    read_pool: Option<PgPool>,
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
        let build = |connect: tokio_postgres::Config| {
            let manager =
                pool::Manager::new(connect, config.test_on_checkout, connect_failures.clone());
            Pool::builder()
                .min_idle(Some(config.pool_min))
                .max_size(config.pool_max)
                .connection_timeout(config.acquire_timeout)
                .idle_timeout(Some(config.idle_timeout))
                .max_lifetime(Some(config.max_lifetime))
                .test_on_check_out(true)
                .retry_connection(false)
                .build_unchecked(manager)
        };
        let pool = build(config.connect_config()?);
        let read_pool = config.read_connect_config()?.map(build);
        Ok(Self {
            pool,
            read_pool,
            pool_max: config.pool_max,
            connect_failures,
            limits: Limits {
                max_rows: limits.max_rows,
                max_result_bytes: limits.max_result_bytes(),
                statement_timeout: config.statement_timeout,
            },
            guard: Guard::new("postgresql", resilience),
        })
    }

    /// A pooled connection for Query: the read role's, when there is one.
    async fn read_connection(&self) -> Result<Connection<'_>> {
        self.checkout(self.read_pool.as_ref().unwrap_or(&self.pool))
            .await
    }

    /// A pooled connection for writes.
    async fn connection(&self) -> Result<Connection<'_>> {
        self.checkout(&self.pool).await
    }

    /// A connection from `pool`, timed for the metrics.
    async fn checkout<'p>(&self, pool: &'p PgPool) -> Result<Connection<'p>> {
        let started = std::time::Instant::now();
        // Waiting for a connection ends early if opening one fails: the
        // database is unreachable, and the caller learns it now.
        let failed = self.connect_failures.next();
        let waiting = metrics().pool_wait();
        let result = tokio::select! {
            biased;
            result = pool.get() => result.map_err(DatabaseError::from),
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

    /// The row cap applied when a Query asks for 0 rows.
    pub fn max_rows(&self) -> u32 {
        self.limits.max_rows
    }

    /// Runs one read-only statement and returns at most `max_rows` rows
    /// (0: the configured cap, which is also the most one may ask for).
    pub async fn query(&self, statement: &Statement, max_rows: u32) -> Result<Rows> {
        checks::check_statement(statement)?;
        let limit = match max_rows {
            0 => self.limits.max_rows,
            n => n.min(self.limits.max_rows),
        };
        // Read-only, so safe to retry when the connection failed.
        self.guard
            .call("Query", Idempotent, || async {
                let mut conn = self.read_connection().await?;
                session::query(&mut conn, statement, limit, &self.limits).await
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
        // Both pools together when Query has its own.
        let (mut idle, mut open) = (0, 0);
        for pool in std::iter::once(&self.pool).chain(&self.read_pool) {
            let state = pool.state();
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
        let pools = 1 + i64::from(self.read_pool.is_some());
        metrics()
            .pool_max_connections
            .set(pools * i64::from(self.pool_max));
    }

    /// Checks that a connection can be had and answers (for health probes).
    pub async fn probe(&self) -> Result<()> {
        self.guard
            .call("Probe", Once, || async {
                let conn = self.connection().await?;
                conn.simple_query("SELECT 1").await?;
                if self.read_pool.is_some() {
                    let conn = self.read_connection().await?;
                    conn.simple_query("SELECT 1").await?;
                }
                Ok(())
            })
            .await
    }
}

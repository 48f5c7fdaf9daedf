//! The database domain: typed statements against one PostgreSQL database
//! through a bb8 connection pool. Query runs read-only; Execute and
//! Transaction write; InitSchema creates the documents schema.

mod codec;
mod error;
mod pool;
mod schema;
mod value;

use bb8::{Pool, PooledConnection};
use tokio_postgres::{Row, Statement as Prepared};

pub use error::DatabaseError;
pub use schema::SCHEMA_TABLES;
pub use value::{Column, ExecuteResult, Rows, Statement, Value, bytea_hex};

use crate::{
    config::PostgresConfig,
    resilience::{
        Guard,
        Idempotency::{Idempotent, Once},
        ResilienceConfig, deadline,
    },
    telemetry::metrics::metrics,
};
use codec::{Param, Raw};

pub type Result<T, E = DatabaseError> = std::result::Result<T, E>;

type PgPool = Pool<pool::Manager>;
type Connection<'a> = PooledConnection<'a, pool::Manager>;

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1024 * 1024;
/// Most parameters one statement may take (PostgreSQL's own limit).
pub const MAX_PARAMS: usize = 65_535;
/// Most statements one Transaction may hold.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1000;

/// A pooled PostgreSQL database.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    pool_max: u32,
    connect_failures: pool::ConnectFailures,
    max_rows: u32,
    guard: Guard,
}

impl Database {
    /// Creates the pool. Connections open lazily, so the broker starts (and
    /// reports NOT_SERVING) even while PostgreSQL is down.
    pub fn connect(
        config: &PostgresConfig,
        max_rows: u32,
        resilience: &ResilienceConfig,
    ) -> anyhow::Result<Self> {
        let connect_failures = pool::ConnectFailures::default();
        let manager = pool::Manager::new(
            config.connect_config()?,
            config.test_on_checkout,
            connect_failures.clone(),
        );
        let pool = Pool::builder()
            .min_idle(Some(config.pool_min))
            .max_size(config.pool_max)
            .connection_timeout(config.acquire_timeout)
            .idle_timeout(Some(config.idle_timeout))
            .max_lifetime(Some(config.max_lifetime))
            .test_on_check_out(true)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self {
            pool,
            pool_max: config.pool_max,
            connect_failures,
            max_rows,
            guard: Guard::new("postgresql", resilience),
        })
    }

    /// A pooled connection, timed for the metrics.
    async fn connection(&self) -> Result<Connection<'_>> {
        let started = std::time::Instant::now();
        // Waiting for a connection ends early if opening one fails: the
        // database is unreachable, and the caller learns it now.
        let failed = self.connect_failures.next();
        let result = tokio::select! {
            biased;
            result = self.pool.get() => result.map_err(DatabaseError::from),
            () = failed => Err(DatabaseError::Unavailable("cannot connect to the database".into())),
        };
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
        self.max_rows
    }

    /// Runs one read-only statement and returns at most `max_rows` rows
    /// (0: the configured cap, which is also the most one may ask for).
    pub async fn query(&self, statement: &Statement, max_rows: u32) -> Result<Rows> {
        check_statement(statement)?;
        let limit = match max_rows {
            0 => self.max_rows,
            n => n.min(self.max_rows),
        };
        // Read-only, so safe to retry when the connection failed.
        self.guard
            .call("Query", Idempotent, || self.query_once(statement, limit))
            .await
    }

    async fn query_once(&self, statement: &Statement, limit: u32) -> Result<Rows> {
        let mut conn = self.connection().await?;
        let cancel = conn.cancel_on_drop();
        let result = read_only(&mut conn, statement, limit).await;
        cancel.disarm();
        result
    }

    /// Runs one write statement.
    pub async fn execute(&self, statement: &Statement) -> Result<ExecuteResult> {
        check_statement(statement)?;
        check_not_session_control(statement)?;
        self.guard
            .call("Execute", Once, || async {
                let mut conn = self.connection().await?;
                let cancel = conn.cancel_on_drop();
                let result = execute_one(&mut conn, statement).await;
                cancel.disarm();
                result
            })
            .await
    }

    /// Runs statements atomically: every one, or (on the first error) none.
    pub async fn transaction(&self, statements: &[Statement]) -> Result<Vec<ExecuteResult>> {
        if statements.is_empty() {
            return Err(DatabaseError::InvalidArgument(
                "a transaction needs at least one statement".into(),
            ));
        }
        if statements.len() > MAX_TRANSACTION_STATEMENTS {
            return Err(DatabaseError::InvalidArgument(format!(
                "a transaction holds at most {MAX_TRANSACTION_STATEMENTS} statements"
            )));
        }
        for statement in statements {
            check_statement(statement)?;
            check_not_session_control(statement)?;
        }
        self.guard
            .call("Transaction", Once, || async {
                let mut conn = self.connection().await?;
                let cancel = conn.cancel_on_drop();
                let result = all_or_nothing(&mut conn, statements).await;
                cancel.disarm();
                result
            })
            .await
    }

    /// Creates the documents schema if missing and lists its tables.
    pub async fn init_schema(&self) -> Result<Vec<String>> {
        let mut conn = self.connection().await?;
        schema::create(&mut conn).await?;
        Ok(SCHEMA_TABLES.iter().map(|t| (*t).to_owned()).collect())
    }

    /// Publishes the pool's state to the metrics.
    pub fn record_pool_metrics(&self) {
        use crate::telemetry::metrics::{PoolLabels, metrics};
        let state = self.pool.state();
        let idle = i64::from(state.idle_connections);
        let in_use = i64::from(state.connections) - idle;
        let gauge = |name: &str| {
            metrics()
                .pool_connections
                .get_or_create(&PoolLabels { state: name.into() })
                .clone()
        };
        gauge("idle").set(idle);
        gauge("in_use").set(in_use);
        metrics().pool_max_connections.set(i64::from(self.pool_max));
    }

    /// Checks that a connection can be had and answers (for health probes).
    pub async fn probe(&self) -> Result<()> {
        self.guard
            .call("Probe", Once, || async {
                let conn = self.connection().await?;
                conn.simple_query("SELECT 1").await?;
                Ok(())
            })
            .await
    }
}

/// Statements that would change a pooled session for the next caller, or
/// the broker's own transaction handling.
const SESSION_CONTROL: &[&str] = &[
    "SET",
    "RESET",
    "DISCARD",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "DEALLOCATE",
    "LISTEN",
    "UNLISTEN",
    "LOAD",
];

fn check_not_session_control(statement: &Statement) -> Result<()> {
    let keyword = leading_keyword(&statement.sql).to_ascii_uppercase();
    if SESSION_CONTROL.contains(&keyword.as_str()) {
        return Err(DatabaseError::InvalidArgument(format!(
            "{keyword} statements are not allowed: sessions and transactions are managed by the broker \
             (use Transaction for several statements)"
        )));
    }
    Ok(())
}

/// The first word of a statement, after whitespace and comments.
fn leading_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

fn check_statement(statement: &Statement) -> Result<()> {
    if statement.sql.trim().is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "sql must not be empty".into(),
        ));
    }
    if statement.sql.len() > MAX_SQL_BYTES {
        return Err(DatabaseError::InvalidArgument(format!(
            "sql is {} bytes long; the limit is {MAX_SQL_BYTES}",
            statement.sql.len()
        )));
    }
    if statement.params.len() > MAX_PARAMS {
        return Err(DatabaseError::InvalidArgument(format!(
            "a statement takes at most {MAX_PARAMS} parameters"
        )));
    }
    Ok(())
}

/// Query's work: one statement in a READ ONLY transaction, at most `limit`
/// rows fetched (one more tells whether there were more).
async fn read_only(conn: &mut Connection<'_>, statement: &Statement, limit: u32) -> Result<Rows> {
    let tx = conn.build_transaction().read_only(true).start().await?;
    // Pipelined: both go out before either answer is awaited.
    let (prepared, ()) = tokio::try_join!(
        async { Ok(tx.prepare(&statement.sql).await?) },
        limit_to_deadline(&tx)
    )?;
    if prepared.columns().is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "Query runs statements that return rows; use Execute for other statements".into(),
        ));
    }
    codec::check_params(prepared.params(), &statement.params)?;
    let portal = tx
        .bind_raw(&prepared, statement.params.iter().map(Param))
        .await?;
    let fetch = i32::try_from(limit).unwrap_or(i32::MAX).saturating_add(1);
    let fetched = tx.query_portal(&portal, fetch).await?;
    // Rolled back, not committed: a read has nothing to keep, and a session
    // setting the statement changed (set_config(..., false)) is undone with
    // it. Dropping the transaction sends ROLLBACK without waiting for the
    // answer (one round trip less); the connection runs requests in order,
    // so the next caller's statement always comes after it.
    drop(tx);
    let truncated = fetched.len() > limit as usize;
    let mut rows = decode_rows(&prepared, &fetched[..fetched.len().min(limit as usize)])?;
    rows.truncated = truncated;
    Ok(rows)
}

/// Execute's work: one statement, in a transaction only when the deadline
/// needs `SET LOCAL statement_timeout`.
async fn execute_one(conn: &mut Connection<'_>, statement: &Statement) -> Result<ExecuteResult> {
    if deadline::remaining().is_none() {
        return run(&***conn, statement).await;
    }
    let tx = conn.transaction().await?;
    limit_to_deadline(&tx).await?;
    let result = run(&tx, statement).await?;
    tx.commit().await?;
    Ok(result)
}

/// Transaction's work: every statement or, on the first error, none.
async fn all_or_nothing(
    conn: &mut Connection<'_>,
    statements: &[Statement],
) -> Result<Vec<ExecuteResult>> {
    let tx = conn.transaction().await?;
    limit_to_deadline(&tx).await?;
    let mut results = Vec::with_capacity(statements.len());
    for (index, statement) in statements.iter().enumerate() {
        // Dropping `tx` on error rolls everything back.
        results.push(
            run(&tx, statement)
                .await
                .map_err(|e| prefix_statement(e, index))?,
        );
    }
    tx.commit().await?;
    Ok(results)
}

/// Lowers the transaction's statement_timeout to the call's deadline, if any.
async fn limit_to_deadline(tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    if let Some(left) = deadline::remaining() {
        let millis = left.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {millis}"))
            .await?;
    }
    Ok(())
}

/// Runs one statement on a connection or in a transaction and collects its
/// RETURNING rows.
async fn run(
    client: &impl tokio_postgres::GenericClient,
    statement: &Statement,
) -> Result<ExecuteResult> {
    use futures::TryStreamExt;
    let prepared = client.prepare(&statement.sql).await?;
    codec::check_params(prepared.params(), &statement.params)?;
    let stream = client
        .query_raw(&prepared, statement.params.iter().map(Param))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut fetched = Vec::new();
    while let Some(row) = stream.try_next().await? {
        fetched.push(row);
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    Ok(ExecuteResult {
        rows_affected,
        returning: decode_rows(&prepared, &fetched)?,
    })
}

fn decode_rows(prepared: &Prepared, fetched: &[Row]) -> Result<Rows> {
    let columns = prepared
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_().name().to_owned(),
        })
        .collect();
    let rows = fetched
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let raw: Raw<'_> = row.try_get(i)?;
                    codec::decode(row.columns()[i].type_(), raw.0)
                })
                .collect::<Result<Vec<Value>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Rows {
        columns,
        rows,
        truncated: false,
    })
}

fn prefix_statement(error: DatabaseError, index: usize) -> DatabaseError {
    use DatabaseError as E;
    let at = |m: String| format!("statement {}: {m}", index + 1);
    match error {
        E::InvalidArgument(m) => E::InvalidArgument(at(m)),
        E::PermissionDenied(m) => E::PermissionDenied(at(m)),
        E::AlreadyExists(m) => E::AlreadyExists(at(m)),
        E::FailedPrecondition(m) => E::FailedPrecondition(at(m)),
        E::Aborted(m) => E::Aborted(at(m)),
        E::ResourceExhausted(m) => E::ResourceExhausted(at(m)),
        E::DeadlineExceeded(m) => E::DeadlineExceeded(at(m)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_control_is_recognised_past_comments() {
        assert_eq!(
            leading_keyword("  -- note\n /* x */ set search_path = x"),
            "set"
        );
        assert_eq!(leading_keyword("INSERT INTO t VALUES (1)"), "INSERT");
        for sql in [
            "SET ROLE postgres",
            "reset all",
            "/**/BEGIN",
            "commit",
            "LISTEN x",
            "DISCARD ALL",
        ] {
            assert!(
                check_not_session_control(&Statement::new(sql, vec![])).is_err(),
                "{sql}"
            );
        }
        assert!(check_not_session_control(&Statement::new("UPDATE t SET v = 1", vec![])).is_ok());
    }
}

//! The database domain: typed statements against one PostgreSQL database
//! through a bb8 connection pool. Query runs read-only; Execute and
//! Transaction write; InitSchema creates the documents schema.

mod codec;
mod error;
mod schema;
mod value;

use std::time::Duration;

use bb8::Pool;
use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::{NoTls, Row, Statement as Prepared};

pub use error::DatabaseError;
pub use schema::SCHEMA_TABLES;
pub use value::{Column, ExecuteResult, Rows, Statement, Value, bytea_hex};

use crate::config::PostgresConfig;
use codec::{Param, Raw};

pub type Result<T, E = DatabaseError> = std::result::Result<T, E>;

type PgPool = Pool<PostgresConnectionManager<NoTls>>;

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
    max_rows: u32,
}

impl Database {
    /// Creates the pool. Connections open lazily, so the broker starts (and
    /// reports NOT_SERVING) even while PostgreSQL is down.
    pub fn connect(config: &PostgresConfig, max_rows: u32) -> anyhow::Result<Self> {
        let manager = PostgresConnectionManager::new(config.connect_config()?, NoTls);
        let pool = Pool::builder()
            .min_idle(Some(config.pool_min))
            .max_size(config.pool_max)
            .connection_timeout(config.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self { pool, max_rows })
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
        let mut conn = self.pool.get().await?;
        let tx = conn.build_transaction().read_only(true).start().await?;
        let prepared = tx.prepare(&statement.sql).await?;
        if prepared.columns().is_empty() {
            return Err(DatabaseError::InvalidArgument(
                "Query runs statements that return rows; use Execute for other statements".into(),
            ));
        }
        codec::check_params(prepared.params(), &statement.params)?;
        let portal = tx
            .bind_raw(&prepared, statement.params.iter().map(Param))
            .await?;
        // One row more than the limit tells whether there were more.
        let fetched = tx
            .query_portal(
                &portal,
                i32::try_from(limit).unwrap_or(i32::MAX).saturating_add(1),
            )
            .await?;
        tx.commit().await?;
        let truncated = fetched.len() > limit as usize;
        let mut rows = decode_rows(&prepared, &fetched[..fetched.len().min(limit as usize)])?;
        rows.truncated = truncated;
        Ok(rows)
    }

    /// Runs one write statement.
    pub async fn execute(&self, statement: &Statement) -> Result<ExecuteResult> {
        check_statement(statement)?;
        let conn = self.pool.get().await?;
        run(&*conn, statement).await
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
        }
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let mut results = Vec::with_capacity(statements.len());
        for (index, statement) in statements.iter().enumerate() {
            // Dropping `tx` on error rolls everything back.
            let result = run(&tx, statement)
                .await
                .map_err(|e| prefix_statement(e, index))?;
            results.push(result);
        }
        tx.commit().await?;
        Ok(results)
    }

    /// Creates the documents schema if missing and lists its tables.
    pub async fn init_schema(&self) -> Result<Vec<String>> {
        let mut conn = self.pool.get().await?;
        schema::create(&mut conn).await?;
        Ok(SCHEMA_TABLES.iter().map(|t| (*t).to_owned()).collect())
    }

    /// Checks that a connection can be had and answers (for health probes).
    pub async fn probe(&self) -> Result<()> {
        let conn = self.pool.get().await?;
        conn.simple_query("SELECT 1").await?;
        Ok(())
    }
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

/// Runs one statement on a connection or in a transaction (both deref to
/// `GenericClient`) and collects its RETURNING rows.
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

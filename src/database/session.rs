//! The writes (Execute, Transaction) on one pooled tokio-postgres
//! connection around a caller's SQL (Query has its own path: [`super::read`]).
//!
//! Requests are pipelined: they go out back to back and their answers are
//! read after, in order. A statement this connection prepared before skips
//! the Parse round trip. Every call leaves the session as it found it for
//! the next caller: a write's session settings, cursors, temporary tables
//! and advisory locks are reset, and a connection left with unread rows is
//! cancelled and discarded.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Waker},
    time::Duration,
};

use futures::future::{MaybeDone, maybe_done};
use tokio_postgres::{Client, Statement as Prepared, error::SqlState};

use super::{
    DatabaseError, ExecuteResult, Limits, Result, Statement,
    codec::{self, Param},
    pool::PgConnection,
    rows::{self, Caps},
};
use crate::resilience::deadline;

/// Undoes what a write may have changed in the session beyond its
/// transaction: settings made with `set_config(..., false)` (search_path,
/// role, statement_timeout), cursors WITH HOLD, LISTEN, advisory locks and
/// temporary tables (which would shadow real ones for the next caller).
const RESET_SESSION: &str =
    "RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP";

/// One write statement in its own transaction.
pub async fn execute(
    conn: &mut PgConnection,
    statement: &Statement,
    limits: &Limits,
) -> Result<ExecuteResult> {
    let mut results = attempt(conn, std::slice::from_ref(statement), limits).await?;
    Ok(results.remove(0))
}

/// Statements applied atomically: all, or on the first error none.
pub async fn transaction(
    conn: &mut PgConnection,
    statements: &[Statement],
    limits: &Limits,
) -> Result<Vec<ExecuteResult>> {
    attempt(conn, statements, limits).await
}

/// Where a connection's session stands while a call runs on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transaction open, nothing unread: ready for the next caller.
    Clean,
    /// The broker's transaction is open (or its end is on the way).
    InTransaction,
    /// Rows may be left unread: only cancelling and discarding it is safe.
    Unread,
}

/// Why an attempt failed.
enum Attempt {
    /// A statement the connection kept no longer fits its tables (their
    /// columns changed): prepared afresh, the call is tried once more.
    StalePlan,
    Failed(DatabaseError),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(error: tokio_postgres::Error) -> Self {
        let stale = error.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
            && error
                .as_db_error()
                .is_some_and(|db| db.message().starts_with("cached plan must not change"));
        if stale {
            Self::StalePlan
        } else {
            Self::Failed(error.into())
        }
    }
}

impl Attempt {
    /// Rewrites the caller's error (a stale plan stays one).
    fn map(self, f: impl FnOnce(DatabaseError) -> DatabaseError) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(f(e)),
            stale => stale,
        }
    }
}

impl From<DatabaseError> for Attempt {
    fn from(error: DatabaseError) -> Self {
        Self::Failed(error)
    }
}

/// Runs the writes on the connection, again if a kept statement went stale, and
/// leaves the connection reusable or, when that cannot be known, cancelled
/// and discarded.
async fn attempt(
    conn: &mut PgConnection,
    statements: &[Statement],
    limits: &Limits,
) -> Result<Vec<ExecuteResult>> {
    let cancel = conn.cancel_on_drop();
    let mut state = State::Clean;
    let mut result = write(conn, statements, limits, &mut state).await;
    if matches!(result, Err(Attempt::StalePlan)) {
        for statement in statements {
            conn.forget(&statement.sql);
        }
        if state == State::InTransaction {
            state = State::Unread;
            if conn.batch_execute("ROLLBACK").await.is_ok() {
                state = State::Clean;
            }
        }
        if state == State::Clean {
            result = write(conn, statements, limits, &mut state).await;
        }
    }
    if state == State::InTransaction {
        // An error inside the broker's transaction: end it here.
        state = State::Unread;
        if conn
            .batch_execute(&format!("ROLLBACK; {RESET_SESSION}"))
            .await
            .is_ok()
        {
            state = State::Clean;
        }
    }
    if state == State::Clean {
        cancel.disarm();
    }
    result.map_err(|e| match e {
        Attempt::Failed(e) => e,
        Attempt::StalePlan => {
            DatabaseError::Aborted("the statement's tables changed while it ran; try again".into())
        }
    })
}

/// Write statements in one transaction, committed only when every one
/// succeeded within the caps; then the session is reset.
async fn write(
    conn: &mut PgConnection,
    statements: &[Statement],
    limits: &Limits,
    state: &mut State,
) -> Result<Vec<ExecuteResult>, Attempt> {
    let caps = Caps {
        rows: limits.max_rows as usize,
        bytes: limits.max_result_bytes,
    };
    let mut prepared_now = Vec::new();
    let mut results = Vec::with_capacity(statements.len());
    let begin_sql = begin_sql("BEGIN", limits);
    {
        let client: &Client = conn;
        *state = State::InTransaction;
        // BEGIN goes out with the first statement (or its Parse).
        let mut begin = Some(sent(client.batch_execute(&begin_sql)));
        for (index, statement) in statements.iter().enumerate() {
            let numbered = |e: DatabaseError| {
                if statements.len() > 1 {
                    prefix_statement(e, index)
                } else {
                    e
                }
            };
            let (prepared, new) = prepare(conn, statement)
                .await
                .map_err(|e| e.map(numbered))?;
            if new {
                prepared_now.push((statement.sql.as_str(), prepared.clone()));
            }
            codec::check_params(prepared.params(), &statement.params).map_err(numbered)?;
            let stream = sent(client.query_raw(&prepared, statement.params.iter().map(Param)));
            if let Some(begin) = begin.take() {
                answer(begin).await?;
            }
            let stream = answer(stream)
                .await
                .map_err(|e| Attempt::from(e).map(numbered))?;
            *state = State::Unread;
            let read = rows::read(&prepared, stream, caps)
                .await
                .map_err(|stopped| {
                    if stopped.by_server {
                        *state = State::InTransaction;
                    }
                    Attempt::Failed(numbered(stopped.error))
                })?;
            *state = State::InTransaction;
            results.push(ExecuteResult {
                rows_affected: read.rows_affected,
                returning: read.rows,
            });
        }
        let commit = sent(client.batch_execute("COMMIT"));
        let reset = sent(client.batch_execute(RESET_SESSION));
        let committed = answer(commit).await;
        *state = State::Unread;
        answer(reset).await?;
        *state = State::Clean;
        committed?;
    }
    for (sql, prepared) in prepared_now {
        conn.remember(sql, prepared);
    }
    Ok(results)
}

/// The statement as this connection prepared it before, or prepared now
/// (then `true`: the caller keeps it with [`PgConnection::remember`]).
async fn prepare(conn: &PgConnection, statement: &Statement) -> Result<(Prepared, bool), Attempt> {
    match conn.cached(&statement.sql) {
        Some(prepared) => Ok((prepared, false)),
        None => Ok((conn.prepare(&statement.sql).await?, true)),
    }
}

/// `BEGIN ...`, lowering statement_timeout when the call's deadline is
/// shorter than the session's (configured) timeout, which it never raises.
fn begin_sql(begin: &str, limits: &Limits) -> String {
    match statement_timeout(deadline::remaining(), limits.statement_timeout) {
        Some(millis) => format!("{begin}; SET LOCAL statement_timeout = {millis}"),
        None => begin.to_owned(),
    }
}

/// The statement_timeout to set for a call with `left` until its deadline,
/// in milliseconds; `None` when the session's own `cap` is close enough
/// (within a second: a caller that goes away cancels the statement anyway).
pub(super) fn statement_timeout(left: Option<Duration>, cap: Duration) -> Option<u128> {
    let left = left?;
    (left + Duration::from_secs(1) < cap).then(|| left.as_millis().max(1))
}

/// Sends a request now: the first poll of a tokio-postgres call writes its
/// messages to the connection, so calls polled in order reach the server in
/// that order. Its answer is awaited later with [`answer`].
fn sent<F: Future>(call: F) -> Pin<Box<MaybeDone<F>>> {
    let mut call = Box::pin(maybe_done(call));
    let _ = call.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    call
}

/// The answer to a request made with [`sent`].
async fn answer<F: Future>(mut call: Pin<Box<MaybeDone<F>>>) -> F::Output {
    call.as_mut().await;
    call.as_mut()
        .take_output()
        .expect("a completed MaybeDone holds its output")
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
    fn a_deadline_only_ever_lowers_the_statement_timeout() {
        let cap = Duration::from_secs(30);
        assert_eq!(statement_timeout(None, cap), None);
        assert_eq!(
            statement_timeout(Some(Duration::from_secs(3600)), cap),
            None
        );
        assert_eq!(
            statement_timeout(Some(Duration::from_millis(29_500)), cap),
            None
        );
        assert_eq!(
            statement_timeout(Some(Duration::from_millis(2500)), cap),
            Some(2500)
        );
        assert_eq!(statement_timeout(Some(Duration::ZERO), cap), Some(1));
    }
}

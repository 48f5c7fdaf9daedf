//! The work on one pooled connection around a caller's SQL.
//!
//! Requests are pipelined: they go out back to back and their answers are
//! read after, in order. A Query whose statement this connection prepared
//! before costs one round trip (`BEGIN READ ONLY`, Bind/Execute, `ROLLBACK`
//! sent at once); a new statement costs one more (Parse). Every call leaves
//! the session as it found it for the next caller: a Query's transaction is
//! rolled back (undoing any `set_config` it made), a write's session
//! settings, cursors, temporary tables and advisory locks are reset, and a
//! connection left with unread rows is cancelled and discarded.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Waker},
    time::Duration,
};

use futures::future::{MaybeDone, maybe_done};
use tokio_postgres::{Client, Statement as Prepared, error::SqlState};

use super::{
    DatabaseError, ExecuteResult, Limits, Result, Rows, Statement,
    codec::{self, Param},
    pool::PgConnection,
    rows::{self, AtCap, Caps},
};
use crate::resilience::deadline;

/// Ends a Query. Session advisory locks outlive a rollback, so they go too.
const END_READ: &str = "ROLLBACK; SELECT pg_advisory_unlock_all()";
/// Undoes what a write may have changed in the session beyond its
/// transaction: settings made with `set_config(..., false)` (search_path,
/// role, statement_timeout), cursors WITH HOLD, LISTEN, advisory locks and
/// temporary tables (which would shadow real ones for the next caller).
const RESET_SESSION: &str =
    "RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP";

/// One read-only statement, at most `limit` rows.
pub async fn query(
    conn: &mut PgConnection,
    statement: &Statement,
    limit: u32,
    limits: &Limits,
) -> Result<Rows> {
    let work = Work::Read { statement, limit };
    match attempt(conn, work, limits).await? {
        Output::Rows(rows) => Ok(rows),
        Output::Results(_) => unreachable!("a read returns rows"),
    }
}

/// One write statement in its own transaction.
pub async fn execute(
    conn: &mut PgConnection,
    statement: &Statement,
    limits: &Limits,
) -> Result<ExecuteResult> {
    let work = Work::Write(std::slice::from_ref(statement));
    match attempt(conn, work, limits).await? {
        Output::Results(mut results) => Ok(results.remove(0)),
        Output::Rows(_) => unreachable!("a write returns results"),
    }
}

/// Statements applied atomically: all, or on the first error none.
pub async fn transaction(
    conn: &mut PgConnection,
    statements: &[Statement],
    limits: &Limits,
) -> Result<Vec<ExecuteResult>> {
    match attempt(conn, Work::Write(statements), limits).await? {
        Output::Results(results) => Ok(results),
        Output::Rows(_) => unreachable!("a write returns results"),
    }
}

/// What a call does on its connection.
#[derive(Clone, Copy)]
enum Work<'a> {
    Read {
        statement: &'a Statement,
        limit: u32,
    },
    Write(&'a [Statement]),
}

impl Work<'_> {
    fn statements(&self) -> &[Statement] {
        match self {
            Work::Read { statement, .. } => std::slice::from_ref(statement),
            Work::Write(statements) => statements,
        }
    }
}

enum Output {
    Rows(Rows),
    Results(Vec<ExecuteResult>),
}

/// Runs the work once on the connection.
async fn once(
    conn: &mut PgConnection,
    work: Work<'_>,
    limits: &Limits,
    state: &mut State,
) -> Result<Output, Attempt> {
    match work {
        Work::Read { statement, limit } => read(conn, statement, limit, limits, state)
            .await
            .map(Output::Rows),
        Work::Write(statements) => write(conn, statements, limits, state)
            .await
            .map(Output::Results),
    }
}

/// A Query's work: the statement in a READ ONLY transaction that is
/// rolled back, at most `limit` rows read.
async fn read(
    conn: &mut PgConnection,
    statement: &Statement,
    limit: u32,
    limits: &Limits,
    state: &mut State,
) -> Result<Rows, Attempt> {
    let caps = Caps {
        rows: limit as usize,
        bytes: limits.max_result_bytes,
        at_cap: AtCap::Truncate,
    };
    let (prepared, new) = prepare(conn, statement).await?;
    if new {
        conn.remember(&statement.sql, prepared.clone());
    }
    if prepared.columns().is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "Query runs statements that return rows; use Execute for other statements".into(),
        )
        .into());
    }
    codec::check_params(prepared.params(), &statement.params)?;
    let client: &Client = conn;
    let begin_sql = begin_sql("BEGIN READ ONLY", limits);
    // Once these are sent, the ROLLBACK is on its way: whatever happens
    // here, the transaction ends before the connection's next request.
    let begin = sent(client.batch_execute(&begin_sql));
    let stream = sent(client.query_raw(&prepared, statement.params.iter().map(Param)));
    let end = sent(client.batch_execute(END_READ));
    answer(begin).await?;
    let stream = answer(stream).await?;
    *state = State::Unread;
    let read = match rows::read(&prepared, stream, caps).await {
        Ok(read) => read,
        Err(stopped) => {
            if stopped.by_server {
                *state = State::Clean;
            }
            return Err(stopped.error.into());
        }
    };
    if read.drained {
        *state = State::InTransaction;
        answer(end).await?;
        *state = State::Clean;
    }
    Ok(read.rows)
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

/// Runs `once` on the connection, again if a kept statement went stale, and
/// leaves the connection reusable or, when that cannot be known, cancelled
/// and discarded.
async fn attempt(conn: &mut PgConnection, work: Work<'_>, limits: &Limits) -> Result<Output> {
    let cancel = conn.cancel_on_drop();
    let mut state = State::Clean;
    let mut result = once(conn, work, limits, &mut state).await;
    if matches!(result, Err(Attempt::StalePlan)) {
        for statement in work.statements() {
            conn.forget(&statement.sql);
        }
        if state == State::InTransaction {
            state = State::Unread;
            if conn.batch_execute("ROLLBACK").await.is_ok() {
                state = State::Clean;
            }
        }
        if state == State::Clean {
            result = once(conn, work, limits, &mut state).await;
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
        at_cap: AtCap::Refuse,
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
fn statement_timeout(left: Option<Duration>, cap: Duration) -> Option<u128> {
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

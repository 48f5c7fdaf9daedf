//! Query's read cycles on one of the broker's own connections
//! ([`super::wire`]), several callers' at a time ([`super::pipeline`]
//! hands them out). A batch is one protocol cycle, one write and one Sync:
//! each job is `BEGIN READ ONLY` and the statement (at most one row past
//! the cap), and what follows it — the next job, or the batch's end —
//! starts with `ROLLBACK` and the release of advisory locks. The rollback
//! undoes whatever the statement changed in the session (`set_config`
//! included), and the read-only transaction cannot be switched back to
//! read-write once the statement runs. PostgreSQL flushes its answers once
//! per Sync: one flush and one send for the whole batch.
//!
//! After an error PostgreSQL skips the rest of the cycle up to the Sync:
//! the failed transaction is then ended on its own (`ROLLBACK`, the
//! release, a Sync) and the jobs it skipped run again at the front of the
//! batch, so one caller's error never reaches another's answer. Every
//! statement that fails counts as slow for a while ([`pipeline::FAILED`]):
//! it runs in batches of its own, where its error skips no one.
//!
//! A caller is answered once its transaction has ended, so no caller sees
//! its answer while its advisory locks are still held. A caller that
//! leaves while its statement runs has it cancelled; a job hit by a cancel
//! meant for another, or whose statement went stale, is handed back to run
//! again ([`Outcome::Again`]).

use std::{collections::VecDeque, sync::Arc};

use postgres_protocol::message::{backend::Message, frontend};
use postgres_types::ToSql;
use tokio::time::Instant;

use super::{
    Column, DatabaseError, Limits, Rows,
    codec::{self, Param},
    pipeline::{self, Job, Outcome, Run},
    rows::{Caps, Collector, RowError, Size},
    session::statement_timeout,
    wire::{self, Prepared, ServerError, WireConnection, WireError},
};

/// Input a batch writes beyond its first job before PostgreSQL has read
/// any: less than a socket buffer, so PostgreSQL writing a large answer
/// while the broker still writes can never leave both waiting.
const BATCH_INPUT_BYTES: usize = 64 * 1024;

/// Runs `jobs` on `conn` and answers each. Statements the connection has
/// not prepared are prepared first (one round trip each). Afterwards the
/// connection is idle, or not reusable (the pool discards it).
/// Each job that ran is added to `runs`: how long it took (a batch's time
/// shared out over its jobs: their answers come at once) and how large its
/// answer was.
pub async fn batch(
    conn: &mut WireConnection,
    jobs: Vec<Job>,
    limits: &Limits,
    runs: &mut Vec<Run>,
) {
    let cancel = conn.cancel_on_drop();
    let mut ready = VecDeque::with_capacity(jobs.len());
    for job in jobs {
        match prepared(conn, &job.statement.sql).await {
            Ok(prepared) => match check(&prepared, &job) {
                Ok(()) => ready.push_back((job, prepared)),
                Err(e) => job.answer(Outcome::Done(Err(e))),
            },
            Err(e) if conn.is_idle() => job.answer(Outcome::Done(Err(e.into()))),
            Err(e) => {
                // The connection broke: this job learns why, the rest run elsewhere.
                job.answer(Outcome::Done(Err(e.into())));
                return again(ready.into_iter().map(|(job, _)| job));
            }
        }
    }
    let mut cancelled = false;
    while !ready.is_empty() {
        let mut sent = Vec::new();
        while let Some((job, prepared)) = ready.pop_front() {
            if !sent.is_empty() && conn.output.len() >= BATCH_INPUT_BYTES {
                ready.push_front((job, prepared));
                break;
            }
            let start = conn.output.len();
            match queue_job(conn, &job, &prepared, limits, !sent.is_empty()) {
                Ok(preamble) => sent.push((job, prepared, preamble)),
                Err(e) => {
                    conn.output.truncate(start);
                    job.answer(Outcome::Done(Err(e)));
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        if let Err(e) = queue_end(conn) {
            return broken(e, sent, ready.into_iter());
        }
        conn.begin_cycle();
        if let Err(e) = conn.flush().await {
            return broken(e, sent, ready.into_iter());
        }
        let started = Instant::now();
        let mut ran = Vec::with_capacity(sent.len());
        let mut sent = sent.into_iter();
        // The previous job, answered once this one's preamble has ended its
        // transaction.
        let mut finished: Option<(Job, Outcome)> = None;
        let mut ended = false;
        while let Some((mut job, prepared, preamble)) = sent.next() {
            let answered = answers(conn, &mut job, &prepared, preamble, limits, &mut cancelled);
            match answered.await {
                Ok(Answer::Ran(outcome)) => {
                    let size = match &outcome {
                        Outcome::Done(Ok(rows)) => rows.size(),
                        _ => Size::default(),
                    };
                    ran.push((job.speed_key, size));
                    if let Some((job, outcome)) = finished.take() {
                        job.answer(outcome);
                    }
                    finished = Some((job, outcome));
                }
                Ok(Answer::Failed(outcome)) => {
                    // The rest of the cycle was skipped: end the failed
                    // transaction, then answer; the skipped jobs go first.
                    runs.push(Run {
                        key: job.speed_key,
                        took: pipeline::FAILED,
                        size: Size::default(),
                    });
                    let end = release(conn).await;
                    if let Some((job, outcome)) = finished.take() {
                        job.answer(outcome);
                    }
                    job.answer(outcome);
                    if let Err(e) = end {
                        return broken(e, sent.collect(), ready.into_iter());
                    }
                    for (job, _, _) in sent.rev() {
                        match conn.cached(&job.statement.sql) {
                            _ if job.reply.is_closed() => {}
                            Some(prepared) => ready.push_front((job, prepared)),
                            // Its statement went stale: prepared anew on the next try.
                            None => again(std::iter::once(job)),
                        }
                    }
                    ended = true;
                    break;
                }
                Err(e) => {
                    if let Some((job, outcome)) = finished.take() {
                        job.answer(outcome);
                    }
                    job.answer(Outcome::Done(Err(e.into())));
                    let rest = sent.map(|(job, ..)| job);
                    return again(rest.chain(ready.into_iter().map(|(job, _)| job)));
                }
            }
        }
        let end = if ended { Ok(()) } else { read_end(conn).await };
        if let Some((job, outcome)) = finished.take() {
            job.answer(outcome);
        }
        let share = started.elapsed() / ran.len().max(1) as u32;
        runs.extend(ran.into_iter().map(|(key, size)| Run {
            key,
            took: share,
            size,
        }));
        if let Err(e) = end {
            tracing::debug!(error = %e, "a read connection did not end its batch cleanly");
            conn.retire();
            return again(ready.into_iter().map(|(job, _)| job));
        }
    }
    if cancelled {
        // A cancel may still be on its way: it must not reach a later batch.
        conn.retire();
    }
    if conn.is_idle() {
        cancel.disarm();
    }
}

/// The connection failed before any of `sent` was answered: they and the
/// rest run again elsewhere.
fn broken(
    e: WireError,
    sent: Vec<(Job, Arc<Prepared>, usize)>,
    rest: impl Iterator<Item = (Job, Arc<Prepared>)>,
) {
    tracing::debug!(error = %e, "a read connection failed before its answers");
    let sent = sent.into_iter().map(|(job, ..)| job);
    again(sent.chain(rest.map(|(job, _)| job)));
}

/// Jobs that never ran to an answer here: run them again.
fn again(jobs: impl Iterator<Item = Job>) {
    for job in jobs {
        job.answer(Outcome::Again(DatabaseError::Unavailable(
            "the database connection failed".into(),
        )));
    }
}

/// Statements Query may run, with the parameters the caller gave.
fn check(prepared: &Prepared, job: &Job) -> Result<(), DatabaseError> {
    if prepared.columns.is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "Query runs statements that return rows; use Execute for other statements".into(),
        ));
    }
    codec::check_params(&prepared.params, &job.statement.params)
}

/// Queues one job (after `previous`, first the end of that job's
/// transaction); how many statements come before the caller's (whose rows
/// are not the caller's).
fn queue_job(
    conn: &mut WireConnection,
    job: &Job,
    prepared: &Prepared,
    limits: &Limits,
    previous: bool,
) -> Result<usize, DatabaseError> {
    let mut preamble = 1;
    if previous {
        queue_release(conn)?;
        preamble += 2;
    }
    bind_execute(conn, wire::BEGIN_READ, &[], &[], 0)?;
    let left = job
        .deadline
        .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
    if let Some(millis) = statement_timeout(left, limits.statement_timeout) {
        let millis = super::Value::Text(millis.to_string());
        let text = [postgres_types::Type::TEXT];
        bind_execute(conn, wire::SET_TIMEOUT, &text, &[Param(&millis)], 0)?;
        preamble += 1;
    }
    // One row past the cap tells whether the result was cut.
    let fetch = i32::try_from(job.limit).unwrap_or(i32::MAX - 1) + 1;
    let params: Vec<Param<'_>> = job.statement.params.iter().map(Param).collect();
    bind_execute(conn, &prepared.name, &prepared.params, &params, fetch)?;
    Ok(preamble)
}

/// `ROLLBACK` (accepted after a failed statement too) and the release of
/// session advisory locks, which outlive a rollback.
fn queue_release(conn: &mut WireConnection) -> Result<(), WireError> {
    bind_execute(conn, wire::ROLLBACK, &[], &[], 0)?;
    bind_execute(conn, wire::UNLOCK, &[], &[], 0)
}

/// The end of a batch: the last job's release, the Close of statements
/// evicted from the connection's cache, and the Sync.
fn queue_end(conn: &mut WireConnection) -> Result<(), WireError> {
    queue_release(conn)?;
    conn.close_evicted()?;
    frontend::sync(&mut conn.output);
    Ok(())
}

/// Reads the answers of [`queue_end`]: the connection must be idle after it.
async fn read_end(conn: &mut WireConnection) -> Result<(), WireError> {
    conn.finish_cycle().await?;
    if !conn.is_idle() {
        return Err(WireError::Broken(
            "the database did not end a read-only transaction".into(),
        ));
    }
    Ok(())
}

/// Ends a transaction that failed, in a cycle of its own.
async fn release(conn: &mut WireConnection) -> Result<(), WireError> {
    conn.begin_cycle();
    queue_end(conn)?;
    conn.flush().await?;
    read_end(conn).await
}

/// How a job's answers ended.
enum Answer {
    /// The statement ran to its end (its rows, or the broker's own cap
    /// error); the cycle goes on with the next job.
    Ran(Outcome),
    /// PostgreSQL reported an error and skipped the rest of the cycle up to
    /// its Sync, which has been read: the transaction is still to be ended.
    Failed(Outcome),
}

/// Reads one job's answers: its preamble, then its rows or its error.
/// Fails when the connection cannot go on.
async fn answers(
    conn: &mut WireConnection,
    job: &mut Job,
    prepared: &Prepared,
    preamble: usize,
    limits: &Limits,
    cancelled: &mut bool,
) -> Result<Answer, WireError> {
    let caps = Caps {
        rows: job.limit as usize,
        bytes: limits.max_result_bytes,
    };
    let mut rows = Gathering {
        collector: Collector::with_room(caps, job.room),
        cells: prepared.columns.len(),
        truncated: false,
    };
    let mut failed: Option<DatabaseError> = None;
    let mut leaving = false;
    let mut completed = 0;
    let error = loop {
        if completed == preamble && failed.is_none() {
            // The statement's rows already read: taken in one go.
            if let Err(e) = conn.buffered_rows(|row| rows.take(row)) {
                failed = Some(row_failed(e, conn, &mut leaving, cancelled)?);
            }
        }
        let message = tokio::select! {
            biased;
            message = conn.next() => message?,
            () = job.reply.closed(), if !leaving => {
                // The caller left: stop its statement (the answers are
                // read and dropped; a cancel that lands on the next job
                // makes that one run again).
                leaving = true;
                *cancelled = true;
                conn.cancel_running();
                continue;
            }
        };
        match message {
            Message::CommandComplete(_)
            | Message::PortalSuspended
            | Message::EmptyQueryResponse => {
                completed += 1;
                if completed > preamble {
                    break None;
                }
            }
            Message::DataRow(_) if completed != preamble || failed.is_some() => {}
            Message::DataRow(row) => {
                if let Err(e) = rows.take(row.buffer()) {
                    failed = Some(row_failed(e, conn, &mut leaving, cancelled)?);
                }
            }
            Message::ErrorResponse(e) => {
                break Some((ServerError::parse(e.fields()), completed < preamble));
            }
            Message::ReadyForQuery(_) => {
                return Err(WireError::Broken(
                    "the database ended a batch before its last statement".into(),
                ));
            }
            _ => {}
        }
    };
    let Some((error, before_statement)) = error else {
        return Ok(Answer::Ran(Outcome::Done(match failed {
            Some(error) => Err(error),
            None => Ok(rows.finish(prepared.columns.clone())),
        })));
    };
    // PostgreSQL skips what follows up to the Sync.
    loop {
        if let Message::ReadyForQuery(_) = conn.next().await? {
            break;
        }
    }
    if let Some(error) = failed {
        // Past the byte cap: the broker's own error, whatever stopped it.
        return Ok(Answer::Failed(Outcome::Done(Err(error))));
    }
    let outcome = match error {
        // A cancel sent for another job that reached this one.
        e if *cancelled && !leaving && is_user_cancel(&e) => {
            Outcome::Again(WireError::Server(e).into())
        }
        // The end of the previous job's transaction or the start of this
        // one failed: not the caller's doing; the connection is suspect.
        e if before_statement => {
            conn.retire();
            Outcome::Again(WireError::Server(e).into())
        }
        e if is_stale_plan(&e) => {
            // The statement's tables changed since it was prepared here.
            conn.forget(&job.statement.sql);
            Outcome::Again(DatabaseError::Aborted(
                "the statement's tables changed while it ran; try again".into(),
            ))
        }
        e => Outcome::Done(Err(WireError::Server(e).into())),
    };
    Ok(Answer::Failed(outcome))
}

/// A statement's rows as they are read, within its caps.
struct Gathering {
    collector: Collector,
    /// Cells per row.
    cells: usize,
    /// A row past the row cap came (and was dropped).
    truncated: bool,
}

impl Gathering {
    /// Keeps one row (a DataRow's cells, after the count).
    fn take(&mut self, row: &[u8]) -> Result<(), RowError> {
        if self.collector.full() {
            self.truncated = true;
            return Ok(());
        }
        self.collector.push_row(row, self.cells)
    }

    fn finish(self, columns: Arc<[Column]>) -> Rows {
        self.collector.finish(columns, self.truncated)
    }
}

/// A row could not be kept: one that does not match its columns breaks the
/// connection; past the byte cap, the statement is stopped and the rest of
/// its rows are dropped as they come (the caller's error is returned).
fn row_failed(
    e: RowError,
    conn: &WireConnection,
    leaving: &mut bool,
    cancelled: &mut bool,
) -> Result<DatabaseError, WireError> {
    match e {
        RowError::Malformed => Err(WireError::Broken("a row does not match its columns".into())),
        e @ RowError::TooLarge(_) => {
            if !*leaving {
                *leaving = true;
                *cancelled = true;
                conn.cancel_running();
            }
            Ok(e.into_database())
        }
    }
}

fn is_stale_plan(e: &ServerError) -> bool {
    e.code == "0A000" && e.message.starts_with("cached plan must not change")
}

fn is_user_cancel(e: &ServerError) -> bool {
    e.code == "57014" && e.message.contains("user request")
}

/// Queues Bind and Execute of a prepared statement on the unnamed portal.
fn bind_execute(
    conn: &mut WireConnection,
    statement: &str,
    types: &[postgres_types::Type],
    params: &[Param<'_>],
    max_rows: i32,
) -> Result<(), WireError> {
    let formats = params
        .iter()
        .zip(types)
        .map(|(p, ty)| p.encode_format(ty) as i16);
    frontend::bind(
        "",
        statement,
        formats,
        params.iter().zip(types),
        |(param, ty), buf| match param.to_sql(ty, buf)? {
            postgres_types::IsNull::Yes => Ok(postgres_protocol::IsNull::Yes),
            postgres_types::IsNull::No => Ok(postgres_protocol::IsNull::No),
        },
        [1],
        &mut conn.output,
    )
    .map_err(|e| match e {
        frontend::BindError::Conversion(e) => {
            WireError::Broken(format!("cannot encode a parameter: {e}"))
        }
        frontend::BindError::Serialization(e) => e.into(),
    })?;
    frontend::execute("", max_rows, &mut conn.output)?;
    Ok(())
}

/// The statement as this connection prepared it before, or prepared now.
async fn prepared(conn: &mut WireConnection, sql: &str) -> Result<Arc<Prepared>, WireError> {
    if let Some(prepared) = conn.cached(sql) {
        return Ok(prepared);
    }
    let prepared = conn.prepare(sql).await?;
    conn.remember(sql, prepared.clone());
    Ok(prepared)
}

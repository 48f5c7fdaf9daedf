//! Query on one of its own connections ([`super::wire`]), in one protocol
//! cycle: `BEGIN READ ONLY`, the statement (at most one row past the cap),
//! `ROLLBACK` and the release of advisory locks go out as one pipeline with
//! a single Sync, and their answers come back in one flush. The rollback
//! undoes whatever the statement changed in the session (`set_config`
//! included); the read-only transaction cannot be switched back to
//! read-write once the statement runs. A statement that fails leaves the
//! transaction aborted: a second cycle ends it. A connection whose answers
//! were left unread is cancelled and discarded.

use std::sync::Arc;

use postgres_protocol::message::{backend::Message, frontend};
use postgres_types::ToSql;

use super::{
    Column, DatabaseError, Limits, Result, Rows, Statement,
    codec::{self, Param},
    rows::{Caps, Collector},
    session::statement_timeout,
    wire::{self, Prepared, ServerError, WireConnection, WireError},
};
use crate::resilience::deadline;

/// One read-only statement, at most `limit` rows.
pub async fn query(
    conn: &mut WireConnection,
    statement: &Statement,
    limit: u32,
    limits: &Limits,
) -> Result<Rows> {
    let cancel = conn.cancel_on_drop();
    let mut result = once(conn, statement, limit, limits).await;
    if matches!(result, Err(Failure::StalePlan)) {
        // The statement's tables changed since it was prepared here.
        conn.forget(&statement.sql);
        if end_transaction(conn).await {
            result = once(conn, statement, limit, limits).await;
        }
    }
    if matches!(conn.status(), Some(b'T' | b'E')) {
        end_transaction(conn).await;
    }
    if conn.is_idle() {
        cancel.disarm();
    }
    result.map_err(|failure| match failure {
        Failure::Error(e) => e,
        Failure::StalePlan => {
            DatabaseError::Aborted("the statement's tables changed while it ran; try again".into())
        }
    })
}

enum Failure {
    StalePlan,
    Error(DatabaseError),
}

impl From<DatabaseError> for Failure {
    fn from(e: DatabaseError) -> Self {
        Self::Error(e)
    }
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Server(e)
                if e.code == "0A000" && e.message.starts_with("cached plan must not change") =>
            {
                Self::StalePlan
            }
            e => Self::Error(e.into()),
        }
    }
}

/// Ends an open or aborted transaction (and releases advisory locks);
/// whether the connection is idle again.
async fn end_transaction(conn: &mut WireConnection) -> bool {
    let ended = async {
        conn.begin_cycle();
        for name in [wire::ROLLBACK, wire::UNLOCK] {
            bind_execute(conn, name, &[], &[], 0)?;
        }
        frontend::sync(&mut conn.output);
        conn.flush().await?;
        conn.finish_cycle().await
    };
    ended.await.is_ok() && conn.is_idle()
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

/// Runs the statement once: one cycle, its rows read within the caps.
async fn once(
    conn: &mut WireConnection,
    statement: &Statement,
    limit: u32,
    limits: &Limits,
) -> Result<Rows, Failure> {
    let prepared = prepared(conn, &statement.sql).await?;
    if prepared.columns.is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "Query runs statements that return rows; use Execute for other statements".into(),
        )
        .into());
    }
    codec::check_params(&prepared.params, &statement.params)?;
    let params: Vec<Param<'_>> = statement.params.iter().map(Param).collect();

    // From here the connection is mid-cycle: should anything fail before
    // the answers are read, it is discarded, never reused half-written.
    conn.begin_cycle();
    conn.close_evicted()?;
    bind_execute(conn, wire::BEGIN_READ, &[], &[], 0)?;
    let timeout = statement_timeout(deadline::remaining(), limits.statement_timeout);
    let preamble = match timeout {
        Some(millis) => {
            let millis = super::Value::Text(millis.to_string());
            let text = [postgres_types::Type::TEXT];
            bind_execute(conn, wire::SET_TIMEOUT, &text, &[Param(&millis)], 0)?;
            2
        }
        None => 1,
    };
    // One row past the cap tells whether the result was cut.
    let fetch = i32::try_from(limit).unwrap_or(i32::MAX - 1) + 1;
    bind_execute(conn, &prepared.name, &prepared.params, &params, fetch)?;
    bind_execute(conn, wire::ROLLBACK, &[], &[], 0)?;
    bind_execute(conn, wire::UNLOCK, &[], &[], 0)?;
    frontend::sync(&mut conn.output);
    conn.flush().await?;

    let caps = Caps {
        rows: limit as usize,
        bytes: limits.max_result_bytes,
    };
    let mut collector = Collector::new(caps);
    let mut truncated = false;
    let mut completed = 0;
    let mut error = None;
    loop {
        match conn.next().await? {
            Message::DataRow(row) if completed == preamble && error.is_none() => {
                if collector.full() {
                    truncated = true;
                    continue;
                }
                let buffer = row.buffer();
                let mut ranges = row.ranges();
                let mut cells = Vec::with_capacity(prepared.columns.len());
                for (_, ty) in &prepared.columns {
                    let range = fallible_iterator::FallibleIterator::next(&mut ranges)
                        .map_err(WireError::from)?
                        .ok_or_else(|| WireError::Broken("a row is missing cells".into()))?;
                    cells.push((ty, range.map(|r| &buffer[r])));
                }
                // Past the byte cap the rest is left unread: the connection
                // is cancelled and discarded.
                collector.push(cells.into_iter())?;
            }
            Message::CommandComplete(_)
            | Message::PortalSuspended
            | Message::EmptyQueryResponse => {
                completed += 1;
            }
            Message::ErrorResponse(e) if error.is_none() => {
                error = Some(WireError::Server(ServerError::parse(e.fields())));
            }
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    if let Some(error) = error {
        return Err(error.into());
    }
    Ok(collector.finish(columns(&prepared), truncated))
}

fn columns(prepared: &Prepared) -> Vec<Column> {
    prepared
        .columns
        .iter()
        .map(|(name, ty)| Column {
            name: name.clone(),
            type_name: ty.name().to_owned(),
        })
        .collect()
}

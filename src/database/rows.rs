//! Result rows read off a stream and decoded as they arrive, within a row
//! cap and a byte cap, so that no result is ever held beyond the limits.

use std::pin::pin;

use futures::StreamExt;
use tokio_postgres::{RowStream, Statement as Prepared};

use super::{
    Column, DatabaseError, Rows,
    codec::{self, Raw},
};

/// Bytes counted per cell on top of its data (the framing a response adds).
const CELL_OVERHEAD: usize = 8;
/// Rows past a Query's cap read (and dropped) in the hope that the result
/// ends there, which keeps the connection; a longer result is cancelled.
const DRAIN_ROWS: usize = 1000;

/// What to do at the row cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCap {
    /// Stop and mark the result truncated (Query's `max_rows`).
    Truncate,
    /// Refuse the result (a write's RETURNING rows: a partial answer would hide what was written).
    Refuse,
}

/// Caps on one result.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub rows: usize,
    pub bytes: usize,
    pub at_cap: AtCap,
}

/// How reading a stream ended.
pub struct Read {
    pub rows: Rows,
    /// The stream was read to its end; otherwise rows are left unread on
    /// the connection, which must not be reused.
    pub drained: bool,
    /// The command tag's row count (only when drained).
    pub rows_affected: u64,
}

/// Why reading stopped early.
pub struct Stopped {
    pub error: DatabaseError,
    /// PostgreSQL ended the statement (with this error): nothing is left
    /// unread. Otherwise the broker stopped reading and rows may remain.
    pub by_server: bool,
}

impl From<DatabaseError> for Stopped {
    fn from(error: DatabaseError) -> Self {
        Self {
            error,
            by_server: false,
        }
    }
}

/// Reads and decodes `stream` within `caps`.
pub async fn read(
    prepared: &Prepared,
    stream: RowStream,
    caps: Caps,
) -> std::result::Result<Read, Stopped> {
    let mut stream = pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| Stopped {
            error: e.into(),
            by_server: true,
        })?;
        if rows.len() == caps.rows {
            return match caps.at_cap {
                AtCap::Truncate => Ok(Read {
                    rows: Rows {
                        columns: columns(prepared),
                        rows,
                        truncated: true,
                    },
                    drained: drain(stream.as_mut(), DRAIN_ROWS).await,
                    rows_affected: 0,
                }),
                AtCap::Refuse => Err(DatabaseError::ResourceExhausted(format!(
                    "the statement returned more than {} rows (BROKER_MAX_ROWS); nothing was written",
                    caps.rows
                ))
                .into()),
            };
        }
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw: Raw<'_> = row.try_get(i).map_err(DatabaseError::from)?;
            bytes += raw.0.map_or(0, <[u8]>::len) + CELL_OVERHEAD;
            values.push(codec::decode(column.type_(), raw.0)?);
        }
        if bytes > caps.bytes {
            return Err(DatabaseError::ResourceExhausted(format!(
                "the result is larger than {} bytes (BROKER_MAX_RESULT_MIB): select fewer rows or columns",
                caps.bytes
            ))
            .into());
        }
        rows.push(values);
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    Ok(Read {
        rows: Rows {
            columns: columns(prepared),
            rows,
            truncated: false,
        },
        drained: true,
        rows_affected,
    })
}

/// Reads and drops up to `most` rows; whether the statement ended (an
/// error after the rows a caller gets ends it too).
async fn drain(mut stream: std::pin::Pin<&mut RowStream>, most: usize) -> bool {
    for _ in 0..=most {
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return true,
        }
    }
    false
}

fn columns(prepared: &Prepared) -> Vec<Column> {
    prepared
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            type_name: c.type_().name().to_owned(),
        })
        .collect()
}

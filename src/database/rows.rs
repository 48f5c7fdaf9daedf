//! Result rows decoded as they arrive, within a row cap and a byte cap, so
//! that no result is ever held beyond the limits: [`Collector`] for both
//! connection kinds, [`read`] for a write's RETURNING rows on tokio-postgres.

use std::pin::pin;

use futures::StreamExt;
use postgres_types::Type;
use tokio_postgres::{RowStream, Statement as Prepared};

use super::{
    Column, DatabaseError, Rows, Value,
    codec::{self, Raw},
};

/// Bytes counted per cell on top of its data (the framing a response adds).
const CELL_OVERHEAD: usize = 8;
/// Caps on one result.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub rows: usize,
    pub bytes: usize,
}

/// A write's result, read to its end.
pub struct Read {
    pub rows: Rows,
    /// The command tag's row count.
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

/// Reads and decodes `stream` within `caps`; more rows than the cap are
/// refused (a partial RETURNING would hide what was written).
pub async fn read(
    prepared: &Prepared,
    stream: RowStream,
    caps: Caps,
) -> std::result::Result<Read, Stopped> {
    let mut stream = pin!(stream);
    let mut collector = Collector::new(caps);
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| Stopped {
            error: e.into(),
            by_server: true,
        })?;
        if collector.full() {
            return Err(DatabaseError::ResourceExhausted(format!(
                "the statement returned more than {} rows (BROKER_MAX_ROWS); nothing was written",
                caps.rows
            ))
            .into());
        }
        let mut cells = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw: Raw<'_> = row.try_get(i).map_err(DatabaseError::from)?;
            cells.push((column.type_(), raw.0));
        }
        collector.push(cells.into_iter())?;
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    Ok(Read {
        rows: collector.finish(columns(prepared), false),
        rows_affected,
    })
}

/// Decodes rows as they arrive within a row cap and a byte cap.
pub struct Collector {
    caps: Caps,
    rows: Vec<Vec<Value>>,
    bytes: usize,
}

impl Collector {
    pub fn new(caps: Caps) -> Self {
        Self {
            caps,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// The row cap is reached: another row is one too many.
    pub fn full(&self) -> bool {
        self.rows.len() == self.caps.rows
    }

    /// Decodes and keeps one row, given as (type, raw cell) pairs.
    pub fn push<'a>(
        &mut self,
        cells: impl ExactSizeIterator<Item = (&'a Type, Option<&'a [u8]>)>,
    ) -> Result<(), DatabaseError> {
        let mut values = Vec::with_capacity(cells.len());
        for (ty, raw) in cells {
            self.bytes += raw.map_or(0, <[u8]>::len) + CELL_OVERHEAD;
            values.push(codec::decode(ty, raw)?);
        }
        if self.bytes > self.caps.bytes {
            return Err(DatabaseError::ResourceExhausted(format!(
                "the result is larger than {} bytes (BROKER_MAX_RESULT_MIB): select fewer rows or columns",
                self.caps.bytes
            )));
        }
        self.rows.push(values);
        Ok(())
    }

    pub fn finish(self, columns: Vec<Column>, truncated: bool) -> Rows {
        Rows {
            columns,
            rows: self.rows,
            truncated,
        }
    }
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

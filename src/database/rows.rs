//! Result rows gathered as they arrive, within a row cap and a byte cap, so
//! that no result is ever held beyond the limits: [`Collector`] for both
//! connection kinds, [`read`] for a write's RETURNING rows on tokio-postgres.

use std::{pin::pin, sync::Arc};

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use tokio_postgres::{RowStream, Statement as Prepared};

use super::{Column, DatabaseError, Rows, codec::Raw, value::split_cell};

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

/// Reads `stream` within `caps`; more rows than the cap are refused (a
/// partial RETURNING would hide what was written).
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
        for i in 0..row.len() {
            let raw: Raw<'_> = row.try_get(i).map_err(DatabaseError::from)?;
            cells.push(raw.0);
        }
        collector.push_cells(cells)?;
    }
    let rows_affected = stream.rows_affected().unwrap_or(0);
    Ok(Read {
        rows: collector.finish(columns(prepared), false),
        rows_affected,
    })
}

/// Gathers rows as they arrive, within a row cap and a byte cap, as
/// PostgreSQL's raw cells: decoding waits until the rows are sent on.
pub struct Collector {
    caps: Caps,
    data: BytesMut,
    ends: Vec<usize>,
    bytes: usize,
}

/// How large an answer is (its raw cells, its rows): a statement's last
/// answer tells the collector of its next how much room to make at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    pub bytes: usize,
    pub rows: usize,
}

/// The most room made for an answer before its rows arrive.
const MOST_ROOM: Size = Size {
    bytes: 1024 * 1024,
    rows: 16 * 1024,
};

impl Collector {
    pub fn new(caps: Caps) -> Self {
        Self::with_room(caps, Size::default())
    }

    /// A collector with room for `room` (within the caps, and at most
    /// [`MOST_ROOM`]) from the start: grown from empty, a result of 100 rows
    /// was reallocated and copied about ten times. The bound keeps callers
    /// of a statement whose last answer was a large one from each reserving
    /// that much before their own rows arrive.
    pub fn with_room(caps: Caps, room: Size) -> Self {
        Self {
            data: BytesMut::with_capacity(room.bytes.min(caps.bytes).min(MOST_ROOM.bytes)),
            ends: Vec::with_capacity(room.rows.min(caps.rows).min(MOST_ROOM.rows)),
            caps,
            bytes: 0,
        }
    }

    /// The row cap is reached: another row is one too many.
    pub fn full(&self) -> bool {
        self.ends.len() == self.caps.rows
    }

    /// Keeps one row given as a DataRow's cells (after the cell count),
    /// which must hold `cells` cells.
    pub fn push_row(&mut self, row: &[u8], cells: usize) -> Result<(), RowError> {
        let mut rest = row;
        for _ in 0..cells {
            (_, rest) = split_cell(rest).ok_or(RowError::Malformed)?;
        }
        if !rest.is_empty() {
            return Err(RowError::Malformed);
        }
        self.count(row.len() + cells * (CELL_OVERHEAD - 4))?;
        self.data.extend_from_slice(row);
        self.ends.push(self.data.len());
        Ok(())
    }

    /// Keeps one row given cell by cell (`None` for NULL).
    pub fn push_cells(&mut self, cells: Vec<Option<&[u8]>>) -> Result<(), DatabaseError> {
        let size = cells
            .iter()
            .map(|c| c.map_or(0, <[u8]>::len))
            .sum::<usize>();
        self.count(size + cells.len() * CELL_OVERHEAD)
            .map_err(RowError::into_database)?;
        for cell in cells {
            match cell {
                None => self.data.put_i32(-1),
                Some(cell) => {
                    let length = i32::try_from(cell.len()).map_err(|_| {
                        DatabaseError::ResourceExhausted("a value is larger than 2 GiB".into())
                    })?;
                    self.data.put_i32(length);
                    self.data.extend_from_slice(cell);
                }
            }
        }
        self.ends.push(self.data.len());
        Ok(())
    }

    fn count(&mut self, bytes: usize) -> Result<(), RowError> {
        self.bytes += bytes;
        if self.bytes > self.caps.bytes {
            return Err(RowError::TooLarge(self.caps.bytes));
        }
        Ok(())
    }

    pub fn finish(self, columns: Arc<[Column]>, truncated: bool) -> Rows {
        Rows::new(columns, self.data.freeze(), self.ends, truncated)
    }
}

/// Why a row was not kept.
#[derive(Debug)]
pub enum RowError {
    /// Past the byte cap (the cap given).
    TooLarge(usize),
    /// The row's cells do not match its columns: a protocol violation.
    Malformed,
}

impl RowError {
    pub fn into_database(self) -> DatabaseError {
        match self {
            Self::TooLarge(cap) => DatabaseError::ResourceExhausted(format!(
                "the result is larger than {cap} bytes (BROKER_MAX_RESULT_MIB): select fewer rows or columns"
            )),
            Self::Malformed => DatabaseError::Unavailable(
                "the database sent a row that does not match its columns".into(),
            ),
        }
    }
}

fn columns(prepared: &Prepared) -> Arc<[Column]> {
    prepared
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            ty: c.type_().clone(),
        })
        .collect()
}

impl Rows {
    /// Rows from raw cells (`None` for NULL) in column order, as PostgreSQL
    /// would send them: for tests and tools that build answers by hand.
    pub fn from_cells<'a>(
        columns: Arc<[Column]>,
        rows: impl IntoIterator<Item = Vec<Option<&'a [u8]>>>,
        truncated: bool,
    ) -> Result<Self, DatabaseError> {
        let mut collector = Collector::new(Caps {
            rows: usize::MAX,
            bytes: usize::MAX,
        });
        for cells in rows {
            if cells.len() != columns.len() {
                return Err(RowError::Malformed.into_database());
            }
            collector.push_cells(cells)?;
        }
        Ok(collector.finish(columns, truncated))
    }
}

#[cfg(test)]
mod tests {
    use postgres_types::Type;

    use super::*;
    use crate::database::Value;

    fn columns() -> Arc<[Column]> {
        [("id", Type::INT8), ("name", Type::TEXT)]
            .into_iter()
            .map(|(name, ty)| Column {
                name: name.into(),
                ty,
            })
            .collect()
    }

    /// A DataRow's cells (after the count), as PostgreSQL writes them.
    fn data_row(cells: &[Option<&[u8]>]) -> Vec<u8> {
        let mut row = Vec::new();
        for cell in cells {
            match cell {
                None => row.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(cell) => {
                    row.extend_from_slice(&(cell.len() as i32).to_be_bytes());
                    row.extend_from_slice(cell);
                }
            }
        }
        row
    }

    #[test]
    fn rows_keep_their_cells_and_decode_to_values() {
        let caps = Caps {
            rows: 10,
            bytes: 1024,
        };
        let mut collector = Collector::new(caps);
        let id = 7i64.to_be_bytes();
        collector
            .push_row(&data_row(&[Some(&id), Some(b"invoice")]), 2)
            .unwrap();
        collector
            .push_row(&data_row(&[None, Some(b"")]), 2)
            .unwrap();
        let rows = collector.finish(columns(), true);
        assert_eq!((rows.len(), rows.truncated), (2, true));
        let raw: Vec<Vec<Option<&[u8]>>> = rows.iter().map(Iterator::collect).collect();
        assert_eq!(raw[1], vec![None, Some(&b""[..])]);
        assert_eq!(
            rows.values().unwrap(),
            vec![
                vec![Value::Int(7), Value::Text("invoice".into())],
                vec![Value::Null, Value::Text(String::new())],
            ]
        );
        let same = Rows::from_cells(columns(), raw, true).unwrap();
        assert_eq!(same, rows);
    }

    #[test]
    fn rows_that_do_not_match_their_columns_are_refused() {
        let mut collector = Collector::new(Caps {
            rows: 10,
            bytes: 1024,
        });
        let one = data_row(&[Some(b"x")]);
        assert!(matches!(
            collector.push_row(&one, 2),
            Err(RowError::Malformed)
        ));
        let mut cut = data_row(&[Some(b"abc"), None]);
        cut.truncate(5);
        assert!(matches!(
            collector.push_row(&cut, 2),
            Err(RowError::Malformed)
        ));
        let extra = data_row(&[None, None, None]);
        assert!(matches!(
            collector.push_row(&extra, 2),
            Err(RowError::Malformed)
        ));
        assert!(collector.finish(columns(), false).is_empty());
    }

    #[test]
    fn the_byte_cap_counts_cells_and_their_framing() {
        let mut collector = Collector::new(Caps {
            rows: 10,
            bytes: 2 * (100 + CELL_OVERHEAD),
        });
        let cell = [b'a'; 100];
        let row = data_row(&[Some(&cell)]);
        collector.push_row(&row, 1).unwrap();
        collector.push_cells(vec![Some(&cell)]).unwrap();
        let err = collector.push_row(&row, 1).unwrap_err().into_database();
        assert!(
            matches!(err, DatabaseError::ResourceExhausted(_)),
            "{err:?}"
        );
    }

    #[test]
    fn room_made_from_a_last_answer_stays_within_the_caps() {
        let caps = Caps {
            rows: 10,
            bytes: 1024,
        };
        let room = Size {
            bytes: 4096,
            rows: 100,
        };
        let collector = Collector::with_room(caps, room);
        assert!((1024..4096).contains(&collector.data.capacity()));
        assert!((10..100).contains(&collector.ends.capacity()));
        // A huge last answer does not make everyone reserve that much.
        let uncapped = Caps {
            rows: usize::MAX,
            bytes: usize::MAX,
        };
        let huge = Size {
            bytes: 1 << 30,
            rows: 1 << 24,
        };
        let collector = Collector::with_room(uncapped, huge);
        assert!(collector.data.capacity() < 2 * MOST_ROOM.bytes);
        assert!(collector.ends.capacity() < 2 * MOST_ROOM.rows);
        // The next answer's size is what was kept, whatever room was made.
        let mut collector = Collector::with_room(caps, Size { bytes: 1, rows: 1 });
        let row = data_row(&[Some(b"invoice"), None]);
        for _ in 0..3 {
            collector.push_row(&row, 2).unwrap();
        }
        let rows = collector.finish(columns(), false);
        assert_eq!(
            rows.size(),
            Size {
                bytes: 3 * row.len(),
                rows: 3
            }
        );
    }
}

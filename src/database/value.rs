//! Typed SQL values, the database domain's currency in both directions.

use std::{borrow::Cow, sync::Arc};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use postgres_types::Type;

use super::{DatabaseError, codec::decode};

/// One SQL value, as a parameter or in a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(String),
    Bytes(bytes::Bytes),
    Timestamp(DateTime<Utc>),
    /// JSON text: json, jsonb and arrays.
    Json(String),
    /// An exact decimal in PostgreSQL's text form.
    Numeric(String),
}

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Text(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Timestamp(_) => "timestamp",
            Value::Json(_) => "json",
            Value::Numeric(_) => "numeric",
        }
    }

    /// The value as plain JSON: numbers stay numbers, JSON is embedded,
    /// timestamps are RFC 3339, bytes are PostgreSQL's hex form (`\x0a0b`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Double(d) => {
                serde_json::Number::from_f64(*d).map_or_else(|| J::String(d.to_string()), J::Number)
            }
            Value::Text(s) | Value::Numeric(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(bytea_hex(b)),
            Value::Timestamp(t) => {
                J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            Value::Json(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| J::String(text.clone()))
            }
        }
    }
}

/// PostgreSQL's hex text form of bytea.
pub fn bytea_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + bytes.len() * 2);
    text.push_str("\\x");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A result cell decoded, borrowing from the row where it can: what
/// [`Value`] holds, without copying text or bytes out of the result.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(Cow<'a, str>),
    Bytes(&'a [u8]),
    Timestamp(DateTime<Utc>),
    Json(Cow<'a, str>),
    Numeric(String),
}

impl Cell<'_> {
    pub fn into_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Int(i) => Value::Int(i),
            Cell::Double(d) => Value::Double(d),
            Cell::Text(s) => Value::Text(s.into_owned()),
            Cell::Bytes(b) => Value::Bytes(bytes::Bytes::copy_from_slice(b)),
            Cell::Timestamp(t) => Value::Timestamp(t),
            Cell::Json(s) => Value::Json(s.into_owned()),
            Cell::Numeric(s) => Value::Numeric(s),
        }
    }
}

/// A result column: its name and PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: Type,
}

impl Column {
    /// The PostgreSQL type name: `int8`, `timestamptz`, ...
    pub fn type_name(&self) -> &str {
        self.ty.name()
    }
}

/// Rows returned by a statement, kept as PostgreSQL sent them (each row's
/// cells in the DataRow layout: a 4-byte big-endian length, -1 for NULL,
/// then the binary value) and decoded where they are sent on: a Query's
/// rows go from these bytes straight into the Protobuf answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Arc<[Column]>,
    /// Every row's cells, one after another.
    data: Bytes,
    /// Where each row ends in `data`.
    ends: Vec<usize>,
    /// More rows matched than were returned.
    pub truncated: bool,
}

impl Rows {
    /// Rows whose cells were checked against `columns` when gathered
    /// ([`super::rows::Collector`]).
    pub(super) fn new(
        columns: Arc<[Column]>,
        data: Bytes,
        ends: Vec<usize>,
        truncated: bool,
    ) -> Self {
        Self {
            columns,
            data,
            ends,
            truncated,
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The size of every row's raw cells, framing included.
    pub fn raw_len(&self) -> usize {
        self.data.len()
    }

    /// Its raw cells' bytes and its rows.
    pub fn size(&self) -> super::rows::Size {
        super::rows::Size {
            bytes: self.raw_len(),
            rows: self.len(),
        }
    }

    /// Each row's raw cells: `None` for NULL, else the binary value.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RawCells<'_>> {
        (0..self.ends.len()).map(|i| {
            let start = i.checked_sub(1).map_or(0, |previous| self.ends[previous]);
            RawCells {
                data: &self.data[start..self.ends[i]],
            }
        })
    }

    /// Each row decoded, cell by cell in column order.
    pub fn values(&self) -> Result<Vec<Vec<Value>>, DatabaseError> {
        self.iter()
            .map(|cells| {
                cells
                    .zip(self.columns.iter())
                    .map(|(raw, column)| decode(&column.ty, raw).map(Cell::into_value))
                    .collect()
            })
            .collect()
    }
}

/// One row's raw cells, in column order.
#[derive(Debug, Clone)]
pub struct RawCells<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for RawCells<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        // Gathered rows were checked: a row ends after its last cell.
        let (cell, rest) = split_cell(self.data)?;
        self.data = rest;
        Some(cell)
    }
}

/// The first cell of `data` in the DataRow layout (`None` for NULL) and
/// what follows it; `None` when `data` does not start with a whole cell.
pub(super) fn split_cell(data: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (length, rest) = data.split_first_chunk::<4>()?;
    let Ok(length) = usize::try_from(i32::from_be_bytes(*length)) else {
        return Some((None, rest));
    };
    let cell = rest.get(..length)?;
    Some((Some(cell), &rest[length..]))
}

/// One statement with its positional parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// What a write statement did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecuteResult {
    pub rows_affected: u64,
    /// The rows of a RETURNING clause (empty without one).
    pub returning: Rows,
}

//! Result rows: columns by name, and [`Row::get`] decodes a cell into the
//! type asked for, with an error that names the column when it cannot.
//!
//! A Query's rows stay as the broker encoded them until a row is read: the
//! answer is split into rows on arrival ([`QueryAnswer`], each row a slice
//! of the received bytes) and a row's cells are decoded the first time one
//! is asked for, as tokio-postgres does with PostgreSQL's rows. Reading a
//! few columns, or counting rows, costs no allocation per cell.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};

use super::{
    error::{ClientError, Result},
    values::{FromValue, to_json},
};
use crate::proto::{
    self,
    query_response_fields::{COLUMNS, ROWS, TRUNCATED},
};

/// The rows of a Query (or of an Execute with RETURNING).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<proto::Column>,
    pub rows: Vec<Row>,
    /// More rows matched than `max_rows` allowed.
    pub truncated: bool,
}

/// One row; cells are read by column name with [`Row::get`].
#[derive(Debug, Clone)]
pub struct Row {
    columns: Arc<HashMap<String, usize>>,
    /// The encoded `broker.v1.Row` (empty once decoded up front).
    encoded: Bytes,
    values: Decoded,
}

/// A row's values once decoded, or why they could not be.
type Decoded = OnceLock<Result<Vec<proto::Value>, String>>;

impl Rows {
    /// Rows already decoded (an Execute's RETURNING rows).
    pub(crate) fn new(columns: Vec<proto::Column>, rows: Vec<proto::Row>, truncated: bool) -> Self {
        let rows = rows
            .into_iter()
            .map(|row| (Bytes::new(), OnceLock::from(Ok(row.values))));
        Self::assemble(columns, truncated, rows)
    }

    /// Rows from each row's encoding and values, one of them still to come.
    fn assemble(
        columns: Vec<proto::Column>,
        truncated: bool,
        rows: impl Iterator<Item = (Bytes, Decoded)>,
    ) -> Self {
        let index = index(&columns);
        let rows = rows
            .map(|(encoded, values)| Row {
                columns: index.clone(),
                encoded,
                values,
            })
            .collect();
        Self {
            columns,
            rows,
            truncated,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Row> {
        self.rows.iter()
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<&Row> {
        self.rows.first()
    }
}

impl From<QueryAnswer> for Rows {
    fn from(answer: QueryAnswer) -> Self {
        let rows = answer
            .rows
            .into_iter()
            .map(|encoded| (encoded, OnceLock::new()));
        Self::assemble(answer.columns, answer.truncated, rows)
    }
}

fn index(columns: &[proto::Column]) -> Arc<HashMap<String, usize>> {
    Arc::new(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect(),
    )
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl Row {
    /// The cell of `column` as `T`; `Option<T>` for nullable columns.
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T> {
        let index = *self
            .columns
            .get(column)
            .ok_or_else(|| ClientError::Decode(format!("the result has no column {column:?}")))?;
        let value = self.values()?.get(index).ok_or_else(|| {
            ClientError::Decode(format!("the row has no cell for column {column:?}"))
        })?;
        T::from_value(value)
            .map_err(|expected| ClientError::Decode(format!("column {column:?}: {expected}")))
    }

    /// The raw typed values, in column order (decoded on first use).
    pub fn values(&self) -> Result<&[proto::Value]> {
        self.values
            .get_or_init(|| {
                proto::Row::decode(self.encoded.clone())
                    .map(|row| row.values)
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(|e| ClientError::Decode(format!("a row of the answer: {e}")))
    }

    /// The row as a JSON object (timestamps as RFC 3339, numerics as text,
    /// json as JSON, bytes as base64).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let values = self.values()?;
        let mut names: Vec<(&String, &usize)> = self.columns.iter().collect();
        names.sort_by_key(|(_, i)| **i);
        Ok(serde_json::Value::Object(
            names
                .into_iter()
                .map(|(name, i)| {
                    let value = values.get(*i).map_or(serde_json::Value::Null, to_json);
                    (name.clone(), value)
                })
                .collect(),
        ))
    }
}

/// `broker.v1.QueryResponse` as the client library receives it: columns
/// and `truncated` decoded, each row kept as its encoded bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryAnswer {
    columns: Vec<proto::Column>,
    rows: Vec<Bytes>,
    truncated: bool,
}

impl Message for QueryAnswer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(COLUMNS, &self.columns, buf);
        encoding::bytes::encode_repeated(ROWS, &self.rows, buf);
        if self.truncated {
            encoding::bool::encode(TRUNCATED, &self.truncated, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            COLUMNS => encoding::message::merge_repeated(wire_type, &mut self.columns, buf, ctx),
            ROWS => encoding::bytes::merge_repeated(wire_type, &mut self.rows, buf, ctx),
            TRUNCATED => encoding::bool::merge(wire_type, &mut self.truncated, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(COLUMNS, &self.columns)
            + encoding::bytes::encoded_len_repeated(ROWS, &self.rows)
            + if self.truncated {
                encoding::bool::encoded_len(TRUNCATED, &self.truncated)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        self.columns.clear();
        self.rows.clear();
        self.truncated = false;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::client::null;

    fn columns() -> Vec<proto::Column> {
        let column = |name: &str| proto::Column {
            name: name.into(),
            r#type: "int8".into(),
        };
        vec![column("id"), column("note"), column("at")]
    }

    fn row() -> proto::Row {
        proto::Row {
            values: vec![7i64.into(), null(), Utc::now().into()],
        }
    }

    /// The same rows decoded up front and received encoded.
    fn both() -> [Rows; 2] {
        let response = proto::QueryResponse {
            columns: columns(),
            rows: vec![row(), row()],
            truncated: true,
        };
        let answer = QueryAnswer::decode(&response.encode_to_vec()[..]).unwrap();
        [
            Rows::new(columns(), vec![row(), row()], true),
            Rows::from(answer),
        ]
    }

    #[test]
    fn cells_decode_by_name_and_type() {
        for rows in both() {
            assert_eq!((rows.len(), rows.truncated), (2, true));
            let row = rows.first().unwrap();
            assert_eq!(row.get::<i64>("id").unwrap(), 7);
            assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
            assert!(row.get::<DateTime<Utc>>("at").is_ok());
            assert_eq!(row.values().unwrap().len(), 3);
            assert_eq!(row.to_json().unwrap()["id"], 7);
        }
    }

    #[test]
    fn decode_errors_name_the_column() {
        for rows in both() {
            let row = rows.first().unwrap();
            let err = row.get::<String>("id").unwrap_err().to_string();
            assert_eq!(err, "column \"id\": expected text, found an integer");
            let err = row.get::<i64>("nope").unwrap_err().to_string();
            assert!(err.contains("no column \"nope\""), "{err}");
            let err = row.get::<String>("note").unwrap_err().to_string();
            assert!(err.contains("found NULL"), "{err}");
        }
    }

    #[test]
    fn the_answer_reencodes_as_the_generated_message() {
        let response = proto::QueryResponse {
            columns: columns(),
            rows: vec![row()],
            truncated: false,
        };
        let wire = response.encode_to_vec();
        let answer = QueryAnswer::decode(&wire[..]).unwrap();
        assert_eq!(answer.encoded_len(), wire.len());
        assert_eq!(answer.encode_to_vec(), wire);
    }

    #[test]
    fn a_damaged_row_fails_when_read() {
        // A row whose only value claims more bytes than it has.
        let answer = QueryAnswer {
            columns: columns(),
            rows: vec![Bytes::from_static(&[0x0a, 0x05, 0x18])],
            truncated: false,
        };
        let rows = Rows::from(answer);
        let row = rows.first().unwrap();
        let err = row.get::<i64>("id").unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
        assert!(row.to_json().is_err());
    }
}

//! Rust values in, typed rows out.
//!
//! Parameters are [`proto::Value`]s; `From` covers the usual Rust types, so a
//! call reads `client.query(sql, &[s3_key.into(), 10.into()])`. Use
//! [`json`] for json/jsonb and [`numeric`] for exact decimals. Results are
//! [`Rows`]: columns by name, and [`Row::get`] decodes a cell into the type
//! asked for, with an error that names the column when it cannot.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prost_types::{NullValue, Timestamp};

use super::error::{ClientError, Result};
use crate::proto::{self, value::Kind};

/// SQL NULL.
pub fn null() -> proto::Value {
    value(Kind::NullValue(NullValue::NullValue as i32))
}

/// A json/jsonb parameter.
pub fn json(value: &serde_json::Value) -> proto::Value {
    self::value(Kind::JsonValue(value.to_string()))
}

/// An exact numeric parameter, as decimal text (`"12.50"`).
pub fn numeric(text: impl Into<String>) -> proto::Value {
    value(Kind::NumericValue(text.into()))
}

fn value(kind: Kind) -> proto::Value {
    proto::Value { kind: Some(kind) }
}

macro_rules! from {
    ($($t:ty => |$v:ident| $kind:expr),* $(,)?) => {$(
        impl From<$t> for proto::Value {
            fn from($v: $t) -> Self {
                value($kind)
            }
        }
    )*};
}

from! {
    bool => |v| Kind::BoolValue(v),
    i16 => |v| Kind::IntValue(v.into()),
    i32 => |v| Kind::IntValue(v.into()),
    i64 => |v| Kind::IntValue(v),
    u32 => |v| Kind::IntValue(v.into()),
    f32 => |v| Kind::DoubleValue(v.into()),
    f64 => |v| Kind::DoubleValue(v),
    String => |v| Kind::StringValue(v),
    &str => |v| Kind::StringValue(v.to_owned()),
    &String => |v| Kind::StringValue(v.clone()),
    Vec<u8> => |v| Kind::BytesValue(v.into()),
    &[u8] => |v| Kind::BytesValue(bytes::Bytes::copy_from_slice(v)),
    bytes::Bytes => |v| Kind::BytesValue(v),
    DateTime<Utc> => |v| Kind::TimestampValue(Timestamp {
        seconds: v.timestamp(),
        nanos: v.timestamp_subsec_nanos() as i32,
    }),
    serde_json::Value => |v| Kind::JsonValue(v.to_string()),
}

impl<T: Into<proto::Value>> From<Option<T>> for proto::Value {
    fn from(v: Option<T>) -> Self {
        v.map_or_else(null, Into::into)
    }
}

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
    columns: std::sync::Arc<HashMap<String, usize>>,
    values: Vec<proto::Value>,
}

impl Rows {
    pub(crate) fn new(columns: Vec<proto::Column>, rows: Vec<proto::Row>, truncated: bool) -> Self {
        let index = std::sync::Arc::new(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect::<HashMap<_, _>>(),
        );
        let rows = rows
            .into_iter()
            .map(|row| Row {
                columns: index.clone(),
                values: row.values,
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
        T::from_value(&self.values[index])
            .map_err(|expected| ClientError::Decode(format!("column {column:?}: {expected}")))
    }

    /// The raw typed values, in column order.
    pub fn values(&self) -> &[proto::Value] {
        &self.values
    }

    /// The row as a JSON object (timestamps as RFC 3339, numerics as text,
    /// json as JSON, bytes as base64).
    pub fn to_json(&self) -> serde_json::Value {
        let mut names: Vec<(&String, &usize)> = self.columns.iter().collect();
        names.sort_by_key(|(_, i)| **i);
        serde_json::Value::Object(
            names
                .into_iter()
                .map(|(name, i)| (name.clone(), to_json(&self.values[*i])))
                .collect(),
        )
    }
}

/// A typed value as plain JSON.
pub fn to_json(value: &proto::Value) -> serde_json::Value {
    use base64::Engine;
    use serde_json::Value as Json;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::IntValue(i)) => Json::from(*i),
        Some(Kind::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number)
        }
        Some(Kind::StringValue(s) | Kind::NumericValue(s)) => Json::String(s.clone()),
        Some(Kind::BytesValue(b)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Kind::TimestampValue(t)) => timestamp(t).map_or(Json::Null, |t| {
            Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }),
        Some(Kind::JsonValue(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
    }
}

fn timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// Types a result cell decodes into. The error names what was expected.
pub trait FromValue: Sized {
    fn from_value(value: &proto::Value) -> Result<Self, String>;
}

fn mismatch(expected: &str, value: &proto::Value) -> String {
    let found = match &value.kind {
        None | Some(Kind::NullValue(_)) => "NULL",
        Some(Kind::BoolValue(_)) => "a bool",
        Some(Kind::IntValue(_)) => "an integer",
        Some(Kind::DoubleValue(_)) => "a float",
        Some(Kind::StringValue(_)) => "text",
        Some(Kind::BytesValue(_)) => "bytes",
        Some(Kind::TimestampValue(_)) => "a timestamp",
        Some(Kind::JsonValue(_)) => "json",
        Some(Kind::NumericValue(_)) => "a numeric",
    };
    format!("expected {expected}, found {found}")
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match value.kind {
            None | Some(Kind::NullValue(_)) => Ok(None),
            _ => T::from_value(value).map(Some),
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match value.kind {
            Some(Kind::IntValue(i)) => Ok(i),
            _ => Err(mismatch("an integer", value)),
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        let i = i64::from_value(value)?;
        i32::try_from(i).map_err(|_| format!("{i} does not fit an i32"))
    }
}

impl FromValue for f64 {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match &value.kind {
            Some(Kind::DoubleValue(d)) => Ok(*d),
            Some(Kind::IntValue(i)) => Ok(*i as f64),
            Some(Kind::NumericValue(text)) => text
                .parse()
                .map_err(|_| format!("numeric {text} is not a float")),
            _ => Err(mismatch("a number", value)),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match value.kind {
            Some(Kind::BoolValue(b)) => Ok(b),
            _ => Err(mismatch("a bool", value)),
        }
    }
}

/// Text, numerics as their exact decimal text, and json as its text.
impl FromValue for String {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match &value.kind {
            Some(Kind::StringValue(s) | Kind::NumericValue(s) | Kind::JsonValue(s)) => {
                Ok(s.clone())
            }
            _ => Err(mismatch("text", value)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match &value.kind {
            Some(Kind::BytesValue(b)) => Ok(b.to_vec()),
            _ => Err(mismatch("bytes", value)),
        }
    }
}

impl FromValue for DateTime<Utc> {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        match &value.kind {
            Some(Kind::TimestampValue(t)) => {
                timestamp(t).ok_or_else(|| "timestamp out of range".to_owned())
            }
            _ => Err(mismatch("a timestamp", value)),
        }
    }
}

/// json/jsonb and arrays; any other value as its JSON rendering.
impl FromValue for serde_json::Value {
    fn from_value(value: &proto::Value) -> Result<Self, String> {
        Ok(to_json(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Rows {
        let column = |name: &str| proto::Column {
            name: name.into(),
            r#type: "int8".into(),
        };
        Rows::new(
            vec![column("id"), column("note"), column("at")],
            vec![proto::Row {
                values: vec![7i64.into(), null(), Utc::now().into()],
            }],
            false,
        )
    }

    #[test]
    fn cells_decode_by_name_and_type() {
        let rows = rows();
        let row = rows.first().unwrap();
        assert_eq!(row.get::<i64>("id").unwrap(), 7);
        assert_eq!(row.get::<Option<String>>("note").unwrap(), None);
        assert!(row.get::<DateTime<Utc>>("at").is_ok());
    }

    #[test]
    fn decode_errors_name_the_column() {
        let rows = rows();
        let row = rows.first().unwrap();
        let err = row.get::<String>("id").unwrap_err().to_string();
        assert_eq!(err, "column \"id\": expected text, found an integer");
        let err = row.get::<i64>("nope").unwrap_err().to_string();
        assert!(err.contains("no column \"nope\""), "{err}");
        let err = row.get::<String>("note").unwrap_err().to_string();
        assert!(err.contains("found NULL"), "{err}");
    }

    #[test]
    fn options_become_null() {
        assert_eq!(proto::Value::from(None::<i64>), null());
        assert_eq!(proto::Value::from(Some("x")), proto::Value::from("x"));
    }
}

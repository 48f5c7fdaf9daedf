//! Typed SQL values, the database domain's currency in both directions.

use chrono::{DateTime, Utc};

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

/// A result column: its name and PostgreSQL type name (`int8`, `timestamptz`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

/// Rows returned by a statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// More rows matched than were returned.
    pub truncated: bool,
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

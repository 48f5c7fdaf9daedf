//! Rust values in, typed values out.
//!
//! Parameters are [`proto::Value`]s; `From` covers the usual Rust types, so a
//! call reads `client.query(sql, &[s3_key.into(), 10.into()])`. Use
//! [`json`] for json/jsonb and [`numeric`] for exact decimals. A result
//! cell becomes the type asked for through [`FromValue`].

use chrono::{DateTime, Utc};
use prost_types::{NullValue, Timestamp};

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

    #[test]
    fn options_become_null() {
        assert_eq!(proto::Value::from(None::<i64>), null());
        assert_eq!(proto::Value::from(Some("x")), proto::Value::from("x"));
    }
}

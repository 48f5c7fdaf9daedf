//! Plain JSON <-> typed Protobuf values for the database tools.
//!
//! Parameters: `null`, booleans, integers (that fit an int64) and floats map
//! to their typed values; larger integers go as exact numeric text; strings
//! as text (PostgreSQL converts them to the parameter's type: dates, uuids,
//! numerics...); objects and arrays as JSON text.
//!
//! Results: timestamps as RFC 3339 in UTC, numerics as strings (exact),
//! json/jsonb and arrays embedded as JSON, bytea as PostgreSQL's hex text
//! (`"\\x0a0b"`), non-finite floats as strings (`"NaN"`, `"Infinity"`).

use prost_types::Timestamp;
use serde_json::Value as Json;

use crate::{database::bytea_hex, proto};

/// A JSON parameter as a typed value.
pub fn param(json: &Json) -> proto::Value {
    use proto::value::Kind;
    let kind = match json {
        Json::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Kind::IntValue(i),
            (None, _) if n.is_u64() => Kind::NumericValue(n.to_string()),
            (None, Some(f)) => Kind::DoubleValue(f),
            (None, None) => Kind::NumericValue(n.to_string()),
        },
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(_) | Json::Object(_) => Kind::JsonValue(json.to_string()),
    };
    proto::Value { kind: Some(kind) }
}

/// A typed result value as plain JSON.
pub fn to_json(value: proto::Value) -> Json {
    use proto::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::IntValue(i)) => Json::from(i),
        Some(Kind::DoubleValue(d)) => serde_json::Number::from_f64(d)
            .map_or_else(|| Json::String(non_finite(d).into()), Json::Number),
        Some(Kind::StringValue(s) | Kind::NumericValue(s)) => Json::String(s),
        Some(Kind::BytesValue(b)) => Json::String(bytea_hex(&b)),
        Some(Kind::TimestampValue(t)) => timestamp(Some(&t)),
        Some(Kind::JsonValue(text)) => serde_json::from_str(&text).unwrap_or(Json::String(text)),
    }
}

/// PostgreSQL's spelling of a float that JSON cannot hold.
fn non_finite(d: f64) -> &'static str {
    if d.is_nan() {
        "NaN"
    } else if d > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// A timestamp as RFC 3339 in UTC (`2026-01-02T12:00:00Z`); `null` when absent.
pub fn timestamp(time: Option<&Timestamp>) -> Json {
    time.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map_or(Json::Null, |t| {
        Json::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    })
}

#[cfg(test)]
mod tests {
    use proto::value::Kind;
    use serde_json::json;

    use super::*;

    fn kind(json: Json) -> Kind {
        param(&json).kind.unwrap()
    }

    #[test]
    fn parameters_keep_their_json_type() {
        assert_eq!(kind(json!(null)), Kind::NullValue(0));
        assert_eq!(kind(json!(true)), Kind::BoolValue(true));
        assert_eq!(kind(json!(-7)), Kind::IntValue(-7));
        assert_eq!(kind(json!(1.5)), Kind::DoubleValue(1.5));
        assert_eq!(
            kind(json!(u64::MAX)),
            Kind::NumericValue("18446744073709551615".into())
        );
        assert_eq!(
            kind(json!("2026-01-02")),
            Kind::StringValue("2026-01-02".into())
        );
        assert_eq!(
            kind(json!({"a": [1]})),
            Kind::JsonValue(r#"{"a":[1]}"#.into())
        );
    }

    #[test]
    fn results_are_plain_json() {
        let value = |kind| proto::Value { kind: Some(kind) };
        let at = Timestamp {
            seconds: 1_767_355_200,
            nanos: 500_000_000,
        };
        assert_eq!(
            to_json(value(Kind::TimestampValue(at))),
            json!("2026-01-02T12:00:00.500Z")
        );
        assert_eq!(
            to_json(value(Kind::NumericValue("1.10".into()))),
            json!("1.10")
        );
        assert_eq!(
            to_json(value(Kind::JsonValue(r#"{"a":1}"#.into()))),
            json!({"a": 1})
        );
        assert_eq!(
            to_json(value(Kind::BytesValue(bytes::Bytes::from_static(&[
                0, 255
            ])))),
            json!("\\x00ff")
        );
        assert_eq!(to_json(value(Kind::DoubleValue(f64::NAN))), json!("NaN"));
        assert_eq!(to_json(proto::Value { kind: None }), Json::Null);
    }
}

//! Conversions between Protobuf messages and domain types.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::Status;

use super::rows;

use crate::{
    database::{ExecuteResult, Statement, Value},
    object_store::{ObjectInfo, PutResult},
    proto,
};

pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

pub fn object_info(info: ObjectInfo) -> proto::ObjectInfo {
    proto::ObjectInfo {
        key: info.key,
        size: info.size,
        etag: info.etag,
        content_type: info.content_type,
        last_modified: info.last_modified.map(timestamp),
        metadata: info.metadata,
    }
}

pub fn put_result(result: PutResult) -> proto::PutObjectResponse {
    proto::PutObjectResponse {
        key: result.key,
        size: result.size,
        etag: result.etag,
    }
}

/// A Protobuf value as a domain value; an unset `kind` is NULL.
pub fn value_from_proto(value: proto::Value, index: usize) -> Result<Value, Status> {
    use proto::value::Kind;
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::IntValue(i)) => Value::Int(i),
        Some(Kind::DoubleValue(d)) => Value::Double(d),
        Some(Kind::StringValue(s)) => Value::Text(s),
        Some(Kind::BytesValue(b)) => Value::Bytes(b),
        Some(Kind::TimestampValue(t)) => Value::Timestamp(
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(u32::MAX))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "parameter ${}: timestamp out of range",
                        index + 1
                    ))
                })?,
        ),
        Some(Kind::JsonValue(s)) => Value::Json(s),
        Some(Kind::NumericValue(s)) => Value::Numeric(s),
    })
}

pub fn statement(request: proto::ExecuteRequest) -> Result<Statement, Status> {
    params(request.params).map(|params| Statement {
        sql: request.sql,
        params,
    })
}

pub fn params(params: Vec<proto::Value>) -> Result<Vec<Value>, Status> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, v)| value_from_proto(v, i))
        .collect()
}

/// What a write did, with its RETURNING rows.
pub fn execute_response(result: ExecuteResult) -> Result<proto::ExecuteResponse, Status> {
    Ok(proto::ExecuteResponse {
        rows_affected: result.rows_affected,
        columns: rows::proto_columns(&result.returning.columns),
        rows: rows::proto_rows(&result.returning)?,
    })
}

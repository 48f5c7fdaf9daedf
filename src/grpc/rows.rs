//! Result rows from PostgreSQL's cells to Protobuf.
//!
//! A Query's answer is written straight from the cells PostgreSQL sent:
//! each cell is decoded in place ([`Cell`] borrows text and bytes from the
//! row) and written as a `broker.v1.Value`, with no `Value`, `proto::Value`
//! or `String` per cell in between. The server's stubs carry it as
//! [`QueryResponse`] (`build.rs` names it for `broker.v1.QueryResponse`);
//! on the wire it is that message, byte for byte what the generated type
//! would send. Execute and Transaction answers, off the hot path, use the
//! generated types ([`proto_rows`]).

use bytes::{BufMut, BytesMut};
use prost::{
    DecodeError, Message,
    encoding::{
        DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, skip_field,
    },
};
use tonic::Status;

use super::convert;
use crate::{
    database::{self, Cell, Column, Rows},
    proto::{
        self,
        query_response_fields::{COLUMNS, ROWS, TRUNCATED},
    },
};

/// `broker.v1.Column.name`, `broker.v1.Column.type`.
const COLUMN_NAME: u32 = 1;
const COLUMN_TYPE: u32 = 2;
/// `broker.v1.Row.values`.
const ROW_VALUES: u32 = 1;
/// The `kind` fields of `broker.v1.Value`.
const NULL: u32 = 1;
const BOOL: u32 = 2;
const INT: u32 = 3;
const DOUBLE: u32 = 4;
const STRING: u32 = 5;
const BYTES: u32 = 6;
const TIMESTAMP: u32 = 7;
const JSON: u32 = 8;
const NUMERIC: u32 = 9;

/// `broker.v1.QueryResponse` as the broker sends it: its fields already
/// encoded, in field order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResponse {
    encoded: BytesMut,
}

impl QueryResponse {
    /// Encodes `rows`; a cell the broker cannot map fails the whole answer
    /// (INVALID_ARGUMENT, naming the type and the cast that works).
    pub fn new(rows: &Rows) -> Result<Self, Status> {
        let mut out = BytesMut::with_capacity(estimate(rows));
        for column in rows.columns.iter() {
            put_column(column, &mut out);
        }
        let mut cells = Vec::with_capacity(rows.columns.len());
        for raw in rows.iter() {
            cells.clear();
            for (raw, column) in raw.zip(rows.columns.iter()) {
                let cell = database::decode(&column.ty, raw)?;
                let length = value_len(&cell);
                cells.push((cell, length));
            }
            let length = cells.iter().map(|(_, length)| delimited_len(*length)).sum();
            put_header(ROWS, length, &mut out);
            for (cell, length) in &cells {
                put_value(cell, *length, &mut out);
            }
        }
        if rows.truncated {
            put_varint(TRUNCATED, 1, &mut out);
        }
        Ok(Self { encoded: out })
    }
}

impl Message for QueryResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded);
    }

    /// Keeps the fields of QueryResponse as they came (so a decoded answer
    /// encodes to the same bytes) and skips unknown ones, as the generated
    /// type does.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let out = &mut self.encoded;
        match tag {
            COLUMNS | ROWS => {
                let mut field = Vec::new();
                prost::encoding::bytes::merge(wire_type, &mut field, buf, ctx)?;
                put_delimited(tag, &field, out);
            }
            TRUNCATED => {
                let mut truncated = false;
                prost::encoding::bool::merge(wire_type, &mut truncated, buf, ctx)?;
                put_varint(tag, u64::from(truncated), out);
            }
            _ => skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    fn clear(&mut self) {
        self.encoded.clear();
    }
}

/// Roughly the encoded size: the cells, a few bytes of framing each, the
/// column names.
fn estimate(rows: &Rows) -> usize {
    rows.raw_len() + rows.len() * (4 + 4 * rows.columns.len()) + rows.columns.len() * 24
}

fn put_column(column: &Column, out: &mut BytesMut) {
    let name = column.name.as_bytes();
    let type_name = column.type_name().as_bytes();
    put_header(COLUMNS, string_len(name) + string_len(type_name), out);
    put_string(COLUMN_NAME, name, out);
    put_string(COLUMN_TYPE, type_name, out);
}

/// A proto3 string field as prost writes it: left out when empty.
fn string_len(value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        delimited_len(value.len())
    }
}

fn put_string(tag: u32, value: &[u8], out: &mut BytesMut) {
    if !value.is_empty() {
        put_delimited(tag, value, out);
    }
}

fn put_varint(tag: u32, value: u64, out: &mut BytesMut) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

/// The key and length of a length-delimited field.
fn put_header(tag: u32, length: usize, out: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(length as u64, out);
}

fn put_delimited(tag: u32, value: &[u8], out: &mut BytesMut) {
    put_header(tag, value.len(), out);
    out.put_slice(value);
}

/// A length-delimited field of `length` bytes with a one-byte key.
fn delimited_len(length: usize) -> usize {
    1 + encoded_len_varint(length as u64) + length
}

/// The encoded size of a `broker.v1.Value` holding `cell`. Its `kind` is a
/// oneof: the field is written even when it holds a default value.
fn value_len(cell: &Cell<'_>) -> usize {
    match cell {
        Cell::Null | Cell::Bool(_) => 2,
        Cell::Int(i) => 1 + encoded_len_varint(*i as u64),
        Cell::Double(_) => 1 + 8,
        Cell::Text(s) | Cell::Json(s) => delimited_len(s.len()),
        Cell::Numeric(s) => delimited_len(s.len()),
        Cell::Bytes(b) => delimited_len(b.len()),
        Cell::Timestamp(t) => delimited_len(convert::timestamp(*t).encoded_len()),
    }
}

/// Writes `cell`, whose `broker.v1.Value` is `length` bytes
/// ([`value_len`]), as one element of `broker.v1.Row.values`.
fn put_value(cell: &Cell<'_>, length: usize, out: &mut BytesMut) {
    put_header(ROW_VALUES, length, out);
    match cell {
        Cell::Null => put_varint(NULL, prost_types::NullValue::NullValue as u64, out),
        Cell::Bool(b) => put_varint(BOOL, u64::from(*b), out),
        Cell::Int(i) => put_varint(INT, *i as u64, out),
        Cell::Double(d) => {
            encode_key(DOUBLE, WireType::SixtyFourBit, out);
            out.put_f64_le(*d);
        }
        Cell::Text(s) => put_delimited(STRING, s.as_bytes(), out),
        Cell::Bytes(b) => put_delimited(BYTES, b, out),
        Cell::Timestamp(t) => {
            let timestamp = convert::timestamp(*t);
            put_header(TIMESTAMP, timestamp.encoded_len(), out);
            timestamp.encode_raw(out);
        }
        Cell::Json(s) => put_delimited(JSON, s.as_bytes(), out),
        Cell::Numeric(s) => put_delimited(NUMERIC, s.as_bytes(), out),
    }
}

/// `rows` as the generated types (Execute's RETURNING rows).
pub fn proto_rows(rows: &Rows) -> Result<Vec<proto::Row>, Status> {
    rows.iter()
        .map(|raw| {
            let values = raw
                .zip(rows.columns.iter())
                .map(|(raw, column)| database::decode(&column.ty, raw).map(proto_value))
                .collect::<Result<_, _>>()?;
            Ok(proto::Row { values })
        })
        .collect()
}

/// The generated type's columns.
pub fn proto_columns(columns: &[Column]) -> Vec<proto::Column> {
    columns
        .iter()
        .map(|c| proto::Column {
            name: c.name.clone(),
            r#type: c.type_name().to_owned(),
        })
        .collect()
}

fn proto_value(cell: Cell<'_>) -> proto::Value {
    use proto::value::Kind;
    let kind = match cell {
        Cell::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        Cell::Bool(b) => Kind::BoolValue(b),
        Cell::Int(i) => Kind::IntValue(i),
        Cell::Double(d) => Kind::DoubleValue(d),
        Cell::Text(s) => Kind::StringValue(s.into_owned()),
        Cell::Bytes(b) => Kind::BytesValue(bytes::Bytes::copy_from_slice(b)),
        Cell::Timestamp(t) => Kind::TimestampValue(convert::timestamp(t)),
        Cell::Json(s) => Kind::JsonValue(s.into_owned()),
        Cell::Numeric(s) => Kind::NumericValue(s),
    };
    proto::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, sync::Arc};

    use chrono::{DateTime, Utc};
    use postgres_types::Type;

    use super::*;

    fn cells() -> Vec<Cell<'static>> {
        let at = |s: i64, n: u32| Cell::Timestamp(DateTime::<Utc>::from_timestamp(s, n).unwrap());
        vec![
            Cell::Null,
            Cell::Bool(true),
            Cell::Bool(false),
            Cell::Int(0),
            Cell::Int(-5),
            Cell::Int(i64::MAX),
            Cell::Int(i64::MIN),
            Cell::Double(0.0),
            Cell::Double(-1.5),
            Cell::Double(f64::NAN),
            Cell::Text(Cow::Borrowed("")),
            Cell::Text(Cow::Borrowed("héllo")),
            Cell::Text(Cow::Owned("x".repeat(300))),
            Cell::Bytes(&[]),
            Cell::Bytes(&[0, 1, 255]),
            at(0, 0),
            at(1_700_000_000, 0),
            at(1_700_000_000, 123_456_000),
            at(-86_400, 5_000),
            Cell::Json(Cow::Borrowed("{\"a\": [1, 2]}")),
            Cell::Numeric("-0.00050".into()),
        ]
    }

    #[test]
    fn each_cell_encodes_as_the_generated_types_would() {
        for cell in cells() {
            let mut ours = BytesMut::new();
            put_value(&cell, value_len(&cell), &mut ours);
            let generated = proto::Row {
                values: vec![proto_value(cell.clone())],
            }
            .encode_to_vec();
            assert_eq!(&ours[..], &generated[..], "{cell:?}");
            assert_eq!(ours.len(), delimited_len(value_len(&cell)), "{cell:?}");
        }
    }

    fn column(name: &str, ty: Type) -> Column {
        Column {
            name: name.into(),
            ty,
        }
    }

    fn sample(truncated: bool) -> Rows {
        let columns: Arc<[Column]> = vec![
            column("id", Type::INT8),
            column("s3_key", Type::TEXT),
            column("", Type::BOOL),
            column("data", Type::BYTEA),
        ]
        .into();
        let one = 1i64.to_be_bytes();
        let minus = (-7i64).to_be_bytes();
        Rows::from_cells(
            columns,
            [
                vec![Some(&one[..]), Some(&b"a/b.pdf"[..]), Some(&[1][..]), None],
                vec![Some(&minus[..]), Some(&b""[..]), None, Some(&[0, 9][..])],
            ],
            truncated,
        )
        .unwrap()
    }

    fn generated(rows: &Rows) -> proto::QueryResponse {
        proto::QueryResponse {
            columns: proto_columns(&rows.columns),
            rows: proto_rows(rows).unwrap(),
            truncated: rows.truncated,
        }
    }

    #[test]
    fn answers_are_the_generated_message_on_the_wire() {
        for truncated in [false, true] {
            let rows = sample(truncated);
            let ours = QueryResponse::new(&rows).unwrap().encode_to_vec();
            assert_eq!(ours, generated(&rows).encode_to_vec());
            let decoded = proto::QueryResponse::decode(&ours[..]).unwrap();
            assert_eq!(decoded.rows.len(), 2);
            assert_eq!(decoded.truncated, truncated);
        }
        let empty = Rows::from_cells(Arc::from([]), [], false).unwrap();
        assert!(
            QueryResponse::new(&empty)
                .unwrap()
                .encode_to_vec()
                .is_empty()
        );
    }

    #[test]
    fn decoding_keeps_known_fields_and_skips_unknown_ones() {
        let wire = generated(&sample(true)).encode_to_vec();
        let mut with_unknown = wire.clone();
        encode_key(15, WireType::Varint, &mut with_unknown);
        encode_varint(42, &mut with_unknown);
        let decoded = QueryResponse::decode(&with_unknown[..]).unwrap();
        assert_eq!(decoded.encode_to_vec(), wire);
        // A field cut short is an error, as for the generated type.
        assert!(QueryResponse::decode(&wire[..wire.len() / 2]).is_err());
        assert!(proto::QueryResponse::decode(&wire[..wire.len() / 2]).is_err());
    }

    #[test]
    fn a_type_without_a_mapping_fails_the_answer_with_its_cast() {
        let point = [0u8; 16];
        let rows = Rows::from_cells(
            vec![column("p", Type::POINT)].into(),
            [vec![Some(&point[..])]],
            false,
        )
        .unwrap();
        let status = QueryResponse::new(&rows).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("::text"), "{status:?}");
    }
}

//! Result rows from PostgreSQL's cells to Protobuf.
//!
//! A Query's answer is written straight from the cells PostgreSQL sent,
//! each as a `broker.v1.Value`, with no `Value`, `proto::Value` or `String`
//! per cell in between. The common column types (integers, floats, bool,
//! text, bytea, timestamps, json) are written from their binary form by a
//! [`Shortcut`] chosen once per column; the rest are decoded in place
//! ([`Cell`] borrows text and bytes from the row). Both give the same
//! bytes. The server's stubs carry it as
//! [`QueryResponse`] (`build.rs` names it for `broker.v1.QueryResponse`);
//! on the wire it is that message, byte for byte what the generated type
//! would send. Execute and Transaction answers, off the hot path, use the
//! generated types ([`proto_rows`]).

use std::borrow::Cow;

use bytes::BufMut;
use postgres_types::Type;
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, encoded_len_varint, skip_field},
};
use prost_types::Timestamp;
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
/// `google.protobuf.Timestamp.seconds`, `.nanos`.
const TIMESTAMP_SECONDS: u32 = 1;
const TIMESTAMP_NANOS: u32 = 2;

/// `broker.v1.QueryResponse` as the broker sends it: its fields already
/// encoded, in field order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResponse {
    encoded: Vec<u8>,
}

impl QueryResponse {
    /// Encodes `rows`; a cell the broker cannot map fails the whole answer
    /// (INVALID_ARGUMENT, naming the type and the cast that works).
    pub fn new(rows: &Rows) -> Result<Self, Status> {
        let mut out = Vec::with_capacity(estimate(rows));
        for column in rows.columns.iter() {
            put_column(column, &mut out);
        }
        let shortcuts: Vec<Shortcut> = rows.columns.iter().map(|c| Shortcut::of(&c.ty)).collect();
        for raw in rows.iter() {
            // One pass per row: its length is written once its cells are,
            // in the byte kept for it (a row of 128 bytes or more moves
            // along by the extra bytes its length takes).
            put_key(ROWS, WireType::LengthDelimited, &mut out);
            let length_at = out.len();
            out.push(0);
            for ((raw, shortcut), column) in raw.zip(&shortcuts).zip(rows.columns.iter()) {
                let cell = match shortcut.write(raw) {
                    Some(cell) => cell,
                    None => Out::from(database::decode(&column.ty, raw)?),
                };
                cell.put(cell.len(), &mut out);
            }
            let length = out.len() - length_at - 1;
            if length < 0x80 {
                out[length_at] = length as u8;
            } else {
                let (bytes, n) = long_varint(length as u64);
                out.splice(length_at..=length_at, bytes[..n].iter().copied());
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
/// column names, and the ten bytes [`put_long_varint`] writes before it
/// cuts the unused ones off.
fn estimate(rows: &Rows) -> usize {
    rows.raw_len() + rows.len() * (4 + 4 * rows.columns.len()) + rows.columns.len() * 24 + 10
}

fn put_column(column: &Column, out: &mut Vec<u8>) {
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

fn put_string(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    if !value.is_empty() {
        put_delimited(tag, value, out);
    }
}

fn put_varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    put_key(tag, WireType::Varint, out);
    put_raw_varint(value, out);
}

/// The key and length of a length-delimited field.
fn put_header(tag: u32, length: usize, out: &mut Vec<u8>) {
    put_key(tag, WireType::LengthDelimited, out);
    put_raw_varint(length as u64, out);
}

/// A field's key: one byte for every field number here.
fn put_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    put_raw_varint(u64::from(tag << 3 | wire_type as u32), out);
}

/// A varint: one byte for keys and most lengths, written in place (prost's
/// encoder, a call and a capacity check per byte into a `BytesMut`, was a
/// sixth of the work of writing a row).
#[inline(always)]
fn put_raw_varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        put_long_varint(value, out);
    }
}

/// A varint of two bytes or more, gathered and written in one piece: all
/// ten bytes of the buffer, then the unused ones cut off again. A copy of
/// a length known only at run time is a `memcpy` call; a fixed ten bytes
/// is two moves (a 100-row Query of int8, text and timestamp cells: 1.2%
/// fewer broker instructions).
fn put_long_varint(value: u64, out: &mut Vec<u8>) {
    let (bytes, n) = long_varint(value);
    let end = out.len() + n;
    out.extend_from_slice(&bytes);
    out.truncate(end);
}

/// A varint's bytes and how many of them there are.
fn long_varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = value as u8 | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    (bytes, n + 1)
}

fn put_delimited(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    put_header(tag, value.len(), out);
    out.extend_from_slice(value);
}

/// A length-delimited field of `length` bytes with a one-byte key.
fn delimited_len(length: usize) -> usize {
    1 + encoded_len_varint(length as u64) + length
}

/// PostgreSQL's timestamps (microseconds since 2000) within this many
/// microseconds of 2000 are written directly; the rest (`infinity`, years
/// past 250,000) go through [`database::decode`], which knows their limits.
const DIRECT_MICROS: i64 = 8_000_000_000_000_000_000;

/// How a column's cells are written without being decoded into a [`Cell`]:
/// chosen once per column, not per cell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shortcut {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Text,
    Bytea,
    Timestamp,
    Json,
    Jsonb,
    /// Decoded into a [`Cell`] first.
    None,
}

impl Shortcut {
    fn of(ty: &Type) -> Self {
        match *ty {
            Type::INT2 => Self::Int2,
            Type::INT4 => Self::Int4,
            Type::INT8 => Self::Int8,
            Type::FLOAT4 => Self::Float4,
            Type::FLOAT8 => Self::Float8,
            Type::BOOL => Self::Bool,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
                Self::Text
            }
            Type::BYTEA => Self::Bytea,
            Type::TIMESTAMPTZ | Type::TIMESTAMP => Self::Timestamp,
            Type::JSON => Self::Json,
            Type::JSONB => Self::Jsonb,
            _ => Self::None,
        }
    }

    /// The cell as it is written, or `None` when it must be decoded first:
    /// the column has no shortcut, or the cell is one the shortcut leaves
    /// to the decoder (a malformed value, whose error the decoder words).
    fn write<'a>(self, raw: Option<&'a [u8]>) -> Option<Out<'a>> {
        let Some(raw) = raw else {
            return Some(Out::from(Cell::Null));
        };
        // protobuf strings must be UTF-8; most cells are ASCII, which is
        // checked a word at a time (from_utf8 costs ~7 instructions a byte
        // on short texts).
        let text = |raw: &'a [u8]| {
            if raw.is_ascii() {
                Some(raw)
            } else {
                std::str::from_utf8(raw).ok().map(str::as_bytes)
            }
        };
        Some(match self {
            Self::Int2 => Out::Varint(INT, i64::from(i16::from_be_bytes(fixed(raw)?)) as u64),
            Self::Int4 => Out::Varint(INT, i64::from(i32::from_be_bytes(fixed(raw)?)) as u64),
            Self::Int8 => Out::Varint(INT, i64::from_be_bytes(fixed(raw)?) as u64),
            Self::Float4 => Out::Double(f32::from_be_bytes(fixed(raw)?).into()),
            Self::Float8 => Out::Double(f64::from_be_bytes(fixed(raw)?)),
            Self::Bool => Out::Varint(BOOL, u64::from(fixed::<1>(raw)?[0] != 0)),
            Self::Text => Out::Delimited(STRING, Cow::Borrowed(text(raw)?)),
            Self::Bytea => Out::Delimited(BYTES, Cow::Borrowed(raw)),
            Self::Json => Out::Delimited(JSON, Cow::Borrowed(text(raw)?)),
            Self::Jsonb => match raw.split_first() {
                Some((1, json)) => Out::Delimited(JSON, Cow::Borrowed(text(json)?)),
                _ => return None,
            },
            Self::Timestamp => {
                let micros = i64::from_be_bytes(fixed(raw)?);
                if !(-DIRECT_MICROS..=DIRECT_MICROS).contains(&micros) {
                    return None;
                }
                let unix = micros + database::PG_EPOCH_MICROS;
                Out::Timestamp(Timestamp {
                    seconds: unix.div_euclid(1_000_000),
                    nanos: (unix.rem_euclid(1_000_000) * 1_000) as i32,
                })
            }
            Self::None => return None,
        })
    }
}

/// A binary value of exactly `N` bytes.
fn fixed<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    raw.try_into().ok()
}

/// A cell as it is written: the `kind` field of its `broker.v1.Value`.
#[derive(Debug, Clone)]
enum Out<'a> {
    /// `null_value`, `bool_value`, `int_value`.
    Varint(u32, u64),
    Double(f64),
    /// `string_value`, `bytes_value`, `json_value`, `numeric_value`.
    Delimited(u32, Cow<'a, [u8]>),
    Timestamp(Timestamp),
}

impl<'a> From<Cell<'a>> for Out<'a> {
    fn from(cell: Cell<'a>) -> Self {
        let text = |s: Cow<'a, str>| match s {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        };
        match cell {
            Cell::Null => Self::Varint(NULL, prost_types::NullValue::NullValue as u64),
            Cell::Bool(b) => Self::Varint(BOOL, u64::from(b)),
            Cell::Int(i) => Self::Varint(INT, i as u64),
            Cell::Double(d) => Self::Double(d),
            Cell::Text(s) => Self::Delimited(STRING, text(s)),
            Cell::Bytes(b) => Self::Delimited(BYTES, Cow::Borrowed(b)),
            Cell::Timestamp(t) => Self::Timestamp(convert::timestamp(t)),
            Cell::Json(s) => Self::Delimited(JSON, text(s)),
            Cell::Numeric(s) => Self::Delimited(NUMERIC, Cow::Owned(s.into_bytes())),
        }
    }
}

impl Out<'_> {
    /// The encoded size of the `broker.v1.Value`. Its `kind` is a oneof:
    /// the field is written even when it holds a default value.
    fn len(&self) -> usize {
        match self {
            Self::Varint(_, v) => 1 + encoded_len_varint(*v),
            Self::Double(_) => 1 + 8,
            Self::Delimited(_, b) => delimited_len(b.len()),
            Self::Timestamp(t) => delimited_len(t.encoded_len()),
        }
    }

    /// Writes the cell, whose `broker.v1.Value` is `length` bytes
    /// ([`Out::len`]), as one element of `broker.v1.Row.values`: its
    /// framing and any scalar value gathered in a [`Block`] and written at
    /// once, a string's bytes after it.
    fn put(&self, length: usize, out: &mut Vec<u8>) {
        let mut block = Block::default();
        block.header(ROW_VALUES, length);
        match self {
            Self::Varint(tag, v) => block.field(*tag, *v),
            Self::Double(d) => {
                block.key(DOUBLE, WireType::SixtyFourBit);
                block.eight(d.to_le_bytes());
            }
            Self::Delimited(tag, b) => {
                block.header(*tag, b.len());
                block.put(out);
                out.extend_from_slice(b);
                return;
            }
            Self::Timestamp(t) => {
                // google.protobuf.Timestamp's two fields, as prost writes
                // them: each only when not zero.
                block.header(TIMESTAMP, t.encoded_len());
                if t.seconds != 0 {
                    block.field(TIMESTAMP_SECONDS, t.seconds as u64);
                }
                if t.nanos != 0 {
                    block.field(TIMESTAMP_NANOS, i64::from(t.nanos) as u64);
                }
            }
        }
        block.put(out);
    }
}

/// A cell's framing and scalar value, gathered on the stack and written with
/// one capacity check and a copy of a fixed size, where each byte had a
/// capacity check of its own and each varint of two bytes or more a call
/// (a 100-row Query of int8, text and timestamp cells: 185k broker
/// instructions per call before, 167k after). The most a cell gathers here
/// is a timestamp's 21 bytes.
struct Block {
    bytes: [u8; BLOCK],
    len: usize,
}

const BLOCK: usize = 32;

impl Default for Block {
    fn default() -> Self {
        Self {
            bytes: [0; BLOCK],
            len: 0,
        }
    }
}

impl Block {
    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// A field's key: one byte for every field number here (below 16).
    #[inline(always)]
    fn key(&mut self, tag: u32, wire_type: WireType) {
        debug_assert!(tag < 16);
        self.byte((tag << 3 | wire_type as u32) as u8);
    }

    /// A varint; one of two bytes or more is [`long_varint`]'s ten bytes
    /// copied whole and the unused ones left behind (a timestamp's nanos,
    /// its last varint, start at byte 16 at most: 26 of the 32 touched).
    #[inline(always)]
    fn varint(&mut self, value: u64) {
        if value < 0x80 {
            self.byte(value as u8);
        } else {
            let (bytes, n) = long_varint(value);
            self.bytes[self.len..self.len + bytes.len()].copy_from_slice(&bytes);
            self.len += n;
        }
    }

    /// A varint field, as [`put_varint`] writes it.
    #[inline(always)]
    fn field(&mut self, tag: u32, value: u64) {
        self.key(tag, WireType::Varint);
        self.varint(value);
    }

    /// A length-delimited field's key and length, as [`put_header`] writes
    /// them.
    #[inline(always)]
    fn header(&mut self, tag: u32, length: usize) {
        self.key(tag, WireType::LengthDelimited);
        self.varint(length as u64);
    }

    #[inline(always)]
    fn eight(&mut self, bytes: [u8; 8]) {
        self.bytes[self.len..self.len + 8].copy_from_slice(&bytes);
        self.len += 8;
    }

    /// Appends the gathered bytes: all of the block, then the unused part
    /// cut off again.
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.bytes);
        out.truncate(end);
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
    use prost::encoding::{encode_key, encode_varint};

    use super::*;
    use crate::database::PG_EPOCH_MICROS;

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
            // The longest cell a Block gathers: ten bytes of seconds, five of nanos.
            at(-62_135_596_800, 999_999_999),
            Cell::Json(Cow::Borrowed("{\"a\": [1, 2]}")),
            Cell::Numeric("-0.00050".into()),
        ]
    }

    #[test]
    fn each_cell_encodes_as_the_generated_types_would() {
        for cell in cells() {
            let mut ours = Vec::new();
            let out = Out::from(cell.clone());
            out.put(out.len(), &mut ours);
            let generated = proto::Row {
                values: vec![proto_value(cell.clone())],
            }
            .encode_to_vec();
            assert_eq!(&ours[..], &generated[..], "{cell:?}");
            assert_eq!(ours.len(), delimited_len(out.len()), "{cell:?}");
        }
    }

    /// Binary cells of each type with a shortcut, as PostgreSQL sends them,
    /// among them ones the shortcut leaves to the decoder.
    fn raw_cells() -> Vec<(Type, Vec<u8>)> {
        let micros = |m: i64| m.to_be_bytes().to_vec();
        let mut cells = vec![
            (Type::INT2, (-3i16).to_be_bytes().to_vec()),
            (Type::INT2, i16::MAX.to_be_bytes().to_vec()),
            (Type::INT4, i32::MIN.to_be_bytes().to_vec()),
            (Type::INT4, 0i32.to_be_bytes().to_vec()),
            (Type::INT8, i64::MIN.to_be_bytes().to_vec()),
            (Type::INT8, 42i64.to_be_bytes().to_vec()),
            (Type::INT8, vec![1, 2, 3]),
            (Type::FLOAT4, 1.5f32.to_be_bytes().to_vec()),
            (Type::FLOAT4, f32::NAN.to_be_bytes().to_vec()),
            (Type::FLOAT8, (-0.0f64).to_be_bytes().to_vec()),
            (Type::FLOAT8, 1e300f64.to_be_bytes().to_vec()),
            (Type::BOOL, vec![1]),
            (Type::BOOL, vec![0]),
            (Type::BOOL, vec![2]),
            (Type::BOOL, vec![]),
            (Type::TEXT, b"h\xc3\xa9llo".to_vec()),
            (Type::VARCHAR, Vec::new()),
            (Type::NAME, b"pg_class".to_vec()),
            (Type::TEXT, vec![0xff, 0xfe]),
            (Type::BYTEA, vec![0, 1, 255]),
            (Type::BYTEA, Vec::new()),
            (Type::JSON, br#"{"a": 1}"#.to_vec()),
            (Type::JSONB, b"\x01[1, 2]".to_vec()),
            (Type::JSONB, b"\x02[1]".to_vec()),
            (Type::JSONB, Vec::new()),
        ];
        for m in [
            0,
            1,
            -1,
            999_999,
            1_000_000,
            -1_000_001,
            -PG_EPOCH_MICROS,
            -PG_EPOCH_MICROS - 1,
            DIRECT_MICROS,
            -DIRECT_MICROS,
            DIRECT_MICROS + 1,
            i64::MAX,
            i64::MIN,
            i64::MAX - 1,
        ] {
            cells.push((Type::TIMESTAMPTZ, micros(m)));
            cells.push((Type::TIMESTAMP, micros(m)));
        }
        cells.push((Type::TIMESTAMPTZ, vec![0; 4]));
        cells
    }

    fn encoded(cell: &Out<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        cell.put(cell.len(), &mut out);
        out.to_vec()
    }

    #[test]
    fn shortcuts_write_what_the_decoder_would() {
        for (ty, raw) in raw_cells() {
            let shortcut = Shortcut::of(&ty);
            assert_ne!(shortcut, Shortcut::None, "{ty}");
            for raw in [Some(&raw[..]), None] {
                let decoded = database::decode(&ty, raw).map(Out::from);
                match (shortcut.write(raw), decoded) {
                    (Some(out), Ok(decoded)) => {
                        assert_eq!(encoded(&out), encoded(&decoded), "{ty} {raw:?}");
                    }
                    // Left to the decoder, which writes it or words the error.
                    (None, _) => {}
                    (Some(out), Err(e)) => panic!("{ty} {raw:?}: {out:?}, but {e}"),
                }
            }
        }
        // The shortcut takes the cells it should.
        let took = |ty: Type, raw: &[u8]| Shortcut::of(&ty).write(Some(raw)).is_some();
        assert!(took(Type::INT8, &7i64.to_be_bytes()));
        assert!(took(Type::TIMESTAMPTZ, &DIRECT_MICROS.to_be_bytes()));
        assert!(!took(Type::TIMESTAMPTZ, &i64::MAX.to_be_bytes()));
        assert!(!took(Type::TEXT, &[0xff]));
        assert_eq!(Shortcut::of(&Type::NUMERIC), Shortcut::None);
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
        // Rows whose length takes two and three bytes of varint.
        let (long_key, large) = ("k".repeat(200), vec![7u8; 20_000]);
        Rows::from_cells(
            columns,
            [
                vec![Some(&one[..]), Some(&b"a/b.pdf"[..]), Some(&[1][..]), None],
                vec![Some(&minus[..]), Some(&b""[..]), None, Some(&[0, 9][..])],
                vec![Some(&one[..]), Some(long_key.as_bytes()), None, None],
                vec![None, Some(&b"x"[..]), Some(&[0][..]), Some(&large[..])],
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
            assert_eq!(decoded.rows.len(), 4);
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

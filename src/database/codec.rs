//! PostgreSQL wire values <-> [`Value`]: parameters go out in text form (so
//! PostgreSQL itself converts them to the statement's types and reports
//! mismatches), bytea in binary; results come back in binary and are decoded
//! here per the type mapping in DESIGN.md, into [`Cell`]s that borrow text
//! and bytes from the row.

use std::{borrow::Cow, error::Error, fmt::Write as _};

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveTime};
use postgres_protocol::types as wire;
use postgres_types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use serde_json::Value as Json;

use super::{Cell, DatabaseError, Value};

type BoxError = Box<dyn Error + Sync + Send>;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Checks parameters against a prepared statement's before anything runs.
pub fn check_params(expected: &[Type], params: &[Value]) -> Result<(), DatabaseError> {
    if expected.len() != params.len() {
        return Err(DatabaseError::InvalidArgument(format!(
            "the statement has {} parameter(s) but {} were given",
            expected.len(),
            params.len()
        )));
    }
    for (index, (ty, value)) in expected.iter().zip(params).enumerate() {
        let n = index + 1;
        match value {
            Value::Bytes(_) if *ty != Type::BYTEA => {
                return Err(DatabaseError::InvalidArgument(format!(
                    "parameter ${n}: bytes_value needs a bytea parameter, not {}",
                    ty.name()
                )));
            }
            Value::Int(i) if *ty == Type::INT2 && i16::try_from(*i).is_err() => {
                return Err(out_of_range(n, *i, ty));
            }
            Value::Int(i) if *ty == Type::INT4 && i32::try_from(*i).is_err() => {
                return Err(out_of_range(n, *i, ty));
            }
            Value::Text(s) | Value::Json(s) | Value::Numeric(s) if s.contains('\0') => {
                return Err(DatabaseError::InvalidArgument(format!(
                    "parameter ${n}: text must not contain NUL characters"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn out_of_range(n: usize, value: i64, ty: &Type) -> DatabaseError {
    DatabaseError::InvalidArgument(format!(
        "parameter ${n}: {value} is out of range for {}",
        ty.name()
    ))
}

/// A parameter on the wire. Everything but bytea is sent in text form.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bytes(bytes) => out.put_slice(bytes),
            Value::Bool(b) => out.put_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => write!(Writer(out), "{i}")?,
            Value::Double(d) => write_double(*d, out)?,
            Value::Text(s) | Value::Json(s) | Value::Numeric(s) => out.put_slice(s.as_bytes()),
            Value::Timestamp(t) if *ty == Type::DATE => {
                write!(Writer(out), "{}", t.format("%Y-%m-%d"))?
            }
            Value::Timestamp(t) => write!(Writer(out), "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))?,
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self.0 {
            Value::Bytes(_) => Format::Binary,
            _ => Format::Text,
        }
    }

    to_sql_checked!();
}

fn write_double(d: f64, out: &mut BytesMut) -> Result<(), BoxError> {
    if d.is_nan() {
        out.put_slice(b"NaN");
    } else if d.is_infinite() {
        out.put_slice(if d > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        write!(Writer(out), "{d:?}")?;
    }
    Ok(())
}

struct Writer<'a>(&'a mut BytesMut);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// A result cell before decoding: its raw binary form, or NULL.
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes one binary result cell of type `ty`.
pub fn decode<'a>(ty: &Type, raw: Option<&'a [u8]>) -> Result<Cell<'a>, DatabaseError> {
    let Some(raw) = raw else {
        return Ok(Cell::Null);
    };
    decode_binary(ty, raw).map_err(|e| {
        DatabaseError::InvalidArgument(format!(
            "cannot return a value of type {}: {e}; cast the column to text (::text)",
            ty.name()
        ))
    })
}

fn decode_binary<'a>(ty: &Type, raw: &'a [u8]) -> Result<Cell<'a>, BoxError> {
    let text = |s: String| Cell::Text(Cow::Owned(s));
    Ok(match *ty {
        Type::BOOL => Cell::Bool(wire::bool_from_sql(raw)?),
        Type::INT2 => Cell::Int(wire::int2_from_sql(raw)?.into()),
        Type::INT4 => Cell::Int(wire::int4_from_sql(raw)?.into()),
        Type::INT8 => Cell::Int(wire::int8_from_sql(raw)?),
        Type::OID => Cell::Int(wire::oid_from_sql(raw)?.into()),
        Type::FLOAT4 => Cell::Double(wire::float4_from_sql(raw)?.into()),
        Type::FLOAT8 => Cell::Double(wire::float8_from_sql(raw)?),
        Type::NUMERIC => Cell::Numeric(numeric_text(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            Cell::Text(Cow::Borrowed(wire::text_from_sql(raw)?))
        }
        Type::CHAR => text(char::from(wire::char_from_sql(raw)? as u8).to_string()),
        Type::BYTEA => Cell::Bytes(wire::bytea_from_sql(raw)),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => match wire::timestamp_from_sql(raw)? {
            i64::MAX => Cell::Text(Cow::Borrowed("infinity")),
            i64::MIN => Cell::Text(Cow::Borrowed("-infinity")),
            micros => Cell::Timestamp(
                DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_MICROS))
                    .ok_or("timestamp out of range")?,
            ),
        },
        Type::DATE => text(date_text(wire::date_from_sql(raw)?)?),
        Type::TIME => text(time_text(wire::time_from_sql(raw)?)?),
        Type::TIMETZ => text(timetz_text(raw)?),
        Type::INTERVAL => text(interval_text(raw)?),
        Type::UUID => text(uuid_text(wire::uuid_from_sql(raw)?)),
        Type::INET | Type::CIDR => text(inet_text(ty, raw)?),
        Type::JSON => Cell::Json(Cow::Borrowed(std::str::from_utf8(raw)?)),
        Type::JSONB => Cell::Json(Cow::Borrowed(jsonb_text(raw)?)),
        _ => match ty.kind() {
            Kind::Array(element) => Cell::Json(Cow::Owned(array_json(element, raw)?.to_string())),
            Kind::Domain(inner) => decode_binary(inner, raw)?,
            Kind::Enum(_) => Cell::Text(Cow::Borrowed(std::str::from_utf8(raw)?)),
            _ => return Err(format!("the broker has no mapping for {}", ty.name()).into()),
        },
    })
}

fn jsonb_text(raw: &[u8]) -> Result<&str, BoxError> {
    match raw.split_first() {
        Some((1, text)) => Ok(std::str::from_utf8(text)?),
        _ => Err("unsupported jsonb version".into()),
    }
}

/// An array as nested JSON arrays, elements converted with [`Value::to_json`].
fn array_json(element: &Type, raw: &[u8]) -> Result<Json, BoxError> {
    use fallible_iterator::FallibleIterator;
    let array = wire::array_from_sql(raw)?;
    let dimensions: Vec<usize> = array
        .dimensions()
        .map(|d| Ok(usize::try_from(d.len).unwrap_or(0)))
        .collect()?;
    let mut values = Vec::new();
    let mut cells = array.values();
    while let Some(cell) = cells.next()? {
        let value = match cell {
            None => Value::Null,
            Some(cell) => decode_binary(element, cell)?.into_value(),
        };
        values.push(value.to_json());
    }
    if dimensions.is_empty() {
        return Ok(Json::Array(Vec::new()));
    }
    Ok(nest(&dimensions, &mut values.into_iter()))
}

fn nest(dimensions: &[usize], values: &mut impl Iterator<Item = Json>) -> Json {
    match dimensions.split_first() {
        Some((&len, [])) => Json::Array(values.take(len).collect()),
        Some((&len, rest)) => Json::Array((0..len).map(|_| nest(rest, values)).collect()),
        None => Json::Null,
    }
}

/// numeric in PostgreSQL's text form, from its base-10000 binary form.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let field = |i: usize| -> Result<u16, BoxError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(field(0)?);
    let weight = field(2)? as i16;
    let sign = field(4)?;
    let dscale = usize::from(field(6)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| field(8 + 2 * i))
        .collect::<Result<Vec<u16>, _>>()?;
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=i32::from(weight) {
            if i == 0 {
                write!(text, "{}", digit(i))?;
            } else {
                write!(text, "{:04}", digit(i))?;
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = i32::from(weight) + 1;
        while fraction.len() < dscale {
            write!(fraction, "{:04}", digit(i))?;
            i += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// date in PostgreSQL's ISO text form (`2024-03-01`, `0044-03-15 BC`),
/// from days since 2000-01-01, over its whole range (4713 BC to 5874897 AD).
fn date_text(days: i32) -> Result<String, BoxError> {
    match days {
        i32::MAX => Ok("infinity".into()),
        i32::MIN => Ok("-infinity".into()),
        days => {
            let (year, month, day) = civil_from_julian(i64::from(days) + POSTGRES_EPOCH_JDATE);
            // PostgreSQL has no year 0: astronomical year 0 is 1 BC.
            Ok(if year > 0 {
                format!("{year:04}-{month:02}-{day:02}")
            } else {
                format!("{:04}-{month:02}-{day:02} BC", 1 - year)
            })
        }
    }
}

/// The Julian day number of 2000-01-01, PostgreSQL's date epoch.
const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;

/// Proleptic Gregorian (astronomical year, month, day) of a Julian day
/// number: PostgreSQL's `j2date`.
fn civil_from_julian(jd: i64) -> (i64, i64, i64) {
    let mut julian = jd + 32_044;
    let mut quad = julian / 146_097;
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra / 146_097;
    quad = julian / 1461;
    julian -= quad * 1461;
    let mut y = julian * 4 / 1461;
    julian = if y != 0 {
        (julian + 305) % 365
    } else {
        (julian + 306) % 366
    } + 123;
    y += quad * 4;
    let year = y - 4800;
    quad = julian * 2141 / 65_536;
    let day = julian - 7834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    (year, month, day)
}

fn time_text(micros: i64) -> Result<String, BoxError> {
    if micros == 86_400_000_000 {
        return Ok("24:00:00".into());
    }
    let seconds = u32::try_from(micros / 1_000_000)?;
    let nanos = u32::try_from(micros % 1_000_000)? * 1000;
    let time =
        NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos).ok_or("time out of range")?;
    Ok(if nanos == 0 {
        time.format("%H:%M:%S").to_string()
    } else {
        time.format("%H:%M:%S%.6f")
            .to_string()
            .trim_end_matches('0')
            .to_owned()
    })
}

fn timetz_text(raw: &[u8]) -> Result<String, BoxError> {
    let (time, zone) = raw.split_at_checked(8).ok_or("truncated timetz")?;
    let micros = wire::time_from_sql(time)?;
    // PostgreSQL stores the offset in seconds west of UTC.
    let east = -wire::int4_from_sql(zone)?;
    let sign = if east < 0 { '-' } else { '+' };
    let (hours, minutes, seconds) = (east.abs() / 3600, east.abs() / 60 % 60, east.abs() % 60);
    let mut text = format!("{}{sign}{hours:02}", time_text(micros)?);
    if seconds != 0 {
        write!(text, ":{minutes:02}:{seconds:02}")?;
    } else if minutes != 0 {
        write!(text, ":{minutes:02}")?;
    }
    Ok(text)
}

/// interval in PostgreSQL's default output style (`IntervalStyle =
/// postgres`), as its `EncodeInterval` writes it: `1 year 2 mons 3 days
/// 04:05:06`, where a field that follows a negative one carries an explicit
/// sign (`-1 days +02:00:00`).
fn interval_text(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("bad interval".into());
    }
    let micros = i64::from_be_bytes(raw[0..8].try_into()?);
    let days = i32::from_be_bytes(raw[8..12].try_into()?);
    let months = i32::from_be_bytes(raw[12..16].try_into()?);
    let mut text = String::new();
    // Whether the field written last was negative: the next one then gets
    // a `+` when positive.
    let mut after_negative = false;
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        let space = if text.is_empty() { "" } else { " " };
        let plus = if after_negative && value > 0 { "+" } else { "" };
        let plural = if value == 1 { "" } else { "s" };
        write!(text, "{space}{plus}{value} {unit}{plural}")?;
        after_negative = value < 0;
    }
    if micros != 0 || text.is_empty() {
        let space = if text.is_empty() { "" } else { " " };
        let sign = if micros < 0 {
            "-"
        } else if after_negative {
            "+"
        } else {
            ""
        };
        let total = micros.unsigned_abs();
        let (hours, minutes, seconds, fraction) = (
            total / 3_600_000_000,
            total / 60_000_000 % 60,
            total / 1_000_000 % 60,
            total % 1_000_000,
        );
        write!(text, "{space}{sign}{hours:02}:{minutes:02}:{seconds:02}")?;
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            write!(text, ".{}", digits.trim_end_matches('0'))?;
        }
    }
    Ok(text)
}

fn uuid_text(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn inet_text(ty: &Type, raw: &[u8]) -> Result<String, BoxError> {
    let inet = wire::inet_from_sql(raw)?;
    let full = if inet.addr().is_ipv4() { 32 } else { 128 };
    Ok(if *ty == Type::INET && inet.netmask() == full {
        inet.addr().to_string()
    } else {
        format!("{}/{}", inet.addr(), inet.netmask())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for field in [ndigits, weight as u16, sign, dscale] {
            raw.extend_from_slice(&field.to_be_bytes());
        }
        for digit in digits {
            raw.extend_from_slice(&digit.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numeric_renders_like_postgres() {
        assert_eq!(
            numeric_text(&numeric(2, 0, 0, 2, &[12, 3400])).unwrap(),
            "12.34"
        );
        assert_eq!(
            numeric_text(&numeric(1, -1, 0x4000, 5, &[5])).unwrap(),
            "-0.00050"
        );
        assert_eq!(
            numeric_text(&numeric(2, 1, 0, 0, &[1, 0])).unwrap(),
            "10000"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(
            numeric_text(&numeric(1, -2, 0, 8, &[1234])).unwrap(),
            "0.00001234"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
    }

    #[test]
    fn intervals_render_like_postgres() {
        let raw = |micros: i64, days: i32, months: i32| {
            [
                micros.to_be_bytes().as_slice(),
                &days.to_be_bytes(),
                &months.to_be_bytes(),
            ]
            .concat()
        };
        assert_eq!(interval_text(&raw(0, 0, 0)).unwrap(), "00:00:00");
        assert_eq!(
            interval_text(&raw(3_723_500_000, 3, 14)).unwrap(),
            "1 year 2 mons 3 days 01:02:03.5"
        );
        // Expected texts as psql prints them (IntervalStyle postgres).
        let hour = 3_600_000_000;
        for (micros, days, months, expected) in [
            (-60_000_000, -1, 0, "-1 days -00:01:00"),
            (2 * hour, -1, 0, "-1 days +02:00:00"),
            (-2 * hour, 1, 0, "1 day -02:00:00"),
            (4 * hour, -3, 10, "10 mons -3 days +04:00:00"),
            (-4 * hour, -3, -14, "-1 years -2 mons -3 days -04:00:00"),
            (-hour, 1, -12, "-1 years +1 day -01:00:00"),
            (0, 2, -3, "-3 mons +2 days"),
            (0, 0, 11, "11 mons"),
            (0, -1, 0, "-1 days"),
            (-1_500_000, 0, 0, "-00:00:01.5"),
            (-500_000, 1, 0, "1 day -00:00:00.5"),
        ] {
            assert_eq!(interval_text(&raw(micros, days, months)).unwrap(), expected);
        }
    }

    #[test]
    fn dates_render_like_postgres_including_bc() {
        // Days since 2000-01-01 and the text psql prints for them.
        for (days, expected) in [
            (8825, "2024-02-29"),
            (-1, "1999-12-31"),
            (-730_119, "0001-01-01"),
            (-730_485, "0001-01-01 BC"),
            (-730_850, "0002-01-01 BC"),
            (-746_117, "0044-03-15 BC"),
            (-2_451_507, "4713-01-01 BC"),
            (2_921_940, "10000-01-01"),
            (2_145_031_948, "5874897-12-31"),
            (i32::MAX, "infinity"),
            (i32::MIN, "-infinity"),
        ] {
            assert_eq!(date_text(days).unwrap(), expected, "{days}");
        }
    }

    #[test]
    fn time_zones_render_like_postgres() {
        let raw = |micros: i64, west: i32| {
            [micros.to_be_bytes().as_slice(), &west.to_be_bytes()].concat()
        };
        let ten = 10 * 3_600_000_000;
        assert_eq!(timetz_text(&raw(ten, -19_800)).unwrap(), "10:00:00+05:30");
        assert_eq!(
            timetz_text(&raw(ten, -19_815)).unwrap(),
            "10:00:00+05:30:15"
        );
        assert_eq!(timetz_text(&raw(ten, 10_800)).unwrap(), "10:00:00-03");
    }

    #[test]
    fn params_are_checked_before_running() {
        assert!(check_params(&[Type::INT4], &[]).is_err());
        assert!(check_params(&[Type::INT4], &[Value::Int(1 << 40)]).is_err());
        assert!(check_params(&[Type::INT8], &[Value::Int(1 << 40)]).is_ok());
        assert!(check_params(&[Type::TEXT], &[Value::Bytes(vec![1].into())]).is_err());
        assert!(check_params(&[Type::BYTEA], &[Value::Bytes(vec![1].into())]).is_ok());
    }
}

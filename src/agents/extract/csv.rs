//! CSV extraction with the `csv` crate. `data`:
//!
//! ```json
//! {"delimiter": ",", "row_count": 120, "ragged_rows": 0,
//!  "columns": [{"name": "amount", "type": "float", "empty": 0,
//!               "stats": {"min": 1.5, "max": 99.0, "mean": 20.1, "sum": 2412.0}}],
//!  "records": [{"amount": 12.5, ...}], "records_truncated": false}
//! ```
//!
//! Types are inferred per column from its non-empty cells: integer, float,
//! boolean, date, datetime, else text. Statistics: numbers min/max/mean/sum;
//! dates min/max; text distinct count (up to a cap) and min/max length.

use std::collections::HashSet;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value, json};

use super::ExtractError;

/// Records kept in `data` (the row count covers all rows).
const MAX_RECORDS: usize = 1_000;
/// Distinct text values counted per column.
const MAX_DISTINCT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Float,
    Boolean,
    Date,
    DateTime,
    Text,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::DateTime => "datetime",
            Self::Text => "text",
        }
    }

    fn of(cell: &str) -> Self {
        if cell.parse::<i64>().is_ok() {
            Self::Integer
        } else if parse_number(cell).is_some() {
            Self::Float
        } else if parse_bool(cell).is_some() {
            Self::Boolean
        } else if parse_date(cell).is_some() {
            Self::Date
        } else if parse_datetime(cell).is_some() {
            Self::DateTime
        } else {
            Self::Text
        }
    }

    /// The narrowest kind that holds both.
    fn widen(self, other: Self) -> Self {
        match (self, other) {
            (a, b) if a == b => a,
            (Self::Integer, Self::Float) | (Self::Float, Self::Integer) => Self::Float,
            (Self::Date, Self::DateTime) | (Self::DateTime, Self::Date) => Self::DateTime,
            _ => Self::Text,
        }
    }
}

pub fn extract(body: &[u8]) -> Result<Value, ExtractError> {
    let text = std::str::from_utf8(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body))
        .map_err(|e| ExtractError::Corrupt(format!("the CSV is not UTF-8 text ({e})")))?;
    if text.trim().is_empty() {
        return Err(ExtractError::Corrupt("the CSV file is empty".into()));
    }
    let delimiter = sniff_delimiter(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| ExtractError::Corrupt(format!("cannot read the CSV header ({e})")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut ragged = 0;
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ExtractError::Corrupt(format!("row {}: {e}", line + 2)))?;
        if record.len() != headers.len() {
            ragged += 1;
        }
        rows.push(
            (0..headers.len())
                .map(|i| record.get(i).unwrap_or("").trim().to_owned())
                .collect(),
        );
    }
    let kinds: Vec<Kind> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].as_str())
                .filter(|c| !c.is_empty())
                .map(Kind::of)
                .reduce(Kind::widen)
                .unwrap_or(Kind::Text)
        })
        .collect();
    let columns: Vec<Value> = headers
        .iter()
        .enumerate()
        .map(|(i, name)| column(name, kinds[i], rows.iter().map(|r| r[i].as_str())))
        .collect();
    let records: Vec<Value> = rows
        .iter()
        .take(MAX_RECORDS)
        .map(|row| {
            Value::Object(
                headers
                    .iter()
                    .zip(row)
                    .zip(&kinds)
                    .map(|((h, cell), kind)| (h.clone(), typed(cell, *kind)))
                    .collect::<Map<_, _>>(),
            )
        })
        .collect();
    Ok(json!({
        "delimiter": (delimiter as char).to_string(),
        "row_count": rows.len(),
        "ragged_rows": ragged,
        "columns": columns,
        "records": records,
        "records_truncated": rows.len() > MAX_RECORDS,
    }))
}

/// The most frequent of `,`, `;`, tab and `|` in the first line.
fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or_default();
    [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| first.bytes().filter(|b| b == d).count())
        .filter(|d| first.as_bytes().contains(d))
        .unwrap_or(b',')
}

fn column<'a>(name: &str, kind: Kind, cells: impl Iterator<Item = &'a str>) -> Value {
    let cells: Vec<&str> = cells.collect();
    let present: Vec<&str> = cells.iter().copied().filter(|c| !c.is_empty()).collect();
    let stats = match kind {
        Kind::Integer | Kind::Float => {
            let numbers: Vec<f64> = present.iter().filter_map(|c| parse_number(c)).collect();
            let sum: f64 = numbers.iter().sum();
            json!({
                "min": numbers.iter().copied().reduce(f64::min),
                "max": numbers.iter().copied().reduce(f64::max),
                "mean": (!numbers.is_empty()).then(|| sum / numbers.len() as f64),
                "sum": sum,
            })
        }
        Kind::Date | Kind::DateTime => {
            let mut times: Vec<NaiveDateTime> = present
                .iter()
                .filter_map(|c| {
                    parse_datetime(c).or_else(|| parse_date(c).and_then(|d| d.and_hms_opt(0, 0, 0)))
                })
                .collect();
            times.sort();
            json!({"min": times.first().map(ToString::to_string), "max": times.last().map(ToString::to_string)})
        }
        Kind::Boolean => {
            let trues = present
                .iter()
                .filter(|c| parse_bool(c) == Some(true))
                .count();
            json!({"true": trues, "false": present.len() - trues})
        }
        Kind::Text => {
            let distinct: HashSet<&str> = present.iter().copied().take(MAX_DISTINCT).collect();
            json!({
                "distinct": distinct.len(),
                "min_length": present.iter().map(|c| c.chars().count()).min(),
                "max_length": present.iter().map(|c| c.chars().count()).max(),
            })
        }
    };
    json!({"name": name, "type": kind.name(), "empty": cells.len() - present.len(), "stats": stats})
}

fn typed(cell: &str, kind: Kind) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    match kind {
        Kind::Integer => cell
            .parse::<i64>()
            .map_or_else(|_| Value::String(cell.into()), Value::from),
        Kind::Float => parse_number(cell).map_or_else(|| Value::String(cell.into()), Value::from),
        Kind::Boolean => parse_bool(cell).map_or_else(|| Value::String(cell.into()), Value::Bool),
        _ => Value::String(cell.into()),
    }
}

/// A number, allowing a currency sign and thousands separators (`€1,234.50`).
pub(super) fn parse_number(cell: &str) -> Option<f64> {
    let cleaned: String = cell
        .trim()
        .trim_start_matches(['$', '€', '£'])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_bool(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

/// `2026-01-31`, `31/01/2026`, `2026/01/31`.
pub(super) fn parse_date(cell: &str) -> Option<NaiveDate> {
    ["%Y-%m-%d", "%d/%m/%Y", "%Y/%m/%d", "%d.%m.%Y"]
        .into_iter()
        .find_map(|format| NaiveDate::parse_from_str(cell, format).ok())
}

fn parse_datetime(cell: &str) -> Option<NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(cell)
        .map(|t| t.naive_utc())
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_stats_and_records() {
        let data =
            extract(b"id;amount;paid;due\n1;12.50;yes;2026-01-31\n2;7;no;2026-02-28\n3;;yes;\n")
                .unwrap();
        assert_eq!(data["delimiter"], ";");
        assert_eq!(data["row_count"], 3);
        let types: Vec<&str> = data["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["integer", "float", "boolean", "date"]);
        assert_eq!(data["columns"][1]["stats"]["sum"], 19.5);
        assert_eq!(data["columns"][1]["empty"], 1);
        assert_eq!(data["columns"][3]["stats"]["max"], "2026-02-28 00:00:00");
        assert_eq!(
            data["records"][0],
            json!({"id": 1, "amount": 12.5, "paid": true, "due": "2026-01-31"})
        );
        assert_eq!(data["records"][2]["amount"], Value::Null);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(extract(b"").unwrap_err().to_string().contains("empty"));
        assert!(
            extract(b"a,b\n\xff\xfe,1\n")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let data = extract(b"a,b\n1\n1,2,3\n").unwrap();
        assert_eq!(data["ragged_rows"], 2);
    }
}

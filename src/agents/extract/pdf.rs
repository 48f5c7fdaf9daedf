//! PDF extraction with lopdf. `data`:
//!
//! ```json
//! {"page_count": 2,
//!  "metadata": {"title", "author", "subject", "creator", "producer", "creation_date"},
//!  "pages": [{"number": 1, "text": "..."}],
//!  "tables": [{"page": 1, "rows": [["Item", "Qty", "Amount"], ...]}],
//!  "fields": {"invoice_number", "dates": ["2026-01-31"], "amounts": ["1234.50"], "total"},
//!  "text_length": 1234}
//! ```
//!
//! Tables are found where the layout allows: consecutive lines that split
//! into the same number (≥ 2) of cells at runs of two or more spaces or tabs.

use lopdf::{Document, Object};
use serde_json::{Value, json};

use super::ExtractError;

/// Larger documents are refused rather than parsed (pages of text).
const MAX_PAGES: usize = 2_000;

pub fn extract(body: &[u8]) -> Result<Value, ExtractError> {
    // lopdf must not take the agent down on hostile input.
    std::panic::catch_unwind(|| parse(body))
        .map_err(|_| ExtractError::Corrupt("the PDF parser failed on this file".into()))?
}

fn parse(body: &[u8]) -> Result<Value, ExtractError> {
    let document = Document::load_mem(body)
        .map_err(|e| ExtractError::Corrupt(format!("not a readable PDF ({e})")))?;
    if document.is_encrypted() {
        return Err(ExtractError::Corrupt("the PDF is encrypted".into()));
    }
    let page_numbers: Vec<u32> = document.get_pages().keys().copied().collect();
    if page_numbers.is_empty() {
        return Err(ExtractError::Corrupt("the PDF has no pages".into()));
    }
    if page_numbers.len() > MAX_PAGES {
        return Err(ExtractError::Corrupt(format!(
            "the PDF has {} pages; at most {MAX_PAGES} are read",
            page_numbers.len()
        )));
    }
    let mut pages = Vec::new();
    let mut tables = Vec::new();
    let mut all_text = String::new();
    for number in &page_numbers {
        // A page whose text cannot be decoded counts as empty, not as corrupt.
        let text = document.extract_text(&[*number]).unwrap_or_default();
        for rows in find_tables(&text) {
            tables.push(json!({"page": number, "rows": rows}));
        }
        all_text.push_str(&text);
        all_text.push('\n');
        pages.push(json!({"number": number, "text": text.trim_end()}));
    }
    Ok(json!({
        "page_count": page_numbers.len(),
        "metadata": metadata(&document),
        "pages": pages,
        "tables": tables,
        "fields": fields(&all_text),
        "text_length": all_text.trim().chars().count(),
    }))
}

fn metadata(document: &Document) -> Value {
    let info = document
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|info| match info {
            Object::Reference(id) => document.get_dictionary(*id).ok(),
            Object::Dictionary(dict) => Some(dict),
            _ => None,
        });
    let field = |name: &[u8]| -> Value {
        info.and_then(|dict| dict.get(name).ok())
            .and_then(|value| match value {
                Object::String(bytes, _) => Some(decode_text(bytes)),
                _ => None,
            })
            .filter(|s| !s.trim().is_empty())
            .map_or(Value::Null, Value::String)
    };
    json!({
        "title": field(b"Title"),
        "author": field(b"Author"),
        "subject": field(b"Subject"),
        "creator": field(b"Creator"),
        "producer": field(b"Producer"),
        "creation_date": field(b"CreationDate"),
    })
}

/// PDF text strings: UTF-16BE with a BOM, else PDFDocEncoding (≈ Latin-1).
fn decode_text(bytes: &[u8]) -> String {
    if let Some(utf16) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let units: Vec<u16> = utf16
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Blocks of ≥ 2 consecutive lines with the same number (≥ 2) of cells.
fn find_tables(text: &str) -> Vec<Vec<Vec<String>>> {
    let mut tables = Vec::new();
    let mut current: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let cells = split_cells(line);
        let continues = cells.len() >= 2
            && current
                .first()
                .is_none_or(|first| first.len() == cells.len());
        if continues {
            current.push(cells);
            continue;
        }
        if current.len() >= 2 {
            tables.push(std::mem::take(&mut current));
        }
        current.clear();
        if cells.len() >= 2 {
            current.push(cells);
        }
    }
    if current.len() >= 2 {
        tables.push(current);
    }
    tables
}

fn split_cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut spaces = 0;
    for c in line.trim().chars() {
        if c == '\t' {
            spaces = 2;
        } else if c == ' ' {
            spaces += 1;
        } else {
            if spaces >= 2 && !cell.is_empty() {
                cells.push(std::mem::take(&mut cell));
            } else if spaces == 1 {
                cell.push(' ');
            }
            spaces = 0;
            cell.push(c);
        }
    }
    if !cell.is_empty() {
        cells.push(cell);
    }
    cells
}

/// Invoice-like fields found in the text: number, dates, amounts, total.
fn fields(text: &str) -> Value {
    let mut dates = Vec::new();
    let mut amounts = Vec::new();
    let mut invoice_number = Value::Null;
    let mut total = Value::Null;
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        for word in line.split(|c: char| c.is_whitespace() || c == ';') {
            let word = word.trim_matches(['(', ')', ':', ',']);
            if let Some(date) = super::csv::parse_date(word) {
                dates.push(Value::String(date.to_string()));
            } else if let Some(amount) = parse_amount(word) {
                amounts.push(Value::String(amount.clone()));
                if lower.contains("total") {
                    total = Value::String(amount);
                }
            }
        }
        if invoice_number.is_null()
            && let Some(at) = lower.find("invoice")
        {
            invoice_number =
                invoice_token(&line[at + "invoice".len()..]).map_or(Value::Null, Value::String);
        }
    }
    json!({"invoice_number": invoice_number, "dates": dates, "amounts": amounts, "total": total})
}

/// The number after "invoice" (`Invoice no. INV-7`, `INVOICE #123`): the
/// first token with a digit, skipping the words "no", "nr", "number".
fn invoice_token(rest: &str) -> Option<String> {
    rest.split(|c: char| c.is_whitespace() || matches!(c, ':' | '#'))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
        .find(|w| !matches!(w.to_lowercase().as_str(), "no" | "nr" | "number" | "num"))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '/')
                .collect()
        })
}

/// `1234.50`, `1,234.50`, `€12.00`, `12.00 EUR`: a decimal with two places.
fn parse_amount(word: &str) -> Option<String> {
    let word = word
        .trim_start_matches(['$', '€', '£'])
        .trim_end_matches(['$', '€', '£']);
    let (whole, cents) = word.rsplit_once('.')?;
    let whole = whole.trim_start_matches('-').replace(',', "");
    let valid = cents.len() == 2
        && cents.chars().all(|c| c.is_ascii_digit())
        && !whole.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit());
    valid.then(|| {
        format!(
            "{}{whole}.{cents}",
            if word.starts_with('-') { "-" } else { "" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_runs_of_lines_with_the_same_cells() {
        let text =
            "Invoice INV-2026-001\nItem  Qty  Amount\nPaper  2  10.00\nInk  1  25.50\nThanks\n";
        let tables = find_tables(text);
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0][0], ["Item", "Qty", "Amount"]);
        assert_eq!(tables[0][2], ["Ink", "1", "25.50"]);
    }

    #[test]
    fn fields_are_found_in_the_text() {
        let f = fields("Invoice INV-2026-001\nDate: 2026-01-31\nTotal: 1,234.50 EUR\n");
        assert_eq!(f["invoice_number"], "INV-2026-001");
        assert_eq!(f["dates"], json!(["2026-01-31"]));
        assert_eq!(f["total"], "1234.50");
        assert_eq!(parse_amount("€12.00").as_deref(), Some("12.00"));
        assert_eq!(parse_amount("12.0"), None);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for body in [&b"%PDF-1.7\n garbage"[..], b"", &[0xff; 64]] {
            assert!(matches!(extract(body), Err(ExtractError::Corrupt(_))));
        }
    }
}

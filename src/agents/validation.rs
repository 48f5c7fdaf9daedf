//! Rule-based validation of an extraction, scored 0–100 as in the original
//! system: start at 100, and each rule that fails takes points off, as an
//! error (the data is wrong) or a warning (the data is thin). Deterministic:
//! the same extraction always gets the same score and findings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extract::{DocumentType, Extraction};

/// The score and the findings behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Validation {
    pub score: u8,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Validation {
    /// The `documents.status` this score gives: `validated` ≥ 75,
    /// `validated_with_warnings` ≥ 60, else `validation_failed`.
    pub fn status(&self) -> &'static str {
        match self.score {
            75.. => "validated",
            60.. => "validated_with_warnings",
            _ => "validation_failed",
        }
    }
}

/// Scores `extraction`.
pub fn validate(extraction: &Extraction) -> Validation {
    let mut findings = Findings::default();
    match extraction.document_type {
        DocumentType::Pdf => pdf_rules(&extraction.data, &mut findings),
        DocumentType::Csv => csv_rules(&extraction.data, &mut findings),
    }
    findings.finish()
}

#[derive(Default)]
struct Findings {
    deducted: u32,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Findings {
    fn error(&mut self, points: u32, message: String) {
        self.deducted += points;
        self.errors.push(message);
    }

    fn warning(&mut self, points: u32, message: String) {
        self.deducted += points;
        self.warnings.push(message);
    }

    fn finish(self) -> Validation {
        Validation {
            score: 100u32.saturating_sub(self.deducted) as u8,
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}

fn pdf_rules(data: &Value, findings: &mut Findings) {
    if data["page_count"].as_u64().unwrap_or(0) == 0 {
        findings.error(50, "the document has no pages".into());
    }
    let text_length = data["text_length"].as_u64().unwrap_or(0);
    if text_length == 0 {
        findings.error(50, "no text could be extracted (scanned image?)".into());
    } else if text_length < 50 {
        findings.warning(10, format!("very little text ({text_length} characters)"));
    }
    if data["metadata"]["title"].is_null() {
        findings.warning(5, "the document has no title in its metadata".into());
    }
    let fields = &data["fields"];
    if fields["dates"].as_array().is_none_or(Vec::is_empty) {
        findings.warning(10, "no date found".into());
    }
    if fields["amounts"].as_array().is_none_or(Vec::is_empty) {
        findings.warning(10, "no amount found".into());
    } else if fields["total"].is_null() {
        findings.warning(5, "amounts found but no total".into());
    }
    let mentions_invoice = data["pages"].as_array().is_some_and(|pages| {
        pages.iter().any(|p| {
            p["text"]
                .as_str()
                .is_some_and(|t| t.to_lowercase().contains("invoice"))
        })
    });
    if mentions_invoice && fields["invoice_number"].is_null() {
        findings.error(15, "an invoice without an invoice number".into());
    }
}

fn csv_rules(data: &Value, findings: &mut Findings) {
    let rows = data["row_count"].as_u64().unwrap_or(0);
    if rows == 0 {
        findings.error(50, "the file has a header but no rows".into());
    }
    let columns = data["columns"].as_array().cloned().unwrap_or_default();
    let mut empty_columns = 0;
    for column in &columns {
        let name = column["name"].as_str().unwrap_or_default();
        let kind = column["type"].as_str().unwrap_or_default();
        let empty = column["empty"].as_u64().unwrap_or(0);
        let lower = name.to_lowercase();
        if name.is_empty() {
            findings.error(10, "a column has no name".into());
        }
        if rows > 0 && empty == rows {
            empty_columns += 1;
            continue;
        }
        let is_amount = ["amount", "total", "price", "cost"]
            .iter()
            .any(|w| lower.contains(w));
        if is_amount && !matches!(kind, "integer" | "float") {
            findings.error(
                20,
                format!("column {name:?} looks like an amount but holds {kind} values"),
            );
        }
        let is_date = lower.contains("date") || lower.ends_with("_at");
        if is_date && !matches!(kind, "date" | "datetime") {
            findings.error(
                15,
                format!("column {name:?} looks like a date but its values do not parse as dates"),
            );
        }
        if rows > 0 && empty * 5 > rows {
            findings.warning(
                5,
                format!("column {name:?} is empty in {empty} of {rows} rows"),
            );
        }
    }
    if empty_columns > 0 {
        findings.warning(
            (10 * empty_columns).min(30),
            format!("{empty_columns} column(s) are entirely empty"),
        );
    }
    let ragged = data["ragged_rows"].as_u64().unwrap_or(0);
    if ragged > 0 {
        findings.warning(
            10,
            format!("{ragged} row(s) do not have as many cells as the header"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::extract::{extract, samples};

    fn score(key: &str, body: &[u8]) -> Validation {
        validate(&extract(key, "", body).unwrap())
    }

    #[test]
    fn the_samples_validate() {
        let pdf = score("a.pdf", &samples::invoice_pdf());
        assert_eq!((pdf.score, pdf.status()), (100, "validated"), "{pdf:?}");
        let csv = score("a.csv", &samples::invoices_csv());
        assert_eq!((csv.score, csv.status()), (100, "validated"), "{csv:?}");
    }

    #[test]
    fn deductions_explain_the_score() {
        let v = score(
            "a.csv",
            b"amount,issue_date,note\nabc,yesterday,\nxyz,soon,\n",
        );
        assert_eq!(v.score, 55, "{v:?}");
        assert_eq!(v.status(), "validation_failed");
        assert_eq!(v.errors.len(), 2);
        assert!(v.errors[0].contains("amount"), "{v:?}");
        let thin = score("a.pdf", &samples::pdf("", &[&["Invoice", "Thank you"]]));
        assert!(thin.score < 75, "{thin:?}");
        assert!(
            thin.errors.iter().any(|e| e.contains("invoice number")),
            "{thin:?}"
        );
        let v = Validation {
            score: 60,
            errors: vec![],
            warnings: vec![],
        };
        assert_eq!(v.status(), "validated_with_warnings");
    }
}

//! Extraction of a document's content: PDF (text per page, metadata,
//! tables, invoice-like fields) and CSV (columns, inferred types, records,
//! statistics). Pure functions over bytes: the extractor agent fetches the
//! object through the broker.

mod csv;
mod pdf;
pub mod samples;

use serde::{Deserialize, Serialize};

/// The kinds of document the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentType {
    Pdf,
    Csv,
}

impl DocumentType {
    /// The type a key's extension names (`.pdf`; `.csv` or `.tsv`), if any.
    /// The one guess every agent uses before (or without) reading the content.
    pub fn from_extension(key: &str) -> Option<Self> {
        let (_, extension) = key.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "pdf" => Some(Self::Pdf),
            "csv" | "tsv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// `pdf`, `csv`, or `unknown` when the extension names neither (the
    /// `documents.document_type` of a document not extracted yet).
    pub fn guess(key: &str) -> &'static str {
        Self::from_extension(key).map_or("unknown", Self::as_str)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Csv => "csv",
        }
    }
}

/// What extraction found: `data` is the JSON stored in
/// `documents.extracted_data` (shapes in [`pdf`] and [`csv`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extraction {
    pub document_type: DocumentType,
    pub data: serde_json::Value,
}

/// Why a document could not be extracted; the message is what the task and
/// `documents.error_message` show.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported document type: {0}")]
    Unsupported(String),
    #[error("the document is corrupt: {0}")]
    Corrupt(String),
}

/// Extracts `body`. The type comes from the content itself (`%PDF-`), then
/// `content_type`, then the key's extension.
pub fn extract(key: &str, content_type: &str, body: &[u8]) -> Result<Extraction, ExtractError> {
    let kind = detect(key, content_type, body)?;
    let data = match kind {
        DocumentType::Pdf => pdf::extract(body)?,
        DocumentType::Csv => csv::extract(body)?,
    };
    Ok(Extraction {
        document_type: kind,
        data,
    })
}

fn detect(key: &str, content_type: &str, body: &[u8]) -> Result<DocumentType, ExtractError> {
    if body.starts_with(b"%PDF-") {
        return Ok(DocumentType::Pdf);
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/pdf" => return Ok(DocumentType::Pdf),
        "text/csv"
        | "application/csv"
        | "application/vnd.ms-excel"
        | "text/tab-separated-values" => {
            return Ok(DocumentType::Csv);
        }
        _ => {}
    }
    DocumentType::from_extension(key).ok_or_else(|| {
        ExtractError::Unsupported(format!(
            "{key:?} ({}) is neither a PDF nor a CSV file",
            if media.is_empty() {
                "no content type"
            } else {
                media.as_str()
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_content_then_headers_then_extension() {
        assert_eq!(detect("a.bin", "", b"%PDF-1.5").unwrap(), DocumentType::Pdf);
        assert_eq!(
            detect("a", "text/csv; charset=utf-8", b"a,b").unwrap(),
            DocumentType::Csv
        );
        assert_eq!(
            detect("x/report.CSV", "application/octet-stream", b"a").unwrap(),
            DocumentType::Csv
        );
        assert_eq!(
            detect("x/table.tsv", "", b"a\tb").unwrap(),
            DocumentType::Csv
        );
        let err = detect("photo.png", "image/png", b"\x89PNG")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image/png") && err.contains("photo.png"),
            "{err}"
        );
    }

    #[test]
    fn every_agent_guesses_the_same_type_from_the_key() {
        for (key, guessed) in [
            ("a/b.PDF", "pdf"),
            ("a/b.csv", "csv"),
            ("a/table.TSV", "csv"),
            ("a/photo.png", "unknown"),
            ("a/no-extension", "unknown"),
        ] {
            assert_eq!(DocumentType::guess(key), guessed, "{key}");
        }
    }
}

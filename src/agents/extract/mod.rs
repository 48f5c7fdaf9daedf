//! Extraction of a document's content: PDF (text per page, metadata,
//! tables) and CSV (columns, inferred types, records, statistics).
//! Pure functions over bytes: the extractor agent fetches the object.

use serde::{Deserialize, Serialize};

/// The kinds of document the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentType {
    Pdf,
    Csv,
}

/// What extraction found: `data` is the JSON stored in
/// `documents.extracted_data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extraction {
    pub document_type: DocumentType,
    pub data: serde_json::Value,
}

/// Why a document could not be extracted; the message is what the task and
/// the `documents.error_message` show.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsupported document type: {0}")]
    Unsupported(String),
    #[error("the document is corrupt: {0}")]
    Corrupt(String),
}

/// Extracts `body`; the type comes from `content_type`, else from the key's
/// extension.
pub fn extract(key: &str, content_type: &str, body: &[u8]) -> Result<Extraction, ExtractError> {
    let _ = (key, content_type, body);
    Err(ExtractError::Unsupported(
        "extraction is not built yet".into(),
    ))
}

//! The extractor agent: `extract_document {"s3_key"}` reads the object
//! through the broker and returns `{"s3_key", "document_type", "data",
//! "file_size", "content_type"}`, logging the step in `processing_logs`
//! (so its broker grant needs database write). A document that cannot be
//! extracted is [`RpcError::DOCUMENT_REJECTED`]; any other failure is
//! [`RpcError::FAILED`] and says nothing about the document.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    extract,
    jsonrpc::{AgentCard, Methods, RpcError, Skill, string_param, unknown_method},
    log_step,
};
use crate::client::BrokerClient;

/// Largest object the extractor reads (it holds it in memory to parse it).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

pub struct Extractor {
    broker: BrokerClient,
}

impl Extractor {
    pub fn new(broker: BrokerClient) -> Arc<Self> {
        Arc::new(Self { broker })
    }

    pub fn card() -> AgentCard {
        AgentCard {
            name: "extractor",
            description: "Extracts text, metadata and tables from PDF, and columns, types and statistics from CSV",
            version: env!("CARGO_PKG_VERSION"),
            skills: vec![Skill {
                id: "extract_document",
                description: "{s3_key} → {document_type, data, file_size, content_type}",
            }],
        }
    }

    async fn extract_document(&self, params: Value) -> Result<Value, RpcError> {
        let key = string_param(&params, "s3_key")?.to_owned();
        let task = params.get("task_id").cloned().unwrap_or(Value::Null);
        let result = self.read_and_extract(&key).await;
        let (status, details) = match &result {
            Ok(r) => (
                "completed",
                json!({"task_id": task, "document_type": r["document_type"], "file_size": r["file_size"]}),
            ),
            Err(e) => ("failed", json!({"task_id": task, "error": e.message})),
        };
        if let Err(e) = log_step(&self.broker, "extractor", "extract", status, &key, &details).await
        {
            tracing::warn!(error = %e, "cannot write the extractor's processing log");
        }
        result
    }

    /// Errors of the document itself (corrupt, unsupported, too large) are
    /// [`RpcError::DOCUMENT_REJECTED`]; the broker's are [`RpcError::FAILED`].
    async fn read_and_extract(&self, key: &str) -> Result<Value, RpcError> {
        let object = self.broker.get_object(key).await?;
        let info = object.info().clone();
        if usize::try_from(info.size).map_or(true, |size| size > MAX_DOCUMENT_BYTES) {
            return Err(RpcError::document_rejected(format!(
                "the document is too large to extract ({} bytes; the extractor reads at most {MAX_DOCUMENT_BYTES})",
                info.size
            )));
        }
        let body = object.bytes(MAX_DOCUMENT_BYTES).await?;
        let extraction = tokio::task::spawn_blocking({
            let (key, content_type) = (key.to_owned(), info.content_type.clone());
            move || extract::extract(&key, &content_type, &body)
        })
        .await
        .map_err(|e| RpcError::failed(format!("extraction stopped: {e}")))?
        .map_err(|e| RpcError::document_rejected(e.to_string()))?;
        Ok(json!({
            "s3_key": key,
            "document_type": extraction.document_type,
            "data": extraction.data,
            "file_size": info.size,
            "content_type": info.content_type,
        }))
    }
}

impl Methods for Extractor {
    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            "extract_document" => self.extract_document(params).await,
            other => Err(unknown_method(other, &["extract_document"])),
        }
    }
}

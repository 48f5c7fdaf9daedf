//! The archivist agent: `archive_document` validates an extraction and, in
//! one transaction, upserts the `documents` row by `s3_key` and appends its
//! `processing_logs` entry. With `error` instead of an extraction (the
//! extractor rejected the document itself) it records the document as
//! `failed` with the message.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    extract::{DocumentType, Extraction},
    jsonrpc::{AgentCard, Methods, RpcError, Skill, string_param, unknown_method},
    validation,
};
use crate::client::{BrokerClient, json as json_param, null};

pub struct Archivist {
    broker: BrokerClient,
}

const UPSERT: &str = "INSERT INTO documents (s3_key, document_type, file_name, file_size, processing_date, status, \
     validation_score, extracted_data, validation_details, error_message) \
     VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, $9) \
     ON CONFLICT (s3_key) DO UPDATE SET document_type = EXCLUDED.document_type, file_size = COALESCE(EXCLUDED.file_size, documents.file_size), \
     processing_date = now(), status = EXCLUDED.status, validation_score = EXCLUDED.validation_score, \
     extracted_data = EXCLUDED.extracted_data, validation_details = EXCLUDED.validation_details, \
     error_message = EXCLUDED.error_message, updated_at = now() \
     RETURNING id";

const LOG: &str = "INSERT INTO processing_logs (document_id, agent_name, action, status, details) \
     VALUES ((SELECT id FROM documents WHERE s3_key = $1), 'archivist', 'archive', $2, $3)";

impl Archivist {
    pub fn new(broker: BrokerClient) -> Arc<Self> {
        Arc::new(Self { broker })
    }

    pub fn card() -> AgentCard {
        AgentCard {
            name: "archivist",
            description: "Validates extractions (score 0-100) and archives documents in PostgreSQL",
            version: env!("CARGO_PKG_VERSION"),
            skills: vec![Skill {
                id: "archive_document",
                description: "{s3_key, extraction: {document_type, data, file_size} | error} → {document_id, status, validation_score}",
            }],
        }
    }

    async fn archive_document(&self, params: Value) -> Result<Value, RpcError> {
        let key = string_param(&params, "s3_key")?;
        let task = params.get("task_id").cloned().unwrap_or(Value::Null);
        let file_name = super::file_name(key);
        let (row, outcome) = match (
            params.get("extraction"),
            params.get("error").and_then(Value::as_str),
        ) {
            (Some(extraction), None) => {
                let document_type: DocumentType =
                    serde_json::from_value(extraction["document_type"].clone()).map_err(|_| {
                        RpcError::invalid_params(
                            "extraction.document_type must be \"pdf\" or \"csv\"",
                        )
                    })?;
                let extraction = Extraction {
                    document_type,
                    data: extraction["data"].clone(),
                };
                let file_size = params["extraction"]["file_size"].as_i64();
                let validation = validation::validate(&extraction);
                let status = validation.status();
                let row = vec![
                    key.into(),
                    document_type.as_str().into(),
                    file_name.into(),
                    file_size.into(),
                    status.into(),
                    f64::from(validation.score).into(),
                    json_param(&extraction.data),
                    json_param(
                        &json!({"errors": validation.errors, "warnings": validation.warnings}),
                    ),
                    null(),
                ];
                (
                    row,
                    json!({"status": status, "validation_score": validation.score, "errors": validation.errors, "warnings": validation.warnings}),
                )
            }
            (None, Some(error)) => {
                let row = vec![
                    key.into(),
                    DocumentType::guess(key).into(),
                    file_name.into(),
                    None::<i64>.into(),
                    "failed".into(),
                    null(),
                    null(),
                    null(),
                    error.into(),
                ];
                (row, json!({"status": "failed", "error": error}))
            }
            _ => {
                return Err(RpcError::invalid_params(
                    "give either \"extraction\" or \"error\"",
                ));
            }
        };
        let log_status = if outcome["status"] == "failed" {
            "failed"
        } else {
            "completed"
        };
        let mut details = outcome.clone();
        details["task_id"] = task;
        let results = self
            .broker
            .transaction(&[
                (UPSERT, row),
                (
                    LOG,
                    vec![key.into(), log_status.into(), json_param(&details)],
                ),
            ])
            .await?;
        let document_id: i64 = results[0]
            .rows
            .first()
            .ok_or_else(|| RpcError::failed("the upsert returned no row"))?
            .get("id")?;
        let mut result = outcome;
        result["document_id"] = document_id.into();
        result["s3_key"] = key.into();
        Ok(result)
    }
}

impl Methods for Archivist {
    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            "archive_document" => self.archive_document(params).await,
            other => Err(unknown_method(other, &["archive_document"])),
        }
    }
}

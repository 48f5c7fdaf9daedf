//! The orchestrator agent: `process_document {"s3_key"}` answers with a task
//! id at once and runs extract → validate/archive in the background;
//! `get_task_status {"task_id"}` and `list_pending_documents`.
//!
//! Tasks are an event log in `processing_logs` (agent `orchestrator`,
//! action `task`, `details.task_id`): each state change appends a row, the
//! latest row is the task's state. Nothing lives only in memory, so a
//! restarted orchestrator answers for every task and resumes the ones that
//! were pending or running.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    jsonrpc::{AgentCard, Methods, Peer, RpcError, Skill, string_param, unknown_method},
    log_step,
};
use crate::client::{BrokerClient, ClientError};

pub struct Orchestrator {
    broker: BrokerClient,
    extractor: Peer,
    archivist: Peer,
}

const LATEST_STATE: &str = "SELECT status, details, timestamp FROM processing_logs \
     WHERE agent_name = 'orchestrator' AND action = 'task' AND details->>'task_id' = $1 \
     ORDER BY id DESC LIMIT 1";

const UNFINISHED: &str = "SELECT DISTINCT ON (details->>'task_id') details->>'task_id' AS task_id, \
     details->>'s3_key' AS s3_key, status FROM processing_logs \
     WHERE agent_name = 'orchestrator' AND action = 'task' \
     ORDER BY details->>'task_id', id DESC";

const REGISTER: &str = "INSERT INTO documents (s3_key, document_type, file_name, file_size, status) \
     VALUES ($1, $2, $3, $4, 'processing') \
     ON CONFLICT (s3_key) DO UPDATE SET status = 'processing', file_size = EXCLUDED.file_size, updated_at = now()";

/// `pdf` or `csv` by extension, until the extractor knows better.
pub(super) fn guess_type(key: &str) -> &'static str {
    match key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("pdf") => "pdf",
        Some("csv" | "tsv") => "csv",
        _ => "unknown",
    }
}

pub(super) fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Orchestrator {
    pub fn new(broker: BrokerClient, extractor: Peer, archivist: Peer) -> Arc<Self> {
        Arc::new(Self {
            broker,
            extractor,
            archivist,
        })
    }

    pub fn card() -> AgentCard {
        AgentCard {
            name: "orchestrator",
            description: "Runs the document pipeline: extract, validate, archive",
            version: env!("CARGO_PKG_VERSION"),
            skills: vec![
                Skill {
                    id: "process_document",
                    description: "{s3_key} → {task_id, status} at once; the pipeline runs in the background",
                },
                Skill {
                    id: "get_task_status",
                    description: "{task_id} → {task_id, status: pending|running|completed|failed, error?, ...}",
                },
                Skill {
                    id: "list_pending_documents",
                    description: "{} → {documents: [...]} whose status is pending or processing",
                },
            ],
        }
    }

    /// Resumes the tasks a previous run left pending or running.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, ClientError> {
        let rows = self.broker.query(UNFINISHED, &[]).await?;
        let mut resumed = 0;
        for row in rows.iter() {
            let status: String = row.get("status")?;
            if status == "pending" || status == "running" {
                let (task, key): (String, String) = (row.get("task_id")?, row.get("s3_key")?);
                tracing::info!(task_id = %task, s3_key = %key, "resuming an unfinished task");
                self.spawn_pipeline(task, key);
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    async fn process_document(self: &Arc<Self>, params: Value) -> Result<Value, RpcError> {
        let key = string_param(&params, "s3_key")?.to_owned();
        crate::object_store::validate_key(&key)
            .map_err(|e| RpcError::invalid_params(format!("s3_key: {e}")))?;
        let task = uuid_like();
        self.record(&task, &key, "pending", json!({})).await?;
        self.spawn_pipeline(task.clone(), key.clone());
        Ok(json!({"task_id": task, "status": "pending", "s3_key": key}))
    }

    fn spawn_pipeline(self: &Arc<Self>, task: String, key: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.run(&task, &key).await;
            let (status, extra) = match outcome {
                Ok(result) => ("completed", result),
                Err(e) => ("failed", json!({"error": e.message})),
            };
            if let Err(e) = this.record(&task, &key, status, extra).await {
                tracing::error!(task_id = %task, error = %e, "cannot record the task's outcome");
            }
        });
    }

    /// The pipeline. A missing object fails the task before any document
    /// row is written; an extraction failure is archived as a failed document.
    async fn run(&self, task: &str, key: &str) -> Result<Value, RpcError> {
        self.record(task, key, "running", json!({})).await?;
        let info = self
            .broker
            .head_object(key)
            .await
            .map_err(|e| match e.code() {
                tonic::Code::NotFound => {
                    RpcError::failed(format!("no object {key:?} in the bucket"))
                }
                _ => RpcError::from(e),
            })?;
        tracing::info!(task_id = task, s3_key = key, size = info.size, "processing");
        // The document exists from now on, so every step's log links to it.
        self.broker
            .execute(
                REGISTER,
                &[
                    key.into(),
                    guess_type(key).into(),
                    file_name(key).into(),
                    info.size.into(),
                ],
            )
            .await?;
        let extraction = self
            .extractor
            .call("extract_document", json!({"s3_key": key, "task_id": task}))
            .await;
        let archive = match &extraction {
            Ok(extraction) => json!({"s3_key": key, "task_id": task, "extraction": extraction}),
            Err(e) => json!({"s3_key": key, "task_id": task, "error": e.message}),
        };
        let archived = self.archivist.call("archive_document", archive).await?;
        match extraction {
            Ok(_) => Ok(json!({
                "document_id": archived["document_id"],
                "document_status": archived["status"],
                "validation_score": archived["validation_score"],
            })),
            Err(e) => Err(RpcError::failed(format!(
                "extraction failed: {}",
                e.message
            ))),
        }
    }

    /// Appends the task's new state.
    async fn record(
        &self,
        task: &str,
        key: &str,
        status: &str,
        extra: Value,
    ) -> Result<(), RpcError> {
        let mut details = json!({"task_id": task, "s3_key": key});
        if let (Some(details), Value::Object(extra)) = (details.as_object_mut(), extra) {
            details.extend(extra);
        }
        log_step(&self.broker, "orchestrator", "task", status, key, &details).await?;
        Ok(())
    }

    async fn get_task_status(&self, params: Value) -> Result<Value, RpcError> {
        let task = string_param(&params, "task_id")?;
        let rows = self.broker.query(LATEST_STATE, &[task.into()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| RpcError::invalid_params(format!("no task {task:?}")))?;
        let status: String = row.get("status")?;
        let details: Value = row.get("details")?;
        let mut reply = json!({"task_id": task, "status": status, "s3_key": details["s3_key"], "updated_at": row.to_json()["timestamp"]});
        for field in [
            "error",
            "document_id",
            "document_status",
            "validation_score",
        ] {
            if let Some(value) = details.get(field).filter(|v| !v.is_null()) {
                reply[field] = value.clone();
            }
        }
        Ok(reply)
    }

    async fn list_pending_documents(&self) -> Result<Value, RpcError> {
        let rows = self
            .broker
            .query(
                "SELECT id, s3_key, document_type, status, upload_date FROM documents \
                 WHERE status IN ('pending', 'processing') ORDER BY upload_date LIMIT 1000",
                &[],
            )
            .await?;
        let documents: Vec<Value> = rows.iter().map(crate::client::Row::to_json).collect();
        Ok(json!({"count": documents.len(), "documents": documents}))
    }
}

/// A random 128-bit task id in UUID text form.
fn uuid_like() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `Methods` needs `&self`; the pipeline needs an `Arc` to outlive the call.
pub struct Service(pub Arc<Orchestrator>);

impl Methods for Service {
    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match method {
            "process_document" => self.0.process_document(params).await,
            "get_task_status" => self.0.get_task_status(params).await,
            "list_pending_documents" => self.0.list_pending_documents().await,
            other => Err(unknown_method(
                other,
                &[
                    "process_document",
                    "get_task_status",
                    "list_pending_documents",
                ],
            )),
        }
    }
}

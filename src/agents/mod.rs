//! The seed's document pipeline: orchestrator → extractor → validation →
//! archivist, each agent talking to S3 and PostgreSQL only through
//! [`crate::client::BrokerClient`], and to each other with JSON-RPC 2.0.
//!
//! - [`orchestrator`] takes `process_document {s3_key}`, answers with a task
//!   id at once and runs the pipeline in the background; task state lives in
//!   `processing_logs`, so a restarted orchestrator still knows every task
//!   and resumes the unfinished ones.
//! - [`extractor`] reads the object through the broker and extracts it.
//! - [`archivist`] validates the extraction ([`validation`]) and writes the
//!   `documents` row and its log in one transaction.

pub mod archivist;
pub mod extract;
pub mod extractor;
pub mod jsonrpc;
pub mod orchestrator;
pub mod validation;

use clap::Args;

/// Options every agent binary shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Log format: text or json.
    #[arg(long, env = "AGENT_LOG_FORMAT", value_enum, default_value_t = crate::config::LogFormat::Text)]
    pub log_format: crate::config::LogFormat,
}

impl CommonArgs {
    /// Sets up logging for an agent process.
    pub fn init_logging(&self) {
        let log = crate::config::LogConfig {
            log_format: self.log_format,
            otlp_endpoint: None,
            otel_service_name: String::new(),
        };
        let _ = crate::telemetry::init(&log);
    }
}

/// Appends one `processing_logs` row for the document at `s3_key` (or with
/// no document when there is none).
pub(crate) async fn log_step(
    broker: &crate::client::BrokerClient,
    agent: &str,
    action: &str,
    status: &str,
    s3_key: &str,
    details: &serde_json::Value,
) -> Result<(), crate::client::ClientError> {
    broker
        .execute(
            "INSERT INTO processing_logs (document_id, agent_name, action, status, details) \
             VALUES ((SELECT id FROM documents WHERE s3_key = $1), $2, $3, $4, $5)",
            &[
                s3_key.into(),
                agent.into(),
                action.into(),
                status.into(),
                crate::client::json(details),
            ],
        )
        .await
        .map(drop)
}

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
    /// The broker's gRPC URL (several separated by commas). Unset, the seed's
    /// MCP_SERVER_URL is used; with neither, direct mode: S3 and PostgreSQL
    /// in-process from the agent's own DATABASE_URL or POSTGRES_*, S3_BUCKET,
    /// AWS_* variables. BROKER_TOKEN, BROKER_CA_CERT, BROKER_TIMEOUT and the
    /// client's other variables apply in both modes.
    #[arg(long, env = "BROKER_URL")]
    pub broker_url: Option<String>,
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

    /// The broker client: `--broker-url`, else `MCP_SERVER_URL`, else direct mode.
    pub async fn connect(&self) -> crate::client::Result<crate::client::BrokerClient> {
        crate::client::BrokerClient::from_url_or_env(self.broker_url.as_deref()).await
    }
}

/// Longest `documents.file_name` (a VARCHAR(255): characters, not bytes).
const MAX_FILE_NAME_CHARS: usize = 255;

/// The key's last segment, cut to what `documents.file_name` holds (S3 keys
/// may be 1024 bytes); the cut falls between characters.
pub(crate) fn file_name(key: &str) -> &str {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.char_indices()
        .nth(MAX_FILE_NAME_CHARS)
        .map_or(name, |(end, _)| &name[..end])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_fit_the_column_and_cut_between_characters() {
        assert_eq!(file_name("incoming/2026/a.pdf"), "a.pdf");
        assert_eq!(file_name("a.pdf"), "a.pdf");
        let long = format!("incoming/{}.csv", "é".repeat(500));
        let name = file_name(&long);
        assert_eq!(name.chars().count(), MAX_FILE_NAME_CHARS);
        assert!(name.chars().all(|c| c == 'é'), "{name}");
        let exact = "x".repeat(MAX_FILE_NAME_CHARS);
        assert_eq!(file_name(&exact), exact);
    }
}

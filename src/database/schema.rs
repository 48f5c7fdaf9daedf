//! The documents schema of the seed's pipeline, created idempotently.

use super::Result;

/// Every table of the schema, in creation order.
pub const SCHEMA_TABLES: &[&str] = &["documents", "processing_logs"];

const SCHEMA_SQL: &str = r#"
SELECT pg_advisory_xact_lock(hashtext('resource-broker.init_schema'));

CREATE TABLE IF NOT EXISTS documents (
    id                 BIGSERIAL PRIMARY KEY,
    s3_key             VARCHAR(1024) NOT NULL UNIQUE,
    document_type      VARCHAR(50) NOT NULL,
    file_name          VARCHAR(255) NOT NULL,
    file_size          BIGINT,
    upload_date        TIMESTAMPTZ NOT NULL DEFAULT now(),
    processing_date    TIMESTAMPTZ,
    status             VARCHAR(50) NOT NULL DEFAULT 'pending',
    validation_score   DOUBLE PRECISION,
    metadata           JSONB,
    extracted_data     JSONB,
    validation_details JSONB,
    error_message      TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_documents_status ON documents (status);
CREATE INDEX IF NOT EXISTS idx_documents_type ON documents (document_type);
CREATE INDEX IF NOT EXISTS idx_documents_upload_date ON documents (upload_date);

CREATE TABLE IF NOT EXISTS processing_logs (
    id          BIGSERIAL PRIMARY KEY,
    document_id BIGINT REFERENCES documents (id) ON DELETE CASCADE,
    agent_name  VARCHAR(50) NOT NULL,
    action      VARCHAR(100) NOT NULL,
    status      VARCHAR(50) NOT NULL,
    details     JSONB,
    timestamp   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_processing_logs_document_id ON processing_logs (document_id);
-- The orchestrator's task rows by task id (status polls, claims), newest first.
CREATE INDEX IF NOT EXISTS idx_processing_logs_task ON processing_logs ((details->>'task_id'), id)
    WHERE agent_name = 'orchestrator' AND action = 'task';
"#;

/// Creates what is missing, under an advisory lock so that concurrent
/// callers do not race on the catalog.
pub(super) async fn create(client: &mut tokio_postgres::Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(SCHEMA_SQL).await?;
    tx.commit().await?;
    Ok(())
}

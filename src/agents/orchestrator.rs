//! The orchestrator agent: `process_document {"s3_key"}` answers with a task
//! id at once and runs extract → validate/archive in the background;
//! `get_task_status {"task_id"}` and `list_pending_documents`.
//!
//! Tasks are an event log in `processing_logs` (agent `orchestrator`,
//! action `task`, `details.task_id`): each state change appends a row, the
//! latest row is the task's state. Nothing lives only in memory, so a
//! restarted orchestrator answers for every task and resumes the ones that
//! were pending or running.
//!
//! **One orchestrator per task.** A pending or running row names its
//! `owner` (one id per claim: this process's id and a random suffix) and a
//! `lease_until` (epoch seconds, from the database's clock). The owner
//! renews the lease every third of it while it works. Every state change is
//! one `Transaction`: a transaction-level advisory lock on the task id, then
//! an `INSERT ... SELECT` that only writes when the task's latest row is
//! still pending or running and either belongs to the writer or its lease
//! has expired. Under PostgreSQL's default READ COMMITTED each statement
//! sees what the previous holder of the lock committed, so of two
//! orchestrators (a rolling deploy) exactly one wins; the other's writes
//! match no row and it drops the task. A sweep (at start-up, then every half
//! lease) claims tasks whose lease expired: their orchestrator stopped. An
//! owner cut off from the broker for longer than a whole lease may still
//! finish the step it is in (an extractor or archivist call) after its
//! successor claimed the task; it records nothing afterwards.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{
    extract::DocumentType,
    file_name,
    jsonrpc::{AgentCard, Methods, Peer, RpcError, Skill, string_param, unknown_method},
};
use crate::client::{BrokerClient, ClientError, json as json_param};

pub struct Orchestrator {
    broker: BrokerClient,
    extractor: Peer,
    archivist: Peer,
    /// This process, in the `owner` of the tasks it claims.
    instance: String,
    lease: Duration,
}

/// The id of task `$1`'s latest row.
macro_rules! latest_row_of_task {
    () => {
        "(SELECT id FROM processing_logs WHERE agent_name = 'orchestrator' AND action = 'task' \
         AND details->>'task_id' = $1 ORDER BY id DESC LIMIT 1)"
    };
}

const LATEST_STATE: &str = "SELECT status, details, timestamp FROM processing_logs \
     WHERE agent_name = 'orchestrator' AND action = 'task' AND details->>'task_id' = $1 \
     ORDER BY id DESC LIMIT 1";

/// Tasks whose latest row is pending or running with an expired lease,
/// after row id `$1`, at most `$2`.
const UNFINISHED: &str = "SELECT l.id, l.details->>'task_id' AS task_id, l.details->>'s3_key' AS s3_key \
     FROM processing_logs l \
     WHERE l.agent_name = 'orchestrator' AND l.action = 'task' AND l.status IN ('pending', 'running') \
     AND l.id > $1 \
     AND COALESCE((l.details->>'lease_until')::float8, 0) < extract(epoch FROM now()) \
     AND NOT EXISTS (SELECT 1 FROM processing_logs n WHERE n.agent_name = 'orchestrator' \
         AND n.action = 'task' AND n.details->>'task_id' = l.details->>'task_id' AND n.id > l.id) \
     ORDER BY l.id LIMIT $2";

/// Rows per page of [`UNFINISHED`] (the broker's own cap may be lower:
/// `truncated` pages are followed the same way).
const UNFINISHED_PAGE: i64 = 500;

/// Serialises the state changes of task `$1` until the transaction ends.
const LOCK_TASK: &str =
    "SELECT 1 AS locked FROM pg_advisory_xact_lock(hashtext('orchestrator task ' || $1::text))";

/// A new task's first row: `$1` task id, `$2` s3_key, `$3` details, `$4`
/// owner, `$5` lease in seconds.
const CREATE: &str = "INSERT INTO processing_logs (document_id, agent_name, action, status, details) \
     VALUES ((SELECT id FROM documents WHERE s3_key = $2), 'orchestrator', 'task', 'pending', \
     $3::jsonb || jsonb_build_object('task_id', $1::text, 'owner', $4::text, \
         'lease_until', extract(epoch FROM now()) + $5::float8))";

/// Appends state `$3` to task `$1` (document `$2`) with details `$4`, owner
/// `$5` and a lease of `$6` seconds (NULL for a final state), when the latest
/// row is unfinished and owned by `$5` or its lease has expired.
const TRANSITION: &str = concat!(
    "INSERT INTO processing_logs (document_id, agent_name, action, status, details) \
     SELECT (SELECT id FROM documents WHERE s3_key = $2), 'orchestrator', 'task', $3, \
     $4::jsonb || jsonb_build_object('owner', $5::text, 'lease_until', extract(epoch FROM now()) + $6::float8) \
     FROM processing_logs l WHERE l.id = ",
    latest_row_of_task!(),
    " AND l.status IN ('pending', 'running') \
     AND (l.details->>'owner' = $5 \
          OR COALESCE((l.details->>'lease_until')::float8, 0) < extract(epoch FROM now()))"
);

/// Extends owner `$2`'s lease on task `$1` by `$3` seconds from now.
const RENEW: &str = concat!(
    "UPDATE processing_logs SET details = details || \
     jsonb_build_object('lease_until', extract(epoch FROM now()) + $3::float8) WHERE id = ",
    latest_row_of_task!(),
    " AND status IN ('pending', 'running') AND details->>'owner' = $2"
);

/// Marks the document as being processed; returns what it was before.
const REGISTER: &str = "WITH previous AS (SELECT status FROM documents WHERE s3_key = $1) \
     INSERT INTO documents (s3_key, document_type, file_name, file_size, status) \
     VALUES ($1, $2, $3, $4, 'processing') \
     ON CONFLICT (s3_key) DO UPDATE SET status = 'processing', file_size = EXCLUDED.file_size, updated_at = now() \
     RETURNING updated_at, (SELECT status FROM previous) AS previous_status";

/// Puts back status `$2` when the row is still the `processing` that
/// REGISTER wrote at `$3` (nobody archived or registered it since).
const RESTORE: &str = "UPDATE documents SET status = $2, updated_at = now() \
     WHERE s3_key = $1 AND status = 'processing' AND updated_at = $3";

/// What REGISTER changed, so that a failed task can put it back.
struct Registration {
    at: chrono::DateTime<chrono::Utc>,
    /// The status to go back to: the previous one, or `pending` for a new
    /// document (or one a stopped orchestrator left `processing`).
    previous: String,
}

impl Orchestrator {
    /// `lease`: how long a task stays claimed without renewal (at least 1 s).
    pub fn new(
        broker: BrokerClient,
        extractor: Peer,
        archivist: Peer,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            broker,
            extractor,
            archivist,
            instance: random_id(),
            lease: lease.max(Duration::from_secs(1)),
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

    /// Claims the tasks left pending or running whose lease has expired
    /// (their orchestrator stopped) and runs them; returns how many.
    pub async fn resume(self: &Arc<Self>) -> Result<usize, ClientError> {
        let (mut after, mut resumed) = (0_i64, 0);
        loop {
            let page = self
                .broker
                .query(UNFINISHED, &[after.into(), UNFINISHED_PAGE.into()])
                .await?;
            for row in page.iter() {
                after = row.get("id")?;
                let (Some(task), Some(key)) = (
                    row.get::<Option<String>>("task_id")?,
                    row.get::<Option<String>>("s3_key")?,
                ) else {
                    tracing::warn!(
                        row_id = after,
                        "skipping a task row without task_id or s3_key"
                    );
                    continue;
                };
                let owner = self.new_owner();
                if self
                    .transition(
                        &task,
                        &key,
                        "running",
                        &owner,
                        true,
                        json!({"resumed": true}),
                    )
                    .await?
                {
                    tracing::info!(task_id = %task, s3_key = %key, "resuming an unfinished task");
                    self.spawn_pipeline(task, key, owner);
                    resumed += 1;
                }
            }
            if !page.truncated && page.len() < UNFINISHED_PAGE as usize {
                return Ok(resumed);
            }
        }
    }

    /// Runs [`Orchestrator::resume`] every half lease, for tasks whose
    /// orchestrator stopped after this one started.
    pub async fn keep_resuming(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.lease / 2);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            match self.resume().await {
                Ok(0) => {}
                Ok(resumed) => tracing::info!(resumed, "resumed tasks whose lease had expired"),
                Err(e) => tracing::warn!(error = %e, "cannot look for unfinished tasks"),
            }
        }
    }

    async fn process_document(self: &Arc<Self>, params: Value) -> Result<Value, RpcError> {
        let key = string_param(&params, "s3_key")?.to_owned();
        crate::object_store::validate_key(&key)
            .map_err(|e| RpcError::invalid_params(format!("s3_key: {e}")))?;
        let task = random_id();
        let owner = self.new_owner();
        self.broker
            .execute(
                CREATE,
                &[
                    task.as_str().into(),
                    key.as_str().into(),
                    json_param(&json!({"s3_key": key})),
                    owner.as_str().into(),
                    self.lease.as_secs_f64().into(),
                ],
            )
            .await?;
        let this = self.clone();
        let (started_task, started_key) = (task.clone(), key.clone());
        tokio::spawn(async move {
            match this
                .transition(
                    &started_task,
                    &started_key,
                    "running",
                    &owner,
                    true,
                    json!({}),
                )
                .await
            {
                Ok(true) => this.spawn_pipeline(started_task, started_key, owner),
                Ok(false) => {
                    tracing::warn!(task_id = %started_task, "another orchestrator took the new task over");
                }
                // The lease expires and a sweep (this one's or another's) takes it.
                Err(e) => {
                    tracing::warn!(task_id = %started_task, error = %e, "cannot start the task; it will be resumed");
                }
            }
        });
        Ok(json!({"task_id": task, "status": "pending", "s3_key": key}))
    }

    /// Runs the pipeline of a task `owner` holds, renewing the lease; stops
    /// as soon as the lease is lost.
    fn spawn_pipeline(self: &Arc<Self>, task: String, key: String, owner: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = this.run(&task, &key) => outcome,
                () = this.hold_lease(&task, &owner) => {
                    tracing::warn!(task_id = %task, "the task's lease was lost to another orchestrator; stopping here");
                    return;
                }
            };
            let (status, extra) = match outcome {
                Ok(result) => ("completed", result),
                Err(e) => ("failed", json!({"error": e.message})),
            };
            match this
                .transition(&task, &key, status, &owner, false, extra)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(task_id = %task, "the task was taken over before its outcome was recorded")
                }
                Err(e) => {
                    tracing::error!(task_id = %task, error = %e, "cannot record the task's outcome")
                }
            }
        });
    }

    /// Renews `owner`'s lease every third of it; returns when it is lost.
    async fn hold_lease(&self, task: &str, owner: &str) {
        let mut every = tokio::time::interval(self.lease / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let renewed = self
                .under_task_lock(
                    task,
                    RENEW,
                    vec![task.into(), owner.into(), self.lease.as_secs_f64().into()],
                )
                .await;
            match renewed {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(task_id = task, error = %e, "cannot renew the task's lease")
                }
            }
        }
    }

    /// The pipeline. A missing object fails the task before any document
    /// row is written. Only an extraction error of the document itself is
    /// archived as a failed document; any other failure puts the document
    /// row back as it was.
    async fn run(&self, task: &str, key: &str) -> Result<Value, RpcError> {
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
        let registration = self.register(key, info.size).await?;
        let outcome = self.extract_and_archive(task, key).await;
        if outcome.is_err() {
            self.restore(key, &registration).await;
        }
        outcome
    }

    async fn extract_and_archive(&self, task: &str, key: &str) -> Result<Value, RpcError> {
        let extraction = self
            .extractor
            .call("extract_document", json!({"s3_key": key, "task_id": task}))
            .await;
        let archive = match &extraction {
            Ok(extraction) => json!({"s3_key": key, "task_id": task, "extraction": extraction}),
            Err(e) if e.code == RpcError::DOCUMENT_REJECTED => {
                json!({"s3_key": key, "task_id": task, "error": e.message})
            }
            Err(e) => {
                return Err(RpcError::failed(format!(
                    "the extractor failed, the document was not processed: {}",
                    e.message
                )));
            }
        };
        let archived = self
            .archivist
            .call("archive_document", archive)
            .await
            .map_err(|e| {
                RpcError::failed(format!(
                    "the archivist failed, the document was not archived: {}",
                    e.message
                ))
            })?;
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

    /// The document exists from now on, so every step's log links to it.
    async fn register(&self, key: &str, size: i64) -> Result<Registration, RpcError> {
        let registered = self
            .broker
            .execute(
                REGISTER,
                &[
                    key.into(),
                    DocumentType::guess(key).into(),
                    file_name(key).into(),
                    size.into(),
                ],
            )
            .await?;
        let row = registered
            .rows
            .first()
            .ok_or_else(|| RpcError::failed("registering the document returned no row"))?;
        let previous: Option<String> = row.get("previous_status")?;
        Ok(Registration {
            at: row.get("updated_at")?,
            previous: previous
                .filter(|s| s != "processing")
                .unwrap_or_else(|| "pending".into()),
        })
    }

    async fn restore(&self, key: &str, registration: &Registration) {
        let restored = self
            .broker
            .execute(
                RESTORE,
                &[
                    key.into(),
                    registration.previous.as_str().into(),
                    registration.at.into(),
                ],
            )
            .await;
        if let Err(e) = restored {
            tracing::warn!(s3_key = key, error = %e, "cannot put the document's status back; it stays processing");
        }
    }

    /// Appends `status` to the task if `owner` holds it or its lease has
    /// expired; `false` when another orchestrator holds it or it is finished.
    async fn transition(
        &self,
        task: &str,
        key: &str,
        status: &str,
        owner: &str,
        leased: bool,
        extra: Value,
    ) -> Result<bool, ClientError> {
        let mut details = json!({"task_id": task, "s3_key": key});
        if let (Some(details), Value::Object(extra)) = (details.as_object_mut(), extra) {
            details.extend(extra);
        }
        let lease = leased.then_some(self.lease.as_secs_f64());
        let written = self
            .under_task_lock(
                task,
                TRANSITION,
                vec![
                    task.into(),
                    key.into(),
                    status.into(),
                    json_param(&details),
                    owner.into(),
                    lease.into(),
                ],
            )
            .await?;
        Ok(written == 1)
    }

    /// Runs `statement` after taking the task's lock, in one transaction;
    /// returns the rows it affected.
    async fn under_task_lock(
        &self,
        task: &str,
        statement: &str,
        params: Vec<crate::client::Value>,
    ) -> Result<u64, ClientError> {
        let results = self
            .broker
            .transaction(&[(LOCK_TASK, vec![task.into()]), (statement, params)])
            .await?;
        Ok(results.get(1).map_or(0, |r| r.rows_affected))
    }

    fn new_owner(&self) -> String {
        format!("{}/{}", self.instance, &random_id()[..8])
    }

    async fn get_task_status(&self, params: Value) -> Result<Value, RpcError> {
        let task = string_param(&params, "task_id")?;
        let rows = self.broker.query(LATEST_STATE, &[task.into()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| RpcError::invalid_params(format!("no task {task:?}")))?;
        let status: String = row.get("status")?;
        let details: Value = row.get("details")?;
        let mut reply = json!({"task_id": task, "status": status, "s3_key": details["s3_key"], "updated_at": row.to_json()?["timestamp"]});
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
        let documents = rows
            .iter()
            .map(crate::client::Row::to_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({"count": documents.len(), "documents": documents}))
    }
}

/// A random 128-bit id in UUID text form.
fn random_id() -> String {
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

//! The seed's pipeline end to end: the broker and the three agents as real
//! processes, real documents uploaded through the client, results checked in
//! PostgreSQL. The same scenario runs through the broker (under the shipped
//! example policy) and in direct mode (no BROKER_URL); then restarts, peers
//! that are down, and the orchestrator's task claims.

mod common;

use std::{process::Stdio, sync::Arc, time::Duration};

use common::{BUCKET, TestBroker, sha256, succeeded};
use resource_broker::{
    agents::{
        extract::samples,
        jsonrpc::{Methods, Peer},
        orchestrator::{Orchestrator, Service},
    },
    auth::policy::{Access, Policy},
    client::{BrokerClient, ClientOptions, PutOptions, json as json_param},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// An agent process, killed when dropped.
struct Agent {
    url: String,
    child: Child,
}

impl Agent {
    /// SIGKILL: the agent gets no chance to finish or clean up anything.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Where the agents find S3 and PostgreSQL.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// `BROKER_URL`.
    Broker(&'a TestBroker),
    /// The seed's `MCP_SERVER_URL`, which must keep working.
    SeedAlias(&'a TestBroker),
    /// No URL: the agent's own credentials, as before the broker existed.
    Direct(&'a TestBroker),
}

async fn start_agent(binary: &str, mode: Mode<'_>, extra: &[(&str, String)]) -> Agent {
    let mut command = Command::new(binary);
    command
        .env("AGENT_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_URL")
        .env_remove("MCP_SERVER_URL")
        .env_remove("BROKER_TOKEN")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    match mode {
        Mode::Broker(broker) => {
            command.env("BROKER_URL", broker.url());
        }
        Mode::SeedAlias(broker) => {
            command.env("MCP_SERVER_URL", broker.url());
        }
        Mode::Direct(broker) => {
            command
                .env("DATABASE_URL", &broker.db.url)
                .env("S3_BUCKET", BUCKET)
                .env("S3_ENDPOINT_URL", &broker.s3.server.endpoint)
                .env("AWS_ACCESS_KEY_ID", &broker.s3.credentials.access_key_id)
                .env(
                    "AWS_SECRET_ACCESS_KEY",
                    &broker.s3.credentials.secret_access_key,
                )
                .env("AWS_REGION", "eu-west-3");
        }
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Logs may come first; the address is on the "NAME listening on ADDR" line.
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(line) if line.contains(" listening on ") => return line,
                Some(_) => continue,
                None => panic!("{binary} exited before listening"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{binary} did not start within 60 s"));
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    // Keep reading, so the agent never writes to a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Agent {
        url: format!("http://{addr}"),
        child,
    }
}

const TOKENS: &[(&str, &str)] = &[
    ("orchestrator", "orchestrator-test-token"),
    ("extractor", "extractor-test-token"),
    ("archivist", "archivist-test-token"),
    ("uploader", "uploader-test-token"),
];

fn token(agent: &str) -> String {
    TOKENS
        .iter()
        .find(|(a, _)| *a == agent)
        .unwrap()
        .1
        .to_owned()
}

struct Pipeline {
    orchestrator: Agent,
    extractor: Agent,
    archivist: Agent,
}

impl Pipeline {
    fn peers(&self) -> [(&'static str, String); 2] {
        [
            ("EXTRACTOR_URL", self.extractor.url.clone()),
            ("ARCHIVIST_URL", self.archivist.url.clone()),
        ]
    }
}

/// The three agents; with `tokens`, each sends its own BROKER_TOKEN. In
/// broker mode the extractor finds the broker by the seed's variable.
async fn start_pipeline(mode: Mode<'_>, tokens: bool) -> Pipeline {
    let with_token = |agent: &str| -> Vec<(&'static str, String)> {
        if tokens {
            vec![("BROKER_TOKEN", token(agent))]
        } else {
            Vec::new()
        }
    };
    let extractor_mode = match mode {
        Mode::Broker(broker) => Mode::SeedAlias(broker),
        other => other,
    };
    let extractor = start_agent(
        env!("CARGO_BIN_EXE_extractor"),
        extractor_mode,
        &with_token("extractor"),
    )
    .await;
    let archivist = start_agent(
        env!("CARGO_BIN_EXE_archivist"),
        mode,
        &with_token("archivist"),
    )
    .await;
    let mut extra = with_token("orchestrator");
    extra.push(("EXTRACTOR_URL", extractor.url.clone()));
    extra.push(("ARCHIVIST_URL", archivist.url.clone()));
    let orchestrator = start_agent(env!("CARGO_BIN_EXE_orchestrator"), mode, &extra).await;
    Pipeline {
        orchestrator,
        extractor,
        archivist,
    }
}

async fn rpc(agent: &Agent, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let response: Value = reqwest::Client::new()
        .post(format!("{}/message", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["id"], 7, "{response}");
    response
}

async fn submit(orchestrator: &Agent, key: &str) -> String {
    let submitted = rpc(orchestrator, "process_document", json!({"s3_key": key})).await;
    assert_eq!(submitted["result"]["status"], "pending", "{submitted}");
    submitted["result"]["task_id"].as_str().unwrap().to_owned()
}

/// Polls the task until its status is one of `wanted`; returns the status.
async fn wait_for(orchestrator: &Agent, task: &str, wanted: &[&str]) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last =
            rpc(orchestrator, "get_task_status", json!({"task_id": task})).await["result"].clone();
        if wanted.iter().any(|w| last["status"] == *w) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task} did not reach {wanted:?} within 60 s: {last}");
}

/// Submits `key` and waits for its task to finish; returns the final status.
async fn process(orchestrator: &Agent, key: &str) -> Value {
    let task = submit(orchestrator, key).await;
    wait_for(orchestrator, &task, &["completed", "failed"]).await
}

async fn document(client: &BrokerClient, key: &str) -> Option<Value> {
    let rows = client
        .query(
            "SELECT id, status, document_type, file_name, file_size, validation_score, extracted_data, error_message \
             FROM documents WHERE s3_key = $1",
            &[key.into()],
        )
        .await
        .unwrap();
    rows.first().map(|row| row.to_json().unwrap())
}

/// `(agent_name, status)` of the document's processing_logs, in order.
async fn logs(client: &BrokerClient, key: &str) -> Vec<(String, String)> {
    let rows = client
        .query(
            "SELECT agent_name, l.status FROM processing_logs l JOIN documents d ON d.id = l.document_id \
             WHERE d.s3_key = $1 ORDER BY l.id",
            &[key.into()],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get("agent_name").unwrap(), r.get("status").unwrap()))
        .collect()
}

async fn count(client: &BrokerClient, sql: &str, task: &str) -> i64 {
    let rows = client.query(sql, &[task.into()]).await.unwrap();
    rows.first().unwrap().get("n").unwrap()
}

async fn upload(client: &BrokerClient, key: &str, content_type: &str, body: Vec<u8>) -> usize {
    let len = body.len();
    client
        .put_bytes(key, PutOptions::content_type(content_type), body)
        .await
        .unwrap();
    len
}

/// The pipeline's behaviour, the same in every mode: documents go in with
/// `uploads`, rows are read with `checks`.
async fn check_the_pipeline(pipeline: &Pipeline, uploads: &BrokerClient, checks: &BrokerClient) {
    let orchestrator = &pipeline.orchestrator;
    let pdf_size = upload(
        uploads,
        "incoming/invoice.pdf",
        "application/pdf",
        samples::invoice_pdf(),
    )
    .await;
    let status = process(orchestrator, "incoming/invoice.pdf").await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["document_status"], "validated", "{status}");
    let row = document(checks, "incoming/invoice.pdf").await.unwrap();
    assert_eq!(row["status"], "validated");
    assert_eq!(row["document_type"], "pdf");
    assert_eq!(row["file_size"], pdf_size as i64, "the real size in bytes");
    assert_eq!(row["validation_score"], 100.0);
    assert_eq!(row["extracted_data"]["page_count"], 2);
    assert_eq!(
        row["extracted_data"]["fields"]["invoice_number"],
        "INV-2026-0042"
    );
    let steps = logs(checks, "incoming/invoice.pdf").await;
    let completed = |agent: &str| (agent.to_owned(), "completed".to_owned());
    assert!(steps.contains(&completed("extractor")), "{steps:?}");
    assert!(steps.contains(&completed("archivist")), "{steps:?}");
    assert_eq!(steps.last(), Some(&completed("orchestrator")), "{steps:?}");

    let csv_size = upload(
        uploads,
        "incoming/invoices.csv",
        "text/csv",
        samples::invoices_csv(),
    )
    .await;
    let status = process(orchestrator, "incoming/invoices.csv").await;
    assert_eq!(status["status"], "completed", "{status}");
    let row = document(checks, "incoming/invoices.csv").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["file_size"].as_i64()),
        (Some("validated"), Some(csv_size as i64))
    );
    assert_eq!(row["extracted_data"]["row_count"], 4);
    assert_eq!(row["extracted_data"]["columns"][2]["type"], "float");

    // A key whose last segment is longer than documents.file_name holds
    // (archived directly: the test S3 server keeps keys as file names,
    // which cannot be that long).
    let long_key = format!("incoming/{}.pdf", "é".repeat(300));
    let archived = rpc(
        &pipeline.archivist,
        "archive_document",
        json!({"s3_key": long_key, "error": "the document is corrupt: test"}),
    )
    .await;
    assert_eq!(archived["result"]["status"], "failed", "{archived}");
    let row = document(checks, &long_key).await.unwrap();
    assert_eq!(row["file_name"].as_str().unwrap().chars().count(), 255);
    assert_eq!(row["document_type"], "pdf");

    // A corrupt PDF: a failed task with a message, a failed row, no extracted data.
    upload(
        uploads,
        "incoming/broken.pdf",
        "application/pdf",
        samples::corrupt_pdf(),
    )
    .await;
    let status = process(orchestrator, "incoming/broken.pdf").await;
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("corrupt"),
        "{status}"
    );
    let row = document(checks, "incoming/broken.pdf").await.unwrap();
    assert_eq!(row["status"], "failed");
    assert!(
        row["error_message"].as_str().unwrap().contains("corrupt"),
        "{row}"
    );
    assert_eq!(row["extracted_data"], Value::Null);
    let steps = logs(checks, "incoming/broken.pdf").await;
    let failed = |agent: &str| (agent.to_owned(), "failed".to_owned());
    assert!(steps.contains(&failed("extractor")), "{steps:?}");
    assert!(steps.contains(&failed("archivist")), "{steps:?}");

    // An empty TSV is rejected too, and its row says what the key said.
    upload(
        uploads,
        "incoming/empty.tsv",
        "text/tab-separated-values",
        Vec::new(),
    )
    .await;
    let status = process(orchestrator, "incoming/empty.tsv").await;
    assert_eq!(status["status"], "failed", "{status}");
    let row = document(checks, "incoming/empty.tsv").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["document_type"].as_str()),
        (Some("failed"), Some("csv"))
    );

    // A missing key: a failed task, and no document row at all.
    let status = process(orchestrator, "incoming/missing.pdf").await;
    assert_eq!(status["status"], "failed");
    assert!(
        status["error"].as_str().unwrap().contains("no object"),
        "{status}"
    );
    assert_eq!(document(checks, "incoming/missing.pdf").await, None);

    // Bad calls are JSON-RPC errors.
    let error = rpc(orchestrator, "process_document", json!({})).await;
    assert_eq!(error["error"]["code"], -32602, "{error}");
    let error = rpc(orchestrator, "dance", json!({})).await;
    assert_eq!(error["error"]["code"], -32601, "{error}");
    let pending = rpc(orchestrator, "list_pending_documents", json!({})).await;
    assert_eq!(pending["result"]["count"], 0, "{pending}");
}

/// deploy/policy.example.toml with each placeholder replaced by the hash
/// of the agent's test token.
fn example_policy() -> String {
    let text = include_str!("../deploy/policy.example.toml");
    let mut agent = String::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("[agents.") {
            agent = name.trim_end_matches(']').to_owned();
        }
        if line.starts_with("token_sha256") {
            lines.push(format!(
                "token_sha256 = \"{}\"",
                sha256(token(&agent).as_bytes())
            ));
        } else {
            lines.push(line.to_owned());
        }
    }
    lines.join("\n")
}

#[test]
fn the_example_policy_grants_what_the_agents_need_and_is_refused_as_shipped() {
    let shipped = Policy::parse(include_str!("../deploy/policy.example.toml"))
        .unwrap_err()
        .to_string();
    assert!(shipped.contains("token_sha256"), "{shipped}");
    let policy = Policy::parse(&example_policy()).unwrap();
    let grant = |agent: &str| policy.by_name(agent).unwrap().clone();
    for agent in ["orchestrator", "extractor", "archivist"] {
        assert_eq!(grant(agent).database.access, Access::Write, "{agent}");
    }
    assert_eq!(grant("archivist").object_store.access, Access::None);
    assert_eq!(grant("uploader").database.access, Access::None);
    // The extractor and the archivist may run their own statements only
    // (that they are enough, the pipeline below shows).
    let log_step = "INSERT INTO processing_logs (document_id, agent_name, action, status, details) \
                    VALUES ((SELECT id FROM documents WHERE s3_key = $1), $2, $3, $4, $5)";
    let extractor = grant("extractor").database.statements.clone().unwrap();
    assert!(extractor.allows(log_step));
    for agent in ["extractor", "archivist"] {
        let statements = grant(agent).database.statements.clone().unwrap();
        assert!(!statements.allows("DELETE FROM documents"), "{agent}");
        assert!(!statements.allows("SELECT * FROM documents"), "{agent}");
    }
    assert!(grant("orchestrator").database.statements.is_none());
}

#[test]
fn broker_policy_check_refuses_the_shipped_example_and_describes_a_filled_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["policy", "check"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let shipped = check(include_str!("../deploy/policy.example.toml"));
    assert_eq!(shipped.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&shipped.stderr);
    assert!(stderr.contains("agents.archivist.token_sha256"), "{stderr}");

    let filled = check(&example_policy());
    let stdout = succeeded(&filled);
    for line in [
        "ok: 4 agents",
        "agent archivist",
        "  object store:  nothing",
        "  database:      Query, Execute, Transaction, InitSchema: only the 2 statements listed",
        "agent extractor",
        "  database:      Query, Execute, Transaction, InitSchema: only the one statement listed",
        "agent orchestrator",
        "  database:      Query, Execute, Transaction, InitSchema: any statement",
        "agent uploader",
        "  object store:  ListObjects, HeadObject, GetObject, PutObject, DeleteObject: \
         keys under \"incoming/\" in S3_BUCKET only",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(!stdout.contains("warning"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_flow_through_the_broker_under_the_example_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let checker_token = "checker-test-token";
    std::fs::write(
        &policy,
        format!(
            "{}\n\n[agents.checker]\ntoken_sha256 = \"{}\"\ndatabase = {{ access = \"read\" }}\n",
            example_policy(),
            sha256(checker_token.as_bytes())
        ),
    )
    .unwrap();
    // The broker as a process of its own, like the agents.
    let broker =
        TestBroker::start_process(&[("BROKER_POLICY_FILE", policy.display().to_string())]).await;
    let url = broker.url();
    let client = |token: &str| {
        BrokerClient::connect(
            &url,
            ClientOptions {
                token: Some(token.to_owned()),
                ..ClientOptions::default()
            },
        )
    };
    let (uploads, checks) = (
        client(&token("uploader")).await.unwrap(),
        client(checker_token).await.unwrap(),
    );
    let pipeline = start_pipeline(Mode::Broker(&broker), true).await;

    let card: Value = reqwest::get(format!(
        "{}/.well-known/agent.json",
        pipeline.orchestrator.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(card["name"], "orchestrator");
    let health: Value = reqwest::get(format!("{}/health", pipeline.orchestrator.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "healthy");

    check_the_pipeline(&pipeline, &uploads, &checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pipeline_runs_in_direct_mode() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::in_process(&broker.config, ClientOptions::default())
        .await
        .unwrap();
    client.init_schema().await.unwrap();
    let pipeline = start_pipeline(Mode::Direct(&broker), false).await;
    check_the_pipeline(&pipeline, &client, &client).await;
}

/// Accepts connections and never answers: a peer that hangs.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// A URL on which nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrators_task_is_resumed_by_the_next_one() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    let pipeline = start_pipeline(Mode::Broker(&broker), false).await;
    upload(
        &client,
        "incoming/restart.csv",
        "text/csv",
        samples::invoices_csv(),
    )
    .await;

    // The first orchestrator gets stuck on its extractor, then dies.
    let lease = ("AGENT_TASK_LEASE", "2s".to_owned());
    let stuck = start_agent(
        env!("CARGO_BIN_EXE_orchestrator"),
        Mode::Broker(&broker),
        &[
            ("EXTRACTOR_URL", black_hole().await),
            ("ARCHIVIST_URL", pipeline.archivist.url.clone()),
            lease.clone(),
        ],
    )
    .await;
    let task = submit(&stuck, "incoming/restart.csv").await;
    wait_for(&stuck, &task, &["running"]).await;
    stuck.kill().await;

    let mut extra = pipeline.peers().to_vec();
    extra.push(lease);
    let next = start_agent(
        env!("CARGO_BIN_EXE_orchestrator"),
        Mode::Broker(&broker),
        &extra,
    )
    .await;
    let status = wait_for(&next, &task, &["completed", "failed"]).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["document_status"], "validated", "{status}");
    let archived = "SELECT count(*) AS n FROM processing_logs \
         WHERE agent_name = 'archivist' AND details->>'task_id' = $1";
    assert_eq!(count(&client, archived, &task).await, 1);
    let resumed = "SELECT count(*) AS n FROM processing_logs WHERE agent_name = 'orchestrator' \
         AND details->>'task_id' = $1 AND (details->>'resumed')::bool";
    assert_eq!(count(&client, resumed, &task).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_are_down_fail_the_task_but_not_the_document() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    let pipeline = start_pipeline(Mode::Broker(&broker), false).await;
    let orchestrator_with = async |extractor: String, archivist: String| {
        let peers = [("EXTRACTOR_URL", extractor), ("ARCHIVIST_URL", archivist)];
        start_agent(
            env!("CARGO_BIN_EXE_orchestrator"),
            Mode::Broker(&broker),
            &peers,
        )
        .await
    };
    upload(
        &client,
        "incoming/later.csv",
        "text/csv",
        samples::invoices_csv(),
    )
    .await;

    // No extractor: the task fails, the new document waits as pending.
    let no_extractor = orchestrator_with(closed_port().await, pipeline.archivist.url.clone()).await;
    let status = process(&no_extractor, "incoming/later.csv").await;
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("extractor") && error.contains("cannot reach"),
        "{status}"
    );
    let row = document(&client, "incoming/later.csv").await.unwrap();
    assert_eq!(row["status"], "pending", "{row}");
    assert_eq!(row["error_message"], Value::Null, "{row}");
    assert!(
        !logs(&client, "incoming/later.csv")
            .await
            .iter()
            .any(|(agent, _)| agent == "archivist")
    );

    // Once processed, a run with no archivist leaves the row as it was.
    let status = process(&pipeline.orchestrator, "incoming/later.csv").await;
    assert_eq!(status["status"], "completed", "{status}");
    let no_archivist = orchestrator_with(pipeline.extractor.url.clone(), closed_port().await).await;
    let status = process(&no_archivist, "incoming/later.csv").await;
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("archivist"),
        "{status}"
    );
    let row = document(&client, "incoming/later.csv").await.unwrap();
    assert_eq!(row["status"], "validated", "{row}");
    assert_eq!(row["extracted_data"]["row_count"], 4, "{row}");
}

/// Appends one orchestrator task row, as an orchestrator would have.
async fn task_row(client: &BrokerClient, task: &str, status: &str, lease_until: f64) {
    client
        .execute(
            "INSERT INTO processing_logs (agent_name, action, status, details) \
             VALUES ('orchestrator', 'task', $1, $2)",
            &[
                status.into(),
                json_param(&json!({
                    "task_id": task,
                    "s3_key": format!("incoming/{task}.pdf"),
                    "owner": "gone",
                    "lease_until": lease_until,
                })),
            ],
        )
        .await
        .unwrap();
}

fn orchestrator(client: &BrokerClient) -> Arc<Orchestrator> {
    let nowhere = || Peer::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
    Orchestrator::new(
        client.clone(),
        nowhere(),
        nowhere(),
        Duration::from_secs(60),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_tasks_are_found_past_the_row_cap_and_claimed_once() {
    let broker = TestBroker::start_with(|c| c.limits.max_rows = 5).await;
    let client = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    client.init_schema().await.unwrap();
    // 30 finished tasks and 7 unfinished ones whose orchestrator is gone,
    // interleaved, plus one that a live orchestrator still holds.
    let mut unfinished = Vec::new();
    for i in 0..37 {
        let task = format!("task-{i:02}");
        task_row(&client, &task, "pending", 0.0).await;
        if i % 5 == 4 {
            task_row(&client, &task, "running", 1.0).await;
            unfinished.push(task);
        } else {
            task_row(&client, &task, "completed", 0.0).await;
        }
    }
    task_row(&client, "held", "running", 4.0e9).await;

    let (a, b) = (orchestrator(&client), orchestrator(&client));
    let (claimed_a, claimed_b) = tokio::join!(a.resume(), b.resume());
    assert_eq!(
        claimed_a.unwrap() + claimed_b.unwrap(),
        unfinished.len(),
        "each unfinished task claimed once, past the broker's 5-row cap"
    );
    // Each claimed task runs once: its object is missing, so it fails once.
    for task in &unfinished {
        let status = Service(a.clone())
            .call("get_task_status", json!({"task_id": task}))
            .await
            .unwrap();
        let mut status = status;
        for _ in 0..600 {
            if status["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = Service(a.clone())
                .call("get_task_status", json!({"task_id": task}))
                .await
                .unwrap();
        }
        assert_eq!(status["status"], "failed", "{status}");
        let outcomes = "SELECT count(*) AS n FROM processing_logs WHERE agent_name = 'orchestrator' \
             AND details->>'task_id' = $1 AND status IN ('completed', 'failed')";
        assert_eq!(count(&client, outcomes, task).await, 1, "{task}");
    }
    let held = Service(a.clone())
        .call("get_task_status", json!({"task_id": "held"}))
        .await
        .unwrap();
    assert_eq!(held["status"], "running", "a live lease is left alone");
}

#[tokio::test]
async fn task_status_polls_use_the_task_index() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    client.init_schema().await.unwrap();
    let db = broker.db.connect().await;
    db.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan = db
        .query(
            "EXPLAIN SELECT status, details, timestamp FROM processing_logs \
             WHERE agent_name = 'orchestrator' AND action = 'task' AND details->>'task_id' = 'x' \
             ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let plan: Vec<String> = plan.iter().map(|r| r.get(0)).collect();
    assert!(
        plan.iter().any(|l| l.contains("idx_processing_logs_task")),
        "{plan:#?}"
    );
}

#[test]
fn orchestrator_help_lists_its_variables() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "AGENT_ADDR",
        "EXTRACTOR_URL",
        "ARCHIVIST_URL",
        "AGENT_TASK_LEASE",
        "BROKER_URL",
        "--broker-url",
    ] {
        assert!(help.contains(variable), "{variable} missing from:\n{help}");
    }
}

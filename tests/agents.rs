//! The seed's pipeline end to end: the broker and the three agents as real
//! processes, real documents uploaded through the client, results checked in
//! PostgreSQL; then the same pipeline in direct mode (no BROKER_URL).

mod common;

use std::{process::Stdio, time::Duration};

use common::{BUCKET, TestBroker};
use resource_broker::{
    agents::extract::samples,
    client::{BrokerClient, ClientOptions, PutOptions},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// An agent process, killed when dropped.
struct Agent {
    url: String,
    _child: Child,
}

/// Where the agents find S3 and PostgreSQL.
enum Mode<'a> {
    Broker(&'a TestBroker),
    Direct(&'a TestBroker),
}

async fn start_agent(binary: &str, mode: &Mode<'_>, extra: &[(&str, String)]) -> Agent {
    let mut command = Command::new(binary);
    command
        .env("AGENT_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_URL")
        .env_remove("MCP_SERVER_URL")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    match mode {
        Mode::Broker(broker) => {
            command.env("BROKER_URL", broker.url());
        }
        Mode::Direct(broker) => {
            // The agent's own credentials, as before the broker existed.
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
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(line) if line.contains(" listening on ") => return line,
                Some(_) => continue,
                None => panic!("{binary} exited before listening"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{binary} did not start within 30 s"));
    let addr = line.rsplit(' ').next().unwrap().to_owned();
    // Keep reading, so the agent never writes to a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Agent {
        url: format!("http://{addr}"),
        _child: child,
    }
}

struct Pipeline {
    orchestrator: Agent,
    _extractor: Agent,
    _archivist: Agent,
}

async fn start_pipeline(mode: Mode<'_>) -> Pipeline {
    let extractor = start_agent(env!("CARGO_BIN_EXE_extractor"), &mode, &[]).await;
    let archivist = start_agent(env!("CARGO_BIN_EXE_archivist"), &mode, &[]).await;
    let peers = [
        ("EXTRACTOR_URL", extractor.url.clone()),
        ("ARCHIVIST_URL", archivist.url.clone()),
    ];
    let orchestrator = start_agent(env!("CARGO_BIN_EXE_orchestrator"), &mode, &peers).await;
    Pipeline {
        orchestrator,
        _extractor: extractor,
        _archivist: archivist,
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

/// Submits `key` and waits for its task to finish; returns the final status.
async fn process(orchestrator: &Agent, key: &str) -> Value {
    let submitted = rpc(orchestrator, "process_document", json!({"s3_key": key})).await;
    let task = submitted["result"]["task_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_owned();
    assert_eq!(submitted["result"]["status"], "pending");
    for _ in 0..300 {
        let status =
            rpc(orchestrator, "get_task_status", json!({"task_id": task})).await["result"].clone();
        if status["status"] == "completed" || status["status"] == "failed" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task} for {key} did not finish within 30 s");
}

async fn document(client: &BrokerClient, key: &str) -> Option<Value> {
    let rows = client
        .query(
            "SELECT id, status, document_type, file_size, validation_score, extracted_data, error_message \
             FROM documents WHERE s3_key = $1",
            &[key.into()],
        )
        .await
        .unwrap();
    rows.first().map(resource_broker::client::Row::to_json)
}

async fn upload(client: &BrokerClient, key: &str, content_type: &str, body: Vec<u8>) -> usize {
    let len = body.len();
    client
        .put_bytes(key, PutOptions::content_type(content_type), body)
        .await
        .unwrap();
    len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_flow_through_the_broker_and_survive_a_restart() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    let mut pipeline = start_pipeline(Mode::Broker(&broker)).await;

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

    let pdf_size = upload(
        &client,
        "incoming/invoice.pdf",
        "application/pdf",
        samples::invoice_pdf(),
    )
    .await;
    let status = process(&pipeline.orchestrator, "incoming/invoice.pdf").await;
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["document_status"], "validated", "{status}");
    let row = document(&client, "incoming/invoice.pdf").await.unwrap();
    assert_eq!(row["status"], "validated");
    assert_eq!(row["document_type"], "pdf");
    assert_eq!(row["file_size"], pdf_size as i64, "the real size in bytes");
    assert_eq!(row["validation_score"], 100.0);
    assert_eq!(row["extracted_data"]["page_count"], 2);
    assert_eq!(
        row["extracted_data"]["fields"]["invoice_number"],
        "INV-2026-0042"
    );

    let csv_size = upload(
        &client,
        "incoming/invoices.csv",
        "text/csv",
        samples::invoices_csv(),
    )
    .await;
    let status = process(&pipeline.orchestrator, "incoming/invoices.csv").await;
    assert_eq!(status["status"], "completed", "{status}");
    let row = document(&client, "incoming/invoices.csv").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["file_size"].as_i64()),
        (Some("validated"), Some(csv_size as i64))
    );
    assert_eq!(row["extracted_data"]["row_count"], 4);
    assert_eq!(row["extracted_data"]["columns"][2]["type"], "float");

    // Every agent left its trace on the document.
    let agents = client
        .query(
            "SELECT DISTINCT agent_name FROM processing_logs l JOIN documents d ON d.id = l.document_id \
             WHERE d.s3_key = $1 ORDER BY agent_name",
            &["incoming/invoice.pdf".into()],
        )
        .await
        .unwrap();
    let names: Vec<String> = agents
        .iter()
        .map(|r| r.get("agent_name").unwrap())
        .collect();
    assert_eq!(names, ["archivist", "extractor", "orchestrator"]);

    // A corrupt PDF: a failed task with a message, a failed row, no extracted data.
    upload(
        &client,
        "incoming/broken.pdf",
        "application/pdf",
        samples::corrupt_pdf(),
    )
    .await;
    let status = process(&pipeline.orchestrator, "incoming/broken.pdf").await;
    assert_eq!(status["status"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("corrupt"),
        "{status}"
    );
    let row = document(&client, "incoming/broken.pdf").await.unwrap();
    assert_eq!(row["status"], "failed");
    assert!(
        row["error_message"].as_str().unwrap().contains("corrupt"),
        "{row}"
    );
    assert_eq!(row["extracted_data"], Value::Null);

    // A missing key: a failed task, and no document row at all.
    let status = process(&pipeline.orchestrator, "incoming/missing.pdf").await;
    assert_eq!(status["status"], "failed");
    assert!(
        status["error"].as_str().unwrap().contains("no object"),
        "{status}"
    );
    assert_eq!(document(&client, "incoming/missing.pdf").await, None);

    // Bad calls are JSON-RPC errors.
    let error = rpc(&pipeline.orchestrator, "process_document", json!({})).await;
    assert_eq!(error["error"]["code"], -32602, "{error}");
    let error = rpc(&pipeline.orchestrator, "dance", json!({})).await;
    assert_eq!(error["error"]["code"], -32601, "{error}");
    let pending = rpc(&pipeline.orchestrator, "list_pending_documents", json!({})).await;
    assert_eq!(pending["result"]["count"], 0, "{pending}");

    // A restarted orchestrator still knows the tasks.
    let submitted = rpc(
        &pipeline.orchestrator,
        "process_document",
        json!({"s3_key": "incoming/invoices.csv"}),
    )
    .await;
    let task = submitted["result"]["task_id"].as_str().unwrap().to_owned();
    let peers = [
        ("EXTRACTOR_URL", pipeline._extractor.url.clone()),
        ("ARCHIVIST_URL", pipeline._archivist.url.clone()),
    ];
    pipeline.orchestrator = start_agent(
        env!("CARGO_BIN_EXE_orchestrator"),
        &Mode::Broker(&broker),
        &peers,
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..300 {
        last = rpc(
            &pipeline.orchestrator,
            "get_task_status",
            json!({"task_id": task}),
        )
        .await;
        if last["result"]["status"] == "completed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the task submitted before the restart never completed: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_pipeline_runs_in_direct_mode() {
    let broker = TestBroker::start().await;
    let client = BrokerClient::in_process(&broker.config, ClientOptions::default())
        .await
        .unwrap();
    client.init_schema().await.unwrap();
    let pipeline = start_pipeline(Mode::Direct(&broker)).await;
    let size = upload(
        &client,
        "incoming/direct.csv",
        "text/csv",
        samples::invoices_csv(),
    )
    .await;
    let status = process(&pipeline.orchestrator, "incoming/direct.csv").await;
    assert_eq!(status["status"], "completed", "{status}");
    let row = document(&client, "incoming/direct.csv").await.unwrap();
    assert_eq!(
        (row["status"].as_str(), row["file_size"].as_i64()),
        (Some("validated"), Some(size as i64))
    );
}

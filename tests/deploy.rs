//! What ships, checked offline: scripts/check-deploy.sh lints the
//! Dockerfile, compose file, CloudFormation template, Kubernetes manifest
//! and scripts, validates the task definitions against the ECS API model,
//! and runs the deploy scripts against a fake aws/docker, checking the calls.
//! The template's log metric filters are checked against the JSON request
//! log of a real `broker serve`.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{TestDatabase, TestS3, proxy::Proxy};
use resource_broker::proto::{
    GetObjectRequest, HeadObjectRequest, ListObjectsRequest, PutObjectHeader, PutObjectRequest,
    QueryRequest, database_client::DatabaseClient, object_store_client::ObjectStoreClient,
    put_object_request,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_deployment_checks_pass() {
    let output = Command::new("bash")
        .arg(format!("{ROOT}/scripts/check-deploy.sh"))
        .output()
        .expect("run scripts/check-deploy.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// `broker serve` as ECS runs it (BROKER_LOG_FORMAT=json), its log lines
/// arriving on a channel.
struct JsonLoggingBroker {
    child: Child,
    lines: mpsc::Receiver<String>,
    url: String,
}

impl JsonLoggingBroker {
    fn start(database_url: &str, s3: &TestS3) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("serve")
            .env_clear()
            .envs([
                ("BROKER_ADDR", "127.0.0.1:0"),
                ("BROKER_LOG_FORMAT", "json"),
                ("BROKER_HEALTH_INTERVAL", "200ms"),
                ("BROKER_PG_ACQUIRE_TIMEOUT", "1s"),
                ("DATABASE_URL", database_url),
                ("S3_BUCKET", common::BUCKET),
                ("S3_ENDPOINT_URL", &s3.server.endpoint),
                ("AWS_ACCESS_KEY_ID", &s3.credentials.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", &s3.credentials.secret_access_key),
                ("AWS_REGION", "eu-west-3"),
                ("RUST_LOG", "info"),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start broker serve");
        let stdout = child.stdout.take().expect("broker stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let addr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("broker listening");
            let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            if event["message"] == "broker listening (gRPC and HTTP)" {
                break event["addr"].as_str().expect("addr").to_owned();
            }
        };
        Self {
            child,
            lines,
            url: format!("http://{addr}"),
        }
    }

    /// SIGTERM, wait for the exit, and every line it logged.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.expect("kill -TERM").success());
        assert!(self.child.wait().expect("broker exit").success());
        self.lines.try_iter().collect()
    }
}

/// Each request log line as "method-or-path code", the way the filters see it.
fn label(event: &serde_json::Value) -> String {
    match event.get("method") {
        Some(method) => format!("{} {}", method.as_str().unwrap(), event["grpc_code"]),
        None => format!(
            "{} {}",
            event["path"].as_str().unwrap(),
            event["http_status"]
        ),
    }
    .replace('"', "")
}

#[tokio::test]
async fn metric_filters_match_the_brokers_json_request_log() {
    let python = format!("{ROOT}/.venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run bash scripts/setup.sh"
    );
    let db = TestDatabase::create().await;
    let s3 = TestS3::start().await;
    let pg_port = db
        .url
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .get_ports()[0];
    let postgres = Proxy::start(([127, 0, 0, 1], pg_port).into())
        .await
        .unwrap();
    let database_url = db.url.replace(
        &format!(":{pg_port}/"),
        &format!(":{}/", postgres.addr.port()),
    );
    let broker = JsonLoggingBroker::start(&database_url, &s3);
    let channel = Channel::from_shared(broker.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut objects = ObjectStoreClient::new(channel.clone());
    let mut database = DatabaseClient::new(channel.clone());

    // Not calls: health, metrics.
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let metrics = http
        .get(format!("{}/metrics", broker.url))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    // Unary, streaming, a client error, and a call through an HTTP doorway.
    objects
        .list_objects(ListObjectsRequest::default())
        .await
        .unwrap();
    let missing = objects
        .head_object(HeadObjectRequest {
            key: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let upload = [
        put_object_request::Part::Header(PutObjectHeader {
            key: "report.txt".into(),
            ..Default::default()
        }),
        put_object_request::Part::Chunk("hello".into()),
    ]
    .map(|part| PutObjectRequest { part: Some(part) });
    objects
        .put_object(futures::stream::iter(upload))
        .await
        .unwrap();
    let mut download = objects
        .get_object(GetObjectRequest {
            key: "report.txt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while download.message().await.unwrap().is_some() {}
    let tool = |name: &str, arguments: serde_json::Value| {
        http.post(format!("{}/call_tool", broker.url))
            .json(&serde_json::json!({ "tool": name, "arguments": arguments }))
            .send()
    };
    let listed = tool("s3_list_objects", serde_json::json!({}))
        .await
        .unwrap();
    assert!(listed.status().is_success());

    // PostgreSQL down: server errors, through gRPC and through /call_tool;
    // GET /health is 503 then, which is the health check, not an error.
    postgres.down();
    loop {
        let health = http
            .get(format!("{}/health", broker.url))
            .send()
            .await
            .unwrap();
        if health.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let query = QueryRequest {
        sql: "SELECT 1".into(),
        ..Default::default()
    };
    let down = database.query(query).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    let failed = tool("postgres_query", serde_json::json!({ "query": "SELECT 1" }))
        .await
        .unwrap();
    assert_eq!(failed.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    drop((objects, database, channel));

    let lines = broker.stop();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    let log = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log.path(), lines.join("\n")).unwrap();
    let output = Command::new(&python)
        .arg(format!("{ROOT}/tests/deploy/metric_filters.py"))
        .arg(format!("{ROOT}/deploy/cloudformation/broker.yaml"))
        .arg(log.path())
        .output()
        .expect("run metric_filters.py");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        lines.join("\n")
    );
    let matched: HashMap<String, Vec<usize>> = serde_json::from_slice(&output.stdout).unwrap();
    let labels = |filter: &str| {
        let mut found: Vec<String> = matched[filter].iter().map(|&i| label(&events[i])).collect();
        found.sort();
        found
    };
    let sorted = |expected: &[&str]| {
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        expected
    };
    // /call_tool's HTTP line and the broker.v1 call it made in-process.
    assert_eq!(
        labels("CallsMetric"),
        sorted(&[
            "/broker.v1.ObjectStore/ListObjects Ok",
            "/broker.v1.ObjectStore/HeadObject NotFound",
            "/broker.v1.ObjectStore/PutObject Ok",
            "/broker.v1.ObjectStore/GetObject Ok",
            "/call_tool 200",
            "/broker.v1.ObjectStore/ListObjects Ok",
            "/broker.v1.Database/Query Unavailable",
            "/call_tool 503",
            "/broker.v1.Database/Query Unavailable",
        ])
    );
    assert_eq!(
        labels("ServerErrorsMetric"),
        sorted(&[
            "/broker.v1.Database/Query Unavailable",
            "/call_tool 503",
            "/broker.v1.Database/Query Unavailable",
        ])
    );
    assert_eq!(
        labels("UnaryLatencyMetric"),
        sorted(&[
            "/broker.v1.ObjectStore/ListObjects Ok",
            "/broker.v1.ObjectStore/HeadObject NotFound",
            "/broker.v1.ObjectStore/ListObjects Ok",
            "/broker.v1.Database/Query Unavailable",
            "/broker.v1.Database/Query Unavailable",
        ])
    );
}

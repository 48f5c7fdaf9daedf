//! The client library against a real broker, in both modes: remote (gRPC
//! over the network) and direct (the same services in-process). Each
//! scenario runs in both and must give the same results and errors.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::{TestBroker, binary_body};
use futures::StreamExt;
use resource_broker::{
    client::{BrokerClient, ClientError, ClientOptions, Mode, PutOptions, Value, json, numeric},
    config::ServeConfig,
};
use tonic::Code;

async fn remote(broker: &TestBroker) -> BrokerClient {
    BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap()
}

async fn direct(broker: &TestBroker) -> BrokerClient {
    BrokerClient::in_process(&broker.config, ClientOptions::default())
        .await
        .unwrap()
}

/// Objects: put (bytes, stream, file), head, get (whole, range, stream),
/// list with paging, delete; errors with their codes.
async fn object_round_trips(client: &BrokerClient, prefix: &str) {
    let body = binary_body(2 * 1024 * 1024 + 17);
    let key = format!("{prefix}/blob.bin");
    let put = client
        .put_bytes(
            &key,
            PutOptions::content_type("application/octet-stream"),
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(put.size, body.len() as i64);

    let head = client.head_object(&key).await.unwrap();
    assert_eq!(
        (head.size, head.content_type.as_str()),
        (body.len() as i64, "application/octet-stream")
    );
    assert_eq!(
        client.get_bytes(&key, body.len()).await.unwrap(),
        body,
        "binary-exact"
    );
    let range = client
        .get_object_range(&key, 10, 100)
        .await
        .unwrap()
        .bytes(1000)
        .await
        .unwrap();
    assert_eq!(range, body[10..110]);

    let mut reader = client.get_object(&key).await.unwrap();
    assert_eq!(reader.info().size, body.len() as i64);
    let mut chunks = 0;
    let mut total = 0;
    while let Some(chunk) = reader.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 1024 * 1024, "chunks of at most 1 MiB");
        chunks += 1;
        total += chunk.len();
    }
    assert_eq!((chunks >= 3, total), (true, body.len()));

    let too_big = client.get_bytes(&key, 1024).await.unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted);

    // A streamed upload of many small pieces, and a file with progress.
    let pieces = (0..50).map(|i| Ok(Bytes::from(format!("line {i}\n"))));
    client
        .put_object(
            &format!("{prefix}/lines.txt"),
            PutOptions::default(),
            futures::stream::iter(pieces),
        )
        .await
        .unwrap();
    let text = client
        .get_bytes(&format!("{prefix}/lines.txt"), 1 << 20)
        .await
        .unwrap();
    assert!(text.starts_with(b"line 0\nline 1\n") && text.ends_with(b"line 49\n"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = seen.clone();
    client
        .put_file(
            &format!("{prefix}/file.bin"),
            &file,
            PutOptions::default(),
            move |p| progress.lock().unwrap().push(p),
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.last().map(|p| (p.sent, p.total)),
        Some((body.len() as u64, Some(body.len() as u64)))
    );
    assert!(
        seen.windows(2).all(|w| w[0].sent < w[1].sent),
        "progress only grows"
    );
    let copy = dir.path().join("copy.bin");
    let written = client
        .get_object(&format!("{prefix}/file.bin"))
        .await
        .unwrap()
        .write_to(&copy)
        .await
        .unwrap();
    assert_eq!(
        (written, std::fs::read(&copy).unwrap()),
        (body.len() as u64, body.clone())
    );

    let listed = client
        .list_objects(&format!("{prefix}/"), None)
        .await
        .unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("{prefix}/blob.bin"),
            format!("{prefix}/file.bin"),
            format!("{prefix}/lines.txt")
        ]
    );
    assert_eq!(
        client
            .list_objects(&format!("{prefix}/"), Some(2))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        client
            .list_objects(&format!("{prefix}/"), Some(0))
            .await
            .unwrap()
            .is_empty(),
        "a limit of 0 lists nothing (max_keys 0 would mean the server's 1000)"
    );

    client.delete_object(&key).await.unwrap();
    let missing = client.head_object(&key).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing}");
    assert_eq!(
        client.get_object(&key).await.unwrap_err().code(),
        Code::NotFound
    );
    let bad = client.head_object("").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
}

/// A body stream that fails half-way cancels the upload: nothing is written.
async fn failed_body_writes_nothing(client: &BrokerClient, prefix: &str) {
    let key = format!("{prefix}/broken.bin");
    let body = futures::stream::iter([
        Ok(Bytes::from(vec![1u8; 300_000])),
        Err(std::io::Error::other("disk went away")),
    ]);
    let err = client
        .put_object(&key, PutOptions::default(), body)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Io { .. }), "{err}");
    assert!(err.to_string().contains("disk went away"), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client.head_object(&key).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// SQL: typed parameters in, typed rows out, writes with RETURNING,
/// transactions, and the contract's error codes.
async fn sql_round_trips(client: &BrokerClient, table: &str) {
    client.init_schema().await.unwrap();
    client
        .execute(&format!("CREATE TABLE {table} (id bigserial PRIMARY KEY, name text UNIQUE NOT NULL, amount numeric, meta jsonb, at timestamptz)"), &[])
        .await
        .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
        .unwrap()
        .to_utc();
    let inserted = client
        .execute(
            &format!("INSERT INTO {table} (name, amount, meta, at) VALUES ($1, $2, $3, $4) RETURNING id, name"),
            &["invoice".into(), numeric("1234.50"), json(&serde_json::json!({"pages": 3})), at.into()],
        )
        .await
        .unwrap();
    assert_eq!(inserted.rows_affected, 1);
    let id: i64 = inserted.rows.first().unwrap().get("id").unwrap();

    let rows = client
        .query(&format!("SELECT id, name, amount, meta, at, NULL::text AS nothing FROM {table} WHERE id = $1"), &[id.into()])
        .await
        .unwrap();
    let row = rows.first().unwrap();
    assert_eq!(row.get::<String>("name").unwrap(), "invoice");
    assert_eq!(
        row.get::<String>("amount").unwrap(),
        "1234.50",
        "numerics stay exact"
    );
    assert_eq!(
        row.get::<serde_json::Value>("meta").unwrap(),
        serde_json::json!({"pages": 3})
    );
    assert_eq!(row.get::<chrono::DateTime<chrono::Utc>>("at").unwrap(), at);
    assert_eq!(row.get::<Option<String>>("nothing").unwrap(), None);
    assert_eq!(row.to_json().unwrap()["name"], "invoice");

    let results = client
        .transaction(&[
            (
                &format!("INSERT INTO {table} (name) VALUES ($1)"),
                vec!["a".into()],
            ),
            (
                &format!("UPDATE {table} SET amount = $1 WHERE name = $2"),
                vec![numeric("2"), "a".into()],
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.rows_affected).collect::<Vec<_>>(),
        [1, 1]
    );
    // All or nothing: the second statement fails, so "b" is not written.
    let err = client
        .transaction(&[
            (
                &format!("INSERT INTO {table} (name) VALUES ($1)"),
                vec!["b".into()],
            ),
            (
                &format!("INSERT INTO {table} (name) VALUES ($1)"),
                vec!["a".into()],
            ),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let count = client
        .query(
            &format!("SELECT count(*) AS n FROM {table} WHERE name = 'b'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(count.first().unwrap().get::<i64>("n").unwrap(), 0);

    let capped = client
        .query_max("SELECT generate_series(1, 10) AS n", &[], 3)
        .await
        .unwrap();
    assert_eq!((capped.len(), capped.truncated), (3, true));

    let err = client
        .query(&format!("INSERT INTO {table} (name) VALUES ('x')"), &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "Query is read-only: {err}"
    );
    let err = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = client
        .execute(&format!("INSERT INTO {table} (name) VALUES (NULL)"), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let wrong: Vec<Value> = vec![];
    let err = client.query("SELECT $1::int", &wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn remote_and_direct_mode_behave_the_same() {
    let broker = TestBroker::start().await;
    for (client, name) in [
        (remote(&broker).await, "remote"),
        (direct(&broker).await, "direct"),
    ] {
        assert_eq!(client.mode() == &Mode::Direct, name == "direct");
        object_round_trips(&client, name).await;
        failed_body_writes_nothing(&client, name).await;
        sql_round_trips(&client, &format!("items_{name}")).await;
    }
}

#[tokio::test]
async fn deadlines_bound_calls_in_both_modes() {
    let broker = TestBroker::start().await;
    for client in [remote(&broker).await, direct(&broker).await] {
        let quick = client.with_timeout(Duration::from_millis(300));
        let err = quick.query("SELECT pg_sleep(5)", &[]).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "a 300 ms deadline stops a 5 s query: {err}"
        );

        // Streams have no deadline by default; one per client copy.
        let key = format!("deadline/{:?}.bin", client.mode() == &Mode::Direct);
        let body = Bytes::from(binary_body(4096));
        let generous = client.with_stream_timeout(Duration::from_secs(60));
        generous
            .put_bytes(&key, PutOptions::default(), body.clone())
            .await
            .unwrap();
        assert_eq!(generous.get_bytes(&key, 1 << 20).await.unwrap(), body);
        let expired = client.with_stream_timeout(Duration::from_nanos(1));
        let err = expired.get_bytes(&key, 1 << 20).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "an expired stream deadline stops GetObject: {err}"
        );
        let err = expired
            .put_bytes(&key, PutOptions::default(), body.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
            "an expired stream deadline stops PutObject: {err}"
        );
        assert_eq!(client.get_bytes(&key, 1 << 20).await.unwrap(), body);
    }
}

#[tokio::test]
async fn the_token_travels_with_every_call() {
    let token = "s3cr3t-agent-token";
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agents.extractor]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\", prefixes = [\"incoming/\"] }}\ndatabase = {{ access = \"read\" }}\n",
            common::sha256(token.as_bytes())
        ),
    )
    .unwrap();
    let broker = TestBroker::start_with(|config| config.policy_file = Some(policy)).await;
    let anonymous = remote(&broker).await;
    assert_eq!(
        anonymous.query("SELECT 1", &[]).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let options = ClientOptions {
        token: Some(token.into()),
        ..ClientOptions::default()
    };
    let agent = BrokerClient::connect(&broker.url(), options.clone())
        .await
        .unwrap();
    assert_eq!(agent.query("SELECT 1 AS one", &[]).await.unwrap().len(), 1);
    assert_eq!(
        agent.head_object("incoming/none").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        agent.execute("SELECT 1", &[]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let put = agent
        .put_bytes("incoming/x", PutOptions::default(), "x")
        .await
        .unwrap_err();
    assert_eq!(put.code(), Code::PermissionDenied);
    // Refused while most of a large body is still to go out: the broker's
    // answer, not a transport error.
    let large = agent
        .put_bytes("incoming/large", PutOptions::default(), vec![7u8; 8 << 20])
        .await
        .unwrap_err();
    assert_eq!(large.code(), Code::PermissionDenied, "{large}");
    assert!(!format!("{options:?}").contains(token));
}

/// A second broker on the same backends, with its own audit file.
struct Replica {
    addr: SocketAddr,
    audit: std::path::PathBuf,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn replica(config: &ServeConfig, audit: std::path::PathBuf) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    replica_on(config, audit, listener)
}

fn replica_on(
    config: &ServeConfig,
    audit: std::path::PathBuf,
    listener: tokio::net::TcpListener,
) -> Replica {
    let mut config = config.clone();
    config.audit_log = Some(audit.clone());
    let addr = listener.local_addr().unwrap();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(resource_broker::server::serve(config, listener, async {
        let _ = stop.await;
    }));
    Replica {
        addr,
        audit,
        shutdown,
        task,
    }
}

fn audit_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[tokio::test]
async fn calls_spread_over_brokers_and_survive_one_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        TestBroker::start_with(|config| config.audit_log = Some(dir.path().join("a.jsonl"))).await;
    let second = replica(&broker.config, dir.path().join("b.jsonl")).await;
    let urls = format!("http://{},http://{}", broker.addr, second.addr);
    let client = BrokerClient::connect(&urls, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(client.addresses().len(), 2);
    client
        .execute("CREATE TABLE hits (n int)", &[])
        .await
        .unwrap();

    for _ in 0..20 {
        client.query("SELECT 1", &[]).await.unwrap();
    }
    let (a, b) = (
        audit_lines(&dir.path().join("a.jsonl")),
        audit_lines(&second.audit),
    );
    assert!(
        a >= 5 && b >= 5,
        "calls are spread over both brokers: {a} and {b}"
    );

    second.shutdown.send(()).unwrap();
    second.task.await.unwrap().unwrap();
    for n in 0..20 {
        client.query("SELECT 1", &[]).await.expect("reads go on");
        client
            .execute("INSERT INTO hits VALUES ($1)", &[n.into()])
            .await
            .expect("writes go on");
    }
    let rows = client
        .query("SELECT count(*) AS n FROM hits", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.first().unwrap().get::<i64>("n").unwrap(),
        20,
        "each write happened once"
    );
}

#[tokio::test]
async fn a_broker_that_restarts_is_reached_again_on_a_new_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start().await;
    let first = replica(&broker.config, dir.path().join("a.jsonl")).await;
    let addr = first.addr;
    let client = BrokerClient::connect(&format!("http://{addr}"), ClientOptions::default())
        .await
        .unwrap();
    client.query("SELECT 1", &[]).await.unwrap();

    first.shutdown.send(()).unwrap();
    first.task.await.unwrap().unwrap();
    let err = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "nothing listens: {err}");

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = replica_on(&broker.config, dir.path().join("b.jsonl"), listener);
    for _ in 0..3 {
        client
            .query("SELECT 1", &[])
            .await
            .expect("the client dials the broker again");
    }
    // Records may land just after the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while audit_lines(&second.audit) < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(audit_lines(&second.audit), 3, "all three calls reached it");
}

#[tokio::test]
async fn a_broker_that_never_answers_is_given_up_at_the_deadline() {
    // Accepts connections and never says a word: no HTTP/2 settings, no answer.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let options = ClientOptions {
        timeout: Some(Duration::from_millis(300)),
        ..ClientOptions::default()
    };
    let client = BrokerClient::connect(&format!("http://{addr}"), options)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = client.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "given up after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn keep_alive_pings_fail_the_calls_of_a_broker_gone_silent() {
    let broker = TestBroker::start().await;
    let proxy = common::proxy::Proxy::start(broker.addr).await.unwrap();
    let options = ClientOptions {
        timeout: None,
        keep_alive_interval: Duration::from_millis(200),
        keep_alive_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = BrokerClient::connect(&format!("http://{}", proxy.addr), options)
        .await
        .unwrap();
    client.query("SELECT 1", &[]).await.unwrap();

    // No FIN, no answer, no deadline: only the pings can end the call.
    proxy.freeze();
    let err = tokio::time::timeout(Duration::from_secs(10), client.query("SELECT 1", &[]))
        .await
        .expect("the unanswered ping ends the call")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    proxy.up();
    client
        .query("SELECT 1", &[])
        .await
        .expect("the next call dials again");
}

#[tokio::test]
async fn a_host_name_resolves_to_its_addresses() {
    let broker = TestBroker::start().await;
    let url = format!("http://localhost:{}", broker.addr.port());
    let client = BrokerClient::connect(&url, ClientOptions::default())
        .await
        .unwrap();
    assert!(
        client.addresses().contains(&broker.addr),
        "{:?}",
        client.addresses()
    );
    // localhost may also resolve to ::1, where nothing listens: calls still work.
    for _ in 0..6 {
        client.query("SELECT 1", &[]).await.unwrap();
    }
}

#[tokio::test]
async fn bad_urls_fail_at_connect_with_a_clear_message() {
    let err = BrokerClient::connect("ftp://broker", ClientOptions::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("http:// or https://"), "{err}");
    let err = BrokerClient::connect("http://no-such-host.invalid:8000", ClientOptions::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("no address found"), "{err}");
}

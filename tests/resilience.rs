//! Fault injection against the real broker: backends that go down, come
//! back or hang (through loopback proxies), deadlines that cancel work in
//! PostgreSQL, load shedding, metrics, and SIGTERM during a stream.

mod common;

use std::{process::Stdio, time::Duration};

use common::{BUCKET, TestBroker, binary_body, sha256};
use resource_broker::proto::{
    GetObjectRequest, HeadObjectRequest, PutObjectHeader, PutObjectRequest, QueryRequest,
    get_object_response, put_object_request,
};
use tonic::{Code, Request};

fn query(sql: &str) -> QueryRequest {
    QueryRequest {
        sql: sql.into(),
        ..Default::default()
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A deadline passed: the server said DEADLINE_EXCEEDED, or tonic's client,
/// which enforces the same `grpc-timeout`, gave up first.
fn assert_deadline(err: &tonic::Status) {
    let client_gave_up = err.code() == Code::Cancelled && err.message().contains("Timeout expired");
    assert!(
        err.code() == Code::DeadlineExceeded || client_gave_up,
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_database_opens_its_breaker_alone_and_recovers_by_itself() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.resilience.breaker_failures = 3;
        config.resilience.breaker_recovery = Duration::from_secs(1);
    })
    .await;
    let mut db = broker.database().await;
    let mut store = broker.object_store().await;

    proxies.postgres.down();
    broker.wait_for_health("broker.v1.Database", false).await;
    // Calls fail with UNAVAILABLE; once the breaker is open, without touching PostgreSQL.
    let mut saw_breaker = false;
    for _ in 0..20 {
        let err = db.query(query("SELECT 1")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        if err.message().contains("circuit breaker is open") {
            saw_breaker = true;
            break;
        }
    }
    assert!(saw_breaker, "the breaker never opened");
    // The object store is unaffected.
    broker.wait_for_health("broker.v1.ObjectStore", true).await;
    let head = store
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "missing".into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound);

    proxies.postgres.up();
    broker.wait_for_health("broker.v1.Database", true).await;
    db.query(query("SELECT 1"))
        .await
        .expect("a trial call closed the breaker");
}

#[tokio::test]
async fn a_failing_object_store_is_not_serving_while_the_database_serves() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.resilience.breaker_recovery = Duration::from_secs(1);
    })
    .await;
    let mut db = broker.database().await;
    let mut store = broker.object_store().await;

    proxies.s3.down();
    broker.wait_for_health("broker.v1.ObjectStore", false).await;
    broker.wait_for_health("", false).await;
    let err = store
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "k".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    broker.wait_for_health("broker.v1.Database", true).await;
    db.query(query("SELECT 1")).await.unwrap();

    proxies.s3.up();
    broker.wait_for_health("", true).await;
    let head = store
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "k".into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound, "S3 answers again");
}

#[tokio::test]
async fn a_hung_backend_trips_deadlines_not_threads() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.resilience.breaker_recovery = Duration::from_secs(1)
    })
    .await;
    let mut db = broker.database().await;
    let mut store = broker.object_store().await;
    proxies.postgres.hang();
    proxies.s3.hang();

    let started = std::time::Instant::now();
    // Pooled connections cut by the hang fail first (UNAVAILABLE); new ones hang.
    let mut last = None;
    for _ in 0..5 {
        let err = db
            .query(with_timeout(query("SELECT 1"), Duration::from_millis(300)))
            .await
            .unwrap_err();
        if err.code() != Code::Unavailable {
            last = Some(err);
            break;
        }
    }
    assert_deadline(&last.expect("a call reached the hung server"));
    let err = store
        .head_object(with_timeout(
            HeadObjectRequest {
                bucket: String::new(),
                key: "k".into(),
            },
            Duration::from_millis(300),
        ))
        .await
        .unwrap_err();
    assert!(
        err.code() == Code::Unavailable
            || err.code() == Code::DeadlineExceeded
            || err.code() == Code::Cancelled,
        "{err:?}"
    );
    // Generous bound: only checks that nothing waited for a backend timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The broker itself still answers.
    broker.wait_for_health("broker.v1.Database", false).await;
    proxies.postgres.up();
    proxies.s3.up();
    broker.wait_for_health("", true).await;
}

#[tokio::test]
async fn a_hung_database_cannot_hold_pool_slots_past_the_connect_timeout() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.postgres.pool_max = 2;
        config.postgres.pg_connect_timeout = Duration::from_millis(500);
        config.resilience.breaker_recovery = Duration::from_millis(200);
    })
    .await;
    let mut db = broker.database().await;
    proxies.postgres.hang();
    // Callers and probes make the pool open connections, which hang.
    for _ in 0..4 {
        let _ = db
            .query(with_timeout(query("SELECT 1"), Duration::from_millis(300)))
            .await;
    }
    broker.wait_for_health("broker.v1.Database", false).await;
    // New connections work again; the hung ones are never cut by the proxy.
    proxies.postgres.resume();
    broker.wait_for_health("broker.v1.Database", true).await;
    db.query(query("SELECT 1"))
        .await
        .expect("the pool opened new connections");
}

async fn active_sleeps(broker: &TestBroker) -> i64 {
    let client = broker.db.connect().await;
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_sleeps(broker: &TestBroker, wanted: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let active = active_sleeps(broker).await;
        if active == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{active} statements active, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deadlines_and_departed_clients_leave_no_orphan_statements() {
    let broker = TestBroker::start().await;
    let mut db = broker.database().await;

    let err = db
        .query(with_timeout(
            query("SELECT pg_sleep(30)"),
            Duration::from_millis(500),
        ))
        .await
        .unwrap_err();
    assert_deadline(&err);
    wait_for_sleeps(&broker, 0).await;

    // A client that goes away without a deadline: its statement is cancelled too.
    let call = tokio::spawn({
        let mut db = db.clone();
        async move { db.query(query("SELECT pg_sleep(30)")).await }
    });
    wait_for_sleeps(&broker, 1).await;
    call.abort();
    wait_for_sleeps(&broker, 0).await;
    db.query(query("SELECT 1"))
        .await
        .expect("the pool still works");
}

#[tokio::test]
async fn overload_is_refused_with_resource_exhausted() {
    let broker =
        TestBroker::start_with(|config| config.resilience.max_in_flight_per_caller = 2).await;
    let db = broker.database().await;
    // No deadline to race: the slow calls end when the test drops them.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut db = db.clone();
            tokio::spawn(async move { db.query(query("SELECT pg_sleep(30)")).await })
        })
        .collect();
    wait_for_sleeps(&broker, 2).await;
    let err = db.clone().query(query("SELECT 1")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    for call in slow {
        call.abort();
    }
    wait_for_sleeps(&broker, 0).await;
    db.clone()
        .query(query("SELECT 1"))
        .await
        .expect("slots are released");
}

#[tokio::test]
async fn a_saturated_pool_and_sql_errors_never_open_the_database_breaker() {
    let broker = TestBroker::start_with(|config| {
        config.postgres.pool_min = 1;
        config.postgres.pool_max = 1;
        config.postgres.acquire_timeout = Duration::from_millis(200);
        config.resilience.breaker_failures = 2;
    })
    .await;
    let mut db = broker.database().await;
    // Answers, however many: a syntax error, a write through Query, a missing table.
    for sql in [
        "SELEC 1",
        "CREATE TABLE t (x int)",
        "SELECT * FROM missing_table",
    ] {
        for _ in 0..3 {
            let err = db.query(query(sql)).await.unwrap_err();
            assert!(
                matches!(err.code(), Code::InvalidArgument | Code::PermissionDenied),
                "{sql}: {err:?}"
            );
        }
    }
    // The only connection is busy: callers time out waiting for it.
    let sleeper = tokio::spawn({
        let mut db = db.clone();
        async move { db.query(query("SELECT pg_sleep(30)")).await }
    });
    wait_for_sleeps(&broker, 1).await;
    for _ in 0..4 {
        let err = db.query(query("SELECT 1")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message()
                .contains("waiting for a free database connection"),
            "a busy pool, not an open breaker: {err:?}"
        );
    }
    sleeper.abort();
    wait_for_sleeps(&broker, 0).await;
    db.query(query("SELECT 1"))
        .await
        .expect("the breaker stayed closed");
}

/// A broker's services in-process: no client-side timer, so deadlines
/// observed are the server's own.
async fn in_process(broker: &TestBroker) -> resource_broker::server::InProcess {
    let backends = resource_broker::server::Backends::from_config(&broker.config)
        .await
        .unwrap();
    resource_broker::server::in_process(&backends)
}

#[tokio::test]
async fn calls_without_grpc_timeout_get_the_server_default_and_asked_ones_are_capped() {
    let broker = TestBroker::start_with(|config| {
        config.resilience.default_deadline = Duration::from_millis(500);
        config.resilience.stream_deadline = Duration::from_millis(500);
        config.resilience.max_deadline = Duration::from_millis(500);
        // Only the deadline can stop these statements.
        config.postgres.statement_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut db =
        resource_broker::proto::database_client::DatabaseClient::new(in_process(&broker).await);
    let guard = Duration::from_secs(120);
    let err = tokio::time::timeout(guard, db.query(query("SELECT pg_sleep(3600)")))
        .await
        .expect("the server's default deadline ends the call")
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let mut request = Request::new(query("SELECT pg_sleep(3600)"));
    request
        .metadata_mut()
        .insert("grpc-timeout", "10H".parse().unwrap());
    let err = tokio::time::timeout(guard, db.query(request))
        .await
        .expect("ten hours are lowered to the cap")
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    wait_for_sleeps(&broker, 0).await;
}

#[tokio::test]
async fn a_get_object_stream_outliving_its_deadline_ends_with_deadline_exceeded() {
    let broker = TestBroker::start().await;
    let body = binary_body(8 * 1024 * 1024);
    put(&mut broker.object_store().await, "slow.bin", &body).await;
    let mut store = resource_broker::proto::object_store_client::ObjectStoreClient::new(
        in_process(&broker).await,
    );
    let mut request = Request::new(GetObjectRequest {
        key: "slow.bin".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("grpc-timeout", "500m".parse().unwrap());
    let mut stream = store.get_object(request).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the info message");
    // A reader too slow for its deadline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (received, err) = read_to_error(&mut stream).await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(received < body.len());
}

#[tokio::test]
async fn an_object_store_cut_during_a_download_ends_it_with_unavailable_not_a_short_body() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        // Uploading the object's parts on a busy machine may take a while.
        config.s3.attempt_timeout = Duration::from_secs(30);
    })
    .await;
    let mut store = broker.object_store().await;
    // More than the sockets and windows between S3 and the client can hold.
    let body = binary_body(64 * 1024 * 1024);
    put(&mut store, "cut.bin", &body).await;
    let request = GetObjectRequest {
        key: "cut.bin".into(),
        ..Default::default()
    };
    let mut stream = store.get_object(request).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("the info message");
    stream.message().await.unwrap().expect("a first chunk");
    proxies.s3.down();
    let (received, err) = read_to_error(&mut stream).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("reading the body failed"), "{err:?}");
    assert!(received < body.len());
}

/// Reads a GetObject stream to the error that must end it: the body bytes
/// received before it, and the error. A stream that ends as if whole fails
/// the test.
async fn read_to_error(
    stream: &mut tonic::Streaming<resource_broker::proto::GetObjectResponse>,
) -> (usize, tonic::Status) {
    let mut received = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the download ends");
        match next {
            Ok(Some(message)) => {
                if let Some(get_object_response::Part::Chunk(chunk)) = message.part {
                    received += chunk.len();
                }
            }
            Ok(None) => panic!("the stream ended as if whole after {received} bytes"),
            Err(err) => return (received, err),
        }
    }
}

async fn put(
    store: &mut resource_broker::proto::object_store_client::ObjectStoreClient<
        tonic::transport::Channel,
    >,
    key: &str,
    body: &[u8],
) {
    let mut messages = vec![PutObjectRequest {
        part: Some(put_object_request::Part::Header(PutObjectHeader {
            key: key.into(),
            ..Default::default()
        })),
    }];
    messages.extend(body.chunks(1024 * 1024).map(|c| PutObjectRequest {
        part: Some(put_object_request::Part::Chunk(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
    store
        .put_object(futures::stream::iter(messages))
        .await
        .unwrap();
}

#[tokio::test]
async fn metrics_and_request_ids_are_exposed() {
    let broker = TestBroker::start().await;
    let mut db = broker.database().await;
    let mut request = Request::new(query("SELECT 1"));
    request
        .metadata_mut()
        .insert("x-request-id", "test-req-42".parse().unwrap());
    let response = db.query(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "test-req-42"
    );
    let generated = db.query(query("SELECT 1")).await.unwrap();
    assert!(
        generated.metadata().get("x-request-id").is_some(),
        "an id is generated when none is sent"
    );

    let text = http_get(&broker, "/metrics").await;
    for needle in [
        r#"broker_requests_total{method="/broker.v1.Database/Query",code="Ok"}"#,
        "broker_request_duration_seconds_bucket",
        "broker_requests_in_flight",
        r#"broker_backend_call_duration_seconds_count{backend="postgresql",operation="Query",outcome="ok"}"#,
        r#"broker_circuit_breaker_state{backend="s3"} 0"#,
        r#"broker_pg_pool_connections{state="idle"}"#,
        "broker_pg_pool_acquire_duration_seconds_bucket",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
}

async fn http_get(broker: &TestBroker, path: &str) -> String {
    let response = broker.http_get(path).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test]
async fn sigterm_lets_a_large_stream_finish_then_exits_cleanly() {
    // Objects and tables from an in-process broker; the process under test shares them.
    let helper = TestBroker::start().await;
    let body = binary_body(24 * 1024 * 1024);
    put(&mut helper.object_store().await, "big.bin", &body).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BROKER_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &helper.db.url)
        .env("S3_BUCKET", BUCKET)
        .env("S3_ENDPOINT_URL", &helper.s3.server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &helper.s3.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            &helper.s3.credentials.secret_access_key,
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("BROKER_DRAIN_TIMEOUT", "20s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let url = format!("http://127.0.0.1:{port}");
    let channel = loop {
        match tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut client = resource_broker::proto::object_store_client::ObjectStoreClient::new(channel);
    let mut stream = client
        .get_object(GetObjectRequest {
            key: "big.bin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    // Read the info and one chunk, then ask the broker to stop.
    for _ in 0..2 {
        if let Some(get_object_response::Part::Chunk(chunk)) =
            stream.message().await.unwrap().unwrap().part
        {
            received.extend_from_slice(&chunk);
        }
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    while let Some(message) = stream
        .message()
        .await
        .expect("the stream finishes despite SIGTERM")
    {
        if let Some(get_object_response::Part::Chunk(chunk)) = message.part {
            received.extend_from_slice(&chunk);
        }
    }
    assert_eq!(sha256(&received), sha256(&body));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "broker exited with {status}");
}

#[tokio::test]
async fn the_server_enforces_grpc_timeout_itself() {
    // In-process: no client-side timer, so the answer is the server's own.
    let broker = TestBroker::start().await;
    let mut db =
        resource_broker::proto::database_client::DatabaseClient::new(in_process(&broker).await);
    let mut request = Request::new(query("SELECT pg_sleep(30)"));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let err = db.query(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    wait_for_sleeps(&broker, 0).await;
}

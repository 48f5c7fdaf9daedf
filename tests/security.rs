//! Adversarial tests: tokens, grant boundaries, SQL bypass attempts under a
//! least-privilege database role, oversize input, policy reload, and a
//! marker password that must never appear anywhere.

mod common;

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use common::{TestBroker, TestDatabase, TestS3, postgres_server, test_config};
use resource_broker::{
    auth::token,
    proto::{
        DeleteObjectRequest, ExecuteRequest, GetObjectRequest, HeadObjectRequest,
        InitSchemaRequest, ListObjectsRequest, PutObjectHeader, PutObjectRequest, QueryRequest,
        TransactionRequest, Value, database_client::DatabaseClient,
        object_store_client::ObjectStoreClient, put_object_request, value,
    },
};
use tonic::{Code, Request, service::interceptor::InterceptedService, transport::Channel};

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";
const NOBODY: &str = "nobody-token-0123456789";
const EXPIRED: &str = "expired-token-0123456789";
const LISTED: &str = "listed-token-0123456789";

/// The statements the `listed` agent may run, and nothing else.
const LISTED_SELECT: &str = "SELECT n FROM notes WHERE n > $1 ORDER BY n";
const LISTED_INSERT: &str = "INSERT INTO notes (n) VALUES ($1)";

fn policy(reader_access: &str) -> String {
    format!(
        r#"
[agents.reader]
token_sha256 = "{}"
object_store = {{ access = "{reader_access}", prefixes = ["incoming/"] }}
database = {{ access = "read" }}

[agents.writer]
token_sha256 = "{}"
object_store = {{ access = "write", prefixes = ["incoming/", "processed/"] }}
database = {{ access = "write" }}

[agents.nobody]
token_sha256 = "{}"

[agents.retired]
token_sha256 = "{}"
token_expires = "2020-01-01T00:00:00Z"
database = {{ access = "read" }}

[agents.listed]
token_sha256 = "{}"
[agents.listed.database]
access = "write"
statements = [
    "{LISTED_SELECT}",
    """
    {LISTED_INSERT}
    """,
]
"#,
        token::hash(READER),
        token::hash(WRITER),
        token::hash(NOBODY),
        token::hash(EXPIRED),
        token::hash(LISTED)
    )
}

type Interceptor = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;
type Authed = InterceptedService<Channel, Interceptor>;

fn bearer(token: Option<&str>) -> Interceptor {
    let value = token.map(|t| format!("Bearer {t}"));
    Box::new(move |mut request: Request<()>| {
        if let Some(value) = &value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        Ok(request)
    })
}

async fn store(broker: &TestBroker, token: Option<&str>) -> ObjectStoreClient<Authed> {
    ObjectStoreClient::with_interceptor(broker.channel().await, bearer(token))
}

async fn database(broker: &TestBroker, token: Option<&str>) -> DatabaseClient<Authed> {
    DatabaseClient::with_interceptor(broker.channel().await, bearer(token))
}

async fn secured_broker() -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy("read")).unwrap();
    let broker = TestBroker::start_with(|config| config.policy_file = Some(path)).await;
    (broker, dir)
}

fn head(key: &str) -> HeadObjectRequest {
    HeadObjectRequest {
        bucket: String::new(),
        key: key.into(),
    }
}

async fn put(
    client: &mut ObjectStoreClient<Authed>,
    bucket: &str,
    key: &str,
) -> Result<(), tonic::Status> {
    let messages = vec![
        PutObjectRequest {
            part: Some(put_object_request::Part::Header(PutObjectHeader {
                bucket: bucket.into(),
                key: key.into(),
                ..Default::default()
            })),
        },
        PutObjectRequest {
            part: Some(put_object_request::Part::Chunk(Bytes::from_static(b"data"))),
        },
    ];
    client
        .put_object(futures::stream::iter(messages))
        .await
        .map(drop)
}

#[tokio::test]
async fn missing_wrong_and_malformed_tokens_are_unauthenticated() {
    let (broker, _dir) = secured_broker().await;
    for token in [None, Some("not-a-known-token"), Some(EXPIRED)] {
        let err = store(&broker, token)
            .await
            .head_object(head("incoming/x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        let err = database(&broker, token)
            .await
            .query(QueryRequest {
                sql: "SELECT 1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        if token == Some(EXPIRED) {
            assert!(err.message().contains("expired"), "{err:?}");
        }
    }
    let mut basic =
        ObjectStoreClient::with_interceptor(broker.channel().await, |mut r: Request<()>| {
            r.metadata_mut()
                .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
            Ok(r)
        });
    assert_eq!(
        basic
            .head_object(head("incoming/x"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Health and reflection stay open.
    broker.wait_for_health("", true).await;
}

#[tokio::test]
async fn every_grant_boundary_holds() {
    let (broker, _dir) = secured_broker().await;
    let mut reader = store(&broker, Some(READER)).await;
    let mut writer = store(&broker, Some(WRITER)).await;
    let mut nobody = store(&broker, Some(NOBODY)).await;

    put(&mut writer, "", "incoming/a.txt").await.unwrap();
    put(&mut writer, "", "processed/b.txt").await.unwrap();
    assert_eq!(
        put(&mut writer, "", "secret/c.txt")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // The reader reads its prefix and nothing else.
    reader.head_object(head("incoming/a.txt")).await.unwrap();
    let mut stream = reader
        .get_object(GetObjectRequest {
            key: "incoming/a.txt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    for key in [
        "processed/b.txt",
        "incomingX/a.txt",
        "incoming",
        "Incoming/a.txt",
        "incoming\u{2215}a.txt",
        "incoming%2Fa.txt",
    ] {
        let err = reader.head_object(head(key)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{key}: {err:?}");
    }
    // Path tricks never reach S3.
    for key in [
        "incoming/../processed/b.txt",
        "incoming/./a.txt",
        "incoming/..",
    ] {
        let err = reader.head_object(head(key)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}: {err:?}");
    }
    let list = |prefix: &str| ListObjectsRequest {
        prefix: prefix.into(),
        ..Default::default()
    };
    assert_eq!(
        reader.list_objects(list("")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        reader.list_objects(list("proc")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let page = reader
        .list_objects(list("incoming/"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.objects
            .iter()
            .map(|o| o.key.as_str())
            .collect::<Vec<_>>(),
        ["incoming/a.txt"]
    );

    // A read grant never writes.
    assert_eq!(
        put(&mut reader, "", "incoming/new.txt")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let delete = DeleteObjectRequest {
        bucket: String::new(),
        key: "incoming/a.txt".into(),
    };
    assert_eq!(
        reader
            .delete_object(delete.clone())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    reader
        .head_object(head("incoming/a.txt"))
        .await
        .expect("still there");

    // Another bucket is out of bounds for everyone without a grant for it.
    let other = HeadObjectRequest {
        bucket: "other-bucket".into(),
        key: "incoming/a.txt".into(),
    };
    assert_eq!(
        writer.head_object(other).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        put(&mut writer, "other-bucket", "incoming/x")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // No grant, no access.
    assert_eq!(
        nobody
            .head_object(head("incoming/a.txt"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut nobody_db = database(&broker, Some(NOBODY)).await;
    let err = nobody_db
        .query(QueryRequest {
            sql: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Database grants.
    let mut reader_db = database(&broker, Some(READER)).await;
    reader_db
        .query(QueryRequest {
            sql: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let execute = ExecuteRequest {
        sql: "CREATE TABLE t (i int)".into(),
        params: vec![],
    };
    assert_eq!(
        reader_db.execute(execute.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        reader_db
            .init_schema(InitSchemaRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    database(&broker, Some(WRITER))
        .await
        .execute(execute)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_allow_list_of_statements_admits_those_and_nothing_else() {
    let (broker, _dir) = secured_broker().await;
    let mut writer = database(&broker, Some(WRITER)).await;
    let mut listed = database(&broker, Some(LISTED)).await;
    let execute = |sql: &str, n: Option<i64>| ExecuteRequest {
        sql: sql.into(),
        params: n.into_iter().map(int).collect(),
    };
    writer
        .execute(execute("CREATE TABLE notes (n bigint)", None))
        .await
        .unwrap();

    // The listed statements run, each the way the policy wrote it or with
    // other whitespace around it.
    listed
        .execute(execute(LISTED_INSERT, Some(1)))
        .await
        .unwrap();
    listed
        .execute(execute(&format!("\n  {LISTED_INSERT} \t"), Some(2)))
        .await
        .unwrap();
    let rows = listed
        .query(QueryRequest {
            sql: LISTED_SELECT.into(),
            params: vec![int(0)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 2);

    // Anything else is refused before it reaches the database, by its
    // fingerprint and never its text.
    for sql in [
        "SELECT 1",
        "SELECT count(*) FROM notes",
        "DELETE FROM notes",
        &format!("{LISTED_INSERT} -- note"),
        &format!("{LISTED_INSERT}; DELETE FROM notes"),
        &LISTED_INSERT.to_lowercase(),
        &LISTED_INSERT.replace(' ', "  "),
    ] {
        let err = listed.execute(execute(sql, Some(3))).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{sql}: {err:?}");
        assert!(
            err.message().contains("agent listed may run only"),
            "{err:?}"
        );
        assert!(err.message().contains("sql:"), "{err:?}");
        assert!(!err.message().contains("notes"), "{err:?}");
        let err = listed
            .query(QueryRequest {
                sql: sql.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{sql}: {err:?}");
    }
    // A Transaction is refused whole when one of its statements is not
    // listed: the listed insert before it does not run either.
    let err = listed
        .transaction(TransactionRequest {
            statements: vec![
                execute(LISTED_INSERT, Some(4)),
                execute("DELETE FROM notes", None),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(count_notes(&mut writer).await, 2);
    listed
        .transaction(TransactionRequest {
            statements: vec![
                execute(LISTED_INSERT, Some(5)),
                execute(LISTED_INSERT, Some(6)),
            ],
        })
        .await
        .unwrap();
    assert_eq!(count_notes(&mut writer).await, 4);
    // InitSchema runs the broker's own statements, not the caller's: a
    // write grant still covers it.
    listed.init_schema(InitSchemaRequest {}).await.unwrap();
    // An agent without a list is not limited by another's.
    writer
        .execute(execute("DELETE FROM notes", None))
        .await
        .unwrap();
}

/// The rows in the allow-list test's table, counted by an agent without a list.
async fn count_notes(client: &mut DatabaseClient<Authed>) -> i64 {
    let response = client
        .query(QueryRequest {
            sql: "SELECT count(*) FROM notes".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match &response.rows[0].values[0].kind {
        Some(value::Kind::IntValue(n)) => *n,
        other => panic!("count(*) is an int: {other:?}"),
    }
}

fn int(n: i64) -> Value {
    Value {
        kind: Some(value::Kind::IntValue(n)),
    }
}

/// A broker connected as a least-privilege login role, as the README advises.
async fn broker_with_limited_role() -> (TestBroker, String) {
    let db = TestDatabase::create().await;
    let owner = db.connect().await;
    let role = format!("rb_app_{}", db.name.trim_start_matches("rb_test_"));
    owner
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('one'); \
             GRANT SELECT, INSERT, UPDATE, DELETE ON t TO {role}; GRANT USAGE ON SEQUENCE t_id_seq TO {role};"
        ))
        .await
        .unwrap();
    let s3 = TestS3::start().await;
    let mut config = test_config(&db, &s3);
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    config.postgres.database_url = Some(url);
    (config.postgres.pool_min, config.postgres.pool_max) = (1, 1);
    let broker = TestBroker::serve(db, s3, config).await;
    broker.wait_for_health("", true).await;
    (broker, role)
}

#[tokio::test]
async fn sql_bypass_attempts_through_query_fail_and_change_nothing() {
    let (broker, role) = broker_with_limited_role().await;
    let mut db = broker.database().await;
    let attempts = [
        "COMMIT; DROP TABLE t",
        "SELECT 1; DELETE FROM t",
        "SET TRANSACTION READ WRITE",
        "SELECT set_config('transaction_read_only', 'off', true), (SELECT count(*) FROM t)",
        "DO $$ BEGIN DELETE FROM t; END $$",
        "COPY t TO PROGRAM 'touch /tmp/resource-broker-pwned'",
        "COPY (SELECT 1) TO '/tmp/resource-broker-pwned'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT nextval('t_id_seq')",
        "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
        "SELECT * FROM t FOR UPDATE",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "CREATE TABLE pwned (i int)",
    ];
    for sql in attempts {
        let err = db
            .query(QueryRequest {
                sql: sql.into(),
                ..Default::default()
            })
            .await;
        let err = match err {
            Err(err) => err,
            Ok(rows) => panic!("{sql} succeeded: {rows:?}"),
        };
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{sql}: {err:?}"
        );
    }
    let check = broker.db.connect().await;
    let count: i64 = check
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "the table is unchanged");
    let seq: i64 = check
        .query_one("SELECT last_value FROM t_id_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seq, 1, "the sequence did not move");
    // Session settings changed by a Query do not outlive it on the (single) pooled connection.
    let sql = |sql: &str| QueryRequest {
        sql: sql.into(),
        ..Default::default()
    };
    db.query(sql("SELECT set_config('search_path', 'pwned', false)"))
        .await
        .unwrap();
    let settings = db
        .query(sql("SELECT current_setting('search_path')"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        settings.rows[0].values[0].kind,
        Some(resource_broker::proto::value::Kind::StringValue(
            "pwned".into()
        ))
    );
    // Writes cannot change the session for the next caller either.
    for sql in [
        "SET search_path = pwned",
        "RESET ALL",
        "BEGIN",
        "/* hidden */ set role postgres",
    ] {
        let err = db
            .execute(ExecuteRequest {
                sql: sql.into(),
                params: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{sql}: {err:?}");
    }
    assert!(!std::path::Path::new("/tmp/resource-broker-pwned").exists());
    drop(broker);
    let admin = postgres_server().await;
    let _ = admin; // the role is dropped with its database's objects below
    let client = {
        let (client, connection) = tokio_postgres::connect(&admin.admin_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = client
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}

#[tokio::test]
async fn oversize_input_is_refused_cleanly() {
    let (broker, _dir) = secured_broker().await;
    let mut writer = store(&broker, Some(WRITER)).await;
    let long_key = format!("incoming/{}", "k".repeat(1100));
    assert_eq!(
        writer
            .head_object(head(&long_key))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let header = PutObjectHeader {
        key: "incoming/meta".into(),
        metadata: HashMap::from([("big".to_string(), "v".repeat(4096))]),
        ..Default::default()
    };
    let messages = vec![PutObjectRequest {
        part: Some(put_object_request::Part::Header(header)),
    }];
    let err = writer
        .put_object(futures::stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut db = database(&broker, Some(WRITER)).await;
    let huge_sql = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    let err = db
        .query(QueryRequest {
            sql: huge_sql,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{}",
        err.message().chars().take(200).collect::<String>()
    );
    // A message over the transport limit is refused by the codec, not buffered.
    let giant = format!("SELECT '{}'", "x".repeat(5 * 1024 * 1024));
    let err = db
        .query(QueryRequest {
            sql: giant,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{:?}",
        err.code()
    );
    broker.wait_for_health("", true).await;
}

#[tokio::test]
async fn the_policy_reloads_on_sighup_and_a_bad_one_is_rejected() {
    let (broker, dir) = secured_broker().await;
    let path = dir.path().join("policy.toml");
    let mut reader = store(&broker, Some(READER)).await;
    assert_eq!(
        put(&mut reader, "", "incoming/r.txt")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let hup = || {
        let pid = std::process::id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    std::fs::write(&path, policy("write")).unwrap();
    hup();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while put(&mut reader, "", "incoming/r.txt").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(&path, "this is [not valid toml").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    put(&mut reader, "", "incoming/r2.txt")
        .await
        .expect("the last good policy stays in force");
}

#[tokio::test]
async fn a_marker_password_never_appears_in_any_output() {
    const MARKER: &str = "MARKER-s3cr3t-pw-7731";
    let s3 = TestS3::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens on port 9: every database call fails, with errors to log.
    let output_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .env("BROKER_LOG_FORMAT", "json")
        .env("BROKER_ADDR", format!("127.0.0.1:{port}"))
        .env("POSTGRES_HOST", "127.0.0.1")
        .env("POSTGRES_PORT", "9")
        .env("POSTGRES_PASSWORD", MARKER)
        .env("BROKER_PG_ACQUIRE_TIMEOUT", "300ms")
        .env("S3_BUCKET", common::BUCKET)
        .env("S3_ENDPOINT_URL", &s3.server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &s3.credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3.credentials.secret_access_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(output_file.reopen().unwrap())
        .stderr(output_file.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let channel = loop {
        match Channel::from_shared(url.clone()).unwrap().connect().await {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut db = DatabaseClient::new(channel);
    let mut seen = String::new();
    for sql in ["SELECT 1", "SELEC broken"] {
        let err = db
            .query(QueryRequest {
                sql: sql.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        seen.push_str(&format!("{err:?}"));
    }
    for path in ["/metrics", "/health"] {
        seen.push_str(&raw_http_get(port, path).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let logs = std::fs::read_to_string(output_file.path()).unwrap();
    assert!(
        logs.contains("database"),
        "the broker logged nothing useful:\n{logs}"
    );
    seen.push_str(&logs);
    assert!(!seen.contains(MARKER), "the password leaked:\n{seen}");

    // Debug output of the configuration redacts it too.
    let mut config = resource_broker::config::ServeConfig::from_env().unwrap();
    config.postgres.postgres_password = Some(MARKER.into());
    config.postgres.database_url = Some(format!("postgres://u:{MARKER}@h/db"));
    assert!(!format!("{config:?}").contains(MARKER));
}

async fn raw_http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn every_call_leaves_a_chained_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let (policy_path, audit_path) = (dir.path().join("policy.toml"), dir.path().join("audit.log"));
    std::fs::write(&policy_path, policy("read")).unwrap();
    let broker = TestBroker::start_with(|config| {
        config.policy_file = Some(policy_path);
        config.audit_log = Some(audit_path.clone());
    })
    .await;
    let mut writer = store(&broker, Some(WRITER)).await;
    let mut reader = store(&broker, Some(READER)).await;
    put(&mut writer, "", "incoming/audited.txt").await.unwrap();
    assert_eq!(
        put(&mut reader, "", "incoming/denied.txt")
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut db = database(&broker, Some(READER)).await;
    db.query(QueryRequest {
        sql: "SELECT 'hunter2' AS secret".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let _ = store(&broker, None)
        .await
        .head_object(head("incoming/audited.txt"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = std::fs::read_to_string(&audit_path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |agent: &str, method: &str| {
        records
            .iter()
            .find(|r| r["agent"] == agent && r["method"] == method)
            .unwrap_or_else(|| panic!("no record for {agent} {method} in:\n{text}"))
    };
    let put_record = find("writer", "/broker.v1.ObjectStore/PutObject");
    assert_eq!(put_record["target"], "incoming/audited.txt");
    assert_eq!(put_record["outcome"], "Ok");
    assert_eq!(
        find("reader", "/broker.v1.ObjectStore/PutObject")["outcome"],
        "PermissionDenied"
    );
    let query = find("reader", "/broker.v1.Database/Query");
    assert!(query["target"].as_str().unwrap().starts_with("sql:SELECT "));
    assert_eq!(
        find("unauthenticated", "/broker.v1.ObjectStore/HeadObject")["outcome"],
        "Unauthenticated"
    );
    assert!(
        !text.contains("hunter2"),
        "statement text must not reach the audit trail"
    );

    let verify = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["audit", "verify"])
            .arg(path)
            .output()
            .unwrap()
    };
    let ok = verify(&audit_path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(
        &audit_path,
        text.replacen("\"Ok\"", "\"PermissionDenied\"", 1),
    )
    .unwrap();
    let tampered = verify(&audit_path);
    assert!(!tampered.status.success());
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("changed"));
}

#[test]
fn broker_token_prints_a_policy_entry_that_parses_and_refuses_bad_names() {
    let run = |agent: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["token", "--agent", agent])
            .output()
            .unwrap()
    };
    let ok = run("extractor.ca-a2a.local");
    assert!(ok.status.success());
    let stdout = String::from_utf8(ok.stdout).unwrap();
    let token = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("rbk_"))
        .expect("the token is printed");
    let entry = &stdout[stdout.find("[agents.").expect("a policy entry")..];
    let policy = resource_broker::auth::Policy::parse(entry).unwrap();
    let (name, _) = policy.by_token_hash(&token::hash(token)).unwrap();
    assert_eq!(name, "extractor.ca-a2a.local");

    for bad in ["", "two words", "x]\n[agents.admin", "quote\"d"] {
        let refused = run(bad);
        assert!(!refused.status.success(), "{bad:?}");
        assert!(refused.stdout.is_empty(), "{bad:?}: nothing printed");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--agent"),
            "{bad:?}"
        );
    }
}

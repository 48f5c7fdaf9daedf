//! What one caller's SQL can leave behind on a pooled connection, and what
//! one call may cost: through the real server, on a pool of one connection
//! so that the next call always gets the same session.

mod common;

use std::time::{Duration, Instant};

use common::TestBroker;
use futures::FutureExt;
use resource_broker::proto::{
    ExecuteRequest, ExecuteResponse, QueryRequest, QueryResponse, TransactionRequest, Value,
    database_client::DatabaseClient, value::Kind,
};
use tonic::{Code, transport::Channel};

type Client = DatabaseClient<Channel>;

async fn one_connection_broker(
    adjust: impl FnOnce(&mut resource_broker::config::ServeConfig),
) -> TestBroker {
    TestBroker::start_with(|c| {
        c.postgres.pool_min = 1;
        c.postgres.pool_max = 1;
        adjust(c);
    })
    .await
}

async fn query(
    client: &mut Client,
    sql: &str,
    max_rows: u32,
) -> Result<QueryResponse, tonic::Status> {
    client
        .query(QueryRequest {
            sql: sql.into(),
            params: vec![],
            max_rows,
        })
        .await
        .map(|r| r.into_inner())
}

async fn execute(client: &mut Client, sql: &str) -> Result<ExecuteResponse, tonic::Status> {
    client
        .execute(ExecuteRequest {
            sql: sql.into(),
            params: vec![],
        })
        .await
        .map(|r| r.into_inner())
}

fn text(response: &QueryResponse) -> String {
    match &response.rows[0].values[0].kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn int(response: &QueryResponse) -> i64 {
    match &response.rows[0].values[0].kind {
        Some(Kind::IntValue(i)) => *i,
        other => panic!("expected an int, got {other:?}"),
    }
}

/// Advisory locks held in this test's database by anyone but the admin
/// connection asking (tests run side by side, each in its own database,
/// and pg_locks shows the whole cluster's).
async fn advisory_locks(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_write_leaves_no_session_state_for_the_next_caller() {
    let broker = one_connection_broker(|_| {}).await;
    let mut db = broker.database().await;
    let admin = broker.db.connect().await;
    execute(&mut db, "CREATE TABLE documents (id int)")
        .await
        .unwrap();
    execute(&mut db, "INSERT INTO documents VALUES (1), (2)")
        .await
        .unwrap();
    let search_path = text(
        &query(&mut db, "SELECT current_setting('search_path')", 0)
            .await
            .unwrap(),
    );

    for sql in [
        "SELECT set_config('search_path', 'pg_temp', false)",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT 1 FROM pg_advisory_lock(42)",
        "CREATE TEMP TABLE documents (id int)",
    ] {
        execute(&mut db, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(
        text(
            &query(&mut db, "SELECT current_setting('search_path')", 0)
                .await
                .unwrap()
        ),
        search_path
    );
    assert_eq!(
        text(
            &query(&mut db, "SELECT current_setting('statement_timeout')", 0)
                .await
                .unwrap()
        ),
        "30s"
    );
    assert_eq!(advisory_locks(&admin).await, 0);
    // The temporary table is gone: the real one answers.
    assert_eq!(
        int(&query(&mut db, "SELECT count(*) FROM documents", 0)
            .await
            .unwrap()),
        2
    );

    // Hidden transaction control is refused, not run.
    for sql in [
        "/* /* nested */ */ SET search_path = pg_temp",
        ";COMMIT",
        "/* a /* b */ */ BEGIN",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    ] {
        let status = execute(&mut db, sql).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
    }
    let status = db
        .transaction(TransactionRequest {
            statements: vec![
                ExecuteRequest {
                    sql: "INSERT INTO documents VALUES (3)".into(),
                    params: vec![],
                },
                ExecuteRequest {
                    sql: "/* /* */ */ COMMIT".into(),
                    params: vec![],
                },
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        int(&query(&mut db, "SELECT count(*) FROM documents", 0)
            .await
            .unwrap()),
        2
    );
}

#[tokio::test]
async fn a_query_leaves_no_advisory_lock_behind() {
    let broker = one_connection_broker(|_| {}).await;
    let mut db = broker.database().await;
    let admin = broker.db.connect().await;
    query(&mut db, "SELECT 1 FROM pg_advisory_lock(7)", 0)
        .await
        .unwrap();
    assert_eq!(advisory_locks(&admin).await, 0);
    // And InitSchema, which takes its own lock, still goes through.
    db.init_schema(resource_broker::proto::InitSchemaRequest {})
        .await
        .unwrap();
}

/// Many callers' queries share the one connection, several cycles per
/// write: a statement that fails, one that changes the session and one
/// that takes an advisory lock leave nothing to the others in the batch.
#[tokio::test]
async fn queries_sharing_a_connection_answer_each_caller_alone() {
    let broker = one_connection_broker(|_| {}).await;
    let db = broker.database().await;
    let admin = broker.db.connect().await;
    const FAILS: &str = "SELECT 1 / (SELECT 0)";
    const CHANGES: &str = "SELECT set_config('search_path', 'nowhere', false)";
    const LOCKS: &str = "SELECT 1 FROM pg_advisory_lock(11)";
    const READS: &str = "SELECT current_setting('search_path')";
    const ADDS: &str = "SELECT 41 + 1";
    let default_path = text(&query(&mut db.clone(), READS, 0).await.unwrap());
    // Each runs once alone first: known to be quick, they may share batches.
    for sql in [CHANGES, LOCKS, ADDS] {
        query(&mut db.clone(), sql, 0).await.unwrap();
    }
    query(&mut db.clone(), FAILS, 0).await.unwrap_err();
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let sql = [FAILS, CHANGES, LOCKS, READS, ADDS][i % 5];
            let mut db = db.clone();
            tokio::spawn(async move { (sql, query(&mut db, sql, 0).await) })
        })
        .collect();
    for call in calls {
        match call.await.unwrap() {
            (FAILS, result) => {
                let err = result.unwrap_err();
                assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                assert!(err.message().contains("division by zero"), "{err:?}");
            }
            (READS, result) => assert_eq!(text(&result.unwrap()), default_path),
            (ADDS, result) => assert_eq!(int(&result.unwrap()), 42),
            (sql, result) => {
                result.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            }
        }
    }
    assert_eq!(advisory_locks(&admin).await, 0);
}

/// A batch is one protocol cycle: an error makes PostgreSQL skip the rest
/// of it. The jobs after a failing statement still get their own answers,
/// and the failed transaction's advisory lock is released.
#[tokio::test]
async fn a_statement_failing_inside_a_batch_costs_no_one_else_their_answer() {
    let broker = one_connection_broker(|_| {}).await;
    let db = broker.database().await;
    let admin = broker.db.connect().await;
    // Twenty texts, each known to be quick (it ran once alone), each
    // failing for a divisor of 0 after taking a session advisory lock.
    let divide = |k: usize| format!("SELECT {k} + 100 / $1::int FROM pg_advisory_lock(7)");
    let call = |db: &Client, sql: String, divisor: i64| {
        let mut db = db.clone();
        async move {
            db.query(QueryRequest {
                sql,
                params: vec![Value {
                    kind: Some(Kind::IntValue(divisor)),
                }],
                max_rows: 0,
            })
            .await
            .map(|r| r.into_inner())
        }
    };
    for k in 0..20 {
        call(&db, divide(k), 1).await.unwrap();
    }
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (k, divisor) = (i % 20, i64::from(i % 7 != 0));
            tokio::spawn(
                call(&db, divide(k), divisor).then(move |r| async move { (k, divisor, r) }),
            )
        })
        .collect();
    let mut failed = 0;
    for call in calls {
        match call.await.unwrap() {
            (_, 0, result) => {
                let err = result.unwrap_err();
                assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                assert!(err.message().contains("division by zero"), "{err:?}");
                failed += 1;
            }
            (k, _, result) => assert_eq!(int(&result.unwrap()), k as i64 + 100),
        }
    }
    assert_eq!(failed, (0..200).filter(|i| i % 7 == 0).count());
    assert_eq!(advisory_locks(&admin).await, 0);
}

#[tokio::test]
async fn results_are_capped_in_bytes_and_writes_in_rows() {
    let broker = one_connection_broker(|c| {
        c.limits.max_rows = 10;
        c.limits.max_result_mib = 1;
    })
    .await;
    let mut db = broker.database().await;
    let status = query(
        &mut db,
        "SELECT repeat('x', 300000) FROM generate_series(1, 8)",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("BROKER_MAX_RESULT_MIB"),
        "{status:?}"
    );

    execute(&mut db, "CREATE TABLE t (id int)").await.unwrap();
    let status = execute(
        &mut db,
        "INSERT INTO t SELECT generate_series(1, 11) RETURNING id",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("nothing was written"),
        "{status:?}"
    );
    assert_eq!(
        int(&query(&mut db, "SELECT count(*) FROM t", 0).await.unwrap()),
        0
    );
    // Within the cap it is written and returned.
    let done = execute(
        &mut db,
        "INSERT INTO t SELECT generate_series(1, 10) RETURNING id",
    )
    .await
    .unwrap();
    assert_eq!((done.rows_affected, done.rows.len()), (10, 10));
}

#[tokio::test]
async fn a_huge_result_is_cut_short_and_the_pool_carries_on() {
    let broker = one_connection_broker(|_| {}).await;
    let mut db = broker.database().await;
    // Small overflow: the rest is read and dropped, the connection stays.
    let few = query(&mut db, "SELECT generate_series(1, 5)", 2)
        .await
        .unwrap();
    assert_eq!((few.rows.len(), few.truncated), (2, true));
    // Far beyond: the statement is cancelled and the connection replaced,
    // instead of PostgreSQL producing a billion rows nobody reads.
    let started = Instant::now();
    let many = query(&mut db, "SELECT generate_series(1, 1000000000)", 3)
        .await
        .unwrap();
    assert_eq!((many.rows.len(), many.truncated), (3, true));
    for _ in 0..3 {
        assert_eq!(int(&query(&mut db, "SELECT 41 + 1", 0).await.unwrap()), 42);
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the billion-row statement ran to its timeout"
    );
}

#[tokio::test]
async fn a_long_deadline_never_raises_the_statement_timeout() {
    let broker =
        one_connection_broker(|c| c.postgres.statement_timeout = Duration::from_secs(1)).await;
    let mut db = broker.database().await;
    let mut request = tonic::Request::new(QueryRequest {
        sql: "SELECT pg_sleep(30)".into(),
        params: vec![],
        max_rows: 0,
    });
    request.set_timeout(Duration::from_secs(3600));
    let status = db.query(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_kept_statement_follows_its_table_when_columns_change() {
    let broker = one_connection_broker(|_| {}).await;
    let mut db = broker.database().await;
    execute(&mut db, "CREATE TABLE t (a int)").await.unwrap();
    execute(&mut db, "INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(
        query(&mut db, "SELECT * FROM t", 0)
            .await
            .unwrap()
            .columns
            .len(),
        1
    );
    execute(&mut db, "ALTER TABLE t ADD COLUMN b text DEFAULT 'x'")
        .await
        .unwrap();
    let after = query(&mut db, "SELECT * FROM t", 0).await.unwrap();
    assert_eq!(after.columns.len(), 2);
    assert_eq!(
        after.rows[0].values[1],
        Value {
            kind: Some(Kind::StringValue("x".into()))
        }
    );
    // The same for a write kept prepared.
    let insert = "INSERT INTO t SELECT * FROM t RETURNING *";
    assert_eq!(execute(&mut db, insert).await.unwrap().columns.len(), 2);
    execute(&mut db, "ALTER TABLE t DROP COLUMN b")
        .await
        .unwrap();
    assert_eq!(execute(&mut db, insert).await.unwrap().columns.len(), 1);
}

#[tokio::test]
async fn query_runs_as_the_read_role_when_one_is_configured() {
    let (db, s3) = (
        common::TestDatabase::create().await,
        common::TestS3::start().await,
    );
    let admin = db.connect().await;
    // Roles are cluster-wide: named after the test's own database.
    let role = format!("{}_ro", db.name);
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'read-secret'; \
             CREATE TABLE documents (id int); INSERT INTO documents VALUES (1); \
             GRANT SELECT ON documents TO {role}"
        ))
        .await
        .unwrap();
    let mut config = common::test_config(&db, &s3);
    config.postgres.postgres_read_user = Some(role.clone());
    config.postgres.postgres_read_password = Some("read-secret".into());
    let broker = TestBroker::serve(db, s3, config).await;
    broker.wait_for_health("broker.v1.Database", true).await;
    let mut client = broker.database().await;

    let who = query(&mut client, "SELECT current_user::text", 0)
        .await
        .unwrap();
    assert_eq!(text(&who), role);
    assert_eq!(
        text(
            &query(
                &mut client,
                "SELECT current_setting('default_transaction_read_only')",
                0
            )
            .await
            .unwrap()
        ),
        "on"
    );
    assert_eq!(
        int(&query(&mut client, "SELECT count(*) FROM documents", 0)
            .await
            .unwrap()),
        1
    );
    // Writes still go as the main user, which the read role cannot signal.
    execute(&mut client, "INSERT INTO documents VALUES (2)")
        .await
        .unwrap();
    let killed = query(
        &mut client,
        "SELECT count(*) FROM pg_stat_activity a WHERE a.usename <> current_user AND pg_terminate_backend(a.pid)",
        0,
    )
    .await;
    assert!(
        matches!(&killed, Err(s) if s.code() == Code::PermissionDenied),
        "{killed:?}"
    );
    drop(client);
    admin
        .batch_execute(&format!("REVOKE ALL ON documents FROM {role}"))
        .await
        .unwrap();
    drop(admin);
    broker.stop().await.unwrap();
    let server = common::postgres_server().await;
    let (cleanup, connection) = tokio_postgres::connect(&server.admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    cleanup
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
}

/// Query's own connections authenticate as PostgreSQL asks: SCRAM-SHA-256,
/// MD5 and a cleartext password (a private cluster whose pg_hba.conf
/// demands them of three reader roles); a wrong password is UNAVAILABLE
/// and names no secret.
#[tokio::test]
async fn query_connections_authenticate_with_scram_md5_and_cleartext_passwords() {
    use resource_broker::dev::postgres;
    let hba = "host all scram_ro 127.0.0.1/32 scram-sha-256\n\
               host all md5_ro 127.0.0.1/32 md5\n\
               host all plain_ro 127.0.0.1/32 password";
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("auth-pg");
    let server = match postgres::start_private_with_hba(&dir, 54339, hba).await {
        Ok(server) => server,
        Err(e) if std::env::var("CI").is_err() && format!("{e:#}").contains("initdb") => {
            eprintln!("skipped: {e:#}");
            return;
        }
        Err(e) => panic!("cannot start the private cluster: {e:#}"),
    };
    let name = format!("rb_auth_{}", std::process::id());
    let url = server.ensure_database(&name).await.unwrap();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for (role, encryption) in [
        ("scram_ro", "scram-sha-256"),
        ("md5_ro", "md5"),
        ("plain_ro", "scram-sha-256"),
    ] {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
                 SET password_encryption = '{encryption}'; \
                 ALTER ROLE {role} PASSWORD 'pw-{role}-marker'"
            ))
            .await
            .unwrap();
    }
    for (role, password, works) in [
        ("scram_ro", "pw-scram_ro-marker", true),
        ("md5_ro", "pw-md5_ro-marker", true),
        ("plain_ro", "pw-plain_ro-marker", true),
        ("scram_ro", "wrong-marker", false),
    ] {
        // (Its drop looks for the name on the shared server: nothing there.)
        let db = common::TestDatabase {
            name: name.clone(),
            url: url.clone(),
        };
        let s3 = common::TestS3::start().await;
        let mut config = common::test_config(&db, &s3);
        config.postgres.postgres_read_user = Some(role.into());
        config.postgres.postgres_read_password = Some(password.into());
        config.postgres.acquire_timeout = Duration::from_secs(3);
        let broker = TestBroker::serve(db, s3, config).await;
        let mut client = broker.database().await;
        let result = query(&mut client, "SELECT current_user::text", 0).await;
        if works {
            assert_eq!(text(&result.unwrap()), role, "{role}");
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.code(), Code::Unavailable, "{err:?}");
            assert!(!err.message().contains("marker"), "{}", err.message());
        }
    }
    drop(admin);
    let _ = server.drop_database(&name).await;
}

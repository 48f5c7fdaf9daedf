//! broker.v1.Database through the real server and the generated client,
//! against a real PostgreSQL database of the test's own.

mod common;

use common::TestBroker;
use resource_broker::proto::{
    ExecuteRequest, InitSchemaRequest, QueryRequest, QueryResponse, TransactionRequest, Value,
    database_client::DatabaseClient, value::Kind,
};
use tonic::{Code, transport::Channel};

type Client = DatabaseClient<Channel>;

fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}
fn int(i: i64) -> Value {
    v(Kind::IntValue(i))
}
fn text(s: &str) -> Value {
    v(Kind::StringValue(s.into()))
}
fn null() -> Value {
    v(Kind::NullValue(0))
}

async fn query(
    client: &mut Client,
    sql: &str,
    params: Vec<Value>,
) -> Result<QueryResponse, tonic::Status> {
    client
        .query(QueryRequest {
            sql: sql.into(),
            params,
            max_rows: 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn execute(client: &mut Client, sql: &str, params: Vec<Value>) -> Result<u64, tonic::Status> {
    client
        .execute(ExecuteRequest {
            sql: sql.into(),
            params,
        })
        .await
        .map(|r| r.into_inner().rows_affected)
}

async fn count(client: &mut Client, table: &str) -> i64 {
    let rows = query(client, &format!("SELECT count(*) FROM {table}"), vec![])
        .await
        .unwrap();
    match rows.rows[0].values[0].kind {
        Some(Kind::IntValue(n)) => n,
        ref other => panic!("count is {other:?}"),
    }
}

#[tokio::test]
async fn values_come_back_typed() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    let sql = "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, 1.5::float4 AS d, 2.25::float8 AS e, \
               12.3400::numeric AS f, 'x'::text AS g, 'y'::varchar AS h, '\\x00ff'::bytea AS i, true AS j, \
               '2024-05-06 07:08:09.123456+02'::timestamptz AS k, '2024-05-06 07:08:09'::timestamp AS l, \
               '2024-05-06'::date AS m, '07:08:09.5'::time AS n, '1 day 02:00:00'::interval AS o, \
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS p, '10.0.0.1'::inet AS q, \
               '{\"a\": [1, 2]}'::jsonb AS r, '{\"b\":1}'::json AS s, ARRAY[1,2,NULL]::int4[] AS t, \
               ARRAY[['a','b'],['c','d']] AS u, NULL::text AS w";
    let rows = query(&mut client, sql, vec![]).await.unwrap();
    let types: Vec<&str> = rows.columns.iter().map(|c| c.r#type.as_str()).collect();
    assert_eq!(
        types,
        [
            "int2",
            "int4",
            "int8",
            "float4",
            "float8",
            "numeric",
            "text",
            "varchar",
            "bytea",
            "bool",
            "timestamptz",
            "timestamp",
            "date",
            "time",
            "interval",
            "uuid",
            "inet",
            "jsonb",
            "json",
            "_int4",
            "_text",
            "text"
        ]
    );
    let values: Vec<Kind> = rows.rows[0]
        .values
        .iter()
        .map(|v| v.kind.clone().unwrap())
        .collect();
    let ts =
        |seconds: i64, nanos: i32| Kind::TimestampValue(prost_types::Timestamp { seconds, nanos });
    assert_eq!(
        values,
        [
            Kind::IntValue(1),
            Kind::IntValue(2),
            Kind::IntValue(3),
            Kind::DoubleValue(1.5),
            Kind::DoubleValue(2.25),
            Kind::NumericValue("12.3400".into()),
            Kind::StringValue("x".into()),
            Kind::StringValue("y".into()),
            Kind::BytesValue(vec![0, 255].into()),
            Kind::BoolValue(true),
            ts(1_714_972_089, 123_456_000),
            ts(1_714_979_289, 0),
            Kind::StringValue("2024-05-06".into()),
            Kind::StringValue("07:08:09.5".into()),
            Kind::StringValue("1 day 02:00:00".into()),
            Kind::StringValue("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            Kind::StringValue("10.0.0.1".into()),
            Kind::JsonValue("{\"a\": [1, 2]}".into()),
            Kind::JsonValue("{\"b\":1}".into()),
            Kind::JsonValue("[1,2,null]".into()),
            Kind::JsonValue("[[\"a\",\"b\"],[\"c\",\"d\"]]".into()),
            Kind::NullValue(0),
        ]
    );
}

/// Types the database defines (looked up in pg_type by Query's own
/// connections): enums and domains come back as their values, arrays of
/// them as JSON, and a type with no mapping is refused with a hint.
#[tokio::test]
async fn user_defined_types_come_back_typed() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    transaction(
        &mut client,
        &[
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
            "CREATE DOMAIN positive AS int4 CHECK (VALUE > 0)",
            "CREATE DOMAIN label AS text",
            "CREATE TYPE pair AS (a int4, b text)",
        ],
    )
    .await
    .unwrap();
    for _ in 0..2 {
        // Twice: the second time on connections that know the types.
        let rows = query(
            &mut client,
            "SELECT 'happy'::mood AS m, 7::positive AS p, 'x'::label AS l, \
             ARRAY['sad', 'ok']::mood[] AS ms, $1::mood = 'ok' AND $2::positive = 3 AS same",
            vec![text("ok"), int(3)],
        )
        .await
        .unwrap();
        let types: Vec<&str> = rows.columns.iter().map(|c| c.r#type.as_str()).collect();
        // PostgreSQL describes a domain's column by its base type.
        assert_eq!(types, ["mood", "int4", "text", "_mood", "bool"]);
        let values: Vec<Kind> = rows.rows[0]
            .values
            .iter()
            .map(|v| v.kind.clone().unwrap())
            .collect();
        assert_eq!(
            values,
            [
                Kind::StringValue("happy".into()),
                Kind::IntValue(7),
                Kind::StringValue("x".into()),
                Kind::JsonValue("[\"sad\",\"ok\"]".into()),
                Kind::BoolValue(true),
            ]
        );
    }
    let err = query(&mut client, "SELECT (1, 'a')::pair AS p", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("pair") && err.message().contains("::text"),
        "{}",
        err.message()
    );
    let err = query(&mut client, "SELECT $1::mood", vec![text("angry")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("angry"), "{}", err.message());
    // The connections are still good after both errors.
    assert_eq!(
        count(&mut client, "pg_type WHERE typname = 'mood'").await,
        1
    );
}

#[tokio::test]
async fn parameters_are_converted_to_the_statement_types() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(
        &mut client,
        "CREATE TABLE t (i int4, b bigint, f float8, n numeric(10,2), s text, d date, ts timestamptz, \
         j jsonb, u uuid, ok bool, raw bytea)",
        vec![],
    )
    .await
    .unwrap();
    let params = vec![
        int(7),
        int(1 << 40),
        v(Kind::DoubleValue(0.1)),
        v(Kind::NumericValue("12.34".into())),
        text("héllo"),
        text("2024-02-29"),
        v(Kind::TimestampValue(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000,
        })),
        v(Kind::JsonValue("{\"k\": [true, null]}".into())),
        text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        v(Kind::BoolValue(false)),
        v(Kind::BytesValue(vec![0, 1, 2, 254, 255].into())),
    ];
    let inserted = execute(
        &mut client,
        "INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
        params,
    )
    .await
    .unwrap();
    assert_eq!(inserted, 1);
    let rows = query(&mut client, "SELECT * FROM t WHERE i = $1", vec![int(7)])
        .await
        .unwrap();
    let values: Vec<Kind> = rows.rows[0]
        .values
        .iter()
        .map(|v| v.kind.clone().unwrap())
        .collect();
    assert_eq!(values[1], Kind::IntValue(1 << 40));
    assert_eq!(values[2], Kind::DoubleValue(0.1));
    assert_eq!(values[3], Kind::NumericValue("12.34".into()));
    assert_eq!(values[4], Kind::StringValue("héllo".into()));
    assert_eq!(values[5], Kind::StringValue("2024-02-29".into()));
    assert_eq!(
        values[6],
        Kind::TimestampValue(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000
        })
    );
    assert_eq!(values[7], Kind::JsonValue("{\"k\": [true, null]}".into()));
    assert_eq!(values[9], Kind::BoolValue(false));
    assert_eq!(values[10], Kind::BytesValue(vec![0, 1, 2, 254, 255].into()));

    // A NULL parameter, and an unset Value, both mean NULL.
    execute(
        &mut client,
        "INSERT INTO t (i, s) VALUES ($1, $2)",
        vec![int(8), null()],
    )
    .await
    .unwrap();
    execute(
        &mut client,
        "INSERT INTO t (i, s) VALUES ($1, $2)",
        vec![int(9), Value { kind: None }],
    )
    .await
    .unwrap();
    let nulls = query(
        &mut client,
        "SELECT count(*) FROM t WHERE s IS NULL",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(nulls.rows[0].values[0].kind, Some(Kind::IntValue(2)));
}

#[tokio::test]
async fn bad_statements_and_parameters_are_invalid_arguments() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(
        &mut client,
        "CREATE TABLE t (i int4 PRIMARY KEY, s text NOT NULL)",
        vec![],
    )
    .await
    .unwrap();

    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        ("SELEC 1", vec![], "syntax error"),
        ("SELECT * FROM no_such_table", vec![], "does not exist"),
        ("SELECT nope FROM t", vec![], "does not exist"),
        (
            "SELECT * FROM t WHERE i = $1",
            vec![],
            "1 parameter(s) but 0",
        ),
        (
            "SELECT * FROM t WHERE i = $1",
            vec![int(1), int(2)],
            "1 parameter(s) but 2",
        ),
        (
            "SELECT * FROM t WHERE i = $1",
            vec![text("abc")],
            "invalid input syntax",
        ),
        (
            "SELECT * FROM t WHERE i = $1",
            vec![int(1 << 40)],
            "out of range",
        ),
        (
            "SELECT * FROM t WHERE s = $1",
            vec![v(Kind::BytesValue(vec![1].into()))],
            "bytea",
        ),
        ("", vec![], "empty"),
        ("SELECT 1; SELECT 2", vec![], "multiple commands"),
    ];
    for (sql, params, expected) in cases {
        let err = query(&mut client, sql, params).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{sql}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{sql}: {:?} should mention {expected:?}",
            err.message()
        );
    }
    let err = execute(
        &mut client,
        "INSERT INTO t VALUES (1, 'a'); DELETE FROM t",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        count(&mut client, "t").await,
        0,
        "nothing of a rejected batch may run"
    );
}

#[tokio::test]
async fn constraint_violations_map_to_their_codes() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(
        &mut client,
        "CREATE TABLE parent (id int PRIMARY KEY)",
        vec![],
    )
    .await
    .unwrap();
    execute(
        &mut client,
        "CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent(id), n int NOT NULL CHECK (n > 0))",
        vec![],
    )
    .await
    .unwrap();
    execute(&mut client, "INSERT INTO parent VALUES (1)", vec![])
        .await
        .unwrap();

    let duplicate = execute(&mut client, "INSERT INTO parent VALUES (1)", vec![])
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert!(
        duplicate.message().contains("duplicate key"),
        "{}",
        duplicate.message()
    );

    for sql in [
        "INSERT INTO child VALUES (1, 99, 1)",
        "INSERT INTO child VALUES (1, 1, NULL)",
        "INSERT INTO child VALUES (1, 1, -1)",
    ] {
        let err = execute(&mut client, sql, vec![]).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{sql}: {err:?}");
    }
    assert_eq!(count(&mut client, "child").await, 0);
}

#[tokio::test]
async fn query_never_writes() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(&mut client, "CREATE TABLE t (i int)", vec![])
        .await
        .unwrap();
    execute(&mut client, "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'INSERT INTO t VALUES (1) RETURNING 1'", vec![])
        .await
        .unwrap();

    let attempts = [
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (1) RETURNING i",
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING i) SELECT * FROM x",
        "COMMIT; INSERT INTO t VALUES (1)",
        "COMMIT",
        "SET TRANSACTION READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SELECT set_config('transaction_read_only', 'off', false), (SELECT count(*) FROM t)",
        "SELECT sneaky()",
        "CREATE TABLE u (i int)",
        "DELETE FROM t",
        "SELECT * FROM t FOR UPDATE",
        "DO $$ BEGIN INSERT INTO t VALUES (1); END $$",
    ];
    for sql in attempts {
        let err = query(&mut client, sql, vec![]).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{sql}: expected PERMISSION_DENIED or INVALID_ARGUMENT, got {err:?}"
        );
        // Whatever the statement did to its session, the next write through Query still fails.
        let after = query(&mut client, "INSERT INTO t VALUES (2) RETURNING i", vec![])
            .await
            .unwrap_err();
        assert_eq!(
            after.code(),
            Code::PermissionDenied,
            "after {sql}: {after:?}"
        );
    }
    assert_eq!(count(&mut client, "t").await, 0);
    let tables = query(
        &mut client,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'u'",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(tables.rows[0].values[0].kind, Some(Kind::IntValue(0)));
}

#[tokio::test]
async fn max_rows_is_enforced_while_reading() {
    let broker = TestBroker::start_with(|config| config.limits.max_rows = 1000).await;
    let mut client = broker.database().await;
    let ask = |max_rows| QueryRequest {
        sql: "SELECT g FROM generate_series(1, 5000000) g".into(),
        params: vec![],
        max_rows,
    };

    let capped = client.query(ask(10)).await.unwrap().into_inner();
    assert_eq!(capped.rows.len(), 10);
    assert!(capped.truncated);

    // 0 means the server's cap; asking for more than the cap gets the cap.
    let default = client.query(ask(0)).await.unwrap().into_inner();
    assert_eq!((default.rows.len(), default.truncated), (1000, true));
    let greedy = client.query(ask(1_000_000)).await.unwrap().into_inner();
    assert_eq!((greedy.rows.len(), greedy.truncated), (1000, true));

    let exact = client
        .query(QueryRequest {
            sql: "SELECT g FROM generate_series(1, 10) g".into(),
            params: vec![],
            max_rows: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((exact.rows.len(), exact.truncated), (10, false));
}

#[tokio::test]
async fn execute_returns_rows_and_counts() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(
        &mut client,
        "CREATE TABLE t (id serial PRIMARY KEY, s text)",
        vec![],
    )
    .await
    .unwrap();
    let response = client
        .execute(ExecuteRequest {
            sql: "INSERT INTO t (s) VALUES ($1), ($2) RETURNING id, s".into(),
            params: vec![text("a"), text("b")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.rows_affected, 2);
    assert_eq!(
        response
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "s"]
    );
    assert_eq!(
        response.rows[1].values[1].kind,
        Some(Kind::StringValue("b".into()))
    );
    assert_eq!(
        execute(&mut client, "UPDATE t SET s = 'c'", vec![])
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn transactions_are_all_or_nothing() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    execute(&mut client, "CREATE TABLE t (id int PRIMARY KEY)", vec![])
        .await
        .unwrap();
    let statement = |sql: &str, params: Vec<Value>| ExecuteRequest {
        sql: sql.into(),
        params,
    };

    let ok = client
        .transaction(TransactionRequest {
            statements: vec![
                statement("INSERT INTO t VALUES ($1)", vec![int(1)]),
                statement("INSERT INTO t VALUES ($1) RETURNING id", vec![int(2)]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.results.len(), 2);
    assert_eq!(
        ok.results[1].rows[0].values[0].kind,
        Some(Kind::IntValue(2))
    );

    let failed = client
        .transaction(TransactionRequest {
            statements: vec![
                statement("INSERT INTO t VALUES ($1)", vec![int(3)]),
                statement("INSERT INTO t VALUES ($1)", vec![int(1)]),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::AlreadyExists);
    assert!(
        failed.message().starts_with("statement 2:"),
        "{}",
        failed.message()
    );
    assert_eq!(
        count(&mut client, "t").await,
        2,
        "the first statement was rolled back"
    );

    let empty = client
        .transaction(TransactionRequest { statements: vec![] })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn init_schema_is_idempotent_and_concurrent_safe() {
    let broker = TestBroker::start().await;
    let client = broker.database().await;
    let calls = futures::future::join_all((0..4).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .init_schema(InitSchemaRequest {})
                .await
                .map(|r| r.into_inner().tables)
        }
    }))
    .await;
    for tables in calls {
        assert_eq!(tables.unwrap(), ["documents", "processing_logs"]);
    }
    let mut client = client;
    let again = client
        .init_schema(InitSchemaRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.tables, ["documents", "processing_logs"]);
    execute(
        &mut client,
        "INSERT INTO documents (s3_key, document_type, file_name) VALUES ('a/b.pdf', 'pdf', 'b.pdf')",
        vec![],
    )
    .await
    .unwrap();
    let duplicate = execute(
        &mut client,
        "INSERT INTO documents (s3_key, document_type, file_name) VALUES ('a/b.pdf', 'pdf', 'b.pdf')",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
}

async fn transaction(client: &mut Client, statements: &[&str]) -> Result<(), tonic::Status> {
    client
        .transaction(TransactionRequest {
            statements: statements
                .iter()
                .map(|sql| ExecuteRequest {
                    sql: (*sql).into(),
                    params: vec![],
                })
                .collect(),
        })
        .await
        .map(drop)
}

/// Errors the caller's SQL or data caused, beyond syntax and constraints:
/// each gets its own code and PostgreSQL's message, never a hidden INTERNAL.
#[tokio::test]
async fn every_caller_caused_sql_error_has_its_code_and_postgres_message() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    for sql in [
        "CREATE TABLE t (i int PRIMARY KEY)",
        "INSERT INTO t VALUES (1), (2)",
        "CREATE VIEW positive AS SELECT * FROM t WHERE i > 0 WITH CHECK OPTION",
        "CREATE SEQUENCE s",
        "CREATE FUNCTION one_of_t(wanted int) RETURNS int LANGUAGE plpgsql AS \
         $$DECLARE found int; BEGIN SELECT i INTO STRICT found FROM t WHERE i >= wanted; \
         RETURN found; END$$",
    ] {
        execute(&mut client, sql, vec![]).await.unwrap();
    }

    let reads = [
        (
            "SELECT (SELECT 1 UNION SELECT 2)",
            Code::InvalidArgument,
            "more than one row returned by a subquery",
        ),
        ("SELECT 1 / 0", Code::InvalidArgument, "division by zero"),
        // An error after rows were sent (999 rows, more than one read):
        // the caller gets the error, none of the rows.
        (
            "SELECT 10 / (1000 - n) FROM generate_series(1, 2000) n",
            Code::InvalidArgument,
            "division by zero",
        ),
        (
            "SELECT currval('s')",
            Code::FailedPrecondition,
            "not yet defined in this session",
        ),
        (
            "SELECT one_of_t(3)",
            Code::FailedPrecondition,
            "query returned no rows",
        ),
        (
            "SELECT one_of_t(1)",
            Code::FailedPrecondition,
            "query returned more than one row",
        ),
    ];
    for (sql, code, message) in reads {
        let err = query(&mut client, sql, vec![]).await.unwrap_err();
        assert_eq!(err.code(), code, "{sql}: {err:?}");
        assert!(err.message().contains(message), "{sql}: {err:?}");
    }

    let err = execute(&mut client, "INSERT INTO positive VALUES (-1)", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("check option"), "{err:?}");

    let err = transaction(&mut client, &["DO $$BEGIN COMMIT; END$$"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("invalid transaction termination"),
        "{err:?}"
    );

    let in_use = "DO $$DECLARE c CURSOR FOR SELECT * FROM t; r record; \
                  BEGIN OPEN c; FETCH c INTO r; ALTER TABLE t ADD COLUMN j int; END$$";
    let err = execute(&mut client, in_use, vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("being used by active queries"),
        "{err:?}"
    );

    // A row another session holds: NOWAIT fails at once, as a conflict to retry.
    let holder = broker.db.connect().await;
    holder
        .batch_execute("BEGIN; SELECT * FROM t WHERE i = 1 FOR UPDATE")
        .await
        .unwrap();
    let err = execute(
        &mut client,
        "UPDATE t SET i = i WHERE i = (SELECT i FROM t WHERE i = 1 FOR UPDATE NOWAIT)",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("could not obtain lock"), "{err:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();

    // The classes PostgreSQL seldom raises by itself, through RAISE.
    for (sqlstate, code) in [
        ("0B000", Code::InvalidArgument),
        ("21000", Code::InvalidArgument),
        ("2D000", Code::InvalidArgument),
        ("38001", Code::InvalidArgument),
        ("39P01", Code::InvalidArgument),
        ("3B001", Code::InvalidArgument),
        ("44000", Code::FailedPrecondition),
        ("55006", Code::FailedPrecondition),
        ("P0002", Code::FailedPrecondition),
        ("P0003", Code::FailedPrecondition),
        ("P0004", Code::FailedPrecondition),
        ("55P03", Code::Aborted),
        ("XX000", Code::Internal),
    ] {
        let sql = format!(
            "DO $$BEGIN RAISE EXCEPTION 'raised {sqlstate}' USING ERRCODE = '{sqlstate}'; END$$"
        );
        let err = execute(&mut client, &sql, vec![]).await.unwrap_err();
        assert_eq!(err.code(), code, "{sqlstate}: {err:?}");
        if code != Code::Internal {
            assert!(
                err.message().contains(&format!("raised {sqlstate}")),
                "{sqlstate}: {err:?}"
            );
        }
    }
    assert_eq!(count(&mut client, "t").await, 2, "nothing was written");
}

#[tokio::test]
async fn dates_and_intervals_come_back_in_postgres_text_form() {
    let broker = TestBroker::start().await;
    let mut client = broker.database().await;
    let response = query(
        &mut client,
        "SELECT date '0044-03-15 BC', date '10000-01-01', interval '-1 day 2 hours', \
         interval '1 year -2 mons -3 days 04:00'",
        vec![],
    )
    .await
    .unwrap();
    let texts: Vec<_> = response.rows[0]
        .values
        .iter()
        .map(|value| match &value.kind {
            Some(Kind::StringValue(s)) => s.as_str(),
            other => panic!("{other:?} is not text"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "0044-03-15 BC",
            "10000-01-01",
            "-1 days +02:00:00",
            "10 mons -3 days +04:00:00"
        ]
    );
}

//! The seed's HTTP API (`POST /call_tool`, `GET /health`) on the broker's
//! port, driven with a plain HTTP client and checked through gRPC: both
//! doorways must give the same results and the same error wording.

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use common::{TestBroker, binary_body};
use reqwest::StatusCode;
use resource_broker::proto::{
    self, ExecuteRequest, GetObjectRequest, HeadObjectRequest, InitSchemaRequest,
    ListObjectsRequest, PutObjectHeader, PutObjectRequest, QueryRequest, get_object_response,
    put_object_request,
};
use serde_json::{Value, json};

/// Calls a tool; returns the HTTP status and the JSON body.
async fn call(broker: &TestBroker, tool: &str, arguments: Value) -> (StatusCode, Value) {
    post(
        broker,
        json!({ "tool": tool, "arguments": arguments }).to_string(),
    )
    .await
}

async fn post(broker: &TestBroker, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/call_tool", broker.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /call_tool");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

async fn health(broker: &TestBroker) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{}/health", broker.url()))
        .await
        .expect("GET /health");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// The whole object through gRPC.
async fn grpc_get(broker: &TestBroker, key: &str) -> Result<Vec<u8>, tonic::Status> {
    let request = GetObjectRequest {
        key: key.into(),
        ..Default::default()
    };
    let mut stream = broker
        .object_store()
        .await
        .get_object(request)
        .await?
        .into_inner();
    let mut body = Vec::new();
    while let Some(message) = stream.message().await? {
        if let Some(get_object_response::Part::Chunk(chunk)) = message.part {
            body.extend_from_slice(&chunk);
        }
    }
    Ok(body)
}

async fn grpc_put(broker: &TestBroker, key: &str, body: &[u8]) {
    let header = PutObjectRequest {
        part: Some(put_object_request::Part::Header(PutObjectHeader {
            key: key.into(),
            ..Default::default()
        })),
    };
    let chunks = body.chunks(1024 * 1024).map(|chunk| PutObjectRequest {
        part: Some(put_object_request::Part::Chunk(Bytes::copy_from_slice(
            chunk,
        ))),
    });
    let messages: Vec<_> = std::iter::once(header).chain(chunks).collect();
    broker
        .object_store()
        .await
        .put_object(futures::stream::iter(messages))
        .await
        .unwrap();
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().expect("an {\"error\": ...} body")
}

#[tokio::test]
async fn object_tools_agree_with_grpc() {
    let broker = TestBroker::start().await;

    // Text: size in bytes, not characters.
    let text = "Facture n°42 — montant: 1 234,56 €";
    let (status, put) = call(
        &broker,
        "s3_put_object",
        json!({"key": "docs/facture.txt", "body": text, "content_type": "text/plain",
               "metadata": {"origin": "http"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["key"], "docs/facture.txt");
    assert_eq!(put["size"], text.len());
    assert!(!put["etag"].as_str().unwrap().contains('"'));
    assert_eq!(
        grpc_get(&broker, "docs/facture.txt").await.unwrap(),
        text.as_bytes()
    );

    let (status, got) = call(&broker, "s3_get_object", json!({"key": "docs/facture.txt"})).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["content"], text);
    assert_eq!(got["binary"], false);
    assert_eq!(got["size"], text.len());
    assert!(got.get("content_base64").is_none());

    // Binary: body_base64 in, content_base64 out, byte-exact both ways.
    let binary = binary_body(1048);
    let (status, put) = call(
        &broker,
        "s3_put_object",
        json!({"key": "docs/scan.pdf", "body_base64": BASE64.encode(&binary)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["size"], 1048);
    assert_eq!(grpc_get(&broker, "docs/scan.pdf").await.unwrap(), binary);

    let other = binary_body(3 * 1024 * 1024 + 7);
    grpc_put(&broker, "docs/large.bin", &other).await;
    let (status, got) = call(&broker, "s3_get_object", json!({"key": "docs/large.bin"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["binary"], true);
    assert_eq!(got["content"], Value::Null);
    assert_eq!(got["size"], other.len());
    let decoded = BASE64
        .decode(got["content_base64"].as_str().unwrap())
        .unwrap();
    assert!(
        decoded == other,
        "content_base64 must round-trip byte-exact"
    );

    // Metadata: the same as HeadObject.
    let (status, meta) = call(
        &broker,
        "get_object_metadata",
        json!({"key": "docs/facture.txt"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{meta}");
    let head = broker
        .object_store()
        .await
        .head_object(HeadObjectRequest {
            key: "docs/facture.txt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta["size"], head.size);
    assert_eq!(meta["etag"], head.etag);
    assert_eq!(meta["etag"], put_etag(&broker, "docs/facture.txt").await);
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["content_type"], head.content_type);
    assert_eq!(meta["metadata"], json!({"origin": "http"}));
    let modified = head.last_modified.unwrap();
    assert_eq!(
        meta["last_modified"],
        chrono::DateTime::from_timestamp(modified.seconds, modified.nanos as u32)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );

    // Listing: the same keys and sizes as ListObjects; limit pages.
    let (status, listed) = call(&broker, "s3_list_objects", json!({"prefix": "docs/"})).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let grpc_list = broker
        .object_store()
        .await
        .list_objects(ListObjectsRequest {
            prefix: "docs/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let from_http: Vec<(String, i64)> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_owned(),
                o["size"].as_i64().unwrap(),
            )
        })
        .collect();
    let from_grpc: Vec<(String, i64)> = grpc_list
        .objects
        .iter()
        .map(|o| (o.key.clone(), o.size))
        .collect();
    assert_eq!(from_http, from_grpc);
    assert_eq!(listed["count"], 3);
    assert!(
        listed["objects"][0]["last_modified"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let (_, page) = call(
        &broker,
        "s3_list_objects",
        json!({"prefix": "docs/", "limit": 2}),
    )
    .await;
    assert_eq!(page["count"], 2);
    let token = page["next_continuation_token"].as_str().unwrap();
    let (_, rest) = call(
        &broker,
        "s3_list_objects",
        json!({"prefix": "docs/", "limit": 2, "continuation_token": token}),
    )
    .await;
    assert_eq!(rest["count"], 1);
    assert_eq!(rest["next_continuation_token"], Value::Null);
}

/// The etag gRPC reports for `key`.
async fn put_etag(broker: &TestBroker, key: &str) -> String {
    broker
        .object_store()
        .await
        .head_object(HeadObjectRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .etag
}

/// Whether a JSON result cell says the same as a gRPC one.
fn same(grpc: &proto::Value, json: &Value) -> bool {
    use proto::value::Kind;
    match grpc.kind.as_ref() {
        None | Some(Kind::NullValue(_)) => json.is_null(),
        Some(Kind::BoolValue(b)) => json.as_bool() == Some(*b),
        Some(Kind::IntValue(i)) => json.as_i64() == Some(*i),
        Some(Kind::DoubleValue(d)) => json.as_f64() == Some(*d),
        Some(Kind::StringValue(s) | Kind::NumericValue(s)) => json.as_str() == Some(s),
        Some(Kind::BytesValue(b)) => {
            json.as_str() == Some(&resource_broker::database::bytea_hex(b))
        }
        Some(Kind::TimestampValue(t)) => json
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|d| {
                d.timestamp() == t.seconds && d.timestamp_subsec_nanos() == t.nanos as u32
            }),
        Some(Kind::JsonValue(text)) => {
            serde_json::from_str::<Value>(text).ok().as_ref() == Some(json)
        }
    }
}

#[tokio::test]
async fn database_tools_agree_with_grpc() {
    let broker = TestBroker::start().await;
    let mut grpc = broker.database().await;

    let (status, schema) = call(&broker, "postgres_init_schema", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{schema}");
    let tables = grpc
        .init_schema(InitSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .tables;
    assert_eq!(schema["tables"], json!(tables));
    assert_eq!(schema["status"], "success");

    let (status, created) = call(
        &broker,
        "postgres_execute",
        json!({"query": "CREATE TABLE t (id serial PRIMARY KEY, name text UNIQUE, \
               at timestamptz, day date, amount numeric(10,2), ref uuid, doc jsonb, \
               raw bytea, ratio float8, ok bool, tags text[])"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["rows_affected"], 0);

    let (status, inserted) = call(
        &broker,
        "postgres_execute",
        json!({
            "query": "INSERT INTO t (name, at, day, amount, ref, doc, raw, ratio, ok, tags) \
                      VALUES ($1, $2, $3, $4, $5, $6, decode($7, 'hex'), $8, $9, $10) RETURNING id, at",
            "params": ["facture", "2026-01-02T12:00:00.25+01:00", "2026-01-02", 1234.5,
                       "6f1c1e0e-8a4b-4c4e-9f0a-2b1d3c4e5f60", {"pages": 3, "lang": "fr"},
                       "00ff10", 0.75, true, "{a,b}"],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{inserted}");
    assert_eq!(inserted["rows_affected"], 1);
    assert_eq!(inserted["rows"][0]["id"], 1);
    assert_eq!(inserted["rows"][0]["at"], "2026-01-02T11:00:00.250Z");
    call(
        &broker,
        "postgres_execute",
        json!({"query": "INSERT INTO t (name) VALUES ($1)", "params": [null]}),
    )
    .await;

    let sql = "SELECT id, name, at, day, amount, ref, doc, raw, ratio, ok, tags FROM t ORDER BY id";
    let (status, queried) = call(&broker, "postgres_query", json!({"query": sql})).await;
    assert_eq!(status, StatusCode::OK, "{queried}");
    assert_eq!(queried["count"], 2);
    let row = &queried["rows"][0];
    assert_eq!(row["name"], "facture");
    assert_eq!(row["day"], "2026-01-02");
    assert_eq!(row["amount"], "1234.50");
    assert_eq!(row["ref"], "6f1c1e0e-8a4b-4c4e-9f0a-2b1d3c4e5f60");
    assert_eq!(row["doc"], json!({"pages": 3, "lang": "fr"}));
    assert_eq!(row["raw"], "\\x00ff10");
    assert_eq!(row["ratio"], 0.75);
    assert_eq!(row["ok"], true);
    assert_eq!(row["tags"], json!(["a", "b"]));
    assert_eq!(queried["rows"][1]["at"], Value::Null);

    let grpc_rows = grpc
        .query(QueryRequest {
            sql: sql.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = grpc_rows.columns.iter().map(|c| c.name.as_str()).collect();
    let http_columns: Vec<&str> = queried["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, http_columns);
    assert_eq!(grpc_rows.rows.len(), 2);
    for (grpc_row, http_row) in grpc_rows
        .rows
        .iter()
        .zip(queried["rows"].as_array().unwrap())
    {
        for (column, value) in names.iter().zip(&grpc_row.values) {
            assert!(
                same(value, &http_row[*column]),
                "{column}: gRPC {value:?} vs HTTP {}",
                http_row[*column]
            );
        }
    }

    // Parameters of every JSON type.
    let (status, typed) = call(
        &broker,
        "postgres_query",
        json!({"query": "SELECT $1::int8 AS i, $2::float8 AS f, $3::bool AS b, $4::text AS s, \
                         $5::jsonb AS j, $6::numeric AS n, $7::text AS z",
               "params": [42, 2.5, false, "été", {"k": [1, 2]}, 18446744073709551615u64, null]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{typed}");
    assert_eq!(
        typed["rows"][0],
        json!({"i": 42, "f": 2.5, "b": false, "s": "été", "j": {"k": [1, 2]},
               "n": "18446744073709551615", "z": null})
    );
}

#[tokio::test]
async fn request_errors_are_json_and_write_nothing() {
    let broker = TestBroker::start().await;

    let (status, body) = call(&broker, "s3_delete_everything", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).starts_with("unknown tool 's3_delete_everything'"));

    let (status, body) = post(&broker, "{\"tool\": \"s3_get_object\", ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("not valid JSON"), "{body}");

    let (status, body) = post(&broker, "[1, 2]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!error_of(&body).is_empty());

    let (status, body) = call(&broker, "s3_get_object", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "missing argument 'key' for tool 's3_get_object'"
    );

    let (status, body) = call(&broker, "s3_list_objects", json!({"limit": "ten"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("argument 'limit'"), "{body}");

    let (status, body) = call(&broker, "s3_put_object", json!({"key": "x", "bdy": "typo"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("unknown argument 'bdy'"), "{body}");

    let (status, body) = call(
        &broker,
        "s3_put_object",
        json!({"key": "bad.bin", "body_base64": "not base64!"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("'body_base64'"), "{body}");
    let (status, body) = call(&broker, "s3_put_object", json!({"key": "bad.bin"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("'body'"), "{body}");
    assert_eq!(
        grpc_get(&broker, "bad.bin").await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // A missing key: 404 with gRPC's wording.
    let (status, body) = call(&broker, "get_object_metadata", json!({"key": "nope.pdf"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let grpc_error = grpc_get(&broker, "nope.pdf").await.unwrap_err();
    assert_eq!(error_of(&body), grpc_error.message());
    let (status, _) = call(&broker, "s3_get_object", json!({"key": "nope.pdf"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sql_errors_have_grpc_wording_and_write_nothing() {
    let broker = TestBroker::start().await;
    let mut grpc = broker.database().await;

    let (status, body) = call(&broker, "postgres_query", json!({"query": "SELEC 1"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let grpc_error = grpc
        .query(QueryRequest {
            sql: "SELEC 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_of(&body), grpc_error.message());

    call(
        &broker,
        "postgres_execute",
        json!({"query": "CREATE TABLE u (name text PRIMARY KEY)"}),
    )
    .await;
    let insert = json!({"query": "INSERT INTO u VALUES ($1)", "params": ["a"]});
    let (status, _) = call(&broker, "postgres_execute", insert.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&broker, "postgres_execute", insert).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let grpc_error = grpc
        .execute(ExecuteRequest {
            sql: "INSERT INTO u VALUES ('a')".into(),
            params: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(grpc_error.code(), tonic::Code::AlreadyExists);
    assert_eq!(error_of(&body), grpc_error.message());

    // A write through the read-only query tool is refused and changes nothing.
    let (status, body) = call(
        &broker,
        "postgres_query",
        json!({"query": "INSERT INTO u VALUES ('b') RETURNING name"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = call(
        &broker,
        "postgres_query",
        json!({"query": "CREATE TABLE sneaky AS SELECT 1 AS x"}),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");
    let db = broker.db.connect().await;
    let count: i64 = db
        .query_one("SELECT count(*) FROM u", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    let sneaky: Option<String> = db
        .query_one("SELECT to_regclass('sneaky')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sneaky, None);

    let (status, body) = call(
        &broker,
        "postgres_execute",
        json!({"query": "INSERT INTO u VALUES ($1)", "params": "c"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("argument 'params'"), "{body}");
}

#[tokio::test]
async fn health_follows_postgresql() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.resilience.breaker_recovery = Duration::from_secs(1);
    })
    .await;
    let proxy = &proxies.postgres;

    let (status, body) = health(&broker).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["services"], json!({"postgresql": "ok", "s3": "ok"}));
    let timestamp = body["timestamp"].as_str().expect("a timestamp");
    chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");

    proxy.down();
    broker.wait_for_health("broker.v1.Database", false).await;
    let (status, body) = health(&broker).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["services"]["postgresql"], "error");
    assert_eq!(body["services"]["s3"], "ok");
    let (status, body) = call(&broker, "postgres_query", json!({"query": "SELECT 1"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    proxy.up();
    broker.wait_for_health("", true).await;
    let (status, body) = health(&broker).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["services"]["postgresql"], "ok");
}

#[tokio::test]
async fn large_bodies_are_capped_with_a_json_error() {
    let broker = TestBroker::start().await;
    let limit = resource_broker::web::call_tool::MAX_OBJECT_BYTES;
    let big = vec![b'a'; limit + 1];
    grpc_put(&broker, "big.txt", &big).await;
    let (status, body) = call(&broker, "s3_get_object", json!({"key": "big.txt"})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&body).contains("GetObject"), "{body}");
    assert!(
        error_of(&body).contains("a tool call returns at most"),
        "worded for every doorway (MCP too): {body}"
    );

    // Over 1 MiB goes through (the seed failed there); over the cap does not.
    let two_mib = "b".repeat(2 * 1024 * 1024);
    let (status, put) = call(
        &broker,
        "s3_put_object",
        json!({"key": "two.txt", "body": two_mib}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["size"], 2 * 1024 * 1024);
    let (status, body) = call(
        &broker,
        "s3_put_object",
        json!({"key": "huge.txt", "body": String::from_utf8(big).unwrap()}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        grpc_get(&broker, "huge.txt").await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // A request body over the limit: axum's rejection, as JSON.
    let oversized = vec![b' '; resource_broker::web::call_tool::MAX_REQUEST_BYTES + 1];
    let (status, body) = post(&broker, oversized).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!error_of(&body).is_empty());
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let broker = TestBroker::start().await;
    let http = reqwest::Client::new();
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/call_tool", "POST"),
        (reqwest::Method::POST, "/health", "GET"),
        (reqwest::Method::DELETE, "/metrics", "GET"),
    ] {
        let response = http
            .request(method.clone(), format!("{}{path}", broker.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains(allowed), "{method} {path}: Allow: {allow}");
        let body: Value = response.json().await.expect("a JSON body");
        let error = error_of(&body);
        assert!(
            error.contains(method.as_str()) && error.contains(path),
            "{error}"
        );
    }
}

#[tokio::test]
async fn made_up_methods_are_refused_and_do_not_become_metric_labels() {
    let broker = TestBroker::start().await;
    let mut grpc = tonic::client::Grpc::new(broker.channel().await);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<HeadObjectRequest, proto::ObjectInfo, _>(
            tonic::Request::new(HeadObjectRequest::default()),
            http::uri::PathAndQuery::from_static("/broker.v1.ObjectStore/MadeUp4711"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "deny by default: {err:?}"
    );
    let (status, _) = call(&broker, "s3_list_objects", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = reqwest::get(format!("{}/metrics", broker.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("MadeUp4711"), "{metrics}");
    for label in [
        r#"method="other",code="PermissionDenied""#,
        r#"method="/call_tool",code="200""#,
        r#"method="/broker.v1.ObjectStore/ListObjects",code="Ok""#,
    ] {
        assert!(metrics.contains(label), "{label} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn call_tool_honours_the_policy_with_grpc_wording() {
    use resource_broker::{
        auth::token,
        client::{BrokerClient, ClientError, ClientOptions, PutOptions},
    };
    const READER: &str = "http-reader-token-0123456789";
    const WRITER: &str = "http-writer-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let (policy, audit) = (dir.path().join("policy.toml"), dir.path().join("audit.log"));
    std::fs::write(
        &policy,
        format!(
            "[agents.reader]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\" }}\n\n\
             [agents.writer]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"write\" }}\n",
            token::hash(READER),
            token::hash(WRITER)
        ),
    )
    .unwrap();
    let broker = TestBroker::start_with(|config| {
        config.policy_file = Some(policy);
        config.audit_log = Some(audit.clone());
    })
    .await;
    let call_as = |token: Option<&'static str>, arguments: Value| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/call_tool", broker.url()))
            .header("content-type", "application/json")
            .body(json!({"tool": "s3_put_object", "arguments": arguments}).to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let put = json!({"key": "incoming/a.txt", "body": "a"});

    let (status, body) = call_as(Some(READER), put.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let grpc_reader = BrokerClient::connect(
        &broker.url(),
        ClientOptions {
            token: Some(READER.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let Err(ClientError::Status(refused)) = grpc_reader
        .put_bytes("incoming/a.txt", PutOptions::default(), b"a".to_vec())
        .await
    else {
        panic!("a reader's put must fail with a status")
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_of(&body), refused.message());
    assert_eq!(
        grpc_get(&broker, "incoming/a.txt")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated,
        "the probe itself needs a token"
    );

    let (status, body) = call_as(None, put.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call_as(Some(WRITER), put).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The audit trail names the HTTP client's address, not "in-process".
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let http_put = records
        .iter()
        .find(|r| r["agent"] == "writer" && r["method"] == "/broker.v1.ObjectStore/PutObject")
        .expect("the writer's put is audited");
    assert_eq!(http_put["outcome"], "Ok");
    assert!(
        http_put["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{http_put}"
    );
}

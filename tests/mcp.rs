//! The MCP doorway with the official Rust SDK's client: over Streamable
//! HTTP at /mcp and over stdio (`broker mcp-stdio`), every tool and resource,
//! checked against the gRPC API on the same data (values, and error wording
//! word for word); results conform to the tools' output schemas; a bad
//! argument never reaches a backend; a read-only token sees only the read
//! tools and a prefix-limited grant only its prefixes; the endpoint keeps
//! no session, so any broker task answers any request.

mod common;

use std::{collections::HashMap, path::Path};

use common::{BUCKET, TestBroker, binary_body};
use resource_broker::{
    auth::token,
    client::{BrokerClient, ClientError, ClientOptions, PutOptions},
};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams, ResourceContents},
    service::{RunningService, ServiceError},
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

const WRITER: &str = "mcp-writer-token-0123456789";
const READER: &str = "mcp-reader-token-0123456789";
const INCOMING: &str = "mcp-incoming-token-0123456789";

type Client = RunningService<RoleClient, ()>;

async fn connect(broker: &TestBroker, token: Option<&str>) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", broker.url()));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP session")
}

async fn grpc_client(broker: &TestBroker, token: &str) -> BrokerClient {
    BrokerClient::connect(
        &broker.url(),
        ClientOptions {
            token: Some(token.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn call(client: &Client, tool: &'static str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .expect("tools/call")
}

fn structured(result: &CallToolResult) -> &Value {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result
        .structured_content
        .as_ref()
        .expect("structured result")
}

fn error_text(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    serde_json::to_value(&result.content).unwrap()[0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The gRPC status message of a failed client call.
fn grpc_message(error: ClientError) -> String {
    match error {
        ClientError::Status(status) => status.message().to_owned(),
        other => panic!("not a gRPC status: {other}"),
    }
}

/// The message of an MCP protocol error (resources/read, an unknown tool).
fn mcp_error_message(error: ServiceError) -> String {
    match error {
        ServiceError::McpError(data) => data.message.to_string(),
        other => panic!("not an MCP error: {other}"),
    }
}

async fn tool_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

/// Each listed tool's output schema, by name.
async fn output_schemas(client: &Client) -> HashMap<String, Value> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|tool| {
            let schema = tool.output_schema.expect("every tool declares its output");
            (tool.name.to_string(), Value::Object((*schema).clone()))
        })
        .collect()
}

/// Checks `value` against the parts of JSON Schema the output schemas use:
/// `type` (one or several), `required`, `properties`, `additionalProperties`
/// and `items`.
fn conforms(schema: &Value, value: &Value, at: &str) {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            other => panic!("{at}: bad type {other}"),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let integer_as_number = actual == "integer" && types.contains(&"number");
        assert!(
            types.contains(&actual) || integer_as_number,
            "{at}: {value} is {actual}, not {types:?}"
        );
    }
    match value {
        Value::Object(map) => {
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap();
                assert!(map.contains_key(key), "{at}: missing {key:?} in {value}");
            }
            for (key, item) in map {
                let at = format!("{at}.{key}");
                match (
                    schema.get("properties").and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(property), _) => conforms(property, item, &at),
                    (None, Some(Value::Bool(false))) => panic!("{at}: not in the schema"),
                    (None, Some(extra)) if extra.is_object() => conforms(extra, item, &at),
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    conforms(item_schema, item, &format!("{at}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

/// A tool's structured result, checked against the tool's output schema.
fn checked<'a>(
    schemas: &HashMap<String, Value>,
    tool: &str,
    result: &'a CallToolResult,
) -> &'a Value {
    let value = structured(result);
    conforms(&schemas[tool], value, tool);
    value
}

fn audit_records(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

struct Secured {
    broker: TestBroker,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A broker with a policy (a writer, a reader, and a reader of `incoming/`
/// only, without the database) and an audit file.
async fn secured_broker() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &policy,
        format!(
            "[agents.llm-writer]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"write\" }}\ndatabase = {{ access = \"write\" }}\n\n\
             [agents.llm-reader]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\" }}\ndatabase = {{ access = \"read\" }}\n\n\
             [agents.llm-incoming]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\", prefixes = [\"incoming/\"] }}\n",
            token::hash(WRITER),
            token::hash(READER),
            token::hash(INCOMING)
        ),
    )
    .unwrap();
    let broker = TestBroker::start_with(|config| {
        config.policy_file = Some(policy);
        config.audit_log = Some(audit.clone());
    })
    .await;
    Secured {
        broker,
        audit,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_and_resource_matches_the_grpc_api() {
    let Secured {
        broker,
        audit,
        _dir,
    } = secured_broker().await;
    let grpc = grpc_client(&broker, WRITER).await;
    let client = connect(&broker, Some(WRITER)).await;

    let info = client.peer_info().expect("initialized");
    assert_eq!(info.server_info.as_ref().unwrap().name, "resource-broker");
    assert!(
        info.instructions
            .as_deref()
            .unwrap_or_default()
            .contains("postgres_query")
    );
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 7, "a writer sees every tool");
    let query_tool = tools.iter().find(|t| t.name == "postgres_query").unwrap();
    assert_eq!(
        query_tool.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    assert!(
        query_tool.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("query"))
    );
    let schemas = output_schemas(&client).await;
    assert_eq!(schemas.len(), 7);

    // Objects: put through MCP, read back through gRPC and MCP.
    let put = call(
        &client,
        "s3_put_object",
        json!({"key": "incoming/note.txt", "body": "héllo", "content_type": "text/plain"}),
    )
    .await;
    let put = checked(&schemas, "s3_put_object", &put);
    assert_eq!(put["size"], 6, "bytes, not characters");
    let head = grpc.head_object("incoming/note.txt").await.unwrap();
    assert_eq!(put["etag"], head.etag);
    assert_eq!(
        grpc.get_bytes("incoming/note.txt", 100).await.unwrap(),
        "héllo".as_bytes()
    );
    let binary = binary_body(1048);
    grpc.put_bytes(
        "incoming/scan.bin",
        PutOptions::content_type("application/octet-stream"),
        binary.clone(),
    )
    .await
    .unwrap();
    let got = call(
        &client,
        "s3_get_object",
        json!({"key": "incoming/scan.bin"}),
    )
    .await;
    let got = checked(&schemas, "s3_get_object", &got);
    assert_eq!(got["binary"], true);
    assert_eq!(got["content_type"], "application/octet-stream");
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(got["content_base64"].as_str().unwrap())
            .unwrap(),
        binary,
        "binary-exact"
    );
    let text = call(
        &client,
        "s3_get_object",
        json!({"key": "incoming/note.txt"}),
    )
    .await;
    assert_eq!(
        checked(&schemas, "s3_get_object", &text)["content"],
        "héllo"
    );
    let listed = call(&client, "s3_list_objects", json!({"prefix": "incoming/"})).await;
    let listed = checked(&schemas, "s3_list_objects", &listed);
    let keys: Vec<&str> = listed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["incoming/note.txt", "incoming/scan.bin"]);
    assert_eq!(listed["objects"][1]["size"], 1048);
    let meta = call(
        &client,
        "get_object_metadata",
        json!({"key": "incoming/scan.bin"}),
    )
    .await;
    let meta = checked(&schemas, "get_object_metadata", &meta);
    let head = grpc.head_object("incoming/scan.bin").await.unwrap();
    assert_eq!(meta["size"], head.size);
    assert_eq!(meta["etag"], head.etag);
    assert_eq!(meta["content_type"], head.content_type);

    // Database: results equal gRPC's value by value.
    let init = call(&client, "postgres_init_schema", json!({})).await;
    let init = checked(&schemas, "postgres_init_schema", &init);
    assert!(
        init["tables"]
            .as_array()
            .unwrap()
            .contains(&json!("documents"))
    );
    let inserted = call(
        &client,
        "postgres_execute",
        json!({"query": "INSERT INTO documents (s3_key, document_type, file_name, file_size, validation_score, metadata) \
                         VALUES ($1, 'pdf', $2, 1048, 87.5, $3) RETURNING id",
               "params": ["incoming/a.pdf", "a.pdf", {"pages": 3, "lang": "fr"}]}),
    )
    .await;
    let inserted = checked(&schemas, "postgres_execute", &inserted);
    assert_eq!(inserted["rows_affected"], 1);
    let sql = "SELECT id, s3_key, file_size, validation_score, metadata, upload_date, processing_date \
               FROM documents WHERE s3_key = $1";
    let rows = call(
        &client,
        "postgres_query",
        json!({"query": sql, "params": ["incoming/a.pdf"]}),
    )
    .await;
    let rows = checked(&schemas, "postgres_query", &rows);
    let via_grpc = grpc
        .query(
            sql,
            &[resource_broker::client::Value::from("incoming/a.pdf")],
        )
        .await
        .unwrap();
    let grpc_rows: Vec<Value> = via_grpc
        .rows
        .iter()
        .map(|row| row.to_json().unwrap())
        .collect();
    assert_eq!(rows["rows"], json!(grpc_rows), "the same values");
    assert_eq!(rows["count"], 1);
    assert_eq!(rows["truncated"], false);
    assert_eq!(rows["rows"][0]["id"], inserted["rows"][0]["id"]);
    assert_eq!(
        rows["rows"][0]["metadata"],
        json!({"pages": 3, "lang": "fr"})
    );
    assert_eq!(rows["rows"][0]["validation_score"], 87.5);
    assert!(
        rows["rows"][0]["upload_date"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "timestamps serialise"
    );
    let columns: Vec<(String, String)> = via_grpc
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.r#type.clone()))
        .collect();
    let mcp_columns: Vec<(String, String)> = rows["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(mcp_columns, columns);

    // Errors: tool errors with the gRPC status's own wording.
    let missing = call(&client, "s3_get_object", json!({"key": "incoming/none"})).await;
    let grpc_missing = grpc_message(grpc.get_bytes("incoming/none", 100).await.unwrap_err());
    assert_eq!(error_text(&missing), grpc_missing);
    let write_via_query = call(
        &client,
        "postgres_query",
        json!({"query": "DELETE FROM documents"}),
    )
    .await;
    let grpc_refusal = grpc_message(grpc.query("DELETE FROM documents", &[]).await.unwrap_err());
    assert_eq!(error_text(&write_via_query), grpc_refusal);
    let syntax = call(&client, "postgres_query", json!({"query": "SELEC 1"})).await;
    let grpc_syntax = grpc_message(grpc.query("SELEC 1", &[]).await.unwrap_err());
    assert_eq!(error_text(&syntax), grpc_syntax);

    // A bad argument never reaches S3 or PostgreSQL: no broker.v1 call is
    // made, so no audit record is written.
    let before = audit_records(&audit);
    assert!(before > 0, "the calls above were audited");
    let bad = call(&client, "s3_get_object", json!({"kee": "x"})).await;
    assert_eq!(
        error_text(&bad),
        "unknown argument 'kee' for tool 's3_get_object' (accepted: key, bucket)"
    );
    for (tool, arguments) in [
        ("s3_get_object", json!({})),
        ("s3_list_objects", json!({"limit": "ten"})),
        (
            "s3_put_object",
            json!({"key": "incoming/bad.bin", "body_base64": "not base64!"}),
        ),
        (
            "postgres_execute",
            json!({"query": "DELETE FROM documents", "params": "x"}),
        ),
        ("postgres_query", json!({"sql": "SELECT 1"})),
    ] {
        let refused = call(&client, tool, arguments.clone()).await;
        assert!(
            error_text(&refused).contains("argument"),
            "{tool} {arguments}: {refused:?}"
        );
    }
    let unknown = client
        .call_tool(CallToolRequestParams::new("s3_delete_everything"))
        .await
        .unwrap_err();
    assert!(mcp_error_message(unknown).contains("s3_delete_everything"));
    assert_eq!(audit_records(&audit), before, "no backend call was made");
    assert_eq!(
        grpc.query("SELECT count(*) AS n FROM documents", &[])
            .await
            .unwrap()
            .rows[0]
            .get::<i64>("n")
            .unwrap(),
        1
    );

    // Resources: objects and tables.
    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    let object_uri = format!("s3://{BUCKET}/incoming/note.txt");
    assert!(uris.contains(&object_uri.as_str()), "{uris:?}");
    let table_uri = uris
        .iter()
        .find(|u| u.starts_with("postgres://") && u.ends_with("/documents"))
        .expect("documents table listed")
        .to_string();
    let read = client
        .read_resource(ReadResourceRequestParams::new(object_uri.clone()))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => assert_eq!(text, "héllo"),
        other => panic!("{other:?}"),
    }
    let table = client
        .read_resource(ReadResourceRequestParams::new(table_uri))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &table.contents[0] else {
        panic!()
    };
    let description: Value = serde_json::from_str(text).unwrap();
    assert!(
        description["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["column_name"] == "s3_key"),
        "{description}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_and_uses_only_the_read_tools() {
    let Secured { broker, _dir, .. } = secured_broker().await;
    let writer = grpc_client(&broker, WRITER).await;
    writer
        .put_bytes(
            "incoming/note.txt",
            PutOptions::content_type("text/plain"),
            b"for readers".to_vec(),
        )
        .await
        .unwrap();
    writer.init_schema().await.unwrap();
    let grpc_reader = grpc_client(&broker, READER).await;
    let reader = connect(&broker, Some(READER)).await;
    assert_eq!(
        tool_names(&reader).await,
        [
            "get_object_metadata",
            "postgres_query",
            "s3_get_object",
            "s3_list_objects"
        ]
    );
    let refused = call(
        &reader,
        "s3_put_object",
        json!({"key": "incoming/x", "body": "x"}),
    )
    .await;
    let grpc_refused = grpc_message(
        grpc_reader
            .put_bytes("incoming/x", PutOptions::default(), b"x".to_vec())
            .await
            .unwrap_err(),
    );
    assert_eq!(error_text(&refused), grpc_refused);
    assert!(grpc_refused.contains("may not write"), "{grpc_refused}");
    let refused = call(
        &reader,
        "postgres_execute",
        json!({"query": "DELETE FROM documents"}),
    )
    .await;
    let grpc_refused = grpc_message(
        grpc_reader
            .execute("DELETE FROM documents", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(error_text(&refused), grpc_refused);

    // A reader lists and reads resources.
    let resources = reader.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    let object_uri = format!("s3://{BUCKET}/incoming/note.txt");
    assert!(uris.contains(&object_uri.as_str()), "{uris:?}");
    assert!(
        uris.iter().any(|u| u.ends_with("/processing_logs")),
        "{uris:?}"
    );
    let read = reader
        .read_resource(ReadResourceRequestParams::new(object_uri))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => assert_eq!(text, "for readers"),
        other => panic!("{other:?}"),
    }
    reader.cancel().await.unwrap();

    let anonymous = connect(&broker, None).await;
    assert!(
        anonymous.list_all_tools().await.is_err(),
        "no token, no tools"
    );
    let refused = call(&anonymous, "s3_list_objects", json!({})).await;
    assert_eq!(
        error_text(&refused),
        "a bearer token is required (authorization: Bearer <token>)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_limited_grant_lists_and_reads_only_its_prefixes() {
    let Secured { broker, _dir, .. } = secured_broker().await;
    let writer = grpc_client(&broker, WRITER).await;
    for key in ["incoming/a.txt", "incoming-secret/b.txt", "secret/c.txt"] {
        writer
            .put_bytes(key, PutOptions::default(), key.as_bytes().to_vec())
            .await
            .unwrap();
    }
    writer.init_schema().await.unwrap();
    let client = connect(&broker, Some(INCOMING)).await;
    assert_eq!(
        tool_names(&client).await,
        ["get_object_metadata", "s3_get_object", "s3_list_objects"],
        "no database grant, no database tools"
    );

    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, [format!("s3://{BUCKET}/incoming/a.txt")]);
    let read = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "s3://{BUCKET}/incoming/a.txt"
        )))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => assert_eq!(text, "incoming/a.txt"),
        other => panic!("{other:?}"),
    }

    let grpc = grpc_client(&broker, INCOMING).await;
    for key in ["secret/c.txt", "incoming-secret/b.txt"] {
        let refused = client
            .read_resource(ReadResourceRequestParams::new(format!(
                "s3://{BUCKET}/{key}"
            )))
            .await
            .unwrap_err();
        let grpc_refused = grpc_message(grpc.get_bytes(key, 100).await.unwrap_err());
        assert_eq!(mcp_error_message(refused), grpc_refused, "{key}");
        let listed = call(&client, "s3_list_objects", json!({"prefix": key})).await;
        assert_eq!(error_text(&listed), grpc_refused, "{key}");
    }
    let everything = call(&client, "s3_list_objects", json!({})).await;
    assert!(
        error_text(&everything).contains("may only use keys under"),
        "{everything:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_mib_object_goes_through_mcp() {
    let broker = TestBroker::start().await;
    let client = connect(&broker, None).await;
    let body = "c".repeat(6 * 1024 * 1024);
    let put = call(
        &client,
        "s3_put_object",
        json!({"key": "big/six.txt", "body": body}),
    )
    .await;
    assert_eq!(structured(&put)["size"], 6 * 1024 * 1024);
    let got = call(&client, "s3_get_object", json!({"key": "big/six.txt"})).await;
    assert_eq!(
        structured(&got)["content"].as_str().map(str::len),
        Some(6 * 1024 * 1024)
    );
    client.cancel().await.unwrap();
}

/// One JSON-RPC message POSTed to `/mcp` with no session; returns the
/// response's `mcp-session-id` header (if any) and JSON body.
async fn post_mcp(url: &str, message: Value) -> (Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {WRITER}"))
        .body(message.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (session, response.json().await.expect("a JSON response"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_broker_task_answers_any_request() {
    let Secured { broker, _dir, .. } = secured_broker().await;
    // A second broker task on the same backends, as behind one DNS name.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(resource_broker::server::serve(
        broker.config.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let (session, initialized) = post_mcp(
        &broker.url(),
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await;
    assert_eq!(
        initialized["result"]["serverInfo"]["name"],
        "resource-broker"
    );
    assert_eq!(session, None, "no session to lose");
    let (_, listed) = post_mcp(
        &other,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(listed["result"]["tools"].as_array().unwrap().len(), 7);
    let (_, called) = post_mcp(
        &other,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "s3_list_objects", "arguments": {}}}),
    )
    .await;
    assert_eq!(
        called["result"]["structuredContent"]["count"], 0,
        "{called}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_stdio_serves_the_same_tools() {
    let broker = TestBroker::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .arg("mcp-stdio")
        .env("DATABASE_URL", &broker.db.url)
        .env("S3_BUCKET", BUCKET)
        .env("S3_ENDPOINT_URL", &broker.s3.server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &broker.s3.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            &broker.s3.credentials.secret_access_key,
        )
        .env("AWS_REGION", "eu-west-3");
    let client = ().serve(TokioChildProcess::new(command).unwrap()).await.expect("stdio session");
    assert_eq!(tool_names(&client).await.len(), 7);
    let put = call(
        &client,
        "s3_put_object",
        json!({"key": "stdio/a.txt", "body": "over stdio"}),
    )
    .await;
    assert_eq!(structured(&put)["size"], 10);
    let grpc = BrokerClient::connect(&broker.url(), ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(
        grpc.get_bytes("stdio/a.txt", 100).await.unwrap(),
        "over stdio".as_bytes()
    );
    client.cancel().await.unwrap();
}

//! The MCP doorway with the official Rust SDK's client: over Streamable
//! HTTP at /mcp and over stdio (`broker mcp-stdio`), every tool and resource,
//! checked against the gRPC API on the same data; a read-only token sees
//! only the read tools and is refused a write.

mod common;

use common::{BUCKET, TestBroker, binary_body};
use resource_broker::{
    auth::token,
    client::{BrokerClient, ClientOptions, PutOptions},
};
use rmcp::{
    RoleClient, ServiceExt,
    model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams, ResourceContents},
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

const WRITER: &str = "mcp-writer-token-0123456789";
const READER: &str = "mcp-reader-token-0123456789";

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

async fn secured_broker() -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[agents.llm-writer]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"write\" }}\ndatabase = {{ access = \"write\" }}\n\n\
             [agents.llm-reader]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\" }}\ndatabase = {{ access = \"read\" }}\n",
            token::hash(WRITER),
            token::hash(READER)
        ),
    )
    .unwrap();
    let broker = TestBroker::start_with(|config| config.policy_file = Some(policy)).await;
    (broker, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_and_resource_matches_the_grpc_api() {
    let (broker, _dir) = secured_broker().await;
    let grpc = BrokerClient::connect(
        &broker.url(),
        ClientOptions {
            token: Some(WRITER.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
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

    // Objects: put through MCP, read back through gRPC and MCP.
    let put = call(
        &client,
        "s3_put_object",
        json!({"key": "incoming/note.txt", "body": "héllo", "content_type": "text/plain"}),
    )
    .await;
    assert_eq!(structured(&put)["size"], 6, "bytes, not characters");
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
    let base64 = structured(&got)["content_base64"].as_str().unwrap();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(base64)
            .unwrap(),
        binary,
        "binary-exact"
    );
    let listed = call(&client, "s3_list_objects", json!({"prefix": "incoming/"})).await;
    let keys: Vec<&str> = structured(&listed)["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["incoming/note.txt", "incoming/scan.bin"]);
    let meta = call(
        &client,
        "get_object_metadata",
        json!({"key": "incoming/scan.bin"}),
    )
    .await;
    let head = grpc.head_object("incoming/scan.bin").await.unwrap();
    assert_eq!(structured(&meta)["size"], head.size);
    assert_eq!(structured(&meta)["etag"], head.etag);

    // Database.
    let init = call(&client, "postgres_init_schema", json!({})).await;
    assert!(
        structured(&init)["tables"]
            .as_array()
            .unwrap()
            .contains(&json!("documents"))
    );
    let inserted = call(
        &client,
        "postgres_execute",
        json!({"query": "INSERT INTO documents (s3_key, document_type, file_name) VALUES ($1, 'pdf', $2)", "params": ["incoming/a.pdf", "a.pdf"]}),
    )
    .await;
    assert_eq!(structured(&inserted)["rows_affected"], 1);
    let rows = call(&client, "postgres_query", json!({"query": "SELECT s3_key, upload_date FROM documents WHERE s3_key = $1", "params": ["incoming/a.pdf"]})).await;
    let via_grpc = grpc
        .query("SELECT s3_key FROM documents", &[])
        .await
        .unwrap();
    assert_eq!(structured(&rows)["count"], via_grpc.len());
    assert_eq!(structured(&rows)["rows"][0]["s3_key"], "incoming/a.pdf");
    assert!(
        structured(&rows)["rows"][0]["upload_date"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "timestamps serialise"
    );

    // Errors: tool errors with the gRPC status's own wording; nothing reaches the backends.
    let missing = call(&client, "s3_get_object", json!({"key": "incoming/none"})).await;
    let grpc_missing = grpc.head_object("incoming/none").await.unwrap_err();
    assert!(
        error_text(&missing).contains("incoming/none"),
        "{missing:?} vs {grpc_missing}"
    );
    let write_via_query = call(
        &client,
        "postgres_query",
        json!({"query": "DELETE FROM documents"}),
    )
    .await;
    assert!(!error_text(&write_via_query).is_empty());
    let bad = call(&client, "s3_get_object", json!({"kee": "x"})).await;
    assert!(
        error_text(&bad).contains("kee"),
        "unknown arguments are refused"
    );
    assert_eq!(
        grpc.query("SELECT count(*) AS n FROM documents", &[])
            .await
            .unwrap()
            .first()
            .unwrap()
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
    let (broker, _dir) = secured_broker().await;
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
    assert!(error_text(&refused).contains("may not"), "{refused:?}");
    let refused = call(
        &reader,
        "postgres_execute",
        json!({"query": "DELETE FROM documents"}),
    )
    .await;
    assert!(error_text(&refused).contains("may not"), "{refused:?}");
    reader.cancel().await.unwrap();

    let anonymous = connect(&broker, None).await;
    assert!(
        anonymous.list_all_tools().await.is_err(),
        "no token, no tools"
    );
    let refused = call(&anonymous, "s3_list_objects", json!({})).await;
    assert!(
        error_text(&refused).to_lowercase().contains("token"),
        "{refused:?}"
    );
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

//! The Model Context Protocol doorway (rmcp): the seed's tools and resources
//! for LLM agents, at `/mcp` on the broker's port (Streamable HTTP) and over
//! stdio (`broker mcp-stdio`). Every tool call runs the `/call_tool` tool of
//! the same name, which is a client of the in-process broker.v1 services:
//! one implementation, three doorways, the same policy, limits, metrics,
//! audit and error wording. The HTTP endpoint is stateless (no MCP session
//! kept in memory): the tools keep no state, so with several broker tasks
//! behind one DNS name any task answers any request of a client.

mod tools;

use axum::Router;
use http::{Extensions, HeaderMap, StatusCode};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        InitializeResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
        ResourceContents, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use serde_json::{Value, json};

use crate::{
    auth::{self, Auth, Caller},
    server::InProcess,
    web::call_tool::{self, Origin, ToolError},
};

const INSTRUCTIONS: &str = "resource-broker serves the company's document bucket (S3) and database \
(PostgreSQL) to agents. Object tools: s3_list_objects (by key prefix), get_object_metadata, \
s3_get_object (text, or base64 for binary; up to 16 MiB), s3_put_object. Database tools: \
postgres_query runs ONE read-only statement with $1.. parameters and returns rows as JSON objects \
(capped; `truncated` says when more matched); postgres_execute runs one write statement; \
postgres_init_schema creates the documents and processing_logs tables. Resources: objects as \
s3://BUCKET/KEY and tables as postgres://DB/TABLE (their columns). You only see the tools your \
token grants.";

/// Objects listed as resources (the rest are reachable with s3_list_objects).
const LISTED_OBJECTS: usize = 200;

/// The MCP server: the in-process broker, the policy to decide which tools
/// a caller sees, and the caller to assume when the transport carries none
/// (stdio).
#[derive(Clone)]
pub struct BrokerMcp {
    grpc: InProcess,
    auth: Auth,
    database: String,
    bucket: String,
    stdio: Origin,
}

impl BrokerMcp {
    pub fn new(grpc: InProcess, auth: Auth, database: String, bucket: String) -> Self {
        Self {
            grpc,
            auth,
            database,
            bucket,
            stdio: Origin::default(),
        }
    }

    /// For stdio: every call carries `token` as its bearer token.
    pub fn with_token(mut self, token: Option<&str>) -> anyhow::Result<Self> {
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                anyhow::anyhow!("BROKER_TOKEN has characters a header cannot carry")
            })?;
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value);
            self.stdio = Origin::new(&headers, &Extensions::new());
        }
        Ok(self)
    }

    /// The caller of an MCP request: over HTTP its headers, peer address and
    /// client certificate name; over stdio the configured token.
    fn origin(&self, context: &RequestContext<RoleServer>) -> Origin {
        match context.extensions.get::<http::request::Parts>() {
            Some(parts) => Origin::from_parts(parts),
            None => self.stdio.clone(),
        }
    }

    fn caller(&self, origin: &Origin) -> Result<Caller, McpError> {
        self.auth
            .identify(origin.headers(), origin.certificate())
            .map_err(|status| {
                McpError::invalid_request(format!("UNAUTHENTICATED: {}", status.message()), None)
            })
    }

    async fn run(&self, origin: &Origin, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        call_tool::run(self.grpc.clone(), origin, tool, Some(arguments)).await
    }

    /// Objects under each prefix the caller's grant names (the whole bucket
    /// when it names none), at most [`LISTED_OBJECTS`] in all.
    async fn object_resources(
        &self,
        origin: &Origin,
        caller: &Caller,
    ) -> Result<Vec<Resource>, ToolError> {
        let granted = &caller.grant.object_store.prefixes;
        let prefixes: Vec<&str> = if granted.is_empty() {
            vec![""]
        } else {
            granted.iter().map(String::as_str).collect()
        };
        let mut resources = Vec::new();
        for prefix in prefixes {
            // Each listing asks for at most what is left, so this never underflows.
            let limit = LISTED_OBJECTS - resources.len();
            if limit == 0 {
                break;
            }
            let listed = self
                .run(
                    origin,
                    "s3_list_objects",
                    json!({"prefix": prefix, "limit": limit}),
                )
                .await;
            let Some(listed) = unless_denied(listed)? else {
                continue;
            };
            resources.extend(
                listed["objects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| {
                        let key = o["key"].as_str()?;
                        let resource =
                            Resource::new(format!("s3://{}/{key}", self.bucket), key.to_owned())
                                .with_description("object in the documents bucket");
                        Some(match o["size"].as_u64() {
                            Some(size) => resource.with_size(size),
                            None => resource,
                        })
                    }),
            );
        }
        Ok(resources)
    }

    async fn table_resources(&self, origin: &Origin) -> Result<Vec<Resource>, ToolError> {
        let tables = self
            .run(
                origin,
                "postgres_query",
                json!({"query": "SELECT table_name FROM information_schema.tables \
                                 WHERE table_schema = 'public' ORDER BY table_name"}),
            )
            .await;
        let Some(tables) = unless_denied(tables)? else {
            return Ok(Vec::new());
        };
        Ok(tables["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let table = row["table_name"].as_str()?;
                Some(
                    Resource::new(
                        format!("postgres://{}/{table}", self.database),
                        table.to_owned(),
                    )
                    .with_description("table: its columns and types")
                    .with_mime_type("application/json"),
                )
            })
            .collect())
    }

    async fn read(&self, origin: &Origin, uri: &str) -> Result<ResourceContents, McpError> {
        let tool_error = |e: ToolError| McpError::invalid_params(e.message, None);
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| McpError::invalid_params("expected s3://BUCKET/KEY", None))?;
            let object = self
                .run(
                    origin,
                    "s3_get_object",
                    json!({"bucket": bucket, "key": key}),
                )
                .await
                .map_err(tool_error)?;
            let mime = object["content_type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            let contents = match (
                object["content"].as_str(),
                object["content_base64"].as_str(),
            ) {
                (Some(text), _) => ResourceContents::text(text, uri),
                (None, Some(base64)) => ResourceContents::blob(base64, uri),
                (None, None) => ResourceContents::text("", uri),
            };
            return Ok(with_mime(contents, mime));
        }
        if let Some(rest) = uri.strip_prefix("postgres://") {
            let (database, table) = rest.split_once('/').ok_or_else(|| {
                McpError::invalid_params("expected postgres://DATABASE/TABLE", None)
            })?;
            if database != self.database {
                return Err(McpError::resource_not_found(
                    format!("the broker serves database {:?}", self.database),
                    None,
                ));
            }
            let columns = self
                .run(
                    origin,
                    "postgres_query",
                    json!({"query": "SELECT column_name, data_type, is_nullable, column_default \
                                     FROM information_schema.columns WHERE table_schema = 'public' \
                                     AND table_name = $1 ORDER BY ordinal_position", "params": [table]}),
                )
                .await
                .map_err(tool_error)?;
            if columns["count"] == 0 {
                return Err(McpError::resource_not_found(
                    format!("no table {table:?}"),
                    None,
                ));
            }
            let description = json!({"table": table, "columns": columns["rows"]});
            return Ok(with_mime(
                ResourceContents::text(description.to_string(), uri),
                Some("application/json".into()),
            ));
        }
        Err(McpError::resource_not_found(
            format!("unknown resource {uri:?} (s3://BUCKET/KEY or postgres://DB/TABLE)"),
            None,
        ))
    }
}

/// A listing's result, or `None` when the grant refuses it: a resource
/// listing shows what the caller may see and skips the rest.
fn unless_denied(result: Result<Value, ToolError>) -> Result<Option<Value>, ToolError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.status == StatusCode::FORBIDDEN => Ok(None),
        Err(e) => Err(e),
    }
}

fn with_mime(contents: ResourceContents, mime: Option<String>) -> ResourceContents {
    match mime {
        Some(mime) => contents.with_mime_type(mime),
        None => contents,
    }
}

/// Whether `caller`'s grant covers the tool's broker.v1 method.
fn permitted(caller: &Caller, spec: &tools::ToolSpec) -> bool {
    auth::requirement(spec.method).is_some_and(|(resource, access)| caller.may(resource, access))
}

impl ServerHandler for BrokerMcp {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            "resource-broker",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let caller = self.caller(&self.origin(&context))?;
        let tools = tools::TOOLS
            .iter()
            .filter(|spec| permitted(&caller, spec))
            .map(tools::ToolSpec::tool)
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(spec) = tools::find(&request.name) else {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        };
        let origin = self.origin(&context);
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        // The gRPC layers decide (and word) a refusal, as for every doorway.
        let result = match self.run(&origin, spec.name, arguments).await {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => CallToolResult::error(vec![ContentBlock::text(error.message)]),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let origin = self.origin(&context);
        let caller = self.caller(&origin)?;
        let mut resources = Vec::new();
        if caller.may(auth::Resource::ObjectStore, auth::policy::Access::Read) {
            resources.extend(
                self.object_resources(&origin, &caller)
                    .await
                    .map_err(|e| McpError::internal_error(e.message, None))?,
            );
        }
        if caller.may(auth::Resource::Database, auth::policy::Access::Read) {
            resources.extend(
                self.table_resources(&origin)
                    .await
                    .map_err(|e| McpError::internal_error(e.message, None))?,
            );
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let contents = self.read(&self.origin(&context), &request.uri).await?;
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// The `/mcp` route (Streamable HTTP), stateless: no session id, each
/// request answered on its own (as JSON), so any broker task serves any
/// request. Request bodies up to the `/call_tool` limit, which the 16 MiB
/// object tools need. Any Host is accepted (the broker runs behind service
/// names); requests carrying a browser `Origin` are refused unless listed
/// in `allowed_origins`, which stops DNS-rebinding pages from reaching a
/// local broker.
pub fn router(server: BrokerMcp, allowed_origins: &[String]) -> Router {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_allowed_origins(allowed_origins.iter().cloned())
        .enforce_origin_validation()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(call_tool::MAX_REQUEST_BYTES);
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        NeverSessionManager::default().into(),
        config,
    );
    Router::new().route_service("/mcp", service)
}

/// `broker mcp-stdio`: the same server over stdin/stdout.
pub async fn serve_stdio(server: BrokerMcp) -> anyhow::Result<()> {
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

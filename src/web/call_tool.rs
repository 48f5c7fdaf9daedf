//! `POST /call_tool`: the seed's `{"tool", "arguments"}` HTTP API, kept so
//! that unmigrated agents work unchanged. Each tool is a client of the
//! in-process broker.v1 gRPC services (never of S3 or PostgreSQL directly),
//! so it shares their validation, limits, errors and layers: one
//! implementation, two doorways. The caller's `authorization` and
//! `x-request-id` headers travel on as gRPC metadata, and its connection's
//! peer address and client certificate name as request extensions, so the
//! gRPC layers identify, authorise and limit it as they would a gRPC client.

mod args;
mod database_tools;
mod error;
mod object_tools;
mod values;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{Extensions, HeaderMap, request::Parts},
};
use serde_json::Value;
use tonic::metadata::MetadataMap;

use super::WebState;
use crate::{
    auth::PeerCertificateName,
    proto::{database_client::DatabaseClient, object_store_client::ObjectStoreClient},
    resilience::load_shed::PeerAddr,
    server::InProcess,
};
use args::Args;
pub use error::ToolError;

/// Largest object body a tool (over `/call_tool` or MCP) reads or writes in
/// one call. Larger objects go through the streaming gRPC calls (GetObject,
/// PutObject).
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;
/// Largest request body: an object of [`MAX_OBJECT_BYTES`] in base64 (4/3 of
/// its size), plus room for the rest of the JSON.
pub const MAX_REQUEST_BYTES: usize = MAX_OBJECT_BYTES / 3 * 4 + 1024 * 1024;

/// The tools, by their seed names.
pub const TOOLS: [&str; 7] = [
    "s3_list_objects",
    "s3_get_object",
    "s3_put_object",
    "get_object_metadata",
    "postgres_query",
    "postgres_execute",
    "postgres_init_schema",
];

/// HTTP headers passed on to the gRPC services.
pub const FORWARDED_HEADERS: [&str; 2] = ["authorization", "x-request-id"];

/// Who is calling, as the doorway's HTTP request shows it: what the gRPC
/// layers need to identify, authorise, limit and audit the caller.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Only the [`FORWARDED_HEADERS`].
    headers: HeaderMap,
    peer: Option<PeerAddr>,
    certificate: Option<PeerCertificateName>,
}

impl Origin {
    /// From a request's headers and the extensions the server set on it
    /// (peer address, client certificate name).
    pub fn new(headers: &HeaderMap, extensions: &Extensions) -> Self {
        let mut forwarded = HeaderMap::new();
        for name in FORWARDED_HEADERS {
            for value in headers.get_all(name) {
                forwarded.append(name, value.clone());
            }
        }
        Self {
            headers: forwarded,
            peer: extensions.get::<PeerAddr>().copied(),
            certificate: extensions.get::<PeerCertificateName>().cloned(),
        }
    }

    pub fn from_parts(parts: &Parts) -> Self {
        Self::new(&parts.headers, &parts.extensions)
    }

    /// The forwarded headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The client certificate's name, with mutual TLS.
    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.0.as_str())
    }
}

/// Runs one tool call: 200 with the tool's result, or 4xx/5xx with `{"error"}`.
pub async fn handler(
    State(state): State<WebState>,
    parts: Parts,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ToolError> {
    let body = body.map_err(|rejection| ToolError {
        status: rejection.status(),
        message: rejection.body_text(),
    })?;
    let (tool, arguments) = parse(&body)?;
    let origin = Origin::from_parts(&parts);
    Ok(Json(run(state.grpc, &origin, &tool, arguments).await?))
}

/// Runs one tool for `origin` as a client of the in-process gRPC services.
/// Shared by `/call_tool` and the MCP endpoint.
pub async fn run(
    grpc: InProcess,
    origin: &Origin,
    tool: &str,
    arguments: Option<Value>,
) -> Result<Value, ToolError> {
    let call = Call {
        grpc,
        origin: origin.clone(),
    };
    match tool {
        "s3_list_objects" => object_tools::list(call, arguments).await,
        "s3_get_object" => object_tools::get(call, arguments).await,
        "s3_put_object" => object_tools::put(call, arguments).await,
        "get_object_metadata" => object_tools::metadata(call, arguments).await,
        "postgres_query" => database_tools::query(call, arguments).await,
        "postgres_execute" => database_tools::execute(call, arguments).await,
        "postgres_init_schema" => database_tools::init_schema(call, arguments).await,
        other => Err(ToolError::bad_request(format!(
            "unknown tool '{other}' (known tools: {})",
            TOOLS.join(", ")
        ))),
    }
}

/// Reads `{"tool": "...", "arguments": {...}}`.
fn parse(body: &[u8]) -> Result<(String, Option<Value>), ToolError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ToolError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(mut request) = request else {
        return Err(ToolError::bad_request(
            "the request body must be a JSON object {\"tool\": ..., \"arguments\": {...}}",
        ));
    };
    match request.remove("tool") {
        Some(Value::String(tool)) => Ok((tool, request.remove("arguments"))),
        Some(_) => Err(ToolError::bad_request("'tool' must be a string")),
        None => Err(ToolError::bad_request("missing 'tool'")),
    }
}

/// What a tool needs to make its gRPC calls.
pub struct Call {
    grpc: InProcess,
    origin: Origin,
}

impl Call {
    fn object_store(&self) -> ObjectStoreClient<InProcess> {
        ObjectStoreClient::new(self.grpc.clone())
    }

    fn database(&self) -> DatabaseClient<InProcess> {
        // In-process responses never cross a network; rows are capped by the
        // server's max_rows.
        DatabaseClient::new(self.grpc.clone()).max_decoding_message_size(usize::MAX)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.origin.request(message)
    }
}

impl Origin {
    /// `message` as a gRPC request from the caller: the forwarded headers
    /// as metadata, its peer address and certificate name as extensions
    /// (tonic hands them on to the in-process services' layers).
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = MetadataMap::from_headers(self.headers.clone());
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        if let Some(certificate) = &self.certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_needs_a_tool_name() {
        assert_eq!(parse(b"{").unwrap_err().status, 400);
        assert_eq!(parse(b"[]").unwrap_err().status, 400);
        assert_eq!(
            parse(br#"{"tool": 1}"#).unwrap_err().message,
            "'tool' must be a string"
        );
        let (tool, arguments) = parse(br#"{"tool": "x", "arguments": {"a": 1}}"#).unwrap();
        assert_eq!(tool, "x");
        assert_eq!(arguments, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn named_headers_peer_and_certificate_are_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.insert("x-request-id", "r1".parse().unwrap());
        headers.insert("cookie", "c".parse().unwrap());
        let mut extensions = Extensions::new();
        let peer: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
        extensions.insert(PeerAddr(peer));
        extensions.insert(PeerCertificateName("extractor".into()));
        let request = Origin::new(&headers, &extensions).request(());
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer t");
        assert_eq!(request.metadata().get("x-request-id").unwrap(), "r1");
        assert!(request.metadata().get("cookie").is_none());
        assert_eq!(request.extensions().get::<PeerAddr>().unwrap().0, peer);
        assert_eq!(
            request.extensions().get::<PeerCertificateName>().unwrap().0,
            "extractor"
        );
    }
}

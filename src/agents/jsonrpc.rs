//! What every agent serves: A2A-style JSON-RPC 2.0 on `POST /message`,
//! `GET /health` and the agent card on `GET /.well-known/agent.json`.

use std::{future::Future, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde::Serialize;
use serde_json::{Value, json};

/// A JSON-RPC error object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (JSON-RPC {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// The method ran and failed (a missing object, an unreachable peer, a
    /// broker error): the message says why. Nothing is known about the
    /// document itself, so trying again later may succeed.
    pub const FAILED: i64 = -32000;
    /// The document itself cannot be extracted (corrupt, encrypted,
    /// unsupported, too large): trying again will not help. Only this
    /// outcome is archived as a `failed` document.
    pub const DOCUMENT_REJECTED: i64 = -32001;

    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_PARAMS, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Self::FAILED, message)
    }

    pub fn document_rejected(message: impl Into<String>) -> Self {
        Self::new(Self::DOCUMENT_REJECTED, message)
    }
}

impl From<crate::client::ClientError> for RpcError {
    fn from(e: crate::client::ClientError) -> Self {
        Self {
            code: Self::FAILED,
            message: e.to_string(),
            data: Some(json!({"grpc_code": format!("{:?}", e.code())})),
        }
    }
}

/// A required string parameter.
pub fn string_param<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    params
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RpcError::invalid_params(format!("missing string parameter {name:?}")))
}

/// One skill in the agent card.
#[derive(Debug, Clone, Serialize)]
pub struct Skill {
    pub id: &'static str,
    pub description: &'static str,
}

/// The agent card served at `/.well-known/agent.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentCard {
    pub name: &'static str,
    pub description: &'static str,
    pub version: &'static str,
    pub skills: Vec<Skill>,
}

/// An agent's methods.
pub trait Methods: Send + Sync + 'static {
    /// Runs `method` with its `params` object; an unknown method is
    /// `METHOD_NOT_FOUND`.
    fn call(
        &self,
        method: &str,
        params: Value,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;
}

struct AgentState<M> {
    card: Arc<AgentCard>,
    methods: Arc<M>,
}

impl<M> Clone for AgentState<M> {
    fn clone(&self) -> Self {
        Self {
            card: self.card.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// The agent's HTTP routes.
pub fn router<M: Methods>(card: AgentCard, methods: Arc<M>) -> Router {
    let state = AgentState {
        card: Arc::new(card),
        methods,
    };
    Router::new()
        .route("/message", post(message::<M>))
        .route("/health", get(health::<M>))
        .route("/.well-known/agent.json", get(agent_card::<M>))
        .with_state(state)
}

/// `METHOD_NOT_FOUND` naming the methods there are.
pub fn unknown_method(method: &str, known: &[&str]) -> RpcError {
    RpcError::new(
        RpcError::METHOD_NOT_FOUND,
        format!("unknown method {method:?} (known: {})", known.join(", ")),
    )
}

async fn health<M: Methods>(State(state): State<AgentState<M>>) -> impl IntoResponse {
    Json(
        json!({"status": "healthy", "agent": state.card.name, "timestamp": chrono::Utc::now().to_rfc3339()}),
    )
}

async fn agent_card<M: Methods>(State(state): State<AgentState<M>>) -> impl IntoResponse {
    Json(state.card.as_ref().clone())
}

async fn message<M: Methods>(State(state): State<AgentState<M>>, body: Bytes) -> impl IntoResponse {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return reply(
                Value::Null,
                Err(RpcError::new(
                    RpcError::PARSE_ERROR,
                    format!("invalid JSON: {e}"),
                )),
            );
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = match (
        request.get("jsonrpc").and_then(Value::as_str),
        request.get("method").and_then(Value::as_str),
    ) {
        (Some("2.0"), Some(method)) => method.to_owned(),
        _ => {
            let error = RpcError::new(
                RpcError::INVALID_REQUEST,
                "expected {\"jsonrpc\": \"2.0\", \"method\": ..., \"params\": ..., \"id\": ...}",
            );
            return reply(id, Err(error));
        }
    };
    let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return reply(
            id,
            Err(RpcError::invalid_params("params must be an object")),
        );
    }
    let result = state.methods.call(&method, params).await;
    if let Err(e) = &result {
        tracing::info!(method, code = e.code, error = %e.message, "call failed");
    }
    reply(id, result)
}

fn reply(id: Value, result: Result<Value, RpcError>) -> (StatusCode, Json<Value>) {
    let body = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    (StatusCode::OK, Json(body))
}

/// A JSON-RPC client for a peer agent.
#[derive(Clone)]
pub struct Peer {
    url: String,
    http: reqwest::Client,
}

impl Peer {
    /// `base_url` is the agent's root (`http://extractor:8002`).
    pub fn new(base_url: &str, timeout: std::time::Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            url: format!("{}/message", base_url.trim_end_matches('/')),
            http,
        })
    }

    /// Calls `method`; transport problems and the peer's errors are both `RpcError`s.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self
            .http
            .post(&self.url)
            .json(&request)
            .send()
            .await
            .map_err(|e| RpcError::failed(format!("cannot reach {}: {e}", self.url)))?;
        let body: Value = response.json().await.map_err(|e| {
            RpcError::failed(format!(
                "{} answered something that is not JSON-RPC: {e}",
                self.url
            ))
        })?;
        if let Some(error) = body.get("error") {
            return Err(RpcError {
                code: error["code"].as_i64().unwrap_or(RpcError::FAILED),
                message: error["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                data: error.get("data").cloned(),
            });
        }
        Ok(body.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// Binds `addr`, prints `listening on ADDR` (tests and scripts read it),
/// and serves `app` until SIGTERM or SIGINT.
pub async fn serve(name: &str, addr: std::net::SocketAddr, app: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{name}: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("{name} listening on {local}");
    tracing::info!(%local, "{name} listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown::signal())
        .await?;
    tracing::info!("{name} stopped");
    Ok(())
}

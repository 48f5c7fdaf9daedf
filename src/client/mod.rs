//! The typed client agents use instead of S3 and PostgreSQL SDKs.
//!
//! [`BrokerClient::from_env`] is the seed's `mcp_context_auto`: with
//! `BROKER_URL` (or the seed's `MCP_SERVER_URL`) set it talks gRPC to the
//! broker; with neither set it serves the very same API in-process from the
//! agent's own `POSTGRES_*` / `S3_*` settings (direct mode, the rollback
//! path). Both modes run the same broker.v1 service code, and the client
//! makes its calls the same way in both (`calls.rs`), so results and
//! errors are identical.
//!
//! ```no_run
//! # async fn demo() -> resource_broker::client::Result<()> {
//! use resource_broker::client::{BrokerClient, PutOptions};
//! let broker = BrokerClient::from_env().await?;
//! broker.put_bytes("incoming/a.csv", PutOptions::content_type("text/csv"), "a,b\n1,2\n").await?;
//! let rows = broker.query("SELECT id FROM documents WHERE s3_key = $1", &["incoming/a.csv".into()]).await?;
//! for row in rows {
//!     let id: i64 = row.get("id")?;
//! }
//! # Ok(()) }
//! ```

mod calls;
mod connection;
mod error;
mod objects;
mod options;
mod rows;
mod transport;
mod values;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::Stream;
use tonic::{
    Code, Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
};

pub use error::{ClientError, Result};
pub use objects::{ObjectReader, Progress, PutOptions};
pub use options::ClientOptions;
pub use rows::{Row, Rows};
pub use values::{FromValue, json, null, numeric};

pub use crate::proto::{ObjectInfo, PutObjectResponse as PutResult, Value};
use crate::{
    codec::Messages,
    config::ServeConfig,
    proto::{
        self, ByteRange, DeleteObjectRequest, ExecuteRequest, GetObjectRequest, HeadObjectRequest,
        InitSchemaRequest, ListObjectsRequest, PutObjectHeader, QueryRequest, TransactionRequest,
    },
};
use calls::paths;
use transport::{Balancer, Transport};

/// Largest response the client accepts (a Query's rows): the broker's own
/// row limit is the real bound.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// How many times a call is tried when the broker address it went to could
/// not be reached (each try goes to the next address).
const MAX_ATTEMPTS: usize = 3;

/// Where the client's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// gRPC to the broker at these URLs.
    Remote(String),
    /// The broker.v1 services in this process, on the agent's own credentials.
    Direct,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self> {
        token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    ClientError::config("BROKER_TOKEN has characters a header cannot carry")
                })
            })
            .transpose()
            .map(|value| {
                Self(value.map(|mut v| {
                    v.set_sensitive(true);
                    v
                }))
            })
    }

    /// Adds the header to a call's metadata.
    fn apply(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(token) = &self.0 {
            metadata.insert("authorization", token.clone());
        }
    }
}

/// A connection to the broker (or to the in-process services). Cheap to
/// clone; clones share connections.
#[derive(Clone)]
pub struct BrokerClient {
    /// Every call goes straight to the transport ([`calls`], [`Messages`]).
    transport: Transport,
    token: BearerToken,
    mode: Arc<Mode>,
    bucket: String,
    timeout: Option<Duration>,
    stream_timeout: Option<Duration>,
}

impl BrokerClient {
    /// Connects to the broker at `urls`: one URL or several separated by
    /// commas; each host name may resolve to several addresses. Calls are
    /// spread across all of them.
    pub async fn connect(urls: &str, options: ClientOptions) -> Result<Self> {
        let balancer = Balancer::connect(urls, &options).await?;
        Self::over(
            Transport::Remote(balancer),
            Mode::Remote(urls.to_owned()),
            &options,
        )
    }

    /// Serves the API in this process from `config`'s backends: direct mode.
    pub async fn in_process(config: &ServeConfig, options: ClientOptions) -> Result<Self> {
        config
            .validate()
            .map_err(|e| ClientError::config(format!("{e:#}")))?;
        let backends = crate::server::Backends::from_config(config)
            .await
            .map_err(|e| ClientError::config(format!("{e:#}")))?;
        let router = crate::server::in_process(&backends);
        Self::over(Transport::Local(router), Mode::Direct, &options)
    }

    /// `BROKER_URL` (or `MCP_SERVER_URL`) set: remote; neither: direct mode
    /// from the broker's own environment variables (`POSTGRES_*`, `S3_*`).
    pub async fn from_env() -> Result<Self> {
        Self::from_url_or_env(None).await
    }

    /// `url` when it is given and not empty (an agent's `--broker-url`),
    /// else as [`BrokerClient::from_env`]: `BROKER_URL`, `MCP_SERVER_URL`,
    /// or direct mode. The other settings come from the environment.
    pub async fn from_url_or_env(url: Option<&str>) -> Result<Self> {
        let options = ClientOptions::from_env()?;
        let url = url
            .filter(|u| !u.trim().is_empty())
            .map(str::to_owned)
            .or_else(broker_url_from_env);
        match url {
            Some(url) => {
                tracing::info!(url = %url, "broker client: gRPC to the broker");
                Self::connect(&url, options).await
            }
            None => {
                tracing::info!(
                    "broker client: BROKER_URL is not set, serving S3 and PostgreSQL in-process (direct mode)"
                );
                let config =
                    ServeConfig::from_env().map_err(|e| ClientError::config(format!("{e:#}")))?;
                Self::in_process(&config, options).await
            }
        }
    }

    fn over(transport: Transport, mode: Mode, options: &ClientOptions) -> Result<Self> {
        let token = BearerToken::new(options.token.as_deref())?;
        Ok(Self {
            transport,
            token,
            mode: Arc::new(mode),
            bucket: String::new(),
            timeout: options.timeout,
            stream_timeout: options.stream_timeout,
        })
    }

    /// Remote or direct.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The broker addresses calls are spread over (empty in direct mode).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match &self.transport {
            Transport::Remote(balancer) => balancer.addresses(),
            Transport::Local(_) => Vec::new(),
        }
    }

    /// This client with another deadline for unary calls.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// This client with another deadline for streaming calls (GetObject,
    /// PutObject): a whole transfer must finish within it.
    pub fn with_stream_timeout(&self, timeout: Duration) -> Self {
        Self {
            stream_timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// This client on another bucket than the broker's default.
    pub fn with_bucket(&self, bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            ..self.clone()
        }
    }

    fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// `path` with `request`, straight on the transport ([`calls`]).
    async fn call<M, R>(
        self,
        path: &'static str,
        mut request: Request<M>,
    ) -> Result<tonic::Response<R>, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        self.token.apply(request.metadata_mut());
        calls::call(self.transport, path, request, MAX_RESPONSE_BYTES)
            .await
            .map(tonic::Response::new)
    }

    /// `path` with `request`, its answer's messages still to be read
    /// ([`Messages`]).
    async fn open_stream<M, R>(
        self,
        path: &'static str,
        mut request: Request<M>,
    ) -> Result<tonic::Response<Messages<R>>, Status>
    where
        M: prost::Message,
        R: prost::Message + Default,
    {
        self.token.apply(request.metadata_mut());
        let answer = calls::send(self.transport, path, request).await?;
        Messages::answer(answer, MAX_RESPONSE_BYTES).map(tonic::Response::new)
    }

    /// Runs a call up to its answer, trying the next broker address when
    /// one cannot be reached: always for `idempotent` calls, and for writes
    /// only when the connection was refused (so the broker never saw the
    /// request).
    async fn retried<M, R, F, Fut>(&self, idempotent: bool, message: M, call: F) -> Result<R>
    where
        M: Clone,
        F: Fn(Self, Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let attempts = match &self.transport {
            Transport::Remote(balancer) => balancer.address_count().clamp(1, MAX_ATTEMPTS),
            Transport::Local(_) => 1,
        };
        // Every attempt but the last sends a copy of the request.
        for attempt in 1..attempts {
            match call(self.clone(), self.request(message.clone(), self.timeout)).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if may_retry(&status, idempotent) => {
                    tracing::debug!(error = %status, attempt, "broker unreachable, trying the next address");
                }
                Err(status) => return Err(status.into()),
            }
        }
        match call(self.clone(), self.request(message, self.timeout)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(status.into()),
        }
    }

    // ---- ObjectStore ----

    /// Objects under `prefix`, in key order, following pages up to `limit`
    /// objects (all when `None`; none for `Some(0)`).
    pub async fn list_objects(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<ObjectInfo>> {
        let mut objects = Vec::new();
        if limit == Some(0) {
            return Ok(objects);
        }
        let mut continuation_token = String::new();
        loop {
            let wanted = limit.map_or(1000, |l| (l - objects.len()).min(1000));
            let request = ListObjectsRequest {
                bucket: self.bucket.clone(),
                prefix: prefix.to_owned(),
                max_keys: wanted as i32,
                continuation_token,
            };
            let page: proto::ListObjectsResponse = self
                .retried(true, request, |c, r| c.call(paths::LIST_OBJECTS, r))
                .await?;
            objects.extend(page.objects);
            if page.next_continuation_token.is_empty() || limit.is_some_and(|l| objects.len() >= l)
            {
                return Ok(objects);
            }
            continuation_token = page.next_continuation_token;
        }
    }

    /// Size, etag, content type, last modified and metadata; `NOT_FOUND`
    /// when there is no such object.
    pub async fn head_object(&self, key: &str) -> Result<ObjectInfo> {
        let request = HeadObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        };
        self.retried(true, request, |c, r| c.call(paths::HEAD_OBJECT, r))
            .await
    }

    /// The object as a stream of chunks (with its metadata first).
    pub async fn get_object(&self, key: &str) -> Result<ObjectReader> {
        self.get(key, None).await
    }

    /// `length` bytes from `offset` (to the end when `length` is 0).
    pub async fn get_object_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<ObjectReader> {
        let range = ByteRange {
            offset: i64::try_from(offset).map_err(|_| ClientError::config("offset too large"))?,
            length: i64::try_from(length).map_err(|_| ClientError::config("length too large"))?,
        };
        self.get(key, Some(range)).await
    }

    /// The whole object in memory, refused past `max_bytes`.
    pub async fn get_bytes(&self, key: &str, max_bytes: usize) -> Result<Bytes> {
        self.get_object(key).await?.bytes(max_bytes).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectReader> {
        let message = GetObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            range,
        };
        let timeout = self.stream_timeout;
        let body = self
            .with_optional_timeout(timeout)
            .retried(true, message, |c, r| c.open_stream(paths::GET_OBJECT, r))
            .await?;
        ObjectReader::open(body).await
    }

    fn with_optional_timeout(&self, timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// Uploads `body` (any stream of byte chunks) as `key`. If the body
    /// fails, the upload is cancelled and nothing is written.
    pub async fn put_object<S>(&self, key: &str, options: PutOptions, body: S) -> Result<PutResult>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        self.put_with_progress(key, options, body, |_| {}).await
    }

    /// Uploads `body` and calls `progress` with the bytes sent so far.
    pub async fn put_with_progress<S>(
        &self,
        key: &str,
        options: PutOptions,
        body: S,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<PutResult>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let header = PutObjectHeader {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            content_type: options.content_type.unwrap_or_default(),
            metadata: options.metadata,
        };
        let (failure, failed) = tokio::sync::oneshot::channel();
        let body = objects::put_body(header, body, failure, progress);
        let mut request = self.request(body, self.stream_timeout);
        self.token.apply(request.metadata_mut());
        let call = calls::call_with_body(
            self.transport.clone(),
            paths::PUT_OBJECT,
            request,
            MAX_RESPONSE_BYTES,
        );
        tokio::select! {
            result = call => Ok(result?),
            Ok(e) = failed => Err(ClientError::io(format!("reading the body of {key:?}; the upload was cancelled"), e)),
        }
    }

    /// Uploads bytes held in memory.
    pub async fn put_bytes(
        &self,
        key: &str,
        options: PutOptions,
        body: impl Into<Bytes>,
    ) -> Result<PutResult> {
        let body = body.into();
        self.put_object(key, options, futures::stream::once(async move { Ok(body) }))
            .await
    }

    /// Uploads a file, streaming it; `progress` sees bytes sent and the
    /// file's size.
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        options: PutOptions,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<PutResult> {
        let context = || format!("reading {}", path.display());
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::io(context(), e))?;
        let total = file
            .metadata()
            .await
            .map_err(|e| ClientError::io(context(), e))?
            .len();
        self.put_with_progress(key, options, objects::file_chunks(file), move |sent| {
            progress(Progress {
                sent,
                total: Some(total),
            });
        })
        .await
    }

    /// Deletes `key`; deleting a missing key succeeds (S3's semantics).
    pub async fn delete_object(&self, key: &str) -> Result<()> {
        let request = DeleteObjectRequest {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        };
        self.retried(true, request, |c, r| {
            c.call::<_, proto::DeleteObjectResponse>(paths::DELETE_OBJECT, r)
        })
        .await?;
        Ok(())
    }

    // ---- Database ----

    /// One read-only statement; rows up to the broker's default cap.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.query_max(sql, params, 0).await
    }

    /// One read-only statement returning at most `max_rows` rows
    /// (`truncated` says whether more matched).
    pub async fn query_max(&self, sql: &str, params: &[Value], max_rows: u32) -> Result<Rows> {
        let request = QueryRequest {
            sql: sql.to_owned(),
            params: params.to_vec(),
            max_rows,
        };
        let answer: rows::QueryAnswer = self
            .retried(true, request, |c, r| c.call(paths::QUERY, r))
            .await?;
        Ok(Rows::from(answer))
    }

    /// One write statement; RETURNING rows come back in `rows`.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<Executed> {
        let request = ExecuteRequest {
            sql: sql.to_owned(),
            params: params.to_vec(),
        };
        let response: proto::ExecuteResponse = self
            .retried(false, request, |c, r| c.call(paths::EXECUTE, r))
            .await?;
        Ok(Executed::from(response))
    }

    /// Several statements in one transaction: all commit or none does.
    pub async fn transaction(&self, statements: &[(&str, Vec<Value>)]) -> Result<Vec<Executed>> {
        let request = TransactionRequest {
            statements: statements
                .iter()
                .map(|(sql, params)| ExecuteRequest {
                    sql: (*sql).to_owned(),
                    params: params.clone(),
                })
                .collect(),
        };
        let response: proto::TransactionResponse = self
            .retried(false, request, |c, r| c.call(paths::TRANSACTION, r))
            .await?;
        Ok(response.results.into_iter().map(Executed::from).collect())
    }

    /// Creates the documents and processing_logs schema if missing; returns
    /// the tables.
    pub async fn init_schema(&self) -> Result<Vec<String>> {
        let response: proto::InitSchemaResponse = self
            .retried(true, InitSchemaRequest {}, |c, r| {
                c.call(paths::INIT_SCHEMA, r)
            })
            .await?;
        Ok(response.tables)
    }
}

/// The outcome of one write statement.
#[derive(Debug, Clone)]
pub struct Executed {
    pub rows_affected: u64,
    /// RETURNING rows (empty without RETURNING).
    pub rows: Rows,
}

impl From<proto::ExecuteResponse> for Executed {
    fn from(response: proto::ExecuteResponse) -> Self {
        Self {
            rows_affected: response.rows_affected,
            rows: Rows::new(response.columns, response.rows, false),
        }
    }
}

/// `BROKER_URL`, else the seed's `MCP_SERVER_URL`; empty counts as unset.
pub fn broker_url_from_env() -> Option<String> {
    broker_url(|name| std::env::var(name).ok())
}

fn broker_url(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["BROKER_URL", "MCP_SERVER_URL"]
        .into_iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
}

/// Whether a failed call may go to the next broker address.
fn may_retry(status: &Status, idempotent: bool) -> bool {
    status.code() == Code::Unavailable && (idempotent || never_sent(status))
}

/// The connection was refused or never opened: the broker did not see the call.
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_variable_is_an_alias() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            broker_url(env(&[("MCP_SERVER_URL", "http://m:8000")])).as_deref(),
            Some("http://m:8000")
        );
        let both = env(&[
            ("BROKER_URL", "http://b:8000"),
            ("MCP_SERVER_URL", "http://m:8000"),
        ]);
        assert_eq!(
            broker_url(both).as_deref(),
            Some("http://b:8000"),
            "BROKER_URL wins"
        );
        assert_eq!(
            broker_url(env(&[("BROKER_URL", " ")])),
            None,
            "empty means direct mode"
        );
        assert_eq!(broker_url(env(&[])), None);
    }

    #[test]
    fn only_unreachable_brokers_are_retried_for_writes() {
        assert!(may_retry(&Status::unavailable("breaker open"), true));
        assert!(!may_retry(&Status::unavailable("reset mid-call"), false));
        assert!(!may_retry(&Status::not_found("x"), true));
    }
}

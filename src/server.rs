//! The whole server in one function: [`serve`] builds the backends from the
//! configuration, mounts gRPC (broker.v1, health, reflection) and plain HTTP
//! on one listener, and runs until `shutdown` resolves.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, body::Body, middleware};
use futures::FutureExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;
use tower::{Layer, ServiceExt};

use tonic_health::pb::health_server::{Health as HealthService, HealthServer};

use crate::{
    audit::AuditLog,
    auth::{Auth, PeerCertificateName},
    busy_poll,
    config::ServeConfig,
    database::Database,
    grpc::{BrokerServices, CallSteps, WithCallSteps},
    health::{self, Health},
    object_store::S3Store,
    resilience::{
        deadline,
        load_shed::{LoadShedder, PeerAddr},
    },
    telemetry, web,
};

mod linger;
use linger::Lingering;

/// The backends the broker serves, and the request limits every doorway shares.
#[derive(Clone)]
pub struct Backends {
    pub store: S3Store,
    pub db: Database,
    pub shedder: LoadShedder,
    pub deadlines: deadline::Deadlines,
    pub auth: Auth,
    pub audit: AuditLog,
}

impl Backends {
    /// Builds the clients; nothing is contacted yet.
    pub async fn from_config(config: &ServeConfig) -> anyhow::Result<Self> {
        let config = &crate::secrets::resolve(config).await?;
        Ok(Self {
            store: S3Store::from_config(&config.s3, &config.resilience).await,
            db: Database::connect(&config.postgres, &config.limits, &config.resilience)?,
            auth: Auth::from_file(config.policy_file.as_deref())?,
            audit: match &config.audit_log {
                Some(path) => AuditLog::open(path, config.audit_chain)?,
                None => AuditLog::default(),
            },
            shedder: LoadShedder::new(
                config.resilience.max_in_flight,
                config.resilience.max_in_flight_per_caller,
            ),
            deadlines: config.resilience.deadlines(),
        })
    }
}

/// Validates `config`, connects the backends and serves on `listener` until
/// `shutdown` resolves; then drains in-flight calls (at most the configured
/// drain timeout) and returns.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    config.validate()?;
    let tls = config.tls()?;
    let backends = Backends::from_config(&config).await?;
    let health = Health::default();
    let (reporter, health_service) = tonic_health::server::health_reporter();

    let mut background = JoinSet::new();
    background.spawn(health::run_probes(
        health.clone(),
        backends.store.clone(),
        backends.db.clone(),
        config.health_interval,
    ));
    background.spawn(health::feed_reporter(health.clone(), reporter));
    background.spawn(reload_policy_on_sighup(backends.auth.clone()));

    // One in-process service for every doorway: gRPC, HTTP and MCP.
    let grpc = in_process(&backends);
    let mcp = crate::mcp::BrokerMcp::new(
        grpc.clone(),
        backends.auth.clone(),
        config.database_name(),
        config.s3.bucket().to_owned(),
    );
    let app = router(&backends, grpc.clone(), health.clone(), health_service)?.merge(
        crate::mcp::router(mcp, &config.mcp_allowed_origins).layer(middleware::from_fn_with_state(
            backends.audit.clone(),
            telemetry::log_requests,
        )),
    );
    let doors = Doors { grpc, app };
    tracing::info!(addr = %listener.local_addr()?, "broker listening (gRPC and HTTP)");
    let draining = || {
        tracing::info!("shutting down: draining in-flight calls");
        health.set_draining();
    };
    run(
        listener,
        doors,
        tls,
        shutdown,
        draining,
        config.drain_timeout,
    )
    .await;
    backends.store.abort_pending_uploads().await;
    background.shutdown().await;
    tracing::info!("broker stopped");
    Ok(())
}

/// Where a request goes: broker.v1's calls straight to its services (the
/// hot path, no router), everything else (health, reflection, the HTTP
/// routes, MCP) to the router.
#[derive(Clone)]
struct Doors {
    grpc: InProcess,
    app: Router,
}

impl Doors {
    fn call(
        &self,
        request: http::Request<Body>,
    ) -> impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + use<>
    {
        if BrokerServices::serves(request.uri().path()) {
            futures::future::Either::Left(self.grpc.clone().oneshot(request))
        } else {
            futures::future::Either::Right(self.app.clone().oneshot(request))
        }
    }
}

/// The other gRPC services (health, reflection) and the HTTP routes on one
/// axum router.
fn router(
    backends: &Backends,
    grpc: InProcess,
    health: Health,
    health_service: HealthServer<impl HealthService>,
) -> anyhow::Result<Router> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let others = routes
        .prepare()
        .into_axum_router()
        .layer(call_steps(backends));
    let state = web::WebState {
        health,
        grpc,
        db: backends.db.clone(),
    };
    let web = web::router(state).layer(middleware::from_fn_with_state(
        backends.audit.clone(),
        telemetry::log_requests,
    ));
    Ok(others.merge(web).fallback(web::fallback))
}

/// The broker.v1 services as an in-process tower service: a tonic client
/// built on it (`DatabaseClient::new(in_process(&backends))`) makes the very
/// same calls as over the network, with no socket. The other doorways
/// (`/call_tool`, MCP, the client library's direct mode) are such clients,
/// so every call goes through one implementation.
pub fn in_process(backends: &Backends) -> InProcess {
    call_steps(backends).layer(BrokerServices::new(
        backends.store.clone(),
        backends.db.clone(),
    ))
}

/// The cross-cutting steps of every gRPC call ([`CallSteps`]).
fn call_steps(backends: &Backends) -> CallSteps {
    CallSteps::new(
        backends.audit.clone(),
        backends.auth.clone(),
        backends.shedder.clone(),
        backends.deadlines,
    )
}

/// See [`in_process`].
pub type InProcess = WithCallSteps<BrokerServices>;

/// Accepts connections (HTTP/1.1 and HTTP/2 on the same port, in TLS when
/// `tls` is set) until `shutdown`; then stops listening, calls `draining`
/// and lets open connections finish for up to `drain_timeout`.
async fn run(
    listener: TcpListener,
    doors: Doors,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    draining: impl FnOnce(),
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Fixed flow-control windows: an upload may have 1 MiB (one chunk) in
    // flight per stream and 4 MiB per connection before the broker has read
    // it, which bounds what a client can make it buffer. (The adaptive
    // window estimates the bandwidth-delay product, which on a short path
    // stays near 64 KiB and turns a 1 MiB upload into a dozen window-update
    // round trips.) A frame is read whole before it is parsed, so the
    // frame size adds at most 1 MiB per connection to that bound.
    builder
        .http2()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_concurrent_streams(1024);
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = Lingering::new(stream);
        let (doors, builder, tls, watcher) = (
            doors.clone(),
            builder.clone(),
            tls.clone(),
            graceful.watcher(),
        );
        // Handshakes happen off the accept loop, so a slow client delays no one.
        tokio::spawn(async move {
            let result = match tls {
                None => serve_connection(&builder, watcher, doors, stream, peer, None).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let name =
                                crate::tls::peer_name(stream.get_ref().1.peer_certificates());
                            serve_connection(&builder, watcher, doors, stream, peer, name).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // New connections are refused before anyone can see NOT_SERVING.
    drop(listener);
    draining();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(?drain_timeout, "drain timeout reached; closing remaining connections");
        }
    }
}

/// Longest a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 flow-control windows the broker grants each client.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024 + 1024;
const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Largest HTTP/2 frame either end accepts (the broker here, the client
/// library in its endpoints): a body chunk and its framing, so that a
/// PutObject or GetObject chunk travels as one DATA frame instead of 64 of
/// 16 KiB (one read or write each).
pub const MAX_FRAME_BYTES: u32 = (crate::object_store::CHUNK_SIZE + 1024) as u32;

type ConnectionError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one connection; every request carries the peer's address and,
/// with mutual TLS, its certificate's name.
async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    doors: Doors,
    stream: IO,
    peer: std::net::SocketAddr,
    certificate_name: Option<String>,
) -> Result<(), ConnectionError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            busy_poll::activity();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(PeerAddr(peer));
            if let Some(name) = &certificate_name {
                request
                    .extensions_mut()
                    .insert(PeerCertificateName(name.clone()));
            }
            doors.call(request).inspect(|_| busy_poll::activity())
        });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    watcher.watch(connection.into_owned()).await
}

/// Reloads the access policy on each SIGHUP; open connections stay up.
async fn reload_policy_on_sighup(auth: Auth) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the policy will not reload");
        return;
    };
    while hangups.recv().await.is_some() {
        if let Err(e) = auth.reload() {
            tracing::error!(error = %format!("{e:#}"), "policy reload rejected; keeping the current policy");
        }
    }
}

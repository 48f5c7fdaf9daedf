//! Test harness: a real PostgreSQL database per test, a real S3-protocol
//! server (s3s-fs) per test, and the real broker on 127.0.0.1:0.
//!
//! PostgreSQL comes from `TEST_DATABASE_URL` (a superuser URL) when set, else
//! the server on 127.0.0.1:5432, else a private cluster this harness starts.

#![allow(dead_code)]

pub use resource_broker::dev::fault_proxy as proxy;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use resource_broker::{
    config::{ServeConfig, StaticCredentials},
    dev::{
        postgres::{self, PostgresServer},
        s3_server::{self, LocalS3},
    },
    proto::{database_client::DatabaseClient, object_store_client::ObjectStoreClient},
};
use tokio::{net::TcpListener, sync::OnceCell, task::JoinHandle};
use tonic::transport::Channel;

pub const BUCKET: &str = "test-bucket";

static SERVER: OnceCell<PostgresServer> = OnceCell::const_new();

/// The PostgreSQL server the tests create their databases on.
pub async fn postgres_server() -> &'static PostgresServer {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
                return PostgresServer { admin_url: url };
            }
            let private = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-pg");
            postgres::find_or_start(&private, 54330)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "no PostgreSQL for the tests: {e:#}\n\
                     Set TEST_DATABASE_URL=postgres://USER@HOST:PORT/postgres (a superuser), \
                     start PostgreSQL on 127.0.0.1:5432, or install it so that initdb is found."
                    )
                })
        })
        .await
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let server = postgres_server().await;
        let name = format!("rb_test_{}", s3_server::random_secret().to_lowercase());
        let url = server
            .ensure_database(&name)
            .await
            .expect("create test database");
        Self { name, url }
    }

    /// A direct connection, to check what the broker did.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a runtime of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let server = PostgresServer {
                    admin_url: std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
                        SERVER
                            .get()
                            .map(|s| s.admin_url.clone())
                            .unwrap_or_default()
                    }),
                };
                let _ = server.drop_database(&name).await;
            });
        })
        .join();
    }
}

/// A real S3-protocol server over a temporary directory.
pub struct TestS3 {
    pub server: LocalS3,
    pub root: tempfile::TempDir,
    pub credentials: StaticCredentials,
}

impl TestS3 {
    pub async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let credentials = StaticCredentials {
            access_key_id: "test-access-key".into(),
            secret_access_key: s3_server::random_secret(),
        };
        let server = LocalS3::start(root.path(), &credentials).await.unwrap();
        Self {
            server,
            root,
            credentials,
        }
    }

    /// Names of unfinished multipart uploads' files left in the store.
    pub fn pending_upload_files(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(".upload"))
            .collect()
    }
}

/// Proxies in front of a broker's backends.
pub struct Proxies {
    pub postgres: proxy::Proxy,
    pub s3: proxy::Proxy,
}

/// A running broker with its own database and object store.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub db: TestDatabase,
    pub s3: TestS3,
    pub config: ServeConfig,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The `broker serve` process, for brokers started as one.
    process: Option<tokio::process::Child>,
}

/// The configuration of a test broker against `db` and `s3`.
pub fn test_config(db: &TestDatabase, s3: &TestS3) -> ServeConfig {
    let mut config = ServeConfig::from_env().expect("default configuration");
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.postgres.database_url = Some(db.url.clone());
    config.postgres.acquire_timeout = Duration::from_secs(5);
    config.s3.s3_bucket = Some(BUCKET.into());
    config.s3.s3_endpoint_url = Some(s3.server.endpoint.clone());
    config.s3.static_credentials = Some(s3.credentials.clone());
    config.s3.part_size_mib = 5;
    config.health_interval = Duration::from_millis(200);
    config.drain_timeout = Duration::from_secs(5);
    config
}

impl TestBroker {
    /// Starts a broker with fresh backends and waits until it is SERVING.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestBroker::start`], after `adjust` has changed the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let db = TestDatabase::create().await;
        let s3 = TestS3::start().await;
        let mut config = test_config(&db, &s3);
        adjust(&mut config);
        let broker = Self::serve(db, s3, config).await;
        broker.wait_for_health("", true).await;
        broker
    }

    /// Starts a broker whose PostgreSQL and S3 connections both run through
    /// proxies the test can cut, hang and restore.
    pub async fn start_behind_proxies(adjust: impl FnOnce(&mut ServeConfig)) -> (Self, Proxies) {
        let (db, s3) = (TestDatabase::create().await, TestS3::start().await);
        let pg_port = db
            .url
            .parse::<tokio_postgres::Config>()
            .unwrap()
            .get_ports()[0];
        let postgres = proxy::Proxy::start(([127, 0, 0, 1], pg_port).into())
            .await
            .unwrap();
        let s3_addr: SocketAddr = s3
            .server
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let objects = proxy::Proxy::start(s3_addr).await.unwrap();
        let mut config = test_config(&db, &s3);
        config.postgres.database_url = Some(db.url.replace(
            &format!(":{pg_port}/"),
            &format!(":{}/", postgres.addr.port()),
        ));
        config.postgres.acquire_timeout = Duration::from_secs(1);
        config.s3.s3_endpoint_url = Some(format!("http://{}", objects.addr));
        config.s3.connect_timeout = Duration::from_millis(500);
        config.s3.attempt_timeout = Duration::from_secs(2);
        adjust(&mut config);
        let broker = Self::serve(db, s3, config).await;
        broker.wait_for_health("", true).await;
        (
            broker,
            Proxies {
                postgres,
                s3: objects,
            },
        )
    }

    /// Starts a broker with fresh backends after `adjust` (for TLS set-ups,
    /// whose health the plaintext helpers cannot check), without waiting.
    pub async fn serve_tls(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let db = TestDatabase::create().await;
        let s3 = TestS3::start().await;
        let mut config = test_config(&db, &s3);
        adjust(&mut config);
        Self::serve(db, s3, config).await
    }

    /// Starts a broker with exactly `config`, without waiting for health.
    pub async fn serve(db: TestDatabase, s3: TestS3, config: ServeConfig) -> Self {
        let listener = TcpListener::bind(config.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(resource_broker::server::serve(
            config.clone(),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            db,
            s3,
            config,
            shutdown: Some(tx),
            task: Some(task),
            process: None,
        }
    }

    /// Starts the real `broker serve` binary against fresh backends, with
    /// `env` added to its environment, and waits until it is SERVING.
    #[allow(dead_code)]
    pub async fn start_process(env: &[(&str, String)]) -> Self {
        let (db, s3) = (TestDatabase::create().await, TestS3::start().await);
        let config = test_config(&db, &s3);
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BROKER_ADDR", addr.to_string())
            .env("DATABASE_URL", &db.url)
            .env("S3_BUCKET", BUCKET)
            .env("S3_ENDPOINT_URL", &s3.server.endpoint)
            .env("AWS_ACCESS_KEY_ID", &s3.credentials.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &s3.credentials.secret_access_key)
            .env("AWS_REGION", "eu-west-3")
            .env("BROKER_HEALTH_INTERVAL", "200ms")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .spawn()
            .expect("start broker serve");
        let mut broker = Self {
            addr,
            db,
            s3,
            config,
            shutdown: None,
            task: None,
            process: Some(process),
        };
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            let exited = broker
                .process
                .as_mut()
                .and_then(|p| p.try_wait().ok().flatten());
            assert!(exited.is_none(), "broker serve exited: {exited:?}");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "broker serve did not listen on {addr} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.wait_for_health("", true).await;
        broker
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to the broker")
    }

    pub async fn object_store(&self) -> ObjectStoreClient<Channel> {
        ObjectStoreClient::new(self.channel().await).max_decoding_message_size(8 * 1024 * 1024)
    }

    pub async fn database(&self) -> DatabaseClient<Channel> {
        DatabaseClient::new(self.channel().await).max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Waits (up to 10 s) until `service` reports serving (or not).
    pub async fn wait_for_health(&self, service: &str, serving: bool) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut client = HealthClient::new(self.channel().await);
        let wanted = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status());
            if matches!(status, Ok(s) if s == wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} did not become {wanted:?} within 10 s (last: {status:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A plain HTTP/1.1 GET on the broker's port: the whole response, head included.
    #[allow(dead_code)]
    pub async fn http_get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
            return Ok(());
        }
        self.shutdown.take().map(|tx| tx.send(()));
        self.task.take().unwrap().await?
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes that cover every byte value and do not repeat with a short period.
pub fn binary_body(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as u8) ^ (i as u8)
        })
        .collect()
}

/// The standard output of a command that must have succeeded; its output
/// and errors are the failure message when it did not.
pub fn succeeded(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}: {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

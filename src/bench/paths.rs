//! The three ways to the same data: direct SDK clients, the broker, and
//! PgBouncer (SQL only).

use std::{collections::HashMap, process::Stdio, time::Duration};

use aws_sdk_s3::{config::Credentials, primitives::ByteStream};
use bytes::Bytes;
use tokio_postgres::{Client, NoTls};

use super::Setup;
use crate::client::BrokerClient;

/// tokio-postgres connections (one per worker) and an aws-sdk-s3 client.
/// Each connection prepares a statement once and reuses it, as a
/// well-behaved direct client does (asyncpg, the seed's driver, caches
/// prepared statements the same way).
pub struct Direct {
    pub sql: Vec<PreparingClient>,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

/// A connection with the statements it prepared.
pub struct PreparingClient {
    client: Client,
    prepared: tokio::sync::Mutex<HashMap<&'static str, tokio_postgres::Statement>>,
}

impl Direct {
    /// Runs `sql` (with one optional text parameter) on worker `worker`'s connection.
    pub async fn query(
        &self,
        worker: usize,
        sql: &'static str,
        param: Option<&str>,
    ) -> anyhow::Result<()> {
        let conn = &self.sql[worker];
        let statement = {
            let mut prepared = conn.prepared.lock().await;
            match prepared.get(sql) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = conn.client.prepare(sql).await?;
                    prepared.insert(sql, statement.clone());
                    statement
                }
            }
        };
        match param {
            Some(p) => conn.client.query(&statement, &[&p]).await?,
            None => conn.client.query(&statement, &[]).await?,
        };
        Ok(())
    }
}

async fn connections(url: &str, count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        clients.push(client);
    }
    Ok(clients)
}

impl Direct {
    pub async fn connect(setup: &Setup, workers: usize) -> anyhow::Result<Self> {
        let credentials = Credentials::new(
            &setup.credentials.access_key_id,
            &setup.credentials.secret_access_key,
            None,
            None,
            "bench",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("eu-west-3"))
            .credentials_provider(credentials)
            .endpoint_url(&setup.s3_endpoint)
            .force_path_style(true)
            .build();
        Ok(Self {
            sql: connections(&setup.database_url, workers)
                .await?
                .into_iter()
                .map(|client| PreparingClient {
                    client,
                    prepared: Default::default(),
                })
                .collect(),
            s3: aws_sdk_s3::Client::from_conf(config),
            bucket: setup.bucket.clone(),
        })
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<usize> {
        let object = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await?;
        let mut body = object.body;
        let mut total = 0;
        while let Some(chunk) = body.try_next().await? {
            total += chunk.len();
        }
        Ok(total)
    }

    pub async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await?;
        Ok(())
    }
}

/// A private PgBouncer in transaction mode in front of the same database.
/// In transaction mode a named statement may be prepared on one server
/// connection and executed on another, so each query goes as one unnamed
/// Parse/Bind/Execute (`query_typed`): one round trip, as PgBouncer's users do.
pub struct PgBouncer {
    pub sql: Vec<Client>,
    _process: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl PgBouncer {
    /// Runs `sql` (with one optional text parameter) on worker `worker`'s connection.
    pub async fn query(&self, worker: usize, sql: &str, param: Option<&str>) -> anyhow::Result<()> {
        let client = &self.sql[worker];
        match param {
            Some(p) => {
                client
                    .query_typed(sql, &[(&p, tokio_postgres::types::Type::TEXT)])
                    .await?
            }
            None => client.query_typed(sql, &[]).await?,
        };
        Ok(())
    }
}

impl PgBouncer {
    /// Starts PgBouncer when it is installed (as the `postgres` user when
    /// run as root, which PgBouncer refuses); `None` with a note otherwise.
    pub async fn start(setup: &Setup) -> anyhow::Result<Option<Self>> {
        let Some(binary) = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            println!(
                "note: pgbouncer is not installed (scripts/bench.sh installs it); SQL is compared with direct only"
            );
            return Ok(None);
        };
        let target: tokio_postgres::Config = setup.database_url.parse()?;
        let host = match target.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = target.get_ports().first().copied().unwrap_or(5432);
        let db = target.get_dbname().unwrap_or("postgres");
        let user = target.get_user().unwrap_or("postgres");
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir =
            std::env::temp_dir().join(format!("broker-bench-pgbouncer-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n"))?;
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\nbench = host={host} port={port} dbname={db} user={user}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nauth_type = trust\nauth_file = {users}\n\
                 pool_mode = transaction\ndefault_pool_size = 10\nmax_client_conn = 1000\n\
                 unix_socket_dir =\nlogfile = {log}\npidfile = {pid}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )?;
        let as_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        });
        let mut command = if as_root {
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", binary]);
            c
        } else {
            tokio::process::Command::new(binary)
        };
        let process = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("postgres://{user}@127.0.0.1:{listen}/bench");
        for _ in 0..100 {
            if tokio_postgres::connect(&url, NoTls).await.is_ok() {
                return Ok(Some(Self {
                    sql: connections(&url, 64).await?,
                    _process: process,
                    dir,
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "note: pgbouncer did not start (see {}); skipped",
            dir.join("pgbouncer.log").display()
        );
        Ok(None)
    }
}

impl Drop for PgBouncer {
    /// Stops PgBouncer itself: under `runuser` it is not the child that
    /// `kill_on_drop` kills.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which way a cell goes.
pub enum Path<'a> {
    Direct(&'a Direct),
    Broker(&'a BrokerClients),
    PgBouncer(&'a PgBouncer),
}

/// The broker path's clients, each with a connection of its own: worker
/// `i` calls through the `i mod n`th.
pub struct BrokerClients(pub Vec<BrokerClient>);

impl BrokerClients {
    pub fn of(&self, worker: usize) -> &BrokerClient {
        &self.0[worker % self.0.len()]
    }
}

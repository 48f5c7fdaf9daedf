//! Finding a PostgreSQL server for development and tests: the one on
//! 127.0.0.1:5432 when it answers, else a private cluster started with
//! initdb/pg_ctl in a data directory (as the `postgres` user when running as
//! root, since PostgreSQL refuses to run as root).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio_postgres::NoTls;

/// Where the machine's own PostgreSQL is expected.
pub const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A server we may create databases on.
pub struct PostgresServer {
    /// Connection URL of the `postgres` database as a superuser.
    pub admin_url: String,
}

/// The local server if it answers, else a private cluster in `data_dir` on `port`.
pub async fn find_or_start(data_dir: &Path, port: u16) -> anyhow::Result<PostgresServer> {
    if answers(LOCAL_ADMIN_URL).await {
        return Ok(PostgresServer {
            admin_url: LOCAL_ADMIN_URL.into(),
        });
    }
    tracing::info!("no PostgreSQL on 127.0.0.1:5432; starting a private cluster");
    start_private(data_dir, port).await
}

/// Whether a server answers at `url` within two seconds.
pub async fn answers(url: &str) -> bool {
    let attempt = async {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(_))
    )
}

impl PostgresServer {
    /// Creates database `name` if missing; returns its URL.
    pub async fn ensure_database(&self, name: &str) -> anyhow::Result<String> {
        let client = self.connect().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            if let Err(e) = client.batch_execute(&sql).await {
                // Another process may have created it in the meantime.
                if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                    return Err(e).context(format!("creating database {name}"));
                }
            }
        }
        Ok(self.url_of(name))
    }

    /// Drops database `name`, disconnecting its sessions.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let sql = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "\"\"")
        );
        client.batch_execute(&sql).await?;
        Ok(())
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, rest)) => match rest.split_once('?') {
                Some((_, query)) => format!("{base}/{name}?{query}"),
                None => format!("{base}/{name}"),
            },
            None => self.admin_url.clone(),
        }
    }

    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .context("connecting to PostgreSQL as its superuser")?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// Starts (or reuses) a private cluster. Safe to call from several processes
/// at once: they serialise on a lock file and the later ones reuse the first's.
pub async fn start_private(data_dir: &Path, port: u16) -> anyhow::Result<PostgresServer> {
    start_private_with_hba(data_dir, port, "").await
}

/// [`start_private`] with `hba` (pg_hba.conf lines) ahead of the trust
/// rules, for example to make some roles authenticate with a password.
pub async fn start_private_with_hba(
    data_dir: &Path,
    port: u16,
    hba: &str,
) -> anyhow::Result<PostgresServer> {
    let data_dir = data_dir.to_path_buf();
    let hba = hba.to_owned();
    tokio::task::spawn_blocking(move || start_private_blocking(&data_dir, port, &hba)).await??;
    let server = PostgresServer {
        admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    };
    if !answers(&server.admin_url).await {
        bail!("the private PostgreSQL cluster on port {port} started but does not answer");
    }
    Ok(server)
}

fn start_private_blocking(data_dir: &Path, port: u16, hba: &str) -> anyhow::Result<()> {
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    // Root's home is usually closed to other users: keep the cluster in /tmp then.
    let data_dir = if as_root {
        std::env::temp_dir().join(format!("resource-broker-pg-{port}"))
    } else {
        std::path::absolute(data_dir)?
    };
    std::fs::create_dir_all(&data_dir)?;
    let lock = std::fs::File::create(data_dir.with_extension("lock"))?;
    lock.lock()?;

    let bin = postgres_bin_dir().context(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install PostgreSQL \
         (apt-get install postgresql) or set TEST_DATABASE_URL / DATABASE_URL",
    )?;
    if as_root {
        run(
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&data_dir),
            "chown",
        )?;
    }
    let command = |program: &str| {
        let path = bin.join(program);
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    };
    if !data_dir.join("PG_VERSION").exists() {
        run(
            command("initdb").arg("-D").arg(&data_dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
            "initdb",
        )?;
    }
    let running = command("pg_ctl")
        .arg("status")
        .arg("-D")
        .arg(&data_dir)
        .output()?
        .status
        .success();
    if !running {
        if !hba.is_empty() {
            std::fs::write(
                data_dir.join("pg_hba.conf"),
                format!("{hba}\nlocal all all trust\nhost all all 127.0.0.1/32 trust\n"),
            )?;
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            data_dir.display()
        );
        run(
            command("pg_ctl")
                .arg("start")
                .arg("-w")
                .arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(data_dir.join("server.log"))
                .arg("-o")
                .arg(options),
            "pg_ctl start",
        )?;
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The directory holding initdb and pg_ctl: on PATH, else Debian's layout.
fn postgres_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

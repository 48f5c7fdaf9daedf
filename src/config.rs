//! Typed configuration for `broker serve`, from flags or the seed's
//! environment variables. Everything is validated here, once, at start-up:
//! a bad value stops the broker with a message that names the variable.

use std::{collections::HashMap, fmt, net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};

/// Everything `broker serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on for gRPC and HTTP.
    #[arg(long, env = "BROKER_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub postgres: PostgresConfig,

    #[command(flatten)]
    pub s3: S3Config,

    #[command(flatten)]
    pub limits: LimitsConfig,

    #[command(flatten)]
    pub resilience: crate::resilience::ResilienceConfig,

    /// TOML access policy (agents, token hashes, grants); without it the broker runs open.
    #[arg(long, env = "BROKER_POLICY_FILE")]
    pub policy_file: Option<std::path::PathBuf>,

    /// PEM certificate chain: serve TLS (gRPC and HTTP) instead of plaintext.
    #[arg(long, env = "BROKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of BROKER_TLS_CERT.
    #[arg(long, env = "BROKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM CA certificates: require client certificates signed by them
    /// (mutual TLS); a certificate's first DNS name is the agent's identity.
    #[arg(long, env = "BROKER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// File the audit trail is appended to (JSON lines); without it, audit
    /// records go to the log under the `audit` target.
    #[arg(long, env = "BROKER_AUDIT_LOG")]
    pub audit_log: Option<std::path::PathBuf>,

    /// Hash-chain the audit file so that edits and deletions are detectable.
    #[arg(long, env = "BROKER_AUDIT_CHAIN", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit_chain: bool,

    /// How often the background probes check S3 and PostgreSQL.
    #[arg(long, env = "BROKER_HEALTH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// On SIGTERM, how long in-flight calls and streams may take to finish.
    #[arg(long, env = "BROKER_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// After each call arrives or is answered, how long the broker's thread
    /// keeps polling its sockets for the next message instead of sleeping
    /// (0s: off; at most 1ms; needs TOKIO_WORKER_THREADS=1). Trades CPU for
    /// latency: for a broker with a core of its own and PostgreSQL on
    /// another machine (README, "Busy polling").
    #[arg(long, env = "BROKER_BUSY_POLL", default_value = "0s", value_parser = crate::busy_poll::parse_window)]
    pub busy_poll: Duration,

    /// Browser origins allowed to call /mcp (comma-separated); requests
    /// with any other Origin header are refused (DNS-rebinding protection).
    /// MCP clients that are not browsers send no Origin and are unaffected.
    #[arg(long, env = "BROKER_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub mcp_allowed_origins: Vec<String>,

    #[command(flatten)]
    pub log: LogConfig,
}

/// Where the PostgreSQL database is and how to pool connections to it.
#[derive(Clone, Args)]
pub struct PostgresConfig {
    /// Full connection URL; when set, the POSTGRES_* variables are ignored.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL host name.
    #[arg(long, env = "POSTGRES_HOST", default_value = "localhost")]
    pub postgres_host: String,

    /// PostgreSQL port.
    #[arg(long, env = "POSTGRES_PORT", default_value_t = 5432)]
    pub postgres_port: u16,

    /// Database name.
    #[arg(long, env = "POSTGRES_DB", default_value = "documents_db")]
    pub postgres_db: String,

    /// Database user.
    #[arg(long, env = "POSTGRES_USER", default_value = "postgres")]
    pub postgres_user: String,

    /// Database password (prefer POSTGRES_PASSWORD_FILE in production).
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true)]
    pub postgres_password: Option<String>,

    /// File holding the database password (for example a mounted secret).
    #[arg(long, env = "POSTGRES_PASSWORD_FILE")]
    pub postgres_password_file: Option<std::path::PathBuf>,

    /// AWS Secrets Manager secret holding the database password (its ARN or
    /// name), fetched at start-up: a plain string, or JSON with a "password"
    /// field as RDS writes it.
    #[arg(long, env = "POSTGRES_PASSWORD_SECRET_ARN")]
    pub postgres_password_secret_arn: Option<String>,

    /// Custom Secrets Manager endpoint (tests, VPC endpoints with private DNS off).
    #[arg(long, env = "AWS_ENDPOINT_URL_SECRETS_MANAGER")]
    pub secrets_endpoint_url: Option<String>,

    /// A read-only role for Query (least privilege): when set, Query runs on
    /// a pool of its own connected as this user, and the main user serves
    /// only writes. Same host, database and settings as the main user.
    #[arg(long, env = "POSTGRES_READ_USER")]
    pub postgres_read_user: Option<String>,

    /// Password of POSTGRES_READ_USER.
    #[arg(long, env = "POSTGRES_READ_PASSWORD", hide_env_values = true)]
    pub postgres_read_password: Option<String>,

    /// File holding the password of POSTGRES_READ_USER.
    #[arg(long, env = "POSTGRES_READ_PASSWORD_FILE")]
    pub postgres_read_password_file: Option<std::path::PathBuf>,

    /// Connections the pool keeps open even when idle.
    #[arg(long, env = "BROKER_PG_POOL_MIN", default_value_t = 2)]
    pub pool_min: u32,

    /// Most connections the pool opens.
    #[arg(long, env = "BROKER_PG_POOL_MAX", default_value_t = 10)]
    pub pool_max: u32,

    /// Query statements of different callers one connection runs back to
    /// back under load (1: one at a time, as a plain pool).
    #[arg(long, env = "BROKER_PG_PIPELINE_DEPTH", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pipeline_depth: u32,

    /// How long a call waits for a free connection before UNAVAILABLE.
    #[arg(long, env = "BROKER_PG_ACQUIRE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub acquire_timeout: Duration,

    /// Connections older than this are closed and replaced.
    #[arg(long, env = "BROKER_PG_MAX_LIFETIME", default_value = "30m", value_parser = parse_duration)]
    pub max_lifetime: Duration,

    /// Idle connections beyond the minimum are closed after this long.
    #[arg(long, env = "BROKER_PG_IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Check each connection with a round trip before handing it out.
    #[arg(long, env = "BROKER_PG_TEST_ON_CHECKOUT", default_value_t = false)]
    pub test_on_checkout: bool,

    /// Server-side limit for any statement (a call's deadline can shorten it).
    #[arg(long, env = "BROKER_PG_STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// Time allowed to open a connection (TCP connect, then PostgreSQL's
    /// start-up and authentication), so that a hung server cannot hold a
    /// pool slot; a `connect_timeout` in DATABASE_URL takes precedence.
    #[arg(long, env = "BROKER_PG_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub pg_connect_timeout: Duration,

    /// How long the network to PostgreSQL may stay silent (data sent and
    /// not acknowledged, keepalives unanswered) before a connection is
    /// declared dead (TCP_USER_TIMEOUT and TCP keepalives).
    #[arg(long, env = "BROKER_PG_TCP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub pg_tcp_timeout: Duration,
}

impl PostgresConfig {
    /// The connection settings, password included; never log the result.
    pub fn connect_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        let mut config = self.base_connect_config()?;
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            self.statement_timeout.as_millis()
        );
        config.options(options.trim_start());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.pg_connect_timeout);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(self.pg_tcp_timeout);
        }
        // Keepalives (on by default) probe an idle connection: the first
        // after half the TCP timeout, then three more over the other half.
        config
            .keepalives_idle((self.pg_tcp_timeout / 2).max(Duration::from_secs(1)))
            .keepalives_interval((self.pg_tcp_timeout / 6).max(Duration::from_secs(1)))
            .keepalives_retries(3);
        Ok(config)
    }

    /// The connection settings of the read role, when one is configured:
    /// the main settings with its user and password, in sessions that are
    /// read-only by default (Query opens READ ONLY transactions anyway).
    pub fn read_connect_config(&self) -> anyhow::Result<Option<tokio_postgres::Config>> {
        let Some(user) = &self.postgres_read_user else {
            if self.postgres_read_password.is_some() || self.postgres_read_password_file.is_some() {
                anyhow::bail!("POSTGRES_READ_PASSWORD(_FILE) is set but POSTGRES_READ_USER is not");
            }
            return Ok(None);
        };
        let mut config = self.connect_config()?;
        config.user(user);
        let password = read_secret(
            "POSTGRES_READ_PASSWORD",
            &self.postgres_read_password,
            &self.postgres_read_password_file,
        )?;
        config.password(password.unwrap_or_default());
        let options = format!(
            "{} -c default_transaction_read_only=on",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim_start());
        Ok(Some(config))
    }

    fn base_connect_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        if let Some(url) = &self.database_url {
            return url.parse().map_err(|_| {
                anyhow::anyhow!(
                    "DATABASE_URL is not a valid PostgreSQL connection string \
                     (expected postgres://user:password@host:port/db)"
                )
            });
        }
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.postgres_host)
            .port(self.postgres_port)
            .dbname(&self.postgres_db)
            .user(&self.postgres_user)
            .application_name("resource-broker");
        if let Some(password) = self.password()? {
            config.password(password);
        }
        Ok(config)
    }

    fn password(&self) -> anyhow::Result<Option<String>> {
        if self.postgres_password_secret_arn.is_some() {
            // Fetched by `crate::secrets::resolve` before the pool is built.
            anyhow::bail!("POSTGRES_PASSWORD_SECRET_ARN has not been fetched yet");
        }
        read_secret(
            "POSTGRES_PASSWORD",
            &self.postgres_password,
            &self.postgres_password_file,
        )
    }

    /// Checks the values that clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.pool_max == 0 {
            anyhow::bail!("BROKER_PG_POOL_MAX must be at least 1");
        }
        if self.pool_min > self.pool_max {
            anyhow::bail!(
                "BROKER_PG_POOL_MIN ({}) is larger than BROKER_PG_POOL_MAX ({})",
                self.pool_min,
                self.pool_max
            );
        }
        if self.postgres_password_secret_arn.is_some() {
            if self.database_url.is_some() {
                anyhow::bail!(
                    "POSTGRES_PASSWORD_SECRET_ARN goes with the POSTGRES_* variables, not DATABASE_URL"
                );
            }
            if self.postgres_password.is_some() || self.postgres_password_file.is_some() {
                anyhow::bail!(
                    "set one of POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE and POSTGRES_PASSWORD_SECRET_ARN"
                );
            }
            let fetched = Self {
                postgres_password_secret_arn: None,
                ..self.clone()
            };
            return fetched
                .connect_config()
                .and_then(|_| fetched.read_connect_config())
                .map(drop);
        }
        self.connect_config()?;
        self.read_connect_config().map(drop)
    }
}

/// A password given in `NAME` or in the file `NAME_FILE` (not both).
fn read_secret(
    name: &str,
    value: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => anyhow::bail!("set {name} or {name}_FILE, not both"),
        (Some(password), None) => Ok(Some(password.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{name}_FILE {}: {e}", path.display()))?;
            Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

// Hand-written so that a password can never reach a log line through `{:?}`.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("postgres_host", &self.postgres_host)
            .field("postgres_port", &self.postgres_port)
            .field("postgres_db", &self.postgres_db)
            .field("postgres_user", &self.postgres_user)
            .field(
                "postgres_password",
                &self.postgres_password.as_ref().map(|_| "<redacted>"),
            )
            .field("postgres_password_file", &self.postgres_password_file)
            .field("postgres_read_user", &self.postgres_read_user)
            .field(
                "postgres_read_password",
                &self.postgres_read_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "postgres_read_password_file",
                &self.postgres_read_password_file,
            )
            .field(
                "postgres_password_secret_arn",
                &self.postgres_password_secret_arn,
            )
            .field("secrets_endpoint_url", &self.secrets_endpoint_url)
            .field("pool_min", &self.pool_min)
            .field("pool_max", &self.pool_max)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("test_on_checkout", &self.test_on_checkout)
            .field("statement_timeout", &self.statement_timeout)
            .field("pg_connect_timeout", &self.pg_connect_timeout)
            .field("pg_tcp_timeout", &self.pg_tcp_timeout)
            .finish()
    }
}

/// Where the S3 bucket is.
#[derive(Debug, Clone, Args)]
pub struct S3Config {
    /// The default bucket, used when a request names none.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "eu-west-3")]
    pub aws_region: String,

    /// Custom S3 endpoint (MinIO, s3s-fs, LocalStack); uses path-style addressing.
    #[arg(long, env = "S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,

    /// Whether uploads' bodies are hashed into their SigV4 signature:
    /// `auto` signs them only over plain HTTP (over TLS, TLS protects them
    /// and the hash is a pass over every byte), `always`, or `never`.
    #[arg(
        long,
        env = "BROKER_S3_PAYLOAD_SIGNING",
        value_enum,
        default_value = "auto"
    )]
    pub payload_signing: PayloadSigning,

    /// Size of each part of a multipart upload, in MiB (5 to 5120).
    #[arg(long, env = "BROKER_S3_PART_SIZE_MIB", default_value_t = 8)]
    pub part_size_mib: usize,

    /// Time allowed to connect to S3.
    #[arg(long, env = "BROKER_S3_CONNECT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for one S3 request attempt (up to the response headers).
    #[arg(long, env = "BROKER_S3_ATTEMPT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,

    /// Longest an object body from S3 may stall (the attempt timeout covers
    /// the wait for the headers): a stalled GetObject fails with UNAVAILABLE.
    #[arg(long, env = "BROKER_S3_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// Fixed credentials instead of the AWS chain (`broker dev` and tests).
    #[arg(skip)]
    pub static_credentials: Option<StaticCredentials>,
}

/// Whether uploads' bodies are signed (`BROKER_S3_PAYLOAD_SIGNING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadSigning {
    /// Signed over plain HTTP, sent as `UNSIGNED-PAYLOAD` over TLS.
    Auto,
    Always,
    Never,
}

/// An access key pair given directly rather than found by the AWS chain.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl S3Config {
    /// Checks the values that clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.s3_bucket.as_deref() {
            None | Some("") => anyhow::bail!(
                "S3_BUCKET is not set: name the bucket the broker serves (--s3-bucket)"
            ),
            Some(bucket) => crate::object_store::validate_bucket(bucket)
                .map_err(|e| anyhow::anyhow!("S3_BUCKET: {e}"))?,
        }
        if let Some(url) = &self.s3_endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!("S3_ENDPOINT_URL must start with http:// or https://, got {url:?}");
        }
        if !(5..=5120).contains(&self.part_size_mib) {
            anyhow::bail!("BROKER_S3_PART_SIZE_MIB must be between 5 and 5120");
        }
        Ok(())
    }

    /// Whether an upload's body is hashed into its signature. SigV4 can
    /// cover every byte (SHA-256, about half the broker's CPU for a 1 MiB
    /// PutObject); over TLS — AWS's own endpoints and any `https://` one —
    /// TLS already protects the body in transit, so `auto` sends it as
    /// `UNSIGNED-PAYLOAD` there (method, bucket, key and headers stay
    /// signed) and signs it only over plain HTTP, where nothing else would.
    pub fn signs_bodies(&self) -> bool {
        match self.payload_signing {
            PayloadSigning::Always => true,
            PayloadSigning::Never => false,
            PayloadSigning::Auto => self.s3_endpoint_url.as_deref().is_some_and(|url| {
                !url.trim_start()
                    .get(..8)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
            }),
        }
    }

    /// The default bucket; only call after [`S3Config::validate`].
    pub fn bucket(&self) -> &str {
        self.s3_bucket.as_deref().unwrap_or_default()
    }
}

/// Caps that protect the broker and its backends.
#[derive(Debug, Clone, Args)]
pub struct LimitsConfig {
    /// Rows a Query returns when its max_rows is 0, and the most it may ask for.
    #[arg(long, env = "BROKER_MAX_ROWS", default_value_t = 10_000)]
    pub max_rows: u32,

    /// Result data one SQL call may return, in MiB; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "BROKER_MAX_RESULT_MIB", default_value_t = 64)]
    pub max_result_mib: u32,
}

impl LimitsConfig {
    /// [`Self::max_result_mib`] in bytes.
    pub fn max_result_bytes(&self) -> usize {
        (self.max_result_mib as usize) << 20
    }
}

/// How the broker writes its logs.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "BROKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC collector to export traces to (one span per call, joined
    /// to the caller's trace by its `traceparent` header); unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Service name on exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "resource-broker")]
    pub otel_service_name: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeConfig {
    /// The database name the broker serves (for MCP resource URIs).
    pub fn database_name(&self) -> String {
        self.postgres
            .connect_config()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_owned))
            .unwrap_or_else(|| self.postgres.postgres_db.clone())
    }

    /// The configuration that flags' defaults and the environment give,
    /// for callers that then override fields (`broker dev`, tests).
    pub fn from_env() -> anyhow::Result<Self> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ServeConfig,
        }
        <Wrapper as clap::Parser>::try_parse_from(["broker"])
            .map(|wrapper| wrapper.config)
            .map_err(|e| {
                let e = name_env_vars(e, &<Wrapper as clap::CommandFactory>::command());
                // The message alone: a usage line for flags nobody typed would mislead.
                let text = e.render().to_string();
                let message = text.split("\n\n").next().unwrap_or_default();
                anyhow::anyhow!("{}", message.trim_start_matches("error: ").trim_end())
            })
    }

    /// The TLS server configuration, when BROKER_TLS_CERT is set.
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                crate::tls::server_config(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            (None, None) if self.tls_client_ca.is_some() => {
                anyhow::bail!("BROKER_TLS_CLIENT_CA needs BROKER_TLS_CERT and BROKER_TLS_KEY")
            }
            (None, None) => Ok(None),
            _ => anyhow::bail!("set both BROKER_TLS_CERT and BROKER_TLS_KEY, or neither"),
        }
    }

    /// Checks everything that clap cannot check alone.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.postgres.validate()?;
        self.s3.validate()?;
        self.resilience.validate()?;
        if self.limits.max_rows == 0 {
            anyhow::bail!("BROKER_MAX_ROWS must be at least 1");
        }
        if !(1..=1024).contains(&self.limits.max_result_mib) {
            anyhow::bail!("BROKER_MAX_RESULT_MIB must be between 1 and 1024");
        }
        Ok(())
    }
}

/// Parses durations such as `500ms`, `5s` or `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))
}

/// Names the environment variable beside the flag in clap's errors
/// (`invalid value 'x' for '--addr <ADDR> [env: BROKER_ADDR]'`): in a
/// container the bad value almost always came from the environment, and clap
/// alone names only the flag. `command` is the (sub)command that was parsed.
pub fn name_env_vars(mut error: clap::Error, command: &clap::Command) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    // Only a built command renders its arguments as clap's messages do.
    let mut command = command.clone();
    command.build();
    let variables: HashMap<String, String> = command
        .get_arguments()
        .filter_map(|arg| {
            Some((
                arg.to_string(),
                arg.get_env()?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    let named = |arg: &String| match variables.get(arg) {
        Some(variable) => format!("{arg} [env: {variable}]"),
        None => arg.clone(),
    };
    for kind in [ContextKind::InvalidArg, ContextKind::PriorArg] {
        let value = match error.get(kind) {
            Some(ContextValue::String(arg)) => ContextValue::String(named(arg)),
            Some(ContextValue::Strings(args)) => {
                ContextValue::Strings(args.iter().map(named).collect())
            }
            _ => continue,
        };
        error.insert(kind, value);
    }
    error
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{PayloadSigning, S3Config};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s3: S3Config,
    }

    fn signs(signing: PayloadSigning, endpoint: Option<&str>) -> bool {
        let mut config = Cli::parse_from(["broker"]).s3;
        config.payload_signing = signing;
        config.s3_endpoint_url = endpoint.map(str::to_owned);
        config.signs_bodies()
    }

    #[test]
    fn auto_signs_bodies_only_where_tls_does_not_protect_them() {
        use PayloadSigning::*;
        assert!(!signs(Auto, None), "AWS's own endpoints are HTTPS");
        assert!(!signs(Auto, Some("https://s3.eu-west-3.amazonaws.com")));
        assert!(!signs(Auto, Some("HTTPS://minio.internal:9000")));
        assert!(signs(Auto, Some("http://127.0.0.1:9000")));
        assert!(signs(Auto, Some("http://https.example")));
        assert!(signs(Always, None));
        assert!(!signs(Never, Some("http://127.0.0.1:9000")));
    }
}

//! `broker loadtest`: the seed's service figures, measured. A broker on
//! loopback serves concurrent agents (point queries, HeadObject, 4 KiB
//! GetObject) while one backend goes down and comes back through a fault
//! proxy; the run reports P50, P99, error rate and availability per phase
//! and per backend, and how long the broker took to serve again. Bounded in
//! time, loopback only; figures are printed and written as JSON, never
//! asserted.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::{
    client::{BrokerClient, ClientOptions, PutOptions},
    config::{ServeConfig, StaticCredentials},
    dev::{fault_proxy::Proxy, postgres, s3_server},
};

/// Options of `broker loadtest`.
#[derive(Debug, Clone, Args)]
pub struct LoadTestArgs {
    /// Length of the whole run.
    #[arg(long, default_value = "20s", value_parser = crate::config::parse_duration)]
    pub duration: Duration,
    /// Concurrent agents.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Backend taken down during the run.
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    pub outage: Backend,
    /// When the outage starts.
    #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
    pub outage_at: Duration,
    /// How long the backend stays down.
    #[arg(long, default_value = "3s", value_parser = crate::config::parse_duration)]
    pub outage_for: Duration,
    /// The broker's breaker recovery time for this run (production default 60s).
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub breaker_recovery: Duration,
    /// Where the JSON report goes.
    #[arg(long, default_value = "loadtest.json")]
    pub json: PathBuf,
    /// A PostgreSQL superuser URL; default: the server on 127.0.0.1:5432, or a private cluster.
    #[arg(long, env = "LOADTEST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// A backend of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Postgres,
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Before,
    During,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Operation {
    Query,
    HeadObject,
    GetObject,
}

impl Operation {
    fn backend(self) -> Backend {
        match self {
            Self::Query => Backend::Postgres,
            Self::HeadObject | Self::GetObject => Backend::S3,
        }
    }
}

struct Sample {
    at: Duration,
    operation: Operation,
    latency: Duration,
    ok: bool,
}

/// Figures for one slice of the samples.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub calls: usize,
    pub errors: usize,
    pub error_rate: f64,
    pub availability: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub throughput_per_s: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub concurrency: usize,
    pub duration_s: f64,
    pub outage: Backend,
    pub outage_at_s: f64,
    pub outage_for_s: f64,
    pub breaker_recovery_s: f64,
    pub overall: Figures,
    /// Backend → phase → figures.
    pub by_backend: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Figures>>,
    /// From the backend's return to the first successful call on it.
    pub recovery_s: Option<f64>,
}

/// Runs the load test and prints the report.
pub async fn run(args: LoadTestArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.outage_at + args.outage_for < args.duration,
        "the outage (--outage-at + --outage-for) must end before --duration"
    );
    let scratch = tempfile_dir()?;
    let database = match &args.database_url {
        Some(url) => LoadDatabase::Given(url.clone()),
        None => {
            let server = postgres::find_or_start(&scratch.join("pg"), 54330).await?;
            let name = format!("broker_loadtest_{}", std::process::id());
            let url = server.ensure_database(&name).await?;
            LoadDatabase::Created { server, name, url }
        }
    };
    let credentials = StaticCredentials {
        access_key_id: "loadtest".into(),
        secret_access_key: s3_server::random_secret(),
    };
    std::fs::create_dir_all(scratch.join("s3").join("loadtest"))?;
    let s3 = s3_server::LocalS3::start(&scratch.join("s3"), &credentials).await?;

    let pg_url: tokio_postgres::Config = database.url().parse()?;
    let pg_port = pg_url.get_ports().first().copied().unwrap_or(5432);
    let pg_proxy = Proxy::start(([127, 0, 0, 1], pg_port).into()).await?;
    let s3_addr: std::net::SocketAddr = s3.endpoint.trim_start_matches("http://").parse()?;
    let s3_proxy = Proxy::start(s3_addr).await?;

    let mut config = ServeConfig::from_env()?;
    // Through the proxy: the same database, user and password, another port.
    config.postgres.database_url = None;
    config.postgres.postgres_host = "127.0.0.1".into();
    config.postgres.postgres_port = pg_proxy.addr.port();
    config.postgres.postgres_db = pg_url.get_dbname().unwrap_or("postgres").into();
    config.postgres.postgres_user = pg_url.get_user().unwrap_or("postgres").into();
    config.postgres.postgres_password = pg_url
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    config.postgres.pool_max = 10;
    config.s3.s3_bucket = Some("loadtest".into());
    config.s3.s3_endpoint_url = Some(format!("http://{}", s3_proxy.addr));
    config.s3.static_credentials = Some(credentials);
    config.s3.connect_timeout = Duration::from_millis(500);
    config.resilience.breaker_recovery = args.breaker_recovery;
    config.health_interval = Duration::from_millis(250);
    config.validate()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(config, listener, async {
        let _ = stopped.await;
    }));

    // Long enough that a loaded machine's pauses do not count as errors;
    // an outage fails calls at once (UNAVAILABLE), not by timing out.
    let options = ClientOptions {
        timeout: Some(Duration::from_secs(5)),
        ..ClientOptions::default()
    };
    let client = BrokerClient::connect(&format!("http://{addr}"), options).await?;
    prepare(&client).await?;

    let samples = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + args.duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| tokio::spawn(work(client.clone(), worker, start, end, samples.clone())))
        .collect();
    let proxy = match args.outage {
        Backend::Postgres => &pg_proxy,
        Backend::S3 => &s3_proxy,
    };
    tokio::time::sleep_until((start + args.outage_at).into()).await;
    proxy.down();
    tokio::time::sleep_until((start + args.outage_at + args.outage_for).into()).await;
    proxy.up();
    for worker in workers {
        worker.await?;
    }
    let _ = stop.send(());
    server.await??;
    if let LoadDatabase::Created { server, name, .. } = &database {
        server.drop_database(name).await?;
    }
    let _ = std::fs::remove_dir_all(scratch.join("s3"));

    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let report = report(&args, &samples);
    print(&report);
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("report written to {}", args.json.display());
    Ok(report)
}

enum LoadDatabase {
    Given(String),
    Created {
        server: postgres::PostgresServer,
        name: String,
        url: String,
    },
}

impl LoadDatabase {
    fn url(&self) -> &str {
        match self {
            Self::Given(url) | Self::Created { url, .. } => url,
        }
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("broker-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn prepare(client: &BrokerClient) -> anyhow::Result<()> {
    client.init_schema().await?;
    for i in 0..100 {
        client
            .execute(
                "INSERT INTO documents (s3_key, document_type, file_name) VALUES ($1, 'csv', $2) ON CONFLICT (s3_key) DO NOTHING",
                &[format!("load/{i}.csv").into(), format!("{i}.csv").into()],
            )
            .await?;
    }
    client
        .put_bytes("load/object.bin", PutOptions::default(), vec![7u8; 4096])
        .await?;
    Ok(())
}

async fn work(
    client: BrokerClient,
    worker: usize,
    start: Instant,
    end: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let mut mine = Vec::new();
    let mut n = worker;
    while Instant::now() < end {
        let operation = [
            Operation::Query,
            Operation::HeadObject,
            Operation::GetObject,
        ][n % 3];
        let began = Instant::now();
        let ok = match operation {
            Operation::Query => client
                .query(
                    "SELECT id, status FROM documents WHERE s3_key = $1",
                    &[format!("load/{}.csv", n % 100).into()],
                )
                .await
                .is_ok(),
            Operation::HeadObject => client.head_object("load/object.bin").await.is_ok(),
            Operation::GetObject => client.get_bytes("load/object.bin", 1 << 20).await.is_ok(),
        };
        let latency = began.elapsed();
        mine.push(Sample {
            at: began - start,
            operation,
            latency,
            ok,
        });
        if !ok {
            // An agent backs off a little after an error rather than spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n += 1;
    }
    samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(mine);
}

fn phase(args: &LoadTestArgs, at: Duration) -> Phase {
    if at < args.outage_at {
        Phase::Before
    } else if at < args.outage_at + args.outage_for {
        Phase::During
    } else {
        Phase::After
    }
}

fn figures<'a>(samples: impl Iterator<Item = &'a Sample>, seconds: f64) -> Figures {
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for sample in samples {
        latencies.push(sample.latency);
        errors += usize::from(!sample.ok);
    }
    latencies.sort_unstable();
    let calls = latencies.len();
    let quantile = |q: f64| {
        latencies
            .get(((calls as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let rate = if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    };
    Figures {
        calls,
        errors,
        error_rate: rate,
        availability: 1.0 - rate,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        throughput_per_s: if seconds > 0.0 {
            calls as f64 / seconds
        } else {
            0.0
        },
    }
}

fn report(args: &LoadTestArgs, samples: &[Sample]) -> Report {
    let mut by_backend = std::collections::BTreeMap::new();
    let lengths = [
        (Phase::Before, args.outage_at),
        (Phase::During, args.outage_for),
        (
            Phase::After,
            args.duration
                .saturating_sub(args.outage_at + args.outage_for),
        ),
    ];
    for backend in [Backend::Postgres, Backend::S3] {
        let mut phases = std::collections::BTreeMap::new();
        for (p, length) in lengths {
            let slice = samples
                .iter()
                .filter(|s| s.operation.backend() == backend && phase(args, s.at) == p);
            phases.insert(
                format!("{p:?}").to_lowercase(),
                figures(slice, length.as_secs_f64()),
            );
        }
        by_backend.insert(format!("{backend:?}").to_lowercase(), phases);
    }
    let restored = args.outage_at + args.outage_for;
    let recovery_s = samples
        .iter()
        .filter(|s| s.ok && s.operation.backend() == args.outage && s.at >= restored)
        .map(|s| (s.at + s.latency).saturating_sub(restored).as_secs_f64())
        .reduce(f64::min);
    Report {
        concurrency: args.concurrency,
        duration_s: args.duration.as_secs_f64(),
        outage: args.outage,
        outage_at_s: args.outage_at.as_secs_f64(),
        outage_for_s: args.outage_for.as_secs_f64(),
        breaker_recovery_s: args.breaker_recovery.as_secs_f64(),
        overall: figures(samples.iter(), args.duration.as_secs_f64()),
        by_backend,
        recovery_s,
    }
}

fn print(report: &Report) {
    println!(
        "\nbroker loadtest: {} agents for {:.0}s, {:?} down from {:.0}s for {:.0}s (breaker recovery {:.0}s)\n",
        report.concurrency,
        report.duration_s,
        report.outage,
        report.outage_at_s,
        report.outage_for_s,
        report.breaker_recovery_s
    );
    println!(
        "{:<10} {:<8} {:>8} {:>8} {:>10} {:>12} {:>9} {:>9} {:>10}",
        "backend",
        "phase",
        "calls",
        "errors",
        "error %",
        "availability",
        "p50 ms",
        "p99 ms",
        "calls/s"
    );
    let row = |backend: &str, phase: &str, f: &Figures| {
        println!(
            "{backend:<10} {phase:<8} {:>8} {:>8} {:>9.3}% {:>11.3}% {:>9.2} {:>9.2} {:>10.0}",
            f.calls,
            f.errors,
            f.error_rate * 100.0,
            f.availability * 100.0,
            f.p50_ms,
            f.p99_ms,
            f.throughput_per_s
        );
    };
    for (backend, phases) in &report.by_backend {
        for phase in ["before", "during", "after"] {
            if let Some(f) = phases.get(phase) {
                row(backend, phase, f);
            }
        }
    }
    row("all", "all", &report.overall);
    match report.recovery_s {
        Some(s) => println!(
            "\n{:?} served again {s:.2}s after it came back",
            report.outage
        ),
        None => println!(
            "\n{:?} did not serve again before the end of the run",
            report.outage
        ),
    }
    println!(
        "seed targets: P50 < 50 ms, P99 < 200 ms, availability > 99.9%, errors < 0.1% (outside the outage)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rates() {
        let samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                at: Duration::ZERO,
                operation: Operation::Query,
                latency: Duration::from_millis(i),
                ok: i != 100,
            })
            .collect();
        let f = figures(samples.iter(), 10.0);
        assert_eq!((f.calls, f.errors), (100, 1));
        assert_eq!((f.p50_ms, f.p99_ms), (50.0, 99.0));
        assert!((f.availability - 0.99).abs() < 1e-9);
        assert_eq!(f.throughput_per_s, 10.0);
    }
}

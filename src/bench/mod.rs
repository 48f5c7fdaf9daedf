//! `broker bench`: what the broker costs on the hot path, measured. One run
//! drives the same work through (a) the direct path (tokio-postgres and
//! aws-sdk-s3 from this process), (b) the broker over gRPC with the client
//! library, and (c) for SQL, PgBouncer in transaction mode when it is
//! installed. The broker runs as a child process (`broker serve`) so its CPU
//! time and memory are its own. Figures are printed and written as JSON;
//! nothing is asserted.

mod pacer;
mod paths;
mod report;
mod targets;
mod workload;

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;

use crate::{
    client::{BrokerClient, ClientOptions},
    config::StaticCredentials,
    dev::{postgres, s3_server},
};
pub use report::{Cell, Report};
use workload::{Load, Workload};

/// Options of `broker bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Time each (workload, path, concurrency) cell runs.
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub duration: Duration,
    /// Concurrency levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Workloads (comma-separated): select1, point_lookup, rows100, head, get4k, put4k, get1m, put1m.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "select1,point_lookup,rows100,head,get4k,put4k,get1m,put1m"
    )]
    pub workloads: Vec<String>,
    /// Size of the streaming put+get (MiB; 0 skips it), on a fresh broker
    /// whose peak RSS is reported.
    #[arg(long, default_value_t = 1024)]
    pub stream_mib: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// A PostgreSQL superuser URL; default: the server on 127.0.0.1:5432, or a private cluster.
    #[arg(long, env = "BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Skip PgBouncer even when it is installed.
    #[arg(long)]
    pub no_pgbouncer: bool,
    /// Worker threads of the broker under test (its TOKIO_WORKER_THREADS).
    /// One by default: PgBouncer, the peer, runs on one thread, and on a
    /// small machine shared with PostgreSQL and the clients a second
    /// worker costs more in wake-ups than it brings.
    #[arg(long, default_value_t = 1)]
    pub broker_threads: usize,
    /// HTTP/2 connections the clients share out on the broker path (client
    /// `i` uses connection `i mod n`). One by default: one agent process
    /// with one `BrokerClient`, its calls multiplexed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub broker_connections: u16,
    /// The broker under test's BROKER_BUSY_POLL (0s: off, as by default):
    /// how long its thread keeps polling for the next message after each
    /// call arrives or is answered. Needs `--broker-threads 1`.
    #[arg(long, default_value = "0s", value_parser = crate::busy_poll::parse_window)]
    pub broker_busy_poll: Duration,
    /// After each workload's cells, run it once more at the largest
    /// concurrency on a fixed schedule (an open loop): this fraction of the
    /// calls/s the broker reached there, the same on every path (0 skips).
    /// The closed-loop cells show latency at saturation; these show it at a
    /// load the machine carries.
    #[arg(long, default_value_t = 0.25, value_parser = parse_fraction)]
    pub paced_load: f64,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

/// Clock ticks per second of `/proc`'s CPU times (USER_HZ: 100 on Linux).
const USER_HZ: f64 = 100.0;

/// The broker child process and how to read its resource use.
pub struct BrokerProcess {
    child: tokio::process::Child,
    pub url: String,
    pub startup: Duration,
    pub idle_rss_kib: u64,
    /// The private (anonymous) part of the idle RSS; the rest is the
    /// binary's code pages, shared and reclaimable page cache.
    pub idle_anon_kib: u64,
}

impl BrokerProcess {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may contain spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
        (ticks(11) + ticks(12)) / USER_HZ
    }

    /// (current RSS, peak RSS) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        (self.status_kib("VmRSS:"), self.status_kib("VmHWM:"))
    }

    /// A KiB figure of /proc/PID/status (0 when unreadable).
    fn status_kib(&self, name: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Peak RSS in MiB since start or the last [`Self::reset_peak`].
    pub fn peak_rss_mib(&self) -> f64 {
        self.rss_kib().1 as f64 / 1024.0
    }

    /// Resets the peak RSS so the next phase's peak is its own.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

/// A one-worker runtime beside the bench's own, shut down without waiting
/// when dropped (a runtime may not be dropped the ordinary way from async
/// code).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    fn new(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0
            .as_ref()
            .expect("the runtime lives until dropped")
            .spawn(future)
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The backends every path shares.
pub struct Setup {
    pub database_url: String,
    pub bucket: String,
    pub s3_endpoint: String,
    pub credentials: StaticCredentials,
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.broker_busy_poll.is_zero() || args.broker_threads == 1,
        "--broker-busy-poll needs --broker-threads 1 (the broker polls on its one thread)"
    );
    let scratch = std::env::temp_dir().join(format!("broker-bench-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("s3").join("bench"))?;
    let server = match &args.database_url {
        Some(url) => postgres::PostgresServer {
            admin_url: url.clone(),
        },
        None => postgres::find_or_start(&scratch.join("pg"), 54331).await?,
    };
    let name = format!("broker_bench_{}", std::process::id());
    let database_url = server.ensure_database(&name).await?;
    let credentials = StaticCredentials {
        access_key_id: "bench".into(),
        secret_access_key: s3_server::random_secret(),
    };
    // The S3 server stands in for a service of its own: it gets its own
    // threads, so it does not compete with the load generator's event loop.
    let s3_runtime = BackgroundRuntime::new("bench-s3")?;
    let s3 = {
        let (root, credentials) = (scratch.join("s3"), credentials.clone());
        s3_runtime
            .spawn(async move { s3_server::LocalS3::start(&root, &credentials).await })
            .await??
    };
    let setup = Arc::new(Setup {
        database_url: database_url.clone(),
        bucket: "bench".into(),
        s3_endpoint: s3.endpoint.clone(),
        credentials,
    });

    let result = measure(&args, &setup).await;
    drop(s3);
    drop(s3_runtime);
    let _ = server.drop_database(&name).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    report.print();
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport written to {}", args.json.display());
    Ok(report)
}

async fn measure(args: &BenchArgs, setup: &Arc<Setup>) -> anyhow::Result<Report> {
    let mut broker = start_broker(setup, args).await?;
    let client = BrokerClient::connect(&broker.url, ClientOptions::default()).await?;
    workload::prepare(&client).await?;
    let mut clients = paths::BrokerClients(vec![client.clone()]);
    for _ in 1..args.broker_connections {
        clients
            .0
            .push(BrokerClient::connect(&broker.url, ClientOptions::default()).await?);
    }
    let direct =
        paths::Direct::connect(setup, args.concurrency.iter().copied().max().unwrap_or(1)).await?;
    let pgbouncer = if args.no_pgbouncer {
        None
    } else {
        paths::PgBouncer::start(setup).await?
    };
    let mut report = Report::new(&broker, pgbouncer.is_some(), args);

    let workloads: Vec<Workload> = args
        .workloads
        .iter()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()?;
    let paths = Paths {
        direct: paths::Path::Direct(&direct),
        broker: paths::Path::Broker(&clients),
        pgbouncer: pgbouncer.as_ref().map(paths::Path::PgBouncer),
        process: &broker,
    };
    let most = args.concurrency.iter().copied().max().unwrap_or(1);
    for workload in &workloads {
        // What the broker reached at the largest concurrency.
        let mut saturated = 0.0;
        for &concurrency in &args.concurrency {
            let (direct, broker, bouncer) = paths
                .cells(workload, concurrency, Load::Closed, args.duration)
                .await?;
            if concurrency == most {
                saturated = broker.ops_per_s;
            }
            report.add(*workload, concurrency, direct, broker, bouncer);
        }
        if args.paced_load > 0.0 && saturated > 0.0 {
            let calls_per_s = args.paced_load * saturated;
            let (direct, broker, bouncer) = paths
                .cells(workload, most, Load::Paced { calls_per_s }, args.duration)
                .await?;
            report.add_paced(*workload, most, calls_per_s, direct, broker, bouncer);
        }
    }
    let _ = broker.child.kill().await;
    if args.stream_mib > 0 {
        // A broker of its own, so that its peak memory is the stream's and
        // not what the concurrent cells before it left resident.
        let mut broker = start_broker(setup, args).await?;
        let client = BrokerClient::connect(&broker.url, ClientOptions::default()).await?;
        report.streaming =
            Some(workload::stream(&direct, &client, &broker, args.stream_mib).await?);
        let _ = broker.child.kill().await;
    }
    report.judge();
    Ok(report)
}

/// The paths one cell's work goes through.
struct Paths<'a> {
    direct: paths::Path<'a>,
    broker: paths::Path<'a>,
    pgbouncer: Option<paths::Path<'a>>,
    process: &'a BrokerProcess,
}

impl Paths<'_> {
    /// The same work on each path in turn: direct, the broker, and
    /// PgBouncer for SQL when it runs.
    async fn cells(
        &self,
        workload: &Workload,
        concurrency: usize,
        load: Load,
        duration: Duration,
    ) -> anyhow::Result<(Cell, Cell, Option<Cell>)> {
        let run =
            |path, broker| workload::run_cell(workload, path, concurrency, load, duration, broker);
        let direct = run(&self.direct, None).await?;
        let broker = run(&self.broker, Some(self.process)).await?;
        let bouncer = match (&self.pgbouncer, workload.is_sql()) {
            (Some(bouncer), true) => Some(run(bouncer, None).await?),
            _ => None,
        };
        Ok((direct, broker, bouncer))
    }
}

/// Starts `broker serve` on a free loopback port and waits until SERVING.
async fn start_broker(setup: &Setup, args: &BenchArgs) -> anyhow::Result<BrokerProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .env("BROKER_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &setup.database_url)
        .env("S3_BUCKET", &setup.bucket)
        .env("S3_ENDPOINT_URL", &setup.s3_endpoint)
        .env("AWS_ACCESS_KEY_ID", &setup.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            &setup.credentials.secret_access_key,
        )
        .env("AWS_REGION", "eu-west-3")
        .env("BROKER_HEALTH_INTERVAL", "100ms")
        .env(
            "TOKIO_WORKER_THREADS",
            args.broker_threads.max(1).to_string(),
        )
        .env(
            "BROKER_BUSY_POLL",
            format!("{}us", args.broker_busy_poll.as_micros()),
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    while !serving(&addr).await {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the broker under test exited ({status}) before it was SERVING");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the broker did not become SERVING within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut broker = BrokerProcess {
        child,
        url: format!("http://{addr}"),
        startup: started.elapsed(),
        idle_rss_kib: 0,
        idle_anon_kib: 0,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.idle_rss_kib = broker.rss_kib().0;
    broker.idle_anon_kib = broker.status_kib("RssAnon:");
    Ok(broker)
}

/// Whether grpc.health.v1 says SERVING for the whole broker.
async fn serving(addr: &str) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_millis(100)))
    else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

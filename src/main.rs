//! The `broker` binary: parses the command line and calls the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use resource_broker::{
    busy_poll,
    config::{self, ServeConfig},
    dev::DevArgs,
    healthcheck, server, shutdown, telemetry,
};
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: a quarter to a third less broker CPU
/// per S3 call (aws-sdk-s3 allocates and frees many small objects per
/// request), a little less for SQL. Built with `no_thp`: on transparent huge pages its
/// segments would add 7 MiB of private memory to an idle broker
/// (docs/performance.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A gRPC broker that serves an S3 bucket and a PostgreSQL database to agents.
#[derive(Parser)]
#[command(name = "broker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on one port (production).
    Serve(Box<ServeConfig>),
    /// Serve with a local S3 directory and a local PostgreSQL: no AWS needed.
    Dev(DevArgs),
    /// Check a running broker's gRPC health (exit 0 serving, 2 connection
    /// failure, 3 RPC failure, 4 not serving), like grpc_health_probe.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Access policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Make a new random agent token and print it with its SHA-256 for the policy file.
    Token {
        /// Agent name for the printed policy snippet.
        #[arg(long, default_value = "my-agent")]
        agent: String,
    },
    /// Serve the MCP tools over stdin/stdout (for desktop MCP clients that
    /// launch servers), against the backends the environment configures.
    /// BROKER_TOKEN identifies the caller when a policy file is set.
    McpStdio(Box<ServeConfig>),
    /// Measure the broker against direct SDK calls (and PgBouncer) on this machine.
    Bench(resource_broker::bench::BenchArgs),
    /// Load the broker on loopback while a backend goes down and comes back;
    /// print P50, P99, error rate and availability per phase.
    Loadtest(resource_broker::loadtest::LoadTestArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Read a policy file as the broker would and say what each agent may
    /// do; exit 1 with the broker's own error when it would refuse the file.
    Check {
        /// The policy file (BROKER_POLICY_FILE).
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a hash-chained audit file; exit 1 at the first broken or edited record.
    Verify {
        /// The audit file (BROKER_AUDIT_LOG).
        file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let args = healthcheck::normalize_args(std::env::args());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let command = Cli::command();
            let parsed = args.get(1).and_then(|name| command.find_subcommand(name));
            let e = config::name_env_vars(e, parsed.unwrap_or(&command));
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(healthcheck::exit::INVALID_ARGUMENTS)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match runtime(&cli.command) {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime. One thread (tokio's current-thread scheduler) for
/// `bench`, whose load generator is one event loop like the seed's asyncio
/// agents, and whenever `TOKIO_WORKER_THREADS=1` asks for a single worker:
/// the same work as a one-worker thread pool without the hand-offs between
/// the worker and the thread that waits on the runtime (about a tenth less
/// broker CPU per Query). Otherwise a worker per core, or
/// `TOKIO_WORKER_THREADS`. `broker serve` with `BROKER_BUSY_POLL` polls on
/// its one thread ([`busy_poll`]).
fn runtime(command: &Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let bench = matches!(command, Command::Bench(_));
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let busy_poll_window = match command {
        Command::Serve(config) => config.busy_poll,
        _ => std::time::Duration::ZERO,
    };
    if !busy_poll_window.is_zero() && !one_worker {
        anyhow::bail!(
            "BROKER_BUSY_POLL needs TOKIO_WORKER_THREADS=1: it keeps the broker's one thread polling"
        );
    }
    let runtime = if bench || one_worker {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    if !busy_poll_window.is_zero() {
        runtime.spawn(busy_poll::run(busy_poll_window));
    }
    Ok(runtime)
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(config) => match telemetry::init(&config.log) {
            // The guard flushes exported spans when serve returns.
            Ok(_guard) => serve(*config).await,
            Err(e) => Err(e),
        },
        Command::Dev(args) => {
            let log = resource_broker::config::LogConfig {
                log_format: resource_broker::config::LogFormat::Text,
                otlp_endpoint: None,
                otel_service_name: String::new(),
            };
            let _ = telemetry::init(&log);
            resource_broker::dev::run(args, shutdown::signal()).await
        }
        Command::McpStdio(config) => {
            telemetry::init_stderr();
            mcp_stdio(*config).await
        }
        Command::Bench(args) => {
            telemetry::init_stderr();
            resource_broker::bench::run(args).await.map(drop)
        }
        Command::Loadtest(args) => {
            let log = resource_broker::config::LogConfig {
                log_format: resource_broker::config::LogFormat::Text,
                otlp_endpoint: None,
                otel_service_name: String::new(),
            };
            let _ = telemetry::init(&log);
            resource_broker::loadtest::run(args).await.map(drop)
        }
        Command::Healthcheck(args) => return ExitCode::from(healthcheck::run(&args).await),
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => match resource_broker::audit::verify(&file) {
            Ok(count) => {
                println!("ok: {count} records, chain intact");
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(e),
        },
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => match resource_broker::auth::Policy::load(&file) {
            Ok(policy) => {
                print!(
                    "{}",
                    resource_broker::auth::summary::describe(&policy, chrono::Utc::now())
                );
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(e),
        },
        Command::Token { agent } => {
            let token = resource_broker::auth::token::generate();
            match resource_broker::auth::token::policy_entry(&agent, &token) {
                Ok(entry) => {
                    println!(
                        "token (give to the agent as BROKER_TOKEN; it is not stored anywhere):\n  {token}\n"
                    );
                    println!("policy entry (BROKER_POLICY_FILE):\n\n{entry}");
                    return ExitCode::SUCCESS;
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn mcp_stdio(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let backends = resource_broker::server::Backends::from_config(&config).await?;
    let token = std::env::var("BROKER_TOKEN").ok().filter(|t| !t.is_empty());
    let server = resource_broker::mcp::BrokerMcp::new(
        resource_broker::server::in_process(&backends),
        backends.auth.clone(),
        config.database_name(),
        config.s3.bucket().to_owned(),
    )
    .with_token(token.as_deref())?;
    resource_broker::mcp::serve_stdio(server).await
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.validate()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (BROKER_ADDR): {e}", config.addr))?;
    server::serve(config, listener, shutdown::signal()).await
}

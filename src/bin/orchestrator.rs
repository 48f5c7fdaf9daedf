//! The orchestrator agent (see `resource_broker::agents::orchestrator`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use resource_broker::agents::{
    CommonArgs,
    jsonrpc::{self, Peer},
    orchestrator::{Orchestrator, Service},
};

/// Runs the document pipeline (extract → validate → archive). Task state is
/// kept in PostgreSQL through the broker, so a restarted (or another)
/// orchestrator resumes unfinished tasks. Broker grant: object_store read,
/// database write.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "AGENT_ADDR", default_value = "0.0.0.0:8001")]
    addr: SocketAddr,
    /// The extractor agent.
    #[arg(long, env = "EXTRACTOR_URL", default_value = "http://localhost:8002")]
    extractor_url: String,
    /// The archivist agent.
    #[arg(long, env = "ARCHIVIST_URL", default_value = "http://localhost:8004")]
    archivist_url: String,
    /// How long a task stays claimed by this orchestrator without renewal
    /// (renewed every third of it). Another orchestrator resumes a task
    /// whose lease expired, so this bounds how long a killed orchestrator's
    /// tasks wait. At least 1s.
    #[arg(long, env = "AGENT_TASK_LEASE", default_value = "30s", value_parser = resource_broker::config::parse_duration)]
    task_lease: Duration,
    /// Longest wait for a peer agent's answer.
    #[arg(long, env = "AGENT_PEER_TIMEOUT", default_value = "120s", value_parser = resource_broker::config::parse_duration)]
    peer_timeout: Duration,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.init_logging();
    if args.task_lease < Duration::from_secs(1) {
        anyhow::bail!("AGENT_TASK_LEASE (--task-lease) must be at least 1s");
    }
    let broker = args.common.connect().await?;
    broker.init_schema().await?;
    let orchestrator = Orchestrator::new(
        broker,
        Peer::new(&args.extractor_url, args.peer_timeout)?,
        Peer::new(&args.archivist_url, args.peer_timeout)?,
        args.task_lease,
    );
    let resumed = orchestrator.resume().await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished tasks");
    }
    tokio::spawn(orchestrator.clone().keep_resuming());
    let app = jsonrpc::router(Orchestrator::card(), Arc::new(Service(orchestrator)));
    jsonrpc::serve("orchestrator", args.addr, app).await
}

//! The orchestrator agent (see `resource_broker::agents::orchestrator`).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use resource_broker::{
    agents::{
        CommonArgs,
        jsonrpc::{self, Peer},
        orchestrator::{Orchestrator, Service},
    },
    client::BrokerClient,
};

/// Runs the document pipeline (extract → validate → archive). Task state is
/// kept in PostgreSQL through the broker: BROKER_URL (or MCP_SERVER_URL) and
/// BROKER_TOKEN; with neither URL set, direct mode from the broker's own
/// variables (DATABASE_URL or POSTGRES_*, S3_BUCKET, ...).
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
    let broker = BrokerClient::from_env().await?;
    broker.init_schema().await?;
    let orchestrator = Orchestrator::new(
        broker,
        Peer::new(&args.extractor_url, args.peer_timeout)?,
        Peer::new(&args.archivist_url, args.peer_timeout)?,
    );
    let resumed = orchestrator.resume().await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished tasks");
    }
    let app = jsonrpc::router(Orchestrator::card(), Arc::new(Service(orchestrator)));
    jsonrpc::serve("orchestrator", args.addr, app).await
}

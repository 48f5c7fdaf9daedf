//! The archivist agent (see `resource_broker::agents::archivist`).

use std::net::SocketAddr;

use clap::Parser;
use resource_broker::{
    agents::{CommonArgs, archivist::Archivist, jsonrpc},
    client::BrokerClient,
};

/// Validates extractions and archives documents in PostgreSQL through the
/// broker: BROKER_URL (or MCP_SERVER_URL) and BROKER_TOKEN; with neither URL
/// set, direct mode from the broker's own variables (DATABASE_URL or
/// POSTGRES_*, S3_BUCKET, ...).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "AGENT_ADDR", default_value = "0.0.0.0:8004")]
    addr: SocketAddr,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.init_logging();
    let broker = BrokerClient::from_env().await?;
    let app = jsonrpc::router(Archivist::card(), Archivist::new(broker));
    jsonrpc::serve("archivist", args.addr, app).await
}

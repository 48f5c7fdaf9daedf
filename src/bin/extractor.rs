//! The extractor agent (see `resource_broker::agents::extractor`).

use std::net::SocketAddr;

use clap::Parser;
use resource_broker::{
    agents::{CommonArgs, extractor::Extractor, jsonrpc},
    client::BrokerClient,
};

/// Extracts PDF and CSV documents read through the broker. S3 and
/// PostgreSQL are reached only through the broker client: BROKER_URL (or
/// MCP_SERVER_URL) and BROKER_TOKEN; with neither URL set, direct mode from
/// the broker's own variables (DATABASE_URL or POSTGRES_*, S3_BUCKET, ...).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "AGENT_ADDR", default_value = "0.0.0.0:8002")]
    addr: SocketAddr,
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.common.init_logging();
    let broker = BrokerClient::from_env().await?;
    let app = jsonrpc::router(Extractor::card(), Extractor::new(broker));
    jsonrpc::serve("extractor", args.addr, app).await
}

//! The archivist agent (see `resource_broker::agents::archivist`).

use std::net::SocketAddr;

use clap::Parser;
use resource_broker::agents::{CommonArgs, archivist::Archivist, jsonrpc};

/// Validates extractions and archives documents in PostgreSQL through the
/// broker. Broker grant: database write; no object_store access.
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
    let broker = args.common.connect().await?;
    let app = jsonrpc::router(Archivist::card(), Archivist::new(broker));
    jsonrpc::serve("archivist", args.addr, app).await
}

//! The extractor agent (see `resource_broker::agents::extractor`).

use std::net::SocketAddr;

use clap::Parser;
use resource_broker::agents::{CommonArgs, extractor::Extractor, jsonrpc};

/// Extracts PDF and CSV documents read through the broker. S3 and
/// PostgreSQL are reached only through the broker client. Broker grant:
/// object_store read, database write (it appends processing_logs rows).
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
    let broker = args.common.connect().await?;
    let app = jsonrpc::router(Extractor::card(), Extractor::new(broker));
    jsonrpc::serve("extractor", args.addr, app).await
}

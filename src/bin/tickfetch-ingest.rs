//! `tickfetch-ingest`: the ingest worker. Runs the feeds of `[[ingest.feeds]]`
//! (exchange websockets → trades topic, with watermarks, backfill and dead
//! letters) until SIGINT/SIGTERM.

use clap::Parser;
use tickfetch::app::{self, CommonArgs};
use tickfetch::ingest::worker;

/// Subscribe to exchange trade streams and publish every trade once to Kafka.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-ingest", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = app::start(&args.common).await?;
    started.health.set(true);
    worker::run(started.config, started.shutdown).await?;
    Ok(())
}

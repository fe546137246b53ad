//! `tickfetch-ingest`: the ingest worker. Runs the feeds of `[[ingest.feeds]]`
//! (exchange websockets → trades topic, with watermarks, backfill and dead
//! letters) until SIGINT/SIGTERM; with a worker id (`--worker-id` or
//! `[cluster] worker_id`), runs the feeds the master assigns it in etcd
//! instead.

use clap::Parser;
use tickfetch::app::{self, CommonArgs};
use tickfetch::ingest::{cluster, worker};

/// Subscribe to exchange trade streams and publish every trade once to Kafka.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-ingest", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Join the cluster as this worker (sets `cluster.worker_id`).
    #[arg(long)]
    worker_id: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(id) = &args.worker_id {
        args.common.set.push(format!("cluster.worker_id={id:?}"));
    }
    let started = app::start(&args.common, app::ports::INGEST).await?;
    let mut probes = tickfetch::health::Probes::new();
    probes.kafka(&started.config.kafka, &started.shutdown);
    if !started.config.cluster.worker_id.is_empty() || started.config.etcd.epochs {
        probes.etcd(&started.config.etcd, &started.shutdown);
    }
    started.health.set(true);
    if started.config.cluster.worker_id.is_empty() {
        worker::run(started.config, started.shutdown).await?;
    } else {
        let address = started.http_addr.map(|a| a.to_string()).unwrap_or_default();
        cluster::run(started.config, address, started.shutdown).await?;
    }
    Ok(())
}

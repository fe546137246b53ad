//! `tickfetch-coord`: the master. Several may run; one is elected through etcd
//! and keeps the feed assignments up to date; the others stand by.

use std::time::Duration;

use clap::Parser;
use tickfetch::app::{self, CommonArgs};
use tickfetch::coord::master::{self, MasterOptions};

/// Assign feeds to workers, elected among several masters through etcd.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-coord", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// This master's id in `master/leader` (default `host:pid`).
    #[arg(long)]
    id: Option<String>,
    /// TTL of the master's lease, in seconds: how long a dead leader holds on.
    #[arg(long, default_value_t = 5)]
    lease_ttl_secs: u64,
    /// Full reconciliation at least this often, in seconds.
    #[arg(long, default_value_t = 30)]
    resync_secs: u64,
    /// How long a replica warms up before a primary may move to it to
    /// rebalance onto new workers, in seconds.
    #[arg(long, default_value_t = 10)]
    warm_secs: u64,
    /// Never move running feeds to balance the workers' load (new workers
    /// then get only new feeds and freed places).
    #[arg(long)]
    no_rebalance: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = app::start(&args.common, app::ports::COORD)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut options = MasterOptions::new(
        args.id
            .unwrap_or_else(tickfetch::coord::epoch::process_owner),
    );
    options.lease_ttl = Duration::from_secs(args.lease_ttl_secs.max(1));
    options.resync = Duration::from_secs(args.resync_secs.max(1));
    options.warm = Duration::from_secs(args.warm_secs);
    options.rebalance = !args.no_rebalance;
    let mut probes = tickfetch::health::Probes::new();
    probes.etcd(&started.config.etcd, &started.shutdown);
    started.health.set(true);
    master::run(&started.config.etcd, options, started.shutdown).await?;
    Ok(())
}

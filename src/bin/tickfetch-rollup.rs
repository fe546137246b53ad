//! `tickfetch-rollup`: one rollup stage (1s, 5s, 1m or 5m) with exactly-once
//! Kafka transactions.

use clap::Parser;
use tickfetch::app::{self, CommonArgs};
use tickfetch::model::Interval;
use tickfetch::rollup::stage::{self, Assignment, StageOptions};

/// Roll the level below up into candles of one interval.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-rollup", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The interval this stage produces: 1s (from trades), 5s, 1m or 5m.
    #[arg(long)]
    stage: Interval,
    /// Fixed input partitions (`0,1` or `all`) instead of joining the stage's
    /// consumer group. Two processes given the same partition fence each other.
    #[arg(long)]
    partitions: Option<String>,
    /// Snapshot the state to the changelog every this many commits.
    #[arg(long, default_value_t = 20)]
    snapshot_every: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = app::start(&args.common, app::ports::rollup(args.stage)).await?;
    let mut options = StageOptions::new(args.stage);
    options.snapshot_every = args.snapshot_every;
    options.assignment = match args.partitions.as_deref() {
        None => Assignment::Group,
        Some("all") => Assignment::Static((0..started.config.topics.partitions).collect()),
        Some(list) => Assignment::Static(
            list.split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map_err(|e| anyhow::anyhow!("--partitions {list:?}: {p:?}: {e}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let config = &started.config;
    let mut probes = tickfetch::health::Probes::new();
    probes.kafka(&config.kafka, &started.shutdown);
    if config.etcd.epochs {
        probes.etcd(&config.etcd, &started.shutdown);
    }
    probes.lag(
        config,
        stage::group_id(config, args.stage),
        vec![config.topics.stage_input(args.stage)],
        &started.shutdown,
    );
    started.health.set(true);
    stage::run(started.config, options, started.shutdown).await?;
    Ok(())
}

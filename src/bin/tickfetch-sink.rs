//! `tickfetch-sink`: candle topics (and optionally trades) into MongoDB.

use clap::Parser;
use tickfetch::app::{self, CommonArgs};
use tickfetch::sink::{self, SinkAssignment};

/// Write candles and trades from Kafka to MongoDB, each exactly once.
#[derive(Debug, Parser)]
#[command(name = "tickfetch-sink", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Read every partition without joining the consumer group (one sink
    /// instance; no group-join delay).
    #[arg(long)]
    all_partitions: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = app::start(&args.common, app::ports::SINK).await?;
    let assignment = if args.all_partitions {
        SinkAssignment::AllPartitions
    } else {
        SinkAssignment::Group
    };
    let config = &started.config;
    let mut probes = tickfetch::health::Probes::new();
    probes.kafka(&config.kafka, &started.shutdown);
    probes.mongodb(&config.mongodb, &started.shutdown);
    probes.lag(
        config,
        config.sink.group_id.clone(),
        sink::input_topics(config),
        &started.shutdown,
    );
    started.health.set(true);
    sink::run(started.config, assignment, started.shutdown).await?;
    Ok(())
}

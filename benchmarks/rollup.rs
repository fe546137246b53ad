//! Rollup benchmark: the 1s stage's throughput with exactly-once and with
//! at-least-once delivery, against a raw consume → produce passthrough of the
//! same records, on the same broker, in one run; plus commit-latency
//! percentiles (hdrhistogram) of each run. The passthrough is a floor: the
//! stage's client settings, producers per partition and commit cadence, no
//! parsing, and no more output records than the stage wrote.
//!
//! Run: `cargo bench --bench rollup` with a stack up and its `stack.env`
//! sourced (the README's benchmark section shows the commands). Settings come
//! from the environment: `BENCH_TRADES` (default 300000), `BENCH_SYMBOLS`
//! (100), `BENCH_PARTITIONS` (4), `BENCH_OUT` (JSON result path, default
//! `benchmarks/results/rollup.json`), `BENCH_BROKER` (what to call the broker
//! in the result).

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde::Serialize;
use tickfetch::config::{Config, Guarantee};
use tickfetch::coord::epoch::Epoch;
use tickfetch::ingest::publisher::TradePublisher;
use tickfetch::model::{Exchange, Interval, Side, Trade};
use tickfetch::rollup::metrics::StageReport;
use tickfetch::rollup::stage::{self, Assignment, StageOptions};
use tickfetch::shutdown::CancellationToken;

#[derive(Debug, Serialize)]
struct RunResult {
    name: &'static str,
    records: u64,
    seconds: f64,
    records_per_second: f64,
    report: Option<StageReport>,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    machine: String,
    broker: String,
    trades: u64,
    symbols: u64,
    partitions: i32,
    /// The floor forwards one input record in this many.
    passthrough_stride: u64,
    runs: Vec<RunResult>,
}

fn base_config(prefix: &str, partitions: i32) -> Config {
    let mut config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config from environment");
    config.topics.prefix = prefix.to_string();
    config.topics.partitions = partitions;
    config.rollup.group_prefix = format!("{prefix}.rollup");
    config.telemetry.http_addr = String::new();
    config
}

/// Publishes `trades` trades over `symbols` symbols, ten per symbol per second
/// of event time, to the config's trades topic.
async fn prefill(config: &Config, trades: u64, symbols: u64) {
    let mut publisher = TradePublisher::connect(config).await.expect("publisher");
    let start = 1_700_000_000_000i64;
    for i in 0..trades {
        let s = i % symbols;
        let n = i / symbols;
        let trade = Trade {
            exchange: Exchange::Binance,
            symbol: format!("SYM{s}USDT"),
            instrument: format!("SYM{s}-USDT"),
            trade_id: n.to_string(),
            price: Decimal::new(10_000 + (n as i64 % 97), 2),
            quantity: Decimal::new(1 + (n as i64 % 13), 3),
            side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
            exchange_time: start + (n as i64) * 100,
            receive_time: start + (n as i64) * 100,
            first_trade_id: None,
            last_trade_id: None,
        };
        publisher.send_trade(&trade, Epoch::NONE).expect("send");
    }
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(300)))
        .await
        .expect("flush thread")
        .expect("flush");
}

async fn run_stage(
    name: &'static str,
    slug: &str,
    config: Config,
    guarantee: Guarantee,
    records: u64,
) -> RunResult {
    let mut config = config;
    config.rollup.guarantee = guarantee;
    config.rollup.group_prefix = format!("{}.{slug}", config.rollup.group_prefix);
    let group = format!("{}.{}", config.rollup.group_prefix, Interval::S1);
    let input = config.topics.trades();
    let end = {
        let config = config.clone();
        let input = input.clone();
        tokio::task::spawn_blocking(move || common::end_offsets(&config, &input))
            .await
            .expect("probe")
    };
    let mut options = StageOptions::new(Interval::S1);
    options.assignment = Assignment::Static((0..config.topics.partitions).collect());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(stage::run(config.clone(), options, shutdown.clone()));
    // Done when every input record is committed (the last commit may leave one
    // offset for its own transaction marker).
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (config, group, input) = (config.clone(), group.clone(), input.clone());
        let done = tokio::task::spawn_blocking(move || common::committed(&config, &group, &input))
            .await
            .expect("probe");
        if done >= end {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let report = task.await.expect("join").expect("stage ran");
    RunResult {
        name,
        records,
        seconds,
        records_per_second: records as f64 / seconds,
        report: Some(report),
    }
}

/// The passthrough's output topic (also its group and transactional id base).
fn passthrough_topic(config: &Config, guarantee: Guarantee, stride: u64) -> String {
    format!(
        "{}.passthrough.{stride}.{guarantee:?}",
        config.topics.prefix
    )
}

/// The floor (`common::passthrough`) on the trades topic, as a run.
fn passthrough(
    name: &'static str,
    config: &Config,
    guarantee: Guarantee,
    records: u64,
    stride: u64,
) -> RunResult {
    let output = passthrough_topic(config, guarantee, stride);
    let floor = common::passthrough(
        config,
        &config.topics.trades(),
        &output,
        guarantee,
        records,
        stride,
    );
    RunResult {
        name,
        records,
        seconds: floor.seconds,
        records_per_second: records as f64 / floor.seconds,
        report: Some(StageReport {
            records,
            candles: floor.forwarded,
            commits: floor.commits,
            aborts: 0,
            commit_p50_micros: floor.commit_p50_micros,
            commit_p99_micros: floor.commit_p99_micros,
            commit_max_micros: floor.commit_max_micros,
        }),
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("rollup benchmark: run it with `cargo bench --bench rollup`");
        return;
    }
    let trades: u64 = common::env_or("BENCH_TRADES", 300_000);
    let symbols: u64 = common::env_or("BENCH_SYMBOLS", 100);
    let partitions: i32 = common::env_or("BENCH_PARTITIONS", 4);
    let prefix = format!("bench-rollup-{}", std::process::id());
    let config = base_config(&prefix, partitions);
    common::plain_topic(&config, &config.topics.trades(), partitions).await;
    eprintln!("prefilling {trades} trades over {symbols} symbols...");
    prefill(&config, trades, symbols).await;
    let records = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || common::end_offsets(&config, &config.topics.trades()))
            .await
            .expect("probe") as u64
    };

    // The stages first: their input/output ratio sets the floor's stride.
    let mut runs = vec![
        run_stage(
            "1s stage, exactly-once",
            "eos",
            config.clone(),
            Guarantee::ExactlyOnce,
            records,
        )
        .await,
        run_stage(
            "1s stage, at-least-once",
            "alo",
            config.clone(),
            Guarantee::AtLeastOnce,
            records,
        )
        .await,
    ];
    let candles = runs[0].report.map_or(0, |r| r.candles).max(1);
    let stride = (records / candles).max(1);
    eprintln!(
        "the stage wrote {candles} candles for {records} trades: the floor forwards 1 in {stride}"
    );
    for (name, guarantee, stride) in [
        ("passthrough, exactly-once", Guarantee::ExactlyOnce, stride),
        ("passthrough, at-least-once", Guarantee::AtLeastOnce, stride),
        ("passthrough, every record", Guarantee::ExactlyOnce, 1),
    ] {
        common::plain_topic(
            &config,
            &passthrough_topic(&config, guarantee, stride),
            partitions,
        )
        .await;
        let config = config.clone();
        runs.push(
            tokio::task::spawn_blocking(move || {
                passthrough(name, &config, guarantee, records, stride)
            })
            .await
            .expect("passthrough"),
        );
    }

    let result = BenchResult {
        machine: common::machine(),
        broker: std::env::var("BENCH_BROKER")
            .unwrap_or_else(|_| format!("{} (KAFKA_BOOTSTRAP)", config.kafka.bootstrap)),
        trades,
        symbols,
        partitions,
        passthrough_stride: stride,
        runs,
    };
    println!(
        "{:<28} {:>10} {:>9} {:>12} {:>10} {:>10} {:>10}",
        "run", "records", "seconds", "records/s", "commit p50", "p99", "max"
    );
    for r in &result.runs {
        let (p50, p99, max) = r
            .report
            .map(|s| {
                (
                    format!("{:.1}ms", s.commit_p50_micros as f64 / 1e3),
                    format!("{:.1}ms", s.commit_p99_micros as f64 / 1e3),
                    format!("{:.1}ms", s.commit_max_micros as f64 / 1e3),
                )
            })
            .unwrap_or_default();
        println!(
            "{:<28} {:>10} {:>9.2} {:>12.0} {:>10} {:>10} {:>10}",
            r.name, r.records, r.seconds, r.records_per_second, p50, p99, max
        );
    }
    println!("machine: {}", result.machine);
    let out =
        std::env::var("BENCH_OUT").unwrap_or_else(|_| "benchmarks/results/rollup.json".into());
    if let Some(parent) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result).expect("json"))
        .expect("write result");
    eprintln!("wrote {out}");
}

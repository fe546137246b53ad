//! Pipeline benchmark: the whole system under load, as it runs in production.
//!
//! The exchange simulator (in this process) trades `BENCH_SYMBOLS` symbols
//! (half Binance `trade`, half OKX `trades`) at each rate of `BENCH_RATES`
//! through one worker (`tickfetch-ingest`) → the trades topic → the four
//! rollup stages (`tickfetch-rollup --stage 1s|5s|1m|5m`, exactly-once) →
//! the sink (`tickfetch-sink`) → MongoDB, on the local stack, each a
//! separate process of the build under test. One run per rate, each on
//! topics, an etcd prefix and a database of its own.
//!
//! Measured over `BENCH_SECS` after `BENCH_WARM_SECS` of the same load:
//! - **exchange → readable**: a reader of the trades topic (read_committed)
//!   notes, per trade, the time it is read minus its exchange time (the
//!   simulator stamps the wall clock when it sends it), in an hdrhistogram;
//! - **window close → committed**, per interval: the time a candle is read
//!   (read_committed) minus its window's close, `end + rollup.grace_ms` (a
//!   window cannot close before its grace has passed; parents close when
//!   their last child arrives, which is at that moment at the earliest);
//! - **window close → stored**: the sink's own histogram
//!   (`tickfetch_sink_stored_latency_seconds`, window end → stored, minus
//!   the grace), as bucket bounds;
//! - **commit**: the stages' `tickfetch_rollup_commit_seconds`, bucket bounds;
//! - records/s per stage, trades/s published, documents/s stored (counters
//!   scraped from each process's `/metrics`);
//! - CPU % (utime + stime over the window, from `/proc/PID/stat`; 100 % is
//!   one core) and peak RSS (`VmHWM`) per process, the stack's services
//!   included when its `stack.json` is found.
//!
//! Each run checks its result, so that a fast wrong run cannot pass: every
//! simulated trade is on the trades topic exactly once per feed, in order;
//! every candle read from the four candle topics equals the one built
//! offline by the engine from those trades (quiet candles after the last
//! trade excepted); no window is missing; and MongoDB holds every candle of
//! the stored intervals that the topics hold, equal. A wrong run exits 1.
//!
//! **Baselines and peers on the same trades** (the peers in the full run
//! only, `BENCH_PEERS`, default `kafka-streams,quix`; the quick run reads
//! the backlog with the baselines alone): the first run's trades topic is
//! copied, record for record and partition for partition, to a topic of its
//! own; tickfetch's 1s stage exactly-once, the same stage at-least-once (on
//! a second copy, from no state), the floor (`common::passthrough`: the
//! stage's client settings and commit cadence, no parsing, as many records
//! written as the stage) and each peer then read that backlog from its
//! start, on the same broker, one after the other. Each reports trades/s and its CPU seconds,
//! hence trades per CPU-second (per core), and the peer's candles are
//! compared with the 1s stage's (and, for the 1m ones, with the offline
//! engine's). Peers: Kafka Streams (`benchmarks/peers/kafka-streams`, built
//! with Maven on first use; 1s and 1m windows, `exactly_once_v2`) and Quix
//! Streams (`benchmarks/peers/python`, installed into a venv under the
//! cache on first use; exactly-once), both committing as often as the stage.
//!
//! `cargo bench --bench pipeline` (on the stack whose `stack.env` is sourced,
//! else the one under `target/test-stack`, started or reused)
//! writes `benchmarks/results/pipeline.{json,md,svg}`. Run as a test
//! (`cargo test --bench pipeline`, part of the test suite) it is the quick
//! run: 200 trades/s over 20 symbols for a few seconds (the sink storing
//! the 1s and 5s candles), results under `target/bench-pipeline/`, the same
//! checks.
//!
//! Settings from the environment: `BENCH_RATES` (trades/s, comma-separated,
//! default `5000,20000,50000`), `BENCH_SYMBOLS` (default 500), `BENCH_SECS`
//! (default 60), `BENCH_WARM_SECS` (default 10), `BENCH_SINK_INTERVALS`
//! (default `1m,5m`: through the sink SecantusDB stores about 800 guarded
//! upserts/s, no headroom for 500 symbols' 600 1s and 5s candles a second),
//! `BENCH_OUT` (the results folder).

// One module per part of a run; each takes the crate's imports and the
// other modules' items with `use super::*` (one benchmark binary).
mod backlog;
mod checks;
#[path = "../common.rs"]
mod common;
mod output;
mod processes;
mod readers;
mod results;
mod run;

use backlog::*;
use checks::*;
use output::*;
use processes::*;
use readers::*;
use results::*;
use run::*;

use common::{env_or, feed_of, now_ms, remove_prefix, simulator, FEEDS};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde::Serialize;
use tickfetch::config::{Config, Guarantee};
use tickfetch::exsim::generated_symbols;
use tickfetch::ingest::venues::Feed;
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval, Millis, Trade};
use tickfetch::rollup::engine::{CandlePipeline, PipelineConfig};
use tickfetch::rollup::level::level_config;
use tickfetch::sink::query::{self, CandleQuery};
use tickfetch::wire::codec::{Envelope, Received};

/// The stack this process started, when none was given in the environment.
pub(crate) static OWN_STACK: std::sync::OnceLock<tickfetch::stack::StackEnv> =
    std::sync::OnceLock::new();
pub(crate) const STAGES: [Interval; 4] = [Interval::S1, Interval::S5, Interval::M1, Interval::M5];

/// What one invocation runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) rates: Vec<f64>,
    pub(crate) symbols: usize,
    pub(crate) warm_secs: u64,
    pub(crate) measure_secs: u64,
    pub(crate) sink_intervals: Vec<Interval>,
    /// Peers run on the backlog (full run only).
    pub(crate) peers: Vec<String>,
    pub(crate) quick: bool,
    #[serde(skip)]
    pub(crate) out: PathBuf,
}

impl Settings {
    pub(crate) fn from_env(quick: bool) -> Settings {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .unwrap_or_else(|_| default.to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        // The quick run's few symbols let the sink store its 1s and 5s
        // candles, whose windows close within the run.
        let default_sink = if quick { "1s,5s" } else { "1m,5m" };
        let sink_intervals = list("BENCH_SINK_INTERVALS", default_sink)
            .iter()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|e| panic!("BENCH_SINK_INTERVALS: {e}"))
            })
            .collect();
        if quick {
            return Settings {
                rates: vec![200.0],
                symbols: 20,
                warm_secs: 2,
                measure_secs: 6,
                sink_intervals,
                peers: Vec::new(),
                quick,
                out: root.join("target/bench-pipeline"),
            };
        }
        Settings {
            rates: list("BENCH_RATES", "5000,20000,50000")
                .iter()
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|e| panic!("BENCH_RATES {s:?}: {e}"))
                })
                .collect(),
            symbols: env_or("BENCH_SYMBOLS", 500),
            warm_secs: env_or("BENCH_WARM_SECS", 10),
            measure_secs: env_or("BENCH_SECS", 60),
            sink_intervals,
            peers: list("BENCH_PEERS", "kafka-streams,quix"),
            quick,
            out: env_or("BENCH_OUT", root.join("benchmarks/results")),
        }
    }
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(quick);
    if std::env::var("KAFKA_BOOTSTRAP").is_err() {
        // As the tests do: the stack under target/test-stack, started or reused.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-stack");
        let stack = tickfetch::stack::up(&tickfetch::stack::StackOptions::new(dir))
            .await
            .expect("the local stack starts");
        let _ = OWN_STACK.set(stack);
    }
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-pipeline");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut runs = Vec::new();
    for rate in &settings.rates {
        let result = run(&settings, *rate, &work).await;
        eprintln!(
            "pipeline benchmark: {rate} trades/s offered, {:.0} read; {}",
            result.trades_per_second_read,
            if result.errors.is_empty() {
                "correct".to_string()
            } else {
                result.errors.join("; ")
            }
        );
        runs.push(result);
    }
    // The 1s stage and the peers on the first run's trades (the quick run:
    // the stage alone).
    let backlog = match runs.first() {
        Some(first) => {
            let backlog = backlog(
                &first.trades_topic,
                settings.symbols,
                &work,
                &settings.peers,
            )
            .await;
            for e in &backlog.errors {
                eprintln!("pipeline benchmark, backlog: {e}");
            }
            Some(backlog)
        }
        None => None,
    };
    let report = Report {
        machine: common::machine(),
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        settings: settings.clone(),
        runs,
        backlog,
    };
    std::fs::create_dir_all(&settings.out).expect("results dir");
    let write = |name: &str, text: &str| {
        let path = settings.out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    };
    write(
        "pipeline.json",
        &serde_json::to_string_pretty(&report).expect("json"),
    );
    write("pipeline.svg", &svg(&report));
    let md = markdown(&report);
    let summary = write("pipeline.md", &md);
    println!("{md}");
    println!("written: {}", summary.display());
    let backlog_wrong = report
        .backlog
        .as_ref()
        .is_some_and(|b| b.runs.iter().any(|r| r.candles_differing > 0));
    if backlog_wrong || report.runs.iter().any(|r| !r.errors.is_empty()) {
        eprintln!("pipeline benchmark: the result is wrong (see above)");
        std::process::exit(1);
    }
}

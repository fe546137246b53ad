//! Candle engine benchmark: tickfetch's engine alone against nautilus_trader's
//! `TimeBarAggregator`, on the same trades, no Kafka.
//!
//! For each case (`BENCH_ENGINE_TRADES` trades, default 1,000,000, over 1
//! and over 50 instruments, 20,000 trades/s of event time), the nautilus peer
//! (`benchmarks/peers/python/nautilus_bars.py`, in the venv that
//! `benchmarks/peers/python/setup.sh` installs under the cache) generates the
//! trades, writes them as trades JSONL, builds its ticks and aggregates 1s
//! and 1m bars, timing each phase; then this program reads the same file
//! into `Trade`s (timed apart, as nautilus's tick building is) and runs
//! `CandlePipeline` (1s and 1m, exact decimals) over them on one core,
//! best of three. Every bar is compared with tickfetch's candle of the same
//! window (open, high, low, close, volume: the fields a nautilus bar has); a
//! difference fails the run (exit 1).
//!
//! Run: `cargo bench --bench engine` (no stack needed). Output:
//! `benchmarks/results/engine.json` (`BENCH_OUT`). As a test (`cargo test
//! --bench engine`) it does nothing: the peer's venv is not part of the test
//! suite.

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tickfetch::config::Config;
use tickfetch::model::{Candle, CandleStatus, Interval, Millis, Trade};
use tickfetch::rollup::engine::{CandlePipeline, PipelineConfig};
use tickfetch::rollup::level::level_config;

/// A nautilus bar as `nautilus_bars.py --bars` writes it.
#[derive(Debug, Deserialize)]
struct Bar {
    exchange: String,
    symbol: String,
    interval: String,
    open_time: Millis,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
    status: String,
}

#[derive(Debug, Serialize)]
struct Case {
    instruments: usize,
    trades: usize,
    nautilus: serde_json::Value,
    tickfetch_read_trades_per_s: f64,
    tickfetch_engine_trades_per_s: f64,
    tickfetch_candles: usize,
    /// tickfetch engine ÷ nautilus aggregation, per trade.
    ratio: f64,
    bars_compared: usize,
    bars_differing: usize,
    differences: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    date: String,
    cases: Vec<Case>,
}

fn run_nautilus(dir: &Path, trades: usize, instruments: usize) -> serde_json::Value {
    let home = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benchmarks/peers/python");
    let venv = std::process::Command::new("bash")
        .arg("setup.sh")
        .current_dir(&home)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("benchmarks/peers/python/setup.sh");
    assert!(venv.status.success(), "setup.sh failed: {}", venv.status);
    let python = String::from_utf8_lossy(&venv.stdout).trim().to_string();
    let output = std::process::Command::new(python)
        .arg(home.join("nautilus_bars.py"))
        .args(["--generate", &trades.to_string()])
        .args(["--instruments", &instruments.to_string()])
        .args(["--rate", "20000"])
        .arg("--write-trades")
        .arg(dir.join("trades.jsonl"))
        .arg("--bars")
        .arg(dir.join("bars.jsonl"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("nautilus_bars.py");
    assert!(
        output.status.success(),
        "nautilus_bars.py: {}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("nautilus result line")
}

fn read_trades(path: &Path) -> Vec<Trade> {
    let file = std::fs::File::open(path).expect("trades file");
    std::io::BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str(&line.expect("line")).expect("a trade"))
        .collect()
}

/// Candles of every symbol (1s and 1m); the engine's time alone.
fn engine(config: &Config, trades: &[Trade]) -> (Vec<Candle>, f64) {
    let pipeline_config = PipelineConfig {
        trades: level_config(config, Interval::S1),
        candles: level_config(config, Interval::S5),
    };
    let started = Instant::now();
    // One pipeline for every instrument, as a rollup stage runs one per
    // partition: it keeps each symbol's state itself.
    let mut pipeline =
        CandlePipeline::new(&[Interval::S1, Interval::M1], pipeline_config).expect("engine");
    let mut out = Vec::with_capacity(trades.len() / 4);
    for trade in trades {
        pipeline.on_trade(trade, &mut out).expect("in-order trade");
    }
    pipeline.finish(&mut out).expect("finish");
    (out, started.elapsed().as_secs_f64())
}

fn compare(candles: &[Candle], bars_path: &Path) -> (usize, usize, Vec<String>) {
    let ours: HashMap<(String, String, &'static str, Millis), &Candle> = candles
        .iter()
        .map(|c| {
            (
                (
                    c.exchange.to_string(),
                    c.symbol.clone(),
                    c.interval.as_str(),
                    c.open_time,
                ),
                c,
            )
        })
        .collect();
    let file = std::fs::File::open(bars_path).expect("bars file");
    let (mut compared, mut differing, mut samples) = (0, 0, Vec::new());
    for line in std::io::BufReader::new(file).lines() {
        let bar: Bar = serde_json::from_str(&line.expect("line")).expect("a bar");
        let key = (
            bar.exchange.clone(),
            bar.symbol.clone(),
            if bar.interval == "1s" { "1s" } else { "1m" },
            bar.open_time,
        );
        let Some(candle) = ours.get(&key) else {
            // nautilus goes on making empty bars to the end of the last
            // minute; the engine stops at the last trade's window.
            if bar.status != "quiet" {
                differing += 1;
                if samples.len() < 3 {
                    samples.push(format!("{key:?}: a bar with trades, no candle"));
                }
            }
            continue;
        };
        compared += 1;
        let same = candle.open == bar.open
            && candle.high == bar.high
            && candle.low == bar.low
            && candle.close == bar.close
            && candle.volume == bar.volume
            && (candle.status == CandleStatus::Quiet) == (bar.status == "quiet");
        if !same {
            differing += 1;
            if samples.len() < 3 {
                samples.push(format!("{key:?}: bar {bar:?}, candle {candle:?}"));
            }
        }
    }
    (compared, differing, samples)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("engine benchmark: run it with `cargo bench --bench engine`");
        return;
    }
    let trades: usize = std::env::var("BENCH_ENGINE_TRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let out = std::env::var("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benchmarks/results/engine.json")
        });
    let config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config from environment");
    let mut cases = Vec::new();
    for instruments in [1usize, 50] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-engine")
            .join(instruments.to_string());
        std::fs::create_dir_all(&dir).expect("work dir");
        eprintln!(
            "engine benchmark: nautilus_trader, {trades} trades over {instruments} instruments"
        );
        let nautilus = run_nautilus(&dir, trades, instruments);
        let started = Instant::now();
        let input = read_trades(&dir.join("trades.jsonl"));
        let read_secs = started.elapsed().as_secs_f64();
        let mut best = f64::INFINITY;
        let mut candles = Vec::new();
        for _ in 0..3 {
            let (made, secs) = engine(&config, &input);
            best = best.min(secs);
            candles = made;
        }
        let (bars_compared, bars_differing, differences) =
            compare(&candles, &dir.join("bars.jsonl"));
        let engine_rate = input.len() as f64 / best;
        let nautilus_rate = nautilus["aggregation_trades_per_s"].as_f64().unwrap_or(0.0);
        let case = Case {
            instruments,
            trades: input.len(),
            tickfetch_read_trades_per_s: input.len() as f64 / read_secs,
            tickfetch_engine_trades_per_s: engine_rate,
            tickfetch_candles: candles.len(),
            ratio: engine_rate / nautilus_rate.max(1.0),
            nautilus,
            bars_compared,
            bars_differing,
            differences,
        };
        eprintln!(
            "engine benchmark: {instruments} instruments: tickfetch {:.0} trades/s, nautilus {:.0} ({:.1}×); {} bars compared, {} differ",
            case.tickfetch_engine_trades_per_s, nautilus_rate, case.ratio, case.bars_compared, case.bars_differing
        );
        cases.push(case);
    }
    let report = Report {
        machine: common::machine(),
        date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        cases,
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("results dir");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")).expect("results");
    println!(
        "| instruments ({}) | trades | tickfetch engine | nautilus aggregation | ratio | nautilus tick building | bars equal |",
        report.machine
    );
    println!("|---|---|---|---|---|---|---|");
    for c in &report.cases {
        println!(
            "| {} | {} | {:.0}/s | {}/s | {:.1}× | {}/s | {} of {} |",
            c.instruments,
            c.trades,
            c.tickfetch_engine_trades_per_s,
            c.nautilus["aggregation_trades_per_s"],
            c.ratio,
            c.nautilus["ticks_built_per_s"],
            c.bars_compared - c.bars_differing,
            c.bars_compared
        );
    }
    println!("written: {}", out.display());
    if report.cases.iter().any(|c| c.bars_differing > 0) {
        eprintln!("engine benchmark: bars differ (see {})", out.display());
        std::process::exit(1);
    }
}

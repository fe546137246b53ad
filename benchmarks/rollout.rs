//! Rollout benchmark: how long `tickfetch rollout` takes per worker, and what
//! a rolling deploy does to trade delivery, against steady state in the same
//! run.
//!
//! A master (`tickfetch-coord`) and three workers (`tickfetch-ingest` under
//! `scripts/supervise.sh`, release build), fed by the exchange simulator in
//! this process: `BENCH_FEEDS` feeds (half Binance `trade`, half OKX
//! `trades`, one replica each) trading `BENCH_RATE` trades/s in all. A reader
//! takes every record of the trades topic (`read_committed`) and notes, per
//! trade, the delivery latency: the time it is read minus its exchange time
//! (the simulator stamps the wall clock when it sends the trade). After
//! `BENCH_STEADY_SECS` of steady state the rollout replaces every worker
//! (`rollout::run`, the code behind `tickfetch rollout`), then
//! `BENCH_STEADY_SECS` more of steady state. Trades are binned by exchange
//! time: before the rollout, during it, after it.
//!
//! The run checks its result: every simulated trade read exactly once per
//! feed, in order, with no gap marker; otherwise it exits 1.
//!
//! Run: `cargo bench --bench rollout` with a stack up and its `stack.env`
//! sourced. Settings from the environment: `BENCH_FEEDS` (default 100),
//! `BENCH_RATE` (default 1000), `BENCH_STEADY_SECS` (default 30),
//! `BENCH_WARM_SECS` (replica warm-up the rollout and the master wait for,
//! default 5), `BENCH_OUT` (default `benchmarks/results/rollout.json`).

#[path = "common.rs"]
mod common;

use common::{env_or, feed_of, now_ms, remove_prefix, simulator, Child, FEEDS};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tickfetch::config::Config;
use tickfetch::coord::admin;
use tickfetch::coord::keyspace::{AssignmentRecord, ProgressRecord, WorkerRecord};
use tickfetch::coord::rollout::{self, RolloutOptions, RolloutRecord};
use tickfetch::coord::store::Store;
use tickfetch::exsim::generated_symbols;
use tickfetch::model::{Exchange, Trade};
use tickfetch::shutdown::CancellationToken;
use tickfetch::wire::codec::{Envelope, Received};

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

/// What the reader saw: per feed key the trade ids in topic order, per
/// trade (exchange time, latency in ms), and how many gap markers.
#[derive(Default)]
struct Seen {
    ids: BTreeMap<String, Vec<String>>,
    latencies: Vec<(i64, i64)>,
    gaps: usize,
}

/// Reads the trades topic from the start until `stop`, noting every trade.
fn read_trades(config: &Config, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let consumer = common::reader_from_start(
        config,
        "bench-rollout-reader",
        &[config.topics.trades()],
        &common::LATENCY_READER,
    );
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let read = now_ms();
        let message = message.expect("reading the trades topic");
        let envelope = Envelope::of(&message);
        let mut seen = seen.lock().expect("reader state");
        match envelope.decode::<Trade>().expect("a trades-topic record") {
            Received::Data(trade) => {
                seen.latencies
                    .push((trade.exchange_time, read - trade.exchange_time));
                seen.ids
                    .entry(trade.key())
                    .or_default()
                    .push(trade.trade_id);
            }
            Received::Gap(_) => seen.gaps += 1,
            Received::Watermark(_) => {}
        }
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    phase: &'static str,
    trades: u64,
    p50_ms: u64,
    p99_ms: u64,
    p999_ms: u64,
    max_ms: u64,
}

fn latency(phase: &'static str, samples: impl Iterator<Item = i64>) -> Latency {
    let h = common::millis_histogram(samples, 600_000);
    Latency {
        phase,
        trades: h.len(),
        p50_ms: h.value_at_quantile(0.50),
        p99_ms: h.value_at_quantile(0.99),
        p999_ms: h.value_at_quantile(0.999),
        max_ms: h.max(),
    }
}

#[derive(Debug, Serialize)]
struct Replaced {
    worker: String,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    machine: String,
    feeds: usize,
    trades_per_second: f64,
    replica_warm_secs: u64,
    worker_lease_ttl_ms: u64,
    rollout_seconds: f64,
    replaced: Vec<Replaced>,
    latency: Vec<Latency>,
    /// Worst delivery latency of the trades sent in each second of the run
    /// (seconds from the rollout's start).
    max_ms_by_second: Vec<(i64, i64)>,
    trades_read: usize,
    duplicates: usize,
    missing: usize,
    gap_markers: usize,
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("rollout benchmark: run it with `cargo bench --bench rollout`");
        return;
    }
    let feeds: usize = env_or("BENCH_FEEDS", 100);
    let rate: f64 = env_or("BENCH_RATE", 1000.0);
    let steady = Duration::from_secs(env_or("BENCH_STEADY_SECS", 30));
    let warm: u64 = env_or("BENCH_WARM_SECS", 5);
    let out: PathBuf = env_or("BENCH_OUT", "benchmarks/results/rollout.json".into());

    let mut symbols = generated_symbols(Exchange::Binance, feeds / 2);
    symbols.extend(generated_symbols(Exchange::Okx, feeds - feeds / 2));
    let sim = Arc::new(simulator(&symbols).await);

    let prefix = format!("bench-rollout-{}", std::process::id());
    let mut config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config from environment");
    config.topics.prefix = prefix.clone();
    config.topics.partitions = 4;
    config.etcd.prefix = format!("/{prefix}/");
    config.telemetry.http_addr = String::new();
    config.ingest.feeds = FEEDS
        .iter()
        .map(|name| sim.feed_config(name.parse().expect("known feed"), &[]))
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-rollout")
        .join(&prefix);
    std::fs::create_dir_all(&dir).expect("work dir");
    let config_path = dir.join("tickfetch.toml");
    std::fs::write(&config_path, toml::to_string(&config).expect("config")).expect("config file");
    let version = dir.join("version");
    std::fs::write(&version, "1").expect("version file");
    eprintln!("rollout benchmark: logs and config in {}", dir.display());

    let store = Store::connect(&config.etcd).await.expect("etcd");
    let mut master = std::process::Command::new(env!("CARGO_BIN_EXE_tickfetch-coord"));
    master.arg("--config").arg(&config_path).args([
        "--id",
        "master-1",
        "--warm-secs",
        &warm.to_string(),
    ]);
    let _master = Child::start(master, &dir.join("master-1.log"));
    let _workers: Vec<Child> = WORKERS
        .iter()
        .map(|id| {
            let mut command = std::process::Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/supervise.sh"),
            );
            command
                .arg(env!("CARGO_BIN_EXE_tickfetch-ingest"))
                .arg("--config")
                .arg(&config_path)
                .args(["--worker-id", id])
                .env("VERSION_FILE", &version);
            Child::start(command, &dir.join(format!("{id}.log")))
        })
        .collect();
    wait_for("3 workers registered", Duration::from_secs(60), || async {
        store
            .list::<WorkerRecord, &str>(&[])
            .await
            .is_ok_and(|l| l.records.len() == WORKERS.len())
    })
    .await;
    let desired: Vec<_> = symbols
        .iter()
        .map(|s| {
            let feed = feed_of(s);
            admin::desired_feed(feed.exchange(), Some(feed.name()), s, 1).expect("feed")
        })
        .collect();
    admin::add_feeds(&store, &desired).await.expect("add feeds");
    wait_for("every feed assigned", Duration::from_secs(120), || async {
        let Ok(list) = store.list::<AssignmentRecord, &str>(&[]).await else {
            return false;
        };
        list.records.len() == symbols.len()
            && list
                .records
                .iter()
                .all(|a| a.value.epoch != 0 && a.value.replicas.len() == 1)
    })
    .await;

    let stop_reading = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = {
        let (config, stop, seen) = (config.clone(), stop_reading.clone(), seen.clone());
        std::thread::spawn(move || read_trades(&config, &stop, &seen))
    };
    // Every feed publishing before the clock starts.
    wait_for(
        "every feed publishing",
        Duration::from_secs(120),
        || async {
            let progress: BTreeMap<String, ProgressRecord> = store
                .list::<ProgressRecord, &str>(&[])
                .await
                .map(|l| {
                    l.records
                        .into_iter()
                        .map(|r| (r.value.symbol.clone(), r.value))
                        .collect()
                })
                .unwrap_or_default();
            let quiet: Vec<&String> = symbols
                .iter()
                .filter(|s| !progress.contains_key(*s))
                .collect();
            for symbol in &quiet {
                sim.generate(feed_of(symbol).exchange(), symbol, 1)
                    .expect("generate");
            }
            quiet.is_empty()
        },
    )
    .await;

    // Trading: `rate` trades/s, round-robin over the symbols, in 50 ms ticks.
    let trading_stop = Arc::new(AtomicBool::new(false));
    let trading =
        common::trade_round_robin(sim.clone(), symbols.clone(), rate, trading_stop.clone());
    let trading_from = now_ms();
    tokio::time::sleep(steady).await;

    // The rollout, watched from etcd for the time each worker took.
    std::fs::write(&version, "2").expect("version file");
    let rollout_from = now_ms();
    let started = Instant::now();
    let options = RolloutOptions {
        target_version: "2".into(),
        warm: Duration::from_secs(warm),
        per_worker: Duration::from_secs(120),
    };
    let shutdown = CancellationToken::new();
    let rolling = rollout::run(&store, &options, &shutdown);
    tokio::pin!(rolling);
    let mut replaced = Vec::new();
    let mut since = Instant::now();
    let mut done = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let record = loop {
        tokio::select! {
            result = &mut rolling => break result.expect("rollout"),
            _ = poll.tick() => {
                if let Ok(Some(r)) = store.get::<RolloutRecord, &str>(&[]).await {
                    while r.value.done.len() > done {
                        replaced.push(Replaced {
                            worker: r.value.done[done].clone(),
                            seconds: since.elapsed().as_secs_f64(),
                        });
                        since = Instant::now();
                        done += 1;
                    }
                }
            }
        }
    };
    for id in record.done.iter().skip(done) {
        replaced.push(Replaced {
            worker: id.clone(),
            seconds: since.elapsed().as_secs_f64(),
        });
        since = Instant::now();
    }
    let rollout_seconds = started.elapsed().as_secs_f64();
    let rollout_to = now_ms();
    eprintln!("rollout finished in {rollout_seconds:.1} s: {replaced:?}");
    tokio::time::sleep(steady).await;
    trading_stop.store(true, Ordering::Relaxed);
    trading.await.expect("trading");
    let trading_to = now_ms();

    // Everything simulated, read?
    let want = common::sent_ids(&sim, &symbols);
    let complete = |seen: &Seen| {
        want.iter().all(|(key, ids)| {
            seen.ids
                .get(key)
                .and_then(|got| got.last())
                .is_some_and(|last| Some(last) == ids.last())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !complete(&seen.lock().expect("reader state")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Quiet for a moment: anything doubled would be read by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_reading.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
    let seen = std::mem::take(&mut *seen.lock().expect("reader state"));

    let (mut duplicates, mut missing) = (0, 0);
    for (key, ids) in &want {
        let got = seen.ids.get(key).map(Vec::as_slice).unwrap_or_default();
        // From the first trade read (those before its first subscription
        // were never offered to any worker).
        let start = got
            .first()
            .and_then(|first| ids.iter().position(|id| id == first))
            .unwrap_or(ids.len());
        let expected = &ids[start..];
        let mut seen_ids = std::collections::HashSet::new();
        duplicates += got.iter().filter(|id| !seen_ids.insert(*id)).count();
        missing += expected.iter().filter(|id| !seen_ids.contains(id)).count();
        let in_order: Vec<&String> = got.iter().collect();
        let unique: Vec<&String> = {
            let mut once = std::collections::HashSet::new();
            in_order.into_iter().filter(|id| once.insert(*id)).collect()
        };
        let expected: Vec<&String> = expected.iter().collect();
        if unique != expected {
            eprintln!("{key}: trades out of order or foreign");
            missing += 1;
        }
    }
    let during = |from: i64, to: i64| {
        seen.latencies
            .iter()
            .filter(move |(t, _)| (from..to).contains(t))
            .map(|(_, l)| *l)
    };
    let latency = vec![
        latency("steady, before", during(trading_from, rollout_from)),
        latency("rollout", during(rollout_from, rollout_to)),
        latency("steady, after", during(rollout_to, trading_to)),
    ];
    let mut by_second: BTreeMap<i64, i64> = BTreeMap::new();
    for (t, l) in &seen.latencies {
        let second = (t - rollout_from).div_euclid(1000);
        let worst = by_second.entry(second).or_insert(0);
        *worst = (*worst).max(*l);
    }
    let result = BenchResult {
        machine: common::machine(),
        feeds,
        trades_per_second: rate,
        replica_warm_secs: warm,
        worker_lease_ttl_ms: config.cluster.lease_ttl_ms,
        rollout_seconds,
        replaced,
        latency,
        max_ms_by_second: by_second.into_iter().collect(),
        trades_read: seen.latencies.len(),
        duplicates,
        missing,
        gap_markers: seen.gaps,
    };
    let text = serde_json::to_string_pretty(&result).expect("json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("results dir");
    }
    std::fs::write(&out, &text).expect("write results");
    println!(
        "| phase ({}; {feeds} feeds, {rate} trades/s) | trades | p50 | p99 | p99.9 | max |",
        result.machine
    );
    println!("|---|---|---|---|---|---|");
    for l in &result.latency {
        println!(
            "| {} | {} | {} ms | {} ms | {} ms | {} ms |",
            l.phase, l.trades, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    for r in &result.replaced {
        println!("replaced {} in {:.1} s", r.worker, r.seconds);
    }
    println!(
        "rollout {:.1} s; {} trades read, {} duplicates, {} missing, {} gap markers; {}",
        result.rollout_seconds,
        result.trades_read,
        result.duplicates,
        result.missing,
        result.gap_markers,
        out.display()
    );
    remove_prefix(&config).await;
    if result.duplicates + result.missing + result.gap_markers > 0 {
        eprintln!("rollout benchmark: the result is wrong (see above)");
        std::process::exit(1);
    }
}

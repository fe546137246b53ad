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

#[path = "common.rs"]
mod common;

use common::{env_or, feed_of, now_ms, remove_prefix, simulator, FEEDS};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
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
static OWN_STACK: std::sync::OnceLock<tickfetch::stack::StackEnv> = std::sync::OnceLock::new();
const STAGES: [Interval; 4] = [Interval::S1, Interval::S5, Interval::M1, Interval::M5];

/// What one invocation runs.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    rates: Vec<f64>,
    symbols: usize,
    warm_secs: u64,
    measure_secs: u64,
    sink_intervals: Vec<Interval>,
    /// Peers run on the backlog (full run only).
    peers: Vec<String>,
    quick: bool,
    #[serde(skip)]
    out: PathBuf,
}

impl Settings {
    fn from_env(quick: bool) -> Settings {
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

// ---------------------------------------------------------------- processes

/// A tickfetch process of the run, with the address of its `/metrics`.
struct Proc {
    name: String,
    child: common::Child,
    metrics: String,
}

impl Proc {
    fn start(name: &str, binary: &str, args: &[&str], config: &Path, dir: &Path) -> Proc {
        let metrics = free_addr();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .arg("--set")
            .arg(format!("telemetry.http_addr={metrics}"))
            .args(args);
        Proc {
            name: name.to_string(),
            child: common::Child::start(command, &dir.join(format!("{name}.log"))),
            metrics,
        }
    }

    fn pid(&self) -> i32 {
        self.child.pid()
    }
}

/// A loopback address nobody listens on now.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

/// The text of `http://{addr}/metrics`, or empty when it does not answer.
fn scrape(addr: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Sum of a series' samples whose labels contain every `label="value"` of
/// `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// A histogram's cumulative bucket counts, by upper bound, for samples with
/// these labels.
fn buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_bound: BTreeMap<u64, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&bucket)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let Some(le) = series
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        *by_bound.entry(bound.to_bits()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    let mut out: Vec<(f64, f64)> = by_bound
        .into_iter()
        .map(|(b, c)| (f64::from_bits(b), c))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound (ms) under which `q` of the samples between two scrapes
/// fall; `None` without samples.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            (*bound, count - earlier)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(bound, _)| bound * 1000.0)
}

/// CPU ticks (utime + stime) and peak RSS (kB) of a process.
fn proc_usage(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((ticks, hwm))
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn clock_ticks() -> f64 {
    // `getconf CLK_TCK`: 100 on every Linux we know of.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The stack's own services (broker, etcd, MongoDB server), when the
/// `stack.json` of the stack in the environment is found.
fn stack_services() -> Vec<(String, i32)> {
    let Some(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .or_else(|| OWN_STACK.get().map(|s| s.kafka_bootstrap.clone()))
    else {
        return Vec::new();
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var("BENCH_STACK_DIR").map(PathBuf::from).ok(),
        Some(root.join(".tickfetch/dev")),
        Some(root.join(".tickfetch/test-stack")),
        Some(root.join("target/test-stack")),
    ];
    for dir in candidates.into_iter().flatten() {
        let env = std::fs::read_to_string(dir.join("stack.env")).unwrap_or_default();
        if !env.contains(&format!("KAFKA_BOOTSTRAP={bootstrap}")) {
            continue;
        }
        if let Ok(state) = tickfetch::stack::read_state(&dir) {
            return state
                .services
                .into_iter()
                .map(|s| (s.name, s.pid))
                .collect();
        }
    }
    Vec::new()
}

// ------------------------------------------------------------------ readers

/// What the reader saw.
#[derive(Default)]
struct Seen {
    /// Per feed key, its trades in topic order.
    trades: BTreeMap<String, Vec<Trade>>,
    /// Per trade: (exchange time, read − exchange time).
    trade_latency: Vec<(Millis, Millis)>,
    /// Per interval, per (key, open time), the highest revision read.
    candles: BTreeMap<Interval, HashMap<(String, Millis), Candle>>,
    /// Per interval, per first revision read: (window close, read − close).
    candle_latency: BTreeMap<Interval, Vec<(Millis, Millis)>>,
    gaps: usize,
}

/// Reads the trades topic and the four candle topics from the start until
/// `stop`.
fn read_topics(config: &Config, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let consumer: BaseConsumer = tickfetch::kafka::client_config(
        &config.kafka,
        &[
            ("group.id", "bench-pipeline-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("fetch.queue.backoff.ms", "1"),
            ("fetch.wait.max.ms", "10"),
        ],
    )
    .expect("reader config")
    .create()
    .expect("reader");
    let trades_topic = config.topics.trades();
    let candle_topics: HashMap<String, Interval> = STAGES
        .iter()
        .map(|i| (config.topics.candles(*i), *i))
        .collect();
    let mut partitions = TopicPartitionList::new();
    for topic in std::iter::once(&trades_topic).chain(candle_topics.keys()) {
        for p in 0..config.topics.partitions {
            partitions
                .add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&partitions).expect("assign");
    let grace = config.rollup.grace_ms;
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let read = now_ms();
        let Ok(message) = message else {
            // Topics not created yet, and the like: read on.
            continue;
        };
        let envelope = Envelope::of(&message);
        let mut seen = seen.lock().expect("reader state");
        if message.topic() == trades_topic {
            match envelope.decode::<Trade>().expect("a trades-topic record") {
                Received::Data(trade) => {
                    seen.trade_latency
                        .push((trade.exchange_time, read - trade.exchange_time));
                    seen.trades.entry(trade.key()).or_default().push(trade);
                }
                Received::Gap(_) => seen.gaps += 1,
                Received::Watermark(_) => {}
            }
            continue;
        }
        let Some(&interval) = candle_topics.get(message.topic()) else {
            continue;
        };
        let Received::Data(candle) = envelope.decode::<Candle>().expect("a candle record") else {
            continue;
        };
        let close = candle.close_time + 1 + grace;
        let key = (candle.key(), candle.open_time);
        let by_window = seen.candles.entry(interval).or_default();
        let first = !by_window.contains_key(&key);
        match by_window.get(&key) {
            Some(held) if held.revision >= candle.revision => {}
            _ => {
                by_window.insert(key, candle);
            }
        }
        if first {
            seen.candle_latency
                .entry(interval)
                .or_default()
                .push((close, read - close));
        }
    }
}

// ------------------------------------------------------------------ results

#[derive(Debug, Clone, Serialize)]
struct Latency {
    measure: String,
    samples: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn latency(measure: String, samples: impl Iterator<Item = Millis>) -> Latency {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("histogram");
    for ms in samples {
        h.saturating_record(ms.max(1) as u64);
    }
    Latency {
        measure,
        samples: h.len(),
        p50_ms: h.value_at_quantile(0.50) as f64,
        p99_ms: h.value_at_quantile(0.99) as f64,
        p999_ms: h.value_at_quantile(0.999) as f64,
        max_ms: h.max() as f64,
    }
}

#[derive(Debug, Clone, Serialize)]
struct Usage {
    process: String,
    cpu_percent: f64,
    peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Throughput {
    what: String,
    per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    offered_trades_per_second: f64,
    symbols: usize,
    measured_secs: f64,
    trades_sent: usize,
    /// Trades read off the trades topic whose exchange time is in the window,
    /// per second.
    trades_per_second_read: f64,
    latency: Vec<Latency>,
    /// From the processes' own histograms (bucket upper bounds).
    bucketed: Vec<Latency>,
    throughput: Vec<Throughput>,
    usage: Vec<Usage>,
    candles_checked: BTreeMap<String, usize>,
    stored_checked: BTreeMap<String, usize>,
    errors: Vec<String>,
    trades_topic: String,
    /// `/proc/loadavg`'s 1-minute figure at the start and the end of the
    /// measured window (other work on the cores shows here).
    load_average: (f64, f64),
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    date: String,
    settings: Settings,
    runs: Vec<RunResult>,
    backlog: Option<Backlog>,
}

/// One reader of the copied backlog.
#[derive(Debug, Clone, Serialize)]
struct BacklogRun {
    system: String,
    trades: u64,
    /// From the process's start until it has consumed the backlog.
    seconds_from_start: f64,
    /// From its first trade (or first commit) to the last.
    seconds_working: f64,
    trades_per_second: f64,
    cpu_seconds: f64,
    trades_per_cpu_second: f64,
    peak_rss_mb: f64,
    candles_compared: usize,
    candles_differing: usize,
    /// Windows with trades that tickfetch emitted and the peer did not.
    candles_not_emitted: usize,
    note: String,
}

#[derive(Debug, Clone, Serialize)]
struct Backlog {
    topic: String,
    records: i64,
    trades: u64,
    symbols: usize,
    runs: Vec<BacklogRun>,
    errors: Vec<String>,
}

// ---------------------------------------------------------------- one run

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            eprintln!("pipeline benchmark: timed out waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The stack's config (from the environment) with topics, an etcd prefix
/// and a database of `prefix`'s own.
fn base_config(prefix: &str) -> Config {
    let mut config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config from environment");
    if let Some(stack) = OWN_STACK.get() {
        config.kafka.bootstrap = stack.kafka_bootstrap.clone();
        config.etcd.endpoints = stack
            .etcd_endpoints
            .split(',')
            .map(|e| e.trim().to_string())
            .collect();
        config.mongodb.uri = stack.mongodb_uri.clone();
    }
    config.topics.prefix = prefix.to_string();
    config.topics.partitions = 4;
    config.etcd.prefix = format!("/{prefix}/");
    config.mongodb.database = prefix.replace('-', "_");
    config
}

fn write_config(config: &Config, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("work dir");
    let path = dir.join("tickfetch.toml");
    std::fs::write(&path, toml::to_string(config).expect("config")).expect("config file");
    path
}

async fn run(settings: &Settings, rate: f64, dir: &Path) -> RunResult {
    let n = settings.symbols;
    let mut symbols = generated_symbols(Exchange::Binance, n / 2);
    symbols.extend(generated_symbols(Exchange::Okx, n - n / 2));
    let sim = Arc::new(simulator(&symbols).await);

    let prefix = format!("bench-pipeline-{}-{}", std::process::id(), rate as u64);
    let mut config = base_config(&prefix);
    config.sink.intervals = settings.sink_intervals.clone();
    config.sink.trades = false;
    config.ingest.feeds = FEEDS
        .iter()
        .map(|name| {
            let feed: Feed = name.parse().expect("known feed");
            let mine: Vec<String> = symbols
                .iter()
                .filter(|s| feed_of(s) == feed)
                .cloned()
                .collect();
            sim.feed_config(feed, &mine)
        })
        .collect();
    let dir = dir.join(&prefix);
    let config_path = write_config(&config, &dir);
    eprintln!(
        "pipeline benchmark: {rate} trades/s over {n} symbols; logs and config in {}",
        dir.display()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut procs: Vec<Proc> = vec![Proc::start(
        "worker",
        env!("CARGO_BIN_EXE_tickfetch-ingest"),
        &[],
        &config_path,
        &dir,
    )];
    for stage in STAGES {
        let name = stage.to_string();
        procs.push(Proc::start(
            &format!("rollup-{name}"),
            env!("CARGO_BIN_EXE_tickfetch-rollup"),
            &["--stage", &name, "--partitions", "all"],
            &config_path,
            &dir,
        ));
    }
    procs.push(Proc::start(
        "sink",
        env!("CARGO_BIN_EXE_tickfetch-sink"),
        &[],
        &config_path,
        &dir,
    ));
    let reader = {
        let (config, stop, seen) = (config.clone(), stop_reading.clone(), seen.clone());
        std::thread::spawn(move || read_topics(&config, &stop, &seen))
    };
    let mut errors = Vec::new();

    // Every symbol publishing before the load starts.
    let keys: Vec<String> = symbols
        .iter()
        .map(|s| format!("{}:{s}", feed_of(s).exchange()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let quiet: Vec<usize> = {
            let seen = seen.lock().expect("reader state");
            (0..symbols.len())
                .filter(|i| !seen.trades.contains_key(&keys[*i]))
                .collect()
        };
        if quiet.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} symbols never published; see the logs in {}",
            quiet.len(),
            dir.display()
        );
        for i in quiet {
            sim.generate(feed_of(&symbols[i]).exchange(), &symbols[i], 1)
                .expect("generate");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The load: `rate` trades/s, round-robin over the symbols, in 50 ms ticks.
    let trading_stop = Arc::new(AtomicBool::new(false));
    let trading =
        common::trade_round_robin(sim.clone(), symbols.clone(), rate, trading_stop.clone());
    tokio::time::sleep(Duration::from_secs(settings.warm_secs)).await;

    // The measured window.
    let mut services: Vec<(String, i32)> =
        procs.iter().map(|p| (p.name.clone(), p.pid())).collect();
    services.extend(stack_services());
    services.push((
        "benchmark (simulator, readers)".into(),
        std::process::id() as i32,
    ));
    let cpu_before: Vec<Option<(u64, u64)>> =
        services.iter().map(|(_, pid)| proc_usage(*pid)).collect();
    let scrapes_before: Vec<String> = procs.iter().map(|p| scrape(&p.metrics)).collect();
    let load_before = load_average();
    let from = now_ms();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(settings.measure_secs)).await;
    let load_after = load_average();
    let elapsed = started.elapsed().as_secs_f64();
    let to = now_ms();
    let cpu_after: Vec<Option<(u64, u64)>> =
        services.iter().map(|(_, pid)| proc_usage(*pid)).collect();
    let scrapes_after: Vec<String> = procs.iter().map(|p| scrape(&p.metrics)).collect();
    trading_stop.store(true, Ordering::Relaxed);
    trading.await.expect("trading");

    let ticks = clock_ticks();
    let usage: Vec<Usage> = services
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .filter_map(|((name, _), (before, after))| {
            let ((t0, _), (t1, hwm)) = ((*before)?, (*after)?);
            Some(Usage {
                process: name.clone(),
                cpu_percent: (t1.saturating_sub(t0)) as f64 / ticks / elapsed * 100.0,
                peak_rss_mb: hwm as f64 / 1024.0,
            })
        })
        .collect();
    let delta = |i: usize, name: &str, labels: &[(&str, &str)]| {
        (metric(&scrapes_after[i], name, labels) - metric(&scrapes_before[i], name, labels))
            / elapsed
    };
    let mut throughput = vec![Throughput {
        what: "worker: trades published".into(),
        per_second: delta(0, "tickfetch_ingest_trades_total", &[]),
    }];
    let mut bucketed = Vec::new();
    let grace_s = config.rollup.grace_ms as f64 / 1000.0;
    for (i, stage) in STAGES.iter().enumerate() {
        let name = stage.to_string();
        throughput.push(Throughput {
            what: format!("{name} stage: input records"),
            per_second: delta(i + 1, "tickfetch_rollup_records_total", &[]),
        });
        let b = |text: &str| buckets(text, "tickfetch_rollup_commit_seconds", &[]);
        let (before, after) = (b(&scrapes_before[i + 1]), b(&scrapes_after[i + 1]));
        bucketed.push(bucketed_latency(
            format!("{name} stage: transaction commit (≤ bucket)"),
            &before,
            &after,
            0.0,
        ));
    }
    let sink = STAGES.len() + 1;
    throughput.push(Throughput {
        what: "sink: documents written".into(),
        per_second: delta(sink, "tickfetch_sink_written_total", &[]),
    });
    for interval in &settings.sink_intervals {
        let name = interval.to_string();
        let b = |text: &str| {
            buckets(
                text,
                "tickfetch_sink_stored_latency_seconds",
                &[("interval", &name)],
            )
        };
        let (before, after) = (b(&scrapes_before[sink]), b(&scrapes_after[sink]));
        bucketed.push(bucketed_latency(
            format!("{name}: window close → stored in MongoDB (≤ bucket)"),
            &before,
            &after,
            grace_s,
        ));
    }

    // Everything sent is read, and every window up to the last trade's closed.
    let want: BTreeMap<String, Vec<String>> = symbols
        .iter()
        .map(|s| {
            let feed = feed_of(s);
            let ids = sim
                .feed_history(feed, s)
                .expect("history")
                .into_iter()
                .map(|t| t.trade_id)
                .collect();
            (format!("{}:{s}", feed.exchange()), ids)
        })
        .collect();
    let trades_sent: usize = want.values().map(Vec::len).sum();
    let all_read = wait_for("every trade read", Duration::from_secs(120), || {
        let seen = seen.lock().expect("reader state");
        want.iter().all(|(key, ids)| {
            seen.trades
                .get(key)
                .and_then(|t| t.last())
                .is_some_and(|last| Some(&last.trade_id) == ids.last())
        })
    })
    .await;
    if !all_read {
        errors.push("not every simulated trade reached the trades topic".into());
    }
    let closes = if settings.quick {
        vec![Interval::S1, Interval::S5]
    } else {
        vec![Interval::S1, Interval::S5, Interval::M1]
    };
    for interval in &closes {
        let span = interval.millis();
        let done = wait_for(
            &format!("every {interval} window closed"),
            Duration::from_secs(60) + Duration::from_millis(span.unsigned_abs() * 2),
            || {
                let seen = seen.lock().expect("reader state");
                let Some(candles) = seen.candles.get(interval) else {
                    return false;
                };
                let mut last_open: HashMap<&str, Millis> = HashMap::new();
                for (key, open) in candles.keys() {
                    let held = last_open.entry(key.as_str()).or_insert(*open);
                    *held = (*held).max(*open);
                }
                seen.trades.iter().all(|(key, trades)| {
                    let last = trades.last().map(|t| t.exchange_time).unwrap_or(0);
                    last_open
                        .get(key.as_str())
                        .is_some_and(|open| *open >= last.div_euclid(span) * span)
                })
            },
        )
        .await;
        if !done {
            errors.push(format!("{interval}: not every window closed"));
        }
    }
    // Anything doubled or revised would be read by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_reading.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
    let seen = std::mem::take(&mut *seen.lock().expect("reader state"));

    errors.extend(check_trades(&want, &seen));
    let (candles_checked, candle_errors) = check_candles(&config, &seen);
    errors.extend(candle_errors);
    let (stored_checked, stored_errors) = check_stored(&config, settings, &seen, &dir).await;
    errors.extend(stored_errors);

    let mut latency = vec![latency(
        "exchange → trade readable on the trades topic".into(),
        seen.trade_latency
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, l)| *l),
    )];
    for (interval, samples) in &seen.candle_latency {
        latency.push(self::latency(
            format!("{interval}: window close → candle committed"),
            samples
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|(_, l)| *l),
        ));
    }
    let trades_in_window = seen
        .trade_latency
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .count();
    drop(procs);
    remove_prefix(&config).await;
    RunResult {
        offered_trades_per_second: rate,
        symbols: n,
        measured_secs: elapsed,
        trades_sent,
        trades_per_second_read: trades_in_window as f64 / ((to - from) as f64 / 1000.0),
        latency,
        bucketed,
        throughput,
        usage,
        candles_checked,
        stored_checked,
        errors,
        trades_topic: config.topics.trades(),
        load_average: (load_before, load_after),
    }
}

fn bucketed_latency(
    measure: String,
    before: &[(f64, f64)],
    after: &[(f64, f64)],
    minus_s: f64,
) -> Latency {
    let q = |q| {
        bucket_quantile(before, after, q)
            .map(|ms| (ms - minus_s * 1000.0).max(0.0))
            .unwrap_or(f64::NAN)
    };
    let samples = after.last().map(|(_, c)| *c).unwrap_or(0.0)
        - before.last().map(|(_, c)| *c).unwrap_or(0.0);
    Latency {
        measure,
        samples: samples.max(0.0) as u64,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: q(1.0),
    }
}

// ---------------------------------------------------------------- backlog

/// Reads every partition of `topic` from its start to its end
/// (read_committed), handing each record to `each`. An empty partition ends
/// at once; a read error stops with it.
fn read_to_end(
    config: &Config,
    topic: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) {
    let consumer: BaseConsumer = tickfetch::kafka::client_config(
        &config.kafka,
        &[
            ("group.id", "bench-pipeline-read"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )
    .expect("reader config")
    .create()
    .expect("reader");
    let mut partitions = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        partitions
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&partitions).expect("assign");
    let mut at_end = HashSet::new();
    while at_end.len() < config.topics.partitions as usize {
        let Some(message) = consumer.poll(Duration::from_secs(10)) else {
            panic!("reading {topic}: nothing for 10 s before its end");
        };
        match message {
            Ok(m) => each(&m),
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
            }
            Err(e) => panic!("reading {topic}: {e}"),
        }
    }
}

/// Copies every record of `from` to `to`, partition for partition, with its
/// key, headers and payload; returns (records, trades).
fn copy_topic(config: &Config, from: &str, to: &str) -> (i64, u64) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = tickfetch::kafka::client_config(
        &config.kafka,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
        ],
    )
    .expect("copy producer config")
    .create()
    .expect("copy producer");
    let (mut records, mut trades) = (0i64, 0u64);
    read_to_end(config, from, |message| {
        if matches!(
            Envelope::of(message).decode::<Trade>(),
            Ok(Received::Data(_))
        ) {
            trades += 1;
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(to).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.detach());
        }
        tickfetch::wire::send_waiting(&producer, record).expect("copy produce");
        records += 1;
    });
    producer
        .flush(Duration::from_secs(120))
        .expect("copy flush");
    (records, trades)
}

/// Per (interval, key, open time), the candles on `topic` (highest revision),
/// read to the end.
fn read_candles(config: &Config, topic: &str) -> HashMap<(Interval, String, Millis), Candle> {
    let mut out: HashMap<(Interval, String, Millis), Candle> = HashMap::new();
    read_to_end(config, topic, |message| {
        let Some(Ok(candle)) = message.payload().map(serde_json::from_slice::<Candle>) else {
            return;
        };
        let key = (candle.interval, candle.key(), candle.open_time);
        if out
            .get(&key)
            .is_none_or(|held| held.revision < candle.revision)
        {
            out.insert(key, candle);
        }
    });
    out
}

/// Polls a process's CPU ticks and peak RSS until it exits; the last values.
struct Sampler {
    last: Arc<Mutex<(u64, u64)>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let last = Arc::new(Mutex::new((0, 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (last, stop) = (last.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some((ticks, hwm)) = proc_usage(pid) else {
                        break;
                    };
                    // An exited process not yet reaped has no VmHWM.
                    let mut held = last.lock().expect("sampler");
                    *held = (ticks.max(held.0), hwm.max(held.1));
                    drop(held);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Sampler { last, stop, thread }
    }

    /// (CPU seconds, peak RSS in MB).
    fn finish(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let (ticks, hwm) = *self.last.lock().expect("sampler");
        (ticks as f64 / clock_ticks(), hwm as f64 / 1024.0)
    }
}

/// Compares `got` (a peer's candles, or ours) with the offline ones of the
/// same windows (quiet candles after a feed's last trade, which only the
/// live watermarks make, are left out); returns (compared, differing,
/// windows with trades not emitted), and the first differences.
fn compare(
    got: &HashMap<(Interval, String, Millis), Candle>,
    want: &HashMap<(Interval, String, Millis), Candle>,
    intervals: &[Interval],
) -> (usize, usize, usize, Vec<String>) {
    let mut last_built: HashMap<(Interval, &str), Millis> = HashMap::new();
    for (interval, key, open) in want.keys() {
        let last = last_built.entry((*interval, key.as_str())).or_insert(*open);
        *last = (*last).max(*open);
    }
    let (mut compared, mut differing, mut samples) = (0, 0, Vec::new());
    for (key, candle) in got {
        if !intervals.contains(&key.0) {
            continue;
        }
        let after_last = last_built
            .get(&(key.0, key.1.as_str()))
            .is_none_or(|last| key.2 > *last);
        if after_last && candle.status == CandleStatus::Quiet {
            continue;
        }
        compared += 1;
        match want.get(key) {
            Some(expected) if expected == candle => {}
            expected => {
                differing += 1;
                if samples.len() < 3 {
                    samples.push(format!("{key:?}: got {candle:?}, offline {expected:?}"));
                }
            }
        }
    }
    let not_emitted = want
        .iter()
        .filter(|(key, c)| {
            intervals.contains(&key.0)
                && c.status == CandleStatus::Complete
                && !got.contains_key(key)
        })
        .count();
    (compared, differing, not_emitted, samples)
}

/// The engine's offline candles (1s and 1m) of the trades on `topic`.
fn offline_of_topic(config: &Config, topic: &str) -> HashMap<(Interval, String, Millis), Candle> {
    let mut seen = Seen::default();
    read_to_end(config, topic, |message| {
        if let Ok(Received::Data(trade)) = Envelope::of(message).decode::<Trade>() {
            seen.trades.entry(trade.key()).or_default().push(trade);
        }
    });
    offline(config, &seen)
        .into_iter()
        .filter(|(interval, _)| matches!(interval, Interval::S1 | Interval::M1))
        .flat_map(|(interval, candles)| {
            candles
                .into_iter()
                .map(move |((key, open), c)| ((interval, key, open), c))
        })
        .collect()
}

/// tickfetch's 1s stage on the backlog, until it has committed all of it.
async fn our_stage(
    config: &Config,
    dir: &Path,
    records: i64,
    trades: u64,
) -> (BacklogRun, PathBuf) {
    let config_path = write_config(config, dir);
    let started = Instant::now();
    let guarantee = match config.rollup.guarantee {
        Guarantee::ExactlyOnce => "exactly-once",
        Guarantee::AtLeastOnce => "at-least-once",
    };
    let stage = Proc::start(
        &format!("backlog-rollup-1s-{guarantee}"),
        env!("CARGO_BIN_EXE_tickfetch-rollup"),
        &["--stage", "1s", "--partitions", "all"],
        &config_path,
        dir,
    );
    let sampler = Sampler::start(stage.pid());
    let group = format!("{}.{}", config.rollup.group_prefix, Interval::S1);
    let input = config.topics.trades();
    let mut first_commit: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (c, g, i) = (config.clone(), group.clone(), input.clone());
        let done = tokio::task::spawn_blocking(move || common::committed(&c, &g, &i))
            .await
            .expect("probe");
        if done > 0 && first_commit.is_none() {
            first_commit = Some(Instant::now());
        }
        // The last commit may leave one offset for its own marker.
        if done >= records || Instant::now() > deadline {
            break;
        }
    }
    let seconds_from_start = started.elapsed().as_secs_f64();
    let seconds_working = first_commit
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(seconds_from_start);
    let (cpu_seconds, peak_rss_mb) = sampler.finish();
    drop(stage);
    (
        BacklogRun {
            system: format!("tickfetch 1s stage ({guarantee})"),
            trades,
            seconds_from_start,
            seconds_working,
            trades_per_second: trades as f64 / seconds_from_start,
            cpu_seconds,
            trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
            peak_rss_mb,
            candles_compared: 0,
            candles_differing: 0,
            candles_not_emitted: 0,
            note: "time from process start (includes start-up and state restore); `seconds_working` from its first commit".into(),
        },
        config_path,
    )
}

/// The 1s stage at-least-once on a copy of the backlog with topics, state
/// and a group of its own; its candles are compared too.
async fn at_least_once(
    config: &Config,
    source: &str,
    dir: &Path,
    want: &HashMap<(Interval, String, Millis), Candle>,
    errors: &mut Vec<String>,
) -> BacklogRun {
    let mut alo = base_config(&format!("{}-alo", config.topics.prefix));
    alo.rollup.guarantee = Guarantee::AtLeastOnce;
    let (records, trades) = copy_backlog(&alo, source).await;
    let (mut run, _) = our_stage(&alo, &dir.join("alo"), records, trades).await;
    let topics = vec![alo.topics.candles(Interval::S1)];
    check_backlog_candles(&alo, topics, want, &[Interval::S1], &mut run, errors).await;
    remove_prefix(&alo).await;
    run
}

/// Reads the candles of `topics`, compares them with `want` over
/// `intervals` and writes the counts into `run` (the first differences into
/// `errors`); returns how many candles were read.
async fn check_backlog_candles(
    config: &Config,
    topics: Vec<String>,
    want: &HashMap<(Interval, String, Millis), Candle>,
    intervals: &[Interval],
    run: &mut BacklogRun,
    errors: &mut Vec<String>,
) -> usize {
    let mut got = HashMap::new();
    for topic in topics {
        let c = config.clone();
        got.extend(
            tokio::task::spawn_blocking(move || read_candles(&c, &topic))
                .await
                .expect("read"),
        );
    }
    let (compared, differing, not_emitted, samples) = compare(&got, want, intervals);
    run.candles_compared = compared;
    run.candles_differing = differing;
    run.candles_not_emitted = not_emitted;
    errors.extend(samples);
    got.len()
}

/// The floor on the backlog: a raw consume → produce passthrough with the
/// exactly-once stage's client settings, producers per partition and
/// commit cadence, no parsing, writing one record in `stride` (as many as
/// the stage wrote), run in this process (its CPU is this process's over
/// the run: the benchmark does nothing else meanwhile).
async fn floor(config: &Config, records: i64, trades: u64, stride: u64) -> BacklogRun {
    let output = format!("{}.passthrough", config.topics.prefix);
    tickfetch::kafka::ensure_topics(
        &config.kafka,
        &[tickfetch::kafka::TopicSpec {
            name: output.clone(),
            partitions: config.topics.partitions,
            compacted: false,
        }],
    )
    .await
    .expect("passthrough topic");
    let me = std::process::id() as i32;
    let before = proc_usage(me).map_or(0, |(ticks, _)| ticks);
    let floor = {
        let (c, out) = (config.clone(), output.clone());
        tokio::task::spawn_blocking(move || {
            common::passthrough(
                &c,
                &c.topics.trades(),
                &out,
                Guarantee::ExactlyOnce,
                records as u64,
                stride,
            )
        })
        .await
        .expect("passthrough")
    };
    let cpu_seconds = proc_usage(me)
        .map_or(0, |(ticks, _)| ticks)
        .saturating_sub(before) as f64
        / clock_ticks();
    BacklogRun {
        system: format!("floor: passthrough, exactly-once, 1 record in {stride} forwarded"),
        trades,
        seconds_from_start: floor.seconds,
        seconds_working: floor.seconds,
        trades_per_second: trades as f64 / floor.seconds,
        cpu_seconds,
        trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
        peak_rss_mb: 0.0,
        candles_compared: 0,
        candles_differing: 0,
        candles_not_emitted: 0,
        note: format!(
            "the stage's consumer and producer settings, a transactional producer per partition, commits every {} ms, no parsing; in the benchmark's process (its CPU over the run; no RSS of its own); {} commits, p50 {:.1} ms, p99 {:.1} ms",
            config.rollup.commit_interval_ms,
            floor.commits,
            floor.commit_p50_micros as f64 / 1e3,
            floor.commit_p99_micros as f64 / 1e3
        ),
    }
}

/// A peer that reads the backlog into 1s and 1m candle topics of its own.
struct Peer {
    /// `kafka-streams` or `quix`, as in `BENCH_PEERS`.
    name: &'static str,
    system: &'static str,
    note: &'static str,
}

const PEERS: [Peer; 2] = [
    Peer {
        name: "kafka-streams",
        system: "Kafka Streams 4.4.0 (exactly_once_v2, 1s and 1m windows, suppress)",
        note: "trades/s from its first trade consumed to its last (JVM start-up excluded); CPU includes start-up",
    },
    Peer {
        name: "quix",
        system: "Quix Streams 3.28.1 (exactly-once, 1s and 1m tumbling windows, final)",
        note: "trades/s from its first trade to its last (start-up excluded); CPU includes start-up",
    },
];

/// The peer's command line on the backlog of `config`, built or installed
/// first where needed (Maven for Kafka Streams, the venv of
/// `benchmarks/peers/python/setup.sh` for Quix).
fn peer_command(
    peer: &Peer,
    config: &Config,
    dir: &Path,
    trades: u64,
    out: (&str, &str),
) -> Result<std::process::Command, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benchmarks/peers");
    let state = dir.join(format!("{}-state", peer.name));
    let id = format!("{}-{}", config.topics.prefix, peer.name);
    let run = |program: &str, args: &[&str], cwd: &Path| -> Result<String, String> {
        let output = std::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{program} {args:?} in {} failed: {}",
                cwd.display(),
                output.status
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let mut command;
    match peer.name {
        "kafka-streams" => {
            let home = root.join("kafka-streams");
            let jar = home.join("target/kafka-streams-peer.jar");
            if !jar.exists() {
                eprintln!("pipeline benchmark: building the Kafka Streams peer (mvn package)");
                run("mvn", &["-q", "-B", "package"], &home)?;
            }
            command = std::process::Command::new("java");
            command
                .arg("-Xmx1g")
                .arg("-cp")
                .arg(format!("{}:{}/target/lib/*", jar.display(), home.display()))
                .arg("tickfetch.peers.StreamsCandles")
                .args(["--application-id", &id])
                .args([
                    "--commit-interval-ms",
                    &config.rollup.commit_interval_ms.to_string(),
                ]);
        }
        "quix" => {
            let home = root.join("python");
            eprintln!(
                "pipeline benchmark: the Python peers' venv (benchmarks/peers/python/setup.sh)"
            );
            let python = run("bash", &["setup.sh"], &home)?;
            command = std::process::Command::new(python);
            command
                .arg(home.join("quix_candles.py"))
                .args(["--group", &id])
                .args([
                    "--commit-interval",
                    &(config.rollup.commit_interval_ms as f64 / 1000.0).to_string(),
                ]);
        }
        other => return Err(format!("BENCH_PEERS: unknown peer {other:?}")),
    }
    command
        .args(["--bootstrap", &config.kafka.bootstrap])
        .args(["--input", &config.topics.trades()])
        .args(["--output-1s", out.0, "--output-1m", out.1])
        .arg("--state-dir")
        .arg(state)
        .args(["--grace-ms", &config.rollup.grace_ms.to_string()])
        .args(["--expect-trades", &trades.to_string()]);
    Ok(command)
}

/// Runs a peer on the backlog until it has consumed `trades` trades;
/// returns its run and its two output topics.
fn run_peer(
    peer: &Peer,
    config: &Config,
    dir: &Path,
    trades: u64,
) -> Result<(BacklogRun, String, String), String> {
    let (out_1s, out_1m) = (
        format!("{}.{}.1s", config.topics.prefix, peer.name),
        format!("{}.{}.1m", config.topics.prefix, peer.name),
    );
    let mut command = peer_command(peer, config, dir, trades, (&out_1s, &out_1m))?;
    let log_path = dir.join(format!("{}.log", peer.name));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", peer.name))?;
    let sampler = Sampler::start(child.id() as i32);
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let seconds_from_start = started.elapsed().as_secs_f64();
    let (cpu_seconds, peak_rss_mb) = sampler.finish();
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); log in {}",
            peer.name,
            output.status,
            log_path.display()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default().trim();
    let result: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("{} result {line:?}: {e}", peer.name))?;
    let elapsed_ms = result["elapsed_ms"].as_f64().unwrap_or(0.0);
    Ok((
        BacklogRun {
            system: peer.system.into(),
            trades,
            seconds_from_start,
            seconds_working: elapsed_ms / 1000.0,
            trades_per_second: result["trades_per_s"].as_f64().unwrap_or(0.0),
            cpu_seconds,
            trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
            peak_rss_mb,
            candles_compared: 0,
            candles_differing: 0,
            candles_not_emitted: 0,
            note: peer.note.into(),
        },
        out_1s,
        out_1m,
    ))
}

/// Copies the trades topic `source` into `config`'s trades topic (made
/// here); returns (records, trades) copied.
async fn copy_backlog(config: &Config, source: &str) -> (i64, u64) {
    let topic = config.topics.trades();
    tickfetch::kafka::ensure_topics(
        &config.kafka,
        &[tickfetch::kafka::TopicSpec {
            name: topic.clone(),
            partitions: config.topics.partitions,
            compacted: false,
        }],
    )
    .await
    .expect("backlog topic");
    let (config, source) = (config.clone(), source.to_string());
    tokio::task::spawn_blocking(move || copy_topic(&config, &source, &topic))
        .await
        .expect("copy")
}

/// tickfetch's 1s stage and the peers, one after the other, on a copy of
/// the trades topic `source`.
async fn backlog(source: &str, symbols: usize, dir: &Path, peers: &[String]) -> Backlog {
    let prefix = format!("bench-pipeline-{}-backlog", std::process::id());
    let config = base_config(&prefix);
    let dir = dir.join(&prefix);
    std::fs::create_dir_all(&dir).expect("work dir");
    let topic = config.topics.trades();
    let (records, trades) = copy_backlog(&config, source).await;
    eprintln!("pipeline benchmark: backlog of {records} records ({trades} trades) in {topic}");
    let want = {
        let (config, topic) = (config.clone(), topic.clone());
        tokio::task::spawn_blocking(move || offline_of_topic(&config, &topic))
            .await
            .expect("offline")
    };
    let mut errors = Vec::new();
    let (mut ours, _) = our_stage(&config, &dir, records, trades).await;
    let topics = vec![config.topics.candles(Interval::S1)];
    let written = check_backlog_candles(
        &config,
        topics,
        &want,
        &[Interval::S1],
        &mut ours,
        &mut errors,
    )
    .await;
    let stride = (records as u64 / (written as u64).max(1)).max(1);
    let mut runs = vec![ours];
    // The baselines on the same backlog: the stage at-least-once (on a copy
    // of its own, so that it starts from no state), and the floor.
    runs.push(at_least_once(&config, source, &dir, &want, &mut errors).await);
    runs.push(floor(&config, records, trades, stride).await);
    for peer in peers {
        let Some(peer) = PEERS.iter().find(|p| p.name == peer.as_str()) else {
            errors.push(format!("BENCH_PEERS: unknown peer {peer:?}"));
            continue;
        };
        match run_peer(peer, &config, &dir, trades) {
            Ok((mut run, out_1s, out_1m)) => {
                let intervals = [Interval::S1, Interval::M1];
                let topics = vec![out_1s, out_1m];
                check_backlog_candles(&config, topics, &want, &intervals, &mut run, &mut errors)
                    .await;
                runs.push(run);
            }
            Err(e) => errors.push(e),
        }
    }
    for run in &runs {
        if run.candles_differing > 0 {
            errors.push(format!(
                "{}: {} of {} candles differ from the offline engine's",
                run.system, run.candles_differing, run.candles_compared
            ));
        }
    }
    remove_prefix(&config).await;
    Backlog {
        topic,
        records,
        trades,
        symbols,
        runs,
        errors,
    }
}

// ---------------------------------------------------------------- checks

/// Every simulated trade read once per feed, in order, and no gap marker.
fn check_trades(want: &BTreeMap<String, Vec<String>>, seen: &Seen) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, ids) in want {
        let got: Vec<&str> = seen
            .trades
            .get(key)
            .map(|t| t.iter().map(|t| t.trade_id.as_str()).collect())
            .unwrap_or_default();
        // From the first trade read: those sent before its subscription was
        // in place were never offered to the worker.
        let start = got
            .first()
            .and_then(|first| ids.iter().position(|id| id == first))
            .unwrap_or(ids.len());
        let expected: Vec<&str> = ids[start..].iter().map(String::as_str).collect();
        if got != expected {
            let unique: HashSet<&str> = got.iter().copied().collect();
            errors.push(format!(
                "{key}: {} trades read, {} expected ({} duplicates, {} missing)",
                got.len(),
                expected.len(),
                got.len() - unique.len(),
                expected.iter().filter(|id| !unique.contains(*id)).count()
            ));
        }
    }
    if seen.gaps > 0 {
        errors.push(format!("{} gap markers on the trades topic", seen.gaps));
    }
    errors
}

/// The engine's offline candles of every feed, from its trades in topic
/// order, per interval and (key, open time).
fn offline(config: &Config, seen: &Seen) -> BTreeMap<Interval, HashMap<(String, Millis), Candle>> {
    let engine = PipelineConfig {
        trades: level_config(config, Interval::S1),
        candles: level_config(config, Interval::S5),
    };
    let mut built: BTreeMap<Interval, HashMap<(String, Millis), Candle>> = BTreeMap::new();
    let mut out = Vec::new();
    for trades in seen.trades.values() {
        let mut pipeline = CandlePipeline::new(&STAGES, engine).expect("engine");
        for trade in trades {
            pipeline.on_trade(trade, &mut out).expect("in-order trade");
        }
        pipeline.finish(&mut out).expect("finish");
        for candle in out.drain(..) {
            built
                .entry(candle.interval)
                .or_default()
                .insert((candle.key(), candle.open_time), candle);
        }
    }
    built
}

/// Every candle read equals the offline one (quiet candles after the last
/// trade's window excepted), and none is missing up to the last window read.
fn check_candles(config: &Config, seen: &Seen) -> (BTreeMap<String, usize>, Vec<String>) {
    let built = offline(config, seen);
    let mut errors = Vec::new();
    let mut checked = BTreeMap::new();
    for interval in STAGES {
        let empty = HashMap::new();
        let read = seen.candles.get(&interval).unwrap_or(&empty);
        let want = built.get(&interval).unwrap_or(&empty);
        let mut last_built: HashMap<&str, Millis> = HashMap::new();
        for (key, open) in want.keys() {
            let last = last_built.entry(key.as_str()).or_insert(*open);
            *last = (*last).max(*open);
        }
        let mut last_read: HashMap<&str, Millis> = HashMap::new();
        let (mut equal, mut wrong) = (0, 0);
        for ((key, open), candle) in read {
            let last = last_read.entry(key.as_str()).or_insert(*open);
            *last = (*last).max(*open);
            match want.get(&(key.clone(), *open)) {
                Some(expected) if expected == candle => equal += 1,
                Some(expected) => {
                    wrong += 1;
                    if wrong <= 3 {
                        errors.push(format!(
                            "{interval} {key} @{open}: read {candle:?}, built {expected:?}"
                        ));
                    }
                }
                None if candle.status == CandleStatus::Quiet
                    && last_built.get(key.as_str()).is_some_and(|l| open > l) => {}
                None => {
                    wrong += 1;
                    if wrong <= 3 {
                        errors.push(format!(
                            "{interval} {key} @{open}: read {candle:?}, built none"
                        ));
                    }
                }
            }
        }
        let missing = want
            .iter()
            .filter(|((key, open), _)| {
                last_read.get(key.as_str()).is_some_and(|l| open <= l)
                    && !read.contains_key(&(key.clone(), *open))
            })
            .count();
        if wrong > 0 || missing > 0 {
            errors.push(format!(
                "{interval}: {wrong} candles differ from the offline ones, {missing} missing"
            ));
        }
        checked.insert(interval.to_string(), equal);
    }
    (checked, errors)
}

/// MongoDB holds every candle of the stored intervals that the topics hold,
/// equal (waiting for the sink to catch up).
async fn check_stored(
    config: &Config,
    settings: &Settings,
    seen: &Seen,
    dir: &Path,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut checked = BTreeMap::new();
    let mut errors = Vec::new();
    let client = match config.mongodb.client_options().await {
        Ok(options) => match mongodb::Client::with_options(options) {
            Ok(client) => client,
            Err(e) => return (checked, vec![format!("mongodb: {e}")]),
        },
        Err(e) => return (checked, vec![format!("mongodb: {e}")]),
    };
    let db = client.database(&config.mongodb.database);
    for interval in &settings.sink_intervals {
        let Some(read) = seen.candles.get(interval) else {
            continue;
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut equal, mut differ) = (0, read.len());
        while Instant::now() < deadline {
            let mut stored: HashMap<(String, Millis), Candle> = HashMap::new();
            for exchange in [Exchange::Binance, Exchange::Okx] {
                let query = CandleQuery {
                    exchange,
                    symbol: None,
                    interval: *interval,
                    from: Millis::MIN,
                    to: Millis::MAX,
                };
                match query::candles(&db, &query).await {
                    Ok(candles) => {
                        stored.extend(candles.into_iter().map(|c| ((c.key(), c.open_time), c)))
                    }
                    Err(e) => errors.push(format!("{interval}: reading MongoDB: {e}")),
                }
            }
            equal = read
                .iter()
                .filter(|(key, candle)| stored.get(*key) == Some(*candle))
                .count();
            differ = read.len() - equal;
            if differ == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if differ > 0 {
            errors.push(format!(
                "{interval}: {differ} of {} candles not stored as the topic holds them (sink log in {})",
                read.len(),
                dir.display()
            ));
        }
        checked.insert(interval.to_string(), equal);
    }
    (checked, errors)
}

// ---------------------------------------------------------------- output

fn markdown(report: &Report) -> String {
    let mut md = format!(
        "# Pipeline benchmark\n\n{}; {}; {} symbols (half Binance, half OKX), {} s measured after {} s warm-up per rate; sink intervals {:?}.\n\n",
        report.machine,
        report.date,
        report.settings.symbols,
        report.settings.measure_secs,
        report.settings.warm_secs,
        report
            .settings
            .sink_intervals
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
    );
    for run in &report.runs {
        md.push_str(&format!(
            "## {} trades/s offered: {:.0} trades/s read (load average {:.1} → {:.1}), {}\n\n| latency | samples | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|\n",
            run.offered_trades_per_second,
            run.trades_per_second_read,
            run.load_average.0,
            run.load_average.1,
            if run.errors.is_empty() {
                "result correct".to_string()
            } else {
                format!("**result wrong**: {}", run.errors.join("; "))
            }
        ));
        let ms = |v: f64| {
            if v.is_finite() {
                format!("{v:.0} ms")
            } else {
                "–".to_string()
            }
        };
        for l in run.latency.iter().chain(&run.bucketed) {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                l.measure,
                l.samples,
                ms(l.p50_ms),
                ms(l.p99_ms),
                ms(l.p999_ms),
                ms(l.max_ms)
            ));
        }
        md.push_str("\n| throughput | per second |\n|---|---|\n");
        for t in &run.throughput {
            md.push_str(&format!("| {} | {:.0} |\n", t.what, t.per_second));
        }
        md.push_str("\n| process | CPU (100 % = one core) | peak RSS |\n|---|---|---|\n");
        for u in &run.usage {
            md.push_str(&format!(
                "| {} | {:.0} % | {:.0} MB |\n",
                u.process, u.cpu_percent, u.peak_rss_mb
            ));
        }
        md.push_str(&format!(
            "\nChecked: candles equal to the engine's offline ones {:?}; stored in MongoDB {:?}.\n\n",
            run.candles_checked, run.stored_checked
        ));
    }
    if let Some(b) = &report.backlog {
        md.push_str(&format!(
            "## Baselines and peers on the same trades: a backlog of {} trades ({} records with watermarks) over {} symbols, read from its start\n\n| system | trades/s | seconds (from start / working) | CPU s | trades per CPU-second | peak RSS | candles compared / differing / not emitted |\n|---|---|---|---|---|---|---|\n",
            b.trades, b.records, b.symbols
        ));
        for r in &b.runs {
            md.push_str(&format!(
                "| {} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} | {:.0} MB | {} / {} / {} |\n",
                r.system,
                r.trades_per_second,
                r.seconds_from_start,
                r.seconds_working,
                r.cpu_seconds,
                r.trades_per_cpu_second,
                r.peak_rss_mb,
                r.candles_compared,
                r.candles_differing,
                r.candles_not_emitted
            ));
        }
        let rate = |prefix: &str| {
            b.runs
                .iter()
                .find(|r| r.system.starts_with(prefix))
                .map(|r| r.trades_per_second)
        };
        if let (Some(eos), Some(alo), Some(floor)) = (
            rate("tickfetch 1s stage (exactly-once)"),
            rate("tickfetch 1s stage (at-least-once)"),
            rate("floor:"),
        ) {
            md.push_str(&format!(
                "\nThe exactly-once stage at {:.2}× the floor (target ≥ 0.9×); at-least-once at {:.2}× exactly-once.\n",
                eos / floor.max(1e-9),
                alo / eos.max(1e-9)
            ));
        }
        for r in &b.runs {
            md.push_str(&format!("\n- {}: {}", r.system, r.note));
        }
        if !b.errors.is_empty() {
            md.push_str(&format!("\n\nErrors: {}", b.errors.join("; ")));
        }
        md.push('\n');
    }
    md
}

/// A line chart of each latency's p99 against the offered rate, as SVG.
fn svg(report: &Report) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 40.0, 260.0);
    let series: Vec<(String, Vec<(f64, f64)>)> = {
        let mut by_measure: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for run in &report.runs {
            for l in run.latency.iter().chain(&run.bucketed) {
                if l.measure.contains("commit (") || !l.p99_ms.is_finite() {
                    continue;
                }
                by_measure
                    .entry(l.measure.clone())
                    .or_default()
                    .push((run.offered_trades_per_second, l.p99_ms));
            }
        }
        by_measure.into_iter().collect()
    };
    let max_x = report
        .runs
        .iter()
        .map(|r| r.offered_trades_per_second)
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let x = |v: f64| left + v / max_x * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - bottom - top);
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"13\">p99 latency against offered trades/s ({})</text>\n",
        report.machine
    );
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    ));
    for i in 0..=4 {
        let v = max_y * i as f64 / 4.0;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0} ms</text>\n",
            left - 5.0,
            y(v) + 4.0
        ));
    }
    for run in &report.runs {
        let v = run.offered_trades_per_second;
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.0}/s</text>\n",
            x(v),
            h - bottom + 18.0
        ));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        ));
        for (a, b) in points {
            out.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n",
                x(*a),
                y(*b)
            ));
        }
        let ly = top + 16.0 * i as f64;
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            w - right + 10.0,
            ly,
            w - right + 25.0,
            ly + 9.0,
            name.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    out.push_str("</svg>\n");
    out
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

//! What the benchmarks share: the machine they report, and offsets read
//! off the broker.
// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tickfetch::config::Config;
use tickfetch::exsim::{SimHandle, Simulator};
use tickfetch::ingest::venues::Feed;
use tickfetch::kafka::client_config;
use tickfetch::model::{Exchange, Millis};

/// The feeds the cluster benchmarks trade on: generated symbols of Binance
/// `trade` and OKX `trades`.
pub const FEEDS: [&str; 2] = ["binance:trade", "okx:trades"];

/// A setting from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// The feed a generated symbol is on: OKX's have a dash.
pub fn feed_of(symbol: &str) -> Feed {
    let name = if symbol.contains('-') {
        FEEDS[1]
    } else {
        FEEDS[0]
    };
    name.parse().expect("known feed")
}

/// The exchange simulator trading `symbols` (on their feeds' exchanges),
/// only when asked to (`SimHandle::generate`).
pub async fn simulator(symbols: &[String]) -> SimHandle {
    let mut by_exchange: BTreeMap<Exchange, Vec<String>> = BTreeMap::new();
    for symbol in symbols {
        by_exchange
            .entry(feed_of(symbol).exchange())
            .or_default()
            .push(symbol.clone());
    }
    Simulator::generating(by_exchange, 0.0)
        .await
        .expect("simulator starts")
}

/// Leaves etcd as it was found: removes everything under the config's prefix.
pub async fn remove_prefix(config: &Config) {
    let root = format!("{}/", config.etcd.prefix.trim_end_matches('/'));
    let deleted = match etcd_client::Client::connect(config.etcd.endpoints.clone(), None).await {
        Ok(mut raw) => raw
            .delete(root, Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        eprintln!("cleaning the etcd prefix: {e}");
    }
}

/// `"<cores> cores, <cpu model>"`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores, {cpu}")
}

/// Σ of end offsets of `topic`.
pub fn end_offsets(config: &Config, topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", "bench-probe")])
        .expect("config")
        .create()
        .expect("consumer");
    (0..config.topics.partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .unwrap_or(0)
        })
        .sum()
}

/// Σ of the group's committed offsets on `topic`.
pub fn committed(config: &Config, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", group)])
        .expect("config")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map(|c| {
            c.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A child process in a process group of its own (its output in `log`,
/// `RUST_LOG=info`), killed whole on drop.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn start(mut command: std::process::Command, log: &Path) -> Child {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = command
            .env("RUST_LOG", "info")
            .env_remove("TICKFETCH_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Child(child)
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Trades `rate` trades/s in all, round-robin over `symbols`, in 10 ms
/// ticks, until `stop`.
pub fn trade_round_robin(
    sim: Arc<SimHandle>,
    symbols: Vec<String>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut next = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let symbol = &symbols[next % symbols.len()];
                sim.generate(feed_of(symbol).exchange(), symbol, 1)
                    .expect("generate");
                next += 1;
                sent += 1;
            }
        }
    })
}

//! What the benchmarks share: settings from the environment, the simulator
//! and what it sent, topics, readers and offsets on the broker, child
//! processes, the round-robin load, the passthrough floor, and the machine
//! they report.
// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tickfetch::config::{Config, Guarantee};
use tickfetch::exsim::{SimHandle, Simulator};
use tickfetch::ingest::venues::Feed;
use tickfetch::kafka::client_config;
use tickfetch::model::{Exchange, Millis};
use tickfetch::rollup::stage;

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

/// The ids of the trades the simulator sent, in order, per
/// `"<exchange>:<symbol>"`: what a reader of the trades topic must find.
pub fn sent_ids(sim: &SimHandle, symbols: &[String]) -> BTreeMap<String, Vec<String>> {
    symbols
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
        .collect()
}

/// A histogram of millisecond `samples` from 1 ms (what is below counts as
/// 1 ms) to `highest_ms` (what is above counts as that).
pub fn millis_histogram(
    samples: impl Iterator<Item = i64>,
    highest_ms: u64,
) -> hdrhistogram::Histogram<u64> {
    let mut h =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, highest_ms, 3).expect("histogram");
    for ms in samples {
        h.saturating_record(ms.max(1) as u64);
    }
    h
}

/// Makes `name` on the broker unless it is there: `partitions` partitions,
/// not compacted, as the trades topic is.
pub async fn plain_topic(config: &Config, name: &str, partitions: i32) {
    tickfetch::kafka::ensure_topics(
        &config.kafka,
        &[tickfetch::kafka::TopicSpec {
            name: name.to_string(),
            partitions,
            compacted: false,
        }],
    )
    .await
    .unwrap_or_else(|e| panic!("topic {name}: {e}"));
}

/// A latency reader's settings: fetches returned at once, so that a record's
/// read time is when it became readable.
pub const LATENCY_READER: [(&str, &str); 2] =
    [("fetch.queue.backoff.ms", "1"), ("fetch.wait.max.ms", "10")];

/// A `read_committed` reader of every partition of `topics` from their
/// beginnings, committing nothing; `extra` adds settings (a latency
/// reader's short fetch waits, a read to the end's EOF events).
pub fn reader_from_start(
    config: &Config,
    group: &str,
    topics: &[String],
    extra: &[(&str, &str)],
) -> BaseConsumer {
    let mut settings = vec![
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("isolation.level", "read_committed"),
    ];
    settings.extend_from_slice(extra);
    let consumer: BaseConsumer = client_config(&config.kafka, &settings)
        .expect("reader config")
        .create()
        .expect("reader");
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        for p in 0..config.topics.partitions {
            partitions
                .add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&partitions).expect("assign");
    consumer
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

/// How often [`trade_round_robin`] trades: each tick makes what is due, a
/// symbol's share in one call (at 50,000/s over 500 symbols, 5 orders a
/// symbol a tick), as an exchange's match engine emits a burst.
pub const TRADING_TICK: Duration = Duration::from_millis(50);

/// Trades `rate` orders/s in all, round-robin over `symbols`, every
/// [`TRADING_TICK`], until `stop`.
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
        let n = symbols.len();
        if n == 0 {
            return;
        }
        let mut tick = tokio::time::interval(TRADING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            // The next `due - sent` of the round robin, as counts per symbol.
            let k = due.saturating_sub(sent) as usize;
            let (each, extra) = (k / n, k % n);
            for (i, symbol) in symbols.iter().enumerate() {
                // Symbols next, next + 1, … (mod n) get one more than the rest.
                let count = each + usize::from((i + n - next) % n < extra);
                if count > 0 {
                    sim.generate(feed_of(symbol).exchange(), symbol, count)
                        .expect("generate");
                }
            }
            next = (next + extra) % n;
            sent += k as u64;
        }
    })
}

/// What the passthrough floor did.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub records: u64,
    /// Records written (one in `stride` read).
    pub forwarded: u64,
    /// From its start (producers, `init_transactions`) to its last commit.
    pub seconds: f64,
    pub commits: u64,
    pub commit_p50_micros: u64,
    pub commit_p99_micros: u64,
    pub commit_max_micros: u64,
}

/// The floor: consume → produce with the stage's own client settings and
/// commit cadence, without parsing or aggregating. Like the stage it has one
/// producer per input partition (transactional for exactly-once, with the
/// offsets in each transaction; idempotent with a flush and an offset commit
/// for at-least-once) and commits every `rollup.commit_interval_ms`. It writes
/// one record for every `stride` it reads, so that with the stage's own
/// input/output ratio it writes as many records as the stage did.
pub fn passthrough(
    config: &Config,
    input: &str,
    output: &str,
    guarantee: Guarantee,
    records: u64,
    stride: u64,
) -> Floor {
    let group = output.to_string();
    let exactly_once = guarantee == Guarantee::ExactlyOnce;
    // The stage's own client settings, for this guarantee.
    let mut config = config.clone();
    config.rollup.guarantee = guarantee;
    let config = &config;
    let consumer: BaseConsumer = stage::input_consumer_config(config, &group)
        .expect("config")
        .create()
        .expect("consumer");
    // Timed from here, like the stage (whose time includes its producers'
    // init_transactions and its state restore).
    let started = Instant::now();
    let producers: Vec<stage::TxnProducer> = (0..config.topics.partitions)
        .map(|p| stage::partition_producer(config, &format!("{group}.p{p}")).expect("producer"))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        tpl.add_partition_offset(input, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let metadata = consumer.group_metadata().expect("group metadata");
    let interval = Duration::from_millis(config.rollup.commit_interval_ms);
    let mut seen = 0u64;
    let mut next: Vec<Option<i64>> = vec![None; producers.len()];
    let mut last_commit = Instant::now();
    let mut commit_latency = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    // A commit with nothing to commit (no record since the last) is not
    // timed.
    let mut commit = |next: &mut Vec<Option<i64>>| {
        let begun = Instant::now();
        let mut committed = false;
        for (p, offset) in next.iter_mut().enumerate() {
            let Some(o) = offset.take() else { continue };
            committed = true;
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset(input, p as i32, Offset::Offset(o))
                .expect("offsets");
            if exactly_once {
                producers[p]
                    .send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
                    .expect("send_offsets_to_transaction");
                producers[p]
                    .commit_transaction(Duration::from_secs(30))
                    .expect("commit_transaction");
            } else {
                producers[p].flush(Duration::from_secs(30)).expect("flush");
                consumer.commit(&offsets, CommitMode::Sync).expect("commit");
            }
        }
        if committed {
            let _ = commit_latency.record(begun.elapsed().as_micros() as u64);
        }
    };
    while seen < records {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
            let p = m.partition() as usize;
            if next[p].is_none() && exactly_once {
                producers[p].begin_transaction().expect("begin_transaction");
            }
            if seen % stride == 0 {
                let mut record = BaseRecord::<[u8], [u8]>::to(output)
                    .partition(m.partition())
                    .payload(m.payload().unwrap_or_default());
                if let Some(key) = m.key() {
                    record = record.key(key);
                }
                tickfetch::kafka::send_waiting(&producers[p], record).expect("produce");
            }
            next[p] = Some(m.offset() + 1);
            seen += 1;
        }
        if last_commit.elapsed() >= interval {
            commit(&mut next);
            last_commit = Instant::now();
        }
    }
    commit(&mut next);
    let seconds = started.elapsed().as_secs_f64();
    Floor {
        records,
        forwarded: records.div_ceil(stride),
        seconds,
        commits: commit_latency.len(),
        commit_p50_micros: commit_latency.value_at_quantile(0.5),
        commit_p99_micros: commit_latency.value_at_quantile(0.99),
        commit_max_micros: commit_latency.max(),
    }
}

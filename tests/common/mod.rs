//! Shared test harness: one local stack per test run, unique names per test.
//!
//! The stack comes from the environment when `KAFKA_BOOTSTRAP`, `ETCD_ENDPOINTS`
//! and `MONGODB_URI` are set (the README's test command starts one and sets
//! them); otherwise the first test to ask starts (or reuses) one under
//! `target/test-stack` with `tickfetch::stack::up`. Every test then takes its own
//! topic prefix, etcd prefix and database name from [`unique`].
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tickfetch::config::Config;
use tickfetch::stack::{StackEnv, StackOptions};

/// The running stack's addresses, started once per test process if needed.
pub fn stack() -> &'static StackEnv {
    static STACK: OnceLock<StackEnv> = OnceLock::new();
    STACK.get_or_init(|| {
        let from_env = (
            std::env::var("KAFKA_BOOTSTRAP"),
            std::env::var("ETCD_ENDPOINTS"),
            std::env::var("MONGODB_URI"),
        );
        if let (Ok(kafka_bootstrap), Ok(etcd_endpoints), Ok(mongodb_uri)) = from_env {
            return StackEnv {
                kafka_bootstrap,
                etcd_endpoints,
                mongodb_uri,
            };
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-stack");
        // A thread of its own: tests calling this may already be inside a runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(tickfetch::stack::up(&StackOptions::new(dir)))
        })
        .join()
        .expect("stack thread")
        .expect("local stack starts")
    })
}

/// A name no other test or run uses: `{tag}-{pid}-{n}-{random}`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}-{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A config pointing at the test stack, with this test's own topic prefix,
/// etcd prefix, database and consumer groups.
pub fn config(tag: &str) -> Config {
    let env = stack();
    let name = unique(tag);
    let mut config = Config::default();
    config.kafka.bootstrap = env.kafka_bootstrap.clone();
    config.etcd.endpoints = env.etcd_endpoints.split(',').map(str::to_string).collect();
    config.etcd.prefix = format!("/test/{name}");
    config.mongodb.uri = env.mongodb_uri.clone();
    config.mongodb.database = name.replace(['-', '.'], "_");
    config.topics.prefix = name.clone();
    config.rollup.group_prefix = format!("{name}.rollup");
    config.sink.group_id = format!("{name}.sink");
    // Instrument lists fetched from a test's simulator stay out of the
    // user's own cache.
    config.ingest.instruments_cache_dir =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-instruments"));
    config
}

/// The shared data folder (`TICKFETCH_SHARED_DATA`, default `../shared/data`), or
/// `None` with a message saying the test is skipped.
///
/// # Panics
/// When the data is missing and the environment variable `CI` is set (to
/// anything but `false` or `0`): in CI a test without its data fails instead
/// of passing without having checked anything.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TICKFETCH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = root.join(relative);
    if path.exists() {
        return Some(path);
    }
    let advice = "set TICKFETCH_SHARED_DATA to the shared data folder";
    if in_ci() {
        panic!("{} not found in CI ({advice})", path.display());
    }
    eprintln!("skipping: {} not found ({advice})", path.display());
    None
}

/// Whether the tests run in CI (`CI` set, as CI services do, and not
/// `false` or `0`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Reads every record of `topic` (all `partitions`) up to the end it has now,
/// with read_committed isolation and no consumer group: each partition is read
/// until the broker reports its end (librdkafka's partition EOF, which counts
/// transaction markers and aborted records as read).
pub async fn read_all(
    kafka: &tickfetch::config::KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Vec<Record> {
    read_all_with(kafka, topic, partitions, "read_committed").await
}

/// [`read_all`] with the given `isolation.level` (`read_uncommitted` also
/// returns the records of open and aborted transactions).
pub async fn read_all_with(
    kafka: &tickfetch::config::KafkaConfig,
    topic: &str,
    partitions: i32,
    isolation: &'static str,
) -> Vec<Record> {
    use rdkafka::consumer::Consumer;
    use rdkafka::error::KafkaError;
    use rdkafka::message::Headers;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let kafka = kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = tickfetch::kafka::end_reader(&kafka, "tickfetch-test-reader", isolation)
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut records = Vec::new();
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while at_end.len() < partitions as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "reading {topic}: partitions {at_end:?} of {partitions} reached their end in 120 s"
            );
            match consumer.poll(std::time::Duration::from_millis(100)) {
                Some(Ok(m)) => records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                // Not created yet: nothing to read.
                Some(Err(e))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    return records;
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        records
    })
    .await
    .expect("reader thread")
}
pub mod etcd;
pub mod oracle;
pub mod pipeline;
pub mod secure;
pub mod trades;
pub mod up;

/// Where a test writes its config file and process logs:
/// `target/test-logs/<topic prefix>/`.
pub fn work_dir(config: &Config) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-logs")
        .join(&config.topics.prefix);
    std::fs::create_dir_all(&dir).expect("test work dir");
    dir
}

/// Writes `config` as the TOML file the test's processes load.
pub fn write_config(config: &Config) -> PathBuf {
    let path = work_dir(config).join("tickfetch.toml");
    let mut config = config.clone();
    config.telemetry.http_addr = String::new();
    let text = toml::to_string(&config).expect("config serialises");
    // Atomically: a process started earlier may be reading it right now.
    let temp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    std::fs::write(&temp, text).expect("write config");
    std::fs::rename(&temp, &path).expect("rename config");
    path
}

/// Runs the `tickfetch` CLI with `args` on `config`; asserts it succeeds
/// and returns its stdout.
pub fn tickfetch_cli(config: &Config, args: &[&str]) -> String {
    let path = write_config(config);
    let exe = binary("tickfetch");
    let out = std::process::Command::new(&exe)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("TICKFETCH_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "tickfetch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tickfetch feeds add`: `symbols` on one exchange's channel, with
/// `replicas` hot replicas each.
pub fn add_feed(config: &Config, exchange: &str, channel: &str, replicas: u32, symbols: &[String]) {
    tickfetch_cli(
        config,
        &[
            "feeds",
            "add",
            "--exchange",
            exchange,
            "--channel",
            channel,
            "--replicas",
            &replicas.to_string(),
            "--symbols",
            &symbols.join(","),
        ],
    );
}

/// A tickfetch binary run as a child process, killed on drop.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts binary `bin` (e.g. `tickfetch-rollup`) with `--config` and `args`,
    /// output appended to `<work dir>/<name>.log`.
    pub fn spawn(config: &Config, bin: &str, name: &str, args: &[&str]) -> Proc {
        let path = write_config(config);
        let mut command = std::process::Command::new(binary(bin));
        command.arg("--config").arg(&path).args(args);
        Proc::start(config, name, command)
    }

    /// Starts `command` in a process group of its own (so that a wrapper's
    /// children are stopped with it), output appended to
    /// `<work dir>/<name>.log`.
    pub fn start(config: &Config, name: &str, mut command: std::process::Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let log = work_dir(config).join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("TICKFETCH_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// SIGKILL to its process group, and reap.
    pub fn kill9(&mut self) {
        let _ = nix::sys::signal::killpg(self.pid(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.pid(), nix::sys::signal::Signal::SIGCONT);
        self.kill9();
    }
}

/// A binary of this package, as built for the tests.
pub fn binary(bin: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/debug")
        .join(bin)
}

/// Candles read from a topic: per window the highest revision, checking that
/// every copy of one (window, revision) is identical (a broker may show a
/// record of an aborted transaction next to its committed twin). Watermark
/// records are skipped.
pub fn latest_candles(records: &[Record]) -> Vec<tickfetch::model::Candle> {
    use tickfetch::model::Candle;
    let mut windows: std::collections::BTreeMap<(String, i64), Candle> =
        std::collections::BTreeMap::new();
    for record in records {
        if record.headers.iter().any(|(k, v)| {
            k == tickfetch::model::KIND_HEADER && v == tickfetch::model::KIND_WATERMARK
        }) {
            continue;
        }
        let candle: Candle = serde_json::from_slice(&record.payload).unwrap_or_else(|e| {
            panic!(
                "record {}@{} is not a candle: {e}",
                record.partition, record.offset
            )
        });
        let id = (
            format!("{}:{}:{}", candle.exchange, candle.symbol, candle.interval),
            candle.open_time,
        );
        match windows.get(&id) {
            Some(held) if held.revision == candle.revision => {
                assert_eq!(
                    held, &candle,
                    "two different candles with the same window and revision"
                );
            }
            Some(held) if held.revision > candle.revision => {}
            _ => {
                windows.insert(id, candle);
            }
        }
    }
    windows.into_values().collect()
}

/// A local stack of a test's own (Kafka, etcd, MongoDB) under
/// `<work dir>/stack`, for faults the shared one must not see (a broker
/// killed); stopped on drop.
pub struct OwnStack {
    pub dir: PathBuf,
    pub env: StackEnv,
}

impl OwnStack {
    pub fn start(config: &Config) -> OwnStack {
        let dir = work_dir(config).join("stack");
        let env = OwnStack::up(&dir).expect("the test's own stack starts");
        OwnStack { dir, env }
    }

    /// `stack up` on `dir` (again: starts what died), on a runtime of its
    /// own (callers may be inside one, or in a sync callback of one).
    pub fn up(dir: &std::path::Path) -> Result<StackEnv, tickfetch::stack::StackError> {
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(tickfetch::stack::up(&StackOptions::new(dir)))
        })
        .join()
        .expect("stack thread")
    }

    /// Kills the broker with SIGKILL.
    pub fn kill_broker(&self) {
        tickfetch::stack::stop_service(&self.dir, "kafka", true).expect("kill -9 the broker");
    }
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        let _ = tickfetch::stack::down(&self.dir);
    }
}

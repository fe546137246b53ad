//! `tickfetch up`: the whole system on one machine, as child processes it
//! supervises.
//!
//! ```text
//! stack (Kafka, etcd, MongoDB) ─ started unless --no-stack
//! [exchange simulator]          ─ in this process with --simulate
//! tickfetch-coord  master-1     ─┐
//! tickfetch-ingest w1, w2       ─┤ every feed: a primary and one hot replica
//! tickfetch-rollup 1s 5s 1m 5m  ─┤ fixed partitions (all), exactly once
//! tickfetch-sink                ─┘ candles into MongoDB
//! ```
//!
//! The feeds are written to etcd as desired feeds (the defaults: BTC and ETH
//! against USDT on Binance, Bybit and OKX, against KRW on Upbit); the master
//! assigns them. A child that dies is started again after a back-off (1 s,
//! doubling up to 30 s, back to 1 s once it ran a minute), and `up` says so;
//! a worker that exits 0 (drained) is started again at once. The first
//! Ctrl-C (or SIGTERM) stops the children in order — workers (they hand
//! their feeds over and deregister), then the stages (they commit), the sink
//! (it flushes), the master — each with SIGTERM and a deadline, then the
//! stack if `up` started it; a second Ctrl-C kills what is left at once.
//!
//! Children run in process groups of their own, so a terminal's Ctrl-C
//! reaches `up` alone and the order holds. Their pids are kept in
//! `DIR/up/children.json`: an `up` killed with SIGKILL leaves them running,
//! and the next `up` on the same dir stops them before it starts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::app::ports;
use crate::config::{Config, FeedConfig};
use crate::coord::admin::{self, AdminError};
use crate::coord::store::{Store, StoreError};
use crate::exsim::{GenerateConfig, SimConfig, SimError, SimHandle, Simulator, Source};
use crate::ingest::feed::resume;
use crate::ingest::venues::Feed;
use crate::model::{Exchange, Interval};
use crate::stack::{self, StackError, StackOptions};
use crate::telemetry;

/// The feeds `up` runs when none are given.
pub const DEFAULT_FEEDS: [(Exchange, &str); 8] = [
    (Exchange::Binance, "BTCUSDT"),
    (Exchange::Binance, "ETHUSDT"),
    (Exchange::Bybit, "BTCUSDT"),
    (Exchange::Bybit, "ETHUSDT"),
    (Exchange::Okx, "BTC-USDT"),
    (Exchange::Okx, "ETH-USDT"),
    (Exchange::Upbit, "KRW-BTC"),
    (Exchange::Upbit, "KRW-ETH"),
];

/// Longest wait for one group of children to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Restart back-off bounds.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child up this long has its back-off reset.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The stack's dir, and `up`'s own files under `DIR/up/`.
    pub dir: PathBuf,
    /// Start (or reuse) the local stack; off: the config's services.
    pub start_stack: bool,
    /// Feed the workers from the exchange simulator instead of the exchanges.
    pub simulate: bool,
    /// Orders per second per symbol the simulator makes.
    pub sim_rate: f64,
    pub feeds: Vec<(Exchange, String)>,
    pub stages: Vec<Interval>,
    pub sink: bool,
    pub workers: usize,
    /// Hot replicas per feed.
    pub replicas: u32,
    /// Where the tickfetch binaries are (those next to `tickfetch`).
    pub bin_dir: PathBuf,
    /// A live screen (a terminal), else a log line every 10 s.
    pub screen: bool,
    /// `up`'s own endpoint; the children's are at the binaries' ports
    /// ([`ports`]) moved by as much (workers at +20 + i).
    pub port_base: u16,
}

impl UpOptions {
    /// The defaults, binaries next to the running executable.
    pub fn new(dir: PathBuf) -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            dir,
            start_stack: true,
            simulate: false,
            sim_rate: 5.0,
            feeds: DEFAULT_FEEDS
                .iter()
                .map(|(e, s)| (*e, (*s).to_string()))
                .collect(),
            stages: Interval::ALL.to_vec(),
            sink: true,
            workers: 2,
            replicas: 1,
            bin_dir,
            screen: std::io::stdout().is_terminal(),
            port_base: ports::UP,
        }
    }
}

/// Why `up` could not run.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("exchange simulator: {0}")]
    Simulator(#[from] SimError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} not found: build the binaries first (cargo build --release --bins)")]
    MissingBinary(PathBuf),
    #[error("bad option: {0}")]
    Options(String),
    #[error("writing the children's config: {0}")]
    Config(#[from] toml::ser::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpError {
    let what = what.into();
    move |source| UpError::Io { what, source }
}

/// What a child is, for the order it stops in and how it restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Role {
    Worker,
    Stage,
    Sink,
    Master,
}

/// One supervised child.
struct Supervised {
    name: String,
    role: Role,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
    process: Option<Child>,
    started: Instant,
    restarts: u32,
    backoff: Duration,
    /// When a dead child is due to start again.
    due: Option<Instant>,
    /// The last exit's code (`None`: killed by a signal).
    last_exit: Option<i32>,
}

fn restarts() -> &'static prometheus::IntCounterVec {
    static RESTARTS: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    RESTARTS.get_or_init(|| {
        telemetry::register(
            prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tickfetch_up_restarts_total",
                    "children of tickfetch up started again after they exited",
                ),
                &["child"],
            )
            .expect("static metric definition"),
        )
    })
}

impl Supervised {
    fn start(&mut self) -> Result<(), UpError> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("opening {}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", self.log.display())))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_remove("TICKFETCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io(format!("starting {}", self.program.display())))?;
        self.process = Some(child);
        self.started = Instant::now();
        self.due = None;
        telemetry::health().ready(&format!("child {}", self.name));
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        self.process.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Whether it still runs (reaping it if not).
    fn running(&mut self) -> bool {
        match self.process.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.last_exit = status.code();
                self.process = None;
                false
            }
            Some(Err(_)) => {
                self.last_exit = None;
                self.process = None;
                false
            }
            None => false,
        }
    }

    /// Whether the last exit (reaped by [`Supervised::running`]) was 0.
    fn exited_ok(&self) -> bool {
        self.last_exit == Some(0)
    }

    fn last_status(&self) -> String {
        match self.last_exit {
            Some(code) => format!("status {code}"),
            None => "killed by a signal".into(),
        }
    }
}

/// The pids `up` started, for the next `up` to stop after a SIGKILL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChildrenFile {
    children: Vec<(String, i32, String)>,
}

fn children_path(dir: &Path) -> PathBuf {
    dir.join("up").join("children.json")
}

fn record_children(dir: &Path, children: &[Supervised]) {
    let file = ChildrenFile {
        children: children
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.pid()?, c.program.display().to_string())))
            .collect(),
    };
    if let Ok(text) = serde_json::to_string(&file) {
        let _ = std::fs::write(children_path(dir), text);
    }
}

/// Stops children a previous `up` on this dir left running.
fn stop_leftovers(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(children_path(dir)) else {
        return;
    };
    let Ok(file) = serde_json::from_str::<ChildrenFile>(&text) else {
        return;
    };
    for (name, pid, program) in file.children {
        if stack::process_matches(pid, &program) {
            println!("up: stopping {name} (pid {pid}), left by an earlier run");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_file(children_path(dir));
}

/// The simulator for `feeds`: each exchange's symbols, their trade ids
/// going on after the last ones on the trades topic (a simulated market
/// that was paused while `up` was stopped, not one that lost trades).
async fn simulator(config: &Config, options: &UpOptions) -> Result<SimHandle, UpError> {
    let mut symbols: BTreeMap<Exchange, Vec<String>> = BTreeMap::new();
    for (exchange, symbol) in &options.feeds {
        symbols.entry(*exchange).or_default().push(symbol.clone());
    }
    let mut first_ids: BTreeMap<Exchange, BTreeMap<String, u64>> = BTreeMap::new();
    let lookback = config.cluster.resume_lookback;
    match resume::last_published_of(config, &options.feeds, lookback).await {
        Ok(last) => {
            for ((exchange, symbol), point) in last {
                if let Ok(id) = point.last.trade_id.parse::<u64>() {
                    first_ids
                        .entry(exchange)
                        .or_default()
                        .insert(symbol, id + 1);
                }
            }
        }
        // A first run: no trades topic yet.
        Err(e) => tracing::debug!(error = %e, "no trades to go on from"),
    }
    let orders = options.sim_rate * options.feeds.len() as f64 / symbols.len().max(1) as f64;
    Ok(Simulator::start(SimConfig {
        exchanges: symbols.keys().copied().collect(),
        source: Source::Generate(GenerateConfig {
            rate_per_second: orders,
            symbols,
            first_ids,
            ..GenerateConfig::default()
        }),
        ..SimConfig::default()
    })
    .await?)
}

/// Runs everything until Ctrl-C (or `shutdown`), then stops it in order.
///
/// # Errors
/// The stack, the simulator or etcd cannot be started or reached, a binary
/// is missing, a bad option.
pub async fn run(mut config: Config, options: UpOptions) -> Result<(), UpError> {
    use tokio::signal::unix::{signal, SignalKind};
    if options
        .port_base
        .checked_add(20 + options.workers as u16)
        .is_none()
    {
        return Err(UpError::Options(format!(
            "--port-base {} leaves no room for {} workers",
            options.port_base, options.workers
        )));
    }
    if options.workers == 0 || options.feeds.is_empty() {
        return Err(UpError::Options(
            "at least one worker and one feed are needed".into(),
        ));
    }
    for bin in [
        "tickfetch-coord",
        "tickfetch-ingest",
        "tickfetch-rollup",
        "tickfetch-sink",
    ] {
        let path = options.bin_dir.join(bin);
        if !path.is_file() {
            return Err(UpError::MissingBinary(path));
        }
    }
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(io("installing signal handlers"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(io("installing signal handlers"))?;
    let up_dir = options.dir.join("up");
    let log_dir = options.dir.join("logs").join("up");
    std::fs::create_dir_all(&log_dir).map_err(io(format!("creating {}", log_dir.display())))?;
    stop_leftovers(&options.dir);

    // The stack: ours to stop only if it was not already up.
    let mut stop_stack = false;
    if options.start_stack {
        let before = stack::status(&options.dir)
            .await
            .is_ok_and(|s| !s.is_empty() && s.iter().all(|s| s.answering));
        println!("up: starting the local stack in {}", options.dir.display());
        let env = stack::up(&StackOptions::new(options.dir.clone())).await?;
        stop_stack = !before;
        config.kafka.bootstrap = env.kafka_bootstrap;
        config.etcd.endpoints = env.etcd_endpoints.split(',').map(str::to_string).collect();
        config.mongodb.uri = env.mongodb_uri;
    }

    // Feeds: the simulator's endpoints or the exchanges' own.
    let sim = if options.simulate {
        Some(simulator(&config, &options).await?)
    } else {
        None
    };
    let mut exchanges: Vec<Exchange> = options.feeds.iter().map(|(e, _)| *e).collect();
    exchanges.sort();
    exchanges.dedup();
    config.ingest.feeds = exchanges
        .iter()
        .filter_map(|exchange| match &sim {
            // The exchange's first feed, as `feeds add` picks it.
            Some(sim) => Feed::ALL
                .into_iter()
                .find(|f| f.exchange() == *exchange)
                .map(|feed| sim.feed_config(feed, &[])),
            None => Some(FeedConfig::for_exchange(*exchange)),
        })
        .collect();
    config.sink.intervals = options.stages.clone();
    config.telemetry.http_addr = String::new();
    std::fs::create_dir_all(&up_dir).map_err(io(format!("creating {}", up_dir.display())))?;
    let config_path = up_dir.join("tickfetch.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)
        .map_err(io(format!("writing {}", config_path.display())))?;

    // Desired feeds: exactly these.
    let store = Store::connect(&config.etcd).await?;
    let mut desired = Vec::new();
    for (exchange, symbol) in &options.feeds {
        desired.push(admin::desired_feed(
            *exchange,
            None,
            symbol,
            options.replicas,
        )?);
    }
    for old in admin::list_feeds(&store).await? {
        if !desired
            .iter()
            .any(|d| d.exchange == old.exchange && d.symbol == old.symbol)
        {
            admin::remove_feed(&store, old.exchange, &old.symbol).await?;
        }
    }
    admin::add_feeds(&store, &desired).await?;

    // The children, on the port scheme moved to `port_base`.
    let port = |scheme: u16| scheme - ports::UP + options.port_base;
    let child = |name: &str, role: Role, bin: &str, port: u16, extra: &[String]| {
        let mut args = vec![
            "--config".to_string(),
            config_path.display().to_string(),
            "--set".to_string(),
            format!("telemetry.http_addr=\"127.0.0.1:{port}\""),
        ];
        args.extend_from_slice(extra);
        Supervised {
            name: name.to_string(),
            role,
            program: options.bin_dir.join(bin),
            args,
            port,
            log: log_dir.join(format!("{name}.log")),
            process: None,
            started: Instant::now(),
            restarts: 0,
            backoff: MIN_BACKOFF,
            due: Some(Instant::now()),
            last_exit: None,
        }
    };
    let mut children = vec![child(
        "master-1",
        Role::Master,
        "tickfetch-coord",
        port(ports::COORD),
        &["--id".into(), "master-1".into()],
    )];
    for i in 1..=options.workers {
        let id = format!("w{i}");
        children.push(child(
            &id,
            Role::Worker,
            "tickfetch-ingest",
            port(ports::UP + 20 + i as u16),
            &["--worker-id".into(), id.clone()],
        ));
    }
    for stage in &options.stages {
        children.push(child(
            &format!("rollup-{stage}"),
            Role::Stage,
            "tickfetch-rollup",
            port(ports::rollup(*stage)),
            &[
                "--stage".into(),
                stage.to_string(),
                "--partitions".into(),
                "all".into(),
            ],
        ));
    }
    if options.sink {
        children.push(child(
            "sink",
            Role::Sink,
            "tickfetch-sink",
            port(ports::SINK),
            &["--all-partitions".into()],
        ));
    }
    for c in &mut children {
        c.start()?;
        let _ = restarts().with_label_values(&[c.name.as_str()]);
    }
    record_children(&options.dir, &children);

    // Where everything is.
    let endpoint = telemetry::serve_http(
        &format!("127.0.0.1:{}", options.port_base),
        telemetry::health().clone(),
        crate::shutdown::CancellationToken::new(),
    )
    .await
    .ok()
    .flatten()
    .map(|(addr, task)| (addr.to_string(), task));
    telemetry::health().set(true);
    println!("up: Kafka {}", config.kafka.bootstrap);
    println!(
        "up: etcd {} (prefix {})",
        config.etcd.endpoints.join(","),
        config.etcd.prefix
    );
    println!(
        "up: MongoDB {} database {}",
        config.mongodb.uri, config.mongodb.database
    );
    if let Some(sim) = &sim {
        println!("up: exchange simulator on {}", sim.addr());
    }
    println!("up: config {}", config_path.display());
    println!("up: logs in {}", log_dir.display());
    if let Some((addr, _)) = &endpoint {
        println!("up: http://{addr}/readyz (every child running), /metrics");
    }
    for c in &children {
        println!(
            "up: {:<12} pid {:<7} http://127.0.0.1:{}/metrics /readyz",
            c.name,
            c.pid().unwrap_or_default(),
            c.port
        );
    }
    println!("up: Ctrl-C stops everything (a second Ctrl-C at once)");

    let mut summary = Summary::new(&config, &options, &store).await;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut next_summary = Instant::now() + Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {}
        }
        let mut changed = false;
        for c in &mut children {
            if c.process.is_some() && !c.running() {
                changed = true;
                if c.role == Role::Worker && c.exited_ok() {
                    println!("up: {} drained (exited 0); starting it again", c.name);
                    c.due = Some(Instant::now());
                } else {
                    if c.started.elapsed() >= STABLE_AFTER {
                        c.backoff = MIN_BACKOFF;
                    }
                    println!(
                        "up: {} exited ({}); starting it again in {} s (log {})",
                        c.name,
                        c.last_status(),
                        c.backoff.as_secs(),
                        c.log.display()
                    );
                    telemetry::health().unready(&format!("child {}", c.name), "exited; restarting");
                    c.due = Some(Instant::now() + c.backoff);
                    c.backoff = (c.backoff * 2).min(MAX_BACKOFF);
                }
            }
            if c.process.is_none() && c.due.is_some_and(|d| Instant::now() >= d) {
                c.restarts += 1;
                restarts().with_label_values(&[c.name.as_str()]).inc();
                if let Err(e) = c.start() {
                    println!(
                        "up: {}: {e}; trying again in {} s",
                        c.name,
                        c.backoff.as_secs()
                    );
                    c.due = Some(Instant::now() + c.backoff);
                }
                changed = true;
            }
        }
        if changed {
            record_children(&options.dir, &children);
        }
        if Instant::now() >= next_summary {
            summary.show(&children).await;
            next_summary = Instant::now() + summary.every;
        }
    }

    println!("up: stopping (Ctrl-C again to kill everything now)");
    let forced = stop_children(&mut children, &mut interrupt, &mut terminate).await;
    let _ = std::fs::remove_file(children_path(&options.dir));
    drop(sim);
    if let Some((_, task)) = endpoint {
        task.abort();
    }
    if stop_stack {
        println!("up: stopping the local stack");
        stack::down(&options.dir)?;
    }
    println!("up: stopped{}", if forced { " (forced)" } else { "" });
    Ok(())
}

/// Stops the children group by group: workers, stages, sink, master.
/// Returns whether a second signal forced the rest.
async fn stop_children(
    children: &mut [Supervised],
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> bool {
    use nix::sys::signal::Signal;
    for role in [Role::Worker, Role::Stage, Role::Sink, Role::Master] {
        let group: Vec<usize> = (0..children.len())
            .filter(|i| children[*i].role == role)
            .collect();
        for i in &group {
            children[*i].due = None;
            children[*i].signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            let left: Vec<usize> = group
                .iter()
                .copied()
                .filter(|i| children[*i].running())
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for i in left {
                    println!(
                        "up: {} did not stop within {:?}; killing it",
                        children[i].name, STOP_DEADLINE
                    );
                    children[i].signal(Signal::SIGKILL);
                }
                continue;
            }
            tokio::select! {
                _ = interrupt.recv() => return kill_all(children),
                _ = terminate.recv() => return kill_all(children),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if !group.is_empty() {
            println!(
                "up: stopped {}",
                group
                    .iter()
                    .map(|i| children[*i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    false
}

fn kill_all(children: &mut [Supervised]) -> bool {
    for c in children.iter_mut() {
        c.signal(nix::sys::signal::Signal::SIGKILL);
        if let Some(mut process) = c.process.take() {
            let _ = process.wait();
        }
    }
    println!("up: killed every child");
    true
}

/// The live summary: a screen redrawn every 2 s on a terminal, else one log
/// line every 10 s.
struct Summary {
    store: Store,
    mongo: Option<mongodb::Database>,
    stages: Vec<Interval>,
    screen: bool,
    every: Duration,
    started: Instant,
}

impl Summary {
    async fn new(config: &Config, options: &UpOptions, store: &Store) -> Summary {
        let mongo = match mongodb::Client::with_uri_str(&config.mongodb.uri).await {
            Ok(client) => Some(client.database(&config.mongodb.database)),
            Err(e) => {
                println!("up: the summary shows no candles: {e}");
                None
            }
        };
        Summary {
            store: store.clone(),
            mongo,
            stages: if options.sink {
                options.stages.clone()
            } else {
                Vec::new()
            },
            screen: options.screen,
            every: if options.screen {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(10)
            },
            started: Instant::now(),
        }
    }

    /// The newest stored candle per feed of `interval`: (open time, close).
    async fn last_candles(&self, interval: Interval) -> BTreeMap<String, (i64, String)> {
        use futures::TryStreamExt;
        let mut out = BTreeMap::new();
        let Some(db) = &self.mongo else { return out };
        let collection = db.collection::<mongodb::bson::Document>(
            &crate::sink::writer::candle_collection(interval),
        );
        let since = chrono::Utc::now().timestamp_millis() - 15 * 60_000;
        let found = collection
            .find(mongodb::bson::doc! { "open_time": { "$gte": since } })
            .sort(mongodb::bson::doc! { "open_time": -1 })
            .limit(500);
        let Ok(Ok(mut cursor)) = tokio::time::timeout(Duration::from_secs(2), found).await else {
            return out;
        };
        while let Ok(Some(doc)) = cursor.try_next().await {
            let (Ok(exchange), Ok(symbol)) = (doc.get_str("exchange"), doc.get_str("symbol"))
            else {
                continue;
            };
            let open = doc.get_i64("open_time").unwrap_or_default();
            let close = doc
                .get("close")
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default();
            out.entry(format!("{exchange}:{symbol}"))
                .or_insert((open, close));
        }
        out
    }

    async fn show(&mut self, children: &[Supervised]) {
        let now = chrono::Utc::now().timestamp_millis();
        let feeds = admin::status(&self.store, now).await.unwrap_or_default();
        let mut candles = BTreeMap::new();
        for interval in self.stages.clone() {
            candles.insert(interval, self.last_candles(interval).await);
        }
        let running = children.iter().filter(|c| c.process.is_some()).count();
        let restarts: u32 = children.iter().map(|c| c.restarts).sum();
        let rate = feeds
            .iter()
            .filter_map(|f| f.trades_per_s)
            .fold(0.0, |a, b| a + b);
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default()
        };
        if !self.screen {
            let newest: Vec<String> = candles
                .iter()
                .map(|(i, by_feed)| {
                    let last = by_feed.values().map(|(t, _)| *t).max();
                    format!("{i} {}", last.map_or("-".into(), time))
                })
                .collect();
            println!(
                "up: {running}/{} processes, {} feeds, {rate:.1} trades/s, last candles: {}",
                children.len(),
                feeds.len(),
                newest.join(", ")
            );
            return;
        }
        let mut out = String::from("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "tickfetch up — {running}/{} processes running, {restarts} restarts, up {} s — Ctrl-C stops\n\n",
            children.len(),
            self.started.elapsed().as_secs()
        ));
        out.push_str(&format!(
            "{:<22} {:<8} {:<8} {:>9} {:>10}",
            "feed", "primary", "replica", "trades/s", "last trade"
        ));
        for interval in &self.stages {
            out.push_str(&format!("  {:<20}", format!("last {interval} candle")));
        }
        out.push('\n');
        for f in &feeds {
            let key = format!("{}:{}", f.exchange, f.symbol);
            out.push_str(&format!(
                "{:<22} {:<8} {:<8} {:>9} {:>10}",
                key,
                f.primary.as_deref().unwrap_or("-"),
                f.replicas.first().map_or("-", String::as_str),
                f.trades_per_s.map_or("-".into(), |r| format!("{r:.1}")),
                f.last_trade_age_s
                    .map_or("-".into(), |a| format!("{a:.1} s ago")),
            ));
            for interval in &self.stages {
                let cell = candles
                    .get(interval)
                    .and_then(|m| m.get(&key))
                    .map_or("-".to_string(), |(t, close)| {
                        format!("{} {close}", time(*t))
                    });
                out.push_str(&format!("  {cell:<20}"));
            }
            out.push('\n');
        }
        out.push_str(&format!("\n{rate:.1} trades/s in all\n"));
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

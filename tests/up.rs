//! README's run command path: `tickfetch up --simulate` from the built tree
//! (on the test stack, `--no-stack`, with this test's own names). Within a
//! minute or so 1s and 1m candles of every default feed are in MongoDB;
//! Ctrl-C (SIGINT) stops every child; started again, the candles go on
//! without a hole or a duplicate, and every trade on the trades topic is
//! counted once in the 1s candles.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickfetch::config::Config;
use tickfetch::model::{Candle, Exchange, Interval};
use tickfetch::sink::query::{candles, CandleQuery};
use tickfetch::up::DEFAULT_FEEDS;

fn free_base() -> u16 {
    // 30 consecutive free ports from a random base.
    loop {
        let base = 20_000 + (rand::random::<u16>() % 20_000);
        let free = (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

/// A running `tickfetch up`, its stdout collected line by line.
struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Up {
    fn start(config: &Config, dir: &std::path::Path, port_base: u16) -> Up {
        let path = common::write_config(config);
        let mut child = Command::new(common::binary("tickfetch"))
            .args([
                "up",
                "--simulate",
                "--no-stack",
                "--no-screen",
                "--sim-rate",
                "5",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--config")
            .arg(&path)
            .args(["--port-base", &port_base.to_string()])
            .env_remove("TICKFETCH_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tickfetch up starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[up] {line}");
                sink.lock().expect("lines").push(line);
            }
        });
        Up {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// The children's pids as `up` printed them.
    fn child_pids(&self) -> Vec<i32> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| {
                let rest = l.split(" pid ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// SIGINT, as Ctrl-C; waits for `up` to exit and checks that it stopped
    /// every child.
    fn interrupt(mut self) -> String {
        let pids = self.child_pids();
        assert!(pids.len() >= 8, "children listed:\n{}", self.text());
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "up did not stop:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let text = self.text();
        assert!(status.success(), "up exited with {status}:\n{text}");
        assert!(
            text.contains("up: stopped\n") || text.ends_with("up: stopped"),
            "{text}"
        );
        for pid in pids {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            assert!(!alive, "child {pid} still runs after up stopped:\n{text}");
        }
        eprintln!(
            "up stopped every child {:.1} s after SIGINT",
            started.elapsed().as_secs_f64()
        );
        text
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            for pid in self.child_pids() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn stored(db: &mongodb::Database, interval: Interval) -> BTreeMap<String, Vec<Candle>> {
    let mut out: BTreeMap<String, Vec<Candle>> = BTreeMap::new();
    for exchange in [
        Exchange::Binance,
        Exchange::Bybit,
        Exchange::Okx,
        Exchange::Upbit,
    ] {
        let query = CandleQuery {
            exchange,
            symbol: None,
            interval,
            from: 0,
            to: i64::MAX,
        };
        for c in candles(db, &query).await.expect("query") {
            out.entry(format!("{}:{}", c.exchange, c.symbol))
                .or_default()
                .push(c);
        }
    }
    out
}

fn default_keys() -> Vec<String> {
    DEFAULT_FEEDS
        .iter()
        .map(|(e, s)| format!("{e}:{s}"))
        .collect()
}

/// Waits until every default feed has a 1s and a 1m candle stored, at
/// least one 1s candle opening at or after `after`.
async fn wait_candles(db: &mongodb::Database, after: i64, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let s1 = stored(db, Interval::S1).await;
        let m1 = stored(db, Interval::M1).await;
        let missing: Vec<String> = default_keys()
            .into_iter()
            .filter(|k| {
                !s1.get(k)
                    .is_some_and(|c| c.iter().any(|c| c.open_time >= after))
                    || !m1.contains_key(k)
            })
            .collect();
        if missing.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{what}: no 1s/1m candles for {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_simulate_stores_candles_of_every_default_feed_and_stops_and_restarts_cleanly() {
    let config = common::config("up");
    let dir = common::work_dir(&config).join("up-dir");
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongodb");
    let db = client.database(&config.mongodb.database);
    let base = free_base();

    let up = Up::start(&config, &dir, base);
    let took = wait_candles(&db, 0, "first run").await;
    eprintln!(
        "first run: 1s and 1m candles of all {} default feeds in MongoDB {:.1} s after start",
        DEFAULT_FEEDS.len(),
        took.as_secs_f64()
    );
    up.interrupt();
    let stopped_at = chrono::Utc::now().timestamp_millis();

    // Again: the candles go on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = Up::start(&config, &dir, base);
    wait_candles(&db, stopped_at + 5_000, "second run").await;
    let text = up.interrupt();
    assert!(
        !text.contains("exited ("),
        "no child died during the runs:\n{text}"
    );

    // Per feed: 1s candles one per second from the first to the last, each
    // once; every trade on the topic counted once in them.
    let trades = common::trades::read_trades_topic(&config).await;
    let s1 = stored(&db, Interval::S1).await;
    for key in default_keys() {
        let candles = &s1[&key];
        let opens: Vec<i64> = candles.iter().map(|c| c.open_time).collect();
        let unique: BTreeSet<i64> = opens.iter().copied().collect();
        assert_eq!(unique.len(), opens.len(), "{key}: a 1s window stored twice");
        let (first, last) = (opens[0], opens[opens.len() - 1]);
        assert_eq!(
            opens.len() as i64,
            (last - first) / 1000 + 1,
            "{key}: 1s windows missing between {first} and {last}"
        );
        assert!(
            candles
                .iter()
                .all(|c| c.status != tickfetch::model::CandleStatus::Degraded),
            "{key}: a degraded 1s candle: nothing was lost"
        );
        let on_topic = trades
            .trades
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let ids: BTreeSet<&str> = on_topic.iter().map(|t| t.trade_id.as_str()).collect();
        assert_eq!(ids.len(), on_topic.len(), "{key}: a trade published twice");
        let closed = last + 1000;
        let published = on_topic.iter().filter(|t| t.exchange_time < closed).count() as u64;
        let counted: u64 = candles.iter().map(|c| c.trade_count).sum();
        assert_eq!(
            counted, published,
            "{key}: {published} trades on the topic before {closed}, {counted} in the 1s candles"
        );
        assert!(
            trades
                .gaps
                .iter()
                .all(|g| format!("{}:{}", g.exchange, g.symbol) != key),
            "{key}: a gap marker: the restarted simulator goes on from the last id"
        );
    }
    common::etcd::remove_prefix(&config.etcd).await;
}

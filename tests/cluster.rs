//! Workers in a cluster, as separate processes: a master (`tickfetch-coord`)
//! and workers (`tickfetch-ingest --worker-id`) on the shared stack's etcd
//! and broker, fed by the exchange simulator (in this process, so that the
//! test makes every trade and knows them all). Feeds are added with the
//! operator CLI. One fault each: a worker killed with SIGKILL, a worker
//! paused past its lease. Afterwards every simulated trade must be on the
//! trades topic exactly once, in exchange order, per feed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::trades::{assert_trades_exactly_once, read_trades_topic, read_trades_topic_fenced};
use common::Proc;
use tickfetch::config::Config;
use tickfetch::coord::keyspace::{AssignmentRecord, ProgressRecord, WorkerRecord};
use tickfetch::coord::store::Store;
use tickfetch::exsim::{generated_symbols, SimHandle, Simulator};
use tickfetch::ingest::venues::Feed;
use tickfetch::model::{Candle, Exchange, Interval};
use tickfetch::wire::EPOCH_HEADER;

/// One test of this file at a time: each runs masters and workers on the
/// 2-core machine; two at once starve the workers enough that a
/// replacement's subscriptions are acknowledged seconds late and a planned
/// handover needs the REST backfill (docs/coordination.md, known problems).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The workers' lease TTL.
const WORKER_TTL: Duration = Duration::from_secs(3);
/// Longest any wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The feeds of these tests: Binance `trade` and OKX `trades`.
const FEEDS: [&str; 2] = ["binance:trade", "okx:trades"];

/// The feed a generated symbol is on: OKX's have a dash (`BTC-USDT`).
fn feed_of(symbol: &str) -> Feed {
    let name = if symbol.contains('-') {
        FEEDS[1]
    } else {
        FEEDS[0]
    };
    name.parse().expect("known feed")
}

/// `n` Binance symbols and `okx` OKX ones.
fn market(n: usize, okx: usize) -> Vec<String> {
    let mut symbols = generated_symbols(Exchange::Binance, n);
    symbols.extend(generated_symbols(Exchange::Okx, okx));
    symbols
}

async fn simulator(symbols: &[String]) -> SimHandle {
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

/// Every simulated trade of each symbol, by symbol.
fn simulated(
    sim: &SimHandle,
    symbols: &[String],
) -> BTreeMap<String, Vec<tickfetch::model::Trade>> {
    symbols
        .iter()
        .map(|s| (s.clone(), sim.feed_history(feed_of(s), s).expect("history")))
        .collect()
}

/// Every trade of `want` exactly once, in exchange order, per symbol.
fn assert_all_exactly_once(
    contents: &common::trades::TopicContents,
    want: &BTreeMap<String, Vec<tickfetch::model::Trade>>,
) {
    let mut by_exchange: BTreeMap<Exchange, BTreeMap<String, Vec<tickfetch::model::Trade>>> =
        BTreeMap::new();
    for (symbol, trades) in want {
        by_exchange
            .entry(feed_of(symbol).exchange())
            .or_default()
            .insert(symbol.clone(), trades.clone());
    }
    for (exchange, want) in &by_exchange {
        assert_trades_exactly_once(contents, *exchange, want);
    }
}

/// This test's config: the simulator's endpoints for both feeds (symbols
/// come from etcd), short leases and progress intervals.
fn config(tag: &str, sim: &SimHandle) -> Config {
    let mut config = common::config(tag);
    config.topics.partitions = 4;
    config.ingest.feeds = FEEDS
        .iter()
        .map(|name| {
            let feed: Feed = name.parse().expect("known feed");
            sim.feed_config(feed, &[])
        })
        .collect();
    config.ingest.watermark_interval_ms = 500;
    config.ingest.reconnect_min_ms = 50;
    config.ingest.reconnect_max_ms = 500;
    config.ingest.gap_grace_ms = 200;
    config.cluster.lease_ttl_ms = WORKER_TTL.as_millis() as u64;
    config.cluster.progress_interval_ms = 200;
    config
}

/// A master; `warm_secs`: how long replicas warm before a primary may move
/// to one to rebalance.
fn master(config: &Config, name: &str, warm_secs: u64) -> Proc {
    Proc::spawn(
        config,
        "tickfetch-coord",
        name,
        &[
            "--id",
            name,
            "--lease-ttl-secs",
            "2",
            "--resync-secs",
            "2",
            "--warm-secs",
            &warm_secs.to_string(),
        ],
    )
}

fn worker(config: &Config, id: &str) -> Proc {
    Proc::spawn(config, "tickfetch-ingest", id, &["--worker-id", id])
}

/// A master and workers `w1` and `w2`, both registered.
async fn start_cluster(
    config: &Config,
    store: &Store,
    warm_secs: u64,
) -> (Proc, BTreeMap<String, Proc>) {
    let master = master(config, "master-1", warm_secs);
    let workers: BTreeMap<String, Proc> = ["w1", "w2"]
        .into_iter()
        .map(|id| (id.to_string(), worker(config, id)))
        .collect();
    wait_workers(store, workers.len()).await;
    (master, workers)
}

/// `tickfetch feeds add`: the feeds of `symbols`, one replica each.
fn add_feeds(config: &Config, symbols: &[String]) {
    for name in FEEDS {
        let on: Vec<String> = symbols
            .iter()
            .filter(|s| feed_of(s).to_string() == name)
            .cloned()
            .collect();
        if on.is_empty() {
            continue;
        }
        let feed: Feed = name.parse().expect("known feed");
        common::add_feed(config, feed.exchange().as_str(), feed.name(), 1, &on);
    }
}

/// Waits until `n` workers are registered (so that feeds added next are
/// spread over all of them).
async fn wait_workers(store: &Store, n: usize) {
    wait_for(&format!("{n} workers registered"), || async {
        store
            .list::<WorkerRecord, &str>(&[])
            .await
            .is_ok_and(|l| l.records.len() == n)
    })
    .await;
}

async fn assignments(store: &Store) -> BTreeMap<String, AssignmentRecord> {
    store
        .list::<AssignmentRecord, &str>(&[])
        .await
        .expect("assignments")
        .records
        .into_iter()
        .map(|r| (r.value.symbol.clone(), r.value))
        .collect()
}

async fn progress(store: &Store) -> BTreeMap<String, ProgressRecord> {
    store
        .list::<ProgressRecord, &str>(&[])
        .await
        .expect("progress")
        .records
        .into_iter()
        .map(|r| (r.value.symbol.clone(), r.value))
        .collect()
}

async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every feed has a primary with its epoch set and `replicas` replicas.
async fn wait_assigned(store: &Store, symbols: &[String], replicas: usize) {
    wait_for(&format!("{} feeds assigned", symbols.len()), || async {
        let current = assignments(store).await;
        symbols.iter().all(|s| {
            current
                .get(s)
                .is_some_and(|a| a.epoch != 0 && a.replicas.len() == replicas)
        })
    })
    .await;
}

/// Makes trades for the feeds that have not published yet, until every one
/// has: each primary is subscribed and publishing before the test goes on.
async fn warm_up(store: &Store, sim: &SimHandle, symbols: &[String]) {
    wait_for("every feed publishing", || async {
        let progress = progress(store).await;
        let quiet: Vec<&String> = symbols
            .iter()
            .filter(|s| !progress.contains_key(*s))
            .collect();
        for symbol in &quiet {
            sim.generate(feed_of(symbol).exchange(), symbol, 1)
                .expect("generate");
        }
        quiet.is_empty()
    })
    .await;
}

/// Each symbol's simulated trades from the first one its feed published
/// (those made before its first subscription was in place were never
/// offered to any worker).
fn since_first_published(
    mut history: BTreeMap<String, Vec<tickfetch::model::Trade>>,
    contents: &common::trades::TopicContents,
) -> BTreeMap<String, Vec<tickfetch::model::Trade>> {
    for (symbol, trades) in &mut history {
        let first = contents
            .trades
            .get(&format!("{}:{symbol}", feed_of(symbol).exchange()))
            .and_then(|t| t.first())
            .unwrap_or_else(|| panic!("{symbol}: nothing published"));
        let start = trades
            .iter()
            .position(|t| t.trade_id == first.trade_id)
            .unwrap_or_else(|| panic!("{symbol}: trade {} was never simulated", first.trade_id));
        trades.drain(..start);
    }
    history
}

/// Until stopped: one order per symbol every `pause`.
struct Trading {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Trading {
    fn start(sim: &Arc<SimHandle>, symbols: &[String], pause: Duration) -> Trading {
        let stop = Arc::new(AtomicBool::new(false));
        let (sim, symbols, flag) = (Arc::clone(sim), symbols.to_vec(), stop.clone());
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                for symbol in &symbols {
                    sim.generate(feed_of(symbol).exchange(), symbol, 1)
                        .expect("generate");
                }
                tokio::time::sleep(pause).await;
            }
        });
        Trading { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("trading task");
    }
}

/// Waits until every symbol's progress shows its last simulated trade,
/// published by a current primary.
async fn wait_all_published(store: &Store, sim: &SimHandle, symbols: &[String]) {
    let last: BTreeMap<String, String> = symbols
        .iter()
        .filter_map(|s| {
            let history = sim.feed_history(feed_of(s), s).expect("history");
            history.last().map(|t| (s.clone(), t.trade_id.clone()))
        })
        .collect();
    wait_for("every simulated trade published", || async {
        let progress = progress(store).await;
        let current = assignments(store).await;
        last.iter().all(|(symbol, id)| {
            progress.get(symbol).is_some_and(|p| {
                &p.last_trade_id == id
                    && current
                        .get(symbol)
                        .is_some_and(|a| a.primary == p.worker && a.epoch == p.epoch)
            })
        })
    })
    .await;
}

/// Whether gap markers may be on the topic.
#[derive(PartialEq)]
enum Gaps {
    Allowed,
    None,
}

/// Once every simulated trade is published: the trades topic holds each
/// exactly once per feed, in exchange order, with epochs that never go back
/// per key (and, with [`Gaps::None`], no gap marker).
async fn assert_delivered(
    store: &Store,
    config: &Config,
    sim: &SimHandle,
    symbols: &[String],
    gaps: Gaps,
) {
    wait_all_published(store, sim, symbols).await;
    let contents = read_trades_topic(config).await;
    let want = since_first_published(simulated(sim, symbols), &contents);
    assert_all_exactly_once(&contents, &want);
    assert_epochs_never_go_back(config).await;
    if gaps == Gaps::None {
        assert!(
            contents.gaps.is_empty(),
            "no gap marker: {:?}",
            contents.gaps
        );
    }
}

/// Per key, the epochs of its trades in topic order must never go down:
/// nothing of an older primary after the newer one's first record.
async fn assert_epochs_never_go_back(config: &Config) {
    let records = common::read_all(
        &config.kafka,
        &config.topics.trades(),
        config.topics.partitions,
    )
    .await;
    let mut highest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for r in records {
        let epoch = r
            .headers
            .iter()
            .find(|(k, _)| k == EPOCH_HEADER)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let key = r.key.clone().unwrap_or_default();
        let seen = highest.entry(key.clone()).or_insert(epoch);
        assert!(
            epoch >= *seen,
            "{}: epoch {epoch} after {seen} at p{}@{}",
            String::from_utf8_lossy(&key),
            r.partition,
            r.offset
        );
        *seen = epoch;
    }
}

/// Each trade's epoch as readers take it (the highest it was published
/// under), by its MongoDB `_id`.
async fn trade_epochs(config: &Config) -> BTreeMap<String, i64> {
    let records = common::read_all(
        &config.kafka,
        &config.topics.trades(),
        config.topics.partitions,
    )
    .await;
    let mut epochs: BTreeMap<String, i64> = BTreeMap::new();
    for r in &records {
        let Ok(trade) = serde_json::from_slice::<tickfetch::model::Trade>(&r.payload) else {
            continue;
        };
        let Some(epoch) = r
            .headers
            .iter()
            .find(|(k, _)| k == EPOCH_HEADER)
            .and_then(|(_, v)| v.parse::<i64>().ok())
        else {
            continue;
        };
        let id = tickfetch::sink::writer::trade_id(&trade);
        let entry = epochs.entry(id).or_insert(epoch);
        *entry = (*entry).max(epoch);
    }
    epochs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_s_primaries_move_to_their_replicas_with_nothing_lost_or_doubled() {
    let _serial = SERIAL.lock().await;
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let symbols = market(25, 25);
    let sim = Arc::new(simulator(&symbols).await);
    let config = config("cluster-kill", &sim);
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let (_master, mut workers) = start_cluster(&config, &store, 10).await;
    add_feeds(&config, &symbols);
    let listed = common::tickfetch_cli(&config, &["feeds", "list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("feeds list --json");
    assert_eq!(listed.len(), symbols.len(), "feeds list shows every feed");
    wait_assigned(&store, &symbols, 1).await;

    warm_up(&store, &sim, &symbols).await;
    let trading = Trading::start(&sim, &symbols, Duration::from_millis(100));
    let status = common::tickfetch_cli(&config, &["status", "--json"]);
    let status: Vec<serde_json::Value> = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status.len(), symbols.len());
    assert!(
        status
            .iter()
            .all(|f| f["primary"].is_string() && f["epoch"].as_u64() > Some(0)),
        "status shows a primary and an epoch per feed"
    );

    let before = assignments(&store).await;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for a in before.values() {
        *count.entry(a.primary.as_str()).or_default() += 1;
    }
    let (victim, held) = count
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(w, n)| (w.to_string(), *n))
        .expect("a primary");
    let survivor = if victim == "w1" { "w2" } else { "w1" };
    let moved: BTreeSet<String> = before
        .values()
        .filter(|a| a.primary == victim)
        .map(|a| a.symbol.clone())
        .collect();
    assert!(
        moved
            .iter()
            .all(|s| before[s].replicas == [survivor.to_string()]),
        "each of {victim}'s feeds has its replica on {survivor}"
    );

    let killed = Instant::now();
    workers.get_mut(&victim).expect("victim").kill9();
    // Promoted: the assignment names the survivor with a new epoch…
    wait_for("the victim's feeds reassigned", || async {
        let now = assignments(&store).await;
        moved.iter().all(|s| {
            now.get(s)
                .is_some_and(|a| a.primary == survivor && a.epoch > before[s].epoch)
        })
    })
    .await;
    let reassigned = killed.elapsed();
    // …and the survivor publishes under it.
    let after = assignments(&store).await;
    wait_for("the promoted replicas publishing", || async {
        let progress = progress(&store).await;
        moved.iter().all(|s| {
            progress
                .get(s)
                .is_some_and(|p| p.worker == survivor && p.epoch == after[s].epoch)
        })
    })
    .await;
    let publishing = killed.elapsed();
    eprintln!(
        "failover: {held} primaries of {victim} killed with SIGKILL; reassigned after {:.2} s, \
         publishing under the new epochs after {:.2} s (worker lease TTL {} s, progress every 200 ms)",
        reassigned.as_secs_f64(),
        publishing.as_secs_f64(),
        WORKER_TTL.as_secs()
    );
    std::fs::write(
        common::work_dir(&config).join("failover.json"),
        serde_json::json!({
            "primaries_moved": held,
            "lease_ttl_s": WORKER_TTL.as_secs(),
            "reassigned_s": reassigned.as_secs_f64(),
            "publishing_s": publishing.as_secs_f64(),
        })
        .to_string(),
    )
    .expect("failover.json");

    tokio::time::sleep(Duration::from_secs(1)).await;
    trading.stop().await;
    assert_delivered(&store, &config, &sim, &symbols, Gaps::Allowed).await;
    drop(workers);
    common::etcd::remove_prefix(&config.etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_is_fenced_and_rejoins_as_a_replica() {
    let _serial = SERIAL.lock().await;
    use nix::sys::signal::{kill, Signal};
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let symbols = generated_symbols(Exchange::Binance, 6);
    let sim = Arc::new(simulator(&symbols).await);
    let mut config = config("cluster-pause", &sim);
    config.sink.trades = true;
    config.sink.intervals = Vec::new();
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let _sink = Proc::spawn(&config, "tickfetch-sink", "sink", &[]);
    let (_master, workers) = start_cluster(&config, &store, 3600).await;
    add_feeds(&config, &symbols);
    wait_assigned(&store, &symbols, 1).await;
    warm_up(&store, &sim, &symbols).await;
    let trading = Trading::start(&sim, &symbols, Duration::from_millis(50));

    let before = assignments(&store).await;
    let paused = before
        .values()
        .next()
        .map(|a| a.primary.clone())
        .expect("a primary");
    let other = if paused == "w1" { "w2" } else { "w1" };
    let moved: BTreeSet<String> = before
        .values()
        .filter(|a| a.primary == paused)
        .map(|a| a.symbol.clone())
        .collect();
    let registered_before = store
        .get::<WorkerRecord, &str>(&[paused.as_str()])
        .await
        .expect("etcd")
        .expect("paused worker registered")
        .value
        .registered;
    kill(workers[&paused].pid(), Signal::SIGSTOP).expect("SIGSTOP");
    wait_for("the paused worker's feeds taken over", || async {
        let now = assignments(&store).await;
        moved.iter().all(|s| {
            now.get(s)
                .is_some_and(|a| a.primary == other && a.epoch > before[s].epoch)
        })
    })
    .await;
    // The replica publishes for a while before the old primary wakes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(workers[&paused].pid(), Signal::SIGCONT).expect("SIGCONT");

    // It registers again and takes replicas, and nothing moves back.
    wait_for("the paused worker registered again", || async {
        store
            .get::<WorkerRecord, &str>(&[paused.as_str()])
            .await
            .ok()
            .flatten()
            .is_some_and(|w| w.value.registered > registered_before)
    })
    .await;
    wait_assigned(&store, &symbols, 1).await;
    let settled = assignments(&store).await;
    for symbol in &moved {
        assert_eq!(
            settled[symbol].primary, other,
            "{symbol} stays with {other}"
        );
        assert_eq!(
            settled[symbol].replicas,
            std::slice::from_ref(&paused),
            "{symbol}: {paused} rejoined as its replica"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    trading.stop().await;
    wait_all_published(&store, &sim, &symbols).await;
    assert_eq!(
        assignments(&store).await,
        settled,
        "no fight: assignments stay put"
    );

    // What the paused worker still had in flight when it stopped reaches
    // the topic after it resumes, under its old epoch: readers drop it.
    let (contents, fenced) = read_trades_topic_fenced(&config).await;
    eprintln!(
        "fencing: {fenced} late records of the paused worker's old epoch dropped by the epoch rule"
    );
    let want = since_first_published(simulated(&sim, &symbols), &contents);
    assert_all_exactly_once(&contents, &want);

    // MongoDB: every trade once, each with the epoch of the primary that
    // published it last; none of the paused worker's writes after the
    // takeover changed a document.
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongodb");
    let trades = client
        .database(&config.mongodb.database)
        .collection::<mongodb::bson::Document>(tickfetch::sink::writer::TRADES_COLLECTION);
    let total: usize = want.values().map(Vec::len).sum();
    wait_for("the sink stored every trade", || async {
        trades
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap_or(0) as usize
            >= total
    })
    .await;
    assert_eq!(
        trades
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count") as usize,
        total
    );
    let on_topic = trade_epochs(&config).await;
    let mut cursor = trades.find(mongodb::bson::doc! {}).await.expect("find");
    let mut stored = 0;
    while cursor.advance().await.expect("cursor") {
        let doc = cursor.deserialize_current().expect("a document");
        let id = doc.get_str("_id").expect("_id").to_string();
        assert_eq!(
            doc.get_i64("epoch").ok(),
            on_topic.get(&id).copied(),
            "{id}: stored with the epoch it has on the topic"
        );
        stored += 1;
    }
    assert_eq!(stored, total);
    for symbol in &moved {
        let last = want[symbol].last().expect("trades");
        assert_eq!(
            on_topic
                .get(&tickfetch::sink::writer::trade_id(last))
                .copied(),
            Some(settled[symbol].epoch as i64),
            "{symbol}: its last trade is the new primary's"
        );
    }
    common::etcd::remove_prefix(&config.etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_hands_its_feeds_over_without_a_gap_or_a_duplicate_and_exits() {
    let _serial = SERIAL.lock().await;
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let symbols = generated_symbols(Exchange::Binance, 10);
    let sim = Arc::new(simulator(&symbols).await);
    let config = config("cluster-drain", &sim);
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let (_master, mut workers) = start_cluster(&config, &store, 2).await;
    add_feeds(&config, &symbols);
    wait_assigned(&store, &symbols, 1).await;
    warm_up(&store, &sim, &symbols).await;
    let trading = Trading::start(&sim, &symbols, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = assignments(&store).await;
    let moved: BTreeSet<String> = before
        .values()
        .filter(|a| a.primary == "w1")
        .map(|a| a.symbol.clone())
        .collect();
    assert!(!moved.is_empty(), "w1 holds primaries: {before:?}");
    common::tickfetch_cli(&config, &["workers", "drain", "w1"]);
    let drained = Instant::now();
    let status = loop {
        let w1 = workers.get_mut("w1").expect("w1");
        if let Some(status) = w1.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            drained.elapsed() < WAIT,
            "w1 did not exit; log:\n{}",
            w1.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let w1_log = workers["w1"].log_text();
    assert!(status.success(), "a drained worker exits 0; log:\n{w1_log}");
    eprintln!(
        "drain: {} primaries handed over; w1 exited {:.2} s after the drain request",
        moved.len(),
        drained.elapsed().as_secs_f64()
    );
    assert_eq!(
        w1_log.matches("handed over").count(),
        moved.len(),
        "every primary handed over; log:\n{w1_log}"
    );
    let after = assignments(&store).await;
    assert!(
        after
            .values()
            .all(|a| a.primary == "w2" && a.replicas.is_empty()),
        "everything on w2: {after:?}"
    );
    assert!(
        store
            .get::<WorkerRecord, &str>(&["w1"])
            .await
            .expect("etcd")
            .is_none(),
        "w1 deregistered"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    trading.stop().await;
    // A planned handover: no duplicate even before any epoch rule, no gap.
    assert_delivered(&store, &config, &sim, &symbols, Gaps::None).await;
    let w2_log = workers["w2"].log_text();
    assert!(
        !w2_log.contains("trade-id gap found"),
        "the new primaries had nothing to backfill; log:\n{w2_log}"
    );
    drop(workers);
    common::etcd::remove_prefix(&config.etcd).await;
}

/// `tickfetch ARGS --config …` as a child process, killed on drop.
fn spawn_cli(config: &Config, name: &str, args: &[&str]) -> Proc {
    let path = common::write_config(config);
    let mut command = std::process::Command::new(common::binary("tickfetch"));
    command.args(args).arg("--config").arg(&path);
    Proc::start(config, name, command)
}

/// Worker `id` under `scripts/supervise.sh`, as a deployment runs it: when
/// it exits 0 (drained) it starts again, on the version in `version_file`.
fn supervised_worker(config: &Config, id: &str, version_file: &std::path::Path) -> Proc {
    let path = common::write_config(config);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/supervise.sh");
    let mut command = std::process::Command::new(script);
    command
        .arg(common::binary("tickfetch-ingest"))
        .arg("--config")
        .arg(&path)
        .args(["--worker-id", id])
        .env("VERSION_FILE", version_file);
    Proc::start(config, id, command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_replaces_every_worker_one_at_a_time_and_resumes_after_an_interruption() {
    let _serial = SERIAL.lock().await;
    use tickfetch::coord::rollout::RolloutRecord;
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let symbols = market(50, 50);
    let sim = Arc::new(simulator(&symbols).await);
    let mut config = config("cluster-rollout", &sim);
    config.rollup.session_timeout_ms = 6_000;
    config.sink.intervals = vec![Interval::M1];
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let mut masters: BTreeMap<String, Proc> = ["master-1", "master-2"]
        .into_iter()
        .map(|id| (id.to_string(), master(&config, id, 3)))
        .collect();
    let version = common::work_dir(&config).join("version");
    std::fs::write(&version, "1").expect("version file");
    let workers: BTreeMap<String, Proc> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|id| (id.to_string(), supervised_worker(&config, id, &version)))
        .collect();
    wait_workers(&store, 3).await;

    // A feed without a replica: the rollout refuses and names it.
    common::add_feed(&config, "binance", "trade", 0, &symbols[..1]);
    wait_assigned(&store, &symbols[..1], 0).await;
    let mut refused = spawn_cli(
        &config,
        "rollout-refused",
        &["rollout", "--to-version", "2"],
    );
    let status = refused.child.wait().expect("rollout exits");
    let text = refused.log_text();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("no healthy replica") && text.contains(&symbols[0]),
        "{text}"
    );

    add_feeds(&config, &symbols);
    wait_assigned(&store, &symbols, 1).await;
    warm_up(&store, &sim, &symbols).await;
    let trading = Trading::start(&sim, &symbols, Duration::from_millis(200));
    // The stages up to 1m and the sink run downstream of the workers during
    // the whole rollout, as in a deployment.
    let downstream: Vec<Proc> = ["1s", "5s", "1m"]
        .into_iter()
        .map(|stage| common::pipeline::spawn_stage(&config, stage, 0))
        .chain(std::iter::once(Proc::spawn(
            &config,
            "tickfetch-sink",
            "sink",
            &[],
        )))
        .collect();

    let rollout_args = [
        "rollout",
        "--to-version",
        "2",
        "--warm-secs",
        "2",
        "--per-worker-secs",
        "60",
    ];
    // The new binary's version: what the supervisor starts drained workers on.
    std::fs::write(&version, "2").expect("version file");
    let mut rollout = spawn_cli(&config, "rollout-1", &rollout_args);
    let mut interrupted: Option<String> = None;
    let started = Instant::now();
    loop {
        let state = store
            .get::<RolloutRecord, &str>(&[])
            .await
            .expect("etcd")
            .map(|r| r.value);
        if interrupted.is_none() && state.as_ref().is_some_and(|s| s.done.len() == 1) {
            // Interrupt the rollout after its first worker, and kill the
            // leading master; start the rollout again.
            rollout.kill9();
            let leader = store
                .get::<tickfetch::coord::keyspace::LeaderRecord, &str>(&[])
                .await
                .expect("etcd")
                .expect("a leader")
                .value
                .id;
            masters.get_mut(&leader).expect("leader").kill9();
            let first = state.as_ref().map(|s| s.done[0].clone()).expect("done");
            interrupted = Some(first);
            rollout = spawn_cli(&config, "rollout-2", &rollout_args);
        }
        if let Some(status) = rollout.child.try_wait().expect("wait") {
            assert!(
                status.success() && interrupted.is_some(),
                "rollout failed; log:\n{}",
                rollout.log_text()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "rollout did not finish; log:\n{}",
            rollout.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "rollout: 3 workers with {} feeds replaced in {:.1} s (warm 2 s each), the rollout and the leader killed once",
        symbols.len(),
        started.elapsed().as_secs_f64()
    );
    for (id, proc) in &workers {
        let log = proc.log_text();
        assert_eq!(
            log.matches("exited 0; starting it again").count(),
            1,
            "{id}: drained and restarted once; log:\n{log}"
        );
    }
    let registered: Vec<WorkerRecord> = store
        .list::<WorkerRecord, &str>(&[])
        .await
        .expect("etcd")
        .records
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(registered.len(), 3);
    assert!(
        registered.iter().all(|w| w.version == "2"),
        "{registered:?}"
    );
    // The resumed rollout did not drain the first worker again: it began
    // draining once (a re-registration after a lease lost under load does
    // not count).
    let first = interrupted.expect("interrupted");
    let log = workers[&first].log_text();
    assert_eq!(
        log.matches("draining: the master moves our feeds away")
            .count(),
        1,
        "the resumed rollout drained {first} again; log:\n{log}"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    trading.stop().await;
    wait_assigned(&store, &symbols, 1).await;
    assert_delivered(&store, &config, &sim, &symbols, Gaps::None).await;
    // No backfill during the rollout: every handover was planned.
    for entry in std::fs::read_dir(common::work_dir(&config)).expect("logs") {
        let path = entry.expect("log").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('w') && name.ends_with(".log") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !log.contains("trade-id gap found"),
                "{name}: a gap during the rollout (the simulator's counters, for connections it closed: {:?}); log:\n{log}",
                sim.stats()
            );
        }
    }
    assert_minutes_stored(&config).await;
    drop(workers);
    drop(downstream);
    common::etcd::remove_prefix(&config.etcd).await;
}

/// The 1m candles in MongoDB equal those built offline, by the engine alone,
/// from every trade on the trades topic (each feed's trades, from its first
/// one on). Waits until the last trade's minute is stored; minutes after it
/// may be stored too (watermarks go on), quiet.
async fn assert_minutes_stored(config: &Config) {
    use tickfetch::rollup::engine::{CandlePipeline, PipelineConfig};
    use tickfetch::rollup::level::level_config;
    let contents = read_trades_topic(config).await;
    let engine = PipelineConfig {
        trades: level_config(config, Interval::S1),
        candles: level_config(config, Interval::M1),
    };
    let mut offline: BTreeMap<(Exchange, String), Vec<Candle>> = BTreeMap::new();
    for trades in contents.trades.values() {
        let mut pipeline = CandlePipeline::new(&[Interval::M1], engine).expect("engine");
        let mut out = Vec::new();
        for trade in trades {
            pipeline.on_trade(trade, &mut out).expect("in-order trade");
        }
        pipeline.finish(&mut out).expect("finish");
        assert!(out.iter().all(|c| c.revision == 0), "nothing late offline");
        let first = &trades[0];
        offline.insert((first.exchange, first.symbol.clone()), out);
    }
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongodb");
    let db = client.database(&config.mongodb.database);
    let stored = |exchange: Exchange| {
        let db = db.clone();
        async move {
            let query = tickfetch::sink::query::CandleQuery {
                exchange,
                symbol: None,
                interval: Interval::M1,
                from: 0,
                to: i64::MAX,
            };
            tickfetch::sink::query::candles(&db, &query)
                .await
                .expect("query")
        }
    };
    let mut by_key: BTreeMap<(Exchange, String), Vec<Candle>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        by_key.clear();
        for exchange in [Exchange::Binance, Exchange::Okx] {
            for candle in stored(exchange).await {
                by_key
                    .entry((candle.exchange, candle.symbol.clone()))
                    .or_default()
                    .push(candle);
            }
        }
        let complete = offline.iter().all(|(key, want)| {
            by_key.get(key).is_some_and(|got| {
                let last = want.last().map_or(0, |c| c.open_time);
                got.iter().any(|c| c.open_time == last)
            })
        });
        if complete || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut minutes = 0;
    let mut revised = 0;
    for (key, want) in &offline {
        let got = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let (same, after) = got.split_at(want.len().min(got.len()));
        assert_eq!(
            same.len(),
            want.len(),
            "{key:?}: {} 1m candles stored, {} built offline",
            got.len(),
            want.len()
        );
        // Field for field, but for the revision: a trade that reached its
        // stage after the watermark (a connection running more than the
        // allowed lateness behind, on a loaded machine) revises a closed
        // candle, which the revision counts; the candle's content is what
        // is compared.
        revised += same.iter().filter(|c| c.revision > 0).count();
        if let Some((g, w)) = same.iter().zip(want).find(|(g, w)| {
            let g = Candle {
                revision: w.revision,
                ..(*g).clone()
            };
            g != **w
        }) {
            panic!("{key:?}: MongoDB holds {g:?} where offline gives {w:?}");
        }
        assert!(
            after.iter().all(|c| c.trade_count == 0),
            "{key:?}: only quiet minutes after the last trade: {after:?}"
        );
        minutes += want.len();
    }
    eprintln!(
        "rollout: {minutes} 1m candles of {} feeds in MongoDB equal the offline ones ({revised} revised by late trades)",
        offline.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_gets_its_share_by_planned_handover_without_a_gap_or_a_duplicate() {
    let _serial = SERIAL.lock().await;
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let symbols = market(30, 30);
    let sim = Arc::new(simulator(&symbols).await);
    let config = config("cluster-scale", &sim);
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let (_master, mut workers) = start_cluster(&config, &store, 2).await;
    add_feeds(&config, &symbols);
    wait_assigned(&store, &symbols, 1).await;
    warm_up(&store, &sim, &symbols).await;
    let trading = Trading::start(&sim, &symbols, Duration::from_millis(200));
    let before = assignments(&store).await;

    workers.insert("w3".into(), worker(&config, "w3"));
    let joined = Instant::now();
    let count = |a: &BTreeMap<String, AssignmentRecord>, w: &str| {
        a.values()
            .filter(|r| r.primary == w && r.epoch != 0)
            .count()
    };
    let share = |now: &BTreeMap<String, AssignmentRecord>, workers: &[&str], each: usize| {
        workers.iter().all(|w| count(now, w).abs_diff(each) <= 1)
            && now.values().all(|a| a.replicas.len() == 1 && a.epoch != 0)
    };
    wait_for("w3 holding its share of primaries", || async {
        share(&assignments(&store).await, &["w1", "w2", "w3"], 20)
    })
    .await;
    let balanced = joined.elapsed();
    let after = assignments(&store).await;
    let moved = after
        .iter()
        .filter(|(s, a)| a.primary != before[*s].primary)
        .count();
    eprintln!(
        "scale-out: w3 took {moved} primaries by planned handover {:.1} s after it joined (replica warm-up 2 s)",
        balanced.as_secs_f64()
    );
    assert_eq!(
        moved,
        count(&after, "w3"),
        "as few moves as possible: {after:?}"
    );

    // Scale in again: a drain, and the two left share everything.
    common::tickfetch_cli(&config, &["workers", "drain", "w3"]);
    let w3 = workers.get_mut("w3").expect("w3");
    let status = loop {
        if let Some(status) = w3.child.try_wait().expect("wait") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "w3 drained; log:\n{}", w3.log_text());
    wait_for("w1 and w2 holding everything again", || async {
        share(&assignments(&store).await, &["w1", "w2"], 30)
    })
    .await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    trading.stop().await;
    assert_delivered(&store, &config, &sim, &symbols, Gaps::None).await;
    for (id, proc) in &workers {
        let log = proc.log_text();
        assert!(
            !log.contains("trade-id gap found"),
            "{id}: nothing to backfill in a planned handover; log:\n{log}"
        );
    }
    drop(workers);
    common::etcd::remove_prefix(&config.etcd).await;
}

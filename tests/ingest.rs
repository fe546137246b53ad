//! The ingest worker against the exchange simulator and the real broker.
//!
//! Each test starts a simulator (on-demand generation: the test makes every
//! trade, so it knows them all), points a worker at it with its own topic
//! prefix, injects one fault, lets the worker recover by itself, and then
//! reads the trades topic back: every trade of the simulator's history must be
//! there exactly once, in exchange order per symbol.
//!
//! Run with the stack's addresses in the environment (see `tests/common`).

mod common;

use common::trades::{assert_exactly_once, expected, read_topic, read_trades_topic, TopicContents};

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tickfetch::config::{Config, FeedConfig};
use tickfetch::exsim::{
    generated_symbols, ConnectionRules as SimRules, Fault, FaultKind, GenerateConfig, SimConfig,
    SimHandle, Simulator, Source,
};
use tickfetch::ingest::events::FeedStatsSnapshot;
use tickfetch::ingest::feed::ResumePoint;
use tickfetch::ingest::venues::Feed;
use tickfetch::ingest::worker::{FeedHandle, Role, Worker};
use tickfetch::model::{Exchange, Trade, Watermark};
use tickfetch::shutdown::CancellationToken;
use tickfetch::wire::{
    DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, EPOCH_HEADER, KIND_HEADER, KIND_TRADE,
};

/// Longest any wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);

fn feed(name: &str) -> Feed {
    name.parse().expect("known feed")
}

/// A simulator of `exchanges` with these symbols, generating only on demand.
async fn simulator(symbols: &[(Exchange, Vec<String>)], rules: SimRules) -> SimHandle {
    let map: BTreeMap<Exchange, Vec<String>> = symbols.iter().cloned().collect();
    Simulator::start(SimConfig {
        exchanges: map.keys().copied().collect(),
        source: Source::Generate(GenerateConfig {
            rate_per_second: 0.0,
            symbols: map,
            ..GenerateConfig::default()
        }),
        rules,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// Simulator rules with short Binance timings, so keep-alive faults trip fast.
fn fast_rules() -> SimRules {
    SimRules {
        ping_interval: Duration::from_millis(300),
        pong_deadline: Duration::from_millis(900),
        ..SimRules::default()
    }
}

/// A config with this test's topics and timings suited to seconds-long tests.
fn config(tag: &str) -> Config {
    let mut config = common::config(tag);
    config.topics.partitions = 2;
    let ingest = &mut config.ingest;
    ingest.watermark_interval_ms = 200;
    ingest.allowed_lateness_ms = 500;
    ingest.reconnect_min_ms = 50;
    ingest.reconnect_max_ms = 500;
    ingest.watchdog_floor_ms = 800;
    ingest.watchdog_ceiling_ms = 4_000;
    ingest.gap_grace_ms = 200;
    ingest.rest_timeout_ms = 2_000;
    config
}

fn feed_config(sim: &SimHandle, feed: Feed, symbols: &[String]) -> FeedConfig {
    sim.feed_config(feed, symbols)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `handle` has `connections` subscribed connections.
async fn wait_live(handle: &FeedHandle, connections: u64) {
    wait_until(&format!("{} live connections", handle.name()), || {
        handle.stats().live_connections >= connections
    })
    .await;
}

/// Makes `rounds` orders of each symbol, `pause` apart.
async fn trade(
    sim: &SimHandle,
    exchange: Exchange,
    symbols: &[String],
    rounds: usize,
    pause: Duration,
) {
    for _ in 0..rounds {
        for symbol in symbols {
            sim.generate(exchange, symbol, 1).expect("generate");
        }
        tokio::time::sleep(pause).await;
    }
}

fn total(expected: &BTreeMap<String, Vec<Trade>>) -> u64 {
    expected.values().map(|t| t.len() as u64).sum()
}

/// Waits until the feed has published as many trades as the simulator made.
async fn wait_published(handle: &FeedHandle, sim: &SimHandle, feed: Feed, symbols: &[String]) {
    let want = total(&expected(sim, feed, symbols));
    wait_until(
        &format!("{want} trades published by {}", handle.name()),
        || handle.stats().trades_published >= want,
    )
    .await;
}

struct Rig {
    sim: SimHandle,
    config: Config,
    worker: Worker,
}

impl Rig {
    async fn new(tag: &str, sim: SimHandle) -> Self {
        tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
        let config = config(tag);
        let worker = Worker::start(config.clone(), CancellationToken::new())
            .await
            .expect("worker starts");
        Self {
            sim,
            config,
            worker,
        }
    }

    /// Stops the worker (flushing) and reads the trades topic.
    async fn finish(self) -> (TopicContents, Config, SimHandle) {
        self.worker.shutdown().await.expect("worker stops cleanly");
        let contents = read_trades_topic(&self.config).await;
        (contents, self.config, self.sim)
    }
}

fn symbols(exchange: Exchange, n: usize) -> Vec<String> {
    generated_symbols(exchange, n)
}

/// Runs one fault scenario on a Binance `trade` feed: trades before, the
/// fault, trades after; returns the feed's stats and the topic.
async fn scenario(
    tag: &str,
    feed_name: &str,
    rules: SimRules,
    tune: impl FnOnce(&mut FeedConfig),
    fault: impl FnOnce(&SimHandle, &[String]),
    after: Duration,
) -> (
    FeedStatsSnapshot,
    TopicContents,
    BTreeMap<String, Vec<Trade>>,
    Config,
) {
    let feed = feed(feed_name);
    let exchange = feed.exchange();
    let names = symbols(exchange, 3);
    let sim = simulator(&[(exchange, names.clone())], rules).await;
    let mut rig = Rig::new(tag, sim).await;
    let mut feed_config = feed_config(&rig.sim, feed, &names);
    tune(&mut feed_config);
    let handle = rig
        .worker
        .start_feed(&feed_config, Role::Primary)
        .expect("feed starts");
    wait_live(&handle, 1).await;
    trade(&rig.sim, exchange, &names, 20, Duration::from_millis(10)).await;
    fault(&rig.sim, &names);
    // Keep trading through and after the fault, long enough to recover.
    let rounds = (after.as_millis() / 20).max(10) as usize;
    trade(
        &rig.sim,
        exchange,
        &names,
        rounds,
        Duration::from_millis(20),
    )
    .await;
    wait_published(&handle, &rig.sim, feed, &names).await;
    let expected = expected(&rig.sim, feed, &names);
    let stats = handle.stats();
    let (contents, config, _sim) = rig.finish().await;
    assert_exactly_once(&contents, exchange, &expected);
    (stats, contents, expected, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_trades_are_backfilled_from_rest() {
    let (stats, contents, _, _) = scenario(
        "ingest-drop",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, names| {
            sim.inject(
                Fault::new(Exchange::Binance, FaultKind::Drop { count: 5 })
                    .for_symbol(names[0].clone()),
            )
            .expect("inject");
        },
        Duration::from_millis(600),
    )
    .await;
    assert!(stats.gaps_found >= 1, "{stats:?}");
    assert!(stats.gaps_filled >= 1, "{stats:?}");
    assert_eq!(stats.gaps_unfilled, 0, "{stats:?}");
    assert!(contents.gaps.is_empty());
}

/// A gap several history pages long: the backfill pages through the
/// exchange's history (Binance forward by `fromId`, OKX and Coinbase back by
/// `after`) until it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_longer_than_one_page_is_paged_through() {
    for (feed_name, dropped) in [
        ("binance:trade", 2_500),
        ("okx:trades", 700),
        ("coinbase:matches", 2_200),
    ] {
        let exchange = feed(feed_name).exchange();
        let (stats, contents, _, _) = scenario(
            &format!("ingest-pages-{exchange}"),
            feed_name,
            SimRules::default(),
            |_| {},
            move |sim, names| {
                sim.inject(
                    Fault::new(exchange, FaultKind::Drop { count: dropped })
                        .for_symbol(names[0].clone()),
                )
                .expect("inject");
                sim.generate(exchange, &names[0], dropped as usize)
                    .expect("generate");
            },
            Duration::from_millis(600),
        )
        .await;
        assert!(stats.gaps_found >= 1, "{feed_name}: {stats:?}");
        assert_eq!(stats.gaps_unfilled, 0, "{feed_name}: {stats:?}");
        assert!(contents.gaps.is_empty(), "{feed_name}: {:?}", contents.gaps);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_trades_leave_a_gap_marker() {
    let (stats, contents, expected, _) = scenario(
        "ingest-gap",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, names| {
            sim.inject(
                Fault::new(Exchange::Binance, FaultKind::Gap { count: 3 })
                    .for_symbol(names[1].clone()),
            )
            .expect("inject");
        },
        Duration::from_millis(600),
    )
    .await;
    assert_eq!(stats.gaps_unfilled, 1, "{stats:?}");
    let [marker] = contents.gaps.as_slice() else {
        panic!("one gap marker expected, got {:?}", contents.gaps);
    };
    let symbol = marker.symbol.clone();
    assert_eq!(
        marker.last_missing - marker.first_missing + 1,
        3,
        "{marker:?}"
    );
    // The marker sits exactly in the hole of the published ids.
    let ids: Vec<u64> = expected[&symbol]
        .iter()
        .filter_map(Trade::sequence)
        .collect();
    assert!(ids
        .windows(2)
        .any(|w| w[0] + 1 == marker.first_missing && w[1] == marker.last_missing + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_is_recycled_by_the_watchdog() {
    let (stats, _, _, _) = scenario(
        "ingest-stall",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Binance,
                FaultKind::Stall {
                    duration: Duration::from_millis(2_500),
                },
            ))
            .expect("inject");
        },
        Duration::from_secs(4),
    )
    .await;
    assert!(stats.stalls >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_goes_to_the_dead_letter_topic_and_the_connection_stays() {
    let (stats, _, _, config) = scenario(
        "ingest-malformed",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, names| {
            sim.inject(
                Fault::new(Exchange::Binance, FaultKind::Malformed).for_symbol(names[0].clone()),
            )
            .expect("inject");
        },
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(stats.bad_frames, 1, "{stats:?}");
    assert_eq!(stats.connections, 1, "the connection stayed up: {stats:?}");
    let letters = read_topic(&config, &config.topics.dead_letter(), 1).await;
    let [letter] = letters.as_slice() else {
        panic!("one dead letter expected, got {}", letters.len());
    };
    let header = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(
        header(DEAD_LETTER_REASON).contains("binance"),
        "{:?}",
        letter.headers
    );
    assert!(
        header(DEAD_LETTER_SOURCE).starts_with("ws:binance:trade:s0c"),
        "{:?}",
        letter.headers
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&letter.payload).is_err(),
        "raw, broken bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_trades_are_dropped() {
    let (stats, _, _, _) = scenario(
        "ingest-duplicate",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Binance,
                FaultKind::Duplicate { count: 6 },
            ))
            .expect("inject");
        },
        Duration::from_millis(300),
    )
    .await;
    assert!(stats.duplicates >= 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_closes_reconnect() {
    let (stats, _, _, _) = scenario(
        "ingest-close",
        "binance:trade",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Binance,
                FaultKind::Close { abrupt: false },
            ))
            .expect("inject");
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(stats.connections >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_close_on_a_coinbase_feed_reconnects() {
    let (stats, _, _, _) = scenario(
        "ingest-close-coinbase",
        "coinbase:matches",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Coinbase,
                FaultKind::Close { abrupt: true },
            ))
            .expect("inject");
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(stats.connections >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bybit_reconnect_recovers_missed_trades_by_rest_resync() {
    // Bybit ids are not contiguous: a reconnect's losses do not show as a
    // gap, so the worker holds live trades and asks REST what it missed.
    let (stats, _, _, _) = scenario(
        "ingest-close-bybit",
        "bybit:spot",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Bybit,
                FaultKind::Close { abrupt: true },
            ))
            .expect("inject");
        },
        Duration::from_secs(1),
    )
    .await;
    assert!(stats.connections >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upbit_duplicates_are_dropped_by_recent_ids() {
    let (stats, _, _, _) = scenario(
        "ingest-duplicate-upbit",
        "upbit:default",
        SimRules::default(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Upbit,
                FaultKind::Duplicate { count: 6 },
            ))
            .expect("inject");
        },
        Duration::from_millis(300),
    )
    .await;
    assert!(stats.duplicates >= 6, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_trip_keepalive() {
    let (stats, _, _, _) = scenario(
        "ingest-nopong",
        "okx:trades",
        SimRules::default(),
        |feed| {
            feed.ping_interval_ms = Some(200);
            feed.pong_timeout_ms = Some(500);
        },
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Okx,
                // Four pong timeouts long: a loaded machine still sees one.
                FaultKind::NoPong {
                    duration: Some(Duration::from_millis(2_000)),
                },
            ))
            .expect("inject");
        },
        Duration::from_secs(3),
    )
    .await;
    assert!(stats.keepalive_failures >= 1, "{stats:?}");
    assert!(stats.connections >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_pongs_make_binance_hang_up_and_the_worker_reconnects() {
    let (stats, _, _, _) = scenario(
        "ingest-ignore-pongs",
        "binance:trade",
        fast_rules(),
        |_| {},
        |sim, _| {
            sim.inject(Fault::new(
                Exchange::Binance,
                // Well past the simulator's 900 ms pong deadline, so that
                // it hangs up even when the machine is loaded.
                FaultKind::IgnorePongs {
                    duration: Some(Duration::from_millis(2_400)),
                },
            ))
            .expect("inject");
        },
        Duration::from_secs(3),
    )
    .await;
    assert!(stats.connections >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_symbol_is_dropped_and_its_neighbours_keep_flowing() {
    for feed_name in ["binance:trade", "okx:trades"] {
        let feed = feed(feed_name);
        let exchange = feed.exchange();
        let names = symbols(exchange, 4);
        let sim = simulator(&[(exchange, names.clone())], SimRules::default()).await;
        let refused = names[2].clone();
        sim.inject(Fault::new(exchange, FaultKind::Reject).for_symbol(refused.clone()))
            .expect("inject");
        let mut rig = Rig::new(&format!("ingest-reject-{exchange}"), sim).await;
        let handle = rig
            .worker
            .start_feed(&feed_config(&rig.sim, feed, &names), Role::Primary)
            .expect("feed starts");
        wait_live(&handle, 1).await;
        wait_until("the rejection", || handle.stats().rejected_symbols == 1).await;
        let flowing: Vec<String> = names.iter().filter(|s| **s != refused).cloned().collect();
        trade(&rig.sim, exchange, &names, 20, Duration::from_millis(10)).await;
        wait_published(&handle, &rig.sim, feed, &flowing).await;
        let stats = handle.stats();
        let expected_flowing = expected(&rig.sim, feed, &flowing);
        let (contents, _, _) = rig.finish().await;
        assert_exactly_once(&contents, exchange, &expected_flowing);
        assert!(
            !contents
                .trades
                .contains_key(&format!("{exchange}:{refused}")),
            "{feed_name}: nothing of the refused symbol"
        );
        assert_eq!(stats.rejected_symbols, 1, "{feed_name}: {stats:?}");
        assert_eq!(
            stats.connections, 1,
            "{feed_name}: neighbours kept their connection: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_before_the_forced_disconnect_overlaps_without_duplicates() {
    // A 6 s connection age leaves the rotation a 1.5 s head start before the
    // forced close (a quarter of the age): enough to connect and subscribe
    // the replacement on a loaded machine. Two rotations take 9 s.
    let rules = SimRules {
        max_connection_age: Duration::from_millis(6_000),
        ..SimRules::default()
    };
    let (stats, _, _, _) = scenario(
        "ingest-rotation",
        "binance:trade",
        rules,
        |feed| feed.max_connection_age_ms = Some(6_000),
        |_, _| {},
        Duration::from_secs(10),
    )
    .await;
    assert!(stats.rotations >= 2, "{stats:?}");
    // Every connection ended by our rotation, none by the exchange's forced
    // close, and the overlap left nothing to backfill.
    assert_eq!(stats.reconnects, stats.rotations, "{stats:?}");
    assert_eq!(stats.gaps_found, 0, "{stats:?}");
    assert!(
        stats.duplicates > 0,
        "the connections overlapped: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_symbols_across_two_exchanges() {
    let binance = feed("binance:trade");
    let okx = feed("okx:trades");
    let binance_names = symbols(Exchange::Binance, 250);
    let okx_names = symbols(Exchange::Okx, 250);
    let sim = simulator(
        &[
            (Exchange::Binance, binance_names.clone()),
            (Exchange::Okx, okx_names.clone()),
        ],
        SimRules::default(),
    )
    .await;
    let mut rig = Rig::new("ingest-500", sim).await;
    let mut binance_config = feed_config(&rig.sim, binance, &binance_names);
    // Shard Binance over three connections (its real limit is 1024 streams).
    binance_config.symbols_per_connection = Some(100);
    let binance_handle = rig
        .worker
        .start_feed(&binance_config, Role::Primary)
        .expect("binance feed");
    let okx_handle = rig
        .worker
        .start_feed(&feed_config(&rig.sim, okx, &okx_names), Role::Primary)
        .expect("okx feed");
    wait_live(&binance_handle, 3).await;
    wait_live(&okx_handle, 1).await;
    for _ in 0..10 {
        trade(
            &rig.sim,
            Exchange::Binance,
            &binance_names,
            1,
            Duration::ZERO,
        )
        .await;
        trade(
            &rig.sim,
            Exchange::Okx,
            &okx_names,
            1,
            Duration::from_millis(50),
        )
        .await;
    }
    wait_published(&binance_handle, &rig.sim, binance, &binance_names).await;
    wait_published(&okx_handle, &rig.sim, okx, &okx_names).await;
    let binance_expected = expected(&rig.sim, binance, &binance_names);
    let okx_expected = expected(&rig.sim, okx, &okx_names);
    let (contents, _, _) = rig.finish().await;
    assert_exactly_once(&contents, Exchange::Binance, &binance_expected);
    assert_exactly_once(&contents, Exchange::Okx, &okx_expected);
    assert_eq!(contents.trades.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_replica_publishes_from_just_after_the_primary() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 3);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-promote", sim).await;
    let config = feed_config(&rig.sim, feed, &names);
    let primary = rig
        .worker
        .start_feed(&config, Role::Primary)
        .expect("primary");
    let replica = rig
        .worker
        .start_feed(&config, Role::Replica)
        .expect("replica");
    wait_live(&primary, 1).await;
    wait_live(&replica, 1).await;
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        20,
        Duration::from_millis(10),
    )
    .await;
    wait_published(&primary, &rig.sim, feed, &names).await;
    // The primary goes away; trades go on; the replica takes over from the
    // primary's last published trades.
    let positions: HashMap<_, _> = primary.positions().await.expect("positions");
    primary.fence().await.expect("fence");
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        20,
        Duration::from_millis(10),
    )
    .await;
    replica.promote(positions).await.expect("promote");
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        10,
        Duration::from_millis(10),
    )
    .await;
    let want = total(&expected(&rig.sim, feed, &names));
    wait_until("primary + promoted replica publish everything", || {
        primary.stats().trades_published + replica.stats().trades_published >= want
    })
    .await;
    let expected = expected(&rig.sim, feed, &names);
    let (contents, _, _) = rig.finish().await;
    assert_exactly_once(&contents, Exchange::Binance, &expected);
    assert_eq!(
        replica.stats().trades_published,
        want - primary.stats().trades_published
    );
}

/// A planned handover: the old primary goes on publishing until each symbol
/// has published a trade made at or after the moment of the move, so that
/// nothing made before it is left to the successor; a quiet symbol stops
/// when its time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_handing_over_publishes_until_it_has_caught_up_with_the_move() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 3);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-handover", sim).await;
    let busy = feed_config(&rig.sim, feed, &names[..2]);
    let quiet = feed_config(&rig.sim, feed, &names[2..]);
    let primary = rig
        .worker
        .start_feed(&busy, Role::Primary)
        .expect("primary");
    let replica = rig
        .worker
        .start_feed(&busy, Role::Replica)
        .expect("replica");
    let idle = rig
        .worker
        .start_feed(&quiet, Role::Primary)
        .expect("quiet primary");
    wait_live(&primary, 1).await;
    wait_live(&replica, 1).await;
    wait_live(&idle, 1).await;
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        5,
        Duration::from_millis(10),
    )
    .await;
    wait_published(&primary, &rig.sim, feed, &names[..2]).await;

    // The move happens 300 ms from now; trading goes on for a second.
    let until = now_ms() + 300;
    let (positions, ()) = tokio::join!(
        primary.hand_over(until, Duration::from_secs(30)),
        trade(
            &rig.sim,
            Exchange::Binance,
            &names[..2],
            40,
            Duration::from_millis(25)
        ),
    );
    let positions = positions.expect("hand over");
    assert_eq!(positions.len(), 2, "{positions:?}");
    for (symbol, point) in &positions {
        assert!(
            point.last.exchange_time >= until,
            "{symbol}: stopped at {} before the move at {until}",
            point.last.exchange_time
        );
    }
    wait_until("the old primary ended", || primary.has_ended()).await;
    // The quiet symbol has nothing after the move: it stops when its time
    // is up, at its last trade.
    let quiet_positions = idle
        .hand_over(now_ms(), Duration::from_millis(500))
        .await
        .expect("quiet hand over");
    assert!(
        quiet_positions
            .values()
            .all(|p| p.last.exchange_time < until),
        "{quiet_positions:?}"
    );

    // The successor goes on from there: every trade once.
    replica.promote(positions).await.expect("promote");
    trade(
        &rig.sim,
        Exchange::Binance,
        &names[..2],
        10,
        Duration::from_millis(10),
    )
    .await;
    let want = total(&expected(&rig.sim, feed, &names[..2]));
    wait_until("old and new primary publish everything", || {
        primary.stats().trades_published + replica.stats().trades_published >= want
    })
    .await;
    let expected = expected(&rig.sim, feed, &names[..2]);
    let (contents, _, _) = rig.finish().await;
    assert_exactly_once(&contents, Exchange::Binance, &expected);
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Walks one key's records in topic order: its watermarks only go forward
/// and no trade comes after a watermark past its exchange time. Returns the
/// last watermark, how many there were and how many trades.
fn walk_watermarks(key: &str, sequence: &[Result<Trade, Watermark>]) -> (i64, usize, usize) {
    let mut watermark = i64::MIN;
    let (mut marks, mut trades) = (0, 0);
    for entry in sequence {
        match entry {
            Err(w) => {
                assert!(w.time > watermark, "{key}: watermarks only go forward");
                watermark = w.time;
                marks += 1;
            }
            Ok(t) => {
                trades += 1;
                assert!(
                    t.exchange_time >= watermark,
                    "{key}: trade {} made at {} came after watermark {watermark}",
                    t.trade_id,
                    t.exchange_time
                );
            }
        }
    }
    (watermark, marks, trades)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_advance_for_quiet_symbols_and_no_trade_follows_behind_one() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 3);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-watermarks", sim).await;
    let handle = rig
        .worker
        .start_feed(&feed_config(&rig.sim, feed, &names), Role::Primary)
        .expect("feed starts");
    wait_live(&handle, 1).await;
    // Only the first symbol trades; the others stay quiet for 1.5 s.
    let started = tickfetch::ingest::venues::receive_time_now();
    trade(
        &rig.sim,
        Exchange::Binance,
        &names[..1],
        75,
        Duration::from_millis(20),
    )
    .await;
    wait_published(&handle, &rig.sim, feed, &names).await;
    let ended = tickfetch::ingest::venues::receive_time_now();
    let lateness = rig.config.ingest.allowed_lateness_ms as i64;
    let (contents, _, _) = rig.finish().await;
    for symbol in &names {
        let key = format!("binance:{symbol}");
        let sequence = contents.sequence.get(&key).cloned().unwrap_or_default();
        let (watermark, marks, _) = walk_watermarks(&key, &sequence);
        assert!(marks >= 3, "{key}: {marks} watermarks in 1.5 s");
        // Quiet or not, the watermark followed the clock, minus the lateness.
        assert!(
            watermark >= started + 1_000 - lateness,
            "{key}: {watermark} did not follow the clock from {started}"
        );
        assert!(watermark <= ended, "{key}: a watermark in the future");
    }
}

/// A feed that reads behind the exchange (its socket backed up) must not
/// let the clock term of its watermarks pass the trades still coming in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_reading_behind_holds_its_watermarks_back_by_its_lag() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 2);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    // Made before the feed connects, so it never goes out live: a template
    // for the trades below.
    let template = sim
        .generate(Exchange::Binance, &names[0], 1)
        .expect("generate")
        .into_iter()
        .next()
        .expect("one trade");
    let mut id: u64 = template.trade_id.parse().expect("a numeric trade id");
    let mut rig = Rig::new("ingest-read-lag", sim).await;
    let lateness = rig.config.ingest.allowed_lateness_ms as i64;
    let lag = 6 * lateness;
    let handle = rig
        .worker
        .start_feed(&feed_config(&rig.sim, feed, &names), Role::Primary)
        .expect("feed starts");
    wait_live(&handle, 1).await;
    // Every trade reaches the worker `lag` after the exchange made it, as
    // a backlog on the socket would deliver it; the second symbol is quiet.
    let sent = 100;
    for _ in 0..sent {
        id += 1;
        let time = now_ms() - lag;
        let trade = Trade {
            trade_id: id.to_string(),
            exchange_time: time,
            receive_time: time,
            ..template.clone()
        };
        rig.sim.publish(vec![trade]).expect("publish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("every trade published", || {
        handle.stats().trades_published >= sent
    })
    .await;
    let ended = now_ms();
    let (contents, _, _) = rig.finish().await;
    let mut trades = 0;
    for symbol in &names {
        let key = format!("binance:{symbol}");
        let sequence = contents.sequence.get(&key).cloned().unwrap_or_default();
        let (watermark, marks, published) = walk_watermarks(&key, &sequence);
        trades += published;
        assert!(marks >= 3, "{key}: {marks} watermarks in 2 s");
        // The quiet symbol's watermark trailed the clock by the lag too.
        assert!(
            watermark <= ended - lag + lateness,
            "{key}: watermark {watermark} does not trail the clock ({ended}) by the read lag {lag}"
        );
    }
    assert_eq!(trades as u64, sent, "every trade once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_resumes_from_the_topic_after_the_primary_stops() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 3);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-resume", sim).await;
    let config = feed_config(&rig.sim, feed, &names);
    let primary = rig
        .worker
        .start_feed(&config, Role::Primary)
        .expect("primary");
    let replica = rig
        .worker
        .start_feed(&config, Role::Replica)
        .expect("replica");
    wait_live(&primary, 1).await;
    wait_live(&replica, 1).await;
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        20,
        Duration::from_millis(10),
    )
    .await;
    wait_published(&primary, &rig.sim, feed, &names).await;
    // The primary stops without handing anything over; trades go on.
    primary.stop();
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        10,
        Duration::from_millis(10),
    )
    .await;
    rig.worker.flush().await.expect("flush");
    let feeds: Vec<(Exchange, String)> = names
        .iter()
        .map(|s| (Exchange::Binance, s.clone()))
        .collect();
    let resume: HashMap<String, ResumePoint> =
        tickfetch::ingest::feed::resume::last_published_of(&rig.config, &feeds, 1_000)
            .await
            .expect("tail of the trades topic")
            .into_iter()
            .map(|((_, symbol), point)| (symbol, point))
            .collect();
    assert_eq!(resume.len(), names.len(), "a resume point per symbol");
    replica.promote(resume).await.expect("promote");
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        10,
        Duration::from_millis(10),
    )
    .await;
    let want = total(&expected(&rig.sim, feed, &names));
    wait_until("the promoted replica catches up", || {
        primary.stats().trades_published + replica.stats().trades_published >= want
    })
    .await;
    let expected = expected(&rig.sim, feed, &names);
    let (contents, _, _) = rig.finish().await;
    assert_exactly_once(&contents, Exchange::Binance, &expected);
}

/// What one read of the last `lookback` records of every partition gives
/// for `keys`: per key its newest trade and, where ids are not contiguous,
/// the ids up to it, as many as de-duplication keeps.
fn tail_by_brute_force(
    records: &[common::Record],
    keys: &[(Exchange, String)],
    lookback: i64,
) -> HashMap<(Exchange, String), ResumePoint> {
    use tickfetch::ingest::feed::RECENT_IDS_PER_SYMBOL;
    let mut high: HashMap<i32, i64> = HashMap::new();
    for r in records {
        let end = high.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    let mut sorted: Vec<&common::Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut points: HashMap<(Exchange, String), (Trade, Vec<String>)> = HashMap::new();
    for r in sorted {
        if r.offset < high[&r.partition] - lookback {
            continue;
        }
        let is_trade = r
            .headers
            .iter()
            .any(|(k, v)| k == KIND_HEADER && v == KIND_TRADE);
        if !is_trade {
            continue;
        }
        let trade: Trade = serde_json::from_slice(&r.payload).expect("a trade");
        let key = (trade.exchange, trade.symbol.clone());
        if !keys.contains(&key) {
            continue;
        }
        let point = points
            .entry(key)
            .or_insert_with(|| (trade.clone(), Vec::new()));
        if !tickfetch::ingest::venues::ids_are_sequential(trade.exchange) {
            point.1.push(trade.trade_id.clone());
            if point.1.len() > RECENT_IDS_PER_SYMBOL {
                point.1.remove(0);
            }
        }
        point.0 = trade;
    }
    points
        .into_iter()
        .map(|(key, (last, recent_ids))| (key, ResumePoint { last, recent_ids }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_read_back_at_a_promotion_equals_one_read_of_the_whole_lookback() {
    const BUSY: [&str; 8] = [
        "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LINKUSDT", "DOTUSDT",
    ];
    use tickfetch::ingest::feed::resume::last_published_of;
    use tickfetch::ingest::output::TradePublisher;
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let config = config("ingest-tail");
    let mut publisher = TradePublisher::connect(&config).await.expect("publisher");
    let base = now_ms() - 60_000;
    let mut time = base;
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut send = |exchange: Exchange, symbol: &str, n: usize| {
        for _ in 0..n {
            let id = ids.entry(symbol.to_string()).or_insert(1_000);
            // Upbit's ids are not contiguous: leave holes.
            *id += if exchange == Exchange::Upbit { 7 } else { 1 };
            time += 1;
            let mut trade = common::pipeline::test_trade(symbol, time, *id, 0, 100);
            trade.exchange = exchange;
            publisher
                .send_trade(&trade, tickfetch::coord::epoch::Epoch(1))
                .expect("send");
        }
    };
    // Upbit first and at the very end (fewer ids than de-duplication
    // keeps: the read goes back the whole lookback for it); a quiet Binance
    // symbol far behind the busy ones (found only further back); two busy
    // ones (found in the first window).
    send(Exchange::Upbit, "KRW-BTC", 50);
    send(Exchange::Binance, "QUIETUSDT", 5);
    for _ in 0..20 {
        for busy in BUSY {
            send(Exchange::Binance, busy, 10);
        }
    }
    send(Exchange::Upbit, "KRW-BTC", 10);
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(30)))
        .await
        .expect("flush thread")
        .expect("flush");
    let records = read_topic(&config, &config.topics.trades(), config.topics.partitions).await;
    assert_eq!(records.len(), 1_665);
    let lookback = 4_000;
    let keys: Vec<(Exchange, String)> = [
        (Exchange::Upbit, "KRW-BTC"),
        (Exchange::Binance, "QUIETUSDT"),
        (Exchange::Binance, BUSY[0]),
        (Exchange::Binance, BUSY[5]),
        (Exchange::Binance, "NEVERUSDT"),
    ]
    .into_iter()
    .map(|(e, s)| (e, s.to_string()))
    .collect();
    // The quiet symbol's last trade lies behind the first window read.
    let quiet = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"binance:QUIETUSDT".as_slice()))
        .max_by_key(|r| r.offset)
        .expect("the quiet symbol's trade");
    let behind = records
        .iter()
        .filter(|r| r.partition == quiet.partition && r.offset > quiet.offset)
        .count() as i64;
    assert!(
        behind > lookback / 16,
        "{behind} records after the quiet symbol's last"
    );
    let want = tail_by_brute_force(&records, &keys, lookback);
    assert_eq!(want.len(), 4, "every traded symbol within the lookback");
    assert_eq!(want[&keys[0]].recent_ids.len(), 60);
    for subset in [&keys[..], &keys[2..3], &keys[1..2], &keys[..1]] {
        let got = last_published_of(&config, subset, lookback)
            .await
            .expect("tail of the trades topic");
        let want: HashMap<_, _> = want
            .iter()
            .filter(|(key, _)| subset.contains(key))
            .map(|(key, point)| (key.clone(), point.clone()))
            .collect();
        assert_eq!(got, want, "for {subset:?}");
    }
    // With a lookback that does not reach the quiet symbol, neither finds it.
    let short = behind;
    let got = last_published_of(&config, &keys, short)
        .await
        .expect("tail");
    assert_eq!(got, tail_by_brute_force(&records, &keys, short));
    assert!(!got.contains_key(&keys[1]), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_symbols_beyond_1024_streams_shard_over_connections() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 1_100);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-shards", sim).await;
    // No override: the adapter's 1024-stream limit splits the feed in two.
    let handle = rig
        .worker
        .start_feed(&feed_config(&rig.sim, feed, &names), Role::Primary)
        .expect("feed starts");
    wait_live(&handle, 2).await;
    for _ in 0..3 {
        trade(
            &rig.sim,
            Exchange::Binance,
            &names,
            1,
            Duration::from_millis(50),
        )
        .await;
    }
    wait_published(&handle, &rig.sim, feed, &names).await;
    let stats = handle.stats();
    let expected = expected(&rig.sim, feed, &names);
    let (contents, _, _) = rig.finish().await;
    assert_exactly_once(&contents, Exchange::Binance, &expected);
    assert_eq!(stats.rejected_symbols, 0, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_primary_that_keeps_publishing_is_fenced_by_its_epoch() {
    let feed = feed("binance:trade");
    let names = symbols(Exchange::Binance, 3);
    let sim = simulator(&[(Exchange::Binance, names.clone())], SimRules::default()).await;
    let mut rig = Rig::new("ingest-epoch", sim).await;
    let config = feed_config(&rig.sim, feed, &names);
    let old = rig
        .worker
        .start_feed(&config, Role::Primary)
        .expect("primary");
    // The new primary runs in a worker of its own, as after a failover.
    let mut successor = Worker::start(rig.config.clone(), CancellationToken::new())
        .await
        .expect("second worker");
    let new = successor
        .start_feed(&config, Role::Replica)
        .expect("replica");
    wait_live(&old, 1).await;
    wait_live(&new, 1).await;
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        20,
        Duration::from_millis(10),
    )
    .await;
    wait_published(&old, &rig.sim, feed, &names).await;
    // The replica is promoted (a newer epoch) while the old primary, cut off
    // from coordination, never hears of it and keeps publishing.
    let positions = old.positions().await.expect("positions");
    let before = total(&expected(&rig.sim, feed, &names));
    new.promote(positions).await.expect("promote");
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        10,
        Duration::from_millis(10),
    )
    .await;
    wait_until("the new primary publishes", || {
        new.stats().trades_published > 0
    })
    .await;
    successor
        .flush()
        .await
        .expect("new primary's records in the log");
    // Everything the old primary publishes from here on is a late write.
    trade(
        &rig.sim,
        Exchange::Binance,
        &names,
        20,
        Duration::from_millis(10),
    )
    .await;
    let want = total(&expected(&rig.sim, feed, &names));
    wait_until("the old primary publishes everything", || {
        old.stats().trades_published >= want
    })
    .await;
    wait_until(
        "the new primary publishes everything after the old one's last",
        || new.stats().trades_published >= want - before,
    )
    .await;
    successor.shutdown().await.expect("second worker stops");
    let (_, config, sim) = rig.finish().await;

    // Per key, in topic order: the old primary's records after the first of
    // the new epoch are its late writes.
    let records = read_topic(&config, &config.topics.trades(), config.topics.partitions).await;
    let epoch_of = |r: &common::Record| {
        r.headers
            .iter()
            .find(|(k, _)| k == EPOCH_HEADER)
            .and_then(|(_, v)| v.parse::<i64>().ok())
            .expect("every worker record has an epoch")
    };
    let mut by_key: BTreeMap<Vec<u8>, Vec<&common::Record>> = BTreeMap::new();
    for record in &records {
        by_key
            .entry(record.key.clone().unwrap_or_default())
            .or_default()
            .push(record);
    }
    let epochs: std::collections::BTreeSet<i64> = records.iter().map(epoch_of).collect();
    assert_eq!(epochs.len(), 2, "two primaries, two epochs: {epochs:?}");
    let (old_epoch, new_epoch) = (*epochs.first().unwrap_or(&0), *epochs.last().unwrap_or(&0));
    let mut late: Vec<String> = Vec::new();
    for list in by_key.values_mut() {
        list.sort_by_key(|r| r.offset);
        let mut newer_seen = false;
        for record in list.iter() {
            let epoch = epoch_of(record);
            newer_seen |= epoch == new_epoch;
            let is_trade = record
                .headers
                .iter()
                .any(|(k, v)| k == KIND_HEADER && v == KIND_TRADE);
            if newer_seen && epoch == old_epoch && is_trade {
                let trade: Trade = serde_json::from_slice(&record.payload).expect("trade");
                late.push(format!("binance:{}:{}", trade.symbol, trade.trade_id));
            }
        }
    }
    assert!(
        !late.is_empty(),
        "the old primary wrote after the new one started"
    );

    // The sink stores every trade once; none of the late writes is what landed.
    let mut sink_config = config.clone();
    sink_config.sink.intervals = vec![];
    sink_config.sink.trades = true;
    sink_config.sink.batch_ms = 50;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(tickfetch::sink::run(
        sink_config.clone(),
        tickfetch::sink::SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let collection = db.collection::<mongodb::bson::Document>("trades");
    let deadline = tokio::time::Instant::now() + WAIT;
    let stored = loop {
        let stored: Vec<mongodb::bson::Document> = futures::TryStreamExt::try_collect(
            collection.find(mongodb::bson::doc! {}).await.expect("find"),
        )
        .await
        .expect("collect");
        if stored.len() as u64 >= want || tokio::time::Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");
    let simulated: std::collections::BTreeSet<String> = expected(&sim, feed, &names)
        .values()
        .flatten()
        .map(|t| format!("binance:{}:{}", t.symbol, t.trade_id))
        .collect();
    let ids: std::collections::BTreeSet<String> = stored
        .iter()
        .map(|d| d.get_str("_id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(stored.len(), ids.len(), "no trade twice");
    assert_eq!(ids, simulated, "every simulated trade stored, nothing else");
    for document in &stored {
        let id = document.get_str("_id").unwrap_or_default();
        if late.iter().any(|t| t == id) {
            assert_eq!(
                document.get_i64("epoch").ok(),
                Some(new_epoch),
                "trade {id}: the old primary's late write never lands"
            );
        }
    }
    db.drop().await.expect("drop");
}

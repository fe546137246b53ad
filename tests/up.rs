//! README's run command path: `tickfetch up --simulate` from the built tree
//! (on the test stack, `--no-stack`, with this test's own names). Within a
//! minute or so 1s and 1m candles of every default feed are in MongoDB;
//! Ctrl-C (SIGINT) stops every child; started again, the candles go on
//! without a hole or a duplicate, and every trade on the trades topic is
//! counted once in the 1s candles.

mod common;

use common::up::{free_base, Up};

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tickfetch::model::{Candle, Exchange, Interval};
use tickfetch::sink::query::{candles, CandleQuery};
use tickfetch::up::DEFAULT_FEEDS;

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

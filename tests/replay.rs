//! `tickfetch replay` on the oracle's trades through all four stages and the
//! sink: replaying an untouched range changes nothing; a range wiped from
//! the 1m topic and MongoDB comes back exactly, revisions unchanged; a trade
//! too late for the live stages is taken in by a replay through 5m, and the
//! corrected revision of each level is the one stored.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::oracle::*;
use common::pipeline::*;
use common::Proc;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use tickfetch::config::Config;
use tickfetch::coord::epoch::Epoch;
use tickfetch::ingest::publisher::TradePublisher;
use tickfetch::model::{Candle, Exchange, Interval, Side, Trade};

/// `tickfetch replay --stage S --through T --json` over `range` (ms),
/// reading an hour before it (the oracle has quiet stretches): one report
/// per stage.
fn replay(
    config: &Config,
    stage: &str,
    through: &str,
    range: &(String, String),
) -> Vec<serde_json::Value> {
    let path = common::write_config(config);
    let args = [
        "--stage",
        stage,
        "--through",
        through,
        "--from",
        &range.0,
        "--to",
        &range.1,
        "--margin-secs",
        "3600",
    ];
    let out = std::process::Command::new(common::binary("tickfetch"))
        .arg("replay")
        .args(args)
        .arg("--json")
        .arg("--config")
        .arg(&path)
        .env_remove("TICKFETCH_CONFIG")
        .output()
        .expect("tickfetch replay runs");
    assert!(
        out.status.success(),
        "tickfetch replay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON report"))
        .collect()
}

fn counts(report: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| report[k].as_u64().unwrap_or(u64::MAX);
    (n("windows"), n("unchanged"), n("revised"), n("missing"))
}

async fn mongo_window(config: &Config, interval: Interval, from: i64, to: i64) -> Vec<Candle> {
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongodb");
    let query = tickfetch::sink::query::CandleQuery {
        exchange: Exchange::Binance,
        symbol: Some(SYMBOL.into()),
        interval,
        from,
        to,
    };
    tickfetch::sink::query::candles(&client.database(&config.mongodb.database), &query)
        .await
        .expect("query")
}

/// Waits until MongoDB's `interval` candles in `[from, to)` satisfy `done`.
async fn wait_mongo(
    config: &Config,
    interval: Interval,
    (from, to): (i64, i64),
    what: &str,
    done: impl Fn(&[Candle]) -> bool,
) -> Vec<Candle> {
    let started = Instant::now();
    loop {
        let stored = mongo_window(config, interval, from, to).await;
        if done(&stored) {
            return stored;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: MongoDB holds {} {interval} candles in the range",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_idempotent_restores_a_wiped_range_and_takes_in_a_too_late_trade() {
    let Some(dir) = oracle_dir("replay_is_idempotent_restores_a_wiped_range") else {
        return;
    };
    let config = pipeline_config("replay");
    let _stages: Vec<Proc> = STAGES.iter().map(|s| spawn_stage(&config, s, 0)).collect();
    let _sink = Proc::spawn(&config, "tickfetch-sink", "sink", &["--all-partitions"]);
    publish_oracle(&config, &dir.join(TRADES_CSV), 1, |_| {}).await;
    let (m1, m5) = read_downstream(&config, Duration::from_secs(180)).await;
    assert_oracle_candles(&dir, &m1, &m5);
    assert_stored(&config, &m1, &m5).await;

    // An hour in the middle of the file, on 5m boundaries.
    let from = Interval::M5.window_start(m1[m1.len() / 2].open_time);
    let to = from + 3_600_000;
    let range = (from.to_string(), to.to_string());
    let in_range = |c: &&Candle| (from..to).contains(&c.open_time);
    let m1_range: Vec<Candle> = m1.iter().filter(in_range).cloned().collect();
    let m5_range: Vec<Candle> = m5.iter().filter(in_range).cloned().collect();
    assert_eq!((m1_range.len(), m5_range.len()), (60, 12));

    // 1. Untouched: every stage's windows unchanged, nothing written.
    let reports = replay(&config, "1s", "5m", &range);
    assert_eq!(reports.len(), 4);
    for (report, per_hour) in reports.iter().zip([3_600, 720, 60, 12]) {
        let (windows, unchanged, revised, missing) = counts(report);
        assert_eq!(
            (windows, unchanged, revised, missing),
            (per_hour, per_hour, 0, 0),
            "{report}"
        );
    }

    // 2. The 1m topic emptied and the range deleted from MongoDB: a replay
    // of 1m writes the hour again, the sink stores it, as it was.
    let admin: AdminClient<DefaultClientContext> =
        tickfetch::kafka::client_config(&config.kafka, &[])
            .expect("admin config")
            .create()
            .expect("admin client");
    let mut wipe = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        wipe.add_partition_offset(&config.topics.candles(Interval::M1), p, Offset::End)
            .expect("partition");
    }
    admin
        .delete_records(&wipe, &AdminOptions::new())
        .await
        .expect("delete the 1m topic's records");
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongodb");
    client
        .database(&config.mongodb.database)
        .collection::<mongodb::bson::Document>("candles_1m")
        .delete_many(mongodb::bson::doc! { "open_time": { "$gte": from, "$lt": to } })
        .await
        .expect("wipe the range in MongoDB");
    assert!(mongo_window(&config, Interval::M1, from, to)
        .await
        .is_empty());
    let reports = replay(&config, "1m", "1m", &range);
    assert_eq!(counts(&reports[0]), (60, 0, 0, 60), "{}", reports[0]);
    let stored = wait_mongo(&config, Interval::M1, (from, to), "restored", |s| {
        s.len() == 60
    })
    .await;
    assert_eq!(
        stored, m1_range,
        "the replayed hour equals the original, revisions included"
    );

    // 3. A trade of a minute in the range, far too late for the live stages
    // (their watermark is days ahead): dead-lettered live, taken in by a
    // replay through 5m, whose corrected revisions are stored.
    let late_time = from + 30 * 60_000 + 10_500;
    let late = Trade {
        exchange: Exchange::Binance,
        symbol: SYMBOL.into(),
        instrument: "XRP-ETH".into(),
        trade_id: "999000001".into(),
        price: Decimal::new(123_456, 8),
        quantity: Decimal::new(7, 0),
        side: Side::Buy,
        exchange_time: late_time,
        receive_time: late_time,
        first_trade_id: Some(999_000_001),
        last_trade_id: Some(999_000_001),
    };
    let mut publisher = TradePublisher::connect(&config).await.expect("publisher");
    publisher.send_trade(&late, Epoch::NONE).expect("send");
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(30)))
        .await
        .expect("flush thread")
        .expect("flush");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reports = replay(&config, "1s", "5m", &range);
    // Per level: the window with the trade, and the quiet windows after it
    // (they carry its price as their close), get their next revision.
    for (report, per_hour) in reports.iter().zip([3_600u64, 720, 60, 12]) {
        let (windows, unchanged, revised, missing) = counts(report);
        assert!(
            windows == per_hour && revised >= 1 && unchanged + revised == windows && missing == 0,
            "{report}"
        );
    }
    let minute = Interval::M1.window_start(late_time);
    let five = Interval::M5.window_start(late_time);
    for (interval, originals, report) in [
        (Interval::M1, &m1_range, &reports[2]),
        (Interval::M5, &m5_range, &reports[3]),
    ] {
        let window = interval.window_start(late_time);
        let revised = counts(report).2 as usize;
        // Every revised window stored (the sink may take them in batches).
        let stored = wait_mongo(&config, interval, (from, to), "corrected", |s| {
            s.iter().filter(|c| c.revision == 1).count() == revised
        })
        .await;
        let by_open: BTreeMap<i64, &Candle> = stored.iter().map(|c| (c.open_time, c)).collect();
        for original in originals.iter() {
            let now = by_open[&original.open_time];
            if original.open_time < window || (original.open_time > window && now == original) {
                assert_eq!(
                    now, original,
                    "{interval}: an untouched window is unchanged"
                );
                continue;
            }
            if original.open_time > window {
                // A quiet window after it: closes at the late trade's price.
                assert_eq!(
                    original.trade_count, 0,
                    "{interval}: only quiet windows follow: {now:?}"
                );
                assert_eq!(
                    (now.revision, now.open, now.close),
                    (original.revision + 1, late.price, late.price),
                    "{interval}: a quiet window after the late trade"
                );
                continue;
            }
            assert_eq!(
                now.revision,
                original.revision + 1,
                "{interval}: the next revision"
            );
            assert_eq!(
                now.trade_count,
                original.trade_count + 1,
                "{interval}: the late trade counted"
            );
            assert_eq!(
                now.volume,
                original.volume + late.quantity,
                "{interval}: its volume"
            );
            assert_eq!(
                now.high,
                original.high.max(late.price),
                "{interval}: high with the late trade"
            );
        }
    }
    eprintln!("replay: 1m window {minute} and 5m window {five} corrected to revision 1 in MongoDB");
    common::etcd::remove_prefix(&config.etcd).await;
}

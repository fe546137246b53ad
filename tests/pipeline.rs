//! The rollup stages as separate processes on the real broker: the oracle's
//! trades go into the trades topic, the four `tickfetch-rollup` stages and the
//! sink run, and the candles read back from the 1m and 5m topics and from
//! MongoDB equal Binance's klines. The fault test kills stages with SIGKILL at
//! random moments and pauses one past its session timeout while a replacement
//! takes over; the result must still be exact, and the paused one fenced.

mod common;

use std::time::{Duration, Instant};

use common::oracle::*;
use common::Proc;
use rand::Rng;
use tickfetch::config::Config;
use tickfetch::coord::epoch::Epoch;
use tickfetch::import::{publish_from_reader, ImportFormat};
use tickfetch::ingest::publisher::TradePublisher;
use tickfetch::model::{Candle, Exchange, Interval};
use tickfetch::wire::EPOCH_HEADER;

const STAGES: [&str; 4] = ["1s", "5s", "1m", "5m"];

fn pipeline_config(tag: &str) -> Config {
    let mut config = common::config(tag);
    config.topics.partitions = 2;
    config.rollup.session_timeout_ms = 6_000;
    config.sink.intervals = vec![Interval::M1, Interval::M5];
    config
}

fn spawn_stage(config: &Config, stage: &str, generation: usize) -> Proc {
    Proc::spawn(
        config,
        "tickfetch-rollup",
        &format!("rollup-{stage}-{generation}"),
        &[
            "--stage",
            stage,
            "--partitions",
            "all",
            "--snapshot-every",
            "5",
        ],
    )
}

/// Publishes the oracle's trades (with watermarks) in `chunks` parts, calling
/// `between` after each part.
async fn publish_oracle(
    config: &Config,
    csv: &std::path::Path,
    chunks: usize,
    mut between: impl FnMut(usize),
) {
    let text = std::fs::read_to_string(csv).expect("oracle csv");
    let lines: Vec<&str> = text.lines().collect();
    let (header, rows) = lines.split_first().expect("csv has a header");
    let per_chunk = rows.len().div_ceil(chunks);
    let mut publisher = TradePublisher::connect(config).await.expect("publisher");
    for (i, part) in rows.chunks(per_chunk).enumerate() {
        let mut body = String::from(*header);
        body.push('\n');
        body.push_str(&part.join("\n"));
        let mut report_error = |e: &tickfetch::import::ImportError| panic!("oracle row: {e}");
        // Only the last part closes the file's last windows.
        let last = i + 1 == rows.len().div_ceil(per_chunk);
        publish_from_reader(
            std::io::Cursor::new(body),
            ImportFormat::BinanceAggTradesCsv,
            Exchange::Binance,
            SYMBOL,
            last.then_some(config.rollup.grace_ms),
            &mut publisher,
            &mut report_error,
        )
        .expect("publish");
        between(i);
    }
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(60)))
        .await
        .expect("flush thread")
        .expect("flush");
}

/// Waits until the 1m and 5m topics hold every window of the oracle, then
/// returns their latest candles.
async fn read_downstream(config: &Config, deadline: Duration) -> (Vec<Candle>, Vec<Candle>) {
    let started = Instant::now();
    loop {
        let m1 = common::latest_candles(
            &common::read_all(&config.kafka, &config.topics.candles(Interval::M1), 2).await,
        );
        let m5 = common::latest_candles(
            &common::read_all(&config.kafka, &config.topics.candles(Interval::M5), 2).await,
        );
        if (m1.len() >= KLINES_1M && m5.len() >= KLINES_5M) || started.elapsed() > deadline {
            return (m1, m5);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn read_mongo(config: &Config, interval: Interval, expected: usize) -> Vec<Candle> {
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let query = tickfetch::sink::query::CandleQuery {
        exchange: Exchange::Binance,
        symbol: Some(SYMBOL.into()),
        interval,
        from: 0,
        to: i64::MAX,
    };
    let started = Instant::now();
    loop {
        let candles = tickfetch::sink::query::candles(&db, &query)
            .await
            .expect("query");
        let settled = candles.len() >= expected && candles.iter().all(|c| c.revision == 0);
        if settled || started.elapsed() > Duration::from_secs(120) {
            return candles;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn assert_oracle_candles(dir: &std::path::Path, m1: &[Candle], m5: &[Candle]) {
    assert_matches_klines(m1, &read_klines(dir, Interval::M1), Interval::M1, QUIET_1M);
    assert_matches_klines(m5, &read_klines(dir, Interval::M5), Interval::M5, QUIET_5M);
    // In-order input with exact restores needs no correction anywhere.
    assert!(
        m1.iter().chain(m5).all(|c| c.revision == 0),
        "no candle was corrected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_through_kafka_stages_and_sink() {
    let Some(dir) = oracle_dir("oracle_through_kafka_stages_and_sink") else {
        return;
    };
    let config = pipeline_config("pipeline");
    // Two instances of every stage, one per input partition.
    let mut stages = Vec::new();
    for stage in STAGES {
        for p in 0..config.topics.partitions {
            let partition = p.to_string();
            stages.push(Proc::spawn(
                &config,
                "tickfetch-rollup",
                &format!("rollup-{stage}-p{p}"),
                &["--stage", stage, "--partitions", &partition],
            ));
        }
    }
    let _sink = Proc::spawn(&config, "tickfetch-sink", "sink", &["--all-partitions"]);
    publish_oracle(&config, &dir.join(TRADES_CSV), 1, |_| {}).await;

    let (m1, m5) = read_downstream(&config, Duration::from_secs(180)).await;
    assert_oracle_candles(&dir, &m1, &m5);

    let stored_1m = read_mongo(&config, Interval::M1, KLINES_1M).await;
    let stored_5m = read_mongo(&config, Interval::M5, KLINES_5M).await;
    assert_eq!(
        stored_1m, m1,
        "MongoDB holds exactly the 1m topic's candles"
    );
    assert_eq!(
        stored_5m, m5,
        "MongoDB holds exactly the 5m topic's candles"
    );

    // Every candle carries the fencing epoch its stage partition's owner
    // claimed in etcd, and MongoDB keeps it with the document.
    for interval in [Interval::M1, Interval::M5] {
        let records = common::read_all(&config.kafka, &config.topics.candles(interval), 2).await;
        let epochs: std::collections::BTreeSet<u64> = records
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == EPOCH_HEADER)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .collect();
        // One symbol: one input partition, one owner, one epoch.
        assert!(
            !epochs.contains(&0) && epochs.len() == 1,
            "{interval}: the owner's epoch on every record: {epochs:?}"
        );
        let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
            .await
            .expect("mongo");
        let documents: Vec<mongodb::bson::Document> = futures::TryStreamExt::try_collect(
            client
                .database(&config.mongodb.database)
                .collection::<mongodb::bson::Document>(&format!("candles_{interval}"))
                .find(mongodb::bson::doc! {})
                .await
                .expect("find"),
        )
        .await
        .expect("collect");
        assert!(
            documents.iter().all(|d| d
                .get_i64("epoch")
                .is_ok_and(|e| epochs.contains(&(e as u64)))),
            "{interval}: every document keeps its writer's epoch"
        );
    }
}

/// Waits until a stage process has taken all its partitions.
fn wait_ready(stage: &Proc, partitions: usize) {
    let started = Instant::now();
    while stage.log_text().matches("partition assigned").count() < partitions {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} did not start; log:\n{}",
            stage.name,
            stage.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_paused_zombie_leave_the_candles_exact() {
    let Some(dir) = oracle_dir("kill_9_and_a_paused_zombie_leave_the_candles_exact") else {
        return;
    };
    let config = pipeline_config("chaos");
    let mut generation = 0;
    let mut stages: Vec<Proc> = STAGES
        .iter()
        .map(|s| spawn_stage(&config, s, generation))
        .collect();
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let zombie = 0; // the 1s stage
    let mut replacement = None;

    // Trades arrive in 12 parts. After each of the first 10, two stages are
    // killed with SIGKILL at random moments and restarted at once. After the
    // 11th, the 1s stage is paused with SIGSTOP while a replacement takes its
    // partitions, past the session timeout, then resumed: the 12th part is
    // there for the zombie to trip over.
    publish_oracle(&config, &dir.join(TRADES_CSV), 12, |part| {
        if part < 10 {
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(rng.gen_range(50..600)));
                let victim = rng.gen_range(0..STAGES.len());
                stages[victim].kill9();
                generation += 1;
                stages[victim] = spawn_stage(&config, STAGES[victim], generation);
                kills += 1;
            }
        } else if part == 10 {
            wait_ready(&stages[zombie], 2);
            nix::sys::signal::kill(stages[zombie].pid(), nix::sys::signal::Signal::SIGSTOP)
                .expect("SIGSTOP");
            generation += 1;
            let fresh = spawn_stage(&config, STAGES[zombie], generation);
            wait_ready(&fresh, 2);
            replacement = Some(fresh);
            std::thread::sleep(Duration::from_millis(
                config.rollup.session_timeout_ms + 1_000,
            ));
            nix::sys::signal::kill(stages[zombie].pid(), nix::sys::signal::Signal::SIGCONT)
                .expect("SIGCONT");
        }
    })
    .await;
    assert!(kills >= 20, "{kills} kills");

    let woke = Instant::now();
    let status = loop {
        if let Some(status) = stages[zombie].child.try_wait().expect("wait") {
            break Some(status);
        }
        if woke.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let zombie_log = stages[zombie].log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the resumed zombie stops with an error; log:\n{zombie_log}"
    );
    assert!(
        zombie_log.contains("producer fenced"),
        "the zombie was fenced; log:\n{zombie_log}"
    );
    stages[zombie] = replacement.expect("replacement started");

    let (m1, m5) = read_downstream(&config, Duration::from_secs(240)).await;
    assert_oracle_candles(&dir, &m1, &m5);
    drop(stages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_trade_corrects_its_candle_and_every_parent() {
    use rust_decimal::Decimal;
    use tickfetch::model::{Side, Trade};
    let config = pipeline_config("late");
    let _stages: Vec<Proc> = STAGES.iter().map(|s| spawn_stage(&config, s, 0)).collect();
    let base = 1_699_999_800_000; // a 5m boundary
    let trade = |id: u64, offset: i64, price: i64| Trade {
        exchange: Exchange::Binance,
        symbol: "LATEUSDT".into(),
        instrument: "LATE-USDT".into(),
        trade_id: id.to_string(),
        price: Decimal::new(price, 0),
        quantity: Decimal::ONE,
        side: Side::Buy,
        exchange_time: base + offset,
        receive_time: base + offset,
        first_trade_id: None,
        last_trade_id: None,
    };
    let mut publisher = TradePublisher::connect(&config).await.expect("publisher");
    publisher
        .send_trade(&trade(1, 100, 10), Epoch::NONE)
        .expect("send");
    publisher
        .send_trade(&trade(2, 1_500, 11), Epoch::NONE)
        .expect("send");
    // Close the whole 5m window at every level.
    publisher
        .send_watermark(
            Exchange::Binance,
            "LATEUSDT",
            base + 300_000 + config.rollup.grace_ms,
            Epoch::NONE,
        )
        .expect("watermark");
    let publisher = tokio::task::spawn_blocking(move || {
        publisher.flush(Duration::from_secs(30)).map(|()| publisher)
    })
    .await
    .expect("flush thread")
    .expect("flush");

    for interval in Interval::ALL {
        let first = window_at(&config, interval, base + 200).await;
        assert_eq!(
            (first.revision, first.high),
            (
                0,
                Decimal::new(if interval == Interval::S1 { 10 } else { 11 }, 0)
            ),
            "{interval}"
        );
    }

    // Trade 3 belongs to the first second, which closed long ago.
    let mut publisher = publisher;
    publisher
        .send_trade(&trade(3, 200, 20), Epoch::NONE)
        .expect("send");
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(30)))
        .await
        .expect("flush thread")
        .expect("flush");
    for interval in Interval::ALL {
        let started = Instant::now();
        let corrected = loop {
            let c = window_at(&config, interval, base + 200).await;
            if c.revision > 0 || started.elapsed() > Duration::from_secs(60) {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(
            corrected.revision, 1,
            "{interval}: revision 1 of the corrected window"
        );
        assert_eq!(
            corrected.high,
            Decimal::new(20, 0),
            "{interval}: the late trade is in it"
        );
        let expected_count = if interval == Interval::S1 { 2 } else { 3 };
        assert_eq!(corrected.trade_count, expected_count, "{interval}");
    }
}

/// The latest candle of `interval` whose window holds `time`, waiting for it.
async fn window_at(config: &Config, interval: Interval, time: i64) -> Candle {
    let started = Instant::now();
    loop {
        let candles = common::latest_candles(
            &common::read_all(&config.kafka, &config.topics.candles(interval), 2).await,
        );
        if let Some(c) = candles
            .iter()
            .find(|c| c.open_time == interval.window_start(time))
        {
            return c.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {interval} candle at {time}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! What the pipeline tests share: a config with two partitions and the 1m/5m
//! sink, the oracle's trades published in parts, stage processes, and readers
//! that wait for the oracle's windows downstream and in MongoDB.

use std::time::{Duration, Instant};

use super::oracle::*;
use super::Proc;
use tickfetch::config::Config;
use tickfetch::import::{publish_from_reader, ImportFormat};
use tickfetch::ingest::publisher::TradePublisher;
use tickfetch::model::{Candle, Exchange, Interval};

pub const STAGES: [&str; 4] = ["1s", "5s", "1m", "5m"];

pub fn pipeline_config(tag: &str) -> Config {
    let mut config = super::config(tag);
    config.topics.partitions = 2;
    config.rollup.session_timeout_ms = 6_000;
    config.sink.intervals = vec![Interval::M1, Interval::M5];
    config
}

pub fn spawn_stage(config: &Config, stage: &str, generation: usize) -> Proc {
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
pub async fn publish_oracle(
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
pub async fn read_downstream(config: &Config, deadline: Duration) -> (Vec<Candle>, Vec<Candle>) {
    let started = Instant::now();
    loop {
        let m1 = super::latest_candles(
            &super::read_all(&config.kafka, &config.topics.candles(Interval::M1), 2).await,
        );
        let m5 = super::latest_candles(
            &super::read_all(&config.kafka, &config.topics.candles(Interval::M5), 2).await,
        );
        if (m1.len() >= KLINES_1M && m5.len() >= KLINES_5M) || started.elapsed() > deadline {
            return (m1, m5);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn read_mongo(config: &Config, interval: Interval, expected: usize) -> Vec<Candle> {
    let options = config.mongodb.client_options().await.expect("mongodb.uri");
    let client = mongodb::Client::with_options(options).expect("mongo");
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

pub fn assert_oracle_candles(dir: &std::path::Path, m1: &[Candle], m5: &[Candle]) {
    assert_matches_klines(m1, &read_klines(dir, Interval::M1), Interval::M1, QUIET_1M);
    assert_matches_klines(m5, &read_klines(dir, Interval::M5), Interval::M5, QUIET_5M);
    // In-order input with exact restores needs no correction anywhere.
    assert!(
        m1.iter().chain(m5).all(|c| c.revision == 0),
        "no candle was corrected"
    );
}

/// Waits until a stage process has taken all its partitions.
pub fn wait_ready(stage: &Proc, partitions: usize) {
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

/// The latest candle of `interval` whose window holds `time`, waiting for it.
pub async fn window_at(config: &Config, interval: Interval, time: i64) -> Candle {
    let started = Instant::now();
    loop {
        let candles = super::latest_candles(
            &super::read_all(&config.kafka, &config.topics.candles(interval), 2).await,
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

/// Asserts that MongoDB holds exactly `m1` and `m5` (the topics' latest
/// candles), naming the first difference instead of printing thousands.
pub async fn assert_stored(config: &Config, m1: &[Candle], m5: &[Candle]) {
    for (interval, expected) in [(Interval::M1, m1), (Interval::M5, m5)] {
        let stored = read_mongo(config, interval, expected.len()).await;
        assert_eq!(
            stored.len(),
            expected.len(),
            "{interval}: MongoDB holds {} candles, the topic {}",
            stored.len(),
            expected.len()
        );
        if let Some((s, e)) = stored.iter().zip(expected).find(|(s, e)| s != e) {
            panic!("{interval}: MongoDB holds {s:?} where the topic has {e:?}");
        }
    }
}

/// A Binance trade of `symbol` (instrument `BASE-USDT`) at `base + offset`
/// ms, quantity 1.
pub fn test_trade(
    symbol: &str,
    base: i64,
    id: u64,
    offset: i64,
    price: i64,
) -> tickfetch::model::Trade {
    use tickfetch::model::{Exchange, Side, Trade};
    Trade {
        exchange: Exchange::Binance,
        symbol: symbol.into(),
        instrument: format!("{}-USDT", symbol.trim_end_matches("USDT")),
        trade_id: id.to_string(),
        price: rust_decimal::Decimal::new(price, 0),
        quantity: rust_decimal::Decimal::ONE,
        side: Side::Buy,
        exchange_time: base + offset,
        receive_time: base + offset,
        first_trade_id: None,
        last_trade_id: None,
    }
}

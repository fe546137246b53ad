//! Ingest benchmark: frames parsed per second on one core, against a bare
//! `serde_json` parse of the same frames; the sequencer's per-trade cost; and
//! (with `KAFKA_BOOTSTRAP` set) publish throughput of the worker's output path
//! against a raw idempotent producer on the same broker.
//!
//! `cargo bench --bench ingest_parse` (add `-- --frames N --publish N` to
//! change sizes). Prints one JSON object; measures, never asserts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rust_decimal::Decimal;
use serde_json::json;
use tickfetch::config::Config;
use tickfetch::coord::epoch::Epoch;
use tickfetch::ingest::feed::symbol::SymbolFeed;
use tickfetch::ingest::feed::Role;
use tickfetch::ingest::output::{Output, Publishers, OUTPUT_QUEUE};
use tickfetch::ingest::venues::{self, Feed, WireFrame};
use tickfetch::model::{Side, Trade};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` trades of one symbol of `feed`'s exchange, ids contiguous.
fn trades(feed: Feed, n: usize) -> Vec<Trade> {
    let exchange = feed.exchange();
    let symbol = match exchange {
        tickfetch::model::Exchange::Binance | tickfetch::model::Exchange::Bybit => "BTCUSDT",
        tickfetch::model::Exchange::Upbit => "KRW-BTC",
        tickfetch::model::Exchange::Coinbase => "BTC-USD",
        tickfetch::model::Exchange::Okx => "BTC-USDT",
    };
    let instrument = venues::instrument(exchange, symbol).unwrap_or_default();
    (0..n)
        .map(|i| {
            let id = 1_000_000 + i as u64;
            let bybit = exchange == tickfetch::model::Exchange::Bybit;
            Trade {
                exchange,
                symbol: symbol.into(),
                instrument: instrument.clone(),
                trade_id: if bybit {
                    format!("2290000000{id}")
                } else {
                    id.to_string()
                },
                price: Decimal::new(6_512_345 + (i as i64 % 1000), 2),
                quantity: Decimal::new(12_345 + i as i64 % 77, 5),
                side: if i % 3 == 0 { Side::Sell } else { Side::Buy },
                exchange_time: 1_700_000_000_000 + i as i64,
                receive_time: 1_700_000_000_000 + i as i64,
                first_trade_id: matches!(feed, Feed::Binance(venues::binance::Feed::AggTrade))
                    .then_some(id),
                last_trade_id: matches!(feed, Feed::Binance(venues::binance::Feed::AggTrade))
                    .then_some(id),
            }
        })
        .collect()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn bench_parse(frames_per_feed: usize) -> serde_json::Value {
    let mut results = Vec::new();
    for feed in Feed::ALL {
        // One trade per frame, as live streams mostly send them (Bybit and
        // Advanced Trade would otherwise put every trade in one message).
        let Ok(frames) = trades(feed, frames_per_feed)
            .chunks(1)
            .map(|one| tickfetch::exsim::encode::encode_trades(feed, one))
            .collect::<Result<Vec<_>, _>>()
            .map(|f| f.concat())
        else {
            continue;
        };
        let bytes: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| match f {
                WireFrame::Text(t) => t.clone().into_bytes(),
                WireFrame::Binary(b) => b.clone(),
            })
            .collect();
        let exchange = feed.exchange();
        // Warm up, then time.
        for frame in bytes.iter().take(1000) {
            black_box(venues::parse_frame(exchange, frame, 0).ok());
        }
        let start = Instant::now();
        let mut parsed = 0usize;
        for frame in &bytes {
            if let Ok(venues::Frame::Trades(t)) = venues::parse_frame(exchange, frame, 0) {
                parsed += t.len();
                black_box(t);
            }
        }
        let ours = start.elapsed();
        let start = Instant::now();
        for frame in &bytes {
            black_box(serde_json::from_slice::<serde_json::Value>(frame).ok());
        }
        let bare = start.elapsed();
        let start = Instant::now();
        for frame in &bytes {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(frame).ok());
        }
        let validate = start.elapsed();
        results.push(json!({
            "feed": feed.to_string(),
            "frames": bytes.len(),
            "trades": parsed,
            "parse_frames_per_s": rate(bytes.len(), ours),
            "serde_json_value_frames_per_s": rate(bytes.len(), bare),
            "serde_json_ignored_frames_per_s": rate(bytes.len(), validate),
            "ratio_vs_value": bare.as_secs_f64() / ours.as_secs_f64().max(1e-9),
        }));
    }
    serde_json::Value::Array(results)
}

fn bench_sequencer(n: usize) -> serde_json::Value {
    let feed: Feed = "binance:trade".parse().unwrap_or(Feed::ALL[0]);
    let input = trades(feed, n);
    let now = tokio::time::Instant::now();
    let mut sequencer = SymbolFeed::new(feed.exchange(), Role::Primary, 1, now);
    let mut out = Vec::with_capacity(16);
    let start = Instant::now();
    let mut released = 0usize;
    for trade in input {
        sequencer.offer(trade, now, &mut out);
        released += out.len();
        out.clear();
    }
    let elapsed = start.elapsed();
    json!({ "trades": n, "released": released, "trades_per_s": rate(n, elapsed) })
}

async fn bench_publish(n: usize) -> Option<serde_json::Value> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").ok()?;
    let mut config = Config::default();
    config.kafka.bootstrap = bootstrap;
    config.topics.prefix = format!("bench-ingest-{}", std::process::id());
    config.topics.partitions = 4;
    let feed: Feed = "binance:trade".parse().ok()?;
    let input = trades(feed, n);
    let payloads: Vec<Vec<u8>> = input
        .iter()
        .map(|t| serde_json::to_vec(t).unwrap_or_default())
        .collect();

    // The worker's path: bounded queue → publisher thread → TradePublisher.
    let publishers = Publishers::connect(&config).await.ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel(OUTPUT_QUEUE);
    let thread = tokio::task::spawn_blocking(move || publishers.run(rx));
    let start = Instant::now();
    for trade in input {
        if tx.send(Output::Trade(trade, Epoch(1))).await.is_err() {
            return None;
        }
    }
    drop(tx);
    thread.await.ok()?.ok()?;
    let worker_path = start.elapsed();

    // The baseline: one idempotent producer sending the same bytes.
    let producer: ThreadedProducer<DefaultProducerContext> = tickfetch::kafka::client_config(
        &config.kafka,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "100000"),
        ],
    )
    .ok()?
    .create()
    .ok()?;
    let topic = config.topics.trades();
    let key = "binance:BTCUSDT";
    let start = Instant::now();
    for payload in &payloads {
        let record = BaseRecord::to(&topic).key(key).payload(payload.as_slice());
        tickfetch::wire::send_waiting(&producer, record).expect("produce");
    }
    producer.flush(Duration::from_secs(60)).ok()?;
    let raw = start.elapsed();
    Some(json!({
        "trades": n,
        "worker_output_trades_per_s": rate(n, worker_path),
        "raw_producer_trades_per_s": rate(n, raw),
        "ratio_vs_raw": raw.as_secs_f64() / worker_path.as_secs_f64().max(1e-9),
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("ingest benchmark: run it with `cargo bench --bench ingest_parse`");
        return;
    }
    let frames = arg("--frames", 200_000);
    let publish = arg("--publish", 200_000);
    let parse = bench_parse(frames);
    let sequencer = bench_sequencer(frames);
    let publish = bench_publish(publish).await;
    let report = json!({
        "benchmark": "ingest_parse",
        "parse": parse,
        "sequencer": sequencer,
        "publish": publish.unwrap_or_else(|| json!("skipped: set KAFKA_BOOTSTRAP to a broker")),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}

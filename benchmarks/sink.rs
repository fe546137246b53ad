//! Sink benchmark: candles per second upserted by the sink (Kafka → epoch
//! fence → revision- and epoch-guarded bulk upsert → offsets committed), against a bare driver bulk upsert of the
//! same documents to the same server, in one run.
//!
//! The peer, in the same run: Kafka Connect with the MongoDB sink connector
//! (`benchmarks/peers/kafka-connect`) over the same topic into the same
//! server (`BENCH_CONNECT=0` leaves it out).
//!
//! Run: `cargo bench --bench sink` with a stack up and its `stack.env` sourced.
//! Settings from the environment: `BENCH_CANDLES` (default 20000),
//! `BENCH_BATCH` (sink batch size, default 1000), `BENCH_OUT` (default
//! `benchmarks/results/sink.json`).

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::options::UpdateOneModel;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rust_decimal::Decimal;
use serde::Serialize;
use tickfetch::config::Config;
use tickfetch::kafka::client_config;
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval};
use tickfetch::shutdown::CancellationToken;
use tickfetch::sink::writer::{candle_collection, candle_document};
use tickfetch::sink::{self, SinkAssignment};
use tickfetch::wire::EPOCH_HEADER;

#[derive(Debug, Serialize)]
struct RunResult {
    name: &'static str,
    candles: u64,
    seconds: f64,
    candles_per_second: f64,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    machine: String,
    mongodb: String,
    batch: usize,
    runs: Vec<RunResult>,
}

fn candles(count: u64) -> Vec<Candle> {
    let symbols = 20;
    (0..count)
        .map(|i| {
            let minute = (i / symbols) as i64;
            let price = Decimal::new(100_000 + (i as i64 % 91), 3);
            Candle {
                exchange: Exchange::Binance,
                symbol: format!("SYM{}USDT", i % symbols),
                interval: Interval::M1,
                open_time: 1_700_000_040_000 + minute * 60_000,
                close_time: 1_700_000_040_000 + minute * 60_000 + 59_999,
                open: price,
                high: price + Decimal::ONE,
                low: price - Decimal::ONE,
                close: price,
                volume: Decimal::new(12_345, 3),
                quote_volume: Decimal::new(1_234_567, 3),
                trade_count: 42,
                taker_buy_volume: Decimal::new(6_000, 3),
                taker_buy_quote_volume: Decimal::new(600_000, 3),
                first_trade_id: Some((i * 42).to_string()),
                last_trade_id: Some((i * 42 + 41).to_string()),
                status: CandleStatus::Complete,
                revision: 0,
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("sink benchmark: run it with `cargo bench --bench sink`");
        return;
    }
    let count: u64 = std::env::var("BENCH_CANDLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let batch: usize = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let prefix = format!("bench-sink-{}", std::process::id());
    let mut config: Config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config");
    config.topics.prefix = prefix.clone();
    config.topics.partitions = 2;
    config.sink.intervals = vec![Interval::M1];
    config.sink.batch_size = batch;
    config.sink.group_id = format!("{prefix}.sink");
    config.mongodb.database = prefix.replace('-', "_");
    let data = candles(count);

    // Prefill the candle topic.
    let topic = config.topics.candles(Interval::M1);
    common::plain_topic(&config, &topic, 2).await;
    let producer: ThreadedProducer<DefaultProducerContext> = client_config(
        &config.kafka,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
    )
    .expect("config")
    .create()
    .expect("producer");
    for candle in &data {
        let payload = serde_json::to_vec(candle).expect("json");
        let key = candle.key();
        // As a rollup stage writes them: with its fencing epoch.
        let record = BaseRecord::<str, [u8]>::to(&topic)
            .key(&key)
            .payload(&payload)
            .headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: EPOCH_HEADER,
                value: Some("7"),
            }));
        tickfetch::wire::send_waiting(&producer, record).expect("produce");
    }
    producer.flush(Duration::from_secs(60)).expect("flush");

    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let mut runs = Vec::new();

    // The sink, in-process, until every candle is stored.
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(sink::run(
        config.clone(),
        SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    // Done when the sink has committed every record: it commits a batch's
    // offsets only once the batch is durable. (Counting documents instead
    // would load the server: SecantusDB's count scans the collection.)
    let end = common::end_offsets(&config, &topic);
    loop {
        let (c, g, t) = (config.clone(), config.sink.group_id.clone(), topic.clone());
        let done = tokio::task::spawn_blocking(move || common::committed(&c, &g, &t))
            .await
            .expect("probe");
        if done >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let collection = db.collection::<mongodb::bson::Document>(&candle_collection(Interval::M1));
    let stored = collection.count_documents(doc! {}).await.expect("count");
    assert_eq!(stored, count, "the sink stored every candle once");
    task.await.expect("join").expect("sink");
    runs.push(RunResult {
        name: "tickfetch-sink (Kafka → epoch fence → guarded upsert → commit)",
        candles: count,
        seconds,
        candles_per_second: count as f64 / seconds,
    });

    // The bare driver with what the sink asks of the server: the same
    // `update` command, guarded filter (revision, epoch), replacement
    // documents, `ordered: false` and write concern (`w: majority, j: true`),
    // in batches of the same size. The ratio to the sink is the sink's own
    // cost: Kafka, decoding, the fence, batching, offset commits.
    let guarded = client.database(&format!("{}_guarded", config.mongodb.database));
    let started = Instant::now();
    for chunk in data.chunks(batch) {
        let updates: Vec<mongodb::bson::Document> = chunk
            .iter()
            .map(|c| {
                let mut document = candle_document(c);
                document.insert("epoch", 7i64);
                doc! {
                    "q": {
                        "_id": c.window_id(),
                        "revision": { "$lt": i64::from(c.revision) },
                        "epoch": { "$not": { "$gt": 7i64 } },
                    },
                    "u": document,
                    "upsert": true,
                }
            })
            .collect();
        guarded
            .run_command(doc! {
                "update": candle_collection(Interval::M1),
                "updates": updates,
                "ordered": false,
                "writeConcern": { "w": "majority", "j": true },
            })
            .await
            .expect("update");
    }
    let seconds = started.elapsed().as_secs_f64();
    runs.push(RunResult {
        name: "bare driver, the sink's update command (guard, w: majority, j: true)",
        candles: count,
        seconds,
        candles_per_second: count as f64 / seconds,
    });

    // The bare driver at its plainest: the same documents, bulk upserts of
    // the same batch size, default write concern, no guard.
    let bare = client.database(&format!("{}_bare", config.mongodb.database));
    let namespace = bare
        .collection::<mongodb::bson::Document>("candles_1m")
        .namespace();
    let started = Instant::now();
    for chunk in data.chunks(batch) {
        let models: Vec<UpdateOneModel> = chunk
            .iter()
            .map(|c| {
                UpdateOneModel::builder()
                    .namespace(namespace.clone())
                    .filter(doc! { "_id": c.window_id() })
                    .update(doc! { "$set": candle_document(c) })
                    .upsert(true)
                    .build()
            })
            .collect();
        client
            .bulk_write(models)
            .ordered(false)
            .await
            .expect("bulk_write");
    }
    let seconds = started.elapsed().as_secs_f64();
    runs.push(RunResult {
        name: "bare driver bulk_write upsert",
        candles: count,
        seconds,
        candles_per_second: count as f64 / seconds,
    });

    // The peer: Kafka Connect 4.4.0 with the MongoDB sink connector
    // (`benchmarks/peers/kafka-connect/run.sh`) over the same topic, into a
    // database of its own on the same server (`BENCH_CONNECT=0` skips it).
    if std::env::var("BENCH_CONNECT").as_deref() != Ok("0") {
        let database = format!("{}_connect", config.mongodb.database);
        let work = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-sink")
            .join(&prefix);
        let _ = std::fs::create_dir_all(&work);
        let output = std::process::Command::new("bash")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("benchmarks/peers/kafka-connect/run.sh"),
            )
            .args([
                config.kafka.bootstrap.as_str(),
                config.mongodb.uri.as_str(),
                database.as_str(),
                topic.as_str(),
                "candles_1m",
                &count.to_string(),
            ])
            .arg(&work)
            .env("BATCH", batch.to_string())
            .stderr(std::process::Stdio::inherit())
            .output();
        match output {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let line = text.lines().last().unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(v) => {
                        // From the first document stored to the last: the
                        // JVM's and the connector's start-up left out.
                        let seconds = v["first_to_last_s"].as_f64().unwrap_or(f64::NAN);
                        runs.push(RunResult {
                            name: "Kafka Connect + mongo-kafka-connect 2.0.1 (replaceOne by candle key, w: majority, j: true), first document to last",
                            candles: count,
                            seconds,
                            candles_per_second: count as f64 / seconds,
                        });
                    }
                    Err(e) => eprintln!("kafka connect result {line:?}: {e}"),
                }
            }
            Ok(o) => eprintln!("kafka connect peer failed: {}", o.status),
            Err(e) => eprintln!("kafka connect peer: {e}"),
        }
        if let Ok(c) = mongodb::Client::with_uri_str(&config.mongodb.uri).await {
            let _ = c.database(&database).drop().await;
        }
    }

    let result = BenchResult {
        machine: common::machine(),
        mongodb: config.mongodb.uri.clone(),
        batch,
        runs,
    };
    println!(
        "{:<100} {:>8} {:>9} {:>12}",
        "run", "candles", "seconds", "candles/s"
    );
    for r in &result.runs {
        println!(
            "{:<100} {:>8} {:>9.2} {:>12.0}",
            r.name, r.candles, r.seconds, r.candles_per_second
        );
    }
    println!("machine: {}", result.machine);
    let _ = db.drop().await;
    let _ = bare.drop().await;
    let _ = guarded.drop().await;
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "benchmarks/results/sink.json".into());
    if let Some(parent) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result).expect("json"))
        .expect("write result");
    eprintln!("wrote {out}");
}

//! The sink against the real services: guarded upserts keep the highest
//! revision, replays change nothing, writes from fenced epochs are refused,
//! and bad records go to the dead letters.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use tickfetch::kafka::{client_config, ensure_topics, TopicSpec};
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval, Side, Trade};
use tickfetch::shutdown::CancellationToken;
use tickfetch::sink::{self, SinkAssignment};
use tickfetch::wire::EPOCH_HEADER;

fn candle(open_time: i64, close: i64, revision: u32) -> Candle {
    Candle {
        exchange: Exchange::Binance,
        symbol: "XRPETH".into(),
        interval: Interval::M1,
        open_time,
        close_time: open_time + 59_999,
        open: Decimal::new(100, 2),
        high: Decimal::new(300, 2),
        low: Decimal::new(50, 2),
        close: Decimal::new(close, 2),
        volume: Decimal::new(7, 0),
        quote_volume: Decimal::new(14, 0),
        trade_count: 3,
        taker_buy_volume: Decimal::ZERO,
        taker_buy_quote_volume: Decimal::ZERO,
        first_trade_id: Some("1".into()),
        last_trade_id: Some("3".into()),
        status: CandleStatus::Complete,
        revision,
    }
}

async fn produce(producer: &FutureProducer, topic: &str, payloads: &[Vec<u8>]) {
    for payload in payloads {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(topic)
                    .key("binance:XRPETH")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// Open time of the sentinel candle a test produces after the records whose
/// effect it checks (far from the windows under test).
const SENTINEL: i64 = 6_000_000;

/// Whether `document` is the sentinel candle (upsert or time-series form).
fn is_sentinel(document: &Document) -> bool {
    document
        .get_str("_id")
        .is_ok_and(|id| id.starts_with(&format!("binance:XRPETH:1m:{SENTINEL}")))
}

async fn wait_for<F: Fn(&[Document]) -> bool>(
    collection: &mongodb::Collection<Document>,
    done: F,
) -> Vec<Document> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let documents: Vec<Document> = futures::TryStreamExt::try_collect(
            collection
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .await
                .expect("find"),
        )
        .await
        .expect("collect");
        if done(&documents) || tokio::time::Instant::now() > deadline {
            return documents;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highest_revision_wins_and_replays_change_nothing() {
    let mut config = common::config("sink-guard");
    config.topics.partitions = 1;
    config.sink.intervals = vec![Interval::M1];
    config.sink.batch_ms = 50;
    let topic = config.topics.candles(Interval::M1);
    ensure_topics(
        &config.kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            compacted: false,
        }],
    )
    .await
    .expect("topics");
    let producer: FutureProducer = client_config(&config.kafka, &[])
        .expect("config")
        .create()
        .expect("producer");
    let json = |c: &Candle| serde_json::to_vec(c).expect("json");
    // Window 0: revisions 0, 2, then a stale 1 (as a replay would bring it).
    // Window 60000: revision 0 twice. Plus one undecodable record.
    produce(
        &producer,
        &topic,
        &[
            json(&candle(0, 110, 0)),
            json(&candle(0, 130, 2)),
            json(&candle(60_000, 200, 0)),
        ],
    )
    .await;
    produce(&producer, &topic, &[b"{not a candle".to_vec()]).await;
    produce(
        &producer,
        &topic,
        &[json(&candle(0, 120, 1)), json(&candle(60_000, 200, 0))],
    )
    .await;

    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sink::run(
        config.clone(),
        SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let collection = db.collection::<Document>("candles_1m");
    let documents = wait_for(&collection, |d| {
        d.len() == 2 && d[0].get_i64("revision").ok() == Some(2)
    })
    .await;
    assert_eq!(documents.len(), 2, "{documents:?}");
    assert_eq!(
        documents[0].get_str("_id").ok(),
        Some("binance:XRPETH:1m:0")
    );
    assert_eq!(documents[0].get_i64("revision").ok(), Some(2));
    assert_eq!(documents[0].get_str("close").ok(), Some("1.30"));
    assert_eq!(documents[1].get_i64("revision").ok(), Some(0));

    // A stale revision arriving in a later batch is refused too. A sentinel
    // after it, in the same partition: once the sentinel is stored and the
    // sink has stopped (its last batch written), the stale record was handled.
    produce(&producer, &topic, &[json(&candle(0, 999, 1))]).await;
    produce(&producer, &topic, &[json(&candle(SENTINEL, 500, 0))]).await;
    wait_for(&collection, |d| d.iter().any(is_sentinel)).await;
    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");
    let stored = collection
        .find_one(doc! { "_id": "binance:XRPETH:1m:0" })
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        stored.get_str("close").ok(),
        Some("1.30"),
        "revision 1 never replaces revision 2"
    );

    // The query helper reads the wire form back.
    let read = sink::query::candles(
        &db,
        &sink::query::CandleQuery {
            exchange: Exchange::Binance,
            symbol: None,
            interval: Interval::M1,
            from: 0,
            to: 120_000,
        },
    )
    .await
    .expect("query");
    assert_eq!(read, vec![candle(0, 130, 2), candle(60_000, 200, 0)]);

    // The bad record went to the dead letters with its reason.
    let dead = common::read_all(&config.kafka, &config.topics.dead_letter(), 1).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].payload, b"{not a candle".to_vec());
    assert!(
        dead[0]
            .headers
            .iter()
            .any(|(k, v)| k == "tickfetch-reason" && v.contains("not a candle")),
        "{:?}",
        dead[0].headers
    );
    db.drop().await.expect("drop");
}

/// A MongoDB wire-protocol server of this test's own, so that stopping it does
/// not disturb other tests.
struct OwnMongo {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnMongo {
    fn start(dir: std::path::PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut mongo = OwnMongo {
            port,
            dir,
            child: None,
        };
        mongo.restart();
        mongo
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let program = tickfetch::stack::ensure_secantus().expect("SecantusDB installed");
        std::fs::create_dir_all(&self.dir).expect("mongo dir");
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log");
        let child = std::process::Command::new(program)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--storage-path",
            ])
            .arg(self.dir.join("data"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start SecantusDB");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "SecantusDB did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The oracle's 1m and 5m candles built in-process, in emission order.
fn oracle_candles(csv: &std::path::Path) -> Vec<Candle> {
    let mut candles = Vec::new();
    tickfetch::import::candles_from_reader(
        std::io::BufReader::new(std::fs::File::open(csv).expect("csv")),
        tickfetch::import::ImportFormat::BinanceAggTradesCsv,
        Exchange::Binance,
        common::oracle::SYMBOL,
        &[Interval::M1, Interval::M5],
        tickfetch::rollup::engine::PipelineConfig::default(),
        |c| candles.push(c.clone()),
        |e| panic!("oracle row: {e}"),
    )
    .expect("import");
    candles
}

async fn publish_candles(
    producer: &FutureProducer,
    config: &tickfetch::config::Config,
    candles: &[Candle],
) {
    for candle in candles {
        let payload = serde_json::to_vec(candle).expect("json");
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&config.topics.candles(candle.interval))
                    .key(&candle.key())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

async fn stored(db: &mongodb::Database, interval: Interval) -> Vec<Candle> {
    sink::query::candles(
        db,
        &sink::query::CandleQuery {
            exchange: Exchange::Binance,
            symbol: None,
            interval,
            from: 0,
            to: i64::MAX,
        },
    )
    .await
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mongodb_restarts_and_replays_leave_mongodb_equal_to_the_oracle() {
    use common::oracle::*;
    use rand::Rng;
    let Some(dir) =
        oracle_dir("kill_9_mongodb_restarts_and_replays_leave_mongodb_equal_to_the_oracle")
    else {
        return;
    };
    let mut config = common::config("sink-chaos");
    config.topics.partitions = 2;
    config.sink.intervals = vec![Interval::M1, Interval::M5];
    config.sink.batch_size = 50;
    config.sink.batch_ms = 50;
    let mut mongo = OwnMongo::start(common::work_dir(&config).join("mongo"));
    config.mongodb.uri = mongo.uri();
    let topics: Vec<TopicSpec> = [Interval::M1, Interval::M5]
        .iter()
        .map(|i| TopicSpec {
            name: config.topics.candles(*i),
            partitions: 2,
            compacted: false,
        })
        .collect();
    ensure_topics(&config.kafka, &topics).await.expect("topics");
    let producer: FutureProducer = client_config(&config.kafka, &[])
        .expect("config")
        .create()
        .expect("producer");
    let candles = oracle_candles(&dir.join(TRADES_CSV));
    publish_candles(&producer, &config, &candles).await;

    // kill -9 the sink at random moments, ten times.
    let mut rng = rand::thread_rng();
    for round in 0..10 {
        let mut proc = common::Proc::spawn(
            &config,
            "tickfetch-sink",
            &format!("sink-{round}"),
            &["--all-partitions"],
        );
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1_200))).await;
        proc.kill9();
    }
    // MongoDB goes away under a running sink, then comes back.
    let sink_proc = common::Proc::spawn(
        &config,
        "tickfetch-sink",
        "sink-final",
        &["--all-partitions"],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    mongo.stop();
    // Records arrive while MongoDB is away (the same candles again: a replay).
    publish_candles(&producer, &config, &candles[..500]).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    mongo.restart();

    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("client");
    let db = client.database(&config.mongodb.database);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let done = stored(&db, Interval::M1).await.len() == KLINES_1M
            && stored(&db, Interval::M5).await.len() == KLINES_5M;
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = sink_proc.log_text();
    assert!(
        log.contains("waiting for MongoDB"),
        "the sink said what it waited for; log:\n{log}"
    );
    let m1 = stored(&db, Interval::M1).await;
    let m5 = stored(&db, Interval::M5).await;
    assert_matches_klines(
        &m1,
        &read_klines(&dir, Interval::M1),
        Interval::M1,
        QUIET_1M,
    );
    assert_matches_klines(
        &m5,
        &read_klines(&dir, Interval::M5),
        Interval::M5,
        QUIET_5M,
    );

    // Replays: the same candles published again, and the whole topic read again
    // by a sink with a fresh consumer group. Nothing changes, nothing doubles.
    drop(sink_proc);
    publish_candles(&producer, &config, &candles).await;
    let mut replay = config.clone();
    replay.sink.group_id = format!("{}.replay", config.sink.group_id);
    let replay_proc = common::Proc::spawn(
        &replay,
        "tickfetch-sink",
        "sink-replay",
        &["--all-partitions"],
    );
    let lags = || {
        let replay = replay.clone();
        async move {
            tokio::task::spawn_blocking(move || tickfetch::lag::stage_lags(&replay))
                .await
                .expect("lag thread")
                .expect("lag")
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while lags()
        .await
        .iter()
        .any(|l| l.group == replay.sink.group_id && l.lag() > 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replay did not finish"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(replay_proc);
    let total: u64 = db
        .collection::<Document>("candles_1m")
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(total as usize, KLINES_1M, "no 1m document twice");
    assert_eq!(
        stored(&db, Interval::M1).await,
        m1,
        "replays changed nothing"
    );
    assert_eq!(
        stored(&db, Interval::M5).await,
        m5,
        "replays changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_series_storage_keeps_every_revision_and_reads_the_latest() {
    let mut config = common::config("sink-ts");
    config.topics.partitions = 1;
    config.sink.intervals = vec![Interval::M1];
    config.sink.batch_ms = 50;
    config.sink.timeseries = true;
    let topic = config.topics.candles(Interval::M1);
    ensure_topics(
        &config.kafka,
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            compacted: false,
        }],
    )
    .await
    .expect("topics");
    let producer: FutureProducer = client_config(&config.kafka, &[])
        .expect("config")
        .create()
        .expect("producer");
    let json = |c: &Candle| serde_json::to_vec(c).expect("json");
    // Revision 0; then its correction and a replay of revision 0.
    produce(&producer, &topic, &[json(&candle(0, 110, 0))]).await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sink::run(
        config.clone(),
        SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let collection = db.collection::<Document>("candles_1m");
    assert_eq!(wait_for(&collection, |d| !d.is_empty()).await.len(), 1);
    produce(
        &producer,
        &topic,
        &[json(&candle(0, 130, 1)), json(&candle(0, 110, 0))],
    )
    .await;
    // A sentinel after the replayed revision 0: once it is stored and the
    // sink has stopped, the replay was handled; the sentinel is not counted.
    produce(&producer, &topic, &[json(&candle(SENTINEL, 500, 0))]).await;
    wait_for(&collection, |d| d.iter().any(is_sentinel)).await;
    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");
    let documents: Vec<Document> = wait_for(&collection, |_| true)
        .await
        .into_iter()
        .filter(|d| !is_sentinel(d))
        .collect();

    // Every revision is its own document; time-series collections have no
    // unique `_id`, so a replayed revision may be stored again.
    let ids: std::collections::BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| d.get_str("_id").ok())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec!["binance:XRPETH:1m:0:r0", "binance:XRPETH:1m:0:r1"],
        "one document per revision"
    );
    assert!(
        documents.iter().all(|d| d.get_document("meta").is_ok()),
        "series key in meta"
    );
    let spec = db
        .run_command(doc! { "listCollections": 1, "filter": { "name": "candles_1m" } })
        .await
        .expect("listCollections");
    let options = format!("{spec}");
    assert!(
        options.contains("timeseries") && options.contains("timeField"),
        "{options}"
    );
    let read = sink::query::candles(
        &db,
        &sink::query::CandleQuery {
            exchange: Exchange::Binance,
            symbol: Some("XRPETH".into()),
            interval: Interval::M1,
            from: 0,
            to: 60_000,
        },
    )
    .await
    .expect("query");
    assert_eq!(
        read,
        vec![candle(0, 130, 1)],
        "readers get the highest revision"
    );
    db.drop().await.expect("drop");
}

/// Sends `payload` keyed `key`, with `tickfetch-epoch: epoch` when given.
async fn produce_with_epoch(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    epoch: Option<&str>,
) {
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .key(key)
        .payload(payload);
    if let Some(epoch) = epoch {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: EPOCH_HEADER,
            value: Some(epoch),
        }));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn trade(id: u64, time: i64) -> Trade {
    Trade {
        exchange: Exchange::Binance,
        symbol: "XRPETH".into(),
        instrument: "XRP-ETH".into(),
        trade_id: id.to_string(),
        price: Decimal::new(5, 1),
        quantity: Decimal::ONE,
        side: Side::Buy,
        exchange_time: time,
        receive_time: time,
        first_trade_id: None,
        last_trade_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_fenced_epoch_are_refused_in_the_stream_and_in_mongodb() {
    let mut config = common::config("sink-epoch");
    config.topics.partitions = 1;
    config.sink.intervals = vec![Interval::M1];
    config.sink.trades = true;
    config.sink.batch_ms = 50;
    let candles = config.topics.candles(Interval::M1);
    let trades = config.topics.trades();
    let spec = |name: &String| TopicSpec {
        name: name.clone(),
        partitions: 1,
        compacted: false,
    };
    ensure_topics(&config.kafka, &[spec(&candles), spec(&trades)])
        .await
        .expect("topics");
    let producer: FutureProducer = client_config(&config.kafka, &[])
        .expect("config")
        .create()
        .expect("producer");
    let key = "binance:XRPETH";
    let json = |c: &Candle| serde_json::to_vec(c).expect("json");
    // Owner epoch 20 writes window 0; a newer owner (30) corrects it. Between
    // and after, the old owner (10) keeps writing: every one of its records
    // follows one of epoch 20 or 30 on the same key, so each is fenced.
    for (candle, epoch) in [
        (candle(0, 110, 0), Some("20")),
        (candle(60_000, 666, 0), Some("10")),
        (candle(0, 999, 1), Some("10")),
        (candle(0, 120, 1), Some("30")),
        (candle(0, 888, 2), Some("10")),
        // No epoch (a writer that owns no stream): never fenced.
        (candle(120_000, 300, 0), None),
    ] {
        produce_with_epoch(&producer, &candles, key, &json(&candle), epoch).await;
    }
    // A header that is not an epoch: dead-lettered with the reason.
    produce_with_epoch(
        &producer,
        &candles,
        key,
        &json(&candle(0, 777, 5)),
        Some("3x"),
    )
    .await;
    for (trade, epoch) in [
        (trade(1, 1_000), Some("20")),
        (trade(2, 2_000), Some("10")),
        (trade(3, 3_000), None),
        (trade(4, 4_000), Some("20")),
    ] {
        let payload = serde_json::to_vec(&trade).expect("json");
        produce_with_epoch(&producer, &trades, key, &payload, epoch).await;
    }

    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sink::run(
        config.clone(),
        SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    let collection = db.collection::<Document>("candles_1m");
    let trade_docs = db.collection::<Document>("trades");
    let documents = wait_for(&collection, |d| {
        d.len() == 2 && d[0].get_i64("revision").ok() == Some(1)
    })
    .await;
    let ids: Vec<(&str, i64, i64, &str)> = documents
        .iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap_or_default(),
                d.get_i64("revision").unwrap_or(-1),
                d.get_i64("epoch").unwrap_or(-1),
                d.get_str("close").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            ("binance:XRPETH:1m:0", 1, 30, "1.20"),
            ("binance:XRPETH:1m:120000", 0, 0, "3.00"),
        ],
        "epoch 10's windows and corrections never land"
    );
    let stored_trades = wait_for(&trade_docs, |d| d.len() >= 3).await;
    let trade_ids: Vec<(&str, i64)> = stored_trades
        .iter()
        .map(|d| {
            (
                d.get_str("trade_id").unwrap_or_default(),
                d.get_i64("epoch").unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(trade_ids, vec![("1", 20), ("3", 0), ("4", 20)]);

    // The sink restarts and its stream fence starts empty: the stored epoch
    // still refuses a lower one (25 < 30), even with a higher revision.
    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");
    produce_with_epoch(
        &producer,
        &candles,
        key,
        &json(&candle(0, 555, 2)),
        Some("25"),
    )
    .await;
    produce_with_epoch(
        &producer,
        &candles,
        key,
        &json(&candle(180_000, 400, 0)),
        Some("25"),
    )
    .await;
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sink::run(
        config.clone(),
        SinkAssignment::AllPartitions,
        shutdown.clone(),
    ));
    // The window-180000 record follows the refused one in the partition: once
    // it is stored and the sink has stopped, the refused one was handled.
    wait_for(&collection, |d| d.len() == 3).await;
    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");
    let window = collection
        .find_one(doc! { "_id": "binance:XRPETH:1m:0" })
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        (
            window.get_i64("revision").ok(),
            window.get_i64("epoch").ok(),
            window.get_str("close").ok()
        ),
        (Some(1), Some(30), Some("1.20")),
        "epoch 25 never replaces epoch 30"
    );

    let dead = common::read_all(&config.kafka, &config.topics.dead_letter(), 1).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    assert!(
        dead[0].headers.iter().any(|(k, v)| k == "tickfetch-reason"
            && v.contains("tickfetch-epoch")
            && v.contains("3x")),
        "{:?}",
        dead[0].headers
    );
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn time_series_readers_keep_the_newest_epochs_highest_revision() {
    use tickfetch::coord::epoch::Epoch;
    use tickfetch::sink::writer::{ensure_collections, write_batch, PendingWrite, Storage};
    let config = common::config("sink-ts-epoch");
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    ensure_collections(&db, &[Interval::M1], false, Storage::TimeSeries)
        .await
        .expect("collections");
    // Window 0: epoch 20 writes revisions 0 and 1; a fenced owner (epoch 10)
    // stores a late revision 2, as it can after a sink restart. Window 1:
    // epoch 20 writes revision 0, a newer owner (30) revision 1.
    let writes = vec![
        PendingWrite::candle(&candle(0, 110, 0), Epoch(20)),
        PendingWrite::candle(&candle(0, 120, 1), Epoch(20)),
        PendingWrite::candle(&candle(60_000, 210, 0), Epoch(20)),
        PendingWrite::candle(&candle(60_000, 220, 1), Epoch(30)),
    ];
    let outcome = write_batch(&db, writes, Storage::TimeSeries)
        .await
        .expect("write");
    // A batch keeps one write per window: window 0's revision 1 (epoch 20),
    // window 1's revision 1 (epoch 30 replaces 20).
    assert_eq!(outcome.written, 2, "{outcome:?}");
    let late = vec![PendingWrite::candle(&candle(0, 999, 2), Epoch(10))];
    write_batch(&db, late, Storage::TimeSeries)
        .await
        .expect("write");
    let read = sink::query::candles(
        &db,
        &sink::query::CandleQuery {
            exchange: Exchange::Binance,
            symbol: None,
            interval: Interval::M1,
            from: 0,
            to: 120_000,
        },
    )
    .await
    .expect("query");
    assert_eq!(
        read,
        vec![candle(0, 120, 1), candle(60_000, 220, 1)],
        "epoch 10's revision 2 never wins; epoch 30's revision 1 does"
    );
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn the_candles_command_prints_stored_candles_as_json_lines() {
    use tickfetch::sink::writer::{ensure_collections, write_batch, PendingWrite, Storage};
    let config = common::config("sink-cli");
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("mongo");
    let db = client.database(&config.mongodb.database);
    ensure_collections(&db, &[Interval::M1], false, Storage::Upsert)
        .await
        .expect("collections");
    let mut other = candle(60_000, 150, 0);
    other.symbol = "BTCETH".into();
    let stored = [candle(0, 110, 1), candle(60_000, 120, 0), other.clone()];
    let writes = stored
        .iter()
        .map(|c| PendingWrite::candle(c, tickfetch::coord::epoch::Epoch(3)))
        .collect();
    write_batch(&db, writes, Storage::Upsert)
        .await
        .expect("write");
    let path = common::write_config(&config);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tickfetch"))
            .arg("candles")
            .arg("--config")
            .arg(&path)
            .args(["--exchange", "binance", "--interval", "1m"])
            .args(args)
            .env_remove("TICKFETCH_CONFIG")
            .output()
            .expect("run tickfetch candles")
    };
    let lines = |output: &std::process::Output| -> Vec<Candle> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a candle per line"))
            .collect()
    };

    // One symbol, times as RFC 3339 and epoch ms: `to` is exclusive.
    let output = run(&[
        "--symbol",
        "XRPETH",
        "--from",
        "1970-01-01T00:00:00Z",
        "--to",
        "120000",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(lines(&output), vec![stored[0].clone(), stored[1].clone()]);
    let output = run(&["--symbol", "XRPETH", "--from", "0", "--to", "60000"]);
    assert_eq!(lines(&output), vec![stored[0].clone()]);
    // Without --symbol: every symbol, ordered by symbol then time.
    let output = run(&["--from", "0", "--to", "120000"]);
    assert_eq!(
        lines(&output),
        vec![other, stored[0].clone(), stored[1].clone()]
    );
    // A time that is neither: a clear error naming the flag.
    let output = run(&["--from", "yesterday", "--to", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--from") && stderr.contains("yesterday"),
        "{stderr}"
    );
    db.drop().await.expect("drop");
}

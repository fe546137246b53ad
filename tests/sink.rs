//! The sink against the real services: guarded upserts keep the highest
//! revision, replays change nothing, and bad records go to the dead letters.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use tickfetch::kafka::{client_config, ensure_topics, TopicSpec};
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval};
use tickfetch::shutdown::CancellationToken;
use tickfetch::sink::{self, SinkAssignment};

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

    // A stale revision arriving in a later batch is refused too.
    produce(&producer, &topic, &[json(&candle(0, 999, 1))]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
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

    shutdown.cancel();
    run.await.expect("join").expect("sink ran cleanly");

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

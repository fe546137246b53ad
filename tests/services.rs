//! The local stack's services answer the protocols tickfetch uses: Kafka
//! transactions with offsets, etcd leases and prefix reads, MongoDB writes.

mod common;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tickfetch::kafka::{client_config, ensure_topics, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transaction_with_offsets_commits_and_reads_back() {
    let config = common::config("kafka-txn");
    let input = format!("{}.in", config.topics.prefix);
    let output = format!("{}.out", config.topics.prefix);
    let group = format!("{}.group", config.topics.prefix);
    ensure_topics(
        &config.kafka,
        &[
            TopicSpec {
                name: input.clone(),
                partitions: 1,
                compacted: false,
            },
            TopicSpec {
                name: output.clone(),
                partitions: 1,
                compacted: false,
            },
        ],
    )
    .await
    .expect("topics created");

    let kafka = config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        // Seed the input.
        let seed: ThreadedProducer<DefaultProducerContext> =
            client_config(&kafka, &[("enable.idempotence", "true")])
                .expect("config")
                .create()
                .expect("producer");
        for i in 0..10 {
            let payload = format!("record-{i}");
            seed.send(
                BaseRecord::<str, str>::to(&input)
                    .key("k")
                    .payload(&payload)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        }
        seed.flush(Duration::from_secs(10)).expect("flush");

        // Consume them with manual assignment (no group join), transform, and
        // produce + commit the offsets in one transaction.
        let consumer: BaseConsumer = client_config(
            &kafka,
            &[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ],
        )
        .expect("config")
        .create()
        .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&input, 0, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 10 && std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let text =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                seen.push((message.offset(), text));
            }
        }
        assert_eq!(seen.len(), 10, "all seeded records read");

        let txn_id = format!("{group}.txn");
        let producer: ThreadedProducer<DefaultProducerContext> =
            client_config(&kafka, &[("transactional.id", &txn_id)])
                .expect("config")
                .create()
                .expect("producer");
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init_transactions");
        producer.begin_transaction().expect("begin");
        for (_, text) in &seen {
            let upper = text.to_uppercase();
            producer
                .send(
                    BaseRecord::<str, str>::to(&output)
                        .key("k")
                        .payload(&upper)
                        .partition(0),
                )
                .map_err(|(e, _)| e)
                .expect("send in txn");
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &input,
                0,
                Offset::Offset(seen.last().map(|s| s.0 + 1).unwrap_or(0)),
            )
            .expect("offsets");
        let metadata = consumer.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
            .expect("send_offsets_to_transaction");
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit");

        // The offsets are committed for the group...
        let mut query = TopicPartitionList::new();
        query.add_partition(&input, 0);
        let committed = consumer
            .committed_offsets(query, Duration::from_secs(10))
            .expect("committed");
        let offset = committed.find_partition(&input, 0).map(|p| p.offset());
        assert_eq!(offset, Some(Offset::Offset(10)));

        // ...and the output is readable.
        let reader: BaseConsumer = client_config(
            &kafka,
            &[
                ("group.id", &format!("{group}.reader")),
                ("isolation.level", "read_committed"),
            ],
        )
        .expect("config")
        .create()
        .expect("reader");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&output, 0, Offset::Beginning)
            .expect("tpl");
        reader.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.len() < 10 && std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = reader.poll(Duration::from_millis(200)) {
                out.push(
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                );
            }
        }
        let expected: Vec<String> = (0..10).map(|i| format!("RECORD-{i}")).collect();
        assert_eq!(out, expected);
    })
    .await
    .expect("kafka thread");
}

#[tokio::test]
async fn etcd_lease_bound_keys_list_by_prefix_and_expire() {
    let config = common::config("etcd-lease");
    let mut client = etcd_client::Client::connect(config.etcd.endpoints.clone(), None)
        .await
        .expect("etcd connects");
    let prefix = format!("{}/workers/", config.etcd.prefix);
    let lease = client.lease_grant(2, None).await.expect("lease").id();
    for worker in ["a", "b"] {
        client
            .put(
                format!("{prefix}{worker}"),
                format!("{{\"id\":\"{worker}\"}}"),
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put");
    }
    client
        .put(format!("{}/other", config.etcd.prefix), "x", None)
        .await
        .expect("put outside prefix");
    let listed = client
        .get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("list");
    let keys: Vec<String> = listed
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(keys, vec![format!("{prefix}a"), format!("{prefix}b")]);
    let one = client.get(format!("{prefix}a"), None).await.expect("get");
    assert_eq!(
        one.kvs().first().and_then(|kv| kv.value_str().ok()),
        Some("{\"id\":\"a\"}")
    );

    // Without keep-alives the lease ends and takes its keys with it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("list after expiry");
    assert!(after.kvs().is_empty(), "lease-bound keys expired");
    let other = client
        .get(format!("{}/other", config.etcd.prefix), None)
        .await
        .expect("get");
    assert_eq!(other.kvs().len(), 1, "keys without the lease stay");
}

#[tokio::test]
async fn mongodb_insert_and_find() {
    use mongodb::bson::{doc, Document};
    let config = common::config("mongo");
    let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
        .await
        .expect("client");
    let collection = client
        .database(&config.mongodb.database)
        .collection::<Document>("candles_1m");
    collection
        .insert_many([
            doc! { "_id": "binance:XRPETH:1m:0", "close": "0.00141418", "revision": 0 },
            doc! { "_id": "binance:XRPETH:1m:60000", "close": "0.00141658", "revision": 0 },
        ])
        .await
        .expect("insert");
    let found = collection
        .find_one(doc! { "_id": "binance:XRPETH:1m:60000" })
        .await
        .expect("find")
        .expect("document present");
    assert_eq!(found.get_str("close").ok(), Some("0.00141658"));
    assert_eq!(collection.count_documents(doc! {}).await.expect("count"), 2);
    let duplicate = collection
        .insert_one(doc! { "_id": "binance:XRPETH:1m:0" })
        .await;
    assert!(
        duplicate.is_err(),
        "a second insert of the same _id is refused"
    );
    client
        .database(&config.mongodb.database)
        .drop()
        .await
        .expect("drop");
}

//! Where a promoted replica resumes: the last trades the previous primary
//! published, read back from the tail of the trades topic.
//!
//! A primary that dies cannot be asked for its positions, but what it
//! published is on the trades topic, keyed `exchange:symbol`. [`last_published`]
//! reads the last `lookback` records of every partition (with assigned
//! partitions: no consumer-group join) and returns, per symbol of the feed,
//! the newest trade and the ids published just before it, as
//! [`ResumePoint`]s for [`FeedHandle::promote`](crate::ingest::worker::FeedHandle::promote).
//!
//! A symbol whose last trade lies further back than the lookback gets no
//! resume point, and the promoted replica publishes its whole buffer for it:
//! trades the old primary had already published may then appear twice on the
//! topic, which the rollup's dedup by (exchange, symbol, trade id) absorbs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::sequence::{ResumePoint, RECENT_IDS_PER_SYMBOL};
use crate::config::Config;
use crate::kafka::{end_reader, KafkaError};
use crate::model::{Exchange, Trade};
use crate::wire::{feed_key, Envelope, Received};

/// How long reading the tail may take.
pub const RESUME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The last published trade of each of `symbols` of `exchange`, from the last
/// `lookback` records of each partition of the trades topic.
///
/// # Errors
/// Kafka unreachable, or the topic's offsets cannot be read.
pub async fn last_published(
    config: &Config,
    exchange: Exchange,
    symbols: &[String],
    lookback: i64,
) -> Result<HashMap<String, ResumePoint>, KafkaError> {
    let kafka = config.kafka.clone();
    let topic = config.topics.trades();
    let partitions = config.topics.partitions;
    let keys: HashMap<String, String> = symbols
        .iter()
        .map(|s| {
            (
                feed_key(exchange, &s.to_ascii_uppercase()),
                s.to_ascii_uppercase(),
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || read_tail(&kafka, &topic, partitions, &keys, lookback))
        .await
        .map_err(|source| KafkaError::ReaderThread {
            topic: config.topics.trades(),
            source,
        })?
}

fn read_tail(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    partitions: i32,
    keys: &HashMap<String, String>,
    lookback: i64,
) -> Result<HashMap<String, ResumePoint>, KafkaError> {
    let consumer = end_reader(kafka, "tickfetch-ingest-resume", "read_uncommitted")?;
    let mut assignment = TopicPartitionList::new();
    let mut open = HashSet::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(KafkaError::client(format!(
                "offsets of {topic}[{partition}]"
            )))?;
        if high > low {
            open.insert(partition);
            assignment
                .add_partition_offset(topic, partition, Offset::Offset((high - lookback).max(low)))
                .map_err(KafkaError::client("assigning the tail"))?;
        }
    }
    let mut newest: HashMap<String, (Trade, VecDeque<String>)> = HashMap::new();
    if open.is_empty() {
        return Ok(HashMap::new());
    }
    consumer
        .assign(&assignment)
        .map_err(KafkaError::client("assigning the tail"))?;
    let deadline = Instant::now() + RESUME_READ_TIMEOUT;
    // To each partition's end (librdkafka's partition EOF).
    while !open.is_empty() {
        if Instant::now() >= deadline {
            return Err(KafkaError::Timeout {
                what: format!("reading the tail of {topic} to resume"),
                seconds: RESUME_READ_TIMEOUT.as_secs(),
            });
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
                continue;
            }
            Some(message) => message.map_err(KafkaError::client(format!("reading {topic}")))?,
        };
        let Some(symbol) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| keys.get(k))
        else {
            continue;
        };
        let envelope = Envelope::of(&message);
        if !envelope.kind.is_trade() {
            continue;
        }
        let Ok(Received::Data(trade)) = envelope.decode::<Trade>() else {
            continue;
        };
        let entry = newest
            .entry(symbol.clone())
            .or_insert_with(|| (trade.clone(), VecDeque::new()));
        entry.1.push_back(trade.trade_id.clone());
        if entry.1.len() > RECENT_IDS_PER_SYMBOL {
            entry.1.pop_front();
        }
        entry.0 = trade;
    }
    Ok(newest
        .into_iter()
        .map(|(symbol, (last, recent))| {
            (
                symbol,
                ResumePoint {
                    last,
                    recent_ids: recent.into_iter().collect(),
                },
            )
        })
        .collect())
}

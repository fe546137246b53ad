//! Where a promoted replica resumes: the last trades the previous primary
//! published, read back from the tail of the trades topic.
//!
//! A primary that dies cannot be asked for its positions, but what it
//! published is on the trades topic, keyed `exchange:symbol`. [`last_published_of`]
//! reads the tail of every partition (with assigned partitions: no
//! consumer-group join) and returns, per symbol of the feed, the newest
//! trade and, on exchanges whose ids are not contiguous, the ids published
//! up to it, as
//! [`ResumePoint`]s for [`FeedHandle::promote`](crate::ingest::worker::FeedHandle::promote).
//! It reads the newest sixteenth of `lookback` records per partition first
//! and goes further back (four times as far each time, up to `lookback`)
//! only while a symbol is missing or, on exchanges whose ids are not
//! contiguous, has fewer recent ids than de-duplication keeps: the answer
//! is the one a read of all `lookback` records gives.
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
use crate::ingest::venues::ids_are_sequential;
use crate::kafka::{end_reader, KafkaError};
use crate::model::{Exchange, Trade};
use crate::wire::{feed_key, Envelope, Received};

/// How long reading the tail may take.
pub const RESUME_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The last published trade of each of `feeds` (exchange and symbol; the
/// exchanges share the topic, so one read serves them all), from at most the
/// last `lookback` records of each partition of the trades topic; keyed by
/// exchange and upper-case symbol.
///
/// # Errors
/// Kafka unreachable, or the topic's offsets cannot be read.
pub async fn last_published_of(
    config: &Config,
    feeds: &[(Exchange, String)],
    lookback: i64,
) -> Result<HashMap<(Exchange, String), ResumePoint>, KafkaError> {
    let kafka = config.kafka.clone();
    let topic = config.topics.trades();
    let partitions = config.topics.partitions;
    let keys: HashMap<String, (Exchange, String)> = feeds
        .iter()
        .map(|(exchange, symbol)| {
            let symbol = symbol.to_ascii_uppercase();
            (feed_key(*exchange, &symbol), (*exchange, symbol))
        })
        .collect();
    tokio::task::spawn_blocking(move || read_tail(&kafka, &topic, partitions, &keys, lookback))
        .await
        .map_err(|source| KafkaError::ReaderThread {
            topic: config.topics.trades(),
            source,
        })?
}

/// The first share of `lookback` read; each further read goes back four
/// times as far, up to `lookback`.
const FIRST_WINDOW_SHARE: i64 = 16;

/// The newest trade of a symbol, and (where ids are not contiguous) the ids
/// up to it, oldest first.
type Newest = HashMap<(Exchange, String), (Trade, VecDeque<String>)>;

/// Reads the tail back in widening windows: the newest records first, and
/// further back only while a symbol is missing (or, where ids are not
/// contiguous, has fewer recent ids than the de-duplication keeps), so that
/// a busy topic's promotion reads a few hundred records instead of
/// `lookback` per partition. Each window is read to the end, so the result
/// is what one read of the widest window gives.
fn read_tail(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    partitions: i32,
    keys: &HashMap<String, (Exchange, String)>,
    lookback: i64,
) -> Result<HashMap<(Exchange, String), ResumePoint>, KafkaError> {
    let consumer = end_reader(kafka, "tickfetch-ingest-resume", "read_uncommitted")?;
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(KafkaError::client(format!(
                "offsets of {topic}[{partition}]"
            )))?;
        if high > low {
            ends.push((partition, low, high));
        }
    }
    let lookback = lookback.max(1);
    let mut window = (lookback / FIRST_WINDOW_SHARE).max(1);
    let deadline = Instant::now() + RESUME_READ_TIMEOUT;
    loop {
        let (newest, whole) = read_window(&consumer, topic, &ends, keys, window, deadline)?;
        let enough = keys.values().all(|key| {
            newest.get(key).is_some_and(|(_, recent)| {
                ids_are_sequential(key.0) || recent.len() >= RECENT_IDS_PER_SYMBOL
            })
        });
        if enough || whole || window >= lookback {
            return Ok(newest
                .into_iter()
                .map(|(key, (last, recent))| {
                    (
                        key,
                        ResumePoint {
                            last,
                            recent_ids: recent.into_iter().collect(),
                        },
                    )
                })
                .collect());
        }
        window = window.saturating_mul(4).min(lookback);
    }
}

/// Reads the last `window` records of each partition in `ends`
/// (partition, low, high) to its end; also says whether that was all of
/// every partition.
fn read_window(
    consumer: &rdkafka::consumer::BaseConsumer<crate::kafka::ReadToEnd>,
    topic: &str,
    ends: &[(i32, i64, i64)],
    keys: &HashMap<String, (Exchange, String)>,
    window: i64,
    deadline: Instant,
) -> Result<(Newest, bool), KafkaError> {
    let mut newest = Newest::new();
    if ends.is_empty() {
        return Ok((newest, true));
    }
    let mut assignment = TopicPartitionList::new();
    let mut open = HashSet::new();
    let mut whole = true;
    for &(partition, low, high) in ends {
        let from = (high - window).max(low);
        whole &= from == low;
        open.insert(partition);
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(KafkaError::client("assigning the tail"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(KafkaError::client("assigning the tail"))?;
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
        let Some(key) = message
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
            .entry(key.clone())
            .or_insert_with(|| (trade.clone(), VecDeque::new()));
        // Contiguous ids de-duplicate by the last one alone.
        if !ids_are_sequential(key.0) {
            entry.1.push_back(trade.trade_id.clone());
            if entry.1.len() > RECENT_IDS_PER_SYMBOL {
                entry.1.pop_front();
            }
        }
        entry.0 = trade;
    }
    Ok((newest, whole))
}

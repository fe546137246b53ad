//! Consumer lag of every stage: how far each rollup stage and the sink are
//! behind the end of their input topics (`tickfetch lag`).
//!
//! The end of a partition written with transactions is the offset after its
//! last commit marker, which no reader ever gets past: a reader that has read
//! every record is one offset short of the end. So where a partition's
//! committed offset is short of its end, the lag reads from the committed
//! offset (read_committed, to the broker's end); a partition with no record
//! left counts as caught up.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{client_config, end_reader, KafkaError};
use crate::model::Interval;

/// One reader's position on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLag {
    /// The consumer group reading the topic.
    pub group: String,
    pub topic: String,
    /// Σ over partitions of the end offset.
    pub end: i64,
    /// Σ over partitions of the committed offset (0 where none).
    pub committed: i64,
}

impl TopicLag {
    /// Offsets not yet committed by the group in partitions that still hold
    /// records for it (markers between those records included; a partition
    /// with only markers left counts 0). Never negative, even where the end
    /// offset was read before the commit.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// The lag of every rollup stage and of the sink under `config`. Blocking: call
/// from a blocking thread.
///
/// # Errors
/// Kafka unreachable.
pub fn stage_lags(config: &Config) -> Result<Vec<TopicLag>, KafkaError> {
    let mut readers: Vec<(String, String)> = Interval::ALL
        .iter()
        .map(|i| {
            (
                format!("{}.{}", config.rollup.group_prefix, i),
                config.topics.stage_input(*i),
            )
        })
        .collect();
    for topic in crate::sink::input_topics(config) {
        readers.push((config.sink.group_id.clone(), topic));
    }
    let mut out = Vec::new();
    for (group, topic) in readers {
        let partitions = partition_lags(config, &group, &topic)?;
        out.push(TopicLag {
            end: partitions.iter().map(|p| p.end).sum(),
            committed: partitions.iter().map(|p| p.committed).sum(),
            group,
            topic,
        });
    }
    Ok(out)
}

/// One partition's end and the group's committed offset there (the end
/// where only transaction markers are left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub end: i64,
    pub committed: i64,
}

impl PartitionLag {
    /// Records the group has not committed yet; never negative.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed).max(0)
    }
}

/// Consumer group `group`'s lag on each partition of `topic`. Blocking.
///
/// # Errors
/// Kafka unreachable.
pub fn partition_lags(
    config: &Config,
    group: &str,
    topic: &str,
) -> Result<Vec<PartitionLag>, KafkaError> {
    let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", group)])?
        .create()
        .map_err(KafkaError::client("creating lag consumer"))?;
    let mut query = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        query.add_partition(topic, p);
    }
    let mut ends = Vec::new();
    for p in 0..config.topics.partitions {
        // A topic not created yet has nothing to read (the committed
        // offsets below fail when the broker is away).
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap_or((0, 0));
        ends.push(high);
    }
    let mut positions: Vec<i64> = consumer
        .committed_offsets(query, Duration::from_secs(5))
        .map_err(KafkaError::client("reading committed offsets"))?
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .collect();
    positions.resize(ends.len(), 0);
    let behind: Vec<(i32, i64)> = positions
        .iter()
        .zip(&ends)
        .enumerate()
        .filter(|(_, (c, e))| c < e)
        .map(|(p, (c, _))| (p as i32, *c))
        .collect();
    for p in only_markers_left(config, topic, &behind)? {
        if let Some(slot) = positions.get_mut(p as usize) {
            *slot = ends[p as usize];
        }
    }
    Ok(positions
        .into_iter()
        .zip(ends)
        .enumerate()
        .map(|(p, (committed, end))| PartitionLag {
            partition: p as i32,
            end,
            committed,
        })
        .collect())
}

/// Of the partitions `(p, from)` of `topic`, those with no record at or after
/// `from` (only transaction markers or aborted records up to the end).
fn only_markers_left(
    config: &Config,
    topic: &str,
    partitions: &[(i32, i64)],
) -> Result<Vec<i32>, KafkaError> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let consumer = end_reader(&config.kafka, "tickfetch.lag", "read_committed")?;
    let mut tpl = TopicPartitionList::new();
    for (p, from) in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))
            .map_err(KafkaError::client("lag reader assignment"))?;
    }
    consumer
        .assign(&tpl)
        .map_err(KafkaError::client("lag reader assign"))?;
    let mut open: std::collections::BTreeSet<i32> = partitions.iter().map(|(p, _)| *p).collect();
    let mut caught_up = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !open.is_empty() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            // A record left: really behind.
            Some(Ok(message)) => {
                open.remove(&rdkafka::Message::partition(&message));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) if open.remove(&p) => {
                caught_up.push(p);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(KafkaError::client("reading for lag")(e)),
            None => {}
        }
    }
    Ok(caught_up)
}

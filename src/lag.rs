//! Consumer lag of every stage: how far each rollup stage and the sink are
//! behind the end of their input topics (`tickfetch lag`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{client_config, KafkaError};
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
    /// Records not yet committed by the group (transaction markers included).
    /// Never negative, even where the end offset was read before the commit.
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
        let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", &group)])?
            .create()
            .map_err(KafkaError::client("creating lag consumer"))?;
        let mut query = TopicPartitionList::new();
        let mut end = 0;
        for p in 0..config.topics.partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(5))
                .unwrap_or((0, 0));
            end += high;
            query.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(query, Duration::from_secs(5))
            .map_err(KafkaError::client("reading committed offsets"))?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        out.push(TopicLag {
            group,
            topic,
            end,
            committed,
        });
    }
    Ok(out)
}

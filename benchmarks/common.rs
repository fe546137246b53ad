//! What the benchmarks share: the machine they report, and offsets read
//! off the broker.
// Each benchmark includes this file and uses a part of it.
#![allow(dead_code)]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tickfetch::config::Config;
use tickfetch::kafka::client_config;

/// `"<cores> cores, <cpu model>"`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores, {cpu}")
}

/// Σ of end offsets of `topic`.
pub fn end_offsets(config: &Config, topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", "bench-probe")])
        .expect("config")
        .create()
        .expect("consumer");
    (0..config.topics.partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .unwrap_or(0)
        })
        .sum()
}

/// Σ of the group's committed offsets on `topic`.
pub fn committed(config: &Config, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = client_config(&config.kafka, &[("group.id", group)])
        .expect("config")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..config.topics.partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map(|c| {
            c.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

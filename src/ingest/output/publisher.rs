//! Publishing trades and watermarks to the trades topic.
//!
//! Records are keyed `exchange:symbol`, so a symbol's trades and watermarks stay
//! in order on one partition, and sent by an idempotent producer (no duplicates
//! from producer retries, order kept). The envelope (kind and epoch headers,
//! JSON payload) is `wire`'s.

use std::time::Duration;

use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;
use crate::coord::epoch::Epoch;
use crate::kafka::{client_config, ensure_topics, KafkaError, TopicSpec};
use crate::model::{Exchange, Millis, Trade, Watermark};
use crate::wire::{send_waiting, Body, Encoder};

/// Most records waiting in the producer's queue; `send` waits while it is full.
pub const PUBLISH_QUEUE_MESSAGES: usize = 100_000;

/// An idempotent producer to the trades topic.
pub struct TradePublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    encoder: Encoder,
}

impl TradePublisher {
    /// Creates the trades topic if needed and connects.
    ///
    /// # Errors
    /// Kafka unreachable or an option conflict.
    pub async fn connect(config: &Config) -> Result<Self, KafkaError> {
        let topic = config.topics.trades();
        ensure_topics(
            &config.kafka,
            &[TopicSpec {
                name: topic.clone(),
                partitions: config.topics.partitions,
                compacted: false,
            }],
        )
        .await?;
        let queue = PUBLISH_QUEUE_MESSAGES.to_string();
        let producer = client_config(
            &config.kafka,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("queue.buffering.max.messages", &queue),
                ("linger.ms", "5"),
            ],
        )?
        .create()
        .map_err(KafkaError::client("creating trade producer"))?;
        Ok(Self {
            producer,
            topic,
            encoder: Encoder::default(),
        })
    }

    /// Queues one trade written under `epoch`.
    ///
    /// # Errors
    /// A producer error other than a full queue (on which it waits).
    pub fn send_trade(&mut self, trade: &Trade, epoch: Epoch) -> Result<(), KafkaError> {
        self.send(Body::Trade(trade), epoch)
    }

    /// Queues a watermark, written under `epoch`: no trade of
    /// `exchange:symbol` before `time` follows.
    ///
    /// # Errors
    /// A producer error other than a full queue.
    pub fn send_watermark(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        time: Millis,
        epoch: Epoch,
    ) -> Result<(), KafkaError> {
        let watermark = Watermark {
            exchange,
            symbol: symbol.to_string(),
            time,
        };
        self.send(Body::Watermark(&watermark), epoch)
    }

    /// Encodes `body` (key, kind and epoch headers) and queues it.
    fn send(&mut self, body: Body<'_>, epoch: Epoch) -> Result<(), KafkaError> {
        let encoded = self
            .encoder
            .encode(body, epoch)
            .map_err(|source| KafkaError::Encode {
                topic: self.topic.clone(),
                source,
            })?;
        send_waiting(&self.producer, encoded.record(&self.topic)).map_err(|source| {
            KafkaError::Client {
                what: format!("producing to {}", self.topic),
                source,
            }
        })
    }

    /// Waits until everything queued is acknowledged.
    ///
    /// # Errors
    /// A delivery that failed or timed out.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .flush(timeout)
            .map_err(KafkaError::client("flushing trades"))
    }
}

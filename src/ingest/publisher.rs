//! Publishing trades and watermarks to the trades topic.
//!
//! Records are keyed `exchange:symbol`, so a symbol's trades and watermarks stay
//! in order on one partition, and sent by an idempotent producer (no duplicates
//! from producer retries, order kept). Watermarks carry the header
//! `tickfetch-kind: watermark`, trades `tickfetch-kind: trade`; both carry the
//! writing feed's fencing epoch in `tickfetch-epoch` when it has one.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;
use crate::coord::epoch::{Epoch, EpochStamp};
use crate::kafka::{client_config, ensure_topics, KafkaError, TopicSpec};
use crate::model::{
    feed_key, Exchange, Millis, Trade, Watermark, KIND_HEADER, KIND_TRADE, KIND_WATERMARK,
};

/// Most records waiting in the producer's queue; `send` waits while it is full.
pub const PUBLISH_QUEUE_MESSAGES: usize = 100_000;

/// An idempotent producer to the trades topic.
pub struct TradePublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    buffer: Vec<u8>,
    /// The last epoch stamped (epochs change rarely: its header text is kept).
    stamp: EpochStamp,
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
            buffer: Vec::with_capacity(512),
            stamp: EpochStamp::default(),
        })
    }

    /// Queues one trade written under `epoch`.
    ///
    /// # Errors
    /// A producer error other than a full queue (on which it waits).
    pub fn send_trade(&mut self, trade: &Trade, epoch: Epoch) -> Result<(), KafkaError> {
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, trade).map_err(|e| KafkaError::Encode {
            topic: self.topic.clone(),
            message: format!("serialising a trade: {e}"),
        })?;
        let key = trade.key();
        self.send(&key, KIND_TRADE, epoch)
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
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, &watermark).map_err(|e| KafkaError::Encode {
            topic: self.topic.clone(),
            message: format!("serialising a watermark: {e}"),
        })?;
        let key = feed_key(exchange, symbol);
        self.send(&key, KIND_WATERMARK, epoch)
    }

    /// Sends the buffer keyed `key`, with the kind and epoch headers.
    fn send(&mut self, key: &str, kind: &str, epoch: Epoch) -> Result<(), KafkaError> {
        if self.stamp.epoch() != epoch {
            self.stamp = EpochStamp::new(epoch);
        }
        let headers = self
            .stamp
            .stamp(OwnedHeaders::new_with_capacity(2).insert(Header {
                key: KIND_HEADER,
                value: Some(kind),
            }));
        let record = BaseRecord::to(&self.topic)
            .key(key)
            .payload(self.buffer.as_slice())
            .headers(headers);
        crate::kafka::send_waiting(&self.producer, record).map_err(|source| KafkaError::Client {
            what: format!("producing to {}", self.topic),
            source,
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

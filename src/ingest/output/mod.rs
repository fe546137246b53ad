//! The worker's single way out to Kafka: a bounded queue drained by one
//! blocking thread that owns the producers.
//!
//! ```text
//! feed tasks ──Output (bounded, OUTPUT_QUEUE)──▶ publisher thread
//!     Trade, Watermark       ──▶ TradePublisher (idempotent, `{prefix}.trades`, key exchange:symbol)
//!     Gap marker             ──▶ side producer   (idempotent, `{prefix}.trades`, kind `gap`)
//!     DeadLetter             ──▶ side producer   (`{prefix}.deadletter`, raw bytes + reason headers)
//! ```
//!
//! librdkafka's `send` may block on a full queue (the publisher waits there),
//! so the thread is a `spawn_blocking` one and the async tasks only ever wait
//! on the bounded channel: back-pressure reaches the connections, which stop
//! reading their sockets, instead of memory growing.
//!
//! # Epochs
//! Trades, watermarks and gap markers carry the fencing epoch their feed
//! claimed when it became primary (header `tickfetch-epoch`, see `wire` and
//! `coord::epoch`), so readers can refuse the late writes of an old primary
//! that kept running after a newer one took over.
//!
//! # Dead letters
//!
//! A frame that does not parse goes to `{prefix}.deadletter` (one partition)
//! with the frame's raw bytes as the payload (text or binary, unchanged),
//! the key and header `tickfetch-source` naming where it came from
//! (`ws:{exchange}:{feed}:s{shard}c{connection}`, e.g.
//! `ws:binance:trade:s0c3`), and the header `tickfetch-reason` holding the
//! adapter's error (`binance: malformed frame: EOF while parsing…`). Only a
//! primary dead-letters (a replica sees the same frames). The connection
//! stays up.
//!
//! # Unfilled gaps
//!
//! A gap that REST backfill could not fill is published on the trades topic
//! itself, keyed `exchange:symbol` like the symbol's trades, with header
//! `tickfetch-kind: gap` and a [`GapMarker`] JSON payload. The rollup's
//! first stage is the one reader that can act on it (mark the windows in
//! `from_time..=to_time` degraded, `TradeRollup::mark_gap`), and it already
//! reads that topic in key order. The marker is also logged and counted.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::{mpsc, oneshot};

pub mod publisher;

use crate::config::Config;
use crate::coord::epoch::Epoch;
use crate::kafka::{client_config, ensure_topics, KafkaError, TopicSpec};
use crate::model::{Exchange, GapMarker, Millis, Trade};
use crate::wire::{Body, DeadLetter, Encoder};
pub use publisher::TradePublisher;

/// Records queued between the feed tasks and the publisher thread.
pub const OUTPUT_QUEUE: usize = 16_384;
/// How long the publisher waits for the broker to acknowledge everything on exit.
pub const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// One record for the publisher thread; [`Epoch`]s are the writing feed's.
#[derive(Debug)]
pub enum Output {
    Trade(Trade, Epoch),
    Watermark {
        exchange: Exchange,
        symbol: String,
        time: Millis,
        epoch: Epoch,
    },
    Gap(GapMarker, Epoch),
    DeadLetter {
        payload: Vec<u8>,
        reason: String,
        source: String,
    },
    /// Wait until everything queued before it is acknowledged.
    Flush(oneshot::Sender<Result<(), KafkaError>>),
}

/// The producers, owned by the publisher thread.
pub struct Publishers {
    trades: TradePublisher,
    side: ThreadedProducer<DefaultProducerContext>,
    trades_topic: String,
    dead_letter_topic: String,
    encoder: Encoder,
}

impl Publishers {
    /// Creates the trades and dead-letter topics if needed and connects.
    ///
    /// # Errors
    /// Kafka unreachable or a conflicting option.
    pub async fn connect(config: &Config) -> Result<Self, KafkaError> {
        let trades = TradePublisher::connect(config).await?;
        let dead_letter_topic = config.topics.dead_letter();
        ensure_topics(
            &config.kafka,
            &[TopicSpec {
                name: dead_letter_topic.clone(),
                partitions: 1,
                compacted: false,
            }],
        )
        .await?;
        let side = client_config(
            &config.kafka,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
            ],
        )?
        .create()
        .map_err(KafkaError::client("creating the dead-letter producer"))?;
        Ok(Self {
            trades,
            side,
            trades_topic: config.topics.trades(),
            dead_letter_topic,
            encoder: Encoder::default(),
        })
    }

    /// Drains `queue` until every sender is gone, then flushes.
    ///
    /// # Errors
    /// A producer error (the worker stops: its feeds cannot publish).
    pub fn run(mut self, mut queue: mpsc::Receiver<Output>) -> Result<(), KafkaError> {
        while let Some(output) = queue.blocking_recv() {
            self.handle(output)?;
        }
        self.flush(FINAL_FLUSH)
    }

    fn handle(&mut self, output: Output) -> Result<(), KafkaError> {
        match output {
            Output::Trade(trade, epoch) => self.trades.send_trade(&trade, epoch),
            Output::Watermark {
                exchange,
                symbol,
                time,
                epoch,
            } => self.trades.send_watermark(exchange, &symbol, time, epoch),
            Output::Gap(marker, epoch) => {
                let encoded = self
                    .encoder
                    .encode(Body::Gap(&marker), epoch)
                    .map_err(|source| KafkaError::Encode {
                        topic: self.trades_topic.clone(),
                        source,
                    })?;
                send_waiting(&self.side, encoded.record(&self.trades_topic))
            }
            Output::DeadLetter {
                payload,
                reason,
                source,
            } => {
                let letter = DeadLetter {
                    payload: Some(&payload),
                    key: Some(source.as_bytes()),
                    reason: &reason,
                    source: &source,
                };
                send_waiting(&self.side, letter.record(&self.dead_letter_topic))
            }
            Output::Flush(reply) => {
                let _ = reply.send(self.flush(FINAL_FLUSH));
                Ok(())
            }
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.trades.flush(timeout)?;
        self.side
            .flush(timeout)
            .map_err(KafkaError::client("flushing dead letters"))
    }
}

fn send_waiting<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    record: BaseRecord<'_, K, [u8]>,
) -> Result<(), KafkaError> {
    let topic = record.topic.to_string();
    crate::wire::send_waiting(producer, record).map_err(|source| KafkaError::Client {
        what: format!("producing to {topic}"),
        source,
    })
}

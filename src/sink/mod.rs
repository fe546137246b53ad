//! The MongoDB sink: candle topics (and optionally trades) into MongoDB, each
//! record landing once, at its latest revision.
//!
//! Data flow: consume → decode → batch (by count and time) → one guarded,
//! unordered, durable bulk upsert per collection ([`writer`]) → commit the
//! offsets after the batch. Records that can never be written (undecodable,
//! refused by the server for good) go to the dead-letter topic with the reason,
//! and the rest flows on. While MongoDB is down or failing, the sink retries the
//! same batch with backoff and does not read further: input waits in Kafka, not
//! in memory, and the log says what it waits for.
//!
//! Replays are harmless: `_id`s are deterministic and the revision guard keeps
//! the highest revision.
//!
//! Fencing: every record's `tickfetch-epoch` header goes through an
//! [`EpochFence`] (per topic, partition and key, the highest epoch seen and
//! where it began); a record from a lower epoch after a higher one is a fenced
//! owner's late write and is skipped, counted in
//! `tickfetch_sink_fenced_total`. Documents keep their epoch, and the write
//! guard never lets a lower epoch replace a higher one, which still holds
//! after a restart, when the fence starts empty.

pub mod query;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::coord::epoch::{Admission, Epoch, EpochFence};
use crate::kafka::{client_config, ensure_topics, KafkaError, TopicSpec};
use crate::model::{Candle, Interval, Trade};
use crate::shutdown::{retry_until_cancelled, CancellationToken};
use crate::telemetry::register;
use crate::wire::{record_source, DeadLetter, Envelope, Received, WireError};
use writer::{candle_collection, PendingWrite, WriteError, TRADES_COLLECTION};

/// Server selection and connect timeout of the MongoDB client.
const MONGO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between retries of a failing write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Errors of the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("mongodb client: {0}")]
    Client(#[from] mongodb::error::Error),
    #[error(transparent)]
    Setup(#[from] crate::config::MongoSetupError),
    #[error("mongodb at {who} refused us: {reason}; check mongodb.uri, mongodb.username and mongodb.password")]
    Refused { who: String, reason: String },
}

impl SinkError {
    /// Whether restarting the sink cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            SinkError::Kafka(e) => e.is_terminal(),
            SinkError::Setup(_) | SinkError::Refused { .. } => true,
            _ => false,
        }
    }
}

/// Which partitions the sink reads.
#[derive(Debug, Clone)]
pub enum SinkAssignment {
    /// Join the sink's consumer group.
    Group,
    /// Every partition of every input topic, no group membership (one sink).
    AllPartitions,
}

struct SinkMetrics {
    written: prometheus::IntCounter,
    stale: prometheus::IntCounter,
    fenced: prometheus::IntCounter,
    dead_letters: prometheus::IntCounter,
    retries: prometheus::IntCounter,
    commit_failures: prometheus::IntCounter,
    batches: prometheus::IntCounter,
    batch_size: prometheus::Histogram,
    /// A candle's window end (exchange time) → durably stored, by interval.
    stored_latency: prometheus::HistogramVec,
}

impl SinkMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str| {
            register(
                prometheus::IntCounter::new(format!("tickfetch_sink_{name}"), help)
                    .expect("static metric definition"),
            )
        };
        Self {
            written: counter("written_total", "documents inserted or replaced"),
            stale: counter(
                "stale_total",
                "writes refused by the guard (revision or epoch not newer)",
            ),
            fenced: counter(
                "fenced_total",
                "records skipped: a lower epoch after a higher one on the same key",
            ),
            dead_letters: counter(
                "dead_letters_total",
                "records sent to the dead-letter topic",
            ),
            retries: counter("retries_total", "batch writes retried"),
            commit_failures: counter(
                "commit_failures_total",
                "offset commits that failed after a durable write (the records are read again)",
            ),
            batches: counter("batches_total", "batches written and committed"),
            batch_size: register(
                prometheus::Histogram::with_opts(
                    prometheus::HistogramOpts::new(
                        "tickfetch_sink_batch_size",
                        "documents per bulk write",
                    )
                    .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]),
                )
                .expect("static metric definition"),
            ),
            stored_latency: register(
                prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "tickfetch_sink_stored_latency_seconds",
                        "end of a candle's window (exchange time) to its durable write in MongoDB",
                    )
                    .buckets(crate::telemetry::LATENCY_BUCKETS.to_vec()),
                    &["interval"],
                )
                .expect("static metric definition"),
            ),
        }
    }
}

/// The topics the sink reads under `config`.
pub fn input_topics(config: &Config) -> Vec<String> {
    let mut topics: Vec<String> = config
        .sink
        .intervals
        .iter()
        .map(|i| config.topics.candles(*i))
        .collect();
    if config.sink.trades {
        topics.push(config.topics.trades());
    }
    topics
}

/// Runs the sink until `shutdown`.
///
/// # Errors
/// A configuration conflict, or Kafka unreachable at start. MongoDB failures are
/// retried, not returned.
pub async fn run(
    config: Config,
    assignment: SinkAssignment,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let topics = input_topics(&config);
    let mut specs: Vec<TopicSpec> = topics
        .iter()
        .map(|t| TopicSpec {
            name: t.clone(),
            partitions: config.topics.partitions,
            compacted: false,
        })
        .collect();
    specs.push(TopicSpec {
        name: config.topics.dead_letter(),
        partitions: 1,
        compacted: false,
    });
    ensure_topics(&config.kafka, &specs).await?;

    let storage = storage(&config);
    let mut options = config.mongodb.client_options().await?;
    // Fail a write within seconds while MongoDB is away, so the sink says what it
    // waits for instead of blocking silently in server selection.
    options.server_selection_timeout = Some(MONGO_TIMEOUT);
    options.connect_timeout = Some(MONGO_TIMEOUT);
    let client = mongodb::Client::with_options(options)?;
    let db = client.database(&config.mongodb.database);
    let metrics = SinkMetrics::new();
    let waiting = format!(
        "waiting for MongoDB at {} to create indexes",
        config.mongodb.describe()
    );
    // A refusal (credentials) ends the retries: it would refuse forever.
    let created = retry_until_cancelled(&shutdown, &waiting, || async {
        match writer::ensure_collections(&db, &config.sink.intervals, config.sink.trades, storage)
            .await
        {
            Err(e) if e.is_refusal() => Ok(Err(e)),
            other => other.map(Ok),
        }
    })
    .await;
    match created {
        None => return Ok(()),
        Some(Err(e)) => {
            return Err(SinkError::Refused {
                who: config.mongodb.describe(),
                reason: e.to_string(),
            })
        }
        Some(Ok(())) => {}
    }

    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(
            &config.kafka,
            &[
                ("group.id", &config.sink.group_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", "read_committed"),
                ("fetch.queue.backoff.ms", "1"),
                // Input topics may be created after the consumer starts.
                ("topic.metadata.refresh.interval.ms", "1000"),
            ],
        )?
        .create()
        .map_err(KafkaError::client("creating sink consumer"))?,
    );
    match assignment {
        SinkAssignment::Group => consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(KafkaError::client("subscribe"))?,
        SinkAssignment::AllPartitions => {
            // A broker that just started may not have its group coordinator
            // yet (`NotCoordinator`): wait for it like for MongoDB.
            let waiting = format!(
                "waiting for the broker at {} to read committed offsets",
                config.kafka.bootstrap
            );
            let Some(tpl) = retry_until_cancelled(&shutdown, &waiting, || {
                committed_assignment(&consumer, &topics, config.topics.partitions)
            })
            .await
            else {
                return Ok(());
            };
            consumer
                .assign(&tpl)
                .map_err(KafkaError::client("assign"))?;
        }
    }
    let producer: FutureProducer = client_config(&config.kafka, &[("enable.idempotence", "true")])?
        .create()
        .map_err(KafkaError::client("creating dead-letter producer"))?;
    let dead_letter = config.topics.dead_letter();
    let trades_topic = config.topics.trades();
    let batch_size = config.sink.batch_size.max(1);
    let batch_wait = Duration::from_millis(config.sink.batch_ms);

    let mut stream = consumer.stream();
    let mut batch: Vec<PendingWrite> = Vec::with_capacity(batch_size);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut batch_started: Option<Instant> = None;
    let mut fence = EpochFence::default();
    loop {
        let wait = batch_started.map_or(batch_wait, |t| batch_wait.saturating_sub(t.elapsed()));
        let next = tokio::select! {
            _ = shutdown.cancelled() => None,
            next = tokio::time::timeout(wait, stream.next()) => Some(next),
        };
        let stopping = next.is_none();
        if let Some(Ok(Some(message))) = &next {
            match message {
                Ok(message) => {
                    offsets.insert(
                        (message.topic().to_string(), message.partition()),
                        message.offset() + 1,
                    );
                    match decode(message, &trades_topic, &mut fence) {
                        Ok(Decoded::Write(write)) => batch.push(write),
                        Ok(Decoded::Skip) => {}
                        Ok(Decoded::Fenced { epoch, newest }) => {
                            metrics.fenced.inc();
                            tracing::debug!(source = %source(message), %epoch, %newest, "record of a fenced epoch skipped");
                        }
                        Err(reason) => {
                            metrics.dead_letters.inc();
                            tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %reason, "undecodable record; dead-lettered");
                            let source = source(message);
                            let letter = DeadLetter {
                                payload: message.payload(),
                                key: message.key(),
                                reason: &reason.to_string(),
                                source: &source,
                            };
                            send_dead_letter(&producer, &dead_letter, &letter).await?;
                        }
                    }
                    batch_started.get_or_insert_with(Instant::now);
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        let full = batch.len() >= batch_size;
        let due = batch_started.is_some_and(|t| t.elapsed() >= batch_wait);
        if (full || due || stopping) && !offsets.is_empty() {
            let writes = std::mem::take(&mut batch);
            if !flush(
                &db,
                &config,
                writes,
                &producer,
                &dead_letter,
                &metrics,
                &shutdown,
            )
            .await?
            {
                return Ok(()); // shut down while MongoDB was failing: offsets stay uncommitted
            }
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in offsets.drain() {
                tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(KafkaError::client("building offsets"))?;
            }
            // A failed commit loses nothing: the writes are durable and
            // idempotent, so whoever reads these records again (this sink after
            // the broker is back, or the partition's next owner after a
            // rebalance) rewrites the same documents and commits then.
            if let Err(e) = commit(&consumer, tpl).await {
                metrics.commit_failures.inc();
                tracing::warn!(error = %e, "committing offsets failed; the records will be read and written again");
            }
            metrics.batches.inc();
            batch_started = None;
        }
        if stopping {
            tracing::info!("sink stopped");
            return Ok(());
        }
    }
}

/// Writes one batch, retrying until it is durable. Returns false when shutdown
/// came first.
async fn flush(
    db: &mongodb::Database,
    config: &Config,
    writes: Vec<PendingWrite>,
    producer: &FutureProducer,
    dead_letter: &str,
    metrics: &SinkMetrics,
    shutdown: &CancellationToken,
) -> Result<bool, SinkError> {
    let storage = storage(config);
    if writes.is_empty() {
        return Ok(true);
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        match writer::write_batch(db, writes.clone(), storage).await {
            Ok(outcome) => {
                metrics.written.inc_by(outcome.written);
                metrics.batch_size.observe(writes.len() as f64);
                for write in &writes {
                    let Some(interval) = write.collection.strip_prefix("candles_") else {
                        continue;
                    };
                    if let Ok(close) = write.document.get_i64("close_time") {
                        metrics
                            .stored_latency
                            .with_label_values(&[interval])
                            .observe(crate::telemetry::seconds_since(close + 1));
                    }
                }
                metrics.stale.inc_by(outcome.stale);
                for (write, reason) in outcome.rejected {
                    metrics.dead_letters.inc();
                    let payload = serde_json::to_vec(&write.document).map_err(|source| {
                        KafkaError::Encode {
                            topic: dead_letter.to_string(),
                            source: WireError::Encode {
                                what: "refused document",
                                source,
                            },
                        }
                    })?;
                    let source = format!("{}/{}", write.collection, write.id);
                    let letter = DeadLetter {
                        payload: Some(&payload),
                        key: Some(write.id.as_bytes()),
                        reason: &reason,
                        source: &source,
                    };
                    send_dead_letter(producer, dead_letter, &letter).await?;
                }
                return Ok(true);
            }
            Err(e) => {
                metrics.retries.inc();
                tracing::warn!(error = %e, mongodb = %config.mongodb.describe(), retry_in = ?backoff, "waiting for MongoDB: batch not written yet, input paused");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How `config` says documents are stored.
fn storage(config: &Config) -> writer::Storage {
    if config.sink.timeseries {
        writer::Storage::TimeSeries
    } else {
        writer::Storage::Upsert
    }
}

/// Commits `offsets` synchronously on a blocking thread: librdkafka's commit
/// blocks until the broker answers, which must not stall the runtime.
async fn commit(
    consumer: &Arc<StreamConsumer>,
    offsets: TopicPartitionList,
) -> Result<(), KafkaError> {
    let consumer = Arc::clone(consumer);
    tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
        .await
        .map_err(|source| KafkaError::Blocking {
            what: "committing offsets",
            source,
        })?
        .map_err(KafkaError::client("committing offsets"))
}

/// The sink's committed offsets for every partition (earliest where none),
/// read on a blocking thread.
async fn committed_assignment(
    consumer: &Arc<StreamConsumer>,
    topics: &[String],
    partitions: i32,
) -> Result<TopicPartitionList, KafkaError> {
    let mut query = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            query.add_partition(topic, p);
        }
    }
    let reader = Arc::clone(consumer);
    let committed = tokio::task::spawn_blocking(move || {
        reader.committed_offsets(query, Duration::from_secs(10))
    })
    .await
    .map_err(|source| KafkaError::Blocking {
        what: "reading committed offsets",
        source,
    })?
    .map_err(KafkaError::client("reading committed offsets"))?;
    let mut tpl = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(element.topic(), element.partition(), offset)
            .map_err(KafkaError::client("building assignment"))?;
    }
    Ok(tpl)
}

/// What the sink does with one record.
#[derive(Debug)]
enum Decoded {
    Write(PendingWrite),
    /// Watermarks and gap markers steer the rollup; the sink stores trades
    /// and candles.
    Skip,
    /// A late write of a fenced owner.
    Fenced {
        epoch: Epoch,
        newest: Epoch,
    },
}

/// Reads a record's envelope, runs it through the fence, and decodes it
/// into a write.
fn decode(
    message: &BorrowedMessage<'_>,
    trades_topic: &str,
    fence: &mut EpochFence,
) -> Result<Decoded, WireError> {
    let envelope = Envelope::of(message);
    let epoch = envelope.epoch()?;
    if let Some(key) = envelope.key {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if let Admission::Fenced { newest } = fence.admit(topic, partition, offset, key, epoch) {
            return Ok(Decoded::Fenced { epoch, newest });
        }
    }
    // Watermarks and gap markers (and kinds this version does not know).
    if !envelope.kind.is_trade() {
        return Ok(Decoded::Skip);
    }
    let write = if message.topic() == trades_topic {
        match envelope.decode::<Trade>()? {
            Received::Data(trade) => PendingWrite::trade(&trade, epoch),
            Received::Watermark(_) | Received::Gap(_) => return Ok(Decoded::Skip),
        }
    } else {
        match envelope.decode::<Candle>()? {
            Received::Data(candle) => PendingWrite::candle(&candle, epoch),
            Received::Watermark(_) | Received::Gap(_) => return Ok(Decoded::Skip),
        }
    };
    Ok(Decoded::Write(write))
}

fn source(message: &BorrowedMessage<'_>) -> String {
    record_source(message.topic(), message.partition(), message.offset())
}

async fn send_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    letter: &DeadLetter<'_>,
) -> Result<(), SinkError> {
    producer
        .send(letter.future_record(topic), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| KafkaError::Client {
            what: "dead-letter send".into(),
            source: e,
        })?;
    Ok(())
}

/// The collections the sink writes for `intervals`.
pub fn collections(intervals: &[Interval], trades: bool) -> Vec<String> {
    let mut names: Vec<String> = intervals.iter().map(|i| candle_collection(*i)).collect();
    if trades {
        names.push(TRADES_COLLECTION.to_string());
    }
    names
}

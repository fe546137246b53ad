//! `tickfetch replay`: recompute one stage's candles for a time range from
//! the topic below, idempotently.
//!
//! ```text
//! input topic ─ from (range start − margin) ─▶ engine level (fresh) ─▶ windows in [from, to)
//! output topic ─ from range start ─▶ latest revision per window ─┐     │
//!                                                                 ▼     ▼
//!                    unchanged: nothing · changed: revision + 1 · missing: revision 0
//!                                                  │
//!                     one transaction (per 10,000) on the output topic, same
//!                     partition as the input, under the stage's current epoch
//! ```
//!
//! The input is read from `margin` before the range (so the first windows'
//! state, a quiet window's previous close, is what the live stage had) to
//! its end, with the live stage's rules: records of a fenced writer (an
//! epoch below one already seen for the key, in topic order) are dropped,
//! duplicates counted once. It is then applied in event-time order per key,
//! without the input's watermarks, so that a trade that came too late for
//! the live stage is merged into its window; at the end a watermark past
//! the range closes every window. The records read are held in memory
//! (a range of hours, not of months).
//! Only windows opening in `[from, to)` are compared; `to` defaults to the
//! last window the live stage has surely closed.
//!
//! A changed candle goes out as the next revision of the one on the output
//! topic, so the parent stage merges it like a late correction and its own
//! corrected candles flow up; the sink stores the latest revision. A
//! window whose content is unchanged is not written again. The records carry
//! the partition's current fencing epoch (read, not claimed: the live stage
//! keeps its partition), so the sink and the parents accept them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::level::make_level;
use super::stage::{group_id, partition_producer};
use super::RollupError;
use crate::config::{Config, Guarantee};
use crate::coord::epoch::{process_owner, Epoch, EpochClaimer};
use crate::kafka::{end_reader, KafkaError};
use crate::model::{Candle, Exchange, Interval, Millis, Watermark};
use crate::progress::{Progress, Unit};
use crate::wire::{Body, Encoder, Envelope, Received, KIND_WATERMARK};

/// Records per transaction.
const PER_TRANSACTION: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(30);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The stage recomputed (its input is the level below).
    pub stage: Interval,
    /// Then each parent up to this one, over the same range (for ranges
    /// older than the parents' retention, whose live stages would refuse
    /// the corrections as too late).
    pub through: Interval,
    /// Range start (exchange time, ms): the window holding it is the first.
    pub from: Millis,
    /// Range end (exclusive): the window holding `to - 1` is the last.
    /// `None`: the last window the live stage has surely closed.
    pub to: Option<Millis>,
    /// Only these `exchange:symbol` keys (all when empty).
    pub keys: BTreeSet<String>,
    /// How far before the range the input is read.
    pub margin: Duration,
    /// Compare and report only; write nothing.
    pub dry_run: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub stage: Interval,
    pub input_records: u64,
    /// Windows recomputed in the range.
    pub windows: u64,
    pub unchanged: u64,
    /// Written as the next revision of a different stored candle.
    pub revised: u64,
    /// Written with revision 0: the output topic had none.
    pub missing: u64,
    pub from: Millis,
    pub to: Millis,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("etcd: {0}")]
    Coord(#[from] Box<crate::coord::CoordError>),
    #[error("empty range: from {from} is not before to {to} (after rounding to {stage} windows)")]
    EmptyRange {
        from: Millis,
        to: Millis,
        stage: Interval,
    },
    #[error("the replay thread failed: {0}")]
    Thread(String),
}

/// Per partition of `topic`: the first offset at or after `time` (the
/// partition's end where none).
fn offsets_at(
    consumer: &BaseConsumer<crate::kafka::ReadToEnd>,
    topic: &str,
    partitions: i32,
    time: Millis,
) -> Result<Vec<i64>, ReplayError> {
    let mut query = TopicPartitionList::new();
    for p in 0..partitions {
        query.add_partition_offset(topic, p, Offset::Offset(time.max(0)))?;
    }
    let found = consumer.offsets_for_times(query, TIMEOUT)?;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        let offset = match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => high,
        };
        out.push(offset.min(high));
    }
    Ok(out)
}

/// Reads `topic` from `starts` to `ends` per partition (read_committed),
/// handing each record to `each`.
fn read_range(
    consumer: &BaseConsumer<crate::kafka::ReadToEnd>,
    topic: &str,
    starts: &[i64],
    ends: &[i64],
    mut each: impl FnMut(i32, &rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), ReplayError> {
    read_until(consumer, topic, starts, ends, |p, m| {
        each(p, m);
        true
    })
}

/// As [`read_range`], stopping early when `each` returns false.
fn read_until(
    consumer: &BaseConsumer<crate::kafka::ReadToEnd>,
    topic: &str,
    starts: &[i64],
    ends: &[i64],
    mut each: impl FnMut(i32, &rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<(), ReplayError> {
    let mut open: BTreeSet<i32> = BTreeSet::new();
    let mut tpl = TopicPartitionList::new();
    for (p, (start, end)) in starts.iter().zip(ends).enumerate() {
        if start < end {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(*start))?;
            open.insert(p as i32);
        }
    }
    if open.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let mut quiet_since = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                let p = message.partition();
                if message.offset() >= ends[p as usize] {
                    open.remove(&p);
                    continue;
                }
                if !each(p, &message) {
                    break;
                }
                if message.offset() + 1 >= ends[p as usize] {
                    open.remove(&p);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            None if quiet_since.elapsed() > TIMEOUT => {
                return Err(ReplayError::Thread(format!(
                    "{topic}: nothing read for {TIMEOUT:?} with partitions {open:?} unfinished"
                )))
            }
            None => {}
        }
    }
    consumer.unassign()?;
    Ok(())
}

/// Where a replay starts or ends: an exchange time, or an offset of the
/// input topic (the same in every partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangePoint {
    Time(Millis),
    Offset(i64),
}

impl std::str::FromStr for RangePoint {
    type Err = String;

    /// An RFC 3339 time or epoch milliseconds (≥ 10^11) is a time; a smaller
    /// number an offset.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<i64>() {
            Ok(n) if n >= 100_000_000_000 => Ok(RangePoint::Time(n)),
            Ok(n) if n >= 0 => Ok(RangePoint::Offset(n)),
            Ok(n) => Err(format!("{n}: an offset or a time is not negative")),
            Err(_) => crate::sink::query::parse_time(s)
                .map(RangePoint::Time)
                .map_err(|e| e.to_string()),
        }
    }
}

/// The event time of the input at `offset`: the earliest over the
/// partitions of the first record at or after it (a trade's exchange time,
/// a candle's open time), or `None` when no partition holds one.
///
/// # Errors
/// Kafka unreachable.
pub async fn time_at_offset(
    config: &Config,
    stage: Interval,
    offset: i64,
) -> Result<Option<Millis>, ReplayError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let input = config.topics.stage_input(stage);
        let reader = end_reader(&config.kafka, "tickfetch.replay", "read_committed")?;
        let partitions = config.topics.partitions;
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for p in 0..partitions {
            let (low, high) = reader.fetch_watermarks(&input, p, TIMEOUT)?;
            starts.push(offset.max(low).min(high));
            ends.push(high);
        }
        let mut earliest: BTreeMap<i32, Millis> = BTreeMap::new();
        let mut seen: BTreeSet<i32> = BTreeSet::new();
        // The first data record of each partition from the offset on.
        read_until(&reader, &input, &starts, &ends, |p, message| {
            if seen.contains(&p) {
                return false;
            }
            let envelope = Envelope::of(message);
            let time = match stage {
                Interval::S1 => match envelope.decode::<crate::model::Trade>() {
                    Ok(Received::Data(t)) => Some(t.exchange_time),
                    _ => None,
                },
                _ => match envelope.decode::<Candle>() {
                    Ok(Received::Data(c)) => Some(c.open_time),
                    _ => None,
                },
            };
            if let Some(time) = time {
                earliest.insert(p, time);
                seen.insert(p);
            }
            seen.len() < partitions as usize
        })?;
        Ok(earliest.values().copied().min())
    })
    .await
    .map_err(|e| ReplayError::Thread(e.to_string()))?
}

/// One input record, owned, with its place in event-time order: (key,
/// event time, revision, topic order).
struct InputRecord {
    order: (Vec<u8>, Millis, u32, usize),
    kind: Option<Vec<u8>>,
    epoch: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// Runs a replay of `options.stage`, then of each parent through
/// `options.through`; one report per stage.
///
/// # Errors
/// Kafka or etcd unreachable, an empty range, a producer that cannot
/// commit.
pub async fn run(
    config: &Config,
    options: &ReplayOptions,
) -> Result<Vec<ReplayReport>, ReplayError> {
    let mut reports = Vec::new();
    let mut stage = Some(options.stage);
    while let Some(interval) = stage.filter(|s| *s <= options.through) {
        reports.push(run_stage(config, options, interval).await?);
        stage = interval.parent();
    }
    Ok(reports)
}

async fn run_stage(
    config: &Config,
    options: &ReplayOptions,
    interval: Interval,
) -> Result<ReplayReport, ReplayError> {
    let len = interval.millis();
    let from = interval.window_start(options.from);
    let lateness = (config.rollup.grace_ms + config.ingest.allowed_lateness_ms as i64).max(0);
    let to = match options.to {
        Some(to) => interval.window_start(to - 1) + len,
        None => interval.window_start(chrono::Utc::now().timestamp_millis() - lateness - len),
    };
    if from >= to {
        return Err(ReplayError::EmptyRange {
            from,
            to,
            stage: interval,
        });
    }
    // The partitions' current epochs, read (not claimed).
    let group = group_id(config, interval);
    let mut epochs = vec![Epoch::NONE; config.topics.partitions.max(0) as usize];
    if config.etcd.epochs {
        let claimer = EpochClaimer::connect(&config.etcd, &process_owner())
            .await
            .map_err(Box::new)?;
        for (p, slot) in epochs.iter_mut().enumerate() {
            let current = claimer
                .current(&format!("rollup/{group}/p{p}"))
                .await
                .map_err(Box::new)?;
            if let Some((epoch, _)) = current {
                *slot = epoch;
            }
        }
    }
    let config = config.clone();
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        replay_blocking(&config, &options, interval, from, to, &epochs)
    })
    .await
    .map_err(|e| ReplayError::Thread(e.to_string()))?
}

fn replay_blocking(
    config: &Config,
    options: &ReplayOptions,
    interval: Interval,
    from: Millis,
    to: Millis,
    epochs: &[Epoch],
) -> Result<ReplayReport, ReplayError> {
    let input = config.topics.stage_input(interval);
    let output = config.topics.candles(interval);
    let partitions = config.topics.partitions;
    let reader = end_reader(&config.kafka, "tickfetch.replay", "read_committed")?;
    let margin = options.margin.as_millis() as i64;
    let starts = offsets_at(&reader, &input, partitions, from - margin)?;
    // To the end: record times are when a record was written, which for a
    // backfill says nothing of its exchange time.
    let ends = offsets_at(&reader, &input, partitions, i64::MAX / 2)?;
    let mut report = ReplayReport {
        stage: interval,
        input_records: 0,
        windows: 0,
        unchanged: 0,
        revised: 0,
        missing: 0,
        from,
        to,
    };

    // Recompute: the input in topic order through a fresh level.
    let mut level = make_level(config, interval).map_err(RollupError::from)?;
    let mut highest_epoch: HashMap<Vec<u8>, Epoch> = HashMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut recomputed: BTreeMap<(String, Millis), Candle> = BTreeMap::new();
    let mut out = Vec::new();
    let total: u64 = starts
        .iter()
        .zip(&ends)
        .map(|(s, e)| (e - s).max(0) as u64)
        .sum();
    let mut progress = Progress::new("replay: reading", total, Unit::Records);
    let keep = |candles: &mut Vec<Candle>, recomputed: &mut BTreeMap<(String, Millis), Candle>| {
        for c in candles.drain(..) {
            if (from..to).contains(&c.open_time) {
                recomputed.insert((c.key(), c.open_time), c);
            }
        }
    };
    // In event-time order per key (a trade by its exchange time, a child
    // candle by its window, revisions in turn), with the input's own
    // watermarks left out: a record that came too late for the live stage
    // is merged like any other, and the final watermark closes the range.
    let mut records: Vec<InputRecord> = Vec::new();
    read_range(&reader, &input, &starts, &ends, |p, message| {
        progress.add(1);
        report.input_records += 1;
        let envelope = Envelope::of(message);
        let key = envelope.key.map(<[u8]>::to_vec).unwrap_or_default();
        let key_text = String::from_utf8_lossy(&key).into_owned();
        if !options.keys.is_empty() && !options.keys.contains(&key_text) {
            return;
        }
        // The live stage's rule, in topic order: a fenced writer's records
        // are dropped.
        let epoch = envelope.epoch().unwrap_or(Epoch::NONE);
        let seen = highest_epoch.entry(key.clone()).or_insert(epoch);
        if epoch < *seen {
            return;
        }
        *seen = epoch;
        let order = match interval {
            Interval::S1 => match envelope.decode::<crate::model::Trade>() {
                Ok(Received::Data(t)) => (t.exchange_time, 0),
                Ok(Received::Gap(g)) => (g.from_time, 0),
                Ok(Received::Watermark(_)) => return,
                // Undecodable: the live stage's dead letter.
                Err(_) => return,
            },
            _ => match envelope.decode::<Candle>() {
                Ok(Received::Data(c)) => (c.open_time, c.revision),
                Ok(Received::Gap(g)) => (g.from_time, 0),
                Ok(Received::Watermark(_)) => return,
                Err(_) => return,
            },
        };
        partition_of.insert(key_text, p);
        records.push(InputRecord {
            order: (key.clone(), order.0, order.1, records.len()),
            kind: message.headers().and_then(|h| {
                use rdkafka::message::Headers;
                h.iter()
                    .find(|h| h.key == crate::wire::KIND_HEADER)
                    .and_then(|h| h.value.map(<[u8]>::to_vec))
            }),
            epoch: message.headers().and_then(|h| {
                use rdkafka::message::Headers;
                h.iter()
                    .find(|h| h.key == crate::wire::EPOCH_HEADER)
                    .and_then(|h| h.value.map(<[u8]>::to_vec))
            }),
            payload: message.payload().map(<[u8]>::to_vec),
        });
    })?;
    progress.print(true);
    records.sort_by(|a, b| a.order.cmp(&b.order));
    for record in &records {
        let envelope = Envelope::from_parts(
            Some(&record.order.0),
            record.kind.as_deref(),
            record.epoch.as_deref(),
            record.payload.as_deref(),
        );
        // Refused records are the live stage's dead letters too.
        if level.apply(&envelope, &mut out).is_ok() {
            keep(&mut out, &mut recomputed);
        }
        out.clear();
    }
    drop(records);
    // Close every window of the range.
    for key in partition_of.keys() {
        let Some((exchange, symbol)) = key.split_once(':') else {
            continue;
        };
        let Ok(exchange) = exchange.parse::<Exchange>() else {
            continue;
        };
        let watermark = Watermark {
            exchange,
            symbol: symbol.to_string(),
            time: to + config.rollup.grace_ms.max(0) + 1,
        };
        let payload =
            serde_json::to_vec(&watermark).map_err(|e| ReplayError::Thread(e.to_string()))?;
        let envelope = Envelope::from_parts(
            Some(key.as_bytes()),
            Some(KIND_WATERMARK.as_bytes()),
            None,
            Some(&payload),
        );
        if level.apply(&envelope, &mut out).is_ok() {
            keep(&mut out, &mut recomputed);
        }
        out.clear();
    }
    report.windows = recomputed.len() as u64;

    // What the output topic holds for the range: the latest revision.
    let out_starts = offsets_at(&reader, &output, partitions, from)?;
    let out_ends = offsets_at(&reader, &output, partitions, i64::MAX / 2)?;
    let mut stored: BTreeMap<(String, Millis), Candle> = BTreeMap::new();
    read_range(&reader, &output, &out_starts, &out_ends, |_, message| {
        if let Ok(Received::Data(c)) = Envelope::of(message).decode::<Candle>() {
            if (from..to).contains(&c.open_time) {
                let slot = stored
                    .entry((c.key(), c.open_time))
                    .or_insert_with(|| c.clone());
                if c.revision >= slot.revision {
                    *slot = c;
                }
            }
        }
    })?;

    // Compare; write what differs.
    let mut writes: Vec<(i32, Candle)> = Vec::new();
    for (id, mut candle) in recomputed {
        match stored.get(&id) {
            Some(old) => {
                candle.revision = old.revision;
                if &candle == old {
                    report.unchanged += 1;
                    continue;
                }
                candle.revision = old.revision + 1;
                report.revised += 1;
            }
            None => {
                candle.revision = 0;
                report.missing += 1;
            }
        }
        let p = partition_of.get(&id.0).copied().unwrap_or(0);
        writes.push((p, candle));
    }
    if options.dry_run || writes.is_empty() {
        return Ok(report);
    }
    publish(config, interval, &output, &writes, epochs)?;
    tracing::info!(
        stage = %interval,
        windows = report.windows,
        revised = report.revised,
        missing = report.missing,
        "replay written"
    );
    Ok(report)
}

/// Writes `writes` to `output` (partition, candle), in transactions of
/// [`PER_TRANSACTION`], under each partition's epoch.
fn publish(
    config: &Config,
    interval: Interval,
    output: &str,
    writes: &[(i32, Candle)],
    epochs: &[Epoch],
) -> Result<(), ReplayError> {
    let exactly_once = config.rollup.guarantee == Guarantee::ExactlyOnce;
    let txn_id = format!("{}.replay", group_id(config, interval));
    let producer = partition_producer(config, &txn_id)?;
    let mut encoder = Encoder::default();
    let mut progress = Progress::new("replay: writing", writes.len() as u64, Unit::Records);
    for chunk in writes.chunks(PER_TRANSACTION) {
        if exactly_once {
            producer.begin_transaction()?;
        }
        for (p, candle) in chunk {
            let epoch = epochs.get(*p as usize).copied().unwrap_or(Epoch::NONE);
            let encoded = encoder
                .encode(Body::Candle(candle), epoch)
                .map_err(|e| ReplayError::Thread(format!("encoding a candle: {e}")))?;
            let mut record = encoded.record(output).partition(*p);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        record = back;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            progress.add(1);
        }
        if exactly_once {
            producer.commit_transaction(TIMEOUT)?;
        } else {
            producer.flush(TIMEOUT)?;
        }
    }
    progress.print(true);
    Ok(())
}

//! The Kafka side of one rollup stage: consume the level below, run the candle
//! engine, produce candles, and commit input offsets in the same transaction.
//!
//! Data flow per input partition `p` (each has its own [`PartitionTask`]):
//! 1. On assignment: the stage claims a fencing epoch for the partition from
//!    etcd (`rollup/{group}/p{p}`, see `coord::epoch`; unless `etcd.epochs` is
//!    off), then a transactional producer with the stable id `{group}.p{p}` is
//!    created and `init_transactions` fences any older owner (a paused or
//!    partitioned zombie) and aborts its open transaction. The
//!    engine state is restored from the compacted changelog topic (partition
//!    `p`), then the input is replayed from the oldest snapshot to the committed
//!    offset with output suppressed (those candles were committed already), so
//!    the state equals what it was at the last commit.
//! 2. Records are applied to the engine; candles go to the output topic, same
//!    partition `p`, inside the open transaction, with the epoch in the
//!    `tickfetch-epoch` header (so readers can refuse a zombie's records even
//!    where the broker shows aborted ones, or without transactions).
//! 3. Every `commit_interval_ms` (or `max_batch` records) the transaction gets
//!    the next input offset (`send_offsets_to_transaction`) and, every
//!    `snapshot_every` commits, a snapshot of the symbols touched since the last
//!    one, tagged with the input offset it covers; then it commits.
//! 4. An abortable error aborts and rewinds the partition (restore + replay); a
//!    fenced producer drops the partition (a newer owner has it); another fatal
//!    error rebuilds the producer and rewinds.
//!
//! Why snapshots may lag behind commits: the engine is deterministic, so the
//! state at input offset `o` is a function of the input before `o`. A snapshot
//! taken at `o ≤ committed` plus a silent replay of `[o, committed)` rebuilds
//! the committed state exactly. This also keeps the stage exact on a broker that
//! shows records of aborted transactions to read_committed readers: a snapshot
//! from an aborted transaction still describes a real prefix of the input, and
//! one that runs past the committed offset is ignored.
//!
//! The loop runs on a dedicated thread: librdkafka's transaction calls block.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Guarantee};
use crate::coord::epoch::{process_owner, Epoch, EpochClaimer};
use crate::kafka::{client_config, end_reader, ensure_topics, KafkaError, TopicSpec};
use crate::model::{Candle, Interval};
use crate::rollup::level::{make_level, ApplyOutcome, Level};
use crate::rollup::metrics::{StageMetrics, StageReport};
use crate::rollup::RollupError;
use crate::shutdown::CancellationToken;
use crate::wire::{
    feed_key, record_source, send_waiting, Body, DeadLetter, Encoder, Envelope, WireError,
};

/// Most records waiting in the producer's queue (librdkafka
/// `queue.buffering.max.messages`); a full queue makes the loop wait.
pub const PRODUCER_QUEUE_MESSAGES: usize = 200_000;
/// Timeout of blocking transaction calls.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait between tries to take a partition while the broker is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Which input partitions this process handles.
#[derive(Debug, Clone)]
pub enum Assignment {
    /// Join the stage's consumer group; partitions are shared among instances.
    Group,
    /// A fixed set of partitions, no group membership (no join delay). Two
    /// processes given the same partition fence each other: the newer wins.
    Static(Vec<i32>),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// The interval this stage produces.
    pub interval: Interval,
    pub assignment: Assignment,
    /// Snapshot the state every this many commits.
    pub snapshot_every: u32,
}

impl StageOptions {
    /// Group assignment, snapshot every 20 commits.
    pub fn new(interval: Interval) -> Self {
        Self {
            interval,
            assignment: Assignment::Group,
            snapshot_every: 20,
        }
    }
}

/// The record on the changelog topic: one symbol's engine state after the
/// input before `through` was applied.
#[derive(Debug, Serialize, Deserialize)]
struct StateRecord {
    through: i64,
    state: serde_json::Value,
    /// The highest writer epoch seen in the key's input before `through`
    /// (the epoch fence's state for the key).
    #[serde(default)]
    epoch: u64,
}

/// Rebalance events, collected in the consumer's callback and handled after
/// `poll` returns.
#[derive(Default)]
struct RebalanceLog {
    events: Mutex<Vec<RebalanceEvent>>,
}

enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

struct StageContext {
    log: Arc<RebalanceLog>,
    topic: String,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .filter(|e| e.topic() == self.topic)
                .map(|e| e.partition())
                .collect::<Vec<_>>()
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        if let Ok(mut events) = self.log.events.lock() {
            events.push(event);
        }
    }
}

type StageConsumer = BaseConsumer<StageContext>;
/// The hasher of the maps looked up per record (keyed by `exchange:symbol`).
type FastHash = foldhash::fast::RandomState;
/// A stage's per-partition producer.
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// One input partition's engine, producer and transaction bookkeeping.
struct PartitionTask {
    partition: i32,
    level: Box<dyn Level>,
    producer: TxnProducer,
    /// The fencing epoch this task writes under.
    epoch: Epoch,
    /// Encodes its candles and watermarks (key, headers, payload).
    encoder: Encoder,
    /// Offset after the last record applied (the next to read).
    next_offset: i64,
    /// Offset up to which the input was already committed and output published;
    /// records below it are replayed silently.
    replay_until: i64,
    in_txn: bool,
    txn_started: Instant,
    txn_records: usize,
    /// The window ends (ms) of the candles sent in the open transaction,
    /// for the committed-latency histogram.
    txn_window_ends: Vec<i64>,
    commits: u32,
    /// Symbols changed since the last snapshot.
    touched: HashSet<String, FastHash>,
    /// During the silent replay: the input offset each restored symbol's
    /// snapshot already covers (its earlier records are skipped).
    restored_through: HashMap<String, i64, FastHash>,
    /// Per symbol, the parent window the last forwarded watermark reached.
    forwarded: HashMap<String, i64, FastHash>,
    /// Watches etcd for a newer claim of this partition's epoch.
    _superseded: Option<SupersededWatch>,
    /// Per input key, the highest writer epoch seen: a record below it is
    /// a fenced writer's late write and is dropped.
    input_epochs: HashMap<String, Epoch, FastHash>,
}

/// A task watching etcd for a newer owner of one partition; it reports on
/// the stage's list and is aborted when the partition task ends.
struct SupersededWatch(tokio::task::JoinHandle<()>);

impl Drop for SupersededWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The consumer group (and transactional-id prefix) of the stage producing
/// `interval`: `{rollup.group_prefix}.{interval}`.
pub fn group_id(config: &Config, interval: Interval) -> String {
    format!("{}.{}", config.rollup.group_prefix, interval)
}

/// Runs one stage until `shutdown`.
///
/// # Errors
/// Configuration conflicts, a broker that cannot be reached at start, or every
/// partition of a static assignment fenced by a newer owner.
pub async fn run(
    config: Config,
    options: StageOptions,
    shutdown: CancellationToken,
) -> Result<StageReport, RollupError> {
    crate::telemetry::health().unready("partitions", "starting: no partition taken yet");
    let topics = &config.topics;
    let interval = options.interval;
    let mut specs = vec![
        TopicSpec {
            name: topics.stage_input(interval),
            partitions: topics.partitions,
            compacted: false,
        },
        TopicSpec {
            name: topics.candles(interval),
            partitions: topics.partitions,
            compacted: false,
        },
        TopicSpec {
            name: topics.changelog(interval),
            partitions: topics.partitions,
            compacted: true,
        },
    ];
    specs.push(TopicSpec {
        name: topics.dead_letter(),
        partitions: 1,
        compacted: false,
    });
    ensure_topics(&config.kafka, &specs).await?;
    let epochs = if config.etcd.epochs {
        match EpochClaimer::connect_waiting(&config.etcd, &process_owner(), &shutdown)
            .await
            .map_err(|e| RollupError::Coordination(Box::new(e)))?
        {
            Some(claimer) => Some(claimer),
            None => return Ok(StageReport::default()),
        }
    } else {
        None
    };
    let runtime = tokio::runtime::Handle::current();
    let handle = tokio::task::spawn_blocking(move || {
        let epochs = epochs.map(|claimer| EpochSource {
            claimer,
            runtime,
            shutdown: shutdown.clone(),
            superseded: Arc::default(),
        });
        let mut stage = StageLoop::new(config, options, epochs, shutdown.clone())?;
        match stage.run(&shutdown) {
            Ok(()) => {}
            Err(e @ RollupError::Stopped { .. }) => tracing::info!(why = %e, "stage stopped"),
            Err(e) => return Err(e),
        }
        Ok(stage.metrics.report())
    });
    handle.await?
}

/// Where a stage's partitions get their fencing epochs.
struct EpochSource {
    claimer: EpochClaimer,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    /// Partitions (with the epoch they held) that a newer owner claimed.
    superseded: Arc<Mutex<Vec<(i32, Epoch)>>>,
}

impl EpochSource {
    /// Starts watching for a newer claim of partition `p`'s `epoch`.
    fn watch(&self, scope: String, p: i32, epoch: Epoch) -> SupersededWatch {
        let (claimer, found) = (self.claimer.clone(), Arc::clone(&self.superseded));
        SupersededWatch(self.runtime.spawn(async move {
            claimer.superseded(&scope, epoch).await;
            if let Ok(mut found) = found.lock() {
                found.push((p, epoch));
            }
        }))
    }
}

struct StageLoop {
    config: Config,
    epochs: Option<EpochSource>,
    options: StageOptions,
    consumer: Arc<StageConsumer>,
    rebalances: Arc<RebalanceLog>,
    tasks: HashMap<i32, PartitionTask>,
    input: String,
    output: String,
    changelog: String,
    dead_letter: String,
    group: String,
    metrics: StageMetrics,
    out: Vec<Candle>,
    shutdown: CancellationToken,
    /// Partitions dropped to a newer owner and not revoked yet (group
    /// mode): `/readyz` reports them.
    fenced: BTreeSet<i32>,
    /// Group mode: whether the group's first assignment has been taken (a
    /// member that joined but holds nothing yet is not ready: another
    /// instance started now could race it for the same partitions).
    assigned: bool,
}

impl StageLoop {
    fn new(
        config: Config,
        options: StageOptions,
        epochs: Option<EpochSource>,
        shutdown: CancellationToken,
    ) -> Result<Self, RollupError> {
        let interval = options.interval;
        make_level(&config, interval)?;
        let input = config.topics.stage_input(interval);
        let group = group_id(&config, interval);
        let rebalances = Arc::new(RebalanceLog::default());
        let consumer: StageConsumer = input_consumer_config(&config, &group)?
            .create_with_context(StageContext {
                log: rebalances.clone(),
                topic: input.clone(),
            })
            .map_err(KafkaError::client("creating stage consumer"))?;
        Ok(Self {
            output: config.topics.candles(interval),
            changelog: config.topics.changelog(interval),
            dead_letter: config.topics.dead_letter(),
            metrics: StageMetrics::new(interval),
            config,
            epochs,
            options,
            consumer: Arc::new(consumer),
            rebalances,
            tasks: HashMap::new(),
            input,
            group,
            out: Vec::new(),
            shutdown,
            fenced: BTreeSet::new(),
            assigned: false,
        })
    }

    /// The `partitions` readiness check: every fixed partition held, none
    /// fenced.
    fn report_partitions(&self) {
        let health = crate::telemetry::health();
        let list = |ps: &mut dyn Iterator<Item = i32>| {
            ps.map(|p| format!("p{p}")).collect::<Vec<_>>().join(",")
        };
        if !self.fenced.is_empty() {
            health.unready(
                "partitions",
                format!(
                    "fenced: {} taken by a newer instance",
                    list(&mut self.fenced.iter().copied())
                ),
            );
            return;
        }
        if matches!(self.options.assignment, Assignment::Group) && !self.assigned {
            health.unready(
                "partitions",
                "joining the consumer group: no assignment yet",
            );
            return;
        }
        if let Assignment::Static(wanted) = &self.options.assignment {
            let missing: Vec<i32> = wanted
                .iter()
                .copied()
                .filter(|p| !self.tasks.contains_key(p))
                .collect();
            if !missing.is_empty() {
                health.unready(
                    "partitions",
                    format!("not holding {}", list(&mut missing.into_iter())),
                );
                return;
            }
        }
        health.ready("partitions");
    }

    fn run(&mut self, shutdown: &CancellationToken) -> Result<(), RollupError> {
        match self.options.assignment.clone() {
            Assignment::Group => {
                self.consumer
                    .subscribe(&[&self.input])
                    .map_err(KafkaError::client("subscribe"))?;
                tracing::info!(group = %self.group, topic = %self.input, "joined consumer group");
            }
            Assignment::Static(partitions) => {
                self.assign_all(&partitions)?;
                self.reassign_consumer()?;
            }
        }
        self.report_partitions();
        let commit_interval = Duration::from_millis(self.config.rollup.commit_interval_ms);
        while !shutdown.is_cancelled() {
            let consumer = Arc::clone(&self.consumer);
            let polled = consumer.poll(Duration::from_millis(20));
            let changed = self.handle_rebalances()?;
            if self.drop_superseded()? || changed {
                self.report_partitions();
            }
            match polled {
                Some(Ok(message)) => self.on_message(&message)?,
                Some(Err(e)) => {
                    self.metrics.errors.inc();
                    tracing::warn!(error = %e, "consumer error");
                }
                None => {}
            }
            // One clock read per record, not one per partition.
            let now = Instant::now();
            let due: Vec<i32> = self
                .tasks
                .values()
                .filter(|t| {
                    t.in_txn
                        && (now.duration_since(t.txn_started) >= commit_interval
                            || t.txn_records >= self.config.rollup.max_batch)
                })
                .map(|t| t.partition)
                .collect();
            for p in due {
                self.commit(p)?;
            }
        }
        // Drain: commit what is open.
        let open: Vec<i32> = self.tasks.keys().copied().collect();
        for p in open {
            self.commit(p)?;
        }
        tracing::info!(stage = %self.options.interval, "stage stopped");
        Ok(())
    }

    /// Applies the consumer's rebalances; whether there were any.
    fn handle_rebalances(&mut self) -> Result<bool, RollupError> {
        let events: Vec<RebalanceEvent> = match self.rebalances.events.lock() {
            Ok(mut events) => events.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let changed = !events.is_empty();
        for event in events {
            match event {
                RebalanceEvent::Revoked(partitions) => {
                    for p in partitions {
                        self.fenced.remove(&p);
                        if let Some(task) = self.tasks.remove(&p) {
                            // The next owner's init_transactions aborts anything open.
                            if task.in_txn {
                                let _ = task.producer.abort_transaction(TXN_TIMEOUT);
                            }
                            tracing::info!(partition = p, "partition revoked");
                        }
                    }
                }
                RebalanceEvent::Assigned(partitions) => {
                    self.assigned = true;
                    for p in &partitions {
                        self.fenced.remove(p);
                    }
                    self.assign_all(&partitions)?;
                    for p in partitions {
                        self.resume(p);
                        let offset =
                            Offset::Offset(self.tasks.get(&p).map_or(0, |t| t.next_offset));
                        self.seek(p, offset);
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Takes partition `p`: claim an epoch, fence older owners, restore state,
    /// set up replay. While the broker cannot be reached (a restart, a network
    /// cut) it waits and tries again, until shutdown.
    fn assign(&mut self, p: i32) -> Result<(), RollupError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let error = match self.try_assign(p) {
                Ok(()) => return Ok(()),
                Err(e @ (RollupError::Stopped { .. } | RollupError::Fenced { .. })) => {
                    return Err(e)
                }
                Err(e) if e.is_terminal() => return Err(e),
                Err(e) => e,
            };
            if self.shutdown.is_cancelled() {
                return Err(RollupError::Stopped { partition: p });
            }
            tracing::warn!(partition = p, %error, ?backoff, "cannot take the partition yet; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Takes `partitions` together: their epochs claimed one after the
    /// other (etcd answers in milliseconds), then their producers made side
    /// by side (each `init_transactions` is a broker round trip or more:
    /// ~0.6 s per partition on the 2-core benchmark machine, which a stage
    /// taking four partitions one by one spent in a row), then each one's
    /// state restored. A partition whose producer or state could not be had
    /// is taken again alone, with [`Self::assign`]'s retries.
    fn assign_all(&mut self, partitions: &[i32]) -> Result<(), RollupError> {
        let mut claimed = Vec::with_capacity(partitions.len());
        for &p in partitions {
            claimed.push((p, self.claim_epoch(p)?));
        }
        let (config, group) = (&self.config, &self.group);
        let made: Vec<(i32, Epoch, Result<TxnProducer, RollupError>)> = std::thread::scope(|s| {
            let making: Vec<_> = claimed
                .iter()
                .map(|&(p, epoch)| {
                    let txn_id = format!("{group}.p{p}");
                    (
                        p,
                        epoch,
                        s.spawn(move || partition_producer(config, &txn_id)),
                    )
                })
                .collect();
            making
                .into_iter()
                .map(|(p, epoch, thread)| {
                    let made = thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (p, epoch, made)
                })
                .collect()
        });
        for (p, epoch, made) in made {
            let taken = made.and_then(|producer| self.assign_with(p, producer, epoch));
            match taken {
                Ok(()) => {}
                Err(e) if e.is_terminal() => return Err(e),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot take the partition yet; retrying");
                    self.assign(p)?;
                }
            }
        }
        Ok(())
    }

    fn try_assign(&mut self, p: i32) -> Result<(), RollupError> {
        let epoch = self.claim_epoch(p)?;
        let producer = self.new_producer(p)?;
        self.assign_with(p, producer, epoch)
    }

    /// Claims a fencing epoch for partition `p` (waiting while etcd is down);
    /// [`Epoch::NONE`] with `etcd.epochs` off.
    fn claim_epoch(&self, p: i32) -> Result<Epoch, RollupError> {
        let Some(source) = &self.epochs else {
            return Ok(Epoch::NONE);
        };
        let scope = self.epoch_scope(p);
        source
            .runtime
            .block_on(source.claimer.claim_waiting(&scope, &source.shutdown))
            .ok_or(RollupError::Stopped { partition: p })
    }

    /// The etcd scope of partition `p`'s epoch.
    fn epoch_scope(&self, p: i32) -> String {
        format!("rollup/{}/p{p}", self.group)
    }

    /// Drops the partitions whose epoch a newer owner has claimed: they write
    /// nothing more, even if their input stays quiet and no commit would
    /// have found the producer fenced. Whether any was dropped.
    fn drop_superseded(&mut self) -> Result<bool, RollupError> {
        let found: Vec<(i32, Epoch)> = match &self.epochs {
            Some(source) => match source.superseded.lock() {
                Ok(mut found) => found.drain(..).collect(),
                Err(_) => Vec::new(),
            },
            None => return Ok(false),
        };
        let mut dropped = false;
        for (p, epoch) in found {
            if self.tasks.get(&p).is_none_or(|t| t.epoch != epoch) {
                continue; // already gone, or taken again since
            }
            if let Some(task) = self.tasks.remove(&p) {
                if task.in_txn {
                    let _ = task.producer.abort_transaction(TXN_TIMEOUT);
                }
            }
            tracing::error!(partition = p, %epoch, "epoch superseded in etcd: a newer instance owns this partition; dropping it");
            self.metrics.fenced.inc();
            self.fenced.insert(p);
            dropped = true;
            if matches!(self.options.assignment, Assignment::Static(_)) {
                self.report_partitions();
                return Err(RollupError::Fenced {
                    partition: p,
                    interval: self.options.interval,
                });
            }
            self.pause(p);
        }
        Ok(dropped)
    }

    /// Stops fetching partition `p` (group mode, after it was dropped: the
    /// group gives it to its new owner at the next rebalance).
    fn pause(&self, p: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.input, p);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(partition = p, error = %e, "cannot pause the dropped partition");
        }
    }

    /// Fetches partition `p` again (assigned anew after it was dropped).
    fn resume(&self, p: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.input, p);
        let _ = self.consumer.resume(&tpl);
    }

    /// Takes partition `p` with `producer` (fresh, or one whose transaction was
    /// just aborted) under `epoch`: restore state, set up the replay.
    fn assign_with(
        &mut self,
        p: i32,
        producer: TxnProducer,
        epoch: Epoch,
    ) -> Result<(), RollupError> {
        let committed = self.committed_offset(p)?;
        let mut level = make_level(&self.config, self.options.interval)?;
        let restored = restore_state(&self.config, &self.changelog, p, committed, level.as_mut())?;
        let start = restored.replay_from.min(committed);
        let superseded = match &self.epochs {
            Some(source) if epoch.is_some() => Some(source.watch(self.epoch_scope(p), p, epoch)),
            _ => None,
        };
        tracing::info!(
            partition = p,
            committed,
            replay_from = start,
            %epoch,
            "partition assigned; state restored"
        );
        self.tasks.insert(
            p,
            PartitionTask {
                partition: p,
                level,
                producer,
                epoch,
                encoder: Encoder::default(),
                next_offset: start,
                replay_until: committed,
                in_txn: false,
                txn_started: Instant::now(),
                txn_records: 0,
                txn_window_ends: Vec::new(),
                commits: 0,
                touched: HashSet::default(),
                restored_through: restored.through,
                forwarded: HashMap::default(),
                _superseded: superseded,
                input_epochs: restored.epochs,
            },
        );
        Ok(())
    }

    /// Static mode: (re)assigns the consumer to every task's next offset.
    fn reassign_consumer(&self) -> Result<(), RollupError> {
        let mut tpl = TopicPartitionList::new();
        for task in self.tasks.values() {
            tpl.add_partition_offset(
                &self.input,
                task.partition,
                Offset::Offset(task.next_offset),
            )
            .map_err(KafkaError::client("building assignment"))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(KafkaError::client("assign"))?;
        Ok(())
    }

    fn seek(&self, p: i32, offset: Offset) {
        if let Err(e) = self
            .consumer
            .seek(&self.input, p, offset, Duration::from_secs(10))
        {
            tracing::warn!(partition = p, error = %e, "seek failed; reassigning");
            if matches!(self.options.assignment, Assignment::Static(_)) {
                let _ = self.reassign_consumer();
            }
        }
    }

    fn new_producer(&self, p: i32) -> Result<TxnProducer, RollupError> {
        partition_producer(&self.config, &format!("{}.p{p}", self.group))
    }

    fn committed_offset(&self, p: i32) -> Result<i64, RollupError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.input, p);
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(KafkaError::client("reading committed offsets"))?;
        Ok(
            match committed.find_partition(&self.input, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) -> Result<(), RollupError> {
        let p = message.partition();
        let offset = message.offset();
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        if offset < task.next_offset {
            return Ok(()); // fetched before a rewind
        }
        let replaying = offset < task.replay_until;
        let key = message.key().map(String::from_utf8_lossy);
        if replaying {
            if let Some(key) = &key {
                if task
                    .restored_through
                    .get(key.as_ref())
                    .is_some_and(|&t| offset < t)
                {
                    // This symbol's snapshot already includes the record.
                    task.next_offset = offset + 1;
                    return Ok(());
                }
            }
        } else if !task.restored_through.is_empty() {
            task.restored_through.clear();
        }
        let envelope = Envelope::of(message);
        if let (Some(key), Ok(epoch)) = (&key, envelope.epoch()) {
            let newest = task.input_epochs.get(key.as_ref()).copied();
            if epoch.is_some() && newest.is_some_and(|n| epoch < n) {
                // A late write of a fenced owner (a paused old primary):
                // its successor wrote this key under a newer epoch already.
                task.next_offset = offset + 1;
                if !replaying {
                    self.metrics.late_epoch.inc();
                    tracing::debug!(partition = p, offset, %key, %epoch, "record of a fenced writer dropped");
                }
                return Ok(());
            }
            if newest.is_none_or(|n| epoch > n) && epoch.is_some() {
                task.input_epochs.insert(key.to_string(), epoch);
            }
        }
        self.out.clear();
        let outcome = task.level.apply(&envelope, &mut self.out);
        task.next_offset = offset + 1;
        if let Some(key) = key {
            if !task.touched.contains(key.as_ref()) {
                task.touched.insert(key.into_owned());
            }
        }
        if replaying {
            self.metrics.replayed.inc();
            return Ok(());
        }
        if !task.in_txn {
            if self.config.rollup.guarantee == Guarantee::ExactlyOnce {
                if let Err(e) = task.producer.begin_transaction() {
                    return self.recover(p, e, "begin_transaction");
                }
            }
            task.in_txn = true;
            task.txn_started = Instant::now();
            task.txn_records = 0;
            task.txn_window_ends.clear();
        }
        task.txn_records += 1;
        self.metrics.records.inc();
        let mut send_error = None;
        let mut forward = None;
        match outcome {
            Ok(outcome) => {
                match outcome {
                    ApplyOutcome::Duplicate => self.metrics.duplicates.inc(),
                    ApplyOutcome::Corrected => self.metrics.late_corrected.inc(),
                    ApplyOutcome::TooLate => {
                        self.metrics.too_late.inc();
                        send_error = send_dead_letter(
                            &task.producer,
                            &self.dead_letter,
                            message,
                            "too late: behind the retention horizon",
                        )
                        .err();
                    }
                    ApplyOutcome::Progress(watermark) => {
                        // The next level only closes a window when the watermark
                        // enters a new one of its windows; the last level has no next.
                        if let Some(parent) = self.options.interval.parent() {
                            let window = parent.window_start(watermark.time);
                            let key = feed_key(watermark.exchange, &watermark.symbol);
                            if task.forwarded.get(&key).is_none_or(|&w| window > w) {
                                task.forwarded.insert(key, window);
                                forward = Some(watermark);
                            }
                        }
                    }
                    ApplyOutcome::Accepted | ApplyOutcome::Gap => {}
                }
                for candle in &self.out {
                    if send_error.is_some() {
                        break;
                    }
                    self.metrics.candles.inc();
                    if candle.revision > 0 {
                        self.metrics.revisions.inc();
                    }
                    send_error = task.send(&self.output, Body::Candle(candle))?.err();
                    task.txn_window_ends.push(candle.close_time + 1);
                }
                // After the candles it closed, so the next level sees them first.
                if let (None, Some(watermark)) = (&send_error, forward) {
                    send_error = task.send(&self.output, Body::Watermark(&watermark))?.err();
                }
            }
            Err(reason) => {
                self.metrics.bad_records.inc();
                tracing::warn!(partition = p, offset, %reason, "bad input record; sent to dead letters");
                send_error = send_dead_letter(
                    &task.producer,
                    &self.dead_letter,
                    message,
                    &reason.to_string(),
                )
                .err();
            }
        }
        if let Some(e) = send_error {
            return self.recover(p, e, "send");
        }
        Ok(())
    }

    fn commit(&mut self, p: i32) -> Result<(), RollupError> {
        let snapshot_every = self.options.snapshot_every.max(1);
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        if !task.in_txn {
            return Ok(());
        }
        let started = Instant::now();
        task.commits += 1;
        let snapshot = task.commits % snapshot_every == 0;
        let metadata = match self.config.rollup.guarantee {
            Guarantee::ExactlyOnce => Some(
                self.consumer
                    .group_metadata()
                    .ok_or(RollupError::NoGroupMetadata)?,
            ),
            Guarantee::AtLeastOnce => None,
        };
        let mut states = Vec::new();
        if snapshot {
            for key in std::mem::take(&mut task.touched) {
                if let Some(state) = task.level.snapshot(&key) {
                    let record = StateRecord {
                        through: task.next_offset,
                        state,
                        epoch: task.input_epochs.get(&key).map_or(0, |e| e.0),
                    };
                    states.push((key, encode_state(&self.changelog, &record)?));
                }
            }
            // Every symbol not written above is unchanged since its last snapshot.
            let marker = StateRecord {
                through: task.next_offset,
                state: serde_json::Value::Null,
                epoch: 0,
            };
            states.push((
                CHECKPOINT_KEY.to_string(),
                encode_state(&self.changelog, &marker)?,
            ));
        }
        let result = (|| -> Result<(), RdKafkaError> {
            for (key, state) in &states {
                send_waiting(
                    &task.producer,
                    BaseRecord::<str, [u8]>::to(&self.changelog)
                        .partition(p)
                        .key(key)
                        .payload(state),
                )?;
            }
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(&self.input, p, Offset::Offset(task.next_offset))?;
            match &metadata {
                Some(metadata) => {
                    task.producer
                        .send_offsets_to_transaction(&offsets, metadata, TXN_TIMEOUT)?;
                    task.producer.commit_transaction(TXN_TIMEOUT)?;
                }
                None => {
                    task.producer.flush(TXN_TIMEOUT)?;
                    self.consumer
                        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                task.in_txn = false;
                task.replay_until = task.replay_until.max(task.next_offset);
                self.metrics.commits.inc();
                self.metrics.record_commit(started.elapsed());
                for end in task.txn_window_ends.drain(..) {
                    self.metrics
                        .committed_latency
                        .observe(crate::telemetry::seconds_since(end));
                }
                Ok(())
            }
            Err(e) => self.recover(p, e, "commit"),
        }
    }

    /// Handles a transaction error on partition `p`.
    fn recover(&mut self, p: i32, error: RdKafkaError, during: &str) -> Result<(), RollupError> {
        self.metrics.aborts.inc();
        let Some(task) = self.tasks.remove(&p) else {
            return Ok(());
        };
        let abortable = matches!(&error, RdKafkaError::Transaction(e) if e.txn_requires_abort());
        let mut fenced = is_fenced(&error, &task.producer);
        let mut reusable = false;
        if abortable && !fenced {
            // Abort on the same producer: a zombie that was fenced learns it
            // here, and a live owner keeps its epoch instead of fencing others.
            match task.producer.abort_transaction(TXN_TIMEOUT) {
                Ok(()) => reusable = true,
                Err(e) => fenced = is_fenced(&e, &task.producer),
            }
        }
        if fenced {
            tracing::error!(partition = p, %error, during, "producer fenced: a newer instance owns this partition");
            self.metrics.fenced.inc();
            self.fenced.insert(p);
            self.report_partitions();
            if matches!(self.options.assignment, Assignment::Static(_)) {
                // A fixed assignment that lost a partition cannot serve its
                // configuration: stop and let the supervisor decide.
                return Err(RollupError::Fenced {
                    partition: p,
                    interval: self.options.interval,
                });
            }
            return Ok(());
        }
        // Rewind: state from the changelog, input from its snapshot; the same
        // producer after an abort, a new one after a fatal error.
        if reusable {
            tracing::warn!(partition = p, %error, during, "transaction aborted; rewinding");
            let epoch = task.epoch;
            if let Err(e) = self.assign_with(p, task.producer, epoch) {
                if e.is_terminal() {
                    return Err(e);
                }
                tracing::warn!(partition = p, error = %e, "rewind failed; rebuilding the producer");
                self.assign(p)?;
            }
        } else {
            tracing::warn!(partition = p, %error, during, "rebuilding producer and rewinding");
            drop(task);
            self.assign(p)?;
        }
        let offset = self.tasks.get(&p).map_or(0, |t| t.next_offset);
        self.seek(p, Offset::Offset(offset));
        Ok(())
    }
}

/// The client settings of a stage's input consumer in consumer group
/// `group` (also the floor of `benchmarks/rollup.rs`): manual offsets, the
/// isolation level the guarantee needs, no fetch back-off.
///
/// # Errors
/// A conflicting `[kafka.options]` entry.
pub fn input_consumer_config(
    config: &Config,
    group: &str,
) -> Result<rdkafka::ClientConfig, KafkaError> {
    let session = config.rollup.session_timeout_ms.to_string();
    let isolation = match config.rollup.guarantee {
        Guarantee::ExactlyOnce => "read_committed",
        Guarantee::AtLeastOnce => "read_uncommitted",
    };
    client_config(
        &config.kafka,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", isolation),
            ("session.timeout.ms", &session),
            ("fetch.queue.backoff.ms", "1"),
            // Input topics may be created after the consumer starts.
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )
}

/// The producer of one input partition (also the floor's): idempotent,
/// batched, and for exactly-once transactional with `txn_id`, its
/// transactions initialised (which fences an older producer of that id).
///
/// # Errors
/// A conflicting option, or `init_transactions` failing.
pub fn partition_producer(config: &Config, txn_id: &str) -> Result<TxnProducer, RollupError> {
    let exactly_once = config.rollup.guarantee == Guarantee::ExactlyOnce;
    let queue = PRODUCER_QUEUE_MESSAGES.to_string();
    let mut owned = vec![
        ("enable.idempotence", "true"),
        ("queue.buffering.max.messages", queue.as_str()),
        ("linger.ms", "5"),
    ];
    if exactly_once {
        owned.push(("transactional.id", txn_id));
    }
    let producer: TxnProducer = client_config(&config.kafka, &owned)?
        .create()
        .map_err(KafkaError::client("creating producer"))?;
    if exactly_once {
        producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(KafkaError::client(format!("init_transactions {txn_id}")))?;
    }
    Ok(producer)
}

/// Whether `error` (or the producer's fatal-error slot, where librdkafka puts
/// the reason behind a generic failure) says a newer producer with the same
/// transactional id took over.
fn is_fenced(error: &RdKafkaError, producer: &TxnProducer) -> bool {
    let fenced_code = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    };
    matches!(error, RdKafkaError::Transaction(e) if fenced_code(e.code()))
        || producer
            .client()
            .fatal_error()
            .is_some_and(|(code, _)| fenced_code(code))
}

impl PartitionTask {
    /// Encodes `body` (key, headers, payload: `wire`) and sends it to
    /// `topic`, on this task's partition, under its epoch. The outer error
    /// is a record that does not serialise (a bug: the stage stops); the
    /// inner one is the producer's, which the caller recovers from.
    fn send(
        &mut self,
        topic: &str,
        body: Body<'_>,
    ) -> Result<Result<(), RdKafkaError>, RollupError> {
        let encoded =
            self.encoder
                .encode(body, self.epoch)
                .map_err(|source| RollupError::Encode {
                    topic: topic.to_string(),
                    source,
                })?;
        Ok(send_waiting(
            &self.producer,
            encoded.record(topic).partition(self.partition),
        ))
    }
}

/// Sends `message` to the dead-letter topic, unchanged, with `reason`.
fn send_dead_letter(
    producer: &TxnProducer,
    topic: &str,
    message: &BorrowedMessage<'_>,
    reason: &str,
) -> Result<(), RdKafkaError> {
    let source = record_source(message.topic(), message.partition(), message.offset());
    let letter = DeadLetter {
        payload: message.payload(),
        key: message.key(),
        reason,
        source: &source,
    };
    send_waiting(producer, letter.record(topic))
}

/// Key of the checkpoint marker a snapshot ends with.
const CHECKPOINT_KEY: &str = "__checkpoint__";

/// The changelog payload of `record`.
fn encode_state(changelog: &str, record: &StateRecord) -> Result<Vec<u8>, RollupError> {
    serde_json::to_vec(record).map_err(|source| RollupError::Encode {
        topic: changelog.to_string(),
        source: WireError::Encode {
            what: "state record",
            source,
        },
    })
}

/// What [`restore_state`] found.
struct Restored {
    /// Where the silent replay starts: the newest checkpoint within the
    /// committed input.
    replay_from: i64,
    /// Per symbol, the input offset its restored state covers.
    through: HashMap<String, i64, FastHash>,
    /// Per symbol, the highest writer epoch its restored state had seen.
    epochs: HashMap<String, Epoch, FastHash>,
}

/// Reads partition `p` of the changelog and restores into `level`, per symbol,
/// the snapshot covering the most input without passing the committed offset.
///
/// Any snapshot with `through <= committed` is a true state of that symbol (the
/// engine is deterministic), even one from an aborted transaction; the newest
/// checkpoint marker within `committed` says every symbol's newest snapshot is
/// current as of the marker, so the replay starts there.
fn restore_state(
    config: &Config,
    changelog: &str,
    p: i32,
    committed: i64,
    level: &mut dyn Level,
) -> Result<Restored, RollupError> {
    let mut restored = Restored {
        replay_from: 0,
        through: HashMap::default(),
        epochs: HashMap::default(),
    };
    let consumer = end_reader(&config.kafka, "tickfetch.restore", "read_committed")?;
    // Nothing committed in the changelog yet (a first start): nothing to read.
    let (low, high) = consumer
        .fetch_watermarks(changelog, p, Duration::from_secs(10))
        .map_err(KafkaError::client("changelog watermarks"))?;
    if high <= low {
        return Ok(restored);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, p, Offset::Beginning)
        .map_err(KafkaError::client("changelog assignment"))?;
    consumer
        .assign(&tpl)
        .map_err(KafkaError::client("changelog assign"))?;
    let mut best: HashMap<String, StateRecord> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut position = 0;
    loop {
        if Instant::now() > deadline {
            return Err(RollupError::RestoreIncomplete {
                changelog: changelog.to_string(),
                partition: p,
                position,
                high,
            });
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(RdKafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(KafkaError::client("reading changelog")(e).into()),
            Some(Ok(message)) => message,
        };
        position = message.offset() + 1;
        let (Some(key), Some(payload)) = (message.key(), message.payload()) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<StateRecord>(payload) else {
            tracing::warn!(
                partition = p,
                offset = message.offset(),
                "unreadable changelog record skipped"
            );
            continue;
        };
        if record.through > committed {
            continue;
        }
        if key == CHECKPOINT_KEY.as_bytes() {
            restored.replay_from = restored.replay_from.max(record.through);
            continue;
        }
        let key = String::from_utf8_lossy(key).into_owned();
        if best.get(&key).is_none_or(|b| b.through <= record.through) {
            best.insert(key, record);
        }
    }
    for (key, record) in best {
        level
            .restore(&key, record.state)
            .map_err(|source| RollupError::RestoreState {
                changelog: changelog.to_string(),
                partition: p,
                key: key.clone(),
                source,
            })?;
        if record.epoch > 0 {
            restored.epochs.insert(key.clone(), Epoch(record.epoch));
        }
        restored.through.insert(key, record.through);
    }
    Ok(restored)
}

//! The ingest worker: runs feeds (an exchange feed and its symbols), each as
//! a feed task over its connection shards, and publishes through one output
//! thread.
//!
//! ```text
//! Worker ─ start_feed(FeedConfig, Role) ─▶ FeedHandle (promote / fence / stop / stats)
//!   feed task ──┬─ run_shard × ⌈symbols / per-connection limit⌉ ──ConnectionEvent (bounded)──┐
//!               │◀──────────────────────────────────────────────────────────────────────────┘
//!               ├─ SymbolSequencer per symbol: dedup, order, gaps ─▶ REST backfill (≤ 4 at once)
//!               └─ Output (bounded) ─▶ publisher thread ─▶ trades topic / dead-letter topic
//! ```
//!
//! # Roles
//! - [`Role::Primary`] publishes trades, watermarks, gap markers and dead letters.
//! - [`Role::Replica`] is connected and subscribed, de-duplicates, and keeps
//!   the last `replica_buffer_trades` trades of each symbol, publishing
//!   nothing. [`FeedHandle::promote`] makes it primary from a [`ResumePoint`]
//!   per symbol (the last trade its predecessor published): the buffer is
//!   replayed through fresh sequencers, so it publishes from just after that
//!   trade; a hole between the two (a buffer that did not reach back far
//!   enough) is a gap like any other and is backfilled.
//! - [`Role::Fenced`]: a newer primary exists; the feed publishes nothing
//!   more, drops its connections and ends.
//!
//! # Epochs
//! A feed that starts as primary, or is promoted, first claims a fencing
//! epoch from etcd (`feeds/{feed}`, see `coord::epoch`; unless `etcd.epochs`
//! is off) and publishes nothing before it has one; every record it publishes
//! carries it. An old primary that keeps publishing after a newer one took
//! over (paused, partitioned from etcd, not yet told) writes under the lower
//! epoch, and readers refuse those late records.
//!
//! # Watermarks
//! Every `watermark_interval_ms` a primary publishes, per symbol, a watermark
//! `w` with the promise: **no trade of this symbol with `exchange_time < w`
//! will follow from this worker**, computed as
//!
//! ```text
//! w = max(previous w, exchange_time of the last published trade,
//!         now − allowed_lateness      if the symbol is caught up)
//! ```
//!
//! A symbol is caught up when it is live on a connection, no trade-id gap is
//! pending, and, after a reconnect, a trade, heartbeat or REST resync has
//! shown that nothing was missed meanwhile. Trades reach the topic in exchange
//! order per symbol, so the last published trade's time bounds everything
//! after it; the wall-clock term lets quiet symbols close their windows, and
//! `allowed_lateness_ms` is the bound it assumes on exchange → worker latency
//! and clock skew. What the worker cannot know (a trade lost in flight and
//! discovered only with the next trade) may still arrive behind a watermark:
//! it is published anyway, and the rollup corrects the candle (revision + 1).
//! Watermarks never go backwards and stop while a symbol is disconnected or
//! has a gap pending.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backfill::{self, BackfillError};
use super::connection::{
    run_shard, shard_symbols, ConnectionEvent, ConnectionId, ConnectionRules, ShardSymbols,
};
use super::exchanges::{ids_are_sequential, Feed};
use super::metrics::{FeedEvents, FeedStatsSnapshot};
use super::output::{Output, Publishers, OUTPUT_QUEUE};
pub use super::sequencer::ResumePoint;
use super::sequencer::{SequencerEvent, SymbolSequencer};
use crate::config::{Config, FeedConfig, IngestConfig};
use crate::coord::epoch::{process_owner, Epoch, EpochClaimer};
use crate::kafka::KafkaError;
use crate::model::GapMarker;
use crate::model::{Exchange, Millis, Trade};
use crate::shutdown::{CancellationToken as Shutdown, DRAIN_DEADLINE};

/// Commands queued to one feed task.
pub const FEED_COMMANDS: usize = 16;
/// REST backfills one feed runs at once.
pub const MAX_CONCURRENT_BACKFILLS: usize = 4;
/// How often pending gaps and resyncs are looked at.
const SCHEDULE_TICK: Duration = Duration::from_millis(100);

/// Errors of the ingest worker.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("feed {feed}: {problem}")]
    Feed { feed: String, problem: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the publisher thread stopped")]
    PublisherGone,
    #[error("feed {0} is no longer running")]
    FeedGone(String),
    #[error("a worker task failed: {0}")]
    Task(String),
    #[error("stopped before etcd answered: {0}")]
    Stopped(String),
}

impl IngestError {
    /// Whether restarting with the same configuration cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            IngestError::Feed { .. } => true,
            IngestError::Kafka(e) => e.is_terminal(),
            IngestError::PublisherGone
            | IngestError::FeedGone(_)
            | IngestError::Task(_)
            | IngestError::Stopped(_) => false,
        }
    }
}

/// What a feed does with the trades it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Fenced,
}

/// Timing knobs of a feed task, from `[ingest]`.
#[derive(Debug, Clone)]
struct Tuning {
    watermark_interval: Duration,
    allowed_lateness: Millis,
    gap_grace: Duration,
    rest_timeout: Duration,
    replica_buffer: usize,
}

impl Tuning {
    fn from_config(config: &IngestConfig) -> Self {
        Self {
            watermark_interval: Duration::from_millis(config.watermark_interval_ms.max(10)),
            allowed_lateness: Millis::try_from(config.allowed_lateness_ms).unwrap_or(Millis::MAX),
            gap_grace: Duration::from_millis(config.gap_grace_ms),
            rest_timeout: Duration::from_millis(config.rest_timeout_ms.max(1)),
            replica_buffer: config.replica_buffer_trades.max(1),
        }
    }
}

/// A feed, resolved and checked.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    /// `binance:aggTrade`: log field, metric label, dead-letter source.
    pub name: String,
    pub feed: Feed,
    pub symbols: Vec<String>,
    pub rest_url: String,
    pub rules: ConnectionRules,
}

impl FeedSpec {
    /// Resolves one `[[ingest.feeds]]` entry.
    ///
    /// # Errors
    /// [`IngestError::Feed`] for an unknown feed name or no symbols.
    pub fn from_config(config: &FeedConfig, ingest: &IngestConfig) -> Result<Self, IngestError> {
        let feed: Feed = match &config.feed {
            Some(name) => format!("{}:{name}", config.exchange).parse(),
            None => config.exchange.as_str().parse(),
        }
        .map_err(|problem| IngestError::Feed {
            feed: config.exchange.to_string(),
            problem,
        })?;
        let symbols = normalised_symbols(&config.symbols);
        if symbols.is_empty() {
            return Err(IngestError::Feed {
                feed: feed.to_string(),
                problem: "no symbols".into(),
            });
        }
        Ok(Self {
            name: feed.to_string(),
            feed,
            symbols,
            rest_url: config
                .rest_url
                .clone()
                .unwrap_or_else(|| feed.rest_base_url().to_string()),
            rules: ConnectionRules::resolve(feed, config, ingest),
        })
    }
}

enum FeedCommand {
    Promote {
        resume: HashMap<String, ResumePoint>,
        reply: oneshot::Sender<()>,
    },
    Fence {
        reply: oneshot::Sender<()>,
    },
    Positions {
        reply: oneshot::Sender<HashMap<String, ResumePoint>>,
    },
}

/// Control of one running feed.
#[derive(Clone)]
pub struct FeedHandle {
    name: String,
    commands: mpsc::Sender<FeedCommand>,
    events: FeedEvents,
    cancel: CancellationToken,
}

impl FeedHandle {
    /// The feed's name (`binance:aggTrade`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feed's counters.
    pub fn stats(&self) -> FeedStatsSnapshot {
        self.events.stats.snapshot()
    }

    /// Makes a replica the primary, publishing from just after `resume`
    /// (symbol → the last trade the previous primary published; a symbol
    /// without an entry publishes its whole buffer).
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has ended.
    pub async fn promote(&self, resume: HashMap<String, ResumePoint>) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Promote { resume, reply }).await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// Fences the feed: it publishes nothing more, drops its connections and
    /// ends (a newer primary owns it).
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has already ended.
    pub async fn fence(&self) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Fence { reply }).await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// The last trade released per symbol (for a primary: published), with
    /// recent ids: what a successor resumes from.
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has ended.
    pub async fn positions(&self) -> Result<HashMap<String, ResumePoint>, IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Positions { reply }).await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// Stops the feed: connections close; what was already handed to the
    /// publisher is still published. Trades held behind an open gap are not:
    /// a successor resumes after the last published trade and fills the gap.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    async fn command(&self, command: FeedCommand) -> Result<(), IngestError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }
}

/// A running worker: the publisher thread and the feeds started on it.
pub struct Worker {
    config: Arc<Config>,
    tuning: Tuning,
    output: mpsc::Sender<Output>,
    publisher: tokio::task::JoinHandle<Result<(), KafkaError>>,
    feeds: JoinSet<(String, Result<(), IngestError>)>,
    cancel: CancellationToken,
    /// Where primaries claim their epochs (`None` with `etcd.epochs` off).
    epochs: Option<EpochClaimer>,
}

impl Worker {
    /// Connects the producers (and etcd, for epochs) and starts the publisher
    /// thread; no feed runs yet.
    ///
    /// # Errors
    /// Kafka unreachable, or a conflicting Kafka option; shutdown while
    /// waiting for etcd.
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Worker, IngestError> {
        let epochs = if config.etcd.epochs {
            let claimer = EpochClaimer::connect_waiting(&config.etcd, &process_owner(), &shutdown)
                .await
                .ok_or_else(|| IngestError::Stopped("connecting for fencing epochs".into()))?;
            Some(claimer)
        } else {
            None
        };
        let publishers = Publishers::connect(&config).await?;
        let (output, queue) = mpsc::channel(OUTPUT_QUEUE);
        let publisher = tokio::task::spawn_blocking(move || publishers.run(queue));
        Ok(Worker {
            tuning: Tuning::from_config(&config.ingest),
            config: Arc::new(config),
            output,
            publisher,
            feeds: JoinSet::new(),
            cancel: shutdown.child_token(),
            epochs,
        })
    }

    /// Starts one feed in `role`.
    ///
    /// # Errors
    /// [`IngestError::Feed`] when the feed config does not resolve.
    pub fn start_feed(
        &mut self,
        config: &FeedConfig,
        role: Role,
    ) -> Result<FeedHandle, IngestError> {
        let spec = FeedSpec::from_config(config, &self.config.ingest)?;
        let (commands, command_queue) = mpsc::channel(FEED_COMMANDS);
        let events = FeedEvents::new(spec.name.clone());
        let cancel = self.cancel.child_token();
        let handle = FeedHandle {
            name: spec.name.clone(),
            commands,
            events: events.clone(),
            cancel: cancel.clone(),
        };
        let task = FeedTask::new(
            spec,
            self.tuning.clone(),
            role,
            self.output.clone(),
            events,
            cancel,
            self.epochs.clone(),
        );
        let name = handle.name.clone();
        let span = tracing::info_span!("feed", feed = %name, role = ?role);
        self.feeds
            .spawn(async move { (name, task.run(command_queue).await) }.instrument(span));
        Ok(handle)
    }

    /// Waits until everything handed to the publisher so far is acknowledged.
    ///
    /// # Errors
    /// A delivery failure, or the publisher is gone.
    pub async fn flush(&self) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.output
            .send(Output::Flush(reply))
            .await
            .map_err(|_| IngestError::PublisherGone)?;
        done.await.map_err(|_| IngestError::PublisherGone)??;
        Ok(())
    }

    /// Runs until shutdown (or until every feed has ended), then drains:
    /// feeds stop, the publisher flushes.
    ///
    /// # Errors
    /// A feed or the publisher failed.
    pub async fn run(mut self) -> Result<(), IngestError> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                joined = self.feeds.join_next() => match joined {
                    None => break,
                    Some(joined) => {
                        if let Err(e) = reap(joined) {
                            tracing::error!(error = %e, "feed failed");
                            first_error.get_or_insert(e);
                        }
                    }
                },
            }
        }
        self.shutdown_inner(first_error).await
    }

    /// Stops every feed and the publisher, flushing what was queued.
    ///
    /// # Errors
    /// A feed or the publisher failed.
    pub async fn shutdown(self) -> Result<(), IngestError> {
        self.shutdown_inner(None).await
    }

    async fn shutdown_inner(
        mut self,
        mut first_error: Option<IngestError>,
    ) -> Result<(), IngestError> {
        self.cancel.cancel();
        let drain = async {
            while let Some(joined) = self.feeds.join_next().await {
                if let Err(e) = reap(joined) {
                    first_error.get_or_insert(e);
                }
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!("feeds did not stop within the drain deadline; aborting them");
            self.feeds.shutdown().await;
        }
        drop(self.output);
        match self.publisher.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => {
                first_error.get_or_insert(IngestError::Task(e.to_string()));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn reap(
    joined: Result<(String, Result<(), IngestError>), tokio::task::JoinError>,
) -> Result<(), IngestError> {
    match joined {
        Ok((_, result)) => result,
        Err(e) => Err(IngestError::Task(e.to_string())),
    }
}

/// Runs the feeds of `[ingest] feeds` as primaries until `shutdown`.
///
/// # Errors
/// A feed that does not resolve, Kafka unreachable, or the publisher failed.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), IngestError> {
    let feeds = config.ingest.feeds.clone();
    if feeds.is_empty() {
        tracing::warn!("no feeds configured ([[ingest.feeds]]); waiting for shutdown");
    }
    one_publisher_per_symbol(&feeds)?;
    let mut worker = Worker::start(config, shutdown).await?;
    for feed in &feeds {
        let handle = worker.start_feed(feed, Role::Primary)?;
        tracing::info!(
            feed = handle.name(),
            symbols = feed.symbols.len(),
            "feed started"
        );
    }
    if feeds.is_empty() {
        worker.cancel.cancelled().await;
    }
    worker.run().await
}

/// A feed's symbols as the exchanges spell them: trimmed, upper case, each
/// once, in the configured order, empty ones dropped.
fn normalised_symbols(configured: &[String]) -> Vec<String> {
    let mut symbols: Vec<String> = Vec::with_capacity(configured.len());
    for symbol in configured {
        let symbol = symbol.trim().to_ascii_uppercase();
        if !symbol.is_empty() && !symbols.contains(&symbol) {
            symbols.push(symbol);
        }
    }
    symbols
}

/// Checks that no symbol of an exchange is in two feeds: its trades would be
/// published twice under two epochs (and two id spaces, for Binance's
/// `trade` and `aggTrade`), and readers would fence one of them.
///
/// # Errors
/// [`IngestError::Feed`] naming the symbol and both feeds.
pub fn one_publisher_per_symbol(feeds: &[FeedConfig]) -> Result<(), IngestError> {
    let mut owner: HashMap<(Exchange, String), String> = HashMap::new();
    for (index, feed) in feeds.iter().enumerate() {
        let name = format!(
            "ingest.feeds[{index}] ({}:{})",
            feed.exchange,
            feed.feed.as_deref().unwrap_or("default")
        );
        for symbol in normalised_symbols(&feed.symbols) {
            if let Some(first) = owner.get(&(feed.exchange, symbol.clone())) {
                return Err(IngestError::Feed {
                    feed: name,
                    problem: format!(
                        "symbol {symbol} is also in {first}; each symbol of an exchange belongs to one feed"
                    ),
                });
            }
            owner.insert((feed.exchange, symbol), name.clone());
        }
    }
    Ok(())
}

/// A REST request's purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackfillKind {
    /// Fill a trade-id gap.
    Gap,
    /// After a reconnect, look for trades missed while away.
    Resync,
}

/// One symbol inside a feed task.
struct SymbolState {
    seq: SymbolSequencer,
    /// Connections on which the symbol is subscribed now.
    live_on: u32,
    ever_live: bool,
    /// Reconnected and not yet shown to be caught up.
    needs_resync: bool,
    resync_since: Instant,
    resync_attempts: u32,
    resync_in_flight: bool,
    /// Last watermark published.
    watermark: Option<Millis>,
    /// Exchange time of a heartbeat that found us caught up.
    caught_up_at: Option<Millis>,
    last_receive: Option<Millis>,
    /// A replica's recent trades.
    buffer: VecDeque<Trade>,
    rejected: bool,
}

impl SymbolState {
    fn new(exchange: Exchange, role: Role) -> Self {
        Self {
            seq: SymbolSequencer::new(exchange, role != Role::Replica),
            live_on: 0,
            ever_live: false,
            needs_resync: false,
            resync_since: Instant::now(),
            resync_attempts: 0,
            resync_in_flight: false,
            watermark: None,
            caught_up_at: None,
            last_receive: None,
            buffer: VecDeque::new(),
            rejected: false,
        }
    }
}

type BackfillResult = (String, BackfillKind, Result<Vec<Trade>, BackfillError>);

/// One feed: its shards, sequencers and watermarks.
struct FeedTask {
    spec: Arc<FeedSpec>,
    tuning: Tuning,
    role: Role,
    exchange: Exchange,
    sequential: bool,
    symbols: HashMap<String, SymbolState>,
    live: HashMap<ConnectionId, Vec<String>>,
    output: mpsc::Sender<Output>,
    events: FeedEvents,
    cancel: CancellationToken,
    backfills: JoinSet<BackfillResult>,
    scratch: Vec<SequencerEvent>,
    epochs: Option<EpochClaimer>,
    /// The epoch claimed when this feed became primary.
    epoch: Epoch,
}

impl FeedTask {
    fn new(
        spec: FeedSpec,
        tuning: Tuning,
        role: Role,
        output: mpsc::Sender<Output>,
        events: FeedEvents,
        cancel: CancellationToken,
        epochs: Option<EpochClaimer>,
    ) -> Self {
        let exchange = spec.feed.exchange();
        let symbols = spec
            .symbols
            .iter()
            .map(|s| (s.clone(), SymbolState::new(exchange, role)))
            .collect();
        Self {
            spec: Arc::new(spec),
            tuning,
            role,
            exchange,
            sequential: ids_are_sequential(exchange),
            symbols,
            live: HashMap::new(),
            output,
            events,
            cancel,
            backfills: JoinSet::new(),
            scratch: Vec::new(),
            epochs,
            epoch: Epoch::NONE,
        }
    }

    /// Claims the epoch this feed publishes under as primary (waiting while
    /// etcd is down: nothing is published meanwhile). False when cancelled.
    async fn claim_epoch(&mut self) -> bool {
        let Some(claimer) = &self.epochs else {
            return true;
        };
        let scope = format!("feeds/{}", self.spec.name);
        match claimer.claim_waiting(&scope, &self.cancel).await {
            Some(epoch) => {
                self.epoch = epoch;
                true
            }
            None => false,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<FeedCommand>) -> Result<(), IngestError> {
        if self.role == Role::Primary && !self.claim_epoch().await {
            return Ok(());
        }
        let (event_tx, mut event_rx) = mpsc::channel(super::connection::CONNECTION_EVENTS);
        let rules = Arc::new(self.spec.rules.clone());
        let shards_cancel = self.cancel.child_token();
        let mut shards = JoinSet::new();
        for (index, symbols) in shard_symbols(&self.spec.symbols, rules.symbols_per_connection)
            .into_iter()
            .enumerate()
        {
            let shard = Arc::new(Mutex::new(ShardSymbols::new(symbols)));
            let span = tracing::info_span!("shard", feed = %self.spec.name, shard = index);
            shards.spawn(
                run_shard(
                    rules.clone(),
                    index,
                    shard,
                    event_tx.clone(),
                    self.events.clone(),
                    shards_cancel.clone(),
                )
                .instrument(span),
            );
        }
        drop(event_tx);
        tracing::info!(
            symbols = self.spec.symbols.len(),
            shards = shards.len(),
            url = %rules.ws_url,
            "feed running"
        );
        let mut schedule = tokio::time::interval(SCHEDULE_TICK);
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watermarks = tokio::time::interval(self.tuning.watermark_interval);
        watermarks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut commands_open = true;
        let result = loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                command = commands.recv(), if commands_open => match command {
                    Some(FeedCommand::Fence { reply }) => {
                        self.role = Role::Fenced;
                        tracing::warn!("fenced: publishing stops, connections close");
                        let _ = reply.send(());
                        break Ok(());
                    }
                    Some(FeedCommand::Promote { resume, reply }) => {
                        let result = self.promote(resume).await;
                        let _ = reply.send(());
                        if let Err(e) = result { break Err(e); }
                    }
                    Some(FeedCommand::Positions { reply }) => {
                        let _ = reply.send(self.positions());
                    }
                    // Every handle dropped: keep running until cancelled.
                    None => commands_open = false,
                },
                event = event_rx.recv() => match event {
                    Some(event) => {
                        if let Err(e) = self.on_event(event).await { break Err(e); }
                    }
                    None => break Ok(()),
                },
                Some(done) = self.backfills.join_next() => {
                    let result = match done {
                        Ok((symbol, kind, result)) => self.on_backfill(symbol, kind, result).await,
                        Err(e) => Err(IngestError::Task(e.to_string())),
                    };
                    if let Err(e) = result { break Err(e); }
                }
                _ = schedule.tick() => self.schedule_backfills(),
                _ = watermarks.tick() => {
                    if let Err(e) = self.publish_watermarks().await { break Err(e); }
                }
            }
        };
        shards_cancel.cancel();
        self.backfills.shutdown().await;
        // Connections may be blocked sending to us: keep draining while they stop.
        loop {
            tokio::select! {
                joined = shards.join_next() => if joined.is_none() { break },
                _ = event_rx.recv() => {}
            }
        }
        result
    }

    async fn on_event(&mut self, event: ConnectionEvent) -> Result<(), IngestError> {
        let now = Instant::now();
        match event {
            ConnectionEvent::Live { conn, symbols } => {
                for symbol in &symbols {
                    let state = self.state(symbol);
                    state.live_on += 1;
                    state.ever_live = true;
                    // Back after an outage: the resync (if still needed) looks
                    // at REST once the new subscription is in place.
                    state.resync_since = now;
                }
                self.live.insert(conn, symbols);
                self.events.connection_live();
            }
            ConnectionEvent::Ended { conn } => {
                let Some(symbols) = self.live.remove(&conn) else {
                    return Ok(());
                };
                self.events.connection_down();
                let role = self.role;
                for symbol in symbols {
                    let state = self.state(&symbol);
                    state.live_on = state.live_on.saturating_sub(1);
                    if state.live_on == 0 {
                        // No connection carries the symbol: trades made from
                        // now until it is live again may be missed.
                        state.needs_resync = true;
                        state.resync_attempts = 0;
                        if role == Role::Primary {
                            // Untracked ids: hold what the next connection
                            // brings until REST says what was missed.
                            state.seq.begin_resync();
                        }
                    }
                }
            }
            ConnectionEvent::Trades { trades, .. } => {
                for trade in trades {
                    let mut out = std::mem::take(&mut self.scratch);
                    let state = self.state(&trade.symbol);
                    state.last_receive = Some(trade.receive_time);
                    let symbol = trade.symbol.clone();
                    state.seq.offer(trade, now, &mut out);
                    if out.iter().any(|e| {
                        matches!(
                            e,
                            SequencerEvent::Released(_) | SequencerEvent::GapOpened { .. }
                        )
                    }) {
                        state.needs_resync = false;
                    }
                    let result = self.apply(&symbol, &mut out).await;
                    self.scratch = out;
                    result?;
                }
            }
            ConnectionEvent::Heartbeat { heartbeat, .. } => {
                let (Some(symbol), Some(last_id)) = (
                    heartbeat.symbol.as_ref(),
                    heartbeat
                        .last_trade_id
                        .as_deref()
                        .and_then(|id| id.parse::<u64>().ok()),
                ) else {
                    return Ok(());
                };
                let symbol = symbol.to_ascii_uppercase();
                let mut out = std::mem::take(&mut self.scratch);
                let state = self.state(&symbol);
                if state.seq.heartbeat(last_id, now, &mut out) {
                    state.needs_resync = false;
                    state.caught_up_at = heartbeat.exchange_time.or(state.caught_up_at);
                }
                let result = self.apply(&symbol, &mut out).await;
                self.scratch = out;
                result?;
            }
            ConnectionEvent::Rejected {
                symbols, reason, ..
            } => {
                for symbol in symbols {
                    self.state(&symbol).rejected = true;
                    tracing::debug!(symbol, reason, "symbol dropped from the feed");
                }
            }
            ConnectionEvent::BadFrame {
                conn,
                payload,
                reason,
            } => {
                if self.role == Role::Primary {
                    let source = format!("ws:{}:{conn}", self.spec.name);
                    self.send(Output::DeadLetter {
                        payload,
                        reason,
                        source,
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn state(&mut self, symbol: &str) -> &mut SymbolState {
        let (exchange, role) = (self.exchange, self.role);
        self.symbols
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolState::new(exchange, role))
    }

    /// Acts on a sequencer's events: publish, buffer, count, report.
    async fn apply(
        &mut self,
        symbol: &str,
        out: &mut Vec<SequencerEvent>,
    ) -> Result<(), IngestError> {
        for event in out.drain(..) {
            match event {
                SequencerEvent::Released(trade) => match self.role {
                    Role::Primary => {
                        self.send(Output::Trade(trade, self.epoch)).await?;
                        self.events.published(1);
                    }
                    Role::Replica => {
                        let capacity = self.tuning.replica_buffer;
                        if let Some(state) = self.symbols.get_mut(symbol) {
                            if state.buffer.len() >= capacity {
                                state.buffer.pop_front();
                            }
                            state.buffer.push_back(trade);
                        }
                        self.events.buffered(1);
                    }
                    Role::Fenced => {}
                },
                SequencerEvent::Duplicate { .. } => self.events.duplicate(),
                SequencerEvent::GapOpened {
                    first_missing,
                    last_missing,
                } => self.events.gap_found(symbol, first_missing, last_missing),
                SequencerEvent::GapFilled {
                    first_missing,
                    last_missing,
                } => self.events.gap_filled(symbol, first_missing, last_missing),
                SequencerEvent::GapUnfilled {
                    first_missing,
                    last_missing,
                    from_time,
                    to_time,
                } => {
                    self.events
                        .gap_unfilled(symbol, first_missing, last_missing);
                    if self.role == Role::Primary {
                        let marker = GapMarker {
                            exchange: self.exchange,
                            symbol: symbol.to_string(),
                            first_missing,
                            last_missing,
                            from_time,
                            to_time,
                        };
                        self.send(Output::Gap(marker, self.epoch)).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn send(&self, output: Output) -> Result<(), IngestError> {
        self.output
            .send(output)
            .await
            .map_err(|_| IngestError::PublisherGone)
    }

    /// Starts the backfills and resyncs that are due, up to the limit.
    fn schedule_backfills(&mut self) {
        if self.role != Role::Primary {
            return;
        }
        let now = Instant::now();
        let grace = self.tuning.gap_grace;
        for (symbol, state) in &mut self.symbols {
            if self.backfills.len() >= MAX_CONCURRENT_BACKFILLS {
                return;
            }
            let kind = if state.seq.backfill_due(now, grace) {
                if state.seq.start_backfill().is_none() {
                    continue;
                }
                BackfillKind::Gap
            } else if state.needs_resync
                && state.live_on > 0
                && !state.resync_in_flight
                && (state.seq.resyncing()
                    || (self.sequential
                        && state.seq.pending_gap().is_none()
                        && state.seq.last().is_some()
                        && now.saturating_duration_since(state.resync_since) >= grace))
            {
                // Untracked ids resync at once (live trades wait for it);
                // sequential ones only if no trade showed continuity first.
                state.resync_in_flight = true;
                state.resync_attempts += 1;
                BackfillKind::Resync
            } else {
                continue;
            };
            let feed = self.spec.feed;
            let rest_url = self.spec.rest_url.clone();
            let timeout = self.tuning.rest_timeout;
            let symbol = symbol.clone();
            tracing::debug!(symbol, ?kind, "REST backfill");
            self.backfills.spawn(async move {
                let result = backfill::recent_trades(feed, &rest_url, &symbol, timeout).await;
                (symbol, kind, result)
            });
        }
    }

    async fn on_backfill(
        &mut self,
        symbol: String,
        kind: BackfillKind,
        result: Result<Vec<Trade>, BackfillError>,
    ) -> Result<(), IngestError> {
        if self.role != Role::Primary {
            return Ok(());
        }
        let now = Instant::now();
        let mut out = std::mem::take(&mut self.scratch);
        let state = self.state(&symbol);
        match (kind, result) {
            (BackfillKind::Gap, Ok(trades)) => state.seq.backfilled(trades, now, &mut out),
            (BackfillKind::Gap, Err(error)) => {
                tracing::warn!(symbol, %error, "REST backfill failed");
                if error.is_terminal() {
                    state.seq.give_up(now, &mut out);
                } else {
                    state.seq.backfill_failed(now, &mut out);
                }
            }
            (BackfillKind::Resync, Ok(trades)) => {
                state.resync_in_flight = false;
                state.needs_resync = false;
                if state.seq.resyncing() {
                    state.seq.resynced(Some(trades), &mut out);
                } else {
                    for trade in trades {
                        state.seq.offer(trade, now, &mut out);
                    }
                }
            }
            (BackfillKind::Resync, Err(error)) => {
                tracing::warn!(symbol, %error, "REST resync failed");
                state.resync_in_flight = false;
                state.resync_since = now;
                if state.resync_attempts >= 2 || error.is_terminal() {
                    state.needs_resync = false;
                    state.seq.resynced(None, &mut out);
                }
            }
        }
        let result = self.apply(&symbol, &mut out).await;
        self.scratch = out;
        result
    }

    async fn publish_watermarks(&mut self) -> Result<(), IngestError> {
        if self.role != Role::Primary {
            return Ok(());
        }
        let now = super::exchanges::receive_time_now();
        let wall = now.saturating_sub(self.tuning.allowed_lateness);
        let mut due = Vec::new();
        for (symbol, state) in &mut self.symbols {
            if state.rejected {
                continue;
            }
            if let Some(received) = state.last_receive {
                self.events
                    .last_trade_age(symbol, (now - received).max(0) as f64 / 1000.0);
            }
            let caught_up =
                state.live_on > 0 && !state.needs_resync && state.seq.pending_gap().is_none();
            let mut candidate = state.watermark.unwrap_or(Millis::MIN);
            if let Some(last) = state.seq.last() {
                candidate = candidate.max(last.exchange_time);
            }
            if caught_up {
                candidate = candidate.max(wall);
                if let Some(at) = state.caught_up_at {
                    candidate = candidate.max(at);
                }
            }
            if candidate > state.watermark.unwrap_or(Millis::MIN) {
                state.watermark = Some(candidate);
                due.push((symbol.clone(), candidate));
            }
        }
        for (symbol, time) in due {
            self.send(Output::Watermark {
                exchange: self.exchange,
                symbol,
                time,
                epoch: self.epoch,
            })
            .await?;
            self.events.watermark();
        }
        Ok(())
    }

    fn positions(&self) -> HashMap<String, ResumePoint> {
        self.symbols
            .iter()
            .filter_map(|(symbol, state)| {
                state.seq.last().map(|last| {
                    (
                        symbol.clone(),
                        ResumePoint {
                            last: last.clone(),
                            recent_ids: state.seq.recent_ids(),
                        },
                    )
                })
            })
            .collect()
    }

    async fn promote(&mut self, resume: HashMap<String, ResumePoint>) -> Result<(), IngestError> {
        if self.role != Role::Replica {
            tracing::warn!(role = ?self.role, "promote ignored: not a replica");
            return Ok(());
        }
        // The new epoch first: nothing is published under the replica's none.
        if !self.claim_epoch().await {
            return Ok(());
        }
        self.role = Role::Primary;
        let now = Instant::now();
        let symbols: Vec<String> = self.symbols.keys().cloned().collect();
        let mut replayed = 0usize;
        for symbol in symbols {
            let mut out = std::mem::take(&mut self.scratch);
            if let Some(state) = self.symbols.get_mut(&symbol) {
                state.seq = match resume.get(&symbol) {
                    Some(point) => SymbolSequencer::resume(self.exchange, point),
                    None => SymbolSequencer::new(self.exchange, true),
                };
                if resume.contains_key(&symbol) {
                    // Untracked ids: merge the buffer with REST before releasing.
                    state.seq.begin_resync();
                }
                // Until a trade or a resync shows otherwise, trades may be
                // missing between the predecessor's last and our buffer.
                state.needs_resync = resume.contains_key(&symbol);
                state.resync_since = now;
                for trade in std::mem::take(&mut state.buffer) {
                    replayed += 1;
                    state.seq.offer(trade, now, &mut out);
                }
                if out.iter().any(|e| {
                    matches!(
                        e,
                        SequencerEvent::Released(_) | SequencerEvent::GapOpened { .. }
                    )
                }) {
                    state.needs_resync = false;
                }
            }
            let result = self.apply(&symbol, &mut out).await;
            self.scratch = out;
            result?;
        }
        tracing::info!(replayed, "promoted to primary");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(exchange: Exchange, name: Option<&str>, symbols: &[&str]) -> FeedConfig {
        FeedConfig {
            exchange,
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            ws_url: None,
            rest_url: None,
            feed: name.map(str::to_string),
            symbols_per_connection: None,
            max_connection_age_ms: None,
            ping_interval_ms: None,
            pong_timeout_ms: None,
        }
    }

    #[test]
    fn a_symbol_belongs_to_one_feed_per_exchange() {
        let cases = [
            (
                "disjoint symbols",
                vec![
                    feed(Exchange::Binance, Some("aggTrade"), &["BTCUSDT"]),
                    feed(Exchange::Binance, Some("trade"), &["ETHUSDT"]),
                ],
                None,
            ),
            (
                "same symbol on two exchanges",
                vec![
                    feed(Exchange::Binance, None, &["BTC-USDT"]),
                    feed(Exchange::Okx, None, &["BTC-USDT"]),
                ],
                None,
            ),
            (
                "repeated within one feed",
                vec![feed(Exchange::Binance, None, &["BTCUSDT", "btcusdt"])],
                None,
            ),
            (
                "trade and aggTrade of one symbol",
                vec![
                    feed(Exchange::Binance, Some("aggTrade"), &["BTCUSDT"]),
                    feed(Exchange::Binance, Some("trade"), &["ETHUSDT", "btcusdt"]),
                ],
                Some("feed ingest.feeds[1] (binance:trade): symbol BTCUSDT is also in ingest.feeds[0] (binance:aggTrade)"),
            ),
        ];
        for (name, feeds, want) in cases {
            let got = one_publisher_per_symbol(&feeds)
                .err()
                .map(|e| e.to_string());
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(prefix) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(prefix)),
                    "{name}: {got:?}"
                ),
            }
        }
    }
}

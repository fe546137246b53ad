//! The feed task: the select loop over connection events, commands, timers
//! and REST backfills, and the I/O around the symbols' state machines.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backfill::{self, BackfillError};
use super::sequence::{ResumePoint, SequencerEvent, SymbolSequencer};
use super::{FeedCommand, FeedSpec, Role, Tuning};
use crate::coord::epoch::{Epoch, EpochClaimer};
use crate::ingest::connection::{
    run_shard, shard_symbols, ConnectionEvent, ConnectionId, ShardSymbols,
};
use crate::ingest::events::FeedEvents;
use crate::ingest::output::Output;
use crate::ingest::venues::ids_are_sequential;
use crate::ingest::IngestError;
use crate::model::{Exchange, GapMarker, Millis, Trade};

/// REST backfills one feed runs at once.
pub const MAX_CONCURRENT_BACKFILLS: usize = 4;
/// How often pending gaps and resyncs are looked at.
const SCHEDULE_TICK: Duration = Duration::from_millis(100);

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
pub(crate) struct FeedTask {
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
    pub(crate) fn new(
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

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<FeedCommand>,
    ) -> Result<(), IngestError> {
        if self.role == Role::Primary && !self.claim_epoch().await {
            return Ok(());
        }
        let (event_tx, mut event_rx) = mpsc::channel(crate::ingest::connection::CONNECTION_EVENTS);
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
        let now = crate::ingest::venues::receive_time_now();
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

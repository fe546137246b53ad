//! The feed task: the select loop over connection events, commands, timers
//! and REST backfills, and the I/O around the symbols' state machines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backfill::{self, BackfillError};
use super::sequence::ResumePoint;
use super::symbol::{RestCall, RestOutcome, SymbolEvent, SymbolFeed};
use super::{CatchUp, FeedCommand, FeedSpec, Role, Tuning};
use crate::coord::epoch::{Epoch, EpochClaimer};
use crate::coord::store::HeldUntil;
use crate::ingest::connection::{
    run_shard, shard_symbols, ConnectionEvent, ConnectionId, ShardSymbols,
};
use crate::ingest::events::FeedEvents;
use crate::ingest::output::Output;
use crate::ingest::IngestError;
use crate::model::{Exchange, GapMarker, Trade};

/// REST backfills one feed runs at once.
pub const MAX_CONCURRENT_BACKFILLS: usize = 4;
/// How often pending gaps and resyncs are looked at.
const SCHEDULE_TICK: Duration = Duration::from_millis(100);

type BackfillResult = (String, RestCall, Result<Vec<Trade>, BackfillError>);

/// One feed: its shards, sequencers and watermarks.
pub(crate) struct FeedTask {
    spec: Arc<FeedSpec>,
    tuning: Tuning,
    role: Role,
    exchange: Exchange,
    symbols: HashMap<String, SymbolFeed>,
    live: HashMap<ConnectionId, Vec<String>>,
    output: mpsc::Sender<Output>,
    events: FeedEvents,
    cancel: CancellationToken,
    backfills: JoinSet<BackfillResult>,
    scratch: Vec<SymbolEvent>,
    /// How far behind the exchange this feed reads: the wall time when it
    /// took its newest batch of trades less the newest trade's exchange
    /// time. The watermarks' clock term trails by it (`publish_watermarks`).
    read_lag: crate::model::Millis,
    epochs: Option<EpochClaimer>,
    /// The epoch this feed publishes under as primary: claimed when it
    /// became primary, or assigned by the master.
    epoch: Epoch,
    /// In a cluster: the worker's lease. Nothing is published while it is
    /// not surely held.
    held: Option<HeldUntil>,
    /// A planned handover under way: publishing goes on until every symbol
    /// has caught up with the moment the feed moved.
    handing_over: Option<HandingOver>,
}

/// A primary handing its feed over, publishing until it has caught up.
struct HandingOver {
    until: crate::model::Millis,
    deadline: Instant,
    replies: Vec<tokio::sync::oneshot::Sender<HashMap<String, ResumePoint>>>,
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
        let now = Instant::now();
        let symbols = spec
            .symbols
            .iter()
            .map(|s| {
                let symbol = SymbolFeed::new(exchange, role, tuning.replica_buffer, now);
                (s.clone(), symbol)
            })
            .collect();
        Self {
            spec: Arc::new(spec),
            tuning,
            role,
            exchange,
            symbols,
            live: HashMap::new(),
            output,
            events,
            cancel,
            backfills: JoinSet::new(),
            scratch: Vec::new(),
            read_lag: 0,
            epochs,
            epoch: Epoch::NONE,
            held: None,
            handing_over: None,
        }
    }

    /// Publishes only while `held` says the worker's lease is held.
    pub(crate) fn with_lease(mut self, held: Option<HeldUntil>) -> Self {
        self.held = held;
        self
    }

    /// Publishes as primary under `epoch`, the master's, instead of claiming one.
    pub(crate) fn with_epoch(mut self, epoch: Epoch) -> Self {
        self.epoch = epoch;
        self
    }

    /// Claims the epoch this feed publishes under as primary (waiting while
    /// etcd is down: nothing is published meanwhile). False when cancelled.
    async fn claim_epoch(&mut self) -> bool {
        if self.epoch.is_some() {
            return true; // assigned by the master
        }
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
            if self.caught_up(Instant::now()) {
                self.end_handover();
            }
            if self.role == Role::Fenced {
                break Ok(());
            }
            let handover_deadline = self.handing_over.as_ref().map(|h| h.deadline);
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                _ = tokio::time::sleep_until(handover_deadline.unwrap_or_else(Instant::now)),
                    if handover_deadline.is_some() => {}
                command = commands.recv(), if commands_open => match command {
                    Some(FeedCommand::Fence { catch_up, reply }) => {
                        self.fence(catch_up, reply);
                    }
                    Some(FeedCommand::Promote { resume, epoch, reply }) => {
                        if let Some(epoch) = epoch {
                            self.epoch = epoch;
                        }
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
                        Err(e) => Err(IngestError::Task(e)),
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

    /// A fence: at once, or (a primary's planned handover) once it has
    /// caught up. A second fence while catching up ends it at once.
    fn fence(
        &mut self,
        catch_up: Option<CatchUp>,
        reply: tokio::sync::oneshot::Sender<HashMap<String, ResumePoint>>,
    ) {
        match (&mut self.handing_over, catch_up) {
            (Some(h), _) => {
                h.replies.push(reply);
                h.deadline = Instant::now();
            }
            (None, Some(c)) if self.role == Role::Primary && !c.within.is_zero() => {
                tracing::info!(until = c.until, "handing over: publishing until caught up");
                self.handing_over = Some(HandingOver {
                    until: c.until,
                    deadline: Instant::now() + c.within,
                    replies: vec![reply],
                });
            }
            (None, _) => {
                self.role = Role::Fenced;
                tracing::warn!("fenced: publishing stops, connections close");
                let _ = reply.send(self.positions());
            }
        }
    }

    /// Whether a handover under way may stop: every symbol has published a
    /// trade made at or after the handover's moment, or its time is up.
    fn caught_up(&self, now: Instant) -> bool {
        let Some(h) = &self.handing_over else {
            return false;
        };
        now >= h.deadline
            || self.symbols.values().all(|s| {
                s.rejected()
                    || s.position()
                        .is_some_and(|p| p.last.exchange_time >= h.until)
            })
    }

    /// Ends a handover under way: publishing stops, and every fence is
    /// answered with the positions reached.
    fn end_handover(&mut self) {
        let Some(h) = self.handing_over.take() else {
            return;
        };
        self.role = Role::Fenced;
        let positions = self.positions();
        // Each symbol that had not caught up, with its last published
        // trade's exchange time.
        let behind: Vec<(&str, Option<crate::model::Millis>)> = self
            .symbols
            .iter()
            .filter_map(|(symbol, s)| {
                let last = s.position().map(|p| p.last.exchange_time);
                last.is_none_or(|t| t < h.until)
                    .then_some((symbol.as_str(), last))
            })
            .collect();
        if behind.is_empty() {
            tracing::info!(until = h.until, "caught up with the move: publishing stops");
        } else {
            tracing::warn!(
                ?behind,
                until = h.until,
                "fenced before these symbols caught up (quiet, or behind): publishing stops"
            );
        }
        for reply in h.replies {
            let _ = reply.send(positions.clone());
        }
    }

    async fn on_event(&mut self, event: ConnectionEvent) -> Result<(), IngestError> {
        let now = Instant::now();
        match event {
            ConnectionEvent::Live { conn, symbols } => {
                for symbol in &symbols {
                    self.symbol(symbol).connection_live(now);
                }
                self.live.insert(conn, symbols);
                self.events.connection_live();
            }
            ConnectionEvent::Ended { conn } => {
                let Some(symbols) = self.live.remove(&conn) else {
                    return Ok(());
                };
                self.events.connection_down();
                for symbol in symbols {
                    self.symbol(&symbol).connection_ended();
                }
            }
            ConnectionEvent::Trades { trades, .. } => {
                if let Some(newest) = trades.iter().map(|t| t.exchange_time).max() {
                    let wall = crate::ingest::venues::receive_time_now();
                    self.read_lag = wall.saturating_sub(newest).max(0);
                }
                for trade in trades {
                    let mut out = std::mem::take(&mut self.scratch);
                    let symbol = trade.symbol.clone();
                    self.symbol(&symbol).offer(trade, now, &mut out);
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
                self.symbol(&symbol)
                    .heartbeat(last_id, heartbeat.exchange_time, now, &mut out);
                let result = self.apply(&symbol, &mut out).await;
                self.scratch = out;
                result?;
            }
            ConnectionEvent::Rejected {
                symbols, reason, ..
            } => {
                for symbol in symbols {
                    self.symbol(&symbol).reject();
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

    fn symbol(&mut self, symbol: &str) -> &mut SymbolFeed {
        let (exchange, role, capacity) = (self.exchange, self.role, self.tuning.replica_buffer);
        self.symbols
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolFeed::new(exchange, role, capacity, Instant::now()))
    }

    /// Acts on what a symbol decided: publish, count, report.
    async fn apply(&mut self, symbol: &str, out: &mut Vec<SymbolEvent>) -> Result<(), IngestError> {
        for event in out.drain(..) {
            match event {
                SymbolEvent::Publish(trade) => {
                    if self.role == Role::Primary {
                        let time = trade.exchange_time;
                        self.send(Output::Trade(trade, self.epoch)).await?;
                        self.events.published_at(time);
                    }
                }
                SymbolEvent::Buffered => self.events.buffered(1),
                SymbolEvent::Duplicate { .. } => self.events.duplicate(),
                SymbolEvent::GapOpened {
                    first_missing,
                    last_missing,
                } => self
                    .events
                    .gap_found(symbol, self.role, first_missing, last_missing),
                SymbolEvent::GapFilled {
                    first_missing,
                    last_missing,
                } => self.events.gap_filled(symbol, first_missing, last_missing),
                SymbolEvent::GapUnfilled {
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
        if let Some(held) = self.held.as_ref().filter(|h| !h.holds()) {
            // The lease may be gone: a replica may be promoted any moment.
            // Hold on until it is refreshed, or until the worker stops us.
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                _ = held.wait_held() => {}
            }
        }
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
            let Some(call) = state.next_rest_call(now, grace) else {
                continue;
            };
            let feed = self.spec.feed;
            let rest_url = self.spec.rest_url.clone();
            let timeout = self.tuning.rest_timeout;
            let symbol = symbol.clone();
            tracing::debug!(symbol, ?call, "REST backfill");
            self.backfills.spawn(async move {
                let result = match call {
                    RestCall::Gap {
                        first_missing,
                        last_missing,
                        after,
                        before,
                    } => {
                        let gap = backfill::Gap {
                            first_missing,
                            last_missing,
                            after,
                            before,
                        };
                        backfill::gap_trades(feed, &rest_url, &symbol, gap, timeout).await
                    }
                    RestCall::Resync => {
                        backfill::recent_trades(feed, &rest_url, &symbol, timeout).await
                    }
                };
                (symbol, call, result)
            });
        }
    }

    async fn on_backfill(
        &mut self,
        symbol: String,
        call: RestCall,
        result: Result<Vec<Trade>, BackfillError>,
    ) -> Result<(), IngestError> {
        if self.role != Role::Primary {
            return Ok(());
        }
        let outcome = match result {
            Ok(trades) => RestOutcome::Trades(trades),
            Err(error) => {
                match call {
                    RestCall::Gap { .. } => tracing::warn!(symbol, %error, "REST backfill failed"),
                    RestCall::Resync => tracing::warn!(symbol, %error, "REST resync failed"),
                }
                RestOutcome::Failed {
                    terminal: error.is_terminal(),
                }
            }
        };
        let mut out = std::mem::take(&mut self.scratch);
        self.symbol(&symbol)
            .rest_answered(call, outcome, Instant::now(), &mut out);
        let result = self.apply(&symbol, &mut out).await;
        self.scratch = out;
        result
    }

    async fn publish_watermarks(&mut self) -> Result<(), IngestError> {
        if self.role != Role::Primary {
            return Ok(());
        }
        let wall = crate::ingest::venues::receive_time_now();
        // Trades still on their way in (a socket backlog when the feed falls
        // behind) are as old as the ones it read last: the clock term must
        // not pass them, or every one of them would revise a closed candle.
        let reading = wall.saturating_sub(self.read_lag);
        let mut due = Vec::new();
        for (symbol, state) in &mut self.symbols {
            if state.rejected() {
                continue;
            }
            if let Some(received) = state.last_receive() {
                self.events
                    .last_trade_age(symbol, (wall - received).max(0) as f64 / 1000.0);
            }
            if let Some(time) = state.watermark(reading, self.tuning.allowed_lateness) {
                due.push((symbol.clone(), time));
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
            .filter_map(|(symbol, state)| state.position().map(|p| (symbol.clone(), p)))
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
                let point = resume.get(&symbol);
                // Where the predecessor stopped and where our buffer begins:
                // one apart on a planned handover.
                tracing::info!(
                    symbol,
                    after = ?point.map(|p| &p.last.trade_id),
                    buffered_from = ?state.first_buffered().map(|t| &t.trade_id),
                    buffered = state.buffered(),
                    "promoting"
                );
                replayed += state.promote(point, now, &mut out);
            }
            let result = self.apply(&symbol, &mut out).await;
            self.scratch = out;
            result?;
        }
        tracing::info!(replayed, "promoted to primary");
        Ok(())
    }
}

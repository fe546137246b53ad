//! One symbol of a feed as a pure state machine: [`SymbolFeed`] owns
//! everything the feed knows about the symbol — its release order (dedup,
//! gaps, through its `SymbolSequencer`), the resync after a reconnect,
//! which REST call is due, whether it is live, a replica's buffer, and the
//! watermark — and says what to do as [`SymbolEvent`]s. It does no I/O and
//! never reads the clock: `now` (monotonic, for waits) and `wall` (epoch
//! milliseconds, for watermarks) come in as arguments, so the feed task
//! drives it and the tests below replay any sequence of inputs.
//!
//! ```text
//! connection_live / connection_ended ─▶ liveness, resync needed
//! offer(trade) / heartbeat ───────────▶ sequencer ─▶ Publish | Buffered | Duplicate | Gap…
//! next_rest_call(now) ────────────────▶ Gap backfill or Resync, at most one at a time
//! rest_answered(call, outcome) ───────▶ sequencer (backfilled / resynced / given up)
//! watermark(wall) ────────────────────▶ the next watermark to publish, if it moved
//! promote(resume) ────────────────────▶ a fresh gap-holding sequencer; the buffer replayed
//! ```
//!
//! # The watermark rule
//! A primary's watermark `w` for the symbol promises: **no trade with
//! `exchange_time < w` will follow from this worker**:
//!
//! ```text
//! w = max(previous w, exchange_time of the last released trade,
//!         wall − allowed_lateness  and the last heartbeat's time  if caught up)
//! ```
//!
//! The symbol is caught up when it is live on a connection, no trade-id gap
//! is pending, and, after a reconnect, a trade, heartbeat or REST resync has
//! shown that nothing was missed meanwhile. Trades are released in exchange
//! order, so the last one's time bounds everything after it; the wall-clock
//! term lets quiet symbols close their windows (the feed task passes as
//! `wall` the clock less how far behind it reads), and `allowed_lateness` is
//! the bound it assumes on exchange → worker latency and clock skew. What the
//! worker cannot know (a trade lost in flight and found only with the next
//! one) may still come behind a watermark: it is published anyway, and the
//! rollup corrects the candle (revision + 1). Watermarks never go backwards
//! and stop while the symbol is disconnected or has a gap pending.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::sequence::{ResumePoint, SymbolSequencer};
use super::Role;
use crate::model::{Exchange, Millis, Trade};

/// A REST call's purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestCall {
    /// Fill the trade-id gap `first_missing..=last_missing` (raw ids).
    Gap {
        first_missing: u64,
        last_missing: u64,
        /// The exchange's own id of the last record released before the gap
        /// (history pages forward from just after it).
        after: Option<u64>,
        /// The own id of the first record held behind the gap (history
        /// pages back from just before it).
        before: Option<u64>,
    },
    /// After a reconnect, look for trades missed while away.
    Resync,
}

/// How a REST call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestOutcome {
    /// The exchange's recent trades, oldest first.
    Trades(Vec<Trade>),
    /// It failed; `terminal` when asking again cannot help.
    Failed { terminal: bool },
}

/// What the feed task does for the symbol, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolEvent {
    /// Publish this trade next (a primary).
    Publish(Trade),
    /// A trade kept in the replica's buffer.
    Buffered,
    /// A trade seen before (reconnect or rotation overlap, replayed buffer).
    Duplicate { trade_id: String },
    /// Raw trade ids `first_missing..=last_missing` are missing.
    GapOpened {
        first_missing: u64,
        last_missing: u64,
    },
    /// A gap closed: every missing trade arrived.
    GapFilled {
        first_missing: u64,
        last_missing: u64,
    },
    /// Missing trades that cannot be had; the sequence goes on after them,
    /// and a primary publishes a gap marker. Their exchange times lie in
    /// `from_time..=to_time`.
    GapUnfilled {
        first_missing: u64,
        last_missing: u64,
        from_time: Millis,
        to_time: Millis,
    },
}

/// One symbol's state inside a feed.
#[derive(Debug)]
pub struct SymbolFeed {
    exchange: Exchange,
    /// Replicas buffer what they release; primaries publish it.
    buffering: bool,
    buffer_capacity: usize,
    sequencer: SymbolSequencer,
    /// Connections on which the symbol is subscribed now.
    live_on: u32,
    /// Reconnected and not yet shown to be caught up.
    needs_resync: bool,
    resync_since: Instant,
    resync_attempts: u32,
    resync_in_flight: bool,
    /// The last watermark returned.
    watermark: Option<Millis>,
    /// Exchange time of a heartbeat that found us caught up.
    caught_up_at: Option<Millis>,
    last_receive: Option<Millis>,
    /// A replica's recent trades.
    buffer: VecDeque<Trade>,
    rejected: bool,
    scratch: Vec<SymbolEvent>,
}

impl SymbolFeed {
    /// A symbol of `exchange` in a feed of `role`; a replica keeps its last
    /// `buffer_capacity` trades.
    pub fn new(exchange: Exchange, role: Role, buffer_capacity: usize, now: Instant) -> Self {
        Self {
            exchange,
            buffering: role == Role::Replica,
            buffer_capacity: buffer_capacity.max(1),
            sequencer: SymbolSequencer::new(exchange, role != Role::Replica),
            live_on: 0,
            needs_resync: false,
            resync_since: now,
            resync_attempts: 0,
            resync_in_flight: false,
            watermark: None,
            caught_up_at: None,
            last_receive: None,
            buffer: VecDeque::new(),
            rejected: false,
            scratch: Vec::new(),
        }
    }

    /// A connection subscribed the symbol.
    pub fn connection_live(&mut self, now: Instant) {
        self.live_on += 1;
        // Back after an outage: the resync (if still needed) looks at REST
        // once the new subscription is in place.
        self.resync_since = now;
    }

    /// A connection that carried the symbol ended.
    pub fn connection_ended(&mut self) {
        self.live_on = self.live_on.saturating_sub(1);
        if self.live_on == 0 {
            // Trades made from now until it is live again may be missed.
            self.needs_resync = true;
            self.resync_attempts = 0;
            if !self.buffering {
                // Untracked ids: hold what the next connection brings until
                // REST says what was missed.
                self.sequencer.begin_resync();
            }
        }
    }

    /// The exchange refused the symbol: no more watermarks for it.
    pub fn reject(&mut self) {
        self.rejected = true;
    }

    /// Whether the exchange refused the symbol.
    pub fn rejected(&self) -> bool {
        self.rejected
    }

    /// When the symbol's last trade was received (epoch ms).
    pub fn last_receive(&self) -> Option<Millis> {
        self.last_receive
    }

    /// A trade received on any connection.
    pub fn offer(&mut self, trade: Trade, now: Instant, out: &mut Vec<SymbolEvent>) {
        self.last_receive = Some(trade.receive_time);
        self.sequencer.offer(trade, now, &mut self.scratch);
        self.settle(out);
    }

    /// A heartbeat: the exchange's last trade id, at `exchange_time`.
    pub fn heartbeat(
        &mut self,
        last_trade_id: u64,
        exchange_time: Option<Millis>,
        now: Instant,
        out: &mut Vec<SymbolEvent>,
    ) {
        if self
            .sequencer
            .heartbeat(last_trade_id, now, &mut self.scratch)
        {
            self.needs_resync = false;
            self.caught_up_at = exchange_time.or(self.caught_up_at);
        }
        self.settle(out);
    }

    /// The REST call due now, marked as started: a gap that waited `grace`
    /// first, else a resync after a reconnect. Only a primary calls REST.
    pub fn next_rest_call(&mut self, now: Instant, grace: Duration) -> Option<RestCall> {
        if self.buffering {
            return None;
        }
        if self.sequencer.backfill_due(now, grace) {
            let (after, before) = self.sequencer.gap_edges();
            return self
                .sequencer
                .start_backfill()
                .map(|(first_missing, last_missing)| RestCall::Gap {
                    first_missing,
                    last_missing,
                    after,
                    before,
                });
        }
        let sequential = self.sequencer.sequential();
        let resync_due = self.needs_resync
            && self.live_on > 0
            && !self.resync_in_flight
            // Untracked ids resync at once (live trades wait for it);
            // sequential ones only if no trade showed continuity first.
            && (self.sequencer.resyncing()
                || (sequential
                    && self.sequencer.pending_gap().is_none()
                    && self.sequencer.last().is_some()
                    && now.saturating_duration_since(self.resync_since) >= grace));
        if !resync_due {
            return None;
        }
        self.resync_in_flight = true;
        self.resync_attempts += 1;
        Some(RestCall::Resync)
    }

    /// A REST call started by [`SymbolFeed::next_rest_call`] ended.
    pub fn rest_answered(
        &mut self,
        call: RestCall,
        outcome: RestOutcome,
        now: Instant,
        out: &mut Vec<SymbolEvent>,
    ) {
        if self.buffering {
            return;
        }
        let events = &mut self.scratch;
        match (call, outcome) {
            (RestCall::Gap { .. }, RestOutcome::Trades(trades)) => {
                self.sequencer.backfilled(trades, now, events);
            }
            (RestCall::Gap { .. }, RestOutcome::Failed { terminal: true }) => {
                self.sequencer.give_up(now, events);
            }
            (RestCall::Gap { .. }, RestOutcome::Failed { terminal: false }) => {
                self.sequencer.backfill_failed(now, events);
            }
            (RestCall::Resync, RestOutcome::Trades(trades)) => {
                self.resync_in_flight = false;
                self.needs_resync = false;
                if self.sequencer.resyncing() {
                    self.sequencer.resynced(Some(trades), events);
                } else {
                    for trade in trades {
                        self.sequencer.offer(trade, now, events);
                    }
                }
            }
            (RestCall::Resync, RestOutcome::Failed { terminal }) => {
                self.resync_in_flight = false;
                self.resync_since = now;
                if self.resync_attempts >= 2 || terminal {
                    self.needs_resync = false;
                    self.sequencer.resynced(None, events);
                }
            }
        }
        // A REST answer says nothing about liveness: no `settle`.
        self.drain(out);
    }

    /// Whether the symbol is live, has no gap pending and has shown, since
    /// its last reconnect, that nothing was missed.
    pub fn caught_up(&self) -> bool {
        self.live_on > 0 && !self.needs_resync && self.sequencer.pending_gap().is_none()
    }

    /// The watermark to publish at wall time `wall` (see the module docs),
    /// when it moved; `None` for a replica, a rejected symbol, or no progress.
    pub fn watermark(&mut self, wall: Millis, allowed_lateness: Millis) -> Option<Millis> {
        if self.buffering || self.rejected {
            return None;
        }
        let previous = self.watermark.unwrap_or(Millis::MIN);
        let mut candidate = previous;
        if let Some(last) = self.sequencer.last() {
            candidate = candidate.max(last.exchange_time);
        }
        if self.caught_up() {
            candidate = candidate.max(wall.saturating_sub(allowed_lateness));
            if let Some(at) = self.caught_up_at {
                candidate = candidate.max(at);
            }
        }
        (candidate > previous).then(|| {
            self.watermark = Some(candidate);
            candidate
        })
    }

    /// Where a successor resumes: the last trade released and recent ids.
    pub fn position(&self) -> Option<ResumePoint> {
        self.sequencer.last().map(|last| ResumePoint {
            last: last.clone(),
            recent_ids: self.sequencer.recent_ids(),
        })
    }

    /// The oldest trade in a replica's buffer.
    pub fn first_buffered(&self) -> Option<&Trade> {
        self.buffer.front()
    }

    /// How many trades a replica's buffer holds.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// A replica becomes primary: a fresh gap-holding sequencer continuing
    /// after `resume` (the predecessor's last published trade), and the
    /// buffer replayed through it. Returns how many trades were replayed.
    pub fn promote(
        &mut self,
        resume: Option<&ResumePoint>,
        now: Instant,
        out: &mut Vec<SymbolEvent>,
    ) -> usize {
        self.buffering = false;
        self.sequencer = match resume {
            Some(point) => SymbolSequencer::resume(self.exchange, point),
            None => SymbolSequencer::new(self.exchange, true),
        };
        if resume.is_some() {
            // Untracked ids: merge the buffer with REST before releasing.
            self.sequencer.begin_resync();
        }
        // Until a trade or a resync shows otherwise, trades may be missing
        // between the predecessor's last and our buffer.
        self.needs_resync = resume.is_some();
        self.resync_since = now;
        let buffer = std::mem::take(&mut self.buffer);
        let replayed = buffer.len();
        for trade in buffer {
            self.sequencer.offer(trade, now, &mut self.scratch);
        }
        self.settle(out);
        replayed
    }

    /// After live input: a released trade or an opened gap shows the
    /// connection is past any outage, so no resync is needed any more.
    fn settle(&mut self, out: &mut Vec<SymbolEvent>) {
        if self
            .scratch
            .iter()
            .any(|e| matches!(e, SymbolEvent::Publish(_) | SymbolEvent::GapOpened { .. }))
        {
            self.needs_resync = false;
        }
        self.drain(out);
    }

    /// Hands the sequencer's events to the feed task, keeping what a replica
    /// releases in its buffer instead.
    fn drain(&mut self, out: &mut Vec<SymbolEvent>) {
        for event in self.scratch.drain(..) {
            out.push(match event {
                SymbolEvent::Publish(trade) if self.buffering => {
                    if self.buffer.len() >= self.buffer_capacity {
                        self.buffer.pop_front();
                    }
                    self.buffer.push_back(trade);
                    SymbolEvent::Buffered
                }
                other => other,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    const LATENESS: Millis = 2_000;
    const GRACE: Duration = Duration::from_millis(500);

    fn trade(exchange: Exchange, id: u64, time: Millis) -> Trade {
        Trade {
            exchange,
            symbol: "BTCUSDT".into(),
            instrument: "BTC-USDT".into(),
            trade_id: id.to_string(),
            price: rust_decimal::Decimal::ONE,
            quantity: rust_decimal::Decimal::ONE,
            side: Side::Buy,
            exchange_time: time,
            receive_time: time + 5,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    /// One input to the machine.
    #[derive(Debug, Clone)]
    enum Step {
        Live,
        Ended,
        Reject,
        /// A trade id and exchange time.
        Trade(u64, Millis),
        /// A heartbeat's last trade id and exchange time.
        Heartbeat(u64, Millis),
        /// Time passes (ms).
        Wait(u64),
        /// The due REST call answers with these (id, time) trades.
        Rest(Vec<(u64, Millis)>),
    }

    /// Runs `steps` from a fresh symbol; returns it, its events and the
    /// machine's clock after the waits.
    fn run(
        exchange: Exchange,
        role: Role,
        steps: &[Step],
    ) -> (SymbolFeed, Vec<SymbolEvent>, Instant) {
        let start = Instant::now();
        let mut now = start;
        let mut symbol = SymbolFeed::new(exchange, role, 3, now);
        let mut out = Vec::new();
        for step in steps {
            match step {
                Step::Live => symbol.connection_live(now),
                Step::Ended => symbol.connection_ended(),
                Step::Reject => symbol.reject(),
                Step::Trade(id, time) => symbol.offer(trade(exchange, *id, *time), now, &mut out),
                Step::Heartbeat(id, time) => symbol.heartbeat(*id, Some(*time), now, &mut out),
                Step::Wait(ms) => now += Duration::from_millis(*ms),
                Step::Rest(rows) => {
                    let call = symbol
                        .next_rest_call(now, GRACE)
                        .expect("a REST call is due");
                    let trades = rows
                        .iter()
                        .map(|(id, t)| trade(exchange, *id, *t))
                        .collect();
                    symbol.rest_answered(call, RestOutcome::Trades(trades), now, &mut out);
                }
            }
        }
        (symbol, out, now)
    }

    fn published(events: &[SymbolEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                SymbolEvent::Publish(t) => Some(t.trade_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_watermark_rule() {
        use Step::*;
        let wall = 100_000;
        // (name, steps, watermark expected at `wall`)
        let cases: Vec<(&str, Vec<Step>, Option<Millis>)> = vec![
            ("nothing yet, not live", vec![], None),
            (
                "live and quiet: wall − lateness",
                vec![Live],
                Some(wall - LATENESS),
            ),
            (
                "not live: the last trade's time",
                vec![Live, Trade(1, 99_990), Ended],
                Some(99_990),
            ),
            (
                "a trade later than wall − lateness wins",
                vec![Live, Trade(1, 99_500)],
                Some(99_500),
            ),
            (
                "a gap pending: the last trade before it",
                vec![Live, Trade(1, 50_000), Trade(5, 60_000)],
                Some(50_000),
            ),
            (
                "reconnected, not yet shown caught up: the last trade",
                vec![Live, Trade(1, 50_000), Ended, Live],
                Some(50_000),
            ),
            (
                "reconnected, a contiguous trade shows it caught up",
                vec![Live, Trade(1, 50_000), Ended, Live, Trade(2, 51_000)],
                Some(wall - LATENESS),
            ),
            (
                "a heartbeat in step catches up and its time counts",
                vec![Live, Trade(1, 50_000), Ended, Live, Heartbeat(1, 99_999)],
                Some(99_999),
            ),
            (
                "a rejected symbol gets none",
                vec![Live, Trade(1, 50_000), Reject],
                None,
            ),
        ];
        for (name, steps, expected) in cases {
            let (mut symbol, _, _) = run(Exchange::Binance, Role::Primary, &steps);
            assert_eq!(symbol.watermark(wall, LATENESS), expected, "{name}");
            // Never backwards, and not repeated without progress.
            assert_eq!(symbol.watermark(wall - 10_000, LATENESS), None, "{name}");
        }
        let (mut replica, _, _) = run(Exchange::Binance, Role::Replica, &[Live, Trade(1, 1)]);
        assert_eq!(
            replica.watermark(wall, LATENESS),
            None,
            "a replica publishes none"
        );
    }

    #[test]
    fn rest_calls_follow_gaps_and_reconnects() {
        use Step::*;
        // (name, exchange, steps, REST call due after them)
        let cases: Vec<(&str, Exchange, Vec<Step>, Option<RestCall>)> = vec![
            (
                "caught up",
                Exchange::Binance,
                vec![Live, Trade(1, 1)],
                None,
            ),
            (
                "a gap younger than the grace",
                Exchange::Binance,
                vec![Live, Trade(1, 1), Trade(4, 2)],
                None,
            ),
            (
                "a gap past the grace",
                Exchange::Binance,
                vec![Live, Trade(1, 1), Trade(4, 2), Wait(600)],
                Some(RestCall::Gap {
                    first_missing: 2,
                    last_missing: 3,
                    after: Some(1),
                    before: Some(4),
                }),
            ),
            (
                "sequential ids: resync after the grace, once live again",
                Exchange::Binance,
                vec![Live, Trade(1, 1), Ended, Live, Wait(600)],
                Some(RestCall::Resync),
            ),
            (
                "sequential ids: not while disconnected",
                Exchange::Binance,
                vec![Live, Trade(1, 1), Ended, Wait(600)],
                None,
            ),
            (
                "untracked ids: resync at once when live again",
                Exchange::Bybit,
                vec![Live, Trade(1, 1), Ended, Live],
                Some(RestCall::Resync),
            ),
        ];
        for (name, exchange, steps, expected) in cases {
            let (mut symbol, _, now) = run(exchange, Role::Primary, &steps);
            let due = symbol.next_rest_call(now, GRACE);
            assert_eq!(due, expected, "{name}");
            if due.is_some() {
                assert_eq!(
                    symbol.next_rest_call(now, GRACE),
                    None,
                    "{name}: one at a time"
                );
            }
        }
        let (mut replica, _, now) = run(
            Exchange::Binance,
            Role::Replica,
            &[Live, Trade(1, 1), Trade(4, 2), Wait(5_000)],
        );
        assert_eq!(
            replica.next_rest_call(now, GRACE),
            None,
            "a replica calls no REST"
        );
    }

    #[test]
    fn a_gap_is_backfilled_and_released_in_order() {
        use Step::*;
        let (symbol, out, _) = run(
            Exchange::Binance,
            Role::Primary,
            &[
                Live,
                Trade(1, 1),
                Trade(4, 4),
                Wait(600),
                Rest(vec![(1, 1), (2, 2), (3, 3), (4, 4)]),
            ],
        );
        assert_eq!(published(&out), ["1", "2", "3", "4"]);
        assert!(out.contains(&SymbolEvent::GapOpened {
            first_missing: 2,
            last_missing: 3
        }));
        assert!(out.contains(&SymbolEvent::GapFilled {
            first_missing: 2,
            last_missing: 3
        }));
        assert!(symbol.caught_up());
    }

    #[test]
    fn a_replica_buffers_and_a_promotion_publishes_after_the_resume_point() {
        use Step::*;
        let (mut symbol, out, _) = run(
            Exchange::Binance,
            Role::Replica,
            &[Live, Trade(1, 1), Trade(2, 2), Trade(3, 3), Trade(4, 4)],
        );
        assert!(published(&out).is_empty());
        assert_eq!(
            out.iter().filter(|e| **e == SymbolEvent::Buffered).count(),
            4
        );
        let resume = ResumePoint {
            last: trade(Exchange::Binance, 2, 2),
            recent_ids: vec![],
        };
        let mut out = Vec::new();
        // Capacity 3: trade 1 fell out; 2 is the predecessor's, 3 and 4 follow.
        let replayed = symbol.promote(Some(&resume), Instant::now(), &mut out);
        assert_eq!(replayed, 3);
        assert_eq!(published(&out), ["3", "4"]);
        assert!(out
            .iter()
            .any(|e| matches!(e, SymbolEvent::Duplicate { .. })));
        assert_eq!(symbol.position().map(|p| p.last.trade_id), Some("4".into()));
    }
}

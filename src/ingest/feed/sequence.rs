//! Per-symbol ordering, de-duplication and gap tracking: the pure core between
//! the connections and the publisher.
//!
//! Every trade any connection receives for a symbol is offered to that
//! symbol's [`SymbolSequencer`], which releases each exchange trade once, in
//! exchange order:
//!
//! ```text
//! offer(trade) ──▶ duplicate?  (id ≤ last released, or a recent id) ──▶ dropped, counted
//!              ──▶ contiguous? (next id after the last released)     ──▶ released
//!              ──▶ gap?        (ids missing before it)               ──▶ held; gap opened
//! held trades are released as soon as the missing ids arrive (another
//! connection, a REST backfill); a gap that cannot be filled is skipped and
//! reported (`SymbolEvent::GapUnfilled`).
//! ```
//!
//! Where the exchange's ids are contiguous integers
//! ([`ids_are_sequential`](crate::ingest::venues::ids_are_sequential)) continuity
//! follows [`id_continuity`]; elsewhere (Bybit, Upbit) a bounded set of recent
//! ids drops duplicates and there is no gap detection. Nothing here does I/O or
//! reads the clock: times come in as arguments, so the feed task drives it and
//! tests can replay any interleaving.

use std::collections::{BTreeMap, HashSet, VecDeque};

use tokio::time::Instant;

use super::symbol::SymbolEvent;
use crate::ingest::venues::{id_continuity, ids_are_sequential, IdContinuity};
use crate::model::{Exchange, Millis, Trade};

/// Ids remembered per symbol for de-duplication where ids are not contiguous.
pub const RECENT_IDS_PER_SYMBOL: usize = 2_048;
/// Trades held behind one gap before it is given up as unfillable.
pub const MAX_HELD_PER_SYMBOL: usize = 50_000;

// What the sequencer says, in order, is a `SymbolEvent` (`Publish` for a
// trade released next); `SymbolFeed` buffers a replica's instead.

/// Where a symbol's backfill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillState {
    /// Waiting for the missing trades to arrive by themselves.
    Waiting { since: Instant, attempts: u32 },
    /// A REST request is out.
    InFlight { attempts: u32 },
}

/// A gap being waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingGap {
    pub first_missing: u64,
    pub last_missing: u64,
    /// When the gap first opened (for the "how long" in logs).
    pub opened: Instant,
    pub backfill: BackfillState,
}

/// Where a new primary takes over: the last trade its predecessor published,
/// and the ids published just before it (for exchanges without contiguous ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub last: Trade,
    pub recent_ids: Vec<String>,
}

/// One symbol's release state.
#[derive(Debug)]
pub struct SymbolSequencer {
    sequential: bool,
    /// When false (a hot replica), gaps are stepped over silently: the replica
    /// only de-duplicates, and a promotion replays its buffer through a fresh,
    /// gap-holding sequencer.
    hold_gaps: bool,
    last: Option<Trade>,
    recent: RecentIds,
    held: BTreeMap<u64, Trade>,
    gap: Option<PendingGap>,
    /// Untracked ids only: live trades held while a REST resync runs after a
    /// reconnect (`Some` while resyncing).
    resync_held: Option<Vec<Trade>>,
}

impl SymbolSequencer {
    /// A sequencer for a symbol of `exchange` that has released nothing yet.
    pub fn new(exchange: Exchange, hold_gaps: bool) -> Self {
        Self {
            sequential: ids_are_sequential(exchange),
            hold_gaps,
            last: None,
            recent: RecentIds::default(),
            held: BTreeMap::new(),
            gap: None,
            resync_held: None,
        }
    }

    /// A sequencer that continues after `resume` (a promotion).
    pub fn resume(exchange: Exchange, resume: &ResumePoint) -> Self {
        let mut sequencer = Self::new(exchange, true);
        for id in &resume.recent_ids {
            sequencer
                .recent
                .insert(id.clone(), resume.last.exchange_time);
        }
        sequencer
            .recent
            .insert(resume.last.trade_id.clone(), resume.last.exchange_time);
        sequencer.last = Some(resume.last.clone());
        sequencer
    }

    /// Whether the exchange's ids are contiguous (gaps show by themselves).
    pub fn sequential(&self) -> bool {
        self.sequential
    }

    /// The last trade released.
    pub fn last(&self) -> Option<&Trade> {
        self.last.as_ref()
    }

    /// Ids remembered for de-duplication (exchanges without contiguous ids).
    pub fn recent_ids(&self) -> Vec<String> {
        self.recent.order.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The gap being waited on, if any.
    pub fn pending_gap(&self) -> Option<&PendingGap> {
        self.gap.as_ref()
    }

    /// The edges of the pending gap in the exchange's own record ids: the
    /// last record released before it, the first held behind it. (For
    /// aggregated trades the gap is in raw trade ids, history pages in
    /// aggregate ids.)
    pub fn gap_edges(&self) -> (Option<u64>, Option<u64>) {
        (
            self.last.as_ref().and_then(Trade::sequence),
            self.held.values().next().and_then(Trade::sequence),
        )
    }

    /// Offers one received trade.
    pub fn offer(&mut self, trade: Trade, now: Instant, out: &mut Vec<SymbolEvent>) {
        if !self.sequential {
            return self.offer_untracked(trade, out);
        }
        let Some(last) = &self.last else {
            self.release(trade, out);
            return;
        };
        match id_continuity(last, &trade) {
            IdContinuity::Overlap => out.push(SymbolEvent::Duplicate {
                trade_id: trade.trade_id,
            }),
            // Ids that do not parse: nothing to order by, pass it on.
            IdContinuity::Untracked => self.release(trade, out),
            IdContinuity::Contiguous if self.gap.is_none() => self.release(trade, out),
            // A replica steps over gaps; see `hold_gaps`.
            IdContinuity::Gap { .. } if !self.hold_gaps => self.release(trade, out),
            IdContinuity::Contiguous | IdContinuity::Gap { .. } => {
                self.hold(trade, now, out);
                self.drain(now, out);
            }
        }
    }

    /// A heartbeat says the exchange's last trade id is `last_trade_id`:
    /// anything after our last released id up to it is missing (or in flight).
    /// Returns true when we are caught up with it.
    pub fn heartbeat(
        &mut self,
        last_trade_id: u64,
        now: Instant,
        out: &mut Vec<SymbolEvent>,
    ) -> bool {
        if !self.sequential || !self.hold_gaps {
            return false;
        }
        let Some(last_id) = self.last.as_ref().and_then(last_raw_id) else {
            return false;
        };
        if last_trade_id <= last_id {
            return self.gap.is_none();
        }
        match &mut self.gap {
            Some(gap) => gap.last_missing = gap.last_missing.max(last_trade_id),
            None => {
                self.gap = Some(PendingGap {
                    first_missing: last_id + 1,
                    last_missing: last_trade_id,
                    opened: now,
                    backfill: BackfillState::Waiting {
                        since: now,
                        attempts: 0,
                    },
                });
                out.push(SymbolEvent::GapOpened {
                    first_missing: last_id + 1,
                    last_missing: last_trade_id,
                });
            }
        }
        false
    }

    /// Whether a REST backfill should start now (the gap waited `grace`).
    pub fn backfill_due(&self, now: Instant, grace: std::time::Duration) -> bool {
        matches!(
            self.gap,
            Some(PendingGap { backfill: BackfillState::Waiting { since, .. }, .. })
                if now.saturating_duration_since(since) >= grace
        )
    }

    /// Marks the backfill as started; returns the missing id range.
    pub fn start_backfill(&mut self) -> Option<(u64, u64)> {
        let gap = self.gap.as_mut()?;
        let attempts = match gap.backfill {
            BackfillState::Waiting { attempts, .. } => attempts,
            BackfillState::InFlight { .. } => return None,
        };
        gap.backfill = BackfillState::InFlight {
            attempts: attempts + 1,
        };
        Some((gap.first_missing, gap.last_missing))
    }

    /// The REST backfill answered with `trades` (the exchange's recent trades,
    /// oldest first). Missing trades among them are released in id order; what
    /// is still missing afterwards cannot be had from the recent-trades
    /// endpoint and is skipped as [`SymbolEvent::GapUnfilled`].
    pub fn backfilled(&mut self, trades: Vec<Trade>, now: Instant, out: &mut Vec<SymbolEvent>) {
        let Some(gap) = self.gap else {
            // Filled live meanwhile: the REST rows are all duplicates.
            return;
        };
        for trade in trades {
            let first = first_raw_id(&trade);
            let in_gap = first.is_some_and(|f| f >= gap.first_missing && f <= gap.last_missing);
            if in_gap {
                self.hold(trade, now, out);
            }
        }
        self.drain(now, out);
        if let Some(still) = self.gap {
            if still.first_missing == gap.first_missing {
                self.give_up(now, out);
            } else {
                // Part came back; the rest is older than REST reaches or newer
                // than it knew: wait again for the remainder.
                self.gap = Some(PendingGap {
                    backfill: BackfillState::Waiting {
                        since: now,
                        attempts: 0,
                    },
                    ..still
                });
            }
        }
    }

    /// The REST backfill failed. Retries once, then gives up on the gap.
    pub fn backfill_failed(&mut self, now: Instant, out: &mut Vec<SymbolEvent>) {
        let Some(gap) = &mut self.gap else { return };
        match gap.backfill {
            BackfillState::InFlight { attempts } if attempts < 2 => {
                gap.backfill = BackfillState::Waiting {
                    since: now,
                    attempts,
                };
            }
            _ => self.give_up(now, out),
        }
    }

    /// Skips the pending gap: reports it, then releases what was held behind it.
    pub fn give_up(&mut self, now: Instant, out: &mut Vec<SymbolEvent>) {
        let Some(gap) = self.gap.take() else { return };
        let from_time = self.last.as_ref().map_or(0, |t| t.exchange_time);
        let next = self.held.first_key_value().map(|(_, t)| t.clone());
        let to_time = next.as_ref().map_or(from_time, |t| t.exchange_time);
        let last_missing = match next.as_ref().and_then(first_raw_id) {
            Some(first) => first.saturating_sub(1).max(gap.first_missing),
            None => gap.last_missing,
        };
        out.push(SymbolEvent::GapUnfilled {
            first_missing: gap.first_missing,
            last_missing,
            from_time,
            to_time,
        });
        if let Some(next) = next {
            if let Some(first) = first_raw_id(&next) {
                self.held.remove(&first);
            }
            self.release(next, out);
        } else if let Some(last) = &mut self.last {
            // A heartbeat-declared gap with nothing after it yet: continue
            // from the last id the exchange announced.
            last.last_trade_id = Some(gap.last_missing);
            last.first_trade_id = last.first_trade_id.or(Some(gap.last_missing));
        }
        self.drain(now, out);
    }

    /// Where ids say nothing about missed trades (Bybit, Upbit): after a
    /// reconnect, hold live trades until the REST resync says what was missed
    /// meanwhile ([`SymbolSequencer::resynced`]). No-op for sequential ids,
    /// whose gaps show by themselves.
    pub fn begin_resync(&mut self) {
        if !self.sequential && self.resync_held.is_none() {
            self.resync_held = Some(Vec::new());
        }
    }

    /// Whether live trades are held for a resync.
    pub fn resyncing(&self) -> bool {
        self.resync_held.is_some()
    }

    /// The resync's REST rows (oldest first; `None` when it failed): the
    /// trades not seen yet are released, merged with the held live ones in
    /// exchange-time order (REST rows first on equal times: they were made
    /// earlier or are the same trades).
    pub fn resynced(&mut self, rest: Option<Vec<Trade>>, out: &mut Vec<SymbolEvent>) {
        let Some(held) = self.resync_held.take() else {
            return;
        };
        let since = self.last.as_ref().map(|t| t.exchange_time);
        let mut merged: Vec<Trade> = rest
            .unwrap_or_default()
            .into_iter()
            .filter(|t| since.is_none_or(|since| t.exchange_time >= since))
            .collect();
        merged.extend(held);
        // Stable: REST rows keep their order and stay ahead of live trades of the same ms.
        merged.sort_by_key(|t| t.exchange_time);
        for trade in merged {
            self.offer_untracked(trade, out);
        }
    }

    fn offer_untracked(&mut self, trade: Trade, out: &mut Vec<SymbolEvent>) {
        if let Some(held) = &mut self.resync_held {
            if held.len() < MAX_HELD_PER_SYMBOL {
                held.push(trade);
                return;
            }
            // The resync takes too long for this symbol's flow: give it up.
            self.resynced(None, out);
            return self.offer_untracked(trade, out);
        }
        if self.recent.contains(&trade.trade_id) || self.recent.is_stale(trade.exchange_time) {
            out.push(SymbolEvent::Duplicate {
                trade_id: trade.trade_id,
            });
            return;
        }
        self.recent
            .insert(trade.trade_id.clone(), trade.exchange_time);
        self.last = Some(trade.clone());
        out.push(SymbolEvent::Publish(trade));
    }

    fn release(&mut self, trade: Trade, out: &mut Vec<SymbolEvent>) {
        self.last = Some(trade.clone());
        out.push(SymbolEvent::Publish(trade));
    }

    fn hold(&mut self, trade: Trade, now: Instant, out: &mut Vec<SymbolEvent>) {
        let Some(first) = first_raw_id(&trade) else {
            return self.release(trade, out);
        };
        if self.held.contains_key(&first) {
            out.push(SymbolEvent::Duplicate {
                trade_id: trade.trade_id,
            });
            return;
        }
        self.held.insert(first, trade);
        if self.held.len() > MAX_HELD_PER_SYMBOL {
            self.give_up(now, out);
        }
    }

    /// Releases held trades while they follow on; updates or closes the gap.
    fn drain(&mut self, now: Instant, out: &mut Vec<SymbolEvent>) {
        loop {
            let Some(last) = &self.last else { return };
            let Some((&first, next)) = self.held.first_key_value() else {
                break;
            };
            match id_continuity(last, next) {
                IdContinuity::Contiguous | IdContinuity::Untracked => {
                    if let Some(trade) = self.held.remove(&first) {
                        self.release(trade, out);
                    }
                }
                IdContinuity::Overlap => {
                    if let Some(trade) = self.held.remove(&first) {
                        out.push(SymbolEvent::Duplicate {
                            trade_id: trade.trade_id,
                        });
                    }
                }
                IdContinuity::Gap {
                    first_missing,
                    last_missing,
                } => {
                    match &mut self.gap {
                        Some(gap) if gap.first_missing == first_missing => {
                            gap.last_missing = gap.last_missing.max(last_missing);
                        }
                        Some(gap) => {
                            // The front of the gap arrived; a later part is still missing.
                            out.push(SymbolEvent::GapFilled {
                                first_missing: gap.first_missing,
                                last_missing: first_missing - 1,
                            });
                            gap.first_missing = first_missing;
                            gap.last_missing = last_missing;
                        }
                        None => {
                            self.gap = Some(PendingGap {
                                first_missing,
                                last_missing,
                                opened: now,
                                backfill: BackfillState::Waiting {
                                    since: now,
                                    attempts: 0,
                                },
                            });
                            out.push(SymbolEvent::GapOpened {
                                first_missing,
                                last_missing,
                            });
                        }
                    }
                    return;
                }
            }
        }
        // Nothing held: a gap closes once the last released id reaches its end.
        if let Some(gap) = self.gap {
            let reached = self
                .last
                .as_ref()
                .and_then(last_raw_id)
                .is_some_and(|id| id >= gap.last_missing);
            if reached {
                self.gap = None;
                out.push(SymbolEvent::GapFilled {
                    first_missing: gap.first_missing,
                    last_missing: gap.last_missing,
                });
            }
        }
    }
}

fn first_raw_id(trade: &Trade) -> Option<u64> {
    trade.first_trade_id.or_else(|| trade.sequence())
}

fn last_raw_id(trade: &Trade) -> Option<u64> {
    trade.last_trade_id.or_else(|| trade.sequence())
}

/// A bounded set of recent trade ids with their times (oldest evicted first).
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<(String, Millis)>,
    set: HashSet<String>,
}

impl RecentIds {
    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Older than everything remembered while the memory is full: it was seen
    /// (and forgotten) or it is a replay; either way it must not be published
    /// out of order.
    fn is_stale(&self, time: Millis) -> bool {
        self.order.len() >= RECENT_IDS_PER_SYMBOL
            && self.order.front().is_some_and(|(_, oldest)| time < *oldest)
    }

    fn insert(&mut self, id: String, time: Millis) {
        if !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back((id, time));
        while self.order.len() > RECENT_IDS_PER_SYMBOL {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;
    use rust_decimal::Decimal;
    use std::time::Duration;

    fn trade(exchange: Exchange, id: &str, time: Millis) -> Trade {
        Trade {
            exchange,
            symbol: "S".into(),
            instrument: "S-T".into(),
            trade_id: id.into(),
            price: Decimal::ONE,
            quantity: Decimal::ONE,
            side: Side::Buy,
            exchange_time: time,
            receive_time: time,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    fn b(id: u64) -> Trade {
        trade(Exchange::Binance, &id.to_string(), id as Millis * 10)
    }

    fn released(events: &[SymbolEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                SymbolEvent::Publish(t) => Some(t.trade_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn count(events: &[SymbolEvent], f: impl Fn(&SymbolEvent) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }

    #[test]
    fn arrival_orders_release_each_trade_once_in_id_order() {
        let cases: [(&str, Vec<u64>, Vec<u64>, usize); 5] = [
            ("in order", vec![1, 2, 3, 4], vec![1, 2, 3, 4], 0),
            ("duplicates", vec![1, 2, 2, 3, 1, 4], vec![1, 2, 3, 4], 2),
            (
                "rotation overlap",
                vec![1, 2, 3, 2, 3, 4, 4, 5],
                vec![1, 2, 3, 4, 5],
                3,
            ),
            (
                "second connection ahead: held until the first catches up",
                vec![1, 2, 4, 5, 3, 4, 6],
                vec![1, 2, 3, 4, 5, 6],
                1,
            ),
            ("held duplicate", vec![1, 3, 3, 2], vec![1, 2, 3], 1),
        ];
        let now = Instant::now();
        for (name, arrivals, expected, duplicates) in cases {
            let mut seq = SymbolSequencer::new(Exchange::Binance, true);
            let mut out = Vec::new();
            for id in arrivals {
                seq.offer(b(id), now, &mut out);
            }
            let expected: Vec<String> = expected.iter().map(u64::to_string).collect();
            assert_eq!(released(&out), expected, "{name}");
            assert_eq!(
                count(&out, |e| matches!(e, SymbolEvent::Duplicate { .. })),
                duplicates,
                "{name}"
            );
            assert!(seq.pending_gap().is_none(), "{name}");
        }
    }

    #[test]
    fn gap_is_backfilled_in_order() {
        let now = Instant::now();
        let mut seq = SymbolSequencer::new(Exchange::Binance, true);
        let mut out = Vec::new();
        for id in [1, 2, 6, 7] {
            seq.offer(b(id), now, &mut out);
        }
        assert_eq!(released(&out), ["1", "2"]);
        assert!(out.contains(&SymbolEvent::GapOpened {
            first_missing: 3,
            last_missing: 5
        }));
        let grace = Duration::from_millis(500);
        assert!(!seq.backfill_due(now, grace));
        assert!(seq.backfill_due(now + grace, grace));
        assert_eq!(seq.start_backfill(), Some((3, 5)));
        assert!(!seq.backfill_due(now + grace * 2, grace), "in flight");
        out.clear();
        // REST returns the latest trades, some of them newer than the gap.
        let rest: Vec<Trade> = (2..=9).map(b).collect();
        seq.backfilled(rest, now, &mut out);
        assert_eq!(released(&out), ["3", "4", "5", "6", "7"]);
        assert!(out.contains(&SymbolEvent::GapFilled {
            first_missing: 3,
            last_missing: 5
        }));
        out.clear();
        seq.offer(b(8), now, &mut out);
        assert_eq!(released(&out), ["8"]);
    }

    #[test]
    fn gap_older_than_rest_reaches_is_reported_and_skipped() {
        let now = Instant::now();
        let mut seq = SymbolSequencer::new(Exchange::Binance, true);
        let mut out = Vec::new();
        for id in [1, 2, 10, 11] {
            seq.offer(b(id), now, &mut out);
        }
        seq.start_backfill();
        out.clear();
        seq.backfilled((7..=11).map(b).collect(), now, &mut out);
        // 7..=9 come back; 3..=6 are too old for the endpoint.
        assert_eq!(
            out.first(),
            Some(&SymbolEvent::GapUnfilled {
                first_missing: 3,
                last_missing: 6,
                from_time: 20,
                to_time: 70,
            })
        );
        assert_eq!(released(&out), ["7", "8", "9", "10", "11"]);
        assert!(seq.pending_gap().is_none());
    }

    #[test]
    fn failed_backfill_retries_once_then_gives_up() {
        let now = Instant::now();
        let mut seq = SymbolSequencer::new(Exchange::Binance, true);
        let mut out = Vec::new();
        for id in [1, 5] {
            seq.offer(b(id), now, &mut out);
        }
        assert!(seq.start_backfill().is_some());
        seq.backfill_failed(now, &mut out);
        assert!(seq.pending_gap().is_some(), "retried");
        assert!(seq.start_backfill().is_some());
        out.clear();
        seq.backfill_failed(now, &mut out);
        assert_eq!(released(&out), ["5"]);
        assert_eq!(
            count(&out, |e| matches!(e, SymbolEvent::GapUnfilled { .. })),
            1
        );
    }

    #[test]
    fn heartbeat_reveals_a_gap_on_a_quiet_symbol() {
        let now = Instant::now();
        let mut seq = SymbolSequencer::new(Exchange::Coinbase, true);
        let mut out = Vec::new();
        seq.offer(b(1).with_exchange(Exchange::Coinbase), now, &mut out);
        assert!(seq.heartbeat(1, now, &mut out), "caught up");
        assert!(!seq.heartbeat(3, now, &mut out));
        assert!(out.contains(&SymbolEvent::GapOpened {
            first_missing: 2,
            last_missing: 3
        }));
        out.clear();
        seq.offer(b(2).with_exchange(Exchange::Coinbase), now, &mut out);
        assert!(seq.pending_gap().is_some(), "3 is still missing");
        seq.offer(b(3).with_exchange(Exchange::Coinbase), now, &mut out);
        assert_eq!(released(&out), ["2", "3"]);
        assert!(seq.pending_gap().is_none());
    }

    #[test]
    fn aggregated_trades_follow_raw_ids() {
        let now = Instant::now();
        let agg = |id: u64, first: u64, last: u64| Trade {
            first_trade_id: Some(first),
            last_trade_id: Some(last),
            ..b(id)
        };
        let mut seq = SymbolSequencer::new(Exchange::Binance, true);
        let mut out = Vec::new();
        seq.offer(agg(100, 1, 3), now, &mut out);
        seq.offer(agg(101, 4, 4), now, &mut out);
        seq.offer(agg(101, 4, 4), now, &mut out);
        seq.offer(agg(103, 8, 9), now, &mut out);
        assert_eq!(released(&out), ["100", "101"]);
        assert_eq!(
            seq.pending_gap().map(|g| (g.first_missing, g.last_missing)),
            Some((5, 7))
        );
        seq.offer(agg(102, 5, 7), now, &mut out);
        assert_eq!(released(&out), ["100", "101", "102", "103"]);
    }

    #[test]
    fn untracked_ids_dedup_by_recent_set() {
        let now = Instant::now();
        let u = |id: &str, time| trade(Exchange::Bybit, id, time);
        let mut seq = SymbolSequencer::new(Exchange::Bybit, true);
        let mut out = Vec::new();
        for t in [u("a", 1), u("b", 2), u("a", 1), u("c", 3), u("b", 2)] {
            seq.offer(t, now, &mut out);
        }
        assert_eq!(released(&out), ["a", "b", "c"]);
        assert_eq!(
            count(&out, |e| matches!(e, SymbolEvent::Duplicate { .. })),
            2
        );
    }

    #[test]
    fn untracked_resync_merges_missed_rest_trades_before_held_live_ones() {
        let now = Instant::now();
        let u = |id: &str, time| trade(Exchange::Bybit, id, time);
        let mut seq = SymbolSequencer::new(Exchange::Bybit, true);
        let mut out = Vec::new();
        seq.offer(u("a", 10), now, &mut out);
        seq.offer(u("b", 20), now, &mut out);
        // Reconnected: "c" and "d" were made while away; "e" arrives live first.
        seq.begin_resync();
        assert!(seq.resyncing());
        seq.offer(u("e", 50), now, &mut out);
        assert_eq!(released(&out), ["a", "b"], "held while resyncing");
        let rest = vec![u("a", 10), u("b", 20), u("c", 30), u("d", 40), u("e", 50)];
        seq.resynced(Some(rest), &mut out);
        assert_eq!(released(&out), ["a", "b", "c", "d", "e"]);
        assert!(!seq.resyncing());
        // A failed resync releases what was held.
        seq.begin_resync();
        seq.offer(u("f", 60), now, &mut out);
        seq.resynced(None, &mut out);
        assert_eq!(released(&out).last().map(String::as_str), Some("f"));
        // Sequential ids never hold: their gaps show by themselves.
        let mut binance = SymbolSequencer::new(Exchange::Binance, true);
        binance.begin_resync();
        assert!(!binance.resyncing());
    }

    #[test]
    fn replica_steps_over_gaps_and_promotion_resumes_after_the_primary() {
        let now = Instant::now();
        let mut replica = SymbolSequencer::new(Exchange::Binance, false);
        let mut out = Vec::new();
        for id in [5, 6, 6, 9, 10] {
            replica.offer(b(id), now, &mut out);
        }
        let buffer: Vec<Trade> = out
            .iter()
            .filter_map(|e| match e {
                SymbolEvent::Publish(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(buffer.len(), 4, "5 6 9 10");
        // The primary published up to 7; 8 is missing from both.
        let mut primary = SymbolSequencer::resume(
            Exchange::Binance,
            &ResumePoint {
                last: b(7),
                recent_ids: vec![],
            },
        );
        let mut out = Vec::new();
        for t in buffer {
            primary.offer(t, now, &mut out);
        }
        assert!(released(&out).is_empty(), "9 waits behind the gap at 8");
        assert_eq!(
            primary
                .pending_gap()
                .map(|g| (g.first_missing, g.last_missing)),
            Some((8, 8))
        );
        primary.start_backfill();
        primary.backfilled(vec![b(8)], now, &mut out);
        assert_eq!(released(&out), ["8", "9", "10"]);
    }

    impl Trade {
        fn with_exchange(mut self, exchange: Exchange) -> Trade {
            self.exchange = exchange;
            self
        }
    }
}

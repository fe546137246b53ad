//! The pure candle engine: trades → 1s candles → 5s → 1m → 5m.
//!
//! Synchronous and I/O-free: every timestamp comes from the input (trade
//! `exchange_time`, [`Watermark::time`], child `close_time`), the clock is never
//! read, prices and volumes are exact [`Decimal`]s, and candle invariants
//! (`low <= open, close <= high`, taker volumes within volumes, quiet candles
//! empty) are checked with `debug_assert!` on every candle built.
//!
//! # Levels and data flow
//!
//! ```text
//!  Trade ─┐                      Candle(1s)          Candle(5s)          Candle(1m)
//!  Watermark ─► TradeRollup ─────► CandleRollup(5s) ──► CandleRollup(1m) ──► CandleRollup(5m) ──► Candle(5m)
//!  mark_gap ──┘     (level 1)          (level 2)             (level 3)            (level 4)
//! ```
//!
//! * [`TradeRollup`] (level 1) turns trades into 1s candles.
//! * [`CandleRollup`] (levels 2+) turns child candles into parent candles
//!   (1s→5s, 5s→1m, 1m→5m).
//! * [`CandlePipeline`] chains the levels in-process and yields the candles of the
//!   requested intervals in emission order (used by `tickfetch import --out -`).
//!
//! Each level is usable alone: the Kafka rollup stage runs exactly one level per
//! process. Every input call takes an output buffer (`&mut Vec<Candle>`, reused by
//! the caller) and returns an [`Outcome`] so that nothing is dropped silently.
//!
//! # Windows
//!
//! Event time, tumbling, aligned to the UTC epoch: `[t, t + interval)`, with
//! `close_time = t + interval − 1` ([`Interval::window_start`]). State is per
//! `(exchange, symbol)`, keyed by [`crate::wire::feed_key`] (`exchange:symbol`).
//! A symbol's watermark is the maximum of the trade times (level 1), child
//! `close_time + 1` (levels 2+) and [`Watermark::time`] it has seen. A window closes
//! when `watermark >= end + grace`; windows close in order, one candle per
//! window. Between a symbol's first window and its watermark, windows without
//! data close as `quiet` candles at the previous close; no candle is built before
//! a symbol's first window. [`TradeRollup::finish`] / [`CandlePipeline::finish`]
//! close the remaining windows up to the last window holding data (no trailing
//! quiet windows are invented).
//!
//! # OHLC rules
//!
//! Level 1: open = first trade, close = last trade, ordered by
//! `(exchange_time, Trade::sequence())`, falling back to arrival order where
//! the id is not numeric; high/low = max/min; volumes are exact sums; trade_count
//! sums [`Trade::trade_count`] (an aggTrade counts `last − first + 1`); taker-buy
//! volumes come from trades whose taker bought; first/last trade ids are
//! [`Trade::first_raw_id`] of the open trade and [`Trade::last_raw_id`] of the close
//! trade (Binance kline `f`/`L`).
//!
//! Levels 2+: quiet children never bend the parent: open/high/low/close and the
//! ids come from non-quiet children only, volumes and counts are summed; all
//! children quiet → quiet parent at the previous close; any degraded child →
//! degraded parent.
//!
//! # Duplicates, late data, corrections
//!
//! * A trade with the same `(exchange, symbol, trade_id)` counts once
//!   ([`Outcome::Duplicate`]), also after its window closed (while retained).
//!   Numeric ids are kept as sorted inclusive ranges (contiguous ids collapse into
//!   one range), other ids in a hash set.
//! * A child candle whose revision is `<=` the one held for its child window is a
//!   duplicate (replays and aborted-then-retried records are harmless).
//! * A trade (or child) for a window that already closed but is within the
//!   retention horizon (`window end + retention > watermark`) is merged and the
//!   window is re-emitted with `revision + 1` ([`Outcome::Corrected`]). When the
//!   correction changes the window's close, the closed quiet windows that follow
//!   it (up to the next window with data) are re-emitted with `revision + 1` at
//!   the new close too, so they keep "open = high = low = close = previous close".
//!   A correction that changes nothing in the candle is not re-emitted.
//! * Beyond the horizon the input is [`Outcome::TooLate`]: the caller counts it
//!   and sends it to a dead-letter topic.
//! * Corrections flow up: a parent level that receives a higher child revision
//!   for a closed, retained parent window recomputes it and emits `revision + 1`.
//!   With equal retention on every level this always reaches the top, because a
//!   parent window ends no earlier than its children and the parent watermark
//!   never runs ahead of the child watermark.
//! * [`TradeRollup::mark_gap`] marks a known feed gap `[from, to)`: windows
//!   overlapping it become `degraded` (closed retained windows are re-emitted with
//!   `revision + 1`).
//!
//! # State, restore and determinism
//!
//! Each level's per-symbol state ([`TradeState`], [`CandleState`]) is
//! `Serialize + Deserialize` (JSON-friendly, decimals as strings). The caller
//! drains the keys touched since the last call with `take_touched`, reads
//! `state(key)` and writes it to a compacted changelog keyed by symbol; on start it
//! calls `restore(key, state)`. A symbol's state holds everything its output
//! depends on (including arrival-order tie-breaks), so the same inputs in the same
//! order after a restore produce byte-identical candles. `finish` walks symbols in
//! key order, so it is deterministic as well.
//!
//! # Memory
//!
//! Per symbol and level: the windows that are open, or closed but within
//! `retention` of the watermark, *and* hold data (quiet windows are implicit
//! unless corrected), so at most `(grace + retention) / interval + 2` windows.
//! A level-1 window takes about 300 bytes in memory and 175 bytes in the JSON
//! state (its internals serialize as arrays, not objects); a parent window holds
//! one slot per child (about 230 bytes with data, 40 without). The trade-id set
//! holds at most about 1.5 × retention of ids (pruned every half retention): one
//! 16-byte range for exchanges with contiguous ids, else one entry per trade.
//! With the defaults (10 minutes) a symbol trading every second costs about
//! 180 KB in memory and 105 KB of state JSON at level 1, and about 140 KB in
//! memory at 5s; an idle symbol a few hundred bytes. Windows and ids older than
//! the horizon are evicted as the watermark advances. Since the stage writes a
//! touched symbol's whole state in every transaction, `retention_ms` is the knob
//! that trades correction reach against changelog bytes.
//! A symbol whose input stops keeps its state until [`TradeRollup::remove`].
//!
//! Watermarks must be sane: a watermark far ahead of a symbol's data closes every
//! window up to it, one quiet candle each (the stage checks watermarks against
//! its clock before handing them here).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Candle, CandleStatus, Exchange, Interval, Millis, Side, Trade, Watermark};
use crate::wire::feed_key;

/// Latest accepted event time (9999-12-31T23:59:59.999Z); later or negative
/// times are rejected as input errors so that window arithmetic cannot overflow.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// Errors of the candle engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A level configuration is not usable.
    #[error("invalid candle engine config: {0}")]
    InvalidConfig(String),
    /// A pipeline was asked for no interval at all.
    #[error("no candle interval requested")]
    NoIntervals,
    /// 1s candles are built from trades by [`TradeRollup`], not by [`CandleRollup`].
    #[error("{0} candles are built from trades, not from child candles")]
    NotAParentInterval(Interval),
    /// A candle of the wrong interval was given to a [`CandleRollup`].
    #[error("{key}: expected a {expected} candle, got a {got} candle")]
    WrongChildInterval {
        key: String,
        expected: Interval,
        got: Interval,
    },
    /// A child candle that cannot be right (misaligned window, low above high…).
    #[error("{key}: {interval} candle at {open_time}: {reason}")]
    InvalidCandle {
        key: String,
        interval: Interval,
        open_time: Millis,
        reason: &'static str,
    },
    /// A trade that cannot be right (negative price, time out of range…).
    #[error("{key}: trade {trade_id}: {reason}")]
    InvalidTrade {
        key: String,
        trade_id: String,
        reason: &'static str,
    },
    /// A watermark time out of range.
    #[error("{key}: watermark time {time} is out of range")]
    InvalidWatermark { key: String, time: Millis },
    /// An empty or reversed gap.
    #[error("{key}: gap [{from}, {to}) is empty, reversed or out of range")]
    InvalidGap {
        key: String,
        from: Millis,
        to: Millis,
    },
    /// A state restored under a key that is not its own.
    #[error("state of {state_key} cannot be restored under key {key}")]
    KeyMismatch { key: String, state_key: String },
}

impl EngineError {
    /// `true` for configuration errors (the stage cannot run); `false` for input
    /// errors, where the record is dead-lettered and processing goes on.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidConfig(_)
                | EngineError::NoIntervals
                | EngineError::NotAParentInterval(_)
        )
    }
}

/// What happened to one input (trade or child candle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Merged into an open window.
    Accepted,
    /// Already counted (same trade id, or a child revision not newer than held).
    Duplicate,
    /// Late but within retention: merged into a closed window; a corrected candle
    /// (`revision + 1`) was emitted unless the candle did not change.
    Corrected,
    /// Older than the retention horizon: not in any candle. Count it and send it
    /// to the dead-letter topic.
    TooLate,
}

impl Outcome {
    /// Lower-case name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Corrected => "corrected",
            Outcome::TooLate => "too_late",
        }
    }
}

/// The outcome of [`TradeRollup::on_trade`].
pub type TradeOutcome = Outcome;
/// The outcome of [`CandleRollup::on_candle`].
pub type CandleOutcome = Outcome;

/// Timing of one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// How long after a window's end (in event time) the window stays open for
    /// stragglers before it closes.
    pub grace_ms: Millis,
    /// How long after a window's end (in event time, behind the watermark) a
    /// closed window is kept for corrections. Must be `>= grace_ms`.
    pub retention_ms: Millis,
}

impl LevelConfig {
    /// Level 1 default: 1 s grace, 10 min retention.
    pub const TRADES_DEFAULT: LevelConfig = LevelConfig {
        grace_ms: 1_000,
        retention_ms: 600_000,
    };
    /// Parent levels' default: no grace (children arrive only after they close),
    /// 10 min retention.
    pub const CANDLES_DEFAULT: LevelConfig = LevelConfig {
        grace_ms: 0,
        retention_ms: 600_000,
    };

    /// Checks the values.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] if a value is negative, absurdly large, or
    /// retention is shorter than grace.
    pub fn validate(&self) -> Result<(), EngineError> {
        const LIMIT: Millis = 366 * 24 * 3_600_000;
        if !(0..=LIMIT).contains(&self.grace_ms) || !(0..=LIMIT).contains(&self.retention_ms) {
            return Err(EngineError::InvalidConfig(format!(
                "grace_ms ({}) and retention_ms ({}) must be between 0 and {LIMIT}",
                self.grace_ms, self.retention_ms
            )));
        }
        if self.retention_ms < self.grace_ms {
            return Err(EngineError::InvalidConfig(format!(
                "retention_ms ({}) must be >= grace_ms ({})",
                self.retention_ms, self.grace_ms
            )));
        }
        Ok(())
    }
}

/// Timing of a [`CandlePipeline`]: level 1 and the parent levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The trades → 1s level.
    pub trades: LevelConfig,
    /// Every candles → candles level (5s, 1m, 5m).
    pub candles: LevelConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            trades: LevelConfig::TRADES_DEFAULT,
            candles: LevelConfig::CANDLES_DEFAULT,
        }
    }
}

// ---------------------------------------------------------------------------
// Internal building blocks
// ---------------------------------------------------------------------------

/// A level's interval and timing, resolved.
#[derive(Debug, Clone, Copy)]
struct Params {
    interval: Interval,
    len: Millis,
    grace: Millis,
    retention: Millis,
}

impl Params {
    fn new(interval: Interval, config: LevelConfig) -> Result<Self, EngineError> {
        config.validate()?;
        Ok(Params {
            interval,
            len: interval.millis(),
            grace: config.grace_ms,
            retention: config.retention_ms,
        })
    }

    fn config(&self) -> LevelConfig {
        LevelConfig {
            grace_ms: self.grace,
            retention_ms: self.retention,
        }
    }

    /// Whether the window starting at `start` is past the retention horizon.
    fn evictable(&self, start: Millis, wm: Millis) -> bool {
        start + self.len + self.retention <= wm
    }

    /// Start of the last window that may close at watermark `wm`.
    fn last_closable(&self, wm: Millis) -> Millis {
        self.interval.window_start(wm - self.len - self.grace)
    }

    /// Start of the first window still within retention at watermark `wm`.
    fn first_retained(&self, wm: Millis) -> Millis {
        self.interval.window_start(wm - self.len - self.retention) + self.len
    }
}

/// A raw trade id as carried in candles: numeric ids without allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum RawId {
    Num(u64),
    Text(String),
}

impl RawId {
    fn parse(id: &str) -> RawId {
        match numeric_id(id) {
            Some(n) => RawId::Num(n),
            None => RawId::Text(id.to_owned()),
        }
    }

    /// Overwrites `self` with `id`, reusing a text buffer where there is one.
    fn assign(&mut self, id: IdRef<'_>) {
        match (self, id) {
            (slot, IdRef::Num(n)) => *slot = RawId::Num(n),
            (RawId::Text(buf), IdRef::Text(text)) => {
                buf.clear();
                buf.push_str(text);
            }
            (slot, IdRef::Text(text)) => *slot = RawId::Text(text.to_owned()),
        }
    }

    fn from_ref(id: IdRef<'_>) -> RawId {
        match id {
            IdRef::Num(n) => RawId::Num(n),
            IdRef::Text(text) => RawId::Text(text.to_owned()),
        }
    }

    fn render(&self) -> String {
        match self {
            RawId::Num(n) => n.to_string(),
            RawId::Text(text) => text.clone(),
        }
    }
}

/// A borrowed trade id: numeric where the text is the canonical form of a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdRef<'a> {
    Num(u64),
    Text(&'a str),
}

impl<'a> IdRef<'a> {
    fn of(id: &'a str) -> IdRef<'a> {
        match numeric_id(id) {
            Some(n) => IdRef::Num(n),
            None => IdRef::Text(id),
        }
    }
}

/// `Some(n)` if `id` is exactly the decimal rendering of `n` (no sign, no leading
/// zeros), so that the number renders back to the same text.
fn numeric_id(id: &str) -> Option<u64> {
    let bytes = id.as_bytes();
    if bytes.is_empty()
        || (bytes.len() > 1 && bytes[0] == b'0')
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    id.parse().ok()
}

/// The values of a window with data (the OHLCV part of a candle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BarRepr", from = "BarRepr")]
struct Bar {
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
    quote_volume: Decimal,
    trade_count: u64,
    taker_buy_volume: Decimal,
    taker_buy_quote_volume: Decimal,
    first_id: Option<RawId>,
    last_id: Option<RawId>,
}

/// [`Bar`] in the state's JSON: an array in field order (a changelog record
/// holds hundreds of these, so no field names).
#[derive(Serialize, Deserialize)]
struct BarRepr(
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    u64,
    Decimal,
    Decimal,
    Option<RawId>,
    Option<RawId>,
);

impl From<Bar> for BarRepr {
    fn from(b: Bar) -> Self {
        BarRepr(
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            b.quote_volume,
            b.trade_count,
            b.taker_buy_volume,
            b.taker_buy_quote_volume,
            b.first_id,
            b.last_id,
        )
    }
}

impl From<BarRepr> for Bar {
    fn from(r: BarRepr) -> Self {
        Bar {
            open: r.0,
            high: r.1,
            low: r.2,
            close: r.3,
            volume: r.4,
            quote_volume: r.5,
            trade_count: r.6,
            taker_buy_volume: r.7,
            taker_buy_quote_volume: r.8,
            first_id: r.9,
            last_id: r.10,
        }
    }
}

impl Bar {
    /// Appends a later bar (a later child window) to this one.
    fn absorb(&mut self, later: &Bar) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume = self.volume.saturating_add(later.volume);
        self.quote_volume = self.quote_volume.saturating_add(later.quote_volume);
        self.trade_count = self.trade_count.saturating_add(later.trade_count);
        self.taker_buy_volume = self.taker_buy_volume.saturating_add(later.taker_buy_volume);
        self.taker_buy_quote_volume = self
            .taker_buy_quote_volume
            .saturating_add(later.taker_buy_quote_volume);
        self.last_id.clone_from(&later.last_id);
    }
}

/// A known feed gap `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Gap {
    from: Millis,
    to: Millis,
}

/// What a window holds, per level.
trait WindowPayload: Default {
    /// The candle values if the window has data.
    fn bar(&self) -> Option<Cow<'_, Bar>>;
    /// The close if the window has data (cheap).
    fn close(&self) -> Option<Decimal>;
    /// Whether an input marked the window degraded.
    fn degraded(&self) -> bool;
    /// The price a no-data window shows when no earlier close is known.
    fn fallback_close(&self) -> Option<Decimal>;
}

/// One stored window: its payload and the revision last emitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Window<P> {
    #[serde(rename = "r")]
    revision: u32,
    #[serde(rename = "w")]
    payload: P,
}

/// Where an input's window stands.
enum Placement {
    Open,
    Closed,
    TooLate,
}

/// The level-independent part of a symbol's state: watermark, windows, gaps.
///
/// Windows not in `windows` with `first_start <= start < closed_until` were
/// emitted as quiet candles at revision 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SymbolCore<P> {
    exchange: Exchange,
    symbol: String,
    watermark: Option<Millis>,
    /// Start of the symbol's first window (no candle before it).
    first_start: Option<Millis>,
    /// Every window starting before this has closed (`None`: none has yet).
    closed_until: Option<Millis>,
    /// Close of the last closed window, in window order.
    last_close: Option<Decimal>,
    /// Close of the latest evicted window with data.
    evicted_close: Option<Decimal>,
    windows: BTreeMap<Millis, Window<P>>,
    gaps: Vec<Gap>,
}

impl<P: WindowPayload> SymbolCore<P> {
    fn new(exchange: Exchange, symbol: &str) -> Self {
        SymbolCore {
            exchange,
            symbol: symbol.to_owned(),
            watermark: None,
            first_start: None,
            closed_until: None,
            last_close: None,
            evicted_close: None,
            windows: BTreeMap::new(),
            gaps: Vec::new(),
        }
    }

    fn placement(&self, p: &Params, start: Millis) -> Placement {
        if self.watermark.is_some_and(|wm| p.evictable(start, wm)) {
            return Placement::TooLate;
        }
        match self.closed_until {
            Some(closed) if start < closed => Placement::Closed,
            _ => Placement::Open,
        }
    }

    fn advance_watermark(&mut self, time: Millis) {
        if self.watermark.is_none_or(|wm| time > wm) {
            self.watermark = Some(time);
        }
    }

    /// The payload of an open window, created if needed.
    fn open_window(&mut self, start: Millis) -> &mut P {
        if self.first_start.is_none_or(|first| start < first) {
            self.first_start = Some(start);
        }
        &mut self.windows.entry(start).or_default().payload
    }

    fn in_gap(&self, p: &Params, start: Millis) -> bool {
        let end = start + p.len;
        self.gaps.iter().any(|gap| gap.from < end && start < gap.to)
    }

    /// The close a no-data window at `start` shows: the latest earlier close.
    fn prev_close(&self, start: Millis) -> Option<Decimal> {
        self.windows
            .range(..start)
            .rev()
            .find_map(|(_, window)| window.payload.close())
            .or(self.evicted_close)
    }

    /// The candle of window `start` as it stands (revision as last emitted).
    fn candle_at(&self, p: &Params, start: Millis, prev_close: Option<Decimal>) -> Option<Candle> {
        let window = self.windows.get(&start);
        let bar = window.and_then(|w| w.payload.bar());
        let degraded = window.is_some_and(|w| w.payload.degraded()) || self.in_gap(p, start);
        let prev_close = prev_close.or_else(|| window.and_then(|w| w.payload.fallback_close()));
        build_candle(
            self.exchange,
            &self.symbol,
            p,
            start,
            bar.as_deref(),
            prev_close,
            degraded,
            window.map_or(0, |w| w.revision),
        )
    }

    /// Closes every window that the watermark allows, then evicts.
    fn close_ready(&mut self, p: &Params, out: &mut Vec<Candle>) {
        let Some(wm) = self.watermark else { return };
        self.close_through(p, p.last_closable(wm), out);
        self.evict(p, wm);
    }

    /// Closes windows in order, up to and including the one starting at `last`.
    fn close_through(&mut self, p: &Params, last: Millis, out: &mut Vec<Candle>) {
        let Some(first) = self.first_start else {
            return;
        };
        let from = self.closed_until.unwrap_or(first);
        let mut start = from;
        while start <= last {
            if let Some(candle) = self.candle_at(p, start, self.last_close) {
                self.last_close = Some(candle.close);
                out.push(candle);
            }
            start += p.len;
        }
        if start > from {
            self.closed_until = Some(start);
        }
    }

    fn evict(&mut self, p: &Params, wm: Millis) {
        let closed = self.closed_until.unwrap_or(Millis::MIN);
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start >= closed || !p.evictable(start, wm) {
                break;
            }
            if let Some(close) = entry.get().payload.close() {
                self.evicted_close = Some(close);
            }
            entry.remove();
        }
        if !self.gaps.is_empty() {
            self.gaps
                .retain(|gap| !p.evictable(p.interval.window_start(gap.to - 1), wm));
        }
    }

    /// Merges late input into the closed window `start` and emits what changed.
    fn apply_closed(
        &mut self,
        p: &Params,
        start: Millis,
        mutate: impl FnOnce(&mut P),
        out: &mut Vec<Candle>,
    ) {
        match self.first_start {
            Some(first) if start >= first => {}
            first => {
                // Earlier than anything seen: these windows were never emitted, so
                // they go out now at revision 0, with quiet fill up to the old first.
                mutate(&mut self.windows.entry(start).or_default().payload);
                self.first_start = Some(start);
                let end = first.or(self.closed_until).unwrap_or(start + p.len);
                let mut prev = None;
                let mut at = start;
                while at < end {
                    if let Some(candle) = self.candle_at(p, at, prev) {
                        prev = Some(candle.close);
                        out.push(candle);
                    }
                    at += p.len;
                }
                return;
            }
        }
        let prev = self.prev_close(start);
        let before = self.candle_at(p, start, prev);
        mutate(&mut self.windows.entry(start).or_default().payload);
        let Some(mut after) = self.candle_at(p, start, prev) else {
            return;
        };
        if let Some(before) = &before {
            if same_values(before, &after) {
                return;
            }
            if let Some(window) = self.windows.get_mut(&start) {
                window.revision += 1;
                after.revision = window.revision;
            }
        }
        let new_close = after.close;
        let close_changed = before.as_ref().map(|b| b.close) != Some(new_close);
        out.push(after);
        if close_changed {
            self.reemit_followers(p, start, new_close, out);
        }
    }

    /// Re-emits the closed no-data windows after `start` at `new_close`.
    fn reemit_followers(
        &mut self,
        p: &Params,
        start: Millis,
        new_close: Decimal,
        out: &mut Vec<Candle>,
    ) {
        let Some(closed) = self.closed_until else {
            return;
        };
        let mut at = start + p.len;
        while at < closed {
            if self
                .windows
                .get(&at)
                .is_some_and(|w| w.payload.close().is_some())
            {
                return;
            }
            self.windows.entry(at).or_default().revision += 1;
            if let Some(candle) = self.candle_at(p, at, Some(new_close)) {
                out.push(candle);
            }
            at += p.len;
        }
        self.last_close = Some(new_close);
    }

    fn mark_gap(&mut self, p: &Params, gap: Gap, out: &mut Vec<Candle>) {
        let mut affected = Vec::new();
        if let (Some(first), Some(closed), Some(wm)) =
            (self.first_start, self.closed_until, self.watermark)
        {
            let lo = p
                .interval
                .window_start(gap.from)
                .max(first)
                .max(p.first_retained(wm));
            let hi = p.interval.window_start(gap.to - 1).min(closed - p.len);
            let mut at = lo;
            while at <= hi {
                let prev = self.prev_close(at);
                if let Some(before) = self.candle_at(p, at, prev) {
                    if before.status != CandleStatus::Degraded {
                        affected.push((at, prev));
                    }
                }
                at += p.len;
            }
        }
        self.gaps.push(gap);
        for (at, prev) in affected {
            self.windows.entry(at).or_default().revision += 1;
            if let Some(candle) = self.candle_at(p, at, prev) {
                out.push(candle);
            }
        }
    }

    fn finish(&mut self, p: &Params, out: &mut Vec<Candle>) {
        if let Some((&last, _)) = self.windows.last_key_value() {
            self.close_through(p, last, out);
        }
    }
}

/// All candle fields but the revision are equal.
fn same_values(a: &Candle, b: &Candle) -> bool {
    a.exchange == b.exchange
        && a.symbol == b.symbol
        && a.interval == b.interval
        && a.open_time == b.open_time
        && a.close_time == b.close_time
        && a.open == b.open
        && a.high == b.high
        && a.low == b.low
        && a.close == b.close
        && a.volume == b.volume
        && a.quote_volume == b.quote_volume
        && a.trade_count == b.trade_count
        && a.taker_buy_volume == b.taker_buy_volume
        && a.taker_buy_quote_volume == b.taker_buy_quote_volume
        && a.first_trade_id == b.first_trade_id
        && a.last_trade_id == b.last_trade_id
        && a.status == b.status
}

#[allow(clippy::too_many_arguments)]
fn build_candle(
    exchange: Exchange,
    symbol: &str,
    p: &Params,
    start: Millis,
    bar: Option<&Bar>,
    prev_close: Option<Decimal>,
    degraded: bool,
    revision: u32,
) -> Option<Candle> {
    let status = if degraded {
        CandleStatus::Degraded
    } else if bar.is_some() {
        CandleStatus::Complete
    } else {
        CandleStatus::Quiet
    };
    let candle = match bar {
        Some(bar) => Candle {
            exchange,
            symbol: symbol.to_owned(),
            interval: p.interval,
            open_time: start,
            close_time: start + p.len - 1,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            quote_volume: bar.quote_volume,
            trade_count: bar.trade_count,
            taker_buy_volume: bar.taker_buy_volume,
            taker_buy_quote_volume: bar.taker_buy_quote_volume,
            first_trade_id: bar.first_id.as_ref().map(RawId::render),
            last_trade_id: bar.last_id.as_ref().map(RawId::render),
            status,
            revision,
        },
        None => {
            let price = prev_close?;
            Candle {
                exchange,
                symbol: symbol.to_owned(),
                interval: p.interval,
                open_time: start,
                close_time: start + p.len - 1,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: Decimal::ZERO,
                quote_volume: Decimal::ZERO,
                trade_count: 0,
                taker_buy_volume: Decimal::ZERO,
                taker_buy_quote_volume: Decimal::ZERO,
                first_trade_id: None,
                last_trade_id: None,
                status,
                revision,
            }
        }
    };
    check_candle(&candle);
    Some(candle)
}

fn check_candle(c: &Candle) {
    debug_assert!(
        c.low <= c.open && c.open <= c.high,
        "open outside low..high: {c:?}"
    );
    debug_assert!(
        c.low <= c.close && c.close <= c.high,
        "close outside low..high: {c:?}"
    );
    debug_assert!(
        c.volume >= Decimal::ZERO && c.quote_volume >= Decimal::ZERO,
        "negative volume: {c:?}"
    );
    debug_assert!(
        c.taker_buy_volume <= c.volume,
        "taker buy above volume: {c:?}"
    );
    debug_assert!(
        c.taker_buy_quote_volume <= c.quote_volume,
        "taker buy quote above quote: {c:?}"
    );
    debug_assert_eq!(
        c.open_time,
        c.interval.window_start(c.open_time),
        "misaligned: {c:?}"
    );
    debug_assert_eq!(c.close_time, c.open_time + c.interval.millis() - 1);
    debug_assert!(
        c.status != CandleStatus::Quiet
            || (c.volume.is_zero() && c.trade_count == 0 && c.first_trade_id.is_none()),
        "quiet candle with data: {c:?}"
    );
}

// ---------------------------------------------------------------------------
// Per-symbol maps with allocation-free lookup and touched-key tracking
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Slot<S> {
    state: S,
    touched: bool,
}

#[derive(Debug, Clone)]
struct SymbolMap<S> {
    states: HashMap<String, Slot<S>>,
    key_buf: String,
    touched: Vec<String>,
}

impl<S> SymbolMap<S> {
    fn new() -> Self {
        SymbolMap {
            states: HashMap::new(),
            key_buf: String::new(),
            touched: Vec::new(),
        }
    }

    /// Runs `f` on the state of `exchange:symbol` (created by `new` if absent),
    /// marking it touched. Looks up by a reused key buffer: no allocation unless
    /// the symbol is new or first touched since the last [`Self::take_touched`].
    fn with<R>(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        new: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> R {
        self.key_buf.clear();
        self.key_buf.push_str(exchange.as_str());
        self.key_buf.push(':');
        self.key_buf.push_str(symbol);
        let key = self.key_buf.as_str();
        if let Some(slot) = self.states.get_mut(key) {
            if !slot.touched {
                slot.touched = true;
                self.touched.push(key.to_owned());
            }
            return f(&mut slot.state);
        }
        self.touched.push(key.to_owned());
        let slot = self.states.entry(key.to_owned()).or_insert(Slot {
            state: new(),
            touched: true,
        });
        f(&mut slot.state)
    }

    fn take_touched(&mut self) -> Vec<String> {
        for key in &self.touched {
            if let Some(slot) = self.states.get_mut(key) {
                slot.touched = false;
            }
        }
        std::mem::take(&mut self.touched)
    }

    fn get(&self, key: &str) -> Option<&S> {
        self.states.get(key).map(|slot| &slot.state)
    }

    fn insert(&mut self, key: &str, state: S) {
        self.states.insert(
            key.to_owned(),
            Slot {
                state,
                touched: false,
            },
        );
    }

    fn remove(&mut self, key: &str) -> Option<S> {
        self.touched.retain(|k| k != key);
        self.states.remove(key).map(|slot| slot.state)
    }

    fn sorted_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.states.keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut S> {
        self.states.get_mut(key).map(|slot| &mut slot.state)
    }
}

fn check_restore_key(key: &str, exchange: Exchange, symbol: &str) -> Result<(), EngineError> {
    let own = feed_key(exchange, symbol);
    if own == key {
        Ok(())
    } else {
        Err(EngineError::KeyMismatch {
            key: key.to_owned(),
            state_key: own,
        })
    }
}

fn check_time(time: Millis) -> bool {
    (0..=MAX_EVENT_TIME).contains(&time)
}

// ---------------------------------------------------------------------------
// Level 1: trades → 1s candles
// ---------------------------------------------------------------------------

/// Order of a trade within a window: `(exchange_time, sequence)`; trades without
/// a numeric sequence tie-break by arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(Millis, Option<u64>)", from = "(Millis, Option<u64>)")]
struct OrderKey {
    time: Millis,
    seq: Option<u64>,
}

impl From<OrderKey> for (Millis, Option<u64>) {
    fn from(key: OrderKey) -> Self {
        (key.time, key.seq)
    }
}

impl From<(Millis, Option<u64>)> for OrderKey {
    fn from((time, seq): (Millis, Option<u64>)) -> Self {
        OrderKey { time, seq }
    }
}

impl OrderKey {
    /// Whether a trade with this key, arriving now, opens before `current`.
    fn opens_before(&self, current: &OrderKey) -> bool {
        self.time < current.time
            || (self.time == current.time
                && matches!((self.seq, current.seq), (Some(a), Some(b)) if a < b))
    }

    /// Whether a trade with this key, arriving now, closes after `current`.
    fn closes_after(&self, current: &OrderKey) -> bool {
        self.time > current.time
            || (self.time == current.time
                && match (self.seq, current.seq) {
                    (Some(a), Some(b)) => a > b,
                    _ => true,
                })
    }
}

/// A 1s window built from trades, kept incrementally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "TradeWindowRepr", from = "TradeWindowRepr")]
struct TradeWindow {
    bar: Option<Bar>,
    open_key: OrderKey,
    close_key: OrderKey,
    /// Smallest numeric trade id merged (bounds the id set's pruning).
    min_id: Option<u64>,
}

/// [`TradeWindow`] in the state's JSON: `[bar, open_key, close_key, min_id]`.
#[derive(Serialize, Deserialize)]
struct TradeWindowRepr(Option<Bar>, OrderKey, OrderKey, Option<u64>);

impl From<TradeWindow> for TradeWindowRepr {
    fn from(w: TradeWindow) -> Self {
        TradeWindowRepr(w.bar, w.open_key, w.close_key, w.min_id)
    }
}

impl From<TradeWindowRepr> for TradeWindow {
    fn from(r: TradeWindowRepr) -> Self {
        TradeWindow {
            bar: r.0,
            open_key: r.1,
            close_key: r.2,
            min_id: r.3,
        }
    }
}

impl TradeWindow {
    fn add(&mut self, trade: &Trade, id: IdRef<'_>) {
        let key = OrderKey {
            time: trade.exchange_time,
            seq: trade.sequence(),
        };
        let quote = trade.price * trade.quantity;
        let buy = trade.side == Side::Buy;
        let first_id = match trade.first_trade_id {
            Some(n) => IdRef::Num(n),
            None => id,
        };
        let last_id = match trade.last_trade_id {
            Some(n) => IdRef::Num(n),
            None => id,
        };
        match &mut self.bar {
            None => {
                self.bar = Some(Bar {
                    open: trade.price,
                    high: trade.price,
                    low: trade.price,
                    close: trade.price,
                    volume: trade.quantity,
                    quote_volume: quote,
                    trade_count: trade.trade_count(),
                    taker_buy_volume: if buy { trade.quantity } else { Decimal::ZERO },
                    taker_buy_quote_volume: if buy { quote } else { Decimal::ZERO },
                    first_id: Some(RawId::from_ref(first_id)),
                    last_id: Some(RawId::from_ref(last_id)),
                });
                self.open_key = key;
                self.close_key = key;
            }
            Some(bar) => {
                bar.high = bar.high.max(trade.price);
                bar.low = bar.low.min(trade.price);
                bar.volume = bar.volume.saturating_add(trade.quantity);
                bar.quote_volume = bar.quote_volume.saturating_add(quote);
                bar.trade_count = bar.trade_count.saturating_add(trade.trade_count());
                if buy {
                    bar.taker_buy_volume = bar.taker_buy_volume.saturating_add(trade.quantity);
                    bar.taker_buy_quote_volume = bar.taker_buy_quote_volume.saturating_add(quote);
                }
                if key.opens_before(&self.open_key) {
                    bar.open = trade.price;
                    assign_id(&mut bar.first_id, first_id);
                    self.open_key = key;
                }
                if key.closes_after(&self.close_key) {
                    bar.close = trade.price;
                    assign_id(&mut bar.last_id, last_id);
                    self.close_key = key;
                }
            }
        }
        if let IdRef::Num(n) = id {
            self.min_id = Some(self.min_id.map_or(n, |m| m.min(n)));
        }
    }
}

fn assign_id(slot: &mut Option<RawId>, id: IdRef<'_>) {
    match slot {
        Some(raw) => raw.assign(id),
        None => *slot = Some(RawId::from_ref(id)),
    }
}

impl WindowPayload for TradeWindow {
    fn bar(&self) -> Option<Cow<'_, Bar>> {
        self.bar.as_ref().map(Cow::Borrowed)
    }

    fn close(&self) -> Option<Decimal> {
        self.bar.as_ref().map(|bar| bar.close)
    }

    fn degraded(&self) -> bool {
        false
    }

    fn fallback_close(&self) -> Option<Decimal> {
        None
    }
}

/// The trade ids of a symbol's retained windows: numeric ids as sorted,
/// disjoint, non-adjacent inclusive ranges; other ids with their window start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TradeIdSet {
    ranges: Vec<(u64, u64)>,
    #[serde(serialize_with = "serialize_sorted")]
    text: HashMap<String, Millis>,
}

fn serialize_sorted<S: serde::Serializer>(
    map: &HashMap<String, Millis>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let sorted: BTreeMap<&String, &Millis> = map.iter().collect();
    sorted.serialize(serializer)
}

impl TradeIdSet {
    fn contains(&self, id: IdRef<'_>) -> bool {
        match id {
            IdRef::Num(n) => {
                let idx = self.ranges.partition_point(|r| r.0 <= n);
                idx > 0 && self.ranges[idx - 1].1 >= n
            }
            IdRef::Text(text) => self.text.contains_key(text),
        }
    }

    fn insert(&mut self, id: IdRef<'_>, window_start: Millis) {
        match id {
            IdRef::Num(n) => self.insert_num(n),
            IdRef::Text(text) => {
                self.text.insert(text.to_owned(), window_start);
            }
        }
    }

    fn insert_num(&mut self, n: u64) {
        if let Some(last) = self.ranges.last_mut() {
            if n > last.1 {
                if n == last.1 + 1 {
                    last.1 = n;
                } else {
                    self.ranges.push((n, n));
                }
                return;
            }
        } else {
            self.ranges.push((n, n));
            return;
        }
        let idx = self.ranges.partition_point(|r| r.0 <= n);
        if idx > 0 && self.ranges[idx - 1].1 >= n {
            return;
        }
        let joins_left = idx > 0 && self.ranges[idx - 1].1 + 1 == n;
        let joins_right = idx < self.ranges.len() && n + 1 == self.ranges[idx].0;
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[idx - 1].1 = self.ranges[idx].1;
                self.ranges.remove(idx);
            }
            (true, false) => self.ranges[idx - 1].1 = n,
            (false, true) => self.ranges[idx].0 = n,
            (false, false) => self.ranges.insert(idx, (n, n)),
        }
    }

    /// Forgets numeric ids below `floor` (`None`: all) and text ids of evicted windows.
    fn prune(&mut self, floor: Option<u64>, p: &Params, wm: Millis) {
        match floor {
            None => self.ranges.clear(),
            Some(floor) => {
                self.ranges.retain(|r| r.1 >= floor);
                if let Some(first) = self.ranges.first_mut() {
                    first.0 = first.0.max(floor);
                }
            }
        }
        self.text.retain(|_, start| !p.evictable(*start, wm));
    }

    fn len(&self) -> usize {
        self.ranges.len() + self.text.len()
    }
}

/// The level-1 state of one symbol: retained windows, watermark, trade ids.
/// Serialize it to a changelog; restore it with [`TradeRollup::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeState {
    core: SymbolCore<TradeWindow>,
    ids: TradeIdSet,
    /// Watermark at the last id-set pruning.
    ids_pruned_at: Option<Millis>,
}

impl TradeState {
    fn new(exchange: Exchange, symbol: &str) -> Self {
        TradeState {
            core: SymbolCore::new(exchange, symbol),
            ids: TradeIdSet::default(),
            ids_pruned_at: None,
        }
    }

    /// The symbol's exchange.
    pub fn exchange(&self) -> Exchange {
        self.core.exchange
    }

    /// The exchange's own symbol.
    pub fn symbol(&self) -> &str {
        &self.core.symbol
    }

    /// `exchange:symbol`.
    pub fn key(&self) -> String {
        feed_key(self.core.exchange, &self.core.symbol)
    }

    /// The symbol's event-time watermark.
    pub fn watermark(&self) -> Option<Millis> {
        self.core.watermark
    }

    /// Windows held in memory (open, and closed within retention, with data).
    pub fn retained_windows(&self) -> usize {
        self.core.windows.len()
    }

    /// Entries of the trade-id set (ranges plus text ids).
    pub fn trade_id_entries(&self) -> usize {
        self.ids.len()
    }

    /// Prunes the id set every half retention of watermark progress.
    fn maybe_prune_ids(&mut self, p: &Params) {
        let Some(wm) = self.core.watermark else {
            return;
        };
        let every = (p.retention / 2).max(p.len);
        if self.ids_pruned_at.is_some_and(|at| wm - at < every) {
            return;
        }
        self.ids_pruned_at = Some(wm);
        let floor = self
            .core
            .windows
            .values()
            .filter_map(|w| w.payload.min_id)
            .min();
        self.ids.prune(floor, p, wm);
    }
}

/// Level 1: trades and watermarks in, 1s candles out.
///
/// ```text
/// on_trade / on_watermark / mark_gap ──► per-symbol TradeState ──► out: Vec<Candle> (1s)
/// ```
#[derive(Debug, Clone)]
pub struct TradeRollup {
    params: Params,
    symbols: SymbolMap<TradeState>,
}

impl TradeRollup {
    /// A level-1 engine with the given timing.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] if `config` does not validate.
    pub fn new(config: LevelConfig) -> Result<Self, EngineError> {
        Ok(TradeRollup {
            params: Params::new(Interval::S1, config)?,
            symbols: SymbolMap::new(),
        })
    }

    /// The timing in use.
    pub fn config(&self) -> LevelConfig {
        self.params.config()
    }

    /// Adds one trade; pushes the candles it closes or corrects onto `out`.
    ///
    /// # Errors
    /// [`EngineError::InvalidTrade`] (an input error: dead-letter the trade) for a
    /// negative price or quantity, an overflowing `price × quantity` or an
    /// `exchange_time` outside `0..=MAX_EVENT_TIME`. Nothing is changed then.
    pub fn on_trade(
        &mut self,
        trade: &Trade,
        out: &mut Vec<Candle>,
    ) -> Result<TradeOutcome, EngineError> {
        if let Some(reason) = trade_problem(trade) {
            return Err(EngineError::InvalidTrade {
                key: trade.key(),
                trade_id: trade.trade_id.clone(),
                reason,
            });
        }
        let p = self.params;
        let new = || TradeState::new(trade.exchange, &trade.symbol);
        Ok(self
            .symbols
            .with(trade.exchange, &trade.symbol, new, |state| {
                let start = p.interval.window_start(trade.exchange_time);
                let id = IdRef::of(&trade.trade_id);
                if state.ids.contains(id) {
                    return Outcome::Duplicate;
                }
                let outcome = match state.core.placement(&p, start) {
                    Placement::TooLate => return Outcome::TooLate,
                    Placement::Open => {
                        state.core.open_window(start).add(trade, id);
                        Outcome::Accepted
                    }
                    Placement::Closed => {
                        state
                            .core
                            .apply_closed(&p, start, |w| w.add(trade, id), out);
                        Outcome::Corrected
                    }
                };
                state.ids.insert(id, start);
                state.core.advance_watermark(trade.exchange_time);
                state.core.close_ready(&p, out);
                state.maybe_prune_ids(&p);
                outcome
            }))
    }

    /// Advances a symbol's watermark (a worker heartbeat); closes the windows it
    /// allows, quiet ones included.
    ///
    /// # Errors
    /// [`EngineError::InvalidWatermark`] for a time outside `0..=MAX_EVENT_TIME`.
    pub fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        if !check_time(watermark.time) {
            return Err(EngineError::InvalidWatermark {
                key: feed_key(watermark.exchange, &watermark.symbol),
                time: watermark.time,
            });
        }
        let p = self.params;
        let new = || TradeState::new(watermark.exchange, &watermark.symbol);
        self.symbols
            .with(watermark.exchange, &watermark.symbol, new, |state| {
                state.core.advance_watermark(watermark.time);
                state.core.close_ready(&p, out);
                state.maybe_prune_ids(&p);
            });
        Ok(())
    }

    /// Marks `[from, to)` of a symbol as a known feed gap: the 1s windows
    /// overlapping it are `degraded`; those already closed and retained are
    /// re-emitted with `revision + 1`.
    ///
    /// # Errors
    /// [`EngineError::InvalidGap`] if `from >= to` or a bound is out of range.
    pub fn mark_gap(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        from: Millis,
        to: Millis,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let gap = checked_gap(exchange, symbol, from, to)?;
        let p = self.params;
        let new = || TradeState::new(exchange, symbol);
        self.symbols.with(exchange, symbol, new, |state| {
            state.core.mark_gap(&p, gap, out)
        });
        Ok(())
    }

    /// End of input: closes every open window up to the last one holding data,
    /// symbol by symbol in key order.
    pub fn finish(&mut self, out: &mut Vec<Candle>) {
        let p = self.params;
        for key in self.symbols.sorted_keys() {
            if let Some(state) = self.symbols.get_mut(&key) {
                state.core.finish(&p, out);
            }
        }
    }

    /// The keys (`exchange:symbol`) whose state changed since the last call, in
    /// first-touch order. Write their [`Self::state`] to the changelog.
    pub fn take_touched(&mut self) -> Vec<String> {
        self.symbols.take_touched()
    }

    /// The state of one symbol.
    pub fn state(&self, key: &str) -> Option<&TradeState> {
        self.symbols.get(key)
    }

    /// Puts back a state read from the changelog (replacing any held).
    ///
    /// # Errors
    /// [`EngineError::KeyMismatch`] if `key` is not the state's `exchange:symbol`.
    pub fn restore(&mut self, key: &str, state: TradeState) -> Result<(), EngineError> {
        check_restore_key(key, state.core.exchange, &state.core.symbol)?;
        self.symbols.insert(key, state);
        Ok(())
    }

    /// Drops a symbol's state (e.g. a delisted symbol), returning it.
    pub fn remove(&mut self, key: &str) -> Option<TradeState> {
        self.symbols.remove(key)
    }

    /// Every symbol key held, in key order.
    pub fn keys(&self) -> Vec<String> {
        self.symbols.sorted_keys()
    }
}

fn trade_problem(trade: &Trade) -> Option<&'static str> {
    if trade.price < Decimal::ZERO {
        Some("negative price")
    } else if trade.quantity < Decimal::ZERO {
        Some("negative quantity")
    } else if !check_time(trade.exchange_time) {
        Some("exchange_time out of range")
    } else if trade.price.checked_mul(trade.quantity).is_none() {
        Some("price × quantity overflows")
    } else {
        None
    }
}

fn checked_gap(
    exchange: Exchange,
    symbol: &str,
    from: Millis,
    to: Millis,
) -> Result<Gap, EngineError> {
    if from < to && check_time(from) && check_time(to) {
        Ok(Gap { from, to })
    } else {
        Err(EngineError::InvalidGap {
            key: feed_key(exchange, symbol),
            from,
            to,
        })
    }
}

// ---------------------------------------------------------------------------
// Levels 2+: child candles → parent candles
// ---------------------------------------------------------------------------

/// One child candle as a parent window keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ChildSlotRepr", from = "ChildSlotRepr")]
struct ChildSlot {
    open_time: Millis,
    revision: u32,
    degraded: bool,
    /// The child's close (its previous close when it has no data).
    close: Decimal,
    /// `None` when the child had no trades (quiet, or degraded without data).
    bar: Option<Bar>,
}

/// [`ChildSlot`] in the state's JSON: `[open_time, revision, degraded, close, bar]`.
#[derive(Serialize, Deserialize)]
struct ChildSlotRepr(Millis, u32, bool, Decimal, Option<Bar>);

impl From<ChildSlot> for ChildSlotRepr {
    fn from(c: ChildSlot) -> Self {
        ChildSlotRepr(c.open_time, c.revision, c.degraded, c.close, c.bar)
    }
}

impl From<ChildSlotRepr> for ChildSlot {
    fn from(r: ChildSlotRepr) -> Self {
        ChildSlot {
            open_time: r.0,
            revision: r.1,
            degraded: r.2,
            close: r.3,
            bar: r.4,
        }
    }
}

impl ChildSlot {
    fn from_candle(candle: &Candle) -> ChildSlot {
        let has_data = match candle.status {
            CandleStatus::Quiet => false,
            CandleStatus::Complete => true,
            CandleStatus::Degraded => candle.trade_count > 0,
        };
        ChildSlot {
            open_time: candle.open_time,
            revision: candle.revision,
            degraded: candle.status == CandleStatus::Degraded,
            close: candle.close,
            bar: has_data.then(|| Bar {
                open: candle.open,
                high: candle.high,
                low: candle.low,
                close: candle.close,
                volume: candle.volume,
                quote_volume: candle.quote_volume,
                trade_count: candle.trade_count,
                taker_buy_volume: candle.taker_buy_volume,
                taker_buy_quote_volume: candle.taker_buy_quote_volume,
                first_id: candle.first_trade_id.as_deref().map(RawId::parse),
                last_id: candle.last_trade_id.as_deref().map(RawId::parse),
            }),
        }
    }
}

/// A parent window: its children (latest revision each), in window order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ParentWindow {
    children: Vec<ChildSlot>,
}

impl ParentWindow {
    fn held_revision(&self, open_time: Millis) -> Option<u32> {
        self.children
            .iter()
            .find(|child| child.open_time == open_time)
            .map(|child| child.revision)
    }

    fn upsert(&mut self, slot: ChildSlot) {
        match self
            .children
            .binary_search_by_key(&slot.open_time, |c| c.open_time)
        {
            Ok(idx) => self.children[idx] = slot,
            Err(idx) => self.children.insert(idx, slot),
        }
    }
}

impl WindowPayload for ParentWindow {
    fn bar(&self) -> Option<Cow<'_, Bar>> {
        let mut acc: Option<Bar> = None;
        for bar in self.children.iter().filter_map(|c| c.bar.as_ref()) {
            match &mut acc {
                None => acc = Some(bar.clone()),
                Some(acc) => acc.absorb(bar),
            }
        }
        acc.map(Cow::Owned)
    }

    fn close(&self) -> Option<Decimal> {
        self.children
            .iter()
            .rev()
            .find_map(|c| c.bar.as_ref().map(|bar| bar.close))
    }

    fn degraded(&self) -> bool {
        self.children.iter().any(|c| c.degraded)
    }

    fn fallback_close(&self) -> Option<Decimal> {
        self.children.last().map(|c| c.close)
    }
}

/// The state of one symbol at a parent level. Serialize it to a changelog;
/// restore it with [`CandleRollup::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandleState {
    core: SymbolCore<ParentWindow>,
}

impl CandleState {
    /// The symbol's exchange.
    pub fn exchange(&self) -> Exchange {
        self.core.exchange
    }

    /// The exchange's own symbol.
    pub fn symbol(&self) -> &str {
        &self.core.symbol
    }

    /// `exchange:symbol`.
    pub fn key(&self) -> String {
        feed_key(self.core.exchange, &self.core.symbol)
    }

    /// The symbol's event-time watermark at this level.
    pub fn watermark(&self) -> Option<Millis> {
        self.core.watermark
    }

    /// Parent windows held in memory.
    pub fn retained_windows(&self) -> usize {
        self.core.windows.len()
    }
}

/// Levels 2+: child candles in (1s→5s, 5s→1m, 1m→5m), parent candles out.
///
/// Children of one symbol are expected in window order, corrections at any
/// time; the parent watermark advances with child `close_time + 1`.
#[derive(Debug, Clone)]
pub struct CandleRollup {
    params: Params,
    child: Interval,
    symbols: SymbolMap<CandleState>,
}

impl CandleRollup {
    /// A parent level producing `interval` candles from its child interval.
    ///
    /// # Errors
    /// [`EngineError::NotAParentInterval`] for 1s; [`EngineError::InvalidConfig`]
    /// if `config` does not validate.
    pub fn new(interval: Interval, config: LevelConfig) -> Result<Self, EngineError> {
        let child = interval
            .child()
            .ok_or(EngineError::NotAParentInterval(interval))?;
        Ok(CandleRollup {
            params: Params::new(interval, config)?,
            child,
            symbols: SymbolMap::new(),
        })
    }

    /// The interval produced.
    pub fn interval(&self) -> Interval {
        self.params.interval
    }

    /// The interval consumed.
    pub fn child_interval(&self) -> Interval {
        self.child
    }

    /// The timing in use.
    pub fn config(&self) -> LevelConfig {
        self.params.config()
    }

    /// Adds one child candle (new, or a correction with a higher revision);
    /// pushes the parent candles it closes or corrects onto `out`.
    ///
    /// # Errors
    /// Input errors (dead-letter the record): [`EngineError::WrongChildInterval`],
    /// [`EngineError::InvalidCandle`] for a misaligned window, times out of
    /// range, low above high, or negative volumes. Nothing is changed then.
    pub fn on_candle(
        &mut self,
        candle: &Candle,
        out: &mut Vec<Candle>,
    ) -> Result<CandleOutcome, EngineError> {
        if candle.interval != self.child {
            return Err(EngineError::WrongChildInterval {
                key: candle.key(),
                expected: self.child,
                got: candle.interval,
            });
        }
        if let Some(reason) = candle_problem(candle) {
            return Err(EngineError::InvalidCandle {
                key: candle.key(),
                interval: candle.interval,
                open_time: candle.open_time,
                reason,
            });
        }
        let p = self.params;
        let new = || CandleState {
            core: SymbolCore::new(candle.exchange, &candle.symbol),
        };
        Ok(self
            .symbols
            .with(candle.exchange, &candle.symbol, new, |state| {
                let core = &mut state.core;
                let start = p.interval.window_start(candle.open_time);
                let held = core
                    .windows
                    .get(&start)
                    .and_then(|w| w.payload.held_revision(candle.open_time));
                if held.is_some_and(|held| candle.revision <= held) {
                    return Outcome::Duplicate;
                }
                let outcome = match core.placement(&p, start) {
                    Placement::TooLate => return Outcome::TooLate,
                    Placement::Open => {
                        core.open_window(start)
                            .upsert(ChildSlot::from_candle(candle));
                        Outcome::Accepted
                    }
                    Placement::Closed => {
                        let slot = ChildSlot::from_candle(candle);
                        core.apply_closed(&p, start, |w| w.upsert(slot), out);
                        Outcome::Corrected
                    }
                };
                core.advance_watermark(candle.close_time + 1);
                core.close_ready(&p, out);
                outcome
            }))
    }

    /// Advances a symbol's watermark directly (optional: child candles advance
    /// it already).
    ///
    /// # Errors
    /// [`EngineError::InvalidWatermark`] for a time outside `0..=MAX_EVENT_TIME`.
    pub fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        if !check_time(watermark.time) {
            return Err(EngineError::InvalidWatermark {
                key: feed_key(watermark.exchange, &watermark.symbol),
                time: watermark.time,
            });
        }
        let p = self.params;
        let new = || CandleState {
            core: SymbolCore::new(watermark.exchange, &watermark.symbol),
        };
        self.symbols
            .with(watermark.exchange, &watermark.symbol, new, |state| {
                state.core.advance_watermark(watermark.time);
                state.core.close_ready(&p, out);
            });
        Ok(())
    }

    /// Marks `[from, to)` as a known gap at this level (usually the gap is marked
    /// at level 1 and flows up through degraded children instead).
    ///
    /// # Errors
    /// [`EngineError::InvalidGap`] if `from >= to` or a bound is out of range.
    pub fn mark_gap(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        from: Millis,
        to: Millis,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let gap = checked_gap(exchange, symbol, from, to)?;
        let p = self.params;
        let new = || CandleState {
            core: SymbolCore::new(exchange, symbol),
        };
        self.symbols.with(exchange, symbol, new, |state| {
            state.core.mark_gap(&p, gap, out)
        });
        Ok(())
    }

    /// End of input: closes every open parent window that holds children, symbol
    /// by symbol in key order.
    pub fn finish(&mut self, out: &mut Vec<Candle>) {
        let p = self.params;
        for key in self.symbols.sorted_keys() {
            if let Some(state) = self.symbols.get_mut(&key) {
                state.core.finish(&p, out);
            }
        }
    }

    /// The keys whose state changed since the last call, in first-touch order.
    pub fn take_touched(&mut self) -> Vec<String> {
        self.symbols.take_touched()
    }

    /// The state of one symbol.
    pub fn state(&self, key: &str) -> Option<&CandleState> {
        self.symbols.get(key)
    }

    /// Puts back a state read from the changelog (replacing any held).
    ///
    /// # Errors
    /// [`EngineError::KeyMismatch`] if `key` is not the state's `exchange:symbol`.
    pub fn restore(&mut self, key: &str, state: CandleState) -> Result<(), EngineError> {
        check_restore_key(key, state.core.exchange, &state.core.symbol)?;
        self.symbols.insert(key, state);
        Ok(())
    }

    /// Drops a symbol's state, returning it.
    pub fn remove(&mut self, key: &str) -> Option<CandleState> {
        self.symbols.remove(key)
    }

    /// Every symbol key held, in key order.
    pub fn keys(&self) -> Vec<String> {
        self.symbols.sorted_keys()
    }
}

fn candle_problem(c: &Candle) -> Option<&'static str> {
    if !check_time(c.open_time) || c.open_time != c.interval.window_start(c.open_time) {
        Some("open_time is not an aligned window start in range")
    } else if c.close_time != c.open_time + c.interval.millis() - 1 {
        Some("close_time is not open_time + interval - 1")
    } else if !(c.low <= c.open && c.open <= c.high && c.low <= c.close && c.close <= c.high) {
        Some("open or close outside low..high")
    } else if c.volume < Decimal::ZERO
        || c.quote_volume < Decimal::ZERO
        || c.taker_buy_volume < Decimal::ZERO
        || c.taker_buy_quote_volume < Decimal::ZERO
        || c.taker_buy_volume > c.volume
        || c.taker_buy_quote_volume > c.quote_volume
    {
        Some("negative volume or taker volume above volume")
    } else if c.status == CandleStatus::Quiet && (c.trade_count > 0 || !c.volume.is_zero()) {
        Some("quiet candle with trades")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// The in-process chain
// ---------------------------------------------------------------------------

/// Every level chained in-process: trades in, candles of the requested
/// intervals out, in emission order (a child candle before the parent candles it
/// closes). Runs only the levels up to the largest requested interval.
#[derive(Debug, Clone)]
pub struct CandlePipeline {
    trades: TradeRollup,
    /// 5s, 1m, 5m, as far as needed; `parents[i]` consumes level `i`'s output.
    parents: Vec<CandleRollup>,
    wanted: [bool; 4],
    /// One reusable output buffer per level.
    buffers: Vec<Vec<Candle>>,
    too_late_candles: u64,
}

fn interval_index(interval: Interval) -> usize {
    match interval {
        Interval::S1 => 0,
        Interval::S5 => 1,
        Interval::M1 => 2,
        Interval::M5 => 3,
    }
}

impl CandlePipeline {
    /// A pipeline yielding the candles of `intervals`.
    ///
    /// # Errors
    /// [`EngineError::NoIntervals`] if `intervals` is empty;
    /// [`EngineError::InvalidConfig`] if a level config does not validate.
    pub fn new(intervals: &[Interval], config: PipelineConfig) -> Result<Self, EngineError> {
        let top = intervals
            .iter()
            .copied()
            .max()
            .ok_or(EngineError::NoIntervals)?;
        let mut wanted = [false; 4];
        for &interval in intervals {
            wanted[interval_index(interval)] = true;
        }
        let mut parents = Vec::new();
        for interval in Interval::ALL.into_iter().skip(1).filter(|&i| i <= top) {
            parents.push(CandleRollup::new(interval, config.candles)?);
        }
        Ok(CandlePipeline {
            trades: TradeRollup::new(config.trades)?,
            buffers: vec![Vec::new(); parents.len() + 1],
            parents,
            wanted,
            too_late_candles: 0,
        })
    }

    /// Adds one trade; pushes the requested candles it produces onto `out`.
    ///
    /// # Errors
    /// As [`TradeRollup::on_trade`].
    pub fn on_trade(
        &mut self,
        trade: &Trade,
        out: &mut Vec<Candle>,
    ) -> Result<TradeOutcome, EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let outcome = self.trades.on_trade(trade, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        outcome
    }

    /// Advances a symbol's watermark at level 1.
    ///
    /// # Errors
    /// As [`TradeRollup::on_watermark`].
    pub fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let result = self.trades.on_watermark(watermark, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        result
    }

    /// Marks a feed gap at level 1; degraded candles flow up.
    ///
    /// # Errors
    /// As [`TradeRollup::mark_gap`].
    pub fn mark_gap(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        from: Millis,
        to: Millis,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let result = self
            .trades
            .mark_gap(exchange, symbol, from, to, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        result
    }

    /// End of input: closes every level in turn, each level's last candles
    /// flowing into the next before it finishes.
    ///
    /// # Errors
    /// Only if a level rejects a candle of the level below, which would be a bug.
    pub fn finish(&mut self, out: &mut Vec<Candle>) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        self.trades.finish(&mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        for level in 0..self.parents.len() {
            let mut produced = std::mem::take(&mut self.buffers[level + 1]);
            self.parents[level].finish(&mut produced);
            let forwarded = self.forward(level + 1, &mut produced, out);
            self.buffers[level + 1] = produced;
            forwarded?;
        }
        Ok(())
    }

    /// Hands the candles `level` produced to `out` (if wanted) and to the next
    /// level, depth first.
    fn forward(
        &mut self,
        level: usize,
        produced: &mut Vec<Candle>,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut result = Ok(());
        for candle in produced.drain(..) {
            if result.is_err() {
                continue;
            }
            let mut next = Vec::new();
            if level < self.parents.len() {
                next = std::mem::take(&mut self.buffers[level + 1]);
                match self.parents[level].on_candle(&candle, &mut next) {
                    Ok(Outcome::TooLate) => self.too_late_candles += 1,
                    Ok(_) => {}
                    Err(e) => result = Err(e),
                }
            }
            if self.wanted[interval_index(candle.interval)] {
                out.push(candle);
            }
            if level < self.parents.len() {
                if result.is_ok() {
                    result = self.forward(level + 1, &mut next, out);
                }
                next.clear();
                self.buffers[level + 1] = next;
            }
        }
        result
    }

    /// Child candles a parent level found too late (only with a parent
    /// retention shorter than the level below it).
    pub fn too_late_candles(&self) -> u64 {
        self.too_late_candles
    }

    /// Level 1.
    pub fn trade_rollup(&self) -> &TradeRollup {
        &self.trades
    }

    /// Level 1, mutable (e.g. to restore states).
    pub fn trade_rollup_mut(&mut self) -> &mut TradeRollup {
        &mut self.trades
    }

    /// The parent level producing `interval`, if the pipeline runs it.
    pub fn candle_rollup(&self, interval: Interval) -> Option<&CandleRollup> {
        self.parents
            .iter()
            .find(|level| level.interval() == interval)
    }

    /// The parent level producing `interval`, mutable.
    pub fn candle_rollup_mut(&mut self, interval: Interval) -> Option<&mut CandleRollup> {
        self.parents
            .iter_mut()
            .find(|level| level.interval() == interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const T0: Millis = 1_570_752_000_000; // 2019-10-11T00:00:00Z, a 5m boundary

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).expect("test decimal")
    }

    fn trade(id: u64, time: Millis, price: &str, qty: &str, side: Side) -> Trade {
        Trade {
            exchange: Exchange::Binance,
            symbol: "XRPETH".to_owned(),
            instrument: "XRP-ETH".to_owned(),
            trade_id: id.to_string(),
            price: dec(price),
            quantity: dec(qty),
            side,
            exchange_time: time,
            receive_time: time,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    fn agg(id: u64, first: u64, last: u64, time: Millis, price: &str, qty: &str) -> Trade {
        Trade {
            first_trade_id: Some(first),
            last_trade_id: Some(last),
            ..trade(id, time, price, qty, Side::Sell)
        }
    }

    fn watermark(time: Millis) -> Watermark {
        Watermark {
            exchange: Exchange::Binance,
            symbol: "XRPETH".to_owned(),
            time,
        }
    }

    fn level1() -> TradeRollup {
        TradeRollup::new(LevelConfig::TRADES_DEFAULT).expect("config")
    }

    fn run_trades(engine: &mut TradeRollup, trades: &[Trade]) -> (Vec<Outcome>, Vec<Candle>) {
        let mut out = Vec::new();
        let outcomes = trades
            .iter()
            .map(|t| engine.on_trade(t, &mut out).expect("valid trade"))
            .collect();
        (outcomes, out)
    }

    /// A child candle of `interval` at `open_time`: `None` prices → quiet at `quiet_at`.
    fn child(
        interval: Interval,
        open_time: Millis,
        ohlc: Option<[&str; 4]>,
        quiet_at: &str,
        volume: &str,
    ) -> Candle {
        let (open, high, low, close, count, status, ids) = match ohlc {
            Some([o, h, l, c]) => (
                dec(o),
                dec(h),
                dec(l),
                dec(c),
                1,
                CandleStatus::Complete,
                (Some(open_time.to_string()), Some(open_time.to_string())),
            ),
            None => {
                let p = dec(quiet_at);
                (p, p, p, p, 0, CandleStatus::Quiet, (None, None))
            }
        };
        let volume = if ohlc.is_some() {
            dec(volume)
        } else {
            Decimal::ZERO
        };
        Candle {
            exchange: Exchange::Binance,
            symbol: "XRPETH".to_owned(),
            interval,
            open_time,
            close_time: open_time + interval.millis() - 1,
            open,
            high,
            low,
            close,
            volume,
            quote_volume: volume * close,
            trade_count: count,
            taker_buy_volume: Decimal::ZERO,
            taker_buy_quote_volume: Decimal::ZERO,
            first_trade_id: ids.0,
            last_trade_id: ids.1,
            status,
            revision: 0,
        }
    }

    fn ohlcv(c: &Candle) -> [String; 5] {
        [c.open, c.high, c.low, c.close, c.volume].map(|d| d.normalize().to_string())
    }

    #[test]
    fn quiet_windows_between_trades_show_the_previous_close() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 500, "1.5", "2", Side::Buy),
                trade(2, T0 + 700, "1.4", "1", Side::Sell),
                trade(3, T0 + 3_200, "1.7", "1", Side::Buy),
            ],
        );
        engine.finish(&mut out);
        let got: Vec<(Millis, CandleStatus, [String; 5])> = out
            .iter()
            .map(|c| (c.open_time - T0, c.status, ohlcv(c)))
            .collect();
        let s = |v: [&str; 5]| v.map(str::to_owned);
        assert_eq!(
            got,
            vec![
                (
                    0,
                    CandleStatus::Complete,
                    s(["1.5", "1.5", "1.4", "1.4", "3"])
                ),
                (
                    1_000,
                    CandleStatus::Quiet,
                    s(["1.4", "1.4", "1.4", "1.4", "0"])
                ),
                (
                    2_000,
                    CandleStatus::Quiet,
                    s(["1.4", "1.4", "1.4", "1.4", "0"])
                ),
                (
                    3_000,
                    CandleStatus::Complete,
                    s(["1.7", "1.7", "1.7", "1.7", "1"])
                ),
            ]
        );
        let first = &out[0];
        assert_eq!(first.taker_buy_volume, dec("2"));
        assert_eq!(first.quote_volume, dec("4.4"));
        assert_eq!(first.taker_buy_quote_volume, dec("3.0"));
        assert_eq!(
            (
                first.first_trade_id.as_deref(),
                first.last_trade_id.as_deref()
            ),
            (Some("1"), Some("2"))
        );
        assert_eq!(out[1].first_trade_id, None);
        assert_eq!(out[1].close_time, T0 + 1_999);
    }

    #[test]
    fn windows_close_after_grace_and_finish_invents_no_trailing_quiet_windows() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_trade(&trade(1, T0 + 100, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        engine
            .on_trade(&trade(2, T0 + 1_999, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert!(out.is_empty(), "grace keeps window 0 open until T0+2000");
        engine
            .on_trade(&trade(3, T0 + 2_000, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0]
        );
        engine
            .on_watermark(&watermark(T0 + 3_500), &mut out)
            .expect("watermark");
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0, 1_000]
        );
        engine.finish(&mut out);
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0, 1_000, 2_000]
        );
    }

    #[test]
    fn watermarks_alone_close_quiet_windows() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_watermark(&watermark(T0), &mut out)
            .expect("watermark");
        assert!(out.is_empty(), "no candle before the first trade");
        engine
            .on_trade(&trade(1, T0 + 10, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        for (name, wm, expected_total) in [
            ("within grace of window 0", T0 + 1_999, 0),
            ("closes window 0", T0 + 2_000, 1),
            ("closes quiet 1 and 2", T0 + 4_000, 3),
            ("same watermark again", T0 + 4_000, 3),
            ("older watermark", T0 + 100, 3),
        ] {
            engine
                .on_watermark(&watermark(wm), &mut out)
                .expect("watermark");
            assert_eq!(out.len(), expected_total, "{name}");
        }
        assert!(out[1..]
            .iter()
            .all(|c| c.status == CandleStatus::Quiet && c.close == dec("2")));
    }

    #[test]
    fn open_and_close_follow_time_then_id_not_arrival() {
        for (name, order) in [
            ("in order", [0, 1, 2, 3]),
            ("reversed", [3, 2, 1, 0]),
            ("shuffled", [2, 0, 3, 1]),
        ] {
            let trades = [
                trade(10, T0 + 100, "5", "1", Side::Buy),
                trade(11, T0 + 100, "6", "1", Side::Buy), // same ms: id decides
                trade(12, T0 + 400, "3", "1", Side::Sell),
                trade(13, T0 + 900, "4", "1", Side::Sell),
            ];
            let mut engine = level1();
            let input: Vec<Trade> = order.iter().map(|&i| trades[i].clone()).collect();
            let (outcomes, mut out) = run_trades(&mut engine, &input);
            engine.finish(&mut out);
            assert!(outcomes.iter().all(|o| *o == Outcome::Accepted), "{name}");
            assert_eq!(out.len(), 1, "{name}");
            let c = &out[0];
            assert_eq!(
                ohlcv(c),
                ["5", "6", "3", "4", "4"].map(str::to_owned),
                "{name}"
            );
            assert_eq!(
                (c.first_trade_id.as_deref(), c.last_trade_id.as_deref()),
                (Some("10"), Some("13")),
                "{name}"
            );
        }
    }

    #[test]
    fn non_numeric_ids_tie_break_by_arrival() {
        let mut engine = level1();
        let mut a = trade(0, T0 + 100, "1", "1", Side::Buy);
        a.trade_id = "b-uuid".to_owned();
        let mut b = trade(0, T0 + 100, "2", "1", Side::Buy);
        b.trade_id = "a-uuid".to_owned();
        let (_, mut out) = run_trades(&mut engine, &[a, b]);
        engine.finish(&mut out);
        assert_eq!((out[0].open, out[0].close), (dec("1"), dec("2")));
        assert_eq!(out[0].first_trade_id.as_deref(), Some("b-uuid"));
        assert_eq!(out[0].last_trade_id.as_deref(), Some("a-uuid"));
    }

    #[test]
    fn aggregated_trades_count_their_raw_trades_and_carry_raw_ids() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                agg(100, 500, 502, T0 + 10, "1", "3"),
                agg(101, 503, 503, T0 + 20, "1", "1"),
                agg(102, 504, 510, T0 + 30, "1", "7"),
            ],
        );
        engine.finish(&mut out);
        assert_eq!(out[0].trade_count, 3 + 1 + 7);
        assert_eq!(out[0].first_trade_id.as_deref(), Some("500"));
        assert_eq!(out[0].last_trade_id.as_deref(), Some("510"));
        assert_eq!(
            out[0].taker_buy_volume,
            Decimal::ZERO,
            "is_buyer_maker trades are sells"
        );
    }

    #[test]
    fn duplicate_trades_count_once() {
        let base = trade(7, T0 + 100, "1", "2", Side::Buy);
        let mut text_id = base.clone();
        text_id.trade_id = "abc".to_owned();
        for (name, input, expected) in [
            (
                "same id twice in an open window",
                vec![base.clone(), base.clone()],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "same id with other values (replica) counts once",
                vec![
                    base.clone(),
                    Trade {
                        price: dec("9"),
                        ..base.clone()
                    },
                ],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "duplicate after the window closed",
                vec![
                    base.clone(),
                    trade(8, T0 + 5_000, "1", "1", Side::Buy),
                    base.clone(),
                ],
                vec![Outcome::Accepted, Outcome::Accepted, Outcome::Duplicate],
            ),
            (
                "text ids",
                vec![text_id.clone(), text_id.clone()],
                vec![Outcome::Accepted, Outcome::Duplicate],
            ),
        ] {
            let mut engine = level1();
            let (outcomes, mut out) = run_trades(&mut engine, &input);
            engine.finish(&mut out);
            assert_eq!(outcomes, expected, "{name}");
            assert_eq!(out[0].volume, dec("2"), "{name}");
            assert_eq!(out[0].trade_count, 1, "{name}");
            assert!(out.iter().all(|c| c.revision == 0), "{name}");
        }
    }

    #[test]
    fn trade_id_ranges_stay_compact() {
        let mut set = TradeIdSet::default();
        for n in [5, 6, 7, 10, 9, 1, 3, 2, 8, 4] {
            set.insert(IdRef::Num(n), 0);
        }
        assert_eq!(set.ranges, vec![(1, 10)]);
        set.insert(IdRef::Num(20), 0);
        set.insert(IdRef::Num(15), 0);
        assert_eq!(set.ranges, vec![(1, 10), (15, 15), (20, 20)]);
        for (n, expected) in [
            (0, false),
            (1, true),
            (10, true),
            (11, false),
            (15, true),
            (20, true),
            (21, false),
        ] {
            assert_eq!(set.contains(IdRef::Num(n)), expected, "{n}");
        }
        assert_eq!(
            IdRef::of("0123"),
            IdRef::Text("0123"),
            "leading zeros stay text"
        );
        assert_eq!(IdRef::of("0"), IdRef::Num(0));
        let p = Params::new(Interval::S1, LevelConfig::TRADES_DEFAULT).expect("params");
        set.prune(Some(9), &p, T0);
        assert_eq!(set.ranges, vec![(9, 10), (15, 15), (20, 20)]);
    }

    #[test]
    fn late_trade_within_retention_corrects_the_window() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 200, "3", "1", Side::Buy),
                trade(3, T0 + 60_000, "2", "1", Side::Buy),
            ],
        );
        out.clear();
        let outcome = engine
            .on_trade(&trade(4, T0 + 50, "1", "5", Side::Sell), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        assert_eq!(
            out.len(),
            1,
            "the close did not change: followers untouched"
        );
        let c = &out[0];
        assert_eq!((c.open_time, c.revision), (T0, 1));
        assert_eq!(ohlcv(c), ["1", "3", "1", "3", "7"].map(str::to_owned));
        assert_eq!(c.first_trade_id.as_deref(), Some("4"));
        assert_eq!(c.trade_count, 3);
    }

    #[test]
    fn late_trade_changing_a_close_corrects_the_quiet_windows_after_it() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 4_100, "5", "1", Side::Buy),
            ],
        );
        engine
            .on_watermark(&watermark(T0 + 6_000), &mut out)
            .expect("watermark");
        out.clear();
        let outcome = engine
            .on_trade(&trade(3, T0 + 900, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        let got: Vec<(Millis, u32, CandleStatus, Decimal)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status, c.close))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, CandleStatus::Complete, dec("1")),
                (1_000, 1, CandleStatus::Quiet, dec("1")),
                (2_000, 1, CandleStatus::Quiet, dec("1")),
                (3_000, 1, CandleStatus::Quiet, dec("1")),
            ]
        );
        // A late trade into a quiet window makes it complete at revision 2.
        out.clear();
        engine
            .on_trade(&trade(4, T0 + 2_500, "4", "1", Side::Buy), &mut out)
            .expect("trade");
        let got: Vec<(Millis, u32, CandleStatus, Decimal)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status, c.close))
            .collect();
        assert_eq!(
            got,
            vec![
                (2_000, 2, CandleStatus::Complete, dec("4")),
                (3_000, 2, CandleStatus::Quiet, dec("4"))
            ]
        );
    }

    #[test]
    fn trade_beyond_retention_is_too_late_not_dropped_silently() {
        let config = LevelConfig {
            grace_ms: 1_000,
            retention_ms: 10_000,
        };
        let mut engine = TradeRollup::new(config).expect("config");
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 30_000, "2", "1", Side::Buy),
            ],
        );
        let before = out.len();
        for (name, time, expected) in [
            (
                "window end + retention <= watermark",
                T0 + 19_999,
                Outcome::TooLate,
            ),
            (
                "window end + retention > watermark",
                T0 + 20_000,
                Outcome::Corrected,
            ),
        ] {
            let id = 100 + (time - T0) as u64;
            let outcome = engine
                .on_trade(&trade(id, time, "3", "1", Side::Buy), &mut out)
                .expect("trade");
            assert_eq!(outcome, expected, "{name}");
        }
        assert!(
            out[before..].iter().all(|c| c.open_time >= T0 + 20_000),
            "too-late trade left no mark"
        );
        assert!(
            engine
                .state("binance:XRPETH")
                .expect("state")
                .retained_windows()
                <= 13
        );
    }

    #[test]
    fn invalid_trades_are_errors() {
        let mut engine = level1();
        let mut out = Vec::new();
        for (name, t) in [
            ("negative price", trade(1, T0, "-1", "1", Side::Buy)),
            ("negative quantity", trade(1, T0, "1", "-1", Side::Buy)),
            ("time out of range", trade(1, -5, "1", "1", Side::Buy)),
        ] {
            let err = engine.on_trade(&t, &mut out).expect_err(name);
            assert!(!err.is_terminal(), "{name}");
        }
        assert!(engine.keys().is_empty());
    }

    #[test]
    fn parents_ignore_quiet_children() {
        // (name, children as (offset s, Some(ohlc) | None for quiet at `quiet_at`), quiet_at, expected ohlc, status)
        type Case<'a> = (
            &'a str,
            Vec<(i64, Option<[&'a str; 4]>)>,
            &'a str,
            [&'a str; 4],
            CandleStatus,
        );
        let cases: Vec<Case> = vec![
            (
                "quiet first child above the data would bend open and high",
                vec![
                    (0, None),
                    (1, Some(["5", "6", "4", "5"])),
                    (2, None),
                    (3, None),
                    (4, None),
                ],
                "9",
                ["5", "6", "4", "5"],
                CandleStatus::Complete,
            ),
            (
                "quiet last child below the data would bend low and close",
                vec![
                    (0, Some(["5", "7", "5", "6"])),
                    (1, Some(["6", "6", "5.5", "5.5"])),
                    (2, None),
                    (3, None),
                    (4, None),
                ],
                "1",
                ["5", "7", "5", "5.5"],
                CandleStatus::Complete,
            ),
            (
                "all quiet: quiet parent at the previous close",
                vec![(0, None), (1, None), (2, None), (3, None), (4, None)],
                "3",
                ["3", "3", "3", "3"],
                CandleStatus::Quiet,
            ),
        ];
        for (name, children, quiet_at, expected, status) in cases {
            let mut level =
                CandleRollup::new(Interval::S5, LevelConfig::CANDLES_DEFAULT).expect("level");
            let mut out = Vec::new();
            for (offset, ohlc) in children {
                let c = child(Interval::S1, T0 + offset * 1_000, ohlc, quiet_at, "1");
                assert_eq!(
                    level.on_candle(&c, &mut out).expect("candle"),
                    Outcome::Accepted,
                    "{name}"
                );
            }
            assert_eq!(out.len(), 1, "{name}: closes with its last child");
            let c = &out[0];
            assert_eq!(
                [c.open, c.high, c.low, c.close],
                expected.map(dec),
                "{name}"
            );
            assert_eq!(c.status, status, "{name}");
            assert_eq!(c.interval, Interval::S5);
        }
    }

    #[test]
    fn parent_sums_counts_and_takes_ids_from_data_children() {
        let mut level =
            CandleRollup::new(Interval::M1, LevelConfig::CANDLES_DEFAULT).expect("level");
        let mut out = Vec::new();
        for i in 0..12 {
            let ohlc = (i == 3 || i == 7).then_some(["1", "1", "1", "1"]);
            let c = child(Interval::S5, T0 + i * 5_000, ohlc, "1", "2");
            level.on_candle(&c, &mut out).expect("candle");
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].trade_count, 2);
        assert_eq!(out[0].volume, dec("4"));
        assert_eq!(out[0].first_trade_id, Some((T0 + 15_000).to_string()));
        assert_eq!(out[0].last_trade_id, Some((T0 + 35_000).to_string()));
    }

    #[test]
    fn child_revisions_not_newer_than_held_are_duplicates() {
        let mut level =
            CandleRollup::new(Interval::S5, LevelConfig::CANDLES_DEFAULT).expect("level");
        let mut out = Vec::new();
        let c0 = child(Interval::S1, T0, Some(["1", "2", "1", "2"]), "0", "1");
        let c1 = child(
            Interval::S1,
            T0 + 1_000,
            Some(["2", "2", "2", "2"]),
            "0",
            "1",
        );
        assert_eq!(level.on_candle(&c0, &mut out), Ok(Outcome::Accepted));
        assert_eq!(level.on_candle(&c0, &mut out), Ok(Outcome::Duplicate));
        assert_eq!(level.on_candle(&c1, &mut out), Ok(Outcome::Accepted));
        let c4 = child(Interval::S1, T0 + 4_000, None, "2", "0");
        level.on_candle(&c4, &mut out).expect("candle");
        assert_eq!(out.len(), 1);
        for (name, revision, volume, expected, emitted) in [
            ("replayed revision 0", 0, "1", Outcome::Duplicate, 0),
            ("revision 1", 1, "3", Outcome::Corrected, 1),
            ("revision 1 again", 1, "3", Outcome::Duplicate, 0),
        ] {
            out.clear();
            let mut c = child(Interval::S1, T0, Some(["1", "2", "1", "2"]), "0", volume);
            c.revision = revision;
            assert_eq!(level.on_candle(&c, &mut out), Ok(expected), "{name}");
            assert_eq!(out.len(), emitted, "{name}");
        }
        let wrong = child(Interval::M1, T0, None, "1", "0");
        assert!(matches!(
            level.on_candle(&wrong, &mut out),
            Err(EngineError::WrongChildInterval { .. })
        ));
    }

    fn pipeline() -> CandlePipeline {
        CandlePipeline::new(&Interval::ALL, PipelineConfig::default()).expect("pipeline")
    }

    #[test]
    fn late_trade_corrects_1s_and_every_parent_via_the_pipeline() {
        let mut pipe = pipeline();
        let mut out = Vec::new();
        for t in [
            trade(1, T0 + 10_500, "2", "1", Side::Buy),
            trade(2, T0 + 10_600, "3", "1", Side::Buy),
            trade(3, T0 + 330_000, "2", "1", Side::Buy),
        ] {
            pipe.on_trade(&t, &mut out).expect("trade");
        }
        let closed: Vec<Interval> = out
            .iter()
            .filter(|c| c.open_time == T0 || c.open_time == T0 + 10_000)
            .map(|c| c.interval)
            .collect();
        assert_eq!(
            closed,
            vec![Interval::S1, Interval::S5, Interval::M1, Interval::M5]
        );
        out.clear();
        // Earlier in the same second: becomes the open, the close stays.
        let outcome = pipe
            .on_trade(&trade(4, T0 + 10_200, "1", "1", Side::Sell), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        let got: Vec<(Interval, Millis, u32, Decimal, Decimal, u64)> = out
            .iter()
            .map(|c| {
                (
                    c.interval,
                    c.open_time - T0,
                    c.revision,
                    c.open,
                    c.low,
                    c.trade_count,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Interval::S1, 10_000, 1, dec("1"), dec("1"), 3),
                (Interval::S5, 10_000, 1, dec("1"), dec("1"), 3),
                (Interval::M1, 0, 1, dec("1"), dec("1"), 3),
                (Interval::M5, 0, 1, dec("1"), dec("1"), 3),
            ]
        );
        assert!(out
            .iter()
            .all(|c| c.close == dec("3") && c.volume == dec("3")));
    }

    #[test]
    fn gap_marks_open_and_closed_windows_degraded() {
        let mut pipe = pipeline();
        let mut out = Vec::new();
        pipe.on_trade(&trade(1, T0 + 100, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        pipe.on_trade(&trade(2, T0 + 3_100, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        let closed_before = out.len();
        assert_eq!(closed_before, 2, "1s windows 0 and 1");
        pipe.mark_gap(
            Exchange::Binance,
            "XRPETH",
            T0 + 1_500,
            T0 + 2_500,
            &mut out,
        )
        .expect("gap");
        let got: Vec<(Interval, Millis, u32, CandleStatus)> = out[closed_before..]
            .iter()
            .map(|c| (c.interval, c.open_time - T0, c.revision, c.status))
            .collect();
        assert_eq!(
            got,
            vec![(Interval::S1, 1_000, 1, CandleStatus::Degraded)],
            "closed window re-emitted"
        );
        pipe.finish(&mut out).expect("finish");
        let status = |interval: Interval, offset: Millis| {
            out.iter()
                .filter(|c| c.interval == interval && c.open_time == T0 + offset)
                .map(|c| (c.revision, c.status))
                .next_back()
        };
        assert_eq!(
            status(Interval::S1, 2_000),
            Some((0, CandleStatus::Degraded)),
            "open window"
        );
        assert_eq!(
            status(Interval::S1, 3_000),
            Some((0, CandleStatus::Complete))
        );
        assert_eq!(status(Interval::S5, 0), Some((0, CandleStatus::Degraded)));
        assert_eq!(status(Interval::M1, 0), Some((0, CandleStatus::Degraded)));
        assert_eq!(status(Interval::M5, 0), Some((0, CandleStatus::Degraded)));
        let degraded_quiet = out
            .iter()
            .find(|c| c.interval == Interval::S1 && c.open_time == T0 + 2_000)
            .expect("window 2");
        assert_eq!(
            (degraded_quiet.close, degraded_quiet.trade_count),
            (dec("2"), 0)
        );
        assert!(pipe
            .mark_gap(Exchange::Binance, "XRPETH", T0, T0, &mut out)
            .is_err());
    }

    fn scripted_input() -> Vec<Trade> {
        let mut trades = Vec::new();
        for i in 0..400u64 {
            let time = T0 + (i as Millis) * 1_370 % 400_000 + (i as Millis) * 900;
            let price = format!("1.{:03}", (i * 37) % 1000);
            trades.push(trade(
                i + 1,
                time,
                &price,
                "1.5",
                if i % 3 == 0 { Side::Buy } else { Side::Sell },
            ));
            if i % 17 == 0 {
                trades.push(trade(i + 1, time, &price, "1.5", Side::Buy)); // duplicate
            }
        }
        trades
    }

    #[test]
    fn state_survives_serialize_and_restore_with_identical_output() {
        let input = scripted_input();
        let run = |restart_at: Option<usize>| -> Vec<u8> {
            let mut pipe = pipeline();
            let mut out = Vec::new();
            for (i, t) in input.iter().enumerate() {
                if Some(i) == restart_at {
                    let mut fresh = pipeline();
                    for key in pipe.trade_rollup_mut().take_touched() {
                        let state = pipe.trade_rollup().state(&key).expect("touched state");
                        let json = serde_json::to_vec(state).expect("serialize");
                        let back: TradeState = serde_json::from_slice(&json).expect("deserialize");
                        fresh
                            .trade_rollup_mut()
                            .restore(&key, back)
                            .expect("restore");
                    }
                    for interval in [Interval::S5, Interval::M1, Interval::M5] {
                        let level = pipe.candle_rollup_mut(interval).expect("level");
                        for key in level.take_touched() {
                            let state = level.state(&key).expect("touched state");
                            let json = serde_json::to_vec(state).expect("serialize");
                            let back: CandleState =
                                serde_json::from_slice(&json).expect("deserialize");
                            assert_eq!(&back, state);
                            fresh
                                .candle_rollup_mut(interval)
                                .expect("level")
                                .restore(&key, back)
                                .expect("restore");
                        }
                    }
                    pipe = fresh;
                }
                pipe.on_trade(t, &mut out).expect("trade");
            }
            pipe.finish(&mut out).expect("finish");
            out.iter()
                .flat_map(|c| {
                    let mut line = serde_json::to_vec(c).expect("json");
                    line.push(b'\n');
                    line
                })
                .collect()
        };
        let straight = run(None);
        assert!(straight.len() > 10_000);
        for restart in [1, 57, 200, 399] {
            assert_eq!(
                run(Some(restart)),
                straight,
                "restart before input {restart}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_json_values() {
        let mut pipe = pipeline();
        let mut out = Vec::new();
        let mut text_id = trade(0, T0 + 7_000, "2", "1", Side::Buy);
        text_id.trade_id = "uuid-1".to_owned();
        for t in scripted_input().iter().take(40).chain([&text_id]) {
            pipe.on_trade(t, &mut out).expect("trade");
        }
        let key = "binance:XRPETH";
        let state = pipe.trade_rollup().state(key).expect("state");
        let value = serde_json::to_value(state).expect("to value");
        let back: TradeState = serde_json::from_value(value).expect("from value");
        assert_eq!(&back, state);
        let level = pipe.candle_rollup(Interval::S5).expect("level");
        let state = level.state(key).expect("state");
        let value = serde_json::to_value(state).expect("to value");
        let back: CandleState = serde_json::from_value(value).expect("from value");
        assert_eq!(&back, state);
    }

    #[test]
    fn restore_rejects_a_foreign_key() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_trade(&trade(1, T0, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        let state = engine.state("binance:XRPETH").expect("state").clone();
        assert_eq!(state.key(), "binance:XRPETH");
        assert!(matches!(
            engine.restore("okx:XRPETH", state),
            Err(EngineError::KeyMismatch { .. })
        ));
        assert_eq!(engine.take_touched(), vec!["binance:XRPETH".to_owned()]);
        assert!(engine.take_touched().is_empty());
    }

    #[test]
    fn late_trade_before_the_first_window_emits_it_fresh() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(5, T0 + 5_100, "2", "1", Side::Buy),
                trade(6, T0 + 8_000, "2", "1", Side::Buy),
            ],
        );
        out.clear();
        engine
            .on_trade(&trade(4, T0 + 3_100, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        let got: Vec<(Millis, u32, CandleStatus)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (3_000, 0, CandleStatus::Complete),
                (4_000, 0, CandleStatus::Quiet)
            ]
        );
    }

    #[test]
    fn config_is_validated() {
        for (name, config, ok) in [
            ("defaults", LevelConfig::TRADES_DEFAULT, true),
            (
                "retention below grace",
                LevelConfig {
                    grace_ms: 5,
                    retention_ms: 4,
                },
                false,
            ),
            (
                "negative grace",
                LevelConfig {
                    grace_ms: -1,
                    retention_ms: 4,
                },
                false,
            ),
        ] {
            assert_eq!(TradeRollup::new(config).is_ok(), ok, "{name}");
        }
        assert_eq!(
            CandleRollup::new(Interval::S1, LevelConfig::CANDLES_DEFAULT).err(),
            Some(EngineError::NotAParentInterval(Interval::S1))
        );
        assert_eq!(
            CandlePipeline::new(&[], PipelineConfig::default()).err(),
            Some(EngineError::NoIntervals)
        );
    }
}

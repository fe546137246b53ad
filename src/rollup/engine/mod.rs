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
//! # Files
//!
//! - `window.rs`: windows and candle building (`SymbolCore`, bars, the
//!   candle built and checked when a window closes), shared by both levels.
//! - `ids.rs`: the trade-id sets of level 1.
//! - `trades.rs`: level 1, [`TradeRollup`] and [`TradeState`].
//! - `candles.rs`: levels 2+, [`CandleRollup`] and [`CandleState`].
//! - `symbols.rs`: per-symbol maps and `Symbols`, the one implementation of
//!   what both levels do alike (watermarks, gaps, finish, touched keys,
//!   state, restore, remove, keys), and `shared_level_methods!`, which gives
//!   both levels those public methods.
//! - `pipeline.rs`: [`CandlePipeline`], every level chained in-process.
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

mod candles;
mod ids;
mod pipeline;
mod symbols;
mod trades;
mod window;

use std::borrow::Cow;

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use serde::{Deserialize, Serialize};

use crate::model::{Candle, CandleStatus, Exchange, Interval, Millis, Side, Trade, Watermark};

use crate::wire::feed_key;

pub use candles::{CandleRollup, CandleState};
use ids::*;
pub use pipeline::CandlePipeline;
use symbols::*;
pub use trades::{TradeRollup, TradeState};
use window::*;

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

fn check_time(time: Millis) -> bool {
    (0..=MAX_EVENT_TIME).contains(&time)
}

#[cfg(test)]
mod testkit;

#[cfg(test)]
mod tests {
    use super::*;

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

//! The seam between the Kafka stage and the candle engine: one [`Level`] of the
//! rollup (trades → 1s, 1s → 5s, 5s → 1m, 1m → 5m) behind an object-safe trait,
//! with the record decoding each level needs.

use crate::model::{Candle, Watermark};

/// What applying one input record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// New data, counted.
    Accepted,
    /// A watermark: every window of this level ending at or before the returned
    /// watermark's time is closed, so the stage forwards it to the next level.
    Progress(Watermark),
    /// Already counted (same trade id, or a candle revision already held).
    Duplicate,
    /// Late, merged into a closed window: a corrected candle went out.
    Corrected,
    /// Later than the retention horizon: not merged, sent to the dead letters.
    TooLate,
}

/// One level of the rollup as the Kafka stage drives it.
pub trait Level: Send {
    /// Decodes one input record (`kind` is the `tickfetch-kind` header) and
    /// applies it, pushing any candles that closed or were corrected to `out`.
    ///
    /// # Errors
    /// A record that does not decode, with the reason; nothing was applied.
    fn apply(
        &mut self,
        kind: Option<&[u8]>,
        payload: &[u8],
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, String>;

    /// The state of one symbol (`exchange:symbol`) as JSON, for the changelog.
    fn snapshot(&self, key: &str) -> Option<serde_json::Value>;

    /// Puts back a state [`Level::snapshot`] returned.
    ///
    /// # Errors
    /// A state that does not decode.
    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), String>;
}

use crate::config::Config;
use crate::model::{Interval, Trade, KIND_WATERMARK};
use crate::rollup::engine::{CandleRollup, LevelConfig, Outcome, TradeRollup};

impl From<Outcome> for ApplyOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Accepted => ApplyOutcome::Accepted,
            Outcome::Duplicate => ApplyOutcome::Duplicate,
            Outcome::Corrected => ApplyOutcome::Corrected,
            Outcome::TooLate => ApplyOutcome::TooLate,
        }
    }
}

/// Level 1: trades and watermarks from the trades topic → 1s candles.
pub struct TradeLevel(pub TradeRollup);

impl Level for TradeLevel {
    fn apply(
        &mut self,
        kind: Option<&[u8]>,
        payload: &[u8],
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, String> {
        if kind == Some(KIND_WATERMARK.as_bytes()) {
            let watermark: Watermark =
                serde_json::from_slice(payload).map_err(|e| format!("not a watermark: {e}"))?;
            self.0
                .on_watermark(&watermark, out)
                .map_err(|e| e.to_string())?;
            let grace = self.0.config().grace_ms;
            return Ok(ApplyOutcome::Progress(Watermark {
                time: watermark.time - grace,
                ..watermark
            }));
        }
        let trade: Trade =
            serde_json::from_slice(payload).map_err(|e| format!("not a trade: {e}"))?;
        self.0
            .on_trade(&trade, out)
            .map(ApplyOutcome::from)
            .map_err(|e| e.to_string())
    }

    fn snapshot(&self, key: &str) -> Option<serde_json::Value> {
        self.0.state(key).and_then(|s| serde_json::to_value(s).ok())
    }

    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), String> {
        let state = serde_json::from_value(state).map_err(|e| e.to_string())?;
        self.0.restore(key, state).map_err(|e| e.to_string())
    }
}

/// Levels 2+: child candles → parent candles.
pub struct CandleLevel(pub CandleRollup);

impl Level for CandleLevel {
    fn apply(
        &mut self,
        kind: Option<&[u8]>,
        payload: &[u8],
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, String> {
        if kind == Some(KIND_WATERMARK.as_bytes()) {
            let watermark: Watermark =
                serde_json::from_slice(payload).map_err(|e| format!("not a watermark: {e}"))?;
            self.0
                .on_watermark(&watermark, out)
                .map_err(|e| e.to_string())?;
            let grace = self.0.config().grace_ms;
            return Ok(ApplyOutcome::Progress(Watermark {
                time: watermark.time - grace,
                ..watermark
            }));
        }
        let candle: Candle =
            serde_json::from_slice(payload).map_err(|e| format!("not a candle: {e}"))?;
        self.0
            .on_candle(&candle, out)
            .map(ApplyOutcome::from)
            .map_err(|e| e.to_string())
    }

    fn snapshot(&self, key: &str) -> Option<serde_json::Value> {
        self.0.state(key).and_then(|s| serde_json::to_value(s).ok())
    }

    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), String> {
        let state = serde_json::from_value(state).map_err(|e| e.to_string())?;
        self.0.restore(key, state).map_err(|e| e.to_string())
    }
}

/// The engine timing of the stage producing `interval`: `rollup.grace_ms` on the
/// trade level, no grace above it (children arrive closed), `rollup.retention_ms`
/// everywhere.
pub fn level_config(config: &Config, interval: Interval) -> LevelConfig {
    LevelConfig {
        grace_ms: if interval == Interval::S1 {
            config.rollup.grace_ms
        } else {
            0
        },
        retention_ms: config.rollup.retention_ms,
    }
}

/// Builds the engine level of the stage producing `interval`.
///
/// # Errors
/// An invalid grace/retention configuration.
pub fn make_level(config: &Config, interval: Interval) -> Result<Box<dyn Level>, String> {
    let timing = level_config(config, interval);
    Ok(match interval {
        Interval::S1 => Box::new(TradeLevel(
            TradeRollup::new(timing).map_err(|e| e.to_string())?,
        )),
        parent => Box::new(CandleLevel(
            CandleRollup::new(parent, timing).map_err(|e| e.to_string())?,
        )),
    })
}

//! The seam between the Kafka stage and the candle engine: one [`Level`] of the
//! rollup (trades → 1s, 1s → 5s, 5s → 1m, 1m → 5m) behind an object-safe trait,
//! with the record decoding each level needs.

use crate::model::{Candle, Watermark};
use crate::wire::Envelope;

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
    /// A known feed gap: the windows it overlaps are degraded.
    Gap,
}

/// One level of the rollup as the Kafka stage drives it.
pub trait Level: Send {
    /// Decodes one input record and applies it, pushing any candles that
    /// closed or were corrected to `out`.
    ///
    /// # Errors
    /// A record that does not decode or that the engine refuses, with the
    /// reason; nothing was applied.
    fn apply(
        &mut self,
        record: &Envelope<'_>,
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, RecordError>;

    /// The state of one symbol (`exchange:symbol`) as JSON, for the changelog.
    fn snapshot(&self, key: &str) -> Option<serde_json::Value>;

    /// Puts back a state [`Level::snapshot`] returned.
    ///
    /// # Errors
    /// A state that does not decode.
    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), RestoreError>;
}

/// Why an input record was not applied (it goes to the dead letters).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a changelog state was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("not a state of this level: {0}")]
    Decode(#[from] serde_json::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

use crate::config::Config;
use crate::model::{GapMarker, Interval, Trade};
use crate::rollup::engine::{
    CandleRollup, CandleState, EngineError, LevelConfig, Outcome, TradeRollup, TradeState,
};
use crate::wire::{DataRecord, Received, WireError};

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

/// What the Kafka stage needs of one engine level; implemented by
/// [`TradeRollup`] (trades → 1s) and [`CandleRollup`] (child → parent candles),
/// which gives both the [`Level`] implementation below.
trait EngineLevel: Send {
    /// The record the level reads (a trade, or a child candle).
    type Input: DataRecord + Send;
    type State: serde::Serialize + serde::de::DeserializeOwned;
    fn on_input(
        &mut self,
        input: &Self::Input,
        out: &mut Vec<Candle>,
    ) -> Result<Outcome, EngineError>;
    fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError>;
    fn on_gap(&mut self, gap: &GapMarker, out: &mut Vec<Candle>) -> Result<(), EngineError>;
    fn grace_ms(&self) -> i64;
    fn state(&self, key: &str) -> Option<&Self::State>;
    fn restore(&mut self, key: &str, state: Self::State) -> Result<(), EngineError>;
}

impl EngineLevel for TradeRollup {
    type Input = Trade;
    type State = TradeState;
    fn on_input(&mut self, input: &Trade, out: &mut Vec<Candle>) -> Result<Outcome, EngineError> {
        self.on_trade(input, out)
    }
    fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        TradeRollup::on_watermark(self, watermark, out)
    }
    fn on_gap(&mut self, gap: &GapMarker, out: &mut Vec<Candle>) -> Result<(), EngineError> {
        let to = gap.to_time.saturating_add(1);
        self.mark_gap(gap.exchange, &gap.symbol, gap.from_time, to, out)
    }
    fn grace_ms(&self) -> i64 {
        self.config().grace_ms
    }
    fn state(&self, key: &str) -> Option<&TradeState> {
        TradeRollup::state(self, key)
    }
    fn restore(&mut self, key: &str, state: TradeState) -> Result<(), EngineError> {
        TradeRollup::restore(self, key, state)
    }
}

impl EngineLevel for CandleRollup {
    type Input = Candle;
    type State = CandleState;
    fn on_input(&mut self, input: &Candle, out: &mut Vec<Candle>) -> Result<Outcome, EngineError> {
        self.on_candle(input, out)
    }
    fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        CandleRollup::on_watermark(self, watermark, out)
    }
    fn on_gap(&mut self, gap: &GapMarker, out: &mut Vec<Candle>) -> Result<(), EngineError> {
        let to = gap.to_time.saturating_add(1);
        self.mark_gap(gap.exchange, &gap.symbol, gap.from_time, to, out)
    }
    fn grace_ms(&self) -> i64 {
        self.config().grace_ms
    }
    fn state(&self, key: &str) -> Option<&CandleState> {
        CandleRollup::state(self, key)
    }
    fn restore(&mut self, key: &str, state: CandleState) -> Result<(), EngineError> {
        CandleRollup::restore(self, key, state)
    }
}

/// An engine level with the input record it last decoded, which lends its
/// buffers to the next one (`Envelope::decode_into`).
struct Decoding<E: EngineLevel> {
    engine: E,
    input: Option<E::Input>,
}

impl<E: EngineLevel + 'static> Decoding<E> {
    fn boxed(engine: E) -> Box<dyn Level> {
        Box::new(Self {
            engine,
            input: None,
        })
    }
}

impl<E: EngineLevel> Level for Decoding<E> {
    fn apply(
        &mut self,
        record: &Envelope<'_>,
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, RecordError> {
        let engine = &mut self.engine;
        match record.decode_into::<E::Input>(&mut self.input)? {
            Received::Watermark(watermark) => {
                engine.on_watermark(&watermark, out)?;
                // Every window of this level ending by `time − grace` is closed now.
                let time = watermark.time - engine.grace_ms();
                Ok(ApplyOutcome::Progress(Watermark { time, ..watermark }))
            }
            Received::Gap(gap) => {
                engine.on_gap(&gap, out)?;
                Ok(ApplyOutcome::Gap)
            }
            Received::Data(()) => match &self.input {
                Some(input) => Ok(engine.on_input(input, out)?.into()),
                None => Err(WireError::MissingPayload {
                    what: E::Input::NAME,
                }
                .into()),
            },
        }
    }

    fn snapshot(&self, key: &str) -> Option<serde_json::Value> {
        self.engine
            .state(key)
            .and_then(|s| serde_json::to_value(s).ok())
    }

    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), RestoreError> {
        let state = serde_json::from_value(state)?;
        Ok(self.engine.restore(key, state)?)
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
pub fn make_level(config: &Config, interval: Interval) -> Result<Box<dyn Level>, EngineError> {
    let timing = level_config(config, interval);
    Ok(match interval {
        Interval::S1 => Decoding::boxed(TradeRollup::new(timing)?),
        parent => Decoding::boxed(CandleRollup::new(parent, timing)?),
    })
}

//! Rollup: trades → 1s → 5s → 1m → 5m candles, each stage its own process.
//!
//! - [`engine`]: the pure candle engine (no I/O, no clock, exact decimals).
//! - [`level`]: the trait the Kafka stage drives one engine level through.
//! - [`stage`]: the Kafka runtime: consume, aggregate, produce and commit input
//!   offsets in one transaction; state in a compacted changelog topic.
//! - [`metrics`]: the stage's Prometheus metrics and commit-latency histogram.

pub mod engine;
pub mod level;
pub mod metrics;
pub mod stage;

use crate::kafka::KafkaError;

/// Errors of a rollup stage.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("restoring state: {0}")]
    Restore(String),
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
    /// Shutdown came while the stage waited (for etcd); not a failure.
    #[error("stopped: {0}")]
    Stopped(String),
}

impl RollupError {
    /// Whether restarting the stage cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            RollupError::Kafka(e) => e.is_terminal(),
            RollupError::Fenced(_) | RollupError::Config(_) => true,
            RollupError::Restore(_) | RollupError::Internal(_) | RollupError::Stopped(_) => false,
        }
    }
}

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
pub mod replay;
pub mod stage;

use crate::kafka::KafkaError;
use crate::model::Interval;
use crate::rollup::engine::EngineError;
use crate::rollup::level::RestoreError;
use crate::wire::WireError;

/// Errors of a rollup stage.
#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A changelog state the level does not take back.
    #[error("restoring the state of {key} from {changelog}[{partition}]: {source}")]
    RestoreState {
        changelog: String,
        partition: i32,
        key: String,
        #[source]
        source: RestoreError,
    },
    /// The changelog did not read to its end in time.
    #[error(
        "restoring from {changelog}[{partition}]: the read stopped at offset {position} of {high}"
    )]
    RestoreIncomplete {
        changelog: String,
        partition: i32,
        position: i64,
        high: i64,
    },
    /// A static assignment lost a partition to a newer instance.
    #[error(
        "fenced: partition {partition} of stage {interval} was taken over by a newer instance"
    )]
    Fenced { partition: i32, interval: Interval },
    /// The grace/retention configuration is not usable.
    #[error("configuration: {0}")]
    Config(#[from] EngineError),
    /// A record the stage made does not serialise (a bug, not input).
    #[error("encoding a record for {topic}: {source}")]
    Encode {
        topic: String,
        #[source]
        source: WireError,
    },
    /// Exactly-once needs the consumer's group metadata, and it had none.
    #[error("internal: the consumer has no group metadata")]
    NoGroupMetadata,
    /// The stage's blocking thread panicked or was cancelled.
    #[error("internal: stage thread: {0}")]
    Thread(#[from] tokio::task::JoinError),
    /// etcd refused the stage's credentials (fencing epochs).
    #[error(transparent)]
    Coordination(Box<crate::coord::CoordError>),
    /// Shutdown came while the stage waited to take a partition (for etcd
    /// to claim its epoch, or for the broker); not a failure.
    #[error("stopped: shut down while taking partition {partition}")]
    Stopped { partition: i32 },
}

impl RollupError {
    /// Whether restarting the stage cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            RollupError::Kafka(e) => e.is_terminal(),
            RollupError::Fenced { .. } | RollupError::Config(_) => true,
            RollupError::Coordination(e) => e.is_refusal(),
            RollupError::RestoreState { .. }
            | RollupError::RestoreIncomplete { .. }
            | RollupError::Encode { .. }
            | RollupError::NoGroupMetadata
            | RollupError::Thread(_)
            | RollupError::Stopped { .. } => false,
        }
    }
}

//! Errors of the ingest worker.

use crate::kafka::KafkaError;

/// Errors of the ingest worker.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A feed configuration that does not resolve (unknown feed name, no
    /// symbols, a symbol in two feeds).
    #[error("feed {feed}: {problem}")]
    Feed { feed: String, problem: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the publisher thread stopped")]
    PublisherGone,
    #[error("feed {0} is no longer running")]
    FeedGone(String),
    /// A feed task or the publisher thread panicked or was cancelled.
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Shutdown came while the worker waited for etcd (for fencing epochs).
    #[error("stopped before etcd answered: connecting for fencing epochs")]
    Stopped,
    /// A `[cluster]` setting that cannot work.
    #[error("{setting}: {problem}")]
    Cluster {
        setting: &'static str,
        problem: String,
    },
    /// etcd refused or could not answer what a cluster member asked.
    #[error(transparent)]
    Coordination(#[from] crate::coord::store::StoreError),
    /// etcd refused the worker's credentials (fencing epochs).
    #[error(transparent)]
    Epochs(Box<crate::coord::CoordError>),
}

impl IngestError {
    /// Whether restarting with the same configuration cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            IngestError::Feed { .. } | IngestError::Cluster { .. } | IngestError::Epochs(_) => true,
            IngestError::Coordination(e) => !e.is_retryable(),
            IngestError::Kafka(e) => e.is_terminal(),
            IngestError::PublisherGone
            | IngestError::FeedGone(_)
            | IngestError::Task(_)
            | IngestError::Stopped => false,
        }
    }
}

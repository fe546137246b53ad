//! Errors of the ingest worker.

use crate::kafka::KafkaError;

/// Errors of the ingest worker.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("feed {feed}: {problem}")]
    Feed { feed: String, problem: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the publisher thread stopped")]
    PublisherGone,
    #[error("feed {0} is no longer running")]
    FeedGone(String),
    #[error("a worker task failed: {0}")]
    Task(String),
    #[error("stopped before etcd answered: {0}")]
    Stopped(String),
}

impl IngestError {
    /// Whether restarting with the same configuration cannot help.
    pub fn is_terminal(&self) -> bool {
        match self {
            IngestError::Feed { .. } => true,
            IngestError::Kafka(e) => e.is_terminal(),
            IngestError::PublisherGone
            | IngestError::FeedGone(_)
            | IngestError::Task(_)
            | IngestError::Stopped(_) => false,
        }
    }
}

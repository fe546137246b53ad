//! Kafka plumbing shared by the stages: client configuration with conflict
//! checks, topic creation, and the error type.
//!
//! Each stage sets the librdkafka options its guarantee depends on (idempotence,
//! transactional ids, isolation level, manual commits); users may pass any other
//! option through `[kafka.options]`, and an attempt to override one of the
//! stage's own is an error naming the option instead of a silent downgrade.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Errors talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka option `{option}` is set by tickfetch for this stage ({value}); remove it from [kafka.options]")]
    OptionConflict { option: String, value: String },
    #[error("kafka client error ({what}): {source}")]
    Client { what: String, source: RdKafkaError },
    #[error("creating topic {topic}: {message}")]
    CreateTopic { topic: String, message: String },
    #[error("encoding a record for {topic}: {source}")]
    Encode {
        topic: String,
        #[source]
        source: crate::wire::WireError,
    },
    #[error("{what}: the blocking thread failed: {source}")]
    Blocking {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{what}: no answer within {seconds} s")]
    Timeout { what: String, seconds: u64 },
    #[error("reading {topic}: the reader thread failed: {source}")]
    ReaderThread {
        topic: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl KafkaError {
    /// Whether retrying (with a fresh client) cannot help.
    pub fn is_terminal(&self) -> bool {
        matches!(self, KafkaError::OptionConflict { .. })
    }

    /// Wraps an rdkafka error with what was being done.
    pub fn client(what: impl Into<String>) -> impl FnOnce(RdKafkaError) -> KafkaError {
        let what = what.into();
        move |source| KafkaError::Client { what, source }
    }
}

/// The client context of readers that read to the end of a partition with
/// `enable.partition.eof`: librdkafka reports each end it reaches as an error
/// event too, which this context leaves to the reader instead of logging it.
pub struct ReadToEnd;

impl rdkafka::ClientContext for ReadToEnd {
    fn error(&self, error: RdKafkaError, reason: &str) {
        let end = matches!(
            error,
            RdKafkaError::PartitionEOF(_)
                | RdKafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEnd {}

/// A consumer that reads assigned partitions to the end the broker reports
/// (`enable.partition.eof`: a `PartitionEOF` event per partition, which counts
/// transaction markers and aborted records as read), with no offset commits
/// and no waiting at the end. `isolation` is `read_committed` or
/// `read_uncommitted`.
///
/// # Errors
/// A conflicting `[kafka.options]` entry, or the client cannot be created.
pub fn end_reader(
    config: &KafkaConfig,
    group: &str,
    isolation: &str,
) -> Result<rdkafka::consumer::BaseConsumer<ReadToEnd>, KafkaError> {
    client_config(
        config,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("isolation.level", isolation),
            ("fetch.queue.backoff.ms", "1"),
            ("enable.partition.eof", "true"),
            // At the end, the broker answers at once rather than waiting for
            // records that will not come.
            ("fetch.wait.max.ms", "10"),
        ],
    )?
    .create_with_context(ReadToEnd)
    .map_err(KafkaError::client(format!("creating reader {group}")))
}

/// A client config: the bootstrap servers, the user's pass-through options, and
/// the stage's own options, which the user's may not contradict.
///
/// # Errors
/// [`KafkaError::OptionConflict`] when `[kafka.options]` sets one of `owned` to a
/// different value.
pub fn client_config(
    config: &KafkaConfig,
    owned: &[(&str, &str)],
) -> Result<ClientConfig, KafkaError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap);
    client.set("log_level", "3");
    for (key, value) in &config.options {
        if let Some((_, ours)) = owned.iter().find(|(k, _)| k == key) {
            if ours != value {
                return Err(KafkaError::OptionConflict {
                    option: key.clone(),
                    value: (*ours).to_string(),
                });
            }
        }
        client.set(key, value);
    }
    for (key, value) in owned {
        client.set(*key, *value);
    }
    Ok(client)
}

/// A topic tickfetch needs.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Log compaction (changelog topics keep the last state per key).
    pub compacted: bool,
}

/// Creates the topics that do not exist yet.
///
/// # Errors
/// When the broker cannot be reached or refuses a topic for another reason than
/// that it exists.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config, &[])?
        .create()
        .map_err(KafkaError::client("creating admin client"))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1));
            if t.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(KafkaError::client("create_topics"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

// Producing lives with the record envelope; this path stays for callers of
// the old one.
#[doc(hidden)]
pub use crate::wire::send_waiting;

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
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, KafkaProtocol};

/// Errors talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka option `{option}` is set by tickfetch for this stage ({value}); remove it from [kafka.options]")]
    OptionConflict { option: String, value: String },
    #[error("kafka client error ({what}): {source}")]
    Client { what: String, source: RdKafkaError },
    /// The brokers refused who we are or we refused their certificate:
    /// retrying with the same settings cannot help.
    #[error("kafka at {bootstrap} ({security}): {reason}; check [kafka.security]")]
    Refused {
        bootstrap: String,
        security: String,
        reason: String,
    },
    #[error("[kafka.security] {0}")]
    Security(#[source] crate::config::ConfigError),
    #[error("kafka option `{option}` is set in [kafka.security]; remove it from [kafka.options]")]
    SecurityConflict { option: String },
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
        matches!(
            self,
            KafkaError::OptionConflict { .. }
                | KafkaError::Refused { .. }
                | KafkaError::Security(_)
                | KafkaError::SecurityConflict { .. }
        )
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
    if config.security.protocol != KafkaProtocol::Plaintext {
        for (key, value) in config
            .security
            .client_options()
            .map_err(KafkaError::Security)?
        {
            if config.options.contains_key(key) {
                return Err(KafkaError::SecurityConflict {
                    option: key.to_string(),
                });
            }
            client.set(key, value);
        }
    }
    for (key, value) in owned {
        client.set(*key, *value);
    }
    Ok(client)
}

/// A client context that keeps the first error saying the brokers refused
/// us (authentication) or the TLS handshake failed, so that a request that
/// then times out can say why; every error is logged too.
/// Clones share what they saw.
#[derive(Clone, Default)]
pub struct Refusals {
    first: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Refusals {
    /// The first refusal seen, if any.
    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

impl rdkafka::producer::ProducerContext for Refusals {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl rdkafka::ClientContext for Refusals {
    fn error(&self, error: RdKafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
        ) || reason.contains("SSL handshake failed")
            || reason.contains("certificate verify failed");
        if refused {
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| reason.to_string());
            }
        }
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
    }
}

/// Longest wait in [`check_access`] for the brokers' metadata.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(15);

/// Asks the brokers for their metadata, as the configured client: fails at
/// once with [`KafkaError::Refused`] (terminal) when they refuse our
/// credentials or the TLS handshake fails, naming the brokers, the protocol,
/// mechanism and user, never the password. A broker that does not answer
/// within 15 s gives a retryable client error.
///
/// # Errors
/// As above; a bad `[kafka.security]`.
pub async fn check_access(config: &KafkaConfig) -> Result<(), KafkaError> {
    let refusals = Refusals::default();
    let producer: BaseProducer<Refusals> = client_config(config, &[])?
        .create_with_context(refusals.clone())
        .map_err(KafkaError::client("creating a client"))?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + ACCESS_TIMEOUT;
        loop {
            // Polling serves the client's error events (into `refusals`).
            let answer = producer
                .client()
                .fetch_metadata(None, Duration::from_millis(500));
            producer.poll(Duration::from_millis(10));
            if let Some(reason) = refusals.first() {
                return Err(KafkaError::Refused {
                    bootstrap: config.bootstrap.clone(),
                    security: config.security.describe(),
                    reason,
                });
            }
            match answer {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(KafkaError::Client {
                        what: format!(
                            "reaching the brokers at {} ({})",
                            config.bootstrap,
                            config.security.describe()
                        ),
                        source: e,
                    })
                }
                Err(_) => producer.poll(Duration::from_millis(200)),
            }
        }
    })
    .await
    .map_err(|source| KafkaError::Blocking {
        what: "checking access to the brokers",
        source,
    })?
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
    check_access(config).await?;
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

//! Configuration shared by every binary: one TOML file, environment overrides,
//! command-line flags.
//!
//! Layers, later wins:
//! 1. built-in defaults, which serve the local stack;
//! 2. the service addresses that `tickfetch stack up` writes to `stack.env`
//!    (`KAFKA_BOOTSTRAP`, `ETCD_ENDPOINTS`, `MONGODB_URI`);
//! 3. the TOML file (`--config FILE` or `TICKFETCH_CONFIG`);
//! 4. `TICKFETCH__SECTION__KEY=value` environment variables (the value is read as a
//!    TOML value when it parses as one, else as a string);
//! 5. flags, applied by each binary as `section.key=value` overrides.
//!
//! Unknown keys are errors, and every error names the key and where its value
//! came from (the file path, the environment variable or the flag).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Interval;

/// Prefix of environment overrides: `TICKFETCH__ROLLUP__GRACE_MS=2000`.
pub const ENV_PREFIX: &str = "TICKFETCH__";
/// Environment variable naming the config file when no flag does.
pub const CONFIG_FILE_ENV: &str = "TICKFETCH_CONFIG";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub etcd: EtcdConfig,
    pub mongodb: MongoConfig,
    pub rollup: RollupConfig,
    pub sink: SinkConfig,
    pub ingest: IngestConfig,
    pub cluster: ClusterConfig,
    pub telemetry: TelemetryConfig,
}

/// The Kafka-API broker.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub bootstrap: String,
    /// Extra librdkafka client options, passed through (checked for conflicts with
    /// the options tickfetch sets itself, see `kafka::client_config`).
    pub options: BTreeMap<String, String>,
    /// TLS and SASL towards the brokers.
    pub security: KafkaSecurity,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".into(),
            options: BTreeMap::new(),
            security: KafkaSecurity::default(),
        }
    }
}

/// How clients reach the brokers: `security.protocol`, the SASL mechanism and
/// credentials, and the TLS files, as librdkafka options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    pub protocol: KafkaProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (the `sasl_*` protocols).
    pub sasl_mechanism: Option<String>,
    pub username: String,
    pub password: Option<PasswordSource>,
    /// PEM file of the CA that signed the brokers' certificates (else the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }
    pub fn sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }
    pub fn tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }
}

/// SASL mechanisms this build supports.
pub const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaSecurity {
    /// What the clients connect with, for messages: `sasl_ssl, SCRAM-SHA-512
    /// as user tickfetch` (never the password).
    pub fn describe(&self) -> String {
        match (&self.sasl_mechanism, self.protocol.sasl()) {
            (Some(mechanism), true) => format!(
                "{}, {mechanism} as user {}",
                self.protocol.as_str(),
                self.username
            ),
            _ => self.protocol.as_str().to_string(),
        }
    }

    /// The librdkafka options of this section, the password read from its
    /// source.
    ///
    /// # Errors
    /// A password file or variable that cannot be read.
    pub fn client_options(&self) -> Result<Vec<(&'static str, String)>, ConfigError> {
        let mut options = vec![("security.protocol", self.protocol.as_str().to_string())];
        if self.protocol.sasl() {
            if let Some(mechanism) = &self.sasl_mechanism {
                options.push(("sasl.mechanism", mechanism.clone()));
            }
            options.push(("sasl.username", self.username.clone()));
            if let Some(password) = &self.password {
                let password = password.resolve("kafka.security.password")?;
                options.push(("sasl.password", password.expose().to_string()));
            }
        }
        if self.protocol.tls() {
            for (option, file) in [
                ("ssl.ca.location", &self.ca_file),
                ("ssl.certificate.location", &self.cert_file),
                ("ssl.key.location", &self.key_file),
            ] {
                if let Some(file) = file {
                    options.push((option, file.display().to_string()));
                }
            }
        }
        Ok(options)
    }

    fn check(&self, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("kafka.security.{key}"),
            origin: origin(&format!("kafka.security.{key}")),
            message,
        };
        // A setting that is missing: named with where the protocol was set.
        let missing = |key: &str, message: String| ConfigError::Invalid {
            key: format!("kafka.security.{key}"),
            origin: origin("kafka.security.protocol"),
            message,
        };
        if self.protocol.sasl() {
            match self.sasl_mechanism.as_deref() {
                None => {
                    return Err(missing(
                        "sasl_mechanism",
                        format!(
                            "protocol {} needs a mechanism: one of {}",
                            self.protocol.as_str(),
                            SASL_MECHANISMS.join(", ")
                        ),
                    ))
                }
                Some(m) if !SASL_MECHANISMS.contains(&m) => {
                    return Err(invalid(
                        "sasl_mechanism",
                        format!(
                            "{m:?} is not supported (GSSAPI is not built in); one of {}",
                            SASL_MECHANISMS.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
            if self.username.is_empty() {
                return Err(missing(
                    "username",
                    format!("protocol {} needs a user name", self.protocol.as_str()),
                ));
            }
            match &self.password {
                None => return Err(missing(
                    "password",
                    "SASL needs a password: { file = \"…\" }, { env = \"…\" } or { value = \"…\" }"
                        .into(),
                )),
                Some(password) => password.check("kafka.security.password", origin)?,
            }
        } else if self.sasl_mechanism.is_some() {
            return Err(invalid(
                "sasl_mechanism",
                format!(
                    "protocol {} does not use SASL (use sasl_ssl or sasl_plaintext)",
                    self.protocol.as_str()
                ),
            ));
        }
        let tls_files = [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ];
        for (key, file) in tls_files {
            if let Some(file) = file {
                if !self.protocol.tls() {
                    return Err(invalid(
                        key,
                        format!(
                            "protocol {} does not use TLS (use ssl or sasl_ssl)",
                            self.protocol.as_str()
                        ),
                    ));
                }
                check_readable(file).map_err(|m| invalid(key, m))?;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "key_file",
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
        Ok(())
    }
}

/// A secret string: `Debug` and `Display` show `<redacted>`. Serialises as
/// itself (a config written for a child process keeps it).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The value itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where a password comes from: `{ file = "/run/secrets/x" }` (its first
/// line), `{ env = "VAR" }`, or `{ value = "..." }` (the last resort: it then
/// sits in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
    Value(Secret),
}

impl PasswordSource {
    /// The password, read now. `key` names the setting in errors.
    ///
    /// # Errors
    /// An unreadable or empty file, an unset variable.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: "the running process".into(),
            message,
        };
        match self {
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid(format!("password file {}: {e}", path.display())))?;
                let line = text.lines().next().unwrap_or_default().trim_end();
                if line.is_empty() {
                    return Err(invalid(format!(
                        "password file {} is empty",
                        path.display()
                    )));
                }
                Ok(Secret::new(line))
            }
            PasswordSource::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(invalid(format!("environment variable {var} is not set"))),
            },
            PasswordSource::Value(secret) if secret.is_empty() => {
                Err(invalid("the password is empty".into()))
            }
            PasswordSource::Value(secret) => Ok(secret.clone()),
        }
    }

    fn check(&self, key: &str, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        self.resolve(key).map(|_| ()).map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                origin: origin(&key),
                key,
                message,
            },
            other => other,
        })
    }
}

/// That `path` is a readable file.
fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.contains("secret") || k.contains("key");
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("options", &options)
            .field("security", &self.security)
            .finish()
    }
}

/// Topic names. Every binary derives its topics from these, so that stages agree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Prefix of every topic name: `{prefix}.trades`, `{prefix}.candles.1m`, ...
    pub prefix: String,
    /// Partitions of the trades and candle topics (all the same, so a symbol's
    /// key lands on the same partition number at every level).
    pub partitions: i32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: "tickfetch".into(),
            partitions: 4,
        }
    }
}

impl TopicsConfig {
    /// Trades and worker watermarks.
    pub fn trades(&self) -> String {
        format!("{}.trades", self.prefix)
    }
    /// Candles of one interval.
    pub fn candles(&self, interval: Interval) -> String {
        format!("{}.candles.{}", self.prefix, interval)
    }
    /// Records that could not be processed, with the reason in headers.
    pub fn dead_letter(&self) -> String {
        format!("{}.deadletter", self.prefix)
    }
    /// Compacted open-window state of one rollup stage.
    pub fn changelog(&self, interval: Interval) -> String {
        format!("{}.changelog.{}", self.prefix, interval)
    }
    /// The input topic of the stage that produces `interval`.
    pub fn stage_input(&self, interval: Interval) -> String {
        match interval.child() {
            None => self.trades(),
            Some(child) => self.candles(child),
        }
    }
}

/// etcd, for coordination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Root key prefix of every record tickfetch stores.
    pub prefix: String,
    /// Whether writers (ingest primaries, rollup stages) claim a fencing epoch
    /// from etcd and stamp it on their records (`coord::epoch`). Off: no etcd
    /// needed by them, and no epoch fencing of their late writes.
    pub epochs: bool,
    /// A user of etcd's authentication (`etcdctl user add`); empty: none.
    pub username: String,
    pub password: Option<PasswordSource>,
    /// TLS towards etcd: the CA of its server certificate (TLS is on when
    /// this is set), and a client certificate and key for
    /// `--client-cert-auth`.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            prefix: "/tickfetch".into(),
            epochs: true,
            username: String::new(),
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl EtcdConfig {
    /// How tickfetch reaches etcd, for messages (never the password).
    pub fn describe(&self) -> String {
        let tls = if self.ca_file.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        if self.username.is_empty() {
            tls.to_string()
        } else {
            format!("{tls}, as user {}", self.username)
        }
    }

    fn check(&self, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("etcd.{key}"),
            origin: origin(&format!("etcd.{key}")),
            message,
        };
        match (self.username.is_empty(), &self.password) {
            (true, Some(_)) => {
                return Err(invalid("username", "a password needs a user name".into()))
            }
            (false, None) => {
                return Err(ConfigError::Invalid {
                    key: "etcd.password".into(),
                    origin: origin("etcd.username"),
                    message: "a user needs a password: { file = \"…\" }, { env = \"…\" } or { value = \"…\" }"
                        .into(),
                })
            }
            (false, Some(password)) => password.check("etcd.password", origin)?,
            (true, None) => {}
        }
        for (key, file) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(file) = file {
                check_readable(file).map_err(|m| invalid(key, m))?;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "key_file",
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err(invalid(
                "ca_file",
                "a client certificate is sent over TLS: set ca_file too".into(),
            ));
        }
        Ok(())
    }
}

/// MongoDB, for history.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoConfig {
    /// A MongoDB connection string; TLS through its options (`tls=true`,
    /// `tlsCAFile=…`), the user in it or in `username`.
    pub uri: String,
    pub database: String,
    /// A user for the URI's authentication (instead of `user@` in it).
    pub username: String,
    /// The password, from a file or variable rather than the URI.
    pub password: Option<PasswordSource>,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "tickfetch".into(),
            username: String::new(),
            password: None,
        }
    }
}

impl MongoConfig {
    /// The driver's options: the URI's, with `username` and the password
    /// source applied.
    ///
    /// # Errors
    /// A URI the driver refuses, a password that cannot be read.
    pub async fn client_options(&self) -> Result<mongodb::options::ClientOptions, MongoSetupError> {
        let mut options = mongodb::options::ClientOptions::parse(&self.uri)
            .await
            .map_err(|source| MongoSetupError::Uri {
                uri: redact_uri(&self.uri),
                message: source.to_string(),
            })?;
        let password = match &self.password {
            Some(source) => Some(source.resolve("mongodb.password")?),
            None => None,
        };
        if !self.username.is_empty() || password.is_some() {
            let mut credential = options.credential.take().unwrap_or_default();
            if !self.username.is_empty() {
                credential.username = Some(self.username.clone());
            }
            if let Some(password) = password {
                credential.password = Some(password.expose().to_string());
            }
            options.credential = Some(credential);
        }
        Ok(options)
    }

    /// Where and as whom, for messages (never the password).
    pub fn describe(&self) -> String {
        let user = if self.username.is_empty() {
            String::new()
        } else {
            format!(" as user {}", self.username)
        };
        format!("{}{user}", redact_uri(&self.uri))
    }

    fn check(&self, origin: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        match &self.password {
            Some(password) => password.check("mongodb.password", origin),
            None => Ok(()),
        }
    }
}

/// Why a MongoDB client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MongoSetupError {
    #[error("mongodb.uri {uri}: {message}")]
    Uri { uri: String, message: String },
    #[error(transparent)]
    Password(#[from] ConfigError),
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`.
pub fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &uri[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:<redacted>{}",
                    &uri[..scheme_end + 3],
                    &creds[..colon],
                    &uri[at..]
                ),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}

/// Delivery guarantee of a stage that writes to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Input offsets, output records and state in one Kafka transaction.
    ExactlyOnce,
    /// Idempotent producer, offsets committed after delivery; replays may repeat
    /// records (downstream dedup by window and revision absorbs them).
    AtLeastOnce,
}

/// One rollup stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    /// Grace after a 1s window's end before it closes (trade stage only; parent
    /// stages close when their last child arrives).
    pub grace_ms: i64,
    /// How far behind the watermark late data still corrects a closed window.
    pub retention_ms: i64,
    /// Longest time a transaction stays open.
    pub commit_interval_ms: u64,
    /// Most input records in one transaction.
    pub max_batch: usize,
    pub guarantee: Guarantee,
    /// Consumer group prefix; the group is `{group_prefix}.{stage}`.
    pub group_prefix: String,
    /// Kafka consumer session timeout.
    pub session_timeout_ms: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self {
            grace_ms: 1_000,
            retention_ms: 600_000,
            commit_interval_ms: 100,
            max_batch: 50_000,
            guarantee: Guarantee::ExactlyOnce,
            group_prefix: "tickfetch.rollup".into(),
            session_timeout_ms: 10_000,
        }
    }
}

/// The MongoDB sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Candle intervals written, one collection each (`candles_1m`, ...).
    pub intervals: Vec<Interval>,
    /// Also write the trades topic to the `trades` collection.
    pub trades: bool,
    /// Most documents in one bulk write.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written.
    pub batch_ms: u64,
    /// Consumer group.
    pub group_id: String,
    /// Store in MongoDB time-series collections: every revision is inserted as
    /// its own document (time-series collections take no guarded upserts) and
    /// readers keep the highest revision per window. See docs/operations.md.
    pub timeseries: bool,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            intervals: Interval::ALL.to_vec(),
            trades: false,
            batch_size: 1_000,
            batch_ms: 200,
            group_id: "tickfetch.sink".into(),
            timeseries: false,
        }
    }
}

/// The ingest worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Feeds run from config (with coordination, feeds come from etcd instead).
    pub feeds: Vec<FeedConfig>,
    /// How often each symbol's watermark is published.
    pub watermark_interval_ms: u64,
    /// A live, caught-up symbol's watermark trails the wall clock by this much:
    /// room for exchange → worker latency and clock skew.
    pub allowed_lateness_ms: u64,
    /// First reconnect delay; doubles per failed attempt (with jitter).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
    /// Shortest silence after which a connection's data watchdog recycles it.
    pub watchdog_floor_ms: u64,
    /// Longest silence the watchdog waits (symbols with no observed trades).
    pub watchdog_ceiling_ms: u64,
    /// How long a trade-id gap may wait for the missing trades to arrive on
    /// another connection (rotation overlap) before REST backfill starts.
    pub gap_grace_ms: u64,
    /// Timeout of one REST backfill request.
    pub rest_timeout_ms: u64,
    /// Trades a hot replica keeps per symbol for its promotion.
    pub replica_buffer_trades: usize,
    /// Where instrument names (`BASE-QUOTE`) come from: `fetch` the
    /// exchange's own instrument list at start (cached; the built-in rules
    /// when neither the list nor the cache can be had), or `builtin` rules
    /// only. See `ingest::venues::instruments`.
    pub instruments: InstrumentsMode,
    /// Folder of the cached instrument lists (`<exchange>.json`); absent:
    /// `instruments/` in tickfetch's cache folder (`$TICKFETCH_CACHE`, else
    /// `$XDG_CACHE_HOME/tickfetch`, else `~/.cache/tickfetch`); empty: no cache.
    pub instruments_cache_dir: Option<PathBuf>,
    /// Loading every exchange's instrument list takes at most this long.
    pub instruments_timeout_ms: u64,
}

/// Where instrument names come from (`ingest.instruments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstrumentsMode {
    /// The exchange's instrument list (then its cached copy, then the rules).
    #[default]
    Fetch,
    /// The built-in rules (quote-suffix lists, `BASE-QUOTE` ids), no request.
    Builtin,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            feeds: Vec::new(),
            watermark_interval_ms: 1_000,
            allowed_lateness_ms: 2_000,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            watchdog_floor_ms: 10_000,
            watchdog_ceiling_ms: 600_000,
            gap_grace_ms: 500,
            rest_timeout_ms: 5_000,
            replica_buffer_trades: 10_000,
            instruments: InstrumentsMode::Fetch,
            instruments_cache_dir: None,
            instruments_timeout_ms: 10_000,
        }
    }
}

/// An ingest worker in a coordinated cluster: with `worker_id` set,
/// `tickfetch-ingest` registers in etcd and runs the feeds the master assigns
/// it (`assignments/`), not `[[ingest.feeds]]`; those entries then only give
/// each exchange's endpoints and connection settings (their `symbols` are
/// ignored and may be empty).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This worker's id in `workers/{id}`; empty: not in a cluster.
    pub worker_id: String,
    /// Relative capacity (≥ 1): the master gives a worker of capacity 2
    /// twice the feeds of one of capacity 1.
    pub capacity: u32,
    /// TTL of the worker's lease: a dead worker's feeds move after this.
    pub lease_ttl_ms: u64,
    /// How often a primary records its progress (`progress/`).
    pub progress_interval_ms: u64,
    /// Records read back per partition of the trades topic when a feed
    /// becomes primary, to find where its predecessor stopped.
    pub resume_lookback: i64,
    /// On a planned handover, how long a primary whose feed moved keeps
    /// publishing until it has published every trade the exchange made
    /// before the move (one with a later exchange time has arrived), so
    /// that its successor's buffer, filling since the replica went live,
    /// covers the rest; a quiet symbol waits this long. The catch-up runs
    /// beside the worker's loop, which goes on noticing moves; the
    /// successor's patience adds this limit. 0: stop at once (a primary
    /// whose connection lags then leaves a gap its successor's buffer may
    /// not reach).
    pub handover_catch_up_ms: u64,
    /// The version this worker registers with (`tickfetch rollout
    /// --to-version` waits for it); empty: the build's own.
    pub version: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            worker_id: String::new(),
            capacity: 1,
            lease_ttl_ms: 5_000,
            progress_interval_ms: 1_000,
            resume_lookback: 10_000,
            handover_catch_up_ms: 3_000,
            version: String::new(),
        }
    }
}

/// One feed: an exchange and its symbols.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub exchange: crate::model::Exchange,
    pub symbols: Vec<String>,
    /// Websocket base URL; the exchange's live endpoint when absent.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// REST base URL for backfill; the exchange's live endpoint when absent.
    #[serde(default)]
    pub rest_url: Option<String>,
    /// Which of the exchange's trade streams (`aggTrade`, `trade`, `simple`,
    /// `matches`, `spot`, `trades`…); the exchange's first feed when absent.
    #[serde(default)]
    pub feed: Option<String>,
    /// At most this many symbols per connection (below the exchange's own limit).
    #[serde(default)]
    pub symbols_per_connection: Option<usize>,
    /// The exchange's forced disconnect age, when it differs from the adapter's
    /// (a simulator with short-lived connections); rotation happens before it.
    #[serde(default)]
    pub max_connection_age_ms: Option<u64>,
    /// Keep-alive ping interval instead of the adapter's.
    #[serde(default)]
    pub ping_interval_ms: Option<u64>,
    /// How long a ping may go unanswered before the connection is dropped.
    #[serde(default)]
    pub pong_timeout_ms: Option<u64>,
}

impl FeedConfig {
    /// A feed of `exchange` with no symbols and every setting the adapter's
    /// (live endpoints, the exchange's first feed).
    pub fn for_exchange(exchange: crate::model::Exchange) -> Self {
        Self {
            exchange,
            symbols: Vec::new(),
            ws_url: None,
            rest_url: None,
            feed: None,
            symbols_per_connection: None,
            max_connection_age_ms: None,
            ping_interval_ms: None,
            pong_timeout_ms: None,
        }
    }
}

/// Logs and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint: `auto`
    /// (loopback on the binary's own port, see docs/operations.md), a
    /// `host:port` (port 0: any free one), or empty to disable it.
    pub http_addr: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `/readyz` turns unready when the process's consumer group is more
    /// than this many records behind on its input (stages, sink); 0: no
    /// bound. The lag is the group's, so every instance of a stage turns
    /// unready together (an orchestrator's rolling update then waits).
    pub ready_max_lag: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            http_addr: "auto".into(),
            log_format: LogFormat::Text,
            ready_max_lag: 0,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration error: what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    #[error("override {0:?} is not of the form section.key=value")]
    BadOverride(String),
}

impl ConfigError {
    /// Configuration errors never go away by retrying.
    pub fn is_terminal(&self) -> bool {
        true
    }
}

/// Builds a [`Config`] from the layers in the module docs.
#[derive(Debug, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    overrides: Vec<(String, String)>,
    env: Option<Vec<(String, String)>>,
}

impl ConfigLoader {
    /// A loader reading the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this TOML file (else `TICKFETCH_CONFIG`, else no file).
    pub fn file(mut self, path: Option<&Path>) -> Self {
        self.file = path.map(Path::to_path_buf);
        self
    }

    /// Uses these variables instead of the process environment (tests).
    pub fn env(mut self, vars: Vec<(String, String)>) -> Self {
        self.env = Some(vars);
        self
    }

    /// Adds a flag override `section.key=value`.
    ///
    /// # Errors
    /// When the text has no `=` or no dotted key.
    pub fn set(mut self, assignment: &str) -> Result<Self, ConfigError> {
        let (key, value) = assignment
            .split_once('=')
            .filter(|(k, _)| k.contains('.'))
            .ok_or_else(|| ConfigError::BadOverride(assignment.to_string()))?;
        self.overrides
            .push((key.trim().to_string(), value.trim().to_string()));
        Ok(self)
    }

    /// Merges the layers and checks the result.
    ///
    /// # Errors
    /// An unreadable or malformed file, an unknown key, or a value of the wrong
    /// type; the error names the key and where it came from.
    pub fn load(self) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = self.env.unwrap_or_else(|| std::env::vars().collect());
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let mut root = toml::Table::new();
        let mut origins: BTreeMap<String, String> = BTreeMap::new();

        // Layer 2: the stack's service addresses.
        for (var, key) in [
            ("KAFKA_BOOTSTRAP", "kafka.bootstrap"),
            ("MONGODB_URI", "mongodb.uri"),
        ] {
            if let Some(value) = lookup(var) {
                insert_path(&mut root, key, toml::Value::String(value));
                origins.insert(key.into(), format!("environment variable {var}"));
            }
        }
        if let Some(value) = lookup("ETCD_ENDPOINTS") {
            let endpoints = value
                .split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .collect();
            insert_path(&mut root, "etcd.endpoints", toml::Value::Array(endpoints));
            origins.insert(
                "etcd.endpoints".into(),
                "environment variable ETCD_ENDPOINTS".into(),
            );
        }

        // Layer 3: the file.
        let file = self
            .file
            .or_else(|| lookup(CONFIG_FILE_ENV).map(PathBuf::from));
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            let mut keys = Vec::new();
            collect_keys(&table, "", &mut keys);
            for key in keys {
                origins.insert(key, format!("config file {}", path.display()));
            }
            merge(&mut root, table);
        }

        // Layer 4: TICKFETCH__SECTION__KEY.
        for (name, value) in &env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                insert_path(&mut root, &key, scalar(value));
                origins.insert(key, format!("environment variable {name}"));
            }
        }

        // Layer 5: flags.
        for (key, value) in self.overrides {
            insert_path(&mut root, &key, scalar(&value));
            origins.insert(key.clone(), format!("flag --set {key}={value}"));
        }

        let origin_of = |key: &str| {
            origins
                .iter()
                .filter(|(k, _)| {
                    key == k.as_str()
                        || key.starts_with(&format!("{k}."))
                        || key.starts_with(&format!("{k}["))
                        || k.starts_with(&format!("{key}."))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, o)| o.clone())
                .or_else(|| {
                    file.as_ref()
                        .map(|p| format!("config file {}", p.display()))
                })
                .unwrap_or_else(|| "defaults".into())
        };
        let deserializer = toml::Value::Table(root);
        let config =
            serde_path_to_error::deserialize::<_, Config>(deserializer).map_err(|err| {
                let key = err.path().to_string();
                ConfigError::Invalid {
                    origin: origin_of(&key),
                    key,
                    message: err.into_inner().to_string(),
                }
            })?;
        config.kafka.security.check(&origin_of)?;
        config.etcd.check(&origin_of)?;
        config.mongodb.check(&origin_of)?;
        Ok(config)
    }
}

/// An override's text as TOML (number, bool, array...) or else a plain string.
fn scalar(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn insert_path(root: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut table = root;
    for part in parts {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        table = next;
    }
    table.insert(last.to_string(), value);
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming)
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn collect_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let toml::Value::Table(inner) = value {
            collect_keys(inner, &path, out);
        }
        out.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("tickfetch.toml");
        std::fs::write(&path, text).expect("write config");
        (dir, path)
    }

    /// A throwaway directory under the target dir, removed on drop.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "tickfetch-config-test-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&path).expect("temp dir");
                Dir(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let (_dir, path) = write("[rollup]\ngrace_ms = 2000\n[kafka]\nbootstrap = \"file:1\"\n");
        let config = ConfigLoader::new()
            .file(Some(&path))
            .env(vec![
                ("KAFKA_BOOTSTRAP".into(), "stack:1".into()),
                ("MONGODB_URI".into(), "mongodb://stack:2".into()),
                ("TICKFETCH__ROLLUP__RETENTION_MS".into(), "5000".into()),
                ("TICKFETCH__TOPICS__PREFIX".into(), "run42".into()),
            ])
            .set("rollup.grace_ms=3000")
            .expect("override")
            .load()
            .expect("valid config");
        assert_eq!(config.kafka.bootstrap, "file:1", "file beats stack env");
        assert_eq!(config.mongodb.uri, "mongodb://stack:2");
        assert_eq!(config.rollup.grace_ms, 3000, "flag beats file");
        assert_eq!(config.rollup.retention_ms, 5000);
        assert_eq!(config.topics.trades(), "run42.trades");
        assert_eq!(config.topics.stage_input(Interval::S5), "run42.candles.1s");
    }

    #[test]
    fn errors_name_key_and_origin() {
        let cases = [
            (
                "unknown key in file",
                "[rollup]\ngrace = 1\n",
                vec![],
                "rollup",
                "config file",
            ),
            (
                "wrong type in file",
                "[rollup]\ngrace_ms = \"soon\"\n",
                vec![],
                "rollup.grace_ms",
                "config file",
            ),
            (
                "wrong type in env",
                "",
                vec![(
                    "TICKFETCH__SINK__BATCH_SIZE".to_string(),
                    "many".to_string(),
                )],
                "sink.batch_size",
                "TICKFETCH__SINK__BATCH_SIZE",
            ),
            (
                "bad interval",
                "[sink]\nintervals = [\"1h\"]\n",
                vec![],
                "sink.intervals",
                "config file",
            ),
        ];
        for (name, text, env, key, origin) in cases {
            let (_dir, path) = write(text);
            let err = ConfigLoader::new()
                .file(Some(&path))
                .env(env)
                .load()
                .expect_err(name);
            let message = err.to_string();
            assert!(message.contains(key), "{name}: {message}");
            assert!(message.contains(origin), "{name}: {message}");
        }
    }

    #[test]
    fn instrument_keys() {
        let (_dir, path) = write(
            "[ingest]\ninstruments = \"builtin\"\ninstruments_cache_dir = \"/var/cache/tf\"\n",
        );
        let config = ConfigLoader::new()
            .file(Some(&path))
            .env(vec![(
                "TICKFETCH__INGEST__INSTRUMENTS_TIMEOUT_MS".into(),
                "2500".into(),
            )])
            .load()
            .expect("valid config");
        assert_eq!(config.ingest.instruments, InstrumentsMode::Builtin);
        assert_eq!(
            config.ingest.instruments_cache_dir,
            Some(PathBuf::from("/var/cache/tf"))
        );
        assert_eq!(config.ingest.instruments_timeout_ms, 2500);
        assert_eq!(Config::default().ingest.instruments, InstrumentsMode::Fetch);

        let (_dir, path) = write("[ingest]\ninstruments = \"sometimes\"\n");
        let message = ConfigLoader::new()
            .file(Some(&path))
            .env(vec![])
            .load()
            .expect_err("unknown mode")
            .to_string();
        assert!(message.contains("ingest.instruments"), "{message}");
        assert!(message.contains("builtin"), "{message}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.mongodb.uri = "mongodb://user:hunter2@db:27017".into();
        config
            .kafka
            .options
            .insert("sasl.password".into(), "hunter2".into());
        config.kafka.security.password = Some(PasswordSource::Value(Secret::new("hunter2")));
        config.etcd.password = Some(PasswordSource::Value(Secret::new("hunter2")));
        config.mongodb.password = Some(PasswordSource::Value(Secret::new("hunter2")));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("user:<redacted>@db"), "{debug}");
        assert_eq!(format!("{}", Secret::new("hunter2")), "<redacted>");
    }

    #[test]
    fn kafka_security_is_checked_at_load_naming_the_key() {
        let (dir, path) = write(
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\n",
        );
        let err = ConfigLoader::new()
            .env(vec![])
            .file(Some(&path))
            .load()
            .expect_err("no password");
        let text = err.to_string();
        assert!(
            text.contains("kafka.security.password") && text.contains(&path.display().to_string()),
            "{text}"
        );

        let (_dir2, path) = write(
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"\nusername = \"u\"\npassword = { value = \"p\" }\n",
        );
        let text = ConfigLoader::new()
            .env(vec![])
            .file(Some(&path))
            .load()
            .expect_err("GSSAPI")
            .to_string();
        assert!(
            text.contains("kafka.security.sasl_mechanism") && text.contains("GSSAPI"),
            "{text}"
        );

        // A password file that is not there, set from the environment.
        let text = ConfigLoader::new()
            .env(vec![
                (
                    "TICKFETCH__KAFKA__SECURITY__PROTOCOL".into(),
                    "sasl_plaintext".into(),
                ),
                (
                    "TICKFETCH__KAFKA__SECURITY__SASL_MECHANISM".into(),
                    "PLAIN".into(),
                ),
                ("TICKFETCH__KAFKA__SECURITY__USERNAME".into(), "u".into()),
                (
                    "TICKFETCH__KAFKA__SECURITY__PASSWORD__FILE".into(),
                    "/nonexistent/kafka.password".into(),
                ),
            ])
            .load()
            .expect_err("missing file")
            .to_string();
        assert!(
            text.contains("kafka.security.password")
                && text.contains("TICKFETCH__KAFKA__SECURITY__PASSWORD__FILE")
                && text.contains("/nonexistent/kafka.password"),
            "{text}"
        );

        // A CA file without TLS.
        let text = ConfigLoader::new()
            .env(vec![])
            .set("kafka.security.ca_file=/etc/hostname")
            .expect("override")
            .load()
            .expect_err("ca without tls")
            .to_string();
        assert!(
            text.contains("kafka.security.ca_file") && text.contains("does not use TLS"),
            "{text}"
        );
        drop(dir);
    }

    #[test]
    fn passwords_resolve_from_a_file_or_the_environment() {
        let (dir, _) = write("");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").expect("write");
        let source = PasswordSource::File(file.clone());
        assert_eq!(source.resolve("k").expect("read").expose(), "s3cret");
        std::fs::write(&file, "\n").expect("write");
        let text = source
            .resolve("etcd.password")
            .expect_err("empty")
            .to_string();
        assert!(
            text.contains("etcd.password") && text.contains("is empty"),
            "{text}"
        );
        let missing = PasswordSource::Env("TICKFETCH_TEST_NO_SUCH_VARIABLE".into());
        let text = missing
            .resolve("mongodb.password")
            .expect_err("unset")
            .to_string();
        assert!(text.contains("TICKFETCH_TEST_NO_SUCH_VARIABLE"), "{text}");
        let path = std::env::var("PATH").expect("PATH is set");
        let env = PasswordSource::Env("PATH".into());
        assert_eq!(env.resolve("k").expect("set").expose(), path);
    }

    #[test]
    fn etcd_and_mongodb_credentials_are_checked() {
        let text = ConfigLoader::new()
            .env(vec![])
            .set("etcd.username=u")
            .expect("override")
            .load()
            .expect_err("user without password")
            .to_string();
        assert!(
            text.contains("etcd.password") && text.contains("flag --set etcd.username"),
            "{text}"
        );
        let text = ConfigLoader::new()
            .env(vec![])
            .set("etcd.cert_file=/etc/hostname")
            .and_then(|l| l.set("etcd.key_file=/etc/hostname"))
            .expect("override")
            .load()
            .expect_err("client cert without CA")
            .to_string();
        assert!(text.contains("etcd.ca_file"), "{text}");
        let text = ConfigLoader::new()
            .env(vec![(
                "TICKFETCH__MONGODB__PASSWORD__ENV".into(),
                "TICKFETCH_TEST_NO_SUCH_VARIABLE".into(),
            )])
            .load()
            .expect_err("unset variable")
            .to_string();
        assert!(
            text.contains("mongodb.password") && text.contains("TICKFETCH__MONGODB__PASSWORD__ENV"),
            "{text}"
        );
    }
}

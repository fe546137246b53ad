//! The etcd object mapper: typed records under key templates.
//!
//! A [`Record`] is a serde type with a key template below the cluster's root
//! prefix (`etcd.prefix`), e.g. `feeds/{exchange}/{symbol}`; its values fill
//! the template's fields. A [`Store`] reads and writes records as JSON:
//!
//! - [`Store::get`], [`Store::put`], [`Store::delete`];
//! - [`Store::create`] (only if absent) and [`Store::compare_and_swap`] (only if
//!   the record's `mod_revision` is still the one read), which return the
//!   current record on a conflict;
//! - [`Store::list`]: every record under a prefix of the template (the first
//!   fields given), read page by page ([`Store::with_page_size`]) at one
//!   revision, so a listing is a consistent snapshot however large;
//! - [`Batch`]: several puts and deletes in one etcd transaction, guarded by
//!   revisions of records or of any key below the root (an election key);
//! - [`Lease`]: records bound to a lease that a task keeps alive; the holder
//!   learns when it is gone ([`Lease::lost`]): revoked, expired, or not
//!   refreshed for two thirds of its TTL (etcd unreachable), which is before
//!   etcd could expire it;
//! - [`Watch`]: typed events under a prefix from a revision on. It resumes from
//!   the next revision after a disconnect or an etcd restart; when that
//!   revision was compacted away it lists the prefix again and says so with a
//!   [`WatchEvent::Relisted`] event, never a silent gap.
//!
//! A value that does not decode names its key ([`StoreError::Decode`], or
//! [`Listing::undecodable`] in a listing); etcd unreachable is a retryable
//! [`StoreError::Etcd`] that names the endpoints.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use tickfetch::coord::store::{Record, Store};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct Feed { exchange: String, symbol: String, replicas: u32 }
//!
//! impl Record for Feed {
//!     const TEMPLATE: &'static str = "feeds/{exchange}/{symbol}";
//!     fn key_values(&self) -> Vec<String> {
//!         vec![self.exchange.clone(), self.symbol.clone()]
//!     }
//! }
//!
//! # async fn example(config: &tickfetch::config::EtcdConfig) -> Result<(), tickfetch::coord::store::StoreError> {
//! let store = Store::connect(config).await?;
//! store.put(&Feed { exchange: "binance".into(), symbol: "BTCUSDT".into(), replicas: 1 }).await?;
//! let binance = store.list::<Feed, _>(&["binance"]).await?; // feeds/binance/…
//! let mut watch = store.watch::<Feed, &str>(&[], binance.revision + 1).await?;
//! let event = watch.next().await?;                           // Put, Deleted or Relisted
//! # let _ = event; Ok(()) }
//! ```

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions, WatchStream, Watcher,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::EtcdConfig;

/// Timeout of one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Records per page of a listing.
pub const DEFAULT_PAGE_SIZE: i64 = 500;
/// Longest wait between reconnects of a watch or a lease keeper.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Errors of the object mapper.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer or refused the request.
    #[error("etcd at {endpoints}: {what}: {source}")]
    Etcd {
        endpoints: String,
        what: String,
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// etcd did not answer in time.
    #[error("etcd at {endpoints}: {what}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout { endpoints: String, what: String },
    /// A stored value is not a valid record of its type.
    #[error("record {key}: does not decode: {message}")]
    Decode { key: String, message: String },
    /// A record could not be encoded.
    #[error("record {key}: does not encode: {message}")]
    Encode { key: String, message: String },
    /// Values that do not fit a key template.
    #[error("key template {template}: {message}")]
    Key {
        template: &'static str,
        message: String,
    },
    /// A write bound to a lease that is already gone.
    #[error("lease {id:x} is gone")]
    LeaseLost { id: i64 },
    /// The TLS files or the password of `[etcd]` cannot be used.
    #[error(transparent)]
    Config(crate::config::ConfigError),
}

/// etcd-client's options for `config`: a connect timeout, its user and
/// password, its TLS files.
///
/// # Errors
/// A password or TLS file that cannot be read, naming the setting.
pub fn connect_options(
    config: &EtcdConfig,
    connect_timeout: Duration,
) -> Result<ConnectOptions, crate::config::ConfigError> {
    let mut options = ConnectOptions::new().with_connect_timeout(connect_timeout);
    if let Some(password) = &config.password {
        let password = password.resolve("etcd.password")?;
        options = options.with_user(config.username.clone(), password.expose());
    }
    if let Some(ca) = &config.ca_file {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| crate::config::ConfigError::Invalid {
                key: format!("etcd.{key}"),
                origin: "the running process".into(),
                message: format!("{}: {e}", path.display()),
            })
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca_file", ca)?));
        if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("cert_file", cert)?,
                read("key_file", key)?,
            ));
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

impl StoreError {
    /// Whether the same call may succeed later (etcd down or restarting).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Timeout { .. } => true,
            StoreError::Etcd { source, .. } => match source.as_ref() {
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
                etcd_client::Error::GRpcStatus(status) => matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Aborted
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                ),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A record type: JSON under a key template below the root prefix.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `/`-separated segments, literal or `{field}`, e.g. `feeds/{exchange}/{symbol}`.
    const TEMPLATE: &'static str;
    /// The template's field values for this record, in order.
    fn key_values(&self) -> Vec<String>;
}

/// A key template parsed.
#[derive(Debug, Clone)]
struct Template {
    text: &'static str,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(&'static str),
    Field,
}

impl Template {
    fn of<T: Record>() -> Template {
        let segments = T::TEMPLATE
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Field
                } else {
                    Segment::Literal(s)
                }
            })
            .collect();
        Template {
            text: T::TEMPLATE,
            segments,
        }
    }

    fn fields(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| **s == Segment::Field)
            .count()
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Key {
            template: self.text,
            message,
        }
    }

    /// The key for all field values; a prefix ending in `/` for fewer.
    fn render<S: AsRef<str>>(&self, values: &[S]) -> Result<String, StoreError> {
        let fields = self.fields();
        if values.len() > fields {
            return Err(self.error(format!("{} values for {fields} fields", values.len())));
        }
        for value in values {
            let value = value.as_ref();
            if value.is_empty() || value.contains('/') || value.chars().any(char::is_control) {
                return Err(self.error(format!(
                    "{value:?} cannot fill a field (empty, `/` or a control character)"
                )));
            }
        }
        let mut out = String::new();
        let mut given = values.iter();
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field => match given.next() {
                    Some(value) => out.push_str(value.as_ref()),
                    // A prefix: everything before this field.
                    None => {
                        out.pop();
                        return Ok(out);
                    }
                },
            }
        }
        Ok(out)
    }
}

/// A record with its etcd metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The key below the root prefix.
    pub key: String,
    pub value: T,
    pub create_revision: i64,
    /// Compare against this for [`Store::compare_and_swap`].
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the record is bound to (0: none).
    pub lease: i64,
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// Written at this revision.
    Written { revision: i64 },
    /// The condition failed; the record as it is now (`None`: absent).
    Conflict { current: Option<Versioned<T>> },
}

/// Every record under a prefix, at one revision.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    /// The etcd revision the listing reflects; watch from `revision + 1`.
    pub revision: i64,
    /// In key order.
    pub records: Vec<Versioned<T>>,
    /// Keys whose values did not decode, with the reason.
    pub undecodable: Vec<(String, String)>,
}

/// A handle on etcd under one root prefix. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    root: String,
    endpoints: String,
    page_size: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .finish()
    }
}

impl Store {
    /// Connects to `config.endpoints` under `config.prefix`.
    ///
    /// # Errors
    /// A retryable [`StoreError::Etcd`] naming the endpoints when none answers.
    pub async fn connect(config: &EtcdConfig) -> Result<Store, StoreError> {
        let endpoints = config.endpoints.join(",");
        let what = if config.username.is_empty() && config.ca_file.is_none() {
            "connecting".to_string()
        } else {
            format!("connecting ({})", config.describe())
        };
        let options = connect_options(config, REQUEST_TIMEOUT)
            .map_err(StoreError::Config)?
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
        let client = Client::connect(config.endpoints.clone(), Some(options))
            .await
            .map_err(|source| StoreError::Etcd {
                endpoints: endpoints.clone(),
                what: what.clone(),
                source: Box::new(source),
            })?;
        let store = Store {
            client,
            root: config.prefix.trim_end_matches('/').to_string(),
            endpoints,
            page_size: DEFAULT_PAGE_SIZE,
        };
        // The channel connects lazily: one request says whether etcd answers.
        let mut client = store.client.clone();
        store.call(&what, client.status()).await.map(|_| store)
    }

    /// The same store, listing `page_size` records per request.
    pub fn with_page_size(mut self, page_size: i64) -> Store {
        self.page_size = page_size.max(1);
        self
    }

    /// The root prefix, e.g. `/tickfetch`.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The endpoints, comma-separated, as errors name them.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The absolute etcd key of a key below the root.
    pub fn absolute(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }

    fn relative<'k>(&self, key: &'k str) -> &'k str {
        key.strip_prefix(&self.root)
            .and_then(|k| k.strip_prefix('/'))
            .unwrap_or(key)
    }

    /// The key of `T` with all `values`, below the root.
    ///
    /// # Errors
    /// Values that do not fill the template.
    pub fn key_of<T: Record, S: AsRef<str>>(values: &[S]) -> Result<String, StoreError> {
        let template = Template::of::<T>();
        if values.len() != template.fields() {
            return Err(template.error(format!(
                "{} values for {} fields",
                values.len(),
                template.fields()
            )));
        }
        template.render(values)
    }

    fn record_key<T: Record>(record: &T) -> Result<String, StoreError> {
        Self::key_of::<T, String>(&record.key_values())
    }

    fn encode<T: Record>(&self, record: &T) -> Result<(String, Vec<u8>), StoreError> {
        let key = Self::record_key(record)?;
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Encode {
            key: key.clone(),
            message: e.to_string(),
        })?;
        Ok((self.absolute(&key), value))
    }

    fn decode<T: Record>(&self, kv: &KeyValue) -> Result<Versioned<T>, StoreError> {
        let key = self
            .relative(&String::from_utf8_lossy(kv.key()))
            .to_string();
        let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Decode {
            key: key.clone(),
            message: e.to_string(),
        })?;
        Ok(Versioned {
            key,
            value,
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        })
    }

    async fn call<R>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<R, etcd_client::Error>>,
    ) -> Result<R, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(StoreError::Etcd {
                endpoints: self.endpoints.clone(),
                what: what.to_string(),
                source: Box::new(source),
            }),
            Err(_) => Err(StoreError::Timeout {
                endpoints: self.endpoints.clone(),
                what: what.to_string(),
            }),
        }
    }

    /// The record of `T` with these field values.
    ///
    /// # Errors
    /// etcd unreachable, or a stored value that does not decode.
    pub async fn get<T: Record, S: AsRef<str>>(
        &self,
        values: &[S],
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let key = self.absolute(&Self::key_of::<T, S>(values)?);
        self.get_absolute(&key).await
    }

    async fn get_absolute<T: Record>(&self, key: &str) -> Result<Option<Versioned<T>>, StoreError> {
        let mut client = self.client.clone();
        let reply = self
            .call(&format!("get {key}"), client.get(key, None))
            .await?;
        reply.kvs().first().map(|kv| self.decode(kv)).transpose()
    }

    /// Writes `record`; returns the write's revision.
    ///
    /// # Errors
    /// etcd unreachable, or a record that does not encode.
    pub async fn put<T: Record>(&self, record: &T) -> Result<i64, StoreError> {
        self.put_with(record, None).await
    }

    /// Writes `record` bound to `lease`: etcd deletes it when the lease ends.
    ///
    /// # Errors
    /// etcd unreachable, or [`StoreError::LeaseLost`].
    pub async fn put_leased<T: Record>(
        &self,
        record: &T,
        lease: &Lease,
    ) -> Result<i64, StoreError> {
        if !lease.is_alive() {
            return Err(StoreError::LeaseLost { id: lease.id });
        }
        self.put_with(record, Some(PutOptions::new().with_lease(lease.id)))
            .await
    }

    async fn put_with<T: Record>(
        &self,
        record: &T,
        options: Option<PutOptions>,
    ) -> Result<i64, StoreError> {
        let (key, value) = self.encode(record)?;
        let mut client = self.client.clone();
        let reply = self
            .call(
                &format!("put {key}"),
                client.put(key.clone(), value, options),
            )
            .await?;
        Ok(reply.header().map_or(0, |h| h.revision()))
    }

    /// Writes `record` only if no record has its key.
    ///
    /// # Errors
    /// etcd unreachable, or a record that does not encode.
    pub async fn create<T: Record>(&self, record: &T) -> Result<Outcome<T>, StoreError> {
        let (key, value) = self.encode(record)?;
        self.conditional(
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            key,
            value,
        )
        .await
    }

    /// Writes `record` only if its stored `mod_revision` is still `expected`
    /// (0: only if absent).
    ///
    /// # Errors
    /// etcd unreachable, or a record that does not encode.
    pub async fn compare_and_swap<T: Record>(
        &self,
        record: &T,
        expected: i64,
    ) -> Result<Outcome<T>, StoreError> {
        let (key, value) = self.encode(record)?;
        self.conditional(
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected),
            key,
            value,
        )
        .await
    }

    async fn conditional<T: Record>(
        &self,
        compare: Compare,
        key: String,
        value: Vec<u8>,
    ) -> Result<Outcome<T>, StoreError> {
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.client.clone();
        let reply = self
            .call(&format!("conditional put {key}"), client.txn(txn))
            .await?;
        if reply.succeeded() {
            return Ok(Outcome::Written {
                revision: reply.header().map_or(0, |h| h.revision()),
            });
        }
        let current = reply.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        Ok(Outcome::Conflict {
            current: current.map(|kv| self.decode(&kv)).transpose()?,
        })
    }

    /// Deletes the record of `T` with these field values; whether one existed.
    ///
    /// # Errors
    /// etcd unreachable.
    pub async fn delete<T: Record, S: AsRef<str>>(&self, values: &[S]) -> Result<bool, StoreError> {
        let key = self.absolute(&Self::key_of::<T, S>(values)?);
        let mut client = self.client.clone();
        let reply = self
            .call(&format!("delete {key}"), client.delete(key.clone(), None))
            .await?;
        Ok(reply.deleted() > 0)
    }

    /// The absolute key range of `T` with its first fields given: a prefix
    /// range for fewer than all fields, the one key for all.
    fn range_of<T: Record, S: AsRef<str>>(&self, values: &[S]) -> Result<KeyRange, StoreError> {
        let template = Template::of::<T>();
        let rendered = template.render(values)?;
        let start = if values.len() == template.fields() {
            self.absolute(&rendered)
        } else if rendered.is_empty() {
            self.absolute("")
        } else {
            self.absolute(&rendered) + "/"
        };
        let end = if values.len() == template.fields() {
            let mut end = start.clone().into_bytes();
            end.push(0);
            end
        } else {
            prefix_end(start.as_bytes())
        };
        Ok(KeyRange { start, end })
    }

    /// Every record of `T` whose first fields are `values` (all: `&[]`), read
    /// page by page at one revision.
    ///
    /// # Errors
    /// etcd unreachable (also when the revision is compacted between pages:
    /// list again).
    pub async fn list<T: Record, S: AsRef<str>>(
        &self,
        values: &[S],
    ) -> Result<Listing<T>, StoreError> {
        let range = self.range_of::<T, S>(values)?;
        self.list_range(&range).await
    }

    async fn list_range<T: Record>(&self, range: &KeyRange) -> Result<Listing<T>, StoreError> {
        let (prefix, end) = (&range.start, &range.end);
        let mut listing = Listing {
            revision: 0,
            records: Vec::new(),
            undecodable: Vec::new(),
        };
        let mut start = prefix.as_bytes().to_vec();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(self.page_size);
            if listing.revision > 0 {
                options = options.with_revision(listing.revision);
            }
            let mut client = self.client.clone();
            let reply = self
                .call(
                    &format!("list {prefix}"),
                    client.get(start.clone(), Some(options)),
                )
                .await?;
            if listing.revision == 0 {
                listing.revision = reply.header().map_or(0, |h| h.revision());
            }
            for kv in reply.kvs() {
                match self.decode(kv) {
                    Ok(record) => listing.records.push(record),
                    Err(StoreError::Decode { key, message }) => {
                        listing.undecodable.push((key, message))
                    }
                    Err(e) => return Err(e),
                }
            }
            match (reply.more(), reply.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(listing),
            }
        }
    }

    /// A transaction to fill with puts, deletes and guards.
    pub fn batch(&self) -> Batch {
        Batch {
            root: self.root.clone(),
            compares: Vec::new(),
            ops: Vec::new(),
            error: None,
        }
    }

    /// Runs `batch` in one etcd transaction: every write or none.
    ///
    /// # Errors
    /// etcd unreachable, or a record of the batch that did not encode.
    pub async fn commit(&self, batch: Batch) -> Result<BatchOutcome, StoreError> {
        if let Some(e) = batch.error {
            return Err(e);
        }
        let txn = Txn::new().when(batch.compares).and_then(batch.ops);
        let mut client = self.client.clone();
        let reply = self.call("transaction", client.txn(txn)).await?;
        Ok(BatchOutcome {
            committed: reply.succeeded(),
            revision: reply.header().map_or(0, |h| h.revision()),
        })
    }

    /// Grants a lease of `ttl` and keeps it alive until it is dropped or
    /// revoked.
    ///
    /// # Errors
    /// etcd unreachable.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        self.grant_lease_held(ttl, &HeldUntil::new()).await
    }

    /// Like [`grant_lease`](Self::grant_lease), and reports on `held` until
    /// when the lease is surely held: two thirds of its TTL after the last
    /// refresh etcd confirmed. One [`HeldUntil`] can follow the leases a
    /// holder takes one after another.
    ///
    /// # Errors
    /// etcd unreachable.
    pub async fn grant_lease_held(
        &self,
        ttl: Duration,
        held: &HeldUntil,
    ) -> Result<Lease, StoreError> {
        let asked = Instant::now();
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        let reply = self
            .call("granting a lease", client.lease_grant(seconds, None))
            .await?;
        let id = reply.id();
        let (alive_tx, alive) = watch::channel(true);
        let ttl = Duration::from_secs(seconds as u64);
        held.set(asked + ttl * 2 / 3);
        let task = tokio::spawn(keep_alive(
            self.clone(),
            id,
            ttl,
            Keeper {
                alive: alive_tx,
                held: held.clone(),
                confirmed: asked,
            },
        ));
        Ok(Lease {
            id,
            ttl: Duration::from_secs(seconds as u64),
            alive,
            task,
        })
    }

    /// Ends `lease` now: its records are deleted.
    ///
    /// # Errors
    /// etcd unreachable (the lease then ends by itself after its TTL).
    pub async fn revoke(&self, lease: Lease) -> Result<(), StoreError> {
        lease.task.abort();
        let mut client = self.client.clone();
        self.call("revoking a lease", client.lease_revoke(lease.id))
            .await
            .map(|_| ())
    }

    /// Watches every record of `T` whose first fields are `values`, from
    /// etcd revision `from` on (a listing's `revision + 1` to miss nothing).
    ///
    /// # Errors
    /// Values that do not fill the template. etcd being down is not an error:
    /// the watch connects when it can.
    pub async fn watch<T: Record, S: AsRef<str>>(
        &self,
        values: &[S],
        from: i64,
    ) -> Result<Watch<T>, StoreError> {
        let range = self.range_of::<T, S>(values)?;
        Ok(Watch {
            store: self.clone(),
            range,
            next_revision: from.max(1),
            stream: None,
            pending: VecDeque::new(),
            backoff: Duration::from_millis(50),
            _record: PhantomData,
        })
    }
}

/// A range of absolute keys, `[start, end)`.
#[derive(Debug, Clone)]
struct KeyRange {
    start: String,
    end: Vec<u8>,
}

/// The key just past every key with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole keyspace
}

/// Several writes in one etcd transaction, applied only if every guard holds.
pub struct Batch {
    root: String,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    error: Option<StoreError>,
}

impl Batch {
    fn absolute(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }

    fn push<T: Record>(mut self, record: &T, options: Option<PutOptions>) -> Batch {
        if self.error.is_some() {
            return self;
        }
        let encoded = Store::record_key(record).and_then(|key| {
            serde_json::to_vec(record)
                .map(|value| (key.clone(), value))
                .map_err(|e| StoreError::Encode {
                    key,
                    message: e.to_string(),
                })
        });
        match encoded {
            Ok((key, value)) => self
                .ops
                .push(TxnOp::put(self.absolute(&key), value, options)),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Writes `record`.
    pub fn put<T: Record>(self, record: &T) -> Batch {
        self.push(record, None)
    }

    /// Writes `record` bound to `lease`.
    pub fn put_leased<T: Record>(self, record: &T, lease: &Lease) -> Batch {
        self.push(record, Some(PutOptions::new().with_lease(lease.id)))
    }

    /// Deletes the record of `T` with these field values.
    pub fn delete<T: Record, S: AsRef<str>>(mut self, values: &[S]) -> Batch {
        match Store::key_of::<T, S>(values) {
            Ok(key) => self.ops.push(TxnOp::delete(self.absolute(&key), None)),
            Err(e) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// Only if the record of `T` with these values has `mod_revision`
    /// `expected` (0: absent).
    pub fn require<T: Record, S: AsRef<str>>(mut self, values: &[S], expected: i64) -> Batch {
        match Store::key_of::<T, S>(values) {
            Ok(key) => self.compares.push(Compare::mod_revision(
                self.absolute(&key),
                CompareOp::Equal,
                expected,
            )),
            Err(e) => self.error = self.error.or(Some(e)),
        }
        self
    }

    /// Only if the key `key` below the root (any key, e.g. an election
    /// leader's) was created at `create_revision`: the guard of a leader's
    /// writes, which fails once another holds the key.
    pub fn require_created(mut self, key: &str, create_revision: i64) -> Batch {
        let key = self.absolute(key);
        self.compares.push(Compare::create_revision(
            key,
            CompareOp::Equal,
            create_revision,
        ));
        self
    }
}

/// What [`Store::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Whether every guard held and every write was applied.
    pub committed: bool,
    /// The revision after the transaction.
    pub revision: i64,
}

/// A lease kept alive by a task of its own until dropped or revoked.
pub struct Lease {
    id: i64,
    ttl: Duration,
    alive: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.id))
            .field("ttl", &self.ttl)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Lease {
    /// etcd's lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// False once the lease is known gone, or may be gone unseen.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when the lease is gone: revoked, expired, or not refreshed for
    /// two thirds of its TTL (etcd unreachable, the process paused), before
    /// etcd could expire it and delete its records.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        let _ = alive.wait_for(|alive| !*alive).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The keeper ends with its owner; etcd ends the lease after its TTL.
        self.task.abort();
    }
}

/// Refreshes lease `id` every sixth of its TTL. Ends, saying so on `alive`,
/// when etcd answers that the lease is gone, or when no refresh was confirmed
/// for two thirds of the TTL: etcd may expire the lease a third of a TTL
/// later, so the holder learns of the loss before anyone else can act on it.
/// A refresh every sixth leaves etcd half a TTL to answer one (an fsync
/// stall on a busy disk takes seconds) before the lease counts as lost.
async fn keep_alive(store: Store, id: i64, ttl: Duration, signals: Keeper) {
    let interval = ttl / 6;
    let patience = ttl * 2 / 3;
    // When the last confirmed refresh was sent: etcd's expiry is at least a
    // TTL after it. The grant itself counts as one.
    let mut confirmed = signals.confirmed;
    let mut keeper = None;
    loop {
        let Some(budget) = (confirmed + patience)
            .checked_duration_since(Instant::now())
            .filter(|b| !b.is_zero())
        else {
            tracing::warn!(lease = %format_args!("{id:x}"), endpoints = %store.endpoints, "lease not refreshed for two thirds of its TTL; counting it lost");
            break;
        };
        let budget = budget.min(REQUEST_TIMEOUT);
        if keeper.is_none() {
            let mut client = store.client.clone();
            match tokio::time::timeout(budget, client.lease_keep_alive(id)).await {
                Ok(Ok(pair)) => keeper = Some(pair),
                failed => {
                    tracing::debug!(?failed, "lease keeper cannot reach etcd; retrying");
                    tokio::time::sleep(interval.min(MAX_BACKOFF).min(budget)).await;
                    continue;
                }
            }
        }
        let Some((sender, stream)) = keeper.as_mut() else {
            continue;
        };
        let sent = Instant::now();
        let refreshed_now = async {
            sender.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(budget, refreshed_now).await {
            Ok(Ok(Some(reply))) if reply.ttl() > 0 => {
                confirmed = sent;
                signals.held.set(confirmed + patience);
                tokio::time::sleep(interval).await;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease = %format_args!("{id:x}"), "lease expired or revoked");
                break;
            }
            _ => keeper = None, // reconnect
        }
    }
    signals.held.set(Instant::now());
    let _ = signals.alive.send(false);
}

/// What a lease's keeper reports to.
struct Keeper {
    alive: watch::Sender<bool>,
    held: HeldUntil,
    /// When the grant was asked for (it counts as the first refresh).
    confirmed: Instant,
}

/// Until when a holder surely holds its lease, for work that must stop the
/// moment the lease may be gone — checked against the clock, so that a
/// process resumed after a pause sees at once that its time ran out, before
/// any task of its own could act. Clones share one value.
#[derive(Debug, Clone)]
pub struct HeldUntil {
    until: std::sync::Arc<watch::Sender<Instant>>,
}

impl Default for HeldUntil {
    fn default() -> Self {
        Self::new()
    }
}

impl HeldUntil {
    /// Held by no lease yet.
    pub fn new() -> Self {
        let (until, _) = watch::channel(Instant::now());
        Self {
            until: std::sync::Arc::new(until),
        }
    }

    fn set(&self, until: Instant) {
        self.until.send_replace(until);
    }

    /// Whether the lease is surely held now.
    pub fn holds(&self) -> bool {
        Instant::now() < *self.until.borrow()
    }

    /// Waits until the lease is surely held (a refresh was confirmed, or a
    /// new lease granted).
    pub async fn wait_held(&self) {
        let mut until = self.until.subscribe();
        loop {
            let deadline = *until.borrow_and_update();
            if Instant::now() < deadline {
                return;
            }
            if until.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A change under a watched prefix.
#[derive(Debug, Clone)]
pub enum WatchEvent<T> {
    /// Created or updated.
    Put(Versioned<T>),
    /// Deleted (or its lease ended) at `revision`.
    Deleted { key: String, revision: i64 },
    /// A value under the prefix that does not decode.
    Undecodable {
        key: String,
        revision: i64,
        message: String,
    },
    /// The revision to resume from was compacted away: this is everything
    /// under the prefix now, and events continue after `listing.revision`.
    /// Anything not in it was deleted meanwhile.
    Relisted(Listing<T>),
}

/// Typed events under a prefix, in revision order, surviving disconnects.
pub struct Watch<T> {
    store: Store,
    range: KeyRange,
    /// The revision the next event may have (all before it were reported).
    next_revision: i64,
    stream: Option<(Watcher, WatchStream)>,
    pending: VecDeque<WatchEvent<T>>,
    backoff: Duration,
    _record: PhantomData<fn() -> T>,
}

impl<T: Record> Watch<T> {
    /// The revision from which the watch will report next.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// An event already received, without waiting: the rest of a
    /// transaction's events after [`next`](Self::next) returned its first.
    pub fn next_ready(&mut self) -> Option<WatchEvent<T>> {
        self.pending.pop_front()
    }

    /// The next event. Waits (reconnecting, with backoff) while etcd is
    /// unreachable; never skips a revision.
    ///
    /// # Errors
    /// Only errors that retrying cannot mend (none today from etcd itself);
    /// a listing after compaction that fails is retried.
    pub async fn next(&mut self) -> Result<WatchEvent<T>, StoreError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.stream.is_none() {
                let options = WatchOptions::new()
                    .with_range(self.range.end.clone())
                    .with_start_revision(self.next_revision);
                let mut client = self.store.client.clone();
                match self
                    .store
                    .call(
                        "watching",
                        client.watch(self.range.start.clone(), Some(options)),
                    )
                    .await
                {
                    Ok(pair) => self.stream = Some(pair),
                    Err(e) => {
                        self.wait(&e).await;
                        continue;
                    }
                }
            }
            let Some((_, stream)) = self.stream.as_mut() else {
                continue;
            };
            let reply = match stream.message().await {
                Ok(Some(reply)) => reply,
                Ok(None) => {
                    self.stream = None;
                    continue;
                }
                Err(source) => {
                    self.stream = None;
                    let e = StoreError::Etcd {
                        endpoints: self.store.endpoints.clone(),
                        what: "watch stream".into(),
                        source: Box::new(source),
                    };
                    self.wait(&e).await;
                    continue;
                }
            };
            if reply.compact_revision() > 0 {
                // Our revision is gone: list what is there now and go on from it.
                self.stream = None;
                match self.store.list_range::<T>(&self.range).await {
                    Ok(listing) => {
                        tracing::info!(prefix = %self.range.start, from = self.next_revision, compacted = reply.compact_revision(), now = listing.revision, "watch revision compacted; listed again");
                        self.next_revision = listing.revision + 1;
                        self.backoff = Duration::from_millis(50);
                        return Ok(WatchEvent::Relisted(listing));
                    }
                    Err(e) => {
                        self.wait(&e).await;
                        continue;
                    }
                }
            }
            if reply.canceled() {
                self.stream = None;
                continue;
            }
            self.backoff = Duration::from_millis(50);
            // A transaction's events share its revision and come in one reply.
            let from = self.next_revision;
            for event in reply.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                if revision < from {
                    continue; // seen before a reconnect
                }
                self.next_revision = self.next_revision.max(revision + 1);
                let key = self
                    .store
                    .relative(&String::from_utf8_lossy(kv.key()))
                    .to_string();
                self.pending.push_back(match event.event_type() {
                    EventType::Delete => WatchEvent::Deleted { key, revision },
                    EventType::Put => match self.store.decode(kv) {
                        Ok(record) => WatchEvent::Put(record),
                        Err(e) => WatchEvent::Undecodable {
                            key,
                            revision,
                            message: e.to_string(),
                        },
                    },
                });
            }
        }
    }

    async fn wait(&mut self, error: &StoreError) {
        tracing::debug!(%error, backoff = ?self.backoff, prefix = %self.range.start, "watch cannot reach etcd; retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    struct Feed {
        exchange: String,
        symbol: String,
    }

    impl Record for Feed {
        const TEMPLATE: &'static str = "feeds/{exchange}/{symbol}";
        fn key_values(&self) -> Vec<String> {
            vec![self.exchange.clone(), self.symbol.clone()]
        }
    }

    #[test]
    fn templates_render_keys_and_prefixes() {
        let template = Template::of::<Feed>();
        let cases: [(&[&str], Result<&str, ()>); 6] = [
            (&[], Ok("feeds")),
            (&["binance"], Ok("feeds/binance")),
            (&["binance", "BTCUSDT"], Ok("feeds/binance/BTCUSDT")),
            (&["binance", "BTC/USDT"], Err(())),
            (&["", "x"], Err(())),
            (&["a", "b", "c"], Err(())),
        ];
        for (values, expected) in cases {
            assert_eq!(
                template.render(values).map_err(|_| ()),
                expected.map(str::to_string),
                "{values:?}"
            );
        }
        assert!(
            Store::key_of::<Feed, &str>(&["binance"]).is_err(),
            "a key needs every field"
        );
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/t/feeds/"), b"/t/feeds0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn unreachable_is_retryable_and_a_bad_key_is_not() {
        let unreachable = StoreError::Timeout {
            endpoints: "127.0.0.1:1".into(),
            what: "get".into(),
        };
        assert!(unreachable.is_retryable());
        assert!(unreachable.to_string().contains("127.0.0.1:1"));
        let bad = StoreError::Key {
            template: Feed::TEMPLATE,
            message: "x".into(),
        };
        assert!(!bad.is_retryable());
    }
}

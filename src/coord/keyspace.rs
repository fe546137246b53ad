//! The coordination keyspace: the records the master, the workers and the
//! operator CLI share in etcd, all below the cluster's root prefix
//! (`etcd.prefix`, default `/tickfetch`). `docs/coordination.md` lists them.
//!
//! | key | record | written by |
//! |---|---|---|
//! | `feeds/{exchange}/{symbol}` | [`DesiredFeed`] | operators |
//! | `workers/{id}` | [`WorkerRecord`], bound to the worker's lease | each worker |
//! | `assignments/{exchange}/{symbol}` | [`AssignmentRecord`] | the leader |
//! | `progress/{exchange}/{symbol}` | [`ProgressRecord`] | a feed's primary |
//! | `drain/{id}` | [`DrainRequest`] | operators (`tickfetch workers drain`) |
//! | `master/leader` | [`LeaderRecord`], bound to the leader's lease | the elected master |

use serde::{Deserialize, Serialize};

use super::store::Record;
use crate::model::{Exchange, Millis};

/// A feed the cluster should run: one symbol of one exchange on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFeed {
    pub exchange: Exchange,
    /// The exchange's stream, e.g. `trade` or `aggTrade` on Binance.
    pub channel: String,
    /// The exchange's own symbol.
    pub symbol: String,
    /// Hot replicas besides the primary.
    pub replicas: u32,
}

impl DesiredFeed {
    /// The feed's id in assignments: `exchange/symbol`.
    pub fn id(&self) -> String {
        feed_id(self.exchange, &self.symbol)
    }
}

/// A feed's id: `exchange/symbol` (one feed per symbol of an exchange).
pub fn feed_id(exchange: Exchange, symbol: &str) -> String {
    format!("{exchange}/{symbol}")
}

impl Record for DesiredFeed {
    const TEMPLATE: &'static str = "feeds/{exchange}/{symbol}";
    fn key_values(&self) -> Vec<String> {
        vec![self.exchange.to_string(), self.symbol.clone()]
    }
}

/// A registered worker; the record lives as long as the worker's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerRecord {
    pub id: String,
    /// The worker's build, as `tickfetch-ingest --version` says.
    pub version: String,
    /// Relative capacity (≥ 1).
    pub capacity: u32,
    /// Where its `/metrics` and `/healthz` answer.
    pub address: String,
    /// Being drained: the master moves its feeds away.
    pub draining: bool,
    /// When it registered (ms since the epoch).
    pub registered: Millis,
    /// Its replicas that are connected and buffering: feed id → since when
    /// (ms). The master moves a primary only to a replica warm by this.
    #[serde(default)]
    pub live_replicas: std::collections::BTreeMap<String, Millis>,
}

impl Record for WorkerRecord {
    const TEMPLATE: &'static str = "workers/{id}";
    fn key_values(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// Where a feed runs, as the leader decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRecord {
    pub exchange: Exchange,
    pub symbol: String,
    pub channel: String,
    pub primary: String,
    pub replicas: Vec<String>,
    /// The fencing epoch of the current primary: the etcd revision of the
    /// write that made it primary. 0 while that write's second step (setting
    /// it) is pending; a primary starts publishing only under a set epoch.
    pub epoch: u64,
    /// When each replica was placed (ms): a primary moves by planned
    /// handover only to a replica that has been warming for the master's
    /// warm-up time.
    #[serde(default)]
    pub replica_since: std::collections::BTreeMap<String, Millis>,
    /// The primary before this one and its epoch: the new primary goes on
    /// once that one has released the feed (its progress record, under that
    /// epoch, says `released`), or is gone.
    #[serde(default)]
    pub previous: Option<(String, u64)>,
}

impl Record for AssignmentRecord {
    const TEMPLATE: &'static str = "assignments/{exchange}/{symbol}";
    fn key_values(&self) -> Vec<String> {
        vec![self.exchange.to_string(), self.symbol.clone()]
    }
}

/// How far a feed's primary has published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRecord {
    pub exchange: Exchange,
    pub symbol: String,
    /// The last trade id the primary got into the trades topic (empty when
    /// it released a feed it had published nothing on).
    pub last_trade_id: String,
    /// Its exchange time.
    pub last_trade_time: Millis,
    /// The epoch it was published under.
    pub epoch: u64,
    /// The worker that published it.
    pub worker: String,
    /// Trades published in the `recent_ms` before `updated`.
    pub recent_trades: u64,
    pub recent_ms: u64,
    /// When this was written (ms since the epoch).
    pub updated: Millis,
    /// The primary handed the feed over: it is fenced, everything it
    /// published is in the log, and `last_trade_id` is its last. Its
    /// successor may read the tail and go on.
    #[serde(default)]
    pub released: bool,
}

impl Record for ProgressRecord {
    const TEMPLATE: &'static str = "progress/{exchange}/{symbol}";
    fn key_values(&self) -> Vec<String> {
        vec![self.exchange.to_string(), self.symbol.clone()]
    }
}

/// An operator's request that a worker drain: the worker marks itself
/// draining, the master moves its feeds away by planned handover, and the
/// worker exits once it holds nothing (deleting this request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub id: String,
    /// When it was asked for (ms since the epoch).
    pub requested: Millis,
}

impl Record for DrainRequest {
    const TEMPLATE: &'static str = "drain/{id}";
    fn key_values(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// The elected master. Its key's creation revision guards every write the
/// leader makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderRecord {
    pub id: String,
    /// When it was elected (ms since the epoch).
    pub since: Millis,
}

impl LeaderRecord {
    /// The key below the root (for [`super::store::Batch::require_created`]).
    pub const KEY: &'static str = "master/leader";
}

impl Record for LeaderRecord {
    const TEMPLATE: &'static str = "master/leader";
    fn key_values(&self) -> Vec<String> {
        Vec::new()
    }
}

//! Fencing epochs: numbers from etcd that order the owners of a stream.
//!
//! # Claiming
//! When a writer becomes the owner of a stream — an ingest feed starting as
//! primary or promoted from replica, a rollup stage taking input partition
//! `p` — it puts `{etcd.prefix}/epochs/{scope}` (value: who claimed it, and
//! when) and takes the put's etcd revision as its epoch. etcd revisions are
//! global and strictly increasing, so an owner that claims later always holds
//! a higher epoch than every owner before it, whatever the scope. The key
//! itself is bookkeeping: its `mod_revision` is the current owner's epoch.
//!
//! # Stamping
//! Every record the owner writes carries its epoch in decimal ASCII
//! ([`Epoch::header_value`]; the record envelope in `wire` puts it in the
//! header `tickfetch-epoch`). Records without the header have
//! epoch 0 ([`Epoch::NONE`]): one-shot writers that own no stream
//! (`tickfetch import`), and writers run with `etcd.epochs = false`. They are
//! never fenced and fence nothing.
//!
//! # Fencing
//! A record of key `k` with epoch `e` that follows, in its partition, a record
//! of the same key with a higher epoch was written after a newer owner had
//! started: it is a late write of a fenced (paused, partitioned) old owner.
//! Readers drop it ([`EpochFence`]). Nothing is lost by that: a new owner
//! starts from just after the last record its predecessor got into the log
//! and writes everything after it itself, so what the old one writes late is
//! a duplicate. The sink also stores the epoch with each document and never
//! lets a lower epoch replace a higher one, which still holds after the sink
//! restarts and its fence has forgotten what it saw.
//!
//! With Kafka transactions (the rollup stages) the broker fences a zombie's
//! producer as well; epochs also cover brokers that show aborted records to
//! readers, at-least-once stages, and the ingest workers' idempotent
//! producers.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::CoordError;
use crate::config::EtcdConfig;
use crate::model::Millis;
use crate::shutdown::{retry_until_cancelled, CancellationToken};

/// Timeout of one etcd call made for an epoch.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// A fencing epoch: the etcd revision at which an owner claimed its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// No epoch: the record carries no header.
    pub const NONE: Epoch = Epoch(0);

    /// Whether this is a real claimed epoch.
    pub fn is_some(self) -> bool {
        self.0 > 0
    }

    /// The decimal text writers stamp on records (`None` for
    /// [`Epoch::NONE`], which is not stamped).
    pub fn header_value(self) -> Option<String> {
        self.is_some().then(|| self.0.to_string())
    }

    /// The epoch as MongoDB stores it (BSON has no unsigned 64-bit integer;
    /// etcd revisions are `i64` on the wire, so this never saturates).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an epoch key holds: who claimed it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochClaim {
    pub owner: String,
    pub claimed_at: Millis,
}

/// Claims epochs from etcd.
#[derive(Clone)]
pub struct EpochClaimer {
    client: etcd_client::Client,
    prefix: String,
    endpoints: String,
    owner: String,
}

impl EpochClaimer {
    /// Connects to `config.endpoints` and checks that etcd answers. `owner`
    /// names the claiming process in the epoch keys (for operators).
    ///
    /// # Errors
    /// No endpoint configured, or etcd unreachable.
    pub async fn connect(config: &EtcdConfig, owner: &str) -> Result<Self, CoordError> {
        let endpoints = config.endpoints.join(",");
        let connecting = if config.username.is_empty() && config.ca_file.is_none() {
            "connecting".to_string()
        } else {
            format!("connecting ({})", config.describe())
        };
        if config.endpoints.is_empty() {
            return Err(CoordError::Reply {
                endpoints,
                what: "no endpoint configured (etcd.endpoints)".into(),
            });
        }
        let options = crate::coord::store::connect_options(config, ETCD_TIMEOUT)
            .map_err(|e| CoordError::Reply {
                endpoints: endpoints.clone(),
                what: e.to_string(),
            })?
            .with_timeout(ETCD_TIMEOUT);
        let mut client = etcd_client::Client::connect(config.endpoints.clone(), Some(options))
            .await
            .map_err(|source| CoordError::Etcd {
                endpoints: endpoints.clone(),
                what: connecting.clone(),
                source,
            })?;
        // The channel connects lazily: ask for the status so that an
        // unreachable etcd shows here, not at the first claim.
        client.status().await.map_err(|source| CoordError::Etcd {
            endpoints: endpoints.clone(),
            what: connecting.clone(),
            source,
        })?;
        Ok(Self {
            client,
            prefix: config.prefix.trim_end_matches('/').to_string(),
            endpoints,
            owner: owner.to_string(),
        })
    }

    /// Connects, retrying with backoff while etcd is unreachable; `None` when
    /// `shutdown` came first.
    ///
    /// # Errors
    /// etcd refusing our credentials ([`CoordError::is_refusal`]): waiting
    /// cannot help.
    pub async fn connect_waiting(
        config: &EtcdConfig,
        owner: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, CoordError> {
        let waited = retry_until_cancelled(
            shutdown,
            "waiting for etcd to claim fencing epochs",
            || async {
                match Self::connect(config, owner).await {
                    Err(e) if e.is_refusal() => Ok(Err(e)),
                    other => other.map(Ok),
                }
            },
        )
        .await;
        waited.transpose()
    }

    /// The etcd key of `scope`'s epoch.
    pub fn key(&self, scope: &str) -> String {
        format!("{}/epochs/{scope}", self.prefix)
    }

    /// Claims a new epoch for `scope`: higher than every epoch claimed before,
    /// for any scope.
    ///
    /// # Errors
    /// etcd unreachable or refusing the write.
    pub async fn claim(&self, scope: &str) -> Result<Epoch, CoordError> {
        let claim = EpochClaim {
            owner: self.owner.clone(),
            claimed_at: chrono::Utc::now().timestamp_millis(),
        };
        let value = serde_json::to_vec(&claim).map_err(|e| CoordError::Reply {
            endpoints: self.endpoints.clone(),
            what: format!("encoding the epoch claim: {e}"),
        })?;
        let key = self.key(scope);
        let response = self
            .client
            .clone()
            .put(key.as_str(), value, None)
            .await
            .map_err(|source| CoordError::Etcd {
                endpoints: self.endpoints.clone(),
                what: format!("claiming epoch {key}"),
                source,
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        u64::try_from(revision)
            .ok()
            .filter(|r| *r > 0)
            .map(Epoch)
            .ok_or_else(|| CoordError::Reply {
                endpoints: self.endpoints.clone(),
                what: format!("claiming epoch {key}: reply without a revision"),
            })
    }

    /// Claims an epoch, retrying with backoff while etcd fails; `None` when
    /// `shutdown` came first. An owner must not write before it has one.
    pub async fn claim_waiting(&self, scope: &str, shutdown: &CancellationToken) -> Option<Epoch> {
        let epoch = retry_until_cancelled(
            shutdown,
            "waiting for etcd: no epoch, not writing yet",
            || self.claim(scope),
        )
        .await?;
        tracing::info!(scope, %epoch, "fencing epoch claimed");
        Some(epoch)
    }

    /// The current owner's epoch of `scope` (the key's `mod_revision`) and its
    /// claim, or `None` when never claimed.
    ///
    /// # Errors
    /// etcd unreachable.
    pub async fn current(&self, scope: &str) -> Result<Option<(Epoch, EpochClaim)>, CoordError> {
        let key = self.key(scope);
        let response = self
            .client
            .clone()
            .get(key.as_str(), None)
            .await
            .map_err(|source| CoordError::Etcd {
                endpoints: self.endpoints.clone(),
                what: format!("reading epoch {key}"),
                source,
            })?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let claim: EpochClaim =
            serde_json::from_slice(kv.value()).map_err(|e| CoordError::Reply {
                endpoints: self.endpoints.clone(),
                what: format!("epoch key {key} holds no epoch claim: {e}"),
            })?;
        Ok(Some((
            Epoch(u64::try_from(kv.mod_revision()).unwrap_or(0)),
            claim,
        )))
    }
}

impl EpochClaimer {
    /// Resolves once `scope` has been claimed after `epoch`: a newer owner
    /// exists, and the holder of `epoch` must stop writing. Watches the
    /// epoch key from the revision after `epoch`; while etcd is unreachable
    /// it reconnects, and after a compaction (or any restart of the watch) it
    /// first reads the key's current revision, so no claim goes unseen.
    pub async fn superseded(&self, scope: &str, epoch: Epoch) {
        let key = self.key(scope);
        let from = i64::try_from(epoch.0).unwrap_or(i64::MAX).saturating_add(1);
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Ok(Some((current, _))) = self.current(scope).await {
                if current > epoch {
                    return;
                }
            }
            let options = etcd_client::WatchOptions::new().with_start_revision(from);
            if let Ok((_watcher, mut stream)) =
                self.client.clone().watch(key.as_str(), Some(options)).await
            {
                backoff = Duration::from_millis(50);
                while let Ok(Some(reply)) = stream.message().await {
                    if reply.compact_revision() > 0 || reply.canceled() {
                        break; // read the key again
                    }
                    let claimed = reply.events().iter().any(|e| {
                        e.event_type() == etcd_client::EventType::Put
                            && e.kv().is_some_and(|kv| kv.mod_revision() >= from)
                    });
                    if claimed {
                        return;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// This process, as epoch claims name it: `host:pid`.
pub fn process_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// What [`EpochFence::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The record's epoch is the newest seen for its key (or newer), or the
    /// record lies before the newest epoch's first record.
    Admitted,
    /// A newer epoch already wrote this key earlier in the partition: the
    /// record is a late write of a fenced owner.
    Fenced { newest: Epoch },
}

/// The newest epoch seen on one key, and the lowest offset it was seen at.
#[derive(Debug, Clone, Copy)]
struct Newest {
    epoch: Epoch,
    first_offset: i64,
}

/// Per topic, partition and key: the highest epoch seen and where it first
/// appeared; refuses records of lower epochs that come after it.
///
/// Offsets make the fence safe when a reader goes back in a partition (a
/// rebalance hands the partition back from its committed offset, a batch is
/// retried): a record before the newest epoch's first record was written
/// before the newer owner started, so it passes. Memory grows with the
/// number of distinct keys (symbols × topics), not with the number of records.
#[derive(Debug, Default)]
pub struct EpochFence {
    /// topic → partition → key → newest.
    newest: HashMap<String, HashMap<i32, HashMap<Vec<u8>, Newest>>>,
}

impl EpochFence {
    /// Records `epoch` of the record at `topic[partition]@offset` with `key`
    /// and says whether it may pass. Records without an epoch always pass and
    /// change nothing.
    pub fn admit(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: &[u8],
        epoch: Epoch,
    ) -> Admission {
        if !epoch.is_some() {
            return Admission::Admitted;
        }
        // Looked up by &str first: no allocation per record once a topic is known.
        let partitions = match self.newest.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.newest.entry(topic.to_string()).or_default(),
        };
        let keys = partitions.entry(partition).or_default();
        let seen = Newest {
            epoch,
            first_offset: offset,
        };
        let Some(newest) = keys.get_mut(key) else {
            keys.insert(key.to_vec(), seen);
            return Admission::Admitted;
        };
        match epoch.cmp(&newest.epoch) {
            std::cmp::Ordering::Greater => *newest = seen,
            std::cmp::Ordering::Equal => newest.first_offset = newest.first_offset.min(offset),
            std::cmp::Ordering::Less if offset > newest.first_offset => {
                return Admission::Fenced {
                    newest: newest.epoch,
                }
            }
            std::cmp::Ordering::Less => {}
        }
        Admission::Admitted
    }

    /// Forgets what was seen on `topic[partition]`.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(partitions) = self.newest.get_mut(topic) {
            partitions.remove(&partition);
        }
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.newest
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_refuses_lower_epochs_per_key_after_a_higher_one() {
        let mut fence = EpochFence::default();
        let mut offset = 0;
        let mut admit = |fence: &mut EpochFence, topic: &str, key: &[u8], epoch: u64| {
            offset += 1;
            fence.admit(topic, 0, offset, key, Epoch(epoch))
        };
        assert_eq!(admit(&mut fence, "t", b"a", 10), Admission::Admitted);
        assert_eq!(admit(&mut fence, "t", b"a", 10), Admission::Admitted);
        // Another key and another topic are independent.
        assert_eq!(admit(&mut fence, "t", b"b", 5), Admission::Admitted);
        assert_eq!(admit(&mut fence, "u", b"a", 3), Admission::Admitted);
        // A newer owner writes key a; the old one's late writes are fenced.
        assert_eq!(admit(&mut fence, "t", b"a", 20), Admission::Admitted);
        assert_eq!(
            admit(&mut fence, "t", b"a", 10),
            Admission::Fenced { newest: Epoch(20) }
        );
        // Records without an epoch (an import) pass and fence nothing.
        assert_eq!(admit(&mut fence, "t", b"a", 0), Admission::Admitted);
        assert_eq!(admit(&mut fence, "t", b"c", 0), Admission::Admitted);
        assert_eq!(
            admit(&mut fence, "t", b"a", 19),
            Admission::Fenced { newest: Epoch(20) }
        );
        assert_eq!(fence.len(), 3);
        fence.forget("t", 0);
        assert_eq!(fence.len(), 1);
        assert_eq!(admit(&mut fence, "t", b"a", 10), Admission::Admitted);
    }

    #[test]
    fn fence_admits_what_came_before_the_newer_epoch_after_a_rewind() {
        let mut fence = EpochFence::default();
        // Read 100..=102: epoch 10 up to 100, epoch 20 from 101, a late 10 at 102.
        assert_eq!(
            fence.admit("t", 0, 100, b"a", Epoch(10)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 101, b"a", Epoch(20)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 102, b"a", Epoch(10)),
            Admission::Fenced { newest: Epoch(20) }
        );
        // Back to 100 (a rebalance returned the partition from its committed
        // offset): 100 came before epoch 20 began and passes again; 102 is
        // still late.
        assert_eq!(
            fence.admit("t", 0, 100, b"a", Epoch(10)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 101, b"a", Epoch(20)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 102, b"a", Epoch(10)),
            Admission::Fenced { newest: Epoch(20) }
        );
        // The same key on another partition is another stream.
        assert_eq!(
            fence.admit("t", 1, 103, b"a", Epoch(10)),
            Admission::Admitted
        );
        // Started mid-log at 101, the newer epoch is found earlier on a rewind.
        let mut fence = EpochFence::default();
        assert_eq!(
            fence.admit("t", 0, 110, b"a", Epoch(20)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 105, b"a", Epoch(20)),
            Admission::Admitted
        );
        assert_eq!(
            fence.admit("t", 0, 107, b"a", Epoch(10)),
            Admission::Fenced { newest: Epoch(20) }
        );
        assert_eq!(
            fence.admit("t", 0, 104, b"a", Epoch(10)),
            Admission::Admitted
        );
    }
}

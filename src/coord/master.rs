//! `tickfetch-coord`, the master: elected through etcd, stateless, it keeps
//! `assignments/` equal to [`assign`](super::assign::assign) of the desired
//! feeds and the live workers.
//!
//! - **Election.** Each master holds a lease and tries to create
//!   `master/leader` bound to it (a transaction: only if absent). The one that
//!   succeeds leads; the others watch the key and try again when it is deleted
//!   (the leader resigned, or its lease ended: killed, paused, cut off).
//! - **Guarded writes.** Every write the leader makes is an etcd transaction
//!   that requires `master/leader` to have the creation revision of its own
//!   election. A deposed leader that still runs (paused past its lease, then
//!   resumed) changes nothing: its transactions fail, and it steps down.
//! - **Stateless.** The leader rebuilds its view from listings of `feeds/`,
//!   `workers/` and `assignments/` on every change its watches show and every
//!   `resync` interval; it keeps nothing between two reconciliations, so a new
//!   leader carries on where the last one stopped.
//! - **Rebalancing.** After the rules, [`assign::rebalance`] moves
//!   placements toward balance (a new worker's share): replicas move to the
//!   least loaded worker; a primary moves only to a replica that has warmed
//!   for [`MasterOptions::warm`] (`replica_since` in its assignment), the two
//!   swapping roles, so the move is a planned handover.
//! - **Epochs.** A write that gives a feed a new primary sets its epoch to 0;
//!   a second guarded write sets it to the first write's revision (the
//!   record's `mod_revision`), the new primary's fencing epoch. A leader that
//!   dies between the two leaves the epoch 0, and the next one completes it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::assign::{self, Assignment, LiveWorker, Placement};
use super::keyspace::{AssignmentRecord, DesiredFeed, LeaderRecord, WorkerRecord};
use super::store::{Lease, Record, Store, StoreError, Versioned, WatchEvent};
use crate::config::EtcdConfig;
use crate::shutdown::{retry_until_cancelled, CancellationToken};

/// Longest wait between attempts while etcd is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The master's counters: elections won, primaries handed to a replica,
/// feeds whose primary moved at all.
struct MasterMetrics {
    elections: prometheus::IntCounter,
    promotions: prometheus::IntCounter,
    moves: prometheus::IntCounter,
}

fn metrics() -> &'static MasterMetrics {
    static METRICS: std::sync::OnceLock<MasterMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str| {
            crate::telemetry::register(
                prometheus::IntCounter::new(format!("tickfetch_master_{name}"), help)
                    .expect("static metric definition"),
            )
        };
        MasterMetrics {
            elections: counter("elections_total", "times this master was elected leader"),
            promotions: counter(
                "promotions_total",
                "primaries handed to one of the feed's replicas",
            ),
            moves: counter(
                "assignment_moves_total",
                "feeds whose primary changed to another worker",
            ),
        }
    })
}

/// How long the leader lets changes settle before reconciling.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Errors of the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the master runs.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Its id in `master/leader`.
    pub id: String,
    /// TTL of its lease: how long a dead leader holds the key.
    pub lease_ttl: Duration,
    /// Full reconciliation at least this often, changes or not.
    pub resync: Duration,
    /// How long a replica warms up before a primary may move to it to
    /// rebalance (`assign::rebalance`) or to leave a draining worker.
    pub warm: Duration,
    /// Whether to move existing placements toward balance at all.
    pub rebalance: bool,
}

impl MasterOptions {
    /// `id`, a 5 s lease, a resync every 30 s.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            lease_ttl: Duration::from_secs(5),
            resync: Duration::from_secs(30),
            warm: Duration::from_secs(10),
            rebalance: true,
        }
    }
}

/// Campaigns and, when elected, leads, until `shutdown`; a leader that is
/// shut down resigns so that another takes over at once.
///
/// # Errors
/// Errors retrying cannot mend (etcd unreachable is retried, not returned).
pub async fn run(
    config: &EtcdConfig,
    options: MasterOptions,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    // Exported from the start, at 0 on a standby.
    let _ = metrics();
    let Some(store) = retry_until_cancelled(&shutdown, "master: waiting for etcd", || {
        Store::connect(config)
    })
    .await
    else {
        return Ok(());
    };
    while !shutdown.is_cancelled() {
        let Some(lease) = retry_until_cancelled(
            &shutdown,
            "master: waiting for etcd to grant a lease",
            || store.grant_lease(options.lease_ttl),
        )
        .await
        else {
            break;
        };
        let Some(elected) = campaign(&store, &lease, &options, &shutdown).await? else {
            continue; // lease lost while waiting, or shutdown
        };
        tracing::info!(id = %options.id, revision = elected, "elected leader");
        metrics().elections.inc();
        let leader = Leader {
            store: &store,
            elected,
        };
        match leader.lead(&lease, &options, &shutdown).await {
            Ok(()) if shutdown.is_cancelled() => {
                // Resign: delete our key (only ours) and end the lease.
                let _ = store
                    .commit(
                        store
                            .batch()
                            .require_created(LeaderRecord::KEY, elected)
                            .delete::<LeaderRecord, &str>(&[]),
                    )
                    .await;
                let _ = store.revoke(lease).await;
                tracing::info!(id = %options.id, "resigned");
            }
            Ok(()) => tracing::warn!(id = %options.id, "leadership lost; campaigning again"),
            Err(e) => {
                tracing::warn!(id = %options.id, error = %e, "leader stopped; campaigning again")
            }
        }
    }
    Ok(())
}

/// Tries to become leader until it is, the lease is lost, or shutdown.
/// Returns the creation revision of our leader key.
async fn campaign(
    store: &Store,
    lease: &Lease,
    options: &MasterOptions,
    shutdown: &CancellationToken,
) -> Result<Option<i64>, MasterError> {
    let me = LeaderRecord {
        id: options.id.clone(),
        since: chrono::Utc::now().timestamp_millis(),
    };
    loop {
        let attempt = store
            .commit(
                store
                    .batch()
                    .require::<LeaderRecord, &str>(&[], 0)
                    .put_leased(&me, lease),
            )
            .await;
        let current = match attempt {
            Ok(outcome) if outcome.committed => return Ok(Some(outcome.revision)),
            Ok(_) => store.get::<LeaderRecord, &str>(&[]).await,
            Err(e) => Err(e),
        };
        let from = match current {
            Ok(Some(leader)) => {
                tracing::info!(leader = %leader.value.id, "following");
                leader.mod_revision + 1
            }
            Ok(None) => continue, // gone meanwhile: try again
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "campaign: waiting for etcd");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = lease.lost() => return Ok(None),
                    _ = tokio::time::sleep(MAX_BACKOFF) => continue,
                }
            }
            Err(e) => return Err(e.into()),
        };
        // Wait for the leader key to go.
        let mut watch = store.watch::<LeaderRecord, &str>(&[], from).await?;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = lease.lost() => return Ok(None),
                event = watch.next() => match event? {
                    WatchEvent::Deleted { .. } => break,
                    WatchEvent::Relisted(listing) if listing.records.is_empty() => break,
                    _ => {}
                }
            }
        }
    }
}

struct Leader<'s> {
    store: &'s Store,
    /// Creation revision of our `master/leader` key: the guard of our writes.
    elected: i64,
}

/// What one reconciliation did.
enum Reconciled {
    /// Up to date (maybe after writing).
    Done,
    /// A guarded write failed: someone else leads.
    Deposed,
}

impl Leader<'_> {
    /// Reconciles on every change and every resync until the lease is lost,
    /// a write shows we were deposed, or shutdown.
    async fn lead(
        &self,
        lease: &Lease,
        options: &MasterOptions,
        shutdown: &CancellationToken,
    ) -> Result<(), MasterError> {
        let start = self.store.list::<LeaderRecord, &str>(&[]).await?.revision + 1;
        let mut feeds = self.store.watch::<DesiredFeed, &str>(&[], start).await?;
        let mut workers = self.store.watch::<WorkerRecord, &str>(&[], start).await?;
        let mut assignments = self
            .store
            .watch::<AssignmentRecord, &str>(&[], start)
            .await?;
        // Often enough to see replicas become warm.
        let mut resync = tokio::time::interval(
            options
                .resync
                .min(options.warm / 2)
                .max(Duration::from_millis(500)),
        );
        loop {
            match self.reconcile(options).await {
                Ok(Reconciled::Done) => {}
                Ok(Reconciled::Deposed) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "reconcile: waiting for etcd");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
                Err(e) => return Err(e.into()),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lease.lost() => return Ok(()),
                _ = resync.tick() => {}
                event = feeds.next() => { event?; }
                event = workers.next() => { event?; }
                event = assignments.next() => { event?; }
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }

    /// Lists desired feeds, workers and assignments, writes the difference to
    /// [`assign::assign`]'s result, then sets pending epochs.
    async fn reconcile(&self, options: &MasterOptions) -> Result<Reconciled, StoreError> {
        let store = self.store;
        let desired = store.list::<DesiredFeed, &str>(&[]).await?;
        let workers = store.list::<WorkerRecord, &str>(&[]).await?;
        let current = store.list::<AssignmentRecord, &str>(&[]).await?;
        for (key, reason) in desired
            .undecodable
            .iter()
            .chain(&workers.undecodable)
            .chain(&current.undecodable)
        {
            tracing::warn!(%key, %reason, "record ignored: it does not decode");
        }
        let feeds: BTreeMap<String, &DesiredFeed> = desired
            .records
            .iter()
            .map(|r| (r.value.id(), &r.value))
            .collect();
        let held: BTreeMap<String, &Versioned<AssignmentRecord>> = current
            .records
            .iter()
            .map(|r| {
                (
                    super::keyspace::feed_id(r.value.exchange, &r.value.symbol),
                    r,
                )
            })
            .collect();
        let wanted: Vec<assign::DesiredFeed> = feeds
            .iter()
            .map(|(id, f)| assign::DesiredFeed {
                id: id.clone(),
                replicas: f.replicas as usize,
            })
            .collect();
        let live: Vec<LiveWorker> = workers
            .records
            .iter()
            .map(|w| LiveWorker {
                id: w.value.id.clone(),
                capacity: w.value.capacity,
                draining: w.value.draining,
            })
            .collect();
        let before: Assignment = held
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    Placement {
                        primary: r.value.primary.clone(),
                        replicas: r.value.replicas.clone(),
                    },
                )
            })
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        // Warm-up counts from when a replica's worker reports it live
        // (connected and buffering); one placed long ago that never went
        // live counts from its placement plus a long wait, so that a drain
        // cannot hang on it.
        let patience = i64::try_from(options.warm.as_millis() * 6).unwrap_or(i64::MAX);
        let since: assign::ReplicaSince = held
            .iter()
            .map(|(id, r)| {
                let warmth = r
                    .value
                    .replicas
                    .iter()
                    .filter_map(|w| {
                        let live = workers
                            .records
                            .iter()
                            .find(|x| &x.value.id == w)
                            .and_then(|x| x.value.live_replicas.get(id).copied());
                        let placed = r
                            .value
                            .replica_since
                            .get(w)
                            .map(|t| t.saturating_add(patience));
                        match (live, placed) {
                            (Some(l), Some(p)) => Some((w.clone(), l.min(p))),
                            (l, p) => l.or(p).map(|t| (w.clone(), t)),
                        }
                    })
                    .collect();
                (id.clone(), warmth)
            })
            .collect();
        let placed_since: assign::ReplicaSince = held
            .iter()
            .map(|(id, r)| (id.clone(), r.value.replica_since.clone()))
            .collect();
        let placed = assign::assign(&wanted, &live, &before);
        let warm = i64::try_from(options.warm.as_millis()).unwrap_or(i64::MAX);
        let balanced = if options.rebalance {
            assign::rebalance(&live, &placed, &since, now, warm)
        } else {
            placed
        };
        let after = assign::hold_draining(&live, &before, &balanced, &since, now, warm);

        let mut batch = store
            .batch()
            .require_created(LeaderRecord::KEY, self.elected);
        let mut writes = 0;
        let (mut moves, mut promotions) = (0, 0);
        for (id, placement) in &after {
            let Some(feed) = feeds.get(id) else { continue };
            let old = held.get(id);
            if let Some(o) = old.filter(|o| o.value.primary != placement.primary) {
                moves += 1;
                if o.value.replicas.contains(&placement.primary) {
                    promotions += 1;
                }
            }
            let (epoch, previous) = match old {
                Some(o) if o.value.primary == placement.primary => {
                    (o.value.epoch, o.value.previous.clone())
                }
                // A new primary: its epoch is set by the next write; it goes
                // on once the old one has released the feed.
                Some(o) => (0, Some((o.value.primary.clone(), o.value.epoch))),
                None => (0, None),
            };
            // A replica keeps its time while it stays; a new one starts now.
            let replica_since = placement
                .replicas
                .iter()
                .map(|r| {
                    let t = placed_since.get(id).and_then(|s| s.get(r)).copied();
                    let kept = old.is_some_and(|o| o.value.replicas.contains(r));
                    (r.clone(), t.filter(|_| kept).unwrap_or(now))
                })
                .collect();
            let record = AssignmentRecord {
                exchange: feed.exchange,
                symbol: feed.symbol.clone(),
                channel: feed.channel.clone(),
                primary: placement.primary.clone(),
                replicas: placement.replicas.clone(),
                epoch,
                replica_since,
                previous,
            };
            if old.is_some_and(|o| o.value == record) {
                continue;
            }
            let expected = old.map_or(0, |o| o.mod_revision);
            batch = batch
                .require::<AssignmentRecord, _>(&record.key_values(), expected)
                .put(&record);
            writes += 1;
        }
        for (id, old) in &held {
            if !after.contains_key(id) {
                batch = batch
                    .require::<AssignmentRecord, _>(&old.value.key_values(), old.mod_revision)
                    .delete::<AssignmentRecord, _>(&old.value.key_values());
                writes += 1;
            }
        }
        if writes > 0 {
            let outcome = store.commit(batch).await?;
            if !outcome.committed {
                return Ok(self.why_failed().await);
            }
            tracing::info!(
                writes,
                moves,
                promotions,
                revision = outcome.revision,
                "assignments written"
            );
            metrics().moves.inc_by(moves);
            metrics().promotions.inc_by(promotions);
        }
        self.set_pending_epochs().await
    }

    /// Second step of a primary change: epoch := the record's mod_revision.
    async fn set_pending_epochs(&self) -> Result<Reconciled, StoreError> {
        let store = self.store;
        let current = store.list::<AssignmentRecord, &str>(&[]).await?;
        let mut batch = store
            .batch()
            .require_created(LeaderRecord::KEY, self.elected);
        let mut pending = 0;
        for r in current.records.iter().filter(|r| r.value.epoch == 0) {
            let mut record = r.value.clone();
            record.epoch = u64::try_from(r.mod_revision).unwrap_or(0);
            batch = batch
                .require::<AssignmentRecord, _>(&record.key_values(), r.mod_revision)
                .put(&record);
            pending += 1;
        }
        if pending == 0 {
            return Ok(Reconciled::Done);
        }
        let outcome = store.commit(batch).await?;
        if outcome.committed {
            tracing::info!(feeds = pending, "fencing epochs set for new primaries");
            Ok(Reconciled::Done)
        } else {
            Ok(self.why_failed().await)
        }
    }

    /// A guarded write failed: deposed, or an assignment changed under us
    /// (then reconcile again).
    async fn why_failed(&self) -> Reconciled {
        match self.store.get::<LeaderRecord, &str>(&[]).await {
            Ok(Some(leader)) if leader.create_revision == self.elected => Reconciled::Done,
            _ => {
                tracing::warn!(
                    elected = self.elected,
                    "a guarded write failed: no longer the leader"
                );
                Reconciled::Deposed
            }
        }
    }
}

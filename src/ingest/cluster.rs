//! The ingest worker as a cluster member: it registers in etcd, runs the
//! feeds the master assigns it, and hands them over with nothing lost.
//!
//! ```text
//! register: lease ─▶ workers/{id} (bound to it)
//! list + watch assignments/ ─▶ wanted role per feed ─▶ reconcile ─▶ Worker feeds
//!        primary, epoch set   ─▶ start or promote: flush, read the trades topic's tail, publish from after it
//!        replica              ─▶ start buffering
//!        primary elsewhere / gone / other epoch ─▶ handover task beside the loop: publish
//!               until caught up with the move, fence, flush, progress/ released
//! watch progress/ and workers/ ─▶ a promotion waiting for its predecessor goes on
//!        once that one released the feed (or its worker is gone)
//! every progress interval: positions ─▶ flush ─▶ progress/{exchange}/{symbol}
//! lease lost (etcd unreachable past ⅔ TTL, process paused) ─▶ fence every primary, register again
//! ```
//!
//! Each assigned feed (one symbol of one exchange channel) runs as its own
//! feed task with its own connection, so that it can be started, promoted
//! and fenced alone. Endpoints and connection settings come from the
//! `[[ingest.feeds]]` entry of the same exchange and channel, when there is
//! one.
//!
//! # Why nothing is lost or doubled
//! A primary publishes only under the epoch of its assignment, set by the
//! master after the previous primary's lease ended (or after it was
//! reassigned). Becoming primary, the worker first flushes its own publisher,
//! then reads the last trades of the feed back from the trades topic
//! ([`last_published_of`]) and promotes its replica to publish from just after
//! them: the buffer covers what came since, REST backfill what the buffer
//! does not reach. A worker that loses its lease fences its primaries before
//! etcd could expire the lease, so before the master could promote anyone;
//! trades it still had in flight carry its older epoch, and readers drop them
//! once the new primary's have arrived.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::feed::resume::last_published_of;
use super::feed::ResumePoint;
use super::venues::Feed;
use super::worker::{FeedHandle, Flusher, Role, Worker};
use super::IngestError;
use crate::config::{Config, FeedConfig};
use crate::coord::epoch::Epoch;
use crate::coord::keyspace::{
    feed_id, AssignmentRecord, DrainRequest, ProgressRecord, WorkerRecord,
};
use crate::coord::store::{HeldUntil, Lease, Record, Store, StoreError, Versioned, WatchEvent};
use crate::model::Exchange;
use crate::shutdown::{retry_until_cancelled, CancellationToken};

/// Writes per etcd transaction (etcd's default limit is 128).
const MAX_TXN_OPS: usize = 100;
/// How many lease TTLs a new primary waits for its live predecessor's
/// release before it takes over anyway (the predecessor's late writes are
/// then fenced by readers).
const HANDOVER_PATIENCE: u32 = 3;
/// How long a fence may take before the feed is just stopped.
const FENCE_WAIT: Duration = Duration::from_secs(1);
/// How long a promotion may take (it replays the buffer into the
/// publisher's queue).
const PROMOTE_WAIT: Duration = Duration::from_secs(10);
/// How long a flush of the publisher may hold up the member.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How often ended feeds are looked for and restarted.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Why one registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Shutdown,
    LeaseLost,
    /// Draining, and no feed left.
    Drained,
}

/// What a worker should do with a feed, from its assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Replica,
    /// Primary, once the master has set the epoch.
    PrimaryPending,
    Primary(Epoch),
}

/// A feed this worker runs.
struct Running {
    handle: FeedHandle,
    exchange: Exchange,
    symbol: String,
    channel: String,
    role: Role,
    epoch: Epoch,
    /// Published count and time at the last progress record.
    last_progress: Option<(String, u64, Instant)>,
    /// Since when (ms) it has been live: connected, subscribed, and a trade
    /// buffered after that (see `report_live_replicas`).
    live_since: Option<i64>,
    /// Trades buffered when its connection was first seen subscribed.
    buffered_when_subscribed: Option<u64>,
}

/// Runs `tickfetch-ingest` as the cluster member `[cluster] worker_id` until
/// `shutdown`: registers (with `address`, where its `/metrics` answer),
/// takes its feeds from etcd, and on shutdown revokes its lease so that the
/// master moves its feeds at once.
///
/// # Errors
/// A bad `[cluster]` setting, Kafka unreachable, or the publisher failed.
pub async fn run(
    config: Config,
    address: String,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let id = config.cluster.worker_id.trim().to_string();
    if id.is_empty() || id.contains('/') {
        return Err(IngestError::Cluster {
            setting: "cluster.worker_id",
            problem: format!("{id:?}: set a non-empty id without '/'"),
        });
    }
    if config.cluster.lease_ttl_ms < 1_000 {
        return Err(IngestError::Cluster {
            setting: "cluster.lease_ttl_ms",
            problem: format!(
                "{}: at least 1000 (etcd leases count whole seconds)",
                config.cluster.lease_ttl_ms
            ),
        });
    }
    let Some(store) = retry_until_cancelled(&shutdown, "ingest: waiting for etcd", || {
        Store::connect(&config.etcd)
    })
    .await
    else {
        return Ok(());
    };
    let held = HeldUntil::new();
    let worker = Worker::start_for_cluster(config.clone(), shutdown.clone(), held.clone()).await?;
    let mut member = Member {
        held,
        address,
        id,
        config,
        store,
        worker,
        running: BTreeMap::new(),
        assignments: BTreeMap::new(),
        draining: false,
        draining_recorded: false,
        registered: 0,
        live_replicas: BTreeMap::new(),
        handover_wait: HashMap::new(),
        handovers: JoinSet::new(),
        handing_over: HashMap::new(),
    };
    let result = member.serve(&shutdown).await;
    let worker = member.worker;
    let stopped = worker.shutdown().await;
    result.and(stopped)
}

struct Member {
    /// Follows each lease the member takes; its primaries publish only while held.
    held: HeldUntil,
    address: String,
    id: String,
    config: Config,
    store: Store,
    worker: Worker,
    /// By feed id (`exchange/symbol`).
    running: BTreeMap<String, Running>,
    /// Every assignment, by key.
    assignments: BTreeMap<String, AssignmentRecord>,
    /// Asked to drain: the worker record says so, and the worker exits once
    /// it holds nothing.
    draining: bool,
    /// The worker record under the current lease says draining.
    draining_recorded: bool,
    /// When the current registration was made (ms).
    registered: i64,
    /// The live replicas the worker record reports (feed id → since, ms).
    live_replicas: BTreeMap<String, i64>,
    /// Promotions waiting for their previous primary's release, since when.
    handover_wait: HashMap<String, (Epoch, Instant)>,
    /// Planned handovers under way beside the loop (see [`hand_over`]), so
    /// that a primary catching up does not keep the member from noticing
    /// its next move.
    handovers: JoinSet<()>,
    /// The feeds of those handovers (feed id → its task): not started here
    /// again until it has ended.
    handing_over: HashMap<String, tokio::task::Id>,
}

impl Member {
    /// Registers and serves until shutdown, registering again after each
    /// lost lease.
    async fn serve(&mut self, shutdown: &CancellationToken) -> Result<(), IngestError> {
        let ttl = Duration::from_millis(self.config.cluster.lease_ttl_ms);
        let health = crate::telemetry::health();
        while !shutdown.is_cancelled() {
            health.unready("registration", "registering: waiting for an etcd lease");
            let Some(lease) = retry_until_cancelled(
                shutdown,
                "ingest: waiting for etcd to grant a lease",
                || self.store.grant_lease_held(ttl, &self.held),
            )
            .await
            else {
                break;
            };
            self.registered = chrono::Utc::now().timestamp_millis();
            let record = self.record();
            let registered = retry_until_cancelled(shutdown, "ingest: registering", || {
                self.store.put_leased(&record, &lease)
            })
            .await;
            if registered.is_none() {
                break;
            }
            // The record just put says draining if we were.
            self.draining_recorded = self.draining;
            tracing::info!(worker = %self.id, lease = %format_args!("{:x}", lease.id()), "registered");
            health.ready("registration");
            let ended = match self.member(&lease, shutdown).await {
                Ok(ended) => ended,
                Err(e) if e.is_terminal() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "feeds interrupted; registering again");
                    Ended::LeaseLost
                }
            };
            if shutdown.is_cancelled() {
                // Hand over first (and wait for the handovers under way),
                // so that nothing is published after the lease ends and
                // successors go on from our last trades.
                self.hand_over_primaries("shutdown").await;
                let _ = self.store.revoke(lease).await;
                tracing::info!(worker = %self.id, "deregistered");
                break;
            }
            if ended == Ended::Drained {
                let id = self.id.clone();
                let _ = self.store.delete::<DrainRequest, _>(&[id.as_str()]).await;
                let _ = self.store.revoke(lease).await;
                tracing::info!(worker = %self.id, "drained: no feed left; exiting");
                break;
            }
            health.unready("registration", "lease lost: primaries fenced");
            self.fence_primaries("lease lost").await;
        }
        self.stop_all();
        Ok(())
    }

    fn record(&self) -> WorkerRecord {
        WorkerRecord {
            id: self.id.clone(),
            version: if self.config.cluster.version.is_empty() {
                env!("CARGO_PKG_VERSION").to_string()
            } else {
                self.config.cluster.version.clone()
            },
            capacity: self.config.cluster.capacity.max(1),
            address: self.address.clone(),
            draining: self.draining,
            registered: self.registered,
            live_replicas: self.live_replicas.clone(),
        }
    }

    /// One registration: follows the assignments until the lease is lost,
    /// the worker is drained, or shutdown.
    async fn member(
        &mut self,
        lease: &Lease,
        shutdown: &CancellationToken,
    ) -> Result<Ended, IngestError> {
        let listing = loop {
            match self.store.list::<AssignmentRecord, &str>(&[]).await {
                Ok(listing) => break listing,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "ingest: listing assignments; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                        _ = lease.lost() => return Ok(Ended::LeaseLost),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
                Err(e) => return Err(IngestError::Coordination(e)),
            }
        };
        self.relist(listing.records);
        for (key, reason) in &listing.undecodable {
            tracing::warn!(%key, %reason, "assignment ignored: it does not decode");
        }
        let mut watch = self
            .store
            .watch::<AssignmentRecord, &str>(&[], listing.revision + 1)
            .await
            .map_err(IngestError::Coordination)?;
        let id = self.id.clone();
        let mut drains = self
            .store
            .watch::<DrainRequest, _>(&[id.as_str()], listing.revision + 1)
            .await
            .map_err(IngestError::Coordination)?;
        // A promotion here waiting for its predecessor goes on as soon as
        // that one has released the feed or is gone, not at the next check.
        let mut releases = self
            .store
            .watch::<ProgressRecord, &str>(&[], listing.revision + 1)
            .await
            .map_err(IngestError::Coordination)?;
        let mut departures = self
            .store
            .watch::<WorkerRecord, &str>(&[], listing.revision + 1)
            .await
            .map_err(IngestError::Coordination)?;
        if self
            .store
            .get::<DrainRequest, _>(&[id.as_str()])
            .await?
            .is_some()
        {
            self.start_draining(lease).await;
        }
        let mut progress = tokio::time::interval(Duration::from_millis(
            self.config.cluster.progress_interval_ms.max(50),
        ));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile(lease).await?;
        loop {
            if self.drained() {
                return Ok(Ended::Drained);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                _ = lease.lost() => {
                    tracing::warn!(worker = %self.id, "lease lost: fencing every primary");
                    return Ok(Ended::LeaseLost);
                }
                event = drains.next() => {
                    if let WatchEvent::Put(_) = event? {
                        self.start_draining(lease).await;
                    }
                }
                event = watch.next() => {
                    // The whole transaction (and whatever else arrived) at once.
                    let mut event = Some(event.map_err(IngestError::Coordination)?);
                    while let Some(e) = event {
                        self.apply(e);
                        event = watch.next_ready();
                    }
                    self.reconcile(lease).await?;
                }
                event = releases.next() => {
                    let mut event = Some(event.map_err(IngestError::Coordination)?);
                    let mut awaited = false;
                    while let Some(e) = event {
                        awaited |= self.ends_a_wait(&e);
                        event = releases.next_ready();
                    }
                    if awaited {
                        self.reconcile(lease).await?;
                    }
                }
                event = departures.next() => {
                    let mut event = Some(event.map_err(IngestError::Coordination)?);
                    let mut gone = false;
                    while let Some(e) = event {
                        gone |= matches!(e, WatchEvent::Deleted { .. } | WatchEvent::Relisted(_));
                        event = departures.next_ready();
                    }
                    if gone && !self.handover_wait.is_empty() {
                        self.reconcile(lease).await?;
                    }
                }
                Some(joined) = self.handovers.join_next_with_id() => {
                    let task = match joined {
                        Ok((task, ())) => task,
                        Err(e) => {
                            tracing::error!(error = %e, "a handover task failed");
                            e.id()
                        }
                    };
                    self.handing_over.retain(|_, t| *t != task);
                    // What waited for it (the same feed assigned here again).
                    self.reconcile(lease).await?;
                }
                _ = progress.tick() => {
                    tracing::debug!("recording progress");
                    if let Err(e) = self.record_progress(lease).await {
                        tracing::warn!(error = %e, "progress not recorded");
                    }
                }
                _ = check.tick() => {
                    if let Some(e) = self.worker.reap_ended() {
                        tracing::error!(error = %e, "a feed failed; it is started again");
                    }
                    // Restart what ended; retry promotions that could not
                    // flush, and a draining mark etcd did not take.
                    self.running.retain(|_, r| !r.handle.has_ended());
                    if self.draining && !self.draining_recorded {
                        self.start_draining(lease).await;
                    }
                    self.report_live_replicas(lease).await;
                    self.reconcile(lease).await?;
                }
            }
        }
    }

    fn apply(&mut self, event: WatchEvent<AssignmentRecord>) {
        tracing::debug!(?event, "assignment event");
        match event {
            WatchEvent::Put(record) => {
                self.assignments.insert(record.key, record.value);
            }
            WatchEvent::Deleted { key, .. } => {
                self.assignments.remove(&key);
            }
            WatchEvent::Undecodable { key, message, .. } => {
                tracing::warn!(%key, %message, "assignment ignored: it does not decode");
                self.assignments.remove(&key);
            }
            WatchEvent::Relisted(listing) => self.relist(listing.records),
        }
    }

    /// Whether a progress event may end the wait of a promotion here: the
    /// release of a feed whose promotion waits for it.
    fn ends_a_wait(&self, event: &WatchEvent<ProgressRecord>) -> bool {
        if self.handover_wait.is_empty() {
            return false;
        }
        match event {
            WatchEvent::Put(record) => {
                record.value.released
                    && self
                        .handover_wait
                        .contains_key(&feed_id(record.value.exchange, &record.value.symbol))
            }
            WatchEvent::Relisted(_) => true,
            WatchEvent::Deleted { .. } | WatchEvent::Undecodable { .. } => false,
        }
    }

    fn relist(&mut self, records: Vec<Versioned<AssignmentRecord>>) {
        self.assignments = records.into_iter().map(|r| (r.key, r.value)).collect();
    }

    /// What this worker should run: feed id → (assignment, wanted role).
    fn wanted(&self) -> BTreeMap<String, (&AssignmentRecord, Wanted)> {
        self.assignments
            .values()
            .filter_map(|a| {
                let wanted = if a.primary == self.id {
                    if a.epoch == 0 {
                        Wanted::PrimaryPending
                    } else {
                        Wanted::Primary(Epoch(a.epoch))
                    }
                } else if a.replicas.contains(&self.id) {
                    Wanted::Replica
                } else {
                    return None;
                };
                Some((feed_id(a.exchange, &a.symbol), (a, wanted)))
            })
            .collect()
    }

    /// Brings the running feeds to what the assignments want.
    async fn reconcile(&mut self, lease: &Lease) -> Result<(), IngestError> {
        tracing::debug!(
            assignments = self.assignments.len(),
            running = self.running.len(),
            "reconciling"
        );
        let wanted: BTreeMap<String, (AssignmentRecord, Wanted)> = self
            .wanted()
            .into_iter()
            .map(|(id, (a, w))| (id, (a.clone(), w)))
            .collect();
        // A wait for a predecessor ends with its promotion's assignment.
        self.handover_wait
            .retain(|id, _| matches!(wanted.get(id), Some((_, Wanted::Primary(_)))));
        // Stop what is no longer ours, or ours differently; moved primaries
        // are handed over together (one flush, one write per 100).
        let ids: Vec<String> = self.running.keys().cloned().collect();
        let mut handovers = Vec::new();
        for id in ids {
            let stop = match (self.running.get(&id), wanted.get(&id)) {
                (Some(_), None) => true,
                (Some(r), Some((a, w))) => {
                    r.channel != a.channel
                        || (r.role == Role::Primary && *w != Wanted::Primary(r.epoch))
                }
                (None, _) => false,
            };
            if stop {
                if let Some(running) = self.running.remove(&id) {
                    if running.role == Role::Primary && lease.is_alive() {
                        handovers.push((id, running));
                    } else {
                        stop_feed(&id, running).await;
                    }
                }
            }
        }
        self.hand_over(handovers);
        // Start replicas (and future primaries, to warm up); collect
        // promotions. A feed still being handed over from here waits for
        // its handover to end.
        let mut promotions: Vec<(String, Epoch)> = Vec::new();
        for (id, (assignment, want)) in &wanted {
            if self.handing_over.contains_key(id) {
                continue;
            }
            if !self.running.contains_key(id) {
                match self.start(assignment) {
                    Ok(running) => {
                        self.running.insert(id.clone(), running);
                    }
                    Err(e) => {
                        tracing::error!(feed = %id, error = %e, "feed cannot start");
                        continue;
                    }
                }
            }
            if let (Wanted::Primary(epoch), Some(r)) = (want, self.running.get(id)) {
                if r.role == Role::Replica {
                    promotions.push((id.clone(), *epoch));
                }
            }
        }
        if !promotions.is_empty() && lease.is_alive() {
            self.promote(promotions).await?;
        }
        Ok(())
    }

    fn start(&mut self, assignment: &AssignmentRecord) -> Result<Running, IngestError> {
        let feed_config = self.feed_config(assignment)?;
        let handle = self
            .worker
            .start_assigned(&feed_config, Role::Replica, Epoch::NONE)?;
        tracing::info!(feed = %feed_id(assignment.exchange, &assignment.symbol), channel = %assignment.channel, "replica started");
        Ok(Running {
            handle,
            exchange: assignment.exchange,
            symbol: assignment.symbol.clone(),
            channel: assignment.channel.clone(),
            role: Role::Replica,
            epoch: Epoch::NONE,
            last_progress: None,
            live_since: None,
            buffered_when_subscribed: None,
        })
    }

    /// The feed config of one assigned symbol: the `[[ingest.feeds]]` entry
    /// of its exchange and channel for endpoints and settings, if any.
    fn feed_config(&self, assignment: &AssignmentRecord) -> Result<FeedConfig, IngestError> {
        let feed: Feed = format!("{}:{}", assignment.exchange, assignment.channel)
            .parse()
            .map_err(|e: super::venues::FeedNameError| IngestError::Feed {
                feed: feed_id(assignment.exchange, &assignment.symbol),
                problem: e.to_string(),
            })?;
        let template = self.config.ingest.feeds.iter().find(|f| {
            f.exchange == assignment.exchange
                && f.feed.as_deref().map_or_else(
                    || f.exchange.as_str().parse::<Feed>().ok() == Some(feed),
                    |name| name == feed.name(),
                )
        });
        let mut config = template
            .cloned()
            .unwrap_or_else(|| FeedConfig::for_exchange(assignment.exchange));
        config.feed = Some(feed.name().to_string());
        config.symbols = vec![assignment.symbol.clone()];
        Ok(config)
    }

    /// Promotes replicas to primaries under their assigned epochs, each
    /// publishing from just after the last trade on the trades topic.
    async fn promote(&mut self, promotions: Vec<(String, Epoch)>) -> Result<(), IngestError> {
        let mut ready = Vec::with_capacity(promotions.len());
        let mut seen = None;
        for (id, epoch) in promotions {
            match self.predecessor_done(&id, epoch, &mut seen).await {
                Ok(true) => {
                    self.handover_wait.remove(&id);
                    ready.push((id, epoch));
                }
                Ok(false) => {}
                // Asked again at the next reconcile.
                Err(e) => {
                    tracing::warn!(feed = %id, error = %e, "promotion waits: etcd did not answer")
                }
            }
        }
        let promotions = ready;
        if promotions.is_empty() {
            return Ok(());
        }
        // What this worker queued before (a primary it had) is in the log
        // first; while the broker cannot take it, promotion waits (the next
        // reconcile tries again).
        let began = Instant::now();
        if !self.flushed().await? {
            tracing::warn!(
                feeds = promotions.len(),
                "promotion waits: the publisher cannot flush"
            );
            return Ok(());
        }
        let feeds: Vec<(Exchange, String)> = promotions
            .iter()
            .filter_map(|(id, _)| self.running.get(id))
            .map(|r| (r.exchange, r.symbol.clone()))
            .collect();
        let flushed = began.elapsed();
        let lookback = self.config.cluster.resume_lookback.max(1);
        let mut resume = match last_published_of(&self.config, &feeds, lookback).await {
            Ok(points) => points,
            Err(e) => {
                // Nothing promoted yet: the next reconcile tries again.
                tracing::warn!(feeds = feeds.len(), error = %e, "promotion waits: the trades topic's tail cannot be read");
                return Ok(());
            }
        };
        let tail_read = began.elapsed() - flushed;
        let count = promotions.len();
        let mut failed = Vec::new();
        for (id, epoch) in promotions {
            // A promoted feed publishes only while the lease is surely held;
            // promoting now would wait out PROMOTE_WAIT feed after feed, with
            // this loop deaf to the lease and to drains. The next reconcile
            // tries again.
            if !self.held.holds() {
                tracing::warn!(feed = %id, "promotion waits: the lease is not surely held");
                break;
            }
            let Some(running) = self.running.get_mut(&id) else {
                continue;
            };
            let key = (running.exchange, running.symbol.to_ascii_uppercase());
            let point: HashMap<String, ResumePoint> = resume
                .remove(&key)
                .map(|p| (key.1.clone(), p))
                .into_iter()
                .collect();
            let from = point.values().next().map(|p| p.last.trade_id.clone());
            match tokio::time::timeout(PROMOTE_WAIT, running.handle.promote_under(epoch, point))
                .await
                .unwrap_or_else(|_| Err(IngestError::FeedGone(id.clone())))
            {
                Ok(()) => {
                    running.role = Role::Primary;
                    running.epoch = epoch;
                    tracing::info!(feed = %id, %epoch, after = ?from, "promoted to primary");
                }
                Err(e) => {
                    tracing::warn!(feed = %id, error = %e, "promotion failed; the feed is started again");
                    running.handle.stop();
                    failed.push(id);
                }
            }
        }
        tracing::info!(
            feeds = count,
            failed = failed.len(),
            flush_ms = flushed.as_millis(),
            tail_ms = tail_read.as_millis(),
            total_ms = began.elapsed().as_millis(),
            "promotions done"
        );
        for id in failed {
            self.running.remove(&id);
        }
        Ok(())
    }

    /// Whether feed `id`'s previous primary is done with it, so that its
    /// last trade is in the log: it released the feed (a planned handover),
    /// or it is no longer registered (dead, or cut off past its lease), or
    /// it has not answered within a lease TTL (its late writes are fenced).
    /// `seen` holds the progress and worker records, read from etcd once
    /// for all the promotions of one reconcile (not two reads per feed).
    async fn predecessor_done(
        &mut self,
        id: &str,
        epoch: Epoch,
        seen: &mut Option<Predecessors>,
    ) -> Result<bool, IngestError> {
        let Some(running) = self.running.get(id) else {
            return Ok(false);
        };
        let previous = self
            .assignments
            .values()
            .find(|a| a.exchange == running.exchange && a.symbol == running.symbol)
            .and_then(|a| a.previous.clone());
        let Some((previous, previous_epoch)) = previous else {
            return Ok(true); // a new feed
        };
        if previous == self.id {
            return Ok(true); // ours: fenced, and flushed before the tail is read
        }
        let seen = match seen {
            Some(seen) => seen,
            None => seen.insert(Predecessors::read(&self.store).await?),
        };
        let released = seen
            .progress
            .get(&(running.exchange, running.symbol.clone()))
            .is_some_and(|p| {
                (p.worker == previous && p.epoch == previous_epoch && p.released)
                    || p.epoch >= epoch.0
            });
        if released {
            return Ok(true);
        }
        if !seen.workers.contains(&previous) {
            return Ok(true);
        }
        // Counted from when this promotion (this epoch) was first seen: an
        // earlier one of the same feed, undone by a later assignment, does
        // not count.
        let waiting = self
            .handover_wait
            .entry(id.to_string())
            .or_insert_with(|| (epoch, Instant::now()));
        if waiting.0 != epoch {
            *waiting = (epoch, Instant::now());
        }
        let since = waiting.1;
        // The predecessor may publish for up to its catch-up before it
        // releases: the patience covers that on top of the lease TTLs.
        let patience = Duration::from_millis(self.config.cluster.lease_ttl_ms) * HANDOVER_PATIENCE
            + Duration::from_millis(self.config.cluster.handover_catch_up_ms);
        if since.elapsed() >= patience {
            tracing::warn!(feed = %id, %previous, "the previous primary did not release the feed in time; taking it over");
            return Ok(true);
        }
        tracing::debug!(feed = %id, %previous, "waiting for the previous primary to release the feed");
        Ok(false)
    }

    /// Starts the planned handover of primaries whose feeds moved, beside
    /// the loop (see [`hand_over`]).
    fn hand_over(&mut self, primaries: Vec<(String, Running)>) {
        if primaries.is_empty() {
            return;
        }
        let ids: Vec<String> = primaries.iter().map(|(id, _)| id.clone()).collect();
        let handover = Handover {
            store: self.store.clone(),
            flusher: self.worker.flusher(),
            worker: self.id.clone(),
            // The moment of the move: what the exchange made before it is
            // ours to publish; the successor's buffer (live for the
            // master's warm-up) holds what follows.
            until: chrono::Utc::now().timestamp_millis(),
            within: Duration::from_millis(self.config.cluster.handover_catch_up_ms),
        };
        let span = tracing::info_span!("handover", feeds = ids.len());
        let task = self
            .handovers
            .spawn(hand_over(Handing(primaries), handover).instrument(span))
            .id();
        self.handing_over
            .extend(ids.into_iter().map(|id| (id, task)));
    }

    /// Hands over every primary (on shutdown, while the lease is held) and
    /// waits until every handover under way has ended.
    async fn hand_over_primaries(&mut self, why: &str) {
        let primaries = self.take_primaries();
        if !primaries.is_empty() {
            tracing::info!(feeds = primaries.len(), why, "handing over primaries");
        }
        self.hand_over(primaries);
        while self.handovers.join_next().await.is_some() {}
        self.handing_over.clear();
    }

    /// Removes every primary from the running set.
    fn take_primaries(&mut self) -> Vec<(String, Running)> {
        let ids: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.role == Role::Primary)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.running.remove(&id).map(|r| (id, r)))
            .collect()
    }

    /// Marks this worker draining in its record: the master moves its feeds
    /// away. Tried again on the next check while etcd does not take it.
    async fn start_draining(&mut self, lease: &Lease) {
        if self.draining && self.draining_recorded {
            return;
        }
        self.draining = true;
        let record = self.record();
        match self.store.put_leased(&record, lease).await {
            Ok(_) => {
                self.draining_recorded = true;
                tracing::info!(worker = %self.id, "draining: the master moves our feeds away");
            }
            Err(e) => tracing::warn!(error = %e, "draining not recorded yet; trying again"),
        }
    }

    /// Puts the worker record again when the set of live replicas changed:
    /// the master moves primaries only to replicas live for its warm-up.
    ///
    /// A replica counts as live once its connection is subscribed *and* it
    /// has buffered a trade since: a subscription counts as accepted when
    /// its acknowledgement is late (`ACK_GRACE`), and on a loaded machine
    /// the exchange may start sending seconds after that, so the first
    /// trade is the evidence that the buffer is filling. A quiet symbol
    /// shows none; the master then counts its warm-up from the replica's
    /// placement plus a long wait.
    async fn report_live_replicas(&mut self, lease: &Lease) {
        let now = chrono::Utc::now().timestamp_millis();
        let mut live = BTreeMap::new();
        for (id, running) in self.running.iter_mut() {
            let stats = running.handle.stats();
            if stats.live_connections == 0 {
                running.live_since = None;
                running.buffered_when_subscribed = None;
                continue;
            }
            let subscribed_at = *running
                .buffered_when_subscribed
                .get_or_insert(stats.trades_buffered);
            let receiving = stats.trades_buffered > subscribed_at
                || stats.trades_published > 0
                || running.role == Role::Primary;
            if !receiving {
                continue;
            }
            let since = *running.live_since.get_or_insert(now);
            if running.role == Role::Replica {
                live.insert(id.clone(), since);
            }
        }
        if live == self.live_replicas {
            return;
        }
        let previous = std::mem::replace(&mut self.live_replicas, live);
        let record = self.record();
        if let Err(e) = self.store.put_leased(&record, lease).await {
            tracing::warn!(error = %e, "live replicas not reported; trying again");
            self.live_replicas = previous;
        }
    }

    /// Draining, no assignment names this worker any more, and its last
    /// handovers have ended.
    fn drained(&self) -> bool {
        self.draining
            && self.running.is_empty()
            && self.handovers.is_empty()
            && self.wanted().is_empty()
    }

    /// Records each primary's last published trade (after a flush, so that
    /// it is in the log) in `progress/`.
    async fn record_progress(&mut self, lease: &Lease) -> Result<(), IngestError> {
        if !self.held.holds() {
            return Ok(()); // primaries are holding on; they could not answer
        }
        let mut positions = Vec::new();
        for (id, running) in &self.running {
            if running.role != Role::Primary {
                continue;
            }
            // A primary holding on for its lease cannot answer: skip it.
            if let Ok(Ok(points)) =
                tokio::time::timeout(FENCE_WAIT, running.handle.positions()).await
            {
                positions.push((id.clone(), points, running.handle.stats().trades_published));
            }
        }
        if positions.is_empty() {
            return Ok(());
        }
        if !self.flushed().await? || !lease.is_alive() {
            return Ok(());
        }
        let now = Instant::now();
        let mut records = Vec::new();
        for (id, points, published) in positions {
            let Some(running) = self.running.get_mut(&id) else {
                continue;
            };
            let Some(point) = points.into_values().next() else {
                continue;
            };
            let (recent_trades, recent_ms) = match &running.last_progress {
                Some((_, before, at)) => (
                    published.saturating_sub(*before),
                    u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX),
                ),
                None => (0, 0),
            };
            let unchanged = running
                .last_progress
                .as_ref()
                .is_some_and(|(last, before, _)| {
                    *last == point.last.trade_id && *before == published
                });
            running.last_progress = Some((point.last.trade_id.clone(), published, now));
            if unchanged {
                continue;
            }
            records.push(ProgressRecord {
                exchange: running.exchange,
                symbol: running.symbol.clone(),
                last_trade_id: point.last.trade_id,
                last_trade_time: point.last.exchange_time,
                epoch: running.epoch.0,
                worker: self.id.clone(),
                recent_trades,
                recent_ms,
                updated: chrono::Utc::now().timestamp_millis(),
                released: false,
            });
        }
        for (_, put) in put_in_chunks(&self.store, &records).await {
            put.map_err(IngestError::Coordination)?;
        }
        Ok(())
    }

    /// Flushes the publisher: see [`flushed`].
    async fn flushed(&self) -> Result<bool, IngestError> {
        flushed(&self.worker.flusher()).await
    }

    /// Fences every primary (they publish nothing more) and drops them from
    /// the running set: a later assignment starts them again.
    async fn fence_primaries(&mut self, why: &str) {
        // Handovers under way end here too: their feeds stop, and their
        // successors wait for our lease.
        self.handovers.shutdown().await;
        self.handing_over.clear();
        let primaries = self.take_primaries();
        if !primaries.is_empty() {
            tracing::warn!(feeds = primaries.len(), why, "fencing primaries");
        }
        // No fence command: a primary holding on for its lease could not
        // answer it, and the gate already keeps it from publishing.
        for (id, running) in primaries {
            running.handle.stop();
            tracing::info!(feed = %id, epoch = %running.epoch, "primary stopped");
        }
    }

    fn stop_all(&mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            running.handle.stop();
        }
    }
}

/// What promotions look at to know whether their predecessors are done:
/// every feed's progress record and the registered workers.
struct Predecessors {
    progress: HashMap<(Exchange, String), ProgressRecord>,
    workers: std::collections::BTreeSet<String>,
}

impl Predecessors {
    async fn read(store: &Store) -> Result<Self, IngestError> {
        let progress = store.list::<ProgressRecord, &str>(&[]).await?;
        let workers = store.list::<WorkerRecord, &str>(&[]).await?;
        Ok(Self {
            progress: progress
                .records
                .into_iter()
                .map(|r| ((r.value.exchange, r.value.symbol.clone()), r.value))
                .collect(),
            workers: workers.records.into_iter().map(|r| r.value.id).collect(),
        })
    }
}

/// What a planned handover needs, beside the member's loop.
struct Handover {
    store: Store,
    flusher: Flusher,
    /// This worker's id, in the progress records.
    worker: String,
    /// The moment of the move (epoch ms).
    until: crate::model::Millis,
    /// How long each primary may go on publishing to catch up with it.
    within: Duration,
}

/// Flushes a publisher: false when that takes longer than [`FLUSH_WAIT`]
/// (the broker is away), so that the member keeps following etcd meanwhile.
async fn flushed(flusher: &Flusher) -> Result<bool, IngestError> {
    match tokio::time::timeout(FLUSH_WAIT, flusher.flush()).await {
        Ok(flushed) => flushed.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// Primaries being handed over; stopped when dropped, so that a handover
/// cut short (lease lost, shutdown) leaves none running.
struct Handing(Vec<(String, Running)>);

impl Drop for Handing {
    fn drop(&mut self) {
        for (_, running) in &self.0 {
            running.handle.stop();
        }
    }
}

/// Planned handover of primaries whose feeds moved: each goes on publishing
/// until it has caught up with the move (at most `cluster.handover_catch_up_ms`;
/// at once when 0), then is fenced; what they published is flushed once,
/// and each one's last trade is recorded as released, so that each new
/// primary goes on from just after it.
async fn hand_over(primaries: Handing, handover: Handover) {
    let Handover {
        store,
        flusher,
        worker,
        until,
        within,
    } = handover;
    let fences = primaries.0.iter().map(|(_, running)| {
        tokio::time::timeout(FENCE_WAIT + within, running.handle.hand_over(until, within))
    });
    let fenced = futures::future::join_all(fences).await;
    let mut records = Vec::new();
    for ((id, running), fenced) in primaries.0.iter().zip(fenced) {
        running.handle.stop();
        let Ok(Ok(positions)) = fenced else {
            tracing::warn!(feed = %id, "primary stopped without a handover");
            continue;
        };
        let point = positions.into_values().next();
        records.push(ProgressRecord {
            exchange: running.exchange,
            symbol: running.symbol.clone(),
            last_trade_id: point
                .as_ref()
                .map(|p| p.last.trade_id.clone())
                .unwrap_or_default(),
            last_trade_time: point.as_ref().map_or(0, |p| p.last.exchange_time),
            epoch: running.epoch.0,
            worker: worker.clone(),
            recent_trades: 0,
            recent_ms: 0,
            updated: chrono::Utc::now().timestamp_millis(),
            released: true,
        });
    }
    if !matches!(flushed(&flusher).await, Ok(true)) {
        tracing::warn!(
            feeds = records.len(),
            "handover: the publisher cannot flush; the successors wait for our lease"
        );
        return;
    }
    for (chunk, put) in put_in_chunks(&store, &records).await {
        match put {
            Ok(()) => {
                for r in chunk {
                    tracing::info!(feed = %feed_id(r.exchange, &r.symbol), epoch = r.epoch, last = %r.last_trade_id, "handed over");
                }
            }
            Err(e) => {
                tracing::warn!(feeds = chunk.len(), error = %e, "handover not recorded; the successors wait for our lease")
            }
        }
    }
}

/// Puts `records` in transactions of at most [`MAX_TXN_OPS`] writes, and
/// says how each one went (a failed one does not stop the next).
async fn put_in_chunks<'r, T: Record>(
    store: &Store,
    records: &'r [T],
) -> Vec<(&'r [T], Result<(), StoreError>)> {
    let mut outcomes = Vec::new();
    for chunk in records.chunks(MAX_TXN_OPS) {
        let batch = chunk
            .iter()
            .fold(store.batch(), |batch, record| batch.put(record));
        outcomes.push((chunk, store.commit(batch).await.map(drop)));
    }
    outcomes
}

/// Stops a feed; a primary is fenced first, so that it publishes nothing
/// more from the moment this returns.
async fn stop_feed(id: &str, running: Running) {
    if running.role == Role::Primary {
        // A primary waiting for its lease to be held again cannot answer:
        // stopping it (below) ends it as surely.
        let _ = tokio::time::timeout(FENCE_WAIT, running.handle.fence()).await;
        tracing::info!(feed = %id, epoch = %running.epoch, "primary fenced");
    } else {
        tracing::info!(feed = %id, "replica stopped");
    }
    running.handle.stop();
}

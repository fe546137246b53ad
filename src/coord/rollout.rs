//! `tickfetch rollout`: replaces every worker, one at a time, through drains.
//!
//! ```text
//! check: every feed has a healthy replica (else refuse, naming the feeds)
//! for each worker not yet on the target version, in id order:
//!     drain/{id} ─▶ the worker hands its primaries over and exits 0
//!     wait: a worker (same id, or a new one) registers with the target version
//!     wait: the assignments settle (every feed on live workers, epochs set,
//!           replicas placed), then `warm` for new replicas to fill
//!     record it as done in rollout/state
//! ```
//!
//! The rollout's progress lives in etcd (`rollout/state`), so that a
//! rollout interrupted anywhere (the CLI killed, the machine rebooted) goes
//! on where it stopped when started again with the same target;
//! `tickfetch rollout --status` prints it and `--abort` stops it after the
//! worker being replaced. Restarting a drained worker on the new binary is
//! the supervisor's job (systemd, Kubernetes): the rollout only waits for it.
//!
//! A replacement gets its share of replicas and, once they are warm, of
//! primaries from the master's rebalancing (`assign::rebalance`); the rollout
//! waits only for the assignments to settle and `warm`, not for the share.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keyspace::{AssignmentRecord, DesiredFeed, DrainRequest, WorkerRecord};
use super::store::{Record, Store, StoreError};
use crate::model::Millis;
use crate::shutdown::CancellationToken;

/// How often the rollout looks at etcd while it waits.
const POLL: Duration = Duration::from_millis(200);

/// A rollout's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRecord {
    pub target_version: String,
    /// The workers to replace, in order.
    pub order: Vec<String>,
    /// Those replaced so far.
    pub done: Vec<String>,
    /// The one being replaced now.
    pub current: Option<String>,
    pub started: Millis,
    pub updated: Millis,
    /// Asked to stop (`--abort`).
    pub aborted: bool,
    pub finished: bool,
}

impl Record for RolloutRecord {
    const TEMPLATE: &'static str = "rollout/state";
    fn key_values(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Errors of a rollout.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Draining now would leave these feeds with nobody to take over.
    #[error("refusing to roll out: no healthy replica for {}", feeds.join(", "))]
    NoHealthyReplica { feeds: Vec<String> },
    #[error("a rollout to version {0} is in progress; finish it, or stop it with --abort")]
    OtherInProgress(String),
    #[error("the rollout was aborted after {done} of {total} workers")]
    Aborted { done: usize, total: usize },
    #[error("worker {worker}: {what} took longer than {seconds} s")]
    Timeout {
        worker: String,
        what: &'static str,
        seconds: u64,
    },
    #[error("stopped")]
    Stopped,
}

/// How a rollout runs.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub target_version: String,
    /// How long a replacement holds its replicas before the next worker is
    /// drained (time for their buffers to fill).
    pub warm: Duration,
    /// Longest wait for one worker's drain and replacement.
    pub per_worker: Duration,
}

/// Runs (or resumes) a rollout to `options.target_version`; returns the
/// final record.
///
/// # Errors
/// [`RolloutError::NoHealthyReplica`] before anything is drained, another
/// rollout in progress, an abort, a replacement that does not come, etcd
/// unreachable.
pub async fn run(
    store: &Store,
    options: &RolloutOptions,
    shutdown: &CancellationToken,
) -> Result<RolloutRecord, RolloutError> {
    let now = || chrono::Utc::now().timestamp_millis();
    let mut state = match store.get::<RolloutRecord, &str>(&[]).await? {
        Some(r) if !r.value.finished && !r.value.aborted => {
            if r.value.target_version != options.target_version {
                return Err(RolloutError::OtherInProgress(r.value.target_version));
            }
            tracing::info!(
                done = r.value.done.len(),
                total = r.value.order.len(),
                "resuming the rollout"
            );
            r.value
        }
        _ => {
            check_replicas(store).await?;
            let workers = store.list::<WorkerRecord, &str>(&[]).await?;
            let order: Vec<String> = workers
                .records
                .iter()
                .filter(|w| w.value.version != options.target_version)
                .map(|w| w.value.id.clone())
                .collect();
            let record = RolloutRecord {
                target_version: options.target_version.clone(),
                order,
                done: Vec::new(),
                current: None,
                started: now(),
                updated: now(),
                aborted: false,
                finished: false,
            };
            store.put(&record).await?;
            record
        }
    };
    let todo: Vec<String> = state
        .order
        .iter()
        .filter(|id| !state.done.contains(id))
        .cloned()
        .collect();
    for id in todo {
        // --abort from another shell: stop before the next worker.
        if let Some(current) = store.get::<RolloutRecord, &str>(&[]).await? {
            if current.value.aborted {
                return Err(RolloutError::Aborted {
                    done: state.done.len(),
                    total: state.order.len(),
                });
            }
        }
        let resumed = state.current.as_deref() == Some(id.as_str());
        state.current = Some(id.clone());
        state.updated = now();
        store.put(&state).await?;
        replace(store, &id, resumed, options, shutdown).await?;
        tracing::info!(worker = %id, version = %options.target_version, "worker replaced");
        state.done.push(id);
        state.current = None;
        state.updated = now();
        store.put(&state).await?;
    }
    state.finished = true;
    state.updated = now();
    store.put(&state).await?;
    Ok(state)
}

/// Marks the rollout in progress as aborted; it stops before its next
/// worker. Returns it, or `None` when none runs.
///
/// # Errors
/// etcd unreachable.
pub async fn abort(store: &Store) -> Result<Option<RolloutRecord>, RolloutError> {
    let Some(current) = store.get::<RolloutRecord, &str>(&[]).await? else {
        return Ok(None);
    };
    let mut record = current.value;
    if record.finished {
        return Ok(Some(record));
    }
    record.aborted = true;
    record.updated = chrono::Utc::now().timestamp_millis();
    store.put(&record).await?;
    Ok(Some(record))
}

/// The last rollout's record.
///
/// # Errors
/// etcd unreachable.
pub async fn status(store: &Store) -> Result<Option<RolloutRecord>, RolloutError> {
    Ok(store
        .get::<RolloutRecord, &str>(&[])
        .await?
        .map(|r| r.value))
}

/// The registered workers by id.
async fn registered(store: &Store) -> Result<BTreeMap<String, WorkerRecord>, RolloutError> {
    Ok(store
        .list::<WorkerRecord, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|w| (w.value.id.clone(), w.value))
        .collect())
}

/// Every feed whose primary has no registered, non-draining replica.
async fn check_replicas(store: &Store) -> Result<(), RolloutError> {
    let workers = registered(store).await?;
    let assignments = store.list::<AssignmentRecord, &str>(&[]).await?;
    let healthy = |id: &String| workers.get(id).is_some_and(|w| !w.draining);
    let feeds: Vec<String> = assignments
        .records
        .iter()
        .filter(|a| !a.value.replicas.iter().any(healthy))
        .map(|a| format!("{}/{}", a.value.exchange, a.value.symbol))
        .collect();
    if feeds.is_empty() {
        Ok(())
    } else {
        Err(RolloutError::NoHealthyReplica { feeds })
    }
}

/// Drains `id` and waits for its replacement to register on the target
/// version and hold warm replicas.
async fn replace(
    store: &Store,
    id: &str,
    resumed: bool,
    options: &RolloutOptions,
    shutdown: &CancellationToken,
) -> Result<(), RolloutError> {
    let before: BTreeSet<String> = store
        .list::<WorkerRecord, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|w| w.value.id)
        .collect();
    let on_target = |w: &WorkerRecord| w.version == options.target_version && !w.draining;
    // Until its replacement registers: ask for the drain whenever the worker
    // runs undrained on another version with no request pending. Never while
    // it is gone (drained and restarting, or between leases): a request then
    // would drain its replacement too, registering under the same id. So a
    // resumed rollout neither asks twice nor misses a drain its predecessor
    // did not get to ask for, and a worker that lost its lease and came back
    // on the old version is asked again.
    let checked = std::sync::atomic::AtomicBool::new(resumed);
    let replacement = wait(
        id,
        "registering its replacement",
        options,
        shutdown,
        || async {
            let workers: BTreeMap<String, WorkerRecord> = registered(store).await?;
            if let Some(found) = workers
                .values()
                .find(|w| on_target(w) && (w.id == id || !before.contains(&w.id)))
            {
                return Ok(Some(found.id.clone()));
            }
            let undrained = workers
                .get(id)
                .is_some_and(|w| w.version != options.target_version && !w.draining);
            if undrained && store.get::<DrainRequest, _>(&[id]).await?.is_none() {
                // Between workers, a rebalance may leave a feed without a
                // replica for a moment: wait for one rather than drain.
                if !checked.load(std::sync::atomic::Ordering::Relaxed) {
                    match check_replicas(store).await {
                        Ok(()) => checked.store(true, std::sync::atomic::Ordering::Relaxed),
                        Err(RolloutError::NoHealthyReplica { feeds }) => {
                            tracing::info!(worker = %id, feeds = feeds.len(), "waiting for every feed to have a healthy replica");
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
                store
                    .put(&DrainRequest {
                        id: id.to_string(),
                        requested: chrono::Utc::now().timestamp_millis(),
                    })
                    .await?;
                tracing::info!(worker = %id, "draining");
            }
            Ok(None)
        },
    )
    .await?;
    tracing::info!(worker = %id, replacement = %replacement, "replacement registered");
    // Settled: every feed on live, non-draining workers with its epoch set
    // and its replicas placed; then `warm` for replicas placed meanwhile
    // (the drained worker's) to fill their buffers.
    wait(
        id,
        "settling the assignments",
        options,
        shutdown,
        || async { settled(store).await.map(|done| done.then_some(())) },
    )
    .await?;
    tokio::select! {
        _ = shutdown.cancelled() => return Err(RolloutError::Stopped),
        _ = tokio::time::sleep(options.warm) => {}
    }
    Ok(())
}

/// Whether every desired feed is assigned to live, non-draining workers,
/// with its epoch set and as many replicas as it wants (or as there are
/// other workers).
async fn settled(store: &Store) -> Result<bool, RolloutError> {
    let workers = registered(store).await?;
    let eligible = workers.values().filter(|w| !w.draining).count();
    let live = |id: &String| workers.get(id).is_some_and(|w| !w.draining);
    let assignments: BTreeMap<String, AssignmentRecord> = store
        .list::<AssignmentRecord, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|a| {
            (
                a.value.symbol.clone() + "@" + a.value.exchange.as_str(),
                a.value,
            )
        })
        .collect();
    let desired = store.list::<DesiredFeed, &str>(&[]).await?;
    Ok(desired.records.iter().all(|d| {
        let wanted = (d.value.replicas as usize).min(eligible.saturating_sub(1));
        assignments
            .get(&(d.value.symbol.clone() + "@" + d.value.exchange.as_str()))
            .is_some_and(|a| {
                a.epoch != 0
                    && live(&a.primary)
                    && a.replicas.iter().all(live)
                    && a.replicas.len() == wanted
            })
    }))
}

/// Polls `probe` until it yields a value, `options.per_worker` at most.
async fn wait<T, F, Fut>(
    worker: &str,
    what: &'static str,
    options: &RolloutOptions,
    shutdown: &CancellationToken,
    mut probe: F,
) -> Result<T, RolloutError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, RolloutError>>,
{
    let deadline = tokio::time::Instant::now() + options.per_worker;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(RolloutError::Store(e)) if e.is_retryable() => {
                tracing::warn!(error = %e, "rollout: waiting for etcd");
            }
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RolloutError::Timeout {
                worker: worker.to_string(),
                what,
                seconds: options.per_worker.as_secs(),
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(RolloutError::Stopped),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

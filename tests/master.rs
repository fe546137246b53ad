//! `tickfetch-coord` against a real etcd, as separate processes: three
//! masters, one elected; the leader is killed with SIGKILL again and again
//! while feeds are added and workers die, register and drain. The assignments
//! converge every time to what the rules say, every state a watch shows keeps
//! the structural invariants, a dead primary's feeds go to their replicas, and
//! a new primary always gets a higher epoch.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::Proc;
use tickfetch::config::Config;
use tickfetch::coord::keyspace::{
    feed_id, AssignmentRecord, DesiredFeed, LeaderRecord, WorkerRecord,
};
use tickfetch::coord::store::{Lease, Store, WatchEvent};
use tickfetch::model::Exchange;

fn spawn_master(config: &Config, name: &str) -> Proc {
    Proc::spawn(
        config,
        "tickfetch-coord",
        name,
        // The workers here are records only: no replica ever reports live,
        // so no warm-up is waited for before a draining primary moves; and
        // the rules of `assign` alone are checked, without rebalancing.
        &[
            "--no-rebalance",
            "--id",
            name,
            "--lease-ttl-secs",
            "2",
            "--resync-secs",
            "5",
            "--warm-secs",
            "0",
        ],
    )
}

fn desired(symbol: &str, replicas: u32) -> DesiredFeed {
    DesiredFeed {
        exchange: Exchange::Binance,
        channel: "trade".into(),
        symbol: symbol.into(),
        replicas,
    }
}

async fn register(store: &Store, id: &str, capacity: u32, draining: bool) -> Lease {
    let lease = store
        .grant_lease(Duration::from_secs(10))
        .await
        .expect("lease");
    let worker = WorkerRecord {
        id: id.into(),
        version: "test".into(),
        capacity,
        address: "127.0.0.1:0".into(),
        draining,
        registered: 0,
        live_replicas: Default::default(),
    };
    store.put_leased(&worker, &lease).await.expect("register");
    lease
}

/// The rules, checked on the whole state: every desired feed has a primary on
/// an eligible worker, R replicas (as many as there are other eligible
/// workers) on distinct eligible workers, and a set epoch; nothing else is
/// assigned. `Err` says what is off.
async fn check_converged(store: &Store) -> Result<BTreeMap<String, AssignmentRecord>, String> {
    let feeds = store
        .list::<DesiredFeed, &str>(&[])
        .await
        .map_err(|e| e.to_string())?;
    let workers = store
        .list::<WorkerRecord, &str>(&[])
        .await
        .map_err(|e| e.to_string())?;
    let assignments = store
        .list::<AssignmentRecord, &str>(&[])
        .await
        .map_err(|e| e.to_string())?;
    let eligible: BTreeSet<&str> = workers
        .records
        .iter()
        .filter(|w| !w.value.draining)
        .map(|w| w.value.id.as_str())
        .collect();
    let held: BTreeMap<String, AssignmentRecord> = assignments
        .records
        .iter()
        .map(|r| (feed_id(r.value.exchange, &r.value.symbol), r.value.clone()))
        .collect();
    for feed in &feeds.records {
        let id = feed.value.id();
        let a = held.get(&id).ok_or(format!("{id} unassigned"))?;
        if !eligible.contains(a.primary.as_str()) {
            return Err(format!("{id}: primary {} not eligible", a.primary));
        }
        let wanted = (feed.value.replicas as usize).min(eligible.len().saturating_sub(1));
        let distinct: BTreeSet<&str> = a.replicas.iter().map(String::as_str).collect();
        if a.replicas.len() != wanted
            || distinct.len() != a.replicas.len()
            || distinct.contains(a.primary.as_str())
            || !distinct.iter().all(|r| eligible.contains(r))
        {
            return Err(format!(
                "{id}: replicas {:?} (primary {}, eligible {eligible:?})",
                a.replicas, a.primary
            ));
        }
        if a.epoch == 0 {
            return Err(format!("{id}: epoch not set yet"));
        }
    }
    if held.len() != feeds.records.len() {
        return Err(format!(
            "{} assignments for {} feeds",
            held.len(),
            feeds.records.len()
        ));
    }
    Ok(held)
}

async fn converged(store: &Store) -> BTreeMap<String, AssignmentRecord> {
    let started = Instant::now();
    loop {
        match check_converged(store).await {
            Ok(held) => return held,
            Err(why) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "assignments did not converge within 60 s: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(store: &Store) -> String {
    let started = Instant::now();
    loop {
        if let Ok(Some(l)) = store.get::<LeaderRecord, &str>(&[]).await {
            return l.value.id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_assignments_converge_every_time() {
    let config = common::config("master");
    let store = Store::connect(&config.etcd).await.expect("etcd");

    // Every state of assignments/ a watch shows keeps the structural rules,
    // and a feed's epoch only grows.
    let start = store
        .list::<AssignmentRecord, &str>(&[])
        .await
        .expect("list")
        .revision;
    let mut watch = store
        .watch::<AssignmentRecord, &str>(&[], start + 1)
        .await
        .expect("watch");
    let observer = tokio::spawn(async move {
        let mut epochs: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            let Ok(event) = watch.next().await else { break };
            let WatchEvent::Put(r) = event else { continue };
            let a = &r.value;
            let distinct: BTreeSet<&String> = a.replicas.iter().collect();
            assert_eq!(distinct.len(), a.replicas.len(), "replicas distinct: {a:?}");
            assert!(
                !distinct.contains(&a.primary),
                "no replica on the primary: {a:?}"
            );
            let id = feed_id(a.exchange, &a.symbol);
            if a.epoch != 0 {
                let last = epochs.insert(id.clone(), a.epoch).unwrap_or(0);
                assert!(
                    a.epoch >= last,
                    "{id}: epoch went back from {last} to {}",
                    a.epoch
                );
            }
        }
    });

    let mut workers: BTreeMap<String, Lease> = BTreeMap::new();
    for (id, capacity) in [("w1", 1), ("w2", 1), ("w3", 2)] {
        workers.insert(id.into(), register(&store, id, capacity, false).await);
    }
    for i in 0..20 {
        store
            .put(&desired(&format!("S{i:02}USDT"), 1))
            .await
            .expect("feed");
    }
    let mut masters: Vec<Proc> = (0..3)
        .map(|i| spawn_master(&config, &format!("m{i}")))
        .collect();
    let mut held = converged(&store).await;
    let mut feeds = 20;
    let mut epochs_seen: BTreeMap<String, u64> =
        held.iter().map(|(id, a)| (id.clone(), a.epoch)).collect();

    for (generation, round) in (3..).zip(0..10) {
        let id = leader(&store).await;
        let index = masters
            .iter()
            .position(|m| m.name == id)
            .unwrap_or_else(|| panic!("leader {id} is not one of ours"));
        masters[index].kill9();

        // Meanwhile the cluster changes.
        for _ in 0..2 {
            store
                .put(&desired(
                    &format!("S{feeds:02}USDT"),
                    1 + (feeds % 2) as u32,
                ))
                .await
                .expect("feed");
            feeds += 1;
        }
        let mut dead_primary = None;
        match round % 3 {
            0 => {
                // The worker holding the most primaries dies.
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for a in held.values() {
                    *count.entry(a.primary.as_str()).or_default() += 1;
                }
                let victim = count
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(w, _)| w.to_string())
                    .expect("a primary");
                let lease = workers.remove(&victim).expect("its lease");
                store.revoke(lease).await.expect("revoke");
                dead_primary = Some(victim);
                let new = format!("w{}", 10 + round);
                workers.insert(new.clone(), register(&store, &new, 1, false).await);
            }
            1 => {
                // One drains (its record says so), another registers.
                let drained = workers.keys().next().cloned().expect("a worker");
                let lease = workers.remove(&drained).expect("lease");
                let record = WorkerRecord {
                    id: drained.clone(),
                    version: "test".into(),
                    capacity: 1,
                    address: "127.0.0.1:0".into(),
                    draining: true,
                    registered: 0,
                    live_replicas: Default::default(),
                };
                store.put_leased(&record, &lease).await.expect("drain");
                workers.insert(drained.clone() + "-draining", lease);
                let new = format!("w{}", 10 + round);
                workers.insert(new.clone(), register(&store, &new, 2, false).await);
            }
            _ => {}
        }
        masters[index] = spawn_master(&config, &format!("m{generation}"));

        let before = held.clone();
        held = converged(&store).await;
        if let Some(dead) = dead_primary {
            for (id, old) in &before {
                if old.primary == dead && !old.replicas.is_empty() {
                    let now = &held[id];
                    assert!(
                        old.replicas.contains(&now.primary),
                        "{id}: the dead primary's replica takes over ({old:?} → {now:?})"
                    );
                }
            }
        }
        for (id, a) in &held {
            if let Some(&last) = epochs_seen.get(id) {
                let moved = before.get(id).is_some_and(|b| b.primary != a.primary);
                if moved {
                    assert!(a.epoch > last, "{id}: a new primary gets a higher epoch");
                } else {
                    assert_eq!(a.epoch, last, "{id}: same primary, same epoch");
                }
            }
            epochs_seen.insert(id.clone(), a.epoch);
        }
        let leader_now = leader(&store).await;
        assert_ne!(leader_now, id, "round {round}: a new leader took over");
    }
    assert_eq!(held.len(), feeds);

    drop(masters);
    if observer.is_finished() {
        observer
            .await
            .expect("every state the watch showed kept the rules");
    } else {
        observer.abort();
    }
    common::etcd::remove_prefix(&config.etcd).await;
}

/// A rollout interrupted while its current worker was drained, and resumed
/// while that worker is gone (exited 0, restarting on the new binary): the
/// resumed rollout must not ask for the drain again, or the replacement,
/// registering under the same id, drains as well. The workers are records,
/// and the test plays their drains.
#[tokio::test]
async fn a_resumed_rollout_does_not_drain_again_a_worker_whose_drain_it_asked_for() {
    use tickfetch::coord::keyspace::DrainRequest;
    use tickfetch::coord::rollout::{self, RolloutOptions, RolloutRecord};
    use tickfetch::shutdown::CancellationToken;

    let config = common::config("rollout-resume");
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let on = |id: &str, version: &str| WorkerRecord {
        id: id.into(),
        version: version.into(),
        capacity: 1,
        address: "127.0.0.1:0".into(),
        draining: false,
        registered: 0,
        live_replicas: Default::default(),
    };
    // w1 was being replaced when the rollout stopped: it drained and exited
    // (request deleted, record gone). w2 still runs the old version.
    let lease = |ttl| store.grant_lease(Duration::from_secs(ttl));
    let w2_lease = lease(30).await.expect("lease");
    let from = store
        .put_leased(&on("w2", "1"), &w2_lease)
        .await
        .expect("register");
    store
        .put(&RolloutRecord {
            target_version: "2".into(),
            order: vec!["w1".into(), "w2".into()],
            done: Vec::new(),
            current: Some("w1".into()),
            started: 0,
            updated: 0,
            aborted: false,
            finished: false,
        })
        .await
        .expect("rollout state");
    let mut drains = store
        .watch::<DrainRequest, &str>(&[], from + 1)
        .await
        .expect("watch");

    let options = RolloutOptions {
        target_version: "2".into(),
        warm: Duration::ZERO,
        per_worker: Duration::from_secs(30),
    };
    let shutdown = CancellationToken::new();
    let resumed = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { rollout::run(&store, &options, &shutdown).await })
    };
    // The replacement of w1 comes a moment later, on the new version.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w1_lease = lease(30).await.expect("lease");
    store
        .put_leased(&on("w1", "2"), &w1_lease)
        .await
        .expect("register");
    // The first drain asked for is w2's; the test drains it and brings it
    // back on the new version.
    let first = tokio::time::timeout(Duration::from_secs(20), drains.next())
        .await
        .expect("a drain request")
        .expect("watch");
    let WatchEvent::Put(request) = first else {
        panic!("a drain request, not {first:?}");
    };
    assert_eq!(request.value.id, "w2", "w1 was drained again");
    store
        .delete::<DrainRequest, _>(&["w2"])
        .await
        .expect("delete");
    store.revoke(w2_lease).await.expect("revoke");
    let w2_lease = lease(30).await.expect("lease");
    store
        .put_leased(&on("w2", "2"), &w2_lease)
        .await
        .expect("register");

    let record = tokio::time::timeout(Duration::from_secs(30), resumed)
        .await
        .expect("the rollout ends")
        .expect("joined")
        .expect("the rollout succeeds");
    assert!(record.finished, "{record:?}");
    assert_eq!(record.done, ["w1", "w2"]);
    // Nothing else was asked for: w2's request and its deletion.
    let deleted = tokio::time::timeout(Duration::from_secs(5), drains.next())
        .await
        .expect("the deletion")
        .expect("watch");
    assert!(matches!(deleted, WatchEvent::Deleted { .. }), "{deleted:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), drains.next())
            .await
            .is_err(),
        "another drain was asked for"
    );
    shutdown.cancel();
    common::etcd::remove_prefix(&config.etcd).await;
}

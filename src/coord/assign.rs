//! Feed assignment: which worker runs each feed as primary, and which hold it
//! as hot replicas. A pure function of (desired feeds, live workers, current
//! assignment) → new assignment; the master calls it on every change it sees
//! and writes the difference.
//!
//! Rules, in order of precedence:
//! 1. A feed runs only on live workers that are not draining ("eligible").
//! 2. One primary per feed, while any worker is eligible.
//! 3. Sticky: a feed whose primary is still eligible keeps it; replicas that
//!    are still eligible stay. A change moves as few feeds as possible.
//! 4. A feed whose primary is gone (dead or draining) is promoted to one of
//!    its eligible replicas first — the hot one, with the buffer to publish
//!    from where the primary stopped — and only without one to a fresh worker.
//! 5. Up to `replicas` replicas per feed, each on a worker other than the
//!    primary and the other replicas (fewer when there are not enough workers).
//! 6. New placements go to the worker with the lowest load relative to its
//!    capacity (primaries and replicas counted apart, ties by worker id), so a
//!    fresh assignment is balanced by capacity. [`assign`] does not move
//!    existing placements.
//!
//! The result is deterministic (feeds in id order) and a fixed point: assigning
//! again with the result as the current assignment changes nothing.
//!
//! [`rebalance`] then moves existing placements toward balance (a new worker
//! getting its share), one placement at a time and only where a move makes
//! the two workers' loads closer without reversing them:
//! - a replica moves from the most to the least loaded worker (replicas
//!   counted), to a worker that holds no part of the feed;
//! - a primary moves by planned handover to one of its replicas that has been
//!   in place for the warm-up time (its buffer is full), and the old primary
//!   takes that replica's place: the workers swap roles, so the feed never
//!   has fewer hot copies than before.

use std::collections::{BTreeMap, BTreeSet};

/// A feed the cluster should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFeed {
    /// The feed's id, e.g. `binance/trade/BTCUSDT`.
    pub id: String,
    /// Hot replicas wanted besides the primary.
    pub replicas: usize,
}

/// A live worker, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWorker {
    pub id: String,
    /// Relative capacity (≥ 1): a worker of capacity 2 takes twice the feeds.
    pub capacity: u32,
    /// Being drained: takes no feed, keeps none.
    pub draining: bool,
}

/// Where one feed runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    pub primary: String,
    pub replicas: Vec<String>,
}

/// Feed id → placement.
pub type Assignment = BTreeMap<String, Placement>;

#[derive(Default, Clone, Copy)]
struct Load {
    primaries: u64,
    replicas: u64,
    capacity: u64,
}

/// The new assignment; see the module docs for the rules.
pub fn assign(feeds: &[DesiredFeed], workers: &[LiveWorker], current: &Assignment) -> Assignment {
    let mut load = empty_loads(workers);
    let mut feeds: Vec<&DesiredFeed> = feeds.iter().collect();
    feeds.sort_by(|a, b| a.id.cmp(&b.id));
    feeds.dedup_by(|a, b| a.id == b.id);

    // Pass 1: what stays (sticky primaries, promotions, surviving replicas).
    let mut kept: BTreeMap<&str, Placement> = BTreeMap::new();
    for feed in &feeds {
        let Some(old) = current.get(&feed.id) else {
            continue;
        };
        let eligible = |w: &String| load.contains_key(w.as_str());
        let primary = if eligible(&old.primary) {
            Some(old.primary.clone())
        } else {
            old.replicas.iter().find(|r| eligible(r)).cloned()
        };
        let Some(primary) = primary else { continue };
        let mut replicas: Vec<String> = Vec::new();
        for r in &old.replicas {
            if eligible(r)
                && *r != primary
                && !replicas.contains(r)
                && replicas.len() < feed.replicas
            {
                replicas.push(r.clone());
            }
        }
        if let Some(l) = load.get_mut(primary.as_str()) {
            l.primaries += 1;
        }
        for r in &replicas {
            if let Some(l) = load.get_mut(r.as_str()) {
                l.replicas += 1;
            }
        }
        kept.insert(feed.id.as_str(), Placement { primary, replicas });
    }

    // Pass 2: place what is missing, least loaded first.
    let mut out = Assignment::new();
    for feed in &feeds {
        let mut placement = match kept.remove(feed.id.as_str()) {
            Some(p) => p,
            None => {
                let Some(primary) = least_loaded(&load, &BTreeSet::new(), |l| l.primaries) else {
                    continue; // no eligible worker at all
                };
                if let Some(l) = load.get_mut(primary) {
                    l.primaries += 1;
                }
                Placement {
                    primary: primary.to_string(),
                    replicas: Vec::new(),
                }
            }
        };
        while placement.replicas.len() < feed.replicas {
            let taken: BTreeSet<&str> = std::iter::once(placement.primary.as_str())
                .chain(placement.replicas.iter().map(String::as_str))
                .collect();
            let Some(replica) = least_loaded(&load, &taken, |l| l.replicas) else {
                break; // not enough workers
            };
            if let Some(l) = load.get_mut(replica) {
                l.replicas += 1;
            }
            placement.replicas.push(replica.to_string());
        }
        out.insert(feed.id.clone(), placement);
    }
    out
}

/// Every eligible (non-draining) worker with nothing placed yet.
fn empty_loads(workers: &[LiveWorker]) -> BTreeMap<&str, Load> {
    workers
        .iter()
        .filter(|w| !w.draining)
        .map(|w| {
            (
                w.id.as_str(),
                Load {
                    capacity: u64::from(w.capacity.max(1)),
                    ..Load::default()
                },
            )
        })
        .collect()
}

/// The eligible worker outside `taken` whose count (by `counted`) plus one,
/// relative to its capacity, is lowest; ties by id.
fn least_loaded<'w>(
    load: &BTreeMap<&'w str, Load>,
    taken: &BTreeSet<&str>,
    counted: impl Fn(&Load) -> u64,
) -> Option<&'w str> {
    load.iter()
        .filter(|(id, _)| !taken.contains(*id))
        // (n + 1) / capacity compared without division: a/b < c/d ⇔ a·d < c·b.
        .min_by(|(a_id, a), (b_id, b)| {
            let left = (counted(a) + 1) * b.capacity;
            let right = (counted(b) + 1) * a.capacity;
            left.cmp(&right).then(a_id.cmp(b_id))
        })
        .map(|(id, _)| *id)
}

/// When each replica was placed (ms): feed id → worker → time. A replica
/// missing here counts as placed now.
pub type ReplicaSince = BTreeMap<String, BTreeMap<String, i64>>;

/// Moves placements of `assignment` toward balance by capacity among the
/// eligible `workers` (see the module docs); a primary moves only to a
/// replica placed at least `warm` ms before `now`. Deterministic; applying
/// it again to its result (with the new replicas' times) converges.
pub fn rebalance(
    workers: &[LiveWorker],
    assignment: &Assignment,
    since: &ReplicaSince,
    now: i64,
    warm: i64,
) -> Assignment {
    let mut out = assignment.clone();
    let mut load = empty_loads(workers);
    for placement in out.values() {
        if let Some(l) = load.get_mut(placement.primary.as_str()) {
            l.primaries += 1;
        }
        for r in &placement.replicas {
            if let Some(l) = load.get_mut(r.as_str()) {
                l.replicas += 1;
            }
        }
    }
    let bound = out.len() * 2 + 1;
    // Replicas: from the most to the least loaded, where the feed allows it.
    for _ in 0..bound {
        let Some((from, to)) = imbalance(&load, |l| l.replicas) else {
            break;
        };
        let movable = out.iter_mut().find(|(_, p)| {
            p.replicas.iter().any(|r| r == from)
                && p.primary != to
                && !p.replicas.iter().any(|r| r == to)
        });
        let Some((_, placement)) = movable else { break };
        for r in placement.replicas.iter_mut().filter(|r| *r == from) {
            *r = to.to_string();
        }
        shift(&mut load, from, to, |l| &mut l.replicas);
    }
    // Primaries: swap with a warm replica on the least loaded worker.
    for _ in 0..bound {
        let Some((from, to)) = imbalance(&load, |l| l.primaries) else {
            break;
        };
        let warm_enough = |feed: &str| {
            since
                .get(feed)
                .and_then(|s| s.get(to))
                .is_some_and(|t| now - t >= warm)
        };
        let movable = out.iter_mut().find(|(feed, p)| {
            p.primary == from && p.replicas.iter().any(|r| r == to) && warm_enough(feed)
        });
        let Some((_, placement)) = movable else { break };
        placement.primary = to.to_string();
        for r in placement.replicas.iter_mut().filter(|r| *r == to) {
            *r = from.to_string();
        }
        shift(&mut load, from, to, |l| &mut l.primaries);
        shift(&mut load, to, from, |l| &mut l.replicas);
    }
    out
}

/// A draining primary hands its feed over only to a warm replica: where
/// `after` moves a feed off a primary that is still alive and draining to a
/// replica that has not warmed for `warm` ms (or was just placed), the old
/// primary keeps the feed for now and the chosen successor stays first among
/// its replicas, warming; a later call (after `warm`) moves it. A dead
/// primary's feed moves at once: there is nobody left to wait for.
pub fn hold_draining(
    workers: &[LiveWorker],
    before: &Assignment,
    after: &Assignment,
    since: &ReplicaSince,
    now: i64,
    warm: i64,
) -> Assignment {
    let draining: BTreeSet<&str> = workers
        .iter()
        .filter(|w| w.draining)
        .map(|w| w.id.as_str())
        .collect();
    let mut out = after.clone();
    for (feed, placement) in out.iter_mut() {
        let Some(old) = before.get(feed) else {
            continue;
        };
        if old.primary == placement.primary || !draining.contains(old.primary.as_str()) {
            continue;
        }
        let warmed = since
            .get(feed)
            .and_then(|s| s.get(&placement.primary))
            .is_some_and(|t| now - t >= warm)
            && old.replicas.contains(&placement.primary);
        if warmed {
            continue;
        }
        let successor = std::mem::replace(&mut placement.primary, old.primary.clone());
        placement
            .replicas
            .retain(|r| *r != successor && *r != old.primary);
        placement.replicas.insert(0, successor);
    }
    out
}

/// The most and the least loaded workers by `counted` (relative to
/// capacity), when moving one unit from the first to the second brings
/// them closer without reversing them.
fn imbalance<'w>(
    load: &BTreeMap<&'w str, Load>,
    counted: impl Fn(&Load) -> u64,
) -> Option<(&'w str, &'w str)> {
    // a/b vs c/d compared as a·d vs c·b; ties by id.
    let by_load = |(a_id, a): &(&&str, &Load), (b_id, b): &(&&str, &Load)| {
        (counted(a) * b.capacity)
            .cmp(&(counted(b) * a.capacity))
            .then(a_id.cmp(b_id))
    };
    let most = load.iter().max_by(|a, b| by_load(a, b))?;
    let least = load.iter().min_by(|a, b| by_load(a, b))?;
    let (from, f) = most;
    let (to, t) = least;
    // After the move, `from` must still carry at least what `to` does.
    let better = counted(f) > 0 && (counted(f) - 1) * t.capacity >= (counted(t) + 1) * f.capacity;
    (from != to && better).then_some((*from, *to))
}

fn shift(
    load: &mut BTreeMap<&str, Load>,
    from: &str,
    to: &str,
    field: impl Fn(&mut Load) -> &mut u64,
) {
    if let Some(l) = load.get_mut(from) {
        let n = field(l);
        *n = n.saturating_sub(1);
    }
    if let Some(l) = load.get_mut(to) {
        *field(l) += 1;
    }
}

/// Feeds whose primary differs between `old` and `new` (new feeds included):
/// each needs a new fencing epoch.
pub fn primary_changes<'a>(old: &Assignment, new: &'a Assignment) -> Vec<&'a str> {
    new.iter()
        .filter(|(feed, p)| old.get(*feed).is_none_or(|o| o.primary != p.primary))
        .map(|(feed, _)| feed.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(id: &str, replicas: usize) -> DesiredFeed {
        DesiredFeed {
            id: id.into(),
            replicas,
        }
    }

    fn worker(id: &str, capacity: u32, draining: bool) -> LiveWorker {
        LiveWorker {
            id: id.into(),
            capacity,
            draining,
        }
    }

    fn placed(primary: &str, replicas: &[&str]) -> Placement {
        Placement {
            primary: primary.into(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
        }
    }

    struct Case {
        name: &'static str,
        feeds: Vec<DesiredFeed>,
        workers: Vec<LiveWorker>,
        current: Vec<(&'static str, Placement)>,
        expected: Vec<(&'static str, Placement)>,
    }

    #[test]
    fn assignment_table() {
        let cases = vec![
            Case {
                name: "fresh feeds spread over equal workers",
                feeds: vec![feed("a", 1), feed("b", 1)],
                workers: vec![worker("w1", 1, false), worker("w2", 1, false)],
                current: vec![],
                expected: vec![("a", placed("w1", &["w2"])), ("b", placed("w2", &["w1"]))],
            },
            Case {
                name: "a dead primary's feed goes to its replica",
                feeds: vec![feed("a", 1)],
                workers: vec![worker("w2", 1, false), worker("w3", 1, false)],
                current: vec![("a", placed("w1", &["w2"]))],
                expected: vec![("a", placed("w2", &["w3"]))],
            },
            Case {
                name: "a draining primary is replaced by its replica",
                feeds: vec![feed("a", 1)],
                workers: vec![
                    worker("w1", 1, true),
                    worker("w2", 1, false),
                    worker("w3", 1, false),
                ],
                current: vec![("a", placed("w1", &["w2"]))],
                expected: vec![("a", placed("w2", &["w3"]))],
            },
            Case {
                name: "sticky: a new worker takes nothing running",
                feeds: vec![feed("a", 1)],
                workers: vec![
                    worker("w0", 1, false),
                    worker("w1", 1, false),
                    worker("w2", 1, false),
                ],
                current: vec![("a", placed("w1", &["w2"]))],
                expected: vec![("a", placed("w1", &["w2"]))],
            },
            Case {
                name: "no primary left, no replica: a fresh worker",
                feeds: vec![feed("a", 0)],
                workers: vec![worker("w9", 1, false)],
                current: vec![("a", placed("w1", &[]))],
                expected: vec![("a", placed("w9", &[]))],
            },
            Case {
                name: "fewer workers than replicas wanted",
                feeds: vec![feed("a", 3)],
                workers: vec![worker("w1", 1, false), worker("w2", 1, false)],
                current: vec![],
                expected: vec![("a", placed("w1", &["w2"]))],
            },
            Case {
                name: "no eligible worker: nothing assigned",
                feeds: vec![feed("a", 1)],
                workers: vec![worker("w1", 1, true)],
                current: vec![("a", placed("w1", &[]))],
                expected: vec![],
            },
            Case {
                name: "a removed feed disappears",
                feeds: vec![],
                workers: vec![worker("w1", 1, false)],
                current: vec![("a", placed("w1", &[]))],
                expected: vec![],
            },
            Case {
                name: "capacity 2 takes two primaries to one",
                feeds: vec![feed("a", 0), feed("b", 0), feed("c", 0)],
                workers: vec![worker("big", 2, false), worker("small", 1, false)],
                current: vec![],
                // b ties (2/2 against 1/1) and goes by id.
                expected: vec![
                    ("a", placed("big", &[])),
                    ("b", placed("big", &[])),
                    ("c", placed("small", &[])),
                ],
            },
            Case {
                name: "fewer replicas wanted: the first ones stay",
                feeds: vec![feed("a", 1)],
                workers: vec![
                    worker("w1", 1, false),
                    worker("w2", 1, false),
                    worker("w3", 1, false),
                ],
                current: vec![("a", placed("w1", &["w3", "w2"]))],
                expected: vec![("a", placed("w1", &["w3"]))],
            },
        ];
        for case in cases {
            let current: Assignment = case
                .current
                .into_iter()
                .map(|(f, p)| (f.to_string(), p))
                .collect();
            let expected: Assignment = case
                .expected
                .into_iter()
                .map(|(f, p)| (f.to_string(), p))
                .collect();
            assert_eq!(
                assign(&case.feeds, &case.workers, &current),
                expected,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_new_worker_gets_its_share_by_swaps_with_warm_replicas() {
        let feeds: Vec<DesiredFeed> = (0..12).map(|i| feed(&format!("f{i:02}"), 1)).collect();
        let two = vec![worker("w1", 1, false), worker("w2", 1, false)];
        let before = assign(&feeds, &two, &Assignment::new());
        let three = vec![
            worker("w1", 1, false),
            worker("w2", 1, false),
            worker("w3", 1, false),
        ];
        let count = |a: &Assignment, w: &str| {
            (
                a.values().filter(|p| p.primary == w).count(),
                a.values()
                    .filter(|p| p.replicas.iter().any(|r| r == w))
                    .count(),
            )
        };
        // At first w3's replicas are cold: only replicas move to it.
        let mut since = ReplicaSince::new();
        let step = rebalance(&three, &before, &since, 1_000, 5_000);
        assert_eq!(count(&step, "w3"), (0, 4), "replicas first: {step:?}");
        let moved: Vec<&String> = step
            .iter()
            .filter(|(id, p)| before[*id] != **p)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(moved.len(), 4, "as few moves as possible");
        for (id, p) in &step {
            for r in &p.replicas {
                let placed = if before[id].replicas.contains(r) {
                    0
                } else {
                    1_000
                };
                since
                    .entry(id.clone())
                    .or_default()
                    .insert(r.clone(), placed);
            }
        }
        assert_eq!(
            rebalance(&three, &step, &since, 2_000, 5_000),
            step,
            "not warm yet"
        );
        // Warm: primaries swap with their replicas on w3, the old primaries
        // take the replica's place.
        let warm = rebalance(&three, &step, &since, 6_000, 5_000);
        assert_eq!(count(&warm, "w3").0, 4, "{warm:?}");
        for (id, p) in &warm {
            if p.primary == "w3" {
                assert!(p.replicas.contains(&step[id].primary), "{id}: swapped");
            }
        }
        for w in ["w1", "w2", "w3"] {
            assert_eq!(count(&warm, w).0, 4, "{w}: primaries balanced");
        }
    }

    #[test]
    fn a_draining_primary_waits_for_a_warm_replica() {
        let feeds = vec![feed("a", 1)];
        let workers = vec![
            worker("w1", 1, true),
            worker("w2", 1, false),
            worker("w3", 1, false),
        ];
        let before: Assignment = [("a".to_string(), placed("w1", &["w2"]))].into();
        let moved = assign(&feeds, &workers, &before);
        assert_eq!(moved["a"], placed("w2", &["w3"]));
        let since =
            |t: i64| -> ReplicaSince { [("a".to_string(), [("w2".to_string(), t)].into())].into() };
        // w2 became a replica 1 s ago: w1 keeps the feed, w2 first in line.
        let held = hold_draining(&workers, &before, &moved, &since(9_000), 10_000, 5_000);
        assert_eq!(held["a"], placed("w1", &["w2", "w3"]));
        // Warm: the move goes ahead.
        let go = hold_draining(&workers, &before, &moved, &since(1_000), 10_000, 5_000);
        assert_eq!(go["a"], placed("w2", &["w3"]));
        // A dead primary's feed moves at once.
        let alive = vec![worker("w2", 1, false), worker("w3", 1, false)];
        let dead = hold_draining(&alive, &before, &moved, &since(9_000), 10_000, 5_000);
        assert_eq!(dead["a"], placed("w2", &["w3"]));
        // Next round, assign promotes the first eligible replica: w2.
        assert_eq!(assign(&feeds, &workers, &held)["a"].primary, "w2");
    }

    #[test]
    fn primary_changes_name_new_and_moved_feeds() {
        let old: Assignment = [
            ("a".to_string(), placed("w1", &["w2"])),
            ("b".to_string(), placed("w2", &[])),
        ]
        .into_iter()
        .collect();
        let new: Assignment = [
            ("a".to_string(), placed("w1", &["w3"])),
            ("b".to_string(), placed("w1", &[])),
            ("c".to_string(), placed("w2", &[])),
        ]
        .into_iter()
        .collect();
        assert_eq!(primary_changes(&old, &new), ["b", "c"]);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn inputs() -> impl Strategy<Value = (Vec<DesiredFeed>, Vec<LiveWorker>, Assignment)> {
            let workers = prop::collection::vec((1u32..5, prop::bool::weighted(0.2)), 0..7);
            let feeds = prop::collection::vec(0usize..4, 0..40);
            (
                workers,
                feeds,
                prop::collection::vec((0usize..9, prop::collection::vec(0usize..9, 0..4)), 0..40),
            )
                .prop_map(|(workers, feeds, current)| {
                    let workers: Vec<LiveWorker> = workers
                        .into_iter()
                        .enumerate()
                        .map(|(i, (capacity, draining))| LiveWorker {
                            id: format!("w{i}"),
                            capacity,
                            draining,
                        })
                        .collect();
                    let feeds: Vec<DesiredFeed> = feeds
                        .into_iter()
                        .enumerate()
                        .map(|(i, replicas)| DesiredFeed {
                            id: format!("f{i:02}"),
                            replicas,
                        })
                        .collect();
                    // Current placements may name workers that are gone (w7, w8).
                    let current: Assignment = current
                        .into_iter()
                        .enumerate()
                        .map(|(i, (primary, replicas))| {
                            (
                                format!("f{i:02}"),
                                Placement {
                                    primary: format!("w{primary}"),
                                    replicas: replicas
                                        .into_iter()
                                        .map(|r| format!("w{r}"))
                                        .collect(),
                                },
                            )
                        })
                        .collect();
                    (feeds, workers, current)
                })
        }

        proptest! {
            #[test]
            fn invariants_hold((feeds, workers, current) in inputs()) {
                let eligible: BTreeSet<&str> = workers.iter().filter(|w| !w.draining).map(|w| w.id.as_str()).collect();
                let new = assign(&feeds, &workers, &current);
                for feed in &feeds {
                    let Some(p) = new.get(&feed.id) else {
                        prop_assert!(eligible.is_empty(), "{} unassigned with workers left", feed.id);
                        continue;
                    };
                    prop_assert!(eligible.contains(p.primary.as_str()), "primary on an ineligible worker");
                    let distinct: BTreeSet<&str> = p.replicas.iter().map(String::as_str).collect();
                    prop_assert_eq!(distinct.len(), p.replicas.len(), "replicas distinct");
                    prop_assert!(!distinct.contains(p.primary.as_str()), "replica on the primary");
                    prop_assert!(distinct.iter().all(|r| eligible.contains(r)), "replicas eligible");
                    prop_assert_eq!(p.replicas.len(), feed.replicas.min(eligible.len() - 1));
                    if let Some(old) = current.get(&feed.id) {
                        if eligible.contains(old.primary.as_str()) {
                            prop_assert_eq!(&p.primary, &old.primary, "sticky primary");
                        } else if old.replicas.iter().any(|r| eligible.contains(r.as_str())) {
                            prop_assert!(old.replicas.contains(&p.primary), "promoted from a replica");
                        }
                    }
                }
                prop_assert!(new.keys().all(|f| feeds.iter().any(|d| &d.id == f)), "only desired feeds");
                prop_assert_eq!(assign(&feeds, &workers, &new), new.clone(), "a fixed point");
            }

            #[test]
            fn rebalancing_keeps_the_rules_and_converges((feeds, workers, current) in inputs()) {
                let eligible: BTreeSet<&str> = workers.iter().filter(|w| !w.draining).map(|w| w.id.as_str()).collect();
                let mut state = assign(&feeds, &workers, &current);
                // Every replica warm: primaries may move too.
                let since = ReplicaSince::new();
                let mut rounds = 0;
                loop {
                    let next = rebalance(&workers, &state, &since, 0, 0);
                    for (id, p) in &next {
                        let old = &state[id];
                        let distinct: BTreeSet<&str> = p.replicas.iter().map(String::as_str).collect();
                        prop_assert_eq!(distinct.len(), p.replicas.len(), "replicas distinct");
                        prop_assert!(!distinct.contains(p.primary.as_str()), "replica on the primary");
                        prop_assert!(eligible.contains(p.primary.as_str()), "primary eligible");
                        prop_assert_eq!(p.replicas.len(), old.replicas.len(), "as many replicas");
                        if p.primary != old.primary {
                            prop_assert!(old.replicas.contains(&p.primary), "a primary moves only to its replica");
                            prop_assert!(p.replicas.contains(&old.primary), "and the old primary takes its place");
                        }
                    }
                    prop_assert_eq!(next.keys().collect::<Vec<_>>(), state.keys().collect::<Vec<_>>());
                    if next == state {
                        break;
                    }
                    state = next;
                    rounds += 1;
                    prop_assert!(rounds < 50, "rebalancing converges");
                }
            }

            #[test]
            fn fresh_assignments_are_balanced_by_capacity(n in 0usize..60, caps in prop::collection::vec(1u32..4, 1..6)) {
                let workers: Vec<LiveWorker> = caps.iter().enumerate().map(|(i, &capacity)| LiveWorker { id: format!("w{i}"), capacity, draining: false }).collect();
                let feeds: Vec<DesiredFeed> = (0..n).map(|i| DesiredFeed { id: format!("f{i:02}"), replicas: 0 }).collect();
                let new = assign(&feeds, &workers, &Assignment::new());
                let total: u64 = caps.iter().map(|&c| u64::from(c)).sum();
                for w in &workers {
                    let held = new.values().filter(|p| p.primary == w.id).count() as f64;
                    let share = n as f64 * f64::from(w.capacity) / total as f64;
                    prop_assert!((held - share).abs() <= f64::from(w.capacity) + 1.0, "{} holds {held}, its share is {share:.1}", w.id);
                }
            }
        }
    }
}

//! Exactly-once on Apache Kafka, where it is made: a stage killed with an open
//! transaction leaves nothing a read_committed reader can see; stages and sinks
//! in their consumer groups share partitions and take over from a killed
//! instance; a broker killed with SIGKILL and started again on the same data
//! dir is reconnected to by every stage and the sink. Each ends with the
//! oracle's 1m and 5m candles exact, in the topics and in MongoDB.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::oracle::*;
use common::pipeline::*;
use common::{Proc, Record};
use tickfetch::config::Config;
use tickfetch::model::{Candle, Interval, KIND_HEADER, KIND_WATERMARK};

/// How many times each (window, revision) of a candle topic appears.
fn copies(records: &[Record]) -> BTreeMap<(String, i64, u32), usize> {
    let mut copies = BTreeMap::new();
    for record in records {
        if record
            .headers
            .iter()
            .any(|(k, v)| k == KIND_HEADER && v == KIND_WATERMARK)
        {
            continue;
        }
        let candle: Candle = serde_json::from_slice(&record.payload).expect("a candle");
        *copies
            .entry((candle.key(), candle.open_time, candle.revision))
            .or_insert(0) += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_killed_mid_transaction_leaves_no_twin_for_read_committed_readers() {
    let Some(dir) = oracle_dir("a_stage_killed_mid_transaction_leaves_no_twin") else {
        return;
    };
    let mut config = pipeline_config("aborted");
    // One long transaction: the stage is killed while it is open.
    config.rollup.commit_interval_ms = 20_000;
    let mut first = spawn_stage(&config, "1s", 0);
    wait_ready(&first, 2);
    publish_oracle(&config, &dir.join(TRADES_CSV), 1, |_| {}).await;
    let topic = config.topics.candles(Interval::S1);
    let started = Instant::now();
    while common::read_all_with(&config.kafka, &topic, 2, "read_uncommitted")
        .await
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the 1s stage produced nothing; log:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    let produced = common::read_all_with(&config.kafka, &topic, 2, "read_uncommitted").await;
    let visible = common::read_all(&config.kafka, &topic, 2).await;
    assert!(
        !produced.is_empty() && visible.is_empty(),
        "the killed stage's open transaction held {} candles, {} of them visible to read_committed",
        produced.len(),
        visible.len()
    );

    // The restarted stage aborts that transaction (init_transactions with the
    // same transactional id) and does the work again; the levels above run too.
    config.rollup.commit_interval_ms = 100;
    let mut stages = vec![spawn_stage(&config, "1s", 1)];
    stages.extend(STAGES[1..].iter().map(|s| spawn_stage(&config, s, 0)));
    let (m1, m5) = read_downstream(&config, Duration::from_secs(240)).await;
    assert_oracle_candles(&dir, &m1, &m5);

    let committed = copies(&common::read_all(&config.kafka, &topic, 2).await);
    let twins: Vec<_> = committed.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twins.is_empty(),
        "{} candles reached a read_committed reader twice, e.g. {:?}",
        twins.len(),
        twins.first()
    );
    // The aborted copies are in the log all the same: only the isolation level
    // keeps them out.
    let everything =
        copies(&common::read_all_with(&config.kafka, &topic, 2, "read_uncommitted").await);
    let aborted: usize = everything.values().map(|n| n - 1).sum();
    let open_candles: usize = copies(&produced).values().sum();
    assert!(
        aborted >= open_candles,
        "the aborted transaction's {open_candles} candles are in the log ({aborted} extra copies found)"
    );
    drop(stages);
}

/// One stage instance in the stage's consumer group.
fn spawn_group_stage(config: &Config, stage: &str, name: &str) -> Proc {
    Proc::spawn(
        config,
        "tickfetch-rollup",
        &format!("rollup-{stage}-{name}"),
        &["--stage", stage, "--snapshot-every", "5"],
    )
}

fn assignments(stage: &Proc) -> usize {
    stage.log_text().matches("partition assigned").count()
}

/// Waits until `stage` has logged `count` partition assignments.
fn wait_assignments(stage: &Proc, count: usize, within: Duration) {
    let started = Instant::now();
    while assignments(stage) < count {
        assert!(
            started.elapsed() < within,
            "{} took {} partitions, not {count}, within {within:?}; log:\n{}",
            stage.name,
            assignments(stage),
            stage.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_and_sinks_in_consumer_groups_share_partitions_and_take_over() {
    let Some(dir) = oracle_dir("stages_and_sinks_in_consumer_groups") else {
        return;
    };
    let config = pipeline_config("group");
    let session = Duration::from_millis(config.rollup.session_timeout_ms);
    let mut first: Vec<Proc> = STAGES
        .iter()
        .map(|s| spawn_group_stage(&config, s, "a"))
        .collect();
    let second: Vec<Proc> = STAGES
        .iter()
        .map(|s| spawn_group_stage(&config, s, "b"))
        .collect();
    let mut sink_a = Proc::spawn(&config, "tickfetch-sink", "sink-a", &[]);
    let _sink_b = Proc::spawn(&config, "tickfetch-sink", "sink-b", &[]);
    // Both instances of every stage hold a partition: the group shares them.
    for stage in first.iter().chain(&second) {
        wait_assignments(stage, 1, Duration::from_secs(90));
    }

    let mut generation = 0;
    publish_oracle(&config, &dir.join(TRADES_CSV), 4, |part| match part {
        0 => {
            // kill -9 one instance of every stage and one sink: the others take
            // their partitions once the group coordinator misses their
            // heartbeats (the session timeout).
            let before: Vec<usize> = second.iter().map(assignments).collect();
            for stage in &mut first {
                stage.kill9();
            }
            sink_a.kill9();
            for (stage, before) in second.iter().zip(before) {
                wait_assignments(stage, before + 2, session + Duration::from_secs(30));
            }
        }
        1 => {
            // Started again, they rejoin and the partitions are shared again.
            generation += 1;
            for (stage, name) in first.iter_mut().zip(STAGES) {
                *stage = spawn_group_stage(&config, name, &format!("a{generation}"));
            }
            sink_a = Proc::spawn(&config, "tickfetch-sink", "sink-a1", &[]);
            for stage in &first {
                wait_assignments(stage, 1, Duration::from_secs(90));
            }
        }
        _ => {}
    })
    .await;

    let (m1, m5) = read_downstream(&config, Duration::from_secs(240)).await;
    assert_oracle_candles(&dir, &m1, &m5);
    assert_stored(&config, &m1, &m5).await;
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_run_leaves_mongodb_exact() {
    let Some(dir) = oracle_dir("a_broker_killed_and_restarted_mid_run") else {
        return;
    };
    // A broker of this test's own: the shared one serves the other tests.
    let mut config = pipeline_config("broker-restart");
    let own = common::OwnStack::start(&config);
    let env = own.env.clone();
    config.kafka.bootstrap = env.kafka_bootstrap.clone();

    let stages: Vec<Proc> = STAGES.iter().map(|s| spawn_stage(&config, s, 0)).collect();
    let _sink = Proc::spawn(&config, "tickfetch-sink", "sink", &["--all-partitions"]);
    for stage in &stages {
        wait_ready(stage, 2);
    }
    let mut restarted = None;
    publish_oracle(&config, &dir.join(TRADES_CSV), 3, |part| {
        if part == 0 {
            own.kill_broker();
            std::thread::sleep(Duration::from_secs(3));
            let again =
                common::OwnStack::up(&own.dir).expect("the broker starts again on its data dir");
            restarted = Some(again);
        }
    })
    .await;
    assert_eq!(
        restarted.map(|e| e.kafka_bootstrap),
        Some(env.kafka_bootstrap.clone()),
        "the broker came back on the same address"
    );

    let (m1, m5) = read_downstream(&config, Duration::from_secs(300)).await;
    assert_oracle_candles(&dir, &m1, &m5);
    assert_stored(&config, &m1, &m5).await;
    drop(stages);
}

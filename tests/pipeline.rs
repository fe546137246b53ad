//! The rollup stages as separate processes on the real broker: the oracle's
//! trades go into the trades topic, the four `tickfetch-rollup` stages and the
//! sink run, and the candles read back from the 1m and 5m topics and from
//! MongoDB equal Binance's klines. The fault test kills stages with SIGKILL at
//! random moments and pauses one past its session timeout while a replacement
//! takes over; the result must still be exact, and the paused one fenced.

mod common;

use std::time::{Duration, Instant};

use common::oracle::*;
use common::pipeline::*;
use common::Proc;
use rand::Rng;
use tickfetch::coord::epoch::Epoch;
use tickfetch::ingest::publisher::TradePublisher;
use tickfetch::model::{Exchange, Interval};
use tickfetch::wire::EPOCH_HEADER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_through_kafka_stages_and_sink() {
    let Some(dir) = oracle_dir("oracle_through_kafka_stages_and_sink") else {
        return;
    };
    let config = pipeline_config("pipeline");
    // Two instances of every stage, one per input partition.
    let mut stages = Vec::new();
    for stage in STAGES {
        for p in 0..config.topics.partitions {
            let partition = p.to_string();
            stages.push(Proc::spawn(
                &config,
                "tickfetch-rollup",
                &format!("rollup-{stage}-p{p}"),
                &["--stage", stage, "--partitions", &partition],
            ));
        }
    }
    let _sink = Proc::spawn(&config, "tickfetch-sink", "sink", &["--all-partitions"]);
    publish_oracle(&config, &dir.join(TRADES_CSV), 1, |_| {}).await;

    let (m1, m5) = read_downstream(&config, Duration::from_secs(180)).await;
    assert_oracle_candles(&dir, &m1, &m5);

    let stored_1m = read_mongo(&config, Interval::M1, KLINES_1M).await;
    let stored_5m = read_mongo(&config, Interval::M5, KLINES_5M).await;
    assert_eq!(
        stored_1m, m1,
        "MongoDB holds exactly the 1m topic's candles"
    );
    assert_eq!(
        stored_5m, m5,
        "MongoDB holds exactly the 5m topic's candles"
    );

    // Caught up, every stage and the sink show no lag, though their
    // transactional inputs end with a commit marker no reader gets past.
    let started = Instant::now();
    let lags = loop {
        let probe = config.clone();
        let lags = tokio::task::spawn_blocking(move || tickfetch::lag::stage_lags(&probe))
            .await
            .expect("lag thread")
            .expect("lags");
        if lags.iter().all(|l| l.lag() == 0) || started.elapsed() > Duration::from_secs(60) {
            break lags;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        lags.iter().all(|l| l.lag() == 0 && l.end > 0),
        "no lag once caught up: {lags:?}"
    );

    // Every candle carries the fencing epoch its stage partition's owner
    // claimed in etcd, and MongoDB keeps it with the document.
    for interval in [Interval::M1, Interval::M5] {
        let records = common::read_all(&config.kafka, &config.topics.candles(interval), 2).await;
        let epochs: std::collections::BTreeSet<u64> = records
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == EPOCH_HEADER)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .collect();
        // One symbol: one input partition, one owner, one epoch.
        assert!(
            !epochs.contains(&0) && epochs.len() == 1,
            "{interval}: the owner's epoch on every record: {epochs:?}"
        );
        let client = mongodb::Client::with_uri_str(&config.mongodb.uri)
            .await
            .expect("mongo");
        let documents: Vec<mongodb::bson::Document> = futures::TryStreamExt::try_collect(
            client
                .database(&config.mongodb.database)
                .collection::<mongodb::bson::Document>(&format!("candles_{interval}"))
                .find(mongodb::bson::doc! {})
                .await
                .expect("find"),
        )
        .await
        .expect("collect");
        assert!(
            documents.iter().all(|d| d
                .get_i64("epoch")
                .is_ok_and(|e| epochs.contains(&(e as u64)))),
            "{interval}: every document keeps its writer's epoch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_paused_zombie_leave_the_candles_exact() {
    let Some(dir) = oracle_dir("kill_9_and_a_paused_zombie_leave_the_candles_exact") else {
        return;
    };
    let config = pipeline_config("chaos");
    let mut generation = 0;
    let mut stages: Vec<Proc> = STAGES
        .iter()
        .map(|s| spawn_stage(&config, s, generation))
        .collect();
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let zombie = 0; // the 1s stage
    let mut replacement = None;

    // Trades arrive in 12 parts. After each of the first 10, two stages are
    // killed with SIGKILL at random moments and restarted at once. After the
    // 11th, the 1s stage is paused with SIGSTOP while a replacement takes its
    // partitions, past the session timeout, then resumed: the 12th part is
    // there for the zombie to trip over.
    publish_oracle(&config, &dir.join(TRADES_CSV), 12, |part| {
        if part < 10 {
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(rng.gen_range(50..600)));
                let victim = rng.gen_range(0..STAGES.len());
                stages[victim].kill9();
                generation += 1;
                stages[victim] = spawn_stage(&config, STAGES[victim], generation);
                kills += 1;
            }
        } else if part == 10 {
            wait_ready(&stages[zombie], 2);
            nix::sys::signal::kill(stages[zombie].pid(), nix::sys::signal::Signal::SIGSTOP)
                .expect("SIGSTOP");
            generation += 1;
            let fresh = spawn_stage(&config, STAGES[zombie], generation);
            wait_ready(&fresh, 2);
            replacement = Some(fresh);
            std::thread::sleep(Duration::from_millis(
                config.rollup.session_timeout_ms + 1_000,
            ));
            nix::sys::signal::kill(stages[zombie].pid(), nix::sys::signal::Signal::SIGCONT)
                .expect("SIGCONT");
        }
    })
    .await;
    assert!(kills >= 20, "{kills} kills");

    let woke = Instant::now();
    let status = loop {
        if let Some(status) = stages[zombie].child.try_wait().expect("wait") {
            break Some(status);
        }
        if woke.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let zombie_log = stages[zombie].log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the resumed zombie stops with an error; log:\n{zombie_log}"
    );
    assert!(
        zombie_log.contains("producer fenced") || zombie_log.contains("epoch superseded"),
        "the zombie was fenced; log:\n{zombie_log}"
    );
    stages[zombie] = replacement.expect("replacement started");

    let (m1, m5) = read_downstream(&config, Duration::from_secs(240)).await;
    assert_oracle_candles(&dir, &m1, &m5);
    drop(stages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_zombie_stage_stops_on_quiet_input_once_etcd_shows_a_newer_owner() {
    // No input at all: no commit would ever find the zombie's producer fenced.
    let config = pipeline_config("zombie-quiet");
    let mut zombie = spawn_stage(&config, "1s", 0);
    wait_ready(&zombie, 2);
    nix::sys::signal::kill(zombie.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let replacement = spawn_stage(&config, "1s", 1);
    wait_ready(&replacement, 2);
    nix::sys::signal::kill(zombie.pid(), nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let woke = Instant::now();
    let status = loop {
        if let Some(status) = zombie.child.try_wait().expect("wait") {
            break Some(status);
        }
        if woke.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = zombie.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the resumed zombie stops; log:\n{log}"
    );
    assert!(
        log.contains("epoch superseded"),
        "it learned of its successor from etcd; log:\n{log}"
    );
    eprintln!(
        "zombie stage: stopped {:.2} s after it was resumed, on quiet input",
        woke.elapsed().as_secs_f64()
    );
    let replacement_log = replacement.log_text();
    assert!(
        !replacement_log.contains("epoch superseded"),
        "the replacement keeps its partitions; log:\n{replacement_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_primary_s_late_trades_and_watermarks_change_no_candle() {
    use rust_decimal::Decimal;
    let config = pipeline_config("zombie-trades");
    let stage = spawn_stage(&config, "1s", 0);
    let base = 1_699_999_800_000; // a 5m boundary
    let trade = |id: u64, offset: i64, price: i64| test_trade("ZOMBUSDT", base, id, offset, price);
    let (new, old) = (Epoch(10), Epoch(7));
    let mut publisher = TradePublisher::connect(&config).await.expect("publisher");
    publisher.send_trade(&trade(1, 100, 10), new).expect("send");
    // The old primary, paused and resumed, writes after its successor: a
    // trade the successor never had (it would raise the first second's
    // high) and a watermark a minute ahead (it would close every window).
    publisher
        .send_trade(&trade(99, 300, 50), old)
        .expect("send");
    publisher
        .send_watermark(Exchange::Binance, "ZOMBUSDT", base + 60_000, old)
        .expect("watermark");
    publisher
        .send_trade(&trade(2, 1_500, 11), new)
        .expect("send");
    publisher
        .send_trade(&trade(3, 5_000, 12), new)
        .expect("send");
    publisher
        .send_watermark(
            Exchange::Binance,
            "ZOMBUSDT",
            base + 6_000 + config.rollup.grace_ms,
            new,
        )
        .expect("watermark");
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(30)))
        .await
        .expect("flush thread")
        .expect("flush");

    let first = window_at(&config, Interval::S1, base + 200).await;
    assert_eq!(
        (first.high, first.trade_count, first.revision),
        (Decimal::new(10, 0), 1, 0),
        "the fenced writer's trade is not in the first second"
    );
    // Had its watermark counted, the window at +5 s would have closed
    // before trade 3 came, and trade 3 would be a correction.
    let later = window_at(&config, Interval::S1, base + 5_000).await;
    assert_eq!(
        (later.high, later.trade_count, later.revision),
        (Decimal::new(12, 0), 1, 0),
        "the fenced writer's watermark closed nothing"
    );
    assert!(
        stage.log_text().contains("partition assigned"),
        "{}",
        stage.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_trade_corrects_its_candle_and_every_parent() {
    use rust_decimal::Decimal;
    let config = pipeline_config("late");
    let _stages: Vec<Proc> = STAGES.iter().map(|s| spawn_stage(&config, s, 0)).collect();
    let base = 1_699_999_800_000; // a 5m boundary
    let trade = |id: u64, offset: i64, price: i64| test_trade("LATEUSDT", base, id, offset, price);
    let mut publisher = TradePublisher::connect(&config).await.expect("publisher");
    publisher
        .send_trade(&trade(1, 100, 10), Epoch::NONE)
        .expect("send");
    publisher
        .send_trade(&trade(2, 1_500, 11), Epoch::NONE)
        .expect("send");
    // Close the whole 5m window at every level.
    publisher
        .send_watermark(
            Exchange::Binance,
            "LATEUSDT",
            base + 300_000 + config.rollup.grace_ms,
            Epoch::NONE,
        )
        .expect("watermark");
    let publisher = tokio::task::spawn_blocking(move || {
        publisher.flush(Duration::from_secs(30)).map(|()| publisher)
    })
    .await
    .expect("flush thread")
    .expect("flush");

    for interval in Interval::ALL {
        let first = window_at(&config, interval, base + 200).await;
        assert_eq!(
            (first.revision, first.high),
            (
                0,
                Decimal::new(if interval == Interval::S1 { 10 } else { 11 }, 0)
            ),
            "{interval}"
        );
    }

    // Trade 3 belongs to the first second, which closed long ago.
    let mut publisher = publisher;
    publisher
        .send_trade(&trade(3, 200, 20), Epoch::NONE)
        .expect("send");
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(30)))
        .await
        .expect("flush thread")
        .expect("flush");
    for interval in Interval::ALL {
        let started = Instant::now();
        let corrected = loop {
            let c = window_at(&config, interval, base + 200).await;
            if c.revision > 0 || started.elapsed() > Duration::from_secs(60) {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(
            corrected.revision, 1,
            "{interval}: revision 1 of the corrected window"
        );
        assert_eq!(
            corrected.high,
            Decimal::new(20, 0),
            "{interval}: the late trade is in it"
        );
        let expected_count = if interval == Interval::S1 { 2 } else { 3 };
        assert_eq!(corrected.trade_count, expected_count, "{interval}");
    }
}

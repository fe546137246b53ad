//! The backlog phase: the 1s stage, its baselines and the peers on a copy of
//! the first run's trades.

use super::*;

/// Reads every partition of `topic` from its start to its end
/// (read_committed), handing each record to `each`. An empty partition ends
/// at once; a read error stops with it.
pub(crate) fn read_to_end(
    config: &Config,
    topic: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) {
    let consumer = common::reader_from_start(
        config,
        "bench-pipeline-read",
        &[topic.to_string()],
        &[("enable.partition.eof", "true")],
    );
    let mut at_end = HashSet::new();
    while at_end.len() < config.topics.partitions as usize {
        let Some(message) = consumer.poll(Duration::from_secs(10)) else {
            panic!("reading {topic}: nothing for 10 s before its end");
        };
        match message {
            Ok(m) => each(&m),
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                at_end.insert(p);
            }
            Err(e) => panic!("reading {topic}: {e}"),
        }
    }
}

/// Copies every record of `from` to `to`, partition for partition, with its
/// key, headers and payload; returns (records, trades).
pub(crate) fn copy_topic(config: &Config, from: &str, to: &str) -> (i64, u64) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = tickfetch::kafka::client_config(
        &config.kafka,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
        ],
    )
    .expect("copy producer config")
    .create()
    .expect("copy producer");
    let (mut records, mut trades) = (0i64, 0u64);
    read_to_end(config, from, |message| {
        if matches!(
            Envelope::of(message).decode::<Trade>(),
            Ok(Received::Data(_))
        ) {
            trades += 1;
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(to).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.detach());
        }
        tickfetch::wire::send_waiting(&producer, record).expect("copy produce");
        records += 1;
    });
    producer
        .flush(Duration::from_secs(120))
        .expect("copy flush");
    (records, trades)
}

/// Per (interval, key, open time), the candles on `topic` (highest revision),
/// read to the end.
pub(crate) fn read_candles(
    config: &Config,
    topic: &str,
) -> HashMap<(Interval, String, Millis), Candle> {
    let mut out: HashMap<(Interval, String, Millis), Candle> = HashMap::new();
    read_to_end(config, topic, |message| {
        let Some(Ok(candle)) = message.payload().map(serde_json::from_slice::<Candle>) else {
            return;
        };
        let key = (candle.interval, candle.key(), candle.open_time);
        if out
            .get(&key)
            .is_none_or(|held| held.revision < candle.revision)
        {
            out.insert(key, candle);
        }
    });
    out
}

/// Polls a process's CPU ticks and peak RSS until it exits; the last values.
pub(crate) struct Sampler {
    pub(crate) last: Arc<Mutex<(u64, u64)>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    pub(crate) fn start(pid: i32) -> Sampler {
        let last = Arc::new(Mutex::new((0, 0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (last, stop) = (last.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some((ticks, hwm)) = proc_usage(pid) else {
                        break;
                    };
                    // An exited process not yet reaped has no VmHWM.
                    let mut held = last.lock().expect("sampler");
                    *held = (ticks.max(held.0), hwm.max(held.1));
                    drop(held);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Sampler { last, stop, thread }
    }

    /// (CPU seconds, peak RSS in MB).
    pub(crate) fn finish(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let (ticks, hwm) = *self.last.lock().expect("sampler");
        (ticks as f64 / clock_ticks(), hwm as f64 / 1024.0)
    }
}

/// Compares `got` (a peer's candles, or ours) with the offline ones of the
/// same windows (quiet candles after a feed's last trade, which only the
/// live watermarks make, are left out); returns (compared, differing,
/// windows with trades not emitted), and the first differences.
pub(crate) fn compare(
    got: &HashMap<(Interval, String, Millis), Candle>,
    want: &HashMap<(Interval, String, Millis), Candle>,
    intervals: &[Interval],
) -> (usize, usize, usize, Vec<String>) {
    let mut last_built: HashMap<(Interval, &str), Millis> = HashMap::new();
    for (interval, key, open) in want.keys() {
        let last = last_built.entry((*interval, key.as_str())).or_insert(*open);
        *last = (*last).max(*open);
    }
    let (mut compared, mut differing, mut samples) = (0, 0, Vec::new());
    for (key, candle) in got {
        if !intervals.contains(&key.0) {
            continue;
        }
        let after_last = last_built
            .get(&(key.0, key.1.as_str()))
            .is_none_or(|last| key.2 > *last);
        if after_last && candle.status == CandleStatus::Quiet {
            continue;
        }
        compared += 1;
        match want.get(key) {
            Some(expected) if expected == candle => {}
            expected => {
                differing += 1;
                if samples.len() < 3 {
                    samples.push(format!("{key:?}: got {candle:?}, offline {expected:?}"));
                }
            }
        }
    }
    let not_emitted = want
        .iter()
        .filter(|(key, c)| {
            intervals.contains(&key.0)
                && c.status == CandleStatus::Complete
                && !got.contains_key(key)
        })
        .count();
    (compared, differing, not_emitted, samples)
}

/// The engine's offline candles (1s and 1m) of the trades on `topic`.
pub(crate) fn offline_of_topic(
    config: &Config,
    topic: &str,
) -> HashMap<(Interval, String, Millis), Candle> {
    let mut seen = Seen::default();
    read_to_end(config, topic, |message| {
        if let Ok(Received::Data(trade)) = Envelope::of(message).decode::<Trade>() {
            seen.trades.entry(trade.key()).or_default().push(trade);
        }
    });
    offline(config, &seen)
        .into_iter()
        .filter(|(interval, _)| matches!(interval, Interval::S1 | Interval::M1))
        .flat_map(|(interval, candles)| {
            candles
                .into_iter()
                .map(move |((key, open), c)| ((interval, key, open), c))
        })
        .collect()
}

/// tickfetch's 1s stage on the backlog, until it has committed all of it.
pub(crate) async fn our_stage(
    config: &Config,
    dir: &Path,
    records: i64,
    trades: u64,
) -> (BacklogRun, PathBuf) {
    let config_path = write_config(config, dir);
    let started = Instant::now();
    let guarantee = match config.rollup.guarantee {
        Guarantee::ExactlyOnce => "exactly-once",
        Guarantee::AtLeastOnce => "at-least-once",
    };
    let stage = Proc::start(
        &format!("backlog-rollup-1s-{guarantee}"),
        env!("CARGO_BIN_EXE_tickfetch-rollup"),
        &["--stage", "1s", "--partitions", "all"],
        &config_path,
        dir,
    );
    let sampler = Sampler::start(stage.pid());
    let group = format!("{}.{}", config.rollup.group_prefix, Interval::S1);
    let input = config.topics.trades();
    let mut first_commit: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (c, g, i) = (config.clone(), group.clone(), input.clone());
        let done = tokio::task::spawn_blocking(move || common::committed(&c, &g, &i))
            .await
            .expect("probe");
        if done > 0 && first_commit.is_none() {
            first_commit = Some(Instant::now());
        }
        // The last commit may leave one offset for its own marker.
        if done >= records || Instant::now() > deadline {
            break;
        }
    }
    let seconds_from_start = started.elapsed().as_secs_f64();
    let seconds_working = first_commit
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(seconds_from_start);
    let (cpu_seconds, peak_rss_mb) = sampler.finish();
    drop(stage);
    (
        BacklogRun {
            system: format!("tickfetch 1s stage ({guarantee})"),
            trades,
            seconds_from_start,
            seconds_working,
            trades_per_second: trades as f64 / seconds_from_start,
            cpu_seconds,
            trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
            peak_rss_mb,
            note: "time from process start (includes start-up and state restore); `seconds_working` from its first commit".into(),
            ..BacklogRun::default()
        },
        config_path,
    )
}

/// The 1s stage at-least-once on a copy of the backlog with topics, state
/// and a group of its own; its candles are compared too.
pub(crate) async fn at_least_once(
    config: &Config,
    source: &str,
    dir: &Path,
    want: &HashMap<(Interval, String, Millis), Candle>,
    errors: &mut Vec<String>,
) -> BacklogRun {
    let mut alo = base_config(&format!("{}-alo", config.topics.prefix));
    alo.rollup.guarantee = Guarantee::AtLeastOnce;
    let (records, trades) = copy_backlog(&alo, source).await;
    let (mut run, _) = our_stage(&alo, &dir.join("alo"), records, trades).await;
    let topics = vec![alo.topics.candles(Interval::S1)];
    check_backlog_candles(&alo, topics, want, &[Interval::S1], &mut run, errors).await;
    remove_prefix(&alo).await;
    run
}

/// Reads the candles of `topics`, compares them with `want` over
/// `intervals` and writes the counts into `run` (the first differences into
/// `errors`); returns how many candles were read.
pub(crate) async fn check_backlog_candles(
    config: &Config,
    topics: Vec<String>,
    want: &HashMap<(Interval, String, Millis), Candle>,
    intervals: &[Interval],
    run: &mut BacklogRun,
    errors: &mut Vec<String>,
) -> usize {
    let mut got = HashMap::new();
    for topic in topics {
        let c = config.clone();
        got.extend(
            tokio::task::spawn_blocking(move || read_candles(&c, &topic))
                .await
                .expect("read"),
        );
    }
    let (compared, differing, not_emitted, samples) = compare(&got, want, intervals);
    run.candles_compared = compared;
    run.candles_differing = differing;
    run.candles_not_emitted = not_emitted;
    errors.extend(samples);
    got.len()
}

/// The floor on the backlog: a raw consume → produce passthrough with the
/// exactly-once stage's client settings, producers per partition and
/// commit cadence, no parsing, writing one record in `stride` (as many as
/// the stage wrote), run in this process (its CPU is this process's over
/// the run: the benchmark does nothing else meanwhile).
pub(crate) async fn floor(config: &Config, records: i64, trades: u64, stride: u64) -> BacklogRun {
    let output = format!("{}.passthrough", config.topics.prefix);
    common::plain_topic(config, &output, config.topics.partitions).await;
    let me = std::process::id() as i32;
    let before = proc_usage(me).map_or(0, |(ticks, _)| ticks);
    let floor = {
        let (c, out) = (config.clone(), output.clone());
        tokio::task::spawn_blocking(move || {
            common::passthrough(
                &c,
                &c.topics.trades(),
                &out,
                Guarantee::ExactlyOnce,
                records as u64,
                stride,
            )
        })
        .await
        .expect("passthrough")
    };
    let cpu_seconds = proc_usage(me)
        .map_or(0, |(ticks, _)| ticks)
        .saturating_sub(before) as f64
        / clock_ticks();
    BacklogRun {
        system: format!("floor: passthrough, exactly-once, 1 record in {stride} forwarded"),
        trades,
        seconds_from_start: floor.seconds,
        seconds_working: floor.seconds,
        trades_per_second: trades as f64 / floor.seconds,
        cpu_seconds,
        trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
        peak_rss_mb: 0.0,
        note: format!(
            "the stage's consumer and producer settings, a transactional producer per partition, commits every {} ms, no parsing; in the benchmark's process (its CPU over the run; no RSS of its own); {} commits, p50 {:.1} ms, p99 {:.1} ms",
            config.rollup.commit_interval_ms,
            floor.commits,
            floor.commit_p50_micros as f64 / 1e3,
            floor.commit_p99_micros as f64 / 1e3
        ),
        ..BacklogRun::default()
    }
}

/// A peer that reads the backlog into 1s and 1m candle topics of its own.
pub(crate) struct Peer {
    /// `kafka-streams` or `quix`, as in `BENCH_PEERS`.
    pub(crate) name: &'static str,
    pub(crate) system: &'static str,
    pub(crate) note: &'static str,
}

pub(crate) const PEERS: [Peer; 2] = [
    Peer {
        name: "kafka-streams",
        system: "Kafka Streams 4.4.0 (exactly_once_v2, 1s and 1m windows, suppress)",
        note: "trades/s from its first trade consumed to its last (JVM start-up excluded); CPU includes start-up",
    },
    Peer {
        name: "quix",
        system: "Quix Streams 3.28.1 (exactly-once, 1s and 1m tumbling windows, final)",
        note: "trades/s from its first trade to its last (start-up excluded); CPU includes start-up",
    },
];

/// The peer's command line on the backlog of `config`, built or installed
/// first where needed (Maven for Kafka Streams, the venv of
/// `benchmarks/peers/python/setup.sh` for Quix).
pub(crate) fn peer_command(
    peer: &Peer,
    config: &Config,
    dir: &Path,
    trades: u64,
    out: (&str, &str),
) -> Result<std::process::Command, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benchmarks/peers");
    let state = dir.join(format!("{}-state", peer.name));
    let id = format!("{}-{}", config.topics.prefix, peer.name);
    let run = |program: &str, args: &[&str], cwd: &Path| -> Result<String, String> {
        let output = std::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{program} {args:?} in {} failed: {}",
                cwd.display(),
                output.status
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let mut command;
    match peer.name {
        "kafka-streams" => {
            let home = root.join("kafka-streams");
            let jar = home.join("target/kafka-streams-peer.jar");
            if !jar.exists() {
                eprintln!("pipeline benchmark: building the Kafka Streams peer (mvn package)");
                run("mvn", &["-q", "-B", "package"], &home)?;
            }
            command = std::process::Command::new("java");
            command
                .arg("-Xmx1g")
                .arg("-cp")
                .arg(format!("{}:{}/target/lib/*", jar.display(), home.display()))
                .arg("tickfetch.peers.StreamsCandles")
                .args(["--application-id", &id])
                .args([
                    "--commit-interval-ms",
                    &config.rollup.commit_interval_ms.to_string(),
                ]);
        }
        "quix" => {
            let home = root.join("python");
            eprintln!(
                "pipeline benchmark: the Python peers' venv (benchmarks/peers/python/setup.sh)"
            );
            let python = run("bash", &["setup.sh"], &home)?;
            command = std::process::Command::new(python);
            command
                .arg(home.join("quix_candles.py"))
                .args(["--group", &id])
                .args([
                    "--commit-interval",
                    &(config.rollup.commit_interval_ms as f64 / 1000.0).to_string(),
                ]);
        }
        other => return Err(format!("BENCH_PEERS: unknown peer {other:?}")),
    }
    command
        .args(["--bootstrap", &config.kafka.bootstrap])
        .args(["--input", &config.topics.trades()])
        .args(["--output-1s", out.0, "--output-1m", out.1])
        .arg("--state-dir")
        .arg(state)
        .args(["--grace-ms", &config.rollup.grace_ms.to_string()])
        .args(["--expect-trades", &trades.to_string()]);
    Ok(command)
}

/// Runs a peer on the backlog until it has consumed `trades` trades;
/// returns its run and its two output topics.
pub(crate) fn run_peer(
    peer: &Peer,
    config: &Config,
    dir: &Path,
    trades: u64,
) -> Result<(BacklogRun, String, String), String> {
    let (out_1s, out_1m) = (
        format!("{}.{}.1s", config.topics.prefix, peer.name),
        format!("{}.{}.1m", config.topics.prefix, peer.name),
    );
    let mut command = peer_command(peer, config, dir, trades, (&out_1s, &out_1m))?;
    let log_path = dir.join(format!("{}.log", peer.name));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", peer.name))?;
    let sampler = Sampler::start(child.id() as i32);
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let seconds_from_start = started.elapsed().as_secs_f64();
    let (cpu_seconds, peak_rss_mb) = sampler.finish();
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); log in {}",
            peer.name,
            output.status,
            log_path.display()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default().trim();
    let result: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("{} result {line:?}: {e}", peer.name))?;
    let elapsed_ms = result["elapsed_ms"].as_f64().unwrap_or(0.0);
    Ok((
        BacklogRun {
            system: peer.system.into(),
            trades,
            seconds_from_start,
            seconds_working: elapsed_ms / 1000.0,
            trades_per_second: result["trades_per_s"].as_f64().unwrap_or(0.0),
            cpu_seconds,
            trades_per_cpu_second: trades as f64 / cpu_seconds.max(1e-9),
            peak_rss_mb,
            note: peer.note.into(),
            ..BacklogRun::default()
        },
        out_1s,
        out_1m,
    ))
}

/// Copies the trades topic `source` into `config`'s trades topic (made
/// here); returns (records, trades) copied.
pub(crate) async fn copy_backlog(config: &Config, source: &str) -> (i64, u64) {
    let topic = config.topics.trades();
    common::plain_topic(config, &topic, config.topics.partitions).await;
    let (config, source) = (config.clone(), source.to_string());
    tokio::task::spawn_blocking(move || copy_topic(&config, &source, &topic))
        .await
        .expect("copy")
}

/// tickfetch's 1s stage and the peers, one after the other, on a copy of
/// the trades topic `source`.
pub(crate) async fn backlog(source: &str, symbols: usize, dir: &Path, peers: &[String]) -> Backlog {
    let prefix = format!("bench-pipeline-{}-backlog", std::process::id());
    let config = base_config(&prefix);
    let dir = dir.join(&prefix);
    std::fs::create_dir_all(&dir).expect("work dir");
    let topic = config.topics.trades();
    let (records, trades) = copy_backlog(&config, source).await;
    eprintln!("pipeline benchmark: backlog of {records} records ({trades} trades) in {topic}");
    let want = {
        let (config, topic) = (config.clone(), topic.clone());
        tokio::task::spawn_blocking(move || offline_of_topic(&config, &topic))
            .await
            .expect("offline")
    };
    let mut errors = Vec::new();
    let (mut ours, _) = our_stage(&config, &dir, records, trades).await;
    let topics = vec![config.topics.candles(Interval::S1)];
    let written = check_backlog_candles(
        &config,
        topics,
        &want,
        &[Interval::S1],
        &mut ours,
        &mut errors,
    )
    .await;
    let stride = (records as u64 / (written as u64).max(1)).max(1);
    let mut runs = vec![ours];
    // The baselines on the same backlog: the stage at-least-once (on a copy
    // of its own, so that it starts from no state), and the floor.
    runs.push(at_least_once(&config, source, &dir, &want, &mut errors).await);
    runs.push(floor(&config, records, trades, stride).await);
    for peer in peers {
        let Some(peer) = PEERS.iter().find(|p| p.name == peer.as_str()) else {
            errors.push(format!("BENCH_PEERS: unknown peer {peer:?}"));
            continue;
        };
        match run_peer(peer, &config, &dir, trades) {
            Ok((mut run, out_1s, out_1m)) => {
                let intervals = [Interval::S1, Interval::M1];
                let topics = vec![out_1s, out_1m];
                check_backlog_candles(&config, topics, &want, &intervals, &mut run, &mut errors)
                    .await;
                runs.push(run);
            }
            Err(e) => errors.push(e),
        }
    }
    for run in &runs {
        if run.candles_differing > 0 {
            errors.push(format!(
                "{}: {} of {} candles differ from the offline engine's",
                run.system, run.candles_differing, run.candles_compared
            ));
        }
    }
    remove_prefix(&config).await;
    Backlog {
        topic,
        records,
        trades,
        symbols,
        runs,
        errors,
    }
}

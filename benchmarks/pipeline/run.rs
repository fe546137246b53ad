//! One run at one rate: the processes, the load, the measurements and the
//! checks.

use super::*;

pub(crate) async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            eprintln!("pipeline benchmark: timed out waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The stack's config (from the environment) with topics, an etcd prefix
/// and a database of `prefix`'s own.
pub(crate) fn base_config(prefix: &str) -> Config {
    let mut config = tickfetch::config::ConfigLoader::new()
        .load()
        .expect("config from environment");
    if let Some(stack) = OWN_STACK.get() {
        config.kafka.bootstrap = stack.kafka_bootstrap.clone();
        config.etcd.endpoints = stack
            .etcd_endpoints
            .split(',')
            .map(|e| e.trim().to_string())
            .collect();
        config.mongodb.uri = stack.mongodb_uri.clone();
    }
    config.topics.prefix = prefix.to_string();
    config.topics.partitions = 4;
    config.etcd.prefix = format!("/{prefix}/");
    config.mongodb.database = prefix.replace('-', "_");
    config
}

pub(crate) fn write_config(config: &Config, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("work dir");
    let path = dir.join("tickfetch.toml");
    std::fs::write(&path, toml::to_string(config).expect("config")).expect("config file");
    path
}

pub(crate) async fn run(settings: &Settings, rate: f64, dir: &Path) -> RunResult {
    let n = settings.symbols;
    let mut symbols = generated_symbols(Exchange::Binance, n / 2);
    symbols.extend(generated_symbols(Exchange::Okx, n - n / 2));
    let sim = Arc::new(simulator(&symbols).await);

    let prefix = format!("bench-pipeline-{}-{}", std::process::id(), rate as u64);
    let mut config = base_config(&prefix);
    config.sink.intervals = settings.sink_intervals.clone();
    config.sink.trades = false;
    config.ingest.feeds = FEEDS
        .iter()
        .map(|name| {
            let feed: Feed = name.parse().expect("known feed");
            let mine: Vec<String> = symbols
                .iter()
                .filter(|s| feed_of(s) == feed)
                .cloned()
                .collect();
            sim.feed_config(feed, &mine)
        })
        .collect();
    let dir = dir.join(&prefix);
    let config_path = write_config(&config, &dir);
    eprintln!(
        "pipeline benchmark: {rate} trades/s over {n} symbols; logs and config in {}",
        dir.display()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let mut procs: Vec<Proc> = vec![Proc::start(
        "worker",
        env!("CARGO_BIN_EXE_tickfetch-ingest"),
        &[],
        &config_path,
        &dir,
    )];
    for stage in STAGES {
        let name = stage.to_string();
        procs.push(Proc::start(
            &format!("rollup-{name}"),
            env!("CARGO_BIN_EXE_tickfetch-rollup"),
            &["--stage", &name, "--partitions", "all"],
            &config_path,
            &dir,
        ));
    }
    procs.push(Proc::start(
        "sink",
        env!("CARGO_BIN_EXE_tickfetch-sink"),
        &[],
        &config_path,
        &dir,
    ));
    let reader = {
        let (config, stop, seen) = (config.clone(), stop_reading.clone(), seen.clone());
        std::thread::spawn(move || read_topics(&config, &stop, &seen))
    };
    let mut errors = Vec::new();

    // Every symbol publishing before the load starts.
    let keys: Vec<String> = symbols
        .iter()
        .map(|s| format!("{}:{s}", feed_of(s).exchange()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let quiet: Vec<usize> = {
            let seen = seen.lock().expect("reader state");
            (0..symbols.len())
                .filter(|i| !seen.trades.contains_key(&keys[*i]))
                .collect()
        };
        if quiet.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} symbols never published; see the logs in {}",
            quiet.len(),
            dir.display()
        );
        for i in quiet {
            sim.generate(feed_of(&symbols[i]).exchange(), &symbols[i], 1)
                .expect("generate");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The load: `rate` trades/s, round-robin over the symbols, in 50 ms ticks.
    let trading_stop = Arc::new(AtomicBool::new(false));
    let trading =
        common::trade_round_robin(sim.clone(), symbols.clone(), rate, trading_stop.clone());
    tokio::time::sleep(Duration::from_secs(settings.warm_secs)).await;

    // The measured window.
    let mut services: Vec<(String, i32)> =
        procs.iter().map(|p| (p.name.clone(), p.pid())).collect();
    services.extend(stack_services());
    services.push((
        "benchmark (simulator, readers)".into(),
        std::process::id() as i32,
    ));
    let cpu_before: Vec<Option<(u64, u64)>> =
        services.iter().map(|(_, pid)| proc_usage(*pid)).collect();
    let scrapes_before: Vec<String> = procs.iter().map(|p| scrape(&p.metrics)).collect();
    let load_before = load_average();
    let from = now_ms();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(settings.measure_secs)).await;
    let load_after = load_average();
    let elapsed = started.elapsed().as_secs_f64();
    let to = now_ms();
    let cpu_after: Vec<Option<(u64, u64)>> =
        services.iter().map(|(_, pid)| proc_usage(*pid)).collect();
    let scrapes_after: Vec<String> = procs.iter().map(|p| scrape(&p.metrics)).collect();
    trading_stop.store(true, Ordering::Relaxed);
    trading.await.expect("trading");

    let ticks = clock_ticks();
    let usage: Vec<Usage> = services
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .filter_map(|((name, _), (before, after))| {
            let ((t0, _), (t1, hwm)) = ((*before)?, (*after)?);
            Some(Usage {
                process: name.clone(),
                cpu_percent: (t1.saturating_sub(t0)) as f64 / ticks / elapsed * 100.0,
                peak_rss_mb: hwm as f64 / 1024.0,
            })
        })
        .collect();
    let delta = |i: usize, name: &str, labels: &[(&str, &str)]| {
        (metric(&scrapes_after[i], name, labels) - metric(&scrapes_before[i], name, labels))
            / elapsed
    };
    let mut throughput = vec![Throughput {
        what: "worker: trades published".into(),
        per_second: delta(0, "tickfetch_ingest_trades_total", &[]),
    }];
    let mut bucketed = Vec::new();
    let grace_s = config.rollup.grace_ms as f64 / 1000.0;
    for (i, stage) in STAGES.iter().enumerate() {
        let name = stage.to_string();
        throughput.push(Throughput {
            what: format!("{name} stage: input records"),
            per_second: delta(i + 1, "tickfetch_rollup_records_total", &[]),
        });
        let b = |text: &str| buckets(text, "tickfetch_rollup_commit_seconds", &[]);
        let (before, after) = (b(&scrapes_before[i + 1]), b(&scrapes_after[i + 1]));
        bucketed.push(bucketed_latency(
            format!("{name} stage: transaction commit (≤ bucket)"),
            &before,
            &after,
            0.0,
        ));
    }
    let sink = STAGES.len() + 1;
    throughput.push(Throughput {
        what: "sink: documents written".into(),
        per_second: delta(sink, "tickfetch_sink_written_total", &[]),
    });
    for interval in &settings.sink_intervals {
        let name = interval.to_string();
        let b = |text: &str| {
            buckets(
                text,
                "tickfetch_sink_stored_latency_seconds",
                &[("interval", &name)],
            )
        };
        let (before, after) = (b(&scrapes_before[sink]), b(&scrapes_after[sink]));
        bucketed.push(bucketed_latency(
            format!("{name}: window close → stored in MongoDB (≤ bucket)"),
            &before,
            &after,
            grace_s,
        ));
    }

    // Everything sent is read, and every window up to the last trade's closed.
    let want = common::sent_ids(&sim, &symbols);
    let trades_sent: usize = want.values().map(Vec::len).sum();
    let all_read = wait_for("every trade read", Duration::from_secs(120), || {
        let seen = seen.lock().expect("reader state");
        want.iter().all(|(key, ids)| {
            seen.trades
                .get(key)
                .and_then(|t| t.last())
                .is_some_and(|last| Some(&last.trade_id) == ids.last())
        })
    })
    .await;
    if !all_read {
        errors.push("not every simulated trade reached the trades topic".into());
    }
    let closes = if settings.quick {
        vec![Interval::S1, Interval::S5]
    } else {
        vec![Interval::S1, Interval::S5, Interval::M1]
    };
    for interval in &closes {
        let span = interval.millis();
        let done = wait_for(
            &format!("every {interval} window closed"),
            Duration::from_secs(60) + Duration::from_millis(span.unsigned_abs() * 2),
            || {
                let seen = seen.lock().expect("reader state");
                let Some(candles) = seen.candles.get(interval) else {
                    return false;
                };
                let mut last_open: HashMap<&str, Millis> = HashMap::new();
                for (key, open) in candles.keys() {
                    let held = last_open.entry(key.as_str()).or_insert(*open);
                    *held = (*held).max(*open);
                }
                seen.trades.iter().all(|(key, trades)| {
                    let last = trades.last().map(|t| t.exchange_time).unwrap_or(0);
                    last_open
                        .get(key.as_str())
                        .is_some_and(|open| *open >= last.div_euclid(span) * span)
                })
            },
        )
        .await;
        if !done {
            errors.push(format!("{interval}: not every window closed"));
        }
    }
    // Anything doubled or revised would be read by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_reading.store(true, Ordering::Relaxed);
    reader.join().expect("reader thread");
    let seen = std::mem::take(&mut *seen.lock().expect("reader state"));

    errors.extend(check_trades(&want, &seen));
    let (candles_checked, candle_errors) = check_candles(&config, &seen);
    errors.extend(candle_errors);
    let (stored_checked, stored_errors) = check_stored(&config, settings, &seen, &dir).await;
    errors.extend(stored_errors);

    let mut latency = vec![latency(
        "exchange → trade readable on the trades topic".into(),
        seen.trade_latency
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, l)| *l),
    )];
    for (interval, samples) in &seen.candle_latency {
        latency.push(self::latency(
            format!("{interval}: window close → candle committed"),
            samples
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|(_, l)| *l),
        ));
    }
    let trades_in_window = seen
        .trade_latency
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .count();
    drop(procs);
    remove_prefix(&config).await;
    RunResult {
        offered_trades_per_second: rate,
        symbols: n,
        measured_secs: elapsed,
        trades_sent,
        trades_per_second_read: trades_in_window as f64 / ((to - from) as f64 / 1000.0),
        latency,
        bucketed,
        throughput,
        usage,
        candles_checked,
        stored_checked,
        errors,
        trades_topic: config.topics.trades(),
        load_average: (load_before, load_after),
    }
}

pub(crate) fn bucketed_latency(
    measure: String,
    before: &[(f64, f64)],
    after: &[(f64, f64)],
    minus_s: f64,
) -> Latency {
    let q = |q| {
        bucket_quantile(before, after, q)
            .map(|ms| (ms - minus_s * 1000.0).max(0.0))
            .unwrap_or(f64::NAN)
    };
    let samples = after.last().map(|(_, c)| *c).unwrap_or(0.0)
        - before.last().map(|(_, c)| *c).unwrap_or(0.0);
    Latency {
        measure,
        samples: samples.max(0.0) as u64,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: q(1.0),
    }
}

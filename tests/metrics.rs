//! The metrics, the scrape config and the dashboard against a live run:
//! `tickfetch up --simulate` (on the test stack, `--no-stack`, this test's
//! own names) scraped by a real Prometheus (Debian's `prometheus`, installed
//! with apt-get when missing) with `deploy/prometheus/up.yml`, its ports
//! moved to the run's `--port-base`.
//!
//! Checks, through Prometheus' HTTP API: the scrape config names every
//! process `up` starts, each under its role's job, and every target is up;
//! each series a healthy run must move (trades, frames, watermarks, publish
//! latency; per stage records, candles, commits and committed latency; the
//! sink's writes, batches, batch sizes and stored latency per interval)
//! exists and grows (watched for at least a minute), and those that move
//! every few seconds still grow at the end; the 5m stage's candles and
//! latencies only when a 5m window closes within two minutes after that
//! minute (the test then waits for it, else says it did not check them).
//! Every stage's and the sink's consumer group has its lag exported; the
//! master was elected. Then `deploy/grafana/tickfetch.json`: it parses,
//! every `tickfetch_*` name in a panel's query is a series the binaries
//! export (seen in this run, or in the short list of event-only series
//! below, each checked against the source), and every query evaluates,
//! returning data when its series are live. Prints the latencies
//! Prometheus saw; stops Prometheus and `up` (SIGINT) and cleans etcd.

mod common;

use common::up::{free_base, free_port, Up};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use tickfetch::model::Interval;

/// `tickfetch up`'s own port when run without `--port-base`: the ports in
/// `deploy/prometheus/up.yml` are relative to it.
const DEFAULT_BASE: u16 = tickfetch::app::ports::UP;

/// Series the binaries export only once an event happened: the reconnect
/// counter, labelled by its reason, which a feed gets only when a connection
/// ends (every other ingest counter is created at 0 with its feed). Names
/// after `tickfetch_ingest_`; each is checked against `src/ingest/events.rs`,
/// so the list cannot keep a name the code dropped.
const EVENT_ONLY: [&str; 1] = ["reconnects_total"];

/// How long the series are watched at least, from every target up.
const OBSERVE: Duration = Duration::from_secs(60);
/// The series that move every few seconds must have grown over the last
/// this long of the run.
const STILL_MOVING: Duration = Duration::from_secs(15);

/// Which job (deploy/prometheus/up.yml) exports each metric family.
const FAMILY_JOBS: [(&str, &[&str]); 5] = [
    ("tickfetch_ingest_", &["tickfetch-ingest"]),
    ("tickfetch_rollup_", &["tickfetch-rollup"]),
    ("tickfetch_sink_", &["tickfetch-sink"]),
    ("tickfetch_master_", &["tickfetch-coord"]),
    (
        "tickfetch_consumer_lag_records",
        &["tickfetch-rollup", "tickfetch-sink"],
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `/usr/bin/prometheus`, installed from Debian's package when missing
/// (`apt-get update` first only if the install fails). The package starts
/// no service in a container; the test runs its own instance on its own
/// port either way.
fn prometheus_binary() -> PathBuf {
    let bin = PathBuf::from("/usr/bin/prometheus");
    if bin.is_file() {
        return bin;
    }
    let apt = |args: &[&str]| {
        eprintln!("running apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "--no-install-recommends", "prometheus"];
    if !apt(&install) {
        assert!(apt(&["update"]), "apt-get update failed");
        assert!(apt(&install), "apt-get install prometheus failed");
    }
    assert!(bin.is_file(), "{} missing after the install", bin.display());
    bin
}

/// A GET over plain HTTP/1.1 to 127.0.0.1: status and body (chunked
/// transfer decoded). `None` when nothing answers.
fn http_get(port: u16, target: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of an instant vector: its labels and value.
type Sample = (BTreeMap<String, String>, f64);
/// A snapshot of the watched series: per series, value by label value.
type Snapshot = Vec<BTreeMap<String, f64>>;

/// The test's Prometheus: its HTTP API.
struct Prometheus {
    port: u16,
    proc: common::Proc,
}

impl Prometheus {
    /// `data` of a successful API answer; `Err` with the answer otherwise.
    fn api(&self, target: &str) -> Result<Json, String> {
        let (status, body) = http_get(self.port, target)
            .ok_or_else(|| format!("GET {target}: no answer from Prometheus"))?;
        let json: Json = serde_json::from_str(&body)
            .map_err(|e| format!("GET {target}: {status}, not JSON ({e}): {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("GET {target}: {status} {body}"));
        }
        Ok(json["data"].clone())
    }

    /// An instant query's samples: labels and value.
    fn try_query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        let Some(result) = data["result"].as_array() else {
            // A scalar or string result: one unlabelled value.
            return Ok(vec![(BTreeMap::new(), value_of(&data["result"]))]);
        };
        Ok(result
            .iter()
            .map(|sample| {
                let labels = sample["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                (labels, value_of(&sample["value"]))
            })
            .collect())
    }

    fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `by label value → value` of a query aggregated `by (label)`.
    fn by(&self, promql: &str, label: &str) -> BTreeMap<String, f64> {
        self.query(promql)
            .into_iter()
            .map(|(labels, v)| (labels.get(label).cloned().unwrap_or_default(), v))
            .collect()
    }

    /// Stops it with SIGTERM (it flushes its head block), SIGKILL after 20 s.
    fn stop(mut self) {
        let _ = nix::sys::signal::kill(self.proc.pid(), nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.proc.kill9();
    }
}

/// `[time, "value"]` → value.
fn value_of(pair: &Json) -> f64 {
    pair.get(1)
        .and_then(Json::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Reads `deploy/prometheus/up.yml`, checks it names `up`'s default ports
/// (every child's and `up`'s own) and returns it with every target moved to
/// `base`, scraping every second; also the jobs by moved port.
fn moved_scrape_config(base: u16, printed: &BTreeSet<u16>) -> (String, BTreeMap<u16, String>) {
    let path = repo().join("deploy/prometheus/up.yml");
    let text = std::fs::read_to_string(&path).expect("deploy/prometheus/up.yml");
    let mut yaml: Yaml = serde_yaml_ng::from_str(&text).expect("up.yml parses");
    assert_eq!(
        yaml["global"]["scrape_interval"].as_str(),
        Some("5s"),
        "up.yml scrapes every 5 s"
    );
    yaml["global"]["scrape_interval"] = Yaml::from("1s");
    yaml["global"]["evaluation_interval"] = Yaml::from("1s");
    let mut jobs = BTreeMap::new();
    let configs = yaml["scrape_configs"]
        .as_sequence_mut()
        .expect("up.yml: scrape_configs");
    for job in configs {
        let name = job["job_name"].as_str().expect("job_name").to_string();
        for group in job["static_configs"]
            .as_sequence_mut()
            .expect("static_configs")
        {
            for target in group["targets"].as_sequence_mut().expect("targets") {
                let (host, port) = target
                    .as_str()
                    .and_then(|t| t.rsplit_once(':'))
                    .expect("target host:port");
                let port: u16 = port.parse().expect("target port");
                assert!(
                    port >= DEFAULT_BASE,
                    "up.yml target {port} below up's port {DEFAULT_BASE}"
                );
                let moved = port - DEFAULT_BASE + base;
                *target = Yaml::from(format!("{host}:{moved}"));
                let before = jobs.insert(moved, name.clone());
                assert!(before.is_none(), "up.yml names port {port} twice");
            }
        }
    }
    let named: BTreeSet<u16> = jobs.keys().copied().collect();
    let default = |ports: &BTreeSet<u16>| -> Vec<u16> {
        ports.iter().map(|p| p - base + DEFAULT_BASE).collect()
    };
    assert_eq!(
        named,
        *printed,
        "up.yml scrapes {:?}; tickfetch up serves /metrics on {:?} (default ports)",
        default(&named),
        default(printed)
    );
    (serde_yaml_ng::to_string(&yaml).expect("yaml"), jobs)
}

/// Every `tickfetch_…` name in `expr`, `_bucket`/`_count`/`_sum` taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tickfetch_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(base_name(&tail[..len]).to_string());
        }
        rest = &tail[len..];
    }
    names
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every (panel title, query) of the dashboard, rows' nested panels
/// included, and the template variables' queries.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    fn walk(panels: &Json, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = match &variable["query"] {
                Json::String(q) => q.clone(),
                q => q["query"].as_str().unwrap_or_default().to_string(),
            };
            out.push((format!("variable {}", variable["name"]), query));
        }
    }
    out
}

/// A series that must move in a healthy run: its query (summed by `by`)
/// and the label values (of `by`) that must each grow; `""` for a plain
/// sum.
struct Moving {
    what: &'static str,
    promql: String,
    by: &'static str,
    keys: Vec<String>,
}

fn moving_series() -> Vec<Moving> {
    let stages: Vec<String> = Interval::ALL.iter().map(|i| i.to_string()).collect();
    let all = || vec![String::new()];
    let mut out = Vec::new();
    for (what, name) in [
        ("ingest trades", "tickfetch_ingest_trades_total"),
        ("ingest frames", "tickfetch_ingest_frames_total"),
        ("ingest watermarks", "tickfetch_ingest_watermarks_total"),
        (
            "ingest publish latency observations",
            "tickfetch_ingest_publish_latency_seconds_count",
        ),
        ("sink writes", "tickfetch_sink_written_total"),
        ("sink batches", "tickfetch_sink_batches_total"),
        ("sink batch sizes", "tickfetch_sink_batch_size_count"),
    ] {
        out.push(Moving {
            what,
            promql: format!("sum({name})"),
            by: "",
            keys: all(),
        });
    }
    for (what, name) in [
        ("rollup records", "tickfetch_rollup_records_total"),
        ("rollup candles", "tickfetch_rollup_candles_total"),
        ("rollup commits", "tickfetch_rollup_commits_total"),
        (
            "rollup committed latency observations",
            "tickfetch_rollup_committed_latency_seconds_count",
        ),
    ] {
        out.push(Moving {
            what,
            promql: format!("sum by (stage) ({name})"),
            by: "stage",
            keys: stages.clone(),
        });
    }
    out.push(Moving {
        what: "sink stored latency observations",
        promql: "sum by (interval) (tickfetch_sink_stored_latency_seconds_count)".into(),
        by: "interval",
        keys: stages,
    });
    out
}

/// Whether a (series, key) moves at least every few seconds in a healthy
/// run: everything of the 1s and 5s stages, the 1m stage's input (5s
/// candles) and the plain sums; not 1m candles (one a minute) nor anything
/// of the 5m stage (its input comes once a minute).
fn moves_every_few_seconds(m: &Moving, key: &str) -> bool {
    match key {
        "" | "1s" | "5s" => true,
        "1m" => m.promql.contains("records_total") || m.promql.contains("commits_total"),
        _ => false,
    }
}

/// Whether a (series, key) only moves when a 5m window closes.
fn five_minutely(m: &Moving, key: &str) -> bool {
    key == "5m"
        && (m.promql.contains("candles_total")
            || m.promql.contains("committed_latency")
            || m.promql.contains("stored_latency"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_process_of_up_and_the_dashboard_names_only_exported_series() {
    let config = common::config("metrics");
    let work = common::work_dir(&config);
    let base = free_base();
    let prometheus_bin = tokio::task::spawn_blocking(prometheus_binary)
        .await
        .expect("install thread");

    let started = Instant::now();
    let mut up = Up::start(&config, &work.join("up-dir"), base);
    let printed = up.metrics_ports();
    let (scrape_config, jobs) = moved_scrape_config(base, &printed);
    let config_path = work.join("prometheus.yml");
    std::fs::write(&config_path, scrape_config).expect("write prometheus.yml");

    let port = free_port();
    let mut command = Command::new(&prometheus_bin);
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=1d");
    let mut prometheus = Prometheus {
        port,
        proc: common::Proc::start(&config, "prometheus", command),
    };
    let ready = Instant::now();
    while http_get(port, "/-/ready").is_none_or(|(status, _)| status != 200) {
        if let Ok(Some(status)) = prometheus.proc.child.try_wait() {
            panic!(
                "prometheus exited with {status}:\n{}",
                prometheus.proc.log_text()
            );
        }
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "prometheus not ready within 60 s:\n{}",
            prometheus.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "prometheus ready on 127.0.0.1:{port} {:.1} s after its start",
        ready.elapsed().as_secs_f64()
    );

    // Every target up, each under its job.
    let targets_since = Instant::now();
    loop {
        let data = prometheus.api("/api/v1/targets").expect("targets");
        let active = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let state: BTreeMap<u16, (String, String, String)> = active
            .iter()
            .filter_map(|t| {
                let url = t["scrapeUrl"].as_str()?;
                let port = url
                    .split("127.0.0.1:")
                    .nth(1)?
                    .split('/')
                    .next()?
                    .parse()
                    .ok()?;
                Some((
                    port,
                    (
                        t["labels"]["job"].as_str()?.to_string(),
                        t["health"].as_str()?.to_string(),
                        t["lastError"].as_str().unwrap_or_default().to_string(),
                    ),
                ))
            })
            .collect();
        for (port, (job, _, _)) in &state {
            assert_eq!(Some(job), jobs.get(port), "target {port}'s job");
        }
        let known: BTreeSet<u16> = state.keys().copied().collect();
        let down: Vec<String> = state
            .iter()
            .filter(|(_, (_, health, _))| health != "up")
            .map(|(p, (job, health, error))| format!("{job} :{p} {health} {error}"))
            .collect();
        if known == printed && down.is_empty() {
            break;
        }
        // Targets show up a moment after the config is loaded, then
        // "unknown" until their first scrape.
        assert!(
            targets_since.elapsed() < Duration::from_secs(90),
            "targets not up within 90 s: {down:?}; prometheus' targets {known:?}, up's ports {printed:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let all_up = Instant::now();
    eprintln!(
        "all {} targets up {:.1} s after tickfetch up started",
        printed.len(),
        started.elapsed().as_secs_f64()
    );

    // Each series a healthy run moves: first value (absent: 0), then it
    // must grow, watched for at least OBSERVE. The 5m stage closes a window
    // every five minutes: its candles are waited for only when the next 5m
    // window end is near. At the end, the series that move every few
    // seconds must still be moving (the pipeline did not stall).
    let moving = moving_series();
    let snapshot = |prometheus: &Prometheus| -> Snapshot {
        moving
            .iter()
            .map(|m| prometheus.by(&m.promql, m.by))
            .collect()
    };
    let baseline = snapshot(&prometheus);
    let mut history: Vec<(Instant, Snapshot)> = Vec::new();
    let mut moved_at: BTreeMap<(usize, String), f64> = BTreeMap::new();
    let pending = |moved_at: &BTreeMap<(usize, String), f64>, with_5m: bool| -> Vec<String> {
        moving
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.keys.iter().map(move |k| (i, m, k)))
            .filter(|(i, m, k)| {
                !moved_at.contains_key(&(*i, (*k).clone())) && (with_5m || !five_minutely(m, k))
            })
            .map(|(_, m, k)| format!("{} {k}", m.what))
            .collect()
    };
    let poll = |moved_at: &mut BTreeMap<(usize, String), f64>,
                history: &mut Vec<(Instant, Snapshot)>| {
        let now = snapshot(&prometheus);
        for (i, m) in moving.iter().enumerate() {
            for k in &m.keys {
                let before = baseline[i].get(k).copied().unwrap_or(0.0);
                if now[i].get(k).is_some_and(|v| *v > before) {
                    moved_at
                        .entry((i, k.clone()))
                        .or_insert(all_up.elapsed().as_secs_f64());
                }
            }
        }
        history.push((Instant::now(), now));
    };
    loop {
        poll(&mut moved_at, &mut history);
        let left = pending(&moved_at, false);
        if left.is_empty() && all_up.elapsed() >= OBSERVE {
            break;
        }
        assert!(
            all_up.elapsed() < Duration::from_secs(150),
            "not moving 150 s after every target was up: {left:?}\n{}",
            up.text()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let next_5m = (now_ms / 300_000 + 1) * 300_000;
    let check_5m = pending(&moved_at, true).is_empty() || next_5m - now_ms <= 120_000;
    if check_5m {
        let deadline = Instant::now() + Duration::from_millis((next_5m - now_ms + 60_000) as u64);
        loop {
            poll(&mut moved_at, &mut history);
            let left = pending(&moved_at, true);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not moving a minute after a 5m window end: {left:?}"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    } else {
        eprintln!(
            "5m candles, their committed and stored latency not checked: no 5m window closed yet, the next ends in {} s",
            (next_5m - now_ms) / 1000
        );
    }
    for ((i, key), at) in &moved_at {
        eprintln!(
            "moved: {} {key}: {at:.1} s after all targets were up",
            moving[*i].what
        );
    }
    let (last_at, last) = history.last().expect("a snapshot");
    let (earlier_at, earlier) = history
        .iter()
        .rev()
        .find(|(at, _)| last_at.duration_since(*at) >= STILL_MOVING)
        .expect("a snapshot STILL_MOVING before the last");
    let stalled: Vec<String> = moving
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.keys.iter().map(move |k| (i, m, k)))
        .filter(|(_, m, k)| moves_every_few_seconds(m, k))
        .filter(|(i, _, k)| {
            let before = earlier[*i].get(*k).copied().unwrap_or(0.0);
            !last[*i].get(*k).is_some_and(|v| *v > before)
        })
        .map(|(_, m, k)| format!("{} {k}", m.what))
        .collect();
    assert!(
        stalled.is_empty(),
        "stopped moving in the last {:.0} s of the run: {stalled:?}",
        last_at.duration_since(*earlier_at).as_secs_f64()
    );

    // Lag of every stage's group and the sink's; the master elected.
    let mut groups: Vec<String> = Interval::ALL
        .iter()
        .map(|i| format!("{}.{i}", config.rollup.group_prefix))
        .collect();
    groups.push(config.sink.group_id.clone());
    let lag = prometheus.by("max by (group) (tickfetch_consumer_lag_records)", "group");
    for group in &groups {
        assert!(
            lag.contains_key(group),
            "no tickfetch_consumer_lag_records for group {group}: {lag:?}"
        );
    }
    eprintln!("largest consumer lag per group (records): {lag:?}");
    let elections = prometheus.query("sum(tickfetch_master_elections_total)");
    assert!(
        elections.first().is_some_and(|(_, v)| *v >= 1.0),
        "master elected: {elections:?}"
    );

    // Each family from its role's job.
    let by_job = prometheus.query(r#"count by (job, __name__) ({__name__=~"tickfetch_.+"})"#);
    for (labels, _) in &by_job {
        let name = &labels["__name__"];
        let job = &labels["job"];
        match FAMILY_JOBS
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
        {
            Some((_, expected)) => assert!(
                expected.contains(&job.as_str()),
                "{name} scraped from job {job}, expected {expected:?}"
            ),
            None => eprintln!("{name} (job {job}): a family this test does not know yet"),
        }
    }

    // The dashboard: parses, names only exported series, and each query
    // evaluates (with data when its series are live).
    let live: BTreeSet<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .expect("names")
        .as_array()
        .expect("names array")
        .iter()
        .filter_map(Json::as_str)
        .map(|n| base_name(n).to_string())
        .collect();
    let mut event_only = BTreeSet::new();
    let source =
        std::fs::read_to_string(repo().join("src/ingest/events.rs")).expect("src/ingest/events.rs");
    for name in EVENT_ONLY {
        assert!(
            source.contains("tickfetch_ingest_") && source.contains(&format!("\"{name}\"")),
            "tickfetch_ingest_{name} is not registered in src/ingest/events.rs: drop it from EVENT_ONLY"
        );
        event_only.insert(format!("tickfetch_ingest_{name}"));
    }
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/tickfetch.json"))
            .expect("deploy/grafana/tickfetch.json"),
    )
    .expect("the dashboard is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "dashboard queries: {}", queries.len());
    let mut named = BTreeSet::new();
    let mut with_data = 0;
    for (title, expr) in &queries {
        let names = metric_names(expr);
        for name in &names {
            assert!(
                live.contains(name) || event_only.contains(name),
                "panel {title:?}: {name} is no series the binaries export (query {expr})"
            );
        }
        let promql = expr
            .replace("$__rate_interval", "15s")
            .replace("$__interval", "5s")
            .replace("$__range", "5m");
        let result = prometheus
            .try_query(&promql)
            .unwrap_or_else(|e| panic!("panel {title:?}: {e}"));
        if names.iter().all(|n| live.contains(n)) {
            assert!(
                !result.is_empty(),
                "panel {title:?}: no data for live series: {promql}"
            );
            with_data += 1;
        }
        named.extend(names);
    }
    eprintln!(
        "dashboard: {} queries over {} series; {with_data} with data now, the rest on event-only series",
        queries.len(),
        named.len()
    );

    // What Prometheus saw over the run.
    let quantiles = |metric: &str, by: &str| -> Vec<String> {
        let p50 = prometheus.by(
            &format!("histogram_quantile(0.5, sum by (le, {by}) ({metric}_bucket))"),
            by,
        );
        let p99 = prometheus.by(
            &format!("histogram_quantile(0.99, sum by (le, {by}) ({metric}_bucket))"),
            by,
        );
        p50.iter()
            .map(|(k, v)| {
                format!(
                    "{k}: p50 {v:.3} p99 {:.3}",
                    p99.get(k).copied().unwrap_or(f64::NAN)
                )
            })
            .collect()
    };
    let rate = prometheus.query("sum(rate(tickfetch_ingest_trades_total[30s]))");
    eprintln!(
        "trades/s over the last 30 s: {:.1}",
        rate.first().map_or(f64::NAN, |(_, v)| *v)
    );
    eprintln!(
        "publish latency (s): {:?}",
        quantiles("tickfetch_ingest_publish_latency_seconds", "job")
    );
    eprintln!(
        "commit latency (s): {:?}",
        quantiles("tickfetch_rollup_commit_seconds", "stage")
    );
    eprintln!(
        "committed latency, window end to commit (s): {:?}",
        quantiles("tickfetch_rollup_committed_latency_seconds", "stage")
    );
    eprintln!(
        "stored latency, window end to MongoDB (s): {:?}",
        quantiles("tickfetch_sink_stored_latency_seconds", "interval")
    );
    eprintln!(
        "sink batch size (documents): {:?}",
        quantiles("tickfetch_sink_batch_size", "job")
    );
    eprintln!("test ran {:.1} s so far", started.elapsed().as_secs_f64());

    prometheus.stop();
    let text = up.interrupt();
    assert!(
        !text.contains("exited ("),
        "no child died during the run:\n{text}"
    );
    common::etcd::remove_prefix(&config.etcd).await;
}

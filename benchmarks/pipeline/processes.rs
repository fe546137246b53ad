//! The processes of a run and what is read from them: `/metrics`, `/proc`,
//! the stack's services.

use super::*;

/// A tickfetch process of the run, with the address of its `/metrics`.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: common::Child,
    pub(crate) metrics: String,
}

impl Proc {
    pub(crate) fn start(
        name: &str,
        binary: &str,
        args: &[&str],
        config: &Path,
        dir: &Path,
    ) -> Proc {
        let metrics = free_addr();
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .arg("--set")
            .arg(format!("telemetry.http_addr={metrics}"))
            .args(args);
        Proc {
            name: name.to_string(),
            child: common::Child::start(command, &dir.join(format!("{name}.log"))),
            metrics,
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.pid()
    }
}

/// A loopback address nobody listens on now.
pub(crate) fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

/// The text of `http://{addr}/metrics`, or empty when it does not answer.
pub(crate) fn scrape(addr: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Sum of a series' samples whose labels contain every `label="value"` of
/// `labels`.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// A histogram's cumulative bucket counts, by upper bound, for samples with
/// these labels.
pub(crate) fn buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_bound: BTreeMap<u64, f64> = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&bucket)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            continue;
        }
        let Some(le) = series
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        *by_bound.entry(bound.to_bits()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    let mut out: Vec<(f64, f64)> = by_bound
        .into_iter()
        .map(|(b, c)| (f64::from_bits(b), c))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound (ms) under which `q` of the samples between two scrapes
/// fall; `None` without samples.
pub(crate) fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            (*bound, count - earlier)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(bound, _)| bound * 1000.0)
}

/// CPU ticks (utime + stime) and peak RSS (kB) of a process.
pub(crate) fn proc_usage(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((ticks, hwm))
}

/// The 1-minute load average.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

pub(crate) fn clock_ticks() -> f64 {
    // `getconf CLK_TCK`: 100 on every Linux we know of.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The stack's own services (broker, etcd, MongoDB server), when the
/// `stack.json` of the stack in the environment is found.
pub(crate) fn stack_services() -> Vec<(String, i32)> {
    let Some(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .or_else(|| OWN_STACK.get().map(|s| s.kafka_bootstrap.clone()))
    else {
        return Vec::new();
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var("BENCH_STACK_DIR").map(PathBuf::from).ok(),
        Some(root.join(".tickfetch/dev")),
        Some(root.join(".tickfetch/test-stack")),
        Some(root.join("target/test-stack")),
    ];
    for dir in candidates.into_iter().flatten() {
        let env = std::fs::read_to_string(dir.join("stack.env")).unwrap_or_default();
        if !env.contains(&format!("KAFKA_BOOTSTRAP={bootstrap}")) {
            continue;
        }
        if let Ok(state) = tickfetch::stack::read_state(&dir) {
            return state
                .services
                .into_iter()
                .map(|s| (s.name, s.pid))
                .collect();
        }
    }
    Vec::new()
}

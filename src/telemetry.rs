//! Logs and metrics for every binary.
//!
//! [`init_logging`] sets up `tracing` (text or JSON lines, `RUST_LOG` filter,
//! default `info`). [`serve_http`] answers `GET /metrics` with the Prometheus text
//! format of [`registry`], `GET /healthz` with `ok` while the process is alive,
//! and `GET /readyz` with `ready` (200) or `not ready` (503) and one line per
//! readiness check of [`health`] (`kafka: ok`, `etcd: unreachable ...`).
//! [`Probes`] keeps the connection checks every binary shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::LogFormat;
use crate::shutdown::CancellationToken;

/// The process-wide metrics registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

/// Buckets of the end-to-end latency histograms, in seconds: exchange time
/// to published, committed, stored.
/// Fine between 1 and 3 s, where a candle's latency lies with the default
/// 1 s grace and a watermark every second.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0,
    60.0,
];

/// Seconds from `event_ms` (an exchange time, a window's end) to now.
pub fn seconds_since(event_ms: i64) -> f64 {
    (chrono::Utc::now().timestamp_millis() - event_ms).max(0) as f64 / 1000.0
}

/// Registers a metric, ignoring a second registration of the same name (tests
/// build several stages in one process).
pub fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    let _ = registry().register(Box::new(metric.clone()));
    metric
}

/// Starts `tracing` for a binary; logs go to stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What `/healthz` and `/readyz` answer: whether the process is alive, and
/// its readiness checks, each ready or not with a reason (`kafka`, `etcd`,
/// `partitions`, `lag`, ...). Ready when alive and every check is ready.
/// One per process ([`health`]), like the metrics [`registry`].
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    alive: AtomicBool,
    /// Check name → `None` when ready, else why not.
    checks: std::sync::Mutex<std::collections::BTreeMap<String, Option<String>>>,
}

/// The process-wide health.
pub fn health() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(Health::default)
}

impl Health {
    /// A health that starts not alive until [`Health::set`] says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Alive (`/healthz` answers 200) or not.
    pub fn set(&self, alive: bool) {
        self.0.alive.store(alive, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.alive.load(Ordering::Relaxed)
    }

    /// Marks check `name` ready.
    pub fn ready(&self, name: &str) {
        self.put(name, None);
    }

    /// Marks check `name` not ready, saying why; logged when the reason
    /// changes.
    pub fn unready(&self, name: &str, reason: impl std::fmt::Display) {
        self.put(name, Some(reason.to_string()));
    }

    /// Sets check `name` from a result: ready on `Ok`, the error otherwise.
    pub fn check<T, E: std::fmt::Display>(&self, name: &str, result: &Result<T, E>) {
        match result {
            Ok(_) => self.ready(name),
            Err(e) => self.unready(name, e),
        }
    }

    /// Removes check `name` (what it watched is gone).
    pub fn remove(&self, name: &str) {
        if let Ok(mut checks) = self.0.checks.lock() {
            checks.remove(name);
        }
    }

    fn put(&self, name: &str, state: Option<String>) {
        let Ok(mut checks) = self.0.checks.lock() else {
            return;
        };
        let previous = checks.insert(name.to_string(), state.clone());
        if previous.as_ref() != Some(&state) {
            match (&state, previous.flatten()) {
                (Some(reason), _) => tracing::warn!(check = name, %reason, "not ready"),
                (None, Some(was)) => tracing::info!(check = name, %was, "ready again"),
                (None, None) => {}
            }
        }
    }

    /// `Ok(lines)` when ready, `Err(lines)` naming what is not; one line
    /// per check, `name: ok` or `name: reason`.
    pub fn readiness(&self) -> Result<Vec<String>, Vec<String>> {
        let mut lines = Vec::new();
        let mut ready = self.get();
        if !ready {
            lines.push("process: not alive".to_string());
        }
        if let Ok(checks) = self.0.checks.lock() {
            for (name, state) in checks.iter() {
                match state {
                    None => lines.push(format!("{name}: ok")),
                    Some(reason) => {
                        ready = false;
                        lines.push(format!("{name}: {reason}"));
                    }
                }
            }
        }
        if ready {
            Ok(lines)
        } else {
            Err(lines)
        }
    }
}

/// Binds `addr` (empty: no endpoint) and serves `/metrics` and `/healthz` until
/// `shutdown`. Returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve_http(
    addr: &str,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "metrics and health endpoint listening");
    if !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "the metrics and health endpoint listens beyond loopback and has no authentication: \
             whoever reaches it reads /metrics (bind 127.0.0.1, or restrict it in the network)"
        );
    }
    let task = tokio::spawn(async move {
        // Connections being answered; at most MAX_CONNECTIONS at once (a
        // slow client waits for its turn in the accept queue).
        let mut answering = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = answering.join_next(), if !answering.is_empty() => continue,
                accepted = listener.accept(), if answering.len() < MAX_CONNECTIONS => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            answering.spawn(answer(stream, health.clone()));
        }
        answering.shutdown().await;
    });
    Ok(Some((local, task)))
}

/// Connections the endpoint answers at once.
const MAX_CONNECTIONS: usize = 64;

/// Answers one request on `stream`: reads the request head (up to 1 KiB,
/// within 2 s, however many segments it comes in), writes the reply, closes.
async fn answer(mut stream: tokio::net::TcpStream, health: Health) {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    let head = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(read) => n += read,
            }
        }
    })
    .await;
    if head.is_err() || n == 0 {
        return;
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/metrics" => {
            let mut out = Vec::new();
            let _ = TextEncoder::new().encode(&registry().gather(), &mut out);
            ("200 OK", out)
        }
        "/healthz" if health.get() => ("200 OK", b"ok\n".to_vec()),
        "/healthz" => ("503 Service Unavailable", b"not alive\n".to_vec()),
        "/readyz" => match health.readiness() {
            Ok(lines) => (
                "200 OK",
                format!("ready\n{}\n", lines.join("\n")).into_bytes(),
            ),
            Err(lines) => (
                "503 Service Unavailable",
                format!("not ready\n{}\n", lines.join("\n")).into_bytes(),
            ),
        },
        _ => ("404 Not Found", b"not found\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
}

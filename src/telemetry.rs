//! Logs and metrics for every binary.
//!
//! [`init_logging`] sets up `tracing` (text or JSON lines, `RUST_LOG` filter,
//! default `info`). [`serve_http`] answers `GET /metrics` with the Prometheus text
//! format of [`registry`] and `GET /healthz` with `ok` while the process is healthy.

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

/// Health flag served on `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// A flag that starts unhealthy until [`Health::set`] says otherwise.
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let health = health.clone();
            // One short request per connection; bounded by the read buffer and a timeout.
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                        .await;
                let Ok(Ok(n)) = read else { return };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => {
                        let mut out = Vec::new();
                        let _ = TextEncoder::new().encode(&registry().gather(), &mut out);
                        ("200 OK", out)
                    }
                    "/healthz" if health.get() => ("200 OK", b"ok\n".to_vec()),
                    "/healthz" => ("503 Service Unavailable", b"unhealthy\n".to_vec()),
                    _ => ("404 Not Found", b"not found\n".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    Ok(Some((local, task)))
}

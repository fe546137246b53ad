//! What every binary does before its stage runs: flags common to all, config
//! loading, logging, the `/metrics` + `/healthz` + `/readyz` endpoint on each
//! binary's own port ([`ports`]) and signal handling.

use std::path::PathBuf;

use crate::config::{Config, ConfigError, ConfigLoader};
use crate::shutdown::CancellationToken;
use crate::telemetry::{self, Health};

/// Flags shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// TOML config file (else $TICKFETCH_CONFIG, else defaults + environment).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Override one key: `--set section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl CommonArgs {
    /// Loads the configuration with these flags on top.
    ///
    /// # Errors
    /// A configuration error naming the key and its origin.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut loader = ConfigLoader::new().file(self.config.as_deref());
        for assignment in &self.set {
            loader = loader.set(assignment)?;
        }
        loader.load()
    }
}

/// Why a binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("binding the metrics and health endpoint {addr} (telemetry.http_addr): {source}")]
    Endpoint {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A started process: its config, root shutdown token and health flag.
pub struct Started {
    pub config: Config,
    pub shutdown: CancellationToken,
    pub health: Health,
    /// Where `/metrics` and `/healthz` answer, when enabled.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// Each binary's port for `telemetry.http_addr = "auto"` (on 127.0.0.1).
pub mod ports {
    use crate::model::Interval;

    pub const UP: u16 = 9400;
    pub const COORD: u16 = 9401;
    pub const INGEST: u16 = 9402;
    pub const SINK: u16 = 9403;

    /// 9411 (1s), 9412 (5s), 9413 (1m), 9414 (5m).
    pub fn rollup(interval: Interval) -> u16 {
        9411 + Interval::ALL
            .iter()
            .position(|i| *i == interval)
            .unwrap_or_default() as u16
    }
}

/// The endpoint address `telemetry.http_addr` names: `auto` is loopback on
/// `port`.
pub fn endpoint_addr(configured: &str, port: u16) -> String {
    if configured == "auto" {
        format!("127.0.0.1:{port}")
    } else {
        configured.to_string()
    }
}

/// Loads config, starts logging, signal handling and the HTTP endpoint
/// (on `port` when `telemetry.http_addr` is `auto`).
///
/// # Errors
/// A configuration error, signal handlers that cannot be installed, or the
/// endpoint's address cannot be bound.
pub async fn start(args: &CommonArgs, port: u16) -> Result<Started, StartError> {
    let config = args.load()?;
    telemetry::init_logging(config.telemetry.log_format);
    let shutdown = crate::shutdown::on_signals().map_err(StartError::Signals)?;
    let health = telemetry::health().clone();
    let addr = endpoint_addr(&config.telemetry.http_addr, port);
    let http = telemetry::serve_http(&addr, health.clone(), shutdown.child_token())
        .await
        .map_err(|source| StartError::Endpoint { addr, source })?;
    Ok(Started {
        config,
        shutdown,
        health,
        http_addr: http.map(|(addr, _)| addr),
    })
}

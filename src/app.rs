//! What every binary does before its stage runs: flags common to all, config
//! loading, logging, the `/metrics` + `/healthz` endpoint and signal handling.

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
    #[error("binding the metrics and health endpoint {addr}: {source}")]
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

/// Loads config, starts logging, signal handling and the HTTP endpoint.
///
/// # Errors
/// A configuration error, signal handlers that cannot be installed, or the
/// endpoint's address cannot be bound.
pub async fn start(args: &CommonArgs) -> Result<Started, StartError> {
    let config = args.load()?;
    telemetry::init_logging(config.telemetry.log_format);
    let shutdown = crate::shutdown::on_signals().map_err(StartError::Signals)?;
    let health = Health::new();
    let http = telemetry::serve_http(
        &config.telemetry.http_addr,
        health.clone(),
        shutdown.child_token(),
    )
    .await
    .map_err(|source| StartError::Endpoint {
        addr: config.telemetry.http_addr.clone(),
        source,
    })?;
    Ok(Started {
        config,
        shutdown,
        health,
        http_addr: http.map(|(addr, _)| addr),
    })
}

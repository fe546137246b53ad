//! Shutdown: one [`CancellationToken`] tree for the whole process.
//!
//! The first SIGINT or SIGTERM cancels the root token; every task selects on its
//! child token and drains within its own deadline. A second signal exits at once.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// How long a stage may take to drain after the first signal.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(15);

/// Returns the root token, cancelled on the first SIGINT/SIGTERM; the second
/// signal exits the process with status 130.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let cancel = token.clone();
    // Lives as long as the process: it is the process's signal handler.
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                tracing::info!("shutdown requested; draining (a second signal exits at once)");
                cancel.cancel();
            } else {
                tracing::warn!("second signal; exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

/// The longest wait between two attempts of [`retry_until_cancelled`].
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, logging `waiting` with each failure and
/// backing off (from 100 ms, doubling, at most [`MAX_RETRY_BACKOFF`]); `None`
/// when `shutdown` came first. For waits on a service that is down or still
/// starting (etcd, the broker's group coordinator, MongoDB).
pub async fn retry_until_cancelled<T, E, F, Fut>(
    shutdown: &CancellationToken,
    waiting: &str,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{waiting}");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
        }
    }
}

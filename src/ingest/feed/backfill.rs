//! REST backfill: the exchange's recent-trades endpoint, for the trades a
//! websocket missed.
//!
//! The feed task asks for a symbol's latest trades (as many as the endpoint
//! returns in one call, [`ConnectionLimits::rest_max_trades`]) when a
//! trade-id gap has waited its grace period, and after a reconnect for a
//! symbol that stayed quiet (a "resync": were trades missed while we were
//! away?). The rows go back through the symbol's sequencer, which keeps the
//! missing ones and drops the rest as duplicates. A gap older than the newest
//! `rest_max_trades` trades cannot be filled from this endpoint and is
//! reported instead (see `output` for the gap marker).
//!
//! [`ConnectionLimits::rest_max_trades`]: crate::ingest::venues::ConnectionLimits

use std::time::Duration;

use crate::ingest::connection::http::{self, HttpError};
use crate::ingest::venues::{receive_time_now, ExchangeError, Feed};
use crate::model::Trade;

/// Errors of one backfill request.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("GET {url}: HTTP {status}: {excerpt}")]
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl BackfillError {
    /// Whether asking again cannot help (a malformed URL, a symbol the
    /// exchange does not know).
    pub fn is_terminal(&self) -> bool {
        match self {
            BackfillError::Http(e) => e.is_terminal(),
            BackfillError::Status { status, .. } => *status == 400 || *status == 404,
            BackfillError::Exchange(e) => e.is_terminal(),
        }
    }
}

/// The URL of `symbol`'s recent-trades call under `rest_base_url`.
pub fn recent_trades_url(feed: Feed, rest_base_url: &str, symbol: &str) -> String {
    format!(
        "{}{}",
        rest_base_url.trim_end_matches('/'),
        feed.rest_trades_path(symbol, feed.limits().rest_max_trades)
    )
}

/// Fetches `symbol`'s most recent trades, oldest first.
///
/// # Errors
/// The request failed, the server answered with an error status, or the body
/// is not the exchange's recent-trades response.
pub async fn recent_trades(
    feed: Feed,
    rest_base_url: &str,
    symbol: &str,
    timeout: Duration,
) -> Result<Vec<Trade>, BackfillError> {
    let url = recent_trades_url(feed, rest_base_url, symbol);
    let response = http::get(&url, timeout).await?;
    let received = receive_time_now();
    if !(200..300).contains(&response.status) {
        // The exchange's own error body says more than the status, when it parses.
        if let Err(e) = feed.parse_rest_trades(symbol, &response.body, received) {
            if matches!(e, ExchangeError::Rejected { .. }) {
                return Err(e.into());
            }
        }
        let text = String::from_utf8_lossy(&response.body);
        return Err(BackfillError::Status {
            url,
            status: response.status,
            excerpt: text.chars().take(200).collect(),
        });
    }
    Ok(feed.parse_rest_trades(symbol, &response.body, received)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::venues::binance;

    #[test]
    fn urls_join_base_and_path() {
        let feed = Feed::Binance(binance::Feed::Trade);
        for base in ["http://127.0.0.1:9/", "http://127.0.0.1:9"] {
            let url = recent_trades_url(feed, base, "BTCUSDT");
            assert!(
                url.starts_with("http://127.0.0.1:9/api/v3/trades?"),
                "{url}"
            );
            assert!(url.contains("symbol=BTCUSDT"), "{url}");
        }
    }
}

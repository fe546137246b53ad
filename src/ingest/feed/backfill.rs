//! REST backfill: the exchange's REST trades endpoints, for the trades a
//! websocket missed.
//!
//! - **Gaps.** When a trade-id gap has waited its grace period, the feed task
//!   asks for the missing trades ([`gap_trades`]). Where the exchange pages
//!   its history by trade id, the backfill pages through it until the gap is
//!   covered: forward from just after the last record released before the
//!   gap (Binance `fromId`), or back from just before the first record held
//!   behind it (OKX `history-trades`, Coinbase `after`), at most
//!   [`MAX_GAP_PAGES`] pages of the exchange's largest page size,
//!   [`PAGE_PAUSE`] apart (each exchange's REST weight limits allow far more).
//!   Where it does not (Bybit; Upbit, whose ids are not ordered), one page of
//!   recent trades is all there is ([`recent_trades`]).
//! - **Resyncs.** After a reconnect, a symbol that stayed quiet asks for its
//!   recent trades: were trades missed while we were away?
//!
//! The rows go back through the symbol's sequencer, which keeps the missing
//! ones and drops the rest as duplicates. What is still missing after that
//! (older than the history reaches, or past the page cap) is reported as a
//! gap marker (see `output`).
//!
//! [`ConnectionLimits::rest_max_trades`]: crate::ingest::venues::ConnectionLimits

use std::time::Duration;

use crate::ingest::connection::http::{self, HttpError};
use crate::ingest::venues::{receive_time_now, ExchangeError, Feed, HistoryPage};
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
    get_trades(feed, url, symbol, timeout).await
}

/// Most history pages one gap's backfill fetches.
pub const MAX_GAP_PAGES: usize = 20;
/// Pause between two history pages of one backfill.
pub const PAGE_PAUSE: Duration = Duration::from_millis(100);

/// A trade-id gap to fill: raw ids `first_missing..=last_missing`, between
/// the records with own ids `after` (released) and `before` (held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub first_missing: u64,
    pub last_missing: u64,
    pub after: Option<u64>,
    pub before: Option<u64>,
}

/// The trades of `gap`, oldest first: paged through the exchange's history
/// where it has one, else its recent trades.
///
/// # Errors
/// As [`recent_trades`], for any page.
pub async fn gap_trades(
    feed: Feed,
    rest_base_url: &str,
    symbol: &str,
    gap: Gap,
    timeout: Duration,
) -> Result<Vec<Trade>, BackfillError> {
    let limit = feed.limits().rest_max_trades;
    let base = rest_base_url.trim_end_matches('/');
    let forward = gap
        .after
        .and_then(|after| feed.rest_history_path(symbol, HistoryPage::From(after + 1), limit));
    let backward = gap
        .before
        .and_then(|before| feed.rest_history_path(symbol, HistoryPage::Before(before), limit));
    let (mut path, forward) = match (forward, backward) {
        (Some(path), _) => (path, true),
        (None, Some(path)) => (path, false),
        (None, None) => return recent_trades(feed, rest_base_url, symbol, timeout).await,
    };
    let mut trades: Vec<Trade> = Vec::new();
    for page in 0..MAX_GAP_PAGES {
        if page > 0 {
            tokio::time::sleep(PAGE_PAUSE).await;
        }
        let rows = get_trades(feed, format!("{base}{path}"), symbol, timeout).await?;
        // The page's far edge: its newest record going forward, its oldest
        // going back (own id for the next page, raw id for the gap).
        let edge = if forward {
            rows.iter()
                .filter_map(|t| Some((t.sequence()?, last_raw_id(t)?)))
                .max()
        } else {
            rows.iter()
                .filter_map(|t| Some((t.sequence()?, first_raw_id(t)?)))
                .min()
        };
        let Some((own, raw)) = edge else { break };
        trades.extend(rows);
        let (covered, next) = if forward {
            (raw >= gap.last_missing, HistoryPage::From(own + 1))
        } else {
            (raw <= gap.first_missing, HistoryPage::Before(own))
        };
        match feed.rest_history_path(symbol, next, limit) {
            Some(next) if !covered => path = next,
            _ => break,
        }
    }
    // Oldest first, each record once (pages going back overlap nothing, but
    // arrive newest page first).
    trades.sort_by_key(|t| t.sequence());
    trades.dedup_by(|a, b| a.trade_id == b.trade_id);
    Ok(trades)
}

fn first_raw_id(trade: &Trade) -> Option<u64> {
    trade.first_trade_id.or_else(|| trade.sequence())
}

fn last_raw_id(trade: &Trade) -> Option<u64> {
    trade.last_trade_id.or_else(|| trade.sequence())
}

/// One REST call whose body is a list of trades.
async fn get_trades(
    feed: Feed,
    url: String,
    symbol: &str,
    timeout: Duration,
) -> Result<Vec<Trade>, BackfillError> {
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

//! What the operator CLI reads and writes in etcd: desired feeds
//! (`tickfetch feeds add|remove|list`), registered workers
//! (`tickfetch workers`) and the cluster's state per feed
//! (`tickfetch status`). Each function returns typed rows; the CLI prints
//! them as a table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::keyspace::{
    feed_id, AssignmentRecord, DesiredFeed, DrainRequest, ProgressRecord, WorkerRecord,
};
use super::store::{Store, StoreError};
use crate::ingest::venues::{self, Feed};
use crate::model::{Exchange, Millis};

/// Errors of the operator commands.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A feed that cannot be run: unknown channel, or a symbol the exchange
    /// does not spell that way.
    #[error("{exchange} {symbol}: {problem}")]
    BadFeed {
        exchange: Exchange,
        symbol: String,
        problem: String,
    },
    #[error("no feed {exchange}/{symbol} in etcd (tickfetch feeds list shows them)")]
    NoSuchFeed { exchange: Exchange, symbol: String },
    #[error("no worker {0} is registered (tickfetch workers lists them)")]
    NoSuchWorker(String),
}

/// Checks a feed and returns it as stored: the symbol in the exchange's
/// spelling (upper case), the channel the exchange's default when absent.
///
/// # Errors
/// [`AdminError::BadFeed`] naming what is wrong.
pub fn desired_feed(
    exchange: Exchange,
    channel: Option<&str>,
    symbol: &str,
    replicas: u32,
) -> Result<DesiredFeed, AdminError> {
    let symbol = symbol.trim().to_ascii_uppercase();
    let bad = |problem: String| AdminError::BadFeed {
        exchange,
        symbol: symbol.clone(),
        problem,
    };
    let feed: Feed = match channel {
        Some(name) => format!("{exchange}:{name}").parse(),
        None => exchange.as_str().parse(),
    }
    .map_err(|e: venues::FeedNameError| bad(e.to_string()))?;
    if symbol.is_empty() || symbol.contains('/') {
        return Err(bad(
            "a symbol is the exchange's own, e.g. BTCUSDT or BTC-USD".into(),
        ));
    }
    venues::instrument(exchange, &symbol).map_err(|e| bad(e.to_string()))?;
    Ok(DesiredFeed {
        exchange,
        channel: feed.name().to_string(),
        symbol,
        replicas,
    })
}

/// Adds (or updates) desired feeds in one transaction per 100.
///
/// # Errors
/// etcd unreachable.
pub async fn add_feeds(store: &Store, feeds: &[DesiredFeed]) -> Result<(), AdminError> {
    for chunk in feeds.chunks(100) {
        let batch = chunk
            .iter()
            .fold(store.batch(), |batch, feed| batch.put(feed));
        store.commit(batch).await?;
    }
    Ok(())
}

/// Removes a desired feed; the master then stops it.
///
/// # Errors
/// [`AdminError::NoSuchFeed`], or etcd unreachable.
pub async fn remove_feed(
    store: &Store,
    exchange: Exchange,
    symbol: &str,
) -> Result<(), AdminError> {
    let symbol = symbol.trim().to_ascii_uppercase();
    let exchange_name = exchange.to_string();
    if store
        .delete::<DesiredFeed, &str>(&[exchange_name.as_str(), symbol.as_str()])
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NoSuchFeed { exchange, symbol })
    }
}

/// Every desired feed.
///
/// # Errors
/// etcd unreachable.
pub async fn list_feeds(store: &Store) -> Result<Vec<DesiredFeed>, AdminError> {
    Ok(store
        .list::<DesiredFeed, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|r| r.value)
        .collect())
}

/// One registered worker, as `tickfetch workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub version: String,
    pub capacity: u32,
    pub address: String,
    pub draining: bool,
    /// Seconds since it registered (its current lease).
    pub lease_age_s: f64,
    pub primaries: usize,
    pub replicas: usize,
}

/// The registered workers with the feeds they hold.
///
/// # Errors
/// etcd unreachable.
pub async fn workers(store: &Store, now: Millis) -> Result<Vec<WorkerRow>, AdminError> {
    let workers = store.list::<WorkerRecord, &str>(&[]).await?;
    let assignments = store.list::<AssignmentRecord, &str>(&[]).await?;
    Ok(workers
        .records
        .into_iter()
        .map(|w| {
            let w = w.value;
            let primaries = assignments
                .records
                .iter()
                .filter(|a| a.value.primary == w.id)
                .count();
            let replicas = assignments
                .records
                .iter()
                .filter(|a| a.value.replicas.contains(&w.id))
                .count();
            WorkerRow {
                lease_age_s: (now - w.registered).max(0) as f64 / 1000.0,
                id: w.id,
                version: w.version,
                capacity: w.capacity,
                address: w.address,
                draining: w.draining,
                primaries,
                replicas,
            }
        })
        .collect())
}

/// Asks worker `id` to drain: it marks itself draining, the master moves
/// its feeds to other workers by planned handover, and the worker exits 0
/// once it holds none.
///
/// # Errors
/// [`AdminError::NoSuchWorker`], or etcd unreachable.
pub async fn drain_worker(store: &Store, id: &str, now: Millis) -> Result<(), AdminError> {
    if store.get::<WorkerRecord, _>(&[id]).await?.is_none() {
        return Err(AdminError::NoSuchWorker(id.to_string()));
    }
    store
        .put(&DrainRequest {
            id: id.to_string(),
            requested: now,
        })
        .await?;
    Ok(())
}

/// One feed, as `tickfetch status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FeedStatus {
    pub exchange: Exchange,
    pub symbol: String,
    pub channel: String,
    pub replicas_wanted: u32,
    /// `None`: not assigned (no live worker).
    pub primary: Option<String>,
    pub replicas: Vec<String>,
    /// 0 while a new primary's epoch is pending.
    pub epoch: u64,
    /// Seconds since the last published trade's exchange time.
    pub last_trade_age_s: Option<f64>,
    pub last_trade_id: Option<String>,
    /// Trades per second over the primary's last progress interval.
    pub trades_per_s: Option<f64>,
    /// Whether the progress record is from the current primary and epoch.
    pub progress_current: bool,
}

/// Every desired feed with its assignment and its primary's progress.
///
/// # Errors
/// etcd unreachable.
pub async fn status(store: &Store, now: Millis) -> Result<Vec<FeedStatus>, AdminError> {
    let desired = store.list::<DesiredFeed, &str>(&[]).await?;
    let assignments: BTreeMap<String, AssignmentRecord> = store
        .list::<AssignmentRecord, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|r| (feed_id(r.value.exchange, &r.value.symbol), r.value))
        .collect();
    let progress: BTreeMap<String, ProgressRecord> = store
        .list::<ProgressRecord, &str>(&[])
        .await?
        .records
        .into_iter()
        .map(|r| (feed_id(r.value.exchange, &r.value.symbol), r.value))
        .collect();
    Ok(desired
        .records
        .into_iter()
        .map(|r| {
            let feed = r.value;
            let id = feed.id();
            let assignment = assignments.get(&id);
            let progress = progress.get(&id);
            FeedStatus {
                primary: assignment.map(|a| a.primary.clone()),
                replicas: assignment.map(|a| a.replicas.clone()).unwrap_or_default(),
                epoch: assignment.map_or(0, |a| a.epoch),
                last_trade_age_s: progress
                    .filter(|p| !p.last_trade_id.is_empty())
                    .map(|p| (now - p.last_trade_time).max(0) as f64 / 1000.0),
                last_trade_id: progress
                    .filter(|p| !p.last_trade_id.is_empty())
                    .map(|p| p.last_trade_id.clone()),
                trades_per_s: progress
                    .filter(|p| p.recent_ms > 0)
                    .map(|p| p.recent_trades as f64 * 1000.0 / p.recent_ms as f64),
                progress_current: match (assignment, progress) {
                    (Some(a), Some(p)) => a.primary == p.worker && a.epoch == p.epoch,
                    _ => false,
                },
                exchange: feed.exchange,
                symbol: feed.symbol,
                channel: feed.channel,
                replicas_wanted: feed.replicas,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (exchange, channel, symbol, Ok((channel, symbol)) stored or Err(text in the error)).
    type Case<'a> = (
        Exchange,
        Option<&'a str>,
        &'a str,
        Result<(&'a str, &'a str), &'a str>,
    );

    #[test]
    fn feeds_are_checked_before_they_are_stored() {
        let cases: [Case; 5] = [
            (
                Exchange::Binance,
                None,
                " btcusdt ",
                Ok(("trade", "BTCUSDT")),
            ),
            (
                Exchange::Binance,
                Some("trade"),
                "ETHUSDT",
                Ok(("trade", "ETHUSDT")),
            ),
            (
                Exchange::Binance,
                Some("candles"),
                "ETHUSDT",
                Err("candles"),
            ),
            (Exchange::Coinbase, None, "BTCUSD", Err("BTCUSD")),
            (Exchange::Okx, None, "", Err("symbol")),
        ];
        for (exchange, channel, symbol, want) in cases {
            let got = desired_feed(exchange, channel, symbol, 1);
            match (got, want) {
                (Ok(feed), Ok((channel, symbol))) => {
                    assert_eq!(
                        (feed.channel.as_str(), feed.symbol.as_str()),
                        (channel, symbol)
                    );
                }
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{symbol}: {e}");
                }
                (got, want) => panic!("{exchange} {symbol}: got {got:?}, want {want:?}"),
            }
        }
    }
}

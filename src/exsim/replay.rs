//! Replay of recorded exchange frames.
//!
//! [`load`] reads recordings (the shared `*_extract_*.jsonl` files, or any
//! file `ingest::decode` understands) through the same adapters the worker
//! runs, so each recorded frame becomes normalised trades. A file's exchange
//! comes from its directory (`…/exchanges/okx/x.jsonl`) or its name
//! (`okx_v5_trades_….jsonl`); a directory is searched for `*.jsonl` files.
//!
//! [`run`] then publishes one exchange's trades in recorded order, spaced as
//! they were received (`recv_ts`), divided by `speed` (0: as fast as
//! possible). Trades keep their recorded ids, decimals and exchange times;
//! each connection re-encodes them in its own feed's dialect.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::market::{recorded_series, ExchangeBook, Series};
use super::{ReplayConfig, ReplayStart, SimError};
use crate::ingest::decode::decode_reader;
use crate::model::{Exchange, Trade};
use crate::shutdown::CancellationToken;

/// Directories searched below a replay directory.
const MAX_SCAN_DEPTH: usize = 4;

/// The exchange a recording belongs to, from its parent directories or its
/// file name.
pub fn exchange_of(path: &Path) -> Option<Exchange> {
    let from_dirs = path
        .ancestors()
        .skip(1)
        .take(3)
        .filter_map(|dir| dir.file_name()?.to_str())
        .find_map(|name| name.parse::<Exchange>().ok());
    from_dirs.or_else(|| {
        let name = path.file_name()?.to_str()?;
        let prefix = name.split(['_', '-', '.']).next()?;
        prefix.parse().ok()
    })
}

fn collect_files(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), SimError> {
    let read_dir = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| SimError::Io {
            context: format!("reading directory {}", p.display()),
            source,
        })
    };
    if path.is_dir() {
        if depth > MAX_SCAN_DEPTH {
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = read_dir(path)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                collect_files(&entry, depth + 1, out)?;
            } else if entry.extension().is_some_and(|e| e == "jsonl") {
                out.push(entry);
            }
        }
        Ok(())
    } else if path.is_file() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(SimError::Config(format!(
            "replay path {} does not exist",
            path.display()
        )))
    }
}

/// Read every recording under `config.paths`, keeping the exchanges in
/// `exchanges`: each exchange's trades, ordered by receive time (stable, so
/// file order breaks ties).
///
/// # Errors
/// [`SimError::Config`] for a path that does not exist or a file whose
/// exchange cannot be told; [`SimError::Io`] when a file cannot be read.
pub fn load(
    config: &ReplayConfig,
    exchanges: &[Exchange],
) -> Result<BTreeMap<Exchange, Vec<Trade>>, SimError> {
    let mut files = Vec::new();
    for path in &config.paths {
        collect_files(path, 0, &mut files)?;
    }
    let mut out: BTreeMap<Exchange, Vec<Trade>> = BTreeMap::new();
    for file in files {
        let exchange = exchange_of(&file).ok_or_else(|| {
            SimError::Config(format!(
                "cannot tell the exchange of {} (put it under a directory named after the \
                 exchange, or start its name with it)",
                file.display()
            ))
        })?;
        if !exchanges.contains(&exchange) {
            continue;
        }
        let reader = File::open(&file).map_err(|source| SimError::Io {
            context: format!("opening {}", file.display()),
            source,
        })?;
        let trades = out.entry(exchange).or_default();
        let report = decode_reader(exchange, BufReader::new(reader), 0, |trade| {
            trades.push(trade);
            Ok(())
        })
        .map_err(|e| SimError::Config(format!("{}: {e}", file.display())))?;
        tracing::info!(file = %file.display(), %exchange, %report, "loaded recording");
    }
    for trades in out.values_mut() {
        trades.sort_by_key(|t| t.receive_time);
    }
    Ok(out)
}

/// Publish `trades` to `book` with the recorded spacing divided by
/// `config.speed`, then mark the replay done and wait for cancellation.
///
/// # Errors
/// None today; the signature leaves room for a source that can fail.
pub(crate) async fn run(
    book: Arc<ExchangeBook>,
    trades: Vec<Trade>,
    config: ReplayConfig,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    if config.start == ReplayStart::FirstSubscriber {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = book.first_subscriber() => {}
        }
    }
    let started = tokio::time::Instant::now();
    let base = trades.first().map(|t| t.receive_time).unwrap_or_default();
    let mut rest = trades.as_slice();
    while let Some(first) = rest.first() {
        let same_time = rest
            .iter()
            .take_while(|t| t.receive_time == first.receive_time)
            .count();
        let (group, tail) = rest.split_at(same_time);
        rest = tail;
        if config.speed > 0.0 {
            let offset_ms = (first.receive_time - base).max(0) as f64 / config.speed;
            let at = started + Duration::from_secs_f64(offset_ms / 1000.0);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(at) => {}
            }
        } else if cancel.is_cancelled() {
            return Ok(());
        }
        publish_recorded(&book, group.to_vec());
    }
    book.replay_done.store(true, Ordering::Relaxed);
    tracing::info!(exchange = %book.exchange, "replay finished");
    cancel.cancelled().await;
    Ok(())
}

/// Publish recorded (or scripted) trades: each goes to its series (and the
/// copies derivable for the other series), batched per symbol and series in
/// input order.
pub(crate) fn publish_recorded(book: &ExchangeBook, trades: Vec<Trade>) {
    let mut batches: Vec<(String, Series, Vec<Trade>)> = Vec::new();
    for trade in trades {
        for (series, trade) in recorded_series(trade) {
            match batches
                .iter_mut()
                .find(|(symbol, s, _)| *s == series && *symbol == trade.symbol)
            {
                Some((_, _, batch)) => batch.push(trade),
                None => batches.push((trade.symbol.clone(), series, vec![trade])),
            }
        }
    }
    for (symbol, series, batch) in batches {
        book.publish(&symbol, series, batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_come_from_directories_or_names() {
        for (path, expected) in [
            (
                "/data/exchanges/okx/okx_v5_trades_extract_2022-05-13.jsonl",
                Some(Exchange::Okx),
            ),
            ("/tmp/x/binance/rec.jsonl", Some(Exchange::Binance)),
            ("/tmp/upbit_trade_SIMPLE.jsonl", Some(Exchange::Upbit)),
            ("/tmp/capture.jsonl", None),
        ] {
            assert_eq!(exchange_of(Path::new(path)), expected, "{path}");
        }
    }
}

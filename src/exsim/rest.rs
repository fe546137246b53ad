//! The exchanges' recent-trades REST endpoints, served from the history.
//!
//! Paths are the adapters' own (`rest_trades_path` and friends) below the
//! exchange prefix, so a worker whose REST base URL is
//! `http://127.0.0.1:P/binance` calls them unchanged:
//!
//! | exchange | path | paging |
//! | --- | --- | --- |
//! | Binance | `/api/v3/trades?symbol=&limit=` (raw), `/api/v3/historicalTrades?symbol=&fromId=&limit=` (raw), `/api/v3/aggTrades?symbol=&fromId=&limit=` (aggregated) | `fromId`: ids ≥ it, oldest first |
//! | Upbit | `/v1/trades/ticks?market=&count=&cursor=` | `cursor`: trades before that `sequential_id` |
//! | Coinbase | `/products/{id}/trades?limit=&after=` (Exchange), `/api/v3/brokerage/market/products/{id}/ticker?limit=` (Advanced) | `after`: ids < it |
//! | Bybit | `/v5/market/recent-trade?category=&symbol=&limit=` | — |
//! | OKX | `/api/v5/market/trades?instId=&limit=`, `/api/v5/market/history-trades?instId=&after=&limit=` | `after`: ids < it |
//!
//! Bodies come from the adapters' `encode_rest_trades` (newest or oldest
//! first, as each exchange lists them). Unknown symbols get the exchange's
//! error body. Limits are clamped to each exchange's maximum.
//!
//! Each exchange's instrument list is served too, for every symbol the
//! simulator knows (its configured instrument, else the exchange's built-in
//! rule), in the exchange's own shape (`encode_instruments`):
//!
//! | exchange | path | notes |
//! | --- | --- | --- |
//! | Binance | `/api/v3/exchangeInfo` | every symbol `TRADING` |
//! | Upbit | `/v1/market/all[?isDetails=true]` | |
//! | Coinbase | `/products` | |
//! | Bybit | `/v5/market/instruments-info?category=spot\|linear\|inverse` | one page; every symbol in every category |
//! | OKX | `/api/v5/public/instruments?instType=SPOT` | `BASE-QUOTE` ids under SPOT, longer ids under SWAP |

use std::collections::VecDeque;

use serde_json::json;

use super::encode;
use super::http::{Request, Response};
use super::market::{ExchangeBook, ExchangeStats, Series};
use crate::ingest::venues::{binance, bybit, coinbase, okx, upbit, Feed};
use crate::model::{Exchange, Trade};

/// Which trades of a history a request wants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Select {
    /// The newest `n`.
    Latest(usize),
    /// The first `n` with an id ≥ the given one.
    FromId(u64, usize),
    /// The newest `n` with an id < the given one.
    Before(u64, usize),
    /// The newest `n` before the trade with this id (by position: Upbit ids
    /// are not ordered).
    BeforeCursor(String, usize),
}

fn select(history: &VecDeque<Trade>, how: &Select) -> Vec<Trade> {
    let id = |t: &Trade| t.sequence().unwrap_or(0);
    let newest = |trades: Vec<&Trade>, n: usize| -> Vec<Trade> {
        let skip = trades.len().saturating_sub(n);
        trades.into_iter().skip(skip).cloned().collect()
    };
    match how {
        Select::Latest(n) => newest(history.iter().collect(), *n),
        Select::FromId(from, n) => history
            .iter()
            .filter(|t| id(t) >= *from)
            .take(*n)
            .cloned()
            .collect(),
        Select::Before(before, n) => {
            newest(history.iter().filter(|t| id(t) < *before).collect(), *n)
        }
        Select::BeforeCursor(cursor, n) => match history.iter().position(|t| &t.trade_id == cursor)
        {
            Some(at) => newest(history.iter().take(at).collect(), *n),
            None => Vec::new(),
        },
    }
}

fn limit(request: &Request, key: &str, default: usize, max: usize) -> usize {
    request
        .param(key)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

fn id_param(request: &Request, key: &str) -> Option<u64> {
    request.param(key).and_then(|v| v.parse().ok())
}

/// Encode through the adapter; a trade the exchange cannot express is a 500.
fn body(feed: Feed, trades: &[Trade]) -> Response {
    encoded(super::encode::encode_rest_trades(feed, trades))
}

/// A 200 with the encoded body, or a 500 saying why there is none.
fn encoded(text: Result<String, crate::ingest::venues::ExchangeError>) -> Response {
    match text {
        Ok(text) => Response::json(200, text),
        Err(e) => Response::error(500, &e.to_string()),
    }
}

/// Answer a REST request below `/{exchange}`; `path` is what follows it.
pub(crate) fn handle(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    ExchangeStats::add(&book.stats.rest_requests, 1);
    if request.method != "GET" {
        return Response::error(405, "the simulated REST endpoints answer GET only");
    }
    match book.exchange {
        Exchange::Binance => binance_rest(book, path, request),
        Exchange::Upbit => upbit_rest(book, path, request),
        Exchange::Coinbase => coinbase_rest(book, path, request),
        Exchange::Bybit => bybit_rest(book, path, request),
        Exchange::Okx => okx_rest(book, path, request),
    }
}

fn binance_rest(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    if path == binance::REST_INSTRUMENTS_PATH {
        let now = crate::ingest::venues::receive_time_now();
        return encoded(encode::binance::encode_instruments(
            &book.instruments(),
            now,
        ));
    }
    let (feed, series) = match path {
        binance::REST_TRADES_PATH | binance::REST_HISTORICAL_TRADES_PATH => {
            (binance::Feed::Trade, Series::Raw)
        }
        binance::REST_AGG_TRADES_PATH => (binance::Feed::AggTrade, Series::Aggregated),
        _ => return Response::not_found(path),
    };
    let Some(symbol) = request.param("symbol").filter(|s| !s.is_empty()) else {
        return Response::json(
            400,
            json!({"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}).to_string(),
        );
    };
    let n = limit(request, "limit", 500, binance::REST_MAX_LIMIT);
    let how = match id_param(request, "fromId") {
        Some(from) => Select::FromId(from, n),
        None => Select::Latest(n),
    };
    match book.with_history(symbol, series, |h| select(h, &how)) {
        Some(trades) => body(Feed::Binance(feed), &trades),
        None => Response::json(
            400,
            json!({"code": -1121, "msg": "Invalid symbol."}).to_string(),
        ),
    }
}

fn upbit_rest(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    if path == upbit::REST_INSTRUMENTS_PATH {
        let details = request.param("isDetails") == Some("true");
        return encoded(encode::upbit::encode_instruments(
            &book.instruments(),
            details,
        ));
    }
    if path != upbit::REST_TRADES_PATH {
        return Response::not_found(path);
    }
    let not_found = || {
        Response::json(
            404,
            json!({"error": {"name": "404", "message": "Code not found"}}).to_string(),
        )
    };
    let Some(market) = request.param("market") else {
        return not_found();
    };
    let n = limit(request, "count", 1, upbit::REST_MAX_COUNT);
    let how = match request.param("cursor") {
        Some(cursor) => Select::BeforeCursor(cursor.to_string(), n),
        None => Select::Latest(n),
    };
    match book.with_history(market, Series::Raw, |h| select(h, &how)) {
        Some(trades) => body(Feed::Upbit(upbit::Feed::Default), &trades),
        None => not_found(),
    }
}

fn coinbase_rest(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    if path == coinbase::REST_INSTRUMENTS_PATH {
        return encoded(encode::coinbase::encode_instruments(&book.instruments()));
    }
    let exchange_route = path
        .strip_prefix("/products/")
        .and_then(|p| p.strip_suffix("/trades"));
    let advanced_route = path
        .strip_prefix("/api/v3/brokerage/market/products/")
        .and_then(|p| p.strip_suffix("/ticker"));
    let (product, feed) = match (exchange_route, advanced_route) {
        (Some(product), _) => (product, coinbase::Feed::ExchangeMatches),
        (_, Some(product)) => (product, coinbase::Feed::AdvancedMarketTrades),
        _ => return Response::not_found(path),
    };
    let n = limit(request, "limit", 100, coinbase::REST_MAX_LIMIT);
    let how = match id_param(request, "after") {
        Some(after) if feed == coinbase::Feed::ExchangeMatches => Select::Before(after, n),
        _ => Select::Latest(n),
    };
    match book.with_history(product, Series::Raw, |h| select(h, &how)) {
        Some(trades) => body(Feed::Coinbase(feed), &trades),
        None => Response::json(404, json!({"message": "NotFound"}).to_string()),
    }
}

fn bybit_rest(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    if path != bybit::REST_TRADES_PATH && path != bybit::REST_INSTRUMENTS_PATH {
        return Response::not_found(path);
    }
    let now = crate::ingest::venues::receive_time_now();
    let error = |code: i64, message: &str| {
        Response::json(
            200,
            json!({"retCode": code, "retMsg": message, "result": {}, "retExtInfo": {}, "time": now})
                .to_string(),
        )
    };
    let feed = match request.param("category") {
        Some("spot") => bybit::Feed::Spot,
        Some("linear") => bybit::Feed::Linear,
        Some("inverse") => bybit::Feed::Inverse,
        _ => return error(10001, "Illegal category"),
    };
    if path == bybit::REST_INSTRUMENTS_PATH {
        return encoded(encode::bybit::encode_instruments(
            &book.instruments(),
            feed.as_str(),
            now,
        ));
    }
    let Some(symbol) = request.param("symbol") else {
        return error(10001, "symbol is required");
    };
    let max = Feed::Bybit(feed).limits().rest_max_trades;
    let n = limit(request, "limit", max.min(60), max);
    match book.with_history(symbol, Series::Raw, |h| select(h, &Select::Latest(n))) {
        Some(trades) => body(Feed::Bybit(feed), &trades),
        None => error(10001, "Not supported symbols"),
    }
}

fn okx_rest(book: &ExchangeBook, path: &str, request: &Request) -> Response {
    let error = |code: &str, message: &str| {
        Response::json(
            200,
            json!({"code": code, "msg": message, "data": []}).to_string(),
        )
    };
    let (max, history_route) = match path {
        okx::REST_TRADES_PATH => (okx::REST_MAX_LIMIT, false),
        okx::REST_HISTORY_TRADES_PATH => (okx::REST_HISTORY_MAX_LIMIT, true),
        okx::REST_INSTRUMENTS_PATH => {
            let spot = match request.param("instType") {
                None | Some("") => return error("50014", "Parameter instType can not be empty."),
                Some("SPOT" | "MARGIN") => true,
                Some("SWAP" | "FUTURES" | "OPTION") => false,
                Some(_) => return error("51000", "Parameter instType error"),
            };
            let instruments: Vec<_> = book
                .instruments()
                .into_iter()
                .filter(|i| okx::listing_covers(&i.symbol) == spot)
                .collect();
            let inst_type = request.param("instType").unwrap_or("SPOT");
            return encoded(encode::okx::encode_instruments(&instruments, inst_type));
        }
        _ => return Response::not_found(path),
    };
    let Some(inst_id) = request.param("instId") else {
        return error("50014", "Parameter instId can not be empty.");
    };
    let n = limit(request, "limit", 100, max);
    let how = match id_param(request, "after") {
        Some(after) if history_route => Select::Before(after, n),
        _ => Select::Latest(n),
    };
    match book.with_history(inst_id, Series::Raw, |h| select(h, &how)) {
        Some(trades) => body(Feed::Okx(okx::Feed::TradesAll), &trades),
        None => error("51001", "Instrument ID doesn't exist."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;
    use rust_decimal::Decimal;

    fn history(ids: &[u64]) -> VecDeque<Trade> {
        ids.iter()
            .map(|id| Trade {
                exchange: Exchange::Coinbase,
                symbol: "BTC-USD".into(),
                instrument: "BTC-USD".into(),
                trade_id: id.to_string(),
                price: Decimal::ONE,
                quantity: Decimal::ONE,
                side: Side::Buy,
                exchange_time: 0,
                receive_time: 0,
                first_trade_id: None,
                last_trade_id: None,
            })
            .collect()
    }

    #[test]
    fn selections() {
        let h = history(&[10, 11, 12, 13, 14]);
        let ids = |how: Select| -> Vec<u64> {
            select(&h, &how)
                .iter()
                .map(|t| t.sequence().unwrap())
                .collect()
        };
        assert_eq!(ids(Select::Latest(2)), [13, 14]);
        assert_eq!(ids(Select::Latest(9)), [10, 11, 12, 13, 14]);
        assert_eq!(ids(Select::FromId(12, 2)), [12, 13]);
        assert_eq!(ids(Select::Before(13, 2)), [11, 12]);
        assert_eq!(ids(Select::BeforeCursor("12".into(), 5)), [10, 11]);
        assert!(ids(Select::BeforeCursor("99".into(), 5)).is_empty());
    }
}

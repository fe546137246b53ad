//! Trades into each exchange's own frames and REST bodies: the inverse of
//! the adapters' parsers (`ingest::venues`), which only the simulator (and
//! round-trip tests) need. Each module builds the adapter's public wire
//! structs, so what a worker parses from the simulator is what it parses in
//! production.
//!
//! [`encode_trades`] and [`encode_rest_trades`] are the one dispatch from a
//! `Feed` to its exchange's encoder. Each module's `encode_instruments`
//! writes the exchange's instrument list (the metadata endpoints the
//! simulator serves) from the adapter's own wire structs.

pub mod binance;
pub mod bybit;
pub mod coinbase;
pub mod okx;
pub mod upbit;

pub(crate) use crate::ingest::venues::instruments::Instrument;
pub(crate) use crate::ingest::venues::{request_error, ExchangeError, WireFrame};
pub(crate) use crate::model::{Exchange, Millis, Side, Trade};
pub(crate) use rust_decimal::Decimal;
pub(crate) use serde_json::value::RawValue;
pub(crate) use std::borrow::Cow;

/// The frames `feed`'s exchange would send for `trades`, in its dialect.
///
/// # Errors
/// [`ExchangeError::Encode`] when a trade lacks what the wire form needs
/// (an unknown side, a non-numeric id where the exchange's is numeric…).
pub fn encode_trades(
    feed: crate::ingest::venues::Feed,
    trades: &[Trade],
) -> Result<Vec<WireFrame>, ExchangeError> {
    match feed {
        crate::ingest::venues::Feed::Binance(f) => binance::encode_trades(f, trades),
        crate::ingest::venues::Feed::Upbit(f) => upbit::encode_trades(f, trades),
        crate::ingest::venues::Feed::Coinbase(f) => coinbase::encode_trades(f, trades),
        crate::ingest::venues::Feed::Bybit(f) => bybit::encode_trades(f, trades),
        crate::ingest::venues::Feed::Okx(f) => okx::encode_trades(f, trades),
    }
}

/// The recent-trades REST body `feed`'s exchange would return for `trades`.
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(
    feed: crate::ingest::venues::Feed,
    trades: &[Trade],
) -> Result<String, ExchangeError> {
    match feed {
        crate::ingest::venues::Feed::Binance(f) => binance::encode_rest_trades(f, trades),
        crate::ingest::venues::Feed::Upbit(f) => upbit::encode_rest_trades(f, trades),
        crate::ingest::venues::Feed::Coinbase(f) => coinbase::encode_rest_trades(f, trades),
        crate::ingest::venues::Feed::Bybit(f) => bybit::encode_rest_trades(f, trades),
        crate::ingest::venues::Feed::Okx(f) => okx::encode_rest_trades(f, trades),
    }
}

pub(crate) fn encode_error(
    exchange: Exchange,
    trade: &Trade,
    problem: impl Into<String>,
) -> ExchangeError {
    ExchangeError::Encode {
        exchange,
        trade_id: trade.trade_id.clone(),
        problem: problem.into(),
    }
}

/// The JSON-number text of a decimal (`Decimal`'s `Display` keeps its scale).
pub(crate) fn decimal_raw_value(
    exchange: Exchange,
    trade: &Trade,
    value: Decimal,
) -> Result<Box<serde_json::value::RawValue>, ExchangeError> {
    serde_json::value::RawValue::from_string(value.to_string())
        .map_err(|e| encode_error(exchange, trade, format!("decimal {value} as JSON: {e}")))
}

pub(crate) fn side_or_err(exchange: Exchange, trade: &Trade) -> Result<Side, ExchangeError> {
    match trade.side {
        Side::Unknown => Err(encode_error(exchange, trade, "side is unknown")),
        side => Ok(side),
    }
}

pub(crate) fn numeric_id(exchange: Exchange, trade: &Trade) -> Result<u64, ExchangeError> {
    trade
        .trade_id
        .parse()
        .map_err(|_| encode_error(exchange, trade, "the exchange's trade ids are integers"))
}

/// The UTC date and time of an epoch-millisecond time (the epoch itself
/// for one chrono cannot represent).
pub(crate) fn utc(time: Millis) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(time).unwrap_or_default()
}

/// `2021-04-17T16:43:30.244000Z`: ISO-8601 with microseconds, as Coinbase sends.
pub(crate) fn format_iso8601_micros(time: Millis) -> String {
    utc(time).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_micros_as_coinbase_writes_them() {
        for (ms, text) in [
            (1_618_677_810_244, "2021-04-17T16:43:30.244000Z"),
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400_001, "2000-02-29T00:00:00.001000Z"),
        ] {
            assert_eq!(format_iso8601_micros(ms), text, "{ms}");
        }
    }
}

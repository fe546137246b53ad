//! The domain model shared by every stage: [`Trade`], [`Candle`], [`Watermark`],
//! [`Interval`], [`Side`], [`Exchange`] and [`CandleStatus`].
//!
//! These are also the JSON wire form on Kafka and in JSON-lines files
//! (`docs/wire-format.md`): field names as written here, decimals as strings
//! (never floats), times as integer epoch milliseconds, enums in lower case.
//! Exchange wire types live in `ingest::exchanges` and convert into [`Trade`].

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Epoch milliseconds (UTC).
pub type Millis = i64;

/// The exchange times a trade may carry: from 2009-01-01T00:00:00Z (before
/// any exchange tickfetch speaks to) up to, not including,
/// 2100-01-01T00:00:00Z. A time outside is a corrupt or misread field (a
/// zero, seconds or microseconds taken for milliseconds): the exchange
/// adapters and the importer refuse such a trade rather than let it close
/// (or reopen) decades of candle windows.
pub const TRADE_TIMES: std::ops::Range<Millis> = 1_230_768_000_000..4_102_444_800_000;

/// The exchanges tickfetch speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    Binance,
    Upbit,
    Coinbase,
    Bybit,
    Okx,
}

impl Exchange {
    /// Every exchange, in a fixed order.
    pub const ALL: [Exchange; 5] = [
        Exchange::Binance,
        Exchange::Upbit,
        Exchange::Coinbase,
        Exchange::Bybit,
        Exchange::Okx,
    ];

    /// The lower-case name used on the wire, in keys and in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Binance => "binance",
            Exchange::Upbit => "upbit",
            Exchange::Coinbase => "coinbase",
            Exchange::Bybit => "bybit",
            Exchange::Okx => "okx",
        }
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Exchange {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exchange::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ModelError::UnknownExchange(s.to_string()))
    }
}

/// The taker's side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
    #[default]
    Unknown,
}

/// Candle intervals, each nested in the next: 1s → 5s → 1m → 5m.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    S1,
    S5,
    M1,
    M5,
}

impl Interval {
    /// Every interval, smallest first.
    pub const ALL: [Interval; 4] = [Interval::S1, Interval::S5, Interval::M1, Interval::M5];

    /// Window length in milliseconds.
    pub const fn millis(self) -> Millis {
        match self {
            Interval::S1 => 1_000,
            Interval::S5 => 5_000,
            Interval::M1 => 60_000,
            Interval::M5 => 300_000,
        }
    }

    /// The interval this one is built from (`None` for 1s, which is built from trades).
    pub const fn child(self) -> Option<Interval> {
        match self {
            Interval::S1 => None,
            Interval::S5 => Some(Interval::S1),
            Interval::M1 => Some(Interval::S5),
            Interval::M5 => Some(Interval::M1),
        }
    }

    /// The interval built from this one (`None` for 5m).
    pub const fn parent(self) -> Option<Interval> {
        match self {
            Interval::S1 => Some(Interval::S5),
            Interval::S5 => Some(Interval::M1),
            Interval::M1 => Some(Interval::M5),
            Interval::M5 => None,
        }
    }

    /// `"1s"`, `"5s"`, `"1m"` or `"5m"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::S5 => "5s",
            Interval::M1 => "1m",
            Interval::M5 => "5m",
        }
    }

    /// Start of the UTC-epoch-aligned window `[t, t + interval)` holding `time`.
    pub const fn window_start(self, time: Millis) -> Millis {
        time.div_euclid(self.millis()) * self.millis()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| ModelError::UnknownInterval(s.to_string()))
    }
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One trade as published by an exchange, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trade {
    pub exchange: Exchange,
    /// The exchange's own symbol, e.g. `BTCUSDT`, `KRW-BTC`, `BTC-USD`.
    pub symbol: String,
    /// Normalised `BASE-QUOTE`, e.g. `BTC-USDT`.
    pub instrument: String,
    /// The exchange's trade id (for a Binance aggTrade, the aggregate id).
    pub trade_id: String,
    pub price: Decimal,
    /// Base-asset quantity.
    pub quantity: Decimal,
    /// The taker's side.
    pub side: Side,
    pub exchange_time: Millis,
    pub receive_time: Millis,
    /// First raw trade id of an aggregated trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_trade_id: Option<u64>,
    /// Last raw trade id of an aggregated trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trade_id: Option<u64>,
}

impl Trade {
    /// How many exchange trades this record stands for: `last − first + 1` for an
    /// aggregated trade, else 1.
    pub fn trade_count(&self) -> u64 {
        match (self.first_trade_id, self.last_trade_id) {
            (Some(first), Some(last)) if last >= first => last - first + 1,
            _ => 1,
        }
    }

    /// The trade id as a number, where the exchange's ids are numeric.
    pub fn sequence(&self) -> Option<u64> {
        self.trade_id.parse().ok()
    }

    /// The id of the first raw trade this record holds (for candles' `first_trade_id`).
    pub fn first_raw_id(&self) -> String {
        self.first_trade_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| self.trade_id.clone())
    }

    /// The id of the last raw trade this record holds (for candles' `last_trade_id`).
    pub fn last_raw_id(&self) -> String {
        self.last_trade_id
            .map(|id| id.to_string())
            .unwrap_or_else(|| self.trade_id.clone())
    }

    /// `price × quantity`, exact.
    pub fn quote_quantity(&self) -> Decimal {
        self.price * self.quantity
    }

    /// The Kafka key shared by a symbol's trades, watermarks and candles.
    pub fn key(&self) -> String {
        crate::wire::feed_key(self.exchange, &self.symbol)
    }
}

/// Whether a candle saw trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandleStatus {
    /// Built from at least one trade.
    Complete,
    /// No trades: open = high = low = close = previous close, volumes 0.
    Quiet,
    /// A known feed gap overlaps the window.
    Degraded,
}

/// One OHLCV candle of one symbol and interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candle {
    pub exchange: Exchange,
    pub symbol: String,
    pub interval: Interval,
    /// Window start, inclusive.
    pub open_time: Millis,
    /// Last millisecond of the window (`open_time + interval − 1`, as Binance).
    pub close_time: Millis,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    /// Base volume.
    pub volume: Decimal,
    pub quote_volume: Decimal,
    /// Exchange trades counted (an aggregated trade counts `last − first + 1`).
    pub trade_count: u64,
    pub taker_buy_volume: Decimal,
    pub taker_buy_quote_volume: Decimal,
    #[serde(default)]
    pub first_trade_id: Option<String>,
    #[serde(default)]
    pub last_trade_id: Option<String>,
    pub status: CandleStatus,
    /// 0 when first published, +1 for each correction.
    pub revision: u32,
}

impl Candle {
    /// The Kafka key: `exchange:symbol`, so that a symbol's candles stay in order
    /// on one partition.
    pub fn key(&self) -> String {
        crate::wire::feed_key(self.exchange, &self.symbol)
    }

    /// The identity of the window, `exchange:symbol:interval:open_time` (the
    /// MongoDB `_id` and the dedup key downstream).
    pub fn window_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.exchange, self.symbol, self.interval, self.open_time
        )
    }
}

/// Event-time progress of one symbol: no trade with `exchange_time < time` is
/// expected any more from the publisher. Sent by workers as heartbeats on the
/// trades topic (header `tickfetch-kind: watermark`) so that quiet symbols close
/// their windows on time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watermark {
    pub exchange: Exchange,
    pub symbol: String,
    pub time: Millis,
}

// The envelope (keys, headers) lives in `wire`; these names stay here for
// callers of the old paths.
#[doc(hidden)]
pub use crate::wire::{feed_key, EPOCH_HEADER, KIND_GAP, KIND_HEADER, KIND_TRADE, KIND_WATERMARK};

/// Trades of `exchange:symbol` in raw ids `first_missing..=last_missing` were
/// missed by a worker and could not be backfilled. Their exchange times lie in
/// `from_time..=to_time` (the trades either side of the gap). Sent on the
/// trades topic with header `tickfetch-kind: gap`; the 1s stage marks the
/// windows it overlaps `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapMarker {
    pub exchange: Exchange,
    pub symbol: String,
    pub first_missing: u64,
    pub last_missing: u64,
    pub from_time: Millis,
    pub to_time: Millis,
}

/// Errors parsing model values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("unknown exchange {0:?} (expected one of binance, upbit, coinbase, bybit, okx)")]
    UnknownExchange(String),
    #[error("unknown interval {0:?} (expected one of 1s, 5s, 1m, 5m)")]
    UnknownInterval(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn interval_parse_and_nesting() {
        for (text, interval, ms) in [
            ("1s", Interval::S1, 1_000),
            ("5s", Interval::S5, 5_000),
            ("1m", Interval::M1, 60_000),
            ("5m", Interval::M5, 300_000),
        ] {
            assert_eq!(Interval::from_str(text), Ok(interval), "{text}");
            assert_eq!(interval.millis(), ms);
            assert_eq!(interval.to_string(), text);
            if let Some(parent) = interval.parent() {
                assert_eq!(parent.child(), Some(interval));
                assert_eq!(parent.millis() % interval.millis(), 0);
            }
        }
        assert!(Interval::from_str("1h").is_err());
        assert_eq!(
            Interval::M1.window_start(1_570_752_011_620),
            1_570_752_000_000
        );
        assert_eq!(Interval::S1.window_start(-1), -1_000);
    }

    #[test]
    fn trade_json_round_trip_keeps_decimals_exact() {
        let text = r#"{"exchange":"binance","symbol":"XRPETH","instrument":"XRP-ETH","trade_id":"13519807","price":"0.00141342","quantity":"23.00000000","side":"sell","exchange_time":1570752011620,"receive_time":1570752011700,"first_trade_id":15373518,"last_trade_id":15373520}"#;
        let trade: Trade = serde_json::from_str(text).expect("valid trade json");
        assert_eq!(trade.price.to_string(), "0.00141342");
        assert_eq!(trade.quantity.to_string(), "23.00000000");
        assert_eq!(trade.trade_count(), 3);
        assert_eq!(trade.side, Side::Sell);
        assert_eq!(serde_json::to_string(&trade).expect("serialize"), text);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = r#"{"exchange":"okx","symbol":"BTC-USDT","instrument":"BTC-USDT","trade_id":"1","price":"1","quantity":"1","side":"buy","exchange_time":1,"receive_time":1,"extra":1}"#;
        assert!(serde_json::from_str::<Trade>(text).is_err());
    }
}

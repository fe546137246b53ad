//! Upbit's messages as serde structs, each with a raw payload in its doc
//! comment; [`parse`](super::parse) turns them into `Trade`s.

use super::*;

/// First element of a request: `{"ticket":"tickfetch-1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket<'a> {
    #[serde(borrow)]
    pub ticket: Cow<'a, str>,
}

/// `{"type":"trade","codes":["KRW-BTC"],"isOnlyRealtime":true}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeRequest<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub codes: Vec<Cow<'a, str>>,
    #[serde(rename = "isOnlyRealtime", default)]
    pub is_only_realtime: bool,
}

/// `{"format":"SIMPLE"}` (or `DEFAULT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRequest<'a> {
    #[serde(borrow)]
    pub format: Cow<'a, str>,
}

/// A trade in the SIMPLE format.
///
/// ```json
/// {"ty":"trade","cd":"KRW-LAMB","tms":1618678262712,"td":"2021-04-17","ttm":"16:51:02",
///  "ttms":1618678262000,"tp":127.0,"tv":46.48838371,"ab":"BID","pcp":123.00000000,
///  "c":"RISE","cp":4.00000000,"sid":1618678262000003,"st":"REALTIME"}
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimpleTrade<'a> {
    #[serde(borrow)]
    pub ty: Cow<'a, str>,
    #[serde(borrow)]
    pub cd: Cow<'a, str>,
    /// Message time (ms).
    pub tms: Millis,
    /// Trade date and time (UTC).
    #[serde(borrow)]
    pub td: Cow<'a, str>,
    #[serde(borrow)]
    pub ttm: Cow<'a, str>,
    /// Trade time (ms).
    pub ttms: Millis,
    #[serde(borrow)]
    pub tp: &'a RawValue,
    #[serde(borrow)]
    pub tv: &'a RawValue,
    #[serde(borrow)]
    pub ab: Cow<'a, str>,
    #[serde(borrow)]
    pub pcp: &'a RawValue,
    #[serde(borrow)]
    pub c: Cow<'a, str>,
    #[serde(borrow)]
    pub cp: &'a RawValue,
    pub sid: u64,
    #[serde(borrow)]
    pub st: Cow<'a, str>,
}

/// A trade in the DEFAULT format (the `best_*` fields appeared in 2023).
///
/// ```json
/// {"type":"trade","code":"KRW-ETH","timestamp":1696585056910,"trade_date":"2023-10-06",
///  "trade_time":"09:37:36","trade_timestamp":1696585056846,"trade_price":37625,
///  "trade_volume":8.428e-05,"ask_bid":"ASK","prev_closing_price":37296,"change":"RISE",
///  "change_price":329,"sequential_id":1696585056846000,"best_ask_price":32293000,
///  "best_ask_size":0.04414411,"best_bid_price":32291000,"best_bid_size":0.01202163,
///  "stream_type":"SNAPSHOT"}
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DefaultTrade<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    pub timestamp: Millis,
    #[serde(borrow)]
    pub trade_date: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_time: Cow<'a, str>,
    pub trade_timestamp: Millis,
    #[serde(borrow)]
    pub trade_price: &'a RawValue,
    #[serde(borrow)]
    pub trade_volume: &'a RawValue,
    #[serde(borrow)]
    pub ask_bid: Cow<'a, str>,
    #[serde(borrow)]
    pub prev_closing_price: &'a RawValue,
    #[serde(borrow)]
    pub change: Cow<'a, str>,
    #[serde(borrow)]
    pub change_price: &'a RawValue,
    pub sequential_id: u64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub best_ask_price: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub best_ask_size: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub best_bid_price: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub best_bid_size: Option<&'a RawValue>,
    #[serde(borrow)]
    pub stream_type: Cow<'a, str>,
}

/// A row of `GET /v1/trades/ticks`.
///
/// ```json
/// {"market":"KRW-BTC","trade_date_utc":"2025-06-27","trade_time_utc":"23:59:59",
///  "timestamp":1751068799336,"trade_price":147058000,"trade_volume":0.00006043,
///  "prev_closing_price":146852000,"change_price":206000,"ask_bid":"BID",
///  "sequential_id":17510687993360000}
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestTrade<'a> {
    #[serde(borrow)]
    pub market: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_date_utc: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_time_utc: Cow<'a, str>,
    pub timestamp: Millis,
    #[serde(borrow)]
    pub trade_price: &'a RawValue,
    #[serde(borrow)]
    pub trade_volume: &'a RawValue,
    #[serde(borrow)]
    pub prev_closing_price: &'a RawValue,
    #[serde(borrow)]
    pub change_price: &'a RawValue,
    #[serde(borrow)]
    pub ask_bid: Cow<'a, str>,
    pub sequential_id: u64,
}

/// One market of the `GET /v1/market/all` body (a JSON array).
///
/// ```json
/// [{"market":"KRW-BTC","korean_name":"비트코인","english_name":"Bitcoin"},
///  {"market":"BTC-ETH","korean_name":"이더리움","english_name":"Ethereum"}]
/// ```
/// With `?isDetails=true` each also has `"market_warning":"NONE"` (or `CAUTION`)
/// and, lately, a `market_event` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market<'a> {
    /// `QUOTE-BASE`.
    #[serde(borrow)]
    pub market: Cow<'a, str>,
    #[serde(borrow, default)]
    pub korean_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub english_name: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub market_warning: Option<Cow<'a, str>>,
}

//! Bybit's messages as serde structs, each with a raw payload in its doc
//! comment; [`parse`](super::parse) turns them into `Trade`s.

use super::*;

/// `{"op":"subscribe","args":["publicTrade.BTCUSDT"],"req_id":"1"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRequest<'a> {
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(borrow, default)]
    pub args: Vec<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<Cow<'a, str>>,
}

/// A `publicTrade` message.
///
/// ```json
/// {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[
///  {"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",
///   "i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicTradeMessage<'a> {
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub ts: Millis,
    #[serde(borrow)]
    pub data: Vec<PublicTrade<'a>>,
}

/// One trade of a `publicTrade` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicTrade<'a> {
    /// Trade time (ms).
    #[serde(rename = "T")]
    pub trade_time: Millis,
    #[serde(rename = "s", borrow)]
    pub symbol: Cow<'a, str>,
    /// The taker's side, `Buy` or `Sell`.
    #[serde(rename = "S", borrow)]
    pub side: Cow<'a, str>,
    #[serde(rename = "v", borrow)]
    pub size: Cow<'a, str>,
    #[serde(rename = "p", borrow)]
    pub price: Cow<'a, str>,
    /// Tick direction: `PlusTick`, `ZeroPlusTick`, `MinusTick`, `ZeroMinusTick`.
    #[serde(rename = "L", borrow, default, skip_serializing_if = "Option::is_none")]
    pub tick_direction: Option<Cow<'a, str>>,
    #[serde(rename = "i", borrow)]
    pub trade_id: Cow<'a, str>,
    /// Block trade.
    #[serde(rename = "BT", default)]
    pub block_trade: bool,
}

/// The `GET /v5/market/recent-trade` body.
///
/// ```json
/// {"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[
///  {"execId":"a905d5c3-1ed0-4f37-83e4-9c73a2fe2f01","symbol":"BTCUSDT","price":"27450.50",
///   "size":"0.005","side":"Buy","time":"1709891679000","isBlockTrade":false}]},
///  "retExtInfo":{},"time":1709891679050}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestResponse<'a> {
    pub ret_code: i64,
    #[serde(borrow)]
    pub ret_msg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub result: Option<RestResult<'a>>,
    #[serde(default)]
    pub time: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestResult<'a> {
    #[serde(borrow, default)]
    pub category: Cow<'a, str>,
    #[serde(borrow, default)]
    pub list: Vec<RestTrade<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestTrade<'a> {
    #[serde(borrow)]
    pub exec_id: Cow<'a, str>,
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    /// The taker's side.
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    /// Trade time, ms as a string.
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(default)]
    pub is_block_trade: bool,
}

/// The `GET /v5/market/instruments-info` body, with the fields tickfetch
/// reads (`lotSizeFilter`, `priceFilter`, `leverageFilter`… are skipped).
///
/// ```json
/// {"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"symbol":"BTCUSDT",
///  "baseCoin":"BTC","quoteCoin":"USDT","innovation":"0","status":"Trading","marginTrading":"both",
///  "stTag":"0","lotSizeFilter":{"basePrecision":"0.000001","quotePrecision":"0.00000001",
///  "minOrderQty":"0.000048","maxOrderQty":"71.73956243","minOrderAmt":"1","maxOrderAmt":"2000000"},
///  "priceFilter":{"tickSize":"0.01"}}]},"retExtInfo":{},"time":1672712468011}
/// ```
/// Linear and inverse pages carry `"nextPageCursor":"…"` in `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentsResponse<'a> {
    pub ret_code: i64,
    #[serde(borrow)]
    pub ret_msg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub result: Option<InstrumentsResult<'a>>,
    #[serde(default)]
    pub time: Millis,
}

/// `result` of the instruments body (`{}` with an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentsResult<'a> {
    #[serde(borrow, default)]
    pub category: Cow<'a, str>,
    #[serde(borrow, default)]
    pub list: Vec<BybitInstrument<'a>>,
    /// Empty (or absent) on the last page.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub next_page_cursor: Option<Cow<'a, str>>,
}

/// One instrument of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BybitInstrument<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(borrow)]
    pub base_coin: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_coin: Cow<'a, str>,
    /// `Trading`, `PreLaunch`, `Delivering`, `Closed`.
    #[serde(borrow, default)]
    pub status: Cow<'a, str>,
}

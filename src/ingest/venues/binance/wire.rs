//! Binance's messages as serde structs, each with a raw payload in its doc
//! comment; [`parse`](super::parse) turns them into `Trade`s.

use super::*;

/// A JSON request on the stream connection.
///
/// `{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@depth"],"id":1}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest<'a> {
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    #[serde(borrow)]
    pub params: Vec<Cow<'a, str>>,
    pub id: u64,
}

/// A `<symbol>@trade` event.
///
/// ```json
/// {"e":"trade","E":1639351062244,"s":"ETHUSDT","t":705291099,"p":"4149.74000000",
///  "q":"0.43870000","b":7038593583,"a":7038593613,"T":1639351062243,"m":true,"M":true}
/// ```
/// (`b`/`a`, the buyer and seller order ids, are no longer sent since 2023.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeEvent<'a> {
    #[serde(rename = "e", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(rename = "E")]
    pub event_time: Millis,
    #[serde(rename = "s", borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(rename = "t")]
    pub trade_id: u64,
    #[serde(rename = "p", borrow)]
    pub price: Cow<'a, str>,
    #[serde(rename = "q", borrow)]
    pub quantity: Cow<'a, str>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub buyer_order_id: Option<u64>,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub seller_order_id: Option<u64>,
    #[serde(rename = "T")]
    pub trade_time: Millis,
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    #[serde(rename = "M", default = "default_true")]
    pub is_best_match: bool,
}

/// A `<symbol>@aggTrade` event.
///
/// ```json
/// {"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,"p":"0.35280000",
///  "q":"58.00000000","f":19862790,"l":19862790,"T":1633998523963,"m":false,"M":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggTradeEvent<'a> {
    #[serde(rename = "e", borrow)]
    pub event_type: Cow<'a, str>,
    #[serde(rename = "E")]
    pub event_time: Millis,
    #[serde(rename = "s", borrow)]
    pub symbol: Cow<'a, str>,
    #[serde(rename = "a")]
    pub agg_trade_id: u64,
    #[serde(rename = "p", borrow)]
    pub price: Cow<'a, str>,
    #[serde(rename = "q", borrow)]
    pub quantity: Cow<'a, str>,
    #[serde(rename = "f")]
    pub first_trade_id: u64,
    #[serde(rename = "l")]
    pub last_trade_id: u64,
    #[serde(rename = "T")]
    pub trade_time: Millis,
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    #[serde(rename = "M", default = "default_true")]
    pub is_best_match: bool,
}

/// A row of `GET /api/v3/trades` (and `historicalTrades`).
///
/// ```json
/// {"id":1111468873,"price":"60650.00000000","qty":"0.02924000","quoteQty":"1773.40600000",
///  "time":1634942949263,"isBuyerMaker":true,"isBestMatch":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestTrade<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub qty: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_qty: Cow<'a, str>,
    pub time: Millis,
    pub is_buyer_maker: bool,
    #[serde(default = "default_true")]
    pub is_best_match: bool,
}

/// A row of `GET /api/v3/aggTrades`: the aggTrade event without `e`, `E`, `s`.
///
/// ```json
/// {"a":966492862,"p":"60759.60000000","q":"0.00841000","f":1111480471,"l":1111480471,
///  "T":1634944096633,"m":false,"M":true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestAggTrade<'a> {
    #[serde(rename = "a")]
    pub agg_trade_id: u64,
    #[serde(rename = "p", borrow)]
    pub price: Cow<'a, str>,
    #[serde(rename = "q", borrow)]
    pub quantity: Cow<'a, str>,
    #[serde(rename = "f")]
    pub first_trade_id: u64,
    #[serde(rename = "l")]
    pub last_trade_id: u64,
    #[serde(rename = "T")]
    pub trade_time: Millis,
    #[serde(rename = "m")]
    pub is_buyer_maker: bool,
    #[serde(rename = "M", default = "default_true")]
    pub is_best_match: bool,
}

fn default_true() -> bool {
    true
}

/// The `GET /api/v3/exchangeInfo` body, with the fields tickfetch reads
/// (`rateLimits`, `exchangeFilters` and each symbol's `filters`,
/// `orderTypes`, `permissionSets`… are skipped).
///
/// ```json
/// {"timezone":"UTC","serverTime":1565246363776,"rateLimits":[],"exchangeFilters":[],
///  "symbols":[{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","baseAssetPrecision":8,
///   "quoteAsset":"BTC","quotePrecision":8,"quoteAssetPrecision":8,"orderTypes":["LIMIT","MARKET"],
///   "icebergAllowed":true,"ocoAllowed":true,"isSpotTradingAllowed":true,
///   "isMarginTradingAllowed":true,"filters":[],"permissions":[],"permissionSets":[["SPOT","MARGIN"]]}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeInfo<'a> {
    #[serde(borrow, default)]
    pub timezone: Cow<'a, str>,
    #[serde(rename = "serverTime", default)]
    pub server_time: Millis,
    #[serde(borrow)]
    pub symbols: Vec<SymbolInfo<'a>>,
}

/// One symbol of `exchangeInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolInfo<'a> {
    #[serde(borrow)]
    pub symbol: Cow<'a, str>,
    /// `TRADING`, `HALT` or `BREAK`; every status maps (history of a halted
    /// symbol still imports).
    #[serde(borrow, default)]
    pub status: Cow<'a, str>,
    #[serde(borrow)]
    pub base_asset: Cow<'a, str>,
    #[serde(default)]
    pub base_asset_precision: u32,
    #[serde(borrow)]
    pub quote_asset: Cow<'a, str>,
    #[serde(default)]
    pub quote_asset_precision: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_spot_trading_allowed: Option<bool>,
}

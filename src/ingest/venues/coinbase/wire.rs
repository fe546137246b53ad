//! Coinbase's messages as serde structs, each with a raw payload in its doc
//! comment; [`parse`](super::parse) turns them into `Trade`s.

use super::*;

/// `{"type":"subscribe","product_ids":["SKL-USD"],"channels":["matches"]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeSubscribe<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub product_ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub channels: Vec<Cow<'a, str>>,
}

/// `{"type":"subscribe","product_ids":["ETH-USDT"],"channel":"market_trades"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvancedSubscribe<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub product_ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
}

/// An Exchange `match` (or `last_match`) message.
///
/// ```json
/// {"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16",
///  "taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985",
///  "price":"0.00001305","product_id":"SKL-BTC","sequence":177100030,
///  "time":"2021-04-17T16:43:37.089723Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub trade_id: u64,
    #[serde(borrow)]
    pub maker_order_id: Cow<'a, str>,
    #[serde(borrow)]
    pub taker_order_id: Cow<'a, str>,
    /// The MAKER's side.
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    pub sequence: u64,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
}

/// An Exchange `heartbeat` message.
///
/// ```json
/// {"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",
///  "time":"2014-11-07T08:19:28.464459Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeHeartbeat<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub sequence: u64,
    pub last_trade_id: u64,
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
}

/// An Exchange `subscriptions` reply.
///
/// ```json
/// {"type":"subscriptions","channels":[{"name":"matches","product_ids":["SKL-BTC","DASH-BTC"]}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeSubscriptions<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub channels: Vec<ExchangeChannel<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeChannel<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub product_ids: Vec<Cow<'a, str>>,
}

/// An Advanced Trade message: `channel`, a stamp, a sequence number, events.
///
/// ```json
/// {"channel":"market_trades","client_id":"","timestamp":"2024-10-04T07:13:31.158696693Z",
///  "sequence_num":2,"events":[{"type":"update","trades":[
///   {"product_id":"ETH-USDT","trade_id":"22381691","price":"2375.56","size":"0.5",
///    "time":"2024-10-04T07:13:31.088388Z","side":"BUY"},
///   {"product_id":"ETH-USDT","trade_id":"22381690","price":"2375.56","size":"0.5",
///    "time":"2024-10-04T07:13:31.084859Z","side":"BUY"}]}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvancedMessage<'a, E> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(borrow, default)]
    pub client_id: Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(default)]
    pub sequence_num: u64,
    pub events: Vec<E>,
}

/// One `market_trades` event: `snapshot` after subscribing, then `update`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketTradesEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub trades: Vec<AdvancedTrade<'a>>,
}

/// One trade of a `market_trades` event (and of the REST ticker's `trades`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvancedTrade<'a> {
    #[serde(borrow)]
    pub product_id: Cow<'a, str>,
    #[serde(borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// `BUY` or `SELL`, the TAKER's side (see the module docs).
    #[serde(borrow)]
    pub side: Cow<'a, str>,
}

/// One `subscriptions` event: channel → product ids.
///
/// `{"subscriptions":{"market_trades":["ETH-USDT"]}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionsEvent {
    pub subscriptions: BTreeMap<String, Vec<String>>,
}

/// A row of the Exchange REST `GET /products/{id}/trades`.
///
/// ```json
/// {"time":"2021-04-17T16:43:30.244075Z","trade_id":881613,"price":"14.7775","size":"0.04","side":"sell"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestTrade<'a> {
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    pub trade_id: u64,
    #[serde(borrow)]
    pub price: Cow<'a, str>,
    #[serde(borrow)]
    pub size: Cow<'a, str>,
    /// The MAKER's side.
    #[serde(borrow)]
    pub side: Cow<'a, str>,
}

/// The Advanced Trade REST `GET …/market/products/{id}/ticker` body.
///
/// ```json
/// {"trades":[{"trade_id":"…","product_id":"BTC-USD","price":"…","size":"…","time":"…",
///  "side":"BUY"}],"best_bid":"…","best_ask":"…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestTicker<'a> {
    #[serde(borrow)]
    pub trades: Vec<AdvancedTrade<'a>>,
    #[serde(borrow, default)]
    pub best_bid: Cow<'a, str>,
    #[serde(borrow, default)]
    pub best_ask: Cow<'a, str>,
}

/// One product of the Exchange API's `GET /products` body (a JSON array),
/// with the fields tickfetch reads (`base_increment`, `quote_increment`,
/// `min_market_funds`, `post_only`… are skipped).
///
/// ```json
/// [{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","quote_increment":"0.01",
///   "base_increment":"0.00000001","display_name":"BTC-USD","min_market_funds":"1",
///   "margin_enabled":false,"post_only":false,"limit_only":false,"cancel_only":false,
///   "status":"online","status_message":"","trading_disabled":false,"fx_stablecoin":false,
///   "max_slippage_percentage":"0.02000000","auction_mode":false,"high_bid_limit_percentage":""}]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub base_currency: Cow<'a, str>,
    #[serde(borrow)]
    pub quote_currency: Cow<'a, str>,
    #[serde(borrow, default)]
    pub display_name: Cow<'a, str>,
    /// `online`, `offline`, `internal`, `delisted`.
    #[serde(borrow, default)]
    pub status: Cow<'a, str>,
    #[serde(default)]
    pub trading_disabled: bool,
}

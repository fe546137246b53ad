//! Coinbase: the Exchange websocket feed's `matches` channel (with
//! `heartbeat`), the Advanced Trade websocket's `market_trades` channel (with
//! `heartbeats`), and each API's recent-trades REST endpoint.
//!
//! Side. In the Exchange feed, and in its REST trades, `side` is the MAKER's
//! order side (Coinbase: "the side field indicates the maker order side; buy
//! side indicates a down-tick"), so `"buy"` is a taker SELL. In Advanced Trade,
//! `side` (`BUY`/`SELL`) is read as the TAKER's side: Coinbase's Advanced Trade
//! API schema describes the market trade's side as "Taker side of the trade",
//! while its Exchange schema says "Maker side". The recordings cannot settle it
//! (the sample holds two BUY trades at one price), so this rests on the
//! documentation; [`advanced_taker_side`] is the one place to change.
//!
//! Ids: `trade_id` is contiguous per product. Advanced Trade lists the trades
//! of one message newest first; [`parse_frame`] returns them oldest first.
//! Times are ISO-8601 with µs (trades) or ns (Advanced message stamps),
//! truncated to ms. `last_match` (sent once per product after subscribing) is
//! a real trade and comes out as one; the dedup downstream counts it once.
//!
//! Connection rules: no client ping; subscribe to the heartbeat channel (one
//! per product per second on the Exchange feed, with `last_trade_id`, so a gap
//! shows even on a quiet product). Advanced Trade closes a connection that has
//! not subscribed within 5 s and drops quiet subscriptions after 60–90 s
//! unless `heartbeats` is subscribed; one channel per subscribe message.
//! Market-data channels need no authentication. An Exchange subscribe error
//! reads `{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is
//! not a valid product"}`; the product is taken from `reason`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    encode_error, field_error, format_iso8601_micros, from_json, numeric_id, oldest_first,
    parse_decimal, parse_iso8601_millis, request_error, side_or_err, unknown_symbol, unrecognised,
    with_excerpt, ConnectionLimits, ExchangeError, Frame, Heartbeat, KeepAlive, SubscribeRejection,
    SubscribeRequest, WireFrame,
};
use crate::model::{Exchange, Millis, Side, Trade};

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Coinbase;

/// Coinbase Exchange (formerly Pro) websocket feed.
pub const WS_URL_EXCHANGE: &str = "wss://ws-feed.exchange.coinbase.com";
/// Advanced Trade market-data websocket.
pub const WS_URL_ADVANCED: &str = "wss://advanced-trade-ws.coinbase.com";
pub const REST_BASE_URL_EXCHANGE: &str = "https://api.exchange.coinbase.com";
/// `GET /products/{product_id}/trades?limit=N[&after=trade_id]`, newest first.
pub const REST_TRADES_PATH_EXCHANGE: &str = "/products/{product_id}/trades";
pub const REST_BASE_URL_ADVANCED: &str = "https://api.coinbase.com";
/// `GET /api/v3/brokerage/market/products/{product_id}/ticker?limit=N` (public).
pub const REST_TRADES_PATH_ADVANCED: &str = "/api/v3/brokerage/market/products/{product_id}/ticker";

/// `trade_id` is contiguous per product.
pub const IDS_ARE_SEQUENTIAL: bool = true;
pub const REST_MAX_LIMIT: usize = 1000;
/// Advanced Trade drops subscriptions with no updates after 60–90 s unless
/// `heartbeats` is subscribed.
pub const ADVANCED_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Advanced Trade closes a connection with no subscription after this.
pub const ADVANCED_SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// Coinbase's two trade feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// Exchange `matches` (+ `heartbeat`).
    ExchangeMatches,
    /// Advanced Trade `market_trades` (+ `heartbeats`).
    AdvancedMarketTrades,
}

impl Feed {
    pub const ALL: [Feed; 2] = [Feed::ExchangeMatches, Feed::AdvancedMarketTrades];

    pub const fn as_str(self) -> &'static str {
        match self {
            Feed::ExchangeMatches => "matches",
            Feed::AdvancedMarketTrades => "market_trades",
        }
    }
}

/// The live websocket URL of `feed` (the worker takes the URL from config; this is the default).
pub fn ws_url(feed: Feed) -> &'static str {
    match feed {
        Feed::ExchangeMatches => WS_URL_EXCHANGE,
        Feed::AdvancedMarketTrades => WS_URL_ADVANCED,
    }
}

/// The live REST base URL (scheme and host) of the recent-trades endpoint.
pub fn rest_base_url(feed: Feed) -> &'static str {
    match feed {
        Feed::ExchangeMatches => REST_BASE_URL_EXCHANGE,
        Feed::AdvancedMarketTrades => REST_BASE_URL_ADVANCED,
    }
}

/// Who pings whom, how often, and when the server hangs up.
pub fn keep_alive(feed: Feed) -> KeepAlive {
    KeepAlive {
        client_ping: None,
        server_ping: None,
        idle_timeout: match feed {
            Feed::ExchangeMatches => None,
            Feed::AdvancedMarketTrades => Some(ADVANCED_IDLE_TIMEOUT),
        },
        max_connection_age: None,
    }
}

/// Subscription and REST limits of `feed`.
pub fn limits(_feed: Feed) -> ConnectionLimits {
    ConnectionLimits {
        max_topics_per_connection: None,
        max_topics_per_request: None,
        max_client_messages_per_second: None,
        rest_max_trades: REST_MAX_LIMIT,
    }
}

/// Coinbase product ids are already `BASE-QUOTE`: `BTC-USD` → `BTC-USD`.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] for an id without a `-`.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    match symbol.split_once('-') {
        Some((base, quote))
            if !base.is_empty()
                && !quote.is_empty()
                && symbol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(symbol.to_string())
        }
        _ => Err(unknown_symbol(
            EXCHANGE,
            symbol,
            "expected BASE-QUOTE, e.g. BTC-USD",
        )),
    }
}

/// Exchange: one message, `{"type":"subscribe","product_ids":[…],"channels":["matches","heartbeat"]}`.
/// Advanced Trade: one message per channel,
/// `{"type":"subscribe","product_ids":[…],"channel":"market_trades"}` then
/// `{"type":"subscribe","product_ids":[…],"channel":"heartbeats"}`.
///
/// # Errors
/// [`ExchangeError::Request`] for no symbols, [`ExchangeError::UnknownSymbol`]
/// for an id that is not `BASE-QUOTE`.
pub fn subscribe_requests<S: AsRef<str>>(
    feed: Feed,
    symbols: &[S],
    _first_request_id: u64,
) -> Result<Vec<SubscribeRequest>, ExchangeError> {
    if symbols.is_empty() {
        return Err(request_error(EXCHANGE, "no symbols to subscribe"));
    }
    let products = symbols
        .iter()
        .map(|s| {
            let product = s.as_ref().to_ascii_uppercase();
            instrument(&product).map(|_| product)
        })
        .collect::<Result<Vec<String>, ExchangeError>>()?;
    let ids: Vec<Cow<str>> = products.iter().map(|p| Cow::Borrowed(p.as_str())).collect();
    let texts = match feed {
        Feed::ExchangeMatches => vec![serde_json::to_string(&ExchangeSubscribe {
            kind: Cow::Borrowed("subscribe"),
            product_ids: ids,
            channels: vec![Cow::Borrowed("matches"), Cow::Borrowed("heartbeat")],
        })],
        Feed::AdvancedMarketTrades => ["market_trades", "heartbeats"]
            .into_iter()
            .map(|channel| {
                serde_json::to_string(&AdvancedSubscribe {
                    kind: Cow::Borrowed("subscribe"),
                    product_ids: ids.clone(),
                    channel: Cow::Borrowed(channel),
                })
            })
            .collect(),
    };
    texts
        .into_iter()
        .map(|text| {
            Ok(SubscribeRequest {
                request_id: None,
                symbols: products.clone(),
                text: text
                    .map_err(|e| request_error(EXCHANGE, format!("cannot write request: {e}")))?,
            })
        })
        .collect()
}

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

/// What tells Coinbase's frames apart: Exchange messages have `type`,
/// Advanced Trade messages `channel` (errors of both have `type`).
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// Exchange `side` is the maker's: a resting buy was hit by a taker sell.
fn exchange_taker_side(maker_side: &str) -> Result<Side, ExchangeError> {
    match maker_side {
        "buy" => Ok(Side::Sell),
        "sell" => Ok(Side::Buy),
        other => Err(field_error(
            EXCHANGE,
            "side",
            format!("expected buy or sell, got {other:?}"),
            b"",
        )),
    }
}

/// Advanced Trade `side` is the taker's.
pub fn advanced_taker_side(side: &str) -> Result<Side, ExchangeError> {
    match side {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        "UNKNOWN_ORDER_SIDE" => Ok(Side::Unknown),
        other => Err(field_error(
            EXCHANGE,
            "side",
            format!("expected BUY or SELL, got {other:?}"),
            b"",
        )),
    }
}

fn iso_time(field: &'static str, text: &str) -> Result<Millis, ExchangeError> {
    parse_iso8601_millis(text).ok_or_else(|| {
        field_error(
            EXCHANGE,
            field,
            format!("expected ISO-8601 UTC time, got {text:?}"),
            b"",
        )
    })
}

fn trade(
    product: &str,
    trade_id: String,
    price: &str,
    size: &str,
    side: Side,
    time: &str,
    receive_time: Millis,
) -> Result<Trade, ExchangeError> {
    Ok(Trade {
        exchange: EXCHANGE,
        symbol: product.to_string(),
        instrument: instrument(product)?,
        trade_id,
        price: parse_decimal(EXCHANGE, "price", price, b"")?,
        quantity: parse_decimal(EXCHANGE, "size", size, b"")?,
        side,
        exchange_time: iso_time("time", time)?,
        receive_time,
        first_trade_id: None,
        last_trade_id: None,
    })
}

impl Match<'_> {
    /// The normalised trade (side flipped from the maker's to the taker's).
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad price, size, side or time,
    /// [`ExchangeError::UnknownSymbol`] for a product id without `-`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = exchange_taker_side(&self.side)?;
        trade(
            &self.product_id,
            self.trade_id.to_string(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

impl AdvancedTrade<'_> {
    /// The normalised trade.
    ///
    /// # Errors
    /// As [`Match::into_trade`], and [`ExchangeError::Field`] for a
    /// non-numeric `trade_id`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        if self.trade_id.is_empty() || !self.trade_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(field_error(
                EXCHANGE,
                "trade_id",
                format!("expected a numeric id, got {:?}", self.trade_id),
                b"",
            ));
        }
        let side = advanced_taker_side(&self.side)?;
        trade(
            &self.product_id,
            self.trade_id.into_owned(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

impl RestTrade<'_> {
    /// The normalised trade of `product` (side flipped as in [`Match`]).
    ///
    /// # Errors
    /// As [`Match::into_trade`].
    pub fn into_trade(self, product: &str, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = exchange_taker_side(&self.side)?;
        trade(
            product,
            self.trade_id.to_string(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

/// Classify one frame of either API.
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON or a trade missing a field,
/// [`ExchangeError::Field`] for a bad value, [`ExchangeError::UnknownSymbol`],
/// [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = match (peek.kind.as_deref(), peek.channel.as_deref()) {
        (Some("match" | "last_match"), _) => {
            let wire: Match = from_json(EXCHANGE, payload)?;
            wire.into_trade(receive_time)
                .map(|t| Frame::Trades(vec![t]))
        }
        (Some("heartbeat"), _) => {
            let wire: ExchangeHeartbeat = from_json(EXCHANGE, payload)?;
            Ok(Frame::Heartbeat(Heartbeat {
                symbol: Some(wire.product_id.into_owned()),
                last_trade_id: Some(wire.last_trade_id.to_string()),
                exchange_time: Some(iso_time("time", &wire.time)?),
            }))
        }
        (Some("subscriptions"), _) => {
            let wire: ExchangeSubscriptions = from_json(EXCHANGE, payload)?;
            let topics = wire
                .channels
                .iter()
                .flat_map(|c| c.product_ids.iter().map(move |p| format!("{}:{p}", c.name)))
                .collect();
            Ok(Frame::SubscribeAck {
                request_id: None,
                topics,
            })
        }
        (Some("error"), _) => {
            let reason = peek.reason.as_deref().unwrap_or_default();
            let symbols = reason
                .strip_suffix(" is not a valid product")
                .map(|p| vec![p.trim().to_string()])
                .unwrap_or_default();
            let message = match (&peek.message, reason) {
                (Some(message), "") => message.to_string(),
                (Some(message), reason) => format!("{message}: {reason}"),
                (None, reason) => reason.to_string(),
            };
            Ok(Frame::SubscribeError(SubscribeRejection {
                request_id: None,
                symbols,
                code: None,
                message,
            }))
        }
        (_, Some("market_trades")) => {
            let wire: AdvancedMessage<MarketTradesEvent> = from_json(EXCHANGE, payload)?;
            let mut trades = Vec::new();
            for event in wire.events {
                for row in event.trades {
                    trades.push(row.into_trade(receive_time)?);
                }
            }
            // Listed newest first; same-millisecond trades order by id.
            Ok(Frame::Trades(oldest_first(trades)))
        }
        (_, Some("subscriptions")) => {
            let wire: AdvancedMessage<SubscriptionsEvent> = from_json(EXCHANGE, payload)?;
            let topics = wire
                .events
                .iter()
                .flat_map(|e| e.subscriptions.iter())
                .flat_map(|(channel, products)| {
                    products.iter().map(move |p| format!("{channel}:{p}"))
                })
                .collect();
            Ok(Frame::SubscribeAck {
                request_id: None,
                topics,
            })
        }
        (_, Some("heartbeats")) => {
            let wire: AdvancedMessage<serde::de::IgnoredAny> = from_json(EXCHANGE, payload)?;
            Ok(Frame::Heartbeat(Heartbeat {
                symbol: None,
                last_trade_id: None,
                exchange_time: Some(iso_time("timestamp", &wire.timestamp)?),
            }))
        }
        (Some(kind), _) => Ok(Frame::Other(kind.to_string())),
        (None, Some(channel)) => Ok(Frame::Other(channel.to_string())),
        (None, None) => Err(unrecognised(EXCHANGE, payload)),
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// Deterministic stand-ins for order ids the model does not keep.
fn order_id(trade_id: u64, role: u16) -> String {
    format!("00000000-0000-4000-{role:04x}-{trade_id:012x}")
}

fn maker_side(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Buy => "sell",
        _ => "buy",
    })
}

fn advanced_side(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Buy => "BUY",
        _ => "SELL",
    })
}

fn advanced_trade(trade: &Trade) -> Result<AdvancedTrade<'_>, ExchangeError> {
    numeric_id(EXCHANGE, trade)?;
    Ok(AdvancedTrade {
        product_id: Cow::Borrowed(&trade.symbol),
        trade_id: Cow::Borrowed(&trade.trade_id),
        price: Cow::Owned(trade.price.to_string()),
        size: Cow::Owned(trade.quantity.to_string()),
        time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
        side: Cow::Borrowed(advanced_side(trade)?),
    })
}

/// The frames Coinbase would send for `trades` (oldest first in the input):
/// Exchange, one `match` per trade (order ids and `sequence` are stand-ins
/// derived from the trade id); Advanced Trade, one `market_trades` `update`
/// per run of trades of one product, newest first inside, `sequence_num`
/// counting frames from 0.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side or a non-numeric trade id.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    match feed {
        Feed::ExchangeMatches => trades
            .iter()
            .map(|trade| {
                let id = numeric_id(EXCHANGE, trade)?;
                let price = trade.price.to_string();
                let size = trade.quantity.to_string();
                let wire = Match {
                    kind: Cow::Borrowed("match"),
                    trade_id: id,
                    maker_order_id: Cow::Owned(order_id(id, 0x8000)),
                    taker_order_id: Cow::Owned(order_id(id, 0x9000)),
                    side: Cow::Borrowed(maker_side(trade)?),
                    size: Cow::Borrowed(&size),
                    price: Cow::Borrowed(&price),
                    product_id: Cow::Borrowed(&trade.symbol),
                    sequence: id,
                    time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
                };
                serde_json::to_string(&wire)
                    .map(WireFrame::Text)
                    .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))
            })
            .collect(),
        Feed::AdvancedMarketTrades => trades
            .chunk_by(|a, b| a.symbol == b.symbol)
            .enumerate()
            .map(|(sequence, run)| {
                let rows = run
                    .iter()
                    .rev()
                    .map(advanced_trade)
                    .collect::<Result<Vec<_>, _>>()?;
                let last = &run[run.len() - 1];
                let message = AdvancedMessage {
                    channel: Cow::Borrowed("market_trades"),
                    client_id: Cow::Borrowed(""),
                    timestamp: Cow::Owned(format_iso8601_micros(last.exchange_time)),
                    sequence_num: sequence as u64,
                    events: vec![MarketTradesEvent {
                        kind: Cow::Borrowed("update"),
                        trades: rows,
                    }],
                };
                serde_json::to_string(&message)
                    .map(WireFrame::Text)
                    .map_err(|e| encode_error(EXCHANGE, last, e.to_string()))
            })
            .collect(),
    }
}

/// `/products/BTC-USD/trades?limit=100` (Exchange) or
/// `/api/v3/brokerage/market/products/BTC-USD/ticker?limit=100` (Advanced).
pub fn rest_trades_path(feed: Feed, symbol: &str, limit: usize) -> String {
    let template = match feed {
        Feed::ExchangeMatches => REST_TRADES_PATH_EXCHANGE,
        Feed::AdvancedMarketTrades => REST_TRADES_PATH_ADVANCED,
    };
    format!(
        "{}?limit={}",
        template.replace("{product_id}", &symbol.to_ascii_uppercase()),
        limit.clamp(1, REST_MAX_LIMIT)
    )
}

/// Exchange `/products/BTC-USD/trades?limit=100&after=ID`: the trades older
/// than trade id `after`, for paging back over a gap.
pub fn rest_trades_before_path(symbol: &str, after: u64, limit: usize) -> String {
    format!(
        "{}&after={after}",
        rest_trades_path(Feed::ExchangeMatches, symbol, limit)
    )
}

/// Trades of a recent-trades response for `symbol` (the product id), oldest first.
///
/// # Errors
/// [`ExchangeError::Rejected`] for `{"message":"NotFound"}`-style bodies,
/// else as [`parse_frame`].
pub fn parse_rest_trades(
    feed: Feed,
    symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        if peek.message.is_some() || peek.error.is_some() {
            return Err(ExchangeError::Rejected {
                exchange: EXCHANGE,
                code: peek.error.map(Cow::into_owned),
                message: peek.message.map(Cow::into_owned).unwrap_or_default(),
            });
        }
    }
    let product = symbol.to_ascii_uppercase();
    let trades: Result<Vec<Trade>, ExchangeError> = match feed {
        Feed::ExchangeMatches => from_json::<Vec<RestTrade>>(EXCHANGE, body)?
            .into_iter()
            .map(|row| row.into_trade(&product, receive_time))
            .collect(),
        Feed::AdvancedMarketTrades => from_json::<RestTicker>(EXCHANGE, body)?
            .trades
            .into_iter()
            .map(|row| row.into_trade(receive_time))
            .collect(),
    };
    trades.map(oldest_first).map_err(|e| with_excerpt(e, body))
}

/// The REST body Coinbase would return for `trades` (newest first, as Coinbase).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let text = match feed {
        Feed::ExchangeMatches => {
            let rows = trades
                .iter()
                .rev()
                .map(|trade| {
                    Ok(RestTrade {
                        time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
                        trade_id: numeric_id(EXCHANGE, trade)?,
                        price: Cow::Owned(trade.price.to_string()),
                        size: Cow::Owned(trade.quantity.to_string()),
                        side: Cow::Borrowed(maker_side(trade)?),
                    })
                })
                .collect::<Result<Vec<_>, ExchangeError>>()?;
            serde_json::to_string(&rows)
        }
        Feed::AdvancedMarketTrades => {
            let rows = trades
                .iter()
                .rev()
                .map(advanced_trade)
                .collect::<Result<Vec<_>, _>>()?;
            serde_json::to_string(&RestTicker {
                trades: rows,
                best_bid: Cow::Borrowed(""),
                best_ask: Cow::Borrowed(""),
            })
        }
    };
    text.map_err(|e| request_error(EXCHANGE, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const MATCH: &str = r#"{"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16","taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985","price":"0.00001305","product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}"#;
    const MARKET_TRADES: &str = r#"{"channel":"market_trades","client_id":"","timestamp":"2024-10-04T07:13:31.158696693Z","sequence_num":2,"events":[{"type":"update","trades":[{"product_id":"ETH-USDT","trade_id":"22381691","price":"2375.56","size":"0.5","time":"2024-10-04T07:13:31.088388Z","side":"BUY"},{"product_id":"ETH-USDT","trade_id":"22381690","price":"2375.56","size":"0.5","time":"2024-10-04T07:13:31.084859Z","side":"BUY"}]}]}"#;

    fn sample(id: u64, side: Side, time: Millis) -> Trade {
        Trade {
            exchange: EXCHANGE,
            symbol: "BTC-USD".into(),
            instrument: "BTC-USD".into(),
            trade_id: id.to_string(),
            price: Decimal::from_str("68900.50").unwrap(),
            quantity: Decimal::from_str("0.00150000").unwrap(),
            side,
            exchange_time: time,
            receive_time: time + 40,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    #[test]
    fn match_side_is_flipped_to_the_taker() {
        let Frame::Trades(trades) = parse_frame(MATCH.as_bytes(), 5).unwrap() else {
            panic!("trades")
        };
        let t = &trades[0];
        assert_eq!(
            (t.side, t.trade_id.as_str(), t.instrument.as_str()),
            (Side::Buy, "280232", "SKL-BTC")
        );
        assert_eq!(
            (t.price.to_string(), t.quantity.to_string()),
            ("0.00001305".into(), "985".into())
        );
        assert_eq!(t.exchange_time, 1_618_677_817_089);
        let last = MATCH
            .replace(r#""type":"match""#, r#""type":"last_match""#)
            .replace(r#""side":"sell""#, r#""side":"buy""#);
        let Frame::Trades(trades) = parse_frame(last.as_bytes(), 5).unwrap() else {
            panic!("last_match")
        };
        assert_eq!(trades[0].side, Side::Sell);
    }

    #[test]
    fn market_trades_come_out_oldest_first() {
        let Frame::Trades(trades) = parse_frame(MARKET_TRADES.as_bytes(), 5).unwrap() else {
            panic!("trades")
        };
        let ids: Vec<&str> = trades.iter().map(|t| t.trade_id.as_str()).collect();
        assert_eq!(ids, ["22381690", "22381691"]);
        assert_eq!(trades[0].exchange_time, 1_728_026_011_084);
        assert_eq!(trades[0].side, Side::Buy);
    }

    #[test]
    fn frames_are_classified() {
        let cases = [
            (
                "heartbeat",
                r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#,
                Frame::Heartbeat(Heartbeat {
                    symbol: Some("BTC-USD".into()),
                    last_trade_id: Some("20".into()),
                    exchange_time: Some(1_415_348_368_464),
                }),
            ),
            (
                "subscriptions",
                r#"{"type":"subscriptions","channels":[{"name":"matches","product_ids":["SKL-BTC","NU-GBP"]}]}"#,
                Frame::SubscribeAck {
                    request_id: None,
                    topics: vec!["matches:SKL-BTC".into(), "matches:NU-GBP".into()],
                },
            ),
            (
                "error",
                r#"{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid product"}"#,
                Frame::SubscribeError(SubscribeRejection {
                    request_id: None,
                    symbols: vec!["FOO-USD".into()],
                    code: None,
                    message: "Failed to subscribe: FOO-USD is not a valid product".into(),
                }),
            ),
            (
                "advanced subscriptions",
                r#"{"channel":"subscriptions","client_id":"","timestamp":"2024-10-04T07:13:08.600625889Z","sequence_num":1,"events":[{"subscriptions":{"market_trades":["ETH-USDT"]}}]}"#,
                Frame::SubscribeAck {
                    request_id: None,
                    topics: vec!["market_trades:ETH-USDT".into()],
                },
            ),
            (
                "advanced heartbeats",
                r#"{"channel":"heartbeats","client_id":"","timestamp":"2024-10-04T07:04:40.825062088Z","sequence_num":1,"events":[{"current_time":"2024-10-04 07:04:40.820713045 +0000 UTC m=+66987.628148662","heartbeat_counter":66987}]}"#,
                Frame::Heartbeat(Heartbeat {
                    symbol: None,
                    last_trade_id: None,
                    exchange_time: Some(1_728_025_480_825),
                }),
            ),
            (
                "l2update",
                r#"{"type":"l2update","product_id":"BTC-USD","changes":[]}"#,
                Frame::Other("l2update".into()),
            ),
            (
                "candles",
                r#"{"channel":"candles","events":[]}"#,
                Frame::Other("candles".into()),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_frame(text.as_bytes(), 0).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let cases = [
            ("truncated", MATCH[..40].to_string(), "malformed frame"),
            (
                "missing size",
                MATCH.replace(r#""size":"985","#, ""),
                "missing field `size`",
            ),
            (
                "bad price",
                MATCH.replace("0.00001305", "0,00001305"),
                "field `price`: bad decimal",
            ),
            (
                "bad time",
                MATCH.replace("2021-04-17T16", "2021-04-17X16"),
                "field `time`",
            ),
            (
                "bad side",
                MARKET_TRADES.replacen("BUY", "HOLD", 1),
                "field `side`",
            ),
            (
                "bad id",
                MARKET_TRADES.replacen("22381691", "abc", 1),
                "field `trade_id`",
            ),
            ("empty", "{}".to_string(), "unrecognised"),
        ];
        for (name, text, needle) in cases {
            let message = parse_frame(text.as_bytes(), 0).expect_err(name).to_string();
            assert!(
                message.starts_with("coinbase: ") && message.contains(needle),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let trades = vec![
            sample(995_098_700, Side::Buy, 1_775_572_202_789),
            sample(995_098_701, Side::Sell, 1_775_572_202_800),
        ];
        for feed in Feed::ALL {
            let frames = encode_trades(feed, &trades).unwrap();
            let mut back = Vec::new();
            for frame in &frames {
                let Frame::Trades(mut t) = parse_frame(frame.as_bytes(), 0).unwrap() else {
                    panic!("trades")
                };
                back.append(&mut t);
            }
            for (t, original) in back.iter_mut().zip(&trades) {
                t.receive_time = original.receive_time;
            }
            assert_eq!(back, trades, "{feed:?}");

            let body = encode_rest_trades(feed, &trades).unwrap();
            let mut rest = parse_rest_trades(feed, "btc-usd", body.as_bytes(), 0).unwrap();
            for (t, original) in rest.iter_mut().zip(&trades) {
                t.receive_time = original.receive_time;
            }
            assert_eq!(rest, trades, "{feed:?} REST");
        }
        let frames = encode_trades(Feed::AdvancedMarketTrades, &trades).unwrap();
        let text = std::str::from_utf8(frames[0].as_bytes()).unwrap();
        assert!(
            text.find("995098701") < text.find("995098700"),
            "newest first: {text}"
        );
    }

    #[test]
    fn subscribe_requests_match_each_api() {
        let exchange =
            subscribe_requests(Feed::ExchangeMatches, &["btc-usd", "ETH-EUR"], 1).unwrap();
        assert_eq!(exchange.len(), 1);
        assert_eq!(
            exchange[0].text,
            r#"{"type":"subscribe","product_ids":["BTC-USD","ETH-EUR"],"channels":["matches","heartbeat"]}"#
        );
        let advanced = subscribe_requests(Feed::AdvancedMarketTrades, &["ETH-USDT"], 1).unwrap();
        let texts: Vec<&str> = advanced.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                r#"{"type":"subscribe","product_ids":["ETH-USDT"],"channel":"market_trades"}"#,
                r#"{"type":"subscribe","product_ids":["ETH-USDT"],"channel":"heartbeats"}"#
            ]
        );
        assert!(subscribe_requests(Feed::ExchangeMatches, &["BTCUSD"], 1).is_err());
    }

    #[test]
    fn rest_paths_and_errors() {
        assert_eq!(
            rest_trades_path(Feed::ExchangeMatches, "btc-usd", 100),
            "/products/BTC-USD/trades?limit=100"
        );
        assert_eq!(
            rest_trades_path(Feed::AdvancedMarketTrades, "BTC-USD", 5000),
            "/api/v3/brokerage/market/products/BTC-USD/ticker?limit=1000"
        );
        assert_eq!(
            rest_trades_before_path("BTC-USD", 7, 10),
            "/products/BTC-USD/trades?limit=10&after=7"
        );
        let err = parse_rest_trades(
            Feed::ExchangeMatches,
            "X-Y",
            br#"{"message":"NotFound"}"#,
            0,
        )
        .unwrap_err();
        assert!(
            matches!(err, ExchangeError::Rejected { ref message, .. } if message == "NotFound"),
            "{err}"
        );
    }
}

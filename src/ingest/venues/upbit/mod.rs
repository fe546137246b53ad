//! Upbit: the `trade` websocket type in its DEFAULT and SIMPLE formats, and
//! the `/v1/trades/ticks` REST endpoint.
//!
//! Upbit sends UTF-8 JSON in BINARY websocket frames; [`parse_frame`] takes
//! the bytes of either frame type. Prices and volumes are JSON numbers, not
//! strings (`"tp":127.0`, `"trade_volume":8.428e-05`): they are parsed from the
//! number's own text (`serde_json::value::RawValue`), never through `f64`.
//!
//! Symbols put the quote first: `KRW-BTC` is the instrument `BTC-KRW`.
//! Side: `ab`/`ask_bid` is the taker's: `ASK` is a taker sell, `BID` a buy.
//! Ids: `sid`/`sequential_id` identify a trade uniquely, but Upbit says they do
//! not guarantee order and they are not contiguous (they embed the trade
//! time), so there is no gap detection by id.
//!
//! Connection rules: the server closes a connection after about 120 s without
//! traffic; the client keeps it open with a websocket ping or the text `PING`,
//! which the server answers with `{"status":"UP"}` (and then repeats every
//! 10 s). Errors come as `{"error":{"name":"INVALID_PARAM","message":"…"}}`,
//! naming no code; an unknown code is otherwise silent.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    decimal_raw_value, encode_error, field_error, from_json, numeric_id, oldest_first,
    parse_json_number_decimal, request_error, side_or_err, unknown_symbol, unrecognised, utc_parts,
    with_excerpt, ClientPing, ConnectionLimits, ExchangeError, Frame, KeepAlive, PingMessage,
    SubscribeRejection, SubscribeRequest, WireFrame,
};
use crate::model::{Exchange, Millis, Side, Trade};

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Upbit;

pub const WS_URL: &str = "wss://api.upbit.com/websocket/v1";
pub const REST_BASE_URL: &str = "https://api.upbit.com";
/// `GET /v1/trades/ticks?market=KRW-BTC&count=N[&cursor=sequential_id]`,
/// newest first.
pub const REST_TRADES_PATH: &str = "/v1/trades/ticks";

/// `sequential_id` is unique but neither ordered nor contiguous.
pub const IDS_ARE_SEQUENTIAL: bool = false;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Well inside [`IDLE_TIMEOUT`].
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
pub const PING_TEXT: &str = "PING";
/// Websocket messages a client may send per second.
pub const MAX_CLIENT_MESSAGES_PER_SECOND: u32 = 5;
pub const REST_MAX_COUNT: usize = 500;

/// Upbit's two trade formats (chosen in the subscribe request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// Long field names: `{"type":"trade","code":"KRW-ETH",…}`.
    Default,
    /// Abbreviated: `{"ty":"trade","cd":"KRW-LAMB",…}`.
    Simple,
}

impl Feed {
    pub const ALL: [Feed; 2] = [Feed::Default, Feed::Simple];

    pub const fn as_str(self) -> &'static str {
        match self {
            Feed::Default => "default",
            Feed::Simple => "simple",
        }
    }

    /// The `format` value of the subscribe request.
    pub const fn format(self) -> &'static str {
        match self {
            Feed::Default => "DEFAULT",
            Feed::Simple => "SIMPLE",
        }
    }
}

/// The live websocket URL of `feed` (the worker takes the URL from config; this is the default).
pub fn ws_url(_feed: Feed) -> &'static str {
    WS_URL
}

/// The live REST base URL (scheme and host) of the recent-trades endpoint.
pub fn rest_base_url(_feed: Feed) -> &'static str {
    REST_BASE_URL
}

/// Who pings whom, how often, and when the server hangs up.
pub fn keep_alive(_feed: Feed) -> KeepAlive {
    KeepAlive {
        client_ping: Some(ClientPing {
            interval: PING_INTERVAL,
            message: PingMessage::Text(PING_TEXT),
        }),
        server_ping: None,
        idle_timeout: Some(IDLE_TIMEOUT),
        max_connection_age: None,
    }
}

/// Subscription and REST limits of `feed`.
pub fn limits(_feed: Feed) -> ConnectionLimits {
    ConnectionLimits {
        max_topics_per_connection: None,
        max_topics_per_request: None,
        max_client_messages_per_second: Some(MAX_CLIENT_MESSAGES_PER_SECOND),
        rest_max_trades: REST_MAX_COUNT,
    }
}

/// `KRW-BTC` → `BTC-KRW` (Upbit writes the quote first).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] unless the symbol is `QUOTE-BASE`.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    match symbol.split_once('-') {
        Some((quote, base))
            if !quote.is_empty()
                && !base.is_empty()
                && !base.contains('-')
                && symbol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(format!("{base}-{quote}"))
        }
        _ => Err(unknown_symbol(
            EXCHANGE,
            symbol,
            "expected QUOTE-BASE, e.g. KRW-BTC",
        )),
    }
}

/// One request for all `symbols`:
/// `[{"ticket":"tickfetch-1"},{"type":"trade","codes":["KRW-BTC"],"isOnlyRealtime":true},{"format":"SIMPLE"}]`.
/// Codes are upper case. The ticket carries `first_request_id`.
///
/// # Errors
/// [`ExchangeError::Request`] for no symbols, [`ExchangeError::UnknownSymbol`]
/// for a symbol that is not `QUOTE-BASE`.
pub fn subscribe_requests<S: AsRef<str>>(
    feed: Feed,
    symbols: &[S],
    first_request_id: u64,
) -> Result<Vec<SubscribeRequest>, ExchangeError> {
    if symbols.is_empty() {
        return Err(request_error(EXCHANGE, "no symbols to subscribe"));
    }
    let codes = symbols
        .iter()
        .map(|symbol| {
            let code = symbol.as_ref().to_ascii_uppercase();
            instrument(&code)?;
            Ok(code)
        })
        .collect::<Result<Vec<String>, ExchangeError>>()?;
    let ticket = format!("tickfetch-{first_request_id}");
    let request = (
        Ticket {
            ticket: Cow::Borrowed(&ticket),
        },
        TypeRequest {
            kind: Cow::Borrowed("trade"),
            codes: codes.iter().map(|c| Cow::Borrowed(c.as_str())).collect(),
            is_only_realtime: true,
        },
        FormatRequest {
            format: Cow::Borrowed(feed.format()),
        },
    );
    let text = serde_json::to_string(&request)
        .map_err(|e| request_error(EXCHANGE, format!("cannot write request: {e}")))?;
    Ok(vec![SubscribeRequest {
        request_id: Some(ticket),
        symbols: codes,
        text,
    }])
}

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

/// What tells Upbit's frames apart.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
}

/// `{"error":{"name":"INVALID_PARAM","message":"…"}}`
#[derive(Debug, Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

fn taker_side(field: &'static str, ask_bid: &str) -> Result<Side, ExchangeError> {
    match ask_bid {
        "ASK" => Ok(Side::Sell),
        "BID" => Ok(Side::Buy),
        other => Err(field_error(
            EXCHANGE,
            field,
            format!("expected ASK or BID, got {other:?}"),
            b"",
        )),
    }
}

fn trade(
    code: &str,
    sequential_id: u64,
    price: (&'static str, &RawValue),
    volume: (&'static str, &RawValue),
    side: Side,
    trade_time: Millis,
    receive_time: Millis,
) -> Result<Trade, ExchangeError> {
    Ok(Trade {
        exchange: EXCHANGE,
        symbol: code.to_string(),
        instrument: instrument(code)?,
        trade_id: sequential_id.to_string(),
        price: parse_json_number_decimal(EXCHANGE, price.0, price.1, b"")?,
        quantity: parse_json_number_decimal(EXCHANGE, volume.0, volume.1, b"")?,
        side,
        exchange_time: trade_time,
        receive_time,
        first_trade_id: None,
        last_trade_id: None,
    })
}

impl SimpleTrade<'_> {
    /// The normalised trade; its time is the trade time `ttms`.
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad number or side,
    /// [`ExchangeError::UnknownSymbol`] for a code that is not `QUOTE-BASE`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ab", &self.ab)?;
        trade(
            &self.cd,
            self.sid,
            ("tp", self.tp),
            ("tv", self.tv),
            side,
            self.ttms,
            receive_time,
        )
    }
}

impl DefaultTrade<'_> {
    /// The normalised trade; its time is `trade_timestamp`.
    ///
    /// # Errors
    /// As [`SimpleTrade::into_trade`].
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ask_bid", &self.ask_bid)?;
        trade(
            &self.code,
            self.sequential_id,
            ("trade_price", self.trade_price),
            ("trade_volume", self.trade_volume),
            side,
            self.trade_timestamp,
            receive_time,
        )
    }
}

impl RestTrade<'_> {
    /// The normalised trade; its time is `timestamp`.
    ///
    /// # Errors
    /// As [`SimpleTrade::into_trade`].
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ask_bid", &self.ask_bid)?;
        trade(
            &self.market,
            self.sequential_id,
            ("trade_price", self.trade_price),
            ("trade_volume", self.trade_volume),
            side,
            self.timestamp,
            receive_time,
        )
    }
}

/// Classify one frame (the bytes of a binary or text websocket frame).
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON (or bytes that are not UTF-8) or a
/// trade missing a field, [`ExchangeError::Field`] for a bad value,
/// [`ExchangeError::UnknownSymbol`], [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = if let Some(error) = peek.error {
        Ok(Frame::SubscribeError(SubscribeRejection {
            request_id: None,
            symbols: Vec::new(),
            code: error.name.map(Cow::into_owned),
            message: error.message.map(Cow::into_owned).unwrap_or_default(),
        }))
    } else if peek.status.as_deref() == Some("UP") {
        Ok(Frame::Pong)
    } else if peek.ty.as_deref() == Some("trade") {
        let wire: SimpleTrade = from_json(EXCHANGE, payload)?;
        wire.into_trade(receive_time)
            .map(|t| Frame::Trades(vec![t]))
    } else if peek.kind.as_deref() == Some("trade") {
        let wire: DefaultTrade = from_json(EXCHANGE, payload)?;
        wire.into_trade(receive_time)
            .map(|t| Frame::Trades(vec![t]))
    } else if let Some(kind) = peek.ty.or(peek.kind) {
        Ok(Frame::Other(kind.into_owned()))
    } else {
        Err(unrecognised(EXCHANGE, payload))
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// `2021-04-17` and `16:51:02` (UTC) of a trade time.
fn date_and_time(time: Millis) -> (String, String) {
    let p = utc_parts(time);
    (
        format!("{:04}-{:02}-{:02}", p.year, p.month, p.day),
        format!("{:02}:{:02}:{:02}", p.hour, p.minute, p.second),
    )
}

fn ask_bid(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Sell => "ASK",
        _ => "BID",
    })
}

/// The BINARY frames Upbit would send for `trades`, one per trade. Fields the
/// model does not carry are filled plainly: message time = trade time,
/// previous close = price, change `EVEN` by 0, stream type `REALTIME`.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side or a non-numeric trade id.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    let zero = RawValue::from_string("0".to_string())
        .map_err(|e| request_error(EXCHANGE, e.to_string()))?;
    trades
        .iter()
        .map(|trade| {
            let side = ask_bid(trade)?;
            let id = numeric_id(EXCHANGE, trade)?;
            let price = decimal_raw_value(EXCHANGE, trade, trade.price)?;
            let volume = decimal_raw_value(EXCHANGE, trade, trade.quantity)?;
            let (date, time) = date_and_time(trade.exchange_time);
            let text = match feed {
                Feed::Simple => serde_json::to_string(&SimpleTrade {
                    ty: Cow::Borrowed("trade"),
                    cd: Cow::Borrowed(&trade.symbol),
                    tms: trade.exchange_time,
                    td: Cow::Borrowed(&date),
                    ttm: Cow::Borrowed(&time),
                    ttms: trade.exchange_time,
                    tp: &price,
                    tv: &volume,
                    ab: Cow::Borrowed(side),
                    pcp: &price,
                    c: Cow::Borrowed("EVEN"),
                    cp: &zero,
                    sid: id,
                    st: Cow::Borrowed("REALTIME"),
                }),
                Feed::Default => serde_json::to_string(&DefaultTrade {
                    kind: Cow::Borrowed("trade"),
                    code: Cow::Borrowed(&trade.symbol),
                    timestamp: trade.exchange_time,
                    trade_date: Cow::Borrowed(&date),
                    trade_time: Cow::Borrowed(&time),
                    trade_timestamp: trade.exchange_time,
                    trade_price: &price,
                    trade_volume: &volume,
                    ask_bid: Cow::Borrowed(side),
                    prev_closing_price: &price,
                    change: Cow::Borrowed("EVEN"),
                    change_price: &zero,
                    sequential_id: id,
                    best_ask_price: None,
                    best_ask_size: None,
                    best_bid_price: None,
                    best_bid_size: None,
                    stream_type: Cow::Borrowed("REALTIME"),
                }),
            }
            .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))?;
            Ok(WireFrame::Binary(text.into_bytes()))
        })
        .collect()
}

/// `/v1/trades/ticks?market=KRW-BTC&count=200`: the latest trades.
pub fn rest_trades_path(_feed: Feed, symbol: &str, limit: usize) -> String {
    format!(
        "{REST_TRADES_PATH}?market={}&count={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_MAX_COUNT)
    )
}

/// `/v1/trades/ticks?market=KRW-BTC&count=200&cursor=SEQUENTIAL_ID`: the
/// trades before `cursor`, for paging back.
pub fn rest_trades_before_path(symbol: &str, cursor: u64, limit: usize) -> String {
    format!(
        "{}&cursor={cursor}",
        rest_trades_path(Feed::Default, symbol, limit)
    )
}

/// Trades of a `/v1/trades/ticks` response, oldest first. Rows carry their
/// own `market`; `symbol` is not needed but kept for the common signature.
///
/// # Errors
/// [`ExchangeError::Rejected`] for `{"error":{…}}`, else as [`parse_frame`].
pub fn parse_rest_trades(
    _feed: Feed,
    _symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    if let Ok(Peek {
        error: Some(error), ..
    }) = serde_json::from_slice::<Peek>(body)
    {
        return Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: error.name.map(Cow::into_owned),
            message: error.message.map(Cow::into_owned).unwrap_or_default(),
        });
    }
    let rows: Vec<RestTrade> = from_json(EXCHANGE, body)?;
    rows.into_iter()
        .map(|row| row.into_trade(receive_time))
        .collect::<Result<Vec<Trade>, ExchangeError>>()
        .map(oldest_first)
        .map_err(|e| with_excerpt(e, body))
}

/// The REST body Upbit would return for `trades` (newest first, as Upbit).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(_feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let zero = RawValue::from_string("0".to_string())
        .map_err(|e| request_error(EXCHANGE, e.to_string()))?;
    let mut rows = Vec::with_capacity(trades.len());
    for trade in trades.iter().rev() {
        let side = ask_bid(trade)?;
        let id = numeric_id(EXCHANGE, trade)?;
        let price = decimal_raw_value(EXCHANGE, trade, trade.price)?;
        let volume = decimal_raw_value(EXCHANGE, trade, trade.quantity)?;
        let (date, time) = date_and_time(trade.exchange_time);
        let row = serde_json::to_string(&RestTrade {
            market: Cow::Borrowed(&trade.symbol),
            trade_date_utc: Cow::Borrowed(&date),
            trade_time_utc: Cow::Borrowed(&time),
            timestamp: trade.exchange_time,
            trade_price: &price,
            trade_volume: &volume,
            prev_closing_price: &price,
            change_price: &zero,
            ask_bid: Cow::Borrowed(side),
            sequential_id: id,
        })
        .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))?;
        rows.push(row);
    }
    Ok(format!("[{}]", rows.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const SIMPLE: &str = r#"{"ty":"trade","cd":"KRW-LAMB","tms":1618678262712,"td":"2021-04-17","ttm":"16:51:02","ttms":1618678262000,"tp":127.0,"tv":46.48838371,"ab":"BID","pcp":123.00000000,"c":"RISE","cp":4.00000000,"sid":1618678262000003,"st":"REALTIME"}"#;
    const DEFAULT: &str = r#"{"type":"trade","code":"KRW-ETH","timestamp":1696585056910,"trade_date":"2023-10-06","trade_time":"09:37:36","trade_timestamp":1696585056846,"trade_price":37625,"trade_volume":8.428e-05,"ask_bid":"ASK","prev_closing_price":37296,"change":"RISE","change_price":329,"sequential_id":1696585056846000,"best_ask_price":32293000,"best_ask_size":0.04414411,"best_bid_price":32291000,"best_bid_size":0.01202163,"stream_type":"SNAPSHOT"}"#;

    fn sample(side: Side) -> Trade {
        Trade {
            exchange: EXCHANGE,
            symbol: "KRW-BTC".into(),
            instrument: "BTC-KRW".into(),
            trade_id: "17510687993360000".into(),
            price: Decimal::from_str("147058000.0").unwrap(),
            quantity: Decimal::from_str("0.00006043").unwrap(),
            side,
            exchange_time: 1_751_068_799_336,
            receive_time: 1_751_068_799_400,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    #[test]
    fn simple_and_default_trades_decode_exactly() {
        let Frame::Trades(simple) = parse_frame(SIMPLE.as_bytes(), 1).unwrap() else {
            panic!("simple")
        };
        let t = &simple[0];
        assert_eq!(
            (t.symbol.as_str(), t.instrument.as_str()),
            ("KRW-LAMB", "LAMB-KRW")
        );
        assert_eq!(
            (t.price.to_string(), t.quantity.to_string()),
            ("127.0".into(), "46.48838371".into())
        );
        assert_eq!(
            (t.side, t.trade_id.as_str(), t.exchange_time),
            (Side::Buy, "1618678262000003", 1_618_678_262_000)
        );

        let Frame::Trades(default) = parse_frame(DEFAULT.as_bytes(), 1).unwrap() else {
            panic!("default")
        };
        let t = &default[0];
        assert_eq!(t.instrument, "ETH-KRW");
        assert_eq!(
            (t.price.to_string(), t.quantity.to_string()),
            ("37625".into(), "0.00008428".into())
        );
        assert_eq!((t.side, t.exchange_time), (Side::Sell, 1_696_585_056_846));
    }

    #[test]
    fn frames_are_classified() {
        let cases = [
            ("status", r#"{"status":"UP"}"#, Frame::Pong),
            (
                "orderbook",
                r#"{"ty":"orderbook","cd":"KRW-LAMB","obu":[]}"#,
                Frame::Other("orderbook".into()),
            ),
            (
                "candle",
                r#"{"type":"candle.1m","code":"KRW-ETH"}"#,
                Frame::Other("candle.1m".into()),
            ),
            (
                "error",
                r#"{"error":{"name":"INVALID_PARAM","message":"codes must be upper case"}}"#,
                Frame::SubscribeError(SubscribeRejection {
                    request_id: None,
                    symbols: vec![],
                    code: Some("INVALID_PARAM".into()),
                    message: "codes must be upper case".into(),
                }),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_frame(text.as_bytes(), 0).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let cases = [
            ("truncated", SIMPLE[..50].to_string(), "malformed frame"),
            (
                "missing tp",
                SIMPLE.replace(r#""tp":127.0,"#, ""),
                "missing field `tp`",
            ),
            (
                "string price",
                SIMPLE.replace("127.0", r#""12x""#),
                "field `tp`: bad decimal",
            ),
            (
                "bad side",
                SIMPLE.replace("BID", "MID"),
                "field `ab`: expected ASK or BID",
            ),
            (
                "bad code",
                SIMPLE.replace("KRW-LAMB", "KRWLAMB"),
                "\"KRWLAMB\"",
            ),
        ];
        for (name, text, needle) in cases {
            let message = parse_frame(text.as_bytes(), 0).expect_err(name).to_string();
            assert!(
                message.starts_with("upbit: ") && message.contains(needle),
                "{name}: {message}"
            );
        }
        let err = parse_frame(&[0xff, 0xfe, b'{'], 0).unwrap_err();
        assert!(matches!(err, ExchangeError::Malformed { .. }), "{err}");
    }

    #[test]
    fn encode_then_parse_is_identity() {
        for feed in Feed::ALL {
            for side in [Side::Buy, Side::Sell] {
                let trade = sample(side);
                let frames = encode_trades(feed, std::slice::from_ref(&trade)).unwrap();
                assert!(matches!(frames[0], WireFrame::Binary(_)), "binary frames");
                let parsed = parse_frame(frames[0].as_bytes(), trade.receive_time).unwrap();
                assert_eq!(parsed, Frame::Trades(vec![trade.clone()]), "{feed:?}");
            }
        }
        let trades = vec![sample(Side::Buy), {
            let mut t = sample(Side::Sell);
            t.trade_id = "17510687993360001".into();
            t.exchange_time += 5;
            t
        }];
        let body = encode_rest_trades(Feed::Default, &trades).unwrap();
        assert!(
            body.find("17510687993360001") < body.find("17510687993360000"),
            "newest first"
        );
        let back = parse_rest_trades(
            Feed::Default,
            "KRW-BTC",
            body.as_bytes(),
            trades[0].receive_time,
        )
        .unwrap();
        assert_eq!(back[0], trades[0]);
        assert_eq!(back[1].trade_id, trades[1].trade_id);
    }

    #[test]
    fn subscribe_request_matches_upbit_protocol() {
        let requests = subscribe_requests(Feed::Simple, &["krw-btc", "BTC-ARK"], 3).unwrap();
        assert_eq!(
            requests[0].text,
            r#"[{"ticket":"tickfetch-3"},{"type":"trade","codes":["KRW-BTC","BTC-ARK"],"isOnlyRealtime":true},{"format":"SIMPLE"}]"#
        );
        assert_eq!(requests[0].symbols, vec!["KRW-BTC", "BTC-ARK"]);
        assert!(subscribe_requests(Feed::Simple, &["BTCKRW"], 1)
            .unwrap_err()
            .is_terminal());
    }

    #[test]
    fn instruments_put_the_base_first() {
        assert_eq!(instrument("KRW-BTC").as_deref(), Ok("BTC-KRW"));
        assert_eq!(instrument("BTC-FCT2").as_deref(), Ok("FCT2-BTC"));
        for bad in ["KRWBTC", "-BTC", "KRW-", "KRW-BTC-X"] {
            assert!(instrument(bad).is_err(), "{bad}");
        }
    }
}

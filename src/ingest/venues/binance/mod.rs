//! Binance spot: `<symbol>@trade` and `<symbol>@aggTrade` over combined
//! streams, and the `/api/v3/trades` and `/api/v3/aggTrades` REST endpoints.
//!
//! Frames arrive wrapped as `{"stream":"ethusdt@aggTrade","data":{…}}` on the
//! combined endpoint (`/stream`), or bare on a raw stream (`/ws/<stream>`);
//! [`parse_frame`] takes both. Replies to JSON requests are
//! `{"result":null,"id":1}` or an error (`{"error":{"code":2,"msg":"…"},"id":1}`,
//! or the documented bare `{"code":2,"msg":"…","id":1}`). Binance names no
//! stream in an error: the worker ties it to its request by `request_id`.
//! Subscribing to a symbol that does not exist is accepted and then silent:
//! the data-progress watchdog has to notice it.
//!
//! Side: `m` is "the buyer is the maker", so `m == true` is a taker sell.
//! Ids: `t` (@trade) and `a` (@aggTrade) are contiguous per symbol, and so are
//! the raw ids `f..=l` an aggTrade covers.
//!
//! Instruments: `GET /api/v3/exchangeInfo` lists every symbol with its
//! `baseAsset` and `quoteAsset` ([`parse_instruments`]); without it,
//! [`builtin_instrument`] splits the longest of [`QUOTE_ASSETS`] off the symbol.
//!
//! Connection rules (spot docs): the server sends a websocket ping every 20 s
//! and drops the connection if no pong comes within a minute; a connection
//! lives at most 24 hours; at most 1024 streams per connection and 5 incoming
//! messages (pings, pongs, JSON requests) per second.

mod parse;
mod wire;

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::instruments::{resolve, Instrument, InstrumentPage};
use super::{
    field_error, from_json, oldest_first, parse_decimal, request_error, split_by_quote_suffix,
    trade_time, unknown_symbol, unrecognised, with_excerpt, ConnectionLimits, ExchangeError, Frame,
    HistoryPage, KeepAlive, ServerPing, SubscribeRejection, SubscribeRequest,
};
use crate::model::{Exchange, Millis, Side, Trade};

pub use parse::*;
pub use wire::*;

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Binance;

/// Websocket host of spot market streams (`:443` works too).
pub const WS_BASE_URL: &str = "wss://stream.binance.com:9443";

/// Combined-stream endpoint: frames come wrapped in `{"stream":…,"data":…}`;
/// subscribe with `?streams=a/b` in the URL or with JSON `SUBSCRIBE`.
pub const WS_COMBINED_PATH: &str = "/stream";

/// `WS_BASE_URL` + `WS_COMBINED_PATH`.
pub const WS_URL: &str = "wss://stream.binance.com:9443/stream";

pub const REST_BASE_URL: &str = "https://api.binance.com";

/// `GET /api/v3/trades?symbol=&limit=`: the latest trades (limit ≤ 1000).
pub const REST_TRADES_PATH: &str = "/api/v3/trades";

/// `GET /api/v3/aggTrades?symbol=&fromId=&limit=`: aggregate trades from an id.
pub const REST_AGG_TRADES_PATH: &str = "/api/v3/aggTrades";

/// `GET /api/v3/historicalTrades?symbol=&fromId=&limit=`: raw trades from an id.
pub const REST_HISTORICAL_TRADES_PATH: &str = "/api/v3/historicalTrades";

/// `GET /api/v3/exchangeInfo`: every symbol, its status, base and quote asset.
pub const REST_INSTRUMENTS_PATH: &str = "/api/v3/exchangeInfo";

/// The host of the instrument list.
pub const INSTRUMENTS_BASE_URL: &str = REST_BASE_URL;

/// The list is one request, without a query.
pub const INSTRUMENT_LIST_QUERIES: &[&str] = &[""];

/// `t` and `a` are contiguous per symbol.
pub const IDS_ARE_SEQUENTIAL: bool = true;

pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// Incoming (client → server) messages per second, pings and pongs included.
pub const MAX_INCOMING_MESSAGES_PER_SECOND: u32 = 5;

pub const REST_MAX_LIMIT: usize = 1000;

pub const SERVER_PING_INTERVAL: Duration = Duration::from_secs(20);

pub const PONG_DEADLINE: Duration = Duration::from_secs(60);

pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Quote assets of Binance (and Binance.US) spot symbols, for splitting
/// `ETHUSDT` into `ETH-USDT` when no instrument list is loaded; the longest
/// matching suffix wins. Binance's one built-in list (the live feed and
/// `tickfetch import` both map through [`instrument`]).
pub const QUOTE_ASSETS: &[&str] = &[
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "DAI", "UST", "PAX", "USD", "BTC",
    "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT", "SOL", "EUR", "EURI", "AEUR", "GBP", "AUD", "TRY",
    "BRL", "RUB", "UAH", "NGN", "ZAR", "PLN", "RON", "ARS", "JPY", "MXN", "COP", "CZK", "IDRT",
    "BIDR", "BKRW", "BVND", "VAI",
];

/// Binance's two trade streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// `<symbol>@trade`: every trade.
    Trade,
    /// `<symbol>@aggTrade`: trades of one taker order at one price, aggregated.
    AggTrade,
}

impl Feed {
    pub const ALL: [Feed; 2] = [Feed::Trade, Feed::AggTrade];

    /// The stream suffix, which is also the feed's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feed::Trade => "trade",
            Feed::AggTrade => "aggTrade",
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
        client_ping: None,
        server_ping: Some(ServerPing {
            interval: SERVER_PING_INTERVAL,
            pong_deadline: PONG_DEADLINE,
        }),
        idle_timeout: None,
        max_connection_age: Some(MAX_CONNECTION_AGE),
    }
}

/// Subscription and REST limits of `feed`.
pub fn limits(_feed: Feed) -> ConnectionLimits {
    ConnectionLimits {
        max_topics_per_connection: Some(MAX_STREAMS_PER_CONNECTION),
        max_topics_per_request: None,
        max_client_messages_per_second: Some(MAX_INCOMING_MESSAGES_PER_SECOND),
        rest_max_trades: REST_MAX_LIMIT,
    }
}

/// `ETHUSDT` → `ETH-USDT`: by the loaded instrument list (`exchangeInfo`),
/// else by [`builtin_instrument`] (see [`super::instruments`]).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the list lacks the symbol, or the
/// built-in rule cannot split it.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    resolve(EXCHANGE, symbol)
}

/// Binance's built-in rule: upper-case letters and digits, split by the
/// longest of [`QUOTE_ASSETS`] that ends them (`BTCFDUSD` → `BTC`, `FDUSD`).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] for any other symbol.
pub fn builtin_instrument(symbol: &str) -> Result<Instrument, ExchangeError> {
    let well_formed = symbol
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    well_formed
        .then(|| split_by_quote_suffix(EXCHANGE, symbol, QUOTE_ASSETS).ok())
        .flatten()
        .ok_or_else(|| {
            unknown_symbol(
                EXCHANGE,
                symbol,
                format!(
                    "it must be upper-case letters and digits ending in a known quote asset ({})",
                    QUOTE_ASSETS.join(", ")
                ),
            )
        })
}

/// `exchangeInfo` lists every spot symbol.
pub fn listing_covers(_symbol: &str) -> bool {
    true
}

/// `ethusdt@aggTrade`: stream names use the lower-case symbol.
pub fn stream_name(feed: Feed, symbol: &str) -> String {
    format!("{}@{}", symbol.to_ascii_lowercase(), feed.as_str())
}

fn stream_names<S: AsRef<str>>(feed: Feed, symbols: &[S]) -> Result<Vec<String>, ExchangeError> {
    if symbols.is_empty() {
        return Err(request_error(EXCHANGE, "no symbols to subscribe"));
    }
    if symbols.len() > MAX_STREAMS_PER_CONNECTION {
        return Err(request_error(
            EXCHANGE,
            format!(
                "{} streams, more than the {MAX_STREAMS_PER_CONNECTION} one connection may carry",
                symbols.len()
            ),
        ));
    }
    symbols
        .iter()
        .map(|symbol| {
            let symbol = symbol.as_ref();
            if symbol.is_empty() || !symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(unknown_symbol(
                    EXCHANGE,
                    symbol,
                    "symbols are ASCII letters and digits",
                ));
            }
            instrument(&symbol.to_ascii_uppercase())?;
            Ok(stream_name(feed, symbol))
        })
        .collect()
}

/// The combined-stream URL that subscribes through its path:
/// `{base}/stream?streams=ethusdt@aggTrade/btcusdt@aggTrade`. Long lists make
/// long URLs: beyond a few hundred streams prefer [`subscribe_requests`].
///
/// # Errors
/// As [`subscribe_requests`].
pub fn combined_stream_url<S: AsRef<str>>(
    base_url: &str,
    feed: Feed,
    symbols: &[S],
) -> Result<String, ExchangeError> {
    let streams = stream_names(feed, symbols)?;
    Ok(format!(
        "{}{WS_COMBINED_PATH}?streams={}",
        base_url.trim_end_matches('/'),
        streams.join("/")
    ))
}

/// JSON `SUBSCRIBE` for all `symbols` in one message (Binance sets no
/// per-message stream limit, and each message counts against the 5/s limit):
/// `{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":1}`.
///
/// # Errors
/// [`ExchangeError::Request`] for no symbols or more than 1024;
/// [`ExchangeError::UnknownSymbol`] for a symbol that is not alphanumeric or
/// has no known quote asset.
pub fn subscribe_requests<S: AsRef<str>>(
    feed: Feed,
    symbols: &[S],
    first_request_id: u64,
) -> Result<Vec<SubscribeRequest>, ExchangeError> {
    let streams = stream_names(feed, symbols)?;
    let request = StreamRequest {
        method: Cow::Borrowed("SUBSCRIBE"),
        params: streams.iter().map(|s| Cow::Borrowed(s.as_str())).collect(),
        id: first_request_id,
    };
    let text = serde_json::to_string(&request)
        .map_err(|e| request_error(EXCHANGE, format!("cannot write request: {e}")))?;
    Ok(vec![SubscribeRequest {
        request_id: Some(first_request_id.to_string()),
        symbols: symbols
            .iter()
            .map(|s| s.as_ref().to_ascii_uppercase())
            .collect(),
        text,
    }])
}

/// `/api/v3/trades?symbol=ETHUSDT&limit=500` (Trade) or
/// `/api/v3/aggTrades?symbol=ETHUSDT&limit=500` (AggTrade): the latest trades.
pub fn rest_trades_path(feed: Feed, symbol: &str, limit: usize) -> String {
    let path = match feed {
        Feed::Trade => REST_TRADES_PATH,
        Feed::AggTrade => REST_AGG_TRADES_PATH,
    };
    format!(
        "{path}?symbol={}&limit={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_MAX_LIMIT)
    )
}

/// `/api/v3/aggTrades?symbol=ETHUSDT&fromId=N&limit=L`: backfill aggregate
/// trades from aggregate id `from_id` on.
pub fn agg_trades_from_path(symbol: &str, from_id: u64, limit: usize) -> String {
    format!(
        "{REST_AGG_TRADES_PATH}?symbol={}&fromId={from_id}&limit={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_MAX_LIMIT)
    )
}

/// `/api/v3/historicalTrades?symbol=ETHUSDT&fromId=N&limit=L`: backfill raw
/// trades from trade id `from_id` on.
pub fn historical_trades_from_path(symbol: &str, from_id: u64, limit: usize) -> String {
    format!(
        "{REST_HISTORICAL_TRADES_PATH}?symbol={}&fromId={from_id}&limit={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_MAX_LIMIT)
    )
}

/// History pages: `fromId` forward (raw trades from `historicalTrades`,
/// aggregates from `aggTrades`); Binance does not page backwards by id.
pub fn rest_history_path(
    feed: Feed,
    symbol: &str,
    page: HistoryPage,
    limit: usize,
) -> Option<String> {
    match (feed, page) {
        (Feed::Trade, HistoryPage::From(id)) => {
            Some(historical_trades_from_path(symbol, id, limit))
        }
        (Feed::AggTrade, HistoryPage::From(id)) => Some(agg_trades_from_path(symbol, id, limit)),
        (_, HistoryPage::Before(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exsim::encode::binance::{encode_rest_trades, encode_trades};
    use crate::ingest::venues::WireFrame;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const AGG_TRADE: &str = r#"{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,"p":"0.35280000","q":"58.00000000","f":19862790,"l":19862790,"T":1633998523963,"m":false,"M":true}}"#;
    const TRADE: &str = r#"{"stream":"ethusdt@trade","data":{"e":"trade","E":1639351062244,"s":"ETHUSDT","t":705291099,"p":"4149.74000000","q":"0.43870000","b":7038593583,"a":7038593613,"T":1639351062243,"m":true,"M":true}}"#;

    fn sample(id: &str, side: Side, raw: Option<(u64, u64)>) -> Trade {
        Trade {
            exchange: EXCHANGE,
            symbol: "ETHUSDT".into(),
            instrument: "ETH-USDT".into(),
            trade_id: id.into(),
            price: Decimal::from_str("1632.46000000").unwrap(),
            quantity: Decimal::from_str("0.34305000").unwrap(),
            side,
            exchange_time: 1_675_759_520_847,
            receive_time: 1_675_759_520_900,
            first_trade_id: raw.map(|r| r.0),
            last_trade_id: raw.map(|r| r.1),
        }
    }

    #[test]
    fn agg_trade_frame_decodes() {
        let Frame::Trades(trades) = parse_frame(AGG_TRADE.as_bytes(), 7).unwrap() else {
            panic!("not trades")
        };
        let t = &trades[0];
        assert_eq!(
            (t.symbol.as_str(), t.instrument.as_str()),
            ("NKNUSDT", "NKN-USDT")
        );
        assert_eq!(t.trade_id, "15683430");
        assert_eq!(t.price.to_string(), "0.35280000");
        assert_eq!(t.quantity.to_string(), "58.00000000");
        assert_eq!(t.side, Side::Buy);
        assert_eq!((t.exchange_time, t.receive_time), (1_633_998_523_963, 7));
        assert_eq!(
            (t.first_trade_id, t.last_trade_id),
            (Some(19_862_790), Some(19_862_790))
        );
    }

    #[test]
    fn trade_frame_decodes_buyer_maker_as_taker_sell() {
        let Frame::Trades(trades) = parse_frame(TRADE.as_bytes(), 0).unwrap() else {
            panic!("not trades")
        };
        assert_eq!(trades[0].side, Side::Sell);
        assert_eq!(trades[0].trade_id, "705291099");
        assert_eq!(trades[0].first_trade_id, None);
    }

    #[test]
    fn frames_are_classified() {
        let cases: [(&str, &str, Frame); 6] = [
            (
                "ack",
                r#"{"result":null,"id":1}"#,
                Frame::SubscribeAck {
                    request_id: Some("1".into()),
                    topics: vec![],
                },
            ),
            (
                "list",
                r#"{"result":["btcusdt@aggTrade"],"id":3}"#,
                Frame::SubscribeAck {
                    request_id: Some("3".into()),
                    topics: vec!["btcusdt@aggTrade".into()],
                },
            ),
            (
                "nested error",
                r#"{"error":{"code":2,"msg":"Invalid request: too many parameters"},"id":4}"#,
                Frame::SubscribeError(SubscribeRejection {
                    request_id: Some("4".into()),
                    symbols: vec![],
                    code: Some("2".into()),
                    message: "Invalid request: too many parameters".into(),
                }),
            ),
            (
                "bare error",
                r#"{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1","id":null}"#,
                Frame::SubscribeError(SubscribeRejection {
                    request_id: None,
                    symbols: vec![],
                    code: Some("3".into()),
                    message: "Invalid JSON: expected value at line 1 column 1".into(),
                }),
            ),
            (
                "kline",
                r#"{"stream":"lrcbtc@kline_1m","data":{"e":"kline","k":{}}}"#,
                Frame::Other("kline_1m".into()),
            ),
            (
                "bare depth",
                r#"{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":2,"b":[],"a":[]}"#,
                Frame::Other("depthUpdate".into()),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_frame(text.as_bytes(), 0).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let cases = [
            ("truncated", &AGG_TRADE[..60], "malformed frame"),
            (
                "missing price",
                r#"{"stream":"x@aggTrade","data":{"e":"aggTrade","E":1,"s":"ETHUSDT","a":1,"q":"1","f":1,"l":1,"T":1,"m":true}}"#,
                "missing field `p`",
            ),
            (
                "bad decimal",
                r#"{"stream":"x@aggTrade","data":{"e":"aggTrade","E":1,"s":"ETHUSDT","a":1,"p":"1.2.3","q":"1","f":1,"l":1,"T":1,"m":true}}"#,
                "field `p`: bad decimal \"1.2.3\"",
            ),
            (
                "unknown quote",
                r#"{"e":"trade","E":1,"s":"ETHXYZ","t":1,"p":"1","q":"1","T":1,"m":true}"#,
                "\"ETHXYZ\"",
            ),
            (
                "nothing known",
                r#"{"hello":"world"}"#,
                "unrecognised frame",
            ),
        ];
        for (name, text, needle) in cases {
            let err = parse_frame(text.as_bytes(), 0).expect_err(name);
            let message = err.to_string();
            assert!(message.starts_with("binance: "), "{name}: {message}");
            assert!(message.contains(needle), "{name}: {message}");
        }
        let err = parse_frame(br#"{"stream":"x@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"-1","q":"1","T":1,"m":true}}"#, 0).unwrap_err();
        assert!(
            err.to_string().contains(r#"input: {"stream":"x@trade""#),
            "{err}"
        );
    }

    #[test]
    fn encode_then_parse_is_identity() {
        for (feed, trade) in [
            (Feed::Trade, sample("705291099", Side::Sell, None)),
            (
                Feed::AggTrade,
                sample("226532", Side::Buy, Some((228_423, 228_425))),
            ),
        ] {
            let frames = encode_trades(feed, std::slice::from_ref(&trade)).unwrap();
            assert!(matches!(frames[0], WireFrame::Text(_)));
            let parsed = parse_frame(frames[0].as_bytes(), trade.receive_time).unwrap();
            assert_eq!(parsed, Frame::Trades(vec![trade.clone()]), "{feed:?}");

            let body = encode_rest_trades(feed, std::slice::from_ref(&trade)).unwrap();
            let back =
                parse_rest_trades(feed, "ethusdt", body.as_bytes(), trade.receive_time).unwrap();
            assert_eq!(back, vec![trade], "{feed:?} REST");
        }
        let unknown = sample("1", Side::Unknown, None);
        assert!(encode_trades(Feed::Trade, &[unknown])
            .unwrap_err()
            .is_terminal());
        let aggregated = sample("1", Side::Buy, Some((1, 3)));
        assert!(encode_trades(Feed::Trade, &[aggregated]).is_err());
        let no_ids = sample("1", Side::Buy, None);
        assert!(encode_trades(Feed::AggTrade, &[no_ids]).is_err());
    }

    #[test]
    fn subscribe_forms() {
        let url = combined_stream_url("ws://127.0.0.1:9/", Feed::AggTrade, &["NKNUSDT", "lrcbtc"])
            .unwrap();
        assert_eq!(
            url,
            "ws://127.0.0.1:9/stream?streams=nknusdt@aggTrade/lrcbtc@aggTrade"
        );
        let requests = subscribe_requests(Feed::Trade, &["ETHUSDT", "BTCUSDT"], 7).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].text,
            r#"{"method":"SUBSCRIBE","params":["ethusdt@trade","btcusdt@trade"],"id":7}"#
        );
        assert_eq!(requests[0].request_id.as_deref(), Some("7"));
        assert_eq!(requests[0].symbols, vec!["ETHUSDT", "BTCUSDT"]);

        let too_many: Vec<String> = (0..1025).map(|i| format!("A{i}USDT")).collect();
        let err = subscribe_requests(Feed::Trade, &too_many, 1).unwrap_err();
        assert!(
            err.is_terminal() && err.to_string().contains("1024"),
            "{err}"
        );
        let err = subscribe_requests(Feed::Trade, &["ETH/USDT"], 1).unwrap_err();
        assert_eq!(err.symbol(), Some("ETH/USDT"));
        assert!(subscribe_requests::<&str>(Feed::Trade, &[], 1).is_err());
    }

    #[test]
    fn instruments_split_by_longest_quote() {
        for (symbol, expected) in [
            ("ETHUSDT", "ETH-USDT"),
            ("BTCFDUSD", "BTC-FDUSD"),
            ("BTCTUSD", "BTC-TUSD"),
            ("WBTCBTC", "WBTC-BTC"),
            ("USDTTRY", "USDT-TRY"),
            ("OMGBUSD", "OMG-BUSD"),
            ("RUNEEUR", "RUNE-EUR"),
            ("BTCUSD", "BTC-USD"),
        ] {
            assert_eq!(instrument(symbol).as_deref(), Ok(expected), "{symbol}");
        }
        for bad in ["USDT", "ETHXYZ", ""] {
            let err = instrument(bad).unwrap_err();
            assert_eq!(err.symbol(), Some(bad));
        }
    }

    #[test]
    fn rest_paths_and_errors() {
        assert_eq!(
            rest_trades_path(Feed::Trade, "ethusdt", 5000),
            "/api/v3/trades?symbol=ETHUSDT&limit=1000"
        );
        assert_eq!(
            agg_trades_from_path("ETHUSDT", 42, 10),
            "/api/v3/aggTrades?symbol=ETHUSDT&fromId=42&limit=10"
        );
        let err = parse_rest_trades(
            Feed::Trade,
            "X",
            br#"{"code":-1121,"msg":"Invalid symbol."}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ExchangeError::Rejected {
                exchange: EXCHANGE,
                code: Some("-1121".into()),
                message: "Invalid symbol.".into()
            }
        );
    }

    /// Found by `tests/fuzz.rs`: an `aggTrades` REST row with `l < f` was
    /// accepted (the websocket event refused it), and no trade time was
    /// checked (`"T":0`, seconds, microseconds all passed).
    #[test]
    fn reversed_raw_ids_and_implausible_times_are_refused_everywhere() {
        let row = r#"[{"a":966492862,"p":"60759.60000000","q":"0.00841000","f":1111480471,"l":1111480471,"T":1634944096633,"m":false,"M":true}]"#;
        assert!(parse_rest_trades(Feed::AggTrade, "BTCUSDT", row.as_bytes(), 0).is_ok());
        let reversed = row.replace(r#""l":1111480471"#, r#""l":1111480470"#);
        let err = parse_rest_trades(Feed::AggTrade, "BTCUSDT", reversed.as_bytes(), 0)
            .expect_err("l < f");
        assert!(
            matches!(err, ExchangeError::Field { field: "l", .. }),
            "{err}"
        );
        for time in ["0", "1634944096", "1634944096633000", "-1"] {
            let row = row.replace("1634944096633", time);
            let err =
                parse_rest_trades(Feed::AggTrade, "BTCUSDT", row.as_bytes(), 0).expect_err(time);
            assert!(
                matches!(err, ExchangeError::Field { field: "T", .. }),
                "{err}"
            );
            let frame = AGG_TRADE.replace(r#""T":1633998523963"#, &format!(r#""T":{time}"#));
            let err = parse_frame(frame.as_bytes(), 0).expect_err(time);
            assert!(
                matches!(err, ExchangeError::Field { field: "T", .. }),
                "{err}"
            );
        }
        let trades =
            r#"[{"id":1,"price":"1","qty":"1","quoteQty":"1","time":5,"isBuyerMaker":true}]"#;
        let err =
            parse_rest_trades(Feed::Trade, "BTCUSDT", trades.as_bytes(), 0).expect_err("time 5");
        assert!(
            matches!(err, ExchangeError::Field { field: "time", .. }),
            "{err}"
        );
    }

    /// An excerpt of a real `exchangeInfo` body: two of its symbols (one
    /// delisted, `BREAK`), filters cut short.
    const EXCHANGE_INFO: &str = r#"{"timezone":"UTC","serverTime":1718000000000,"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}],"exchangeFilters":[],"symbols":[{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","baseAssetPrecision":8,"quoteAsset":"BTC","quotePrecision":8,"quoteAssetPrecision":8,"baseCommissionPrecision":8,"quoteCommissionPrecision":8,"orderTypes":["LIMIT","LIMIT_MAKER","MARKET","STOP_LOSS_LIMIT","TAKE_PROFIT_LIMIT"],"icebergAllowed":true,"ocoAllowed":true,"otoAllowed":true,"quoteOrderQtyMarketAllowed":true,"allowTrailingStop":true,"cancelReplaceAllowed":true,"isSpotTradingAllowed":true,"isMarginTradingAllowed":true,"filters":[{"filterType":"PRICE_FILTER","minPrice":"0.00001000","maxPrice":"922327.00000000","tickSize":"0.00001000"},{"filterType":"LOT_SIZE","minQty":"0.00010000","maxQty":"100000.00000000","stepSize":"0.00010000"}],"permissions":[],"permissionSets":[["SPOT","MARGIN","TRD_GRP_004"]],"defaultSelfTradePreventionMode":"EXPIRE_MAKER","allowedSelfTradePreventionModes":["EXPIRE_TAKER","EXPIRE_MAKER","EXPIRE_BOTH"]},{"symbol":"LUNAUST","status":"BREAK","baseAsset":"LUNA","baseAssetPrecision":8,"quoteAsset":"UST","quotePrecision":8,"quoteAssetPrecision":8,"orderTypes":["LIMIT","MARKET"],"icebergAllowed":true,"ocoAllowed":true,"isSpotTradingAllowed":false,"isMarginTradingAllowed":false,"filters":[],"permissions":[],"permissionSets":[["SPOT"]]}]}"#;

    #[test]
    fn exchange_info_lists_base_and_quote() {
        let page = parse_instruments(EXCHANGE_INFO.as_bytes()).expect("exchangeInfo");
        assert_eq!(
            page.instruments,
            vec![
                Instrument::new("ETHBTC", "ETH", "BTC"),
                Instrument::new("LUNAUST", "LUNA", "UST"),
            ]
        );
        assert_eq!(page.next_cursor, None);
        let body = crate::exsim::encode::binance::encode_instruments(&page.instruments, 1)
            .expect("encode");
        assert_eq!(
            parse_instruments(body.as_bytes())
                .expect("round trip")
                .instruments,
            page.instruments
        );
        let err = parse_instruments(br#"{"code":-1003,"msg":"Too many requests."}"#).unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
        let err = parse_instruments(br#"{"symbols":[{"symbol":"X"}]}"#).unwrap_err();
        assert!(matches!(err, ExchangeError::Malformed { .. }), "{err}");
    }

    #[test]
    fn the_built_in_rule_takes_upper_case_alphanumerics_only() {
        for bad in ["btcusdt", "BTC-USDT", "BTC/USDT"] {
            let err = builtin_instrument(bad).unwrap_err();
            assert_eq!(err.symbol(), Some(bad));
            assert!(err.to_string().contains("upper-case"), "{err}");
        }
        assert_eq!(
            builtin_instrument("BTCBKRW"),
            Ok(Instrument::new("BTCBKRW", "BTC", "BKRW"))
        );
    }
}

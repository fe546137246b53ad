//! Upbit: the `trade` websocket type in its DEFAULT and SIMPLE formats, and
//! the `/v1/trades/ticks` REST endpoint.
//!
//! Upbit sends UTF-8 JSON in BINARY websocket frames; [`parse_frame`] takes
//! the bytes of either frame type. Prices and volumes are JSON numbers, not
//! strings (`"tp":127.0`, `"trade_volume":8.428e-05`): they are parsed from the
//! number's own text (`serde_json::value::RawValue`), never through `f64`.
//!
//! Symbols put the quote first: `KRW-BTC` is the instrument `BTC-KRW`.
//! `GET /v1/market/all` lists every market code ([`parse_instruments`]).
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

mod parse;
mod wire;

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::instruments::{resolve, Instrument, InstrumentPage};
use super::{
    field_error, from_json, oldest_first, parse_json_number_decimal, request_error, trade_time,
    unknown_symbol, unrecognised, with_excerpt, ClientPing, ConnectionLimits, ExchangeError, Frame,
    HistoryPage, KeepAlive, PingMessage, SubscribeRejection, SubscribeRequest,
};
use crate::model::{Exchange, Millis, Side, Trade};

pub use parse::*;
pub use wire::*;

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Upbit;

pub const WS_URL: &str = "wss://api.upbit.com/websocket/v1";

pub const REST_BASE_URL: &str = "https://api.upbit.com";

/// `GET /v1/market/all`: every market code with its asset's names.
pub const REST_INSTRUMENTS_PATH: &str = "/v1/market/all";

/// The host of the instrument list.
pub const INSTRUMENTS_BASE_URL: &str = REST_BASE_URL;

/// The list is one request, without a query.
pub const INSTRUMENT_LIST_QUERIES: &[&str] = &[""];

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

/// `KRW-BTC` → `BTC-KRW`: by the loaded market list, else by
/// [`builtin_instrument`] (see [`super::instruments`]).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the list lacks the market, or the
/// built-in rule cannot split it.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    resolve(EXCHANGE, symbol)
}

/// `market/all` lists every market.
pub fn listing_covers(_symbol: &str) -> bool {
    true
}

/// `KRW-BTC` → base `BTC`, quote `KRW` (Upbit writes the quote first);
/// also how a market code of the list is read.
fn split_market(code: &str) -> Option<(&str, &str)> {
    match code.split_once('-') {
        Some((quote, base)) if !quote.is_empty() && !base.is_empty() && !base.contains('-') => {
            Some((base, quote))
        }
        _ => None,
    }
}

/// Upbit's built-in rule: `QUOTE-BASE`, `KRW-BTC` → `BTC-KRW`.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] unless the symbol is `QUOTE-BASE`.
pub fn builtin_instrument(symbol: &str) -> Result<Instrument, ExchangeError> {
    let well_formed = symbol
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    match split_market(symbol) {
        Some((base, quote)) if well_formed => Ok(Instrument::new(symbol, base, quote)),
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

/// No history paging by trade id: Upbit's ids are not ordered (its
/// `cursor` pages by position), so gaps are never found by id.
pub fn rest_history_path(
    _feed: Feed,
    _symbol: &str,
    _page: HistoryPage,
    _limit: usize,
) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exsim::encode::upbit::{encode_rest_trades, encode_trades};
    use crate::ingest::venues::WireFrame;
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

    /// Found by `tests/fuzz.rs`: no trade time was checked (`ttms` of 0,
    /// in seconds or in microseconds all became trades).
    #[test]
    fn implausible_trade_times_are_refused() {
        for (frame, from, field) in [
            (SIMPLE, r#""ttms":1618678262000"#, "ttms"),
            (
                DEFAULT,
                r#""trade_timestamp":1696585056846"#,
                "trade_timestamp",
            ),
        ] {
            assert!(parse_frame(frame.as_bytes(), 0).is_ok());
            for time in ["0", "1618678262", "1618678262000000", "-5"] {
                let key = from.split(':').next().unwrap_or_default();
                let bad = frame.replace(from, &format!("{key}:{time}"));
                let err = parse_frame(bad.as_bytes(), 0).expect_err(time);
                assert!(
                    matches!(&err, ExchangeError::Field { field: f, .. } if *f == field),
                    "{time}: {err}"
                );
            }
        }
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

    /// An excerpt of a real `GET /v1/market/all` body.
    const MARKETS: &str = r#"[{"market":"KRW-BTC","korean_name":"비트코인","english_name":"Bitcoin"},{"market":"BTC-ETH","korean_name":"이더리움","english_name":"Ethereum"},{"market":"USDT-XRP","korean_name":"리플","english_name":"XRP"}]"#;

    #[test]
    fn market_codes_put_the_quote_first() {
        let page = parse_instruments(MARKETS.as_bytes()).expect("markets");
        assert_eq!(
            page.instruments,
            vec![
                Instrument::new("KRW-BTC", "BTC", "KRW"),
                Instrument::new("BTC-ETH", "ETH", "BTC"),
                Instrument::new("USDT-XRP", "XRP", "USDT"),
            ]
        );
        for details in [false, true] {
            let body = crate::exsim::encode::upbit::encode_instruments(&page.instruments, details)
                .expect("encode");
            assert_eq!(body.contains("market_warning"), details);
            assert_eq!(
                parse_instruments(body.as_bytes())
                    .expect("round trip")
                    .instruments,
                page.instruments
            );
        }
        let odd = parse_instruments(br#"[{"market":"KRWBTC","korean_name":"","english_name":""}]"#)
            .expect("a list");
        assert!(
            odd.instruments.is_empty(),
            "a code that does not split names nothing"
        );
        let err =
            parse_instruments(br#"{"error":{"name":"too_many_requests","message":"slow down"}}"#)
                .unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
    }
}

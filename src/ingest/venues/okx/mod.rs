//! OKX v5: the `trades` channel (public websocket) and `trades-all` channel
//! (business websocket), and `GET /api/v5/market/trades`.
//!
//! A trade message: `{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{…}]}`.
//! Side: `side` is the taker's. Ids: `tradeId` is contiguous per instrument.
//! The `trades` channel aggregates the fills of one taker order at one price:
//! `count` fills whose last id is `tradeId`, so such a trade covers raw ids
//! `tradeId − count + 1 ..= tradeId` and comes out with `first_trade_id` and
//! `last_trade_id` set, as a Binance aggTrade (older messages, such as the
//! 2022 recording, carry no `count` and come out as single trades).
//! `trades-all` sends every fill on its own.
//!
//! Instruments: OKX ids are already `BASE-QUOTE` (`BTC-USDT`); derivative ids
//! are kept whole (`BTC-USDT-SWAP`, `BTC-USD-220527`) so that they never merge
//! with the spot pair. On `FUTURES`/`SWAP`/`OPTION` the size `sz` is a number
//! of contracts, not of the base coin. `GET /api/v5/public/instruments?instType=SPOT`
//! lists the spot ids with `baseCcy` and `quoteCcy` ([`parse_instruments`]);
//! derivative ids (three parts or more) are outside that list and keep the
//! built-in rule ([`listing_covers`]).
//!
//! Replies: `{"event":"subscribe","arg":{…},"connId":"…"}` and
//! `{"event":"error","code":"60018","msg":"Wrong URL or channel:trades,instId:FOO-USDT
//! doesn't exist.","connId":"…"}`; the instrument is taken from `msg`.
//! Connection rules: the server drops a connection silent for 30 s; the client
//! sends the text `ping` (answer `pong`) when it has heard nothing for less
//! than that. A subscribe message is at most 64 KB; each connection may send
//! 480 subscribe/unsubscribe/login requests an hour.

mod parse;
mod wire;

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::instruments::{resolve, Instrument, InstrumentPage};
use super::{
    field_error, from_json, oldest_first, parse_decimal, parse_int_text, request_error, trade_time,
    unknown_symbol, unrecognised, with_excerpt, ClientPing, ConnectionLimits, ExchangeError, Frame,
    HistoryPage, KeepAlive, PingMessage, SubscribeRejection, SubscribeRequest,
};
use crate::model::{Exchange, Millis, Side, Trade};

pub use parse::*;
pub use wire::*;

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Okx;

/// Public websocket: the `trades` channel.
pub const WS_URL_PUBLIC: &str = "wss://ws.okx.com:8443/ws/v5/public";

/// Business websocket: the `trades-all` channel.
pub const WS_URL_BUSINESS: &str = "wss://ws.okx.com:8443/ws/v5/business";

pub const REST_BASE_URL: &str = "https://www.okx.com";

/// `GET /api/v5/market/trades?instId=BTC-USDT&limit=N` (N ≤ 500), newest first.
pub const REST_TRADES_PATH: &str = "/api/v5/market/trades";

/// `GET /api/v5/public/instruments?instType=SPOT`: the spot instruments.
pub const REST_INSTRUMENTS_PATH: &str = "/api/v5/public/instruments";

/// The host of the instrument list.
pub const INSTRUMENTS_BASE_URL: &str = REST_BASE_URL;

/// The spot list only: derivative ids keep the built-in rule.
pub const INSTRUMENT_LIST_QUERIES: &[&str] = &["instType=SPOT"];

/// `GET /api/v5/market/history-trades?instId=…&type=1&after=tradeId&limit=N`
/// (N ≤ 100): older trades, for paging back over a gap.
pub const REST_HISTORY_TRADES_PATH: &str = "/api/v5/market/history-trades";

/// `tradeId` is contiguous per instrument.
pub const IDS_ARE_SEQUENTIAL: bool = true;

pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Below [`IDLE_TIMEOUT`], as OKX asks.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

pub const PING_TEXT: &str = "ping";

pub const PONG_TEXT: &str = "pong";

pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub const MAX_SUBSCRIBE_REQUESTS_PER_HOUR: u32 = 480;

pub const REST_MAX_LIMIT: usize = 500;

pub const REST_HISTORY_MAX_LIMIT: usize = 100;

/// OKX's two trade channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// `trades`: aggregated per taker order and price, with `count`.
    Trades,
    /// `trades-all`: one fill per message.
    TradesAll,
}

impl Feed {
    pub const ALL: [Feed; 2] = [Feed::Trades, Feed::TradesAll];

    /// The channel name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feed::Trades => "trades",
            Feed::TradesAll => "trades-all",
        }
    }
}

/// The live websocket URL of `feed` (the worker takes the URL from config; this is the default).
pub fn ws_url(feed: Feed) -> &'static str {
    match feed {
        Feed::Trades => WS_URL_PUBLIC,
        Feed::TradesAll => WS_URL_BUSINESS,
    }
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
        max_client_messages_per_second: None,
        rest_max_trades: REST_MAX_LIMIT,
    }
}

/// `BTC-USDT` → `BTC-USDT`: by the loaded instrument list (spot ids), else
/// by [`builtin_instrument`] (see [`super::instruments`]).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the list lacks a spot id, or the
/// built-in rule cannot split it.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    resolve(EXCHANGE, symbol)
}

/// The spot list covers `BASE-QUOTE` ids; `BTC-USDT-SWAP` and other
/// derivative ids are not in it.
pub fn listing_covers(symbol: &str) -> bool {
    symbol.split('-').count() == 2
}

/// OKX's built-in rule: ids are kept, `BTC-USDT` → `BTC`, `USDT` and
/// `BTC-USDT-SWAP` → `BTC`, `USDT-SWAP` (named `BTC-USDT-SWAP`).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] for an id without `BASE-QUOTE`.
pub fn builtin_instrument(symbol: &str) -> Result<Instrument, ExchangeError> {
    let mut parts = symbol.split('-');
    let well_formed = parts.next().is_some_and(|base| !base.is_empty())
        && parts.next().is_some_and(|quote| !quote.is_empty())
        && parts.all(|rest| !rest.is_empty())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    match symbol.split_once('-') {
        Some((base, quote)) if well_formed => Ok(Instrument::new(symbol, base, quote)),
        _ => Err(unknown_symbol(
            EXCHANGE,
            symbol,
            "expected BASE-QUOTE[-…], e.g. BTC-USDT",
        )),
    }
}

/// `{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}`,
/// split so that no message exceeds 64 KB; ids count up.
///
/// # Errors
/// [`ExchangeError::Request`] for no symbols; [`ExchangeError::UnknownSymbol`].
pub fn subscribe_requests<S: AsRef<str>>(
    feed: Feed,
    symbols: &[S],
    first_request_id: u64,
) -> Result<Vec<SubscribeRequest>, ExchangeError> {
    if symbols.is_empty() {
        return Err(request_error(EXCHANGE, "no symbols to subscribe"));
    }
    let symbols = symbols
        .iter()
        .map(|s| {
            let symbol = s.as_ref().to_ascii_uppercase();
            instrument(&symbol).map(|_| symbol)
        })
        .collect::<Result<Vec<String>, ExchangeError>>()?;
    // Room for `{"id":"…","op":"subscribe","args":[]}` with a 20-digit id.
    const OVERHEAD: usize = 64;
    let mut groups: Vec<&[String]> = Vec::new();
    let (mut start, mut bytes) = (0, OVERHEAD);
    for (i, symbol) in symbols.iter().enumerate() {
        let arg_bytes = r#"{"channel":"","instId":""},"#.len() + feed.as_str().len() + symbol.len();
        if i > start && bytes + arg_bytes > MAX_REQUEST_BYTES {
            groups.push(&symbols[start..i]);
            (start, bytes) = (i, OVERHEAD);
        }
        bytes += arg_bytes;
    }
    groups.push(&symbols[start..]);
    groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| {
            let id = (first_request_id + i as u64).to_string();
            let request = OpRequest {
                id: Some(Cow::Borrowed(&id)),
                op: Cow::Borrowed("subscribe"),
                args: group
                    .iter()
                    .map(|symbol| ChannelArg {
                        channel: Cow::Borrowed(feed.as_str()),
                        inst_id: Cow::Borrowed(symbol),
                    })
                    .collect(),
            };
            let text = serde_json::to_string(&request)
                .map_err(|e| request_error(EXCHANGE, format!("cannot write request: {e}")))?;
            Ok(SubscribeRequest {
                request_id: Some(id),
                symbols: group.to_vec(),
                text,
            })
        })
        .collect()
}

/// `/api/v5/market/trades?instId=BTC-USDT&limit=100`.
pub fn rest_trades_path(_feed: Feed, symbol: &str, limit: usize) -> String {
    format!(
        "{REST_TRADES_PATH}?instId={}&limit={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_MAX_LIMIT)
    )
}

/// `/api/v5/market/history-trades?instId=BTC-USDT&type=1&after=ID&limit=100`:
/// trades older than trade id `after`.
pub fn rest_trades_before_path(symbol: &str, after: u64, limit: usize) -> String {
    format!(
        "{REST_HISTORY_TRADES_PATH}?instId={}&type=1&after={after}&limit={}",
        symbol.to_ascii_uppercase(),
        limit.clamp(1, REST_HISTORY_MAX_LIMIT)
    )
}

/// History pages: `history-trades` back from a trade id (`after`).
pub fn rest_history_path(
    _feed: Feed,
    symbol: &str,
    page: HistoryPage,
    limit: usize,
) -> Option<String> {
    match page {
        HistoryPage::Before(id) => Some(rest_trades_before_path(symbol, id, limit)),
        HistoryPage::From(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exsim::encode::okx::{encode_rest_trades, encode_trades};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const PUSH: &str = r#"{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"338476307","px":"30236","sz":"0.0002","side":"buy","ts":"1652459224818"}]}"#;
    const DOCS_PUSH: &str = r#"{"arg":{"channel":"trades","instId":"BTC-USD"},"data":[{"instId":"BTC-USD","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3"}]}"#;

    fn sample(id: u64, raw: Option<(u64, u64)>, side: Side) -> Trade {
        Trade {
            exchange: EXCHANGE,
            symbol: "BTC-USDT".into(),
            instrument: "BTC-USDT".into(),
            trade_id: id.to_string(),
            price: Decimal::from_str("102537.9").unwrap(),
            quantity: Decimal::from_str("0.00013669").unwrap(),
            side,
            exchange_time: 1_747_087_163_557,
            receive_time: 1_747_087_163_600,
            first_trade_id: raw.map(|r| r.0),
            last_trade_id: raw.map(|r| r.1),
        }
    }

    #[test]
    fn pushes_decode_with_and_without_count() {
        let Frame::Trades(trades) = parse_frame(PUSH.as_bytes(), 1).unwrap() else {
            panic!("trades")
        };
        let t = &trades[0];
        assert_eq!(
            (t.trade_id.as_str(), t.side, t.exchange_time),
            ("338476307", Side::Buy, 1_652_459_224_818)
        );
        assert_eq!(
            (t.price.to_string(), t.quantity.to_string()),
            ("30236".into(), "0.0002".into())
        );
        assert_eq!((t.first_trade_id, t.last_trade_id), (None, None));

        let Frame::Trades(trades) = parse_frame(DOCS_PUSH.as_bytes(), 1).unwrap() else {
            panic!("trades")
        };
        assert_eq!(
            (trades[0].first_trade_id, trades[0].last_trade_id),
            (Some(130_639_472), Some(130_639_474))
        );
        assert_eq!(trades[0].trade_count(), 3);
    }

    /// Found by `tests/fuzz.rs`: no trade time was checked (`"ts":"0"`, in
    /// seconds or in microseconds all became trades).
    #[test]
    fn implausible_trade_times_are_refused() {
        assert!(parse_frame(PUSH.as_bytes(), 0).is_ok());
        for time in ["0", "1652459224", "1652459224818000", "-1"] {
            let frame = PUSH.replace("1652459224818", time);
            let err = parse_frame(frame.as_bytes(), 0).expect_err(time);
            assert!(
                matches!(err, ExchangeError::Field { field: "ts", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn frames_are_classified() {
        let cases = [
            ("pong", "pong", Frame::Pong),
            (
                "ack",
                r#"{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"},"connId":"a4d3ae55"}"#,
                Frame::SubscribeAck { request_id: None, topics: vec!["trades:BTC-USDT".into()] },
            ),
            (
                "error",
                r#"{"event":"error","code":"60018","msg":"Wrong URL or channel:trades,instId:FOO-USDT doesn't exist.","connId":"a4d3ae55"}"#,
                Frame::SubscribeError(SubscribeRejection { request_id: None, symbols: vec!["FOO-USDT".into()], code: Some("60018".into()), message: "Wrong URL or channel:trades,instId:FOO-USDT doesn't exist.".into() }),
            ),
            (
                "docs error",
                r#"{"id":"1512","event":"error","code":"60012","msg":"Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : \"trades\", \"instId\" : \"BTC-USD-191227\"}]}","connId":"a4d3ae55"}"#,
                Frame::SubscribeError(SubscribeRejection { request_id: Some("1512".into()), symbols: vec!["BTC-USD-191227".into()], code: Some("60012".into()), message: r#"Invalid request: {"op": "subscribe", "argss":[{ "channel" : "trades", "instId" : "BTC-USD-191227"}]}"#.into() }),
            ),
            ("notice", r#"{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade."}"#, Frame::Other("notice".into())),
            ("tickers", r#"{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[]}"#, Frame::Other("tickers".into())),
            ("instruments", r#"{"arg":{"channel":"instruments","instType":"SPOT"},"data":[]}"#, Frame::Other("instruments".into())),
            (
                "ack without instId",
                r#"{"event":"subscribe","arg":{"channel":"instruments","instType":"SPOT"},"connId":"a"}"#,
                Frame::SubscribeAck { request_id: None, topics: vec!["instruments".into()] },
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_frame(text.as_bytes(), 0).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let cases = [
            ("truncated", PUSH[..80].to_string(), "malformed frame"),
            ("ping text", "ping".to_string(), "malformed frame"),
            (
                "missing px",
                PUSH.replace(r#""px":"30236","#, ""),
                "missing field `px`",
            ),
            (
                "bad sz",
                PUSH.replace(r#""sz":"0.0002""#, r#""sz":"2e""#),
                "field `sz`: bad decimal",
            ),
            (
                "bad ts",
                PUSH.replace("1652459224818", "16524592248.18"),
                "field `ts`",
            ),
            (
                "bad count",
                DOCS_PUSH.replace(r#""count":"3""#, r#""count":"0""#),
                "field `count`",
            ),
            (
                "no data",
                r#"{"arg":{"channel":"trades","instId":"BTC-USDT"}}"#.to_string(),
                "unrecognised",
            ),
        ];
        for (name, text, needle) in cases {
            let message = parse_frame(text.as_bytes(), 0).expect_err(name).to_string();
            assert!(
                message.starts_with("okx: ") && message.contains(needle),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let cases = [
            (
                Feed::Trades,
                sample(130_639_474, Some((130_639_472, 130_639_474)), Side::Buy),
            ),
            (Feed::Trades, sample(7, Some((7, 7)), Side::Sell)),
            (Feed::TradesAll, sample(8, None, Side::Sell)),
        ];
        for (feed, trade) in cases {
            let frames = encode_trades(feed, std::slice::from_ref(&trade)).unwrap();
            let parsed = parse_frame(frames[0].as_bytes(), trade.receive_time).unwrap();
            assert_eq!(parsed, Frame::Trades(vec![trade]), "{feed:?}");
        }
        let aggregated = sample(9, Some((5, 9)), Side::Buy);
        assert!(encode_trades(Feed::TradesAll, &[aggregated]).is_err());

        let rows = vec![sample(8, None, Side::Sell), {
            let mut t = sample(9, None, Side::Buy);
            t.exchange_time += 1;
            t
        }];
        let body = encode_rest_trades(Feed::Trades, &rows).unwrap();
        assert_eq!(
            parse_rest_trades(
                Feed::Trades,
                "BTC-USDT",
                body.as_bytes(),
                rows[0].receive_time
            )
            .unwrap(),
            rows
        );
    }

    #[test]
    fn requests_stay_under_64_kb() {
        let symbols: Vec<String> = (0..3000).map(|i| format!("C{i}-USDT")).collect();
        let requests = subscribe_requests(Feed::Trades, &symbols, 1).unwrap();
        assert!(requests.len() > 1);
        assert!(requests.iter().all(|r| r.text.len() <= MAX_REQUEST_BYTES));
        assert_eq!(
            requests.iter().map(|r| r.symbols.len()).sum::<usize>(),
            3000
        );
        assert_eq!(
            subscribe_requests(Feed::TradesAll, &["btc-usdt"], 4).unwrap()[0].text,
            r#"{"id":"4","op":"subscribe","args":[{"channel":"trades-all","instId":"BTC-USDT"}]}"#
        );
    }

    #[test]
    fn rest_paths_and_errors() {
        assert_eq!(
            rest_trades_path(Feed::Trades, "btc-usdt", 1000),
            "/api/v5/market/trades?instId=BTC-USDT&limit=500"
        );
        assert_eq!(
            rest_trades_before_path("BTC-USDT", 5, 500),
            "/api/v5/market/history-trades?instId=BTC-USDT&type=1&after=5&limit=100"
        );
        let err = parse_rest_trades(
            Feed::Trades,
            "X",
            br#"{"code":"51001","msg":"Instrument ID does not exist","data":[]}"#,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
        assert!(instrument("BTCUSDT").is_err());
        assert_eq!(instrument("UNI-USD-SWAP").as_deref(), Ok("UNI-USD-SWAP"));
    }

    /// An excerpt of a real `public/instruments?instType=SPOT` body.
    const INSTRUMENTS: &str = r#"{"code":"0","msg":"","data":[{"alias":"","auctionEndTime":"","baseCcy":"BTC","category":"1","ctMult":"","ctType":"","ctVal":"","ctValCcy":"","expTime":"","instFamily":"","instId":"BTC-USDT","instType":"SPOT","lever":"10","listTime":"1606468572000","lotSz":"0.00000001","maxIcebergSz":"9999999999.0000000000000000","maxLmtAmt":"20000000","maxLmtSz":"9999999999","maxMktAmt":"1000000","maxMktSz":"","maxStopSz":"","maxTriggerSz":"9999999999.0000000000000000","maxTwapSz":"9999999999.0000000000000000","minSz":"0.00001","optType":"","quoteCcy":"USDT","ruleType":"normal","settleCcy":"","state":"live","stk":"","tickSz":"0.1","uly":""},{"alias":"","baseCcy":"ETH","category":"1","ctMult":"","ctType":"","ctVal":"","ctValCcy":"","expTime":"","instFamily":"","instId":"ETH-EURI","instType":"SPOT","lever":"","listTime":"1733457600000","lotSz":"0.000001","minSz":"0.001","optType":"","quoteCcy":"EURI","ruleType":"normal","settleCcy":"","state":"live","stk":"","tickSz":"0.01","uly":""}]}"#;

    #[test]
    fn spot_instruments_list_base_and_quote() {
        let page = parse_instruments(INSTRUMENTS.as_bytes()).expect("instruments");
        assert_eq!(
            page.instruments,
            vec![
                Instrument::new("BTC-USDT", "BTC", "USDT"),
                Instrument::new("ETH-EURI", "ETH", "EURI"),
            ]
        );
        let body = crate::exsim::encode::okx::encode_instruments(&page.instruments, "SPOT")
            .expect("encode");
        assert_eq!(
            parse_instruments(body.as_bytes())
                .expect("round trip")
                .instruments,
            page.instruments
        );
        let err =
            parse_instruments(br#"{"code":"51000","msg":"Parameter instType error","data":[]}"#)
                .unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
        assert!(listing_covers("BTC-USDT") && !listing_covers("BTC-USDT-SWAP"));
    }
}

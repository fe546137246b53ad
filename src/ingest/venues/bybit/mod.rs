//! Bybit v5: the `publicTrade.{symbol}` topic on the spot, linear and inverse
//! public websockets, and `GET /v5/market/recent-trade`.
//!
//! A trade message holds one or more trades of one symbol:
//! `{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":…,"data":[{…}]}`.
//! Side: `S` is the taker's (`Buy`/`Sell`). Ids: `i` is a UUID on derivatives
//! and a large number on spot; neither is contiguous, so there is no gap
//! detection by id (the `seq` field some messages carry is a cross sequence,
//! not a trade count). Quantity `v` is in the base coin on spot and linear,
//! but in contracts (USD) on inverse symbols such as `BTCUSD`.
//!
//! Replies: `{"success":true,"ret_msg":"","conn_id":"…","req_id":"1","op":"subscribe"}`;
//! a refusal has `"success":false` and names the topic in `ret_msg`
//! (`"Invalid topic: publicTrade.FOOUSDT"`), from which the symbol is taken.
//!
//! Instruments: `GET /v5/market/instruments-info?category=…` lists each
//! category's symbols with `baseCoin` and `quoteCoin` ([`parse_instruments`];
//! spot, linear and inverse are all fetched, spot first, so that one table
//! serves every feed); without it, [`builtin_instrument`] splits the longest
//! of [`QUOTE_ASSETS`] off the symbol.
//!
//! Connection rules: the client sends `{"op":"ping"}` every 20 s; the spot
//! server answers `{"success":true,"ret_msg":"pong",…,"op":"ping"}` and the
//! derivatives servers `{"op":"pong","args":["…"],…}`. A spot subscribe
//! request carries at most 10 topics; on derivatives the topics of one
//! connection add up to at most 21,000 characters.

mod parse;
mod wire;

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::instruments::{resolve, Instrument, InstrumentPage};
use super::{
    field_error, from_json, oldest_first, parse_decimal, parse_int_text, request_error,
    split_by_quote_suffix, trade_time, unknown_symbol, unrecognised, with_excerpt, ClientPing,
    ConnectionLimits, ExchangeError, Frame, HistoryPage, KeepAlive, PingMessage,
    SubscribeRejection, SubscribeRequest,
};
use crate::model::{Exchange, Millis, Side, Trade};

pub use parse::*;
pub use wire::*;

/// The exchange this module speaks to.
pub const EXCHANGE: Exchange = Exchange::Bybit;

pub const WS_URL_SPOT: &str = "wss://stream.bybit.com/v5/public/spot";

pub const WS_URL_LINEAR: &str = "wss://stream.bybit.com/v5/public/linear";

pub const WS_URL_INVERSE: &str = "wss://stream.bybit.com/v5/public/inverse";

pub const REST_BASE_URL: &str = "https://api.bybit.com";

/// `GET /v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=N`, newest first.
pub const REST_TRADES_PATH: &str = "/v5/market/recent-trade";

/// `GET /v5/market/instruments-info?category=spot|linear|inverse[&limit=&cursor=]`.
pub const REST_INSTRUMENTS_PATH: &str = "/v5/market/instruments-info";

/// The host of the instrument list.
pub const INSTRUMENTS_BASE_URL: &str = REST_BASE_URL;

/// One request per category, spot first (its rows win); derivatives page
/// by `nextPageCursor`, 1000 rows a page (spot does not page).
pub const INSTRUMENT_LIST_QUERIES: &[&str] = &[
    "category=spot",
    "category=linear&limit=1000",
    "category=inverse&limit=1000",
];

/// `i` is a UUID or an unordered number.
pub const IDS_ARE_SEQUENTIAL: bool = false;

pub const TOPIC_PREFIX: &str = "publicTrade.";

pub const PING_INTERVAL: Duration = Duration::from_secs(20);

pub const PING_TEXT: &str = r#"{"op":"ping"}"#;

/// Topics per subscribe request on the spot websocket.
pub const SPOT_MAX_ARGS_PER_REQUEST: usize = 10;

/// Characters of all topics of one derivatives connection.
pub const DERIVATIVES_MAX_ARGS_CHARS: usize = 21_000;

pub const REST_MAX_LIMIT_SPOT: usize = 60;

pub const REST_MAX_LIMIT_DERIVATIVES: usize = 1000;

/// Quote assets of Bybit symbols (`BTCUSDT` → `BTC-USDT`) for when no
/// instrument list is loaded; longest suffix wins. Bybit's one built-in list.
pub const QUOTE_ASSETS: &[&str] = &[
    "USDT", "USDC", "USDE", "USD", "DAI", "BTC", "ETH", "EUR", "BRL", "BRZ", "PLN", "TRY", "MNT",
    "KZT",
];

/// Bybit's public websockets, one per product category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    Spot,
    /// USDT and USDC perpetuals and futures.
    Linear,
    /// Inverse contracts: quantity in contracts of the quote (USD).
    Inverse,
}

impl Feed {
    pub const ALL: [Feed; 3] = [Feed::Spot, Feed::Linear, Feed::Inverse];

    /// The category, as in URLs and the REST `category` parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Feed::Spot => "spot",
            Feed::Linear => "linear",
            Feed::Inverse => "inverse",
        }
    }
}

/// The live websocket URL of `feed` (the worker takes the URL from config; this is the default).
pub fn ws_url(feed: Feed) -> &'static str {
    match feed {
        Feed::Spot => WS_URL_SPOT,
        Feed::Linear => WS_URL_LINEAR,
        Feed::Inverse => WS_URL_INVERSE,
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
        idle_timeout: None,
        max_connection_age: None,
    }
}

/// Subscription and REST limits of `feed`.
pub fn limits(feed: Feed) -> ConnectionLimits {
    ConnectionLimits {
        max_topics_per_connection: None,
        max_topics_per_request: match feed {
            Feed::Spot => Some(SPOT_MAX_ARGS_PER_REQUEST),
            Feed::Linear | Feed::Inverse => None,
        },
        max_client_messages_per_second: None,
        rest_max_trades: rest_max_limit(feed),
    }
}

fn rest_max_limit(feed: Feed) -> usize {
    match feed {
        Feed::Spot => REST_MAX_LIMIT_SPOT,
        Feed::Linear | Feed::Inverse => REST_MAX_LIMIT_DERIVATIVES,
    }
}

/// `BTCUSDT` → `BTC-USDT`: by the loaded instrument list, else by
/// [`builtin_instrument`] (see [`super::instruments`]). Spot and linear
/// `BTCUSDT` map to the same instrument: the feed tells them apart.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the list lacks the symbol, or the
/// built-in rule cannot split it.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    resolve(EXCHANGE, symbol)
}

/// The list covers every category tickfetch subscribes to.
pub fn listing_covers(_symbol: &str) -> bool {
    true
}

/// Bybit's built-in rule: upper-case letters and digits, split by the
/// longest of [`QUOTE_ASSETS`] that ends them.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] for any other symbol.
pub fn builtin_instrument(symbol: &str) -> Result<Instrument, ExchangeError> {
    if !symbol
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(unknown_symbol(
            EXCHANGE,
            symbol,
            "expected upper-case letters and digits",
        ));
    }
    split_by_quote_suffix(EXCHANGE, symbol, QUOTE_ASSETS)
}

/// `publicTrade.BTCUSDT`.
pub fn topic(symbol: &str) -> String {
    format!("{TOPIC_PREFIX}{symbol}")
}

/// `{"op":"subscribe","args":["publicTrade.BTCUSDT"],"req_id":"1"}`, split
/// into requests of at most 10 topics on spot; request ids count up.
///
/// # Errors
/// [`ExchangeError::Request`] for no symbols or (derivatives) topics over
/// 21,000 characters; [`ExchangeError::UnknownSymbol`].
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
    let topics: Vec<String> = symbols.iter().map(|s| topic(s)).collect();
    let chunk = match feed {
        Feed::Spot => SPOT_MAX_ARGS_PER_REQUEST,
        Feed::Linear | Feed::Inverse => {
            let chars: usize = topics.iter().map(String::len).sum();
            if chars > DERIVATIVES_MAX_ARGS_CHARS {
                return Err(request_error(
                    EXCHANGE,
                    format!("topics of {chars} characters, over the {DERIVATIVES_MAX_ARGS_CHARS} one connection may carry"),
                ));
            }
            topics.len()
        }
    };
    topics
        .chunks(chunk)
        .zip(symbols.chunks(chunk))
        .enumerate()
        .map(|(i, (topics, symbols))| {
            let req_id = (first_request_id + i as u64).to_string();
            let request = OpRequest {
                op: Cow::Borrowed("subscribe"),
                args: topics.iter().map(|t| Cow::Borrowed(t.as_str())).collect(),
                req_id: Some(Cow::Borrowed(&req_id)),
            };
            let text = serde_json::to_string(&request)
                .map_err(|e| request_error(EXCHANGE, format!("cannot write request: {e}")))?;
            Ok(SubscribeRequest {
                request_id: Some(req_id),
                symbols: symbols.to_vec(),
                text,
            })
        })
        .collect()
}

/// `/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=60`.
pub fn rest_trades_path(feed: Feed, symbol: &str, limit: usize) -> String {
    format!(
        "{REST_TRADES_PATH}?category={}&symbol={}&limit={}",
        feed.as_str(),
        symbol.to_ascii_uppercase(),
        limit.clamp(1, rest_max_limit(feed))
    )
}

/// No history paging: Bybit's public REST has only the recent trades.
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
    use crate::exsim::encode::bybit::{encode_rest_trades, encode_trades};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const TRADE: &str = r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick","i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}"#;

    fn sample(id: &str, side: Side, price: &str, time: Millis) -> Trade {
        Trade {
            exchange: EXCHANGE,
            symbol: "BTCUSDT".into(),
            instrument: "BTC-USDT".into(),
            trade_id: id.into(),
            price: Decimal::from_str(price).unwrap(),
            quantity: Decimal::from_str("0.001").unwrap(),
            side,
            exchange_time: time,
            receive_time: 99,
            first_trade_id: None,
            last_trade_id: None,
        }
    }

    #[test]
    fn public_trade_decodes() {
        let Frame::Trades(trades) = parse_frame(TRADE.as_bytes(), 99).unwrap() else {
            panic!("trades")
        };
        assert_eq!(
            trades,
            vec![{
                let mut t = sample(
                    "20f43950-d8dd-5b31-9112-a178eb6023af",
                    Side::Buy,
                    "16578.50",
                    1_672_304_486_865,
                );
                t.receive_time = 99;
                t
            }]
        );
        assert_eq!(trades[0].price.to_string(), "16578.50");
    }

    #[test]
    fn frames_are_classified() {
        let cases = [
            (
                "spot ack",
                r#"{"success":true,"ret_msg":"subscribe","conn_id":"2324d924","req_id":"1","op":"subscribe"}"#,
                Frame::SubscribeAck {
                    request_id: Some("1".into()),
                    topics: vec![],
                },
            ),
            (
                "linear ack",
                r#"{"success":true,"ret_msg":"","conn_id":"3cd84cb1","req_id":"2","op":"subscribe"}"#,
                Frame::SubscribeAck {
                    request_id: Some("2".into()),
                    topics: vec![],
                },
            ),
            (
                "failure",
                r#"{"success":false,"ret_msg":"Invalid topic: publicTrade.FOOUSDT","conn_id":"c","req_id":"3","op":"subscribe"}"#,
                Frame::SubscribeError(SubscribeRejection {
                    request_id: Some("3".into()),
                    symbols: vec!["FOOUSDT".into()],
                    code: None,
                    message: "Invalid topic: publicTrade.FOOUSDT".into(),
                }),
            ),
            (
                "spot pong",
                r#"{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"","op":"ping"}"#,
                Frame::Pong,
            ),
            (
                "linear pong",
                r#"{"req_id":"","op":"pong","args":["1675418560633"],"conn_id":"c"}"#,
                Frame::Pong,
            ),
            (
                "kline",
                r#"{"topic":"kline.5.BTCUSDT","data":[],"ts":1,"type":"snapshot"}"#,
                Frame::Other("kline".into()),
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_frame(text.as_bytes(), 0).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let cases = [
            ("truncated", TRADE[..70].to_string(), "malformed frame"),
            (
                "missing price",
                TRADE.replace(r#""p":"16578.50","#, ""),
                "missing field `p`",
            ),
            (
                "bad size",
                TRADE.replace(r#""v":"0.001""#, r#""v":"0.0.1""#),
                "field `v`: bad decimal",
            ),
            (
                "bad side",
                TRADE.replace(r#""S":"Buy""#, r#""S":"buy""#),
                "field `S`",
            ),
            ("unknown", r#"{"hello":1}"#.to_string(), "unrecognised"),
        ];
        for (name, text, needle) in cases {
            let message = parse_frame(text.as_bytes(), 0).expect_err(name).to_string();
            assert!(
                message.starts_with("bybit: ") && message.contains(needle),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let trades = vec![
            sample("a1", Side::Buy, "16578.50", 1_672_304_486_000),
            sample("a2", Side::Sell, "16578.00", 1_672_304_486_001),
            sample("a3", Side::Sell, "16578.00", 1_672_304_486_002),
        ];
        let frames = encode_trades(Feed::Linear, &trades).unwrap();
        assert_eq!(frames.len(), 1, "one message per symbol run");
        let text = std::str::from_utf8(frames[0].as_bytes()).unwrap();
        assert!(
            text.contains(r#""L":"MinusTick""#) && text.contains(r#""L":"ZeroMinusTick""#),
            "{text}"
        );
        assert_eq!(
            parse_frame(frames[0].as_bytes(), 99).unwrap(),
            Frame::Trades(trades.clone())
        );

        let body = encode_rest_trades(Feed::Spot, &trades).unwrap();
        assert_eq!(
            parse_rest_trades(Feed::Spot, "BTCUSDT", body.as_bytes(), 99).unwrap(),
            trades
        );
    }

    /// Found by `tests/fuzz.rs`: a REST row with `"execId":""` became a
    /// trade with an empty id, and no trade time was checked.
    #[test]
    fn empty_rest_ids_and_implausible_times_are_refused() {
        let body = r#"{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"execId":"a905d5c3","symbol":"BTCUSDT","price":"27450.50","size":"0.005","side":"Buy","time":"1709891679000","isBlockTrade":false}]},"time":1709891679050}"#;
        assert!(parse_rest_trades(Feed::Linear, "BTCUSDT", body.as_bytes(), 0).is_ok());
        let cases = [
            (r#""execId":"a905d5c3""#, r#""execId":"""#, "execId"),
            (r#""time":"1709891679000""#, r#""time":"0""#, "time"),
            (
                r#""time":"1709891679000""#,
                r#""time":"1709891679""#,
                "time",
            ),
        ];
        for (from, to, field) in cases {
            let bad = body.replace(from, to);
            let err = parse_rest_trades(Feed::Linear, "BTCUSDT", bad.as_bytes(), 0).expect_err(to);
            assert!(
                matches!(&err, ExchangeError::Field { field: f, .. } if *f == field),
                "{to}: {err}"
            );
        }
        let frame = TRADE.replace(r#""T":1672304486865"#, r#""T":1672304486865000"#);
        let err = parse_frame(frame.as_bytes(), 0).expect_err("µs");
        assert!(
            matches!(err, ExchangeError::Field { field: "T", .. }),
            "{err}"
        );
    }

    #[test]
    fn spot_requests_carry_at_most_ten_topics() {
        let symbols: Vec<String> = (0..12).map(|i| format!("C{i}USDT")).collect();
        let requests = subscribe_requests(Feed::Spot, &symbols, 5).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].symbols.len(), 10);
        assert_eq!(requests[1].request_id.as_deref(), Some("6"));
        assert_eq!(
            subscribe_requests(Feed::Linear, &["btcusdt"], 1).unwrap()[0].text,
            r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"],"req_id":"1"}"#
        );
        let many: Vec<String> = (0..2000).map(|i| format!("C{i}USDT")).collect();
        assert!(subscribe_requests(Feed::Linear, &many, 1)
            .unwrap_err()
            .is_terminal());
    }

    #[test]
    fn rest_paths_and_errors() {
        assert_eq!(
            rest_trades_path(Feed::Spot, "btcusdt", 500),
            "/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=60"
        );
        let err = parse_rest_trades(
            Feed::Spot,
            "X",
            br#"{"retCode":10001,"retMsg":"Not supported symbols","result":{},"time":1}"#,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
    }

    /// Excerpts of real `instruments-info` bodies: a spot page and a linear
    /// page with a cursor to the next.
    const SPOT_INSTRUMENTS: &str = r#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","innovation":"0","status":"Trading","marginTrading":"utaOnly","stTag":"0","lotSizeFilter":{"basePrecision":"0.000001","quotePrecision":"0.00000001","minOrderQty":"0.000048","maxOrderQty":"71.73956243","minOrderAmt":"1","maxOrderAmt":"2000000"},"priceFilter":{"tickSize":"0.01"},"riskParameters":{"priceLimitRatioX":"0.01","priceLimitRatioY":"0.02"}},{"symbol":"USDEUSDT","baseCoin":"USDE","quoteCoin":"USDT","innovation":"0","status":"Trading","marginTrading":"none","stTag":"0","lotSizeFilter":{"basePrecision":"0.01","quotePrecision":"0.0001","minOrderQty":"1","maxOrderQty":"1000000","minOrderAmt":"1","maxOrderAmt":"1000000"},"priceFilter":{"tickSize":"0.0001"}}]},"retExtInfo":{},"time":1718000000000}"#;
    const LINEAR_INSTRUMENTS: &str = r#"{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"symbol":"1000PEPEUSDT","contractType":"LinearPerpetual","status":"Trading","baseCoin":"1000PEPE","quoteCoin":"USDT","launchTime":"1683273600000","deliveryTime":"0","deliveryFeeRate":"","priceScale":"7","leverageFilter":{"minLeverage":"1","maxLeverage":"25.00","leverageStep":"0.01"},"priceFilter":{"minPrice":"0.0000001","maxPrice":"1.9999998","tickSize":"0.0000001"},"lotSizeFilter":{"maxOrderQty":"80000000","minOrderQty":"100","qtyStep":"100","postOnlyMaxOrderQty":"80000000"},"unifiedMarginTrade":true,"fundingInterval":480,"settleCoin":"USDT","copyTrading":"both"}],"nextPageCursor":"first%3D1000PEPEUSDT%26last%3D1000PEPEUSDT"},"retExtInfo":{},"time":1718000000000}"#;

    #[test]
    fn instruments_info_pages_list_base_and_quote() {
        let spot = parse_instruments(SPOT_INSTRUMENTS.as_bytes()).expect("spot page");
        assert_eq!(
            spot.instruments,
            vec![
                Instrument::new("BTCUSDT", "BTC", "USDT"),
                Instrument::new("USDEUSDT", "USDE", "USDT"),
            ]
        );
        assert_eq!(spot.next_cursor, None);
        let linear = parse_instruments(LINEAR_INSTRUMENTS.as_bytes()).expect("linear page");
        assert_eq!(
            linear.instruments,
            vec![Instrument::new("1000PEPEUSDT", "1000PEPE", "USDT")]
        );
        assert_eq!(
            linear.next_cursor.as_deref(),
            Some("first%3D1000PEPEUSDT%26last%3D1000PEPEUSDT")
        );
        let body = crate::exsim::encode::bybit::encode_instruments(&spot.instruments, "spot", 1)
            .expect("encode");
        assert_eq!(
            parse_instruments(body.as_bytes()).expect("round trip"),
            spot
        );
        let err = parse_instruments(
            br#"{"retCode":10001,"retMsg":"Illegal category","result":{},"retExtInfo":{},"time":1}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
    }
}

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
//! Instruments: product ids are `BASE-QUOTE` already; the Exchange API's
//! `GET /products` lists each with `base_currency` and `quote_currency`
//! ([`parse_instruments`]), for both feeds.
//!
//! Connection rules: no client ping; subscribe to the heartbeat channel (one
//! per product per second on the Exchange feed, with `last_trade_id`, so a gap
//! shows even on a quiet product). Advanced Trade closes a connection that has
//! not subscribed within 5 s and drops quiet subscriptions after 60–90 s
//! unless `heartbeats` is subscribed; one channel per subscribe message.
//! Market-data channels need no authentication. An Exchange subscribe error
//! reads `{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is
//! not a valid product"}`; the product is taken from `reason`.

mod parse;
mod wire;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::instruments::{resolve, Instrument, InstrumentPage};
use super::{
    field_error, from_json, oldest_first, parse_decimal, parse_iso8601_millis, request_error,
    trade_time, unknown_symbol, unrecognised, with_excerpt, ConnectionLimits, ExchangeError, Frame,
    Heartbeat, HistoryPage, KeepAlive, SubscribeRejection, SubscribeRequest,
};
use crate::model::{Exchange, Millis, Side, Trade};

pub use parse::*;
pub use wire::*;

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

/// `GET /products` (Exchange API): every product with its base and quote.
pub const REST_INSTRUMENTS_PATH: &str = "/products";

/// The host of the instrument list: the Exchange API's, whichever feed runs.
pub const INSTRUMENTS_BASE_URL: &str = REST_BASE_URL_EXCHANGE;

/// The list is one request, without a query.
pub const INSTRUMENT_LIST_QUERIES: &[&str] = &[""];

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

/// `BTC-USD` → `BTC-USD`: by the loaded instrument list (`/products`),
/// else by [`builtin_instrument`] (see [`super::instruments`]).
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the list lacks the product, or the
/// built-in rule cannot split it.
pub fn instrument(symbol: &str) -> Result<String, ExchangeError> {
    resolve(EXCHANGE, symbol)
}

/// `/products` lists every product.
pub fn listing_covers(_symbol: &str) -> bool {
    true
}

/// Coinbase's built-in rule: product ids are already `BASE-QUOTE`.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] for an id without a `-`.
pub fn builtin_instrument(symbol: &str) -> Result<Instrument, ExchangeError> {
    match symbol.split_once('-') {
        Some((base, quote))
            if !base.is_empty()
                && !quote.is_empty()
                && symbol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(Instrument::new(symbol, base, quote))
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

/// History pages: the Exchange API's `/trades` back from a trade id
/// (`after`); the Advanced API's ticker has no paging.
pub fn rest_history_path(
    feed: Feed,
    symbol: &str,
    page: HistoryPage,
    limit: usize,
) -> Option<String> {
    match (feed, page) {
        (Feed::ExchangeMatches, HistoryPage::Before(id)) => {
            Some(rest_trades_before_path(symbol, id, limit))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exsim::encode::coinbase::{encode_rest_trades, encode_trades};
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

    /// Found by `tests/fuzz.rs`: any time chrono could read became a trade
    /// (`1970-01-01`, `9999-12-31`) or a heartbeat.
    #[test]
    fn implausible_trade_times_are_refused() {
        assert!(parse_frame(MATCH.as_bytes(), 0).is_ok());
        let time = MATCH
            .split(r#""time":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("time");
        for bad in [
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2100-01-01T00:00:00Z",
        ] {
            let frame = MATCH.replace(time, bad);
            let err = parse_frame(frame.as_bytes(), 0).expect_err(bad);
            assert!(
                matches!(err, ExchangeError::Field { field: "time", .. }),
                "{err}"
            );
        }
        let heartbeat = r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"1970-01-01T00:00:00Z"}"#;
        assert!(parse_frame(heartbeat.as_bytes(), 0).is_err());
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

    /// An excerpt of a real Exchange `GET /products` body.
    const PRODUCTS: &str = r#"[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","quote_increment":"0.01","base_increment":"0.00000001","display_name":"BTC-USD","min_market_funds":"1","margin_enabled":false,"post_only":false,"limit_only":false,"cancel_only":false,"status":"online","status_message":"","trading_disabled":false,"fx_stablecoin":false,"max_slippage_percentage":"0.02000000","auction_mode":false,"high_bid_limit_percentage":""},{"id":"USDT-EUR","base_currency":"USDT","quote_currency":"EUR","quote_increment":"0.0001","base_increment":"0.01","display_name":"USDT-EUR","min_market_funds":"0.84","margin_enabled":false,"post_only":false,"limit_only":false,"cancel_only":false,"status":"delisted","status_message":"","trading_disabled":true,"fx_stablecoin":true,"max_slippage_percentage":"0.03000000","auction_mode":false,"high_bid_limit_percentage":""}]"#;

    #[test]
    fn products_list_base_and_quote() {
        let page = parse_instruments(PRODUCTS.as_bytes()).expect("products");
        assert_eq!(
            page.instruments,
            vec![
                Instrument::new("BTC-USD", "BTC", "USD"),
                Instrument::new("USDT-EUR", "USDT", "EUR"),
            ]
        );
        let body =
            crate::exsim::encode::coinbase::encode_instruments(&page.instruments).expect("encode");
        assert_eq!(
            parse_instruments(body.as_bytes())
                .expect("round trip")
                .instruments,
            page.instruments
        );
        let err = parse_instruments(br#"{"message":"Internal server error"}"#).unwrap_err();
        assert!(matches!(err, ExchangeError::Rejected { .. }), "{err}");
    }
}

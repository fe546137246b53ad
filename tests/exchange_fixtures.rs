//! Every trade frame of the shared real recordings, decoded by the exchange
//! adapters and checked field by field against the raw payload read here
//! independently (`serde_json::Value` for structure, the raw text for exact
//! decimals and receive times).
//!
//! The data live in `shared/data/exchanges` (see `SOURCES.md` there) and are
//! never copied into the project: set `TICKFETCH_SHARED_DATA` to the data
//! directory, or keep `shared/` next to the project. Without it each test
//! prints "skipping: …" and passes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;
use tickfetch::ingest::decode::{self, DecodeReport};
use tickfetch::ingest::venues::{
    self, binance, bybit, coinbase, id_continuity, okx, upbit, ExchangeError, Frame, Heartbeat,
    IdContinuity, SubscribeRejection,
};
use tickfetch::model::{Exchange, Millis, Side, Trade};

// ---------------------------------------------------------------------------
// Independent readers of the raw data.

fn exchanges_dir() -> Option<PathBuf> {
    common::shared_data("exchanges")
}

macro_rules! data_or_skip {
    () => {
        match exchanges_dir() {
            Some(dir) => dir,
            None => return,
        }
    };
}

fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One received frame of an `*_extract_*.jsonl` recording.
struct Received {
    raw: String,
    value: Value,
    receive_time: Millis,
}

/// The received frames of a recording, with receive times computed here from
/// the `recv_ts` text (seconds with a fraction, truncated to ms).
fn received(text: &str) -> Vec<Received> {
    text.lines()
        .filter_map(|line| {
            let value: Value = serde_json::from_str(line).expect("recording line is JSON");
            if value["dir"] != "in" {
                return None;
            }
            let raw = value["raw"].as_str().expect("raw").to_string();
            let stamp = line
                .split("\"recv_ts\": ")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .expect("recv_ts");
            Some(Received {
                value: serde_json::from_str(&raw).expect("raw is JSON"),
                raw,
                receive_time: seconds_text_to_ms(stamp),
            })
        })
        .collect()
}

fn seconds_text_to_ms(text: &str) -> Millis {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = format!("{fraction:0<3}");
    whole.parse::<Millis>().expect("seconds") * 1000 + fraction[..3].parse::<Millis>().expect("ms")
}

/// The exact text of a JSON number or string value of `key` in `raw`.
fn raw_text<'a>(raw: &'a str, key: &str) -> &'a str {
    let start = raw
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {raw}"))
        + key.len()
        + 3;
    let rest = raw[start..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').expect("closing quote")]
    } else {
        let end = rest.find([',', '}', ' ', '\n']).unwrap_or(rest.len());
        &rest[..end]
    }
}

fn str_of(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{key} is {other}"),
    }
}

fn int_of(value: &Value, key: &str) -> i64 {
    match &value[key] {
        Value::Number(n) => n.as_i64().expect("integer"),
        Value::String(s) => s.parse().expect("integer text"),
        other => panic!("{key} is {other}"),
    }
}

fn decimal(text: &str) -> Decimal {
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).expect("scientific decimal")
    } else {
        Decimal::from_str(text).expect("decimal")
    }
}

/// A trade built here from raw values, and the exact texts its decimals had.
struct Expected {
    trade: Trade,
    price_text: String,
    quantity_text: String,
}

#[allow(clippy::too_many_arguments)]
fn expected(
    exchange: Exchange,
    symbol: &str,
    instrument: &str,
    trade_id: String,
    price_text: &str,
    quantity_text: &str,
    side: Side,
    exchange_time: Millis,
    receive_time: Millis,
    raw_ids: Option<(u64, u64)>,
) -> Expected {
    Expected {
        trade: Trade {
            exchange,
            symbol: symbol.to_string(),
            instrument: instrument.to_string(),
            trade_id,
            price: decimal(price_text),
            quantity: decimal(quantity_text),
            side,
            exchange_time,
            receive_time,
            first_trade_id: raw_ids.map(|r| r.0),
            last_trade_id: raw_ids.map(|r| r.1),
        },
        price_text: price_text.to_string(),
        quantity_text: quantity_text.to_string(),
    }
}

fn assert_trades(decoded: &[Trade], expected: &[Expected], context: &str) {
    assert_eq!(decoded.len(), expected.len(), "{context}: trade count");
    for (i, (got, want)) in decoded.iter().zip(expected).enumerate() {
        assert_eq!(got, &want.trade, "{context}: trade {i}");
        assert_eq!(
            got.price.to_string(),
            want.price_text,
            "{context}: trade {i} price text"
        );
        assert_eq!(
            got.quantity.to_string(),
            want.quantity_text,
            "{context}: trade {i} quantity text"
        );
    }
}

/// Decode a whole file through the CLI's streaming decoder.
fn decode_text(exchange: Exchange, text: &str) -> (Vec<Trade>, DecodeReport) {
    let mut trades = Vec::new();
    let report = decode::decode_reader(exchange, text.as_bytes(), 0, |t| {
        trades.push(t);
        Ok(())
    })
    .expect("decode run");
    (trades, report)
}

fn kind_count(report: &DecodeReport, kind: &str) -> u64 {
    report.frames_by_kind.get(kind).copied().unwrap_or(0)
}

fn trades_of(frame: Frame) -> Vec<Trade> {
    match frame {
        Frame::Trades(trades) => trades,
        other => panic!("expected trades, got {other:?}"),
    }
}

/// A JKorf test file: `> sent`, optionally `< ack`, then `=` and the update.
struct JKorf {
    sent: String,
    ack: Option<String>,
    update: String,
}

fn jkorf(text: &str) -> JKorf {
    let mut sent = String::new();
    let mut ack = None;
    let mut update = Vec::new();
    let mut in_update = false;
    for line in text.lines() {
        if in_update {
            update.push(line);
        } else if let Some(rest) = line.strip_prefix("> ") {
            sent = rest.to_string();
        } else if let Some(rest) = line.strip_prefix("< ") {
            ack = Some(rest.to_string());
        } else if line.trim() == "=" {
            in_update = true;
        }
    }
    JKorf {
        sent,
        ack,
        update: update.join("\n"),
    }
}

/// Decoded time agrees with an ISO-8601 text in every component below the
/// day, and the day is within a day of the receive time.
fn assert_iso_time(iso: &str, ms: Millis, receive_time: Millis, context: &str) {
    let time = &iso[11..];
    let hour: i64 = time[0..2].parse().expect("hour");
    let minute: i64 = time[3..5].parse().expect("minute");
    let second: i64 = time[6..8].parse().expect("second");
    let millis: i64 = format!(
        "{:0<3}",
        time[9..].trim_end_matches('Z').get(..3).unwrap_or("")
    )
    .parse()
    .expect("millis");
    assert_eq!(ms % 1000, millis, "{context}: ms of {iso}");
    assert_eq!(ms / 1000 % 60, second, "{context}: second of {iso}");
    assert_eq!(ms / 60_000 % 60, minute, "{context}: minute of {iso}");
    assert_eq!(ms / 3_600_000 % 24, hour, "{context}: hour of {iso}");
    assert!(
        (receive_time - ms).abs() < 86_400_000,
        "{context}: {iso} is not near {receive_time}"
    );
}

fn assert_contiguous_per_symbol(trades: &[Trade], context: &str) {
    let mut last: HashMap<&str, &Trade> = HashMap::new();
    for trade in trades {
        if let Some(previous) = last.get(trade.symbol.as_str()) {
            assert_eq!(
                id_continuity(previous, trade),
                IdContinuity::Contiguous,
                "{context}: {} after {}",
                trade.trade_id,
                previous.trade_id
            );
        }
        last.insert(&trade.symbol, trade);
    }
}

/// Encode real trades in a feed's wire form and parse them back.
fn assert_round_trip(feed: venues::Feed, trades: &[Trade]) {
    let frames = tickfetch::exsim::encode::encode_trades(feed, trades)
        .unwrap_or_else(|e| panic!("{feed}: {e}"));
    let mut back = Vec::new();
    for frame in &frames {
        let exchange = feed.exchange();
        let mut parsed = trades_of(
            venues::parse_frame(exchange, frame.as_bytes(), 0).expect("own frame parses"),
        );
        back.append(&mut parsed);
    }
    for (t, original) in back.iter_mut().zip(trades) {
        t.receive_time = original.receive_time;
    }
    assert_eq!(back, trades, "{feed}: encode → parse");
}

// ---------------------------------------------------------------------------
// Binance

fn binance_expected(received: &[Received]) -> Vec<Expected> {
    received
        .iter()
        .filter(|r| {
            r.value["stream"]
                .as_str()
                .is_some_and(|s| s.ends_with("@aggTrade"))
        })
        .map(|r| {
            let d = &r.value["data"];
            let symbol = d["s"].as_str().expect("s");
            let instrument = match symbol {
                "NKNUSDT" => "NKN-USDT",
                "LRCBTC" => "LRC-BTC",
                "OMGBUSD" => "OMG-BUSD",
                "CRVUSDT" => "CRV-USDT",
                "COMPUSDT" => "COMP-USDT",
                "ZRXUSDT" => "ZRX-USDT",
                other => panic!("add {other}"),
            };
            expected(
                Exchange::Binance,
                symbol,
                instrument,
                d["a"].as_u64().expect("a").to_string(),
                d["p"].as_str().expect("p"),
                d["q"].as_str().expect("q"),
                if d["m"].as_bool().expect("m") {
                    Side::Sell
                } else {
                    Side::Buy
                },
                d["T"].as_i64().expect("T"),
                r.receive_time,
                Some((d["f"].as_u64().expect("f"), d["l"].as_u64().expect("l"))),
            )
        })
        .collect()
}

#[test]
fn binance_recordings_decode_exactly() {
    let dir = data_or_skip!();
    for (file, trades_expected, klines) in [
        (
            "binance/binance_spot_aggTrade_kline_extract_2021-10-12.jsonl",
            2,
            2,
        ),
        (
            "binance/binance_us_aggTrade_kline_extract_2021-10-12.jsonl",
            11,
            5,
        ),
    ] {
        let text = read(&dir, file);
        let expected = binance_expected(&received(&text));
        assert_eq!(
            expected.len(),
            trades_expected,
            "{file}: aggTrades in the raw data"
        );
        let (trades, report) = decode_text(Exchange::Binance, &text);
        assert_trades(&trades, &expected, file);
        assert_eq!(report.malformed_total, 0, "{file}: {:?}", report.malformed);
        assert_eq!(kind_count(&report, "kline_1m"), klines, "{file}");
        assert_eq!(report.trades, trades_expected as u64);
        assert_contiguous_per_symbol(&trades, file);
        assert_round_trip(venues::Feed::Binance(binance::Feed::AggTrade), &trades);

        // The recorded connection URL subscribes the same aggTrade streams we would.
        let url = serde_json::from_str::<Value>(text.lines().next().expect("connect line"))
            .expect("json")["url"]
            .as_str()
            .expect("url")
            .to_string();
        let (base, streams) = url.split_once("/stream?streams=").expect("combined url");
        let agg: Vec<&str> = streams
            .split('/')
            .filter(|s| s.ends_with("@aggTrade"))
            .collect();
        let symbols: Vec<String> = agg
            .iter()
            .map(|s| s.trim_end_matches("@aggTrade").to_uppercase())
            .collect();
        let ours =
            binance::combined_stream_url(base, binance::Feed::AggTrade, &symbols).expect("url");
        assert_eq!(
            ours,
            format!("{base}/stream?streams={}", agg.join("/")),
            "{file}"
        );
    }
}

#[test]
fn binance_ws_and_rest_fixtures_decode_exactly() {
    let dir = data_or_skip!();
    let cases = [
        ("binance/nautilus_ws_spot_trade_ETHUSDT.json", "t", None),
        (
            "binance/nautilus_ws_spot_aggTrade_ETHUSDT.json",
            "a",
            Some(("f", "l")),
        ),
    ];
    for (file, id_key, raw_ids) in cases {
        let text = read(&dir, file);
        let d = &serde_json::from_str::<Value>(&text).expect("json")["data"];
        let want = expected(
            Exchange::Binance,
            "ETHUSDT",
            "ETH-USDT",
            d[id_key].as_u64().expect("id").to_string(),
            d["p"].as_str().expect("p"),
            d["q"].as_str().expect("q"),
            if d["m"].as_bool().expect("m") {
                Side::Sell
            } else {
                Side::Buy
            },
            d["T"].as_i64().expect("T"),
            77,
            raw_ids.map(|(f, l)| (d[f].as_u64().expect("f"), d[l].as_u64().expect("l"))),
        );
        let trades = trades_of(binance::parse_frame(text.as_bytes(), 77).expect(file));
        assert_trades(&trades, &[want], file);
    }

    for (file, feed, id_key, price_key, qty_key, time_key, maker_key) in [
        (
            "binance/nautilus_rest_spot_aggTrades_BTCUSDT_2021-10-22.json",
            binance::Feed::AggTrade,
            "a",
            "p",
            "q",
            "T",
            "m",
        ),
        (
            "binance/nautilus_rest_spot_trades_BTCUSDT_2021-10-22.json",
            binance::Feed::Trade,
            "id",
            "price",
            "qty",
            "time",
            "isBuyerMaker",
        ),
        (
            "binance/nautilus_rest_spot_historicalTrades_BTCUSDT_2021-10-22.json",
            binance::Feed::Trade,
            "id",
            "price",
            "qty",
            "time",
            "isBuyerMaker",
        ),
    ] {
        let text = read(&dir, file);
        let rows: Vec<Value> = serde_json::from_str(&text).expect("json");
        let want: Vec<Expected> = rows
            .iter()
            .map(|r| {
                expected(
                    Exchange::Binance,
                    "BTCUSDT",
                    "BTC-USDT",
                    r[id_key].as_u64().expect("id").to_string(),
                    r[price_key].as_str().expect("price"),
                    r[qty_key].as_str().expect("qty"),
                    if r[maker_key].as_bool().expect("maker") {
                        Side::Sell
                    } else {
                        Side::Buy
                    },
                    r[time_key].as_i64().expect("time"),
                    5,
                    (feed == binance::Feed::AggTrade)
                        .then(|| (r["f"].as_u64().expect("f"), r["l"].as_u64().expect("l"))),
                )
            })
            .collect();
        assert_eq!(want.len(), 10, "{file}");
        let trades = binance::parse_rest_trades(feed, "BTCUSDT", text.as_bytes(), 5).expect(file);
        assert_trades(&trades, &want, file);
        assert_contiguous_per_symbol(&trades, file);
        let body =
            tickfetch::exsim::encode::binance::encode_rest_trades(feed, &trades).expect("encode");
        assert_eq!(
            binance::parse_rest_trades(feed, "BTCUSDT", body.as_bytes(), 5).expect("own body"),
            trades,
            "{file} REST round trip"
        );
    }
}

// ---------------------------------------------------------------------------
// Upbit

#[test]
fn upbit_simple_recording_decodes_exactly() {
    let dir = data_or_skip!();
    let file = "upbit/upbit_trade_SIMPLE_extract_2021-04-17.jsonl";
    let text = read(&dir, file);
    let frames = received(&text);
    let want: Vec<Expected> = frames
        .iter()
        .filter(|r| r.value["ty"] == "trade")
        .map(|r| {
            let v = &r.value;
            let code = v["cd"].as_str().expect("cd");
            let (quote, base) = code.split_once('-').expect("QUOTE-BASE");
            expected(
                Exchange::Upbit,
                code,
                &format!("{base}-{quote}"),
                v["sid"].as_u64().expect("sid").to_string(),
                raw_text(&r.raw, "tp"),
                raw_text(&r.raw, "tv"),
                match v["ab"].as_str() {
                    Some("ASK") => Side::Sell,
                    Some("BID") => Side::Buy,
                    other => panic!("ab {other:?}"),
                },
                v["ttms"].as_i64().expect("ttms"),
                r.receive_time,
                None,
            )
        })
        .collect();
    assert_eq!(want.len(), 304, "trades in the raw data");
    assert_eq!(
        want.iter().filter(|e| e.trade.side == Side::Sell).count(),
        200
    );
    let (trades, report) = decode_text(Exchange::Upbit, &text);
    assert_trades(&trades, &want, file);
    assert_eq!(
        (report.malformed_total, report.frames, report.skipped),
        (0, 304, 2)
    );
    // JSON numbers keep their text: "tp":127.0 stays 127.0.
    assert_eq!(trades[0].price.to_string(), "127.0");
    assert_round_trip(venues::Feed::Upbit(upbit::Feed::Simple), &trades);

    // The recorded request asks for the same trade codes, realtime only, in SIMPLE.
    let sent: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|v| v["dir"] == "out")
        .map(|v| serde_json::from_str(v["raw"].as_str().expect("raw")).expect("request json"))
        .expect("out line");
    let sent = sent.as_array().expect("array");
    let trade_part = sent
        .iter()
        .find(|p| p["type"] == "trade")
        .expect("trade part");
    let codes: Vec<&str> = trade_part["codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code"))
        .collect();
    let ours = upbit::subscribe_requests(upbit::Feed::Simple, &codes, 1).expect("request");
    let ours: Value = serde_json::from_str(&ours[0].text).expect("our json");
    let ours = ours.as_array().expect("array");
    assert_eq!(ours.iter().find(|p| p["type"] == "trade"), Some(trade_part));
    assert!(
        ours.iter().any(|p| p["format"] == "SIMPLE")
            && sent.iter().any(|p| p["format"] == "SIMPLE")
    );
}

#[test]
fn upbit_default_format_candle_and_rest_decode() {
    let dir = data_or_skip!();
    let trade_file = jkorf(&read(&dir, "upbit/JKorf_Upbit.Net_ws_trade_DEFAULT.txt"));
    let v: Value = serde_json::from_str(&trade_file.update).expect("json");
    let want = expected(
        Exchange::Upbit,
        "KRW-ETH",
        "ETH-KRW",
        v["sequential_id"].as_u64().expect("id").to_string(),
        raw_text(&trade_file.update, "trade_price"),
        "0.00008428", // the raw text is 8.428e-05
        Side::Sell,
        v["trade_timestamp"].as_i64().expect("time"),
        9,
        None,
    );
    assert_eq!(raw_text(&trade_file.update, "trade_volume"), "8.428e-05");
    assert_eq!(v["trade_volume"].as_f64(), Some(8.428e-05));
    let trades =
        trades_of(upbit::parse_frame(trade_file.update.as_bytes(), 9).expect("DEFAULT trade"));
    assert_trades(&trades, &[want], "DEFAULT");
    assert_round_trip(venues::Feed::Upbit(upbit::Feed::Default), &trades);

    let candle = jkorf(&read(&dir, "upbit/JKorf_Upbit.Net_ws_candle_1m.txt"));
    assert_eq!(
        upbit::parse_frame(candle.update.as_bytes(), 0).expect("candle"),
        Frame::Other("candle.1m".into())
    );

    let rest = read(&dir, "upbit/JKorf_Upbit.Net_rest_trades_ticks.txt");
    assert_eq!(
        rest.lines().take(2).collect::<Vec<_>>(),
        ["GET", upbit::REST_TRADES_PATH]
    );
    let body: String = rest.lines().skip(3).collect::<Vec<_>>().join("\n");
    let row = &serde_json::from_str::<Value>(&body).expect("json")[0];
    let want = expected(
        Exchange::Upbit,
        "KRW-BTC",
        "BTC-KRW",
        row["sequential_id"].as_u64().expect("id").to_string(),
        raw_text(&body, "trade_price"),
        raw_text(&body, "trade_volume"),
        Side::Buy,
        row["timestamp"].as_i64().expect("timestamp"),
        3,
        None,
    );
    let trades = upbit::parse_rest_trades(upbit::Feed::Default, "KRW-BTC", body.as_bytes(), 3)
        .expect("REST");
    assert_trades(&trades, &[want], "REST ticks");
}

// ---------------------------------------------------------------------------
// Coinbase

#[test]
fn coinbase_matches_recording_decodes_exactly() {
    let dir = data_or_skip!();
    let file = "coinbase/coinbase_exchange_matches_extract_2021-04-17.jsonl";
    let text = read(&dir, file);
    let frames = received(&text);
    let mut isos = Vec::new();
    let want: Vec<Expected> = frames
        .iter()
        .filter(|r| r.value["type"] == "match" || r.value["type"] == "last_match")
        .map(|r| {
            let v = &r.value;
            isos.push((
                v["time"].as_str().expect("time").to_string(),
                r.receive_time,
            ));
            let product = v["product_id"].as_str().expect("product_id");
            Expected {
                trade: Trade {
                    exchange_time: 0, // checked against the ISO text below
                    ..expected(
                        Exchange::Coinbase,
                        product,
                        product,
                        v["trade_id"].as_u64().expect("trade_id").to_string(),
                        v["price"].as_str().expect("price"),
                        v["size"].as_str().expect("size"),
                        match v["side"].as_str() {
                            Some("buy") => Side::Sell, // the maker bought: the taker sold
                            Some("sell") => Side::Buy,
                            other => panic!("side {other:?}"),
                        },
                        0,
                        r.receive_time,
                        None,
                    )
                    .trade
                },
                price_text: v["price"].as_str().expect("price").to_string(),
                quantity_text: v["size"].as_str().expect("size").to_string(),
            }
        })
        .collect();
    assert_eq!(want.len(), 107, "97 match + 10 last_match");
    let (mut trades, report) = decode_text(Exchange::Coinbase, &text);
    assert_eq!(report.malformed_total, 0, "{:?}", report.malformed);
    assert_eq!(kind_count(&report, "subscribe_ack"), 3);
    for ((trade, (iso, receive_time)), i) in trades.iter().zip(&isos).zip(0..) {
        assert_iso_time(
            iso,
            trade.exchange_time,
            *receive_time,
            &format!("{file} trade {i}"),
        );
    }
    assert_contiguous_per_symbol(&trades, file);
    assert_round_trip(
        venues::Feed::Coinbase(coinbase::Feed::ExchangeMatches),
        &trades,
    );
    for trade in &mut trades {
        trade.exchange_time = 0;
    }
    assert_trades(&trades, &want, file);

    // The recorded matches request names the same products as ours.
    let sent: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|v| v["dir"] == "out")
        .map(|v| serde_json::from_str::<Value>(v["raw"].as_str().expect("raw")).expect("json"))
        .find(|v| v["channels"][0] == "matches")
        .expect("matches request");
    let products: Vec<&str> = sent["product_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|p| p.as_str().expect("id"))
        .collect();
    let ours: Value = serde_json::from_str(
        &coinbase::subscribe_requests(coinbase::Feed::ExchangeMatches, &products, 1)
            .expect("request")[0]
            .text,
    )
    .expect("json");
    assert_eq!(
        (&ours["type"], &ours["product_ids"]),
        (&sent["type"], &sent["product_ids"])
    );
    assert_eq!(ours["channels"][0], "matches");
}

#[test]
fn coinbase_advanced_trade_files_decode() {
    let dir = data_or_skip!();
    let file = jkorf(&read(
        &dir,
        "coinbase/JKorf_Coinbase.Net_advanced_market_trades.txt",
    ));
    let v: Value = serde_json::from_str(&file.update).expect("json");
    let rows = v["events"][0]["trades"].as_array().expect("trades");
    // Listed newest first; decoded oldest first.
    let want: Vec<Expected> = rows
        .iter()
        .rev()
        .map(|r| {
            expected(
                Exchange::Coinbase,
                r["product_id"].as_str().expect("product"),
                "ETH-USDT",
                r["trade_id"].as_str().expect("id").to_string(),
                r["price"].as_str().expect("price"),
                r["size"].as_str().expect("size"),
                match r["side"].as_str() {
                    Some("BUY") => Side::Buy,
                    Some("SELL") => Side::Sell,
                    other => panic!("side {other:?}"),
                },
                0,
                11,
                None,
            )
        })
        .collect();
    let mut trades =
        trades_of(coinbase::parse_frame(file.update.as_bytes(), 11).expect("market_trades"));
    let times: Vec<Millis> = trades.iter().map(|t| t.exchange_time).collect();
    assert_eq!(times, [1_728_026_011_084, 1_728_026_011_088]);
    for (trade, row) in trades.iter().zip(rows.iter().rev()) {
        assert_iso_time(
            row["time"].as_str().expect("time"),
            trade.exchange_time,
            1_728_026_011_158,
            "advanced",
        );
    }
    assert_round_trip(
        venues::Feed::Coinbase(coinbase::Feed::AdvancedMarketTrades),
        &trades,
    );
    trades.iter_mut().for_each(|t| t.exchange_time = 0);
    assert_trades(&trades, &want, "advanced market_trades");

    let ack = coinbase::parse_frame(file.ack.expect("ack").as_bytes(), 0).expect("ack");
    assert_eq!(
        ack,
        Frame::SubscribeAck {
            request_id: None,
            topics: vec!["market_trades:ETH-USDT".into()]
        }
    );
    let mut sent: Value = serde_json::from_str(&file.sent).expect("sent json");
    sent.as_object_mut().expect("object").remove("jwt");
    let ours = coinbase::subscribe_requests(coinbase::Feed::AdvancedMarketTrades, &["ETH-USDT"], 1)
        .expect("request");
    assert_eq!(
        serde_json::from_str::<Value>(&ours[0].text).expect("json"),
        sent
    );

    let heartbeats = jkorf(&read(
        &dir,
        "coinbase/JKorf_Coinbase.Net_advanced_heartbeats.txt",
    ));
    assert_eq!(
        coinbase::parse_frame(heartbeats.update.as_bytes(), 0).expect("heartbeats"),
        Frame::Heartbeat(Heartbeat {
            symbol: None,
            last_trade_id: None,
            exchange_time: Some(1_728_025_480_825)
        })
    );
    let candles = jkorf(&read(
        &dir,
        "coinbase/JKorf_Coinbase.Net_advanced_candles.txt",
    ));
    assert_eq!(
        coinbase::parse_frame(candles.update.as_bytes(), 0).expect("candles"),
        Frame::Other("candles".into())
    );

    // nautilus_trader's hand-written files: schema only.
    let hand = read(&dir, "coinbase/nautilus_advanced_ws_market_trades.json");
    let trades = trades_of(coinbase::parse_frame(hand.as_bytes(), 0).expect("hand market_trades"));
    let ids: Vec<&str> = trades.iter().map(|t| t.trade_id.as_str()).collect();
    assert_eq!(ids, ["995098700", "995098701"]);
    assert_eq!(
        (trades[0].price.to_string(), trades[0].quantity.to_string()),
        ("68900.50".into(), "0.00150000".into())
    );
    let subscriptions = read(&dir, "coinbase/nautilus_advanced_ws_subscriptions.json");
    let Frame::SubscribeAck { topics, .. } =
        coinbase::parse_frame(subscriptions.as_bytes(), 0).expect("subscriptions")
    else {
        panic!("ack")
    };
    assert_eq!(
        topics,
        [
            "level2:BTC-USD",
            "market_trades:BTC-USD",
            "market_trades:ETH-USD"
        ]
    );
    for (name, kind) in [
        ("nautilus_advanced_ws_heartbeats.json", "heartbeat"),
        ("nautilus_advanced_ws_candles.json", "candles"),
    ] {
        let text = read(&dir, &format!("coinbase/{name}"));
        assert_eq!(
            coinbase::parse_frame(text.as_bytes(), 0)
                .expect(name)
                .kind(),
            kind,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Bybit

fn bybit_expected(update: &str, receive_time: Millis, instrument: &str) -> Vec<Expected> {
    let v: Value = serde_json::from_str(update).expect("json");
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            expected(
                Exchange::Bybit,
                d["s"].as_str().expect("s"),
                instrument,
                d["i"].as_str().expect("i").to_string(),
                d["p"].as_str().expect("p"),
                d["v"].as_str().expect("v"),
                match d["S"].as_str() {
                    Some("Buy") => Side::Buy,
                    Some("Sell") => Side::Sell,
                    other => panic!("S {other:?}"),
                },
                d["T"].as_i64().expect("T"),
                receive_time,
                None,
            )
        })
        .collect()
}

#[test]
fn bybit_v5_files_decode() {
    let dir = data_or_skip!();
    let docs = read(&dir, "bybit/nautilus_v5_publicTrade_docs_example.json");
    let trades = trades_of(bybit::parse_frame(docs.as_bytes(), 4).expect("docs trade"));
    assert_trades(
        &trades,
        &bybit_expected(&docs, 4, "BTC-USDT"),
        "docs publicTrade",
    );
    assert_round_trip(venues::Feed::Bybit(bybit::Feed::Linear), &trades);

    for (file, feed) in [
        (
            "bybit/JKorf_Bybit.Net_v5_spot_publicTrade.txt",
            bybit::Feed::Spot,
        ),
        (
            "bybit/JKorf_Bybit.Net_v5_linear_publicTrade.txt",
            bybit::Feed::Linear,
        ),
    ] {
        let parts = jkorf(&read(&dir, file));
        let trades = trades_of(bybit::parse_frame(parts.update.as_bytes(), 8).expect(file));
        assert_trades(&trades, &bybit_expected(&parts.update, 8, "BTC-USDT"), file);
        let ack = bybit::parse_frame(parts.ack.expect("ack").as_bytes(), 0).expect("ack");
        assert_eq!(
            ack,
            Frame::SubscribeAck {
                request_id: Some("|1|".into()),
                topics: vec![]
            },
            "{file}"
        );
        let mut sent: Value = serde_json::from_str(&parts.sent).expect("sent");
        sent["req_id"] = Value::String("1".into());
        let ours = bybit::subscribe_requests(feed, &["BTCUSDT"], 1).expect("request");
        assert_eq!(
            serde_json::from_str::<Value>(&ours[0].text).expect("json"),
            sent,
            "{file}"
        );
    }

    let ack = read(&dir, "bybit/nautilus_v5_subscription_ack.json");
    assert_eq!(
        bybit::parse_frame(ack.as_bytes(), 0).expect("ack"),
        Frame::SubscribeAck {
            request_id: Some("sub-orderbook-1".into()),
            topics: vec![]
        }
    );
    let failure = read(&dir, "bybit/nautilus_v5_subscription_failure.json");
    assert_eq!(
        bybit::parse_frame(failure.as_bytes(), 0).expect("failure"),
        Frame::SubscribeError(SubscribeRejection {
            request_id: None,
            symbols: vec![],
            code: None,
            message: "Invalid topic: invalid.topic.BTCUSDT".into(),
        })
    );
    let kline = read(&dir, "bybit/nautilus_v5_kline_docs_example.json");
    assert_eq!(
        bybit::parse_frame(kline.as_bytes(), 0).expect("kline"),
        Frame::Other("kline".into())
    );

    let rest = read(&dir, "bybit/nautilus_v5_rest_recent_trades.json");
    let row = &serde_json::from_str::<Value>(&rest).expect("json")["result"]["list"][0];
    let want = expected(
        Exchange::Bybit,
        "BTCUSDT",
        "BTC-USDT",
        row["execId"].as_str().expect("execId").to_string(),
        row["price"].as_str().expect("price"),
        row["size"].as_str().expect("size"),
        Side::Buy,
        int_of(row, "time"),
        2,
        None,
    );
    let trades =
        bybit::parse_rest_trades(bybit::Feed::Linear, "BTCUSDT", rest.as_bytes(), 2).expect("REST");
    assert_trades(&trades, &[want], "REST recent-trade");
}

// ---------------------------------------------------------------------------
// OKX

#[test]
fn okx_recording_decodes_exactly() {
    let dir = data_or_skip!();
    let file = "okx/okx_v5_trades_extract_2022-05-13.jsonl";
    let text = read(&dir, file);
    let want: Vec<Expected> = received(&text)
        .iter()
        .filter(|r| r.value["arg"]["channel"] == "trades" && r.value.get("data").is_some())
        .flat_map(|r| {
            r.value["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|d| {
                    let inst = d["instId"].as_str().expect("instId");
                    expected(
                        Exchange::Okx,
                        inst,
                        inst,
                        str_of(d, "tradeId"),
                        d["px"].as_str().expect("px"),
                        d["sz"].as_str().expect("sz"),
                        match d["side"].as_str() {
                            Some("buy") => Side::Buy,
                            Some("sell") => Side::Sell,
                            other => panic!("side {other:?}"),
                        },
                        int_of(d, "ts"),
                        r.receive_time,
                        None,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(want.len(), 74, "trades in the raw data");
    let (trades, report) = decode_text(Exchange::Okx, &text);
    assert_trades(&trades, &want, file);
    assert_eq!(
        (report.malformed_total, kind_count(&report, "subscribe_ack")),
        (0, 18)
    );
    assert_contiguous_per_symbol(&trades, file);
    assert_round_trip(venues::Feed::Okx(okx::Feed::TradesAll), &trades);

    // The recorded subscribe request's trades args are ours.
    let sent: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|v| v["dir"] == "out")
        .map(|v| serde_json::from_str::<Value>(v["raw"].as_str().expect("raw")).expect("json"))
        .collect();
    let recorded: Vec<Value> = sent[1]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter(|a| a["channel"] == "trades")
        .cloned()
        .collect();
    let inst_ids: Vec<&str> = recorded
        .iter()
        .map(|a| a["instId"].as_str().expect("instId"))
        .collect();
    assert_eq!(inst_ids, ["BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"]);
    let ours: Value = serde_json::from_str(
        &okx::subscribe_requests(okx::Feed::Trades, &inst_ids, 1).expect("request")[0].text,
    )
    .expect("json");
    assert_eq!(ours["args"].as_array().expect("args"), &recorded);
    assert_eq!(ours["op"], sent[1]["op"]);
}

#[test]
fn okx_docs_and_rest_decode() {
    let dir = data_or_skip!();
    let docs = read(&dir, "okx/nautilus_v5_ws_trades_docs_example.json");
    let d = &serde_json::from_str::<Value>(&docs).expect("json")["data"][0];
    let last: u64 = str_of(d, "tradeId").parse().expect("id");
    let count: u64 = str_of(d, "count").parse().expect("count");
    let want = expected(
        Exchange::Okx,
        "BTC-USD",
        "BTC-USD",
        last.to_string(),
        d["px"].as_str().expect("px"),
        d["sz"].as_str().expect("sz"),
        Side::Buy,
        int_of(d, "ts"),
        6,
        Some((last + 1 - count, last)),
    );
    let trades = trades_of(okx::parse_frame(docs.as_bytes(), 6).expect("docs"));
    assert_trades(&trades, &[want], "docs trades");
    assert_eq!(trades[0].trade_count(), 3);
    assert_round_trip(venues::Feed::Okx(okx::Feed::Trades), &trades);

    let rest = read(&dir, "okx/nautilus_v5_rest_trades.json");
    let rows = serde_json::from_str::<Value>(&rest).expect("json")["data"]
        .as_array()
        .expect("data")
        .clone();
    let want: Vec<Expected> = rows
        .iter()
        .rev() // newest first in the body; oldest first decoded
        .map(|d| {
            expected(
                Exchange::Okx,
                "BTC-USDT",
                "BTC-USDT",
                str_of(d, "tradeId"),
                d["px"].as_str().expect("px"),
                d["sz"].as_str().expect("sz"),
                if d["side"] == "buy" {
                    Side::Buy
                } else {
                    Side::Sell
                },
                int_of(d, "ts"),
                6,
                None,
            )
        })
        .collect();
    let trades =
        okx::parse_rest_trades(okx::Feed::Trades, "BTC-USDT", rest.as_bytes(), 6).expect("REST");
    assert_trades(&trades, &want, "REST trades");
    let candle = read(&dir, "okx/nautilus_v5_ws_candle_docs_example.json");
    assert_eq!(
        okx::parse_frame(candle.as_bytes(), 0).expect("candle"),
        Frame::Other("candle1D".into())
    );
}

// ---------------------------------------------------------------------------
// Whole captures and bad input

/// (exchange, capture file, extract file, frames expected by kind)
type CaptureCase = (
    Exchange,
    &'static str,
    &'static str,
    &'static [(&'static str, u64)],
);

#[test]
fn full_captures_decode_without_errors_and_match_the_extracts() {
    let dir = data_or_skip!();
    let cases: [CaptureCase; 5] = [
        (
            Exchange::Binance,
            "binance/cryptofeed_BINANCE_spot_ws_2021-10-12.txt",
            "binance/binance_spot_aggTrade_kline_extract_2021-10-12.jsonl",
            &[
                ("trades", 2),
                ("depth@100ms", 177),
                ("bookTicker", 84),
                ("kline_1m", 2),
            ],
        ),
        (
            Exchange::Binance,
            "binance/cryptofeed_BINANCE_US_ws_2021-10-12.txt",
            "binance/binance_us_aggTrade_kline_extract_2021-10-12.jsonl",
            &[
                ("trades", 11),
                ("depth@100ms", 336),
                ("bookTicker", 128),
                ("kline_1m", 5),
            ],
        ),
        (
            Exchange::Upbit,
            "upbit/cryptofeed_UPBIT_ws_SIMPLE_2021-04-17.txt",
            "upbit/upbit_trade_SIMPLE_extract_2021-04-17.jsonl",
            &[("trades", 304), ("orderbook", 145)],
        ),
        (
            Exchange::Coinbase,
            "coinbase/cryptofeed_COINBASE_exchange_ws_2021-04-17.txt",
            "coinbase/coinbase_exchange_matches_extract_2021-04-17.jsonl",
            &[
                ("trades", 107),
                ("subscribe_ack", 3),
                ("ticker", 107),
                ("snapshot", 10),
                ("l2update", 9719),
            ],
        ),
        (
            Exchange::Okx,
            "okx/cryptofeed_OKX_v5_ws_2022-05-13.txt",
            "okx/okx_v5_trades_extract_2022-05-13.jsonl",
            &[
                ("trades", 74),
                ("subscribe_ack", 18),
                ("tickers", 28),
                ("books", 290),
            ],
        ),
    ];
    for (exchange, capture, extract, kinds) in cases {
        let (trades, report) = decode_text(exchange, &read(&dir, capture));
        assert_eq!(
            report.malformed_total,
            0,
            "{capture}: {:?}",
            report.malformed.first()
        );
        let mut counted: Vec<(&str, u64)> = report
            .frames_by_kind
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        let mut wanted = kinds.to_vec();
        counted.sort();
        wanted.sort();
        assert_eq!(counted, wanted, "{capture}");
        let (from_extract, _) = decode_text(exchange, &read(&dir, extract));
        assert_eq!(
            trades, from_extract,
            "{capture}: the same trades as {extract}"
        );
    }
}

#[test]
fn malformed_lines_are_reported_and_decoding_goes_on() {
    let dir = data_or_skip!();
    // (exchange, recording, a field to remove, a decimal field to spoil)
    let cases = [
        (
            Exchange::Binance,
            "binance/binance_us_aggTrade_kline_extract_2021-10-12.jsonl",
            "q",
            "p",
        ),
        (
            Exchange::Upbit,
            "upbit/upbit_trade_SIMPLE_extract_2021-04-17.jsonl",
            "sid",
            "tv",
        ),
        (
            Exchange::Coinbase,
            "coinbase/coinbase_exchange_matches_extract_2021-04-17.jsonl",
            "price",
            "size",
        ),
        (
            Exchange::Okx,
            "okx/okx_v5_trades_extract_2022-05-13.jsonl",
            "sz",
            "px",
        ),
    ];
    for (exchange, file, missing, spoiled) in cases {
        let text = read(&dir, file);
        let frames: Vec<String> = received(&text)
            .into_iter()
            .filter(|r| {
                matches!(
                    venues::parse_frame(exchange, r.raw.as_bytes(), 0),
                    Ok(Frame::Trades(_))
                )
            })
            .map(|r| r.raw)
            .take(3)
            .collect();
        let frame = &frames[0];
        let truncated = &frame[..frame.len() / 2];
        let without_field = remove_field(frame, missing);
        let bad_decimal = spoil_value(frame, spoiled);
        let input = [
            frames[0].as_str(),
            truncated,
            frames[1].as_str(),
            &without_field,
            &bad_decimal,
            frames[2].as_str(),
        ]
        .join("\n");

        let (trades, report) = decode_text(exchange, &input);
        assert_eq!(trades.len(), 3, "{file}: the good lines still decode");
        assert_eq!(
            (report.lines, report.frames, report.trades),
            (6, 6, 3),
            "{file}"
        );
        let lines: Vec<u64> = report.malformed.iter().map(|m| m.line).collect();
        assert_eq!(lines, [2, 4, 5], "{file}");
        let prefix = format!("{exchange}: ");
        let [cut, gone, bad] = [
            &report.malformed[0].message,
            &report.malformed[1].message,
            &report.malformed[2].message,
        ];
        assert!(
            cut.starts_with(&prefix) && cut.contains("malformed frame"),
            "{file}: {cut}"
        );
        assert!(
            gone.starts_with(&prefix) && gone.contains(&format!("missing field `{missing}`")),
            "{file}: {gone}"
        );
        assert!(
            bad.starts_with(&prefix)
                && bad.contains(&format!("field `{spoiled}`"))
                && bad.contains("12.3.4"),
            "{file}: {bad}"
        );
        assert!(
            bad.contains("input: {"),
            "{file}: the message quotes the input: {bad}"
        );
    }
}

/// `raw` without `"key":value`.
fn remove_field(raw: &str, key: &str) -> String {
    let start = raw.find(&format!("\"{key}\":")).expect("key");
    let value = raw_text(raw, key);
    let mut end = raw[start..].find(value).expect("value") + start + value.len();
    if raw[end..].starts_with('"') {
        end += 1;
    }
    if raw[end..].starts_with(',') {
        end += 1;
    }
    format!("{}{}", &raw[..start], &raw[end..])
}

/// `raw` with the value of `key` replaced by the text `12.3.4` (quoted where
/// the exchange sends a JSON number, so that the frame stays JSON).
fn spoil_value(raw: &str, key: &str) -> String {
    let start = raw.find(&format!("\"{key}\":")).expect("key") + key.len() + 3;
    let value = raw_text(raw, key);
    let at = raw[start..].find(value).expect("value") + start;
    let spoiled = if raw[..at].ends_with('"') {
        "12.3.4"
    } else {
        "\"12.3.4\""
    };
    format!("{}{spoiled}{}", &raw[..at], &raw[at + value.len()..])
}

#[test]
fn rejected_symbols_are_named() {
    // Not recorded: built from each exchange's documented error shape.
    let cases: [(Exchange, &str, Vec<&str>); 3] = [
        (
            Exchange::Okx,
            r#"{"event":"error","code":"60018","msg":"Wrong URL or channel:trades,instId:DELISTED-USDT doesn't exist.","connId":"a"}"#,
            vec!["DELISTED-USDT"],
        ),
        (
            Exchange::Bybit,
            r#"{"success":false,"ret_msg":"Invalid topic: publicTrade.DELISTEDUSDT","conn_id":"c","req_id":"9","op":"subscribe"}"#,
            vec!["DELISTEDUSDT"],
        ),
        (
            Exchange::Coinbase,
            r#"{"type":"error","message":"Failed to subscribe","reason":"DELISTED-USD is not a valid product"}"#,
            vec!["DELISTED-USD"],
        ),
    ];
    for (exchange, text, symbols) in cases {
        let Frame::SubscribeError(rejection) =
            venues::parse_frame(exchange, text.as_bytes(), 0).expect("frame")
        else {
            panic!("{exchange}: not a rejection")
        };
        assert_eq!(rejection.symbols, symbols, "{exchange}");
    }
    let err = venues::instrument(Exchange::Binance, "DELISTEDXYZ").unwrap_err();
    assert!(matches!(err, ExchangeError::UnknownSymbol { .. }) && err.is_terminal());
    assert!(err.to_string().contains("\"DELISTEDXYZ\""), "{err}");
}

//! The exchange simulator, over real sockets: every exchange's subscribe
//! handshake and trade frames (parsed by the same adapters the worker runs,
//! compared with the simulator's history), keep-alive rules, REST backfill
//! endpoints, each fault, the control endpoint, recordings replay and the
//! `tickfetch-exsim` binary.
//!
//! Every wait is bounded by `tokio::time::timeout`; the simulator's timers
//! (pings, deadlines, ages) are configured short. The replay test reads the
//! shared recordings (`TICKFETCH_SHARED_DATA`, default
//! `<CARGO_MANIFEST_DIR>/../shared/data`) and skips with a message without them.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

use tickfetch::exsim::{
    ConnectionRules, Fault, FaultKind, GenerateConfig, ReplayConfig, ReplayStart, SimConfig,
    SimHandle, Simulator, Source,
};
use tickfetch::ingest::decode::decode_reader;
use tickfetch::ingest::venues::{
    self, binance, id_continuity, okx, ExchangeError, Feed, Frame, IdContinuity,
};
use tickfetch::model::{Exchange, Trade};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound of any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(600);

/// Rules with long Binance timers and no idle timeouts: tests that need a
/// rule shorten it.
fn calm_rules() -> ConnectionRules {
    ConnectionRules {
        idle_timeouts: false,
        ..ConnectionRules::default()
    }
}

/// A simulator that generates only on demand (rate 0), 3 symbols per
/// exchange, orders of 1–3 fills.
async fn manual_sim(rules: ConnectionRules) -> SimHandle {
    Simulator::start(SimConfig {
        source: Source::Generate(GenerateConfig {
            rate_per_second: 0.0,
            symbols_per_exchange: 3,
            seed: 7,
            max_fills: 3,
            ..GenerateConfig::default()
        }),
        rules,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn feed(name: &str) -> Feed {
    Feed::from_str(name).expect("feed name")
}

fn symbols(sim: &SimHandle, exchange: Exchange) -> Vec<String> {
    sim.symbols(exchange).expect("symbols")
}

/// Receive times differ by design (the parser stamps its own): compare the rest.
fn normalised(trades: impl IntoIterator<Item = Trade>) -> Vec<Trade> {
    trades
        .into_iter()
        .map(|mut t| {
            t.receive_time = 0;
            t
        })
        .collect()
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// The next data frame (text or binary), answering pings along the way;
/// `None` when the connection ends or nothing comes within `wait`.
async fn next_payload(ws: &mut Ws, wait: Duration) -> Option<Result<Vec<u8>, Message>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match message {
            Ok(Message::Text(text)) => return Some(Ok(text.as_bytes().to_vec())),
            Ok(Message::Binary(bytes)) => return Some(Ok(bytes.to_vec())),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(close @ Message::Close(_)) => return Some(Err(close)),
            Err(_) => return None,
        }
    }
}

/// Parse frames until `n` trades have come; other frames are returned too.
async fn collect_trades(ws: &mut Ws, exchange: Exchange, n: usize) -> (Vec<Trade>, Vec<Frame>) {
    let mut trades = Vec::new();
    let mut others = Vec::new();
    while trades.len() < n {
        let payload = match next_payload(ws, WAIT).await {
            Some(Ok(payload)) => payload,
            other => panic!(
                "{exchange}: expected {n} trades, got {} then {other:?}",
                trades.len()
            ),
        };
        match venues::parse_frame(exchange, &payload, 1) {
            Ok(Frame::Trades(batch)) => trades.extend(batch),
            Ok(frame) => others.push(frame),
            Err(e) => panic!("{exchange}: unparseable frame: {e}"),
        }
    }
    (trades, others)
}

/// Assert that no trade frame arrives within `wait` (heartbeats may).
async fn assert_no_trades(ws: &mut Ws, exchange: Exchange, wait: Duration, context: &str) {
    let until = tokio::time::Instant::now() + wait;
    while let Some(Ok(payload)) = next_payload(ws, until - tokio::time::Instant::now()).await {
        if let Ok(Frame::Trades(trades)) = venues::parse_frame(exchange, &payload, 1) {
            panic!("{context}: unexpected trades {trades:?}");
        }
    }
}

/// Send the adapter's subscribe messages, then a websocket ping, and return
/// every frame received before its pong: the server handles messages in
/// order, so the subscriptions are in place once the pong is back.
async fn subscribe(ws: &mut Ws, feed: Feed, symbols: &[String]) -> Vec<Frame> {
    for request in feed
        .subscribe_requests(symbols, 1)
        .expect("subscribe requests")
    {
        ws.send(Message::text(request.text)).await.expect("send");
    }
    sync(ws, feed.exchange()).await
}

/// Ping and collect the parsed frames that arrive before the pong.
async fn sync(ws: &mut Ws, exchange: Exchange) -> Vec<Frame> {
    ws.send(Message::Ping(b"sync".to_vec().into()))
        .await
        .expect("ping");
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("pong in time")
            .expect("open")
            .expect("frame");
        match message {
            Message::Pong(payload) if payload.as_ref() == b"sync" => return frames,
            Message::Text(text) => {
                frames.push(venues::parse_frame(exchange, text.as_bytes(), 1).expect("frame"))
            }
            Message::Binary(bytes) => {
                frames.push(venues::parse_frame(exchange, &bytes, 1).expect("frame"))
            }
            _ => {}
        }
    }
}

/// Wait until the server ends the connection; the close frame's code, if any.
async fn closed(ws: &mut Ws) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the connection was not closed in time"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// A minimal HTTP/1.1 client: one request, `Connection: close`.
async fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_string())
}

// ---------------------------------------------------------------------------
// Streaming, per exchange and feed.

#[tokio::test]
async fn every_feed_streams_exactly_the_history() {
    let sim = manual_sim(calm_rules()).await;
    for name in [
        "binance:trade",
        "binance:aggTrade",
        "upbit:simple",
        "upbit:default",
        "coinbase:matches",
        "coinbase:market_trades",
        "bybit:spot",
        "bybit:linear",
        "okx:trades",
        "okx:trades-all",
    ] {
        let feed = feed(name);
        let exchange = feed.exchange();
        let all = symbols(&sim, exchange);
        let chosen = &all[..2];
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        let acks = subscribe(&mut ws, feed, chosen).await;
        assert!(
            !acks.iter().any(|f| matches!(f, Frame::SubscribeError(_))),
            "{name}: {acks:?}"
        );
        let before: BTreeMap<&String, usize> = chosen
            .iter()
            .map(|s| (s, sim.feed_history(feed, s).expect("history").len()))
            .collect();
        for symbol in &all {
            sim.generate(exchange, symbol, 4).expect("generate");
        }
        let expected: Vec<Trade> = chosen
            .iter()
            .flat_map(|s| {
                sim.feed_history(feed, s)
                    .expect("history")
                    .into_iter()
                    .skip(before[s])
            })
            .collect();
        assert!(expected.len() >= 8, "{name}");
        let (mut got, _) = collect_trades(&mut ws, exchange, expected.len()).await;
        // Symbols interleave on the wire; compare per symbol, in order.
        got.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        let mut want = expected;
        want.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        assert_eq!(normalised(got), normalised(want), "{name}");
        assert_no_trades(&mut ws, exchange, Duration::from_millis(200), name).await;
    }
    let stats = sim.stats();
    assert!(stats.exchange(Exchange::Okx).expect("okx").trades_sent > 0);
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn binance_subscribes_through_the_url_and_raw_streams() {
    let sim = manual_sim(calm_rules()).await;
    let all = symbols(&sim, Exchange::Binance);
    let url = binance::combined_stream_url(
        &sim.ws_base(Exchange::Binance),
        binance::Feed::AggTrade,
        &all[..1],
    )
    .expect("url");
    let mut combined = connect(&url).await;
    let raw_url = format!(
        "{}/ws/{}",
        sim.ws_base(Exchange::Binance),
        binance::stream_name(binance::Feed::Trade, &all[0])
    );
    let mut raw = connect(&raw_url).await;
    sync(&mut combined, Exchange::Binance).await;
    sync(&mut raw, Exchange::Binance).await;
    let made = sim
        .generate(Exchange::Binance, &all[0], 3)
        .expect("generate");

    let aggregated = sim
        .feed_history(feed("binance:aggTrade"), &all[0])
        .expect("history");
    let (got, _) = collect_trades(&mut combined, Exchange::Binance, aggregated.len()).await;
    assert_eq!(normalised(got), normalised(aggregated));

    // `/ws/<stream>` frames are the bare event, which the adapter also reads.
    let payload = next_payload(&mut raw, WAIT)
        .await
        .expect("frame")
        .expect("data");
    assert!(payload.starts_with(br#"{"e":"trade""#), "{payload:?}");
    let Ok(Frame::Trades(first)) = binance::parse_frame(&payload, 1) else {
        panic!("not a trade")
    };
    assert_eq!(normalised(first), normalised(made[..1].to_vec()));

    // LIST_SUBSCRIPTIONS names the URL's streams.
    combined
        .send(Message::text(
            r#"{"method":"LIST_SUBSCRIPTIONS","id":9}"#.to_string(),
        ))
        .await
        .expect("send");
    let reply = next_payload(&mut combined, WAIT)
        .await
        .expect("reply")
        .expect("data");
    let Ok(Frame::SubscribeAck { request_id, topics }) = binance::parse_frame(&reply, 1) else {
        panic!("not an ack: {}", String::from_utf8_lossy(&reply))
    };
    assert_eq!(request_id.as_deref(), Some("9"));
    assert_eq!(
        topics,
        [binance::stream_name(binance::Feed::AggTrade, &all[0])]
    );
    sim.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Keep-alive and connection rules.

#[tokio::test]
async fn binance_pings_and_closes_when_pongs_are_ignored() {
    let sim = manual_sim(ConnectionRules {
        ping_interval: Duration::from_millis(100),
        pong_deadline: Duration::from_millis(400),
        // Ten pongs a second would trip the live 5/s limit.
        max_incoming_per_second: None,
        ..calm_rules()
    })
    .await;
    let mut ws = connect(&sim.ws_url(Exchange::Binance)).await;
    // A client that reads answers each ping (tungstenite pongs on read): the
    // connection outlives several deadlines.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, ws.next()).await {
        match message {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("closed early: {frame:?}"),
            _ => {}
        }
    }
    assert!(pings >= 5, "{pings} pings in 1.2 s at 100 ms");

    sim.inject(Fault::new(
        Exchange::Binance,
        FaultKind::IgnorePongs { duration: None },
    ))
    .expect("inject");
    assert_eq!(closed(&mut ws).await, Some(CloseCode::Policy));
    assert_eq!(
        sim.stats()
            .exchange(Exchange::Binance)
            .expect("binance")
            .pong_timeout_closes,
        1
    );
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn binance_enforces_the_message_rate_and_the_connection_age() {
    let sim = manual_sim(ConnectionRules {
        max_connection_age: Duration::from_millis(700),
        ..calm_rules()
    })
    .await;
    let mut chatty = connect(&sim.ws_url(Exchange::Binance)).await;
    for id in 0..6 {
        chatty
            .send(Message::text(format!(
                r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#
            )))
            .await
            .expect("send");
    }
    assert_eq!(closed(&mut chatty).await, Some(CloseCode::Policy));

    let mut old = connect(&sim.ws_url(Exchange::Binance)).await;
    let opened = tokio::time::Instant::now();
    assert_eq!(closed(&mut old).await, Some(CloseCode::Away));
    assert!(opened.elapsed() >= Duration::from_millis(600));
    let stats = sim.stats();
    let binance = stats.exchange(Exchange::Binance).expect("binance");
    assert_eq!((binance.rate_limit_closes, binance.age_closes), (1, 1));
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn application_pings_get_each_exchange_pong() {
    let sim = manual_sim(calm_rules()).await;
    for (name, ping) in [
        ("upbit:simple", "PING"),
        ("bybit:spot", r#"{"op":"ping","req_id":"p1"}"#),
        ("bybit:linear", r#"{"op":"ping","req_id":"p2"}"#),
        ("okx:trades", "ping"),
    ] {
        let feed = feed(name);
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        ws.send(Message::text(ping.to_string()))
            .await
            .expect("send");
        let reply = next_payload(&mut ws, WAIT)
            .await
            .expect("reply")
            .expect("data");
        assert_eq!(
            venues::parse_frame(feed.exchange(), &reply, 1),
            Ok(Frame::Pong),
            "{name}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn idle_connections_are_closed_where_the_exchange_does() {
    let sim = manual_sim(ConnectionRules {
        idle_timeouts: true,
        idle_timeout_override: Some(Duration::from_millis(400)),
        ..calm_rules()
    })
    .await;
    let mut okx = connect(&sim.ws_url(Exchange::Okx)).await;
    let mut bybit = connect(&sim.ws_url(Exchange::Bybit)).await;
    assert_eq!(closed(&mut okx).await, Some(CloseCode::Away));
    // Bybit has no idle timeout in its rules: still open.
    sync(&mut bybit, Exchange::Bybit).await;
    sim.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// REST.

#[tokio::test]
async fn rest_endpoints_serve_the_history_in_each_exchange_format() {
    let sim = manual_sim(calm_rules()).await;
    for name in [
        "binance:trade",
        "binance:aggTrade",
        "upbit:default",
        "coinbase:matches",
        "coinbase:market_trades",
        "bybit:spot",
        "okx:trades-all",
    ] {
        let feed = feed(name);
        let exchange = feed.exchange();
        let symbol = symbols(&sim, exchange)[0].clone();
        sim.generate(exchange, &symbol, 6).expect("generate");
        let history = sim.feed_history(feed, &symbol).expect("history");
        let url = format!(
            "{}{}",
            sim.rest_url(exchange),
            feed.rest_trades_path(&symbol, 4)
        );
        let (status, body) = http("GET", &url, "").await;
        assert_eq!(status, 200, "{name}: {body}");
        let got = feed
            .parse_rest_trades(&symbol, body.as_bytes(), 1)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = history[history.len() - 4..].to_vec();
        assert_eq!(normalised(got), normalised(want), "{name}");

        let unknown = match exchange {
            Exchange::Binance | Exchange::Bybit => "NOPEUSDT",
            Exchange::Upbit => "KRW-NOPE",
            _ => "NOPE-USD",
        };
        let url = format!(
            "{}{}",
            sim.rest_url(exchange),
            feed.rest_trades_path(unknown, 4)
        );
        let (_, body) = http("GET", &url, "").await;
        assert!(
            matches!(
                feed.parse_rest_trades(unknown, body.as_bytes(), 1),
                Err(ExchangeError::Rejected { .. })
            ),
            "{name}: {body}"
        );
    }

    // Binance backfills aggregate trades from an id.
    let symbol = symbols(&sim, Exchange::Binance)[1].clone();
    sim.generate(Exchange::Binance, &symbol, 5)
        .expect("generate");
    let aggregated = sim
        .feed_history(feed("binance:aggTrade"), &symbol)
        .expect("history");
    let from: u64 = aggregated[1].sequence().expect("numeric");
    let url = format!(
        "{}{}",
        sim.rest_url(Exchange::Binance),
        binance::agg_trades_from_path(&symbol, from, 2)
    );
    let (_, body) = http("GET", &url, "").await;
    let got = binance::parse_rest_trades(binance::Feed::AggTrade, &symbol, body.as_bytes(), 1)
        .expect("aggTrades");
    assert_eq!(normalised(got), normalised(aggregated[1..3].to_vec()));
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn metadata_endpoints_list_every_simulated_symbol() {
    use tickfetch::ingest::venues::instruments::{fetch, MetadataSource};
    let sim = manual_sim(calm_rules()).await;
    for exchange in Exchange::ALL {
        let source = MetadataSource {
            exchange,
            base_url: sim.rest_url(exchange),
        };
        let table = fetch(&source, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{exchange}: {e}"));
        let mut listed: Vec<(String, String)> = table
            .instruments()
            .map(|i| (i.symbol.clone(), i.name()))
            .collect();
        listed.sort();
        let mut want: Vec<(String, String)> = symbols(&sim, exchange)
            .into_iter()
            .map(|s| {
                let name = venues::venue(exchange)
                    .builtin_instrument(&s)
                    .expect("a generated symbol splits")
                    .name();
                (s, name)
            })
            .collect();
        want.sort();
        assert_eq!(listed, want, "{exchange}");
    }

    // Each exchange's own errors for a request it would refuse.
    let base = |e: Exchange| sim.rest_url(e);
    let (_, body) = http(
        "GET",
        &format!("{}/v5/market/instruments-info", base(Exchange::Bybit)),
        "",
    )
    .await;
    assert!(
        matches!(
            venues::venue(Exchange::Bybit).parse_instruments(body.as_bytes()),
            Err(ExchangeError::Rejected { .. })
        ),
        "{body}"
    );
    let (_, body) = http(
        "GET",
        &format!("{}/api/v5/public/instruments", base(Exchange::Okx)),
        "",
    )
    .await;
    assert!(
        matches!(
            venues::venue(Exchange::Okx).parse_instruments(body.as_bytes()),
            Err(ExchangeError::Rejected { ref code, .. }) if code.as_deref() == Some("50014")
        ),
        "{body}"
    );
    // OKX's derivative list names no base or quote, as OKX's does not.
    let (status, body) = http(
        "GET",
        &format!(
            "{}/api/v5/public/instruments?instType=SWAP",
            base(Exchange::Okx)
        ),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let swap = venues::venue(Exchange::Okx)
        .parse_instruments(body.as_bytes())
        .expect("a list");
    assert!(swap.instruments.iter().all(|i| !i.is_complete()), "{body}");
    sim.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Faults.

#[tokio::test]
async fn drop_leaves_a_gap_that_rest_fills() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("binance:trade");
    let symbol = symbols(&sim, Exchange::Binance)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.generate(Exchange::Binance, &symbol, 2)
        .expect("generate");
    let sent_before = sim
        .history(Exchange::Binance, &symbol)
        .expect("history")
        .len();
    sim.inject(Fault::new(Exchange::Binance, FaultKind::Drop { count: 2 }).for_symbol(&symbol))
        .expect("inject");
    sim.generate(Exchange::Binance, &symbol, 4)
        .expect("generate");
    let history = sim.history(Exchange::Binance, &symbol).expect("history");
    let (got, _) = collect_trades(&mut ws, Exchange::Binance, history.len() - 2).await;

    let missing = &history[sent_before..sent_before + 2];
    let gap = got
        .windows(2)
        .find_map(|w| match id_continuity(&w[0], &w[1]) {
            IdContinuity::Gap {
                first_missing,
                last_missing,
            } => Some((first_missing, last_missing)),
            _ => None,
        })
        .expect("a gap on the websocket");
    assert_eq!(
        gap,
        (
            missing[0].sequence().expect("id"),
            missing[1].sequence().expect("id")
        )
    );
    let url = format!(
        "{}{}",
        sim.rest_url(Exchange::Binance),
        feed.rest_trades_path(&symbol, 1000)
    );
    let (_, body) = http("GET", &url, "").await;
    let rest = feed
        .parse_rest_trades(&symbol, body.as_bytes(), 1)
        .expect("rest");
    let rest = normalised(rest);
    assert!(
        normalised(missing.to_vec())
            .iter()
            .all(|m| rest.contains(m)),
        "REST has the dropped trades"
    );
    // Each series skips its next 2 (the aggTrade series too).
    assert_eq!(
        sim.stats()
            .exchange(Exchange::Binance)
            .expect("binance")
            .trades_withheld,
        4
    );
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn gap_makes_ids_jump_everywhere() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("okx:trades-all");
    let symbol = symbols(&sim, Exchange::Okx)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.inject(Fault::new(Exchange::Okx, FaultKind::Gap { count: 1 }))
        .expect("inject");
    let made = sim.generate(Exchange::Okx, &symbol, 4).expect("generate");
    let history = sim.history(Exchange::Okx, &symbol).expect("history");
    assert_eq!(normalised(history.clone()), normalised(made[1..].to_vec()));
    let (got, _) = collect_trades(&mut ws, Exchange::Okx, history.len()).await;
    assert_eq!(normalised(got), normalised(history));
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn duplicate_sends_trades_twice() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("coinbase:matches");
    let symbol = symbols(&sim, Exchange::Coinbase)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.inject(
        Fault::new(Exchange::Coinbase, FaultKind::Duplicate { count: 2 }).for_symbol(&symbol),
    )
    .expect("inject");
    let made = sim
        .generate(Exchange::Coinbase, &symbol, 3)
        .expect("generate");
    let (got, _) = collect_trades(&mut ws, Exchange::Coinbase, made.len() + 2).await;
    let overlaps = got
        .windows(2)
        .filter(|w| id_continuity(&w[0], &w[1]) == IdContinuity::Overlap)
        .count();
    assert!(overlaps >= 1, "a repeated id");
    for trade in &made[..2] {
        assert_eq!(
            got.iter().filter(|t| t.trade_id == trade.trade_id).count(),
            2
        );
    }
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn malformed_frames_fail_every_adapter() {
    let sim = manual_sim(calm_rules()).await;
    for name in [
        "binance:aggTrade",
        "upbit:simple",
        "coinbase:matches",
        "bybit:spot",
        "okx:trades",
    ] {
        let feed = feed(name);
        let exchange = feed.exchange();
        let symbol = symbols(&sim, exchange)[0].clone();
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
        sim.generate(exchange, &symbol, 1).expect("generate");
        let expected = sim.feed_history(feed, &symbol).expect("history").len();
        collect_trades(&mut ws, exchange, expected).await;
        sim.inject(Fault::new(exchange, FaultKind::Malformed).for_symbol(&symbol))
            .expect("inject");
        // Heartbeats may come first; the corrupt frame must come.
        let err = loop {
            let payload = match next_payload(&mut ws, WAIT).await {
                Some(Ok(payload)) => payload,
                other => panic!("{name}: no corrupt frame, got {other:?}"),
            };
            match venues::parse_frame(exchange, &payload, 1) {
                Ok(Frame::Trades(trades)) => panic!("{name}: unexpected trades {trades:?}"),
                Ok(_) => continue,
                Err(err) => break err,
            }
        };
        assert!(
            !err.is_terminal(),
            "{name}: a bad frame is not terminal: {err}"
        );
        // The connection stays up.
        sync(&mut ws, exchange).await;
    }
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn close_fault_closes_connections_politely_or_abruptly() {
    let sim = manual_sim(calm_rules()).await;
    let symbol = symbols(&sim, Exchange::Bybit)[0].clone();
    let feed = feed("bybit:spot");
    let mut carrying = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut carrying, feed, std::slice::from_ref(&symbol)).await;
    let mut other = connect(&sim.feed_ws_url(feed)).await;
    sim.inject(Fault::new(Exchange::Bybit, FaultKind::Close { abrupt: false }).for_symbol(&symbol))
        .expect("inject");
    assert_eq!(closed(&mut carrying).await, Some(CloseCode::Away));
    sync(&mut other, Exchange::Bybit).await;

    sim.inject(Fault::new(
        Exchange::Bybit,
        FaultKind::Close { abrupt: true },
    ))
    .expect("inject");
    assert_eq!(closed(&mut other).await, None, "no close frame");
    assert_eq!(
        sim.stats()
            .exchange(Exchange::Bybit)
            .expect("bybit")
            .forced_closes,
        2
    );
    sim.shutdown().await.expect("clean shutdown");
}

/// A connection that stops reading while the trades pile up is closed as a
/// slow consumer (1008) once it is more than the event channel behind, as an
/// exchange drops a client that does not keep up; what was written before
/// still arrives first, in order.
#[tokio::test]
async fn a_connection_that_stops_reading_is_closed_as_a_slow_consumer() {
    let sim = manual_sim(calm_rules()).await;
    let symbol = symbols(&sim, Exchange::Okx)[0].clone();
    let feed = feed("okx:trades");
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    // One event per call, more than the channel holds, while nothing is read.
    let events = tickfetch::exsim::market::EVENT_CHANNEL_CAPACITY + 1_000;
    for _ in 0..events {
        sim.generate(Exchange::Okx, &symbol, 1).expect("generate");
    }
    let history = normalised(sim.feed_history(feed, &symbol).expect("history"));
    let mut received = Vec::new();
    let code = loop {
        match next_payload(&mut ws, WAIT).await {
            Some(Ok(payload)) => match venues::parse_frame(Exchange::Okx, &payload, 1) {
                Ok(Frame::Trades(batch)) => received.extend(batch),
                Ok(_) => {}
                Err(e) => panic!("unparseable frame: {e}"),
            },
            Some(Err(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Err(other)) => panic!("unexpected {other:?}"),
            None => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::Policy), "closed as a slow consumer");
    assert!(
        received.len() < history.len(),
        "{} of {} trades arrived: the connection kept up",
        received.len(),
        history.len()
    );
    assert_eq!(
        normalised(received.clone()),
        history[..received.len()],
        "what arrived is the history's start, in order"
    );
    let stats = sim.stats();
    let okx = stats.exchange(Exchange::Okx).expect("okx");
    assert_eq!(okx.slow_consumer_closes, 1);
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn down_refuses_new_connections_for_a_while() {
    let sim = manual_sim(calm_rules()).await;
    let url = sim.ws_url(Exchange::Upbit);
    let mut open = connect(&url).await;
    sim.inject(Fault::new(
        Exchange::Upbit,
        FaultKind::Down {
            duration: Duration::from_millis(500),
        },
    ))
    .expect("inject");
    let refused = tokio::time::timeout(WAIT, connect_async(url.as_str()))
        .await
        .expect("answer in time");
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    sync(&mut open, Exchange::Upbit).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut again = connect(&url).await;
    sync(&mut again, Exchange::Upbit).await;
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn stall_stops_data_while_pings_are_answered() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("okx:trades");
    let symbol = symbols(&sim, Exchange::Okx)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.inject(Fault::new(
        Exchange::Okx,
        FaultKind::Stall {
            duration: Duration::from_millis(800),
        },
    ))
    .expect("inject");
    sim.generate(Exchange::Okx, &symbol, 2).expect("generate");
    ws.send(Message::text("ping".to_string()))
        .await
        .expect("send");
    let reply = next_payload(&mut ws, WAIT)
        .await
        .expect("pong")
        .expect("data");
    assert_eq!(okx::parse_frame(&reply, 1), Ok(Frame::Pong));
    assert!(
        next_payload(&mut ws, Duration::from_millis(300))
            .await
            .is_none(),
        "no data while stalled"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stalled = sim.feed_history(feed, &symbol).expect("history");
    assert_eq!(stalled.len(), 2, "stalled trades are in the history");
    sim.generate(Exchange::Okx, &symbol, 1).expect("generate");
    let (got, _) = collect_trades(&mut ws, Exchange::Okx, 1).await;
    let history = sim.feed_history(feed, &symbol).expect("history");
    assert_eq!(normalised(got), normalised(history[2..].to_vec()));
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn no_pong_leaves_pings_unanswered_while_data_flows() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("okx:trades-all");
    let symbol = symbols(&sim, Exchange::Okx)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.inject(Fault::new(
        Exchange::Okx,
        FaultKind::NoPong { duration: None },
    ))
    .expect("inject");
    // The session notices within a housekeeping tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(Message::text("ping".to_string()))
        .await
        .expect("send");
    ws.send(Message::Ping(b"ws".to_vec().into()))
        .await
        .expect("ping");
    let made = sim.generate(Exchange::Okx, &symbol, 2).expect("generate");
    let mut trades = Vec::new();
    let until = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, ws.next()).await {
        match message {
            Message::Pong(_) => panic!("a websocket pong under no-pong"),
            Message::Text(text) => match okx::parse_frame(text.as_bytes(), 1) {
                Ok(Frame::Pong) => panic!("a text pong under no-pong"),
                Ok(Frame::Trades(batch)) => trades.extend(batch),
                other => panic!("unexpected {other:?}"),
            },
            _ => {}
        }
    }
    assert_eq!(normalised(trades), normalised(made));
    sim.clear_faults(Some(Exchange::Okx), None);
    // Reading resumes: the queued pings are answered.
    let reply = next_payload(&mut ws, WAIT)
        .await
        .expect("pong")
        .expect("data");
    assert_eq!(okx::parse_frame(&reply, 1), Ok(Frame::Pong));
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn rejected_and_unknown_symbols_get_each_exchange_error() {
    let sim = manual_sim(calm_rules()).await;
    for name in [
        "binance:aggTrade",
        "upbit:simple",
        "coinbase:matches",
        "bybit:spot",
        "okx:trades",
    ] {
        let feed = feed(name);
        let exchange = feed.exchange();
        let symbol = symbols(&sim, exchange)[1].clone();
        sim.inject(Fault::new(exchange, FaultKind::Reject).for_symbol(&symbol))
            .expect("inject");
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        let frames = subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
        let rejection = frames
            .iter()
            .find_map(|f| match f {
                Frame::SubscribeError(rejection) => Some(rejection.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no rejection in {frames:?}"));
        match exchange {
            // Binance and Upbit name no symbol: the request id ties it.
            Exchange::Binance => assert_eq!(rejection.request_id.as_deref(), Some("1"), "{name}"),
            Exchange::Upbit => assert_eq!(rejection.code.as_deref(), Some("INVALID_PARAM")),
            _ => assert_eq!(rejection.symbols, std::slice::from_ref(&symbol), "{name}"),
        }
        sim.clear_faults(Some(exchange), Some(&symbol));
    }

    // Unknown symbols: Binance (and Upbit) accept silently, the others refuse.
    for (name, unknown, refused) in [
        ("binance:trade", "NOPEUSDT", false),
        ("coinbase:matches", "NOPE-USD", true),
        ("bybit:spot", "NOPEUSDT", true),
        ("okx:trades", "NOPE-USDT", true),
    ] {
        let feed = feed(name);
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        let frames = subscribe(&mut ws, feed, &[unknown.to_string()]).await;
        let errors: Vec<_> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SubscribeError(r) => Some(r.symbols.clone()),
                _ => None,
            })
            .collect();
        if refused {
            assert_eq!(errors, [vec![unknown.to_string()]], "{name}");
        } else {
            assert!(errors.is_empty(), "{name}: {frames:?}");
            assert!(
                frames
                    .iter()
                    .any(|f| matches!(f, Frame::SubscribeAck { .. })),
                "{name}"
            );
        }
    }
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn coinbase_heartbeats_carry_the_last_trade_id() {
    let sim = manual_sim(calm_rules()).await;
    let feed = feed("coinbase:matches");
    let symbol = symbols(&sim, Exchange::Coinbase)[0].clone();
    let mut ws = connect(&sim.feed_ws_url(feed)).await;
    subscribe(&mut ws, feed, std::slice::from_ref(&symbol)).await;
    sim.inject(Fault::new(Exchange::Coinbase, FaultKind::Drop { count: 1 }))
        .expect("inject");
    let made = sim
        .generate(Exchange::Coinbase, &symbol, 1)
        .expect("generate");
    let last = made.last().expect("made").trade_id.clone();
    // The dropped first fill never comes; a heartbeat names the last id made.
    loop {
        let payload = next_payload(&mut ws, WAIT)
            .await
            .expect("frame")
            .expect("data");
        match venues::parse_frame(Exchange::Coinbase, &payload, 1).expect("frame") {
            Frame::Heartbeat(heartbeat) => {
                assert_eq!(heartbeat.symbol.as_deref(), Some(symbol.as_str()));
                if heartbeat.last_trade_id.as_deref() == Some(last.as_str()) {
                    break;
                }
            }
            Frame::Trades(t) => assert!(
                !t.iter().any(|t| t.trade_id == made[0].trade_id),
                "the dropped trade was sent"
            ),
            _ => {}
        }
    }
    sim.shutdown().await.expect("clean shutdown");
}

// ---------------------------------------------------------------------------
// Control endpoint, replay, binary.

#[tokio::test]
async fn control_endpoint_injects_faults_and_reports() {
    let sim = manual_sim(calm_rules()).await;
    let control = sim.control_url();
    let symbol = symbols(&sim, Exchange::Bybit)[0].clone();
    let (status, body) = http(
        "POST",
        &format!("{control}/generate"),
        &format!(r#"{{"exchange":"bybit","symbol":"{symbol}","orders":3}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let made: Vec<Trade> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("trade json"))
        .collect();
    assert!(made.len() >= 3);

    let (status, body) = http(
        "GET",
        &format!("{control}/history?exchange=bybit&symbol={symbol}"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let history: Vec<Trade> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("trade json"))
        .collect();
    assert_eq!(history, made);

    let (status, body) = http(
        "POST",
        &format!("{control}/fault"),
        &format!(r#"{{"exchange":"bybit","symbol":"{symbol}","fault":"drop","count":2}}"#),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    sim.generate(Exchange::Bybit, &symbol, 3).expect("generate");
    let (status, body) = http("GET", &format!("{control}/stats"), "").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    let bybit = stats["exchanges"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["exchange"] == "bybit"))
        .expect("bybit stats");
    assert_eq!(bybit["trades_withheld"], 2);
    let (status, body) = http("GET", &format!("{}/metrics", sim.http_url()), "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("tickfetch_exsim_trades_withheld_total{exchange=\"bybit\"} 2\n"),
        "{body}"
    );

    for (method, path, body, status) in [
        (
            "POST",
            "/fault",
            r#"{"exchange":"bybit","fault":"melt"}"#,
            400,
        ),
        (
            "POST",
            "/fault",
            r#"{"exchange":"kraken","fault":"drop"}"#,
            400,
        ),
        ("GET", "/history?exchange=bybit&symbol=NOPE", "", 400),
        ("GET", "/nothing", "", 404),
    ] {
        let (got, text) = http(method, &format!("{control}{path}"), body).await;
        assert_eq!(got, status, "{path}: {text}");
    }
    sim.shutdown().await.expect("clean shutdown");
}

fn shared_exchanges_dir() -> Option<PathBuf> {
    common::shared_data("exchanges")
}

#[tokio::test]
async fn replays_shared_recordings_through_every_adapter() {
    let Some(dir) = shared_exchanges_dir() else {
        return;
    };
    let sim = Simulator::start(SimConfig {
        source: Source::Replay(ReplayConfig {
            paths: vec![dir.clone()],
            speed: 0.0,
            start: ReplayStart::FirstSubscriber,
        }),
        rules: calm_rules(),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    for (name, file) in [
        (
            "binance:aggTrade",
            "binance/binance_us_aggTrade_kline_extract_2021-10-12.jsonl",
        ),
        (
            "upbit:simple",
            "upbit/upbit_trade_SIMPLE_extract_2021-04-17.jsonl",
        ),
        (
            "coinbase:matches",
            "coinbase/coinbase_exchange_matches_extract_2021-04-17.jsonl",
        ),
        (
            "okx:trades-all",
            "okx/okx_v5_trades_extract_2022-05-13.jsonl",
        ),
    ] {
        let feed = feed(name);
        let exchange = feed.exchange();
        // What the recording holds, decoded independently of the simulator.
        let reader = std::io::BufReader::new(std::fs::File::open(dir.join(file)).expect("file"));
        let mut recorded = Vec::new();
        decode_reader(exchange, reader, 0, |t| {
            recorded.push(t);
            Ok(())
        })
        .expect("decode");
        let symbols: Vec<String> = {
            let mut s: Vec<String> = recorded.iter().map(|t| t.symbol.clone()).collect();
            s.sort();
            s.dedup();
            s
        };
        let mut ws = connect(&sim.feed_ws_url(feed)).await;
        let subscribe_as: Vec<String> = match exchange {
            Exchange::Binance => symbols.iter().map(|s| s.to_ascii_lowercase()).collect(),
            _ => symbols.clone(),
        };
        let frames = subscribe(&mut ws, feed, &subscribe_as).await;
        assert!(
            !frames.iter().any(|f| matches!(f, Frame::SubscribeError(_))),
            "{name}: {frames:?}"
        );
        let expected: usize = symbols
            .iter()
            .map(|s| sim.feed_history(feed, s).map(|h| h.len()).unwrap_or(0))
            .sum::<usize>()
            .max(recorded.len());
        // The replay starts on subscription: trades may beat the sync pong.
        let mut got: Vec<Trade> = frames
            .into_iter()
            .flat_map(|f| match f {
                Frame::Trades(trades) => trades,
                _ => Vec::new(),
            })
            .collect();
        let (more, _) = collect_trades(&mut ws, exchange, expected - got.len()).await;
        got.extend(more);
        let mut want = recorded;
        if exchange == Exchange::Binance {
            // Other Binance recordings replay too; keep this file's symbols.
            got.retain(|t| symbols.contains(&t.symbol));
        }
        let key = |t: &Trade| (t.symbol.clone(), t.exchange_time, t.trade_id.clone());
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(normalised(got), normalised(want), "{name}");
    }
    sim.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_binary_prints_its_urls_and_serves_until_interrupted() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickfetch-exsim"))
        .args([
            "--exchanges",
            "okx,binance",
            "generate",
            "--rate",
            "50",
            "--symbols",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tickfetch-exsim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut values = BTreeMap::new();
    while values.len() < 5 || !values.contains_key("OKX_TRADES_ALL_WS_URL") {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("output in time")
            .expect("read")
            .expect("a line");
        let (key, value) = line.split_once('=').expect("KEY=VALUE");
        values.insert(key.to_string(), value.to_string());
    }
    let url = &values["OKX_TRADES_ALL_WS_URL"];
    let symbols: Vec<String> = values["OKX_SYMBOLS"]
        .split(',')
        .map(str::to_string)
        .collect();
    let mut ws = connect(url).await;
    subscribe(&mut ws, feed("okx:trades-all"), &symbols).await;
    let (trades, _) = collect_trades(&mut ws, Exchange::Okx, 3).await;
    assert!(trades.iter().all(|t| symbols.contains(&t.symbol)));

    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    assert_eq!(closed(&mut ws).await, Some(CloseCode::Away));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .expect("status");
    assert!(status.success(), "{status}");
}

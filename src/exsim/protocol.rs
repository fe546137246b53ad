//! What each simulated exchange says on a websocket: the subscriptions it
//! accepts, and its replies, errors, pongs and heartbeats. No I/O: a
//! [`Protocol`] takes a received text (or binary) message and returns the
//! frames to send back; the session (`session.rs`) does the socket work.
//!
//! | exchange | subscribe | reply | unknown symbol | app ping |
//! | --- | --- | --- | --- | --- |
//! | Binance | `/stream?streams=a@trade/b@aggTrade`, `/ws/<stream>`, or `{"method":"SUBSCRIBE","params":[…],"id":N}` | `{"result":null,"id":N}` | accepted, silent | — (server pings) |
//! | Upbit | `[{"ticket":…},{"type":"trade","codes":[…]},{"format":"SIMPLE"}]` (replaces the previous one) | none | silent | `PING` → `{"status":"UP"}` |
//! | Coinbase | `{"type":"subscribe","product_ids":[…],"channels":["matches","heartbeat"]}` or Advanced `{"type":"subscribe","product_ids":[…],"channel":"market_trades"}` | `subscriptions` | `{"type":"error","message":"Failed to subscribe","reason":"X is not a valid product"}` | — |
//! | Bybit | `{"op":"subscribe","args":["publicTrade.X"],"req_id":"1"}` | `{"success":true,…,"op":"subscribe"}` | `success:false`, `Invalid topic: publicTrade.X` | `{"op":"ping"}` → pong |
//! | OKX | `{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"X"}]}` | `{"event":"subscribe","arg":…}` per arg | `{"event":"error","code":"60018",…}` | `ping` → `pong` |
//!
//! A symbol under a `reject` fault gets the exchange's error (Binance: an
//! error reply to the request, which then subscribes nothing, while streams
//! named in the URL are silently left out; Upbit:
//! `{"error":{"name":"INVALID_PARAM",…}}`). Symbols must be spelled as the
//! exchange spells them (Binance stream names in lower case, the others in
//! upper case); anything else counts as unknown. Coinbase refuses a whole
//! message for one bad product; Bybit and OKX subscribe the good topics and
//! name the bad ones. Bybit's three categories share one symbol table, and
//! OKX serves `trades` on `/ws/v5/public` and `trades-all` on
//! `/ws/v5/business` only.
//!
//! Not simulated: Coinbase's `last_match` and Advanced Trade's `snapshot`
//! after subscribing, Advanced Trade's 5 s subscribe deadline, Upbit's
//! repeated `{"status":"UP"}`, Upbit's list formats (`JSON_LIST`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::market::{ExchangeBook, ExchangeStats};
use crate::ingest::venues::{binance, bybit, coinbase, okx, upbit, Feed, WireFrame};
use crate::model::{Exchange, Millis};

/// The JSON text of `value` as a text frame.
fn text(value: Value) -> WireFrame {
    WireFrame::Text(value.to_string())
}

/// `2021-04-17T16:43:30.244000Z`.
pub(crate) fn iso_micros(time: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(time)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// How the connection was opened, where that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `raw`: `/ws` frames carry the bare event, `/stream` wraps it.
    Binance {
        raw: bool,
    },
    Upbit,
    Coinbase,
    Bybit(bybit::Feed),
    /// `None`: a path that names neither endpoint (both channels allowed).
    Okx(Option<okx::Feed>),
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Protocol {
    exchange: Exchange,
    dialect: Dialect,
    conn_id: String,
    /// Symbol → the trade feeds it is subscribed on.
    subs: BTreeMap<String, Vec<Feed>>,
    /// Binance stream names as subscribed (for `LIST_SUBSCRIPTIONS`).
    binance_streams: BTreeSet<String>,
    /// Coinbase channel → products (`matches`, `heartbeat`, `market_trades`,
    /// `heartbeats`, others).
    coinbase_channels: BTreeMap<String, BTreeSet<String>>,
    heartbeat_sequence: u64,
    advanced_sequence: u64,
}

/// Why a websocket path is refused (answered with 404 before the upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownPath(pub String);

impl Protocol {
    /// The protocol of a connection opened on `path` (below the exchange
    /// prefix) with `query`; Binance subscribes to the URL's streams here.
    ///
    /// # Errors
    /// [`UnknownPath`] for a path the exchange does not serve.
    pub(crate) fn open(
        exchange: Exchange,
        path: &str,
        query: &BTreeMap<String, String>,
        conn_id: u64,
        book: &ExchangeBook,
    ) -> Result<Self, UnknownPath> {
        let path = path.trim_end_matches('/');
        let unknown = || UnknownPath(format!("{exchange} does not serve a websocket on {path:?}"));
        let dialect = match exchange {
            Exchange::Binance => match path {
                "/stream" => Dialect::Binance { raw: false },
                p if p == "/ws" || p.starts_with("/ws/") => Dialect::Binance { raw: true },
                _ => return Err(unknown()),
            },
            Exchange::Upbit => Dialect::Upbit,
            Exchange::Coinbase => Dialect::Coinbase,
            Exchange::Bybit => match path {
                "" | "/v5/public/spot" => Dialect::Bybit(bybit::Feed::Spot),
                "/v5/public/linear" => Dialect::Bybit(bybit::Feed::Linear),
                "/v5/public/inverse" => Dialect::Bybit(bybit::Feed::Inverse),
                _ => return Err(unknown()),
            },
            Exchange::Okx => match path {
                "" => Dialect::Okx(None),
                "/ws/v5/public" => Dialect::Okx(Some(okx::Feed::Trades)),
                "/ws/v5/business" => Dialect::Okx(Some(okx::Feed::TradesAll)),
                _ => return Err(unknown()),
            },
        };
        let mut protocol = Self {
            exchange,
            dialect,
            conn_id: format!("sim-{conn_id}"),
            subs: BTreeMap::new(),
            binance_streams: BTreeSet::new(),
            coinbase_channels: BTreeMap::new(),
            heartbeat_sequence: 0,
            advanced_sequence: 0,
        };
        if let Dialect::Binance { raw } = dialect {
            let streams: Vec<String> = if raw {
                path.strip_prefix("/ws")
                    .unwrap_or_default()
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            } else {
                query
                    .get("streams")
                    .map(|s| {
                        s.split('/')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let rejected = protocol.binance_rejected(&streams, book);
            for stream in streams.iter().filter(|s| !rejected.contains(*s)) {
                protocol.binance_add(stream);
            }
            if !streams.is_empty() {
                book.mark_subscribed();
            }
        }
        Ok(protocol)
    }

    /// Whether Binance frames go out bare (`/ws`) rather than wrapped.
    pub(crate) fn binance_raw(&self) -> bool {
        matches!(self.dialect, Dialect::Binance { raw: true })
    }

    /// Symbol → feeds this connection carries.
    pub(crate) fn subscriptions(&self) -> &BTreeMap<String, Vec<Feed>> {
        &self.subs
    }

    /// Whether the connection carries `symbol`.
    pub(crate) fn carries(&self, symbol: &str) -> bool {
        self.subs.contains_key(symbol)
    }

    fn add(&mut self, symbol: &str, feed: Feed) {
        let feeds = self.subs.entry(symbol.to_string()).or_default();
        if !feeds.contains(&feed) {
            feeds.push(feed);
        }
    }

    fn remove(&mut self, symbol: &str, feed: Feed) {
        if let Some(feeds) = self.subs.get_mut(symbol) {
            feeds.retain(|f| *f != feed);
            if feeds.is_empty() {
                self.subs.remove(symbol);
            }
        }
    }

    /// Answer one received message (text, or a binary frame's bytes).
    pub(crate) fn on_message(
        &mut self,
        payload: &[u8],
        book: &ExchangeBook,
        now: Millis,
    ) -> Vec<WireFrame> {
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        match self.exchange {
            Exchange::Binance => self.binance(text, book),
            Exchange::Upbit => self.upbit(text, book),
            Exchange::Coinbase => self.coinbase(text, book, now),
            Exchange::Bybit => self.bybit(text, book, now),
            Exchange::Okx => self.okx(text, book),
        }
    }

    // ---------------------------------------------------------------- Binance

    /// `btcusdt@aggTrade` → (`BTCUSDT`, feed); `None` for streams that carry
    /// no trades or a symbol not in lower case.
    fn binance_stream(stream: &str) -> Option<(String, Feed)> {
        let (symbol, kind) = stream.split_once('@')?;
        let feed = match kind {
            "trade" => binance::Feed::Trade,
            "aggTrade" => binance::Feed::AggTrade,
            _ => return None,
        };
        if symbol.is_empty() || symbol != symbol.to_ascii_lowercase() {
            return None;
        }
        Some((symbol.to_ascii_uppercase(), Feed::Binance(feed)))
    }

    fn binance_rejected(&self, streams: &[String], book: &ExchangeBook) -> Vec<String> {
        let faults = book.faults();
        streams
            .iter()
            .filter(|s| {
                Self::binance_stream(s).is_some_and(|(symbol, _)| faults.is_rejected(&symbol))
            })
            .cloned()
            .collect()
    }

    fn binance_add(&mut self, stream: &str) {
        self.binance_streams.insert(stream.to_string());
        if let Some((symbol, feed)) = Self::binance_stream(stream) {
            self.add(&symbol, feed);
        }
    }

    fn binance(&mut self, text: &str, book: &ExchangeBook) -> Vec<WireFrame> {
        let request: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return vec![text_frame(
                    json!({"code": 3, "msg": format!("Invalid JSON: {e}"), "id": null}),
                )]
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let error = |code: i64, msg: String| {
            vec![text_frame(
                json!({"error": {"code": code, "msg": msg}, "id": id}),
            )]
        };
        if !(id.is_u64() || id.is_string()) {
            return error(
                2,
                "Invalid request: request ID must be an unsigned integer".into(),
            );
        }
        let params: Vec<String> = match request.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect();
                match strings {
                    Some(strings) => strings,
                    None => return error(2, "Invalid request: params must be strings".into()),
                }
            }
            Some(_) => return error(2, "Invalid request: params must be an array".into()),
        };
        match request.get("method").and_then(Value::as_str) {
            Some("SUBSCRIBE") => {
                let rejected = self.binance_rejected(&params, book);
                if !rejected.is_empty() {
                    ExchangeStats::add(&book.stats.subscribe_rejections, 1);
                    return error(
                        2,
                        format!(
                            "Invalid request: stream {} is not permitted",
                            rejected.join(",")
                        ),
                    );
                }
                let new: BTreeSet<&String> = params
                    .iter()
                    .filter(|s| !self.binance_streams.contains(*s))
                    .collect();
                if self.binance_streams.len() + new.len() > binance::MAX_STREAMS_PER_CONNECTION {
                    return error(
                        2,
                        format!(
                            "Invalid request: more than {} streams on one connection",
                            binance::MAX_STREAMS_PER_CONNECTION
                        ),
                    );
                }
                for stream in &params {
                    self.binance_add(stream);
                }
                book.mark_subscribed();
                vec![text_frame(json!({"result": null, "id": id}))]
            }
            Some("UNSUBSCRIBE") => {
                for stream in &params {
                    self.binance_streams.remove(stream);
                    if let Some((symbol, feed)) = Self::binance_stream(stream) {
                        self.remove(&symbol, feed);
                    }
                }
                vec![text_frame(json!({"result": null, "id": id}))]
            }
            Some("LIST_SUBSCRIPTIONS") => {
                vec![text_frame(
                    json!({"result": self.binance_streams, "id": id}),
                )]
            }
            Some("SET_PROPERTY") => vec![text_frame(json!({"result": null, "id": id}))],
            Some("GET_PROPERTY") => vec![text_frame(json!({"result": false, "id": id}))],
            other => error(
                2,
                format!(
                    "Invalid request: unknown method {:?}, expected one of SUBSCRIBE, \
                     UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY",
                    other.unwrap_or_default()
                ),
            ),
        }
    }

    // ------------------------------------------------------------------ Upbit

    fn upbit_error(name: &str, message: &str) -> Vec<WireFrame> {
        vec![WireFrame::Binary(
            json!({"error": {"name": name, "message": message}})
                .to_string()
                .into_bytes(),
        )]
    }

    fn upbit(&mut self, text: &str, book: &ExchangeBook) -> Vec<WireFrame> {
        if text == upbit::PING_TEXT {
            return vec![WireFrame::Binary(br#"{"status":"UP"}"#.to_vec())];
        }
        let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(text) else {
            return Self::upbit_error("WRONG_FORMAT", "the request must be a JSON array");
        };
        if !parts.iter().any(|p| p.get("ticket").is_some()) {
            return Self::upbit_error("NO_TICKET", "the request has no ticket");
        }
        let format = parts
            .iter()
            .find_map(|p| p.get("format").and_then(Value::as_str))
            .unwrap_or("DEFAULT");
        let feed = match format {
            "DEFAULT" => upbit::Feed::Default,
            "SIMPLE" => upbit::Feed::Simple,
            other => {
                return Self::upbit_error(
                    "INVALID_PARAM",
                    &format!("format {other} is not supported by the simulator"),
                )
            }
        };
        let types: Vec<&Value> = parts.iter().filter(|p| p.get("type").is_some()).collect();
        if types.is_empty() {
            return Self::upbit_error("NO_TYPE", "the request has no type");
        }
        let mut codes = Vec::new();
        for part in types {
            let Some(list) = part.get("codes").and_then(Value::as_array) else {
                return Self::upbit_error("NO_CODES", "a type without codes");
            };
            if part.get("type").and_then(Value::as_str) == Some("trade") {
                codes.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
        {
            let faults = book.faults();
            if let Some(code) = codes.iter().find(|c| faults.is_rejected(c)) {
                ExchangeStats::add(&book.stats.subscribe_rejections, 1);
                return Self::upbit_error("INVALID_PARAM", &format!("{code} is not a valid code"));
            }
        }
        // A new request replaces the connection's subscriptions.
        self.subs.clear();
        for code in codes {
            self.add(&code, Feed::Upbit(feed));
        }
        book.mark_subscribed();
        Vec::new()
    }

    // --------------------------------------------------------------- Coinbase

    fn coinbase_error(reason: &str) -> Vec<WireFrame> {
        vec![text_frame(
            json!({"type": "error", "message": "Failed to subscribe", "reason": reason}),
        )]
    }

    fn coinbase(&mut self, text: &str, book: &ExchangeBook, now: Millis) -> Vec<WireFrame> {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return vec![text_frame(
                json!({"type": "error", "message": "Malformed JSON"}),
            )];
        };
        let subscribe = match request.get("type").and_then(Value::as_str) {
            Some("subscribe") => true,
            Some("unsubscribe") => false,
            _ => return Self::coinbase_error("Type has to be either subscribe or unsubscribe"),
        };
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let products = strings(request.get("product_ids"));
        let advanced = request.get("channel").and_then(Value::as_str);
        let channels: Vec<(String, Vec<String>)> = match advanced {
            Some(channel) => vec![(channel.to_string(), products.clone())],
            None => match request.get("channels").and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .filter_map(|c| match c {
                        Value::String(name) => Some((name.clone(), products.clone())),
                        Value::Object(_) => Some((
                            c.get("name")?.as_str()?.to_string(),
                            strings(c.get("product_ids")),
                        )),
                        _ => None,
                    })
                    .collect(),
                None => return Self::coinbase_error("No channels provided"),
            },
        };
        if subscribe {
            for (channel, products) in &channels {
                if matches!(channel.as_str(), "heartbeats") {
                    continue;
                }
                if let Some(bad) = products.iter().find(|p| !book.accepts(p)) {
                    ExchangeStats::add(&book.stats.subscribe_rejections, 1);
                    return Self::coinbase_error(&format!("{bad} is not a valid product"));
                }
            }
        }
        for (channel, products) in channels {
            let feed = match channel.as_str() {
                "matches" => Some(Feed::Coinbase(coinbase::Feed::ExchangeMatches)),
                "market_trades" => Some(Feed::Coinbase(coinbase::Feed::AdvancedMarketTrades)),
                _ => None,
            };
            for product in products {
                let entry = self.coinbase_channels.entry(channel.clone()).or_default();
                if subscribe {
                    entry.insert(product.clone());
                    if let Some(feed) = feed {
                        self.add(&product, feed);
                    }
                } else {
                    entry.remove(&product);
                    if let Some(feed) = feed {
                        self.remove(&product, feed);
                    }
                }
            }
            if channel == "heartbeats" && subscribe {
                self.coinbase_channels.entry(channel).or_default();
            }
        }
        if subscribe {
            book.mark_subscribed();
        }
        if advanced.is_some() {
            let sequence = self.next_advanced_sequence();
            let subscriptions: BTreeMap<&String, Vec<&String>> = self
                .coinbase_channels
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "matches" | "heartbeat"))
                .map(|(name, products)| (name, products.iter().collect()))
                .collect();
            vec![text_frame(json!({
                "channel": "subscriptions",
                "client_id": "",
                "timestamp": iso_micros(now),
                "sequence_num": sequence,
                "events": [{"subscriptions": subscriptions}],
            }))]
        } else {
            let channels: Vec<Value> = self
                .coinbase_channels
                .iter()
                .filter(|(name, products)| {
                    !matches!(name.as_str(), "market_trades" | "heartbeats") && !products.is_empty()
                })
                .map(|(name, products)| json!({"name": name, "product_ids": products}))
                .collect();
            vec![text_frame(
                json!({"type": "subscriptions", "channels": channels}),
            )]
        }
    }

    fn next_advanced_sequence(&mut self) -> u64 {
        let sequence = self.advanced_sequence;
        self.advanced_sequence += 1;
        sequence
    }

    /// Coinbase heartbeats due now: one `heartbeat` per product on the
    /// Exchange `heartbeat` channel (with the product's last trade id), one
    /// `heartbeats` message for Advanced Trade. Stalled products stay silent.
    pub(crate) fn heartbeats(&mut self, book: &ExchangeBook, now: Millis) -> Vec<WireFrame> {
        if self.exchange != Exchange::Coinbase {
            return Vec::new();
        }
        let mut frames = Vec::new();
        let instant = std::time::Instant::now();
        if let Some(products) = self.coinbase_channels.get("heartbeat") {
            let products: Vec<String> = products.iter().cloned().collect();
            for product in products {
                if book.is_stalled(&product, instant) {
                    continue;
                }
                let last_trade_id = book
                    .last_trade(&product, super::market::Series::Raw)
                    .and_then(|t| t.sequence())
                    .unwrap_or(0);
                self.heartbeat_sequence += 1;
                frames.push(text_frame(json!({
                    "type": "heartbeat",
                    "sequence": self.heartbeat_sequence,
                    "last_trade_id": last_trade_id,
                    "product_id": product,
                    "time": iso_micros(now),
                })));
            }
        }
        if self.coinbase_channels.contains_key("heartbeats") {
            let sequence = self.next_advanced_sequence();
            self.heartbeat_sequence += 1;
            frames.push(text_frame(json!({
                "channel": "heartbeats",
                "client_id": "",
                "timestamp": iso_micros(now),
                "sequence_num": sequence,
                "events": [{"current_time": iso_micros(now), "heartbeat_counter": self.heartbeat_sequence}],
            })));
        }
        frames
    }

    // ------------------------------------------------------------------ Bybit

    fn bybit(&mut self, text: &str, book: &ExchangeBook, now: Millis) -> Vec<WireFrame> {
        let Dialect::Bybit(feed) = self.dialect else {
            return Vec::new();
        };
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return vec![text_frame(json!({
                "success": false, "ret_msg": "error:invalid json", "conn_id": self.conn_id, "op": "",
            }))];
        };
        let req_id = request.get("req_id").cloned();
        let op = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let reply = |success: bool, ret_msg: String, conn_id: &str| {
            let mut value =
                json!({"success": success, "ret_msg": ret_msg, "conn_id": conn_id, "op": op});
            if let (Some(id), Some(map)) = (&req_id, value.as_object_mut()) {
                map.insert("req_id".into(), id.clone());
            }
            vec![text_frame(value)]
        };
        match op.as_str() {
            "ping" => match feed {
                bybit::Feed::Spot => reply(true, "pong".into(), &self.conn_id),
                bybit::Feed::Linear | bybit::Feed::Inverse => {
                    let mut value =
                        json!({"op": "pong", "args": [now.to_string()], "conn_id": self.conn_id});
                    if let (Some(id), Some(map)) = (&req_id, value.as_object_mut()) {
                        map.insert("req_id".into(), id.clone());
                    }
                    vec![text_frame(value)]
                }
            },
            "subscribe" | "unsubscribe" => {
                let args: Vec<String> = request
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if feed == bybit::Feed::Spot && args.len() > bybit::SPOT_MAX_ARGS_PER_REQUEST {
                    return reply(
                        false,
                        format!("error:args size >{}", bybit::SPOT_MAX_ARGS_PER_REQUEST),
                        &self.conn_id,
                    );
                }
                if op == "unsubscribe" {
                    for topic in &args {
                        if let Some(symbol) = topic.strip_prefix(bybit::TOPIC_PREFIX) {
                            self.remove(symbol, Feed::Bybit(feed));
                        }
                    }
                    return reply(true, String::new(), &self.conn_id);
                }
                let mut bad = Vec::new();
                for topic in &args {
                    if let Some(symbol) = topic.strip_prefix(bybit::TOPIC_PREFIX) {
                        if book.accepts(symbol) {
                            self.add(symbol, Feed::Bybit(feed));
                        } else {
                            bad.push(topic.clone());
                        }
                    }
                }
                book.mark_subscribed();
                if bad.is_empty() {
                    reply(true, String::new(), &self.conn_id)
                } else {
                    ExchangeStats::add(&book.stats.subscribe_rejections, 1);
                    reply(
                        false,
                        format!("Invalid topic: {}", bad.join(",")),
                        &self.conn_id,
                    )
                }
            }
            other => reply(false, format!("error:invalid op {other:?}"), &self.conn_id),
        }
    }

    // -------------------------------------------------------------------- OKX

    fn okx(&mut self, text: &str, book: &ExchangeBook) -> Vec<WireFrame> {
        if text == okx::PING_TEXT {
            return vec![WireFrame::Text(okx::PONG_TEXT.to_string())];
        }
        let Dialect::Okx(endpoint) = self.dialect else {
            return Vec::new();
        };
        let conn_id = self.conn_id.clone();
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return vec![text_frame(json!({
                "event": "error", "code": "60012", "msg": format!("Invalid request: {text}"), "connId": conn_id,
            }))];
        };
        let id = request.get("id").cloned();
        let with_id = |mut value: Value| {
            if let (Some(id), Some(map)) = (&id, value.as_object_mut()) {
                map.insert("id".into(), id.clone());
            }
            text_frame(value)
        };
        let op = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let subscribe = match op {
            "subscribe" => true,
            "unsubscribe" => false,
            _ => {
                return vec![with_id(json!({
                    "event": "error", "code": "60012", "msg": format!("Invalid request: {text}"), "connId": conn_id,
                }))]
            }
        };
        let Some(args) = request.get("args").and_then(Value::as_array) else {
            return vec![with_id(json!({
                "event": "error", "code": "60012", "msg": format!("Invalid request: {text}"), "connId": conn_id,
            }))];
        };
        let mut frames = Vec::new();
        for arg in args {
            let channel = arg
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let inst_id = arg
                .get("instId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let feed = match channel {
                "trades" => Some(okx::Feed::Trades),
                "trades-all" => Some(okx::Feed::TradesAll),
                _ => None,
            };
            let echo = json!({"channel": channel, "instId": inst_id});
            let event = if subscribe {
                "subscribe"
            } else {
                "unsubscribe"
            };
            let Some(feed) = feed else {
                frames.push(with_id(
                    json!({"event": event, "arg": echo, "connId": conn_id}),
                ));
                continue;
            };
            if !subscribe {
                self.remove(inst_id, Feed::Okx(feed));
                frames.push(with_id(
                    json!({"event": event, "arg": echo, "connId": conn_id}),
                ));
                continue;
            }
            let right_endpoint = endpoint.is_none_or(|e| e == feed);
            let valid = right_endpoint && book.accepts(inst_id);
            if valid {
                self.add(inst_id, Feed::Okx(feed));
                frames.push(with_id(
                    json!({"event": event, "arg": echo, "connId": conn_id}),
                ));
            } else {
                ExchangeStats::add(&book.stats.subscribe_rejections, 1);
                frames.push(with_id(json!({
                    "event": "error",
                    "code": "60018",
                    "msg": format!(
                        "Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use \
                         the correct URL, channel and parameters referring to API document."
                    ),
                    "connId": conn_id,
                })));
            }
        }
        if subscribe {
            book.mark_subscribed();
        }
        frames
    }
}

fn text_frame(value: Value) -> WireFrame {
    text(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(exchange: Exchange, symbols: &[&str]) -> ExchangeBook {
        let book = ExchangeBook::new(exchange, 10);
        for symbol in symbols {
            book.add_symbol(symbol);
        }
        book
    }

    fn replies(frames: Vec<WireFrame>) -> Vec<Value> {
        frames
            .iter()
            .map(|f| {
                serde_json::from_slice(f.as_bytes())
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(f.as_bytes()).into()))
            })
            .collect()
    }

    fn subs(protocol: &Protocol) -> Vec<String> {
        protocol
            .subscriptions()
            .iter()
            .flat_map(|(symbol, feeds)| feeds.iter().map(move |f| format!("{symbol} {f}")))
            .collect()
    }

    /// Each step: the message sent, the replies expected, the subscriptions after.
    type Step = (&'static str, Vec<Value>, Vec<&'static str>);

    fn run(exchange: Exchange, path: &str, symbols: &[&str], steps: Vec<Step>) {
        let book = book(exchange, symbols);
        book.add_fault(
            Some("REJECTED".into()),
            &super::super::faults::FaultKind::Reject,
            std::time::Instant::now(),
        );
        let mut protocol =
            Protocol::open(exchange, path, &BTreeMap::new(), 7, &book).expect("path served");
        for (input, expected, after) in steps {
            let got = replies(protocol.on_message(input.as_bytes(), &book, 0));
            assert_eq!(got, expected, "{exchange} {input}");
            assert_eq!(subs(&protocol), after, "{exchange} {input}: subscriptions");
        }
    }

    #[test]
    fn binance_requests() {
        run(
            Exchange::Binance,
            "/stream",
            &["BTCUSDT", "REJECTED"],
            vec![
                (
                    r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","nopeusdt@trade"],"id":1}"#,
                    vec![json!({"result": null, "id": 1})],
                    vec!["BTCUSDT binance:aggTrade", "NOPEUSDT binance:trade"],
                ),
                (
                    r#"{"method":"SUBSCRIBE","params":["BTCUSDT@trade","btcusdt@depth"],"id":"a"}"#,
                    vec![json!({"result": null, "id": "a"})],
                    vec!["BTCUSDT binance:aggTrade", "NOPEUSDT binance:trade"],
                ),
                (
                    r#"{"method":"UNSUBSCRIBE","params":["nopeusdt@trade"],"id":2}"#,
                    vec![json!({"result": null, "id": 2})],
                    vec!["BTCUSDT binance:aggTrade"],
                ),
                (
                    r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#,
                    vec![
                        json!({"result": ["BTCUSDT@trade", "btcusdt@aggTrade", "btcusdt@depth"], "id": 3}),
                    ],
                    vec!["BTCUSDT binance:aggTrade"],
                ),
                (
                    r#"{"method":"SUBSCRIBE","params":["rejected@trade"],"id":4}"#,
                    vec![
                        json!({"error": {"code": 2, "msg": "Invalid request: stream rejected@trade is not permitted"}, "id": 4}),
                    ],
                    vec!["BTCUSDT binance:aggTrade"],
                ),
                (
                    r#"{"method":"SUBSCRIBE","params":["x@trade"],"id":-1}"#,
                    vec![
                        json!({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": -1}),
                    ],
                    vec!["BTCUSDT binance:aggTrade"],
                ),
            ],
        );
        let book = book(Exchange::Binance, &[]);
        let mut protocol =
            Protocol::open(Exchange::Binance, "/stream", &BTreeMap::new(), 1, &book).unwrap();
        let reply = replies(protocol.on_message(b"nope", &book, 0));
        assert_eq!(reply[0]["code"], 3);
        assert_eq!(reply[0]["id"], Value::Null);
    }

    #[test]
    fn upbit_requests() {
        let up = || vec![json!({"status": "UP"})];
        let error =
            |name: &str, message: &str| vec![json!({"error": {"name": name, "message": message}})];
        run(
            Exchange::Upbit,
            "/websocket/v1",
            &["KRW-BTC", "KRW-ETH", "REJECTED"],
            vec![
                ("PING", up(), vec![]),
                (
                    r#"[{"ticket":"t"},{"type":"trade","codes":["KRW-BTC","krw-eth"]},{"format":"SIMPLE"}]"#,
                    vec![],
                    vec!["KRW-BTC upbit:simple", "krw-eth upbit:simple"],
                ),
                (
                    r#"[{"ticket":"t"},{"type":"trade","codes":["KRW-ETH"]}]"#,
                    vec![],
                    vec!["KRW-ETH upbit:default"],
                ),
                (
                    r#"[{"ticket":"t"},{"type":"trade","codes":["REJECTED"]}]"#,
                    error("INVALID_PARAM", "REJECTED is not a valid code"),
                    vec!["KRW-ETH upbit:default"],
                ),
                (
                    r#"[{"type":"trade","codes":[]}]"#,
                    error("NO_TICKET", "the request has no ticket"),
                    vec!["KRW-ETH upbit:default"],
                ),
                (
                    "{",
                    error("WRONG_FORMAT", "the request must be a JSON array"),
                    vec!["KRW-ETH upbit:default"],
                ),
            ],
        );
    }

    #[test]
    fn coinbase_requests() {
        run(
            Exchange::Coinbase,
            "",
            &["BTC-USD", "ETH-USD", "REJECTED"],
            vec![
                (
                    r#"{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches","heartbeat"]}"#,
                    vec![json!({"type": "subscriptions", "channels": [
                        {"name": "heartbeat", "product_ids": ["BTC-USD"]},
                        {"name": "matches", "product_ids": ["BTC-USD"]},
                    ]})],
                    vec!["BTC-USD coinbase:matches"],
                ),
                (
                    r#"{"type":"subscribe","product_ids":["ETH-USD","NOPE-USD"],"channels":["matches"]}"#,
                    vec![
                        json!({"type": "error", "message": "Failed to subscribe", "reason": "NOPE-USD is not a valid product"}),
                    ],
                    vec!["BTC-USD coinbase:matches"],
                ),
                (
                    r#"{"type":"subscribe","product_ids":["ETH-USD"],"channel":"market_trades"}"#,
                    vec![
                        json!({"channel": "subscriptions", "client_id": "", "timestamp": "1970-01-01T00:00:00.000000Z",
                        "sequence_num": 0, "events": [{"subscriptions": {"market_trades": ["ETH-USD"]}}]}),
                    ],
                    vec!["BTC-USD coinbase:matches", "ETH-USD coinbase:market_trades"],
                ),
                (
                    r#"{"type":"unsubscribe","product_ids":["BTC-USD"],"channels":["matches"]}"#,
                    vec![json!({"type": "subscriptions", "channels": [
                        {"name": "heartbeat", "product_ids": ["BTC-USD"]},
                    ]})],
                    vec!["ETH-USD coinbase:market_trades"],
                ),
                (
                    r#"{"type":"hello"}"#,
                    vec![
                        json!({"type": "error", "message": "Failed to subscribe", "reason": "Type has to be either subscribe or unsubscribe"}),
                    ],
                    vec!["ETH-USD coinbase:market_trades"],
                ),
            ],
        );
    }

    #[test]
    fn bybit_requests() {
        let reply = |success: bool, ret_msg: &str, op: &str, req_id: Option<&str>| {
            let mut value =
                json!({"success": success, "ret_msg": ret_msg, "conn_id": "sim-7", "op": op});
            if let Some(id) = req_id {
                value["req_id"] = json!(id);
            }
            vec![value]
        };
        let eleven: String = (0..11)
            .map(|i| format!("\"publicTrade.S{i}USDT\""))
            .collect::<Vec<_>>()
            .join(",");
        let too_many =
            Box::leak(format!(r#"{{"op":"subscribe","args":[{eleven}]}}"#).into_boxed_str());
        run(
            Exchange::Bybit,
            "/v5/public/spot",
            &["BTCUSDT", "ETHUSDT", "REJECTED"],
            vec![
                (
                    r#"{"op":"ping","req_id":"p"}"#,
                    reply(true, "pong", "ping", Some("p")),
                    vec![],
                ),
                (
                    r#"{"op":"subscribe","args":["publicTrade.BTCUSDT","orderbook.1.BTCUSDT"],"req_id":"1"}"#,
                    reply(true, "", "subscribe", Some("1")),
                    vec!["BTCUSDT bybit:spot"],
                ),
                (
                    r#"{"op":"subscribe","args":["publicTrade.ETHUSDT","publicTrade.REJECTED","publicTrade.NOPE"]}"#,
                    reply(
                        false,
                        "Invalid topic: publicTrade.REJECTED,publicTrade.NOPE",
                        "subscribe",
                        None,
                    ),
                    vec!["BTCUSDT bybit:spot", "ETHUSDT bybit:spot"],
                ),
                (
                    too_many,
                    reply(false, "error:args size >10", "subscribe", None),
                    vec!["BTCUSDT bybit:spot", "ETHUSDT bybit:spot"],
                ),
                (
                    r#"{"op":"unsubscribe","args":["publicTrade.BTCUSDT"]}"#,
                    reply(true, "", "unsubscribe", None),
                    vec!["ETHUSDT bybit:spot"],
                ),
            ],
        );
        run(
            Exchange::Bybit,
            "/v5/public/linear",
            &["BTCUSDT"],
            vec![(
                r#"{"op":"ping"}"#,
                vec![json!({"op": "pong", "args": ["0"], "conn_id": "sim-7"})],
                vec![],
            )],
        );
    }

    #[test]
    fn okx_requests() {
        let ack = |channel: &str, inst: &str| json!({"id": "1", "event": "subscribe", "arg": {"channel": channel, "instId": inst}, "connId": "sim-7"});
        let refused = |channel: &str, inst: &str| {
            json!({"id": "1", "event": "error", "code": "60018", "connId": "sim-7",
            "msg": format!("Wrong URL or channel:{channel},instId:{inst} doesn't exist. Please use the correct URL, channel and parameters referring to API document.")})
        };
        run(
            Exchange::Okx,
            "/ws/v5/public",
            &["BTC-USDT", "REJECTED"],
            vec![
                ("ping", vec![json!("pong")], vec![]),
                (
                    r#"{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},{"channel":"trades","instId":"NOPE-USDT"},{"channel":"trades-all","instId":"BTC-USDT"},{"channel":"tickers","instId":"BTC-USDT"}]}"#,
                    vec![
                        ack("trades", "BTC-USDT"),
                        refused("trades", "NOPE-USDT"),
                        refused("trades-all", "BTC-USDT"),
                        ack("tickers", "BTC-USDT"),
                    ],
                    vec!["BTC-USDT okx:trades"],
                ),
                (
                    r#"{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"REJECTED"}]}"#,
                    vec![refused("trades", "REJECTED")],
                    vec!["BTC-USDT okx:trades"],
                ),
            ],
        );
    }

    #[test]
    fn paths_and_url_subscriptions() {
        let binance = book(Exchange::Binance, &["BTCUSDT"]);
        let query: BTreeMap<String, String> = [(
            "streams".to_string(),
            "btcusdt@trade/ethusdt@aggTrade".to_string(),
        )]
        .into();
        let combined = Protocol::open(Exchange::Binance, "/stream", &query, 1, &binance).unwrap();
        assert_eq!(
            subs(&combined),
            ["BTCUSDT binance:trade", "ETHUSDT binance:aggTrade"]
        );
        assert!(!combined.binance_raw());
        let raw = Protocol::open(
            Exchange::Binance,
            "/ws/btcusdt@aggTrade",
            &BTreeMap::new(),
            1,
            &binance,
        )
        .unwrap();
        assert_eq!(subs(&raw), ["BTCUSDT binance:aggTrade"]);
        assert!(raw.binance_raw());
        for (exchange, path, served) in [
            (Exchange::Binance, "/", false),
            (Exchange::Binance, "/stream/", true),
            (Exchange::Bybit, "/v5/public/option", false),
            (Exchange::Okx, "/ws/v5/private", false),
            (Exchange::Okx, "/ws/v5/business", true),
            (Exchange::Upbit, "/anything", true),
        ] {
            let book = book(exchange, &[]);
            assert_eq!(
                Protocol::open(exchange, path, &BTreeMap::new(), 1, &book).is_ok(),
                served,
                "{exchange} {path}"
            );
        }
    }
}

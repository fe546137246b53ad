//! The connection runtime: one websocket per group of symbols ("shard"),
//! kept subscribed, alive and fresh.
//!
//! ```text
//! run_shard (one per ≤ max-topics group of a feed's symbols)
//!   ├─ connection #n   connect → subscribe (paced) → read loop ──ConnectionEvent──▶ feed task
//!   │                  keep-alive pings, pong deadline, data watchdog
//!   └─ connection #n+1 started before #n reaches the exchange's max age;
//!                      #n closes once #n+1 is receiving (rotation with overlap)
//! ```
//!
//! A connection parses its frames itself (so parsing spreads over the
//! runtime's threads) and sends the results to its feed task over a bounded
//! channel, [`CONNECTION_EVENTS`]: trades, heartbeats, "these symbols are
//! live here", rejections, bad frames (with the raw bytes, for the dead-letter
//! topic) and its end. It never decides what gets published: overlaps between
//! connections are resolved by the feed task's sequencers.
//!
//! A connection ends when the socket closes or fails, a ping goes unanswered
//! ([`ConnectionRules::pong_timeout`]), the data watchdog sees no trade for
//! longer than the threshold its symbols' liquidity allows
//! ([`Watchdog`]), every symbol was rejected, or it is cancelled. The shard
//! then reconnects after a jittered exponential [`Backoff`] (reset once a
//! connection has carried data or stayed up [`STABLE_CONNECTION`]); a
//! rotation whose replacement fails keeps the old connection and retries
//! after a backoff too. A symbol the exchange rejects is reported and
//! removed from the shard for good; its neighbours stay subscribed. Where the
//! exchange names no symbol in a rejection (Binance ties it to the request id
//! only), the request is split in halves and re-sent until the culprit stands
//! alone.

//! - [`transport`]: TCP and TLS to an endpoint (`ws://`, `wss://`, `http://`, `https://`).
//! - [`http`]: the small HTTP/1.1 client REST backfill and instrument lists use.
//! - [`policy`]: reconnect backoff, subscribe pacing, the data-progress watchdog.

pub mod http;
pub mod policy;
pub mod transport;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Largest websocket frame and message a connection reads: an exchange's
/// trade frames are a few KiB; a longer one (a 100 MB frame, say) ends the
/// connection when its header arrives, before its payload is buffered.
pub const MAX_WS_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The websocket read limits of every exchange connection.
pub fn ws_limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
}
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{FeedConfig, IngestConfig};
use crate::ingest::events::{EndReason, FeedEvents};
use crate::ingest::venues::{
    self, receive_time_now, Feed, Frame, Heartbeat, PingMessage, SubscribeRejection,
    SubscribeRequest,
};
use crate::model::Trade;
use policy::{Backoff, Pacer, Watchdog};
use transport::Endpoint;

/// Events queued from one feed's connections to its feed task.
pub const CONNECTION_EVENTS: usize = 1_024;
/// TCP connect, TLS and websocket handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Client ping interval where the exchange asks for none (a websocket ping:
/// every server must answer it, so a dead peer shows within a minute).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for a pong.
pub const MAX_PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// A subscription neither acknowledged nor refused within this counts as
/// accepted (Upbit never acknowledges; Binance accepts unknown symbols silently).
pub const ACK_GRACE: Duration = Duration::from_secs(2);
/// A rotation's new connection counts as receiving after its first trade, or
/// after being subscribed this long (a shard of quiet symbols).
pub const READY_GRACE: Duration = Duration::from_millis(500);
/// Rotation happens this far ahead of the forced disconnect, at most.
pub const MAX_ROTATION_MARGIN: Duration = Duration::from_secs(600);
/// How often the watchdog and the ping deadline are checked.
const TICK: Duration = Duration::from_millis(100);
/// A connection up this long counts as healthy (its end resets the backoff).
pub const STABLE_CONNECTION: Duration = Duration::from_secs(30);
/// How long a closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a connection is: shard and generation (`s0c3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    pub shard: usize,
    pub generation: u64,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}c{}", self.shard, self.generation)
    }
}

/// What a connection tells its feed task.
#[derive(Debug)]
pub enum ConnectionEvent {
    /// Subscribed (acknowledged, or not refused within [`ACK_GRACE`]): these
    /// symbols' trades flow on this connection from now on.
    Live {
        conn: ConnectionId,
        symbols: Vec<String>,
    },
    /// Trades of one frame, oldest first.
    Trades {
        conn: ConnectionId,
        trades: Vec<Trade>,
    },
    Heartbeat {
        conn: ConnectionId,
        heartbeat: Heartbeat,
    },
    /// The exchange refused these symbols; they are dropped from the feed.
    Rejected {
        conn: ConnectionId,
        symbols: Vec<String>,
        reason: String,
    },
    /// A frame that did not parse: raw bytes for the dead-letter topic.
    BadFrame {
        conn: ConnectionId,
        payload: Vec<u8>,
        reason: String,
    },
    /// The connection is gone; its symbols are no longer live on it.
    Ended { conn: ConnectionId },
}

/// How one feed's connections behave: the adapter's rules, overridden by
/// config where it says so.
#[derive(Debug, Clone)]
pub struct ConnectionRules {
    pub feed: Feed,
    pub ws_url: String,
    pub ping_interval: Duration,
    pub ping_message: PingMessage,
    pub pong_timeout: Duration,
    /// Start the replacement connection at this age (before the exchange's
    /// forced disconnect); `None` where connections live indefinitely.
    pub rotate_after: Option<Duration>,
    pub max_client_messages_per_second: Option<u32>,
    pub symbols_per_connection: usize,
    pub watchdog_floor: Duration,
    pub watchdog_ceiling: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl ConnectionRules {
    /// Resolves the rules of `feed` from its adapter and config.
    pub fn resolve(feed: Feed, config: &FeedConfig, ingest: &IngestConfig) -> Self {
        let keep_alive = feed.keep_alive();
        let limits = feed.limits();
        let ms = Duration::from_millis;
        let (default_interval, ping_message) = match keep_alive.client_ping {
            Some(ping) => (ping.interval, ping.message),
            None => (DEFAULT_PING_INTERVAL, PingMessage::WebSocketPing),
        };
        let ping_interval = config.ping_interval_ms.map_or(default_interval, ms);
        let pong_timeout = config
            .pong_timeout_ms
            .map_or(ping_interval.min(MAX_PONG_TIMEOUT), ms);
        let max_age = config
            .max_connection_age_ms
            .map(ms)
            .or(keep_alive.max_connection_age);
        let rotate_after = max_age.map(|age| age - (age / 4).min(MAX_ROTATION_MARGIN));
        let exchange_limit = limits.max_topics_per_connection.unwrap_or(usize::MAX);
        let symbols_per_connection = config
            .symbols_per_connection
            .unwrap_or(usize::MAX)
            .min(exchange_limit)
            .max(1);
        Self {
            feed,
            ws_url: config
                .ws_url
                .clone()
                .unwrap_or_else(|| feed.ws_url().to_string()),
            ping_interval,
            ping_message,
            pong_timeout,
            rotate_after,
            max_client_messages_per_second: limits.max_client_messages_per_second,
            symbols_per_connection,
            watchdog_floor: ms(ingest.watchdog_floor_ms),
            watchdog_ceiling: ms(ingest.watchdog_ceiling_ms),
            reconnect_min: ms(ingest.reconnect_min_ms),
            reconnect_max: ms(ingest.reconnect_max_ms),
        }
    }
}

/// The symbols of one shard, shared by its connections: a rejection on one
/// connection keeps the symbol out of every later one.
#[derive(Debug, Default)]
pub struct ShardSymbols {
    symbols: Vec<String>,
    rejected: BTreeSet<String>,
}

impl ShardSymbols {
    pub fn new(symbols: Vec<String>) -> Self {
        Self {
            symbols,
            rejected: BTreeSet::new(),
        }
    }

    /// The symbols to subscribe: all but the rejected.
    pub fn current(&self) -> Vec<String> {
        self.symbols
            .iter()
            .filter(|s| !self.rejected.contains(*s))
            .cloned()
            .collect()
    }

    fn reject(&mut self, symbol: &str) -> bool {
        self.symbols.iter().any(|s| s == symbol) && self.rejected.insert(symbol.to_string())
    }
}

/// Splits `symbols` into shards of at most `per_connection`.
pub fn shard_symbols(symbols: &[String], per_connection: usize) -> Vec<Vec<String>> {
    symbols
        .chunks(per_connection.max(1))
        .map(<[String]>::to_vec)
        .collect()
}

/// Runs one shard until `cancel`: keeps a connection up, rotates it before
/// its forced disconnect, reconnects with backoff.
pub async fn run_shard(
    rules: Arc<ConnectionRules>,
    shard: usize,
    symbols: Arc<Mutex<ShardSymbols>>,
    events: mpsc::Sender<ConnectionEvent>,
    feed_events: FeedEvents,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(rules.reconnect_min, rules.reconnect_max);
    let mut watchdog = Watchdog::new(rules.watchdog_floor, rules.watchdog_ceiling);
    let mut generation = 0u64;
    let mut tasks: JoinSet<(ConnectionId, ConnectionOutcome)> = JoinSet::new();
    // The connection in charge, and a rotation's replacement while it warms up.
    let mut active: Option<Slot> = None;
    let mut standby: Option<Slot> = None;
    let mut standby_ready: Option<oneshot::Receiver<()>> = None;
    let mut next_attempt = Some(Instant::now());
    let mut retiring: Vec<ConnectionId> = Vec::new();
    // After a replacement failed to come up: when to try rotating again.
    let mut rotation_retry_at: Option<Instant> = None;
    let mut rng = rand::rngs::StdRng::from_entropy();

    loop {
        let rotate_at = match (&active, &standby, rules.rotate_after) {
            (Some(slot), None, Some(after)) => {
                Some((slot.started + after).max(rotation_retry_at.unwrap_or(slot.started)))
            }
            _ => None,
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep_until_opt(next_attempt), if active.is_none() && standby.is_none() => {
                next_attempt = None;
                generation += 1;
                let (slot, _) = spawn_connection(&mut tasks, &rules, shard, generation, &symbols, &events, &feed_events, watchdog.clone(), &cancel, false);
                active = Some(slot);
            }
            _ = sleep_until_opt(rotate_at) => {
                generation += 1;
                tracing::info!(shard, generation, "rotating: starting the replacement connection");
                let (slot, ready) = spawn_connection(&mut tasks, &rules, shard, generation, &symbols, &events, &feed_events, watchdog.clone(), &cancel, true);
                standby = Some(slot);
                standby_ready = ready;
            }
            ready = recv_opt(&mut standby_ready) => {
                standby_ready = None;
                if ready.is_ok() {
                    rotation_retry_at = None;
                    if let Some(old) = active.take() {
                        retiring.push(old.id);
                        old.cancel.cancel();
                    }
                    active = standby.take();
                }
            }
            Some(joined) = tasks.join_next() => {
                let Ok((id, outcome)) = joined else {
                    // A connection task panicked: treat as a closed connection.
                    tracing::error!(shard, "connection task failed");
                    if active.is_some() { active = None; }
                    next_attempt = Some(Instant::now() + backoff.next_delay(&mut rng));
                    continue;
                };
                let reason = if retiring.contains(&id) {
                    retiring.retain(|r| *r != id);
                    EndReason::Rotated
                } else {
                    outcome.reason
                };
                feed_events.connection_ended(reason, &format!("{id}: {}", outcome.detail));
                if reason == EndReason::Cancelled && cancel.is_cancelled() {
                    continue;
                }
                let was_active = active.as_ref().is_some_and(|s| s.id == id);
                let was_standby = standby.as_ref().is_some_and(|s| s.id == id);
                if was_active {
                    if outcome.reason == EndReason::Stalled {
                        watchdog = outcome.watchdog;
                        watchdog.recycled(outcome.saw_trades);
                    } else {
                        watchdog = outcome.watchdog;
                    }
                    // A connection that carried data or lived a while was
                    // healthy: the next failure starts from the shortest delay.
                    if outcome.saw_trades || outcome.lived >= STABLE_CONNECTION {
                        backoff.reset();
                    }
                    active = None;
                    if standby.is_some() {
                        // The replacement is already connecting: it takes over.
                        active = standby.take();
                        standby_ready = None;
                    } else if outcome.reason == EndReason::NoSymbols {
                        tracing::warn!(shard, "no symbols left on this shard");
                        cancel.cancelled().await;
                        break;
                    } else {
                        next_attempt = Some(Instant::now() + backoff.next_delay(&mut rng));
                    }
                } else if was_standby {
                    // The replacement failed before taking over: the old
                    // connection carries on; try again after a backoff.
                    standby = None;
                    standby_ready = None;
                    rotation_retry_at = Some(Instant::now() + backoff.next_delay(&mut rng));
                }
            }
        }
    }
    if let Some(slot) = active.take() {
        slot.cancel.cancel();
    }
    if let Some(slot) = standby.take() {
        slot.cancel.cancel();
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((id, outcome)) = joined {
            feed_events.connection_ended(outcome.reason, &format!("{id}: {}", outcome.detail));
        }
    }
}

struct Slot {
    id: ConnectionId,
    started: Instant,
    cancel: CancellationToken,
}

#[allow(clippy::too_many_arguments)]
fn spawn_connection(
    tasks: &mut JoinSet<(ConnectionId, ConnectionOutcome)>,
    rules: &Arc<ConnectionRules>,
    shard: usize,
    generation: u64,
    symbols: &Arc<Mutex<ShardSymbols>>,
    events: &mpsc::Sender<ConnectionEvent>,
    feed_events: &FeedEvents,
    watchdog: Watchdog,
    parent: &CancellationToken,
    want_ready: bool,
) -> (Slot, Option<oneshot::Receiver<()>>) {
    let id = ConnectionId { shard, generation };
    let cancel = parent.child_token();
    let (ready_tx, ready_rx) = if want_ready {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let connection = Connection {
        id,
        rules: rules.clone(),
        symbols: symbols.clone(),
        events: events.clone(),
        feed_events: feed_events.clone(),
        watchdog,
        ready: ready_tx,
        cancel: cancel.clone(),
    };
    let span = tracing::info_span!("connection", feed = %rules.feed, conn = %id);
    tasks.spawn(async move { (id, connection.run().await) }.instrument(span));
    (
        Slot {
            id,
            started: Instant::now(),
            cancel,
        },
        ready_rx,
    )
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<oneshot::Receiver<()>>) -> Result<(), oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// How a connection ended.
#[derive(Debug)]
pub struct ConnectionOutcome {
    pub reason: EndReason,
    pub detail: String,
    /// The watchdog with what this connection learned of its symbols' rates.
    pub watchdog: Watchdog,
    pub saw_trades: bool,
    /// Time from the start of the attempt to its end.
    pub lived: Duration,
}

/// One websocket connection's state.
struct Connection {
    id: ConnectionId,
    rules: Arc<ConnectionRules>,
    symbols: Arc<Mutex<ShardSymbols>>,
    events: mpsc::Sender<ConnectionEvent>,
    feed_events: FeedEvents,
    watchdog: Watchdog,
    ready: Option<oneshot::Sender<()>>,
    cancel: CancellationToken,
}

/// A subscribe request sent and not yet answered.
struct Outstanding {
    symbols: Vec<String>,
    sent: Instant,
}

/// Why the read loop stopped.
struct Stop(EndReason, String);

impl Connection {
    async fn run(mut self) -> ConnectionOutcome {
        let started = Instant::now();
        let mut saw_trades = false;
        let (reason, detail) = match self.session(&mut saw_trades).await {
            Ok(()) => (EndReason::Cancelled, "cancelled".to_string()),
            Err(Stop(reason, detail)) => (reason, detail),
        };
        let _ = self
            .events
            .send(ConnectionEvent::Ended { conn: self.id })
            .await;
        ConnectionOutcome {
            reason,
            detail,
            watchdog: self.watchdog,
            saw_trades,
            lived: started.elapsed(),
        }
    }

    async fn session(&mut self, saw_trades: &mut bool) -> Result<(), Stop> {
        let exchange = self.rules.feed.exchange();
        let endpoint = Endpoint::parse(&self.rules.ws_url)
            .map_err(|e| Stop(EndReason::ConnectFailed, e.to_string()))?;
        let connect = async {
            let stream = transport::connect(&endpoint, CONNECT_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            tokio_tungstenite::client_async_with_config(
                self.rules.ws_url.as_str(),
                stream,
                Some(ws_limits()),
            )
            .await
            .map_err(|e| format!("websocket handshake: {e}"))
        };
        let (mut ws, _) = tokio::select! {
            _ = self.cancel.cancelled() => return Ok(()),
            result = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match result {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return Err(Stop(EndReason::ConnectFailed, e)),
                Err(_) => return Err(Stop(EndReason::ConnectFailed, "timed out".into())),
            },
        };
        self.feed_events.connected();
        tracing::info!(url = %self.rules.ws_url, "connected");

        let symbols = self.symbols_now();
        if symbols.is_empty() {
            return Err(Stop(
                EndReason::NoSymbols,
                "every symbol was rejected".into(),
            ));
        }
        let mut pacer = Pacer::new(self.rules.max_client_messages_per_second);
        let mut next_request_id = 1u64;
        let mut to_send: VecDeque<SubscribeRequest> = VecDeque::new();
        self.build_requests(&symbols, &mut next_request_id, &mut to_send)
            .await?;
        let mut outstanding: HashMap<String, Outstanding> = HashMap::new();
        let mut anonymous: VecDeque<Outstanding> = VecDeque::new();
        let mut live = false;
        let mut live_since: Option<Instant> = None;
        let mut last_progress = Instant::now();
        let mut ping_due = Instant::now() + self.rules.ping_interval;
        let mut pong_deadline: Option<Instant> = None;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let result = loop {
            let now = Instant::now();
            let send_at = if to_send.is_empty() {
                None
            } else {
                Some(now + pacer.delay(now))
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                _ = sleep_until_opt(send_at) => {
                    if let Some(request) = to_send.pop_front() {
                        let now = Instant::now();
                        pacer.record(now);
                        send(&mut ws, Message::text(request.text.clone())).await?;
                        let pending = Outstanding { symbols: request.symbols, sent: now };
                        match request.request_id {
                            Some(id) => { outstanding.insert(id, pending); }
                            None => anonymous.push_back(pending),
                        }
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    if let Some(deadline) = pong_deadline {
                        if now >= deadline {
                            break Err(Stop(EndReason::KeepAlive, format!("no pong within {:?}", self.rules.pong_timeout)));
                        }
                    }
                    if now >= ping_due && pong_deadline.is_none() && pacer.delay(now).is_zero() {
                        pacer.record(now);
                        let ping = match self.rules.ping_message {
                            PingMessage::Text(text) => Message::text(text),
                            PingMessage::WebSocketPing => Message::Ping(Vec::new().into()),
                        };
                        send(&mut ws, ping).await?;
                        ping_due = now + self.rules.ping_interval;
                        pong_deadline = Some(now + self.rules.pong_timeout);
                    }
                    // Acknowledgements that never came: accepted (see ACK_GRACE).
                    outstanding.retain(|_, o| now.saturating_duration_since(o.sent) < ACK_GRACE);
                    while anonymous.front().is_some_and(|o| now.saturating_duration_since(o.sent) >= ACK_GRACE) {
                        anonymous.pop_front();
                    }
                    if !live && to_send.is_empty() && outstanding.is_empty() && anonymous.is_empty() {
                        live = true;
                        live_since = Some(now);
                        last_progress = now;
                        let symbols = self.symbols_now();
                        if symbols.is_empty() {
                            break Err(Stop(EndReason::NoSymbols, "every symbol was rejected".into()));
                        }
                        tracing::info!(symbols = symbols.len(), "subscribed");
                        self.emit(ConnectionEvent::Live { conn: self.id, symbols }).await?;
                    }
                    if let Some(since) = live_since {
                        if self.ready.is_some() && (*saw_trades || now.saturating_duration_since(since) >= READY_GRACE) {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(());
                            }
                        }
                    }
                    if live && self.watchdog.stalled(last_progress, now) {
                        let silence = now.saturating_duration_since(last_progress);
                        break Err(Stop(EndReason::Stalled, format!("no trade for {silence:?} (threshold {:?})", self.watchdog.threshold())));
                    }
                }
                message = ws.next() => {
                    let message = match message {
                        None => break Err(Stop(EndReason::Closed, "the server closed the stream".into())),
                        Some(Err(e)) => break Err(Stop(EndReason::Closed, e.to_string())),
                        Some(Ok(message)) => message,
                    };
                    let payload: &[u8] = match &message {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(bytes) => bytes,
                        Message::Pong(_) => {
                            pong_deadline = None;
                            continue;
                        }
                        Message::Ping(_) => {
                            // tungstenite queued the pong; make sure it leaves now.
                            if let Err(e) = ws.flush().await {
                                break Err(Stop(EndReason::Closed, e.to_string()));
                            }
                            continue;
                        }
                        Message::Close(frame) => {
                            let detail = frame.as_ref().map_or_else(|| "close frame".to_string(), |f| format!("close frame {} {}", f.code, f.reason));
                            break Err(Stop(EndReason::Closed, detail));
                        }
                        Message::Frame(_) => continue,
                    };
                    let now = Instant::now();
                    match venues::parse_frame(exchange, payload, receive_time_now()) {
                        Ok(frame) => {
                            self.feed_events.frame(frame.kind());
                            match frame {
                                Frame::Trades(trades) => {
                                    if trades.is_empty() { continue; }
                                    *saw_trades = true;
                                    last_progress = now;
                                    for trade in &trades {
                                        self.watchdog.on_trade(&trade.symbol, now);
                                    }
                                    self.emit(ConnectionEvent::Trades { conn: self.id, trades }).await?;
                                }
                                Frame::Heartbeat(heartbeat) => {
                                    self.emit(ConnectionEvent::Heartbeat { conn: self.id, heartbeat }).await?;
                                }
                                Frame::Pong => pong_deadline = None,
                                Frame::SubscribeAck { request_id, .. } => {
                                    match request_id {
                                        Some(id) => { outstanding.remove(&id); }
                                        None => { anonymous.pop_front(); }
                                    }
                                }
                                Frame::SubscribeError(rejection) => {
                                    self.rejected(rejection, &mut outstanding, &mut anonymous, &mut next_request_id, &mut to_send).await?;
                                    if self.symbols_now().is_empty() {
                                        break Err(Stop(EndReason::NoSymbols, "every symbol was rejected".into()));
                                    }
                                }
                                Frame::Other(_) => {}
                            }
                        }
                        Err(error) => {
                            let reason = error.to_string();
                            self.feed_events.bad_frame(&reason);
                            self.emit(ConnectionEvent::BadFrame { conn: self.id, payload: payload.to_vec(), reason }).await?;
                        }
                    }
                }
            }
        };
        // Best effort: say goodbye, but never wait long for it.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        result
    }

    fn symbols_now(&self) -> Vec<String> {
        self.symbols.lock().map(|s| s.current()).unwrap_or_default()
    }

    async fn emit(&self, event: ConnectionEvent) -> Result<(), Stop> {
        self.events
            .send(event)
            .await
            .map_err(|_| Stop(EndReason::Cancelled, "feed task gone".into()))
    }

    /// Builds subscribe requests, dropping (as rejected) symbols the adapter
    /// refuses to put in one.
    async fn build_requests(
        &mut self,
        symbols: &[String],
        next_request_id: &mut u64,
        to_send: &mut VecDeque<SubscribeRequest>,
    ) -> Result<(), Stop> {
        let mut symbols = symbols.to_vec();
        loop {
            if symbols.is_empty() {
                return Ok(());
            }
            match self
                .rules
                .feed
                .subscribe_requests(&symbols, *next_request_id)
            {
                Ok(requests) => {
                    *next_request_id += requests.len() as u64;
                    to_send.extend(requests);
                    return Ok(());
                }
                Err(error) => match error.symbol().map(str::to_string) {
                    Some(bad) => {
                        let bad = symbols
                            .iter()
                            .find(|s| s.eq_ignore_ascii_case(&bad))
                            .cloned()
                            .unwrap_or(bad);
                        symbols.retain(|s| *s != bad);
                        self.reject(vec![bad], error.to_string()).await?;
                    }
                    None => return Err(Stop(EndReason::NoSymbols, error.to_string())),
                },
            }
        }
    }

    /// A subscription refused: drop the symbols it names, or bisect the
    /// request it belongs to until the refused symbol stands alone.
    async fn rejected(
        &mut self,
        rejection: SubscribeRejection,
        outstanding: &mut HashMap<String, Outstanding>,
        anonymous: &mut VecDeque<Outstanding>,
        next_request_id: &mut u64,
        to_send: &mut VecDeque<SubscribeRequest>,
    ) -> Result<(), Stop> {
        let reason = match &rejection.code {
            Some(code) => format!("{} (code {code})", rejection.message),
            None => rejection.message.clone(),
        };
        if !rejection.symbols.is_empty() {
            let ours = self.symbols_now();
            let named: Vec<String> = rejection
                .symbols
                .iter()
                .filter_map(|named| ours.iter().find(|s| s.eq_ignore_ascii_case(named)).cloned())
                .collect();
            if let Some(id) = &rejection.request_id {
                outstanding.remove(id);
            }
            return self.reject(named, reason).await;
        }
        let request = match &rejection.request_id {
            Some(id) => outstanding.remove(id),
            None if anonymous.len() == 1 => anonymous.pop_front(),
            None if outstanding.len() == 1 => {
                let key = outstanding.keys().next().cloned().unwrap_or_default();
                outstanding.remove(&key)
            }
            None => None,
        };
        let Some(request) = request else {
            tracing::warn!(
                reason,
                "a subscription was refused, naming no symbol or request we know"
            );
            return Ok(());
        };
        if request.symbols.len() == 1 {
            return self.reject(request.symbols, reason).await;
        }
        let half = request.symbols.len() / 2;
        tracing::info!(
            symbols = request.symbols.len(),
            reason,
            "a subscription was refused without naming the symbol: splitting it"
        );
        for part in [&request.symbols[..half], &request.symbols[half..]] {
            self.build_requests(part, next_request_id, to_send).await?;
        }
        Ok(())
    }

    async fn reject(&mut self, symbols: Vec<String>, reason: String) -> Result<(), Stop> {
        let newly: Vec<String> = match self.symbols.lock() {
            Ok(mut shard) => symbols.into_iter().filter(|s| shard.reject(s)).collect(),
            Err(_) => Vec::new(),
        };
        if newly.is_empty() {
            return Ok(());
        }
        for symbol in &newly {
            self.feed_events.symbol_rejected(symbol, &reason);
        }
        self.emit(ConnectionEvent::Rejected {
            conn: self.id,
            symbols: newly,
            reason,
        })
        .await
    }
}

async fn send<S>(ws: &mut S, message: Message) -> Result<(), Stop>
where
    S: SinkExt<Message> + Unpin,
    S::Error: fmt::Display,
{
    ws.send(message)
        .await
        .map_err(|e| Stop(EndReason::Closed, format!("sending: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::venues::{binance, bybit};

    /// A frame header announcing 100 MB ends the read at once, with no
    /// payload buffered; a frame under the limit reads.
    #[tokio::test]
    async fn a_100_mb_frame_is_refused_from_its_header() {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            Some(ws_limits()),
        )
        .await;
        // A small text frame, then a binary frame of 100 MB (64-bit length),
        // of which no payload byte is ever sent.
        server
            .write_all(&[0x81, 2, b'o', b'k'])
            .await
            .expect("write");
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&100_000_000u64.to_be_bytes());
        server.write_all(&header).await.expect("write");
        let first = ws.next().await.expect("a message").expect("read");
        assert_eq!(first, Message::Text("ok".into()));
        let refused = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("refused at once, not waiting for the payload")
            .expect("an error");
        let text = refused.expect_err("over the limit").to_string();
        assert!(
            text.to_lowercase().contains("frame") || text.contains("Space limit"),
            "{text}"
        );
    }

    #[test]
    fn rules_follow_the_adapter_and_config() {
        let ingest = IngestConfig::default();
        let binance = Feed::Binance(binance::Feed::AggTrade);
        let mut config = FeedConfig::for_exchange(crate::model::Exchange::Binance);
        let rules = ConnectionRules::resolve(binance, &config, &ingest);
        assert_eq!(rules.ws_url, binance::WS_URL);
        assert_eq!(rules.symbols_per_connection, 1024);
        assert_eq!(rules.max_client_messages_per_second, Some(5));
        assert_eq!(rules.ping_message, PingMessage::WebSocketPing);
        assert_eq!(
            rules.rotate_after,
            Some(Duration::from_secs(24 * 3600) - MAX_ROTATION_MARGIN)
        );

        config.max_connection_age_ms = Some(4_000);
        config.symbols_per_connection = Some(100);
        config.ping_interval_ms = Some(500);
        let rules = ConnectionRules::resolve(binance, &config, &ingest);
        assert_eq!(rules.rotate_after, Some(Duration::from_secs(3)));
        assert_eq!(rules.symbols_per_connection, 100);
        assert_eq!(rules.pong_timeout, Duration::from_millis(500));

        let bybit = Feed::Bybit(bybit::Feed::Spot);
        config.ping_interval_ms = None;
        let rules = ConnectionRules::resolve(bybit, &config, &ingest);
        assert_eq!(rules.ping_message, PingMessage::Text(bybit::PING_TEXT));
        assert_eq!(rules.ping_interval, bybit::PING_INTERVAL);
        assert_eq!(rules.pong_timeout, MAX_PONG_TIMEOUT);
    }

    #[test]
    fn symbols_shard_by_the_connection_limit() {
        let symbols: Vec<String> = (0..2500).map(|i| format!("S{i}USDT")).collect();
        let shards = shard_symbols(&symbols, 1024);
        let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1024, 1024, 452]);
        let mut shard = ShardSymbols::new(shards[2].clone());
        assert!(shard.reject("S2048USDT"));
        assert!(!shard.reject("S2048USDT"), "once");
        assert!(!shard.reject("NOTOURS"));
        assert_eq!(shard.current().len(), 451);
    }
}

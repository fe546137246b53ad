//! An exchange simulator: the five exchanges' trade websockets and
//! recent-trades REST endpoints on one loopback port, fed by recordings or a
//! deterministic generator, with faults on command. Tests, benchmarks and
//! the offline demo point workers at it instead of the real exchanges.
//!
//! ```text
//!            ┌──────── replay.rs (recordings) ───┐
//! source ────┤                                   ├─▶ market.rs ExchangeBook (history + faults)
//!            └──────── generator.rs (seeded) ────┘        │ broadcast events
//!                                                         ▼
//! client ─▶ server.rs ─┬─ ws upgrade ─▶ protocol.rs (subscribe, replies) + session.rs (frames, pings)
//!                      ├─ REST ───────▶ rest.rs (history through the adapters' REST encoders)
//!                      └─ /control ───▶ control.rs (faults.rs, history, stats)
//! ```
//!
//! Every wire format comes from the exchange adapters' own wire structs
//! ([`crate::ingest::venues`]), filled by [`encode`] (`encode_trades`,
//! `encode_rest_trades`), so what a worker parses here is what it parses in
//! production.
//!
//! # URL layout
//! One port, one prefix per exchange; below the prefix, the live endpoint's
//! own path ([`SimHandle::feed_ws_url`]):
//!
//! | exchange | websocket | REST base |
//! | --- | --- | --- |
//! | Binance | `ws://H/binance/stream` (JSON `SUBSCRIBE`, or `?streams=a@trade/b@aggTrade`), `ws://H/binance/ws/<stream>` | `http://H/binance` |
//! | Upbit | `ws://H/upbit/websocket/v1` | `http://H/upbit` |
//! | Coinbase | `ws://H/coinbase` (Exchange and Advanced Trade, told apart by the subscribe message) | `http://H/coinbase` |
//! | Bybit | `ws://H/bybit/v5/public/{spot,linear,inverse}` | `http://H/bybit` |
//! | OKX | `ws://H/okx/ws/v5/public` (`trades`), `ws://H/okx/ws/v5/business` (`trades-all`) | `http://H/okx` |
//!
//! plus `GET /healthz`, `GET /metrics` (Prometheus text) and the control
//! endpoint under `/control` (see `control.rs`). A worker's `FeedConfig` takes `ws_url` =
//! [`SimHandle::feed_ws_url`] and `rest_url` = [`SimHandle::rest_url`]; for
//! Binance's URL-subscribed combined streams, `binance::combined_stream_url`
//! takes the base [`SimHandle::ws_base`] (`ws://H/binance`).
//!
//! Below each REST base, besides the recent-trades endpoints, the exchange's
//! instrument list (`/api/v3/exchangeInfo`, `/v1/market/all`, `/products`,
//! `/v5/market/instruments-info`, `/api/v5/public/instruments`) lists every
//! simulated symbol (see `rest.rs`), so a worker pointed here loads its
//! instrument names from the simulator as it would from the exchange.
//!
//! # Library use
//! ```no_run
//! # async fn demo() -> Result<(), tickfetch::exsim::SimError> {
//! use tickfetch::exsim::{Fault, FaultKind, GenerateConfig, SimConfig, Simulator, Source};
//! use tickfetch::model::Exchange;
//! let sim = Simulator::start(SimConfig {
//!     source: Source::Generate(GenerateConfig { rate_per_second: 0.0, ..Default::default() }),
//!     ..Default::default()
//! })
//! .await?;
//! let url = sim.feed_ws_url("binance:aggTrade".parse().expect("feed"));
//! sim.inject(Fault::new(Exchange::Binance, FaultKind::Drop { count: 2 }).for_symbol("BTCUSDT"))?;
//! let trades = sim.generate(Exchange::Binance, "BTCUSDT", 5)?;
//! sim.shutdown().await?;
//! # let _ = (url, trades); Ok(()) }
//! ```

pub mod control;
pub mod encode;
pub mod faults;
pub mod generator;
pub mod http;
pub mod market;
pub mod protocol;
pub mod replay;
pub mod rest;
pub mod server;
pub mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use faults::{Fault, FaultKind, FaultRequest};
pub use generator::{generated_symbols, GeneratedOrder, TradeGenerator};
pub use market::{ExchangeStatsSnapshot, Series};

use crate::ingest::venues::instruments::Instrument;
use crate::ingest::venues::{binance, receive_time_now, Feed};
use crate::model::{Exchange, Trade};
use crate::shutdown::CancellationToken;
use generator::publish_orders;
use market::{Event, ExchangeBook};

/// Trades kept per symbol and series (the REST endpoints and
/// `/control/history` serve these; the oldest fall off).
pub const HISTORY_CAPACITY: usize = 10_000;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot work (bad symbols, missing files…).
    #[error("simulator configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A client sent something that is not the HTTP we speak.
    #[error("HTTP: {0}")]
    Http(String),
    #[error("bad fault: {0}")]
    BadFault(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0} is not simulated here")]
    NotSimulated(Exchange),
    #[error("{exchange} has no symbol {symbol:?}")]
    UnknownSymbol { exchange: Exchange, symbol: String },
    /// A simulator task (the server, a source) failed or panicked.
    #[error("simulator task failed: {0}")]
    Task(String),
}

impl SimError {
    /// True when the simulator cannot go on (or cannot start); false for a
    /// bad request, which only that request pays for.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            SimError::Config(_) | SimError::Bind { .. } | SimError::Task(_)
        )
    }
}

/// A poisoned lock only means another thread panicked mid-update; the data is
/// still the best we have, and the simulator must keep serving.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where trades come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Generate(GenerateConfig),
    Replay(ReplayConfig),
}

/// Generated trades: `rate_per_second` taker orders per exchange, over
/// `symbols_per_exchange` symbols ([`generated_symbols`]), each of
/// 1..=`max_fills` fills. A rate of 0 generates only on demand
/// ([`SimHandle::generate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub rate_per_second: f64,
    pub symbols_per_exchange: usize,
    pub seed: u64,
    pub max_fills: u32,
    /// Explicit symbols per exchange, instead of the generated names.
    pub symbols: BTreeMap<Exchange, Vec<String>>,
    /// Per exchange and symbol, the first trade id, instead of a seeded
    /// random number (`tickfetch up --simulate` passes the id after the last
    /// one on the trades topic, so that a simulator started again goes on
    /// where the previous one stopped).
    pub first_ids: BTreeMap<Exchange, BTreeMap<String, u64>>,
    /// What some symbols stand for (their trades' instrument, and their row
    /// in the metadata endpoints), for symbols the exchange's built-in rule
    /// cannot split or splits otherwise; the rule names the rest.
    pub instruments: BTreeMap<Exchange, Vec<Instrument>>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 10.0,
            symbols_per_exchange: 3,
            seed: 1,
            max_fills: 1,
            symbols: BTreeMap::new(),
            first_ids: BTreeMap::new(),
            instruments: BTreeMap::new(),
        }
    }
}

/// Recorded trades: files or directories of recordings (see `replay.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    pub paths: Vec<PathBuf>,
    /// 1.0 replays at the recorded pace, 10.0 ten times faster, 0 as fast
    /// as possible.
    pub speed: f64,
    pub start: ReplayStart,
}

/// When a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// When the simulator starts.
    Immediately,
    /// When the exchange's first connection subscribes to something.
    FirstSubscriber,
}

/// Connection rules the simulated servers enforce. Binance's are the ones
/// tests most need to shorten; the others come from the adapters'
/// `keep_alive()` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRules {
    /// Binance's websocket ping period (live: 20 s).
    pub ping_interval: Duration,
    /// Binance closes a connection whose pong is this late (live: 60 s).
    pub pong_deadline: Duration,
    /// Binance closes every connection at this age (live: 24 h).
    pub max_connection_age: Duration,
    /// Binance's incoming message limit per second (live: 5); `None` off.
    pub max_incoming_per_second: Option<u32>,
    /// Close connections silent in both directions for the exchange's idle
    /// timeout (OKX 30 s, Upbit 120 s).
    pub idle_timeouts: bool,
    /// Replace every exchange's idle timeout with this one.
    pub idle_timeout_override: Option<Duration>,
}

impl Default for ConnectionRules {
    fn default() -> Self {
        Self {
            ping_interval: binance::SERVER_PING_INTERVAL,
            pong_deadline: binance::PONG_DEADLINE,
            max_connection_age: binance::MAX_CONNECTION_AGE,
            max_incoming_per_second: Some(binance::MAX_INCOMING_MESSAGES_PER_SECOND),
            idle_timeouts: true,
            idle_timeout_override: None,
        }
    }
}

impl ConnectionRules {
    /// The exchange's default feed, whose keep-alive rules stand for it.
    fn default_feed(exchange: Exchange) -> Option<Feed> {
        Feed::from_str(exchange.as_str()).ok()
    }

    pub(crate) fn server_ping_interval(&self, exchange: Exchange) -> Option<Duration> {
        (exchange == Exchange::Binance).then_some(self.ping_interval)
    }

    pub(crate) fn max_connection_age(&self, exchange: Exchange) -> Option<Duration> {
        (exchange == Exchange::Binance).then_some(self.max_connection_age)
    }

    pub(crate) fn max_incoming_per_second(&self, exchange: Exchange) -> Option<u32> {
        if exchange == Exchange::Binance {
            self.max_incoming_per_second
        } else {
            None
        }
    }

    pub(crate) fn idle_timeout(&self, exchange: Exchange) -> Option<Duration> {
        if !self.idle_timeouts {
            return None;
        }
        let live = Self::default_feed(exchange).and_then(|f| f.keep_alive().idle_timeout)?;
        Some(self.idle_timeout_override.unwrap_or(live))
    }
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Port 0 picks a free port; [`SimHandle::addr`] tells which.
    pub listen: SocketAddr,
    pub exchanges: Vec<Exchange>,
    pub source: Source,
    pub rules: ConnectionRules,
    pub history_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            exchanges: Exchange::ALL.to_vec(),
            source: Source::Generate(GenerateConfig::default()),
            rules: ConnectionRules::default(),
            history_capacity: HISTORY_CAPACITY,
        }
    }
}

/// Counters of the whole simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub addr: String,
    pub exchanges: Vec<ExchangeStatsSnapshot>,
}

impl SimStats {
    /// The counters of one exchange.
    pub fn exchange(&self, exchange: Exchange) -> Option<&ExchangeStatsSnapshot> {
        self.exchanges.iter().find(|s| s.exchange == exchange)
    }
}

/// State shared by the server, the sources and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    addr: SocketAddr,
    books: BTreeMap<Exchange, Arc<ExchangeBook>>,
    generators: BTreeMap<Exchange, Arc<Mutex<TradeGenerator>>>,
    rules: ConnectionRules,
    connection_ids: AtomicU64,
}

impl Shared {
    pub(crate) fn book(&self, exchange: Exchange) -> Result<Arc<ExchangeBook>, SimError> {
        self.books
            .get(&exchange)
            .cloned()
            .ok_or(SimError::NotSimulated(exchange))
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.connection_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn inject(&self, fault: Fault) -> Result<(), SimError> {
        let book = self.book(fault.exchange)?;
        if fault.kind == FaultKind::Reject && fault.symbol.is_none() {
            return Err(SimError::BadFault("`reject` needs a symbol".into()));
        }
        tracing::info!(exchange = %fault.exchange, symbol = ?fault.symbol, fault = fault.kind.name(), "fault injected");
        match fault.kind {
            FaultKind::Malformed => book.broadcast(Event::Malformed {
                symbol: fault.symbol,
            }),
            FaultKind::Close { abrupt } => book.broadcast(Event::Close {
                symbol: fault.symbol,
                abrupt,
            }),
            kind => book.add_fault(fault.symbol, &kind, Instant::now()),
        }
        Ok(())
    }

    pub(crate) fn clear_faults(&self, exchange: Option<Exchange>, symbol: Option<&str>) {
        for (e, book) in &self.books {
            if exchange.is_none_or(|x| x == *e) {
                book.clear_faults(symbol);
            }
        }
    }

    fn known_book(&self, exchange: Exchange, symbol: &str) -> Result<Arc<ExchangeBook>, SimError> {
        let book = self.book(exchange)?;
        if !book.is_known(symbol) {
            return Err(SimError::UnknownSymbol {
                exchange,
                symbol: symbol.to_string(),
            });
        }
        Ok(book)
    }

    pub(crate) fn history(&self, exchange: Exchange, symbol: &str) -> Result<Vec<Trade>, SimError> {
        Ok(self
            .known_book(exchange, symbol)?
            .history(symbol, Series::Raw))
    }

    pub(crate) fn feed_history(&self, feed: Feed, symbol: &str) -> Result<Vec<Trade>, SimError> {
        Ok(self
            .known_book(feed.exchange(), symbol)?
            .history(symbol, Series::of(feed)))
    }

    pub(crate) fn generate(
        &self,
        exchange: Exchange,
        symbol: &str,
        orders: usize,
    ) -> Result<Vec<Trade>, SimError> {
        let book = self.book(exchange)?;
        let generator = self
            .generators
            .get(&exchange)
            .ok_or_else(|| SimError::BadRequest("generating needs the generate source".into()))?;
        let now = receive_time_now();
        let made: Vec<GeneratedOrder> = {
            let mut generator = lock(generator);
            (0..orders)
                .map(|_| generator.next_order_of(symbol, now))
                .collect::<Option<_>>()
                .ok_or_else(|| SimError::UnknownSymbol {
                    exchange,
                    symbol: symbol.to_string(),
                })?
        };
        let raw = made.iter().flat_map(|o| o.raw.iter().cloned()).collect();
        publish_orders(&book, made);
        Ok(raw)
    }

    pub(crate) fn publish(&self, trades: Vec<Trade>) -> Result<(), SimError> {
        let mut by_exchange: BTreeMap<Exchange, Vec<Trade>> = BTreeMap::new();
        for trade in trades {
            by_exchange.entry(trade.exchange).or_default().push(trade);
        }
        let books = by_exchange
            .keys()
            .map(|e| self.book(*e))
            .collect::<Result<Vec<_>, _>>()?;
        for (book, trades) in books.iter().zip(by_exchange.into_values()) {
            replay::publish_recorded(book, trades);
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            addr: self.addr.to_string(),
            exchanges: self.books.values().map(|b| b.stats()).collect(),
        }
    }
}

/// The path of a live URL (`wss://host:port/path` → `/path`).
fn live_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("", |at| &rest[at..])
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// A simulator of `symbols`' exchanges generating their trades at
    /// `rate_per_second` orders per exchange (0: only on
    /// [`SimHandle::generate`]), other settings default.
    ///
    /// # Errors
    /// As [`Simulator::start`].
    pub async fn generating(
        symbols: BTreeMap<Exchange, Vec<String>>,
        rate_per_second: f64,
    ) -> Result<SimHandle, SimError> {
        Simulator::start(SimConfig {
            exchanges: symbols.keys().copied().collect(),
            source: Source::Generate(GenerateConfig {
                rate_per_second,
                symbols,
                ..GenerateConfig::default()
            }),
            ..SimConfig::default()
        })
        .await
    }

    /// Bind, load the source, and start serving; stops on
    /// [`SimHandle::shutdown`] or when the handle is dropped.
    ///
    /// # Errors
    /// As [`Simulator::start_with_shutdown`].
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        Self::start_with_shutdown(config, CancellationToken::new()).await
    }

    /// As [`Simulator::start`], also stopping when `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`SimError::Bind`] when the address is taken, [`SimError::Config`] for
    /// a configuration that cannot work (no exchanges, a bad rate, symbols
    /// an adapter cannot map, replay paths that do not exist),
    /// [`SimError::Io`] when a recording cannot be read.
    pub async fn start_with_shutdown(
        config: SimConfig,
        shutdown: CancellationToken,
    ) -> Result<SimHandle, SimError> {
        let mut exchanges = config.exchanges.clone();
        exchanges.sort();
        exchanges.dedup();
        if exchanges.is_empty() {
            return Err(SimError::Config("no exchanges to simulate".into()));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Io {
            context: "reading the bound address".into(),
            source,
        })?;
        let books: BTreeMap<Exchange, Arc<ExchangeBook>> = exchanges
            .iter()
            .map(|e| (*e, Arc::new(ExchangeBook::new(*e, config.history_capacity))))
            .collect();

        let cancel = shutdown.child_token();
        let mut tasks: JoinSet<Result<(), SimError>> = JoinSet::new();
        let mut generators = BTreeMap::new();
        match &config.source {
            Source::Generate(generate) => {
                if !generate.rate_per_second.is_finite() || generate.rate_per_second < 0.0 {
                    return Err(SimError::Config(format!(
                        "rate {} must be a number ≥ 0",
                        generate.rate_per_second
                    )));
                }
                for (exchange, book) in &books {
                    let symbols = generate.symbols.get(exchange).cloned().unwrap_or_else(|| {
                        generated_symbols(*exchange, generate.symbols_per_exchange)
                    });
                    let listed = generate
                        .instruments
                        .get(exchange)
                        .map_or(&[][..], Vec::as_slice);
                    let generator = TradeGenerator::with_instruments(
                        *exchange,
                        &symbols,
                        listed,
                        generate.seed,
                        generate.max_fills,
                    )?;
                    let generator = generate
                        .first_ids
                        .get(exchange)
                        .into_iter()
                        .flatten()
                        .fold(generator, |g, (symbol, first)| {
                            g.starting_ids_at(symbol, *first)
                        });
                    for symbol in &symbols {
                        match listed.iter().find(|i| i.symbol == *symbol) {
                            Some(instrument) => book.add_listed(instrument.clone()),
                            None => book.add_symbol(symbol),
                        }
                    }
                    let generator = Arc::new(Mutex::new(generator));
                    generators.insert(*exchange, generator.clone());
                    tasks.spawn(generator::run(
                        book.clone(),
                        generator,
                        generate.rate_per_second,
                        cancel.clone(),
                    ));
                }
            }
            Source::Replay(replay_config) => {
                if !replay_config.speed.is_finite() || replay_config.speed < 0.0 {
                    return Err(SimError::Config(format!(
                        "replay speed {} must be a number ≥ 0",
                        replay_config.speed
                    )));
                }
                let config = replay_config.clone();
                let loaded = tokio::task::spawn_blocking(move || replay::load(&config, &exchanges))
                    .await
                    .map_err(|e| SimError::Task(format!("loading recordings: {e}")))??;
                for (exchange, book) in &books {
                    let trades = loaded.get(exchange).cloned().unwrap_or_default();
                    for trade in &trades {
                        match Instrument::from_name(&trade.symbol, &trade.instrument) {
                            Some(instrument) if !book.is_known(&trade.symbol) => {
                                book.add_listed(instrument);
                            }
                            _ => book.add_symbol(&trade.symbol),
                        }
                    }
                    tasks.spawn(replay::run(
                        book.clone(),
                        trades,
                        replay_config.clone(),
                        cancel.clone(),
                    ));
                }
            }
        }
        let shared = Arc::new(Shared {
            addr,
            books,
            generators,
            rules: config.rules.clone(),
            connection_ids: AtomicU64::new(0),
        });
        tasks.spawn(server::serve(listener, shared.clone(), cancel.clone()));
        let supervisor = tokio::spawn(supervise(tasks, cancel.clone()));
        tracing::info!(%addr, "exchange simulator listening");
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "the simulator listens beyond loopback and its control endpoint has no \
                 authentication: whoever reaches it can inject faults and trades"
            );
        }
        Ok(SimHandle {
            shared,
            cancel,
            supervisor: Some(supervisor),
        })
    }
}

/// Wait for the simulator's tasks; the first failure cancels the rest and is
/// the simulator's result.
async fn supervise(
    mut tasks: JoinSet<Result<(), SimError>>,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let failure = match done {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error),
            Err(join) => Some(SimError::Task(join.to_string())),
        };
        if let Some(error) = failure {
            tracing::error!(%error, "simulator task failed; stopping the simulator");
            cancel.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A running simulator. Dropping it stops the simulator (without waiting).
#[derive(Debug)]
pub struct SimHandle {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    supervisor: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:P`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:P/control`.
    pub fn control_url(&self) -> String {
        format!("{}/control", self.http_url())
    }

    /// `ws://127.0.0.1:P/binance`: the exchange's prefix, to which the live
    /// endpoint's path is appended.
    pub fn ws_base(&self, exchange: Exchange) -> String {
        format!("ws://{}/{exchange}", self.addr())
    }

    /// The websocket URL of `feed`: the prefix plus the live endpoint's path
    /// (`ws://H/binance/stream`, `ws://H/okx/ws/v5/business`…).
    pub fn feed_ws_url(&self, feed: Feed) -> String {
        format!(
            "{}{}",
            self.ws_base(feed.exchange()),
            live_path(feed.ws_url())
        )
    }

    /// The websocket URL of the exchange's default feed (`binance:trade`,
    /// `upbit:default`, `coinbase:matches`, `bybit:spot`, `okx:trades`).
    pub fn ws_url(&self, exchange: Exchange) -> String {
        match ConnectionRules::default_feed(exchange) {
            Some(feed) => self.feed_ws_url(feed),
            None => self.ws_base(exchange),
        }
    }

    /// `http://127.0.0.1:P/binance`: the REST base URL; the adapters'
    /// `rest_trades_path` goes after it.
    pub fn rest_url(&self, exchange: Exchange) -> String {
        format!("{}/{exchange}", self.http_url())
    }

    /// A worker's `[[ingest.feeds]]` entry for `feed` of `symbols` on this
    /// simulator (its websocket and REST URLs; everything else the adapter's).
    pub fn feed_config(&self, feed: Feed, symbols: &[String]) -> crate::config::FeedConfig {
        let mut config = crate::config::FeedConfig::for_exchange(feed.exchange());
        config.symbols = symbols.to_vec();
        config.ws_url = Some(self.feed_ws_url(feed));
        config.rest_url = Some(self.rest_url(feed.exchange()));
        config.feed = Some(feed.name().to_string());
        config
    }

    /// The exchanges simulated.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.books.keys().copied().collect()
    }

    /// The symbols `exchange` knows.
    ///
    /// # Errors
    /// [`SimError::NotSimulated`].
    pub fn symbols(&self, exchange: Exchange) -> Result<Vec<String>, SimError> {
        Ok(self.shared.book(exchange)?.symbols())
    }

    /// Inject a fault.
    ///
    /// # Errors
    /// [`SimError::NotSimulated`]; [`SimError::BadFault`] for `reject`
    /// without a symbol.
    pub fn inject(&self, fault: Fault) -> Result<(), SimError> {
        self.shared.inject(fault)
    }

    /// Forget the faults in force (of one exchange and symbol, or all).
    pub fn clear_faults(&self, exchange: Option<Exchange>, symbol: Option<&str>) {
        self.shared.clear_faults(exchange, symbol);
    }

    /// The raw trades of `symbol` recorded so far, oldest first: every trade
    /// the exchange made, sent on the websocket or not (`drop`, `stall`), but
    /// not the `gap`ped ones: what a worker must end up with. Generated
    /// trades carry `receive_time == exchange_time`; replayed ones keep the
    /// recorded receive time.
    ///
    /// # Errors
    /// [`SimError::NotSimulated`], [`SimError::UnknownSymbol`].
    pub fn history(&self, exchange: Exchange, symbol: &str) -> Result<Vec<Trade>, SimError> {
        self.shared.history(exchange, symbol)
    }

    /// The trades `feed` carries for `symbol` (its [`Series`]), oldest first.
    ///
    /// # Errors
    /// As [`SimHandle::history`].
    pub fn feed_history(&self, feed: Feed, symbol: &str) -> Result<Vec<Trade>, SimError> {
        self.shared.feed_history(feed, symbol)
    }

    /// Make and publish `orders` orders of `symbol` now; returns their raw
    /// trades (the aggregated ones are in [`SimHandle::feed_history`]).
    ///
    /// # Errors
    /// [`SimError::BadRequest`] unless the source is `Generate`;
    /// [`SimError::UnknownSymbol`] for a symbol the generator does not trade.
    pub fn generate(
        &self,
        exchange: Exchange,
        symbol: &str,
        orders: usize,
    ) -> Result<Vec<Trade>, SimError> {
        self.shared.generate(exchange, symbol, orders)
    }

    /// Publish given trades (any exchanges simulated here), as a replay
    /// would: each to its series, faults applied.
    ///
    /// # Errors
    /// [`SimError::NotSimulated`].
    pub fn publish(&self, trades: Vec<Trade>) -> Result<(), SimError> {
        self.shared.publish(trades)
    }

    /// Counters per exchange.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Wait until the simulator stops (cancelled, or a task failed).
    ///
    /// # Errors
    /// The failure that stopped it.
    pub async fn stopped(&mut self) -> Result<(), SimError> {
        match self.supervisor.as_mut() {
            Some(supervisor) => {
                let result = supervisor
                    .await
                    .map_err(|e| SimError::Task(e.to_string()))
                    .and_then(|r| r);
                self.supervisor = None;
                result
            }
            None => Ok(()),
        }
    }

    /// Stop: close every connection and wait for the tasks.
    ///
    /// # Errors
    /// The failure of a task, if one failed.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.cancel.cancel();
        self.stopped().await
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A duration flag that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("bad duration {0:?} (expected e.g. 250ms, 20s, 5m, 24h)")]
    Number(String),
    #[error("bad duration unit in {0:?} (ms, s, m or h)")]
    Unit(String),
    #[error("bad duration {text:?}: {source}")]
    Range {
        text: String,
        source: std::time::TryFromFloatSecsError,
    },
}

/// Parse `250ms`, `20s`, `5m`, `24h` (or a bare number of seconds).
///
/// # Errors
/// A [`DurationError`] naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Number(text.to_string()))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(DurationError::Unit(text.to_string())),
    };
    Duration::try_from_secs_f64(seconds).map_err(|source| DurationError::Range {
        text: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_paths() {
        for (url, path) in [
            ("wss://stream.binance.com:9443/stream", "/stream"),
            ("wss://ws-feed.exchange.coinbase.com", ""),
            ("wss://ws.okx.com:8443/ws/v5/business", "/ws/v5/business"),
        ] {
            assert_eq!(live_path(url), path, "{url}");
        }
    }

    #[test]
    fn durations() {
        for (text, expected) in [
            ("250ms", Some(Duration::from_millis(250))),
            ("20s", Some(Duration::from_secs(20))),
            ("20", Some(Duration::from_secs(20))),
            ("5m", Some(Duration::from_secs(300))),
            ("24h", Some(Duration::from_secs(86_400))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("fast", None),
            ("5d", None),
        ] {
            assert_eq!(parse_duration(text).ok(), expected, "{text}");
        }
    }

    #[test]
    fn idle_timeouts_come_from_the_adapters() {
        let rules = ConnectionRules::default();
        assert_eq!(
            rules.idle_timeout(Exchange::Okx),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rules.idle_timeout(Exchange::Upbit),
            Some(Duration::from_secs(120))
        );
        assert_eq!(rules.idle_timeout(Exchange::Binance), None);
        assert_eq!(rules.server_ping_interval(Exchange::Bybit), None);
        let off = ConnectionRules {
            idle_timeouts: false,
            ..ConnectionRules::default()
        };
        assert_eq!(off.idle_timeout(Exchange::Okx), None);
    }
}

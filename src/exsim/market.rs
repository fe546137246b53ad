//! The simulated market of one exchange: its symbols (and the instrument
//! each stands for, which the metadata endpoints list), the history of every
//! trade it made, the faults in force, and the broadcast that carries trades
//! to the websocket connections.
//!
//! ```text
//! generator / replay / SimHandle::publish
//!     │  publish(symbol, series, trades)
//!     ▼
//! ExchangeBook ── FaultState::fate per trade ──▶ history (REST, /control/history)
//!     │                                    └───▶ broadcast Event::Trades (sent, duplicated)
//!     ▼
//! sessions (one per websocket) encode each batch once per feed (cached in the batch)
//! ```
//!
//! Trades live in [`Series`]: `Raw` (every fill) and, on exchanges that also
//! publish aggregated trades, `Aggregated` (Binance `aggTrade`, OKX `trades`,
//! whose rows carry `first_trade_id..=last_trade_id`). Each feed reads one
//! series ([`Series::of`]).
//!
//! Publishing holds the symbol table's lock while it records and broadcasts,
//! so the history order is the send order whoever publishes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{broadcast, Notify};

use super::faults::{Fate, FaultKind, FaultState};
use super::lock;
use crate::ingest::venues::instruments::Instrument;
use crate::ingest::venues::{binance, okx, venue, Feed, WireFrame};
use crate::model::{Exchange, Trade};

/// Events kept for slow connections before they lag and are closed (as a
/// real exchange drops a consumer that does not keep up): a few seconds at
/// the pipeline benchmark's 25,000 trades/s per exchange, so that a
/// connection closed there is one that fell behind, not one that lost the
/// CPU for half a second on a 2-core machine.
pub const EVENT_CHANNEL_CAPACITY: usize = 131_072;

/// Which trades a feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Series {
    /// Every fill (Binance `trade`, OKX `trades-all` and REST, all others).
    Raw,
    /// Fills of one taker order at one price, aggregated (Binance `aggTrade`,
    /// OKX `trades`).
    Aggregated,
}

impl Series {
    /// The series `feed` carries.
    pub fn of(feed: Feed) -> Series {
        match feed {
            Feed::Binance(binance::Feed::AggTrade) | Feed::Okx(okx::Feed::Trades) => {
                Series::Aggregated
            }
            _ => Series::Raw,
        }
    }

    /// Whether `exchange` publishes an aggregated series besides the raw one.
    pub fn has_aggregated(exchange: Exchange) -> bool {
        matches!(exchange, Exchange::Binance | Exchange::Okx)
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Series::Raw => 0,
            Series::Aggregated => 1,
        }
    }
}

/// Index of `feed` in [`Feed::ALL`], for per-feed caches.
pub(crate) fn feed_index(feed: Feed) -> usize {
    Feed::ALL.iter().position(|f| *f == feed).unwrap_or(0)
}

/// A batch of trades of one symbol and series, as sent, with its wire frames
/// encoded lazily once per feed.
#[derive(Debug)]
pub(crate) struct TradeBatch {
    pub symbol: String,
    pub series: Series,
    pub trades: Vec<Trade>,
    encoded: [OnceLock<Encoded>; Feed::ALL.len()],
}

/// Frames of a batch in one feed's dialect, and how many trades could not be
/// encoded (they are skipped).
#[derive(Debug)]
pub(crate) struct Encoded {
    pub frames: Vec<WireFrame>,
    pub failed: usize,
}

impl TradeBatch {
    pub(crate) fn new(symbol: String, series: Series, trades: Vec<Trade>) -> Self {
        Self {
            symbol,
            series,
            trades,
            encoded: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The frames `feed` sends for this batch.
    pub(crate) fn encoded(&self, feed: Feed) -> &Encoded {
        self.encoded[feed_index(feed)].get_or_init(|| encode(feed, &self.trades))
    }
}

/// Encode `trades`; when the batch fails as a whole, encode one by one and
/// skip the trades that cannot be written (a replayed Coinbase trade with an
/// unknown side, say).
fn encode(feed: Feed, trades: &[Trade]) -> Encoded {
    match super::encode::encode_trades(feed, trades) {
        Ok(frames) => Encoded { frames, failed: 0 },
        Err(_) => {
            let mut frames = Vec::new();
            let mut failed = 0;
            for trade in trades {
                match super::encode::encode_trades(feed, std::slice::from_ref(trade)) {
                    Ok(mut more) => frames.append(&mut more),
                    Err(error) => {
                        failed += 1;
                        tracing::warn!(%feed, %error, "cannot encode a trade; skipped");
                    }
                }
            }
            Encoded { frames, failed }
        }
    }
}

/// What the publisher tells the connections of one exchange.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Trades(Arc<TradeBatch>),
    /// Send one corrupt frame (to connections carrying `symbol`, or all).
    Malformed {
        symbol: Option<String>,
    },
    /// Close the connections carrying `symbol` (or all).
    Close {
        symbol: Option<String>,
        abrupt: bool,
    },
}

/// Counters of one exchange, as served by `GET /control/stats`.
#[derive(Debug, Default)]
pub(crate) struct ExchangeStats {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub trades_recorded: AtomicU64,
    pub trades_withheld: AtomicU64,
    pub trades_vanished: AtomicU64,
    pub trades_duplicated: AtomicU64,
    pub trades_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    pub encode_errors: AtomicU64,
    pub malformed_sent: AtomicU64,
    pub subscribe_rejections: AtomicU64,
    pub forced_closes: AtomicU64,
    pub rate_limit_closes: AtomicU64,
    pub pong_timeout_closes: AtomicU64,
    pub age_closes: AtomicU64,
    pub idle_closes: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub rest_requests: AtomicU64,
}

/// A copy of [`ExchangeStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExchangeStatsSnapshot {
    pub exchange: Exchange,
    pub symbols: usize,
    pub connections_open: u64,
    pub connections_total: u64,
    /// Trades put in the history.
    pub trades_recorded: u64,
    /// Recorded but not sent (`drop`, `stall`).
    pub trades_withheld: u64,
    /// Neither recorded nor sent (`gap`).
    pub trades_vanished: u64,
    /// Sent a second time (`duplicate`).
    pub trades_duplicated: u64,
    /// Trades written to websockets, summed over connections.
    pub trades_sent: u64,
    pub frames_sent: u64,
    pub encode_errors: u64,
    pub malformed_sent: u64,
    pub subscribe_rejections: u64,
    pub forced_closes: u64,
    pub rate_limit_closes: u64,
    pub pong_timeout_closes: u64,
    pub age_closes: u64,
    pub idle_closes: u64,
    pub slow_consumer_closes: u64,
    pub rest_requests: u64,
    /// Replay only: whether every recorded trade has been published.
    pub replay_done: bool,
}

impl ExchangeStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self, exchange: Exchange) -> ExchangeStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExchangeStatsSnapshot {
            exchange,
            symbols: 0,
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            trades_recorded: get(&self.trades_recorded),
            trades_withheld: get(&self.trades_withheld),
            trades_vanished: get(&self.trades_vanished),
            trades_duplicated: get(&self.trades_duplicated),
            trades_sent: get(&self.trades_sent),
            frames_sent: get(&self.frames_sent),
            encode_errors: get(&self.encode_errors),
            malformed_sent: get(&self.malformed_sent),
            subscribe_rejections: get(&self.subscribe_rejections),
            forced_closes: get(&self.forced_closes),
            rate_limit_closes: get(&self.rate_limit_closes),
            pong_timeout_closes: get(&self.pong_timeout_closes),
            age_closes: get(&self.age_closes),
            idle_closes: get(&self.idle_closes),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            rest_requests: get(&self.rest_requests),
            replay_done: false,
        }
    }
}

/// The history of one symbol, one queue per series, each bounded by the
/// configured capacity (oldest trades fall off).
#[derive(Debug, Default)]
struct SymbolBook {
    series: [VecDeque<Trade>; 2],
    /// What the symbol stands for, when set (configured, or from its first
    /// recorded trade); else the exchange's built-in rule decides.
    instrument: Option<Instrument>,
}

/// One simulated exchange.
#[derive(Debug)]
pub(crate) struct ExchangeBook {
    pub exchange: Exchange,
    symbols: Mutex<BTreeMap<String, SymbolBook>>,
    faults: Mutex<FaultState>,
    events: broadcast::Sender<Event>,
    pub stats: ExchangeStats,
    history_capacity: usize,
    subscribed: AtomicBool,
    first_subscriber: Notify,
    /// Mirrors [`FaultState::has_pong_faults`], read without the lock on
    /// every session step.
    pong_faults: AtomicBool,
    pub replay_done: AtomicBool,
}

impl ExchangeBook {
    pub(crate) fn new(exchange: Exchange, history_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Self {
            exchange,
            symbols: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(FaultState::default()),
            events,
            stats: ExchangeStats::default(),
            history_capacity: history_capacity.max(1),
            subscribed: AtomicBool::new(false),
            first_subscriber: Notify::new(),
            pong_faults: AtomicBool::new(false),
            replay_done: AtomicBool::new(false),
        }
    }

    /// Make `symbol` known (subscribable, served by REST) with an empty history.
    pub(crate) fn add_symbol(&self, symbol: &str) {
        lock(&self.symbols).entry(symbol.to_string()).or_default();
    }

    /// Make `instrument.symbol` known, standing for `instrument`.
    pub(crate) fn add_listed(&self, instrument: Instrument) {
        let symbol = instrument.symbol.clone();
        lock(&self.symbols).entry(symbol).or_default().instrument = Some(instrument);
    }

    /// The instruments of every known symbol, by symbol: the one set for it,
    /// else the exchange's built-in rule (symbols neither names are left out).
    pub(crate) fn instruments(&self) -> Vec<Instrument> {
        lock(&self.symbols)
            .iter()
            .filter_map(|(symbol, book)| {
                book.instrument
                    .clone()
                    .or_else(|| venue(self.exchange).builtin_instrument(symbol).ok())
            })
            .collect()
    }

    pub(crate) fn is_known(&self, symbol: &str) -> bool {
        lock(&self.symbols).contains_key(symbol)
    }

    /// Whether subscriptions to `symbol` are refused by a `reject` fault.
    pub(crate) fn is_rejected(&self, symbol: &str) -> bool {
        self.faults().is_rejected(symbol)
    }

    /// Whether `symbol` may be subscribed: known and not rejected. (Takes the
    /// two locks one after the other: `publish` holds the symbol table while
    /// it takes the faults, so never hold the faults while asking this.)
    pub(crate) fn accepts(&self, symbol: &str) -> bool {
        self.is_known(symbol) && !self.is_rejected(symbol)
    }

    /// Whether `symbol`'s data is stalled now.
    pub(crate) fn is_stalled(&self, symbol: &str, now: Instant) -> bool {
        self.faults().is_stalled(symbol, now)
    }

    pub(crate) fn symbols(&self) -> Vec<String> {
        lock(&self.symbols).keys().cloned().collect()
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.faults)
    }

    /// Remember a stateful fault.
    pub(crate) fn add_fault(&self, symbol: Option<String>, kind: &FaultKind, now: Instant) {
        let mut faults = self.faults();
        faults.add(symbol, kind, now);
        self.pong_faults
            .store(faults.has_pong_faults(), Ordering::Release);
    }

    /// Forget the faults of `symbol`, or all of them.
    pub(crate) fn clear_faults(&self, symbol: Option<&str>) {
        let mut faults = self.faults();
        faults.clear(symbol);
        self.pong_faults
            .store(faults.has_pong_faults(), Ordering::Release);
    }

    /// Whether a connection carrying `symbols` must not answer pings now.
    pub(crate) fn no_pong<'a>(
        &self,
        symbols: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> bool {
        self.pong_faults.load(Ordering::Acquire) && self.faults().no_pong(symbols, now)
    }

    /// Whether a connection carrying `symbols` must ignore pongs now.
    pub(crate) fn ignore_pongs<'a>(
        &self,
        symbols: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> bool {
        self.pong_faults.load(Ordering::Acquire) && self.faults().ignore_pongs(symbols, now)
    }

    /// Whether new connections are refused now (`down`).
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.faults().is_down(now)
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Tell the connections something (no receivers is fine).
    pub(crate) fn broadcast(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A connection subscribed to something: wakes a replay waiting for it.
    pub(crate) fn mark_subscribed(&self) {
        if !self.subscribed.swap(true, Ordering::AcqRel) {
            self.first_subscriber.notify_waiters();
        }
    }

    /// Wait until some connection has subscribed.
    pub(crate) async fn first_subscriber(&self) {
        loop {
            let notified = self.first_subscriber.notified();
            if self.subscribed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Record `trades` (of `symbol`, in `series`) in the history and send
    /// them, as the faults in force decide. Unknown symbols become known.
    pub(crate) fn publish(&self, symbol: &str, series: Series, trades: Vec<Trade>) {
        if trades.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut symbols = lock(&self.symbols);
        let book = symbols.entry(symbol.to_string()).or_default();
        if book.instrument.is_none() {
            book.instrument = trades
                .first()
                .and_then(|t| Instrument::from_name(symbol, &t.instrument));
        }
        let history = &mut book.series[series.index()];
        let mut faults = lock(&self.faults);
        let mut sent = Vec::with_capacity(trades.len());
        let mut again = Vec::new();
        let (mut recorded, mut withheld, mut vanished) = (0u64, 0u64, 0u64);
        for trade in trades {
            match faults.fate(symbol, series, now) {
                Fate::Vanish => {
                    vanished += 1;
                    continue;
                }
                Fate::Withhold => withheld += 1,
                Fate::Send => sent.push(trade.clone()),
                Fate::SendTwice => {
                    sent.push(trade.clone());
                    again.push(trade.clone());
                }
            }
            recorded += 1;
            if history.len() == self.history_capacity {
                history.pop_front();
            }
            history.push_back(trade);
        }
        drop(faults);
        ExchangeStats::add(&self.stats.trades_recorded, recorded);
        ExchangeStats::add(&self.stats.trades_withheld, withheld);
        ExchangeStats::add(&self.stats.trades_vanished, vanished);
        ExchangeStats::add(&self.stats.trades_duplicated, again.len() as u64);
        for batch in [sent, again] {
            if !batch.is_empty() {
                self.broadcast(Event::Trades(Arc::new(TradeBatch::new(
                    symbol.to_string(),
                    series,
                    batch,
                ))));
            }
        }
        drop(symbols);
    }

    /// The recorded trades of `symbol` in `series`, oldest first.
    pub(crate) fn history(&self, symbol: &str, series: Series) -> Vec<Trade> {
        lock(&self.symbols)
            .get(symbol)
            .map(|book| book.series[series.index()].iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Apply `select` to the history of `symbol` in `series` without copying
    /// all of it. `None` when the symbol is unknown.
    pub(crate) fn with_history<R>(
        &self,
        symbol: &str,
        series: Series,
        select: impl FnOnce(&VecDeque<Trade>) -> R,
    ) -> Option<R> {
        lock(&self.symbols)
            .get(symbol)
            .map(|book| select(&book.series[series.index()]))
    }

    /// The last recorded trade of `symbol` in `series`.
    pub(crate) fn last_trade(&self, symbol: &str, series: Series) -> Option<Trade> {
        lock(&self.symbols)
            .get(symbol)
            .and_then(|book| book.series[series.index()].back().cloned())
    }

    pub(crate) fn stats(&self) -> ExchangeStatsSnapshot {
        let mut snapshot = self.stats.snapshot(self.exchange);
        snapshot.symbols = lock(&self.symbols).len();
        snapshot.replay_done = self.replay_done.load(Ordering::Relaxed);
        snapshot
    }
}

/// The series a recorded (or scripted) trade belongs to, and the copies the
/// other series can derive from it: an aggregated trade of one fill is also a
/// raw trade (Binance: id `f`; OKX: the same id), and an OKX raw fill is an
/// aggregated trade of one fill.
pub(crate) fn recorded_series(trade: Trade) -> Vec<(Series, Trade)> {
    let exchange = trade.exchange;
    match (trade.first_trade_id, trade.last_trade_id) {
        (Some(first), Some(last)) if Series::has_aggregated(exchange) => {
            let mut out = Vec::with_capacity(2);
            if first == last {
                let mut raw = trade.clone();
                if exchange == Exchange::Binance {
                    raw.trade_id = first.to_string();
                }
                raw.first_trade_id = None;
                raw.last_trade_id = None;
                out.push((Series::Raw, raw));
            }
            out.push((Series::Aggregated, trade));
            out
        }
        (Some(_), Some(_)) => vec![(Series::Raw, trade)],
        _ if exchange == Exchange::Okx => match trade.sequence() {
            Some(id) => {
                let mut aggregated = trade.clone();
                aggregated.first_trade_id = Some(id);
                aggregated.last_trade_id = Some(id);
                vec![(Series::Raw, trade), (Series::Aggregated, aggregated)]
            }
            None => vec![(Series::Raw, trade)],
        },
        _ => vec![(Series::Raw, trade)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;
    use rust_decimal::Decimal;

    fn trade(exchange: Exchange, id: u64, raw: Option<(u64, u64)>) -> Trade {
        Trade {
            exchange,
            symbol: "S".into(),
            instrument: "S-T".into(),
            trade_id: id.to_string(),
            price: Decimal::ONE,
            quantity: Decimal::ONE,
            side: Side::Buy,
            exchange_time: 1,
            receive_time: 1,
            first_trade_id: raw.map(|r| r.0),
            last_trade_id: raw.map(|r| r.1),
        }
    }

    #[test]
    fn recorded_trades_fill_both_series_where_they_can() {
        let cases = [
            (
                "binance single-fill aggTrade",
                trade(Exchange::Binance, 100, Some((7, 7))),
                vec![(Series::Raw, "7"), (Series::Aggregated, "100")],
            ),
            (
                "binance multi-fill aggTrade",
                trade(Exchange::Binance, 100, Some((7, 9))),
                vec![(Series::Aggregated, "100")],
            ),
            (
                "okx fill",
                trade(Exchange::Okx, 5, None),
                vec![(Series::Raw, "5"), (Series::Aggregated, "5")],
            ),
            (
                "coinbase",
                trade(Exchange::Coinbase, 5, None),
                vec![(Series::Raw, "5")],
            ),
        ];
        for (name, input, expected) in cases {
            let got: Vec<(Series, String)> = recorded_series(input)
                .into_iter()
                .map(|(s, t)| (s, t.trade_id))
                .collect();
            let expected: Vec<(Series, String)> =
                expected.into_iter().map(|(s, id)| (s, id.into())).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn publish_records_and_applies_faults() {
        let book = ExchangeBook::new(Exchange::Bybit, 3);
        let mut events = book.subscribe_events();
        book.add_fault(None, &FaultKind::Drop { count: 1 }, Instant::now());
        book.add_fault(None, &FaultKind::Gap { count: 1 }, Instant::now());
        let trades: Vec<Trade> = (1..=5).map(|i| trade(Exchange::Bybit, i, None)).collect();
        book.publish("S", Series::Raw, trades);
        // 1 vanished (gap first), 2 withheld, 3..5 sent; capacity 3 keeps 3..5.
        let ids: Vec<String> = book
            .history("S", Series::Raw)
            .into_iter()
            .map(|t| t.trade_id)
            .collect();
        assert_eq!(ids, ["3", "4", "5"]);
        let Ok(Event::Trades(batch)) = events.try_recv() else {
            panic!("no batch")
        };
        let sent: Vec<&str> = batch.trades.iter().map(|t| t.trade_id.as_str()).collect();
        assert_eq!(sent, ["3", "4", "5"]);
        let stats = book.stats();
        assert_eq!(
            (
                stats.trades_recorded,
                stats.trades_withheld,
                stats.trades_vanished
            ),
            (4, 1, 1)
        );
    }
}

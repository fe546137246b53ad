//! Exchange wire adapters: the only code that knows what each exchange's
//! websocket and REST payloads look like.
//!
//! Data flows one way through an adapter:
//!
//! ```text
//! websocket frame (bytes) ──parse_frame──▶ Frame::Trades(Vec<Trade>) / ack / error / pong / other
//! REST body (bytes) ──parse_rest_trades──▶ Vec<Trade>
//! ```
//!
//! (The other way, trades into the exchange's frames, is the simulator's:
//! `exsim::encode`.)
//!
//! Every exchange module ([`binance`], [`upbit`], [`coinbase`], [`bybit`],
//! [`okx`]) has the same shape, so a reader who knows one knows all:
//! `mod.rs` holds endpoints and rules, `wire.rs` the exchange's messages as
//! serde structs (raw payload in each doc comment), `parse.rs` the parsing
//! into [`Frame`]s and `Trade`s.
//!
//! | item | what it is |
//! | --- | --- |
//! | `EXCHANGE`, `WS_URL*`, `REST_BASE_URL*`, `REST_*_PATH` | endpoints, as constants (the worker takes the base URL from config) |
//! | `IDS_ARE_SEQUENTIAL` | whether trade ids are contiguous per symbol (gap detection) |
//! | `Feed` | which of the exchange's trade streams (and wire dialect) is spoken |
//! | `ws_url`, `rest_base_url`, `keep_alive`, `limits` | per-feed connection rules as data |
//! | `instrument` | exchange symbol → normalised `BASE-QUOTE`, by the loaded instrument list or else `builtin_instrument` ([`instruments`]) |
//! | `builtin_instrument`, `QUOTE_ASSETS` | the exchange's one built-in rule, for when no list is loaded |
//! | `REST_INSTRUMENTS_PATH`, `INSTRUMENT_LIST_QUERIES`, `parse_instruments`, `listing_covers` | the exchange's own instrument list |
//! | `subscribe_requests` | the subscribe messages for a list of symbols, split to the exchange's limits |
//! | `parse_frame` | one received frame → [`Frame`] |
//! | `rest_trades_path`, `parse_rest_trades` | the recent-trades REST endpoint |
//! | wire types (`…Trade`, `…Event`) | serde structs mirroring the JSON, raw payload in the doc comment |
//!
//! [`instruments`] owns the catalogue of instrument names: the exchanges'
//! own lists (fetched, cached) with the built-in rules as the fallback, one
//! mapping shared by the live feed, REST backfill, `tickfetch import` and
//! the simulator.
//!
//! [`Feed`] (this module) wraps the per-exchange feeds so that a worker can be
//! configured with `binance:aggTrade`; [`Feed::rules`] and [`venue`] are the
//! only places that go from an exchange to its module ([`FeedRules`] and
//! [`Venue`], implemented for every module by one macro).
//!
//! Decimals are parsed from the exchange's own text (JSON strings, or the exact
//! text of a JSON number through `serde_json::value::RawValue`), never via
//! `f64`. Times are epoch milliseconds; finer exchange times (Coinbase µs and
//! ns ISO-8601) are truncated to the millisecond. Side is always the taker's.
//! Nothing here reads the wall clock except [`receive_time_now`]; the caller
//! passes the receive time in.

pub mod binance;
pub mod bybit;
pub mod coinbase;
pub mod instruments;
pub mod okx;
pub mod upbit;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::model::{Exchange, Millis, Trade, TRADE_TIMES};
use crate::wire::{clip, quoted, MAX_QUOTED_BYTES};
use instruments::{Instrument, InstrumentPage};

/// How many bytes of a bad input an error message quotes.
pub const EXCERPT_BYTES: usize = 160;

/// How many bytes of a problem's description (or of serde's message) an
/// error message shows; descriptions quote the bad value.
pub const MAX_PROBLEM_BYTES: usize = 512;

/// One received websocket frame, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One or more trades, oldest first.
    Trades(Vec<Trade>),
    /// The exchange accepted a subscription. `topics` holds what it named
    /// (stream names, channels, product ids), when it names anything.
    SubscribeAck {
        request_id: Option<String>,
        topics: Vec<String>,
    },
    /// The exchange rejected (part of) a subscription.
    SubscribeError(SubscribeRejection),
    /// Reply to a client ping (`pong`, `{"op":"pong"}`, Upbit `{"status":"UP"}`).
    Pong,
    /// A keepalive from the exchange, possibly with trade progress.
    Heartbeat(Heartbeat),
    /// Anything else that is well formed: klines, depth, tickers, notices.
    /// The string names the kind (`kline_1m`, `l2update`, `orderbook`, …).
    Other(String),
}

impl Frame {
    /// A short name of the frame's kind, for counters.
    pub fn kind(&self) -> &str {
        match self {
            Frame::Trades(_) => "trades",
            Frame::SubscribeAck { .. } => "subscribe_ack",
            Frame::SubscribeError(_) => "subscribe_error",
            Frame::Pong => "pong",
            Frame::Heartbeat(_) => "heartbeat",
            Frame::Other(kind) => kind,
        }
    }
}

/// A subscription the exchange refused. `symbols` lists the exchange symbols
/// the refusal names, when it names any, so that the worker can drop just
/// those; otherwise `request_id` ties it to the request that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRejection {
    pub request_id: Option<String>,
    pub symbols: Vec<String>,
    pub code: Option<String>,
    pub message: String,
}

/// A keepalive message from the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// The symbol it is about (Coinbase Exchange heartbeats are per product).
    pub symbol: Option<String>,
    /// The last trade id the exchange published for `symbol`: a gap detector
    /// can see missed trades on a quiet symbol without waiting for the next one.
    pub last_trade_id: Option<String>,
    /// The exchange's clock when it sent the heartbeat.
    pub exchange_time: Option<Millis>,
}

/// One websocket message as the exchange sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFrame {
    Text(String),
    /// Upbit sends UTF-8 JSON in binary frames.
    Binary(Vec<u8>),
}

impl WireFrame {
    /// The payload bytes, whatever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WireFrame::Text(text) => text.as_bytes(),
            WireFrame::Binary(bytes) => bytes,
        }
    }
}

/// One subscribe message to send, and the symbols it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The id the exchange echoes in its reply, where it has one.
    pub request_id: Option<String>,
    pub symbols: Vec<String>,
    /// The text frame to send.
    pub text: String,
}

/// What the client sends as an application-level ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMessage {
    /// A text frame with this payload.
    Text(&'static str),
    /// A websocket ping control frame.
    WebSocketPing,
}

/// A ping the client must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPing {
    /// Send one at least this often (the runtime may send it only after this
    /// long without any traffic, where the exchange allows).
    pub interval: Duration,
    pub message: PingMessage,
}

/// Websocket pings the server sends and the client must answer (tungstenite
/// answers them while the stream is being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPing {
    pub interval: Duration,
    /// The server drops the connection if no pong arrives within this.
    pub pong_deadline: Duration,
}

/// Keepalive rules of one feed, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub client_ping: Option<ClientPing>,
    pub server_ping: Option<ServerPing>,
    /// The server closes a connection that has been silent this long.
    pub idle_timeout: Option<Duration>,
    /// The server closes every connection at this age: rotate before it.
    pub max_connection_age: Option<Duration>,
}

/// Subscription and request limits of one feed. `None` where the exchange
/// documents no limit we know of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Topics (streams, channel×symbol pairs) one connection may carry.
    pub max_topics_per_connection: Option<usize>,
    /// Topics one subscribe message may carry.
    pub max_topics_per_request: Option<usize>,
    /// Messages the client may send per second on one connection.
    pub max_client_messages_per_second: Option<u32>,
    /// Most rows the REST recent-trades endpoint returns in one call.
    pub rest_max_trades: usize,
}

/// Errors of the exchange adapters.
///
/// A malformed frame is not terminal: dead-letter it and keep the connection.
/// A bad symbol or a request the caller built wrongly is terminal for that
/// symbol or request: retrying the same thing cannot help.
///
/// The message (`Display`) is a dead letter's reason: every part of it that
/// comes from the input is clipped ([`clip`]: [`MAX_QUOTED_BYTES`] of a
/// value, [`MAX_PROBLEM_BYTES`] of a description, [`EXCERPT_BYTES`] of the
/// input), so that it stays under a kilobyte whatever the frame holds. The
/// fields keep the whole values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// Not JSON, or JSON of the wrong shape (serde's message names the field).
    #[error("{exchange}: malformed frame: {}; input: {excerpt}", clip(.detail, MAX_PROBLEM_BYTES))]
    Malformed {
        exchange: Exchange,
        detail: String,
        excerpt: String,
    },
    /// A field is present but its value is wrong.
    #[error("{exchange}: field `{field}`: {}; input: {excerpt}", clip(.problem, MAX_PROBLEM_BYTES))]
    Field {
        exchange: Exchange,
        field: &'static str,
        problem: String,
        excerpt: String,
    },
    /// Well-formed JSON that is none of the frames this exchange sends.
    #[error("{exchange}: unrecognised frame; input: {excerpt}")]
    Unrecognised { exchange: Exchange, excerpt: String },
    /// The exchange's symbol does not split into base and quote.
    #[error(
        "{exchange}: cannot map symbol {} to BASE-QUOTE: {}",
        quoted(.symbol, MAX_QUOTED_BYTES),
        clip(.problem, MAX_PROBLEM_BYTES)
    )]
    UnknownSymbol {
        exchange: Exchange,
        symbol: String,
        problem: String,
    },
    /// A REST endpoint answered with an error body.
    #[error(
        "{exchange}: REST error {}: {}",
        .code.as_deref().map_or_else(|| "None".to_string(), |c| format!("Some({})", quoted(c, MAX_QUOTED_BYTES))),
        clip(.message, MAX_PROBLEM_BYTES)
    )]
    Rejected {
        exchange: Exchange,
        code: Option<String>,
        message: String,
    },
    /// A trade cannot be written in this exchange's wire form.
    #[error(
        "{exchange}: cannot encode trade {}: {}",
        quoted(.trade_id, MAX_QUOTED_BYTES),
        clip(.problem, MAX_PROBLEM_BYTES)
    )]
    Encode {
        exchange: Exchange,
        trade_id: String,
        problem: String,
    },
    /// A subscribe request the caller asked for breaks the exchange's rules.
    #[error("{exchange}: invalid request: {}", clip(.problem, MAX_PROBLEM_BYTES))]
    Request { exchange: Exchange, problem: String },
}

impl ExchangeError {
    /// The exchange the error comes from.
    pub fn exchange(&self) -> Exchange {
        match self {
            ExchangeError::Malformed { exchange, .. }
            | ExchangeError::Field { exchange, .. }
            | ExchangeError::Unrecognised { exchange, .. }
            | ExchangeError::UnknownSymbol { exchange, .. }
            | ExchangeError::Rejected { exchange, .. }
            | ExchangeError::Encode { exchange, .. }
            | ExchangeError::Request { exchange, .. } => *exchange,
        }
    }

    /// True when retrying the same thing cannot help (a symbol we cannot map,
    /// a request that breaks the exchange's limits, a trade we cannot encode).
    /// False for a bad frame or a REST error body: skip it and go on.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ExchangeError::UnknownSymbol { .. }
                | ExchangeError::Encode { .. }
                | ExchangeError::Request { .. }
        )
    }

    /// The one symbol this error is about, when there is one.
    pub fn symbol(&self) -> Option<&str> {
        match self {
            ExchangeError::UnknownSymbol { symbol, .. } => Some(symbol),
            _ => None,
        }
    }
}

/// A trade stream of some exchange: what a worker is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    Binance(binance::Feed),
    Upbit(upbit::Feed),
    Coinbase(coinbase::Feed),
    Bybit(bybit::Feed),
    Okx(okx::Feed),
}

impl Feed {
    /// Every feed of every exchange.
    pub const ALL: [Feed; 11] = [
        Feed::Binance(binance::Feed::Trade),
        Feed::Binance(binance::Feed::AggTrade),
        Feed::Upbit(upbit::Feed::Default),
        Feed::Upbit(upbit::Feed::Simple),
        Feed::Coinbase(coinbase::Feed::ExchangeMatches),
        Feed::Coinbase(coinbase::Feed::AdvancedMarketTrades),
        Feed::Bybit(bybit::Feed::Spot),
        Feed::Bybit(bybit::Feed::Linear),
        Feed::Bybit(bybit::Feed::Inverse),
        Feed::Okx(okx::Feed::Trades),
        Feed::Okx(okx::Feed::TradesAll),
    ];

    /// This feed's rules and codecs (the one dispatch to the exchange's module).
    pub fn rules(&self) -> &dyn FeedRules {
        match self {
            Feed::Binance(f) => f,
            Feed::Upbit(f) => f,
            Feed::Coinbase(f) => f,
            Feed::Bybit(f) => f,
            Feed::Okx(f) => f,
        }
    }

    /// The exchange of this feed.
    pub fn exchange(self) -> Exchange {
        self.rules().exchange()
    }

    /// The feed's name within its exchange (`aggTrade`, `simple`, `matches`…).
    pub fn name(self) -> &'static str {
        self.rules().name()
    }

    /// The live websocket URL.
    pub fn ws_url(self) -> &'static str {
        self.rules().ws_url()
    }

    /// The live REST base URL (scheme and host) of the recent-trades endpoint.
    pub fn rest_base_url(self) -> &'static str {
        self.rules().rest_base_url()
    }

    /// Who pings whom, how often, and when the server hangs up.
    pub fn keep_alive(self) -> KeepAlive {
        self.rules().keep_alive()
    }

    /// Subscription and REST limits.
    pub fn limits(self) -> ConnectionLimits {
        self.rules().limits()
    }

    /// The subscribe messages for `symbols` (exchange symbols), split to the
    /// exchange's per-request limit; request ids count up from `first_request_id`.
    ///
    /// # Errors
    /// [`ExchangeError::Request`] for an empty list, a symbol the exchange's
    /// syntax rejects, or more symbols than one connection may carry;
    /// [`ExchangeError::UnknownSymbol`] for a symbol that does not map.
    pub fn subscribe_requests<S: AsRef<str>>(
        self,
        symbols: &[S],
        first_request_id: u64,
    ) -> Result<Vec<SubscribeRequest>, ExchangeError> {
        let symbols: Vec<&str> = symbols.iter().map(AsRef::as_ref).collect();
        self.rules().subscribe_requests(&symbols, first_request_id)
    }

    /// Path and query of the recent-trades REST call, relative to the base URL.
    pub fn rest_trades_path(self, symbol: &str, limit: usize) -> String {
        self.rules().rest_trades_path(symbol, limit)
    }

    /// The path of one page of `symbol`'s trade history, when the exchange
    /// pages that way (see [`HistoryPage`]); its rows parse with
    /// [`parse_rest_trades`](Self::parse_rest_trades).
    pub fn rest_history_path(
        self,
        symbol: &str,
        page: HistoryPage,
        limit: usize,
    ) -> Option<String> {
        self.rules().rest_history_path(symbol, page, limit)
    }

    /// Trades of a recent-trades REST response, oldest first.
    ///
    /// # Errors
    /// [`ExchangeError::Rejected`] for an error body, else as `parse_frame`.
    pub fn parse_rest_trades(
        self,
        symbol: &str,
        body: &[u8],
        receive_time: Millis,
    ) -> Result<Vec<Trade>, ExchangeError> {
        self.rules().parse_rest_trades(symbol, body, receive_time)
    }
}

/// One page of a symbol's trade history, named by the exchange's own id of
/// a record (its `trade_id`: aggregate ids for Binance `aggTrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// The records from this id on, oldest first (Binance `fromId`).
    From(u64),
    /// The newest records before this id (OKX and Coinbase `after`).
    Before(u64),
}

/// What one exchange's adapter does for every feed: parse frames, map
/// symbols, say whether ids are contiguous. [`venue`] is the table.
pub trait Venue: Sync {
    fn exchange(&self) -> Exchange;
    /// See [`parse_frame`].
    ///
    /// # Errors
    /// As [`parse_frame`].
    fn parse_frame(&self, payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError>;
    /// See [`instrument`].
    ///
    /// # Errors
    /// As [`instrument`].
    fn instrument(&self, symbol: &str) -> Result<String, ExchangeError>;
    /// The exchange's built-in rule, used where no instrument list decides.
    ///
    /// # Errors
    /// [`ExchangeError::UnknownSymbol`] when the rule cannot split the symbol.
    fn builtin_instrument(&self, symbol: &str) -> Result<Instrument, ExchangeError>;
    /// The live host of the exchange's instrument list.
    fn instruments_base_url(&self) -> &'static str;
    /// The list's path below the REST base URL.
    fn instruments_path(&self) -> &'static str;
    /// One query string per request the list takes (Bybit: one per
    /// category); `""` for none.
    fn instrument_list_queries(&self) -> &'static [&'static str];
    /// One page of the list.
    ///
    /// # Errors
    /// [`ExchangeError::Rejected`] for the exchange's error body,
    /// [`ExchangeError::Malformed`] for anything else that is not its list.
    fn parse_instruments(&self, body: &[u8]) -> Result<InstrumentPage, ExchangeError>;
    /// Whether the list covers `symbol`'s market (OKX lists SPOT only, so
    /// its derivative ids keep the built-in rule).
    fn listing_covers(&self, symbol: &str) -> bool;
    fn ids_are_sequential(&self) -> bool;
}

/// One feed's rules and codecs, implemented by each exchange module's
/// `Feed`; [`Feed::rules`] picks it. The methods are [`Feed`]'s.
pub trait FeedRules: Venue {
    fn name(&self) -> &'static str;
    fn ws_url(&self) -> &'static str;
    fn rest_base_url(&self) -> &'static str;
    fn keep_alive(&self) -> KeepAlive;
    fn limits(&self) -> ConnectionLimits;
    /// # Errors
    /// As [`Feed::subscribe_requests`].
    fn subscribe_requests(
        &self,
        symbols: &[&str],
        first_request_id: u64,
    ) -> Result<Vec<SubscribeRequest>, ExchangeError>;
    fn rest_trades_path(&self, symbol: &str, limit: usize) -> String;
    fn rest_history_path(&self, symbol: &str, page: HistoryPage, limit: usize) -> Option<String>;
    /// # Errors
    /// As [`Feed::parse_rest_trades`].
    fn parse_rest_trades(
        &self,
        symbol: &str,
        body: &[u8],
        receive_time: Millis,
    ) -> Result<Vec<Trade>, ExchangeError>;
}

/// Implements [`Venue`] and [`FeedRules`] for each exchange module, whose
/// functions all have the same names and shapes (see the table above).
macro_rules! venue_modules {
    ($($module:ident => $venue:ident),* $(,)?) => {$(
        /// The exchange of the module of the same name, as a [`Venue`].
        #[derive(Debug, Clone, Copy)]
        pub struct $venue;

        impl Venue for $venue {
            fn exchange(&self) -> Exchange {
                $module::EXCHANGE
            }
            fn parse_frame(&self, payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
                $module::parse_frame(payload, receive_time)
            }
            fn instrument(&self, symbol: &str) -> Result<String, ExchangeError> {
                $module::instrument(symbol)
            }
            fn builtin_instrument(&self, symbol: &str) -> Result<Instrument, ExchangeError> {
                $module::builtin_instrument(symbol)
            }
            fn instruments_base_url(&self) -> &'static str {
                $module::INSTRUMENTS_BASE_URL
            }
            fn instruments_path(&self) -> &'static str {
                $module::REST_INSTRUMENTS_PATH
            }
            fn instrument_list_queries(&self) -> &'static [&'static str] {
                $module::INSTRUMENT_LIST_QUERIES
            }
            fn parse_instruments(&self, body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
                $module::parse_instruments(body)
            }
            fn listing_covers(&self, symbol: &str) -> bool {
                $module::listing_covers(symbol)
            }
            fn ids_are_sequential(&self) -> bool {
                $module::IDS_ARE_SEQUENTIAL
            }
        }

        impl Venue for $module::Feed {
            fn exchange(&self) -> Exchange {
                $venue.exchange()
            }
            fn parse_frame(&self, payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
                $venue.parse_frame(payload, receive_time)
            }
            fn instrument(&self, symbol: &str) -> Result<String, ExchangeError> {
                $venue.instrument(symbol)
            }
            fn builtin_instrument(&self, symbol: &str) -> Result<Instrument, ExchangeError> {
                $venue.builtin_instrument(symbol)
            }
            fn instruments_base_url(&self) -> &'static str {
                $venue.instruments_base_url()
            }
            fn instruments_path(&self) -> &'static str {
                $venue.instruments_path()
            }
            fn instrument_list_queries(&self) -> &'static [&'static str] {
                $venue.instrument_list_queries()
            }
            fn parse_instruments(&self, body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
                $venue.parse_instruments(body)
            }
            fn listing_covers(&self, symbol: &str) -> bool {
                $venue.listing_covers(symbol)
            }
            fn ids_are_sequential(&self) -> bool {
                $venue.ids_are_sequential()
            }
        }

        impl FeedRules for $module::Feed {
            fn name(&self) -> &'static str {
                self.as_str()
            }
            fn ws_url(&self) -> &'static str {
                $module::ws_url(*self)
            }
            fn rest_base_url(&self) -> &'static str {
                $module::rest_base_url(*self)
            }
            fn keep_alive(&self) -> KeepAlive {
                $module::keep_alive(*self)
            }
            fn limits(&self) -> ConnectionLimits {
                $module::limits(*self)
            }
            fn subscribe_requests(
                &self,
                symbols: &[&str],
                first_request_id: u64,
            ) -> Result<Vec<SubscribeRequest>, ExchangeError> {
                $module::subscribe_requests(*self, symbols, first_request_id)
            }
            fn rest_trades_path(&self, symbol: &str, limit: usize) -> String {
                $module::rest_trades_path(*self, symbol, limit)
            }
            fn rest_history_path(&self, symbol: &str, page: HistoryPage, limit: usize) -> Option<String> {
                $module::rest_history_path(*self, symbol, page, limit)
            }
            fn parse_rest_trades(
                &self,
                symbol: &str,
                body: &[u8],
                receive_time: Millis,
            ) -> Result<Vec<Trade>, ExchangeError> {
                $module::parse_rest_trades(*self, symbol, body, receive_time)
            }
        }
    )*};
}

venue_modules!(
    binance => Binance,
    upbit => Upbit,
    coinbase => Coinbase,
    bybit => Bybit,
    okx => Okx,
);

/// The adapter of `exchange`: the one table from an exchange to its module.
pub fn venue(exchange: Exchange) -> &'static dyn Venue {
    match exchange {
        Exchange::Binance => &Binance,
        Exchange::Upbit => &Upbit,
        Exchange::Coinbase => &Coinbase,
        Exchange::Bybit => &Bybit,
        Exchange::Okx => &Okx,
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.exchange(), self.name())
    }
}

/// A feed name that names no feed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedNameError {
    #[error(transparent)]
    Exchange(#[from] crate::model::ModelError),
    #[error("no feed for {0}")]
    NoFeed(Exchange),
    #[error("unknown {exchange} feed {name:?} (expected one of {known})")]
    Unknown {
        exchange: Exchange,
        name: String,
        known: String,
    },
}

impl FromStr for Feed {
    type Err = FeedNameError;

    /// `exchange:feed`, e.g. `binance:aggTrade`, `upbit:simple`,
    /// `coinbase:matches`, `bybit:linear`, `okx:trades`; a bare exchange name
    /// picks that exchange's first feed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (exchange, name) = match s.split_once(':') {
            Some((exchange, name)) => (exchange, Some(name)),
            None => (s, None),
        };
        let exchange = Exchange::from_str(exchange)?;
        let mut feeds = Feed::ALL.into_iter().filter(|f| f.exchange() == exchange);
        match name {
            None => feeds.next().ok_or(FeedNameError::NoFeed(exchange)),
            Some(name) => {
                let known: Vec<Feed> = feeds.collect();
                known
                    .iter()
                    .copied()
                    .find(|f| f.name().eq_ignore_ascii_case(name))
                    .ok_or_else(|| FeedNameError::Unknown {
                        exchange,
                        name: name.to_string(),
                        known: known
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    }
}

/// Classify one received frame of `exchange` (text or binary payload).
///
/// # Errors
/// [`ExchangeError::Malformed`], [`ExchangeError::Field`] or
/// [`ExchangeError::Unrecognised`] for a frame that is not what the exchange
/// sends; [`ExchangeError::UnknownSymbol`] for a trade whose symbol does not map.
pub fn parse_frame(
    exchange: Exchange,
    payload: &[u8],
    receive_time: Millis,
) -> Result<Frame, ExchangeError> {
    venue(exchange).parse_frame(payload, receive_time)
}

/// The normalised `BASE-QUOTE` instrument of an exchange symbol, by the
/// process-wide catalogue ([`instruments::resolve`]): the exchange's loaded
/// instrument list, else its built-in rule.
///
/// # Errors
/// [`ExchangeError::UnknownSymbol`] when the loaded list lacks the symbol,
/// or (without a list) the built-in rule cannot split it.
pub fn instrument(exchange: Exchange, symbol: &str) -> Result<String, ExchangeError> {
    venue(exchange).instrument(symbol)
}

/// Whether the exchange's trade ids are contiguous integers per symbol, so
/// that a jump means missed trades (see [`id_continuity`]).
pub fn ids_are_sequential(exchange: Exchange) -> bool {
    venue(exchange).ids_are_sequential()
}

/// How a symbol's next trade follows the previous one, by raw trade ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdContinuity {
    /// `next` starts right after `prev` ends.
    Contiguous,
    /// Raw trade ids `first_missing..=last_missing` were not seen.
    Gap {
        first_missing: u64,
        last_missing: u64,
    },
    /// `next` starts at or before the end of `prev`: a duplicate or an overlap
    /// (replica, reconnect, REST backfill).
    Overlap,
    /// The exchange's ids are not contiguous, or an id is not a number.
    Untracked,
}

/// Compare two trades of one symbol by their raw trade ids: a Binance aggTrade
/// and an OKX aggregated trade cover `first_trade_id..=last_trade_id`, others
/// their `trade_id`.
pub fn id_continuity(prev: &Trade, next: &Trade) -> IdContinuity {
    if !ids_are_sequential(next.exchange) {
        return IdContinuity::Untracked;
    }
    let prev_last = prev.last_trade_id.or_else(|| prev.sequence());
    let next_first = next.first_trade_id.or_else(|| next.sequence());
    match (prev_last, next_first) {
        (Some(prev_last), Some(next_first)) => {
            let expected = prev_last.saturating_add(1);
            if next_first == expected {
                IdContinuity::Contiguous
            } else if next_first > expected {
                IdContinuity::Gap {
                    first_missing: expected,
                    last_missing: next_first - 1,
                }
            } else {
                IdContinuity::Overlap
            }
        }
        _ => IdContinuity::Untracked,
    }
}

/// The wall clock as epoch milliseconds: the receive time to stamp on a frame
/// at the moment it is read from the socket.
pub fn receive_time_now() -> Millis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis::try_from(now.as_millis()).unwrap_or(Millis::MAX)
}

// ---------------------------------------------------------------------------
// Helpers shared by the adapters.

/// The start of `input` as text, for error messages.
fn excerpt(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let text = text.trim();
    if text.len() <= EXCERPT_BYTES {
        return text.to_string();
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn malformed(exchange: Exchange, error: &serde_json::Error, input: &[u8]) -> ExchangeError {
    ExchangeError::Malformed {
        exchange,
        detail: error.to_string(),
        excerpt: excerpt(input),
    }
}

fn field_error(
    exchange: Exchange,
    field: &'static str,
    problem: impl Into<String>,
    input: &[u8],
) -> ExchangeError {
    ExchangeError::Field {
        exchange,
        field,
        problem: problem.into(),
        excerpt: excerpt(input),
    }
}

/// Conversions from wire types know the field but not the frame: quote the frame.
fn with_excerpt(error: ExchangeError, input: &[u8]) -> ExchangeError {
    match error {
        ExchangeError::Field {
            exchange,
            field,
            problem,
            excerpt: quoted,
        } if quoted.is_empty() => ExchangeError::Field {
            exchange,
            field,
            problem,
            excerpt: excerpt(input),
        },
        other => other,
    }
}

fn unrecognised(exchange: Exchange, input: &[u8]) -> ExchangeError {
    ExchangeError::Unrecognised {
        exchange,
        excerpt: excerpt(input),
    }
}

fn unknown_symbol(exchange: Exchange, symbol: &str, problem: impl Into<String>) -> ExchangeError {
    ExchangeError::UnknownSymbol {
        exchange,
        symbol: symbol.to_string(),
        problem: problem.into(),
    }
}

pub(crate) fn request_error(exchange: Exchange, problem: impl Into<String>) -> ExchangeError {
    ExchangeError::Request {
        exchange,
        problem: problem.into(),
    }
}

/// Deserialize a wire type, mapping serde's error (which names the field).
fn from_json<'a, T: serde::Deserialize<'a>>(
    exchange: Exchange,
    input: &'a [u8],
) -> Result<T, ExchangeError> {
    serde_json::from_slice(input).map_err(|e| malformed(exchange, &e, input))
}

/// A price or quantity from the exchange's decimal text, exactly.
fn parse_decimal(
    exchange: Exchange,
    field: &'static str,
    text: &str,
    input: &[u8],
) -> Result<Decimal, ExchangeError> {
    let value = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    }
    .map_err(|e| field_error(exchange, field, format!("bad decimal {text:?}: {e}"), input))?;
    if value.is_sign_negative() || value.is_zero() {
        return Err(field_error(
            exchange,
            field,
            format!("expected a positive decimal, got {text:?}"),
            input,
        ));
    }
    Ok(value)
}

/// A decimal sent as a JSON number (or, tolerated, a JSON string): parse the
/// number's own text, never an `f64`.
fn parse_json_number_decimal(
    exchange: Exchange,
    field: &'static str,
    raw: &serde_json::value::RawValue,
    input: &[u8],
) -> Result<Decimal, ExchangeError> {
    let text = raw.get().trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    parse_decimal(exchange, field, text, input)
}

/// A trade's exchange time (epoch ms), checked against [`TRADE_TIMES`]: a
/// zero, a time in seconds or microseconds, or a corrupt field is refused
/// instead of closing decades of candle windows downstream.
fn trade_time(
    exchange: Exchange,
    field: &'static str,
    time: Millis,
) -> Result<Millis, ExchangeError> {
    if TRADE_TIMES.contains(&time) {
        Ok(time)
    } else {
        Err(field_error(
            exchange,
            field,
            format!(
                "trade time {time} ms is not between 2009-01-01 and 2100-01-01 \
                 (not milliseconds, or a corrupt field)"
            ),
            b"",
        ))
    }
}

/// An integer sent as a JSON string, e.g. OKX `"ts":"1652459199958"`.
fn parse_int_text<T: FromStr>(
    exchange: Exchange,
    field: &'static str,
    text: &str,
    input: &[u8],
) -> Result<T, ExchangeError> {
    text.parse().map_err(|_| {
        field_error(
            exchange,
            field,
            format!("expected an integer, got {text:?}"),
            input,
        )
    })
}

/// Split `SYMBOL` by the longest known quote suffix.
fn split_by_quote_suffix(
    exchange: Exchange,
    symbol: &str,
    quotes: &[&str],
) -> Result<Instrument, ExchangeError> {
    let best = quotes
        .iter()
        .filter(|quote| symbol.len() > quote.len() && symbol.ends_with(*quote))
        .max_by_key(|quote| quote.len());
    match best {
        Some(quote) => {
            let base = &symbol[..symbol.len() - quote.len()];
            Ok(Instrument::new(symbol, base, *quote))
        }
        None => Err(unknown_symbol(
            exchange,
            symbol,
            "it does not end with a known quote asset",
        )),
    }
}

/// Sort REST rows oldest first: exchanges list newest first; ties keep their order.
fn oldest_first(mut trades: Vec<Trade>) -> Vec<Trade> {
    let descending = match (trades.first(), trades.last()) {
        (Some(first), Some(last)) => {
            first.exchange_time > last.exchange_time
                || (first.exchange_time == last.exchange_time
                    && matches!((first.sequence(), last.sequence()), (Some(a), Some(b)) if a > b))
        }
        _ => false,
    };
    if descending {
        trades.reverse();
    }
    trades.sort_by(|a, b| {
        a.exchange_time
            .cmp(&b.exchange_time)
            .then_with(|| match (a.sequence(), b.sequence()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => std::cmp::Ordering::Equal,
            })
    });
    trades
}

/// Parse an ISO-8601 / RFC 3339 UTC time (`2021-04-17T16:43:30.244075Z`,
/// `… 16:43:30+00:00`) to epoch ms, truncating the fraction (µs, ns) to the
/// millisecond. Exchanges write UTC (`Z` on Coinbase, or a zero offset); any
/// other offset is refused rather than silently shifted.
fn parse_iso8601_millis(text: &str) -> Option<Millis> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| {
            // Numeric offsets without a colon (`+0000`), which RFC 3339 leaves out.
            ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
                .iter()
                .find_map(|format| chrono::DateTime::parse_from_str(text, format).ok())
        })?;
    (time.offset().local_minus_utc() == 0).then(|| time.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    fn trade(exchange: Exchange, id: &str, first: Option<u64>, last: Option<u64>) -> Trade {
        Trade {
            exchange,
            symbol: "X".into(),
            instrument: "X-Y".into(),
            trade_id: id.into(),
            price: Decimal::ONE,
            quantity: Decimal::ONE,
            side: Side::Buy,
            exchange_time: 0,
            receive_time: 0,
            first_trade_id: first,
            last_trade_id: last,
        }
    }

    #[test]
    fn iso8601_parses_micro_and_nano_seconds_and_truncates() {
        for (text, expected) in [
            ("2021-04-17T16:43:30.244075Z", Some(1_618_677_810_244)),
            ("2024-10-04T07:13:31.158696693Z", Some(1_728_026_011_158)),
            ("2024-10-04T07:13:31Z", Some(1_728_026_011_000)),
            ("2024-10-04T07:13:31.2Z", Some(1_728_026_011_200)),
            ("2024-10-04T07:13:31.999999+00:00", Some(1_728_026_011_999)),
            ("2024-10-04T07:13:31.5+0000", Some(1_728_026_011_500)),
            ("2024-10-04T09:13:31+02:00", None),
            ("1970-01-01T00:00:00.000Z", Some(0)),
            ("2000-02-29T12:00:00Z", Some(951_825_600_000)),
            ("2024-10-04T07:13:31.Z", None),
            ("2024-10-04 07:13:31.5+01:00", None),
            ("2024-13-04T07:13:31Z", None),
            ("not a time at all!!", None),
        ] {
            assert_eq!(parse_iso8601_millis(text), expected, "{text}");
        }
    }

    #[test]
    fn iso8601_round_trips_through_the_formatter() {
        use crate::exsim::encode::format_iso8601_micros;
        for ms in [0, 1_618_677_810_244, 951_825_600_000, 4_102_444_799_999] {
            let text = format_iso8601_micros(ms);
            assert_eq!(parse_iso8601_millis(&text), Some(ms), "{text}");
        }
        assert_eq!(
            format_iso8601_micros(1_618_677_810_244),
            "2021-04-17T16:43:30.244000Z"
        );
    }

    #[test]
    fn decimals_are_exact_and_positive() {
        let ok =
            |text: &str| parse_decimal(Exchange::Upbit, "tv", text, b"").map(|d| d.to_string());
        assert_eq!(ok("0.35280000").as_deref(), Ok("0.35280000"));
        assert_eq!(ok("127.0").as_deref(), Ok("127.0"));
        assert_eq!(ok("8.428e-05").as_deref(), Ok("0.00008428"));
        assert_eq!(
            ok("860743.5307100000000000").as_deref(),
            Ok("860743.5307100000000000")
        );
        for bad in ["", "abc", "-1", "0", "0.000", "1.2.3", "NaN", "1e"] {
            let err = ok(bad).expect_err(bad);
            assert!(
                matches!(err, ExchangeError::Field { field: "tv", .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn id_continuity_follows_raw_ids() {
        let b = |id, f, l| trade(Exchange::Binance, id, f, l);
        let cases = [
            (
                "trade ids contiguous",
                b("7", None, None),
                b("8", None, None),
                IdContinuity::Contiguous,
            ),
            (
                "trade ids gap",
                b("7", None, None),
                b("10", None, None),
                IdContinuity::Gap {
                    first_missing: 8,
                    last_missing: 9,
                },
            ),
            (
                "duplicate",
                b("7", None, None),
                b("7", None, None),
                IdContinuity::Overlap,
            ),
            (
                "aggTrade by raw ids",
                b("100", Some(5), Some(9)),
                b("101", Some(10), Some(10)),
                IdContinuity::Contiguous,
            ),
            (
                "aggTrade gap",
                b("100", Some(5), Some(9)),
                b("101", Some(12), Some(12)),
                IdContinuity::Gap {
                    first_missing: 10,
                    last_missing: 11,
                },
            ),
        ];
        for (name, prev, next, expected) in cases {
            assert_eq!(id_continuity(&prev, &next), expected, "{name}");
        }
        let u = |id: &str| trade(Exchange::Bybit, id, None, None);
        assert_eq!(id_continuity(&u("1"), &u("5")), IdContinuity::Untracked);
    }

    #[test]
    fn feeds_parse_from_names() {
        for feed in Feed::ALL {
            assert_eq!(feed.to_string().parse::<Feed>(), Ok(feed));
        }
        assert_eq!("okx".parse::<Feed>(), Ok(Feed::Okx(okx::Feed::Trades)));
        let err = "binance:depth"
            .parse::<Feed>()
            .expect_err("unknown feed")
            .to_string();
        assert!(err.contains("aggTrade"), "{err}");
        assert!("kraken:trades".parse::<Feed>().is_err());
    }

    #[test]
    fn trade_times_outside_2009_to_2100_are_refused() {
        for ok in [1_230_768_000_000, 1_633_998_523_963, 4_102_444_799_999] {
            assert_eq!(trade_time(Exchange::Okx, "ts", ok), Ok(ok));
        }
        for bad in [
            0,
            -1,
            1_633_998_523,         // seconds
            1_633_998_523_963_000, // microseconds
            1_230_767_999_999,     // 2008
            4_102_444_800_000,     // 2100
            i64::MIN,
            i64::MAX,
        ] {
            let err = trade_time(Exchange::Okx, "ts", bad).expect_err("out of range");
            assert!(
                matches!(err, ExchangeError::Field { field: "ts", .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("2009-01-01"), "{err}");
        }
    }

    #[test]
    fn messages_stay_short_whatever_the_input_quotes() {
        let long = "a".repeat(100_000);
        let errors = [
            field_error(
                Exchange::Okx,
                "px",
                format!("bad decimal {long:?}"),
                long.as_bytes(),
            ),
            malformed(
                Exchange::Bybit,
                &serde_json::from_str::<u64>(&format!("{long:?}")).unwrap_err(),
                long.as_bytes(),
            ),
            unknown_symbol(Exchange::Binance, &long, long.clone()),
            ExchangeError::Rejected {
                exchange: Exchange::Coinbase,
                code: Some(long.clone()),
                message: long.clone(),
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.len() < 1024, "{} bytes: {message}", message.len());
            assert!(message.contains('…'), "{message}");
        }
        // The fields keep the whole value (the worker drops a symbol by it).
        let error = unknown_symbol(Exchange::Binance, &long, "no");
        assert_eq!(error.symbol(), Some(long.as_str()));
    }

    #[test]
    fn excerpts_are_short_and_cut_on_char_boundaries() {
        let long = "é".repeat(200);
        let text = excerpt(long.as_bytes());
        assert!(text.len() <= EXCERPT_BYTES + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}

//! Instrument names: which `BASE-QUOTE` an exchange symbol stands for, the one
//! mapping the live feed, REST backfill, `tickfetch import` and the simulator
//! share.
//!
//! ```text
//! exchange metadata endpoint ──fetch──▶ InstrumentTable (Source::Fetched) ──store──▶ cache file
//!        (fails)                                      ▲
//!            └──────────── cache file ──read──────────┘ (Source::Cached)
//!                                                     │
//! Instruments (one table per exchange, or none) ──install──▶ process-wide catalogue
//!                                                     │
//! venues::<exchange>::instrument(symbol) ─────────────┴──▶ table lookup, or the built-in rule
//! ```
//!
//! Where an exchange publishes its instrument list, the list decides:
//! Binance `GET /api/v3/exchangeInfo` (`symbols[].symbol/baseAsset/quoteAsset`),
//! OKX `GET /api/v5/public/instruments?instType=SPOT` (`data[].instId/baseCcy/quoteCcy`),
//! Bybit `GET /v5/market/instruments-info?category=spot|linear|inverse`
//! (`result.list[].symbol/baseCoin/quoteCoin`, paged by `nextPageCursor`),
//! Coinbase `GET /products` (`[].id/base_currency/quote_currency`) and
//! Upbit `GET /v1/market/all` (`[].market`, `KRW-BTC` = quote-base). Each
//! exchange module parses its own list (`parse_instruments`, wire structs
//! with the raw payload in their docs); [`load()`] fetches them through the
//! worker's own HTTP client, with one timeout, and keeps a copy in a cache
//! file that is used when the next fetch fails.
//!
//! Without a list (`ingest.instruments = "builtin"`, no feed of that exchange
//! configured, or neither a fetch nor a cache worked) each exchange has one
//! built-in rule, its module's `builtin_instrument`: Binance and Bybit split
//! the longest known quote suffix off the symbol (`binance::QUOTE_ASSETS`,
//! `bybit::QUOTE_ASSETS`), Coinbase and OKX keep their `BASE-QUOTE` ids,
//! Upbit swaps `QUOTE-BASE`. With a list, a symbol it does not hold is an
//! error naming the exchange and the symbol ([`ExchangeError::UnknownSymbol`],
//! terminal for that symbol), except symbols of markets the list does not
//! cover (OKX derivatives such as `BTC-USDT-SWAP`: the SPOT list has only
//! `BASE-QUOTE` ids), which keep the built-in rule.
//!
//! [`Instruments`] is a plain value (tests and callers can hold their own);
//! [`Instruments::install`] makes it the process-wide catalogue that every
//! adapter's `instrument` consults ([`resolve`]). Installing adds to what is
//! installed, exchange by exchange and symbol by symbol: a symbol once listed
//! stays mapped for the life of the process, so feeds already running never
//! lose their names. The ingest worker installs what it loads at start
//! (`Worker::start`), and so does `tickfetch import`, so that a file and the
//! live feed name a symbol alike.

pub mod load;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::{venue, ExchangeError};
use crate::model::Exchange;

pub use load::{
    cache_path, configured_sources, default_cache_dir, fetch, load, load_configured, sources_for,
    InstrumentsError, LoadOptions, LoadOutcome, Loaded, MetadataSource,
};

/// One instrument of an exchange: its own symbol, and the assets it trades.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instrument {
    /// The exchange's own symbol: `BTCUSDT`, `BTC-USD`, `KRW-BTC`.
    pub symbol: String,
    /// What is bought and sold: `BTC`.
    pub base: String,
    /// What it is priced in: `USDT`.
    pub quote: String,
}

impl Instrument {
    pub fn new(
        symbol: impl Into<String>,
        base: impl Into<String>,
        quote: impl Into<String>,
    ) -> Self {
        Self {
            symbol: symbol.into(),
            base: base.into(),
            quote: quote.into(),
        }
    }

    /// The normalised name, `BASE-QUOTE`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.base, self.quote)
    }

    /// `symbol` named `name` (`BASE-QUOTE`, split at the first `-`, so an
    /// OKX `BTC-USDT-SWAP` keeps `USDT-SWAP` as its quote); `None` unless
    /// both halves are non-empty.
    pub fn from_name(symbol: &str, name: &str) -> Option<Self> {
        let (base, quote) = name.split_once('-')?;
        (!base.is_empty() && !quote.is_empty()).then(|| Self::new(symbol, base, quote))
    }

    /// Whether symbol, base and quote are all present (a listing row
    /// without them names nothing).
    pub fn is_complete(&self) -> bool {
        !self.symbol.is_empty() && !self.base.is_empty() && !self.quote.is_empty()
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}-{}", self.symbol, self.base, self.quote)
    }
}

/// One page of an exchange's instrument list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstrumentPage {
    pub instruments: Vec<Instrument>,
    /// Where the next page starts (Bybit's `nextPageCursor`); `None` on the last.
    pub next_cursor: Option<String>,
}

/// Where an exchange's instrument names come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The exchange's list, fetched just now from `url`.
    Fetched { url: String },
    /// A copy of the list fetched from `url` at `fetched_at` (RFC 3339),
    /// read from the cache file at `path` because the fetch failed.
    Cached {
        url: String,
        path: PathBuf,
        fetched_at: String,
    },
    /// The built-in rule of the exchange's module.
    Builtin,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Fetched { url } => write!(f, "the instrument list fetched from {url}"),
            Source::Cached {
                url,
                path,
                fetched_at,
            } => write!(
                f,
                "the instrument list cached in {} (fetched from {url} at {fetched_at})",
                path.display()
            ),
            Source::Builtin => f.write_str("the built-in rules"),
        }
    }
}

/// A listed symbol and its name, computed once.
#[derive(Debug, Clone)]
struct Listed {
    instrument: Instrument,
    name: String,
}

/// The instruments of one exchange, from its list.
#[derive(Debug, Clone)]
pub struct InstrumentTable {
    exchange: Exchange,
    source: Source,
    by_symbol: HashMap<String, Listed>,
}

impl InstrumentTable {
    /// A table of `instruments`; rows that are not [`Instrument::is_complete`]
    /// are left out, and of two rows with one symbol the first wins.
    pub fn new(
        exchange: Exchange,
        source: Source,
        instruments: impl IntoIterator<Item = Instrument>,
    ) -> Self {
        let mut by_symbol = HashMap::new();
        for instrument in instruments.into_iter().filter(Instrument::is_complete) {
            by_symbol
                .entry(instrument.symbol.clone())
                .or_insert_with(|| Listed {
                    name: instrument.name(),
                    instrument,
                });
        }
        Self {
            exchange,
            source,
            by_symbol,
        }
    }

    pub fn exchange(&self) -> Exchange {
        self.exchange
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Symbols listed.
    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty()
    }

    /// The listed instrument of `symbol`.
    pub fn get(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol.get(symbol).map(|listed| &listed.instrument)
    }

    /// Every listed instrument, in no particular order.
    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.by_symbol.values().map(|listed| &listed.instrument)
    }

    fn name(&self, symbol: &str) -> Result<String, ExchangeError> {
        match self.by_symbol.get(symbol) {
            Some(listed) => Ok(listed.name.clone()),
            None => Err(self.not_listed(symbol)),
        }
    }

    fn instrument(&self, symbol: &str) -> Result<Instrument, ExchangeError> {
        self.get(symbol)
            .cloned()
            .ok_or_else(|| self.not_listed(symbol))
    }

    fn not_listed(&self, symbol: &str) -> ExchangeError {
        ExchangeError::UnknownSymbol {
            exchange: self.exchange,
            symbol: symbol.to_string(),
            problem: format!(
                "not in {} ({} symbols); set ingest.instruments = \"builtin\" to split symbols by the built-in rules instead",
                self.source,
                self.len()
            ),
        }
    }

    /// This table with `newer`'s rows added (theirs win) and `newer`'s source.
    fn merged_with(&self, newer: &InstrumentTable) -> InstrumentTable {
        let mut by_symbol = self.by_symbol.clone();
        by_symbol.extend(
            newer
                .by_symbol
                .iter()
                .map(|(symbol, listed)| (symbol.clone(), listed.clone())),
        );
        InstrumentTable {
            exchange: self.exchange,
            source: newer.source.clone(),
            by_symbol,
        }
    }
}

/// A catalogue: for each exchange with a loaded list, its table; every other
/// exchange maps by its built-in rule.
#[derive(Debug, Clone, Default)]
pub struct Instruments {
    tables: BTreeMap<Exchange, Arc<InstrumentTable>>,
}

impl Instruments {
    /// No lists: every exchange by its built-in rule.
    pub const fn builtin() -> Self {
        Self {
            tables: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the table of its exchange.
    pub fn with_table(mut self, table: InstrumentTable) -> Self {
        self.insert(table);
        self
    }

    /// Adds (or replaces) the table of its exchange.
    pub fn insert(&mut self, table: InstrumentTable) {
        self.tables.insert(table.exchange, Arc::new(table));
    }

    /// The loaded table of `exchange`, if any.
    pub fn table(&self, exchange: Exchange) -> Option<&InstrumentTable> {
        self.tables.get(&exchange).map(Arc::as_ref)
    }

    /// Where `exchange`'s names come from.
    pub fn source(&self, exchange: Exchange) -> Source {
        self.table(exchange)
            .map_or(Source::Builtin, |table| table.source.clone())
    }

    /// The table that decides `symbol` of `exchange`, if one does.
    fn deciding(&self, exchange: Exchange, symbol: &str) -> Option<&InstrumentTable> {
        self.table(exchange)
            .filter(|_| venue(exchange).listing_covers(symbol))
    }

    /// The instrument `symbol` of `exchange` stands for.
    ///
    /// # Errors
    /// [`ExchangeError::UnknownSymbol`] when the exchange's list does not hold
    /// the symbol, or (without a list) its built-in rule cannot split it.
    pub fn instrument(
        &self,
        exchange: Exchange,
        symbol: &str,
    ) -> Result<Instrument, ExchangeError> {
        match self.deciding(exchange, symbol) {
            Some(table) => table.instrument(symbol),
            None => venue(exchange).builtin_instrument(symbol),
        }
    }

    /// The normalised `BASE-QUOTE` name of `symbol` of `exchange`.
    ///
    /// # Errors
    /// As [`Instruments::instrument`].
    pub fn name(&self, exchange: Exchange, symbol: &str) -> Result<String, ExchangeError> {
        match self.deciding(exchange, symbol) {
            Some(table) => table.name(symbol),
            None => venue(exchange)
                .builtin_instrument(symbol)
                .map(|instrument| instrument.name()),
        }
    }

    /// Adds these tables to the process-wide catalogue (see the module docs:
    /// rows are added, none removed). A catalogue without tables changes
    /// nothing.
    pub fn install(&self) {
        if self.tables.is_empty() {
            return;
        }
        let mut installed = INSTALLED.write().unwrap_or_else(PoisonError::into_inner);
        for (exchange, table) in &self.tables {
            let merged = match installed.tables.get(exchange) {
                Some(old) => Arc::new(old.merged_with(table)),
                None => Arc::clone(table),
            };
            installed.tables.insert(*exchange, merged);
        }
        ANY_INSTALLED.store(true, Ordering::Release);
    }
}

/// The process-wide catalogue the adapters consult.
static INSTALLED: RwLock<Instruments> = RwLock::new(Instruments::builtin());

/// Set once a table is installed: until then [`resolve`] takes no lock.
static ANY_INSTALLED: AtomicBool = AtomicBool::new(false);

/// A copy of the process-wide catalogue (tables are shared, not copied).
pub fn installed() -> Instruments {
    if !ANY_INSTALLED.load(Ordering::Acquire) {
        return Instruments::builtin();
    }
    INSTALLED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The `BASE-QUOTE` name of `symbol` of `exchange` by the process-wide
/// catalogue: what every adapter's `instrument` returns.
///
/// # Errors
/// As [`Instruments::instrument`].
pub fn resolve(exchange: Exchange, symbol: &str) -> Result<String, ExchangeError> {
    if ANY_INSTALLED.load(Ordering::Acquire) {
        let installed = INSTALLED.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = installed.deciding(exchange, symbol) {
            return table.name(symbol);
        }
    }
    venue(exchange)
        .builtin_instrument(symbol)
        .map(|instrument| instrument.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(exchange: Exchange, rows: &[(&str, &str, &str)]) -> InstrumentTable {
        InstrumentTable::new(
            exchange,
            Source::Fetched {
                url: "http://127.0.0.1:1/list".into(),
            },
            rows.iter().map(|(s, b, q)| Instrument::new(*s, *b, *q)),
        )
    }

    #[test]
    fn a_list_decides_and_names_what_it_lacks() {
        let instruments = Instruments::builtin().with_table(listed(
            Exchange::Binance,
            &[("ABCXYZ", "ABC", "XYZ"), ("BTCUSDT", "BTC", "USDT")],
        ));
        let cases = [
            ("listed, the rule cannot split it", "ABCXYZ", Ok("ABC-XYZ")),
            ("listed", "BTCUSDT", Ok("BTC-USDT")),
            ("not listed, the rule could split it", "ETHUSDT", Err(())),
        ];
        for (name, symbol, expected) in cases {
            let got = instruments.name(Exchange::Binance, symbol);
            match expected {
                Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{name}"),
                Err(()) => {
                    let err = got.expect_err(name);
                    assert_eq!(err.symbol(), Some(symbol), "{name}");
                    assert!(err.is_terminal(), "{name}");
                    let text = err.to_string();
                    assert!(text.starts_with("binance: "), "{name}: {text}");
                    assert!(text.contains("http://127.0.0.1:1/list"), "{name}: {text}");
                }
            }
        }
        assert_eq!(
            instruments.instrument(Exchange::Binance, "ABCXYZ"),
            Ok(Instrument::new("ABCXYZ", "ABC", "XYZ"))
        );
        // Exchanges without a list keep their rule.
        assert_eq!(
            instruments.name(Exchange::Bybit, "ETHUSDT").as_deref(),
            Ok("ETH-USDT")
        );
        assert_eq!(instruments.source(Exchange::Bybit), Source::Builtin);
    }

    #[test]
    fn okx_derivatives_are_outside_the_spot_list() {
        let instruments = Instruments::builtin()
            .with_table(listed(Exchange::Okx, &[("BTC-USDT", "BTC", "USDT")]));
        assert_eq!(
            instruments.name(Exchange::Okx, "BTC-USDT-SWAP").as_deref(),
            Ok("BTC-USDT-SWAP")
        );
        assert!(instruments.name(Exchange::Okx, "ETH-USDT").is_err());
    }

    #[test]
    fn incomplete_rows_and_duplicates() {
        let table = listed(
            Exchange::Coinbase,
            &[
                ("BTC-USD", "BTC", "USD"),
                ("BTC-USD", "XBT", "USD"),
                ("", "A", "B"),
                ("ODD", "", "USD"),
            ],
        );
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.get("BTC-USD").map(Instrument::name).as_deref(),
            Some("BTC-USD")
        );
    }

    #[test]
    fn merging_adds_rows_and_keeps_the_newer_source() {
        let old = listed(
            Exchange::Upbit,
            &[("KRW-BTC", "BTC", "KRW"), ("KRW-ETH", "ETH", "KRW")],
        );
        let newer = InstrumentTable::new(
            Exchange::Upbit,
            Source::Builtin,
            [
                Instrument::new("KRW-ETH", "ETHW", "KRW"),
                Instrument::new("BTC-XRP", "XRP", "BTC"),
            ],
        );
        let merged = old.merged_with(&newer);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged.get("KRW-ETH").map(|i| i.base.as_str()), Some("ETHW"));
        assert_eq!(merged.source(), &Source::Builtin);
    }

    #[test]
    fn names_split_at_the_first_dash() {
        for (name, expected) in [
            ("BTC-USDT", Some(("BTC", "USDT"))),
            ("BTC-USDT-SWAP", Some(("BTC", "USDT-SWAP"))),
            ("BTCUSDT", None),
            ("-USDT", None),
            ("BTC-", None),
        ] {
            let got = Instrument::from_name("S", name);
            assert_eq!(
                got.as_ref().map(|i| (i.base.as_str(), i.quote.as_str())),
                expected,
                "{name}"
            );
        }
    }
}

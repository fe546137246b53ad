//! Loading the instrument lists: fetch each exchange's list, keep a copy in
//! the cache, fall back to the copy and then to the built-in rules.
//!
//! ```text
//! MetadataSource (exchange, REST base URL) ──fetch (pages, one timeout)──▶ InstrumentTable
//!     ok:   store <cache dir>/<exchange>.json ─────────────────────────────▶ Source::Fetched
//!     fail: read <cache dir>/<exchange>.json (same URL only) ──────────────▶ Source::Cached
//!     fail: no table ──────────────────────────────────────────────────────▶ Source::Builtin (+ warning)
//! ```
//!
//! [`load`] never fails: every problem is kept in the exchange's
//! [`LoadOutcome`] (and logged by [`Loaded::log`]), and the exchange maps
//! by its built-in rule. The REST base URL of an exchange is the `rest_url`
//! of its first `[[ingest.feeds]]` entry that has one (the simulator, a
//! regional host), else the exchange's live host for the list
//! (`instruments_base_url`: Coinbase's list is the Exchange API's
//! `/products`).
//!
//! A cache file is JSON: `{"exchange":"binance","url":"https://api.binance.com/api/v3/exchangeInfo",
//! "fetched_at":"2026-12-01T10:00:00Z","instruments":[{"symbol":"BTCUSDT","base":"BTC","quote":"USDT"},…]}`.
//! It is used only for the URL it was fetched from, so a simulator's list
//! never stands in for the live exchange's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Instrument, InstrumentTable, Instruments, Source};
use crate::config::{IngestConfig, InstrumentsMode};
use crate::ingest::connection::http::{self, HttpError};
use crate::ingest::venues::{excerpt, venue, ExchangeError};
use crate::model::Exchange;

/// Pages of one list followed at most (Bybit pages by cursor; a longer chain
/// means the server repeats itself).
pub const MAX_PAGES: usize = 50;

/// The cache folder below tickfetch's cache folder.
pub const CACHE_SUBDIR: &str = "instruments";

/// Errors of loading an instrument list. None stops anything: the exchange
/// then maps by the cache or by its built-in rule.
#[derive(Debug, thiserror::Error)]
pub enum InstrumentsError {
    /// The request failed (connection, TLS, timeout, malformed HTTP).
    #[error("{exchange} instrument list: {source}")]
    Http {
        exchange: Exchange,
        #[source]
        source: HttpError,
    },
    /// The server answered with an error status.
    #[error("{exchange} instrument list: GET {url}: HTTP {status}: {excerpt}")]
    Status {
        exchange: Exchange,
        url: String,
        status: u16,
        excerpt: String,
    },
    /// The body is not the exchange's list (or is its error body).
    #[error("{exchange} instrument list: GET {url}: {source}")]
    Body {
        exchange: Exchange,
        url: String,
        #[source]
        source: ExchangeError,
    },
    /// A well-formed list without a single usable row.
    #[error("{exchange} instrument list: GET {url}: the list names no instruments")]
    Empty { exchange: Exchange, url: String },
    /// The pages did not end.
    #[error("{exchange} instrument list: GET {url}: more than {MAX_PAGES} pages")]
    TooManyPages { exchange: Exchange, url: String },
    /// The whole load took longer than its timeout.
    #[error("{exchange} instrument list: not loaded within {after:?}")]
    Timeout { exchange: Exchange, after: Duration },
    /// Reading or writing the cache file failed.
    #[error("instrument cache {path}: {source}")]
    CacheIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cache file is not a cache file.
    #[error("instrument cache {path}: {detail}")]
    CacheFormat { path: PathBuf, detail: String },
}

impl InstrumentsError {
    /// True when trying again cannot help (a REST base URL that does not
    /// parse); the network, the server and the cache may recover.
    pub fn is_terminal(&self) -> bool {
        matches!(self, InstrumentsError::Http { source, .. } if source.is_terminal())
    }
}

/// Where to fetch one exchange's list from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSource {
    pub exchange: Exchange,
    /// Scheme and host (and the simulator's `/binance` prefix): the list's
    /// path goes below it.
    pub base_url: String,
}

impl MetadataSource {
    /// The list's URL (first page, without its query): how the source is
    /// named in messages and in the cache.
    pub fn list_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.trim_end_matches('/'),
            venue(self.exchange).instruments_path()
        )
    }
}

/// How [`load`] goes about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub mode: InstrumentsMode,
    /// Where lists are cached; `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// The whole load (every exchange, every page) within this.
    pub timeout: Duration,
}

impl LoadOptions {
    /// `ingest.instruments`, `ingest.instruments_cache_dir` (absent:
    /// [`default_cache_dir`]; empty: none) and
    /// `ingest.instruments_timeout_ms`.
    pub fn from_config(config: &IngestConfig) -> Self {
        let cache_dir = match &config.instruments_cache_dir {
            None => Some(default_cache_dir()),
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
        };
        Self {
            mode: config.instruments,
            cache_dir,
            timeout: Duration::from_millis(config.instruments_timeout_ms),
        }
    }
}

/// `instruments/` in tickfetch's cache folder (the one `tickfetch stack up`
/// keeps its tools in: `$TICKFETCH_CACHE`, else `$XDG_CACHE_HOME/tickfetch`,
/// else `~/.cache/tickfetch`).
pub fn default_cache_dir() -> PathBuf {
    crate::stack::kafka::cache_dir().join(CACHE_SUBDIR)
}

/// The cache file of `exchange` in `dir`.
pub fn cache_path(dir: &Path, exchange: Exchange) -> PathBuf {
    dir.join(format!("{exchange}.json"))
}

/// The sources of `exchanges` (each once): the `rest_url` of the exchange's
/// first `[[ingest.feeds]]` entry that has one, else its live host.
pub fn sources_for(config: &IngestConfig, exchanges: &[Exchange]) -> Vec<MetadataSource> {
    let mut sources: Vec<MetadataSource> = Vec::new();
    for &exchange in exchanges {
        if sources.iter().any(|s| s.exchange == exchange) {
            continue;
        }
        let base_url = config
            .feeds
            .iter()
            .filter(|feed| feed.exchange == exchange)
            .find_map(|feed| feed.rest_url.clone())
            .unwrap_or_else(|| venue(exchange).instruments_base_url().to_string());
        sources.push(MetadataSource { exchange, base_url });
    }
    sources
}

/// The sources of every exchange `[[ingest.feeds]]` names.
pub fn configured_sources(config: &IngestConfig) -> Vec<MetadataSource> {
    let exchanges: Vec<Exchange> = config.feeds.iter().map(|feed| feed.exchange).collect();
    sources_for(config, &exchanges)
}

/// What loading did for one exchange.
#[derive(Debug)]
pub struct LoadOutcome {
    pub exchange: Exchange,
    pub source: Source,
    /// Symbols listed (0 with the built-in rules).
    pub symbols: usize,
    /// What went wrong on the way (a failed fetch, an unreadable cache, a
    /// cache that could not be written), in order.
    pub problems: Vec<InstrumentsError>,
}

impl LoadOutcome {
    /// One line for a user when something went wrong: what failed and what
    /// is used instead.
    pub fn warning(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        Some(format!(
            "{}; {} symbols are named by {}",
            problems.join("; "),
            self.exchange,
            self.source
        ))
    }
}

/// The result of [`load`]: the catalogue and how each exchange got its names.
#[derive(Debug, Default)]
pub struct Loaded {
    pub instruments: Instruments,
    pub outcomes: Vec<LoadOutcome>,
}

impl Loaded {
    /// One log event per exchange: info when a list was loaded, a warning
    /// for each fallback.
    pub fn log(&self) {
        for outcome in &self.outcomes {
            match (&outcome.source, outcome.warning()) {
                (_, Some(warning)) => {
                    tracing::warn!(exchange = %outcome.exchange, source = %outcome.source, symbols = outcome.symbols, "{warning}");
                }
                (Source::Builtin, None) => {
                    tracing::info!(exchange = %outcome.exchange, "instrument names by the built-in rules");
                }
                (source, None) => {
                    tracing::info!(exchange = %outcome.exchange, %source, symbols = outcome.symbols, "instrument list loaded");
                }
            }
        }
    }
}

/// Loads the list of every exchange `config.feeds` names, as `config` says,
/// and logs how it went. The caller installs the result.
pub async fn load_configured(config: &IngestConfig) -> Loaded {
    let loaded = load(
        &configured_sources(config),
        &LoadOptions::from_config(config),
    )
    .await;
    loaded.log();
    loaded
}

/// Loads the lists of `sources`, all at once, within `options.timeout`.
/// Never fails: see the module docs.
pub async fn load(sources: &[MetadataSource], options: &LoadOptions) -> Loaded {
    let results = futures::future::join_all(sources.iter().map(|s| load_one(s, options))).await;
    let mut loaded = Loaded::default();
    for (table, outcome) in results {
        if let Some(table) = table {
            loaded.instruments.insert(table);
        }
        loaded.outcomes.push(outcome);
    }
    loaded
}

async fn load_one(
    source: &MetadataSource,
    options: &LoadOptions,
) -> (Option<InstrumentTable>, LoadOutcome) {
    let mut outcome = LoadOutcome {
        exchange: source.exchange,
        source: Source::Builtin,
        symbols: 0,
        problems: Vec::new(),
    };
    if options.mode == InstrumentsMode::Builtin {
        return (None, outcome);
    }
    let cache = options
        .cache_dir
        .as_deref()
        .map(|dir| cache_path(dir, source.exchange));
    let fetched = tokio::time::timeout(options.timeout, fetch(source, options.timeout))
        .await
        .unwrap_or(Err(InstrumentsError::Timeout {
            exchange: source.exchange,
            after: options.timeout,
        }));
    let table = match fetched {
        Ok(table) => {
            if let Some(path) = &cache {
                if let Err(problem) = store_cache(path, source, &table).await {
                    outcome.problems.push(problem);
                }
            }
            Some(table)
        }
        Err(problem) => {
            outcome.problems.push(problem);
            match &cache {
                None => None,
                Some(path) => match read_cache(path, source).await {
                    Ok(table) => table,
                    Err(problem) => {
                        outcome.problems.push(problem);
                        None
                    }
                },
            }
        }
    };
    if let Some(table) = &table {
        outcome.source = table.source().clone();
        outcome.symbols = table.len();
    }
    (table, outcome)
}

/// Fetches `source`'s list, every query and page of it, each GET within
/// `timeout`.
///
/// # Errors
/// [`InstrumentsError::Http`], [`InstrumentsError::Status`],
/// [`InstrumentsError::Body`], [`InstrumentsError::Empty`] or
/// [`InstrumentsError::TooManyPages`].
pub async fn fetch(
    source: &MetadataSource,
    timeout: Duration,
) -> Result<InstrumentTable, InstrumentsError> {
    let exchange = source.exchange;
    let adapter = venue(exchange);
    let list_url = source.list_url();
    let mut instruments = Vec::new();
    for query in adapter.instrument_list_queries() {
        let mut cursor: Option<String> = None;
        for page in 0.. {
            if page == MAX_PAGES {
                return Err(InstrumentsError::TooManyPages {
                    exchange,
                    url: list_url,
                });
            }
            let url = page_url(&list_url, query, cursor.as_deref());
            let response = http::get(&url, timeout)
                .await
                .map_err(|source| InstrumentsError::Http { exchange, source })?;
            if !(200..300).contains(&response.status) {
                return Err(InstrumentsError::Status {
                    exchange,
                    url,
                    status: response.status,
                    excerpt: excerpt(&response.body),
                });
            }
            let page = adapter
                .parse_instruments(&response.body)
                .map_err(|source| InstrumentsError::Body {
                    exchange,
                    url: url.clone(),
                    source,
                })?;
            instruments.extend(page.instruments);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let table = InstrumentTable::new(
        exchange,
        Source::Fetched {
            url: list_url.clone(),
        },
        instruments,
    );
    if table.is_empty() {
        return Err(InstrumentsError::Empty {
            exchange,
            url: list_url,
        });
    }
    Ok(table)
}

/// `list_url?query&cursor=…` (the cursor escaped where it is not URL-safe).
fn page_url(list_url: &str, query: &str, cursor: Option<&str>) -> String {
    let mut params: Vec<String> = Vec::new();
    if !query.is_empty() {
        params.push(query.to_string());
    }
    if let Some(cursor) = cursor {
        params.push(format!("cursor={}", escape_query_value(cursor)));
    }
    if params.is_empty() {
        list_url.to_string()
    } else {
        format!("{list_url}?{}", params.join("&"))
    }
}

/// Percent-escapes what may not stand in a query value; `%` stays, since
/// cursors arrive already escaped (`first%3DBTCUSDT`).
fn escape_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~%".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What a cache file holds.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    exchange: Exchange,
    url: String,
    /// RFC 3339, UTC.
    fetched_at: String,
    instruments: Vec<Instrument>,
}

/// Writes `table` as `path` (through a temporary file, so a reader never
/// sees half of it).
async fn store_cache(
    path: &Path,
    source: &MetadataSource,
    table: &InstrumentTable,
) -> Result<(), InstrumentsError> {
    let io = |source| InstrumentsError::CacheIo {
        path: path.to_path_buf(),
        source,
    };
    let mut instruments: Vec<Instrument> = table.instruments().cloned().collect();
    instruments.sort();
    let file = CacheFile {
        exchange: source.exchange,
        url: source.list_url(),
        fetched_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        instruments,
    };
    let text = serde_json::to_vec(&file).map_err(|e| InstrumentsError::CacheFormat {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let partial = path.with_extension(format!("json.{}.tmp", std::process::id()));
    tokio::fs::write(&partial, text).await.map_err(io)?;
    tokio::fs::rename(&partial, path).await.map_err(io)
}

/// The cached list of `source`, if `path` holds one fetched from its URL.
async fn read_cache(
    path: &Path,
    source: &MetadataSource,
) -> Result<Option<InstrumentTable>, InstrumentsError> {
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(InstrumentsError::CacheIo {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let format = |detail: String| InstrumentsError::CacheFormat {
        path: path.to_path_buf(),
        detail,
    };
    let file: CacheFile = serde_json::from_slice(&text).map_err(|e| format(e.to_string()))?;
    let url = source.list_url();
    if file.exchange != source.exchange || file.url != url {
        tracing::debug!(path = %path.display(), cached = %file.url, wanted = %url, "instrument cache is of another list");
        return Ok(None);
    }
    let fetched_at = chrono::DateTime::parse_from_rfc3339(&file.fetched_at)
        .map_err(|e| format(format!("fetched_at {:?}: {e}", file.fetched_at)))?
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let table = InstrumentTable::new(
        source.exchange,
        Source::Cached {
            url,
            path: path.to_path_buf(),
            fetched_at,
        },
        file.instruments,
    );
    if table.is_empty() {
        return Err(format("no instruments".into()));
    }
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FeedConfig;

    /// A throwaway directory, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "tickfetch-instruments-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            TempDir(path)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A port nothing listens on: bind, note the port, let go.
    fn refused_base_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    fn options(cache_dir: Option<PathBuf>) -> LoadOptions {
        LoadOptions {
            mode: InstrumentsMode::Fetch,
            cache_dir,
            timeout: Duration::from_secs(5),
        }
    }

    fn table(source: &MetadataSource, rows: &[(&str, &str, &str)]) -> InstrumentTable {
        InstrumentTable::new(
            source.exchange,
            Source::Fetched {
                url: source.list_url(),
            },
            rows.iter().map(|(s, b, q)| Instrument::new(*s, *b, *q)),
        )
    }

    #[tokio::test]
    async fn a_failed_fetch_falls_back_to_the_cache_of_the_same_url() {
        let dir = TempDir::new();
        let source = MetadataSource {
            exchange: Exchange::Binance,
            base_url: refused_base_url(),
        };
        let path = cache_path(&dir.0, Exchange::Binance);
        store_cache(&path, &source, &table(&source, &[("ABCXYZ", "ABC", "XYZ")]))
            .await
            .expect("store");

        let loaded = load(std::slice::from_ref(&source), &options(Some(dir.0.clone()))).await;
        let outcome = &loaded.outcomes[0];
        assert!(
            matches!(&outcome.source, Source::Cached { path: p, .. } if *p == path),
            "{:?}",
            outcome.source
        );
        assert!(
            matches!(outcome.problems[..], [InstrumentsError::Http { .. }]),
            "{:?}",
            outcome.problems
        );
        let warning = outcome.warning().expect("a warning");
        assert!(warning.contains("cached in"), "{warning}");
        assert_eq!(
            loaded
                .instruments
                .name(Exchange::Binance, "ABCXYZ")
                .as_deref(),
            Ok("ABC-XYZ")
        );

        // The same cache does not stand in for another URL.
        let other = MetadataSource {
            exchange: Exchange::Binance,
            base_url: format!("{}/elsewhere", source.base_url),
        };
        let loaded = load(&[other], &options(Some(dir.0.clone()))).await;
        assert_eq!(loaded.outcomes[0].source, Source::Builtin);
        assert!(loaded.instruments.table(Exchange::Binance).is_none());
        assert!(loaded.outcomes[0].warning().is_some());
    }

    #[tokio::test]
    async fn without_list_or_cache_the_rules_decide_with_a_warning() {
        let source = MetadataSource {
            exchange: Exchange::Bybit,
            base_url: refused_base_url(),
        };
        let loaded = load(std::slice::from_ref(&source), &options(None)).await;
        let outcome = &loaded.outcomes[0];
        assert_eq!(outcome.source, Source::Builtin);
        let warning = outcome.warning().expect("a warning");
        assert!(warning.contains("the built-in rules"), "{warning}");
        assert_eq!(
            loaded
                .instruments
                .name(Exchange::Bybit, "ETHUSDT")
                .as_deref(),
            Ok("ETH-USDT")
        );

        let builtin = LoadOptions {
            mode: InstrumentsMode::Builtin,
            ..options(None)
        };
        let loaded = load(&[source], &builtin).await;
        assert_eq!(loaded.outcomes[0].source, Source::Builtin);
        assert!(
            loaded.outcomes[0].warning().is_none(),
            "builtin asks for nothing"
        );
    }

    #[tokio::test]
    async fn a_broken_cache_file_is_reported() {
        let dir = TempDir::new();
        let source = MetadataSource {
            exchange: Exchange::Okx,
            base_url: refused_base_url(),
        };
        let path = cache_path(&dir.0, Exchange::Okx);
        std::fs::write(&path, b"{not json").expect("write");
        let loaded = load(&[source], &options(Some(dir.0.clone()))).await;
        let problems = &loaded.outcomes[0].problems;
        assert!(
            matches!(
                problems[..],
                [
                    InstrumentsError::Http { .. },
                    InstrumentsError::CacheFormat { .. }
                ]
            ),
            "{problems:?}"
        );
        assert_eq!(loaded.outcomes[0].source, Source::Builtin);
    }

    #[test]
    fn sources_come_from_the_feeds_else_the_live_hosts() {
        let feed = |exchange, rest_url: Option<&str>| FeedConfig {
            exchange,
            symbols: Vec::new(),
            ws_url: None,
            rest_url: rest_url.map(str::to_string),
            feed: None,
            symbols_per_connection: None,
            max_connection_age_ms: None,
            ping_interval_ms: None,
            pong_timeout_ms: None,
        };
        let config = IngestConfig {
            feeds: vec![
                feed(Exchange::Binance, None),
                feed(Exchange::Binance, Some("http://127.0.0.1:9/binance")),
                feed(Exchange::Coinbase, None),
            ],
            ..IngestConfig::default()
        };
        let sources = configured_sources(&config);
        assert_eq!(
            sources
                .iter()
                .map(|s| (s.exchange, s.list_url()))
                .collect::<Vec<_>>(),
            vec![
                (
                    Exchange::Binance,
                    "http://127.0.0.1:9/binance/api/v3/exchangeInfo".to_string()
                ),
                (
                    Exchange::Coinbase,
                    "https://api.exchange.coinbase.com/products".to_string()
                ),
            ]
        );
        assert_eq!(
            sources_for(&config, &[Exchange::Upbit])[0].list_url(),
            "https://api.upbit.com/v1/market/all"
        );
    }

    /// A loopback server answering each instruments-info request with the
    /// page its query asks for; returns the base URL and the paths asked.
    async fn bybit_pages() -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            for _ in 0..4 {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "request cut short");
                    request.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                let row = |s: &str, b: &str, q: &str| {
                    format!(
                        r#"{{"symbol":"{s}","baseCoin":"{b}","quoteCoin":"{q}","status":"Trading"}}"#
                    )
                };
                let (category, rows, cursor) = if path.contains("category=spot") {
                    ("spot", row("BTCUSDT", "BTC", "USDT"), None)
                } else if path.contains("cursor=first%3DA%26last%3DB") {
                    ("linear", row("ETHPERP", "ETH", "USDC"), Some(""))
                } else if path.contains("category=linear") {
                    (
                        "linear",
                        row("1000PEPEUSDT", "1000PEPE", "USDT"),
                        Some("first%3DA%26last%3DB"),
                    )
                } else {
                    ("inverse", row("BTCUSD", "BTC", "USD"), Some(""))
                };
                let cursor =
                    cursor.map_or(String::new(), |c| format!(r#","nextPageCursor":"{c}""#));
                let body = format!(
                    r#"{{"retCode":0,"retMsg":"OK","result":{{"category":"{category}","list":[{rows}]{cursor}}},"retExtInfo":{{}},"time":1}}"#
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.expect("write");
                paths.push(path);
            }
            paths
        });
        (base, server)
    }

    #[tokio::test]
    async fn bybit_lists_every_category_and_follows_the_cursor() {
        let (base_url, server) = bybit_pages().await;
        let source = MetadataSource {
            exchange: Exchange::Bybit,
            base_url,
        };
        let table = fetch(&source, Duration::from_secs(5)).await.expect("fetch");
        let mut names: Vec<String> = table.instruments().map(Instrument::to_string).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "1000PEPEUSDT = 1000PEPE-USDT",
                "BTCUSD = BTC-USD",
                "BTCUSDT = BTC-USDT",
                "ETHPERP = ETH-USDC"
            ]
        );
        let paths = server.await.expect("server");
        assert_eq!(
            paths,
            [
                "/v5/market/instruments-info?category=spot",
                "/v5/market/instruments-info?category=linear&limit=1000",
                "/v5/market/instruments-info?category=linear&limit=1000&cursor=first%3DA%26last%3DB",
                "/v5/market/instruments-info?category=inverse&limit=1000",
            ]
        );
    }

    #[test]
    fn page_urls_carry_the_query_and_the_cursor() {
        assert_eq!(page_url("http://h/l", "", None), "http://h/l");
        assert_eq!(
            page_url(
                "http://h/l",
                "category=linear&limit=1000",
                Some("first%3DA B")
            ),
            "http://h/l?category=linear&limit=1000&cursor=first%3DA%20B"
        );
    }

    #[test]
    fn cache_options_from_config() {
        let mut config = IngestConfig {
            instruments_cache_dir: Some(PathBuf::new()),
            ..IngestConfig::default()
        };
        assert_eq!(LoadOptions::from_config(&config).cache_dir, None);
        config.instruments_cache_dir = Some(PathBuf::from("/var/cache/x"));
        assert_eq!(
            LoadOptions::from_config(&config).cache_dir,
            Some(PathBuf::from("/var/cache/x"))
        );
    }
}

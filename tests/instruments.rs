//! Instrument names from the exchanges' own lists, end to end: the catalogue
//! loaded from the simulator's metadata endpoints (as `Worker::start` and
//! `tickfetch import` load it) names each symbol alike in the import reader,
//! in the live websocket frames and in REST backfill, including symbols whose
//! quote (BKRW, UST, EURI, BVND) the import's and the live feed's old quote
//! lists disagreed on, and symbols no built-in rule can split. A failed fetch
//! then falls back to the cached copy.
//!
//! The worker test then starts an ingest worker on the simulator and reads
//! the names it published from the trades topic (the stack's Kafka and etcd,
//! see `tests/common`).
//!
//! This binary installs a process-wide catalogue, so it holds only tests
//! that agree with it (every test here simulates the same symbols).

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use tickfetch::config::IngestConfig;
use tickfetch::exsim::{GenerateConfig, SimConfig, SimHandle, Simulator, Source};
use tickfetch::import::{ImportError, ImportFormat, TradeReader};
use tickfetch::ingest::connection::http;
use tickfetch::ingest::venues::instruments::{
    self, configured_sources, Instrument, LoadOptions, Source as NameSource,
};
use tickfetch::ingest::venues::{self, binance, bybit, Feed, Frame};
use tickfetch::ingest::worker::{Role, Worker};
use tickfetch::model::Exchange;
use tickfetch::shutdown::CancellationToken;

/// Upper bound of any single wait.
const WAIT: Duration = Duration::from_secs(10);

/// Binance symbols whose quote one of the two old lists lacked (the
/// import's had no UST, EURI or BVND; the live feed's had no BKRW), and one
/// no quote list splits.
const BINANCE: [(&str, &str, &str); 5] = [
    ("BTCBKRW", "BTC", "BKRW"),
    ("LUNAUST", "LUNA", "UST"),
    ("EURIUSDT", "EURI", "USDT"),
    ("BTCEURI", "BTC", "EURI"),
    ("USDTBVND", "USDT", "BVND"),
];
/// Listed by the simulator, unsplittable by Binance's quote list.
const BINANCE_UNSPLITTABLE: (&str, &str, &str) = ("ABCXYZ", "ABC", "XYZ");
/// Listed by the simulator; Bybit's quote list has no EURI.
const BYBIT_EURI: (&str, &str, &str) = ("BTCEURI", "BTC", "EURI");

fn instrument((symbol, base, quote): (&str, &str, &str)) -> Instrument {
    Instrument::new(symbol, base, quote)
}

fn binance_symbols() -> Vec<String> {
    BINANCE
        .iter()
        .chain([&BINANCE_UNSPLITTABLE])
        .map(|(s, _, _)| s.to_string())
        .collect()
}

/// A simulator of Binance and Bybit with these symbols, generating on demand.
async fn simulator() -> SimHandle {
    let symbols: BTreeMap<Exchange, Vec<String>> = [
        (Exchange::Binance, binance_symbols()),
        (
            Exchange::Bybit,
            vec![BYBIT_EURI.0.to_string(), "ETHUSDT".to_string()],
        ),
    ]
    .into_iter()
    .collect();
    let listed: BTreeMap<Exchange, Vec<Instrument>> = [
        (Exchange::Binance, vec![instrument(BINANCE_UNSPLITTABLE)]),
        (Exchange::Bybit, vec![instrument(BYBIT_EURI)]),
    ]
    .into_iter()
    .collect();
    Simulator::start(SimConfig {
        exchanges: vec![Exchange::Binance, Exchange::Bybit],
        source: Source::Generate(GenerateConfig {
            rate_per_second: 0.0,
            symbols,
            instruments: listed,
            ..GenerateConfig::default()
        }),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// The ingest config a worker pointed at `sim` would have, with the cache
/// in `cache`.
fn ingest_config(sim: &SimHandle, cache: &std::path::Path) -> IngestConfig {
    let feed = |name: &str| {
        let feed: Feed = name.parse().expect("feed");
        sim.feed_config(feed, &[])
    };
    IngestConfig {
        feeds: vec![feed("binance:aggTrade"), feed("bybit:spot")],
        instruments_cache_dir: Some(cache.to_path_buf()),
        ..IngestConfig::default()
    }
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/test-instruments/catalogue-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// What `tickfetch import` names `symbol` (its first CSV row's instrument).
fn imported_name(symbol: &str) -> Result<String, ImportError> {
    let row = "1,0.5,2,10,10,1570752011620,true,true\n";
    let mut reader = TradeReader::new(
        Cursor::new(row.as_bytes()),
        ImportFormat::BinanceAggTradesCsv,
        Exchange::Binance,
        symbol,
    )?;
    let trade = reader
        .next_row()
        .expect("a row")
        .expect("a trade")
        .trade
        .clone();
    Ok(trade.instrument)
}

/// The instrument of each symbol's trades as a worker's websocket receives
/// them: one order per symbol, read from a combined stream.
async fn streamed_names(sim: &SimHandle, symbols: &[String]) -> BTreeMap<String, String> {
    let url = binance::combined_stream_url(
        &sim.ws_base(Exchange::Binance),
        binance::Feed::AggTrade,
        symbols,
    )
    .expect("stream url");
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    // The URL subscribes on connect; once a ping is answered, the session
    // is past it and receives what is published.
    ws.send(Message::Ping(b"sync".to_vec().into()))
        .await
        .expect("ping");
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("pong in time")
            .expect("stream open")
            .expect("frame");
        if matches!(message, Message::Pong(_)) {
            break;
        }
    }
    for symbol in symbols {
        sim.generate(Exchange::Binance, symbol, 1)
            .expect("generate");
    }
    let mut names = BTreeMap::new();
    while names.len() < symbols.len() {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("stream open")
            .expect("frame");
        let payload = match &message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            _ => continue,
        };
        if let Frame::Trades(trades) =
            venues::parse_frame(Exchange::Binance, &payload, 0).expect("a frame the adapter reads")
        {
            for trade in trades {
                names.insert(trade.symbol, trade.instrument);
            }
        }
    }
    names
}

/// The instrument REST backfill gives `symbol`'s trades.
async fn backfilled_name(sim: &SimHandle, feed: Feed, symbol: &str) -> String {
    let url = format!(
        "{}{}",
        sim.rest_url(feed.exchange()),
        feed.rest_trades_path(symbol, 5)
    );
    let response = http::get(&url, WAIT).await.expect("GET");
    let trades = feed
        .parse_rest_trades(symbol, &response.body, 0)
        .expect("trades");
    let first = trades.first().expect("a trade");
    assert!(trades.iter().all(|t| t.instrument == first.instrument));
    first.instrument.clone()
}

#[tokio::test]
async fn import_and_the_live_feed_name_symbols_by_the_exchange_list() {
    let sim = simulator().await;
    let cache = cache_dir();
    let config = ingest_config(&sim, &cache);

    let loaded = instruments::load(
        &configured_sources(&config),
        &LoadOptions::from_config(&config),
    )
    .await;
    for outcome in &loaded.outcomes {
        assert!(
            matches!(outcome.source, NameSource::Fetched { .. }),
            "{}: {:?}",
            outcome.exchange,
            outcome.source
        );
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    }
    loaded.instruments.install();

    // Binance: every symbol named by the list, alike everywhere.
    let symbols = binance_symbols();
    let streamed = streamed_names(&sim, &symbols).await;
    for listed in BINANCE.iter().chain([&BINANCE_UNSPLITTABLE]) {
        let (symbol, want) = (listed.0, instrument(*listed).name());
        let imported = imported_name(symbol).unwrap_or_else(|e| panic!("{symbol}: {e}"));
        let live = venues::instrument(Exchange::Binance, symbol).expect("live mapping");
        let backfilled =
            backfilled_name(&sim, Feed::Binance(binance::Feed::AggTrade), symbol).await;
        assert_eq!(imported, want, "{symbol}: import");
        assert_eq!(live, want, "{symbol}: live mapping");
        assert_eq!(
            streamed.get(symbol).map(String::as_str),
            Some(want.as_str()),
            "{symbol}: websocket"
        );
        assert_eq!(backfilled, want, "{symbol}: REST backfill");
    }
    // The list decides where no rule could.
    assert!(binance::builtin_instrument(BINANCE_UNSPLITTABLE.0).is_err());
    assert!(bybit::builtin_instrument(BYBIT_EURI.0).is_err());
    sim.generate(Exchange::Bybit, BYBIT_EURI.0, 1)
        .expect("generate");
    assert_eq!(
        backfilled_name(&sim, Feed::Bybit(bybit::Feed::Spot), BYBIT_EURI.0).await,
        "BTC-EURI"
    );

    // A symbol the list lacks is an error naming exchange and symbol, the
    // same one for the import and the live feed, though the rule could split it.
    let missing = "ETHUSDT";
    assert!(binance::builtin_instrument(missing).is_ok());
    let live = venues::instrument(Exchange::Binance, missing).expect_err("not listed");
    let imported = imported_name(missing).expect_err("not listed");
    assert!(imported.is_terminal());
    assert_eq!(imported.to_string(), live.to_string());
    assert!(live.to_string().starts_with("binance: "), "{live}");
    assert!(live.to_string().contains("\"ETHUSDT\""), "{live}");
    assert!(
        binance::subscribe_requests(binance::Feed::AggTrade, &[missing], 1).is_err(),
        "the feed refuses to subscribe a symbol the list lacks"
    );

    // With the exchange gone, the next load reads the cached list.
    sim.shutdown().await.expect("clean shutdown");
    let mut options = LoadOptions::from_config(&config);
    options.timeout = Duration::from_secs(3);
    let again = instruments::load(&configured_sources(&config), &options).await;
    for outcome in &again.outcomes {
        assert!(
            matches!(outcome.source, NameSource::Cached { .. }),
            "{}: {:?}",
            outcome.exchange,
            outcome.source
        );
        assert!(outcome.warning().is_some());
    }
    assert_eq!(
        again
            .instruments
            .name(Exchange::Binance, BINANCE_UNSPLITTABLE.0)
            .as_deref(),
        Ok("ABC-XYZ")
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test]
async fn the_worker_loads_the_list_and_publishes_its_names() {
    let sim = simulator().await;
    let mut config = common::config("instruments");
    config.topics.partitions = 1;
    config.ingest.watermark_interval_ms = 200;
    config.ingest.reconnect_min_ms = 50;
    let cache = cache_dir();
    let mut ingest = ingest_config(&sim, &cache);
    ingest.feeds.truncate(1);
    ingest.feeds[0].symbols = binance_symbols();
    let feed = ingest.feeds[0].clone();
    config.ingest.feeds = ingest.feeds;
    config.ingest.instruments_cache_dir = ingest.instruments_cache_dir;

    let mut worker = Worker::start(config.clone(), CancellationToken::new())
        .await
        .expect("worker starts");
    // Worker::start installed the simulator's list.
    assert_eq!(
        venues::instrument(Exchange::Binance, BINANCE_UNSPLITTABLE.0).as_deref(),
        Ok("ABC-XYZ")
    );
    let handle = worker
        .start_feed(&feed, Role::Primary)
        .expect("feed starts");
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while handle.stats().live_connections < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no live connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let symbols = binance_symbols();
    let mut made = 0;
    for symbol in &symbols {
        sim.generate(Exchange::Binance, symbol, 2)
            .expect("generate");
        made += sim
            .feed_history(Feed::Binance(binance::Feed::AggTrade), symbol)
            .expect("history")
            .len() as u64;
    }
    while handle.stats().trades_published < made {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {made} trades published",
            handle.stats().trades_published
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.expect("worker stops cleanly");

    let contents = common::trades::read_trades_topic(&config).await;
    for listed in BINANCE.iter().chain([&BINANCE_UNSPLITTABLE]) {
        let trades = contents
            .trades
            .get(&format!("binance:{}", listed.0))
            .unwrap_or_else(|| panic!("{}: no trades published", listed.0));
        let want = instrument(*listed).name();
        assert!(!trades.is_empty());
        assert!(
            trades.iter().all(|t| t.instrument == want),
            "{}: {:?}",
            listed.0,
            trades.iter().map(|t| &t.instrument).collect::<Vec<_>>()
        );
    }
    sim.shutdown().await.expect("clean shutdown");
    let _ = std::fs::remove_dir_all(&cache);
}

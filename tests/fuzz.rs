//! Bounded fuzzing (property tests with `proptest`) of every parser of
//! outside input, sized to run in CI on every build.
//!
//! # What is fuzzed
//!
//! | test | target |
//! | --- | --- |
//! | `frames_<exchange>` | `ingest::venues::parse_frame` for Binance, Upbit, Coinbase, Bybit, OKX |
//! | `rest_pages_<exchange>` | `Feed::parse_rest_trades` for every feed of the exchange |
//! | `decode_lines`, `decode_reader_blocks` | `ingest::decode::decode_line` and `decode_reader` (what `tickfetch decode` reads) |
//! | `import_rows` | `import::TradeReader` on `binance-aggtrades-csv`, `binance-trades-csv` and `trades-jsonl` (what `tickfetch import` reads) |
//! | `wire_records` | `wire::Envelope::decode` as trades and as candles (watermarks and gap markers by their kind header) and `Envelope::epoch`, on random payloads and headers |
//! | `config_files` | `config::ConfigLoader::load` on mutated copies of a valid config file covering every section |
//!
//! # Inputs
//!
//! Seeds are the real recordings under `shared/data/exchanges/<exchange>/`
//! and the Binance XRP/ETH oracle (see `shared/data/SOURCES.md`), read in
//! place and never copied into the project; REST pages, CSV rows, JSON
//! lines and records are also derived from them by restructuring (values
//! unchanged), and a few replies are taken from the adapters' doc comments.
//! Seeds are grouped by what they parse to (a trade frame, an ack, a kline,
//! an error…) and a group is picked first, so rare kinds get as many cases
//! as common ones. Each case applies up to six mutations to a seed: bit
//! flips, byte sets, inserted and removed bytes, truncation anywhere and
//! right before or after every kind of structural character, a value
//! replaced by a token (negative, zero, huge, `NaN`, `1e400`, `-0`, `0.0`,
//! `""`, out-of-range times, random numbers, strings, very long strings, deep
//! nesting, random JSON values), keys renamed, members deleted or repeated,
//! values wrapped in deep nesting, runs repeated into long strings, invalid
//! UTF-8, and splices of other seeds. One case in ten is fully random bytes
//! or a random JSON value instead.
//!
//! # Properties (every target)
//!
//! - no panic (proptest catches it and shrinks the input);
//! - each parse finishes in under [`PARSE_TIME_LIMIT`]; a watchdog aborts the
//!   run, printing the input, when one runs for [`HANG_LIMIT`];
//! - a parse's peak heap growth (a counting global allocator, per thread) is
//!   at most [`ALLOC_FACTOR`] × the input plus [`ALLOC_SLACK`], and its
//!   outputs are bounded by the input (trades, topics, rows ≤ input bytes);
//! - an error's message (`Display`, what becomes a dead letter's reason) is
//!   non-empty and at most [`MAX_REASON_BYTES`].
//!
//! Frames, REST pages, decoded lines and imported rows, when they parse:
//! every trade has price > 0, quantity > 0, a non-empty trade id, symbol
//! and instrument, an exchange time in 2009-01-01..2100-01-01, the receive
//! time it was given, first ≤ last raw id, trades oldest first, and it reads
//! back unchanged from its wire JSON. Records that decode encode and decode
//! back to the same value, and a record's kind header decides what it
//! decodes to. The config loader returns `Ok` or a `ConfigError`.
//!
//! # Running
//!
//! `cargo test --test fuzz`. `TICKFETCH_FUZZ_CASES=N` sets the cases of every
//! target (defaults below keep the whole file under a minute and a half in
//! a debug build on two cores); `TICKFETCH_FUZZ_SEED=S` repeats a run (each
//! test prints its seed). Without the shared data each test prints
//! "skipping: …" and passes, except in CI (`CI` set), where it fails
//! (`common::shared_data`). Nothing is written under `tests/` (no proptest
//! regression files); the config target writes its files to a temporary
//! directory and removes it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError, TestRunner};
use rdkafka::message::Headers;
use rust_decimal::Decimal;
use serde_json::Value;

use tickfetch::config::{ConfigLoader, KafkaProtocol};
use tickfetch::coord::epoch::Epoch;
use tickfetch::import::{candles_from_reader, ImportFormat, TradeReader};
use tickfetch::ingest::decode::{self, Line};
use tickfetch::ingest::venues::{self, Feed, Frame};
use tickfetch::model::{Candle, Exchange, GapMarker, Interval, Millis, Trade, Watermark};
use tickfetch::rollup::engine::PipelineConfig;
use tickfetch::wire::{Body, DataRecord, Encoder, Envelope, Received, EPOCH_HEADER, KIND_HEADER};

// ---------------------------------------------------------------------------
// Limits.

/// One parse of one input must finish within this: a bound against
/// runaway work (a parse takes microseconds), loose enough that a loaded
/// machine's scheduling never trips it; not a speed check.
const PARSE_TIME_LIMIT: Duration = Duration::from_secs(5);
/// A case still running after this is a hang: the watchdog aborts the run.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Peak heap growth of one parse: at most this many times the input…
const ALLOC_FACTOR: u64 = 32;
/// …plus this much.
const ALLOC_SLACK: u64 = 256 * 1024;
/// The config loader's factor instead: the `toml` crate keeps a document
/// model (spans, decor, a table per section) of the whole file, some 75
/// times the text at most in the runs so far.
const CONFIG_ALLOC_FACTOR: u64 = 256;
/// Longest error message (a dead letter's reason header).
const MAX_REASON_BYTES: usize = 1024;
/// 2009-01-01T00:00:00Z: no exchange time before it is real.
const MIN_TIME: Millis = 1_230_768_000_000;
/// 2100-01-01T00:00:00Z: no exchange time from it on is real.
const MAX_TIME: Millis = 4_102_444_800_000;
/// Larger recorded frames (Coinbase level2 snapshots) are left out of the
/// seeds, to keep each case fast.
const MAX_SEED_BYTES: usize = 64 * 1024;
/// Seeds kept per group (evenly spaced over the recording).
const MAX_SEEDS_PER_GROUP: usize = 200;

// ---------------------------------------------------------------------------
// A counting allocator: the peak of live heap bytes per thread.

struct CountingAllocator;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note_alloc(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as i64;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

fn note_free(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as i64));
}

// SAFETY: every call forwards to the system allocator unchanged; the
// allocator only counts sizes in thread-locals that never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note_alloc(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note_alloc(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Old and new block both count for a moment: a conservative peak.
            note_alloc(new_size);
            note_free(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What one parse cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    elapsed: Duration,
    peak_bytes: u64,
}

/// Runs `parse`, measuring its time and its peak heap growth (with its
/// result still alive).
fn measure<R>(parse: impl FnOnce() -> R) -> (R, Cost) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let started = Instant::now();
    let out = parse();
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get) - start;
    (
        out,
        Cost {
            elapsed,
            peak_bytes: peak.max(0) as u64,
        },
    )
}

/// What a target saw, for the summary line.
#[derive(Debug, Default)]
struct Stats {
    slowest_us: AtomicU64,
    peak_bytes: AtomicU64,
    /// Peak bytes per input byte, × 100, of inputs of at least 1 KB.
    peak_ratio_x100: AtomicU64,
    longest_message: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    trades: AtomicU64,
}

impl Stats {
    /// One parse's cost within the limits ([`ALLOC_FACTOR`], [`ALLOC_SLACK`]).
    fn cost(&self, cost: Cost, input_len: usize) -> Result<(), TestCaseError> {
        self.cost_within(cost, input_len, ALLOC_FACTOR, ALLOC_SLACK)
    }

    fn cost_within(
        &self,
        cost: Cost,
        input_len: usize,
        factor: u64,
        slack: u64,
    ) -> Result<(), TestCaseError> {
        prop_assert!(
            cost.elapsed < PARSE_TIME_LIMIT,
            "one parse of {input_len} bytes took {:?} (limit {PARSE_TIME_LIMIT:?})",
            cost.elapsed
        );
        let limit = factor * input_len as u64 + slack;
        prop_assert!(
            cost.peak_bytes <= limit,
            "one parse of {input_len} bytes grew the heap by {} bytes at its peak (limit {limit})",
            cost.peak_bytes
        );
        self.slowest_us.fetch_max(
            u64::try_from(cost.elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.peak_bytes
            .fetch_max(cost.peak_bytes, Ordering::Relaxed);
        if input_len >= 1024 {
            self.peak_ratio_x100
                .fetch_max(cost.peak_bytes * 100 / input_len as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// An error's message: non-empty and bounded.
    fn message(&self, message: &str) -> Result<(), TestCaseError> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.longest_message
            .fetch_max(message.len() as u64, Ordering::Relaxed);
        prop_assert!(!message.trim().is_empty(), "an error with an empty message");
        prop_assert!(
            message.len() <= MAX_REASON_BYTES,
            "an error message of {} bytes (limit {MAX_REASON_BYTES}): {}…",
            message.len(),
            message.chars().take(300).collect::<String>()
        );
        Ok(())
    }

    /// An error's message that only has to be non-empty (config errors go
    /// to the operator's terminal, not into a record header).
    fn unbounded_message(&self, message: &str) -> Result<(), TestCaseError> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.longest_message
            .fetch_max(message.len() as u64, Ordering::Relaxed);
        prop_assert!(!message.trim().is_empty(), "an error with an empty message");
        Ok(())
    }

    fn ok(&self, trades: usize) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.trades.fetch_add(trades as u64, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The runner.

/// Cases of a target: `TICKFETCH_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    match std::env::var("TICKFETCH_FUZZ_CASES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TICKFETCH_FUZZ_CASES={text:?} is not a number")),
        Err(_) => default,
    }
}

/// The RNG seed: `TICKFETCH_FUZZ_SEED`, else a fresh one (printed).
fn rng_seed() -> u64 {
    match std::env::var("TICKFETCH_FUZZ_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TICKFETCH_FUZZ_SEED={text:?} is not a number")),
        Err(_) => rand::random(),
    }
}

/// Aborts the process when one case runs for [`HANG_LIMIT`]: a hang would
/// otherwise only show as the CI job's timeout, without the input.
struct Watchdog {
    shared: Arc<WatchShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Running = Option<(Instant, Box<dyn fmt::Debug + Send>)>;

struct WatchShared {
    current: Mutex<Running>,
    done: AtomicBool,
}

impl Watchdog {
    fn start(name: &str) -> Watchdog {
        let shared = Arc::new(WatchShared {
            current: Mutex::new(None),
            done: AtomicBool::new(false),
        });
        let watched = Arc::clone(&shared);
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !watched.done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let current = watched
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some((since, input)) = current.as_ref() {
                    if since.elapsed() > HANG_LIMIT {
                        eprintln!(
                            "fuzz {name}: one case has run for {:?}; aborting. Input: {input:?}",
                            since.elapsed()
                        );
                        std::process::abort();
                    }
                }
            }
        });
        Watchdog {
            shared,
            thread: Some(thread),
        }
    }

    fn begin(&self, input: Box<dyn fmt::Debug + Send>) {
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), input));
    }

    fn end(&self) {
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `check` on `cases(default_cases)` inputs of `strategy`; panics with
/// the shrunk failing input and the seed to repeat it.
fn fuzz<T, S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    check: impl Fn(&T, &Stats) -> Result<(), TestCaseError>,
) where
    T: fmt::Debug + Clone + Send + 'static,
    S: Strategy<Value = T>,
{
    let seed = rng_seed();
    let config = ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 4096,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    };
    let case_count = config.cases;
    let mut runner = TestRunner::new(config);
    let stats = Stats::default();
    let watchdog = Watchdog::start(name);
    let started = Instant::now();
    let result = runner.run(&strategy, |input| {
        watchdog.begin(Box::new(input.clone()));
        let outcome = check(&input, &stats);
        watchdog.end();
        outcome
    });
    drop(watchdog);
    eprintln!(
        "fuzz {name}: {case_count} cases in {:.1?} (TICKFETCH_FUZZ_SEED={seed}): {} ok ({} trades), \
         {} errors (longest message {} B); slowest parse {} µs, peak heap growth {} B \
         (at most {:.1}× the input for inputs ≥ 1 KB)",
        started.elapsed(),
        stats.ok.load(Ordering::Relaxed),
        stats.trades.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        stats.longest_message.load(Ordering::Relaxed),
        stats.slowest_us.load(Ordering::Relaxed),
        stats.peak_bytes.load(Ordering::Relaxed),
        stats.peak_ratio_x100.load(Ordering::Relaxed) as f64 / 100.0,
    );
    if let Err(error) = result {
        panic!("fuzz {name} failed (repeat with TICKFETCH_FUZZ_SEED={seed}): {error}");
    }
}

// ---------------------------------------------------------------------------
// Seeds.

/// Seeds of one kind (what the real parser makes of them).
#[derive(Debug)]
struct Group {
    name: String,
    seeds: Vec<Seed>,
}

#[derive(Debug, Clone)]
struct Seed {
    /// The symbol a REST page or import file is read for.
    symbol: String,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Corpus {
    groups: Vec<Group>,
}

impl Corpus {
    fn add(&mut self, group: &str, symbol: &str, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        if bytes.len() > MAX_SEED_BYTES {
            return;
        }
        let seed = Seed {
            symbol: symbol.to_string(),
            bytes,
        };
        match self.groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.seeds.push(seed),
            None => self.groups.push(Group {
                name: group.to_string(),
                seeds: vec![seed],
            }),
        }
    }

    /// Thins every group to [`MAX_SEEDS_PER_GROUP`] evenly spaced seeds.
    fn finish(mut self) -> Corpus {
        for group in &mut self.groups {
            let n = group.seeds.len();
            if n > MAX_SEEDS_PER_GROUP {
                group.seeds = (0..MAX_SEEDS_PER_GROUP)
                    .map(|i| group.seeds[i * n / MAX_SEEDS_PER_GROUP].clone())
                    .collect();
            }
        }
        self.groups.retain(|g| !g.seeds.is_empty());
        self
    }

    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    fn seed_count(&self) -> usize {
        self.groups.iter().map(|g| g.seeds.len()).sum()
    }
}

fn read(root: &Path, relative: &str) -> String {
    let path = root.join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How a recording file holds its frames.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// One line per message: a recording (`*_extract_*.jsonl`) or a
    /// cryptofeed capture, unwrapped by `decode::unwrap_line`.
    Lines,
    /// A JKorf test file: `> sent`, `< ack`, `=` and the update.
    JKorf,
    /// The whole file is one frame.
    Whole,
}

use Exchange::{Binance, Bybit, Coinbase, Okx, Upbit};

/// Every recording of received frames, by exchange.
const FRAME_FILES: &[(Exchange, &str, Source)] = &[
    (
        Binance,
        "binance/cryptofeed_BINANCE_spot_ws_2021-10-12.txt",
        Source::Lines,
    ),
    (
        Binance,
        "binance/cryptofeed_BINANCE_US_ws_2021-10-12.txt",
        Source::Lines,
    ),
    (
        Binance,
        "binance/binance_spot_aggTrade_kline_extract_2021-10-12.jsonl",
        Source::Lines,
    ),
    (
        Binance,
        "binance/binance_us_aggTrade_kline_extract_2021-10-12.jsonl",
        Source::Lines,
    ),
    (
        Binance,
        "binance/nautilus_ws_spot_trade_ETHUSDT.json",
        Source::Whole,
    ),
    (
        Binance,
        "binance/nautilus_ws_spot_aggTrade_ETHUSDT.json",
        Source::Whole,
    ),
    (
        Upbit,
        "upbit/cryptofeed_UPBIT_ws_SIMPLE_2021-04-17.txt",
        Source::Lines,
    ),
    (
        Upbit,
        "upbit/upbit_trade_SIMPLE_extract_2021-04-17.jsonl",
        Source::Lines,
    ),
    (
        Upbit,
        "upbit/JKorf_Upbit.Net_ws_trade_DEFAULT.txt",
        Source::JKorf,
    ),
    (
        Upbit,
        "upbit/JKorf_Upbit.Net_ws_candle_1m.txt",
        Source::JKorf,
    ),
    (
        Coinbase,
        "coinbase/cryptofeed_COINBASE_exchange_ws_2021-04-17.txt",
        Source::Lines,
    ),
    (
        Coinbase,
        "coinbase/coinbase_exchange_matches_extract_2021-04-17.jsonl",
        Source::Lines,
    ),
    (
        Coinbase,
        "coinbase/JKorf_Coinbase.Net_advanced_market_trades.txt",
        Source::JKorf,
    ),
    (
        Coinbase,
        "coinbase/JKorf_Coinbase.Net_advanced_heartbeats.txt",
        Source::JKorf,
    ),
    (
        Coinbase,
        "coinbase/JKorf_Coinbase.Net_advanced_candles.txt",
        Source::JKorf,
    ),
    (
        Coinbase,
        "coinbase/nautilus_advanced_ws_market_trades.json",
        Source::Whole,
    ),
    (
        Coinbase,
        "coinbase/nautilus_advanced_ws_heartbeats.json",
        Source::Whole,
    ),
    (
        Coinbase,
        "coinbase/nautilus_advanced_ws_subscriptions.json",
        Source::Whole,
    ),
    (
        Coinbase,
        "coinbase/nautilus_advanced_ws_candles.json",
        Source::Whole,
    ),
    (
        Bybit,
        "bybit/nautilus_v5_publicTrade_docs_example.json",
        Source::Whole,
    ),
    (
        Bybit,
        "bybit/nautilus_v5_kline_docs_example.json",
        Source::Whole,
    ),
    (
        Bybit,
        "bybit/nautilus_v5_subscription_ack.json",
        Source::Whole,
    ),
    (
        Bybit,
        "bybit/nautilus_v5_subscription_failure.json",
        Source::Whole,
    ),
    (
        Bybit,
        "bybit/JKorf_Bybit.Net_v5_spot_publicTrade.txt",
        Source::JKorf,
    ),
    (
        Bybit,
        "bybit/JKorf_Bybit.Net_v5_linear_publicTrade.txt",
        Source::JKorf,
    ),
    (
        Bybit,
        "bybit/bybit_LEGACY_v1_trade_extract_2021-04-17.jsonl",
        Source::Lines,
    ),
    (
        Okx,
        "okx/cryptofeed_OKX_v5_ws_2022-05-13.txt",
        Source::Lines,
    ),
    (
        Okx,
        "okx/okx_v5_trades_extract_2022-05-13.jsonl",
        Source::Lines,
    ),
    (
        Okx,
        "okx/nautilus_v5_ws_trades_docs_example.json",
        Source::Whole,
    ),
    (
        Okx,
        "okx/nautilus_v5_ws_candle_docs_example.json",
        Source::Whole,
    ),
];

/// Replies that no recording holds, from the adapters' doc comments.
const HAND_FRAMES: &[(Exchange, &str)] = &[
    (Binance, r#"{"result":null,"id":1}"#),
    (
        Binance,
        r#"{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"},"id":1}"#,
    ),
    (Binance, r#"{"code":2,"msg":"Invalid request","id":1}"#),
    (Upbit, r#"{"status":"UP"}"#),
    (
        Upbit,
        r#"{"error":{"name":"INVALID_PARAM","message":"Invalid parameter"}}"#,
    ),
    (
        Coinbase,
        r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#,
    ),
    (
        Coinbase,
        r#"{"type":"error","message":"Failed to subscribe","reason":"FOO-BAR is not a valid product"}"#,
    ),
    (
        Bybit,
        r#"{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}"#,
    ),
    (Okx, "pong"),
    (
        Okx,
        r#"{"event":"error","code":"60012","msg":"Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : \"trades\", \"instId\" : \"BTC-USDT\"}]}"}"#,
    ),
];

/// The messages of a JKorf file: what was sent, the ack, the update.
fn jkorf_messages(text: &str) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut update = Vec::new();
    let mut in_update = false;
    for line in text.lines() {
        if in_update {
            update.push(line);
        } else if let Some(rest) = line.strip_prefix("> ").or_else(|| line.strip_prefix("< ")) {
            messages.push(rest.as_bytes().to_vec());
        } else if line.trim() == "=" {
            in_update = true;
        }
    }
    messages.push(update.join("\n").into_bytes());
    messages
}

/// The received payloads of a file.
fn payloads(text: &str, source: Source) -> Vec<Vec<u8>> {
    match source {
        Source::Lines => text
            .lines()
            .filter_map(|line| match decode::unwrap_line(line.as_bytes(), 0) {
                Ok(Line::Frame { payload, .. }) => Some(payload.into_owned()),
                _ => None,
            })
            .collect(),
        Source::JKorf => jkorf_messages(text),
        Source::Whole => vec![text.as_bytes().to_vec()],
    }
}

/// What the real parser makes of a seed: its group.
fn kind_of(exchange: Exchange, payload: &[u8]) -> String {
    match venues::parse_frame(exchange, payload, 0) {
        Ok(frame) => frame.kind().to_string(),
        Err(_) => "error".to_string(),
    }
}

fn exchanges_root() -> Option<PathBuf> {
    common::shared_data("exchanges")
}

/// Frame seeds per exchange, grouped by kind, with a group of the other
/// exchanges' trade frames.
fn frame_corpora() -> Option<&'static BTreeMap<Exchange, Arc<Corpus>>> {
    static CORPORA: OnceLock<Option<BTreeMap<Exchange, Arc<Corpus>>>> = OnceLock::new();
    CORPORA
        .get_or_init(|| {
            let root = exchanges_root()?;
            let mut by_exchange: BTreeMap<Exchange, Vec<(String, Vec<u8>)>> = BTreeMap::new();
            for (exchange, file, source) in FRAME_FILES {
                for payload in payloads(&read(&root, file), *source) {
                    let kind = kind_of(*exchange, &payload);
                    if *exchange == Binance {
                        // The raw-stream form of a combined-stream event.
                        if let Ok(value) = serde_json::from_slice::<Value>(&payload) {
                            if value.get("data").is_some_and(Value::is_object) {
                                let bare = value["data"].to_string().into_bytes();
                                by_exchange
                                    .entry(Binance)
                                    .or_default()
                                    .push((format!("bare {}", kind_of(Binance, &bare)), bare));
                            }
                        }
                    }
                    by_exchange
                        .entry(*exchange)
                        .or_default()
                        .push((kind, payload));
                }
            }
            for (exchange, text) in HAND_FRAMES {
                let kind = kind_of(*exchange, text.as_bytes());
                by_exchange
                    .entry(*exchange)
                    .or_default()
                    .push((kind, text.as_bytes().to_vec()));
            }
            let mut corpora = BTreeMap::new();
            for exchange in Exchange::ALL {
                let mut corpus = Corpus::default();
                for (kind, payload) in by_exchange.get(&exchange).into_iter().flatten() {
                    corpus.add(kind, "", payload.clone());
                }
                for (other, frames) in &by_exchange {
                    if *other != exchange {
                        for (kind, payload) in frames.iter().filter(|(k, _)| k == "trades") {
                            corpus.add(&format!("{other} {kind}"), "", payload.clone());
                        }
                    }
                }
                corpora.insert(exchange, Arc::new(corpus.finish()));
            }
            Some(corpora)
        })
        .as_ref()
}

// ---------------------------------------------------------------------------
// Mutations.

/// What a mutation's spans are found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Json,
    Csv,
    Toml,
}

/// Characters at which a truncation is most interesting.
const STRUCTURAL: &[u8] = b"{}[],:\".\n= \\-e";

/// Byte sequences that are not UTF-8.
const BAD_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\x80",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x00",
];

/// Values that parsers get wrong: signs, zeros, overflows, exponent forms,
/// non-numbers, times at and outside the plausible range, sides, kinds.
const TOKENS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "0.000",
    "00",
    "01",
    "+1",
    "-1",
    "1",
    "-0.00000001",
    "1e400",
    "-1e400",
    "1e-400",
    "1E+2",
    "1e",
    "e5",
    ".5",
    "5.",
    "1.2.3",
    "1_000",
    "0x10",
    "NaN",
    "nan",
    "-nan",
    "Infinity",
    "-Infinity",
    "inf",
    "-inf",
    "null",
    "true",
    "false",
    "",
    " ",
    " 1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "79228162514264337593543950335",
    "79228162514264337593543950336",
    "-79228162514264337593543950336",
    "0.0000000000000000000000000001",
    "0.00000000000000000000000000001",
    "1.00000000000000000000000000001",
    "123456789012345678901234567890.5",
    "1e28",
    "1e29",
    "1e-28",
    "1e-29",
    "4.2e-7",
    "1230767999999",
    "1230768000000",
    "4102444799999",
    "4102444800000",
    "253402300799999",
    "253402300800000",
    "1633998523",
    "1633998523.963",
    "1633998523963",
    "1633998523963000",
    "1633998523963000000",
    "-1633998523963",
    "2021-04-17T16:43:30.244075Z",
    "2021-04-17T16:43:30Z",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "+262143-12-31T23:59:59Z",
    "-262143-01-01T00:00:00Z",
    "2021-04-17T16:43:30.244075+01:00",
    "2021-02-30T00:00:00Z",
    "2021-04-17 16:43:30.5+0000",
    "BUY",
    "SELL",
    "buy",
    "sell",
    "Buy",
    "Sell",
    "ASK",
    "BID",
    "UNKNOWN_ORDER_SIDE",
    "aggTrade",
    "trade",
    "match",
    "last_match",
    "market_trades",
    "heartbeats",
    "subscriptions",
    "publicTrade.BTCUSDT",
    "trades",
    "trades-all",
    "heartbeat",
    "subscribe",
    "error",
    "pong",
    "ping",
    "UP",
    "BTCUSDT",
    "btcusdt",
    "KRW-BTC",
    "BTC-USD",
    "BTC-USDT",
    "BTC-USDT-SWAP",
    "-",
    "USDT",
    "KRW-",
    "-BTC",
    "BTC--USDT",
    "é",
    "\u{0}",
    "x@trade",
    "@aggTrade",
];

/// The tokens behind most parser bugs, drawn more often than the rest.
const HOT_TOKENS: &[&str] = &[
    "",
    "0",
    "-1",
    "-0",
    "0.0",
    "1e400",
    "NaN",
    " ",
    "null",
    "1633998523",
    "1633998523963000",
];

/// Field names of the exchanges' messages and of tickfetch's own records.
const FIELD_NAMES: &[&str] = &[
    "e",
    "E",
    "s",
    "t",
    "a",
    "p",
    "q",
    "f",
    "l",
    "T",
    "m",
    "M",
    "b",
    "stream",
    "data",
    "result",
    "id",
    "error",
    "code",
    "msg",
    "ty",
    "type",
    "cd",
    "tms",
    "ttms",
    "tp",
    "tv",
    "ab",
    "sid",
    "status",
    "timestamp",
    "trade_timestamp",
    "trade_price",
    "trade_volume",
    "ask_bid",
    "sequential_id",
    "market",
    "trade_id",
    "side",
    "size",
    "price",
    "product_id",
    "time",
    "channel",
    "events",
    "trades",
    "subscriptions",
    "last_trade_id",
    "topic",
    "ts",
    "S",
    "v",
    "i",
    "op",
    "success",
    "ret_msg",
    "req_id",
    "retCode",
    "retMsg",
    "list",
    "execId",
    "symbol",
    "arg",
    "instId",
    "tradeId",
    "px",
    "sz",
    "count",
    "event",
    "message",
    "reason",
    "recv_ts",
    "dir",
    "raw",
    "exchange",
    "instrument",
    "quantity",
    "exchange_time",
    "receive_time",
    "first_trade_id",
    "interval",
    "open_time",
    "close_time",
    "open",
    "volume",
    "revision",
    "first_missing",
    "to_time",
];

/// TOML values of the config's kinds, right and wrong.
const TOML_VALUES: &[&str] = &[
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ value = \"\" }",
    "{ value = \"x\" }",
    "{ file = \"/nonexistent/tickfetch-fuzz\" }",
    "{ env = \"TICKFETCH_FUZZ_UNSET_VARIABLE\" }",
    "{ value = \"x\", env = \"Y\" }",
    "{ pass = \"x\" }",
    "'literal'",
    "\"\"\"multi\nline\"\"\"",
    "'''lit'''",
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "0o17",
    "0b101",
    "0xdead_beef",
    "+inf",
    "-nan",
    "\"exactly-once\"",
    "\"at-least-once\"",
    "\"at-most-once\"",
    "\"sasl_ssl\"",
    "\"ssl\"",
    "\"sasl_plaintext\"",
    "\"plaintext\"",
    "\"kerberos\"",
    "\"PLAIN\"",
    "\"SCRAM-SHA-512\"",
    "\"GSSAPI\"",
    "\"binance\"",
    "\"kraken\"",
    "\"aggTrade\"",
    "[\"1s\", \"1h\"]",
    "\"json\"",
    "\"xml\"",
    "\"fetch\"",
    "\"builtin\"",
    "\"auto\"",
    "\"0.0.0.0:0\"",
    "\"\"",
    "-2147483649",
    "4294967296",
];

/// Keys of the config file.
const TOML_KEYS: &[&str] = &[
    "bootstrap",
    "options",
    "security",
    "protocol",
    "sasl_mechanism",
    "username",
    "password",
    "ca_file",
    "cert_file",
    "key_file",
    "prefix",
    "partitions",
    "endpoints",
    "epochs",
    "uri",
    "database",
    "grace_ms",
    "retention_ms",
    "commit_interval_ms",
    "max_batch",
    "guarantee",
    "group_prefix",
    "session_timeout_ms",
    "intervals",
    "trades",
    "batch_size",
    "group_id",
    "feeds",
    "exchange",
    "symbols",
    "feed",
    "worker_id",
    "capacity",
    "http_addr",
    "log_format",
    "kafka",
    "kafka.security",
    "topics",
    "etcd",
    "mongodb",
    "rollup",
    "sink",
    "ingest",
    "cluster",
    "telemetry",
    "[ingest.feeds]",
    "a.b",
    "\"\"",
    "",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
    /// Cut right before (or after) the n-th occurrence of a structural character.
    TruncateAt {
        class: usize,
        nth: Index,
        after: bool,
    },
    ReplaceValue {
        nth: Index,
        token: String,
    },
    ReplaceKey {
        nth: Index,
        token: String,
    },
    DeleteMember {
        nth: Index,
    },
    DuplicateMember {
        nth: Index,
    },
    Wrap {
        nth: Index,
        depth: usize,
        array: bool,
    },
    /// Repeat a run of bytes: long strings and numbers.
    Repeat {
        at: Index,
        len: usize,
        times: usize,
    },
    BadUtf8 {
        at: Index,
        which: usize,
    },
    /// Insert a piece of another seed.
    Splice {
        group: Index,
        seed: Index,
        from: Index,
        to: Index,
        at: Index,
    },
    DeleteLine {
        nth: Index,
    },
    DuplicateLine {
        nth: Index,
    },
}

/// Where a mutation can act: byte ranges `[start, end)`.
#[derive(Debug, Default)]
struct Spans {
    values: Vec<(usize, usize)>,
    keys: Vec<(usize, usize)>,
    members: Vec<(usize, usize)>,
    containers: Vec<(usize, usize)>,
    lines: Vec<(usize, usize)>,
}

fn string_end(s: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

fn token_end(s: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < s.len()
        && !matches!(
            s[i],
            b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'{' | b'[' | b'='
        )
    {
        i += 1;
    }
    i.max(start + 1)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// A tolerant JSON scanner (works on broken JSON too).
fn json_spans(s: &[u8], spans: &mut Spans) {
    let mut stack: Vec<(usize, Option<usize>)> = Vec::new();
    let mut pending_key: Option<usize> = None;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {
                let end = string_end(s, i);
                let next = skip_ws(s, end);
                if next < s.len() && s[next] == b':' {
                    spans.keys.push((i, end));
                    pending_key = Some(i);
                    i = next + 1;
                } else {
                    spans.values.push((i, end));
                    if let Some(key) = pending_key.take() {
                        spans.members.push((key, end));
                    }
                    i = end;
                }
            }
            b'{' | b'[' => {
                stack.push((i, pending_key.take()));
                i += 1;
            }
            b'}' | b']' => {
                if let Some((open, key)) = stack.pop() {
                    spans.containers.push((open, i + 1));
                    if let Some(key) = key {
                        spans.members.push((key, i + 1));
                    }
                }
                i += 1;
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => {
                let end = token_end(s, i);
                spans.values.push((i, end));
                if let Some(key) = pending_key.take() {
                    spans.members.push((key, end));
                }
                i = end;
            }
            _ => i += 1,
        }
    }
}

fn line_spans(s: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in s.iter().enumerate() {
        if *b == b'\n' {
            lines.push((start, i));
            start = i + 1;
        }
    }
    if start < s.len() {
        lines.push((start, s.len()));
    }
    lines
}

fn trim_span(s: &[u8], (mut a, mut b): (usize, usize)) -> (usize, usize) {
    while a < b && s[a].is_ascii_whitespace() {
        a += 1;
    }
    while b > a && s[b - 1].is_ascii_whitespace() {
        b -= 1;
    }
    (a, b)
}

fn spans(syntax: Syntax, s: &[u8]) -> Spans {
    let mut spans = Spans {
        lines: line_spans(s),
        ..Spans::default()
    };
    match syntax {
        Syntax::Json => json_spans(s, &mut spans),
        Syntax::Csv => {
            let mut start = 0;
            for (i, b) in s.iter().enumerate() {
                if matches!(b, b',' | b'\n') {
                    spans.values.push((start, i));
                    start = i + 1;
                }
            }
            spans.values.push((start, s.len()));
            spans.members = spans.values.clone();
            spans.containers = spans.lines.clone();
        }
        Syntax::Toml => {
            for &(a, b) in &spans.lines.clone() {
                let (a, b) = trim_span(s, (a, b));
                if a == b || s[a] == b'#' {
                    continue;
                }
                spans.members.push((a, b));
                if s[a] == b'[' {
                    spans.keys.push((a, b));
                } else if let Some(eq) = s[a..b].iter().position(|c| *c == b'=') {
                    spans.keys.push(trim_span(s, (a, a + eq)));
                    spans.values.push(trim_span(s, (a + eq + 1, b)));
                }
            }
            let mut inner = Spans::default();
            json_spans(s, &mut inner);
            spans.values.extend(
                inner
                    .values
                    .into_iter()
                    .filter(|&(a, _)| matches!(s[a], b'"' | b'0'..=b'9' | b'-')),
            );
            spans.containers = inner.containers;
        }
    }
    spans
}

/// An insertion point in `0..=len`.
fn insert_at(at: &Index, len: usize) -> usize {
    at.index(len + 1)
}

fn pick(spans: &[(usize, usize)], nth: &Index) -> Option<(usize, usize)> {
    (!spans.is_empty()).then(|| spans[nth.index(spans.len())])
}

fn apply(mutation: &Mutation, data: &mut Vec<u8>, syntax: Syntax, corpus: &Corpus) {
    let len = data.len();
    match mutation {
        Mutation::FlipBit { at, bit } => {
            if len > 0 {
                data[at.index(len)] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte { at, byte } => {
            if len > 0 {
                data[at.index(len)] = *byte;
            }
        }
        Mutation::Insert { at, bytes } => {
            let i = insert_at(at, len);
            data.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            if len > 0 {
                let i = at.index(len);
                data.drain(i..(i + n).min(len));
            }
        }
        Mutation::Truncate { at } => data.truncate(insert_at(at, len)),
        Mutation::TruncateAt { class, nth, after } => {
            let c = STRUCTURAL[class % STRUCTURAL.len()];
            let positions: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == c)
                .map(|(i, _)| i)
                .collect();
            if !positions.is_empty() {
                let p = positions[nth.index(positions.len())];
                data.truncate(if *after { p + 1 } else { p });
            }
        }
        Mutation::ReplaceValue { nth, token } => {
            let spans = spans(syntax, data);
            if let Some((a, b)) = pick(&spans.values, nth) {
                data.splice(a..b, token.bytes());
            }
        }
        Mutation::ReplaceKey { nth, token } => {
            let spans = spans(syntax, data);
            if let Some((a, b)) = pick(&spans.keys, nth).or_else(|| pick(&spans.values, nth)) {
                data.splice(a..b, token.bytes());
            }
        }
        Mutation::DeleteMember { nth } => {
            let spans = spans(syntax, data);
            let candidates = if spans.members.is_empty() {
                &spans.values
            } else {
                &spans.members
            };
            if let Some((a, b)) = pick(candidates, nth) {
                let next = skip_ws(data, b);
                let (a, b) = if next < data.len() && matches!(data[next], b',' | b'\n') {
                    (a, next + 1)
                } else {
                    let mut before = a;
                    while before > 0 && data[before - 1].is_ascii_whitespace() {
                        before -= 1;
                    }
                    if before > 0 && data[before - 1] == b',' {
                        (before - 1, b)
                    } else {
                        (a, b)
                    }
                };
                data.drain(a..b);
            }
        }
        Mutation::DuplicateMember { nth } => {
            let spans = spans(syntax, data);
            let mut candidates = spans.members.clone();
            candidates.extend(&spans.containers);
            if let Some((a, b)) = pick(&candidates, nth) {
                let separator: &[u8] = if syntax == Syntax::Toml { b"\n" } else { b"," };
                let copy: Vec<u8> = separator.iter().chain(&data[a..b]).copied().collect();
                data.splice(b..b, copy);
            }
        }
        Mutation::Wrap { nth, depth, array } => {
            let spans = spans(syntax, data);
            let mut candidates = spans.values.clone();
            candidates.extend(&spans.containers);
            if let Some((a, b)) = pick(&candidates, nth) {
                let (open, close) = if *array {
                    ("[".repeat(*depth), "]".repeat(*depth))
                } else {
                    ("{\"x\":".repeat(*depth), "}".repeat(*depth))
                };
                data.splice(b..b, close.bytes());
                data.splice(a..a, open.bytes());
            }
        }
        Mutation::Repeat { at, len: n, times } => {
            if len > 0 {
                let i = at.index(len);
                let end = (i + n).min(len);
                let run = data[i..end].repeat(*times);
                data.splice(end..end, run);
            }
        }
        Mutation::BadUtf8 { at, which } => {
            let i = insert_at(at, len);
            data.splice(i..i, BAD_UTF8[which % BAD_UTF8.len()].iter().copied());
        }
        Mutation::Splice {
            group,
            seed,
            from,
            to,
            at,
        } => {
            if corpus.groups.is_empty() {
                return;
            }
            let group = &corpus.groups[group.index(corpus.groups.len())];
            let other = &group.seeds[seed.index(group.seeds.len())].bytes;
            if !other.is_empty() {
                let (x, y) = (from.index(other.len()), to.index(other.len()));
                let i = insert_at(at, len);
                data.splice(i..i, other[x.min(y)..=x.max(y)].iter().copied());
            }
        }
        Mutation::DeleteLine { nth } => {
            if let Some((a, b)) = pick(&line_spans(data), nth) {
                data.drain(a..(b + 1).min(len));
            }
        }
        Mutation::DuplicateLine { nth } => {
            if let Some((a, b)) = pick(&line_spans(data), nth) {
                let mut copy = data[a..b].to_vec();
                copy.push(b'\n');
                data.splice(a..a, copy);
            }
        }
    }
}

fn maybe_quoted(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (inner, any::<bool>())
        .prop_map(|(t, quoted)| if quoted { format!("\"{t}\"") } else { t })
        .boxed()
}

/// Number-like text: tokens, random integers and floats, decimal and
/// exponent forms.
fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(TOKENS).prop_map(str::to_string),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        2 => "-?[0-9]{1,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,4})?",
    ]
    .boxed()
}

/// A random JSON value, with the exchanges' field names as most keys.
fn arb_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(TOKENS).prop_map(|t| Value::String(t.to_string())),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            3 => select(FIELD_NAMES).prop_map(str::to_string),
            1 => ".{0,8}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key, inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

fn long_string(quote: bool) -> BoxedStrategy<String> {
    (
        1usize..40_000,
        select(&["a", "9", "é", "\\\\", "\\u0000", " "][..]),
    )
        .prop_map(move |(n, piece)| {
            let body = piece.repeat(n);
            if quote {
                format!("\"{body}\"")
            } else {
                body
            }
        })
        .boxed()
}

/// A replacement value.
fn value_token(syntax: Syntax) -> BoxedStrategy<String> {
    match syntax {
        Syntax::Json => prop_oneof![
            8 => maybe_quoted(number_text()),
            8 => maybe_quoted(select(HOT_TOKENS).prop_map(str::to_string).boxed()),
            1 => any::<String>().prop_map(|s| Value::String(s).to_string()),
            1 => long_string(true),
            1 => (1usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
            2 => arb_json().prop_map(|v| v.to_string()),
            1 => select(FIELD_NAMES).prop_map(|k| format!("\"{k}\"")),
        ]
        .boxed(),
        Syntax::Csv => prop_oneof![
            8 => number_text(),
            4 => select(HOT_TOKENS).prop_map(str::to_string),
            2 => select(&["true", "false", "True", "FALSE", "1", "0", "yes", "t", ""][..])
                .prop_map(str::to_string),
            1 => ".{0,20}",
            1 => long_string(false),
        ]
        .boxed(),
        Syntax::Toml => prop_oneof![
            4 => number_text(),
            2 => maybe_quoted(select(HOT_TOKENS).prop_map(str::to_string).boxed()),
            3 => select(TOML_VALUES).prop_map(str::to_string),
            2 => maybe_quoted(select(TOKENS).prop_map(str::to_string).boxed()),
            1 => any::<String>().prop_map(|s| Value::String(s).to_string()),
            1 => long_string(true),
            1 => (1usize..400).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
            1 => (1usize..200).prop_map(|d| format!("{}1{}", "{ a = ".repeat(d), " }".repeat(d))),
        ]
        .boxed(),
    }
}

/// A replacement key.
fn key_token(syntax: Syntax) -> BoxedStrategy<String> {
    match syntax {
        Syntax::Json | Syntax::Csv => prop_oneof![
            4 => select(FIELD_NAMES).prop_map(|k| format!("\"{k}\"")),
            1 => any::<String>().prop_map(|s| Value::String(s).to_string()),
            1 => Just("\"\"".to_string()),
            1 => select(FIELD_NAMES).prop_map(|k| format!("\"{}\"", k.to_uppercase())),
        ]
        .boxed(),
        Syntax::Toml => prop_oneof![
            4 => select(TOML_KEYS).prop_map(str::to_string),
            1 => "[a-z_]{0,12}",
            1 => any::<String>().prop_map(|s| Value::String(s).to_string()),
            1 => select(TOML_KEYS).prop_map(|k| format!("[{k}]")),
        ]
        .boxed(),
    }
}

fn mutation(syntax: Syntax) -> BoxedStrategy<Mutation> {
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        1 => (any::<Index>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        2 => (0..STRUCTURAL.len(), any::<Index>(), any::<bool>())
            .prop_map(|(class, nth, after)| Mutation::TruncateAt { class, nth, after }),
        8 => (any::<Index>(), value_token(syntax))
            .prop_map(|(nth, token)| Mutation::ReplaceValue { nth, token }),
        2 => (any::<Index>(), key_token(syntax))
            .prop_map(|(nth, token)| Mutation::ReplaceKey { nth, token }),
        2 => any::<Index>().prop_map(|nth| Mutation::DeleteMember { nth }),
        1 => any::<Index>().prop_map(|nth| Mutation::DuplicateMember { nth }),
        1 => (any::<Index>(), 1usize..300, any::<bool>())
            .prop_map(|(nth, depth, array)| Mutation::Wrap { nth, depth, array }),
        1 => (any::<Index>(), 1usize..64, 2usize..500)
            .prop_map(|(at, len, times)| Mutation::Repeat { at, len, times }),
        1 => (any::<Index>(), 0..BAD_UTF8.len())
            .prop_map(|(at, which)| Mutation::BadUtf8 { at, which }),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(group, seed, from, to, at)| Mutation::Splice { group, seed, from, to, at }),
        1 => any::<Index>().prop_map(|nth| Mutation::DeleteLine { nth }),
        1 => any::<Index>().prop_map(|nth| Mutation::DuplicateLine { nth }),
    ]
    .boxed()
}

/// Where a case's bytes came from (read by `Debug`, in failure reports).
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Origin {
    Seed {
        index: usize,
        mutations: Vec<Mutation>,
    },
    Random(&'static str),
}

/// One input: bytes, the seed group (and symbol) they belong to, and how
/// they were made.
#[derive(Clone)]
struct Case {
    group: String,
    symbol: String,
    origin: Origin,
    data: Vec<u8>,
}

/// The bytes as text for a failure message: escaped, cut at 4000 characters.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let shown: String = text.chars().take(4000).collect();
    if shown.len() < text.len() {
        format!("{shown:?}… ({} bytes)", bytes.len())
    } else {
        format!("{shown:?}")
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Case {{ group: {:?}, symbol: {:?}, origin: {:?}, {} bytes: {} }}",
            self.group,
            self.symbol,
            self.origin,
            self.data.len(),
            show(&self.data)
        )
    }
}

fn random_data(syntax: Syntax) -> BoxedStrategy<(&'static str, Vec<u8>)> {
    let text: BoxedStrategy<String> = match syntax {
        Syntax::Json => arb_json().prop_map(|v| v.to_string()).boxed(),
        Syntax::Csv => "[0-9a-zA-Z,.eE+\\-\r\n ]{0,200}".boxed(),
        Syntax::Toml => "[a-z_\\[\\]=\"{}., 0-9\n]{0,300}".boxed(),
    };
    prop_oneof![
        vec(any::<u8>(), 0..512).prop_map(|b| ("random bytes", b)),
        text.prop_map(|t| ("random text", t.into_bytes())),
    ]
    .boxed()
}

/// Mutated seeds of `corpus` (nine in ten) and random inputs.
fn cases_of(corpus: Arc<Corpus>, syntax: Syntax) -> BoxedStrategy<Case> {
    assert!(!corpus.groups.is_empty(), "a corpus without seeds");
    let seeds = Arc::clone(&corpus);
    // Few mutations keep most of a seed valid, so that more cases reach
    // the checks of accepted trades; many find the deeper breakage.
    let mutations = prop_oneof![
        3 => vec(mutation(syntax), 0..=1),
        2 => vec(mutation(syntax), 2..=3),
        1 => vec(mutation(syntax), 4..=6),
    ];
    let mutated = (any::<Index>(), any::<Index>(), mutations).prop_map(move |(g, s, mutations)| {
        let group = &seeds.groups[g.index(seeds.groups.len())];
        let index = s.index(group.seeds.len());
        let seed = &group.seeds[index];
        let mut data = seed.bytes.clone();
        for m in &mutations {
            apply(m, &mut data, syntax, &seeds);
        }
        Case {
            group: group.name.clone(),
            symbol: seed.symbol.clone(),
            origin: Origin::Seed { index, mutations },
            data,
        }
    });
    let random = (any::<Index>(), random_data(syntax)).prop_map(move |(g, (what, data))| {
        let group = &corpus.groups[g.index(corpus.groups.len())];
        Case {
            group: group.name.clone(),
            symbol: group.seeds[0].symbol.clone(),
            origin: Origin::Random(what),
            data,
        }
    });
    prop_oneof![9 => mutated, 1 => random].boxed()
}

fn receive_times() -> BoxedStrategy<Millis> {
    prop_oneof![
        4 => Just(1_700_000_000_000),
        2 => MIN_TIME..MAX_TIME,
        1 => any::<i64>(),
        1 => select(&[0, -1, i64::MIN, i64::MAX][..]),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Checks.

fn iso(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| "out of chrono's range".to_string(), |t| t.to_rfc3339())
}

/// Every property of one trade. `receive_time`: the one it must carry.
fn check_trade(
    trade: &Trade,
    exchange: Exchange,
    receive_time: Option<Millis>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(trade.exchange, exchange, "trade of another exchange");
    prop_assert!(
        trade.price > Decimal::ZERO,
        "price {} accepted: {:?}",
        trade.price,
        trade
    );
    prop_assert!(
        trade.quantity > Decimal::ZERO,
        "quantity {} accepted: {:?}",
        trade.quantity,
        trade
    );
    prop_assert!(!trade.trade_id.is_empty(), "empty trade id: {:?}", trade);
    prop_assert!(!trade.symbol.is_empty(), "empty symbol: {:?}", trade);
    prop_assert!(
        !trade.instrument.is_empty(),
        "empty instrument: {:?}",
        trade
    );
    prop_assert!(
        (MIN_TIME..MAX_TIME).contains(&trade.exchange_time),
        "exchange time {} ({}) accepted: {:?}",
        trade.exchange_time,
        iso(trade.exchange_time),
        trade
    );
    if let Some(receive_time) = receive_time {
        prop_assert_eq!(trade.receive_time, receive_time, "receive time changed");
    }
    match (trade.first_trade_id, trade.last_trade_id) {
        (Some(first), Some(last)) => prop_assert!(
            first <= last,
            "raw ids {}..={} reversed: {:?}",
            first,
            last,
            trade
        ),
        (None, None) => {}
        _ => prop_assert!(false, "only one of the raw ids: {:?}", trade),
    }
    let json = serde_json::to_vec(trade)
        .map_err(|e| TestCaseError::fail(format!("trade does not serialise: {e}: {trade:?}")))?;
    let back: Trade = serde_json::from_slice(&json).map_err(|e| {
        TestCaseError::fail(format!(
            "an accepted trade does not read back from its wire JSON {}: {e}",
            show(&json)
        ))
    })?;
    prop_assert_eq!(&back, trade, "wire JSON round trip changed the trade");
    Ok(())
}

fn check_trades(
    trades: &[Trade],
    exchange: Exchange,
    input_len: usize,
    receive_time: Option<Millis>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        trades.len() <= input_len,
        "{} trades from {} bytes",
        trades.len(),
        input_len
    );
    for trade in trades {
        check_trade(trade, exchange, receive_time)?;
    }
    prop_assert!(
        trades
            .windows(2)
            .all(|w| w[0].exchange_time <= w[1].exchange_time),
        "trades not oldest first: {:?}",
        trades.iter().map(|t| t.exchange_time).collect::<Vec<_>>()
    );
    Ok(())
}

fn check_frame(
    frame: &Frame,
    exchange: Exchange,
    input_len: usize,
    receive_time: Option<Millis>,
    stats: &Stats,
) -> Result<(), TestCaseError> {
    match frame {
        Frame::Trades(trades) => {
            check_trades(trades, exchange, input_len, receive_time)?;
            stats.ok(trades.len());
            return Ok(());
        }
        Frame::SubscribeAck { topics, .. } => prop_assert!(topics.len() <= input_len),
        Frame::SubscribeError(rejection) => {
            prop_assert!(rejection.symbols.len() <= input_len);
        }
        Frame::Heartbeat(heartbeat) => {
            if let Some(time) = heartbeat.exchange_time {
                prop_assert!(
                    (MIN_TIME..MAX_TIME).contains(&time),
                    "heartbeat time {} ({}) accepted",
                    time,
                    iso(time)
                );
            }
        }
        Frame::Pong => {}
        Frame::Other(kind) => prop_assert!(kind.len() <= input_len),
    }
    stats.ok(0);
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. Websocket frames.

fn fuzz_frames(exchange: Exchange, default_cases: u32) {
    let Some(corpora) = frame_corpora() else {
        return;
    };
    let corpus = Arc::clone(&corpora[&exchange]);
    let trade_seeds = corpus.group("trades").map_or(0, |g| g.seeds.len());
    assert!(
        trade_seeds > 0,
        "{exchange}: no recorded frame parses to trades (groups: {:?})",
        corpus.groups.iter().map(|g| &g.name).collect::<Vec<_>>()
    );
    eprintln!(
        "frames {exchange}: {} seeds in groups {:?}",
        corpus.seed_count(),
        corpus
            .groups
            .iter()
            .map(|g| format!("{} ({})", g.name, g.seeds.len()))
            .collect::<Vec<_>>()
    );
    let strategy = (cases_of(corpus, Syntax::Json), receive_times());
    fuzz(
        &format!("frames_{exchange}"),
        default_cases,
        strategy,
        |(case, receive_time), stats| {
            let (result, cost) =
                measure(|| venues::parse_frame(exchange, &case.data, *receive_time));
            stats.cost(cost, case.data.len())?;
            match result {
                Ok(frame) => check_frame(
                    &frame,
                    exchange,
                    case.data.len(),
                    Some(*receive_time),
                    stats,
                ),
                Err(error) => {
                    prop_assert_eq!(error.exchange(), exchange);
                    stats.message(&error.to_string())
                }
            }
        },
    );
}

#[test]
fn frames_binance() {
    fuzz_frames(Binance, 15_000);
}

#[test]
fn frames_upbit() {
    fuzz_frames(Upbit, 15_000);
}

#[test]
fn frames_coinbase() {
    fuzz_frames(Coinbase, 15_000);
}

#[test]
fn frames_bybit() {
    fuzz_frames(Bybit, 15_000);
}

#[test]
fn frames_okx() {
    fuzz_frames(Okx, 15_000);
}

// ---------------------------------------------------------------------------
// 2. REST trade pages.

/// The payloads of `exchange`'s frames of `kind`, as JSON values.
fn frame_values(exchange: Exchange, kind: &str) -> Vec<Value> {
    frame_corpora()
        .and_then(|c| c[&exchange].group(kind))
        .map(|g| {
            g.seeds
                .iter()
                .filter_map(|s| serde_json::from_slice(&s.bytes).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pick_fields(value: &Value, fields: &[(&str, &str)]) -> Value {
    Value::Object(
        fields
            .iter()
            .filter_map(|(to, from)| value.get(*from).map(|v| (to.to_string(), v.clone())))
            .collect(),
    )
}

/// REST pages per exchange, grouped by feed (`binance:aggTrade`): the
/// recorded REST responses, pages built from recorded websocket trades
/// (the REST field names, the values unchanged), and error bodies.
fn rest_corpora() -> Option<&'static BTreeMap<Exchange, Arc<Corpus>>> {
    static CORPORA: OnceLock<Option<BTreeMap<Exchange, Arc<Corpus>>>> = OnceLock::new();
    CORPORA
        .get_or_init(|| {
            let root = exchanges_root()?;
            frame_corpora()?;
            let mut corpora: BTreeMap<Exchange, Corpus> = BTreeMap::new();
            let name = |feed: Feed| feed.to_string();
            let binance_trade = name(Feed::Binance(venues::binance::Feed::Trade));
            let binance_agg = name(Feed::Binance(venues::binance::Feed::AggTrade));
            let c = corpora.entry(Binance).or_default();
            for file in [
                "binance/nautilus_rest_spot_trades_BTCUSDT_2021-10-22.json",
                "binance/nautilus_rest_spot_historicalTrades_BTCUSDT_2021-10-22.json",
            ] {
                c.add(&binance_trade, "BTCUSDT", read(&root, file));
            }
            c.add(
                &binance_agg,
                "BTCUSDT",
                read(&root, "binance/nautilus_rest_spot_aggTrades_BTCUSDT_2021-10-22.json"),
            );
            let agg_rows: Vec<(String, Value)> = frame_values(Binance, "trades")
                .iter()
                .filter(|v| v["data"]["e"] == "aggTrade")
                .map(|v| {
                    let data = &v["data"];
                    let symbol = data["s"].as_str().unwrap_or_default().to_string();
                    let fields = [
                        ("a", "a"),
                        ("p", "p"),
                        ("q", "q"),
                        ("f", "f"),
                        ("l", "l"),
                        ("T", "T"),
                        ("m", "m"),
                        ("M", "M"),
                    ];
                    (symbol, pick_fields(data, &fields))
                })
                .collect();
            for chunk in agg_rows.chunks(4) {
                let rows: Vec<Value> = chunk.iter().map(|(_, row)| row.clone()).collect();
                c.add(&binance_agg, &chunk[0].0, Value::Array(rows).to_string());
            }
            for group in [&binance_trade, &binance_agg] {
                c.add(group, "BTCUSDT", r#"{"code":-1121,"msg":"Invalid symbol."}"#);
            }

            let c = corpora.entry(Upbit).or_default();
            let ticks = read(&root, "upbit/JKorf_Upbit.Net_rest_trades_ticks.txt");
            let body = ticks.lines().skip(3).collect::<Vec<_>>().join("\n");
            let simple_rows: Vec<Value> = frame_values(Upbit, "trades")
                .iter()
                .filter(|v| v["ty"] == "trade")
                .map(|v| {
                    let fields = [
                        ("market", "cd"),
                        ("trade_date_utc", "td"),
                        ("trade_time_utc", "ttm"),
                        ("timestamp", "ttms"),
                        ("trade_price", "tp"),
                        ("trade_volume", "tv"),
                        ("prev_closing_price", "pcp"),
                        ("change_price", "cp"),
                        ("ask_bid", "ab"),
                        ("sequential_id", "sid"),
                    ];
                    pick_fields(v, &fields)
                })
                .collect();
            for feed in [venues::upbit::Feed::Default, venues::upbit::Feed::Simple] {
                let group = name(Feed::Upbit(feed));
                c.add(&group, "KRW-BTC", body.clone());
                for chunk in simple_rows.chunks(5) {
                    c.add(&group, "KRW-BTC", Value::Array(chunk.to_vec()).to_string());
                }
                c.add(
                    &group,
                    "KRW-BTC",
                    r#"{"error":{"name":"404","message":"Code not found"}}"#,
                );
            }

            let c = corpora.entry(Coinbase).or_default();
            let matches = name(Feed::Coinbase(venues::coinbase::Feed::ExchangeMatches));
            let advanced = name(Feed::Coinbase(
                venues::coinbase::Feed::AdvancedMarketTrades,
            ));
            let trade_frames = frame_values(Coinbase, "trades");
            let match_rows: Vec<(String, Value)> = trade_frames
                .iter()
                .filter(|v| v["type"] == "match" || v["type"] == "last_match")
                .map(|v| {
                    let fields = [
                        ("time", "time"),
                        ("trade_id", "trade_id"),
                        ("price", "price"),
                        ("size", "size"),
                        ("side", "side"),
                    ];
                    let product = v["product_id"].as_str().unwrap_or_default().to_string();
                    (product, pick_fields(v, &fields))
                })
                .collect();
            for chunk in match_rows.chunks(5) {
                let rows: Vec<Value> = chunk.iter().map(|(_, row)| row.clone()).collect();
                c.add(&matches, &chunk[0].0, Value::Array(rows).to_string());
            }
            for v in trade_frames.iter().filter(|v| v["channel"] == "market_trades") {
                let rows: Vec<Value> = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|e| e["trades"].as_array().cloned().unwrap_or_default())
                    .collect();
                let product = rows
                    .first()
                    .and_then(|r| r["product_id"].as_str())
                    .unwrap_or("BTC-USD")
                    .to_string();
                let page = serde_json::json!({"trades": rows, "best_bid": "", "best_ask": ""});
                c.add(&advanced, &product, page.to_string());
            }
            for group in [&matches, &advanced] {
                c.add(group, "BTC-USD", r#"{"message":"NotFound"}"#);
            }

            let c = corpora.entry(Bybit).or_default();
            let recent = read(&root, "bybit/nautilus_v5_rest_recent_trades.json");
            let public_rows: Vec<Value> = frame_values(Bybit, "trades")
                .iter()
                .flat_map(|v| v["data"].as_array().cloned().unwrap_or_default())
                .map(|row| {
                    let mut page_row = pick_fields(
                        &row,
                        &[
                            ("execId", "i"),
                            ("symbol", "s"),
                            ("price", "p"),
                            ("size", "v"),
                            ("side", "S"),
                            ("isBlockTrade", "BT"),
                        ],
                    );
                    page_row["time"] = Value::String(row["T"].to_string());
                    page_row
                })
                .collect();
            for feed in [
                venues::bybit::Feed::Spot,
                venues::bybit::Feed::Linear,
                venues::bybit::Feed::Inverse,
            ] {
                let group = name(Feed::Bybit(feed));
                c.add(&group, "BTCUSDT", recent.clone());
                let page = serde_json::json!({"retCode": 0, "retMsg": "OK",
                    "result": {"category": Feed::Bybit(feed).name(), "list": public_rows},
                    "retExtInfo": {}, "time": 1_672_304_486_868_i64});
                c.add(&group, "BTCUSDT", page.to_string());
                c.add(
                    &group,
                    "BTCUSDT",
                    r#"{"retCode":10001,"retMsg":"params error","result":{},"retExtInfo":{},"time":1709891679050}"#,
                );
            }

            let c = corpora.entry(Okx).or_default();
            let rest = read(&root, "okx/nautilus_v5_rest_trades.json");
            let pushes = frame_values(Okx, "trades");
            for feed in [venues::okx::Feed::Trades, venues::okx::Feed::TradesAll] {
                let group = name(Feed::Okx(feed));
                c.add(&group, "BTC-USDT", rest.clone());
                for push in &pushes {
                    let symbol = push["arg"]["instId"].as_str().unwrap_or("BTC-USDT");
                    let page = serde_json::json!({"code": "0", "msg": "", "data": push["data"]});
                    c.add(&group, symbol, page.to_string());
                }
                c.add(
                    &group,
                    "BTC-USDT",
                    r#"{"code":"51000","msg":"Parameter instId error","data":[]}"#,
                );
            }
            Some(
                corpora
                    .into_iter()
                    .map(|(e, c)| (e, Arc::new(c.finish())))
                    .collect(),
            )
        })
        .as_ref()
}

fn symbol_token() -> BoxedStrategy<String> {
    prop_oneof![
        select(TOKENS).prop_map(str::to_string),
        ".{0,12}",
        long_string(false),
    ]
    .boxed()
}

fn fuzz_rest(exchange: Exchange, default_cases: u32) {
    let Some(corpora) = rest_corpora() else {
        return;
    };
    let corpus = Arc::clone(&corpora[&exchange]);
    for feed in Feed::ALL.into_iter().filter(|f| f.exchange() == exchange) {
        let group = corpus
            .group(&feed.to_string())
            .unwrap_or_else(|| panic!("no REST seeds for {feed}"));
        let parsed = group
            .seeds
            .iter()
            .filter(|s| {
                feed.parse_rest_trades(&s.symbol, &s.bytes, 0)
                    .is_ok_and(|t| !t.is_empty())
            })
            .count();
        assert!(parsed > 0, "{feed}: no REST seed parses to trades");
    }
    let strategy = (
        cases_of(corpus, Syntax::Json),
        prop::option::weighted(0.1, symbol_token()),
        receive_times(),
    );
    fuzz(
        &format!("rest_pages_{exchange}"),
        default_cases,
        strategy,
        |(case, symbol, receive_time), stats| {
            let feed: Feed = case
                .group
                .parse()
                .map_err(|e| TestCaseError::fail(format!("group {:?}: {e}", case.group)))?;
            let symbol = symbol.as_deref().unwrap_or(&case.symbol);
            let (result, cost) =
                measure(|| feed.parse_rest_trades(symbol, &case.data, *receive_time));
            stats.cost(cost, case.data.len() + symbol.len())?;
            match result {
                Ok(trades) => {
                    check_trades(&trades, exchange, case.data.len(), Some(*receive_time))?;
                    stats.ok(trades.len());
                    Ok(())
                }
                Err(error) => {
                    prop_assert_eq!(error.exchange(), exchange);
                    stats.message(&error.to_string())
                }
            }
        },
    );
}

#[test]
fn rest_pages_binance() {
    fuzz_rest(Binance, 15_000);
}

#[test]
fn rest_pages_upbit() {
    fuzz_rest(Upbit, 15_000);
}

#[test]
fn rest_pages_coinbase() {
    fuzz_rest(Coinbase, 15_000);
}

#[test]
fn rest_pages_bybit() {
    fuzz_rest(Bybit, 15_000);
}

#[test]
fn rest_pages_okx() {
    fuzz_rest(Okx, 15_000);
}

// ---------------------------------------------------------------------------
// 3a. Recording lines (`tickfetch decode`).

/// Every line of every recording (`*_extract_*.jsonl`, cryptofeed
/// captures), grouped by exchange and what the line holds.
fn line_corpus() -> Option<Arc<Corpus>> {
    static CORPUS: OnceLock<Option<Arc<Corpus>>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let root = exchanges_root()?;
            let mut corpus = Corpus::default();
            for (exchange, file, source) in FRAME_FILES {
                if !matches!(source, Source::Lines) {
                    continue;
                }
                for line in read(&root, file).lines() {
                    let kind = match decode::decode_line(*exchange, line.as_bytes(), 0) {
                        Ok(None) => "skip".to_string(),
                        Ok(Some(frame)) => frame.kind().to_string(),
                        Err(_) => "error".to_string(),
                    };
                    corpus.add(&format!("{exchange}/{kind}"), "", line);
                }
            }
            Some(Arc::new(corpus.finish()))
        })
        .clone()
}

/// Every exchange's frames in one corpus (groups `<exchange>/<kind>`).
fn payload_corpus() -> Option<Arc<Corpus>> {
    static CORPUS: OnceLock<Option<Arc<Corpus>>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let corpora = frame_corpora()?;
            let mut corpus = Corpus::default();
            for (exchange, frames) in corpora {
                for group in frames.groups.iter().filter(|g| !g.name.contains(' ')) {
                    for seed in &group.seeds {
                        corpus.add(
                            &format!("{exchange}/{}", group.name),
                            "",
                            seed.bytes.clone(),
                        );
                    }
                }
            }
            Some(Arc::new(corpus.finish()))
        })
        .clone()
}

/// How a payload is written as a line.
#[derive(Debug, Clone, Copy)]
enum Wrapper {
    Bare,
    Recording(&'static str),
    Capture,
    CaptureBytes,
    Sent,
    Connect,
}

/// `payload` as a Python `b'…'` literal, as cryptofeed logs binary frames.
fn python_bytes(payload: &[u8]) -> String {
    let mut out = String::from("b'");
    for &b in payload {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

fn wrap_line(wrapper: Wrapper, stamp: &str, payload: &[u8]) -> Vec<u8> {
    let mut line = Vec::new();
    match wrapper {
        Wrapper::Bare => line.extend_from_slice(payload),
        Wrapper::Recording(dir) => {
            let raw = Value::String(String::from_utf8_lossy(payload).into_owned());
            line.extend_from_slice(
                format!("{{\"recv_ts\": {stamp}, \"dir\": \"{dir}\", \"raw\": {raw}}}").as_bytes(),
            );
        }
        Wrapper::Capture => {
            line.extend_from_slice(format!("{stamp}: ").as_bytes());
            line.extend_from_slice(payload);
        }
        Wrapper::CaptureBytes => {
            line.extend_from_slice(format!("{stamp}: {}", python_bytes(payload)).as_bytes())
        }
        Wrapper::Sent => {
            line.extend_from_slice(format!("wss://x <- {stamp}: ").as_bytes());
            line.extend_from_slice(payload);
        }
        Wrapper::Connect => line.extend_from_slice(format!("wss://x <-> {stamp}").as_bytes()),
    }
    line
}

/// One line to decode and the exchange it is decoded as (`how` is read by
/// `Debug`, in failure reports).
#[derive(Clone, Debug)]
#[allow(dead_code)]
struct LineCase {
    exchange: Exchange,
    /// How the line was made (a recorded line, or a wrapped payload).
    how: String,
    case: Case,
}

fn exchange_of(group: &str) -> Exchange {
    group
        .split('/')
        .next()
        .and_then(|e| e.parse().ok())
        .unwrap_or(Binance)
}

fn line_cases() -> Option<BoxedStrategy<LineCase>> {
    let lines = line_corpus()?;
    let payloads = payload_corpus()?;
    let stamp = prop_oneof![
        4 => "1[0-9]{9}\\.[0-9]{1,7}",
        1 => number_text(),
        1 => ".{0,12}",
    ];
    let wrapper = select(
        &[
            Wrapper::Bare,
            Wrapper::Recording("in"),
            Wrapper::Recording("out"),
            Wrapper::Recording("connect"),
            Wrapper::Capture,
            Wrapper::CaptureBytes,
            Wrapper::Sent,
            Wrapper::Connect,
        ][..],
    );
    let recorded =
        cases_of(lines, Syntax::Json).prop_map(|case| (format!("line {}", case.group), case));
    let wrapped = (
        cases_of(payloads, Syntax::Json),
        wrapper,
        stamp,
        vec(mutation(Syntax::Json), 0..2),
    )
        .prop_map(|(mut case, wrapper, stamp, mutations)| {
            case.data = wrap_line(wrapper, &stamp, &case.data);
            for m in &mutations {
                apply(m, &mut case.data, Syntax::Json, &Corpus::default());
            }
            (
                format!(
                    "{} wrapped {wrapper:?} at {stamp:?}, then {mutations:?}",
                    case.group
                ),
                case,
            )
        });
    let other_exchange = prop::option::weighted(0.1, select(&Exchange::ALL[..]));
    Some(
        (prop_oneof![recorded, wrapped], other_exchange)
            .prop_map(|((how, case), other)| LineCase {
                exchange: other.unwrap_or_else(|| exchange_of(&case.group)),
                how,
                case,
            })
            .boxed(),
    )
}

#[test]
fn decode_lines() {
    let Some(strategy) = line_cases() else {
        return;
    };
    fuzz(
        "decode_lines",
        15_000,
        (strategy, receive_times()),
        |(line, clock), stats| {
            let data = &line.case.data;
            let (result, cost) = measure(|| decode::decode_line(line.exchange, data, *clock));
            stats.cost(cost, data.len())?;
            match result {
                Ok(None) => {
                    stats.ok(0);
                    Ok(())
                }
                Ok(Some(frame)) => check_frame(&frame, line.exchange, data.len(), None, stats),
                Err(error) => stats.message(&error.to_string()),
            }
        },
    );
}

/// Lines of `data` as `read_until(b'\n')` counts them.
fn line_count(data: &[u8]) -> u64 {
    let newlines = data.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(!data.is_empty() && data.last() != Some(&b'\n'))
}

#[test]
fn decode_reader_blocks() {
    let Some(strategy) = line_cases() else {
        return;
    };
    let blocks = (vec(strategy, 1..8), any::<bool>(), receive_times());
    fuzz(
        "decode_reader_blocks",
        3_000,
        blocks,
        |(lines, crlf, clock), stats| {
            let exchange = lines[0].exchange;
            let separator: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
            let block: Vec<u8> = lines
                .iter()
                .map(|l| l.case.data.as_slice())
                .collect::<Vec<_>>()
                .join(separator);
            let ((result, trades), cost) = measure(|| {
                let mut trades = Vec::new();
                let result = decode::decode_reader(exchange, block.as_slice(), *clock, |t| {
                    trades.push(t);
                    Ok(())
                });
                (result, trades)
            });
            // The report keeps up to MAX_MALFORMED_KEPT messages of at
            // most MAX_REASON_BYTES each: a constant on top of the input's.
            let kept = (decode::MAX_MALFORMED_KEPT * MAX_REASON_BYTES) as u64;
            stats.cost_within(cost, block.len(), ALLOC_FACTOR, ALLOC_SLACK + kept)?;
            let report = result.map_err(|e| TestCaseError::fail(format!("a run stopped: {e}")))?;
            let lines = line_count(&block);
            prop_assert_eq!(report.lines, lines);
            // Every line is skipped, decoded (counted by kind) or malformed
            // (a bad recording wrapper, or a frame that did not parse).
            let decoded: u64 = report.frames_by_kind.values().sum();
            prop_assert_eq!(
                report.lines,
                report.skipped + decoded + report.malformed_total,
                "lines not accounted for: {}",
                report
            );
            prop_assert!(decoded <= report.frames);
            prop_assert_eq!(
                report.malformed.len() as u64,
                report
                    .malformed_total
                    .min(decode::MAX_MALFORMED_KEPT as u64)
            );
            prop_assert_eq!(report.trades, trades.len() as u64);
            prop_assert!(trades.len() <= block.len());
            for trade in &trades {
                check_trade(trade, exchange, None)?;
            }
            for bad in &report.malformed {
                prop_assert!((1..=lines).contains(&bad.line));
                stats.message(&bad.message)?;
            }
            prop_assert!(!report.to_string().is_empty());
            stats.ok(trades.len());
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 3b. Import files (`tickfetch import`).

const ORACLE_CSV: &str = "oracle/binance_spot_XRPETH_2019-10-11/XRPETH_aggTrades_derived.csv";
const AGG_CSV: &str = "binance-aggtrades-csv";
const TRADES_CSV: &str = "binance-trades-csv";
const JSONL: &str = "trades-jsonl";

/// Import files: blocks of the oracle's aggTrades CSV (with and without its
/// header), Binance REST trades as `binance-trades-csv` rows, and the
/// oracle's trades as `trades-jsonl`.
fn import_corpora() -> Option<(Arc<Corpus>, Arc<Corpus>)> {
    static CORPORA: OnceLock<Option<(Arc<Corpus>, Arc<Corpus>)>> = OnceLock::new();
    CORPORA
        .get_or_init(|| {
            let csv_path = common::shared_data(ORACLE_CSV)?;
            let root = exchanges_root()?;
            let text = std::fs::read_to_string(&csv_path)
                .unwrap_or_else(|e| panic!("{}: {e}", csv_path.display()));
            let lines: Vec<&str> = text.lines().collect();
            let (header, rows) = lines.split_first().expect("the oracle CSV has rows");
            let mut csv = Corpus::default();
            for (n, start) in (0..rows.len()).step_by(61).enumerate() {
                let block = rows[start..(start + n % 5 + 1).min(rows.len())].join("\n") + "\n";
                csv.add(AGG_CSV, "XRPETH", block.as_str());
                csv.add(
                    &format!("{AGG_CSV}/header"),
                    "XRPETH",
                    format!("{header}\n{block}"),
                );
            }
            let trade_header = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match";
            let mut trade_rows = Vec::new();
            for file in [
                "binance/nautilus_rest_spot_trades_BTCUSDT_2021-10-22.json",
                "binance/nautilus_rest_spot_historicalTrades_BTCUSDT_2021-10-22.json",
            ] {
                let page: Value = serde_json::from_str(&read(&root, file)).expect("REST JSON");
                for row in page.as_array().into_iter().flatten() {
                    let text = |k: &str| match &row[k] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    trade_rows.push(
                        [
                            "id",
                            "price",
                            "qty",
                            "quoteQty",
                            "time",
                            "isBuyerMaker",
                            "isBestMatch",
                        ]
                        .map(text)
                        .join(","),
                    );
                }
            }
            for (n, start) in (0..trade_rows.len()).step_by(3).enumerate() {
                let block = trade_rows[start..(start + n % 4 + 1).min(trade_rows.len())].join("\n");
                csv.add(TRADES_CSV, "BTCUSDT", block.as_str());
                csv.add(
                    &format!("{TRADES_CSV}/header"),
                    "BTCUSDT",
                    format!("{trade_header}\n{block}\n"),
                );
            }
            let mut jsonl = Corpus::default();
            let reader = TradeReader::new(
                Cursor::new(text.as_bytes()),
                ImportFormat::BinanceAggTradesCsv,
                Binance,
                "XRPETH",
            )
            .expect("XRPETH names an instrument");
            let trades: Vec<String> = reader
                .take(2000)
                .map(|t| serde_json::to_string(&t.expect("oracle rows parse")).expect("JSON"))
                .collect();
            for (n, start) in (0..trades.len()).step_by(13).enumerate() {
                let block = trades[start..(start + n % 3 + 1).min(trades.len())].join("\n");
                jsonl.add(JSONL, "XRPETH", block);
            }
            Some((Arc::new(csv.finish()), Arc::new(jsonl.finish())))
        })
        .clone()
}

#[test]
fn import_rows() {
    let Some((csv, jsonl)) = import_corpora() else {
        return;
    };
    let strategy = prop_oneof![
        3 => cases_of(csv, Syntax::Csv),
        1 => cases_of(jsonl, Syntax::Json),
    ];
    fuzz("import_rows", 15_000, strategy, |case, stats| {
        let format: ImportFormat = case
            .group
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| TestCaseError::fail(format!("group {:?}: {e}", case.group)))?;
        let symbol = case.symbol.as_str();
        let instrument = if symbol == "XRPETH" {
            "XRP-ETH"
        } else {
            "BTC-USDT"
        };
        let lines = line_count(&case.data);
        // Rows are checked as they come (nothing is kept), so that the
        // reader's own memory is what is measured.
        let (outcome, cost) = measure(|| -> Result<_, TestCaseError> {
            let mut reader = TradeReader::new(Cursor::new(&case.data), format, Binance, symbol)
                .expect("the seeds' symbols name instruments");
            let (mut trades, mut rows) = (0u64, 0u64);
            while let Some(row) = reader.next_row() {
                rows += 1;
                match row {
                    Ok(row) => {
                        trades += 1;
                        let trade = row.trade;
                        prop_assert!((1..=lines).contains(&row.line));
                        prop_assert_eq!(&trade.symbol, symbol);
                        if format == ImportFormat::TradesJsonl {
                            check_trade(trade, Binance, None)?;
                        } else {
                            prop_assert_eq!(&trade.instrument, instrument);
                            check_trade(trade, Binance, Some(trade.exchange_time))?;
                            prop_assert_eq!(
                                trade.first_trade_id.is_some(),
                                format == ImportFormat::BinanceAggTradesCsv
                            );
                        }
                    }
                    Err(error) => {
                        prop_assert!(
                            !error.is_terminal(),
                            "a terminal error from an in-memory file: {}",
                            error
                        );
                        prop_assert!(error.line().is_some_and(|l| (1..=lines).contains(&l)));
                        stats.message(&error.to_string())?;
                    }
                }
            }
            Ok((reader.report(), trades, rows))
        });
        stats.cost(cost, case.data.len())?;
        let (report, trades, rows) = outcome?;
        prop_assert_eq!(report.lines, lines, "lines counted");
        prop_assert!(rows <= lines);
        prop_assert!(report.trades + report.bad_rows <= report.rows + 1);
        prop_assert_eq!(report.trades, trades);
        stats.ok(trades as usize);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 4. The record envelope.

/// Payloads of records, by kind: trades (decoded from the recordings and
/// the oracle), candles (built from the oracle), and the watermarks and gap
/// markers a worker would send for those trades.
fn record_corpus() -> Option<Arc<Corpus>> {
    static CORPUS: OnceLock<Option<Arc<Corpus>>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let csv_path = common::shared_data(ORACLE_CSV)?;
            let corpora = frame_corpora()?;
            let mut trades: Vec<Trade> = Vec::new();
            for frames in corpora.values() {
                for seed in frames.group("trades").into_iter().flat_map(|g| &g.seeds) {
                    for exchange in Exchange::ALL {
                        if let Ok(Frame::Trades(t)) = venues::parse_frame(exchange, &seed.bytes, 1)
                        {
                            trades.extend(t);
                        }
                    }
                }
            }
            let text = std::fs::read_to_string(&csv_path)
                .unwrap_or_else(|e| panic!("{}: {e}", csv_path.display()));
            let oracle: Vec<&str> = text.lines().take(400).collect();
            let reader = TradeReader::new(
                Cursor::new(oracle.join("\n")),
                ImportFormat::BinanceAggTradesCsv,
                Binance,
                "XRPETH",
            )
            .expect("XRPETH names an instrument");
            trades.extend(reader.take(300).map(|t| t.expect("oracle rows parse")));
            let mut corpus = Corpus::default();
            for trade in &trades {
                corpus.add("trade", "", serde_json::to_vec(trade).expect("JSON"));
                let watermark = Watermark {
                    exchange: trade.exchange,
                    symbol: trade.symbol.clone(),
                    time: trade.exchange_time,
                };
                corpus.add(
                    "watermark",
                    "",
                    serde_json::to_vec(&watermark).expect("JSON"),
                );
            }
            for pair in trades.windows(2) {
                let gap = GapMarker {
                    exchange: pair[1].exchange,
                    symbol: pair[1].symbol.clone(),
                    first_missing: pair[0].last_raw_id().parse().unwrap_or(1),
                    last_missing: pair[1].first_raw_id().parse().unwrap_or(2),
                    from_time: pair[0].exchange_time,
                    to_time: pair[1].exchange_time,
                };
                corpus.add("gap", "", serde_json::to_vec(&gap).expect("JSON"));
            }
            candles_from_reader(
                Cursor::new(oracle.join("\n")),
                ImportFormat::BinanceAggTradesCsv,
                Binance,
                "XRPETH",
                &Interval::ALL,
                PipelineConfig::default(),
                |candle| corpus.add("candle", "", serde_json::to_vec(candle).expect("JSON")),
                |_| {},
            )
            .expect("the oracle imports");
            Some(Arc::new(corpus.finish()))
        })
        .clone()
}

/// A record's kind header: the one its payload was sent with, another, or
/// garbage.
#[derive(Debug, Clone)]
enum KindHeader {
    Natural,
    Absent,
    Value(Vec<u8>),
}

#[derive(Debug, Clone)]
struct RecordCase {
    payload: Option<Case>,
    key: Option<Vec<u8>>,
    kind: KindHeader,
    epoch: Option<Vec<u8>>,
}

fn natural_kind(group: &str) -> Option<&'static [u8]> {
    match group {
        "trade" => Some(b"trade"),
        "watermark" => Some(b"watermark"),
        "gap" => Some(b"gap"),
        _ => None,
    }
}

/// The data records of the topics: what a record decodes to, and how it is
/// sent.
trait Record: DataRecord + PartialEq + fmt::Debug {
    fn body(&self) -> Body<'_>;
}

impl Record for Trade {
    fn body(&self) -> Body<'_> {
        Body::Trade(self)
    }
}

impl Record for Candle {
    fn body(&self) -> Body<'_> {
        Body::Candle(self)
    }
}

/// Kind headers worth trying besides the natural one.
const KIND_VALUES: &[&[u8]] = &[b"trade", b"watermark", b"gap", b"", b"Trade", b"snapshot"];

/// Encodes `received` again and decodes it: the same value must come back.
fn round_trip<T: Record>(received: &Received<T>) -> Result<(), TestCaseError> {
    let body = match received {
        Received::Data(data) => data.body(),
        Received::Watermark(w) => Body::Watermark(w),
        Received::Gap(g) => Body::Gap(g),
    };
    let mut encoder = Encoder::default();
    let encoded = encoder
        .encode(body, Epoch(7))
        .map_err(|e| TestCaseError::fail(format!("a decoded record does not encode: {e}")))?;
    let headers: Vec<(String, Vec<u8>)> = encoded
        .headers
        .iter()
        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    let back = Envelope::from_parts(
        Some(encoded.key.as_bytes()),
        header(KIND_HEADER),
        header(EPOCH_HEADER),
        Some(encoded.payload),
    );
    prop_assert_eq!(back.epoch().ok(), Some(Epoch(7)));
    let decoded = back
        .decode::<T>()
        .map_err(|e| TestCaseError::fail(format!("a re-encoded record does not decode: {e}")))?;
    prop_assert_eq!(
        &decoded,
        received,
        "encode/decode round trip changed the record"
    );
    Ok(())
}

/// What decoding must give for a kind header: a watermark or gap marker
/// exactly when the header says so.
fn check_received<T>(received: &Received<T>, kind: Option<&[u8]>) -> Result<(), TestCaseError> {
    let expected = match kind {
        Some(b"watermark") => "watermark",
        Some(b"gap") => "gap",
        _ => "data",
    };
    let got = match received {
        Received::Data(_) => "data",
        Received::Watermark(_) => "watermark",
        Received::Gap(_) => "gap",
    };
    prop_assert_eq!(
        got,
        expected,
        "kind header {:?}",
        kind.map(String::from_utf8_lossy)
    );
    Ok(())
}

#[test]
fn wire_records() {
    let Some(corpus) = record_corpus() else {
        return;
    };
    for kind in ["trade", "candle", "watermark", "gap"] {
        assert!(corpus.group(kind).is_some(), "no {kind} records");
    }
    let kind = prop_oneof![
        6 => Just(KindHeader::Natural),
        2 => Just(KindHeader::Absent),
        2 => select(KIND_VALUES)
            .prop_map(|k| KindHeader::Value(k.to_vec())),
        1 => vec(any::<u8>(), 0..12).prop_map(KindHeader::Value),
    ];
    let epoch = prop_oneof![
        3 => Just(None),
        3 => any::<u64>().prop_map(|n| Some(n.to_string().into_bytes())),
        2 => number_text().prop_map(|t| Some(t.into_bytes())),
        1 => vec(any::<u8>(), 0..24).prop_map(Some),
    ];
    let strategy = (
        prop::option::weighted(0.97, cases_of(corpus, Syntax::Json)),
        prop::option::weighted(0.9, vec(any::<u8>(), 0..24)),
        kind,
        epoch,
    )
        .prop_map(|(payload, key, kind, epoch)| RecordCase {
            payload,
            key,
            kind,
            epoch,
        });
    fuzz("wire_records", 15_000, strategy, |record, stats| {
        let kind: Option<Vec<u8>> = match &record.kind {
            KindHeader::Natural => record
                .payload
                .as_ref()
                .and_then(|p| natural_kind(&p.group))
                .map(<[u8]>::to_vec),
            KindHeader::Absent => None,
            KindHeader::Value(v) => Some(v.clone()),
        };
        let payload = record.payload.as_ref().map(|p| p.data.as_slice());
        let envelope = Envelope::from_parts(
            record.key.as_deref(),
            kind.as_deref(),
            record.epoch.as_deref(),
            payload,
        );
        let ((as_trade, as_candle, epoch), cost) = measure(|| {
            (
                envelope.decode::<Trade>(),
                envelope.decode::<Candle>(),
                envelope.epoch(),
            )
        });
        stats.cost(cost, payload.map_or(0, <[u8]>::len))?;
        match as_trade {
            Ok(received) => {
                check_received(&received, kind.as_deref())?;
                round_trip(&received)?;
                stats.ok(usize::from(matches!(received, Received::Data(_))));
            }
            Err(error) => stats.message(&error.to_string())?,
        }
        match as_candle {
            Ok(received) => {
                check_received(&received, kind.as_deref())?;
                round_trip(&received)?;
            }
            Err(error) => stats.message(&error.to_string())?,
        }
        match (epoch, record.epoch.as_deref()) {
            (Ok(epoch), None) => prop_assert_eq!(epoch, Epoch::NONE),
            (Ok(epoch), Some(text)) => prop_assert_eq!(
                std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()),
                Some(epoch.0)
            ),
            (Err(error), _) => stats.message(&error.to_string())?,
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 5. The config file.

/// A valid config file setting every section, `{DIR}` standing for the
/// case's directory (which holds `ca.pem`).
const CONFIG_SEED: &str = r#"# tickfetch config: every section
[kafka]
bootstrap = "127.0.0.1:9092,127.0.0.2:9092"

[kafka.options]
"linger.ms" = "5"
"message.max.bytes" = "2000000"

[kafka.security]
protocol = "sasl_ssl"
sasl_mechanism = "SCRAM-SHA-512"
username = "tickfetch"
password = { value = "x" }
ca_file = "{DIR}/ca.pem"

[topics]
prefix = "fuzz"
partitions = 8

[etcd]
endpoints = ["127.0.0.1:2379", "127.0.0.2:2379"]
prefix = "/fuzz"
epochs = true
username = "root"
password = { value = "x" }
ca_file = "{DIR}/ca.pem"

[mongodb]
uri = "mongodb://127.0.0.1:27017/?tls=false"
database = "fuzz"
username = "reader"
password = { value = "x" }

[rollup]
grace_ms = 1500
retention_ms = 600000
commit_interval_ms = 100
max_batch = 50000
guarantee = "exactly-once"
group_prefix = "fuzz.rollup"
session_timeout_ms = 10000

[sink]
intervals = ["1s", "5s", "1m", "5m"]
trades = true
batch_size = 1000
batch_ms = 200
group_id = "fuzz.sink"

[ingest]
watermark_interval_ms = 1000
allowed_lateness_ms = 2000
reconnect_min_ms = 250
reconnect_max_ms = 30000
watchdog_floor_ms = 10000
watchdog_ceiling_ms = 600000
gap_grace_ms = 500
rest_timeout_ms = 5000
replica_buffer_trades = 10000
instruments = "builtin"
instruments_timeout_ms = 10000

[[ingest.feeds]]
exchange = "binance"
symbols = ["BTCUSDT", "ETHUSDT"]
feed = "aggTrade"
ws_url = "wss://stream.binance.com:9443/stream"
rest_url = "https://api.binance.com"
symbols_per_connection = 200
max_connection_age_ms = 86400000
ping_interval_ms = 20000
pong_timeout_ms = 60000

[[ingest.feeds]]
exchange = "okx"
symbols = ["BTC-USDT", "ETH-USDT-SWAP"]
feed = "trades"

[cluster]
worker_id = "w1"
capacity = 2
lease_ttl_ms = 5000
progress_interval_ms = 1000
resume_lookback = 10000

[telemetry]
http_addr = "127.0.0.1:0"
log_format = "json"
ready_max_lag = 1000
"#;

/// Environment variables the loader reads.
const ENV_NAMES: &[&str] = &[
    "KAFKA_BOOTSTRAP",
    "ETCD_ENDPOINTS",
    "MONGODB_URI",
    "TICKFETCH_CONFIG",
    "TICKFETCH__ROLLUP__GRACE_MS",
    "TICKFETCH__KAFKA__SECURITY__PROTOCOL",
    "TICKFETCH__KAFKA__SECURITY__PASSWORD",
    "TICKFETCH__TOPICS__PARTITIONS",
    "TICKFETCH__INGEST__FEEDS",
    "TICKFETCH__SINK__INTERVALS",
    "TICKFETCH__",
    "TICKFETCH____",
    "TICKFETCH__A__B__C",
];

#[derive(Debug, Clone)]
struct ConfigCase {
    file: Case,
    env: Vec<(String, String)>,
    sets: Vec<String>,
}

/// A directory of the test's own under the system's temporary directory,
/// removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tickfetch-fuzz-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn config_files() {
    let dir = TempDir::new("config");
    std::fs::write(dir.0.join("ca.pem"), "not a certificate, but readable\n").expect("ca.pem");
    let seed = CONFIG_SEED.replace("{DIR}", &dir.0.display().to_string());
    let path = dir.0.join("tickfetch.toml");
    std::fs::write(&path, &seed).expect("write config");
    let config = ConfigLoader::new()
        .env(vec![])
        .file(Some(&path))
        .load()
        .unwrap_or_else(|e| panic!("the seed config does not load: {e}"));
    assert_eq!(config.kafka.security.protocol, KafkaProtocol::SaslSsl);
    assert_eq!(config.ingest.feeds.len(), 2);

    let mut corpus = Corpus::default();
    corpus.add("config", "", seed.as_str());
    let env_value = prop_oneof![value_token(Syntax::Toml), ".{0,12}"];
    let strategy = (
        cases_of(Arc::new(corpus), Syntax::Toml),
        prop::option::weighted(
            0.2,
            vec(
                (select(ENV_NAMES).prop_map(str::to_string), env_value),
                1..3,
            ),
        ),
        prop::option::weighted(
            0.1,
            vec(
                prop_oneof![
                    (select(TOML_KEYS), value_token(Syntax::Toml))
                        .prop_map(|(k, v)| format!("rollup.{k}={v}")),
                    ".{0,20}",
                ],
                1..3,
            ),
        ),
    )
        .prop_map(|(file, env, sets)| ConfigCase {
            file,
            env: env.unwrap_or_default(),
            sets: sets.unwrap_or_default(),
        });
    fuzz("config_files", 6_000, strategy, |case, stats| {
        std::fs::write(&path, &case.file.data)
            .map_err(|e| TestCaseError::fail(format!("writing the case's file: {e}")))?;
        let (result, cost) = measure(|| {
            let mut loader = ConfigLoader::new().env(case.env.clone()).file(Some(&path));
            for set in &case.sets {
                loader = loader.set(set)?;
            }
            loader.load()
        });
        let input = case.file.data.len()
            + case
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + case.sets.iter().map(String::len).sum::<usize>();
        stats.cost_within(cost, input, CONFIG_ALLOC_FACTOR, ALLOC_SLACK)?;
        match result {
            Ok(config) => {
                prop_assert!(!config.topics.trades().is_empty());
                stats.ok(0);
                Ok(())
            }
            // Messages may quote a whole bad line or value of the file: only
            // their presence is checked here, not their length.
            Err(error) => stats.unbounded_message(&error.to_string()),
        }
    });
}

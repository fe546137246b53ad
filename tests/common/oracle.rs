//! The candle oracle shared by the tests: Binance's XRPETH aggTrades and klines
//! (`$TICKFETCH_SHARED_DATA/oracle/binance_spot_XRPETH_2019-10-11/`, see
//! `SOURCES.md` there), parsed exactly, and the assertion that candles equal them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use tickfetch::import::{ImportFormat, TradeReader};
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval, Millis, Side, Trade};

pub const ORACLE: &str = "oracle/binance_spot_XRPETH_2019-10-11";
pub const TRADES_CSV: &str = "XRPETH_aggTrades_derived.csv";
pub const SYMBOL: &str = "XRPETH";
pub const AGG_TRADES: u64 = 12_477;
pub const RAW_TRADES: u64 = 14_672;
pub const FIRST_RAW_ID: u64 = 15_373_518;
pub const LAST_RAW_ID: u64 = 15_388_189;
pub const KLINES_1M: usize = 3_560;
pub const KLINES_5M: usize = 712;
pub const QUIET_1M: usize = 1_091;
pub const QUIET_5M: usize = 712 - 706;

/// The oracle folder, or `None` (after saying so) when the data is absent.
pub fn oracle_dir(test: &str) -> Option<PathBuf> {
    let trades = super::shared_data(&format!("{ORACLE}/{TRADES_CSV}"));
    if trades.is_none() {
        eprintln!("skipping {test}");
    }
    trades.and_then(|path| path.parent().map(PathBuf::from))
}

/// One exchange kline: `[open_time_ms, open, high, low, close, volume]`.
#[derive(Debug)]
pub struct Kline {
    pub open_time: Millis,
    pub ohlcv: [Decimal; 5],
}

/// Parses the klines' JSON text without going through f64.
pub fn parse_klines(text: &str) -> Vec<Kline> {
    let mut klines = Vec::new();
    for piece in text.split('[') {
        let Some(row) = piece.split(']').next() else {
            continue;
        };
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != 6 {
            assert!(row.trim().is_empty(), "unexpected kline row {row:?}");
            continue;
        }
        let number = |s: &str| {
            if s.contains(['e', 'E']) {
                Decimal::from_scientific(s).unwrap_or_else(|e| panic!("kline number {s:?}: {e}"))
            } else {
                Decimal::from_str(s).unwrap_or_else(|e| panic!("kline number {s:?}: {e}"))
            }
        };
        klines.push(Kline {
            open_time: fields[0]
                .parse()
                .unwrap_or_else(|e| panic!("kline time {:?}: {e}", fields[0])),
            ohlcv: [
                number(fields[1]),
                number(fields[2]),
                number(fields[3]),
                number(fields[4]),
                number(fields[5]),
            ],
        });
    }
    klines
}

pub fn read_klines(dir: &Path, interval: Interval) -> Vec<Kline> {
    let path = dir.join(format!("{SYMBOL}_klines_{interval}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_klines(&text)
}

pub fn read_trades(dir: &Path) -> Vec<Trade> {
    let file = File::open(dir.join(TRADES_CSV)).expect("open trades csv");
    TradeReader::new(
        BufReader::new(file),
        ImportFormat::BinanceAggTradesCsv,
        Exchange::Binance,
        SYMBOL,
    )
    .expect("reader")
    .map(|row| row.expect("every oracle row parses"))
    .collect()
}

/// The latest revision of every window of `interval`, in window order, checking
/// that each window's revisions were emitted as 0, 1, 2… with no gap.
pub fn latest(candles: &[Candle], interval: Interval) -> Vec<Candle> {
    let mut windows: BTreeMap<Millis, Candle> = BTreeMap::new();
    for candle in candles.iter().filter(|c| c.interval == interval) {
        let expected = windows
            .get(&candle.open_time)
            .map_or(0, |held| held.revision + 1);
        assert_eq!(
            candle.revision, expected,
            "{interval} window {} revisions out of sequence",
            candle.open_time
        );
        windows.insert(candle.open_time, candle.clone());
    }
    windows.into_values().collect()
}

/// Every candle equals its kline (OHLCV exact, quiet exactly where volume is 0),
/// counts and trade ids are complete and chained.
pub fn assert_matches_klines(
    candles: &[Candle],
    klines: &[Kline],
    interval: Interval,
    quiet: usize,
) {
    assert_eq!(
        candles.len(),
        klines.len(),
        "{interval}: candle count vs kline count"
    );
    for (candle, kline) in candles.iter().zip(klines) {
        assert_eq!(candle.open_time, kline.open_time, "{interval}: open_time");
        assert_eq!(candle.close_time, kline.open_time + interval.millis() - 1);
        assert_eq!(candle.interval, interval);
        let got = [
            candle.open,
            candle.high,
            candle.low,
            candle.close,
            candle.volume,
        ];
        assert_eq!(
            got, kline.ohlcv,
            "{interval} at {}: open, high, low, close, volume",
            kline.open_time
        );
        let expected_status = if kline.ohlcv[4].is_zero() {
            CandleStatus::Quiet
        } else {
            CandleStatus::Complete
        };
        assert_eq!(
            candle.status, expected_status,
            "{interval} at {}",
            kline.open_time
        );
    }
    let quiet_candles = candles
        .iter()
        .filter(|c| c.status == CandleStatus::Quiet)
        .count();
    assert_eq!(quiet_candles, quiet, "{interval}: quiet candles");
    assert_eq!(
        candles.iter().map(|c| c.trade_count).sum::<u64>(),
        RAW_TRADES,
        "{interval}: trade_count sum"
    );
    // First/last raw trade ids chain without a gap across candles with trades.
    let mut next = FIRST_RAW_ID;
    for candle in candles.iter().filter(|c| c.status != CandleStatus::Quiet) {
        let first: u64 = candle
            .first_trade_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("first id");
        let last: u64 = candle
            .last_trade_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .expect("last id");
        assert_eq!(
            first, next,
            "{interval} at {}: first_trade_id",
            candle.open_time
        );
        assert_eq!(
            last - first + 1,
            candle.trade_count,
            "{interval} at {}: ids vs count",
            candle.open_time
        );
        next = last + 1;
    }
    assert_eq!(
        next,
        LAST_RAW_ID + 1,
        "{interval}: last_trade_id of the last candle"
    );
}

/// Σ price×quantity and the taker-buy sums, straight from the trades.
pub fn trade_sums(trades: &[Trade]) -> [Decimal; 3] {
    let mut sums = [Decimal::ZERO; 3];
    for trade in trades {
        sums[0] += trade.price * trade.quantity;
        if trade.side == Side::Buy {
            sums[1] += trade.quantity;
            sums[2] += trade.price * trade.quantity;
        }
    }
    sums
}

pub fn candle_sums(candles: &[Candle]) -> [Decimal; 3] {
    let mut sums = [Decimal::ZERO; 3];
    for c in candles {
        sums[0] += c.quote_volume;
        sums[1] += c.taker_buy_volume;
        sums[2] += c.taker_buy_quote_volume;
    }
    sums
}

pub fn assert_oracle(dir: &Path, candles: &[Candle], trades: &[Trade]) {
    let m1 = latest(candles, Interval::M1);
    let m5 = latest(candles, Interval::M5);
    assert_matches_klines(&m1, &read_klines(dir, Interval::M1), Interval::M1, QUIET_1M);
    assert_matches_klines(&m5, &read_klines(dir, Interval::M5), Interval::M5, QUIET_5M);
    let expected = trade_sums(trades);
    assert_eq!(candle_sums(&m1), expected, "1m quote and taker-buy volumes");
    assert_eq!(candle_sums(&m5), expected, "5m quote and taker-buy volumes");
}

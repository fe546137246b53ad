//! The candle oracle: candles built from Binance's own aggTrades must equal
//! Binance's own klines, field for field, quiet minutes included.
//!
//! Data (not in this repository): `$TICKFETCH_SHARED_DATA/oracle/binance_spot_XRPETH_2019-10-11/`
//! (default `<crate>/../shared/data`), see `SOURCES.md` there: 12,477 aggTrades
//! (14,672 raw trades) of XRPETH from 2019-10-11 00:00 to 2019-10-13 11:19 UTC,
//! and the 3,560 1m and 712 5m klines of the same span. When the folder is
//! absent every test prints "skipping: … not found" and passes.
//!
//! Flow: CSV → `tickfetch::import` → `CandlePipeline` (trades → 1s → 5s → 1m → 5m)
//! → candles, compared exactly (decimals parsed from the klines' JSON text, never
//! through f64) with the klines. Besides the straight import, the same trades
//! are fed duplicated, delayed by minutes (late data → corrections), and through
//! a mid-stream state snapshot/restore; the latest revision of every window must
//! still equal the oracle.

mod common;

use std::io::Cursor;

use common::oracle::*;
use tickfetch::import::{candles_from_reader, ImportFormat, ImportReport};
use tickfetch::model::{Candle, CandleStatus, Exchange, Interval, Millis};
use tickfetch::rollup::engine::{CandlePipeline, CandleState, Outcome, PipelineConfig, TradeState};

fn import(text: Vec<u8>) -> (Vec<Candle>, ImportReport) {
    let mut candles = Vec::new();
    let report = candles_from_reader(
        Cursor::new(text),
        ImportFormat::BinanceAggTradesCsv,
        Exchange::Binance,
        SYMBOL,
        &[Interval::M1, Interval::M5],
        PipelineConfig::default(),
        |c| candles.push(c.clone()),
        |e| panic!("unexpected import error: {e}"),
    )
    .expect("import");
    (candles, report)
}

#[test]
fn import_of_aggtrades_equals_binance_1m_and_5m_klines() {
    let Some(dir) = oracle_dir("import_of_aggtrades_equals_binance_1m_and_5m_klines") else {
        return;
    };
    let (candles, report) = import(std::fs::read(dir.join(TRADES_CSV)).expect("read csv"));
    assert_eq!(report.read.trades, AGG_TRADES);
    assert_eq!(
        (
            report.read.bad_rows,
            report.duplicates,
            report.corrected,
            report.too_late
        ),
        (0, 0, 0, 0)
    );
    assert!(report.read.header);
    // In-order input: exactly one candle per window, never a correction.
    assert_eq!(
        candles
            .iter()
            .filter(|c| c.interval == Interval::M1)
            .count(),
        KLINES_1M
    );
    assert_eq!(
        candles
            .iter()
            .filter(|c| c.interval == Interval::M5)
            .count(),
        KLINES_5M
    );
    assert_eq!(report.candles as usize, KLINES_1M + KLINES_5M);
    assert!(candles.iter().all(|c| c.revision == 0));
    assert_oracle(&dir, &candles, &read_trades(&dir));
}

#[test]
fn every_row_twice_counts_once() {
    let Some(dir) = oracle_dir("every_row_twice_counts_once") else {
        return;
    };
    let text = std::fs::read_to_string(dir.join(TRADES_CSV)).expect("read csv");
    let mut doubled = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        doubled.push_str(line);
        doubled.push('\n');
        if !line.starts_with("agg_trade_id") {
            doubled.push_str(line);
            doubled.push('\n');
        }
    }
    let (candles, report) = import(doubled.into_bytes());
    assert_eq!(report.duplicates, AGG_TRADES);
    assert_eq!(report.candles as usize, KLINES_1M + KLINES_5M);
    assert_oracle(&dir, &candles, &read_trades(&dir));
}

#[test]
fn trades_delayed_by_minutes_end_in_corrections_that_equal_the_oracle() {
    let Some(dir) =
        oracle_dir("trades_delayed_by_minutes_end_in_corrections_that_equal_the_oracle")
    else {
        return;
    };
    let trades = read_trades(&dir);
    // Every 7th trade arrives 3 minutes of event time late (within the 10 min
    // retention): its windows have closed at every level by then.
    const DELAY: Millis = 180_000;
    let mut arrival: Vec<(Millis, usize)> = trades
        .iter()
        .enumerate()
        .map(|(i, t)| (t.exchange_time + if i % 7 == 3 { DELAY } else { 0 }, i))
        .collect();
    arrival.sort_unstable();
    let mut pipeline =
        CandlePipeline::new(&[Interval::M1, Interval::M5], PipelineConfig::default())
            .expect("pipeline");
    let mut candles = Vec::new();
    let mut corrected = 0;
    for &(_, i) in &arrival {
        match pipeline.on_trade(&trades[i], &mut candles).expect("trade") {
            Outcome::Corrected => corrected += 1,
            Outcome::Accepted => {}
            other => panic!("trade {} was {other:?}", trades[i].trade_id),
        }
    }
    pipeline.finish(&mut candles).expect("finish");
    assert!(
        corrected > 1_000,
        "most delayed trades land in closed windows: {corrected}"
    );
    assert!(candles
        .iter()
        .any(|c| c.interval == Interval::M5 && c.revision > 0));
    assert!(
        candles
            .iter()
            .any(|c| c.status == CandleStatus::Quiet && c.revision > 0),
        "quiet minutes after a corrected close are corrected too"
    );
    assert_oracle(&dir, &candles, &trades);
}

#[test]
fn snapshot_and_restore_mid_stream_gives_byte_identical_candles() {
    let Some(dir) = oracle_dir("snapshot_and_restore_mid_stream_gives_byte_identical_candles")
    else {
        return;
    };
    let trades = read_trades(&dir);
    let intervals = Interval::ALL;
    let run = |restart_at: Option<usize>| -> Vec<u8> {
        let mut pipeline =
            CandlePipeline::new(&intervals, PipelineConfig::default()).expect("pipeline");
        let mut out = Vec::new();
        for (i, trade) in trades.iter().enumerate() {
            if Some(i) == restart_at {
                let mut fresh =
                    CandlePipeline::new(&intervals, PipelineConfig::default()).expect("pipeline");
                let key = "binance:XRPETH";
                let json =
                    serde_json::to_string(pipeline.trade_rollup().state(key).expect("state"))
                        .expect("json");
                let state: TradeState = serde_json::from_str(&json).expect("state json");
                fresh
                    .trade_rollup_mut()
                    .restore(key, state)
                    .expect("restore");
                for interval in [Interval::S5, Interval::M1, Interval::M5] {
                    let level = pipeline.candle_rollup(interval).expect("level");
                    // A level that has seen no candle yet has no state to carry.
                    let Some(state) = level.state(key) else {
                        continue;
                    };
                    let json = serde_json::to_string(state).expect("json");
                    let state: CandleState = serde_json::from_str(&json).expect("state json");
                    fresh
                        .candle_rollup_mut(interval)
                        .expect("level")
                        .restore(key, state)
                        .expect("restore");
                }
                pipeline = fresh;
            }
            pipeline.on_trade(trade, &mut out).expect("trade");
        }
        pipeline.finish(&mut out).expect("finish");
        let mut bytes = Vec::new();
        for candle in &out {
            serde_json::to_writer(&mut bytes, candle).expect("json");
            bytes.push(b'\n');
        }
        bytes
    };
    let straight = run(None);
    for restart in [1, trades.len() / 3, trades.len() - 1] {
        assert!(
            run(Some(restart)) == straight,
            "restart before trade {restart} changed the output"
        );
    }
    // The straight run itself equals the oracle.
    let candles: Vec<Candle> = straight
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("candle json"))
        .collect();
    assert_oracle(&dir, &candles, &trades);
}

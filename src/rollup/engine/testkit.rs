//! Builders shared by the engine's tests.

use super::*;
use std::str::FromStr;

pub(crate) const T0: Millis = 1_570_752_000_000; // 2019-10-11T00:00:00Z, a 5m boundary

pub(crate) fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("test decimal")
}

pub(crate) fn trade(id: u64, time: Millis, price: &str, qty: &str, side: Side) -> Trade {
    Trade {
        exchange: Exchange::Binance,
        symbol: "XRPETH".to_owned(),
        instrument: "XRP-ETH".to_owned(),
        trade_id: id.to_string(),
        price: dec(price),
        quantity: dec(qty),
        side,
        exchange_time: time,
        receive_time: time,
        first_trade_id: None,
        last_trade_id: None,
    }
}

pub(crate) fn agg(id: u64, first: u64, last: u64, time: Millis, price: &str, qty: &str) -> Trade {
    Trade {
        first_trade_id: Some(first),
        last_trade_id: Some(last),
        ..trade(id, time, price, qty, Side::Sell)
    }
}

pub(crate) fn watermark(time: Millis) -> Watermark {
    Watermark {
        exchange: Exchange::Binance,
        symbol: "XRPETH".to_owned(),
        time,
    }
}

pub(crate) fn level1() -> TradeRollup {
    TradeRollup::new(LevelConfig::TRADES_DEFAULT).expect("config")
}

pub(crate) fn run_trades(
    engine: &mut TradeRollup,
    trades: &[Trade],
) -> (Vec<Outcome>, Vec<Candle>) {
    let mut out = Vec::new();
    let outcomes = trades
        .iter()
        .map(|t| engine.on_trade(t, &mut out).expect("valid trade"))
        .collect();
    (outcomes, out)
}

/// A child candle of `interval` at `open_time`: `None` prices → quiet at `quiet_at`.
pub(crate) fn child(
    interval: Interval,
    open_time: Millis,
    ohlc: Option<[&str; 4]>,
    quiet_at: &str,
    volume: &str,
) -> Candle {
    let (open, high, low, close, count, status, ids) = match ohlc {
        Some([o, h, l, c]) => (
            dec(o),
            dec(h),
            dec(l),
            dec(c),
            1,
            CandleStatus::Complete,
            (Some(open_time.to_string()), Some(open_time.to_string())),
        ),
        None => {
            let p = dec(quiet_at);
            (p, p, p, p, 0, CandleStatus::Quiet, (None, None))
        }
    };
    let volume = if ohlc.is_some() {
        dec(volume)
    } else {
        Decimal::ZERO
    };
    Candle {
        exchange: Exchange::Binance,
        symbol: "XRPETH".to_owned(),
        interval,
        open_time,
        close_time: open_time + interval.millis() - 1,
        open,
        high,
        low,
        close,
        volume,
        quote_volume: volume * close,
        trade_count: count,
        taker_buy_volume: Decimal::ZERO,
        taker_buy_quote_volume: Decimal::ZERO,
        first_trade_id: ids.0,
        last_trade_id: ids.1,
        status,
        revision: 0,
    }
}

pub(crate) fn ohlcv(c: &Candle) -> [String; 5] {
    [c.open, c.high, c.low, c.close, c.volume].map(|d| d.normalize().to_string())
}

pub(crate) fn full_pipeline() -> CandlePipeline {
    CandlePipeline::new(&Interval::ALL, PipelineConfig::default()).expect("pipeline")
}

pub(crate) fn scripted_input() -> Vec<Trade> {
    let mut trades = Vec::new();
    for i in 0..400u64 {
        let time = T0 + (i as Millis) * 1_370 % 400_000 + (i as Millis) * 900;
        let price = format!("1.{:03}", (i * 37) % 1000);
        trades.push(trade(
            i + 1,
            time,
            &price,
            "1.5",
            if i % 3 == 0 { Side::Buy } else { Side::Sell },
        ));
        if i % 17 == 0 {
            trades.push(trade(i + 1, time, &price, "1.5", Side::Buy)); // duplicate
        }
    }
    trades
}

#!/usr/bin/env python3
"""nautilus_trader's TimeBarAggregator (1-SECOND and 1-MINUTE, LAST, from trade ticks) on tickfetch trades.

    nautilus_bars.py --trades FILE.jsonl [--instruments K] [--bars OUT.jsonl]
    nautilus_bars.py --generate N --instruments K --rate R [--write-trades T.jsonl] [--bars OUT.jsonl]

The candle engine alone, no Kafka, no BacktestEngine: one TestClock, two
aggregators per instrument. Phases are timed apart: reading (or generating) the
trades, building the TradeTick objects, and the aggregation, which is the
loop below: the clock is advanced to a tick's time when a bar timer is due (on
second boundaries), the due timers fire (building the bars), then the tick goes
to both aggregators. After the last tick the clock is advanced to the end of the
last minute, so every bar is built. Prints one JSON line.

Timers due at a tick's own time fire before that tick is handled, so a trade at
t belongs to [t, t+interval) as in tickfetch (--left-open: as nautilus's
BacktestEngine orders it, a trade exactly on a boundary closes the earlier bar).
"""
import argparse
import json
import time
from importlib.metadata import version

from nautilus_trader.common.component import TestClock
from nautilus_trader.data.aggregation import TimeBarAggregator
from nautilus_trader.model.currencies import BTC, USDT
from nautilus_trader.model.data import BarSpecification, BarType, TradeTick
from nautilus_trader.model.enums import AggregationSource, AggressorSide, BarAggregation, PriceType
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import FIXED_PRECISION, Price, Quantity

from tradegen import Market

NS_PER_MS = 1_000_000
SEC, MIN = 1_000 * NS_PER_MS, 60_000 * NS_PER_MS
SIDES = {"buy": AggressorSide.BUYER, "sell": AggressorSide.SELLER, "unknown": AggressorSide.NO_AGGRESSOR}


def decimals(s: str) -> int:
    return len(s) - s.index(".") - 1 if "." in s else 0


def raw(s: str) -> int:
    """The exact fixed-point raw value of a decimal string (FIXED_PRECISION decimals)."""
    whole, _, frac = s.partition(".")
    return int(whole + frac) * 10 ** (FIXED_PRECISION - len(frac))


def load(args) -> list[dict]:
    if args.generate:
        return list(Market(args.instruments, args.seed).generate(args.generate, args.rate))
    keep, trades = set(), []
    with open(args.trades) as f:
        for line in f:
            t = json.loads(line)
            key = (t["exchange"], t["symbol"])
            if key not in keep:
                if args.instruments and len(keep) >= args.instruments:
                    continue
                keep.add(key)
            trades.append(t)
    return trades


def instrument(exchange: str, symbol: str, pprec: int, sprec: int) -> CurrencyPair:
    iid = InstrumentId(Symbol(symbol), Venue(exchange.upper()))
    return CurrencyPair(
        instrument_id=iid, raw_symbol=Symbol(symbol), base_currency=BTC, quote_currency=USDT,
        price_precision=pprec, size_precision=sprec,
        price_increment=Price(10.0**-pprec, pprec), size_increment=Quantity(10.0**-sprec, sprec),
        ts_event=0, ts_init=0,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", help="trades JSONL (tickfetch wire format)")
    ap.add_argument("--generate", type=int, metavar="N", help="generate N trades instead")
    ap.add_argument("--instruments", type=int, help="with --trades: keep the first K symbols; with --generate: K symbols (default 1)")
    ap.add_argument("--rate", type=float, default=20_000, help="generated trades per second of event time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write-trades", help="write the trades used as JSONL (for check_candles.py)")
    ap.add_argument("--bars", help="write the bars as JSONL candles")
    ap.add_argument("--left-open", action="store_true", help="a trade on a boundary closes the earlier bar")
    ap.add_argument("--no-empty-bars", action="store_true", help="build_with_no_updates=False")
    args = ap.parse_args()
    if not args.trades and not args.generate:
        ap.error("give --trades FILE or --generate N")
    if args.generate and not args.instruments:
        args.instruments = 1

    t0 = time.perf_counter()
    trades = load(args)
    t_load = time.perf_counter() - t0
    if args.write_trades:
        with open(args.write_trades, "w") as f:
            f.writelines(json.dumps(t, separators=(",", ":")) + "\n" for t in trades)

    # One instrument per symbol, with the most decimals its prices and quantities have.
    prec = {}
    for t in trades:
        p, q = prec.get((t["exchange"], t["symbol"]), (0, 0))
        prec[(t["exchange"], t["symbol"])] = (max(p, decimals(t["price"])), max(q, decimals(t["quantity"])))
    first_ns = min(t["exchange_time"] for t in trades) * NS_PER_MS
    last_ns = max(t["exchange_time"] for t in trades) * NS_PER_MS
    clock = TestClock()
    clock.set_time(first_ns)  # the bar timers start at the interval holding the first trade
    aggs, bars = {}, {}
    for key, (pp, sp) in prec.items():
        inst = instrument(*key, pp, sp)
        for unit, ms in ((BarAggregation.SECOND, 1000), (BarAggregation.MINUTE, 60_000)):
            out = bars.setdefault((key, ms), [])
            aggs.setdefault(key, []).append(TimeBarAggregator(
                inst, BarType(inst.id, BarSpecification(1, unit, PriceType.LAST), AggregationSource.INTERNAL),
                out.append, clock,
                build_with_no_updates=not args.no_empty_bars))

    # Phase 1: build the TradeTick objects.
    t0 = time.perf_counter()
    work = []
    for t in trades:
        key = (t["exchange"], t["symbol"])
        a1, a60 = aggs[key]
        pp, sp = prec[key]
        ts = t["exchange_time"] * NS_PER_MS
        tick = TradeTick(a1.bar_type.instrument_id, Price.from_raw(raw(t["price"]), pp),
                         Quantity.from_raw(raw(t["quantity"]), sp), SIDES[t["side"]],
                         TradeId(t["trade_id"]), ts, ts)
        work.append((tick, a1.handle_trade_tick, a60.handle_trade_tick))
    t_build = time.perf_counter() - t0

    # Phase 2: the aggregation.
    lag = 1 if args.left_open else 0
    t0 = time.perf_counter()
    due = (first_ns // SEC + 1) * SEC
    for tick, h1, h60 in work:
        ts = tick.ts_init
        if ts >= due:
            for event in clock.advance_time(ts - lag):
                event.handle()
            due = ((ts - lag) // SEC + 1) * SEC
        h1(tick)
        h60(tick)
    for event in clock.advance_time((last_ns // MIN + 1) * MIN):
        event.handle()
    t_agg = time.perf_counter() - t0

    n = len(trades)
    count = {ms: sum(len(b) for (k, m), b in bars.items() if m == ms) for ms in (1000, 60_000)}
    empty = sum(1 for b in bars.values() for bar in b if bar.volume.raw == 0)
    if args.bars:
        with open(args.bars, "w") as f:
            for ((exchange, symbol), ms), bs in bars.items():
                for bar in bs:
                    open_time = bar.ts_event // NS_PER_MS - ms  # ts_event is the close (timestamp_on_close)
                    f.write(json.dumps({
                        "exchange": exchange, "symbol": symbol, "interval": "1s" if ms == 1000 else "1m",
                        "open_time": open_time, "close_time": open_time + ms - 1,
                        "open": str(bar.open), "high": str(bar.high), "low": str(bar.low),
                        "close": str(bar.close), "volume": str(bar.volume),
                        "status": "quiet" if bar.volume.raw == 0 else "complete", "revision": 0,
                    }) + "\n")
    print(json.dumps({
        "peer": "nautilus_trader", "version": version("nautilus_trader"),
        "instruments": len(prec), "trades": n,
        "load_ms": round(t_load * 1000), "build_ms": round(t_build * 1000),
        "ticks_built_per_s": round(n / t_build), "aggregation_ms": round(t_agg * 1000),
        "aggregation_trades_per_s": round(n / t_agg),
        "bars_1s": count[1000], "bars_1m": count[60_000], "empty_bars": empty,
    }))


if __name__ == "__main__":
    main()

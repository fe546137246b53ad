#!/usr/bin/env python3
"""Quix Streams peer: 1s and 1m OHLCV candles over tickfetch's trades topic.

    quix_candles.py --bootstrap HOST:PORT --input T --output-1s T --output-1m T --group ID
                    --state-dir DIR [--grace-ms 1000] [--expect-trades N] [--stop-after-idle-secs S]

Tumbling windows [t, t+interval) on the event time (the trade's exchange_time,
through a timestamp extractor), reduced with exact decimal.Decimal arithmetic,
emitted with .final() once event time passes a window's end plus the grace, to
one topic per interval, with processing_guarantee="exactly-once". Watermark
records (header tickfetch-kind: watermark) carry no trade but advance event time
to their `time`, so they close windows as they do in tickfetch; gap records are
dropped. Prints one JSON line at exit.

Stops (when asked to) once --expect-trades trades were seen and nothing came for
a second, or once nothing came for --stop-after-idle-secs (Quix's run(timeout=),
which starts counting after the partitions are assigned and state recovered).
elapsed_ms runs from the first trade to the last record processed.
"""
import argparse
import json
import threading
import time
import warnings
from decimal import DefaultContext, Decimal, Inexact, getcontext

try:  # authlib (via confluent-kafka's schema registry) sets "always" for its warnings when imported
    import authlib.deprecate  # noqa: F401
except ImportError:
    pass
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
from quixstreams import Application  # noqa: E402
from quixstreams.models import TopicConfig  # noqa: E402

# Exact: wide enough for any sum of price * quantity, and any rounding raises.
for ctx in (getcontext(), DefaultContext):
    ctx.prec, ctx.traps[Inexact] = 60, True

D = Decimal


class Stats:
    trades = 0
    first = last = None
    candles = {"1s": 0, "1m": 0}
    late = {"1s": 0, "1m": 0}


def kind(headers) -> str:
    for name, value in headers or ():
        if name == "tickfetch-kind":
            return value.decode() if isinstance(value, bytes) else value
    return "trade"


def event_time(value, headers, timestamp, timestamp_type) -> int:
    return value.get("exchange_time") or value.get("time") or timestamp


def parse(value, key, timestamp, headers):
    """A trade as a tuple (Decimals built once for both windows); a watermark as None."""
    Stats.last = time.monotonic()
    if "exchange_time" not in value:
        return None
    Stats.trades += 1
    if Stats.first is None:
        Stats.first = Stats.last
    p, q = D(value["price"]), D(value["quantity"])
    tid = value["trade_id"]
    first, last = value.get("first_trade_id"), value.get("last_trade_id")
    n = last - first + 1 if first is not None and last is not None and last >= first else 1
    return (timestamp, value["price"], p, value["quantity"], q, p * q, value["side"] == "buy", n,
            str(tid if first is None else first), str(tid if last is None else last))


# Window state (JSON in RocksDB and the changelog, so decimals as strings):
# [open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume,
#  taker_buy_quote_volume, first_trade_id, last_trade_id, open_ts, close_ts]
def initializer(t):
    if t is None:
        return None
    ts, ps, p, qs, q, quote, buy, n, fid, lid = t
    qt = str(quote)
    return [ps, ps, ps, ps, qs, qt, n, qs if buy else "0", qt if buy else "0", fid, lid, ts, ts]


def reducer(a, t):
    if t is None:
        return a
    ts, ps, p, qs, q, quote, buy, n, fid, lid = t
    if p > D(a[1]):
        a[1] = ps
    elif p < D(a[2]):
        a[2] = ps
    if ts < a[11]:  # open: earliest exchange_time, ties: first arrived
        a[0], a[9], a[11] = ps, fid, ts
    if ts >= a[12]:  # close: latest exchange_time, ties: last arrived
        a[3], a[10], a[12] = ps, lid, ts
    a[4], a[5], a[6] = str(D(a[4]) + q), str(D(a[5]) + quote), a[6] + n
    if buy:
        a[7], a[8] = str(D(a[7]) + q), str(D(a[8]) + quote)
    return a


def plain(s: str) -> str:
    return format(D(s), "f")


def candle_of(name: str, ms: int):
    def candle(window, key, timestamp, headers):
        a = window["value"]
        Stats.candles[name] += 1
        exchange, symbol = key.split(":", 1)
        return {
            "exchange": exchange, "symbol": symbol, "interval": name,
            "open_time": window["start"], "close_time": window["start"] + ms - 1,
            "open": a[0], "high": a[1], "low": a[2], "close": a[3],
            "volume": plain(a[4]), "quote_volume": plain(a[5]), "trade_count": a[6],
            "taker_buy_volume": plain(a[7]), "taker_buy_quote_volume": plain(a[8]),
            "first_trade_id": a[9], "last_trade_id": a[10], "status": "complete", "revision": 0,
        }
    return candle


def on_late(name):
    def late(value, *_):
        if value is not None:
            Stats.late[name] += 1
        return False  # counted, not logged
    return late


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output-1s", required=True)
    ap.add_argument("--output-1m", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--grace-ms", type=int, default=1000)
    ap.add_argument("--closing-strategy", choices=("key", "partition"), default="key",
                    help="windows close by their key's event time (Quix's default) or the partition's")
    ap.add_argument("--output-partitions", type=int, default=4)
    ap.add_argument("--commit-interval", type=float, default=5.0)
    ap.add_argument("--expect-trades", type=int)
    ap.add_argument("--stop-after-idle-secs", type=float)
    ap.add_argument("--loglevel", default="WARNING")
    args = ap.parse_args()

    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, state_dir=args.state_dir,
        processing_guarantee="exactly-once", auto_offset_reset="earliest",
        commit_interval=args.commit_interval, loglevel=args.loglevel,
    )
    trades = app.topic(args.input, key_deserializer="str", value_deserializer="json",
                       timestamp_extractor=event_time)
    sdf = app.dataframe(trades)
    sdf = sdf.filter(lambda v, k, ts, h: kind(h) in ("trade", "watermark"), metadata=True)
    sdf = sdf.apply(parse, metadata=True)
    for name, ms, out in (("1s", 1000, args.output_1s), ("1m", 60_000, args.output_1m)):
        topic = app.topic(out, key_serializer="str", value_serializer="json",
                          config=TopicConfig(num_partitions=args.output_partitions, replication_factor=1))
        (sdf.tumbling_window(ms, grace_ms=args.grace_ms, name=f"candles_{name}", on_late=on_late(name))
            .reduce(reducer, initializer)
            .final(closing_strategy=args.closing_strategy)
            .filter(lambda w: w["value"] is not None)  # windows that saw only watermarks
            .apply(candle_of(name, ms), metadata=True)
            .to_topic(topic))

    def watchdog():  # --expect-trades: stop once they were seen and a second passed quietly
        while not (Stats.trades >= args.expect_trades and time.monotonic() - Stats.last >= 1.0):
            time.sleep(0.2)
        app.stop()

    if args.expect_trades:
        threading.Thread(target=watchdog, daemon=True).start()
    # Quix's own idle timeout counts from the first assignment and recovery, not from start-up.
    app.run(timeout=args.stop_after_idle_secs or 0.0, collect=False)

    elapsed = (Stats.last - Stats.first) if Stats.first is not None else 0.0
    print(json.dumps({
        "trades": Stats.trades, "candles_1s": Stats.candles["1s"], "candles_1m": Stats.candles["1m"],
        "late_1s": Stats.late["1s"], "late_1m": Stats.late["1m"],
        "elapsed_ms": round(elapsed * 1000),
        "trades_per_s": round(Stats.trades / elapsed) if elapsed > 0 else None,
    }), flush=True)


if __name__ == "__main__":
    main()

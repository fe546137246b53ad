#!/usr/bin/env python3
"""Recomputes 1s and 1m candles from ProduceTrades' JSONL file and compares
every field of every candle StreamsCandles wrote (as dumped by ReadTopic).

Independent of the Java code: Python's decimal module with a precision no sum
here can reach, open/close chosen by sorting each window's trades by
(exchange_time, numeric trade id, arrival), and Kafka Streams' time rules
stated once: per input partition, stream time is the largest event time seen;
a trade is dropped when its window's end + grace <= stream time; a window is
emitted once stream time reaches its end + grace. Windows not yet closed when
the input ended are "held back": suppress has not emitted them, which is
expected (README, "Idle partitions").

usage: check_candles.py TRADES.jsonl CANDLES_1S.tsv CANDLES_1M.tsv GRACE_MS
Exits 0 when every emitted candle matches and exactly the closed windows were
emitted, once each.
"""
import decimal
import json
import sys
from collections import defaultdict
from decimal import Decimal

decimal.getcontext().prec = 500
INTERVALS = {"1s": 1_000, "1m": 60_000}
FIELDS = {"exchange", "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
          "volume", "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume",
          "first_trade_id", "last_trade_id", "status", "revision"}
DECIMALS = ["open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume"]


def expected(trades_path, grace):
    windows = {name: defaultdict(list) for name in INTERVALS}  # (key, open_time) -> trades
    stream_time = defaultdict(lambda: -1)
    partition_of = {}
    late = {name: 0 for name in INTERVALS}
    with open(trades_path) as f:
        for arrival, line in enumerate(f):
            part, text = line.rstrip("\n").split("\t", 1)
            t = json.loads(text)
            key = f"{t['exchange']}:{t['symbol']}"
            partition_of[key] = int(part)
            p = int(part)
            stream_time[p] = max(stream_time[p], t["exchange_time"])
            for name, ms in INTERVALS.items():
                start = t["exchange_time"] // ms * ms
                if start + ms + grace <= stream_time[p]:
                    late[name] += 1
                    continue
                windows[name][(key, start)].append((arrival, t))
    out = {}
    for name, ms in INTERVALS.items():
        out[name] = {}
        for (key, start), ts in windows[name].items():
            order = sorted(ts, key=lambda at: (at[1]["exchange_time"], int(at[1]["trade_id"]), at[0]))
            first, last = order[0][1], order[-1][1]
            price = [Decimal(t["price"]) for _, t in ts]
            qty = [Decimal(t["quantity"]) for _, t in ts]
            buys = [(Decimal(t["price"]), Decimal(t["quantity"])) for _, t in ts if t["side"] == "buy"]
            count = sum(t["last_trade_id"] - t["first_trade_id"] + 1 if "first_trade_id" in t else 1 for _, t in ts)
            closed = start + ms + grace <= stream_time[partition_of[key]]
            out[name][(key, start)] = (closed, {
                "exchange": first["exchange"], "symbol": first["symbol"], "interval": name,
                "open_time": start, "close_time": start + ms - 1,
                "open": Decimal(first["price"]), "high": max(price), "low": min(price),
                "close": Decimal(last["price"]), "volume": sum(qty),
                "quote_volume": sum(p * q for p, q in zip(price, qty)), "trade_count": count,
                "taker_buy_volume": sum((q for _, q in buys), Decimal(0)),
                "taker_buy_quote_volume": sum((p * q for p, q in buys), Decimal(0)),
                "first_trade_id": str(first.get("first_trade_id", first["trade_id"])),
                "last_trade_id": str(last.get("last_trade_id", last["trade_id"])),
                "status": "complete", "revision": 0,
            })
    return out, late


def compare(name, want, path):
    seen = defaultdict(int)
    bad = []
    with open(path) as f:
        for line in f:
            _, key, text = line.rstrip("\n").split("\t", 2)
            c = json.loads(text)
            w = want.get((key, c.get("open_time")))
            seen[(key, c.get("open_time"))] += 1
            if set(c) != FIELDS:
                bad.append(f"{key} {c.get('open_time')}: fields {sorted(set(c) ^ FIELDS)}")
                continue
            if w is None:
                bad.append(f"{key} {c['open_time']}: no trades in this window")
                continue
            got = dict(c, **{d: Decimal(c[d]) for d in DECIMALS})
            diff = [f for f in FIELDS if got[f] != w[1][f]]
            if diff or key != f"{c['exchange']}:{c['symbol']}":
                bad.append(f"{key} {c['open_time']}: " + ", ".join(f"{f} {c[f]} != {w[1][f]}" for f in diff))
    closed = {k for k, (is_closed, _) in want.items() if is_closed}
    missing = closed - set(seen)
    early = {k for k in seen if k in want and not want[k][0]}
    dups = sum(n - 1 for n in seen.values())
    emitted = sum(seen.values())
    ok = not bad and not missing and not early and not dups
    print(f"{name}: {len(want)} windows with trades, {len(closed)} closed, {len(want) - len(closed)} held back; "
          f"{emitted} candles read: {emitted - len(bad) - dups} match, {len(bad)} differ, {len(missing)} missing, "
          f"{dups} duplicates, {len(early)} emitted before close -> {'OK' if ok else 'MISMATCH'}")
    for line in bad[:10]:
        print("  " + line)
    for k in sorted(missing)[:10]:
        print(f"  missing {k}")
    return ok


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.split("\n\n")[2])
    want, late = expected(sys.argv[1], int(sys.argv[4]))
    print(f"trades later than grace (Kafka Streams drops them): {late}")
    ok = all([compare("1s", want["1s"], sys.argv[2]), compare("1m", want["1m"], sys.argv[3])])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Recompute 1s and 1m candles from a trades JSONL file and compare every field a peer wrote.

    check_candles.py --trades T.jsonl --candles C.jsonl [--candles ...]
    check_candles.py --trades T.jsonl --bootstrap HOST:PORT --topics OUT_1S OUT_1M

Candles are read from JSONL files or from Kafka topics (read_committed, from the
beginning to the end). Decimal fields compare as decimal.Decimal values (and must
be plain decimal strings, no exponent); fields a peer leaves out (nautilus has no
quote volume, trade count, taker volumes or trade ids) are not compared. A
`quiet` candle (no trades) must lie in a window without trades, with
open = high = low = close = the previous close and zero volume. Prints one JSON
summary line; exits 0 when everything written matches and nothing is missing
or doubled.
"""
import argparse
import json
import re
import sys
import time
import uuid
from decimal import Decimal

INTERVALS = {"1s": 1000, "1m": 60_000}
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume",
            "taker_buy_volume", "taker_buy_quote_volume")
PLAIN = re.compile(r"^-?\d+(\.\d+)?$")


def expected_candles(path):
    """{(key, interval, open_time): candle} and each key's last trade time."""
    out, last = {}, {}
    with open(path) as f:
        for line in f:
            t = json.loads(line)
            key, ts = f"{t['exchange']}:{t['symbol']}", t["exchange_time"]
            p, q = Decimal(t["price"]), Decimal(t["quantity"])
            quote, buy = p * q, t["side"] == "buy"
            first = str(t.get("first_trade_id", t["trade_id"]))
            lastid = str(t.get("last_trade_id", t["trade_id"]))
            n = t["last_trade_id"] - t["first_trade_id"] + 1 if "last_trade_id" in t else 1
            last[key] = max(last.get(key, ts), ts)
            for name, ms in INTERVALS.items():
                ot = ts - ts % ms
                c = out.get((key, name, ot))
                if c is None:
                    out[(key, name, ot)] = {
                        "exchange": t["exchange"], "symbol": t["symbol"], "interval": name,
                        "open_time": ot, "close_time": ot + ms - 1,
                        "open": p, "high": p, "low": p, "close": p, "volume": q,
                        "quote_volume": quote, "trade_count": n,
                        "taker_buy_volume": q if buy else Decimal(0),
                        "taker_buy_quote_volume": quote if buy else Decimal(0),
                        "first_trade_id": first, "last_trade_id": lastid,
                        "status": "complete", "revision": 0, "_open_ts": ts, "_close_ts": ts,
                    }
                    continue
                c["high"], c["low"] = max(c["high"], p), min(c["low"], p)
                c["volume"] += q
                c["quote_volume"] += quote
                c["trade_count"] += n
                if buy:
                    c["taker_buy_volume"] += q
                    c["taker_buy_quote_volume"] += quote
                if ts < c["_open_ts"]:  # ties: the first arrived stays the open
                    c["open"], c["first_trade_id"], c["_open_ts"] = p, first, ts
                if ts >= c["_close_ts"]:  # ties: the last arrived becomes the close
                    c["close"], c["last_trade_id"], c["_close_ts"] = p, lastid, ts
    return out, last


def read_files(paths):
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def read_topics(bootstrap, topics):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    tps, ends = [], {}
    for topic in topics:
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            tp = TopicPartition(topic, p, OFFSET_BEGINNING)
            tps.append(tp)
            ends[(topic, p)] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    c.assign(tps)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 5:
        msg = c.poll(0.5)
        if msg is None:
            pos = c.position([TopicPartition(t, p) for t, p in ends])
            if all(tp.offset >= ends[(tp.topic, tp.partition)] for tp in pos):
                break
            continue
        if msg.error():
            raise SystemExit(f"kafka: {msg.error()}")
        idle_since = time.monotonic()
        yield json.loads(msg.value())
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", required=True)
    ap.add_argument("--candles", action="append", default=[])
    ap.add_argument("--bootstrap")
    ap.add_argument("--topics", nargs="*", default=[])
    ap.add_argument("--grace-ms", type=int, default=1000,
                    help="a missing window ending within grace of its key's last trade is counted as 'open at end'")
    args = ap.parse_args()

    expected, last_trade = expected_candles(args.trades)
    written = list(read_files(args.candles))
    if args.topics:
        written += read_topics(args.bootstrap, args.topics)

    seen, mismatched, examples, compared = set(), {}, [], set()
    doubled = quiet = quiet_bad = 0
    # previous complete close of each (key, interval) before a window, for quiet candles
    closes = {}
    for (key, name, ot), c in sorted(expected.items()):
        closes.setdefault((key, name), []).append((ot, c["close"]))

    def bad(field, c, want):
        mismatched[field] = mismatched.get(field, 0) + 1
        if len(examples) < 5:
            examples.append({"field": field, "candle": c, "expected": str(want)})

    for c in written:
        ident = (f"{c['exchange']}:{c['symbol']}", c["interval"], c["open_time"])
        if ident in seen:
            doubled += 1
            continue
        seen.add(ident)
        want = expected.get(ident)
        if c.get("status") == "quiet":
            quiet += 1
            prev = [cl for ot, cl in closes.get(ident[:2], []) if ot < ident[2]]
            if want is not None or not prev or Decimal(c["volume"]) != 0 or any(
                    Decimal(c[f]) != prev[-1] for f in ("open", "high", "low", "close")):
                quiet_bad += 1
                bad("quiet", c, want and want["close"])
            continue
        if want is None:
            bad("unexpected_window", c, None)
            continue
        for field, value in c.items():
            if field not in want:
                continue
            compared.add(field)
            if field in DECIMALS:
                if not isinstance(value, str) or not PLAIN.match(value):
                    bad(field + "_format", c, want[field])
                elif Decimal(value) != want[field]:
                    bad(field, c, want[field])
            elif value != want[field]:
                bad(field, c, want[field])

    missing = [k for k in expected if k not in seen]
    open_at_end = [k for k in missing
                   if k[2] + INTERVALS[k[1]] + args.grace_ms > last_trade[k[0]]]
    per_interval = {name: sum(1 for k in seen if k[1] == name) for name in INTERVALS}
    summary = {
        "expected": {name: sum(1 for k in expected if k[1] == name) for name in INTERVALS},
        "written": per_interval, "quiet": quiet, "quiet_bad": quiet_bad,
        "doubled": doubled, "missing": len(missing), "missing_open_at_end": len(open_at_end),
        "fields_compared": sorted(compared), "mismatched": mismatched,
        "match": not mismatched and not doubled and not missing,
    }
    print(json.dumps(summary))
    for e in examples:
        print("example:", json.dumps(e, default=str), file=sys.stderr)
    for k in missing[:5]:
        print("missing:", k, file=sys.stderr)
    sys.exit(0 if summary["match"] else 1)


if __name__ == "__main__":
    main()

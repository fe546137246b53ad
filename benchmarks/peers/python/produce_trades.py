#!/usr/bin/env python3
"""Produce random-walk trades to a trades topic in tickfetch's wire format, and the same as JSONL.

    produce_trades.py --bootstrap HOST:PORT --topic T --symbols 500 --rate 20000 --seconds 10 --jsonl OUT

Creates the topic (4 partitions) if missing. Records are keyed exchange:symbol,
exchange_time = now (ms, never decreasing); binance symbols' trades carry the
header tickfetch-kind: trade, okx ones none. At the end each symbol gets a
watermark (tickfetch-kind: watermark) --watermark-ahead-ms past the last trade,
so the peers' final windows close. Prints one JSON line.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tradegen import Market


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20_000, help="trades per second")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--jsonl", required=True, help="write the trades here too")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--watermark-ahead-ms", type=int, default=62_000, help="0: no final watermarks")
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    if args.topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(args.topic, args.partitions, 1)])[args.topic].result()

    failed = []
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})

    def delivered(err, msg):
        if err is not None:
            failed.append(err)

    market, n, last = Market(args.symbols, args.seed), round(args.rate * args.seconds), 0
    trade_header = [("tickfetch-kind", b"trade")]
    start = time.monotonic()
    with open(args.jsonl, "w") as out:
        for k in range(n):
            due = start + k / args.rate
            if due > time.monotonic():
                producer.poll(0)
                time.sleep(max(0.0, due - time.monotonic()))
            last = max(last, time.time_ns() // 1_000_000)
            i = market.rng.randrange(args.symbols)
            t = market.trade(i, last)
            line = json.dumps(t, separators=(",", ":"))
            out.write(line + "\n")
            while True:
                try:
                    producer.produce(args.topic, line.encode(), market.key(i), on_delivery=delivered,
                                     headers=trade_header if t["exchange"] == "binance" else None)
                    break
                except BufferError:
                    producer.poll(0.05)
    produced = time.monotonic() - start
    if args.watermark_ahead_ms:
        for i, s in enumerate(market.syms):
            wm = {"exchange": s["exchange"], "symbol": s["symbol"], "time": last + args.watermark_ahead_ms}
            producer.produce(args.topic, json.dumps(wm).encode(), market.key(i),
                             headers=[("tickfetch-kind", b"watermark")], on_delivery=delivered)
    producer.flush(60)
    print(json.dumps({"trades": n, "symbols": args.symbols, "seconds": round(produced, 3),
                      "trades_per_s": round(n / produced), "failed": len(failed)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Produce tickfetch candle records to a candle topic, for the Kafka Connect peer's own test.

    produce_candles.py --bootstrap HOST:PORT --topic T [--symbols 20] [--minutes 1000]
                       [--partitions 4] [--epoch 1] [--transactional]

Creates the topic (--partitions, replication 1) if missing, then writes
symbols x minutes closed 1m candles in tickfetch's wire format: key
`exchange:symbol`, value the candle's JSON (decimals as strings), header
`tickfetch-epoch` (decimal ASCII). Symbols alternate between binance and okx.
Without --transactional the records are written by a plain idempotent producer
(a read_committed consumer reads them exactly as it would committed
transactional ones); with it, in transactions of 1,000 records, as tickfetch's
rollup writes its candle topics. Prints one JSON line.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BASE_OPEN_TIME = 1_700_000_040_000  # a minute boundary (ms)
MINUTE_MS = 60_000


def fmt(x):
    return f"{x:.3f}"


def candle(exchange, symbol, i, minute):
    """The `minute`-th 1m candle of symbol number `i`: deterministic, valid (low <= open, close <= high)."""
    open_time = BASE_OPEN_TIME + minute * MINUTE_MS
    base = 100.0 + i + (minute % 50) * 0.01
    trades = 3 + minute % 7
    volume = 1.5 + (minute % 10) * 0.1
    return {
        "exchange": exchange,
        "symbol": symbol,
        "interval": "1m",
        "open_time": open_time,
        "close_time": open_time + MINUTE_MS - 1,
        "open": fmt(base + 0.001),
        "high": fmt(base + 1.001),
        "low": fmt(base - 0.999),
        "close": fmt(base + 0.501),
        "volume": f"{volume:.1f}",
        "quote_volume": f"{volume * (base + 0.001):.4f}",
        "trade_count": trades,
        "taker_buy_volume": "0.5",
        "taker_buy_quote_volume": f"{0.5 * (base + 0.001):.4f}",
        "first_trade_id": str(minute * 10 + 1),
        "last_trade_id": str(minute * 10 + trades),
        "status": "complete",
        "revision": 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--minutes", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--epoch", type=int, default=1, help="value of the tickfetch-epoch header")
    ap.add_argument("--transactional", action="store_true",
                    help="write in transactions of 1,000 records, as tickfetch's rollup does")
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    if args.topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(args.topic, args.partitions, 1)])[args.topic].result()

    config = {"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "linger.ms": 5,
              "queue.buffering.max.messages": 1_000_000}
    if args.transactional:
        config["transactional.id"] = f"connect-peer-producer-{args.topic}"
    producer = Producer(config)
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(err)

    symbols = [("binance" if i % 2 == 0 else "okx", f"SYM{i:03d}USDT") for i in range(args.symbols)]
    headers = [("tickfetch-epoch", str(args.epoch).encode())]
    start = time.monotonic()
    if args.transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    n = 0
    for minute in range(args.minutes):
        for i, (exchange, symbol) in enumerate(symbols):
            value = json.dumps(candle(exchange, symbol, i, minute), separators=(",", ":")).encode()
            while True:
                try:
                    producer.produce(args.topic, value, f"{exchange}:{symbol}".encode(),
                                     headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
            if args.transactional and n % 1000 == 0:
                producer.commit_transaction(60)
                producer.begin_transaction()
    if args.transactional:
        producer.commit_transaction(60)
    producer.flush(60)
    seconds = time.monotonic() - start
    print(json.dumps({"candles": n, "symbols": args.symbols, "minutes": args.minutes,
                      "transactional": args.transactional, "seconds": round(seconds, 3),
                      "failed": len(failed)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

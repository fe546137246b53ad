"""Deterministic random-walk trades in tickfetch's wire format (docs/wire-format.md).

Shared by produce_trades.py (Kafka) and nautilus_bars.py (--generate). Symbol i
trades on binance (aggregated trades: first/last_trade_id) when i is even, on okx
(plain trades) when odd; each symbol has its own price and quantity decimals
(2-8 and 0-8), a price that walks in ticks, and trade ids that increase by one.
"""
import random


def fmt(mantissa: int, decimals: int) -> str:
    """An exact decimal string: fmt(141342, 8) == "0.00141342"."""
    if decimals == 0:
        return str(mantissa)
    scale = 10**decimals
    return f"{mantissa // scale}.{mantissa % scale:0{decimals}d}"


class Market:
    def __init__(self, symbols: int, seed: int = 1):
        self.rng = rng = random.Random(seed)
        self.syms = []
        for i in range(symbols):
            exchange = ("binance", "okx")[i % 2]
            base = f"C{i:03d}"
            pdec = rng.randint(2, 8)
            self.syms.append({
                "exchange": exchange,
                "symbol": f"{base}USDT" if exchange == "binance" else f"{base}-USDT",
                "instrument": f"{base}-USDT",
                "pdec": pdec,
                "qdec": rng.randint(0, 8),
                "price": max(100, int(10 ** rng.uniform(-2, 4.5) * 10**pdec)),
                "trade_id": rng.randint(1, 10**6),
                "raw_id": rng.randint(1, 10**8),
            })

    def key(self, i: int) -> str:
        s = self.syms[i]
        return f"{s['exchange']}:{s['symbol']}"

    def trade(self, i: int, now_ms: int) -> dict:
        s, rng = self.syms[i], self.rng
        s["price"] = max(1, s["price"] + rng.randint(-2, 2) * max(1, s["price"] // 5000))
        s["trade_id"] += 1
        t = {
            "exchange": s["exchange"],
            "symbol": s["symbol"],
            "instrument": s["instrument"],
            "trade_id": str(s["trade_id"]),
            "price": fmt(s["price"], s["pdec"]),
            "quantity": fmt(rng.randint(1, 50 * 10 ** s["qdec"]), s["qdec"]),
            "side": "buy" if rng.random() < 0.5 else "sell",
            "exchange_time": now_ms,
            "receive_time": now_ms + rng.randint(0, 50),
        }
        if s["exchange"] == "binance":
            n = rng.randint(1, 4)
            t["first_trade_id"], t["last_trade_id"] = s["raw_id"] + 1, s["raw_id"] + n
            s["raw_id"] += n
        return t

    def generate(self, n: int, rate: float, start_ms: int = 1_700_000_000_000):
        """n trades over uniformly random symbols, `rate` trades per second of event time."""
        for k in range(n):
            yield self.trade(self.rng.randrange(len(self.syms)), start_ms + int(k * 1000 / rate))

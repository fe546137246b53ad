#!/usr/bin/env bash
# Runs the whole pipeline on the local stack, from a fresh Debian machine with
# Rust: builds tickfetch, starts the stack (installing the broker, etcd and the
# MongoDB server if missing), starts the four rollup stages and the sink, feeds
# real Binance trades (the shared oracle file) into the trades topic, starts the
# exchange simulator and an ingest worker streaming live trades of Binance and
# OKX into the same pipeline, and prints the stored 5m candles, the stages' lag
# and a health line.
#
#   scripts/demo.sh          start (or restart) the pipeline and feed it
#   scripts/demo.sh stop     stop the pipeline processes and the stack
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.tickfetch
bin=target/release
pids="$dir/pipeline.pids"

stop_pipeline() {
  if [ -f "$pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$pids"
    rm -f "$pids"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_pipeline
  [ -x "$bin/tickfetch" ] && "$bin/tickfetch" stack down --dir "$dir"
  exit 0
fi

scripts/setup.sh
cargo build --release --locked --bins
mkdir -p "$dir/logs"
"$bin/tickfetch" stack up --dir "$dir"
set -a; . "$dir/stack.env"; set +a
export TICKFETCH__TOPICS__PREFIX="${TICKFETCH__TOPICS__PREFIX:-demo$(date +%s)}"
export TICKFETCH__MONGODB__DATABASE="${TICKFETCH__MONGODB__DATABASE:-$TICKFETCH__TOPICS__PREFIX}"
export TICKFETCH__TELEMETRY__HTTP_ADDR=""
# 1m and 5m candles to MongoDB (1s and 5s stay in Kafka).
export TICKFETCH__SINK__INTERVALS='["1m","5m"]'

stop_pipeline
for stage in 1s 5s 1m 5m; do
  "$bin/tickfetch-rollup" --stage "$stage" --partitions all > "$dir/logs/rollup-$stage.log" 2>&1 &
  echo $! >> "$pids"
done
"$bin/tickfetch-sink" --all-partitions > "$dir/logs/sink.log" 2>&1 &
echo $! >> "$pids"

data="${TICKFETCH_SHARED_DATA:-../shared/data}/oracle/binance_spot_XRPETH_2019-10-11/XRPETH_aggTrades_derived.csv"
if [ ! -f "$data" ]; then
  echo "demo: no trade file at $data (set TICKFETCH_SHARED_DATA)" >&2
  exit 1
fi
"$bin/tickfetch" import --exchange binance --symbol XRPETH --format binance-aggtrades-csv --file "$data" --to kafka

# Wait until the sink has stored the last 5m candle of the file.
for _ in $(seq 1 120); do
  n=$("$bin/tickfetch" candles --exchange binance --symbol XRPETH --interval 5m --from 2019-10-11T00:00:00Z --to 2019-10-14T00:00:00Z --json 2>/dev/null | wc -l)
  [ "$n" -ge 712 ] && break
  sleep 1
done
"$bin/tickfetch" candles --exchange binance --symbol XRPETH --interval 5m --from 2019-10-13T11:00:00Z --to 2019-10-13T11:20:00Z

# Live: the exchange simulator and an ingest worker subscribed to it.
"$bin/tickfetch-exsim" --exchanges binance,okx generate --rate 20 --symbols 3 --seed 7 > "$dir/exsim.env" 2> "$dir/logs/exsim.log" &
echo $! >> "$pids"
for _ in $(seq 1 50); do grep -q OKX_SYMBOLS "$dir/exsim.env" 2>/dev/null && break; sleep 0.1; done
sim() { grep "^$1=" "$dir/exsim.env" | cut -d= -f2-; }
list() { sim "$1" | sed 's/\([^,]*\)/"\1"/g'; }
cat > "$dir/worker.toml" <<TOML
[[ingest.feeds]]
exchange = "binance"
feed = "aggTrade"
symbols = [$(list BINANCE_SYMBOLS)]
ws_url = "$(sim BINANCE_AGGTRADE_WS_URL)"
rest_url = "$(sim BINANCE_REST_URL)"

[[ingest.feeds]]
exchange = "okx"
feed = "trades"
symbols = [$(list OKX_SYMBOLS)]
ws_url = "$(sim OKX_TRADES_WS_URL)"
rest_url = "$(sim OKX_REST_URL)"
TOML
"$bin/tickfetch-ingest" --config "$dir/worker.toml" > "$dir/logs/ingest.log" 2>&1 &
echo $! >> "$pids"
sleep 15
"$bin/tickfetch" lag
live=$("$bin/tickfetch" candles --exchange okx --interval 1m --from 0 --to 9999999999999 --json 2>/dev/null | wc -l)
echo "health: stack up, ${n} 5m candles of binance:XRPETH in MongoDB database $TICKFETCH__MONGODB__DATABASE, live worker streaming binance and okx from the simulator (${live} okx 1m candles so far); logs in $dir/logs; stop with scripts/demo.sh stop"

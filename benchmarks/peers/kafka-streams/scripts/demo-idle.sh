#!/usr/bin/env bash
# Shows that suppress(untilWindowCloses(...)) emits nothing for a partition
# that gets no new records: its stream time stands still, so its last windows
# stay in the suppress buffer however long the wall clock runs, until any
# later record arrives on that partition. One partition, one symbol.
#
# usage: scripts/demo-idle.sh BOOTSTRAP
set -euo pipefail
cd "$(dirname "$0")/.."
bootstrap=${1:?usage: scripts/demo-idle.sh BOOTSTRAP}
name=idle-$(date +%s)
out=target/runs/$name
mkdir -p "$out"
java=(java -Xmx1g -cp 'target/kafka-streams-peer.jar:target/lib/*')
topic=ks.$name.trades

produce() { # COUNT: trades of one symbol at 100/s
  "${java[@]}" tickfetch.peers.ProduceTrades --bootstrap "$bootstrap" --topic "$topic" --partitions 1 \
    --symbols 1 --rate 100 --count "$1" --control-every 0 --jsonl "$out/trades.jsonl" 2>/dev/null
}
report() { # WHEN
  "${java[@]}" tickfetch.peers.ReadTopic --bootstrap "$bootstrap" --topic "ks.$name.candles.1s" \
    --out "$out/candles-1s.tsv" 2>/dev/null
  python3 - "$1" "$out" <<'PY'
import json, sys
when, out = sys.argv[1], sys.argv[2]
seconds = sorted({json.loads(l.split("\t", 1)[1])["exchange_time"] // 1000 * 1000 for l in open(out + "/trades.jsonl")})
emitted = {json.loads(l.split("\t", 2)[2])["open_time"] for l in open(out + "/candles-1s.tsv")}
held = [s for s in seconds if s not in emitted]
print(f"{when}: {len(seconds)} seconds with trades, {len(emitted)} 1s candles emitted, not emitted: {held}")
PY
}

produce 300 # three seconds of trades, then nothing
"${java[@]}" tickfetch.peers.StreamsCandles --bootstrap "$bootstrap" --input "$topic" \
  --output-1s "ks.$name.candles.1s" --output-1m "ks.$name.candles.1m" --application-id "ks-$name" \
  --state-dir "target/state/$name" --grace-ms 1000 >"$out/result.json" 2>"$out/streams.log" &
pid=$!
sleep 15
report "15 s on, no new trade"
sleep 15
report "30 s on, no new trade"
produce 1 # one more trade on the same partition moves stream time on
sleep 3
report "3 s after one more trade"
kill -TERM "$pid"
status=0 && wait "$pid" || status=$?
echo "StreamsCandles after SIGTERM: exit $status, $(cat "$out/result.json")"

#!/usr/bin/env bash
# End-to-end check and measurement against a running broker: ProduceTrades
# writes trades (and a JSONL copy of them), StreamsCandles consumes them,
# ReadTopic dumps both candle topics, check_candles.py recomputes every candle
# and compares. Everything lands in target/runs/NAME/.
#
# usage: scripts/run-check.sh BOOTSTRAP NAME
# env:   MODE=backlog (produce everything, then time StreamsCandles over the
#        backlog) or live (StreamsCandles runs while the trades arrive);
#        SYMBOLS=500 RATE=20000 SECS=10 JITTER_MS=0 THREADS=1 PARTITIONS=4
set -euo pipefail
cd "$(dirname "$0")/.."
bootstrap=${1:?usage: scripts/run-check.sh BOOTSTRAP NAME}
name=${2:?usage: scripts/run-check.sh BOOTSTRAP NAME}
mode=${MODE:-backlog} symbols=${SYMBOLS:-500} rate=${RATE:-20000} secs=${SECS:-10}
jitter=${JITTER_MS:-0} threads=${THREADS:-1} partitions=${PARTITIONS:-4} grace=1000 every=1000
out=target/runs/$name
rm -rf "$out" "target/state/$name" && mkdir -p "$out"
TIMEFORMAT='%Rs wall, %Us user, %Ss sys'
java=(java -Xmx1g -cp 'target/kafka-streams-peer.jar:target/lib/*')
records=$((rate * secs))
trades=$((records - records / every))   # one record in $every is a watermark or gap marker
topic=ks.$name.trades

produce() { # COUNT
  "${java[@]}" tickfetch.peers.ProduceTrades --bootstrap "$bootstrap" --topic "$topic" \
    --partitions "$partitions" --symbols "$symbols" --rate "$rate" --count "$1" \
    --jitter-ms "$jitter" --control-every "$every" --jsonl "$out/trades.jsonl"
}
streams() {
  "${java[@]}" tickfetch.peers.StreamsCandles --bootstrap "$bootstrap" --input "$topic" \
    --output-1s "ks.$name.candles.1s" --output-1m "ks.$name.candles.1m" --application-id "ks-$name" \
    --state-dir "target/state/$name" --grace-ms "$grace" --threads "$threads" \
    --commit-interval-ms 100 --expect-trades "$trades" --stop-after-idle-secs 60 \
    >"$out/result.json" 2>"$out/streams.log"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$mode" = live ]; then
  produce 0 2>/dev/null # creates the topic, which StreamsCandles needs to exist
  { time streams; } 2>"$out/time.txt" & pid=$!
  produce "$records"
  wait "$pid"
else
  produce "$records"
  { time streams; } 2>"$out/time.txt"
fi
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "result: $(cat "$out/result.json")"
echo "StreamsCandles CPU: $(cat "$out/time.txt")" # wall and CPU seconds of the whole JVM run
"${java[@]}" tickfetch.peers.ReadTopic --bootstrap "$bootstrap" --topic "ks.$name.candles.1s" --out "$out/candles-1s.tsv"
"${java[@]}" tickfetch.peers.ReadTopic --bootstrap "$bootstrap" --topic "ks.$name.candles.1m" --out "$out/candles-1m.tsv"
python3 scripts/check_candles.py "$out/trades.jsonl" "$out/candles-1s.tsv" "$out/candles-1m.tsv" "$grace"

#!/usr/bin/env bash
# Kafka Connect peer of tickfetch-sink: a standalone Kafka Connect 4.4.0 worker
# running the MongoDB sink connector over one candle topic, timed until the
# collection holds EXPECTED_DOCS documents.
#
# usage: run.sh BOOTSTRAP MONGODB_URI DATABASE TOPIC COLLECTION EXPECTED_DOCS [WORKDIR]
#
# Writes WORKDIR/worker.properties, WORKDIR/sink.properties and a log4j2
# config, starts `java -Xmx1g -cp 'target/libs/*' ConnectStandalone` (its log
# in WORKDIR/connect.log), waits with wait_docs.py, stops Connect and prints
# (and writes to WORKDIR/result.json) one JSON line: {"docs", "seconds",
# "docs_per_s" from Connect's launch, and "first_doc_s", "first_to_last_s",
# "first_to_last_docs_per_s" from the first document seen}. Exit status 0 when
# the count was reached, 1 on time-out, 2 when Connect died or its task failed.
#
# env: TASKS_MAX=1           sink tasks (the topic's partitions are shared out)
#      BATCH=1000            max.batch.size and the consumer's max.poll.records
#      CONNECTOR_NAME=...    default tickfetch-mongo-sink-<unix time>; the sink's
#                            consumer group is connect-<name>, so a new name
#                            reads the topic from the start (auto.offset.reset
#                            earliest) and a reused one resumes
#      TIMEOUT_S=1800        give up after this long
#      DROP=1                drop the collection first (default: refuse to start
#                            when it is not empty, since the count would be wrong)
#      WRITE_MODEL=business-key   replaceOne({exchange, symbol, interval, open_time},
#                            value, upsert) with a unique index on those fields
#                            (run.sh creates it); WRITE_MODEL=id: replaceOne({_id:
#                            {exchange, symbol, interval, open_time}}, ...), the
#                            connector's default strategy over a document _id,
#                            which SecantusDB answers with a collection scan per
#                            write (see README)
#      BULK_ORDERED=true     bulk.write.ordered (false: unordered bulk writes)
#      WRITE_CONCERN="w=majority&journal=true"   URI options added to MONGODB_URI
#      HEARTBEAT_MS=3600000  heartbeatFrequencyMS added to the URI: keeps the Java
#                            driver's streaming hello monitor from tripping over
#                            SecantusDB's streamed replies (see README); empty:
#                            the driver's default (10 s)
#      TICKFETCH_CACHE       the venv lives in ${TICKFETCH_CACHE:-~/.cache/tickfetch}/connect-venv
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage="usage: run.sh BOOTSTRAP MONGODB_URI DATABASE TOPIC COLLECTION EXPECTED_DOCS [WORKDIR]"
bootstrap=${1:?$usage} mongodb_uri=${2:?$usage} database=${3:?$usage}
topic=${4:?$usage} collection=${5:?$usage} expected=${6:?$usage}
workdir=${7:-$here/target/runs/$(date +%Y%m%d-%H%M%S)}
tasks_max=${TASKS_MAX:-1} batch=${BATCH:-1000} timeout_s=${TIMEOUT_S:-1800}
name=${CONNECTOR_NAME:-tickfetch-mongo-sink-$(date +%s)}
write_concern=${WRITE_CONCERN:-w=majority&journal=true}
write_model=${WRITE_MODEL:-business-key}
ordered=${BULK_ORDERED:-true}
heartbeat_ms=${HEARTBEAT_MS-3600000}
case "$write_model" in
  business-key) strategy=ReplaceOneBusinessKeyStrategy index=(--business-key-index) ;;
  id) strategy=ReplaceOneDefaultStrategy index=() ;;
  *) echo "run.sh: WRITE_MODEL is business-key or id, not $write_model" >&2; exit 2 ;;
esac

# The jars: fetched once into target/libs by Maven (nothing is compiled).
if ! ls "$here"/target/libs/mongo-kafka-connect-*.jar >/dev/null 2>&1; then
  (cd "$here" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=target/libs) >&2
fi

# Our own venv (pymongo for the count, confluent-kafka for produce_candles.py):
# not peers-venv, which another peer's setup may be creating at the same time.
cache="${TICKFETCH_CACHE:-$HOME/.cache/tickfetch}"
venv="$cache/connect-venv"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$cache"
  "${PYTHON:-python3.11}" -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
py="$venv/bin/python"

# The write concern rides on the connection string: the connector has no
# setting of its own for it. So does the monitor's heartbeat.
options=$write_concern
if [ -n "$heartbeat_ms" ]; then options="$options&heartbeatFrequencyMS=$heartbeat_ms"; fi
case "$mongodb_uri" in
  *\?*) uri="$mongodb_uri&$options" ;;
  mongodb://*/*|mongodb+srv://*/*) uri="$mongodb_uri?$options" ;;
  *) uri="$mongodb_uri/?$options" ;;
esac

mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"

drop=()
if [ "${DROP:-0}" = 1 ]; then drop=(--drop); fi
"$py" "$here/prepare_collection.py" --uri "$mongodb_uri" --db "$database" --collection "$collection" \
  "${drop[@]}" "${index[@]}"

# A free loopback port for Connect's REST API (wait_docs.py reads the task's
# state there); 8083, the default, may be taken by another worker.
rest_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cat >"$workdir/worker.properties" <<EOF
bootstrap.servers=$bootstrap
# Sink offsets are committed to the consumer group connect-$name; this file
# holds source offsets only, of which a sink has none.
offset.storage.file.filename=$workdir/connect.offsets
offset.flush.interval.ms=10000
# Plain classpath (target/libs/*), no plugin.path: the connector jar has no
# ServiceLoader manifest, so the classpath is scanned.
plugin.discovery=only_scan
listeners=http://127.0.0.1:$rest_port
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
# tickfetch's candle topics are written in transactions: read committed
# records only, as tickfetch-sink does, from the start of the topic.
consumer.isolation.level=read_committed
consumer.auto.offset.reset=earliest
# One poll hands the task up to this many records; the connector writes each
# put() in bulk writes of at most max.batch.size, so both must be $batch for
# batches of $batch (the consumer's default of 500 would cap them at 500).
consumer.max.poll.records=$batch
EOF

cat >"$workdir/sink.properties" <<EOF
name=$name
connector.class=com.mongodb.kafka.connect.MongoSinkConnector
tasks.max=$tasks_max
topics=$topic
connection.uri=$uri
database=$database
collection=$collection
max.batch.size=$batch
# Ordered bulk writes (the connector's default): with no revision guard, the
# record applied last wins, so two records of one candle in one batch must be
# applied in offset order; an unordered bulk write leaves that order to the
# server. (tickfetch-sink writes unordered, but collapses each batch to the
# highest revision per candle first and guards every write.)
bulk.write.ordered=$ordered
# The candle's identity, {exchange, symbol, interval, open_time}, taken from
# the value: a replayed candle, or a later revision of it, lands on the same
# document.
document.id.strategy=com.mongodb.kafka.connect.sink.processor.id.strategy.PartialValueStrategy
document.id.strategy.partial.value.projection.type=AllowList
document.id.strategy.partial.value.projection.list=exchange,symbol,interval,open_time
document.id.strategy.overwrite.existing=true
# business-key: replaceOne({exchange, symbol, interval, open_time}, value,
# {upsert: true}) over the unique index business_key, _id an ObjectId chosen on
# insert; id: replaceOne({_id: {exchange, symbol, interval, open_time}}, ...).
writemodel.strategy=com.mongodb.kafka.connect.sink.writemodel.strategy.$strategy
# A refused write fails the task (and wait_docs.py reports it), as
# tickfetch-sink stops on a permanent refusal instead of skipping records.
errors.tolerance=none
mongo.errors.tolerance=none
EOF

cat >"$workdir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $workdir/connect.log
appender.file.append = false
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
EOF

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cd "$here"
start=$(date +%s.%N)
java -Xmx1g -Dlog4j2.configurationFile="$workdir/log4j2.properties" -cp "$here/target/libs/*" \
  org.apache.kafka.connect.cli.ConnectStandalone "$workdir/worker.properties" "$workdir/sink.properties" \
  >"$workdir/connect.out" 2>&1 &
connect_pid=$!
stop_connect() {
  if kill -0 "$connect_pid" 2>/dev/null; then
    kill -TERM "$connect_pid" 2>/dev/null || true
    for _ in $(seq 1 120); do
      kill -0 "$connect_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$connect_pid" 2>/dev/null || true
  fi
  wait "$connect_pid" 2>/dev/null || true
}
trap stop_connect EXIT

status=0
result=$("$py" "$here/wait_docs.py" --uri "$mongodb_uri" --db "$database" --collection "$collection" \
  --expected "$expected" --start "$start" --timeout "$timeout_s" \
  --rest "http://127.0.0.1:$rest_port" --connector "$name" --pid "$connect_pid") || status=$?
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
stop_connect
trap - EXIT
if [ "$status" != 0 ]; then
  echo "run.sh: see $workdir/connect.log; its last errors:" >&2
  grep -E 'ERROR|Exception' "$workdir/connect.log" | tail -n 20 >&2 || true
fi
echo "run.sh: connector $name, $strategy, ordered $ordered, $tasks_max task(s), batch $batch, load average before $load_before, after $load_after, files in $workdir" >&2
echo "$result" >"$workdir/result.json"
echo "$result"
exit "$status"

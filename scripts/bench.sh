#!/usr/bin/env bash
# The pipeline benchmark on the local stack: installs what the build needs,
# starts the stack in .tickfetch/bench (installing Apache Kafka, etcd and the
# MongoDB server if missing; stopped again at the end), and runs
# `cargo bench --bench pipeline` (release build): the simulator at 5k, 20k
# and 50k trades/s over 500 symbols through worker → four stages → sink →
# MongoDB, checked against candles built offline, with the peers (Kafka
# Streams, Quix Streams) on the same trades; then `cargo bench --bench
# engine`: the candle engine alone against nautilus_trader. Results in
# benchmarks/results/pipeline.{json,md,svg} and engine.json.
#
#   scripts/bench.sh            the full run (about 15 minutes on 2 cores, once built)
#   scripts/bench.sh --quick    200 trades/s over 20 symbols, a few seconds
#
# Settings (BENCH_RATES, BENCH_SYMBOLS, BENCH_SECS, ...) are described in
# benchmarks/pipeline/main.rs and docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --bin tickfetch
dir=.tickfetch/bench
target/debug/tickfetch stack up --dir "$dir"
trap 'target/debug/tickfetch stack down --dir "$dir"' EXIT
set -a; . "$dir/stack.env"; set +a
export BENCH_STACK_DIR="$PWD/$dir"
if [ "${1:-}" = "--quick" ]; then
  cargo test --locked --bench pipeline
else
  cargo bench --locked --bench pipeline
  cargo bench --locked --bench engine
fi

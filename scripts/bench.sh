#!/usr/bin/env bash
# The pipeline benchmark on the local stack: installs what the build needs,
# starts the stack in .tickfetch/bench (installing Apache Kafka, etcd and the
# MongoDB server if missing; stopped again at the end), and runs
# `cargo bench --bench pipeline` (release build): the simulator at 5k, 20k
# and 50k trades/s over 500 symbols through worker → four stages → sink →
# MongoDB, checked against candles built offline. Results in
# benchmarks/results/pipeline.{json,md,svg}.
#
#   scripts/bench.sh            the full run (about 10 minutes on 2 cores)
#   scripts/bench.sh --quick    200 trades/s over 20 symbols, a few seconds
#
# Settings (BENCH_RATES, BENCH_SYMBOLS, BENCH_SECS, ...) are described in
# benchmarks/pipeline.rs and docs/benchmarks.md.
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
fi

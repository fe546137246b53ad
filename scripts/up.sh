#!/usr/bin/env bash
# The README's run command: on a fresh Debian machine with Rust, installs
# what the build needs, builds every tickfetch binary (release) and runs
# `tickfetch up`: the local stack (installed and started when missing), a
# master, two workers with a hot replica of every feed, the four rollup
# stages and the sink, until Ctrl-C. Arguments go to `tickfetch up`:
#
#   scripts/up.sh --simulate   the exchange simulator instead of the exchanges (offline)
#   scripts/up.sh              live trades from Binance, Bybit, OKX and Upbit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bins
exec target/release/tickfetch up "$@"

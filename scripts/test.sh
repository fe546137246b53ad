#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs build
# dependencies, builds once, checks formatting and lints, starts the local stack
# (installing the broker, etcd and the MongoDB server if missing), runs every
# test against it, and stops the stack again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
dir=.tickfetch/test-stack
target/debug/tickfetch stack down --dir "$dir" >/dev/null 2>&1 || true
target/debug/tickfetch stack up --dir "$dir" --memory
trap 'target/debug/tickfetch stack down --dir "$dir"' EXIT
set -a; . "$dir/stack.env"; set +a
export TICKFETCH_SHARED_DATA="${TICKFETCH_SHARED_DATA:-$PWD/../shared/data}"
cargo test --locked --all-targets -- --test-threads 2

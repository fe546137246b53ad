#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs build
# dependencies, builds once, checks formatting and lints, starts the local stack
# (installing Apache Kafka, etcd and the MongoDB server if missing), runs every
# test against it, and stops the stack again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR=never
# A CI run builds once from nothing: incremental state would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --check
else
  echo "test.sh: cargo fmt is not installed on this machine; formatting not checked" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --all-targets -- -D warnings
else
  echo "test.sh: cargo clippy is not installed on this machine; lints not checked" >&2
fi
cargo build --locked --all-targets
dir=.tickfetch/test-stack
target/debug/tickfetch stack down --dir "$dir" >/dev/null 2>&1 || true
# Every run starts on an empty broker, etcd and database.
rm -rf "$dir"
target/debug/tickfetch stack up --dir "$dir"
trap 'target/debug/tickfetch stack down --dir "$dir"' EXIT
set -a; . "$dir/stack.env"; set +a
export TICKFETCH_SHARED_DATA="${TICKFETCH_SHARED_DATA:-$PWD/../shared/data}"
cargo test --locked --doc
cargo test --locked --all-targets -- --test-threads 2

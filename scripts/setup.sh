#!/usr/bin/env bash
# Installs what building tickfetch needs on a fresh Debian machine with Rust:
# protoc for the etcd client. The services themselves (Kafka-API broker, etcd,
# MongoDB wire server) are installed by `tickfetch stack up` when missing.
set -euo pipefail
if ! command -v protoc >/dev/null 2>&1; then
  echo "setup: installing protobuf-compiler" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq protobuf-compiler >/dev/null
fi

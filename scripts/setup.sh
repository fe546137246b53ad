#!/usr/bin/env bash
# Installs what building and testing tickfetch needs on a fresh Debian machine
# with Rust: protoc for the etcd client, OpenSSL's headers and pkg-config for
# librdkafka's TLS and SASL/SCRAM, and the openssl tool with which the
# security tests make their certificates. The services themselves (Apache
# Kafka, etcd, the MongoDB wire server) are installed by `tickfetch stack up`
# when missing.
set -euo pipefail
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

//! tickfetch: exchange trade websockets → Kafka → exactly-once candle rollups →
//! MongoDB, coordinated through etcd.
//!
//! Module map (data flows top to bottom):
//! - [`model`]: `Trade`, `Candle`, `Watermark`, `GapMarker`, `Interval`: the
//!   JSON form of every topic's payloads.
//! - [`ingest`]: exchange websockets → trades and watermarks on
//!   `{prefix}.trades` (venues, connection, feed, output); its
//!   `venues::instruments` names every symbol `BASE-QUOTE` from the
//!   exchanges' own instrument lists, for the feed and the import alike.
//! - [`wire`]: the record envelope between stages: keys, kind and epoch
//!   headers, dead letters, payload encoding, producing with back-pressure.
//! - [`rollup`]: trades → 1s → 5s → 1m → 5m candles, exactly once per stage.
//! - [`sink`]: candle topics → MongoDB, each candle once at its latest revision.
//! - [`coord`]: etcd coordination: fencing epochs (no Kafka in it).
//! - [`import`]: Binance public-data CSV into the trades topic or candles.
//! - [`kafka`]: client configuration with conflict checks, topic creation.
//! - [`config`]: the TOML / environment / flag configuration every binary loads.
//! - [`app`], [`telemetry`], [`health`], [`shutdown`], [`lag`]: what every
//!   binary shares: running a stage, logs, `/metrics`, `/healthz` and
//!   `/readyz` with their probes, signals, consumer lag; [`progress`]: the
//!   progress line of `replay` and `import`.
//! - [`stack`]: the local stack (Kafka broker, etcd, MongoDB wire server) for
//!   development, tests and the demo; [`up`]: the whole system on it as
//!   supervised child processes (`tickfetch up`).
//!
//! Not part of the pipeline:
//! - [`exsim`]: the exchange simulator (websocket, REST, faults) that tests,
//!   benchmarks and the offline demo point workers at; it uses the venues'
//!   parsers only through their public API.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod coord;
pub mod exsim;
pub mod health;
pub mod import;
pub mod ingest;
pub mod kafka;
pub mod lag;
pub mod model;
pub mod progress;
pub mod rollup;
pub mod shutdown;
pub mod sink;
pub mod stack;
pub mod telemetry;
pub mod up;
pub mod wire;

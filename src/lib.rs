//! tickfetch: exchange trade websockets → Kafka → exactly-once candle rollups →
//! MongoDB, coordinated through etcd.
//!
//! Module map (data flows top to bottom):
//! - [`model`]: `Trade`, `Candle`, `Watermark`, `Interval`: the wire form of every topic.
//! - [`config`]: the TOML / environment / flag configuration every binary loads.
//! - [`stack`]: the local stack (Kafka-API broker, etcd, MongoDB wire server) for
//!   development, tests and the demo.
//! - [`wire`]: the record envelope between stages: keys, kind and epoch
//!   headers, dead letters, payload encoding, producing with back-pressure.
//! - [`kafka`]: client configuration, topic creation.
//! - [`coord`]: etcd coordination: fencing epochs (no Kafka in it).
//! - [`telemetry`], [`shutdown`]: logs, `/metrics`, `/healthz`, signal handling.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod coord;
pub mod import;
pub mod ingest;
pub mod kafka;
pub mod lag;
pub mod model;
pub mod rollup;
pub mod shutdown;
pub mod sink;
pub mod stack;
pub mod telemetry;
pub mod wire;

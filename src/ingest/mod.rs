//! Ingest: exchange websockets in, trades and watermarks out to Kafka.
//!
//! - [`exchanges`]: one wire adapter per exchange (endpoints, subscribe
//!   messages, keep-alive rules, frame parsing into `Trade`s, encoders for the
//!   simulator).
//! - [`decode`]: raw frames (recordings, JSON lines) into normalised trades.
//! - [`simulator`]: the exchange simulator (websocket + REST + faults) that
//!   tests, benchmarks and the offline demo point workers at.
//! - [`publisher`]: the idempotent producer of the trades topic.

// Not part of the worker: what tests, benchmarks and the demo connect it to.
pub mod simulator;

pub mod decode;
pub mod exchanges;
pub mod publisher;

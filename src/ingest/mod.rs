//! Ingest: exchange websockets in, trades and watermarks out to Kafka.
//!
//! - [`exchanges`]: one wire adapter per exchange (endpoints, subscribe
//!   messages, keep-alive rules, frame parsing into `Trade`s, encoders for the
//!   simulator).
//! - [`decode`]: raw frames (recordings, JSON lines) into normalised trades.
//! - [`simulator`]: the exchange simulator (websocket + REST + faults) that
//!   tests, benchmarks and the offline demo point workers at.
//! - [`publisher`]: the idempotent producer of the trades topic.
//! - [`worker`]: the ingest worker: feeds, roles (primary, replica, fenced),
//!   watermarks; [`connection`]: websockets per shard (subscribe, keep-alive,
//!   watchdog, rotation, reconnect); [`sequencer`]: per-symbol dedup, order
//!   and gaps; [`backfill`] over [`http`] and [`transport`]: REST recovery of
//!   missed trades; [`output`]: the publisher thread (trades, watermarks, gap
//!   markers, dead letters); [`policy`]: backoff, pacing, watchdog;
//!   [`metrics`]: events, counters and per-feed stats; [`resume`]: where a
//!   promoted replica resumes, read from the trades topic.

// Not part of the worker: what tests, benchmarks and the demo connect it to.
pub mod simulator;

pub mod decode;
pub mod exchanges;
pub mod publisher;

pub mod backfill;
pub mod connection;
pub mod http;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod resume;
pub mod sequencer;
pub mod transport;
pub mod worker;

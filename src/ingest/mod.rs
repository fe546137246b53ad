//! Ingest: exchange websockets in, trades and watermarks out to Kafka.
//!
//! ```text
//! venues/<exchange>   wire structs, parse into Trade, endpoints and rules
//!        │ frames
//! connection/         one websocket per shard: subscribe, keep-alive,
//!        │            watchdog, rotation, reconnect, pacing (policy), and
//!        │            the transport and HTTP client REST calls use
//!        │ ConnectionEvent (bounded)
//! feed/               the feed task; per symbol one pure state machine
//!        │            (sequencing, dedup, gaps, resync, backfill, liveness,
//!        │            replica buffer, watermarks); REST backfill; resume
//!        │ Output (bounded)
//! output/             the publisher thread: trades, watermarks, gap markers
//!                     and dead letters to Kafka (envelope: `wire`)
//! ```
//!
//! - [`worker`]: the ingest worker and [`run`]: starts feeds in a role
//!   (primary, replica), promotes and fences them.
//! - [`cluster`]: the worker as a cluster member: registers in etcd, runs
//!   the feeds the master assigns it, promotes and fences them as the
//!   assignments change.
//! - [`venues`]: one adapter per exchange behind the [`venues::Venue`] table,
//!   and [`venues::instruments`], the catalogue of instrument names (the
//!   exchanges' own lists, cached, with one built-in rule per exchange as the
//!   fallback) that [`worker::Worker::start`] loads and installs.
//! - [`connection`], [`feed`], [`output`]: as above.
//! - [`events`]: each event's log line, counter and per-feed stats in one call.
//! - [`IngestError`] (in [`error`]): what stops a worker or a feed.
//! - [`decode`]: raw frames (recordings, JSON lines) into normalised trades,
//!   for `tickfetch decode` and the replays.

pub mod cluster;
pub mod connection;
pub mod decode;
pub mod error;
pub mod events;
pub mod feed;
pub mod output;
pub mod venues;
pub mod worker;

pub use error::IngestError;
pub use worker::run;

// Old paths, kept for callers outside the library.
#[doc(hidden)]
pub use output::publisher;

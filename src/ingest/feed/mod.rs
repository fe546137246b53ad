//! A feed: one exchange stream and its symbols, run as one task over its
//! connection shards.
//!
//! ```text
//! connection shards ──ConnectionEvent (bounded)──▶ FeedTask (task.rs: select loop, I/O)
//!     per symbol: SymbolFeed (symbol.rs, pure, takes `now`)
//!         sequencing, dedup, gaps, resync, backfill scheduling, liveness,
//!         the replica buffer and the watermark rule
//!     ──▶ REST backfill (backfill.rs, ≤ 4 at once)
//!     ──▶ Output (bounded) ──▶ the publisher thread (`ingest::output`)
//! ```
//!
//! - [`task`]: the feed task: wires connections, commands, timers and
//!   backfills to the symbols' state machines and sends what they decide.
//! - [`symbol`]: [`symbol::SymbolFeed`], one symbol's state machine.
//! - `sequence`: its release order (dedup, gaps), a private part of it.
//! - [`backfill`]: REST recovery of missed trades.
//! - [`resume`]: where a promoted replica resumes, read from the trades topic.
//!
//! # Roles
//! - [`Role::Primary`] publishes trades, watermarks, gap markers and dead letters.
//! - [`Role::Replica`] is connected and subscribed, de-duplicates, and keeps
//!   the last `replica_buffer_trades` trades of each symbol, publishing
//!   nothing. [`FeedHandle::promote`](crate::ingest::worker::FeedHandle::promote) makes it primary from a [`ResumePoint`]
//!   per symbol (the last trade its predecessor published): the buffer is
//!   replayed through fresh sequencers, so it publishes from just after that
//!   trade; a hole between the two (a buffer that did not reach back far
//!   enough) is a gap like any other and is backfilled.
//! - [`Role::Fenced`]: a newer primary exists; the feed publishes nothing
//!   more, drops its connections and ends.
//!   On a planned handover a primary first goes on publishing until each
//!   symbol has published a trade made at or after the moment of the move
//!   (at most `cluster.handover_catch_up_ms`, when set): its successor's buffer holds
//!   what follows, so nothing falls between them.
//!
//! # Epochs
//! A feed that starts as primary, or is promoted, first claims a fencing
//! epoch from etcd (`feeds/{feed}`, see `coord::epoch`; unless `etcd.epochs`
//! is off) and publishes nothing before it has one; every record it publishes
//! carries it. An old primary that keeps publishing after a newer one took
//! over (paused, partitioned from etcd, not yet told) writes under the lower
//! epoch, and readers refuse those late records.
//!
//! # Watermarks
//! Every `watermark_interval_ms` a primary publishes, per symbol, a watermark
//! `w` with the promise: **no trade of this symbol with `exchange_time < w`
//! will follow from this worker**, computed as
//!
//! ```text
//! w = max(previous w, exchange_time of the last published trade,
//!         now − read lag − allowed_lateness   if the symbol is caught up)
//! ```
//!
//! where the read lag is how far behind the exchange the feed reads: the
//! time it took its newest trades less their exchange time. A feed that
//! falls behind (its sockets backed up) holds the clock term back by as
//! much, so the trades still on their way in do not arrive late.
//!
//! A symbol is caught up when it is live on a connection, no trade-id gap is
//! pending, and, after a reconnect, a trade, heartbeat or REST resync has
//! shown that nothing was missed meanwhile. Trades reach the topic in exchange
//! order per symbol, so the last published trade's time bounds everything
//! after it; the wall-clock term lets quiet symbols close their windows, and
//! `allowed_lateness_ms` is the bound it assumes on exchange → worker latency
//! and clock skew. What the worker cannot know (a trade lost in flight and
//! discovered only with the next trade) may still arrive behind a watermark:
//! it is published anyway, and the rollup corrects the candle (revision + 1).
//! Watermarks never go backwards and stop while a symbol is disconnected or
//! has a gap pending.

pub mod backfill;
pub mod resume;
mod sequence;
pub mod symbol;

pub mod task;

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;

use super::connection::ConnectionRules;
use super::venues::Feed;
use super::worker::normalised_symbols;
use super::IngestError;
use crate::config::{FeedConfig, IngestConfig};
use crate::model::Millis;
pub use sequence::{ResumePoint, RECENT_IDS_PER_SYMBOL};

/// What a feed does with the trades it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Fenced,
}

/// Timing knobs of a feed task, from `[ingest]`.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) watermark_interval: Duration,
    pub(crate) allowed_lateness: Millis,
    pub(crate) gap_grace: Duration,
    pub(crate) rest_timeout: Duration,
    pub(crate) replica_buffer: usize,
}

impl Tuning {
    pub(crate) fn from_config(config: &IngestConfig) -> Self {
        Self {
            watermark_interval: Duration::from_millis(config.watermark_interval_ms.max(10)),
            allowed_lateness: Millis::try_from(config.allowed_lateness_ms).unwrap_or(Millis::MAX),
            gap_grace: Duration::from_millis(config.gap_grace_ms),
            rest_timeout: Duration::from_millis(config.rest_timeout_ms.max(1)),
            replica_buffer: config.replica_buffer_trades.max(1),
        }
    }
}

/// A feed, resolved and checked.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    /// `binance:aggTrade`: log field, metric label, dead-letter source.
    pub name: String,
    pub feed: Feed,
    pub symbols: Vec<String>,
    pub rest_url: String,
    pub rules: ConnectionRules,
}

impl FeedSpec {
    /// Resolves one `[[ingest.feeds]]` entry.
    ///
    /// # Errors
    /// [`IngestError::Feed`] for an unknown feed name or no symbols.
    pub fn from_config(config: &FeedConfig, ingest: &IngestConfig) -> Result<Self, IngestError> {
        let feed: Feed = match &config.feed {
            Some(name) => format!("{}:{name}", config.exchange).parse(),
            None => config.exchange.as_str().parse(),
        }
        .map_err(|problem: super::venues::FeedNameError| IngestError::Feed {
            feed: config.exchange.to_string(),
            problem: problem.to_string(),
        })?;
        let symbols = normalised_symbols(&config.symbols);
        if symbols.is_empty() {
            return Err(IngestError::Feed {
                feed: feed.to_string(),
                problem: "no symbols".into(),
            });
        }
        Ok(Self {
            name: feed.to_string(),
            feed,
            symbols,
            rest_url: config
                .rest_url
                .clone()
                .unwrap_or_else(|| feed.rest_base_url().to_string()),
            rules: ConnectionRules::resolve(feed, config, ingest),
        })
    }
}

/// How far a primary handing its feed over publishes before it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchUp {
    /// Exchange time (ms) every symbol's published trades must reach.
    pub(crate) until: Millis,
    /// The longest it keeps publishing for.
    pub(crate) within: Duration,
}

pub(crate) enum FeedCommand {
    Promote {
        resume: HashMap<String, ResumePoint>,
        /// The epoch to publish under, when the master assigned one (else
        /// the feed claims its own).
        epoch: Option<crate::coord::epoch::Epoch>,
        reply: oneshot::Sender<()>,
    },
    Fence {
        /// A planned handover: keep publishing until every symbol has
        /// published a trade made at or after `until` (exchange time), or
        /// `within` has passed; else stop at once.
        catch_up: Option<CatchUp>,
        /// The positions the feed had published up to when it stopped.
        reply: oneshot::Sender<HashMap<String, ResumePoint>>,
    },
    Positions {
        reply: oneshot::Sender<HashMap<String, ResumePoint>>,
    },
}

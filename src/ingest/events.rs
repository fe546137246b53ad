//! Ingest metrics and events: each event emits its log line, its Prometheus
//! counter (`tickfetch_ingest_*{feed="binance:aggTrade"}`) and the feed's own
//! [`FeedStats`] (which tests and `FeedHandle::stats` read) in one call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::ingest::feed::Role;
use crate::telemetry::register;

/// The process-wide ingest metrics.
pub struct IngestMetrics {
    pub frames: IntCounterVec,
    pub trades: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub gaps_found: IntCounterVec,
    pub gaps_filled: IntCounterVec,
    pub gaps_unfilled: IntCounterVec,
    pub reconnects: IntCounterVec,
    pub bad_frames: IntCounterVec,
    pub rejected_symbols: IntCounterVec,
    pub watermarks: IntCounterVec,
    /// Seconds since each symbol's last trade was received.
    pub last_trade_age: GaugeVec,
    /// Exchange time → handed to the publisher, per trade.
    pub publish_latency: HistogramVec,
}

/// The metrics, registered on first use.
pub fn metrics() -> &'static IngestMetrics {
    static METRICS: OnceLock<IngestMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                IntCounterVec::new(Opts::new(format!("tickfetch_ingest_{name}"), help), labels)
                    .expect("static metric definition"),
            )
        };
        IngestMetrics {
            frames: counter(
                "frames_total",
                "websocket frames received, by kind",
                &["feed", "kind"],
            ),
            trades: counter("trades_total", "trades published", &["feed"]),
            duplicates: counter(
                "duplicates_total",
                "trades dropped as already published (overlaps, replays)",
                &["feed"],
            ),
            gaps_found: counter("gaps_found_total", "trade-id gaps detected", &["feed"]),
            gaps_filled: counter(
                "gaps_filled_total",
                "gaps closed by late arrivals or REST backfill",
                &["feed"],
            ),
            gaps_unfilled: counter(
                "gaps_unfilled_total",
                "gaps given up (reported with a gap marker)",
                &["feed"],
            ),
            reconnects: counter(
                "reconnects_total",
                "connections ended and replaced, by reason",
                &["feed", "reason"],
            ),
            bad_frames: counter(
                "bad_frames_total",
                "frames that did not parse, sent to the dead-letter topic",
                &["feed"],
            ),
            rejected_symbols: counter(
                "rejected_symbols_total",
                "symbols the exchange refused (dropped from the feed)",
                &["feed"],
            ),
            watermarks: counter("watermarks_total", "watermarks published", &["feed"]),
            publish_latency: register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "tickfetch_ingest_publish_latency_seconds",
                        "exchange time of a trade to its hand-over to the Kafka publisher",
                    )
                    .buckets(crate::telemetry::LATENCY_BUCKETS.to_vec()),
                    &["feed"],
                )
                .expect("static metric definition"),
            ),
            last_trade_age: register(
                GaugeVec::new(
                    Opts::new(
                        "tickfetch_ingest_last_trade_age_seconds",
                        "seconds since the symbol's last trade was received",
                    ),
                    &["feed", "symbol"],
                )
                .expect("static metric definition"),
            ),
        }
    })
}

/// Counters of one feed, readable through its handle.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub frames: AtomicU64,
    pub trades_published: AtomicU64,
    pub trades_buffered: AtomicU64,
    pub duplicates: AtomicU64,
    pub gaps_found: AtomicU64,
    pub gaps_filled: AtomicU64,
    pub gaps_unfilled: AtomicU64,
    pub connections: AtomicU64,
    /// Connections subscribed right now.
    pub live_connections: AtomicU64,
    pub reconnects: AtomicU64,
    pub stalls: AtomicU64,
    pub keepalive_failures: AtomicU64,
    pub rotations: AtomicU64,
    pub bad_frames: AtomicU64,
    pub rejected_symbols: AtomicU64,
    pub watermarks: AtomicU64,
}

/// A plain copy of [`FeedStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStatsSnapshot {
    pub frames: u64,
    pub trades_published: u64,
    pub trades_buffered: u64,
    pub duplicates: u64,
    pub gaps_found: u64,
    pub gaps_filled: u64,
    pub gaps_unfilled: u64,
    pub connections: u64,
    pub live_connections: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub keepalive_failures: u64,
    pub rotations: u64,
    pub bad_frames: u64,
    pub rejected_symbols: u64,
    pub watermarks: u64,
}

impl FeedStats {
    pub fn snapshot(&self) -> FeedStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FeedStatsSnapshot {
            frames: get(&self.frames),
            trades_published: get(&self.trades_published),
            trades_buffered: get(&self.trades_buffered),
            duplicates: get(&self.duplicates),
            gaps_found: get(&self.gaps_found),
            gaps_filled: get(&self.gaps_filled),
            gaps_unfilled: get(&self.gaps_unfilled),
            connections: get(&self.connections),
            live_connections: get(&self.live_connections),
            reconnects: get(&self.reconnects),
            stalls: get(&self.stalls),
            keepalive_failures: get(&self.keepalive_failures),
            rotations: get(&self.rotations),
            bad_frames: get(&self.bad_frames),
            rejected_symbols: get(&self.rejected_symbols),
            watermarks: get(&self.watermarks),
        }
    }
}

/// Why a connection ended, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The exchange closed it or the socket failed.
    Closed,
    /// A ping went unanswered.
    KeepAlive,
    /// The data-progress watchdog recycled it.
    Stalled,
    /// Replaced by a planned rotation.
    Rotated,
    /// Connecting or the handshake failed.
    ConnectFailed,
    /// Every symbol was rejected or dropped.
    NoSymbols,
    /// Shutdown, stop or fencing.
    Cancelled,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::KeepAlive => "keepalive",
            EndReason::Stalled => "stalled",
            EndReason::Rotated => "rotated",
            EndReason::ConnectFailed => "connect_failed",
            EndReason::NoSymbols => "no_symbols",
            EndReason::Cancelled => "cancelled",
        }
    }
}

/// The events of one feed: log line + metric + stats in one call.
#[derive(Clone)]
pub struct FeedEvents {
    feed: String,
    pub stats: Arc<FeedStats>,
}

impl FeedEvents {
    /// The events of `feed`; its counters are exported from now on, at 0
    /// until something happens (so that a dashboard shows 0, not no data).
    pub fn new(feed: String) -> Self {
        let m = metrics();
        for counter in [
            &m.trades,
            &m.duplicates,
            &m.gaps_found,
            &m.gaps_filled,
            &m.gaps_unfilled,
            &m.bad_frames,
            &m.rejected_symbols,
            &m.watermarks,
        ] {
            let _ = counter.with_label_values(&[&feed]);
        }
        Self {
            feed,
            stats: Arc::new(FeedStats::default()),
        }
    }

    pub fn feed(&self) -> &str {
        &self.feed
    }

    pub fn frame(&self, kind: &str) {
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        metrics()
            .frames
            .with_label_values(&[&self.feed, kind])
            .inc();
    }

    /// One trade published, `exchange_time` its time at the exchange.
    pub fn published_at(&self, exchange_time: i64) {
        self.published(1);
        metrics()
            .publish_latency
            .with_label_values(&[&self.feed])
            .observe(crate::telemetry::seconds_since(exchange_time));
    }

    pub fn published(&self, trades: u64) {
        self.stats
            .trades_published
            .fetch_add(trades, Ordering::Relaxed);
        metrics()
            .trades
            .with_label_values(&[&self.feed])
            .inc_by(trades);
    }

    pub fn buffered(&self, trades: u64) {
        self.stats
            .trades_buffered
            .fetch_add(trades, Ordering::Relaxed);
    }

    pub fn duplicate(&self) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        metrics().duplicates.with_label_values(&[&self.feed]).inc();
    }

    pub fn gap_found(&self, symbol: &str, role: Role, first_missing: u64, last_missing: u64) {
        self.stats.gaps_found.fetch_add(1, Ordering::Relaxed);
        metrics().gaps_found.with_label_values(&[&self.feed]).inc();
        tracing::info!(
            feed = %self.feed,
            symbol,
            ?role,
            first_missing,
            last_missing,
            "trade-id gap found"
        );
    }

    pub fn gap_filled(&self, symbol: &str, first_missing: u64, last_missing: u64) {
        self.stats.gaps_filled.fetch_add(1, Ordering::Relaxed);
        metrics().gaps_filled.with_label_values(&[&self.feed]).inc();
        tracing::info!(
            feed = %self.feed,
            symbol,
            first_missing,
            last_missing,
            "trade-id gap filled"
        );
    }

    pub fn gap_unfilled(&self, symbol: &str, first_missing: u64, last_missing: u64) {
        self.stats.gaps_unfilled.fetch_add(1, Ordering::Relaxed);
        metrics()
            .gaps_unfilled
            .with_label_values(&[&self.feed])
            .inc();
        tracing::warn!(
            feed = %self.feed,
            symbol,
            first_missing,
            last_missing,
            missing = last_missing.saturating_sub(first_missing) + 1,
            "trade-id gap could not be backfilled; gap marker published"
        );
    }

    pub fn connected(&self) {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection finished subscribing.
    pub fn connection_live(&self) {
        self.stats.live_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A live connection ended.
    pub fn connection_down(&self) {
        let _ =
            self.stats
                .live_connections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
    }

    pub fn connection_ended(&self, reason: EndReason, detail: &str) {
        match reason {
            EndReason::Stalled => {
                self.stats.stalls.fetch_add(1, Ordering::Relaxed);
            }
            EndReason::KeepAlive => {
                self.stats
                    .keepalive_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            EndReason::Rotated => {
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if reason != EndReason::Cancelled {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics()
                .reconnects
                .with_label_values(&[&self.feed, reason.as_str()])
                .inc();
        }
        match reason {
            EndReason::Rotated | EndReason::Cancelled => {
                tracing::info!(reason = reason.as_str(), detail, "connection ended")
            }
            _ => tracing::warn!(reason = reason.as_str(), detail, "connection ended"),
        }
    }

    pub fn bad_frame(&self, error: &str) {
        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        metrics().bad_frames.with_label_values(&[&self.feed]).inc();
        tracing::warn!(error, "bad frame sent to the dead-letter topic");
    }

    pub fn symbol_rejected(&self, symbol: &str, reason: &str) {
        self.stats.rejected_symbols.fetch_add(1, Ordering::Relaxed);
        metrics()
            .rejected_symbols
            .with_label_values(&[&self.feed])
            .inc();
        tracing::warn!(feed = %self.feed, symbol, reason, "symbol rejected by the exchange; dropped");
    }

    pub fn watermark(&self) {
        self.stats.watermarks.fetch_add(1, Ordering::Relaxed);
        metrics().watermarks.with_label_values(&[&self.feed]).inc();
    }

    pub fn last_trade_age(&self, symbol: &str, seconds: f64) {
        metrics()
            .last_trade_age
            .with_label_values(&[&self.feed, symbol])
            .set(seconds);
    }
}

//! Metrics of a rollup stage, labelled by stage interval.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus::{Histogram as PromHistogram, HistogramOpts, IntCounter, Opts};

use crate::model::Interval;
use crate::telemetry::register;

/// Counters and the commit-latency histogram of one stage.
pub struct StageMetrics {
    pub records: IntCounter,
    pub replayed: IntCounter,
    pub candles: IntCounter,
    pub revisions: IntCounter,
    pub duplicates: IntCounter,
    pub late_corrected: IntCounter,
    pub too_late: IntCounter,
    pub bad_records: IntCounter,
    pub commits: IntCounter,
    pub aborts: IntCounter,
    pub fenced: IntCounter,
    /// Input records of a fenced writer (an epoch below one already seen
    /// for the key), dropped.
    pub late_epoch: IntCounter,
    pub errors: IntCounter,
    commit_seconds: PromHistogram,
    /// A candle's window end (exchange time) → its transaction committed.
    pub committed_latency: PromHistogram,
    /// Commit latency in microseconds, for the benchmark's percentiles.
    pub commit_micros: Mutex<Histogram<u64>>,
}

impl StageMetrics {
    /// Registers the stage's metrics (`tickfetch_rollup_*{stage="1m"}`).
    pub fn new(interval: Interval) -> Self {
        let counter = |name: &str, help: &str| {
            register(
                IntCounter::with_opts(
                    Opts::new(format!("tickfetch_rollup_{name}"), help)
                        .const_label("stage", interval.as_str()),
                )
                .expect("static metric definition"),
            )
        };
        Self {
            records: counter("records_total", "input records applied"),
            replayed: counter(
                "replayed_total",
                "input records replayed silently after a restore",
            ),
            candles: counter("candles_total", "candles produced"),
            revisions: counter(
                "revisions_total",
                "corrected candles produced (revision > 0)",
            ),
            duplicates: counter("duplicates_total", "input records already counted"),
            late_corrected: counter("late_total", "late records merged into closed windows"),
            too_late: counter(
                "too_late_total",
                "records behind the retention horizon, dead-lettered",
            ),
            bad_records: counter(
                "bad_records_total",
                "undecodable input records, dead-lettered",
            ),
            commits: counter("commits_total", "transactions committed"),
            aborts: counter("aborts_total", "transactions aborted or rewound"),
            fenced: counter("fenced_total", "partitions lost to a newer instance"),
            late_epoch: counter(
                "late_epoch_records_total",
                "input records of a fenced writer (lower epoch than one seen for the key), dropped",
            ),
            errors: counter("consumer_errors_total", "consumer errors"),
            commit_seconds: register(
                PromHistogram::with_opts(
                    HistogramOpts::new(
                        "tickfetch_rollup_commit_seconds",
                        "transaction commit latency",
                    )
                    .const_label("stage", interval.as_str())
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
                )
                .expect("static metric definition"),
            ),
            committed_latency: register(
                PromHistogram::with_opts(
                    HistogramOpts::new(
                        "tickfetch_rollup_committed_latency_seconds",
                        "end of a candle's window (exchange time) to its transaction's commit",
                    )
                    .const_label("stage", interval.as_str())
                    .buckets(crate::telemetry::LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            commit_micros: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("static metric definition"),
            ),
        }
    }

    /// What the stage did, for benchmarks and the exit log.
    pub fn report(&self) -> StageReport {
        let (p50, p99, max) = self
            .commit_micros
            .lock()
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
            .unwrap_or_default();
        StageReport {
            records: self.records.get(),
            candles: self.candles.get(),
            commits: self.commits.get(),
            aborts: self.aborts.get(),
            commit_p50_micros: p50,
            commit_p99_micros: p99,
            commit_max_micros: max,
        }
    }

    /// Records one commit's latency.
    pub fn record_commit(&self, elapsed: Duration) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        if let Ok(mut h) = self.commit_micros.lock() {
            let _ = h.record(elapsed.as_micros().min(60_000_000) as u64);
        }
    }
}

/// A stage's totals when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageReport {
    pub records: u64,
    pub candles: u64,
    pub commits: u64,
    pub aborts: u64,
    pub commit_p50_micros: u64,
    pub commit_p99_micros: u64,
    pub commit_max_micros: u64,
}

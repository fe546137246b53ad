//! What a run and the backlog phase report (the JSON's shape).

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) measure: String,
    pub(crate) samples: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn latency(measure: String, samples: impl Iterator<Item = Millis>) -> Latency {
    let h = common::millis_histogram(samples, 3_600_000);
    Latency {
        measure,
        samples: h.len(),
        p50_ms: h.value_at_quantile(0.50) as f64,
        p99_ms: h.value_at_quantile(0.99) as f64,
        p999_ms: h.value_at_quantile(0.999) as f64,
        max_ms: h.max() as f64,
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Usage {
    pub(crate) process: String,
    pub(crate) cpu_percent: f64,
    pub(crate) peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Throughput {
    pub(crate) what: String,
    pub(crate) per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub(crate) offered_trades_per_second: f64,
    pub(crate) symbols: usize,
    pub(crate) measured_secs: f64,
    pub(crate) trades_sent: usize,
    /// Trades read off the trades topic whose exchange time is in the window,
    /// per second.
    pub(crate) trades_per_second_read: f64,
    pub(crate) latency: Vec<Latency>,
    /// From the processes' own histograms (bucket upper bounds).
    pub(crate) bucketed: Vec<Latency>,
    pub(crate) throughput: Vec<Throughput>,
    pub(crate) usage: Vec<Usage>,
    pub(crate) candles_checked: BTreeMap<String, usize>,
    pub(crate) stored_checked: BTreeMap<String, usize>,
    pub(crate) errors: Vec<String>,
    pub(crate) trades_topic: String,
    /// `/proc/loadavg`'s 1-minute figure at the start and the end of the
    /// measured window (other work on the cores shows here).
    pub(crate) load_average: (f64, f64),
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) date: String,
    pub(crate) settings: Settings,
    pub(crate) runs: Vec<RunResult>,
    pub(crate) backlog: Option<Backlog>,
}

/// One reader of the copied backlog; its candle counts are filled in when
/// its candles have been compared.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct BacklogRun {
    pub(crate) system: String,
    pub(crate) trades: u64,
    /// From the process's start until it has consumed the backlog.
    pub(crate) seconds_from_start: f64,
    /// From its first trade (or first commit) to the last.
    pub(crate) seconds_working: f64,
    pub(crate) trades_per_second: f64,
    pub(crate) cpu_seconds: f64,
    pub(crate) trades_per_cpu_second: f64,
    pub(crate) peak_rss_mb: f64,
    pub(crate) candles_compared: usize,
    pub(crate) candles_differing: usize,
    /// Windows with trades that tickfetch emitted and the peer did not.
    pub(crate) candles_not_emitted: usize,
    pub(crate) note: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Backlog {
    pub(crate) topic: String,
    pub(crate) records: i64,
    pub(crate) trades: u64,
    pub(crate) symbols: usize,
    pub(crate) runs: Vec<BacklogRun>,
    pub(crate) errors: Vec<String>,
}

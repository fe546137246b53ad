//! Connection policies as small pure state machines, driven by the connection
//! tasks with `Instant`s they pass in (so tests control time):
//!
//! - [`Backoff`]: jittered exponential reconnect delays.
//! - [`Pacer`]: the exchange's limit on client messages per second (Binance:
//!   5, pings and pongs included), as a sliding one-second window.
//! - [`Watchdog`]: data-progress detection whose silence threshold follows the
//!   observed trade rate of a connection's symbols.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Jittered exponential backoff: attempt `n` waits a random time in
/// `[d/2, d]` with `d = min(max, min · 2ⁿ)` ("equal jitter": never zero, so a
/// fleet of workers reconnecting after an exchange outage spreads out).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(rng.gen_range(0..=spread))
    }

    /// After a connection that worked: start from `min` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// At most `per_second` client messages in any one-second window.
#[derive(Debug, Clone)]
pub struct Pacer {
    per_second: usize,
    sent: VecDeque<Instant>,
}

impl Pacer {
    /// `None` means no limit. One slot of the exchange's limit is left for
    /// the automatic pong replies the websocket library sends.
    pub fn new(limit: Option<u32>) -> Self {
        let per_second = match limit {
            Some(n) if n > 1 => (n - 1) as usize,
            Some(_) => 1,
            None => usize::MAX,
        };
        Self {
            per_second,
            sent: VecDeque::new(),
        }
    }

    /// How long to wait before the next message may go.
    pub fn delay(&mut self, now: Instant) -> Duration {
        let window = Duration::from_secs(1);
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.per_second {
            return Duration::ZERO;
        }
        self.sent.front().map_or(Duration::ZERO, |first| {
            (*first + window).saturating_duration_since(now)
        })
    }

    /// Records a message sent at `now`.
    pub fn record(&mut self, now: Instant) {
        if self.per_second != usize::MAX {
            self.sent.push_back(now);
        }
    }
}

/// Data-progress watchdog of one connection (shard).
///
/// A symbol's liquidity is learned as an exponentially weighted mean of the
/// gaps between its trades. The connection's expected gap is that of the
/// merged stream (`1 / Σ rateᵢ`), and the connection counts as stalled when no
/// trade arrived for `multiplier ×` that, clamped to `[floor, ceiling]`:
/// liquid symbols are recycled within seconds, a connection of illiquid ones
/// only after minutes, and one whose symbols never traded after the ceiling.
/// Each recycle that brought no trade doubles the threshold (capped at the
/// ceiling), and after [`Watchdog::MAX_STRIKES`] such recycles the watchdog
/// stands down until a trade arrives, so a symbol that has simply gone quiet is
/// not recycled forever (keep-alive still guards the connection itself).
#[derive(Debug, Clone)]
pub struct Watchdog {
    floor: Duration,
    ceiling: Duration,
    multiplier: u32,
    symbols: HashMap<String, RateEstimate>,
    strikes: u32,
}

#[derive(Debug, Clone, Copy)]
struct RateEstimate {
    last_trade: Instant,
    /// Mean gap between trades, seconds; `None` until a second trade arrives.
    mean_gap: Option<f64>,
}

impl Watchdog {
    /// Consecutive trade-less recycles after which the watchdog stands down.
    pub const MAX_STRIKES: u32 = 3;
    /// Weight of the newest gap in the mean.
    const ALPHA: f64 = 0.2;
    /// Silence, in mean gaps of the merged stream, that counts as a stall.
    pub const DEFAULT_MULTIPLIER: u32 = 20;

    pub fn new(floor: Duration, ceiling: Duration) -> Self {
        Self {
            floor,
            ceiling: ceiling.max(floor),
            multiplier: Self::DEFAULT_MULTIPLIER,
            symbols: HashMap::new(),
            strikes: 0,
        }
    }

    /// A trade of `symbol` arrived at `now`.
    pub fn on_trade(&mut self, symbol: &str, now: Instant) {
        self.strikes = 0;
        match self.symbols.get_mut(symbol) {
            Some(estimate) => {
                let gap = now
                    .saturating_duration_since(estimate.last_trade)
                    .as_secs_f64();
                estimate.mean_gap = Some(match estimate.mean_gap {
                    Some(mean) => mean + Self::ALPHA * (gap - mean),
                    None => gap,
                });
                estimate.last_trade = now;
            }
            None => {
                self.symbols.insert(
                    symbol.to_string(),
                    RateEstimate {
                        last_trade: now,
                        mean_gap: None,
                    },
                );
            }
        }
    }

    /// The silence after which the connection counts as stalled; `None` when
    /// the watchdog stands down.
    pub fn threshold(&self) -> Option<Duration> {
        if self.strikes >= Self::MAX_STRIKES {
            return None;
        }
        let rate: f64 = self
            .symbols
            .values()
            .filter_map(|e| e.mean_gap)
            .map(|gap| 1.0 / gap.max(1e-6))
            .sum();
        let base = if rate > 0.0 {
            Duration::from_secs_f64((f64::from(self.multiplier) / rate).min(1e9))
                .clamp(self.floor, self.ceiling)
        } else {
            self.ceiling
        };
        Some(base.saturating_mul(1u32 << self.strikes).min(self.ceiling))
    }

    /// Whether a connection whose last trade (or start) was at `last_progress`
    /// has stalled by `now`.
    pub fn stalled(&self, last_progress: Instant, now: Instant) -> bool {
        self.threshold()
            .is_some_and(|t| now.saturating_duration_since(last_progress) > t)
    }

    /// The connection was recycled; `saw_trades` tells whether it carried any.
    pub fn recycled(&mut self, saw_trades: bool) {
        if saw_trades {
            self.strikes = 0;
        } else {
            self.strikes = self.strikes.saturating_add(1);
        }
    }

    /// The mean gap between `symbol`'s trades, when learned.
    pub fn mean_gap(&self, symbol: &str) -> Option<Duration> {
        self.symbols
            .get(symbol)
            .and_then(|e| e.mean_gap)
            .map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let expected_ceilings = [100, 200, 400, 800, 1600, 2000, 2000];
        for ceiling in expected_ceilings {
            let delay = backoff.next_delay(&mut rng).as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} not in [{}, {ceiling}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn pacer_keeps_to_the_limit_and_leaves_room_for_pongs() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Some(5));
        let mut now = start;
        let mut sent = Vec::new();
        for _ in 0..9 {
            now += pacer.delay(now);
            pacer.record(now);
            sent.push(now.duration_since(start));
        }
        // 4 per second (5 minus one for pongs): 0,0,0,0, then 1 s later 4 more...
        assert_eq!(sent[3], Duration::ZERO);
        assert_eq!(sent[4], Duration::from_secs(1));
        assert_eq!(sent[8], Duration::from_secs(2));
        for window in sent.windows(5) {
            assert!(window[4] - window[0] >= Duration::from_secs(1));
        }
        let mut unlimited = Pacer::new(None);
        for _ in 0..100 {
            assert_eq!(unlimited.delay(start), Duration::ZERO);
            unlimited.record(start);
        }
    }

    #[test]
    fn watchdog_threshold_follows_liquidity() {
        let floor = Duration::from_secs(1);
        let ceiling = Duration::from_secs(60);
        let start = Instant::now();
        type Case<'a> = (&'a str, &'a [(&'a str, u64)], Option<Duration>);
        let cases: [Case; 4] = [
            ("no trades yet: ceiling", &[], Some(ceiling)),
            // 10 trades/s: 20 × 0.1 s = 2 s.
            ("liquid", &[("A", 100)], Some(Duration::from_secs(2))),
            ("very liquid: floor", &[("A", 10)], Some(floor)),
            // One trade per 10 s: 200 s, clamped.
            ("illiquid: ceiling", &[("A", 10_000)], Some(ceiling)),
        ];
        for (name, symbols, expected) in cases {
            let mut watchdog = Watchdog::new(floor, ceiling);
            for (symbol, gap_ms) in symbols {
                for i in 0..50 {
                    watchdog.on_trade(symbol, start + Duration::from_millis(gap_ms * i));
                }
            }
            let got = watchdog
                .threshold()
                .map(|d| Duration::from_millis(d.as_millis() as u64));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn watchdog_combines_symbols_and_stands_down_after_strikes() {
        let start = Instant::now();
        let mut watchdog = Watchdog::new(Duration::from_millis(100), Duration::from_secs(60));
        for i in 0..50u64 {
            watchdog.on_trade("A", start + Duration::from_millis(200 * i));
            watchdog.on_trade("B", start + Duration::from_millis(200 * i + 50));
        }
        // Two symbols at 5/s each: 10/s merged → 20 × 0.1 s = 2 s.
        let threshold = watchdog.threshold().expect("active");
        assert!(
            (1_900..=2_100).contains(&threshold.as_millis()),
            "{threshold:?}"
        );
        let last = start + Duration::from_secs(10);
        assert!(!watchdog.stalled(last, last + Duration::from_secs(1)));
        assert!(watchdog.stalled(last, last + Duration::from_secs(3)));
        watchdog.recycled(false);
        assert!(watchdog.threshold().expect("active") >= threshold * 2 - Duration::from_millis(1));
        watchdog.recycled(false);
        watchdog.recycled(false);
        assert_eq!(watchdog.threshold(), None, "stood down");
        assert!(!watchdog.stalled(last, last + Duration::from_secs(3600)));
        watchdog.on_trade("A", last);
        assert!(watchdog.threshold().is_some(), "a trade re-arms it");
    }
}

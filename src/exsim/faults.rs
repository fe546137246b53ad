//! Fault injection: what a test or an operator can do to the simulated
//! exchanges, and the state that remembers it.
//!
//! A [`Fault`] targets one exchange, and optionally one symbol. It arrives
//! through [`SimHandle::inject`](super::SimHandle::inject) or as JSON on
//! `POST /control/fault` ([`FaultRequest`]), and lands in one of two places:
//!
//! - trade faults (`drop`, `gap`, `duplicate`, `stall`) and the connection
//!   flags (`no-pong`, `ignore-pongs`, `reject`, `down`) are remembered in
//!   the exchange's [`FaultState`], which the publisher consults for every
//!   trade ([`FaultState::fate`]) and each connection consults for its pings,
//!   pongs and subscriptions (the server for new upgrades);
//! - one-shot faults (`malformed`, `close`) are broadcast at once as events
//!   to the exchange's connections (see `market::Event`).
//!
//! Count faults count per trade series: on an exchange with two series
//! (Binance `trade` and `aggTrade`, OKX `trades-all` and `trades`) each
//! series skips (or repeats) its next `count` trades. A fault without a
//! symbol applies to the exchange's trades in publication order, whatever
//! their symbol.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::market::Series;
use super::SimError;
use crate::model::Exchange;

/// What to do to an exchange (or one of its symbols).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub exchange: Exchange,
    /// `None`: every symbol of the exchange.
    pub symbol: Option<String>,
    pub kind: FaultKind,
}

impl Fault {
    /// A fault on every symbol of `exchange`.
    pub fn new(exchange: Exchange, kind: FaultKind) -> Self {
        Self {
            exchange,
            symbol: None,
            kind,
        }
    }

    /// The same fault, narrowed to one exchange symbol.
    pub fn for_symbol(mut self, symbol: impl Into<String>) -> Self {
        self.symbol = Some(symbol.into());
        self
    }
}

/// The faults the simulator can inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The next `count` trades are not sent on the websocket but stay in the
    /// history (REST serves them): a gap a worker can backfill.
    Drop { count: u64 },
    /// The next `count` trades vanish: not sent, not in the history, so the
    /// ids jump and REST cannot fill the hole (the window is degraded).
    Gap { count: u64 },
    /// The next `count` trades are sent twice.
    Duplicate { count: u64 },
    /// No trades (nor Coinbase heartbeats) go out for `duration`, while pings
    /// are still answered; trades made meanwhile are in the history only.
    Stall { duration: Duration },
    /// One corrupt frame (a truncated trade frame) to every connection
    /// carrying the symbol.
    Malformed,
    /// Close the connections carrying the symbol (all of the exchange's
    /// without one): a close frame (1001), or with `abrupt` a dropped socket.
    Close { abrupt: bool },
    /// Stop answering client pings (websocket pings and text `ping`s): the
    /// connection stops reading for `duration` (`None`: until cleared).
    NoPong { duration: Option<Duration> },
    /// Ignore the client's pongs to the server's pings (Binance), so that the
    /// server's pong deadline trips and it closes the connection.
    IgnorePongs { duration: Option<Duration> },
    /// Refuse new subscriptions to the symbol with the exchange's error reply
    /// (on Binance, an error to the request). Needs a symbol.
    Reject,
    /// The exchange is down: new websocket upgrades get HTTP 503 for
    /// `duration` (open connections are untouched; add a `close` to drop
    /// them). Exchange-wide.
    Down { duration: Duration },
}

impl FaultKind {
    /// The name used on the control endpoint.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Drop { .. } => "drop",
            FaultKind::Gap { .. } => "gap",
            FaultKind::Duplicate { .. } => "duplicate",
            FaultKind::Stall { .. } => "stall",
            FaultKind::Malformed => "malformed",
            FaultKind::Close { .. } => "close",
            FaultKind::NoPong { .. } => "no-pong",
            FaultKind::IgnorePongs { .. } => "ignore-pongs",
            FaultKind::Reject => "reject",
            FaultKind::Down { .. } => "down",
        }
    }
}

/// The JSON body of `POST /control/fault`:
/// `{"exchange":"binance","symbol":"BTCUSDT","fault":"drop","count":5}`,
/// `{"exchange":"okx","fault":"stall","duration_ms":3000}`,
/// `{"exchange":"bybit","fault":"close","abrupt":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub exchange: Exchange,
    #[serde(default)]
    pub symbol: Option<String>,
    /// `drop`, `gap`, `duplicate`, `stall`, `malformed`, `close`, `no-pong`,
    /// `ignore-pongs`, `reject` or `down`.
    pub fault: String,
    /// Trades affected (`drop`, `gap`, `duplicate`); default 1.
    #[serde(default)]
    pub count: Option<u64>,
    /// How long (`stall`, `down`: required; `no-pong`, `ignore-pongs`: until
    /// cleared when absent).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `close` without a close frame.
    #[serde(default)]
    pub abrupt: bool,
}

impl TryFrom<FaultRequest> for Fault {
    type Error = SimError;

    fn try_from(request: FaultRequest) -> Result<Self, SimError> {
        let count = request.count.unwrap_or(1);
        let duration = request.duration_ms.map(Duration::from_millis);
        let kind = match request.fault.as_str() {
            "drop" => FaultKind::Drop { count },
            "gap" => FaultKind::Gap { count },
            "duplicate" => FaultKind::Duplicate { count },
            "stall" => FaultKind::Stall {
                duration: duration
                    .ok_or_else(|| SimError::BadFault("`stall` needs `duration_ms`".to_string()))?,
            },
            "malformed" => FaultKind::Malformed,
            "close" => FaultKind::Close {
                abrupt: request.abrupt,
            },
            "no-pong" => FaultKind::NoPong { duration },
            "ignore-pongs" => FaultKind::IgnorePongs { duration },
            "reject" => FaultKind::Reject,
            "down" => FaultKind::Down {
                duration: duration
                    .ok_or_else(|| SimError::BadFault("`down` needs `duration_ms`".to_string()))?,
            },
            other => {
                return Err(SimError::BadFault(format!(
                    "unknown fault {other:?} (expected drop, gap, duplicate, stall, malformed, \
                     close, no-pong, ignore-pongs, reject or down)"
                )))
            }
        };
        Ok(Fault {
            exchange: request.exchange,
            symbol: request.symbol,
            kind,
        })
    }
}

/// What becomes of one published trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Recorded and sent.
    Send,
    /// Recorded and sent twice.
    SendTwice,
    /// Recorded, not sent (`drop`, `stall`).
    Withhold,
    /// Neither recorded nor sent (`gap`).
    Vanish,
}

/// Pending trade faults of one target, per series.
#[derive(Debug, Clone, Copy, Default)]
struct TradeFaults {
    drop: [u64; 2],
    gap: [u64; 2],
    duplicate: [u64; 2],
}

/// Far enough to mean "until cleared" without overflowing `Instant`.
const UNTIL_CLEARED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn deadline(now: Instant, duration: Option<Duration>) -> Instant {
    let duration = duration.unwrap_or(UNTIL_CLEARED);
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// The faults in force on one exchange. Keys are `Some(symbol)` or `None`
/// (the whole exchange).
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    trades: HashMap<Option<String>, TradeFaults>,
    stalls: HashMap<Option<String>, Instant>,
    no_pong: HashMap<Option<String>, Instant>,
    ignore_pongs: HashMap<Option<String>, Instant>,
    rejected: HashSet<String>,
    down_until: Option<Instant>,
}

impl FaultState {
    /// Remember a stateful fault. One-shot faults (`malformed`, `close`) are
    /// not kept here.
    pub(crate) fn add(&mut self, symbol: Option<String>, kind: &FaultKind, now: Instant) {
        match kind {
            FaultKind::Drop { count } => {
                let entry = self.trades.entry(symbol).or_default();
                entry.drop = entry.drop.map(|n| n.saturating_add(*count));
            }
            FaultKind::Gap { count } => {
                let entry = self.trades.entry(symbol).or_default();
                entry.gap = entry.gap.map(|n| n.saturating_add(*count));
            }
            FaultKind::Duplicate { count } => {
                let entry = self.trades.entry(symbol).or_default();
                entry.duplicate = entry.duplicate.map(|n| n.saturating_add(*count));
            }
            FaultKind::Stall { duration } => {
                self.stalls.insert(symbol, deadline(now, Some(*duration)));
            }
            FaultKind::NoPong { duration } => {
                self.no_pong.insert(symbol, deadline(now, *duration));
            }
            FaultKind::IgnorePongs { duration } => {
                self.ignore_pongs.insert(symbol, deadline(now, *duration));
            }
            FaultKind::Reject => {
                if let Some(symbol) = symbol {
                    self.rejected.insert(symbol);
                }
            }
            FaultKind::Down { duration } => {
                self.down_until = Some(deadline(now, Some(*duration)));
            }
            FaultKind::Malformed | FaultKind::Close { .. } => {}
        }
    }

    /// Whether any connection-level fault (`no-pong`, `ignore-pongs`) was
    /// added since the last full clear: sessions skip the lock otherwise.
    pub(crate) fn has_pong_faults(&self) -> bool {
        !self.no_pong.is_empty() || !self.ignore_pongs.is_empty()
    }

    /// Whether new connections are refused now.
    pub(crate) fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| now < until)
    }

    /// Forget every fault (of one symbol, or all of them).
    pub(crate) fn clear(&mut self, symbol: Option<&str>) {
        match symbol {
            None => *self = FaultState::default(),
            Some(symbol) => {
                let key = Some(symbol.to_string());
                self.trades.remove(&key);
                self.stalls.remove(&key);
                self.no_pong.remove(&key);
                self.ignore_pongs.remove(&key);
                self.rejected.remove(symbol);
            }
        }
    }

    /// Decide what happens to the next trade of `symbol` in `series`,
    /// consuming one unit of a count fault. The symbol's own faults go first.
    pub(crate) fn fate(&mut self, symbol: &str, series: Series, now: Instant) -> Fate {
        let index = series.index();
        for key in [Some(symbol.to_string()), None] {
            if let Some(faults) = self.trades.get_mut(&key) {
                if faults.gap[index] > 0 {
                    faults.gap[index] -= 1;
                    return Fate::Vanish;
                }
                if faults.drop[index] > 0 {
                    faults.drop[index] -= 1;
                    return Fate::Withhold;
                }
            }
        }
        if self.is_stalled(symbol, now) {
            return Fate::Withhold;
        }
        for key in [Some(symbol.to_string()), None] {
            if let Some(faults) = self.trades.get_mut(&key) {
                if faults.duplicate[index] > 0 {
                    faults.duplicate[index] -= 1;
                    return Fate::SendTwice;
                }
            }
        }
        Fate::Send
    }

    /// Whether `symbol`'s data is stalled now.
    pub(crate) fn is_stalled(&self, symbol: &str, now: Instant) -> bool {
        active(&self.stalls, Some(symbol), now)
    }

    /// Whether a connection carrying `symbols` must not answer pings now.
    pub(crate) fn no_pong<'a>(
        &self,
        symbols: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> bool {
        any_active(&self.no_pong, symbols, now)
    }

    /// Whether a connection carrying `symbols` must ignore pongs now.
    pub(crate) fn ignore_pongs<'a>(
        &self,
        symbols: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> bool {
        any_active(&self.ignore_pongs, symbols, now)
    }

    /// Whether subscriptions to `symbol` are refused.
    pub(crate) fn is_rejected(&self, symbol: &str) -> bool {
        self.rejected.contains(symbol)
    }
}

fn active(map: &HashMap<Option<String>, Instant>, symbol: Option<&str>, now: Instant) -> bool {
    let exchange_wide = map.get(&None).is_some_and(|until| now < *until);
    exchange_wide
        || symbol.is_some_and(|s| {
            map.get(&Some(s.to_string()))
                .is_some_and(|until| now < *until)
        })
}

fn any_active<'a>(
    map: &HashMap<Option<String>, Instant>,
    symbols: impl IntoIterator<Item = &'a str>,
    now: Instant,
) -> bool {
    if map.is_empty() {
        return false;
    }
    if active(map, None, now) {
        return true;
    }
    symbols.into_iter().any(|s| active(map, Some(s), now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_faults_apply_in_order_symbol_first() {
        let now = Instant::now();
        let mut state = FaultState::default();
        state.add(Some("A".into()), &FaultKind::Gap { count: 1 }, now);
        state.add(None, &FaultKind::Drop { count: 2 }, now);
        state.add(Some("A".into()), &FaultKind::Duplicate { count: 1 }, now);
        let fates: Vec<Fate> = (0..5).map(|_| state.fate("A", Series::Raw, now)).collect();
        assert_eq!(
            fates,
            [
                Fate::Vanish,
                Fate::Withhold,
                Fate::Withhold,
                Fate::SendTwice,
                Fate::Send
            ]
        );
        // The aggregated series has its own counters.
        assert_eq!(state.fate("B", Series::Aggregated, now), Fate::Withhold);
    }

    #[test]
    fn timed_faults_expire_and_clear() {
        let now = Instant::now();
        let mut state = FaultState::default();
        state.add(
            Some("A".into()),
            &FaultKind::Stall {
                duration: Duration::from_secs(1),
            },
            now,
        );
        assert_eq!(state.fate("A", Series::Raw, now), Fate::Withhold);
        assert_eq!(state.fate("B", Series::Raw, now), Fate::Send);
        let later = now + Duration::from_secs(2);
        assert_eq!(state.fate("A", Series::Raw, later), Fate::Send);

        state.add(None, &FaultKind::NoPong { duration: None }, now);
        assert!(state.no_pong(["X"], later));
        state.add(Some("A".into()), &FaultKind::Reject, now);
        assert!(state.is_rejected("A"));
        state.clear(None);
        assert!(!state.no_pong(["X"], later));
        assert!(!state.is_rejected("A"));
    }

    #[test]
    fn requests_parse_into_faults() {
        let cases = [
            (
                r#"{"exchange":"binance","symbol":"BTCUSDT","fault":"drop","count":5}"#,
                Ok(Fault::new(Exchange::Binance, FaultKind::Drop { count: 5 })
                    .for_symbol("BTCUSDT")),
            ),
            (
                r#"{"exchange":"okx","fault":"stall","duration_ms":1500}"#,
                Ok(Fault::new(
                    Exchange::Okx,
                    FaultKind::Stall {
                        duration: Duration::from_millis(1500),
                    },
                )),
            ),
            (
                r#"{"exchange":"bybit","fault":"close","abrupt":true}"#,
                Ok(Fault::new(
                    Exchange::Bybit,
                    FaultKind::Close { abrupt: true },
                )),
            ),
            (r#"{"exchange":"okx","fault":"stall"}"#, Err("duration_ms")),
            (r#"{"exchange":"okx","fault":"melt"}"#, Err("unknown fault")),
        ];
        for (text, expected) in cases {
            let request: FaultRequest = serde_json::from_str(text).expect(text);
            match (Fault::try_from(request), expected) {
                (Ok(fault), Ok(want)) => assert_eq!(fault, want, "{text}"),
                (Err(err), Err(needle)) => assert!(err.to_string().contains(needle), "{err}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert!(
            serde_json::from_str::<FaultRequest>(r#"{"exchange":"okx","fault":"drop","x":1}"#)
                .is_err()
        );
    }
}

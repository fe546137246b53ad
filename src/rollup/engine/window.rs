//! Windows and candle building: a symbol's retained windows at one level
//! ([`SymbolCore`]), their OHLCV bars, and the candle built when one closes
//! (checked with `debug_assert!`). Shared by the trade and candle levels.

use super::*;

/// The values of a window with data (the OHLCV part of a candle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BarRepr", from = "BarRepr")]
pub(super) struct Bar {
    pub(super) open: Decimal,
    pub(super) high: Decimal,
    pub(super) low: Decimal,
    pub(super) close: Decimal,
    pub(super) volume: Decimal,
    pub(super) quote_volume: Decimal,
    pub(super) trade_count: u64,
    pub(super) taker_buy_volume: Decimal,
    pub(super) taker_buy_quote_volume: Decimal,
    pub(super) first_id: Option<RawId>,
    pub(super) last_id: Option<RawId>,
}

/// [`Bar`] in the state's JSON: an array in field order (a changelog record
/// holds hundreds of these, so no field names).
#[derive(Serialize, Deserialize)]
pub(super) struct BarRepr(
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    u64,
    Decimal,
    Decimal,
    Option<RawId>,
    Option<RawId>,
);

impl From<Bar> for BarRepr {
    fn from(b: Bar) -> Self {
        BarRepr(
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            b.quote_volume,
            b.trade_count,
            b.taker_buy_volume,
            b.taker_buy_quote_volume,
            b.first_id,
            b.last_id,
        )
    }
}

impl From<BarRepr> for Bar {
    fn from(r: BarRepr) -> Self {
        Bar {
            open: r.0,
            high: r.1,
            low: r.2,
            close: r.3,
            volume: r.4,
            quote_volume: r.5,
            trade_count: r.6,
            taker_buy_volume: r.7,
            taker_buy_quote_volume: r.8,
            first_id: r.9,
            last_id: r.10,
        }
    }
}

impl Bar {
    /// Appends a later bar (a later child window) to this one.
    pub(super) fn absorb(&mut self, later: &Bar) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume = self.volume.saturating_add(later.volume);
        self.quote_volume = self.quote_volume.saturating_add(later.quote_volume);
        self.trade_count = self.trade_count.saturating_add(later.trade_count);
        self.taker_buy_volume = self.taker_buy_volume.saturating_add(later.taker_buy_volume);
        self.taker_buy_quote_volume = self
            .taker_buy_quote_volume
            .saturating_add(later.taker_buy_quote_volume);
        self.last_id.clone_from(&later.last_id);
    }
}

/// A known feed gap `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Gap {
    pub(super) from: Millis,
    pub(super) to: Millis,
}

/// What a window holds, per level.
pub(super) trait WindowPayload: Default {
    /// The candle values if the window has data.
    fn bar(&self) -> Option<Cow<'_, Bar>>;
    /// The close if the window has data (cheap).
    fn close(&self) -> Option<Decimal>;
    /// Whether an input marked the window degraded.
    fn degraded(&self) -> bool;
    /// The price a no-data window shows when no earlier close is known.
    fn fallback_close(&self) -> Option<Decimal>;
}

/// One stored window: its payload and the revision last emitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Window<P> {
    #[serde(rename = "r")]
    pub(super) revision: u32,
    #[serde(rename = "w")]
    pub(super) payload: P,
}

/// Where an input's window stands.
pub(super) enum Placement {
    Open,
    Closed,
    TooLate,
}

/// The level-independent part of a symbol's state: watermark, windows, gaps.
///
/// Windows not in `windows` with `first_start <= start < closed_until` were
/// emitted as quiet candles at revision 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SymbolCore<P> {
    pub(super) exchange: Exchange,
    pub(super) symbol: String,
    pub(super) watermark: Option<Millis>,
    /// Start of the symbol's first window (no candle before it).
    pub(super) first_start: Option<Millis>,
    /// Every window starting before this has closed (`None`: none has yet).
    pub(super) closed_until: Option<Millis>,
    /// Close of the last closed window, in window order.
    pub(super) last_close: Option<Decimal>,
    /// Close of the latest evicted window with data.
    pub(super) evicted_close: Option<Decimal>,
    pub(super) windows: BTreeMap<Millis, Window<P>>,
    pub(super) gaps: Vec<Gap>,
}

impl<P: WindowPayload> SymbolCore<P> {
    pub(super) fn new(exchange: Exchange, symbol: &str) -> Self {
        SymbolCore {
            exchange,
            symbol: symbol.to_owned(),
            watermark: None,
            first_start: None,
            closed_until: None,
            last_close: None,
            evicted_close: None,
            windows: BTreeMap::new(),
            gaps: Vec::new(),
        }
    }

    pub(super) fn placement(&self, p: &Params, start: Millis) -> Placement {
        if self.watermark.is_some_and(|wm| p.evictable(start, wm)) {
            return Placement::TooLate;
        }
        match self.closed_until {
            Some(closed) if start < closed => Placement::Closed,
            _ => Placement::Open,
        }
    }

    pub(super) fn advance_watermark(&mut self, time: Millis) {
        if self.watermark.is_none_or(|wm| time > wm) {
            self.watermark = Some(time);
        }
    }

    /// The payload of an open window, created if needed.
    pub(super) fn open_window(&mut self, start: Millis) -> &mut P {
        if self.first_start.is_none_or(|first| start < first) {
            self.first_start = Some(start);
        }
        &mut self.windows.entry(start).or_default().payload
    }

    pub(super) fn in_gap(&self, p: &Params, start: Millis) -> bool {
        let end = start + p.len;
        self.gaps.iter().any(|gap| gap.from < end && start < gap.to)
    }

    /// The close a no-data window at `start` shows: the latest earlier close.
    pub(super) fn prev_close(&self, start: Millis) -> Option<Decimal> {
        self.windows
            .range(..start)
            .rev()
            .find_map(|(_, window)| window.payload.close())
            .or(self.evicted_close)
    }

    /// The candle of window `start` as it stands (revision as last emitted).
    pub(super) fn candle_at(
        &self,
        p: &Params,
        start: Millis,
        prev_close: Option<Decimal>,
    ) -> Option<Candle> {
        let window = self.windows.get(&start);
        let bar = window.and_then(|w| w.payload.bar());
        let degraded = window.is_some_and(|w| w.payload.degraded()) || self.in_gap(p, start);
        let prev_close = prev_close.or_else(|| window.and_then(|w| w.payload.fallback_close()));
        build_candle(
            self.exchange,
            &self.symbol,
            p,
            start,
            bar.as_deref(),
            prev_close,
            degraded,
            window.map_or(0, |w| w.revision),
        )
    }

    /// Closes every window that the watermark allows, then evicts.
    pub(super) fn close_ready(&mut self, p: &Params, out: &mut Vec<Candle>) {
        let Some(wm) = self.watermark else { return };
        self.close_through(p, p.last_closable(wm), out);
        self.evict(p, wm);
    }

    /// Closes windows in order, up to and including the one starting at `last`.
    pub(super) fn close_through(&mut self, p: &Params, last: Millis, out: &mut Vec<Candle>) {
        let Some(first) = self.first_start else {
            return;
        };
        let from = self.closed_until.unwrap_or(first);
        let mut start = from;
        while start <= last {
            if let Some(candle) = self.candle_at(p, start, self.last_close) {
                self.last_close = Some(candle.close);
                out.push(candle);
            }
            start += p.len;
        }
        if start > from {
            self.closed_until = Some(start);
        }
    }

    pub(super) fn evict(&mut self, p: &Params, wm: Millis) {
        let closed = self.closed_until.unwrap_or(Millis::MIN);
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start >= closed || !p.evictable(start, wm) {
                break;
            }
            if let Some(close) = entry.get().payload.close() {
                self.evicted_close = Some(close);
            }
            entry.remove();
        }
        if !self.gaps.is_empty() {
            self.gaps
                .retain(|gap| !p.evictable(p.interval.window_start(gap.to - 1), wm));
        }
    }

    /// Merges late input into the closed window `start` and emits what changed.
    pub(super) fn apply_closed(
        &mut self,
        p: &Params,
        start: Millis,
        mutate: impl FnOnce(&mut P),
        out: &mut Vec<Candle>,
    ) {
        match self.first_start {
            Some(first) if start >= first => {}
            first => {
                // Earlier than anything seen: these windows were never emitted, so
                // they go out now at revision 0, with quiet fill up to the old first.
                mutate(&mut self.windows.entry(start).or_default().payload);
                self.first_start = Some(start);
                let end = first.or(self.closed_until).unwrap_or(start + p.len);
                let mut prev = None;
                let mut at = start;
                while at < end {
                    if let Some(candle) = self.candle_at(p, at, prev) {
                        prev = Some(candle.close);
                        out.push(candle);
                    }
                    at += p.len;
                }
                return;
            }
        }
        let prev = self.prev_close(start);
        let before = self.candle_at(p, start, prev);
        mutate(&mut self.windows.entry(start).or_default().payload);
        let Some(mut after) = self.candle_at(p, start, prev) else {
            return;
        };
        if let Some(before) = &before {
            if same_values(before, &after) {
                return;
            }
            if let Some(window) = self.windows.get_mut(&start) {
                window.revision += 1;
                after.revision = window.revision;
            }
        }
        let new_close = after.close;
        let close_changed = before.as_ref().map(|b| b.close) != Some(new_close);
        out.push(after);
        if close_changed {
            self.reemit_followers(p, start, new_close, out);
        }
    }

    /// Re-emits the closed no-data windows after `start` at `new_close`.
    pub(super) fn reemit_followers(
        &mut self,
        p: &Params,
        start: Millis,
        new_close: Decimal,
        out: &mut Vec<Candle>,
    ) {
        let Some(closed) = self.closed_until else {
            return;
        };
        let mut at = start + p.len;
        while at < closed {
            if self
                .windows
                .get(&at)
                .is_some_and(|w| w.payload.close().is_some())
            {
                return;
            }
            self.windows.entry(at).or_default().revision += 1;
            if let Some(candle) = self.candle_at(p, at, Some(new_close)) {
                out.push(candle);
            }
            at += p.len;
        }
        self.last_close = Some(new_close);
    }

    pub(super) fn mark_gap(&mut self, p: &Params, gap: Gap, out: &mut Vec<Candle>) {
        let mut affected = Vec::new();
        if let (Some(first), Some(closed), Some(wm)) =
            (self.first_start, self.closed_until, self.watermark)
        {
            let lo = p
                .interval
                .window_start(gap.from)
                .max(first)
                .max(p.first_retained(wm));
            let hi = p.interval.window_start(gap.to - 1).min(closed - p.len);
            let mut at = lo;
            while at <= hi {
                let prev = self.prev_close(at);
                if let Some(before) = self.candle_at(p, at, prev) {
                    if before.status != CandleStatus::Degraded {
                        affected.push((at, prev));
                    }
                }
                at += p.len;
            }
        }
        self.gaps.push(gap);
        for (at, prev) in affected {
            self.windows.entry(at).or_default().revision += 1;
            if let Some(candle) = self.candle_at(p, at, prev) {
                out.push(candle);
            }
        }
    }

    pub(super) fn finish(&mut self, p: &Params, out: &mut Vec<Candle>) {
        if let Some((&last, _)) = self.windows.last_key_value() {
            self.close_through(p, last, out);
        }
    }
}

/// All candle fields but the revision are equal.
pub(super) fn same_values(a: &Candle, b: &Candle) -> bool {
    a.exchange == b.exchange
        && a.symbol == b.symbol
        && a.interval == b.interval
        && a.open_time == b.open_time
        && a.close_time == b.close_time
        && a.open == b.open
        && a.high == b.high
        && a.low == b.low
        && a.close == b.close
        && a.volume == b.volume
        && a.quote_volume == b.quote_volume
        && a.trade_count == b.trade_count
        && a.taker_buy_volume == b.taker_buy_volume
        && a.taker_buy_quote_volume == b.taker_buy_quote_volume
        && a.first_trade_id == b.first_trade_id
        && a.last_trade_id == b.last_trade_id
        && a.status == b.status
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_candle(
    exchange: Exchange,
    symbol: &str,
    p: &Params,
    start: Millis,
    bar: Option<&Bar>,
    prev_close: Option<Decimal>,
    degraded: bool,
    revision: u32,
) -> Option<Candle> {
    let status = if degraded {
        CandleStatus::Degraded
    } else if bar.is_some() {
        CandleStatus::Complete
    } else {
        CandleStatus::Quiet
    };
    let candle = match bar {
        Some(bar) => Candle {
            exchange,
            symbol: symbol.to_owned(),
            interval: p.interval,
            open_time: start,
            close_time: start + p.len - 1,
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            quote_volume: bar.quote_volume,
            trade_count: bar.trade_count,
            taker_buy_volume: bar.taker_buy_volume,
            taker_buy_quote_volume: bar.taker_buy_quote_volume,
            first_trade_id: bar.first_id.as_ref().map(RawId::render),
            last_trade_id: bar.last_id.as_ref().map(RawId::render),
            status,
            revision,
        },
        None => {
            let price = prev_close?;
            Candle {
                exchange,
                symbol: symbol.to_owned(),
                interval: p.interval,
                open_time: start,
                close_time: start + p.len - 1,
                open: price,
                high: price,
                low: price,
                close: price,
                volume: Decimal::ZERO,
                quote_volume: Decimal::ZERO,
                trade_count: 0,
                taker_buy_volume: Decimal::ZERO,
                taker_buy_quote_volume: Decimal::ZERO,
                first_trade_id: None,
                last_trade_id: None,
                status,
                revision,
            }
        }
    };
    check_candle(&candle);
    Some(candle)
}

pub(super) fn check_candle(c: &Candle) {
    debug_assert!(
        c.low <= c.open && c.open <= c.high,
        "open outside low..high: {c:?}"
    );
    debug_assert!(
        c.low <= c.close && c.close <= c.high,
        "close outside low..high: {c:?}"
    );
    debug_assert!(
        c.volume >= Decimal::ZERO && c.quote_volume >= Decimal::ZERO,
        "negative volume: {c:?}"
    );
    debug_assert!(
        c.taker_buy_volume <= c.volume,
        "taker buy above volume: {c:?}"
    );
    debug_assert!(
        c.taker_buy_quote_volume <= c.quote_volume,
        "taker buy quote above quote: {c:?}"
    );
    debug_assert_eq!(
        c.open_time,
        c.interval.window_start(c.open_time),
        "misaligned: {c:?}"
    );
    debug_assert_eq!(c.close_time, c.open_time + c.interval.millis() - 1);
    debug_assert!(
        c.status != CandleStatus::Quiet
            || (c.volume.is_zero() && c.trade_count == 0 && c.first_trade_id.is_none()),
        "quiet candle with data: {c:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn quiet_windows_between_trades_show_the_previous_close() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 500, "1.5", "2", Side::Buy),
                trade(2, T0 + 700, "1.4", "1", Side::Sell),
                trade(3, T0 + 3_200, "1.7", "1", Side::Buy),
            ],
        );
        engine.finish(&mut out);
        let got: Vec<(Millis, CandleStatus, [String; 5])> = out
            .iter()
            .map(|c| (c.open_time - T0, c.status, ohlcv(c)))
            .collect();
        let s = |v: [&str; 5]| v.map(str::to_owned);
        assert_eq!(
            got,
            vec![
                (
                    0,
                    CandleStatus::Complete,
                    s(["1.5", "1.5", "1.4", "1.4", "3"])
                ),
                (
                    1_000,
                    CandleStatus::Quiet,
                    s(["1.4", "1.4", "1.4", "1.4", "0"])
                ),
                (
                    2_000,
                    CandleStatus::Quiet,
                    s(["1.4", "1.4", "1.4", "1.4", "0"])
                ),
                (
                    3_000,
                    CandleStatus::Complete,
                    s(["1.7", "1.7", "1.7", "1.7", "1"])
                ),
            ]
        );
        let first = &out[0];
        assert_eq!(first.taker_buy_volume, dec("2"));
        assert_eq!(first.quote_volume, dec("4.4"));
        assert_eq!(first.taker_buy_quote_volume, dec("3.0"));
        assert_eq!(
            (
                first.first_trade_id.as_deref(),
                first.last_trade_id.as_deref()
            ),
            (Some("1"), Some("2"))
        );
        assert_eq!(out[1].first_trade_id, None);
        assert_eq!(out[1].close_time, T0 + 1_999);
    }

    #[test]
    fn windows_close_after_grace_and_finish_invents_no_trailing_quiet_windows() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_trade(&trade(1, T0 + 100, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        engine
            .on_trade(&trade(2, T0 + 1_999, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert!(out.is_empty(), "grace keeps window 0 open until T0+2000");
        engine
            .on_trade(&trade(3, T0 + 2_000, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0]
        );
        engine
            .on_watermark(&watermark(T0 + 3_500), &mut out)
            .expect("watermark");
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0, 1_000]
        );
        engine.finish(&mut out);
        assert_eq!(
            out.iter().map(|c| c.open_time - T0).collect::<Vec<_>>(),
            vec![0, 1_000, 2_000]
        );
    }

    #[test]
    fn watermarks_alone_close_quiet_windows() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_watermark(&watermark(T0), &mut out)
            .expect("watermark");
        assert!(out.is_empty(), "no candle before the first trade");
        engine
            .on_trade(&trade(1, T0 + 10, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        for (name, wm, expected_total) in [
            ("within grace of window 0", T0 + 1_999, 0),
            ("closes window 0", T0 + 2_000, 1),
            ("closes quiet 1 and 2", T0 + 4_000, 3),
            ("same watermark again", T0 + 4_000, 3),
            ("older watermark", T0 + 100, 3),
        ] {
            engine
                .on_watermark(&watermark(wm), &mut out)
                .expect("watermark");
            assert_eq!(out.len(), expected_total, "{name}");
        }
        assert!(out[1..]
            .iter()
            .all(|c| c.status == CandleStatus::Quiet && c.close == dec("2")));
    }
}

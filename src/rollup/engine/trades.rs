//! Level 1: trades and watermarks in, 1s candles out ([`TradeRollup`]).

use super::*;

/// Order of a trade within a window: `(exchange_time, sequence)`; trades without
/// a numeric sequence tie-break by arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "(Millis, Option<u64>)", from = "(Millis, Option<u64>)")]
pub(super) struct OrderKey {
    pub(super) time: Millis,
    pub(super) seq: Option<u64>,
}

impl From<OrderKey> for (Millis, Option<u64>) {
    fn from(key: OrderKey) -> Self {
        (key.time, key.seq)
    }
}

impl From<(Millis, Option<u64>)> for OrderKey {
    fn from((time, seq): (Millis, Option<u64>)) -> Self {
        OrderKey { time, seq }
    }
}

impl OrderKey {
    /// Whether a trade with this key, arriving now, opens before `current`.
    pub(super) fn opens_before(&self, current: &OrderKey) -> bool {
        self.time < current.time
            || (self.time == current.time
                && matches!((self.seq, current.seq), (Some(a), Some(b)) if a < b))
    }

    /// Whether a trade with this key, arriving now, closes after `current`.
    pub(super) fn closes_after(&self, current: &OrderKey) -> bool {
        self.time > current.time
            || (self.time == current.time
                && match (self.seq, current.seq) {
                    (Some(a), Some(b)) => a > b,
                    _ => true,
                })
    }
}

/// A 1s window built from trades, kept incrementally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "TradeWindowRepr", from = "TradeWindowRepr")]
pub(super) struct TradeWindow {
    pub(super) bar: Option<Bar>,
    pub(super) open_key: OrderKey,
    pub(super) close_key: OrderKey,
    /// Smallest numeric trade id merged (bounds the id set's pruning).
    pub(super) min_id: Option<u64>,
}

/// [`TradeWindow`] in the state's JSON: `[bar, open_key, close_key, min_id]`.
#[derive(Serialize, Deserialize)]
pub(super) struct TradeWindowRepr(Option<Bar>, OrderKey, OrderKey, Option<u64>);

impl From<TradeWindow> for TradeWindowRepr {
    fn from(w: TradeWindow) -> Self {
        TradeWindowRepr(w.bar, w.open_key, w.close_key, w.min_id)
    }
}

impl From<TradeWindowRepr> for TradeWindow {
    fn from(r: TradeWindowRepr) -> Self {
        TradeWindow {
            bar: r.0,
            open_key: r.1,
            close_key: r.2,
            min_id: r.3,
        }
    }
}

impl TradeWindow {
    /// Adds `trade` (its id `id`, its `quote` = price × quantity, checked
    /// by [`checked_quote`]).
    pub(super) fn add(&mut self, trade: &Trade, id: IdRef<'_>, quote: Decimal) {
        let key = OrderKey {
            time: trade.exchange_time,
            // `Trade::sequence`, without parsing the id a second time.
            seq: match id {
                IdRef::Num(n) => Some(n),
                IdRef::Text(text) => text.parse().ok(),
            },
        };
        let buy = trade.side == Side::Buy;
        let first_id = match trade.first_trade_id {
            Some(n) => IdRef::Num(n),
            None => id,
        };
        let last_id = match trade.last_trade_id {
            Some(n) => IdRef::Num(n),
            None => id,
        };
        match &mut self.bar {
            None => {
                self.bar = Some(Bar {
                    open: trade.price,
                    high: trade.price,
                    low: trade.price,
                    close: trade.price,
                    volume: trade.quantity,
                    quote_volume: quote,
                    trade_count: trade.trade_count(),
                    taker_buy_volume: if buy { trade.quantity } else { Decimal::ZERO },
                    taker_buy_quote_volume: if buy { quote } else { Decimal::ZERO },
                    first_id: Some(RawId::from_ref(first_id)),
                    last_id: Some(RawId::from_ref(last_id)),
                });
                self.open_key = key;
                self.close_key = key;
            }
            Some(bar) => {
                bar.high = bar.high.max(trade.price);
                bar.low = bar.low.min(trade.price);
                bar.volume = bar.volume.saturating_add(trade.quantity);
                bar.quote_volume = bar.quote_volume.saturating_add(quote);
                bar.trade_count = bar.trade_count.saturating_add(trade.trade_count());
                if buy {
                    bar.taker_buy_volume = bar.taker_buy_volume.saturating_add(trade.quantity);
                    bar.taker_buy_quote_volume = bar.taker_buy_quote_volume.saturating_add(quote);
                }
                if key.opens_before(&self.open_key) {
                    bar.open = trade.price;
                    assign_id(&mut bar.first_id, first_id);
                    self.open_key = key;
                }
                if key.closes_after(&self.close_key) {
                    bar.close = trade.price;
                    assign_id(&mut bar.last_id, last_id);
                    self.close_key = key;
                }
            }
        }
        if let IdRef::Num(n) = id {
            self.min_id = Some(self.min_id.map_or(n, |m| m.min(n)));
        }
    }
}

pub(super) fn assign_id(slot: &mut Option<RawId>, id: IdRef<'_>) {
    match slot {
        Some(raw) => raw.assign(id),
        None => *slot = Some(RawId::from_ref(id)),
    }
}

impl WindowPayload for TradeWindow {
    fn bar(&self) -> Option<Cow<'_, Bar>> {
        self.bar.as_ref().map(Cow::Borrowed)
    }

    fn close(&self) -> Option<Decimal> {
        self.bar.as_ref().map(|bar| bar.close)
    }

    fn degraded(&self) -> bool {
        false
    }

    fn fallback_close(&self) -> Option<Decimal> {
        None
    }
}

/// The level-1 state of one symbol: retained windows, watermark, trade ids.
/// Serialize it to a changelog; restore it with [`TradeRollup::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeState {
    pub(super) core: SymbolCore<TradeWindow>,
    pub(super) ids: TradeIdSet,
    /// Watermark at the last id-set pruning.
    pub(super) ids_pruned_at: Option<Millis>,
}

impl LevelState for TradeState {
    type Payload = TradeWindow;
    fn fresh(exchange: Exchange, symbol: &str) -> Self {
        TradeState::new(exchange, symbol)
    }
    fn core(&self) -> &SymbolCore<TradeWindow> {
        &self.core
    }
    fn core_mut(&mut self) -> &mut SymbolCore<TradeWindow> {
        &mut self.core
    }
    fn after_watermark(&mut self, p: &Params) {
        self.maybe_prune_ids(p);
    }
}

impl TradeState {
    pub(super) fn new(exchange: Exchange, symbol: &str) -> Self {
        TradeState {
            core: SymbolCore::new(exchange, symbol),
            ids: TradeIdSet::default(),
            ids_pruned_at: None,
        }
    }

    /// The symbol's exchange.
    pub fn exchange(&self) -> Exchange {
        self.core.exchange
    }

    /// The exchange's own symbol.
    pub fn symbol(&self) -> &str {
        &self.core.symbol
    }

    /// `exchange:symbol`.
    pub fn key(&self) -> String {
        feed_key(self.core.exchange, &self.core.symbol)
    }

    /// The symbol's event-time watermark.
    pub fn watermark(&self) -> Option<Millis> {
        self.core.watermark
    }

    /// Windows held in memory (open, and closed within retention, with data).
    pub fn retained_windows(&self) -> usize {
        self.core.windows.len()
    }

    /// Entries of the trade-id set (ranges plus text ids).
    pub fn trade_id_entries(&self) -> usize {
        self.ids.len()
    }

    /// Prunes the id set every half retention of watermark progress.
    pub(super) fn maybe_prune_ids(&mut self, p: &Params) {
        let Some(wm) = self.core.watermark else {
            return;
        };
        let every = (p.retention / 2).max(p.len);
        if self.ids_pruned_at.is_some_and(|at| wm - at < every) {
            return;
        }
        self.ids_pruned_at = Some(wm);
        let floor = self
            .core
            .windows
            .values()
            .filter_map(|w| w.payload.min_id)
            .min();
        self.ids.prune(floor, p, wm);
    }
}

/// Level 1: trades and watermarks in, 1s candles out.
///
/// ```text
/// on_trade / on_watermark / mark_gap ──► per-symbol TradeState ──► out: Vec<Candle> (1s)
/// ```
#[derive(Debug, Clone)]
pub struct TradeRollup {
    pub(super) symbols: Symbols<TradeState>,
}

impl TradeRollup {
    /// A level-1 engine with the given timing.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] if `config` does not validate.
    pub fn new(config: LevelConfig) -> Result<Self, EngineError> {
        Ok(TradeRollup {
            symbols: Symbols::new(Params::new(Interval::S1, config)?),
        })
    }

    /// The timing in use.
    pub fn config(&self) -> LevelConfig {
        self.symbols.params.config()
    }

    /// Adds one trade; pushes the candles it closes or corrects onto `out`.
    ///
    /// # Errors
    /// [`EngineError::InvalidTrade`] (an input error: dead-letter the trade) for a
    /// negative price or quantity, an overflowing `price × quantity` or an
    /// `exchange_time` outside `0..=MAX_EVENT_TIME`. Nothing is changed then.
    pub fn on_trade(
        &mut self,
        trade: &Trade,
        out: &mut Vec<Candle>,
    ) -> Result<TradeOutcome, EngineError> {
        let quote = match checked_quote(trade) {
            Ok(quote) => quote,
            Err(reason) => {
                return Err(EngineError::InvalidTrade {
                    key: trade.key(),
                    trade_id: trade.trade_id.clone(),
                    reason,
                })
            }
        };
        let p = self.symbols.params;
        let new = || TradeState::new(trade.exchange, &trade.symbol);
        Ok(self
            .symbols
            .map
            .with(trade.exchange, &trade.symbol, new, |state| {
                let start = p.interval.window_start(trade.exchange_time);
                let id = IdRef::of(&trade.trade_id);
                if state.ids.contains(id) {
                    return Outcome::Duplicate;
                }
                let outcome = match state.core.placement(&p, start) {
                    Placement::TooLate => return Outcome::TooLate,
                    Placement::Open => {
                        state.core.open_window(start).add(trade, id, quote);
                        Outcome::Accepted
                    }
                    Placement::Closed => {
                        state
                            .core
                            .apply_closed(&p, start, |w| w.add(trade, id, quote), out);
                        Outcome::Corrected
                    }
                };
                state.ids.insert(id, start);
                state.core.advance_watermark(trade.exchange_time);
                state.core.close_ready(&p, out);
                state.maybe_prune_ids(&p);
                outcome
            }))
    }

    shared_level_methods!(TradeState);
}

/// The trade's quote volume (price × quantity), or what makes it invalid.
pub(super) fn checked_quote(trade: &Trade) -> Result<Decimal, &'static str> {
    if trade.price < Decimal::ZERO {
        Err("negative price")
    } else if trade.quantity < Decimal::ZERO {
        Err("negative quantity")
    } else if !check_time(trade.exchange_time) {
        Err("exchange_time out of range")
    } else {
        trade
            .price
            .checked_mul(trade.quantity)
            .ok_or("price × quantity overflows")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn open_and_close_follow_time_then_id_not_arrival() {
        for (name, order) in [
            ("in order", [0, 1, 2, 3]),
            ("reversed", [3, 2, 1, 0]),
            ("shuffled", [2, 0, 3, 1]),
        ] {
            let trades = [
                trade(10, T0 + 100, "5", "1", Side::Buy),
                trade(11, T0 + 100, "6", "1", Side::Buy), // same ms: id decides
                trade(12, T0 + 400, "3", "1", Side::Sell),
                trade(13, T0 + 900, "4", "1", Side::Sell),
            ];
            let mut engine = level1();
            let input: Vec<Trade> = order.iter().map(|&i| trades[i].clone()).collect();
            let (outcomes, mut out) = run_trades(&mut engine, &input);
            engine.finish(&mut out);
            assert!(outcomes.iter().all(|o| *o == Outcome::Accepted), "{name}");
            assert_eq!(out.len(), 1, "{name}");
            let c = &out[0];
            assert_eq!(
                ohlcv(c),
                ["5", "6", "3", "4", "4"].map(str::to_owned),
                "{name}"
            );
            assert_eq!(
                (c.first_trade_id.as_deref(), c.last_trade_id.as_deref()),
                (Some("10"), Some("13")),
                "{name}"
            );
        }
    }

    #[test]
    fn non_numeric_ids_tie_break_by_arrival() {
        let mut engine = level1();
        let mut a = trade(0, T0 + 100, "1", "1", Side::Buy);
        a.trade_id = "b-uuid".to_owned();
        let mut b = trade(0, T0 + 100, "2", "1", Side::Buy);
        b.trade_id = "a-uuid".to_owned();
        let (_, mut out) = run_trades(&mut engine, &[a, b]);
        engine.finish(&mut out);
        assert_eq!((out[0].open, out[0].close), (dec("1"), dec("2")));
        assert_eq!(out[0].first_trade_id.as_deref(), Some("b-uuid"));
        assert_eq!(out[0].last_trade_id.as_deref(), Some("a-uuid"));
    }

    #[test]
    fn aggregated_trades_count_their_raw_trades_and_carry_raw_ids() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                agg(100, 500, 502, T0 + 10, "1", "3"),
                agg(101, 503, 503, T0 + 20, "1", "1"),
                agg(102, 504, 510, T0 + 30, "1", "7"),
            ],
        );
        engine.finish(&mut out);
        assert_eq!(out[0].trade_count, 3 + 1 + 7);
        assert_eq!(out[0].first_trade_id.as_deref(), Some("500"));
        assert_eq!(out[0].last_trade_id.as_deref(), Some("510"));
        assert_eq!(
            out[0].taker_buy_volume,
            Decimal::ZERO,
            "is_buyer_maker trades are sells"
        );
    }

    #[test]
    fn late_trade_within_retention_corrects_the_window() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 200, "3", "1", Side::Buy),
                trade(3, T0 + 60_000, "2", "1", Side::Buy),
            ],
        );
        out.clear();
        let outcome = engine
            .on_trade(&trade(4, T0 + 50, "1", "5", Side::Sell), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        assert_eq!(
            out.len(),
            1,
            "the close did not change: followers untouched"
        );
        let c = &out[0];
        assert_eq!((c.open_time, c.revision), (T0, 1));
        assert_eq!(ohlcv(c), ["1", "3", "1", "3", "7"].map(str::to_owned));
        assert_eq!(c.first_trade_id.as_deref(), Some("4"));
        assert_eq!(c.trade_count, 3);
    }

    #[test]
    fn late_trade_changing_a_close_corrects_the_quiet_windows_after_it() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 4_100, "5", "1", Side::Buy),
            ],
        );
        engine
            .on_watermark(&watermark(T0 + 6_000), &mut out)
            .expect("watermark");
        out.clear();
        let outcome = engine
            .on_trade(&trade(3, T0 + 900, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        let got: Vec<(Millis, u32, CandleStatus, Decimal)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status, c.close))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, CandleStatus::Complete, dec("1")),
                (1_000, 1, CandleStatus::Quiet, dec("1")),
                (2_000, 1, CandleStatus::Quiet, dec("1")),
                (3_000, 1, CandleStatus::Quiet, dec("1")),
            ]
        );
        // A late trade into a quiet window makes it complete at revision 2.
        out.clear();
        engine
            .on_trade(&trade(4, T0 + 2_500, "4", "1", Side::Buy), &mut out)
            .expect("trade");
        let got: Vec<(Millis, u32, CandleStatus, Decimal)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status, c.close))
            .collect();
        assert_eq!(
            got,
            vec![
                (2_000, 2, CandleStatus::Complete, dec("4")),
                (3_000, 2, CandleStatus::Quiet, dec("4"))
            ]
        );
    }

    #[test]
    fn trade_beyond_retention_is_too_late_not_dropped_silently() {
        let config = LevelConfig {
            grace_ms: 1_000,
            retention_ms: 10_000,
        };
        let mut engine = TradeRollup::new(config).expect("config");
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(1, T0 + 100, "2", "1", Side::Buy),
                trade(2, T0 + 30_000, "2", "1", Side::Buy),
            ],
        );
        let before = out.len();
        for (name, time, expected) in [
            (
                "window end + retention <= watermark",
                T0 + 19_999,
                Outcome::TooLate,
            ),
            (
                "window end + retention > watermark",
                T0 + 20_000,
                Outcome::Corrected,
            ),
        ] {
            let id = 100 + (time - T0) as u64;
            let outcome = engine
                .on_trade(&trade(id, time, "3", "1", Side::Buy), &mut out)
                .expect("trade");
            assert_eq!(outcome, expected, "{name}");
        }
        assert!(
            out[before..].iter().all(|c| c.open_time >= T0 + 20_000),
            "too-late trade left no mark"
        );
        assert!(
            engine
                .state("binance:XRPETH")
                .expect("state")
                .retained_windows()
                <= 13
        );
    }

    #[test]
    fn invalid_trades_are_errors() {
        let mut engine = level1();
        let mut out = Vec::new();
        for (name, t) in [
            ("negative price", trade(1, T0, "-1", "1", Side::Buy)),
            ("negative quantity", trade(1, T0, "1", "-1", Side::Buy)),
            ("time out of range", trade(1, -5, "1", "1", Side::Buy)),
        ] {
            let err = engine.on_trade(&t, &mut out).expect_err(name);
            assert!(!err.is_terminal(), "{name}");
        }
        assert!(engine.keys().is_empty());
    }

    #[test]
    fn gap_marks_open_and_closed_windows_degraded() {
        let mut pipe = full_pipeline();
        let mut out = Vec::new();
        pipe.on_trade(&trade(1, T0 + 100, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        pipe.on_trade(&trade(2, T0 + 3_100, "2", "1", Side::Buy), &mut out)
            .expect("trade");
        let closed_before = out.len();
        assert_eq!(closed_before, 2, "1s windows 0 and 1");
        pipe.mark_gap(
            Exchange::Binance,
            "XRPETH",
            T0 + 1_500,
            T0 + 2_500,
            &mut out,
        )
        .expect("gap");
        let got: Vec<(Interval, Millis, u32, CandleStatus)> = out[closed_before..]
            .iter()
            .map(|c| (c.interval, c.open_time - T0, c.revision, c.status))
            .collect();
        assert_eq!(
            got,
            vec![(Interval::S1, 1_000, 1, CandleStatus::Degraded)],
            "closed window re-emitted"
        );
        pipe.finish(&mut out).expect("finish");
        let status = |interval: Interval, offset: Millis| {
            out.iter()
                .filter(|c| c.interval == interval && c.open_time == T0 + offset)
                .map(|c| (c.revision, c.status))
                .next_back()
        };
        assert_eq!(
            status(Interval::S1, 2_000),
            Some((0, CandleStatus::Degraded)),
            "open window"
        );
        assert_eq!(
            status(Interval::S1, 3_000),
            Some((0, CandleStatus::Complete))
        );
        assert_eq!(status(Interval::S5, 0), Some((0, CandleStatus::Degraded)));
        assert_eq!(status(Interval::M1, 0), Some((0, CandleStatus::Degraded)));
        assert_eq!(status(Interval::M5, 0), Some((0, CandleStatus::Degraded)));
        let degraded_quiet = out
            .iter()
            .find(|c| c.interval == Interval::S1 && c.open_time == T0 + 2_000)
            .expect("window 2");
        assert_eq!(
            (degraded_quiet.close, degraded_quiet.trade_count),
            (dec("2"), 0)
        );
        assert!(pipe
            .mark_gap(Exchange::Binance, "XRPETH", T0, T0, &mut out)
            .is_err());
    }

    #[test]
    fn late_trade_before_the_first_window_emits_it_fresh() {
        let mut engine = level1();
        let (_, mut out) = run_trades(
            &mut engine,
            &[
                trade(5, T0 + 5_100, "2", "1", Side::Buy),
                trade(6, T0 + 8_000, "2", "1", Side::Buy),
            ],
        );
        out.clear();
        engine
            .on_trade(&trade(4, T0 + 3_100, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        let got: Vec<(Millis, u32, CandleStatus)> = out
            .iter()
            .map(|c| (c.open_time - T0, c.revision, c.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (3_000, 0, CandleStatus::Complete),
                (4_000, 0, CandleStatus::Quiet)
            ]
        );
    }
}

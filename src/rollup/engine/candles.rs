//! Levels 2+: child candles in, parent candles out ([`CandleRollup`]).

use super::*;

/// One child candle as a parent window keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ChildSlotRepr", from = "ChildSlotRepr")]
pub(super) struct ChildSlot {
    pub(super) open_time: Millis,
    pub(super) revision: u32,
    pub(super) degraded: bool,
    /// The child's close (its previous close when it has no data).
    pub(super) close: Decimal,
    /// `None` when the child had no trades (quiet, or degraded without data).
    pub(super) bar: Option<Bar>,
}

/// [`ChildSlot`] in the state's JSON: `[open_time, revision, degraded, close, bar]`.
#[derive(Serialize, Deserialize)]
pub(super) struct ChildSlotRepr(Millis, u32, bool, Decimal, Option<Bar>);

impl From<ChildSlot> for ChildSlotRepr {
    fn from(c: ChildSlot) -> Self {
        ChildSlotRepr(c.open_time, c.revision, c.degraded, c.close, c.bar)
    }
}

impl From<ChildSlotRepr> for ChildSlot {
    fn from(r: ChildSlotRepr) -> Self {
        ChildSlot {
            open_time: r.0,
            revision: r.1,
            degraded: r.2,
            close: r.3,
            bar: r.4,
        }
    }
}

impl ChildSlot {
    pub(super) fn from_candle(candle: &Candle) -> ChildSlot {
        let has_data = match candle.status {
            CandleStatus::Quiet => false,
            CandleStatus::Complete => true,
            CandleStatus::Degraded => candle.trade_count > 0,
        };
        ChildSlot {
            open_time: candle.open_time,
            revision: candle.revision,
            degraded: candle.status == CandleStatus::Degraded,
            close: candle.close,
            bar: has_data.then(|| Bar {
                open: candle.open,
                high: candle.high,
                low: candle.low,
                close: candle.close,
                volume: candle.volume,
                quote_volume: candle.quote_volume,
                trade_count: candle.trade_count,
                taker_buy_volume: candle.taker_buy_volume,
                taker_buy_quote_volume: candle.taker_buy_quote_volume,
                first_id: candle.first_trade_id.as_deref().map(RawId::parse),
                last_id: candle.last_trade_id.as_deref().map(RawId::parse),
            }),
        }
    }
}

/// A parent window: its children (latest revision each), in window order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ParentWindow {
    pub(super) children: Vec<ChildSlot>,
}

impl ParentWindow {
    pub(super) fn held_revision(&self, open_time: Millis) -> Option<u32> {
        self.children
            .iter()
            .find(|child| child.open_time == open_time)
            .map(|child| child.revision)
    }

    pub(super) fn upsert(&mut self, slot: ChildSlot) {
        match self
            .children
            .binary_search_by_key(&slot.open_time, |c| c.open_time)
        {
            Ok(idx) => self.children[idx] = slot,
            Err(idx) => self.children.insert(idx, slot),
        }
    }
}

impl WindowPayload for ParentWindow {
    fn bar(&self) -> Option<Cow<'_, Bar>> {
        let mut acc: Option<Bar> = None;
        for bar in self.children.iter().filter_map(|c| c.bar.as_ref()) {
            match &mut acc {
                None => acc = Some(bar.clone()),
                Some(acc) => acc.absorb(bar),
            }
        }
        acc.map(Cow::Owned)
    }

    fn close(&self) -> Option<Decimal> {
        self.children
            .iter()
            .rev()
            .find_map(|c| c.bar.as_ref().map(|bar| bar.close))
    }

    fn degraded(&self) -> bool {
        self.children.iter().any(|c| c.degraded)
    }

    fn fallback_close(&self) -> Option<Decimal> {
        self.children.last().map(|c| c.close)
    }
}

/// The state of one symbol at a parent level. Serialize it to a changelog;
/// restore it with [`CandleRollup::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandleState {
    pub(super) core: SymbolCore<ParentWindow>,
}

impl LevelState for CandleState {
    type Payload = ParentWindow;
    fn fresh(exchange: Exchange, symbol: &str) -> Self {
        CandleState {
            core: SymbolCore::new(exchange, symbol),
        }
    }
    fn core(&self) -> &SymbolCore<ParentWindow> {
        &self.core
    }
    fn core_mut(&mut self) -> &mut SymbolCore<ParentWindow> {
        &mut self.core
    }
}

impl CandleState {
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

    /// The symbol's event-time watermark at this level.
    pub fn watermark(&self) -> Option<Millis> {
        self.core.watermark
    }

    /// Parent windows held in memory.
    pub fn retained_windows(&self) -> usize {
        self.core.windows.len()
    }
}

/// Levels 2+: child candles in (1s→5s, 5s→1m, 1m→5m), parent candles out.
///
/// Children of one symbol are expected in window order, corrections at any
/// time; the parent watermark advances with child `close_time + 1`.
#[derive(Debug, Clone)]
pub struct CandleRollup {
    pub(super) child: Interval,
    pub(super) symbols: Symbols<CandleState>,
}

impl CandleRollup {
    /// A parent level producing `interval` candles from its child interval.
    ///
    /// # Errors
    /// [`EngineError::NotAParentInterval`] for 1s; [`EngineError::InvalidConfig`]
    /// if `config` does not validate.
    pub fn new(interval: Interval, config: LevelConfig) -> Result<Self, EngineError> {
        let child = interval
            .child()
            .ok_or(EngineError::NotAParentInterval(interval))?;
        Ok(CandleRollup {
            child,
            symbols: Symbols::new(Params::new(interval, config)?),
        })
    }

    /// The interval produced.
    pub fn interval(&self) -> Interval {
        self.symbols.params.interval
    }

    /// The interval consumed.
    pub fn child_interval(&self) -> Interval {
        self.child
    }

    /// The timing in use.
    pub fn config(&self) -> LevelConfig {
        self.symbols.params.config()
    }

    /// Adds one child candle (new, or a correction with a higher revision);
    /// pushes the parent candles it closes or corrects onto `out`.
    ///
    /// # Errors
    /// Input errors (dead-letter the record): [`EngineError::WrongChildInterval`],
    /// [`EngineError::InvalidCandle`] for a misaligned window, times out of
    /// range, low above high, or negative volumes. Nothing is changed then.
    pub fn on_candle(
        &mut self,
        candle: &Candle,
        out: &mut Vec<Candle>,
    ) -> Result<CandleOutcome, EngineError> {
        if candle.interval != self.child {
            return Err(EngineError::WrongChildInterval {
                key: candle.key(),
                expected: self.child,
                got: candle.interval,
            });
        }
        if let Some(reason) = candle_problem(candle) {
            return Err(EngineError::InvalidCandle {
                key: candle.key(),
                interval: candle.interval,
                open_time: candle.open_time,
                reason,
            });
        }
        let p = self.symbols.params;
        let new = || CandleState {
            core: SymbolCore::new(candle.exchange, &candle.symbol),
        };
        Ok(self
            .symbols
            .map
            .with(candle.exchange, &candle.symbol, new, |state| {
                let core = &mut state.core;
                let start = p.interval.window_start(candle.open_time);
                let held = core
                    .windows
                    .get(&start)
                    .and_then(|w| w.payload.held_revision(candle.open_time));
                if held.is_some_and(|held| candle.revision <= held) {
                    return Outcome::Duplicate;
                }
                let outcome = match core.placement(&p, start) {
                    Placement::TooLate => return Outcome::TooLate,
                    Placement::Open => {
                        core.open_window(start)
                            .upsert(ChildSlot::from_candle(candle));
                        Outcome::Accepted
                    }
                    Placement::Closed => {
                        let slot = ChildSlot::from_candle(candle);
                        core.apply_closed(&p, start, |w| w.upsert(slot), out);
                        Outcome::Corrected
                    }
                };
                core.advance_watermark(candle.close_time + 1);
                core.close_ready(&p, out);
                outcome
            }))
    }

    shared_level_methods!(CandleState);
}

pub(super) fn candle_problem(c: &Candle) -> Option<&'static str> {
    if !check_time(c.open_time) || c.open_time != c.interval.window_start(c.open_time) {
        Some("open_time is not an aligned window start in range")
    } else if c.close_time != c.open_time + c.interval.millis() - 1 {
        Some("close_time is not open_time + interval - 1")
    } else if !(c.low <= c.open && c.open <= c.high && c.low <= c.close && c.close <= c.high) {
        Some("open or close outside low..high")
    } else if c.volume < Decimal::ZERO
        || c.quote_volume < Decimal::ZERO
        || c.taker_buy_volume < Decimal::ZERO
        || c.taker_buy_quote_volume < Decimal::ZERO
        || c.taker_buy_volume > c.volume
        || c.taker_buy_quote_volume > c.quote_volume
    {
        Some("negative volume or taker volume above volume")
    } else if c.status == CandleStatus::Quiet && (c.trade_count > 0 || !c.volume.is_zero()) {
        Some("quiet candle with trades")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn parents_ignore_quiet_children() {
        // (name, children as (offset s, Some(ohlc) | None for quiet at `quiet_at`), quiet_at, expected ohlc, status)
        type Case<'a> = (
            &'a str,
            Vec<(i64, Option<[&'a str; 4]>)>,
            &'a str,
            [&'a str; 4],
            CandleStatus,
        );
        let cases: Vec<Case> = vec![
            (
                "quiet first child above the data would bend open and high",
                vec![
                    (0, None),
                    (1, Some(["5", "6", "4", "5"])),
                    (2, None),
                    (3, None),
                    (4, None),
                ],
                "9",
                ["5", "6", "4", "5"],
                CandleStatus::Complete,
            ),
            (
                "quiet last child below the data would bend low and close",
                vec![
                    (0, Some(["5", "7", "5", "6"])),
                    (1, Some(["6", "6", "5.5", "5.5"])),
                    (2, None),
                    (3, None),
                    (4, None),
                ],
                "1",
                ["5", "7", "5", "5.5"],
                CandleStatus::Complete,
            ),
            (
                "all quiet: quiet parent at the previous close",
                vec![(0, None), (1, None), (2, None), (3, None), (4, None)],
                "3",
                ["3", "3", "3", "3"],
                CandleStatus::Quiet,
            ),
        ];
        for (name, children, quiet_at, expected, status) in cases {
            let mut level =
                CandleRollup::new(Interval::S5, LevelConfig::CANDLES_DEFAULT).expect("level");
            let mut out = Vec::new();
            for (offset, ohlc) in children {
                let c = child(Interval::S1, T0 + offset * 1_000, ohlc, quiet_at, "1");
                assert_eq!(
                    level.on_candle(&c, &mut out).expect("candle"),
                    Outcome::Accepted,
                    "{name}"
                );
            }
            assert_eq!(out.len(), 1, "{name}: closes with its last child");
            let c = &out[0];
            assert_eq!(
                [c.open, c.high, c.low, c.close],
                expected.map(dec),
                "{name}"
            );
            assert_eq!(c.status, status, "{name}");
            assert_eq!(c.interval, Interval::S5);
        }
    }

    #[test]
    fn parent_sums_counts_and_takes_ids_from_data_children() {
        let mut level =
            CandleRollup::new(Interval::M1, LevelConfig::CANDLES_DEFAULT).expect("level");
        let mut out = Vec::new();
        for i in 0..12 {
            let ohlc = (i == 3 || i == 7).then_some(["1", "1", "1", "1"]);
            let c = child(Interval::S5, T0 + i * 5_000, ohlc, "1", "2");
            level.on_candle(&c, &mut out).expect("candle");
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].trade_count, 2);
        assert_eq!(out[0].volume, dec("4"));
        assert_eq!(out[0].first_trade_id, Some((T0 + 15_000).to_string()));
        assert_eq!(out[0].last_trade_id, Some((T0 + 35_000).to_string()));
    }

    #[test]
    fn child_revisions_not_newer_than_held_are_duplicates() {
        let mut level =
            CandleRollup::new(Interval::S5, LevelConfig::CANDLES_DEFAULT).expect("level");
        let mut out = Vec::new();
        let c0 = child(Interval::S1, T0, Some(["1", "2", "1", "2"]), "0", "1");
        let c1 = child(
            Interval::S1,
            T0 + 1_000,
            Some(["2", "2", "2", "2"]),
            "0",
            "1",
        );
        assert_eq!(level.on_candle(&c0, &mut out), Ok(Outcome::Accepted));
        assert_eq!(level.on_candle(&c0, &mut out), Ok(Outcome::Duplicate));
        assert_eq!(level.on_candle(&c1, &mut out), Ok(Outcome::Accepted));
        let c4 = child(Interval::S1, T0 + 4_000, None, "2", "0");
        level.on_candle(&c4, &mut out).expect("candle");
        assert_eq!(out.len(), 1);
        for (name, revision, volume, expected, emitted) in [
            ("replayed revision 0", 0, "1", Outcome::Duplicate, 0),
            ("revision 1", 1, "3", Outcome::Corrected, 1),
            ("revision 1 again", 1, "3", Outcome::Duplicate, 0),
        ] {
            out.clear();
            let mut c = child(Interval::S1, T0, Some(["1", "2", "1", "2"]), "0", volume);
            c.revision = revision;
            assert_eq!(level.on_candle(&c, &mut out), Ok(expected), "{name}");
            assert_eq!(out.len(), emitted, "{name}");
        }
        let wrong = child(Interval::M1, T0, None, "1", "0");
        assert!(matches!(
            level.on_candle(&wrong, &mut out),
            Err(EngineError::WrongChildInterval { .. })
        ));
    }
}

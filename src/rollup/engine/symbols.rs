//! Per-symbol state of a level: an allocation-free map with touched-key
//! tracking, and [`Symbols`], what both levels do the same way (watermarks,
//! gaps, finish, state, restore, remove, keys).

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Slot<S> {
    pub(super) state: S,
    pub(super) touched: bool,
}

#[derive(Debug, Clone)]
pub(super) struct SymbolMap<S> {
    /// Keyed `exchange:symbol`; foldhash's fast hasher: a lookup per trade
    /// is the engine's hottest path after the window update, and SipHash
    /// took a quarter of the engine's time (perf, `cargo bench --bench
    /// engine`). The keys are the exchanges' symbols, not chosen to collide.
    pub(super) states: HashMap<String, Slot<S>, foldhash::fast::RandomState>,
    pub(super) key_buf: String,
    pub(super) touched: Vec<String>,
}

impl<S> SymbolMap<S> {
    pub(super) fn new() -> Self {
        SymbolMap {
            states: HashMap::default(),
            key_buf: String::new(),
            touched: Vec::new(),
        }
    }

    /// Runs `f` on the state of `exchange:symbol` (created by `new` if absent),
    /// marking it touched. Looks up by a reused key buffer: no allocation unless
    /// the symbol is new or first touched since the last [`Self::take_touched`].
    pub(super) fn with<R>(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        new: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> R,
    ) -> R {
        self.key_buf.clear();
        self.key_buf.push_str(exchange.as_str());
        self.key_buf.push(':');
        self.key_buf.push_str(symbol);
        let key = self.key_buf.as_str();
        if let Some(slot) = self.states.get_mut(key) {
            if !slot.touched {
                slot.touched = true;
                self.touched.push(key.to_owned());
            }
            return f(&mut slot.state);
        }
        self.touched.push(key.to_owned());
        let slot = self.states.entry(key.to_owned()).or_insert(Slot {
            state: new(),
            touched: true,
        });
        f(&mut slot.state)
    }

    pub(super) fn take_touched(&mut self) -> Vec<String> {
        for key in &self.touched {
            if let Some(slot) = self.states.get_mut(key) {
                slot.touched = false;
            }
        }
        std::mem::take(&mut self.touched)
    }

    pub(super) fn get(&self, key: &str) -> Option<&S> {
        self.states.get(key).map(|slot| &slot.state)
    }

    pub(super) fn insert(&mut self, key: &str, state: S) {
        self.states.insert(
            key.to_owned(),
            Slot {
                state,
                touched: false,
            },
        );
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<S> {
        self.touched.retain(|k| k != key);
        self.states.remove(key).map(|slot| slot.state)
    }

    pub(super) fn sorted_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.states.keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut S> {
        self.states.get_mut(key).map(|slot| &mut slot.state)
    }
}

pub(super) fn check_restore_key(
    key: &str,
    exchange: Exchange,
    symbol: &str,
) -> Result<(), EngineError> {
    let own = feed_key(exchange, symbol);
    if own == key {
        Ok(())
    } else {
        Err(EngineError::KeyMismatch {
            key: key.to_owned(),
            state_key: own,
        })
    }
}

pub(super) fn checked_gap(
    exchange: Exchange,
    symbol: &str,
    from: Millis,
    to: Millis,
) -> Result<Gap, EngineError> {
    if from < to && check_time(from) && check_time(to) {
        Ok(Gap { from, to })
    } else {
        Err(EngineError::InvalidGap {
            key: feed_key(exchange, symbol),
            from,
            to,
        })
    }
}

/// What the two levels' per-symbol states have in common.
pub(super) trait LevelState {
    type Payload: WindowPayload;
    /// The state of a symbol seen for the first time.
    fn fresh(exchange: Exchange, symbol: &str) -> Self;
    fn core(&self) -> &SymbolCore<Self::Payload>;
    fn core_mut(&mut self) -> &mut SymbolCore<Self::Payload>;
    /// After the watermark advanced and the ready windows closed.
    fn after_watermark(&mut self, _p: &Params) {}
}

/// A level's timing and symbols, and what [`TradeRollup`] and
/// [`CandleRollup`] do alike: watermarks, gaps, finish, touched keys,
/// state, restore, remove.
#[derive(Debug, Clone)]
pub(super) struct Symbols<S> {
    pub(super) params: Params,
    pub(super) map: SymbolMap<S>,
}

impl<S: LevelState> Symbols<S> {
    pub(super) fn new(params: Params) -> Self {
        Self {
            params,
            map: SymbolMap::new(),
        }
    }

    /// Advances a symbol's watermark and closes what it makes ready.
    pub(super) fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        if !check_time(watermark.time) {
            return Err(EngineError::InvalidWatermark {
                key: feed_key(watermark.exchange, &watermark.symbol),
                time: watermark.time,
            });
        }
        let p = self.params;
        let (exchange, symbol) = (watermark.exchange, watermark.symbol.as_str());
        let new = || S::fresh(exchange, symbol);
        self.map.with(exchange, symbol, new, |state| {
            state.core_mut().advance_watermark(watermark.time);
            state.core_mut().close_ready(&p, out);
            state.after_watermark(&p);
        });
        Ok(())
    }

    /// Marks `[from, to)` of a symbol as a known feed gap.
    pub(super) fn mark_gap(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        from: Millis,
        to: Millis,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let gap = checked_gap(exchange, symbol, from, to)?;
        let p = self.params;
        let new = || S::fresh(exchange, symbol);
        self.map.with(exchange, symbol, new, |state| {
            state.core_mut().mark_gap(&p, gap, out)
        });
        Ok(())
    }

    /// Closes every open window holding data, symbol by symbol in key order.
    pub(super) fn finish(&mut self, out: &mut Vec<Candle>) {
        let p = self.params;
        for key in self.map.sorted_keys() {
            if let Some(state) = self.map.get_mut(&key) {
                state.core_mut().finish(&p, out);
            }
        }
    }

    pub(super) fn take_touched(&mut self) -> Vec<String> {
        self.map.take_touched()
    }

    pub(super) fn state(&self, key: &str) -> Option<&S> {
        self.map.get(key)
    }

    pub(super) fn restore(&mut self, key: &str, state: S) -> Result<(), EngineError> {
        check_restore_key(key, state.core().exchange, &state.core().symbol)?;
        self.map.insert(key, state);
        Ok(())
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<S> {
        self.map.remove(key)
    }

    pub(super) fn keys(&self) -> Vec<String> {
        self.map.sorted_keys()
    }
}

/// The public methods [`TradeRollup`] and [`CandleRollup`] share, written
/// once: each delegates to the level's [`Symbols`].
macro_rules! shared_level_methods {
    ($state:ty) => {
        /// Advances a symbol's watermark (a worker heartbeat, a forwarded
        /// watermark); closes the windows it allows, quiet ones included.
        ///
        /// # Errors
        /// [`EngineError::InvalidWatermark`] for a time outside `0..=MAX_EVENT_TIME`.
        pub fn on_watermark(
            &mut self,
            watermark: &Watermark,
            out: &mut Vec<Candle>,
        ) -> Result<(), EngineError> {
            self.symbols.on_watermark(watermark, out)
        }

        /// Marks `[from, to)` of a symbol as a known feed gap: the windows of
        /// this level overlapping it are `degraded`; those already closed and
        /// retained are re-emitted with `revision + 1`. (Usually the gap is
        /// marked at level 1 and flows up through degraded children.)
        ///
        /// # Errors
        /// [`EngineError::InvalidGap`] if `from >= to` or a bound is out of range.
        pub fn mark_gap(
            &mut self,
            exchange: Exchange,
            symbol: &str,
            from: Millis,
            to: Millis,
            out: &mut Vec<Candle>,
        ) -> Result<(), EngineError> {
            self.symbols.mark_gap(exchange, symbol, from, to, out)
        }

        /// End of input: closes every open window up to the last one holding
        /// data, symbol by symbol in key order.
        pub fn finish(&mut self, out: &mut Vec<Candle>) {
            self.symbols.finish(out)
        }

        /// The keys (`exchange:symbol`) whose state changed since the last
        /// call, in first-touch order. Write their [`Self::state`] to the
        /// changelog.
        pub fn take_touched(&mut self) -> Vec<String> {
            self.symbols.take_touched()
        }

        /// The state of one symbol.
        pub fn state(&self, key: &str) -> Option<&$state> {
            self.symbols.state(key)
        }

        /// Puts back a state read from the changelog (replacing any held).
        ///
        /// # Errors
        /// [`EngineError::KeyMismatch`] if `key` is not the state's `exchange:symbol`.
        pub fn restore(&mut self, key: &str, state: $state) -> Result<(), EngineError> {
            self.symbols.restore(key, state)
        }

        /// Drops a symbol's state (e.g. a delisted symbol), returning it.
        pub fn remove(&mut self, key: &str) -> Option<$state> {
            self.symbols.remove(key)
        }

        /// Every symbol key held, in key order.
        pub fn keys(&self) -> Vec<String> {
            self.symbols.keys()
        }
    };
}
pub(super) use shared_level_methods;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn states_round_trip_through_json_values() {
        let mut pipe = full_pipeline();
        let mut out = Vec::new();
        let mut text_id = trade(0, T0 + 7_000, "2", "1", Side::Buy);
        text_id.trade_id = "uuid-1".to_owned();
        for t in scripted_input().iter().take(40).chain([&text_id]) {
            pipe.on_trade(t, &mut out).expect("trade");
        }
        let key = "binance:XRPETH";
        let state = pipe.trade_rollup().state(key).expect("state");
        let value = serde_json::to_value(state).expect("to value");
        let back: TradeState = serde_json::from_value(value).expect("from value");
        assert_eq!(&back, state);
        let level = pipe.candle_rollup(Interval::S5).expect("level");
        let state = level.state(key).expect("state");
        let value = serde_json::to_value(state).expect("to value");
        let back: CandleState = serde_json::from_value(value).expect("from value");
        assert_eq!(&back, state);
    }

    #[test]
    fn restore_rejects_a_foreign_key() {
        let mut engine = level1();
        let mut out = Vec::new();
        engine
            .on_trade(&trade(1, T0, "1", "1", Side::Buy), &mut out)
            .expect("trade");
        let state = engine.state("binance:XRPETH").expect("state").clone();
        assert_eq!(state.key(), "binance:XRPETH");
        assert!(matches!(
            engine.restore("okx:XRPETH", state),
            Err(EngineError::KeyMismatch { .. })
        ));
        assert_eq!(engine.take_touched(), vec!["binance:XRPETH".to_owned()]);
        assert!(engine.take_touched().is_empty());
    }
}

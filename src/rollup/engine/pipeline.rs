//! Every level chained in-process ([`CandlePipeline`]), for `tickfetch import`.

use super::*;

/// Every level chained in-process: trades in, candles of the requested
/// intervals out, in emission order (a child candle before the parent candles it
/// closes). Runs only the levels up to the largest requested interval.
#[derive(Debug, Clone)]
pub struct CandlePipeline {
    pub(super) trades: TradeRollup,
    /// 5s, 1m, 5m, as far as needed; `parents[i]` consumes level `i`'s output.
    pub(super) parents: Vec<CandleRollup>,
    pub(super) wanted: [bool; 4],
    /// One reusable output buffer per level.
    pub(super) buffers: Vec<Vec<Candle>>,
    pub(super) too_late_candles: u64,
}

pub(super) fn interval_index(interval: Interval) -> usize {
    match interval {
        Interval::S1 => 0,
        Interval::S5 => 1,
        Interval::M1 => 2,
        Interval::M5 => 3,
    }
}

impl CandlePipeline {
    /// A pipeline yielding the candles of `intervals`.
    ///
    /// # Errors
    /// [`EngineError::NoIntervals`] if `intervals` is empty;
    /// [`EngineError::InvalidConfig`] if a level config does not validate.
    pub fn new(intervals: &[Interval], config: PipelineConfig) -> Result<Self, EngineError> {
        let top = intervals
            .iter()
            .copied()
            .max()
            .ok_or(EngineError::NoIntervals)?;
        let mut wanted = [false; 4];
        for &interval in intervals {
            wanted[interval_index(interval)] = true;
        }
        let mut parents = Vec::new();
        for interval in Interval::ALL.into_iter().skip(1).filter(|&i| i <= top) {
            parents.push(CandleRollup::new(interval, config.candles)?);
        }
        Ok(CandlePipeline {
            trades: TradeRollup::new(config.trades)?,
            buffers: vec![Vec::new(); parents.len() + 1],
            parents,
            wanted,
            too_late_candles: 0,
        })
    }

    /// Adds one trade; pushes the requested candles it produces onto `out`.
    ///
    /// # Errors
    /// As [`TradeRollup::on_trade`].
    pub fn on_trade(
        &mut self,
        trade: &Trade,
        out: &mut Vec<Candle>,
    ) -> Result<TradeOutcome, EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let outcome = self.trades.on_trade(trade, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        outcome
    }

    /// Advances a symbol's watermark at level 1.
    ///
    /// # Errors
    /// As [`TradeRollup::on_watermark`].
    pub fn on_watermark(
        &mut self,
        watermark: &Watermark,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let result = self.trades.on_watermark(watermark, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        result
    }

    /// Marks a feed gap at level 1; degraded candles flow up.
    ///
    /// # Errors
    /// As [`TradeRollup::mark_gap`].
    pub fn mark_gap(
        &mut self,
        exchange: Exchange,
        symbol: &str,
        from: Millis,
        to: Millis,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        let result = self
            .trades
            .mark_gap(exchange, symbol, from, to, &mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        result
    }

    /// End of input: closes every level in turn, each level's last candles
    /// flowing into the next before it finishes.
    ///
    /// # Errors
    /// Only if a level rejects a candle of the level below, which would be a bug.
    pub fn finish(&mut self, out: &mut Vec<Candle>) -> Result<(), EngineError> {
        let mut produced = std::mem::take(&mut self.buffers[0]);
        self.trades.finish(&mut produced);
        let forwarded = self.forward(0, &mut produced, out);
        self.buffers[0] = produced;
        forwarded?;
        for level in 0..self.parents.len() {
            let mut produced = std::mem::take(&mut self.buffers[level + 1]);
            self.parents[level].finish(&mut produced);
            let forwarded = self.forward(level + 1, &mut produced, out);
            self.buffers[level + 1] = produced;
            forwarded?;
        }
        Ok(())
    }

    /// Hands the candles `level` produced to `out` (if wanted) and to the next
    /// level, depth first.
    pub(super) fn forward(
        &mut self,
        level: usize,
        produced: &mut Vec<Candle>,
        out: &mut Vec<Candle>,
    ) -> Result<(), EngineError> {
        let mut result = Ok(());
        for candle in produced.drain(..) {
            if result.is_err() {
                continue;
            }
            let mut next = Vec::new();
            if level < self.parents.len() {
                next = std::mem::take(&mut self.buffers[level + 1]);
                match self.parents[level].on_candle(&candle, &mut next) {
                    Ok(Outcome::TooLate) => self.too_late_candles += 1,
                    Ok(_) => {}
                    Err(e) => result = Err(e),
                }
            }
            if self.wanted[interval_index(candle.interval)] {
                out.push(candle);
            }
            if level < self.parents.len() {
                if result.is_ok() {
                    result = self.forward(level + 1, &mut next, out);
                }
                next.clear();
                self.buffers[level + 1] = next;
            }
        }
        result
    }

    /// Child candles a parent level found too late (only with a parent
    /// retention shorter than the level below it).
    pub fn too_late_candles(&self) -> u64 {
        self.too_late_candles
    }

    /// Level 1.
    pub fn trade_rollup(&self) -> &TradeRollup {
        &self.trades
    }

    /// Level 1, mutable (e.g. to restore states).
    pub fn trade_rollup_mut(&mut self) -> &mut TradeRollup {
        &mut self.trades
    }

    /// The parent level producing `interval`, if the pipeline runs it.
    pub fn candle_rollup(&self, interval: Interval) -> Option<&CandleRollup> {
        self.parents
            .iter()
            .find(|level| level.interval() == interval)
    }

    /// The parent level producing `interval`, mutable.
    pub fn candle_rollup_mut(&mut self, interval: Interval) -> Option<&mut CandleRollup> {
        self.parents
            .iter_mut()
            .find(|level| level.interval() == interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::engine::testkit::*;

    #[test]
    fn late_trade_corrects_1s_and_every_parent_via_the_pipeline() {
        let mut pipe = full_pipeline();
        let mut out = Vec::new();
        for t in [
            trade(1, T0 + 10_500, "2", "1", Side::Buy),
            trade(2, T0 + 10_600, "3", "1", Side::Buy),
            trade(3, T0 + 330_000, "2", "1", Side::Buy),
        ] {
            pipe.on_trade(&t, &mut out).expect("trade");
        }
        let closed: Vec<Interval> = out
            .iter()
            .filter(|c| c.open_time == T0 || c.open_time == T0 + 10_000)
            .map(|c| c.interval)
            .collect();
        assert_eq!(
            closed,
            vec![Interval::S1, Interval::S5, Interval::M1, Interval::M5]
        );
        out.clear();
        // Earlier in the same second: becomes the open, the close stays.
        let outcome = pipe
            .on_trade(&trade(4, T0 + 10_200, "1", "1", Side::Sell), &mut out)
            .expect("trade");
        assert_eq!(outcome, Outcome::Corrected);
        let got: Vec<(Interval, Millis, u32, Decimal, Decimal, u64)> = out
            .iter()
            .map(|c| {
                (
                    c.interval,
                    c.open_time - T0,
                    c.revision,
                    c.open,
                    c.low,
                    c.trade_count,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Interval::S1, 10_000, 1, dec("1"), dec("1"), 3),
                (Interval::S5, 10_000, 1, dec("1"), dec("1"), 3),
                (Interval::M1, 0, 1, dec("1"), dec("1"), 3),
                (Interval::M5, 0, 1, dec("1"), dec("1"), 3),
            ]
        );
        assert!(out
            .iter()
            .all(|c| c.close == dec("3") && c.volume == dec("3")));
    }

    #[test]
    fn state_survives_serialize_and_restore_with_identical_output() {
        let input = scripted_input();
        let run = |restart_at: Option<usize>| -> Vec<u8> {
            let mut pipe = full_pipeline();
            let mut out = Vec::new();
            for (i, t) in input.iter().enumerate() {
                if Some(i) == restart_at {
                    let mut fresh = full_pipeline();
                    for key in pipe.trade_rollup_mut().take_touched() {
                        let state = pipe.trade_rollup().state(&key).expect("touched state");
                        let json = serde_json::to_vec(state).expect("serialize");
                        let back: TradeState = serde_json::from_slice(&json).expect("deserialize");
                        fresh
                            .trade_rollup_mut()
                            .restore(&key, back)
                            .expect("restore");
                    }
                    for interval in [Interval::S5, Interval::M1, Interval::M5] {
                        let level = pipe.candle_rollup_mut(interval).expect("level");
                        for key in level.take_touched() {
                            let state = level.state(&key).expect("touched state");
                            let json = serde_json::to_vec(state).expect("serialize");
                            let back: CandleState =
                                serde_json::from_slice(&json).expect("deserialize");
                            assert_eq!(&back, state);
                            fresh
                                .candle_rollup_mut(interval)
                                .expect("level")
                                .restore(&key, back)
                                .expect("restore");
                        }
                    }
                    pipe = fresh;
                }
                pipe.on_trade(t, &mut out).expect("trade");
            }
            pipe.finish(&mut out).expect("finish");
            out.iter()
                .flat_map(|c| {
                    let mut line = serde_json::to_vec(c).expect("json");
                    line.push(b'\n');
                    line
                })
                .collect()
        };
        let straight = run(None);
        assert!(straight.len() > 10_000);
        for restart in [1, 57, 200, 399] {
            assert_eq!(
                run(Some(restart)),
                straight,
                "restart before input {restart}"
            );
        }
    }
}

//! Deterministic trade generation: a seeded random walk of taker orders over
//! N symbols of one exchange.
//!
//! [`TradeGenerator`] is pure: given a seed it always yields the same
//! sequence of orders (symbol, side, price, fills, quantities, ids); only
//! `exchange_time` comes from the caller (the wall clock at send time,
//! clamped so that it never goes back per symbol). Prices and quantities are
//! exact decimals with fixed scales (2 and 4 places). Ids are monotonic and
//! contiguous per symbol.
//!
//! One order is one taker order of 1..=`max_fills` fills at one price:
//! every exchange gets the fills as raw trades (ids `n, n+1, …`), and
//! exchanges with an aggregated series get one more trade covering them
//! (Binance: its own aggregate id sequence; OKX: the id of the last fill).
//!
//! [`run`] drives a generator at a rate and publishes each tick's orders,
//! batched per symbol and series, to the exchange's book.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use super::market::{ExchangeBook, Series};
use super::{lock, SimError};
use crate::ingest::venues::instruments::Instrument;
use crate::ingest::venues::{self, receive_time_now};
use crate::model::{Exchange, Millis, Side, Trade};
use crate::shutdown::CancellationToken;

/// How often the rate loop wakes to publish what is due.
pub const GENERATE_TICK: Duration = Duration::from_millis(10);
/// At most this many orders per tick and exchange, so that a stalled process
/// does not answer with one huge burst.
pub const MAX_ORDERS_PER_TICK: u64 = 50_000;
/// Decimal places of generated prices.
pub const PRICE_SCALE: u32 = 2;
/// Decimal places of generated quantities.
pub const QUANTITY_SCALE: u32 = 4;

/// Base assets of generated symbols, in order; past these, `SIM<n>`.
const BASES: &[&str] = &[
    "BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "LINK", "AVAX", "TRX", "BCH", "ATOM",
    "NEAR", "FIL", "APT", "ARB", "OP", "UNI", "AAVE",
];

/// The exchange's own spelling of `base` against its usual quote:
/// `BTCUSDT`, `KRW-BTC`, `BTC-USD`, `BTCUSDT`, `BTC-USDT`.
pub fn symbol_for(exchange: Exchange, base: &str) -> String {
    match exchange {
        Exchange::Binance | Exchange::Bybit => format!("{base}USDT"),
        Exchange::Upbit => format!("KRW-{base}"),
        Exchange::Coinbase => format!("{base}-USD"),
        Exchange::Okx => format!("{base}-USDT"),
    }
}

/// The first `n` generated symbols of `exchange`.
pub fn generated_symbols(exchange: Exchange, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match BASES.get(i) {
            Some(base) => symbol_for(exchange, base),
            None => symbol_for(exchange, &format!("SIM{i}")),
        })
        .collect()
}

/// One generated taker order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedOrder {
    pub symbol: String,
    /// The fills, as raw trades.
    pub raw: Vec<Trade>,
    /// The aggregated trade, where the exchange has that series.
    pub aggregated: Option<Trade>,
}

#[derive(Debug, Clone)]
struct SymbolState {
    symbol: String,
    instrument: String,
    next_fill_id: u64,
    next_aggregate_id: u64,
    price_ticks: i64,
    last_time: Millis,
}

/// A seeded, deterministic order generator for one exchange.
#[derive(Debug, Clone)]
pub struct TradeGenerator {
    exchange: Exchange,
    rng: StdRng,
    symbols: Vec<SymbolState>,
    index: BTreeMap<String, usize>,
    max_fills: u32,
}

impl TradeGenerator {
    /// A generator over `symbols` (exchange symbols), seeded with `seed`
    /// (mixed with the exchange, so each exchange gets its own walk), naming
    /// them by the exchange's built-in rule.
    ///
    /// # Errors
    /// [`SimError::Config`] for no symbols, a symbol the exchange's built-in
    /// rule cannot map, or `max_fills` of 0.
    pub fn new(
        exchange: Exchange,
        symbols: &[String],
        seed: u64,
        max_fills: u32,
    ) -> Result<Self, SimError> {
        Self::with_instruments(exchange, symbols, &[], seed, max_fills)
    }

    /// As [`TradeGenerator::new`], naming the symbols of `instruments` as
    /// they say (symbols the built-in rule cannot split, say) and the others
    /// by the built-in rule.
    ///
    /// # Errors
    /// As [`TradeGenerator::new`].
    pub fn with_instruments(
        exchange: Exchange,
        symbols: &[String],
        instruments: &[Instrument],
        seed: u64,
        max_fills: u32,
    ) -> Result<Self, SimError> {
        if symbols.is_empty() {
            return Err(SimError::Config(format!(
                "{exchange}: no symbols to generate"
            )));
        }
        if max_fills == 0 {
            return Err(SimError::Config("max_fills must be at least 1".into()));
        }
        let exchange_salt = Exchange::ALL
            .iter()
            .position(|e| *e == exchange)
            .unwrap_or(0) as u64;
        let mut rng =
            StdRng::seed_from_u64(seed ^ (exchange_salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut states = Vec::with_capacity(symbols.len());
        let mut index = BTreeMap::new();
        for (i, symbol) in symbols.iter().enumerate() {
            // The simulator is the exchange: its names come from its own
            // configuration, never from a catalogue a client installed.
            let instrument = match instruments.iter().find(|i| i.symbol == *symbol) {
                Some(listed) => listed.name(),
                None => venues::venue(exchange)
                    .builtin_instrument(symbol)
                    .map_err(|e| SimError::Config(e.to_string()))?
                    .name(),
            };
            states.push(SymbolState {
                symbol: symbol.clone(),
                instrument,
                next_fill_id: rng.gen_range(1_000_000..100_000_000),
                next_aggregate_id: rng.gen_range(1_000_000..100_000_000),
                price_ticks: rng.gen_range(100..10_000_000),
                last_time: 0,
            });
            index.insert(symbol.clone(), i);
        }
        Ok(Self {
            exchange,
            rng,
            symbols: states,
            index,
            max_fills,
        })
    }

    /// `symbol`'s trade ids (fills and aggregates) go on from `first`
    /// instead of the seeded start.
    pub fn starting_ids_at(mut self, symbol: &str, first: u64) -> Self {
        if let Some(state) = self.symbols.iter_mut().find(|s| s.symbol == symbol) {
            state.next_fill_id = first;
            state.next_aggregate_id = first;
        }
        self
    }

    pub fn exchange(&self) -> Exchange {
        self.exchange
    }

    /// The symbols this generator trades.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.symbols.iter().map(|s| s.symbol.as_str())
    }

    /// The next order of a random symbol, at `now`.
    pub fn next_order(&mut self, now: Millis) -> GeneratedOrder {
        let i = self.rng.gen_range(0..self.symbols.len());
        self.order_at(i, now)
    }

    /// The next order of `symbol`, at `now`; `None` for a symbol this
    /// generator does not trade.
    pub fn next_order_of(&mut self, symbol: &str, now: Millis) -> Option<GeneratedOrder> {
        let i = *self.index.get(symbol)?;
        Some(self.order_at(i, now))
    }

    fn order_at(&mut self, i: usize, now: Millis) -> GeneratedOrder {
        let exchange = self.exchange;
        let fills = self.rng.gen_range(1..=self.max_fills);
        let side = if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let step: i64 = self.rng.gen_range(-5..=5);
        let quantities: Vec<i64> = (0..fills).map(|_| self.rng.gen_range(1..=50_000)).collect();
        let state = &mut self.symbols[i];
        state.price_ticks = (state.price_ticks + step).max(1);
        state.last_time = state.last_time.max(now);
        let price = Decimal::new(state.price_ticks, PRICE_SCALE);
        let time = state.last_time;
        let first_fill = state.next_fill_id;
        let raw: Vec<Trade> = quantities
            .iter()
            .enumerate()
            .map(|(k, units)| Trade {
                exchange,
                symbol: state.symbol.clone(),
                instrument: state.instrument.clone(),
                trade_id: (first_fill + k as u64).to_string(),
                price,
                quantity: Decimal::new(*units, QUANTITY_SCALE),
                side,
                exchange_time: time,
                receive_time: time,
                first_trade_id: None,
                last_trade_id: None,
            })
            .collect();
        let last_fill = first_fill + u64::from(fills) - 1;
        state.next_fill_id = last_fill + 1;
        let aggregated = match exchange {
            Exchange::Binance | Exchange::Okx => {
                let trade_id = if exchange == Exchange::Binance {
                    let id = state.next_aggregate_id;
                    state.next_aggregate_id += 1;
                    id
                } else {
                    last_fill
                };
                Some(Trade {
                    exchange,
                    symbol: state.symbol.clone(),
                    instrument: state.instrument.clone(),
                    trade_id: trade_id.to_string(),
                    price,
                    quantity: Decimal::new(quantities.iter().sum(), QUANTITY_SCALE),
                    side,
                    exchange_time: time,
                    receive_time: time,
                    first_trade_id: Some(first_fill),
                    last_trade_id: Some(last_fill),
                })
            }
            _ => None,
        };
        GeneratedOrder {
            symbol: state.symbol.clone(),
            raw,
            aggregated,
        }
    }
}

/// Publish `orders` to `book`, one batch per symbol and series, keeping each
/// symbol's order.
pub(crate) fn publish_orders(book: &ExchangeBook, orders: Vec<GeneratedOrder>) {
    let mut batches: BTreeMap<(String, usize), (Series, Vec<Trade>)> = BTreeMap::new();
    for order in orders {
        batches
            .entry((order.symbol.clone(), 0))
            .or_insert_with(|| (Series::Raw, Vec::new()))
            .1
            .extend(order.raw);
        if let Some(aggregated) = order.aggregated {
            batches
                .entry((order.symbol, 1))
                .or_insert_with(|| (Series::Aggregated, Vec::new()))
                .1
                .push(aggregated);
        }
    }
    for ((symbol, _), (series, trades)) in batches {
        book.publish(&symbol, series, trades);
    }
}

/// Generate `rate` orders per second (spread over the generator's symbols)
/// until cancelled.
///
/// # Errors
/// None today; the signature leaves room for a source that can fail.
pub(crate) async fn run(
    book: Arc<ExchangeBook>,
    generator: Arc<std::sync::Mutex<TradeGenerator>>,
    rate: f64,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    if rate <= 0.0 {
        cancel.cancelled().await;
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut emitted: u64 = 0;
    let mut tick = tokio::time::interval(GENERATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        let n = due.saturating_sub(emitted).min(MAX_ORDERS_PER_TICK);
        if n == 0 {
            continue;
        }
        // Catch up at most one tick's worth at a time; skip what cannot be
        // made so the rate does not build a backlog after a pause.
        emitted = if due - emitted > MAX_ORDERS_PER_TICK {
            due
        } else {
            emitted + n
        };
        let now = receive_time_now();
        let orders: Vec<GeneratedOrder> = {
            let mut generator = lock(&generator);
            (0..n).map(|_| generator.next_order(now)).collect()
        };
        publish_orders(&book, orders);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_symbols_map_through_the_adapters() {
        for exchange in Exchange::ALL {
            for symbol in generated_symbols(exchange, 25) {
                venues::instrument(exchange, &symbol)
                    .unwrap_or_else(|e| panic!("{exchange} {symbol}: {e}"));
            }
        }
        assert_eq!(generated_symbols(Exchange::Upbit, 1), ["KRW-BTC"]);
        assert_eq!(generated_symbols(Exchange::Binance, 21)[20], "SIM20USDT");
    }

    #[test]
    fn same_seed_same_orders_and_ids_are_contiguous() {
        let symbols = generated_symbols(Exchange::Binance, 3);
        let mut a = TradeGenerator::new(Exchange::Binance, &symbols, 7, 3).unwrap();
        let mut b = TradeGenerator::new(Exchange::Binance, &symbols, 7, 3).unwrap();
        let orders_a: Vec<GeneratedOrder> = (0..200).map(|i| a.next_order(1000 + i)).collect();
        let orders_b: Vec<GeneratedOrder> = (0..200).map(|i| b.next_order(1000 + i)).collect();
        assert_eq!(orders_a, orders_b);
        let mut c = TradeGenerator::new(Exchange::Binance, &symbols, 8, 3).unwrap();
        assert_ne!(orders_a[0], c.next_order(1000));

        let mut last: BTreeMap<String, (u64, u64, Millis)> = BTreeMap::new();
        for order in &orders_a {
            let agg = order.aggregated.as_ref().expect("binance aggregates");
            let first = order.raw[0].sequence().unwrap();
            let fills = order.raw.len() as u64;
            assert_eq!(agg.first_trade_id, Some(first));
            assert_eq!(agg.last_trade_id, Some(first + fills - 1));
            assert_eq!(agg.quantity, order.raw.iter().map(|t| t.quantity).sum());
            assert_eq!(agg.price.scale(), PRICE_SCALE);
            let aggregate_id = agg.sequence().unwrap();
            if let Some((prev_fill, prev_agg, prev_time)) = last.get(&order.symbol) {
                assert_eq!(first, prev_fill + 1, "fills contiguous");
                assert_eq!(aggregate_id, prev_agg + 1, "aggregate ids contiguous");
                assert!(agg.exchange_time >= *prev_time);
            }
            last.insert(
                order.symbol.clone(),
                (first + fills - 1, aggregate_id, agg.exchange_time),
            );
        }
    }

    #[test]
    fn okx_aggregates_end_at_the_last_fill_and_time_never_goes_back() {
        let symbols = generated_symbols(Exchange::Okx, 1);
        let mut g = TradeGenerator::new(Exchange::Okx, &symbols, 1, 3).unwrap();
        let first = g.next_order(5_000);
        let second = g.next_order(4_000);
        let agg = first.aggregated.unwrap();
        assert_eq!(agg.trade_id, first.raw.last().unwrap().trade_id);
        assert_eq!(second.raw[0].exchange_time, 5_000);
        assert!(TradeGenerator::new(Exchange::Okx, &["BTCUSDT".into()], 1, 1).is_err());
        let mut coinbase = TradeGenerator::new(
            Exchange::Coinbase,
            &generated_symbols(Exchange::Coinbase, 1),
            1,
            1,
        )
        .unwrap();
        let order = coinbase.next_order(1);
        assert!(order.aggregated.is_none());
        assert_eq!(order.raw.len(), 1);
    }
}

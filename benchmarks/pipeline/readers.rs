//! The reader of the run's topics: what it saw, and when.

use super::*;

/// What the reader saw.
#[derive(Default)]
pub(crate) struct Seen {
    /// Per feed key, its trades in topic order.
    pub(crate) trades: BTreeMap<String, Vec<Trade>>,
    /// Per trade: (exchange time, read − exchange time).
    pub(crate) trade_latency: Vec<(Millis, Millis)>,
    /// Per interval, per (key, open time), the highest revision read.
    pub(crate) candles: BTreeMap<Interval, HashMap<(String, Millis), Candle>>,
    /// Per interval, per first revision read: (window close, read − close).
    pub(crate) candle_latency: BTreeMap<Interval, Vec<(Millis, Millis)>>,
    pub(crate) gaps: usize,
}

/// Reads the trades topic and the four candle topics from the start until
/// `stop`.
pub(crate) fn read_topics(config: &Config, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let trades_topic = config.topics.trades();
    let candle_topics: HashMap<String, Interval> = STAGES
        .iter()
        .map(|i| (config.topics.candles(*i), *i))
        .collect();
    let topics: Vec<String> = std::iter::once(trades_topic.clone())
        .chain(candle_topics.keys().cloned())
        .collect();
    let consumer = common::reader_from_start(
        config,
        "bench-pipeline-reader",
        &topics,
        &common::LATENCY_READER,
    );
    let grace = config.rollup.grace_ms;
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let read = now_ms();
        let Ok(message) = message else {
            // Topics not created yet, and the like: read on.
            continue;
        };
        let envelope = Envelope::of(&message);
        let mut seen = seen.lock().expect("reader state");
        if message.topic() == trades_topic {
            match envelope.decode::<Trade>().expect("a trades-topic record") {
                Received::Data(trade) => {
                    seen.trade_latency
                        .push((trade.exchange_time, read - trade.exchange_time));
                    seen.trades.entry(trade.key()).or_default().push(trade);
                }
                Received::Gap(_) => seen.gaps += 1,
                Received::Watermark(_) => {}
            }
            continue;
        }
        let Some(&interval) = candle_topics.get(message.topic()) else {
            continue;
        };
        let Received::Data(candle) = envelope.decode::<Candle>().expect("a candle record") else {
            continue;
        };
        let close = candle.close_time + 1 + grace;
        let key = (candle.key(), candle.open_time);
        let by_window = seen.candles.entry(interval).or_default();
        let first = !by_window.contains_key(&key);
        match by_window.get(&key) {
            Some(held) if held.revision >= candle.revision => {}
            _ => {
                by_window.insert(key, candle);
            }
        }
        if first {
            seen.candle_latency
                .entry(interval)
                .or_default()
                .push((close, read - close));
        }
    }
}

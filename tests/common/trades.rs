//! The trades topic read back and checked against the simulator: every
//! simulated trade exactly once, in exchange order, per symbol.

use std::collections::BTreeMap;

use tickfetch::config::Config;
use tickfetch::exsim::SimHandle;
use tickfetch::ingest::venues::Feed;
use tickfetch::model::{Exchange, GapMarker, Trade, Watermark};
use tickfetch::wire::{KIND_GAP, KIND_HEADER, KIND_TRADE, KIND_WATERMARK};

/// The trades `feed` carried for `symbols`, by symbol, per the simulator.
pub fn expected(sim: &SimHandle, feed: Feed, symbols: &[String]) -> BTreeMap<String, Vec<Trade>> {
    symbols
        .iter()
        .map(|s| (s.clone(), sim.feed_history(feed, s).expect("history")))
        .collect()
}

/// What the trades topic holds, by key.
#[derive(Default)]
pub struct TopicContents {
    pub trades: BTreeMap<String, Vec<Trade>>,
    pub watermarks: BTreeMap<String, Vec<Watermark>>,
    pub gaps: Vec<GapMarker>,
    /// Per key, in topic order: `Ok(trade)` or `Err(watermark)`.
    pub sequence: BTreeMap<String, Vec<Result<Trade, Watermark>>>,
}

/// Every record of `topic`, read with assigned partitions (no group join),
/// until the partitions go quiet (`super::read_all`).
pub async fn read_topic(config: &Config, topic: &str, partitions: i32) -> Vec<super::Record> {
    super::read_all(&config.kafka, topic, partitions).await
}

pub async fn read_trades_topic(config: &Config) -> TopicContents {
    let records = read_topic(config, &config.topics.trades(), config.topics.partitions).await;
    contents_of(records)
}

/// The trades topic as readers see it: a record whose epoch is below one
/// already seen for its key (a late write of a fenced owner) is dropped.
/// Also returns how many were dropped.
pub async fn read_trades_topic_fenced(config: &Config) -> (TopicContents, usize) {
    let mut records = read_topic(config, &config.topics.trades(), config.topics.partitions).await;
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut highest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let before = records.len();
    records.retain(|r| {
        let epoch = r
            .headers
            .iter()
            .find(|(k, _)| k == tickfetch::wire::EPOCH_HEADER)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0);
        let seen = highest
            .entry(r.key.clone().unwrap_or_default())
            .or_insert(0);
        if epoch < *seen {
            return false;
        }
        *seen = epoch;
        true
    });
    let fenced = before - records.len();
    (contents_of(records), fenced)
}

fn contents_of(mut records: Vec<super::Record>) -> TopicContents {
    records.sort_by_key(|r| (r.partition, r.offset));
    if std::env::var("INGEST_TEST_DEBUG").is_ok() {
        for r in &records {
            eprintln!(
                "p{} @{} key={:?} {}",
                r.partition,
                r.offset,
                r.key.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(&r.payload)
                    .chars()
                    .take(80)
                    .collect::<String>()
            );
        }
    }
    let mut contents = TopicContents::default();
    for record in records {
        let kind = record
            .headers
            .iter()
            .find(|(k, _)| k == KIND_HEADER)
            .map(|(_, v)| v.clone());
        match kind.as_deref() {
            Some(KIND_TRADE) | None => {
                let trade: Trade = serde_json::from_slice(&record.payload).expect("a trade");
                contents
                    .sequence
                    .entry(trade.key())
                    .or_default()
                    .push(Ok(trade.clone()));
                contents.trades.entry(trade.key()).or_default().push(trade);
            }
            Some(KIND_WATERMARK) => {
                let w: Watermark = serde_json::from_slice(&record.payload).expect("a watermark");
                let key = format!("{}:{}", w.exchange, w.symbol);
                contents
                    .sequence
                    .entry(key.clone())
                    .or_default()
                    .push(Err(w.clone()));
                contents.watermarks.entry(key).or_default().push(w);
            }
            Some(KIND_GAP) => {
                contents
                    .gaps
                    .push(serde_json::from_slice(&record.payload).expect("a gap marker"));
            }
            Some(other) => panic!("unexpected record kind {other:?}"),
        }
    }
    contents
}

/// The identity and content of a trade, without the receive time. A raw-id
/// range of one trade equal to its id says nothing more than no range (OKX's
/// websocket sends `count: 1`, its REST rows no count).
pub fn essence(t: &Trade) -> (String, String, String, i64, Option<u64>, Option<u64>) {
    let single = t.first_trade_id == t.last_trade_id && t.first_trade_id == t.sequence();
    let (first, last) = if single {
        (None, None)
    } else {
        (t.first_trade_id, t.last_trade_id)
    };
    (
        t.trade_id.clone(),
        t.price.to_string(),
        t.quantity.to_string(),
        t.exchange_time,
        first,
        last,
    )
}

/// Every expected trade exactly once, in exchange order, per symbol; and
/// watermarks that never go backwards nor pass a later trade.
pub fn assert_exactly_once(
    contents: &TopicContents,
    exchange: Exchange,
    expected: &BTreeMap<String, Vec<Trade>>,
) {
    assert_trades_exactly_once(contents, exchange, expected);
    for symbol in expected.keys() {
        let key = format!("{exchange}:{symbol}");
        if let Some(marks) = contents.watermarks.get(&key) {
            for pair in marks.windows(2) {
                assert!(pair[0].time <= pair[1].time, "{key}: watermark went back");
            }
        }
    }
}

/// Every expected trade exactly once, in exchange order, per symbol.
pub fn assert_trades_exactly_once(
    contents: &TopicContents,
    exchange: Exchange,
    expected: &BTreeMap<String, Vec<Trade>>,
) {
    for (symbol, want) in expected {
        let key = format!("{exchange}:{symbol}");
        let got = contents.trades.get(&key).cloned().unwrap_or_default();
        let got: Vec<_> = got.iter().map(essence).collect();
        let want: Vec<_> = want.iter().map(essence).collect();
        if got != want {
            let missing: Vec<_> = want.iter().filter(|t| !got.contains(t)).collect();
            let extra: Vec<_> = got.iter().filter(|t| !want.contains(t)).collect();
            let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
            let mut seen = std::collections::BTreeSet::new();
            let twice: Vec<_> = got.iter().filter(|t| !seen.insert(*t)).collect();
            panic!(
                "{key}: published {} trades, simulated {}\n missing: {missing:?}\n extra: {extra:?}\n twice: {twice:?}\n first difference at {first_diff:?}",
                got.len(),
                want.len()
            );
        }
    }
}

//! MongoDB writes of the sink: documents, indexes, and the guarded bulk upsert.
//!
//! Candles go to one collection per interval (`candles_1s` … `candles_5m`),
//! trades to `trades`. Every document has a deterministic `_id`
//! (`exchange:symbol:interval:open_time` for candles, `exchange:symbol:trade_id`
//! for trades), so a replayed record lands on the same document.
//!
//! The guard: a candle of revision `r` written under fencing epoch `e`
//! (`coord::epoch`) is written with
//! `update({_id, revision: {$lt: r}, epoch: {$not: {$gt: e}}}, replacement, upsert)`.
//! When the stored document already has revision ≥ r, or was written under a
//! higher epoch (so this write comes from a fenced owner), the filter matches
//! nothing, the upsert tries to insert the same `_id` and the server answers
//! duplicate key (11000): the write is dropped and counted. A lower revision
//! never replaces a higher one, and a lower epoch never replaces a higher one.
//! Documents store their `epoch` (0 for records without one; `$not $gt` also
//! matches documents stored before epochs existed). Trades are
//! insert-if-absent (`$setOnInsert`).
//!
//! Writes use the plain `update` command with `ordered: false` and write concern
//! `majority` + journal, which every MongoDB since 3.6 (and SecantusDB) speaks.

use std::collections::HashMap;

use mongodb::bson::{doc, Bson, Document};
use mongodb::{Database, IndexModel};

use crate::coord::epoch::Epoch;
use crate::model::{Candle, Interval, Trade};

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Error codes that retrying cannot fix: the document is refused as it is.
const PERMANENT_CODES: &[i32] = &[2, 9, 10334, 17419, 17280, 16837, 52, 55, 56, 57];

/// Errors of MongoDB writes.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("mongodb answered an unexpected reply: {0}")]
    Reply(String),
}

impl WriteError {
    /// Whether MongoDB refused who we are (bad credentials, or none where
    /// they are required): retrying with the same settings cannot help.
    pub fn is_refusal(&self) -> bool {
        let WriteError::Mongo(e) = self else {
            return false;
        };
        match e.kind.as_ref() {
            mongodb::error::ErrorKind::Authentication { .. } => true,
            // Unauthorized, AuthenticationFailed.
            mongodb::error::ErrorKind::Command(c) => matches!(c.code, 13 | 18),
            _ => false,
        }
    }
}

/// The collection of an interval's candles.
pub fn candle_collection(interval: Interval) -> String {
    format!("candles_{interval}")
}

/// The collection of trades.
pub const TRADES_COLLECTION: &str = "trades";

/// A document ready to write.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub collection: String,
    pub id: String,
    /// Candle revision; `None` for trades (insert-if-absent).
    pub revision: Option<u32>,
    /// The writer's fencing epoch (also in `document` as `epoch`).
    pub epoch: Epoch,
    pub document: Document,
}

impl PendingWrite {
    /// A candle write under `epoch`.
    pub fn candle(candle: &Candle, epoch: Epoch) -> Self {
        let mut document = candle_document(candle);
        document.insert("epoch", epoch.as_i64());
        Self {
            collection: candle_collection(candle.interval),
            id: candle.window_id(),
            revision: Some(candle.revision),
            epoch,
            document,
        }
    }

    /// A trade write under `epoch`.
    pub fn trade(trade: &Trade, epoch: Epoch) -> Self {
        let mut document = trade_document(trade);
        document.insert("epoch", epoch.as_i64());
        Self {
            collection: TRADES_COLLECTION.into(),
            id: trade_id(trade),
            revision: None,
            epoch,
            document,
        }
    }

    /// Whether this write, applied after `held`, replaces it under the guard
    /// (higher revision, and an epoch not lower). Trades never replace.
    pub fn replaces(&self, held: &PendingWrite) -> bool {
        match (self.revision, held.revision) {
            (Some(mine), Some(theirs)) => mine > theirs && self.epoch >= held.epoch,
            _ => false,
        }
    }
}

/// The `_id` of a trade document.
pub fn trade_id(trade: &Trade) -> String {
    format!("{}:{}:{}", trade.exchange, trade.symbol, trade.trade_id)
}

/// The stored form of a candle: the wire fields, decimals as strings (exact),
/// times as epoch ms, plus `time` as a BSON date for date queries.
pub fn candle_document(candle: &Candle) -> Document {
    doc! {
        "_id": candle.window_id(),
        "exchange": candle.exchange.as_str(),
        "symbol": &candle.symbol,
        "interval": candle.interval.as_str(),
        "open_time": candle.open_time,
        "close_time": candle.close_time,
        "time": mongodb::bson::DateTime::from_millis(candle.open_time),
        "open": candle.open.to_string(),
        "high": candle.high.to_string(),
        "low": candle.low.to_string(),
        "close": candle.close.to_string(),
        "volume": candle.volume.to_string(),
        "quote_volume": candle.quote_volume.to_string(),
        "trade_count": i64::try_from(candle.trade_count).unwrap_or(i64::MAX),
        "taker_buy_volume": candle.taker_buy_volume.to_string(),
        "taker_buy_quote_volume": candle.taker_buy_quote_volume.to_string(),
        "first_trade_id": candle.first_trade_id.clone().map_or(Bson::Null, Bson::String),
        "last_trade_id": candle.last_trade_id.clone().map_or(Bson::Null, Bson::String),
        "status": serde_json::to_value(candle.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        "revision": i64::from(candle.revision),
    }
}

/// Why a stored document is not a candle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("{field}: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    /// A field missing, unknown or out of range for a candle.
    #[error("{0}")]
    NotACandle(String),
}

/// Reads a stored candle document back into the wire model.
///
/// # Errors
/// A document that lacks a field or holds a value of the wrong type.
pub fn candle_from_document(document: &Document) -> Result<Candle, DocumentError> {
    let mut value = serde_json::Map::new();
    for (key, bson) in document {
        let json = match key.as_str() {
            "_id" | "time" | "meta" | "epoch" => continue,
            "open_time" | "close_time" | "trade_count" | "revision" => match bson {
                Bson::Int64(n) => serde_json::Value::from(*n),
                Bson::Int32(n) => serde_json::Value::from(*n),
                other => {
                    return Err(DocumentError::WrongType {
                        field: key.clone(),
                        expected: "an integer",
                        found: other.to_string(),
                    })
                }
            },
            _ => match bson {
                Bson::String(s) => serde_json::Value::String(s.clone()),
                Bson::Null => serde_json::Value::Null,
                other => {
                    return Err(DocumentError::WrongType {
                        field: key.clone(),
                        expected: "a string",
                        found: other.to_string(),
                    })
                }
            },
        };
        value.insert(key.clone(), json);
    }
    serde_json::from_value(serde_json::Value::Object(value))
        .map_err(|e| DocumentError::NotACandle(e.to_string()))
}

/// The stored form of a trade.
pub fn trade_document(trade: &Trade) -> Document {
    let mut document = doc! {
        "_id": trade_id(trade),
        "exchange": trade.exchange.as_str(),
        "symbol": &trade.symbol,
        "instrument": &trade.instrument,
        "trade_id": &trade.trade_id,
        "price": trade.price.to_string(),
        "quantity": trade.quantity.to_string(),
        "side": serde_json::to_value(trade.side).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        "exchange_time": trade.exchange_time,
        "receive_time": trade.receive_time,
        "time": mongodb::bson::DateTime::from_millis(trade.exchange_time),
    };
    if let (Some(first), Some(last)) = (trade.first_trade_id, trade.last_trade_id) {
        document.insert("first_trade_id", i64::try_from(first).unwrap_or(i64::MAX));
        document.insert("last_trade_id", i64::try_from(last).unwrap_or(i64::MAX));
    }
    document
}

/// MongoDB's "namespace exists" error code.
const NAMESPACE_EXISTS: i32 = 48;

/// How documents are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Plain collections, one document per window (or trade), guarded upserts.
    Upsert,
    /// Time-series collections (`timeField: time`, `metaField: meta`): one
    /// document per candle revision, inserted; readers keep the highest revision.
    TimeSeries,
}

/// Creates the collections (as time-series collections in that mode) and the
/// query indexes (symbol + time range) of what is written.
///
/// # Errors
/// When MongoDB refuses or cannot be reached.
pub async fn ensure_collections(
    db: &Database,
    intervals: &[Interval],
    trades: bool,
    storage: Storage,
) -> Result<(), WriteError> {
    if storage == Storage::TimeSeries {
        let mut names: Vec<String> = intervals.iter().map(|i| candle_collection(*i)).collect();
        if trades {
            names.push(TRADES_COLLECTION.to_string());
        }
        for name in names {
            let options = mongodb::options::TimeseriesOptions::builder()
                .time_field("time".to_string())
                .meta_field(Some("meta".to_string()))
                .granularity(Some(mongodb::options::TimeseriesGranularity::Seconds))
                .build();
            match db.create_collection(&name).timeseries(options).await {
                Ok(()) => {}
                Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == NAMESPACE_EXISTS) =>
                    {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ensure_indexes(db, intervals, trades).await
}

/// Turns a write into its time-series form: `_id` gets the revision (so a
/// replay of the same revision is refused where `_id` is unique) and the
/// series key goes to `meta`.
pub fn time_series_form(mut write: PendingWrite) -> PendingWrite {
    let meta = doc! {
        "exchange": write.document.get_str("exchange").unwrap_or_default(),
        "symbol": write.document.get_str("symbol").unwrap_or_default(),
        "interval": write.document.get_str("interval").unwrap_or("trade"),
    };
    if let Some(revision) = write.revision {
        write.id = format!("{}:r{revision}", write.id);
        write.document.insert("_id", write.id.clone());
    }
    write.document.insert("meta", meta);
    write.revision = None;
    write
}

async fn ensure_indexes(
    db: &Database,
    intervals: &[Interval],
    trades: bool,
) -> Result<(), WriteError> {
    for interval in intervals {
        db.collection::<Document>(&candle_collection(*interval))
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "exchange": 1, "symbol": 1, "open_time": 1 })
                    .build(),
            )
            .await?;
    }
    if trades {
        db.collection::<Document>(TRADES_COLLECTION)
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "exchange": 1, "symbol": 1, "exchange_time": 1 })
                    .build(),
            )
            .await?;
    }
    Ok(())
}

/// What one batch write did.
#[derive(Debug, Default, Clone)]
pub struct BatchOutcome {
    /// Documents inserted or replaced.
    pub written: u64,
    /// Writes the guard refused (an equal or higher revision, or a higher
    /// epoch, was stored, or the trade was there already).
    pub stale: u64,
    /// Writes the server refuses for good, with the reason (dead-lettered).
    pub rejected: Vec<(PendingWrite, String)>,
}

/// Keeps one write per `_id`: what applying them in order under the guard
/// would leave (a batch may hold several revisions of one window, and an
/// unordered write must not race them).
pub fn collapse(writes: Vec<PendingWrite>) -> Vec<PendingWrite> {
    let mut by_id: HashMap<(String, String), PendingWrite> = HashMap::with_capacity(writes.len());
    for write in writes {
        let key = (write.collection.clone(), write.id.clone());
        match by_id.get(&key) {
            Some(held) if !write.replaces(held) => {}
            _ => {
                by_id.insert(key, write);
            }
        }
    }
    let mut out: Vec<PendingWrite> = by_id.into_values().collect();
    out.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
    out
}

/// Writes a batch, collection by collection, unordered, durable
/// (`w: majority, j: true`) before returning.
///
/// # Errors
/// A connection or server failure of the whole command (retry the batch: the
/// writes are idempotent). Per-document refusals come back in
/// [`BatchOutcome::rejected`] instead.
pub async fn write_batch(
    db: &Database,
    writes: Vec<PendingWrite>,
    storage: Storage,
) -> Result<BatchOutcome, WriteError> {
    let mut outcome = BatchOutcome::default();
    let mut by_collection: HashMap<String, Vec<PendingWrite>> = HashMap::new();
    let writes: Vec<PendingWrite> = match storage {
        Storage::Upsert => collapse(writes),
        Storage::TimeSeries => collapse(writes).into_iter().map(time_series_form).collect(),
    };
    for write in writes {
        by_collection
            .entry(write.collection.clone())
            .or_default()
            .push(write);
    }
    let mut names: Vec<String> = by_collection.keys().cloned().collect();
    names.sort();
    for name in names {
        let writes = by_collection.remove(&name).unwrap_or_default();
        if storage == Storage::TimeSeries {
            let documents: Vec<Document> = writes.iter().map(|w| w.document.clone()).collect();
            let reply = db
                .run_command(doc! {
                    "insert": &name,
                    "documents": documents,
                    "ordered": false,
                    "writeConcern": { "w": "majority", "j": true },
                })
                .await?;
            tally(&reply, &writes, &mut outcome)?;
            continue;
        }
        let updates: Vec<Document> = writes
            .iter()
            .map(|w| match w.revision {
                Some(revision) => doc! {
                    "q": {
                        "_id": &w.id,
                        "revision": { "$lt": i64::from(revision) },
                        "epoch": { "$not": { "$gt": w.epoch.as_i64() } },
                    },
                    "u": w.document.clone(),
                    "upsert": true,
                },
                None => doc! {
                    "q": { "_id": &w.id },
                    "u": { "$setOnInsert": w.document.clone() },
                    "upsert": true,
                },
            })
            .collect();
        let reply = db
            .run_command(doc! {
                "update": &name,
                "updates": updates,
                "ordered": false,
                "writeConcern": { "w": "majority", "j": true },
            })
            .await?;
        tally(&reply, &writes, &mut outcome)?;
    }
    Ok(outcome)
}

/// Adds one write command's reply to `outcome`: duplicate keys are stale
/// writes, permanent refusals are rejected; anything else fails the batch.
fn tally(
    reply: &Document,
    writes: &[PendingWrite],
    outcome: &mut BatchOutcome,
) -> Result<(), WriteError> {
    let n = number(reply.get("n")).unwrap_or(0);
    let mut duplicate = 0;
    let mut transient = None;
    if let Ok(errors) = reply.get_array("writeErrors") {
        for error in errors {
            let Some(error) = error.as_document() else {
                continue;
            };
            let index = number(error.get("index")).unwrap_or(-1);
            let code = number(error.get("code")).unwrap_or(0) as i32;
            let message = error.get_str("errmsg").unwrap_or("").to_string();
            let write = usize::try_from(index).ok().and_then(|i| writes.get(i));
            match (code, write) {
                (DUPLICATE_KEY, _) => duplicate += 1,
                (code, Some(write)) if PERMANENT_CODES.contains(&code) => outcome
                    .rejected
                    .push((write.clone(), format!("mongodb error {code}: {message}"))),
                (code, _) => transient = Some(format!("write error {code}: {message}")),
            }
        }
    }
    if let Some(message) = transient {
        return Err(WriteError::Reply(message));
    }
    if let Ok(concern) = reply.get_document("writeConcernError") {
        return Err(WriteError::Reply(format!("write concern error: {concern}")));
    }
    outcome.written += u64::try_from(n).unwrap_or(0);
    outcome.stale += duplicate;
    Ok(())
}

fn number(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CandleStatus, Exchange};
    use rust_decimal::Decimal;

    fn candle(revision: u32, close: i64) -> Candle {
        Candle {
            exchange: Exchange::Binance,
            symbol: "XRPETH".into(),
            interval: Interval::M1,
            open_time: 60_000,
            close_time: 119_999,
            open: Decimal::new(1, 0),
            high: Decimal::new(2, 0),
            low: Decimal::new(1, 0),
            close: Decimal::new(close, 0),
            volume: Decimal::new(15, 1),
            quote_volume: Decimal::new(3, 0),
            trade_count: 2,
            taker_buy_volume: Decimal::ZERO,
            taker_buy_quote_volume: Decimal::ZERO,
            first_trade_id: Some("10".into()),
            last_trade_id: None,
            status: CandleStatus::Complete,
            revision,
        }
    }

    #[test]
    fn candle_document_round_trips() {
        let original = candle(3, 2);
        let document = candle_document(&original);
        assert_eq!(
            document.get_str("_id").ok(),
            Some("binance:XRPETH:1m:60000")
        );
        assert_eq!(candle_from_document(&document), Ok(original));
    }

    #[test]
    fn collapse_keeps_the_highest_revision_per_id() {
        let write =
            |revision: u32, close: i64| PendingWrite::candle(&candle(revision, close), Epoch(5));
        let kept = collapse(vec![write(1, 1), write(2, 2), write(0, 3)]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].revision, Some(2));
    }

    #[test]
    fn collapse_never_lets_a_lower_epoch_replace_a_higher_one() {
        let write =
            |revision: u32, epoch: u64| PendingWrite::candle(&candle(revision, 1), Epoch(epoch));
        // A fenced owner's higher revision does not replace the newer owner's.
        let kept = collapse(vec![write(0, 20), write(1, 10)]);
        assert_eq!((kept[0].revision, kept[0].epoch), (Some(0), Epoch(20)));
        // The newer owner's correction does.
        let kept = collapse(vec![write(0, 10), write(1, 20), write(2, 10)]);
        assert_eq!((kept[0].revision, kept[0].epoch), (Some(1), Epoch(20)));
        assert_eq!(kept[0].document.get_i64("epoch").ok(), Some(20));
    }
}

//! Reading stored candles back: the query behind `tickfetch candles`.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Database;

use crate::model::{Candle, Exchange, Interval, Millis};
use crate::sink::writer::{candle_collection, candle_from_document, DocumentError};

/// Which candles to read.
#[derive(Debug, Clone)]
pub struct CandleQuery {
    pub exchange: Exchange,
    /// Every symbol when `None`.
    pub symbol: Option<String>,
    pub interval: Interval,
    /// Inclusive start of `open_time`.
    pub from: Millis,
    /// Exclusive end of `open_time`.
    pub to: Millis,
}

/// Errors reading candles.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("stored document {id} is not a candle: {reason}")]
    BadDocument { id: String, reason: DocumentError },
}

/// A time that is neither epoch milliseconds nor RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is neither epoch milliseconds nor RFC 3339: {source}")]
pub struct TimeError {
    pub text: String,
    #[source]
    pub source: chrono::ParseError,
}

/// Stored candles matching `query`, ordered by symbol then open time.
///
/// # Errors
/// MongoDB unreachable, or a stored document that is not a candle.
pub async fn candles(db: &Database, query: &CandleQuery) -> Result<Vec<Candle>, QueryError> {
    let mut filter = doc! {
        "exchange": query.exchange.as_str(),
        "open_time": { "$gte": query.from, "$lt": query.to },
    };
    if let Some(symbol) = &query.symbol {
        filter.insert("symbol", symbol);
    }
    let cursor = db
        .collection::<Document>(&candle_collection(query.interval))
        .find(filter)
        .sort(doc! { "symbol": 1, "open_time": 1 })
        .await?;
    let documents: Vec<Document> = cursor.try_collect().await?;
    let mut candles: Vec<(i64, Candle)> = Vec::with_capacity(documents.len());
    for document in &documents {
        let candle = candle_from_document(document).map_err(|reason| QueryError::BadDocument {
            id: document.get_str("_id").unwrap_or("?").to_string(),
            reason,
        })?;
        // Documents written before epochs existed, or by writers without one,
        // have epoch 0.
        let epoch = document.get_i64("epoch").unwrap_or(0);
        // Time-series storage keeps every revision: keep, per window, the
        // highest revision of the highest epoch (a fenced owner's late
        // revision never wins over a newer owner's).
        match candles.last_mut() {
            Some((held_epoch, held))
                if held.symbol == candle.symbol && held.open_time == candle.open_time =>
            {
                if (epoch, candle.revision) > (*held_epoch, held.revision) {
                    *held_epoch = epoch;
                    *held = candle;
                }
            }
            _ => candles.push((epoch, candle)),
        }
    }
    let candles = candles.into_iter().map(|(_, candle)| candle).collect();
    Ok(candles)
}

/// Parses a time given as epoch milliseconds or RFC 3339.
///
/// # Errors
/// Text that is neither.
pub fn parse_time(text: &str) -> Result<Millis, TimeError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|source| TimeError {
            text: text.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_ms_or_rfc3339() {
        for (text, expected) in [
            ("1570752000000", Ok(1_570_752_000_000)),
            ("2019-10-11T00:00:00Z", Ok(1_570_752_000_000)),
            ("2019-10-11T02:00:00+02:00", Ok(1_570_752_000_000)),
        ] {
            assert_eq!(parse_time(text), expected, "{text}");
        }
        assert!(parse_time("yesterday").is_err());
    }
}

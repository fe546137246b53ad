//! Dead letters: records that cannot be used, kept with the reason.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureRecord};

use super::headers::{DEAD_LETTER_REASON, DEAD_LETTER_SOURCE};

/// A record for the dead-letter topic: the original bytes, unchanged, with
/// why and where from.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The original payload (`None` when the record had none).
    pub payload: Option<&'a [u8]>,
    /// The key (the original record's, or the source's); none: unkeyed.
    pub key: Option<&'a [u8]>,
    pub reason: &'a str,
    pub source: &'a str,
}

impl<'a> DeadLetter<'a> {
    fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: DEAD_LETTER_REASON,
                value: Some(self.reason),
            })
            .insert(Header {
                key: DEAD_LETTER_SOURCE,
                value: Some(self.source),
            })
    }

    /// The record for a threaded or base producer.
    pub fn record(&self, topic: &'a str) -> BaseRecord<'a, [u8], [u8]> {
        let mut record = BaseRecord::to(topic).headers(self.headers());
        if let Some(key) = self.key {
            record = record.key(key);
        }
        if let Some(payload) = self.payload {
            record = record.payload(payload);
        }
        record
    }

    /// The record for a future producer.
    pub fn future_record(&self, topic: &'a str) -> FutureRecord<'a, [u8], [u8]> {
        let mut record = FutureRecord::to(topic).headers(self.headers());
        if let Some(key) = self.key {
            record = record.key(key);
        }
        if let Some(payload) = self.payload {
            record = record.payload(payload);
        }
        record
    }
}

/// `topic[partition]@offset`, the source of a dead letter made from a
/// consumed record.
pub fn record_source(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}[{partition}]@{offset}")
}

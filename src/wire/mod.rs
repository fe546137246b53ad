//! The record envelope between stages: the one place that knows how a
//! record on a tickfetch topic is keyed, which headers it carries and how
//! its payload is encoded. Producers and readers call it; nothing else
//! builds headers or payloads.
//!
//! ```text
//! record on {prefix}.trades / {prefix}.candles.{interval}
//!   key      exchange:symbol                        (feed_key)
//!   header   tickfetch-kind   trade | watermark | gap (candles: none)
//!   header   tickfetch-epoch  writer's fencing epoch, decimal (absent: 0)
//!   payload  JSON of Trade | Watermark | GapMarker | Candle
//!
//! record on {prefix}.deadletter
//!   key      where it came from (or the original key)
//!   header   tickfetch-reason why it could not be used
//!   header   tickfetch-source where it came from
//!   payload  the original bytes, unchanged (none when it had none)
//! ```
//!
//! - [`headers`]: header names, [`Kind`], [`EpochStamp`] (the epoch header,
//!   its text made once per epoch) and [`read_epoch`].
//! - [`codec`]: [`Encoder`] turns a [`Body`] into key, payload and headers;
//!   [`Envelope`] reads a consumed record back into a [`Received`] body.
//! - [`dead_letter`]: the dead-letter record.
//! - [`send`]: [`send_waiting`], producing with back-pressure on a full queue.
//!
//! A record whose payload is missing or does not serialise is a
//! [`WireError`], never an empty payload.

pub mod codec;
pub mod dead_letter;
pub mod headers;
pub mod send;

pub use codec::{feed_key, Body, DataRecord, Encoded, Encoder, Envelope, Received};
pub use dead_letter::{record_source, DeadLetter};
pub use headers::{
    read_epoch, EpochStamp, Kind, DEAD_LETTER_REASON, DEAD_LETTER_SOURCE, EPOCH_HEADER, KIND_GAP,
    KIND_HEADER, KIND_TRADE, KIND_WATERMARK,
};
pub use send::send_waiting;

/// Errors encoding or decoding a record.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A value that does not serialise (a bug, never input).
    #[error("serialising a {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A payload that is not the JSON of what the record's kind says.
    #[error("not a {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A record without a payload.
    #[error("empty payload (expected a {what})")]
    MissingPayload { what: &'static str },
    /// An epoch header that is not a decimal number.
    #[error("header {EPOCH_HEADER} is not a decimal epoch: {value:?}")]
    BadEpoch { value: String },
}

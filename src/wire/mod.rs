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

use std::borrow::Cow;

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

/// How many bytes of an outside value an error message quotes (see [`clip`]).
pub const MAX_QUOTED_BYTES: usize = 256;

/// `text` quoted as Rust's `{:?}` would, then clipped to `max` bytes: the
/// escapes count (a backslash doubles, a control character becomes
/// `\u{..}`), so quoting after clipping could pass the limit.
pub fn quoted(text: &str, max: usize) -> String {
    clip(&format!("{text:?}"), max).into_owned()
}

/// `text` cut to at most `max` bytes for an error message: its start and its
/// end joined by `…`, on character boundaries (unchanged when it fits).
///
/// Error messages become dead letters' reason headers and log lines, so a
/// value they quote (a bad field, a serde message quoting a long string)
/// must not make them as large as the input. Keep `max` at 3 or more (`…`
/// alone takes 3).
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let keep = max.saturating_sub('…'.len_utf8());
    let mut head = keep * 2 / 3;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (keep - head);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(format!("{}…{}", &text[..head], &text[tail..]))
}

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
    /// A payload that is not the JSON of what the record's kind says (the
    /// message quotes at most [`MAX_QUOTED_BYTES`] of serde's).
    #[error("not a {what}: {}", clip(&.source.to_string(), MAX_QUOTED_BYTES))]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A record without a payload.
    #[error("empty payload (expected a {what})")]
    MissingPayload { what: &'static str },
    /// An epoch header that is not a decimal number.
    #[error("header {EPOCH_HEADER} is not a decimal epoch: {}", quoted(.value, MAX_QUOTED_BYTES))]
    BadEpoch { value: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        let long = format!("{}tail", "é".repeat(500));
        let cut = clip(&long, 64);
        assert!(cut.len() <= 64, "{} bytes", cut.len());
        assert!(cut.starts_with('é') && cut.ends_with("tail") && cut.contains('…'));
        assert_eq!(clip("abcdef", 3), "…");
    }

    #[test]
    fn decode_errors_quote_a_bounded_part_of_long_strings() {
        let payload = format!(r#"{{"exchange":"{}"}}"#, "x".repeat(100_000));
        let error = Envelope::from_parts(None, None, None, Some(payload.as_bytes()))
            .decode::<crate::model::Trade>()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("not a trade: "), "{error}");
        assert!(error.len() < 2 * MAX_QUOTED_BYTES, "{} bytes", error.len());
        let epoch = read_epoch(Some("9".repeat(10_000).as_bytes()))
            .unwrap_err()
            .to_string();
        assert!(epoch.len() < 2 * MAX_QUOTED_BYTES, "{} bytes", epoch.len());
    }
}

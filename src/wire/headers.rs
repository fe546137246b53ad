//! Header names and values of the record envelope.

use rdkafka::message::{Header, OwnedHeaders};

use super::WireError;
use crate::coord::epoch::Epoch;

/// Header naming the kind of record on a topic that carries more than one.
pub const KIND_HEADER: &str = "tickfetch-kind";
/// [`KIND_HEADER`] value of a [`Watermark`](crate::model::Watermark) record
/// (trades carry `trade` or no header).
pub const KIND_WATERMARK: &str = "watermark";
/// [`KIND_HEADER`] value of a [`Trade`](crate::model::Trade) record.
pub const KIND_TRADE: &str = "trade";
/// [`KIND_HEADER`] value of a [`GapMarker`](crate::model::GapMarker) record.
pub const KIND_GAP: &str = "gap";
/// Header carrying the writer's fencing epoch in decimal ASCII (see
/// `coord::epoch`); absent means epoch 0.
pub const EPOCH_HEADER: &str = "tickfetch-epoch";
/// Header naming why a record went to the dead-letter topic.
pub const DEAD_LETTER_REASON: &str = "tickfetch-reason";
/// Header naming where a dead letter came from (`ws:binance:aggTrade:s0c3`,
/// `{topic}[{partition}]@{offset}`).
pub const DEAD_LETTER_SOURCE: &str = "tickfetch-source";

/// What a record's [`KIND_HEADER`] says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No kind header: the topic's own data (a trade, a candle).
    Unmarked,
    Trade,
    Watermark,
    Gap,
    /// A kind this version does not know.
    Other,
}

impl Kind {
    /// The kind named by a header value (absent: [`Kind::Unmarked`]).
    pub fn from_header(value: Option<&[u8]>) -> Kind {
        match value {
            None => Kind::Unmarked,
            Some(v) if v == KIND_TRADE.as_bytes() => Kind::Trade,
            Some(v) if v == KIND_WATERMARK.as_bytes() => Kind::Watermark,
            Some(v) if v == KIND_GAP.as_bytes() => Kind::Gap,
            Some(_) => Kind::Other,
        }
    }

    /// The header value written for this kind (`None`: no header).
    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Kind::Trade => Some(KIND_TRADE),
            Kind::Watermark => Some(KIND_WATERMARK),
            Kind::Gap => Some(KIND_GAP),
            Kind::Unmarked | Kind::Other => None,
        }
    }

    /// Whether the record is a trade on the trades topic (marked `trade` or
    /// unmarked), as opposed to a control record.
    pub fn is_trade(self) -> bool {
        matches!(self, Kind::Unmarked | Kind::Trade)
    }
}

/// Reads the [`EPOCH_HEADER`] value of a record (absent: [`Epoch::NONE`]).
///
/// # Errors
/// [`WireError::BadEpoch`] for a value that is not a decimal number.
pub fn read_epoch(value: Option<&[u8]>) -> Result<Epoch, WireError> {
    let Some(value) = value else {
        return Ok(Epoch::NONE);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map(Epoch)
        .ok_or_else(|| WireError::BadEpoch {
            value: String::from_utf8_lossy(value).into_owned(),
        })
}

/// An epoch with its header text made once, for writers that stamp every
/// record: [`EpochStamp::stamp`] adds [`EPOCH_HEADER`] to a record's headers
/// (nothing for [`Epoch::NONE`]).
#[derive(Debug, Clone, Default)]
pub struct EpochStamp {
    epoch: Epoch,
    text: Option<String>,
}

impl EpochStamp {
    pub fn new(epoch: Epoch) -> Self {
        Self {
            epoch,
            text: epoch.header_value(),
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// `headers` with the epoch header added when there is an epoch.
    pub fn stamp(&self, headers: OwnedHeaders) -> OwnedHeaders {
        match &self.text {
            Some(text) => headers.insert(Header {
                key: EPOCH_HEADER,
                value: Some(text.as_str()),
            }),
            None => headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_parse_and_absent_is_none() {
        assert_eq!(read_epoch(None).ok(), Some(Epoch::NONE));
        assert_eq!(read_epoch(Some(b"1234")).ok(), Some(Epoch(1234)));
        let error = read_epoch(Some(b"12a")).unwrap_err().to_string();
        assert!(error.contains("tickfetch-epoch"), "{error}");
        assert!(error.contains("12a"), "{error}");
        assert_eq!(Epoch::NONE.header_value(), None);
        assert_eq!(Epoch(7).header_value().as_deref(), Some("7"));
    }

    #[test]
    fn kinds_round_trip_through_their_header_values() {
        for (value, kind) in [
            (None, Kind::Unmarked),
            (Some("trade"), Kind::Trade),
            (Some("watermark"), Kind::Watermark),
            (Some("gap"), Kind::Gap),
            (Some("snapshot"), Kind::Other),
        ] {
            assert_eq!(
                Kind::from_header(value.map(str::as_bytes)),
                kind,
                "{value:?}"
            );
            if kind != Kind::Other {
                assert_eq!(kind.header_value(), value, "{kind:?}");
            }
        }
        assert!(Kind::Unmarked.is_trade() && Kind::Trade.is_trade());
        assert!(!Kind::Watermark.is_trade() && !Kind::Gap.is_trade() && !Kind::Other.is_trade());
    }
}

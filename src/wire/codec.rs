//! Encoding records for the trades and candle topics, and reading them back.

use std::fmt::Write as _;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::Message;
use serde::de::DeserializeOwned;

use super::headers::{read_epoch, EpochStamp, Kind, EPOCH_HEADER, KIND_HEADER};
use super::WireError;
use crate::coord::epoch::Epoch;
use crate::model::{Candle, Exchange, GapMarker, Trade, Watermark};

/// `exchange:symbol`, the Kafka record key of a symbol's trades, watermarks,
/// gap markers and candles (one symbol stays in order on one partition).
pub fn feed_key(exchange: Exchange, symbol: &str) -> String {
    format!("{exchange}:{symbol}")
}

/// What an outgoing record carries.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Trade(&'a Trade),
    Watermark(&'a Watermark),
    Gap(&'a GapMarker),
    Candle(&'a Candle),
}

impl<'a> Body<'a> {
    /// The kind header it is sent with (candles have topics of their own
    /// and go unmarked).
    pub fn kind(self) -> Kind {
        match self {
            Body::Trade(_) => Kind::Trade,
            Body::Watermark(_) => Kind::Watermark,
            Body::Gap(_) => Kind::Gap,
            Body::Candle(_) => Kind::Unmarked,
        }
    }

    /// What it is called in errors.
    pub fn name(self) -> &'static str {
        match self {
            Body::Trade(_) => "trade",
            Body::Watermark(_) => "watermark",
            Body::Gap(_) => "gap marker",
            Body::Candle(_) => "candle",
        }
    }

    /// The symbol it belongs to, which makes its key.
    fn feed(self) -> (Exchange, &'a str) {
        match self {
            Body::Trade(t) => (t.exchange, &t.symbol),
            Body::Watermark(w) => (w.exchange, &w.symbol),
            Body::Gap(g) => (g.exchange, &g.symbol),
            Body::Candle(c) => (c.exchange, &c.symbol),
        }
    }

    fn write_json(self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Body::Trade(t) => serde_json::to_writer(out, t),
            Body::Watermark(w) => serde_json::to_writer(out, w),
            Body::Gap(g) => serde_json::to_writer(out, g),
            Body::Candle(c) => serde_json::to_writer(out, c),
        }
    }
}

/// Encodes records for one writer, reusing its buffers and the text of its
/// current epoch.
#[derive(Debug, Default)]
pub struct Encoder {
    key: String,
    payload: Vec<u8>,
    stamp: EpochStamp,
}

/// One encoded record, borrowing the [`Encoder`]'s buffers.
pub struct Encoded<'a> {
    pub key: &'a str,
    pub payload: &'a [u8],
    pub headers: OwnedHeaders,
}

impl Encoder {
    /// Encodes `body`, written under `epoch`: key `exchange:symbol`, JSON
    /// payload, kind and epoch headers.
    ///
    /// # Errors
    /// [`WireError::Encode`] when the body does not serialise.
    pub fn encode(&mut self, body: Body<'_>, epoch: Epoch) -> Result<Encoded<'_>, WireError> {
        if self.stamp.epoch() != epoch {
            self.stamp = EpochStamp::new(epoch);
        }
        self.payload.clear();
        body.write_json(&mut self.payload)
            .map_err(|source| WireError::Encode {
                what: body.name(),
                source,
            })?;
        let (exchange, symbol) = body.feed();
        self.key.clear();
        let _ = write!(self.key, "{exchange}:{symbol}");
        let mut headers = OwnedHeaders::new_with_capacity(2);
        if let Some(kind) = body.kind().header_value() {
            headers = headers.insert(Header {
                key: KIND_HEADER,
                value: Some(kind),
            });
        }
        Ok(Encoded {
            key: &self.key,
            payload: &self.payload,
            headers: self.stamp.stamp(headers),
        })
    }
}

impl<'a> Encoded<'a> {
    /// The record to produce to `topic` (the partition follows the key
    /// unless the caller sets one).
    pub fn record(self, topic: &'a str) -> BaseRecord<'a, str, [u8]> {
        BaseRecord::to(topic)
            .key(self.key)
            .payload(self.payload)
            .headers(self.headers)
    }
}

/// The data record of a topic: what an unmarked or `trade` record holds.
pub trait DataRecord: DeserializeOwned {
    /// What it is called in errors (`not a trade: …`).
    const NAME: &'static str;
}

impl DataRecord for Trade {
    const NAME: &'static str = "trade";
}

impl DataRecord for Candle {
    const NAME: &'static str = "candle";
}

/// A record read back: the topic's data, or one of the control records
/// that travel with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<T> {
    Data(T),
    Watermark(Watermark),
    Gap(GapMarker),
}

/// A consumed record's envelope: key, kind, epoch header and payload, read
/// once from its headers.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub key: Option<&'a [u8]>,
    pub kind: Kind,
    epoch: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
}

impl<'a> Envelope<'a> {
    /// Reads the envelope of a consumed record.
    pub fn of<M: Message>(message: &'a M) -> Self {
        let mut kind = None;
        let mut epoch = None;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                match header.key {
                    KIND_HEADER => kind = header.value,
                    EPOCH_HEADER => epoch = header.value,
                    _ => {}
                }
            }
        }
        Self::from_parts(message.key(), kind, epoch, message.payload())
    }

    /// An envelope from its parts (header values as they are on the wire).
    pub fn from_parts(
        key: Option<&'a [u8]>,
        kind: Option<&'a [u8]>,
        epoch: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
    ) -> Self {
        Self {
            key,
            kind: Kind::from_header(kind),
            epoch,
            payload,
        }
    }

    /// The writer's epoch.
    ///
    /// # Errors
    /// [`WireError::BadEpoch`] for a header that is not a decimal number.
    pub fn epoch(&self) -> Result<Epoch, WireError> {
        read_epoch(self.epoch)
    }

    /// The raw payload.
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload
    }

    /// Decodes the payload by the record's kind: watermarks and gap markers
    /// as such, everything else as the topic's data `T`.
    ///
    /// # Errors
    /// [`WireError::MissingPayload`], or [`WireError::Decode`] naming what
    /// the payload should have been.
    pub fn decode<T: DataRecord>(&self) -> Result<Received<T>, WireError> {
        Ok(match self.kind {
            Kind::Watermark => Received::Watermark(self.json("watermark")?),
            Kind::Gap => Received::Gap(self.json("gap marker")?),
            Kind::Unmarked | Kind::Trade | Kind::Other => Received::Data(self.json(T::NAME)?),
        })
    }

    /// [`Envelope::decode`] with a data record decoded into `place`
    /// (`Received::Data(())` then says it is there): a record that is
    /// already there lends its strings' buffers, so that a stage decoding
    /// one trade after another does not allocate them each time. After an
    /// error `place` is empty.
    ///
    /// # Errors
    /// As [`Envelope::decode`].
    pub fn decode_into<T: DataRecord>(
        &self,
        place: &mut Option<T>,
    ) -> Result<Received<()>, WireError> {
        Ok(match self.kind {
            Kind::Watermark => Received::Watermark(self.json("watermark")?),
            Kind::Gap => Received::Gap(self.json("gap marker")?),
            Kind::Unmarked | Kind::Trade | Kind::Other => {
                let what = T::NAME;
                let payload = self.payload.ok_or(WireError::MissingPayload { what })?;
                let decoded = text(payload).and_then(|payload| match place {
                    Some(record) => {
                        let mut de = serde_json::Deserializer::from_str(payload);
                        T::deserialize_in_place(&mut de, record).and_then(|()| de.end())
                    }
                    None => serde_json::from_str(payload).map(|record| *place = Some(record)),
                });
                if let Err(source) = decoded {
                    *place = None;
                    return Err(WireError::Decode { what, source });
                }
                Received::Data(())
            }
        })
    }

    fn json<V: DeserializeOwned>(&self, what: &'static str) -> Result<V, WireError> {
        let payload = self.payload.ok_or(WireError::MissingPayload { what })?;
        text(payload)
            .and_then(serde_json::from_str)
            .map_err(|source| WireError::Decode { what, source })
    }
}

/// A payload as text, checked once: a JSON string read from `&str` is not
/// checked again, where one read from bytes is (each key and value apart,
/// a sixth of a trade's decoding).
fn text(payload: &[u8]) -> serde_json::Result<&str> {
    std::str::from_utf8(payload).map_err(|e| {
        <serde_json::Error as serde::de::Error>::custom(format_args!("not UTF-8: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    fn trade() -> Trade {
        serde_json::from_str(r#"{"exchange":"binance","symbol":"BTCUSDT","instrument":"BTC-USDT","trade_id":"7","price":"1.5","quantity":"2","side":"buy","exchange_time":1000,"receive_time":1001}"#)
            .expect("trade")
    }

    fn header(headers: &OwnedHeaders, key: &str) -> Option<String> {
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn every_body_is_keyed_by_its_symbol_with_its_kind_and_epoch() {
        let trade = trade();
        let watermark = Watermark {
            exchange: Exchange::Binance,
            symbol: "BTCUSDT".into(),
            time: 5,
        };
        let gap = GapMarker {
            exchange: Exchange::Binance,
            symbol: "BTCUSDT".into(),
            first_missing: 1,
            last_missing: 2,
            from_time: 3,
            to_time: 4,
        };
        let mut encoder = Encoder::default();
        for (name, body, kind, epoch) in [
            ("trade", Body::Trade(&trade), Some("trade"), Epoch(9)),
            (
                "watermark",
                Body::Watermark(&watermark),
                Some("watermark"),
                Epoch(9),
            ),
            ("gap", Body::Gap(&gap), Some("gap"), Epoch(10)),
            (
                "unstamped trade",
                Body::Trade(&trade),
                Some("trade"),
                Epoch::NONE,
            ),
        ] {
            let encoded = encoder.encode(body, epoch).expect(name);
            assert_eq!(encoded.key, "binance:BTCUSDT", "{name}");
            assert_eq!(
                header(&encoded.headers, KIND_HEADER).as_deref(),
                kind,
                "{name}"
            );
            assert_eq!(
                header(&encoded.headers, EPOCH_HEADER),
                epoch.header_value(),
                "{name}"
            );
            let epoch_text = epoch.header_value();
            let envelope = Envelope::from_parts(
                Some(encoded.key.as_bytes()),
                kind.map(str::as_bytes),
                epoch_text.as_deref().map(str::as_bytes),
                Some(encoded.payload),
            );
            assert_eq!(envelope.epoch().ok(), Some(epoch), "{name}");
            let back = envelope.decode::<Trade>().expect(name);
            let expected = match body {
                Body::Trade(t) => Received::Data(t.clone()),
                Body::Watermark(w) => Received::Watermark(w.clone()),
                Body::Gap(g) => Received::Gap(g.clone()),
                Body::Candle(_) => unreachable!(),
            };
            assert_eq!(back, expected, "{name}");
        }
        assert_eq!(trade.side, Side::Buy);
    }

    #[test]
    fn decoding_into_the_last_record_leaves_nothing_of_it_behind() {
        let aggregated = r#"{"exchange":"binance","symbol":"ETHUSDT","instrument":"ETH-USDT","trade_id":"70","price":"2.5","quantity":"3","side":"sell","exchange_time":2000,"receive_time":2001,"first_trade_id":5,"last_trade_id":9}"#;
        let plain = serde_json::to_vec(&trade()).expect("encodes");
        fn envelope(payload: &[u8]) -> Envelope<'_> {
            Envelope::from_parts(None, None, None, Some(payload))
        }
        let mut place = None;
        assert_eq!(
            envelope(aggregated.as_bytes())
                .decode_into::<Trade>(&mut place)
                .ok(),
            Some(Received::Data(()))
        );
        let first: Trade = serde_json::from_str(aggregated).expect("a trade");
        assert_eq!(place.as_ref(), Some(&first));
        // Shorter strings, and the optional fields absent: all replaced.
        assert!(envelope(&plain).decode_into::<Trade>(&mut place).is_ok());
        assert_eq!(place.as_ref(), Some(&trade()));
        // A bad record is an error naming what was expected, and empties the place.
        let error = envelope(b"{\"exchange\":\"binance\"}")
            .decode_into::<Trade>(&mut place)
            .expect_err("incomplete");
        assert!(error.to_string().contains("not a trade"), "{error}");
        assert_eq!(place, None);
        let error = envelope(b"\xff")
            .decode_into::<Trade>(&mut place)
            .expect_err("not UTF-8");
        assert!(error.to_string().contains("not a trade"), "{error}");
    }

    #[test]
    fn a_missing_or_wrong_payload_is_an_error_naming_what_was_expected() {
        for (name, kind, payload, expected) in [
            ("no payload", None, None, "empty payload"),
            ("not json", None, Some(&b"{"[..]), "not a candle"),
            (
                "bad watermark",
                Some(&b"watermark"[..]),
                Some(&b"{}"[..]),
                "not a watermark",
            ),
            (
                "bad gap",
                Some(&b"gap"[..]),
                Some(&b"[]"[..]),
                "not a gap marker",
            ),
        ] {
            let envelope = Envelope::from_parts(None, kind, None, payload);
            let error = envelope.decode::<Candle>().unwrap_err().to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
    }
}

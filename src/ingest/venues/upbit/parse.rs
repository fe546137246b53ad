//! Frames and REST bodies of Upbit into [`Frame`]s and `Trade`s.

use super::*;

/// What tells Upbit's frames apart.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
}

/// `{"error":{"name":"INVALID_PARAM","message":"…"}}`
#[derive(Debug, Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

fn taker_side(field: &'static str, ask_bid: &str) -> Result<Side, ExchangeError> {
    match ask_bid {
        "ASK" => Ok(Side::Sell),
        "BID" => Ok(Side::Buy),
        other => Err(field_error(
            EXCHANGE,
            field,
            format!("expected ASK or BID, got {other:?}"),
            b"",
        )),
    }
}

fn trade(
    code: &str,
    sequential_id: u64,
    price: (&'static str, &RawValue),
    volume: (&'static str, &RawValue),
    side: Side,
    (time_field, time): (&'static str, Millis),
    receive_time: Millis,
) -> Result<Trade, ExchangeError> {
    Ok(Trade {
        exchange: EXCHANGE,
        symbol: code.to_string(),
        instrument: instrument(code)?,
        trade_id: sequential_id.to_string(),
        price: parse_json_number_decimal(EXCHANGE, price.0, price.1, b"")?,
        quantity: parse_json_number_decimal(EXCHANGE, volume.0, volume.1, b"")?,
        side,
        exchange_time: trade_time(EXCHANGE, time_field, time)?,
        receive_time,
        first_trade_id: None,
        last_trade_id: None,
    })
}

impl SimpleTrade<'_> {
    /// The normalised trade; its time is the trade time `ttms`.
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad number or side,
    /// [`ExchangeError::UnknownSymbol`] for a code that is not `QUOTE-BASE`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ab", &self.ab)?;
        trade(
            &self.cd,
            self.sid,
            ("tp", self.tp),
            ("tv", self.tv),
            side,
            ("ttms", self.ttms),
            receive_time,
        )
    }
}

impl DefaultTrade<'_> {
    /// The normalised trade; its time is `trade_timestamp`.
    ///
    /// # Errors
    /// As [`SimpleTrade::into_trade`].
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ask_bid", &self.ask_bid)?;
        trade(
            &self.code,
            self.sequential_id,
            ("trade_price", self.trade_price),
            ("trade_volume", self.trade_volume),
            side,
            ("trade_timestamp", self.trade_timestamp),
            receive_time,
        )
    }
}

impl RestTrade<'_> {
    /// The normalised trade; its time is `timestamp`.
    ///
    /// # Errors
    /// As [`SimpleTrade::into_trade`].
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = taker_side("ask_bid", &self.ask_bid)?;
        trade(
            &self.market,
            self.sequential_id,
            ("trade_price", self.trade_price),
            ("trade_volume", self.trade_volume),
            side,
            ("timestamp", self.timestamp),
            receive_time,
        )
    }
}

/// Classify one frame (the bytes of a binary or text websocket frame).
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON (or bytes that are not UTF-8) or a
/// trade missing a field, [`ExchangeError::Field`] for a bad value,
/// [`ExchangeError::UnknownSymbol`], [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = if let Some(error) = peek.error {
        Ok(Frame::SubscribeError(SubscribeRejection {
            request_id: None,
            symbols: Vec::new(),
            code: error.name.map(Cow::into_owned),
            message: error.message.map(Cow::into_owned).unwrap_or_default(),
        }))
    } else if peek.status.as_deref() == Some("UP") {
        Ok(Frame::Pong)
    } else if peek.ty.as_deref() == Some("trade") {
        let wire: SimpleTrade = from_json(EXCHANGE, payload)?;
        wire.into_trade(receive_time)
            .map(|t| Frame::Trades(vec![t]))
    } else if peek.kind.as_deref() == Some("trade") {
        let wire: DefaultTrade = from_json(EXCHANGE, payload)?;
        wire.into_trade(receive_time)
            .map(|t| Frame::Trades(vec![t]))
    } else if let Some(kind) = peek.ty.or(peek.kind) {
        Ok(Frame::Other(kind.into_owned()))
    } else {
        Err(unrecognised(EXCHANGE, payload))
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// Trades of a `/v1/trades/ticks` response, oldest first. Rows carry their
/// own `market`; `symbol` is not needed but kept for the common signature.
///
/// # Errors
/// [`ExchangeError::Rejected`] for `{"error":{…}}`, else as [`parse_frame`].
pub fn parse_rest_trades(
    _feed: Feed,
    _symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    rejected(body)?;
    let rows: Vec<RestTrade> = from_json(EXCHANGE, body)?;
    rows.into_iter()
        .map(|row| row.into_trade(receive_time))
        .collect::<Result<Vec<Trade>, ExchangeError>>()
        .map(oldest_first)
        .map_err(|e| with_excerpt(e, body))
}

/// Upbit's error body (`{"error":{"name":…,"message":…}}`) as
/// [`ExchangeError::Rejected`]; anything else passes.
fn rejected(body: &[u8]) -> Result<(), ExchangeError> {
    match serde_json::from_slice::<Peek>(body) {
        Ok(Peek {
            error: Some(error), ..
        }) => Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: error.name.map(Cow::into_owned),
            message: error.message.map(Cow::into_owned).unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// The instruments of a `market/all` body; a code that is not `QUOTE-BASE`
/// names nothing and is left out.
///
/// # Errors
/// [`ExchangeError::Rejected`] for an error body (`{"error":{…}}`),
/// [`ExchangeError::Malformed`] for anything else that is not the list.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
    rejected(body)?;
    let markets: Vec<Market> = from_json(EXCHANGE, body)?;
    Ok(InstrumentPage {
        instruments: markets
            .iter()
            .filter_map(|m| {
                split_market(&m.market)
                    .map(|(base, quote)| Instrument::new(m.market.as_ref(), base, quote))
            })
            .collect(),
        next_cursor: None,
    })
}

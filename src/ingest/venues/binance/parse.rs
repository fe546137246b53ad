//! Frames and REST bodies of Binance into [`Frame`]s and `Trade`s.

use super::*;

/// The combined-stream wrapper, or the fields that tell a reply or a bare
/// event apart.
///
/// `{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade",…}}`,
/// `{"result":null,"id":1}`, `{"error":{"code":2,"msg":"Invalid request: …"},"id":1}`
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<ErrorBody<'a>>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    e: Option<Cow<'a, str>>,
}

/// `{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"}`
#[derive(Debug, Deserialize)]
struct ErrorBody<'a> {
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
}

fn taker_side(is_buyer_maker: bool) -> Side {
    if is_buyer_maker {
        Side::Sell
    } else {
        Side::Buy
    }
}

/// One trade of any Binance message (`raw_ids`: an aggTrade's `f..=l`).
///
/// # Errors
/// [`ExchangeError::Field`] for a bad price, quantity or time, or `l < f`;
/// [`ExchangeError::UnknownSymbol`].
#[allow(clippy::too_many_arguments)]
fn trade(
    symbol: &str,
    trade_id: u64,
    price: &str,
    quantity: &str,
    is_buyer_maker: bool,
    (time_field, time): (&'static str, Millis),
    raw_ids: Option<(u64, u64)>,
    receive_time: Millis,
) -> Result<Trade, ExchangeError> {
    if raw_ids.is_some_and(|(first, last)| last < first) {
        return Err(field_error(
            EXCHANGE,
            "l",
            "last trade id is below the first",
            b"",
        ));
    }
    Ok(Trade {
        exchange: EXCHANGE,
        symbol: symbol.to_string(),
        instrument: instrument(symbol)?,
        trade_id: trade_id.to_string(),
        price: parse_decimal(EXCHANGE, "p", price, b"")?,
        quantity: parse_decimal(EXCHANGE, "q", quantity, b"")?,
        side: taker_side(is_buyer_maker),
        exchange_time: trade_time(EXCHANGE, time_field, time)?,
        receive_time,
        first_trade_id: raw_ids.map(|(first, _)| first),
        last_trade_id: raw_ids.map(|(_, last)| last),
    })
}

impl TradeEvent<'_> {
    /// The normalised trade, stamped with the time the frame was received.
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad price or quantity,
    /// [`ExchangeError::UnknownSymbol`] for a symbol that does not split.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        trade(
            &self.symbol,
            self.trade_id,
            &self.price,
            &self.quantity,
            self.is_buyer_maker,
            ("T", self.trade_time),
            None,
            receive_time,
        )
    }
}

impl AggTradeEvent<'_> {
    /// The normalised trade: `trade_id` is the aggregate id `a`, and
    /// `first_trade_id..=last_trade_id` the raw trades it holds.
    ///
    /// # Errors
    /// As [`TradeEvent::into_trade`], and [`ExchangeError::Field`] when `l < f`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        trade(
            &self.symbol,
            self.agg_trade_id,
            &self.price,
            &self.quantity,
            self.is_buyer_maker,
            ("T", self.trade_time),
            Some((self.first_trade_id, self.last_trade_id)),
            receive_time,
        )
    }
}

/// Classify one frame from the combined or a raw stream.
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON or a trade missing a field,
/// [`ExchangeError::Field`] for a bad value, [`ExchangeError::UnknownSymbol`],
/// [`ExchangeError::Unrecognised`] for a JSON object that is none of the above.
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let envelope: Envelope = from_json(EXCHANGE, payload)?;
    let frame = if let (Some(stream), Some(data)) = (&envelope.stream, envelope.data) {
        let kind = stream
            .split_once('@')
            .map_or(stream.as_ref(), |(_, kind)| kind);
        parse_event(kind, data.get().as_bytes(), receive_time)
    } else if let Some(error) = envelope.error {
        Ok(rejection(&envelope.id, error.code, error.msg))
    } else if envelope.code.is_some() && envelope.msg.is_some() {
        Ok(rejection(&envelope.id, envelope.code, envelope.msg))
    } else if let Some(id) = envelope.id {
        let topics = envelope
            .result
            .and_then(|result| serde_json::from_str::<Vec<String>>(result.get()).ok())
            .unwrap_or_default();
        Ok(Frame::SubscribeAck {
            request_id: Some(request_id_text(id)),
            topics,
        })
    } else if let Some(kind) = &envelope.e {
        parse_event(kind, payload, receive_time)
    } else {
        Err(unrecognised(EXCHANGE, payload))
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

fn parse_event(kind: &str, data: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    match kind {
        "trade" => {
            let event: TradeEvent = from_json(EXCHANGE, data)?;
            Ok(Frame::Trades(vec![event.into_trade(receive_time)?]))
        }
        "aggTrade" => {
            let event: AggTradeEvent = from_json(EXCHANGE, data)?;
            Ok(Frame::Trades(vec![event.into_trade(receive_time)?]))
        }
        other => Ok(Frame::Other(other.to_string())),
    }
}

fn request_id_text(id: &RawValue) -> String {
    let text = id.get();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .to_string()
}

fn rejection(id: &Option<&RawValue>, code: Option<i64>, msg: Option<Cow<'_, str>>) -> Frame {
    Frame::SubscribeError(SubscribeRejection {
        request_id: id.filter(|id| id.get() != "null").map(request_id_text),
        symbols: Vec::new(),
        code: code.map(|c| c.to_string()),
        message: msg.map(Cow::into_owned).unwrap_or_default(),
    })
}

/// Trades of a `trades`/`historicalTrades` (Trade) or `aggTrades` (AggTrade)
/// response for `symbol`, oldest first.
///
/// # Errors
/// [`ExchangeError::Rejected`] for `{"code":-1121,"msg":"Invalid symbol."}`,
/// else as [`parse_frame`].
pub fn parse_rest_trades(
    feed: Feed,
    symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    rejected(body)?;
    let symbol = symbol.to_ascii_uppercase();
    let trades: Result<Vec<Trade>, ExchangeError> = match feed {
        Feed::Trade => from_json::<Vec<RestTrade>>(EXCHANGE, body)?
            .into_iter()
            .map(|row| {
                trade(
                    &symbol,
                    row.id,
                    &row.price,
                    &row.qty,
                    row.is_buyer_maker,
                    ("time", row.time),
                    None,
                    receive_time,
                )
            })
            .collect(),
        Feed::AggTrade => from_json::<Vec<RestAggTrade>>(EXCHANGE, body)?
            .into_iter()
            .map(|row| {
                trade(
                    &symbol,
                    row.agg_trade_id,
                    &row.price,
                    &row.quantity,
                    row.is_buyer_maker,
                    ("T", row.trade_time),
                    Some((row.first_trade_id, row.last_trade_id)),
                    receive_time,
                )
            })
            .collect(),
    };
    trades.map(oldest_first).map_err(|e| with_excerpt(e, body))
}

/// Binance's error body (`{"code":-1121,"msg":"Invalid symbol."}`) as
/// [`ExchangeError::Rejected`]; anything else passes.
fn rejected(body: &[u8]) -> Result<(), ExchangeError> {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) if error.code.is_some() || error.msg.is_some() => Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: error.code.map(|c| c.to_string()),
            message: error.msg.map(Cow::into_owned).unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// The instruments of an `exchangeInfo` body.
///
/// # Errors
/// [`ExchangeError::Rejected`] for an error body (`{"code":-1003,"msg":"…"}`),
/// [`ExchangeError::Malformed`] for anything else that is not the list.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
    rejected(body)?;
    let info: ExchangeInfo = from_json(EXCHANGE, body)?;
    Ok(InstrumentPage {
        instruments: info
            .symbols
            .into_iter()
            .map(|s| Instrument::new(s.symbol, s.base_asset, s.quote_asset))
            .collect(),
        next_cursor: None,
    })
}

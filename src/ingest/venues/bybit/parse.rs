//! Frames and REST bodies of Bybit into [`Frame`]s and `Trade`s.

use super::*;

/// What tells Bybit's frames apart.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    ret_msg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    req_id: Option<Cow<'a, str>>,
}

fn taker_side(side: &str) -> Result<Side, ExchangeError> {
    match side {
        "Buy" => Ok(Side::Buy),
        "Sell" => Ok(Side::Sell),
        other => Err(field_error(
            EXCHANGE,
            "S",
            format!("expected Buy or Sell, got {other:?}"),
            b"",
        )),
    }
}

impl PublicTrade<'_> {
    /// The normalised trade.
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad price, size or side,
    /// [`ExchangeError::UnknownSymbol`] for a symbol that does not split.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        if self.trade_id.is_empty() {
            return Err(field_error(EXCHANGE, "i", "empty trade id", b""));
        }
        Ok(Trade {
            exchange: EXCHANGE,
            instrument: instrument(&self.symbol)?,
            symbol: self.symbol.into_owned(),
            trade_id: self.trade_id.into_owned(),
            price: parse_decimal(EXCHANGE, "p", &self.price, b"")?,
            quantity: parse_decimal(EXCHANGE, "v", &self.size, b"")?,
            side: taker_side(&self.side)?,
            exchange_time: trade_time(EXCHANGE, "T", self.trade_time)?,
            receive_time,
            first_trade_id: None,
            last_trade_id: None,
        })
    }
}

impl RestTrade<'_> {
    /// The normalised trade.
    ///
    /// # Errors
    /// As [`PublicTrade::into_trade`] (an empty `execId` too), and for a
    /// `time` that is not an integer.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        if self.exec_id.is_empty() {
            return Err(field_error(EXCHANGE, "execId", "empty trade id", b""));
        }
        Ok(Trade {
            exchange: EXCHANGE,
            instrument: instrument(&self.symbol)?,
            symbol: self.symbol.into_owned(),
            trade_id: self.exec_id.into_owned(),
            price: parse_decimal(EXCHANGE, "price", &self.price, b"")?,
            quantity: parse_decimal(EXCHANGE, "size", &self.size, b"")?,
            side: taker_side(&self.side)?,
            exchange_time: trade_time(
                EXCHANGE,
                "time",
                parse_int_text(EXCHANGE, "time", &self.time, b"")?,
            )?,
            receive_time,
            first_trade_id: None,
            last_trade_id: None,
        })
    }
}

/// Symbols named by `publicTrade.X` topics inside an error message.
fn symbols_in(message: &str) -> Vec<String> {
    message
        .match_indices(TOPIC_PREFIX)
        .map(|(at, prefix)| {
            message[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Classify one frame.
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON or a trade missing a field,
/// [`ExchangeError::Field`] for a bad value, [`ExchangeError::UnknownSymbol`],
/// [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = if let Some(topic) = peek.topic {
        if topic.starts_with(TOPIC_PREFIX) {
            let wire: PublicTradeMessage = from_json(EXCHANGE, payload)?;
            wire.data
                .into_iter()
                .map(|t| t.into_trade(receive_time))
                .collect::<Result<Vec<Trade>, ExchangeError>>()
                .map(|trades| Frame::Trades(oldest_first(trades)))
        } else {
            let kind = topic.split('.').next().unwrap_or_default();
            Ok(Frame::Other(kind.to_string()))
        }
    } else if let Some(op) = peek.op {
        let ret_msg = peek.ret_msg.as_deref().unwrap_or_default();
        match (op.as_ref(), peek.success) {
            ("pong", _) | ("ping", Some(true)) => Ok(Frame::Pong),
            (_, Some(false)) => Ok(Frame::SubscribeError(SubscribeRejection {
                request_id: peek.req_id.map(Cow::into_owned),
                symbols: symbols_in(ret_msg),
                code: None,
                message: ret_msg.to_string(),
            })),
            ("subscribe", Some(true)) => Ok(Frame::SubscribeAck {
                request_id: peek.req_id.map(Cow::into_owned),
                topics: Vec::new(),
            }),
            (other, _) => Ok(Frame::Other(other.to_string())),
        }
    } else {
        Err(unrecognised(EXCHANGE, payload))
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// Trades of a recent-trade response, oldest first.
///
/// # Errors
/// [`ExchangeError::Rejected`] when `retCode` is not 0, else as [`parse_frame`].
pub fn parse_rest_trades(
    _feed: Feed,
    _symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    let response: RestResponse = from_json(EXCHANGE, body)?;
    if response.ret_code != 0 {
        return Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: Some(response.ret_code.to_string()),
            message: response.ret_msg.into_owned(),
        });
    }
    response
        .result
        .map(|r| r.list)
        .unwrap_or_default()
        .into_iter()
        .map(|row| row.into_trade(receive_time))
        .collect::<Result<Vec<Trade>, ExchangeError>>()
        .map(oldest_first)
        .map_err(|e| with_excerpt(e, body))
}

/// One page of an `instruments-info` body.
///
/// # Errors
/// [`ExchangeError::Rejected`] when `retCode` is not 0,
/// [`ExchangeError::Malformed`] for anything else that is not the list.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
    let response: InstrumentsResponse = from_json(EXCHANGE, body)?;
    if response.ret_code != 0 {
        return Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: Some(response.ret_code.to_string()),
            message: response.ret_msg.into_owned(),
        });
    }
    let Some(result) = response.result else {
        return Ok(InstrumentPage::default());
    };
    Ok(InstrumentPage {
        instruments: result
            .list
            .into_iter()
            .map(|row| Instrument::new(row.symbol, row.base_coin, row.quote_coin))
            .collect(),
        next_cursor: result
            .next_page_cursor
            .filter(|cursor| !cursor.is_empty())
            .map(Cow::into_owned),
    })
}

//! Frames and REST bodies of Okx into [`Frame`]s and `Trade`s.

use super::*;

/// What tells OKX's JSON frames apart.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    arg: Option<PeekArg<'a>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<serde::de::IgnoredAny>,
}

/// A push's or reply's `arg`; some channels have no `instId`.
#[derive(Debug, Deserialize)]
struct PeekArg<'a> {
    #[serde(borrow, default)]
    channel: Cow<'a, str>,
    #[serde(rename = "instId", borrow, default)]
    inst_id: Option<Cow<'a, str>>,
}

fn taker_side(side: &str) -> Result<Side, ExchangeError> {
    match side {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(field_error(
            EXCHANGE,
            "side",
            format!("expected buy or sell, got {other:?}"),
            b"",
        )),
    }
}

impl OkxTrade<'_> {
    /// The normalised trade; with `count`, an aggregated trade covering raw ids
    /// `tradeId − count + 1 ..= tradeId`.
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad price, size, side, time, id or count,
    /// [`ExchangeError::UnknownSymbol`] for an id without `BASE-QUOTE`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let raw_ids = match &self.count {
            None => None,
            Some(count) => {
                let count: u64 = parse_int_text(EXCHANGE, "count", count, b"")?;
                let last: u64 = parse_int_text(EXCHANGE, "tradeId", &self.trade_id, b"")?;
                let first = last
                    .checked_add(1)
                    .and_then(|end| end.checked_sub(count))
                    .filter(|_| count >= 1)
                    .ok_or_else(|| {
                        field_error(
                            EXCHANGE,
                            "count",
                            format!("{count} fills cannot end at id {last}"),
                            b"",
                        )
                    })?;
                Some((first, last))
            }
        };
        if self.trade_id.is_empty() {
            return Err(field_error(EXCHANGE, "tradeId", "empty trade id", b""));
        }
        Ok(Trade {
            exchange: EXCHANGE,
            instrument: instrument(&self.inst_id)?,
            symbol: self.inst_id.into_owned(),
            trade_id: self.trade_id.into_owned(),
            price: parse_decimal(EXCHANGE, "px", &self.px, b"")?,
            quantity: parse_decimal(EXCHANGE, "sz", &self.sz, b"")?,
            side: taker_side(&self.side)?,
            exchange_time: trade_time(
                EXCHANGE,
                "ts",
                parse_int_text(EXCHANGE, "ts", &self.ts, b"")?,
            )?,
            receive_time,
            first_trade_id: raw_ids.map(|(first, _)| first),
            last_trade_id: raw_ids.map(|(_, last)| last),
        })
    }
}

/// Instrument ids named in an error message: `instId:FOO-USDT` or
/// `\"instId\" : \"FOO-USDT\"`.
fn inst_ids_in(message: &str) -> Vec<String> {
    message
        .match_indices("instId")
        .map(|(at, key)| {
            message[at + key.len()..]
                .trim_start_matches([' ', ':', '"', '\\'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Classify one frame (JSON, or the bare text `pong`).
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON or a trade missing a field,
/// [`ExchangeError::Field`] for a bad value, [`ExchangeError::UnknownSymbol`],
/// [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    if payload.trim_ascii() == PONG_TEXT.as_bytes() {
        return Ok(Frame::Pong);
    }
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = match (peek.event.as_deref(), &peek.arg) {
        (Some("subscribe"), arg) => Ok(Frame::SubscribeAck {
            request_id: peek.id.map(Cow::into_owned),
            topics: arg
                .iter()
                .map(|a| match &a.inst_id {
                    Some(inst_id) => format!("{}:{inst_id}", a.channel),
                    None => a.channel.to_string(),
                })
                .collect(),
        }),
        (Some("error"), arg) => {
            let msg = peek.msg.as_deref().unwrap_or_default();
            let mut symbols = inst_ids_in(msg);
            if let Some(inst_id) = arg.as_ref().and_then(|a| a.inst_id.as_ref()) {
                symbols.push(inst_id.to_string());
            }
            symbols.dedup();
            Ok(Frame::SubscribeError(SubscribeRejection {
                request_id: peek.id.map(Cow::into_owned),
                symbols,
                code: peek.code.map(Cow::into_owned),
                message: msg.to_string(),
            }))
        }
        (Some(event), _) => Ok(Frame::Other(event.to_string())),
        (None, Some(arg)) if peek.data.is_some() => match arg.channel.as_ref() {
            "trades" | "trades-all" => {
                let push: TradesPush = from_json(EXCHANGE, payload)?;
                push.data
                    .into_iter()
                    .map(|t| t.into_trade(receive_time))
                    .collect::<Result<Vec<Trade>, ExchangeError>>()
                    .map(|trades| Frame::Trades(oldest_first(trades)))
            }
            other => Ok(Frame::Other(other.to_string())),
        },
        _ => Err(unrecognised(EXCHANGE, payload)),
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// Trades of a `market/trades` or `history-trades` response, oldest first.
///
/// # Errors
/// [`ExchangeError::Rejected`] when `code` is not `"0"`, else as [`parse_frame`].
pub fn parse_rest_trades(
    _feed: Feed,
    _symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    let response: RestResponse = from_json(EXCHANGE, body)?;
    if response.code != "0" {
        return Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: Some(response.code.into_owned()),
            message: response.msg.into_owned(),
        });
    }
    response
        .data
        .into_iter()
        .map(|row| row.into_trade(receive_time))
        .collect::<Result<Vec<Trade>, ExchangeError>>()
        .map(oldest_first)
        .map_err(|e| with_excerpt(e, body))
}

/// The instruments of a `public/instruments` body.
///
/// # Errors
/// [`ExchangeError::Rejected`] when `code` is not `"0"`,
/// [`ExchangeError::Malformed`] for anything else that is not the list.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
    let response: InstrumentsResponse = from_json(EXCHANGE, body)?;
    if response.code != "0" {
        return Err(ExchangeError::Rejected {
            exchange: EXCHANGE,
            code: Some(response.code.into_owned()),
            message: response.msg.into_owned(),
        });
    }
    Ok(InstrumentPage {
        instruments: response
            .data
            .into_iter()
            .map(|row| Instrument::new(row.inst_id, row.base_ccy, row.quote_ccy))
            .collect(),
        next_cursor: None,
    })
}

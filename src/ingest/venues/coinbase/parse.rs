//! Frames and REST bodies of Coinbase into [`Frame`]s and `Trade`s.

use super::*;

/// What tells Coinbase's frames apart: Exchange messages have `type`,
/// Advanced Trade messages `channel` (errors of both have `type`).
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// Exchange `side` is the maker's: a resting buy was hit by a taker sell.
fn exchange_taker_side(maker_side: &str) -> Result<Side, ExchangeError> {
    match maker_side {
        "buy" => Ok(Side::Sell),
        "sell" => Ok(Side::Buy),
        other => Err(field_error(
            EXCHANGE,
            "side",
            format!("expected buy or sell, got {other:?}"),
            b"",
        )),
    }
}

/// Advanced Trade `side` is the taker's.
pub fn advanced_taker_side(side: &str) -> Result<Side, ExchangeError> {
    match side {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        "UNKNOWN_ORDER_SIDE" => Ok(Side::Unknown),
        other => Err(field_error(
            EXCHANGE,
            "side",
            format!("expected BUY or SELL, got {other:?}"),
            b"",
        )),
    }
}

/// A trade's or heartbeat's ISO-8601 time, checked against
/// [`TRADE_TIMES`](crate::model::TRADE_TIMES).
fn iso_time(field: &'static str, text: &str) -> Result<Millis, ExchangeError> {
    let time = parse_iso8601_millis(text).ok_or_else(|| {
        field_error(
            EXCHANGE,
            field,
            format!("expected ISO-8601 UTC time, got {text:?}"),
            b"",
        )
    })?;
    trade_time(EXCHANGE, field, time)
}

fn trade(
    product: &str,
    trade_id: String,
    price: &str,
    size: &str,
    side: Side,
    time: &str,
    receive_time: Millis,
) -> Result<Trade, ExchangeError> {
    Ok(Trade {
        exchange: EXCHANGE,
        symbol: product.to_string(),
        instrument: instrument(product)?,
        trade_id,
        price: parse_decimal(EXCHANGE, "price", price, b"")?,
        quantity: parse_decimal(EXCHANGE, "size", size, b"")?,
        side,
        exchange_time: iso_time("time", time)?,
        receive_time,
        first_trade_id: None,
        last_trade_id: None,
    })
}

impl Match<'_> {
    /// The normalised trade (side flipped from the maker's to the taker's).
    ///
    /// # Errors
    /// [`ExchangeError::Field`] for a bad price, size, side or time,
    /// [`ExchangeError::UnknownSymbol`] for a product id without `-`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = exchange_taker_side(&self.side)?;
        trade(
            &self.product_id,
            self.trade_id.to_string(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

impl AdvancedTrade<'_> {
    /// The normalised trade.
    ///
    /// # Errors
    /// As [`Match::into_trade`], and [`ExchangeError::Field`] for a
    /// non-numeric `trade_id`.
    pub fn into_trade(self, receive_time: Millis) -> Result<Trade, ExchangeError> {
        if self.trade_id.is_empty() || !self.trade_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(field_error(
                EXCHANGE,
                "trade_id",
                format!("expected a numeric id, got {:?}", self.trade_id),
                b"",
            ));
        }
        let side = advanced_taker_side(&self.side)?;
        trade(
            &self.product_id,
            self.trade_id.into_owned(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

impl RestTrade<'_> {
    /// The normalised trade of `product` (side flipped as in [`Match`]).
    ///
    /// # Errors
    /// As [`Match::into_trade`].
    pub fn into_trade(self, product: &str, receive_time: Millis) -> Result<Trade, ExchangeError> {
        let side = exchange_taker_side(&self.side)?;
        trade(
            product,
            self.trade_id.to_string(),
            &self.price,
            &self.size,
            side,
            &self.time,
            receive_time,
        )
    }
}

/// Classify one frame of either API.
///
/// # Errors
/// [`ExchangeError::Malformed`] for bad JSON or a trade missing a field,
/// [`ExchangeError::Field`] for a bad value, [`ExchangeError::UnknownSymbol`],
/// [`ExchangeError::Unrecognised`].
pub fn parse_frame(payload: &[u8], receive_time: Millis) -> Result<Frame, ExchangeError> {
    let peek: Peek = from_json(EXCHANGE, payload)?;
    let frame = match (peek.kind.as_deref(), peek.channel.as_deref()) {
        (Some("match" | "last_match"), _) => {
            let wire: Match = from_json(EXCHANGE, payload)?;
            wire.into_trade(receive_time)
                .map(|t| Frame::Trades(vec![t]))
        }
        (Some("heartbeat"), _) => {
            let wire: ExchangeHeartbeat = from_json(EXCHANGE, payload)?;
            Ok(Frame::Heartbeat(Heartbeat {
                symbol: Some(wire.product_id.into_owned()),
                last_trade_id: Some(wire.last_trade_id.to_string()),
                exchange_time: Some(iso_time("time", &wire.time)?),
            }))
        }
        (Some("subscriptions"), _) => {
            let wire: ExchangeSubscriptions = from_json(EXCHANGE, payload)?;
            let topics = wire
                .channels
                .iter()
                .flat_map(|c| c.product_ids.iter().map(move |p| format!("{}:{p}", c.name)))
                .collect();
            Ok(Frame::SubscribeAck {
                request_id: None,
                topics,
            })
        }
        (Some("error"), _) => {
            let reason = peek.reason.as_deref().unwrap_or_default();
            let symbols = reason
                .strip_suffix(" is not a valid product")
                .map(|p| vec![p.trim().to_string()])
                .unwrap_or_default();
            let message = match (&peek.message, reason) {
                (Some(message), "") => message.to_string(),
                (Some(message), reason) => format!("{message}: {reason}"),
                (None, reason) => reason.to_string(),
            };
            Ok(Frame::SubscribeError(SubscribeRejection {
                request_id: None,
                symbols,
                code: None,
                message,
            }))
        }
        (_, Some("market_trades")) => {
            let wire: AdvancedMessage<MarketTradesEvent> = from_json(EXCHANGE, payload)?;
            let mut trades = Vec::new();
            for event in wire.events {
                for row in event.trades {
                    trades.push(row.into_trade(receive_time)?);
                }
            }
            // Listed newest first; same-millisecond trades order by id.
            Ok(Frame::Trades(oldest_first(trades)))
        }
        (_, Some("subscriptions")) => {
            let wire: AdvancedMessage<SubscriptionsEvent> = from_json(EXCHANGE, payload)?;
            let topics = wire
                .events
                .iter()
                .flat_map(|e| e.subscriptions.iter())
                .flat_map(|(channel, products)| {
                    products.iter().map(move |p| format!("{channel}:{p}"))
                })
                .collect();
            Ok(Frame::SubscribeAck {
                request_id: None,
                topics,
            })
        }
        (_, Some("heartbeats")) => {
            let wire: AdvancedMessage<serde::de::IgnoredAny> = from_json(EXCHANGE, payload)?;
            Ok(Frame::Heartbeat(Heartbeat {
                symbol: None,
                last_trade_id: None,
                exchange_time: Some(iso_time("timestamp", &wire.timestamp)?),
            }))
        }
        (Some(kind), _) => Ok(Frame::Other(kind.to_string())),
        (None, Some(channel)) => Ok(Frame::Other(channel.to_string())),
        (None, None) => Err(unrecognised(EXCHANGE, payload)),
    };
    frame.map_err(|e| with_excerpt(e, payload))
}

/// Trades of a recent-trades response for `symbol` (the product id), oldest first.
///
/// # Errors
/// [`ExchangeError::Rejected`] for `{"message":"NotFound"}`-style bodies,
/// else as [`parse_frame`].
pub fn parse_rest_trades(
    feed: Feed,
    symbol: &str,
    body: &[u8],
    receive_time: Millis,
) -> Result<Vec<Trade>, ExchangeError> {
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        if peek.message.is_some() || peek.error.is_some() {
            return Err(ExchangeError::Rejected {
                exchange: EXCHANGE,
                code: peek.error.map(Cow::into_owned),
                message: peek.message.map(Cow::into_owned).unwrap_or_default(),
            });
        }
    }
    let product = symbol.to_ascii_uppercase();
    let trades: Result<Vec<Trade>, ExchangeError> = match feed {
        Feed::ExchangeMatches => from_json::<Vec<RestTrade>>(EXCHANGE, body)?
            .into_iter()
            .map(|row| row.into_trade(&product, receive_time))
            .collect(),
        Feed::AdvancedMarketTrades => from_json::<RestTicker>(EXCHANGE, body)?
            .trades
            .into_iter()
            .map(|row| row.into_trade(receive_time))
            .collect(),
    };
    trades.map(oldest_first).map_err(|e| with_excerpt(e, body))
}

/// The instruments of a `GET /products` body.
///
/// # Errors
/// [`ExchangeError::Rejected`] for an error body (`{"message":"…"}`),
/// [`ExchangeError::Malformed`] for anything else that is not the list.
pub fn parse_instruments(body: &[u8]) -> Result<InstrumentPage, ExchangeError> {
    if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
        if peek.message.is_some() || peek.error.is_some() {
            return Err(ExchangeError::Rejected {
                exchange: EXCHANGE,
                code: peek.error.map(Cow::into_owned),
                message: peek.message.map(Cow::into_owned).unwrap_or_default(),
            });
        }
    }
    let products: Vec<Product> = from_json(EXCHANGE, body)?;
    Ok(InstrumentPage {
        instruments: products
            .into_iter()
            .map(|p| Instrument::new(p.id, p.base_currency, p.quote_currency))
            .collect(),
        next_cursor: None,
    })
}

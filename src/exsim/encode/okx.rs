//! Okx's frames and REST bodies for given trades: what the simulator
//! sends, the inverse of the adapter's parsers.

use super::*;
use crate::ingest::venues::okx::*;

fn okx_trade<'t>(feed: Feed, trade: &'t Trade) -> Result<OkxTrade<'t>, ExchangeError> {
    let id = numeric_id(EXCHANGE, trade)?;
    let count = match (trade.first_trade_id, trade.last_trade_id) {
        (None, None) => 1,
        (Some(first), Some(last)) if last == id && first <= last => last - first + 1,
        _ => {
            return Err(encode_error(
                EXCHANGE,
                trade,
                "an aggregated trade needs last_trade_id == trade_id >= first_trade_id",
            ))
        }
    };
    let count = match feed {
        Feed::Trades => Some(Cow::Owned(count.to_string())),
        Feed::TradesAll if count == 1 => None,
        Feed::TradesAll => {
            return Err(encode_error(
                EXCHANGE,
                trade,
                "trades-all carries single fills only",
            ))
        }
    };
    Ok(OkxTrade {
        inst_id: Cow::Borrowed(&trade.symbol),
        trade_id: Cow::Borrowed(&trade.trade_id),
        px: Cow::Owned(trade.price.to_string()),
        sz: Cow::Owned(trade.quantity.to_string()),
        side: Cow::Borrowed(match side_or_err(EXCHANGE, trade)? {
            Side::Buy => "buy",
            _ => "sell",
        }),
        ts: Cow::Owned(trade.exchange_time.to_string()),
        count,
    })
}

/// The pushes OKX would send for `trades`, one per trade. On `trades` every
/// row carries `count` (1 for a trade without raw ids).
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side, a non-numeric id, raw ids
/// that do not end at `trade_id`, or an aggregated trade on `trades-all`.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    trades
        .iter()
        .map(|trade| {
            let push = TradesPush {
                arg: ChannelArg {
                    channel: Cow::Borrowed(feed.as_str()),
                    inst_id: Cow::Borrowed(&trade.symbol),
                },
                data: vec![okx_trade(feed, trade)?],
            };
            serde_json::to_string(&push)
                .map(WireFrame::Text)
                .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))
        })
        .collect()
}

/// The REST body OKX would return for `trades` (newest first, as OKX; REST
/// rows are single fills, so aggregated trades are refused).
///
/// # Errors
/// As [`encode_trades`] on `trades-all`.
pub fn encode_rest_trades(_feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let data = trades
        .iter()
        .rev()
        .map(|trade| okx_trade(Feed::TradesAll, trade))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&RestResponse {
        code: Cow::Borrowed("0"),
        msg: Cow::Borrowed(""),
        data,
    })
    .map_err(|e| request_error(EXCHANGE, e.to_string()))
}

/// The `public/instruments` body OKX would return for `instruments` of
/// `inst_type` (every one `live`; as on OKX, `baseCcy` and `quoteCcy` are
/// empty unless the type is `SPOT` or `MARGIN`).
///
/// # Errors
/// [`ExchangeError::Request`] if the body cannot be written.
pub fn encode_instruments(
    instruments: &[Instrument],
    inst_type: &str,
) -> Result<String, ExchangeError> {
    let spot = matches!(inst_type, "SPOT" | "MARGIN");
    let currency = |ccy: &str| Cow::Owned(if spot { ccy.to_string() } else { String::new() });
    let response = InstrumentsResponse {
        code: Cow::Borrowed("0"),
        msg: Cow::Borrowed(""),
        data: instruments
            .iter()
            .map(|i| OkxInstrument {
                inst_type: Cow::Borrowed(inst_type),
                inst_id: Cow::Borrowed(&i.symbol),
                base_ccy: currency(&i.base),
                quote_ccy: currency(&i.quote),
                state: Cow::Borrowed("live"),
            })
            .collect(),
    };
    serde_json::to_string(&response).map_err(|e| request_error(EXCHANGE, e.to_string()))
}

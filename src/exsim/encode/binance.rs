//! Binance's frames and REST bodies for given trades: what the simulator
//! sends, the inverse of the adapter's parsers.

use super::*;
use crate::ingest::venues::binance::*;

/// The combined-stream frames Binance would send for `trades`, one per trade.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side, a non-numeric trade id, or
/// (aggTrade) a trade without `first_trade_id`/`last_trade_id`.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    trades
        .iter()
        .map(|trade| {
            let stream = stream_name(feed, &trade.symbol);
            let is_buyer_maker = side_or_err(EXCHANGE, trade)? == Side::Sell;
            let id = numeric_id(EXCHANGE, trade)?;
            let price = trade.price.to_string();
            let quantity = trade.quantity.to_string();
            let data = match feed {
                Feed::Trade if trade.trade_count() > 1 => {
                    return Err(encode_error(
                        EXCHANGE,
                        trade,
                        "an aggregated trade is not a @trade event",
                    ))
                }
                Feed::Trade => serde_json::to_string(&TradeEvent {
                    event_type: Cow::Borrowed("trade"),
                    event_time: trade.exchange_time,
                    symbol: Cow::Borrowed(&trade.symbol),
                    trade_id: id,
                    price: Cow::Borrowed(&price),
                    quantity: Cow::Borrowed(&quantity),
                    buyer_order_id: None,
                    seller_order_id: None,
                    trade_time: trade.exchange_time,
                    is_buyer_maker,
                    is_best_match: true,
                }),
                Feed::AggTrade => {
                    let (first, last) = agg_ids(trade)?;
                    serde_json::to_string(&AggTradeEvent {
                        event_type: Cow::Borrowed("aggTrade"),
                        event_time: trade.exchange_time,
                        symbol: Cow::Borrowed(&trade.symbol),
                        agg_trade_id: id,
                        price: Cow::Borrowed(&price),
                        quantity: Cow::Borrowed(&quantity),
                        first_trade_id: first,
                        last_trade_id: last,
                        trade_time: trade.exchange_time,
                        is_buyer_maker,
                        is_best_match: true,
                    })
                }
            }
            .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))?;
            Ok(WireFrame::Text(format!(
                r#"{{"stream":"{stream}","data":{data}}}"#
            )))
        })
        .collect()
}

fn agg_ids(trade: &Trade) -> Result<(u64, u64), ExchangeError> {
    match (trade.first_trade_id, trade.last_trade_id) {
        (Some(first), Some(last)) if first <= last => Ok((first, last)),
        _ => Err(encode_error(
            EXCHANGE,
            trade,
            "an aggTrade needs first_trade_id <= last_trade_id",
        )),
    }
}

/// The REST body Binance would return for `trades` (oldest first, as Binance).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let text = match feed {
        Feed::Trade => {
            let rows = trades
                .iter()
                .map(|trade| {
                    Ok(RestTrade {
                        id: numeric_id(EXCHANGE, trade)?,
                        price: Cow::Owned(trade.price.to_string()),
                        qty: Cow::Owned(trade.quantity.to_string()),
                        quote_qty: Cow::Owned(trade.quote_quantity().round_dp(8).to_string()),
                        time: trade.exchange_time,
                        is_buyer_maker: side_or_err(EXCHANGE, trade)? == Side::Sell,
                        is_best_match: true,
                    })
                })
                .collect::<Result<Vec<_>, ExchangeError>>()?;
            serde_json::to_string(&rows)
        }
        Feed::AggTrade => {
            let rows = trades
                .iter()
                .map(|trade| {
                    let (first, last) = agg_ids(trade)?;
                    Ok(RestAggTrade {
                        agg_trade_id: numeric_id(EXCHANGE, trade)?,
                        price: Cow::Owned(trade.price.to_string()),
                        quantity: Cow::Owned(trade.quantity.to_string()),
                        first_trade_id: first,
                        last_trade_id: last,
                        trade_time: trade.exchange_time,
                        is_buyer_maker: side_or_err(EXCHANGE, trade)? == Side::Sell,
                        is_best_match: true,
                    })
                })
                .collect::<Result<Vec<_>, ExchangeError>>()?;
            serde_json::to_string(&rows)
        }
    };
    text.map_err(|e| request_error(EXCHANGE, e.to_string()))
}

/// The `exchangeInfo` body Binance would return for `instruments` (every one
/// `TRADING`, precision 8).
///
/// # Errors
/// [`ExchangeError::Request`] if the body cannot be written.
pub fn encode_instruments(
    instruments: &[Instrument],
    server_time: Millis,
) -> Result<String, ExchangeError> {
    let info = ExchangeInfo {
        timezone: Cow::Borrowed("UTC"),
        server_time,
        symbols: instruments
            .iter()
            .map(|i| SymbolInfo {
                symbol: Cow::Borrowed(&i.symbol),
                status: Cow::Borrowed("TRADING"),
                base_asset: Cow::Borrowed(&i.base),
                base_asset_precision: 8,
                quote_asset: Cow::Borrowed(&i.quote),
                quote_asset_precision: 8,
                is_spot_trading_allowed: Some(true),
            })
            .collect(),
    };
    serde_json::to_string(&info).map_err(|e| request_error(EXCHANGE, e.to_string()))
}

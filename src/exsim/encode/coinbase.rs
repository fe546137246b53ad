//! Coinbase's frames and REST bodies for given trades: what the simulator
//! sends, the inverse of the adapter's parsers.

use super::*;
use crate::ingest::venues::coinbase::*;

/// Deterministic stand-ins for order ids the model does not keep.
fn order_id(trade_id: u64, role: u16) -> String {
    format!("00000000-0000-4000-{role:04x}-{trade_id:012x}")
}

fn maker_side(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Buy => "sell",
        _ => "buy",
    })
}

fn advanced_side(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Buy => "BUY",
        _ => "SELL",
    })
}

fn advanced_trade(trade: &Trade) -> Result<AdvancedTrade<'_>, ExchangeError> {
    numeric_id(EXCHANGE, trade)?;
    Ok(AdvancedTrade {
        product_id: Cow::Borrowed(&trade.symbol),
        trade_id: Cow::Borrowed(&trade.trade_id),
        price: Cow::Owned(trade.price.to_string()),
        size: Cow::Owned(trade.quantity.to_string()),
        time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
        side: Cow::Borrowed(advanced_side(trade)?),
    })
}

/// The frames Coinbase would send for `trades` (oldest first in the input):
/// Exchange, one `match` per trade (order ids and `sequence` are stand-ins
/// derived from the trade id); Advanced Trade, one `market_trades` `update`
/// per run of trades of one product, newest first inside, `sequence_num`
/// counting frames from 0.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side or a non-numeric trade id.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    match feed {
        Feed::ExchangeMatches => trades
            .iter()
            .map(|trade| {
                let id = numeric_id(EXCHANGE, trade)?;
                let price = trade.price.to_string();
                let size = trade.quantity.to_string();
                let wire = Match {
                    kind: Cow::Borrowed("match"),
                    trade_id: id,
                    maker_order_id: Cow::Owned(order_id(id, 0x8000)),
                    taker_order_id: Cow::Owned(order_id(id, 0x9000)),
                    side: Cow::Borrowed(maker_side(trade)?),
                    size: Cow::Borrowed(&size),
                    price: Cow::Borrowed(&price),
                    product_id: Cow::Borrowed(&trade.symbol),
                    sequence: id,
                    time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
                };
                serde_json::to_string(&wire)
                    .map(WireFrame::Text)
                    .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))
            })
            .collect(),
        Feed::AdvancedMarketTrades => trades
            .chunk_by(|a, b| a.symbol == b.symbol)
            .enumerate()
            .map(|(sequence, run)| {
                let rows = run
                    .iter()
                    .rev()
                    .map(advanced_trade)
                    .collect::<Result<Vec<_>, _>>()?;
                let last = &run[run.len() - 1];
                let message = AdvancedMessage {
                    channel: Cow::Borrowed("market_trades"),
                    client_id: Cow::Borrowed(""),
                    timestamp: Cow::Owned(format_iso8601_micros(last.exchange_time)),
                    sequence_num: sequence as u64,
                    events: vec![MarketTradesEvent {
                        kind: Cow::Borrowed("update"),
                        trades: rows,
                    }],
                };
                serde_json::to_string(&message)
                    .map(WireFrame::Text)
                    .map_err(|e| encode_error(EXCHANGE, last, e.to_string()))
            })
            .collect(),
    }
}

/// The REST body Coinbase would return for `trades` (newest first, as Coinbase).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let text = match feed {
        Feed::ExchangeMatches => {
            let rows = trades
                .iter()
                .rev()
                .map(|trade| {
                    Ok(RestTrade {
                        time: Cow::Owned(format_iso8601_micros(trade.exchange_time)),
                        trade_id: numeric_id(EXCHANGE, trade)?,
                        price: Cow::Owned(trade.price.to_string()),
                        size: Cow::Owned(trade.quantity.to_string()),
                        side: Cow::Borrowed(maker_side(trade)?),
                    })
                })
                .collect::<Result<Vec<_>, ExchangeError>>()?;
            serde_json::to_string(&rows)
        }
        Feed::AdvancedMarketTrades => {
            let rows = trades
                .iter()
                .rev()
                .map(advanced_trade)
                .collect::<Result<Vec<_>, _>>()?;
            serde_json::to_string(&RestTicker {
                trades: rows,
                best_bid: Cow::Borrowed(""),
                best_ask: Cow::Borrowed(""),
            })
        }
    };
    text.map_err(|e| request_error(EXCHANGE, e.to_string()))
}

/// The `GET /products` body Coinbase would return for `instruments` (every
/// one `online`).
///
/// # Errors
/// [`ExchangeError::Request`] if the body cannot be written.
pub fn encode_instruments(instruments: &[Instrument]) -> Result<String, ExchangeError> {
    let products: Vec<Product> = instruments
        .iter()
        .map(|i| Product {
            id: Cow::Borrowed(&i.symbol),
            base_currency: Cow::Borrowed(&i.base),
            quote_currency: Cow::Borrowed(&i.quote),
            display_name: Cow::Owned(i.name()),
            status: Cow::Borrowed("online"),
            trading_disabled: false,
        })
        .collect();
    serde_json::to_string(&products).map_err(|e| request_error(EXCHANGE, e.to_string()))
}

//! Bybit's frames and REST bodies for given trades: what the simulator
//! sends, the inverse of the adapter's parsers.

use super::*;
use crate::ingest::venues::bybit::*;

fn side_text(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Buy => "Buy",
        _ => "Sell",
    })
}

/// The messages Bybit would send for `trades`: one `publicTrade` message per
/// run of trades of one symbol, `ts` the last trade's time, `L` worked out
/// from the previous trade of the run.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side or an empty trade id.
pub fn encode_trades(_feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    trades
        .chunk_by(|a, b| a.symbol == b.symbol)
        .map(|run| {
            let mut data = Vec::with_capacity(run.len());
            let mut previous: Option<&Trade> = None;
            let mut direction = "ZeroPlusTick";
            for trade in run {
                if trade.trade_id.is_empty() {
                    return Err(encode_error(EXCHANGE, trade, "empty trade id"));
                }
                if let Some(previous) = previous {
                    direction = match trade.price.cmp(&previous.price) {
                        std::cmp::Ordering::Greater => "PlusTick",
                        std::cmp::Ordering::Less => "MinusTick",
                        std::cmp::Ordering::Equal if direction.contains("Minus") => "ZeroMinusTick",
                        std::cmp::Ordering::Equal => "ZeroPlusTick",
                    };
                }
                previous = Some(trade);
                data.push(PublicTrade {
                    trade_time: trade.exchange_time,
                    symbol: Cow::Borrowed(&trade.symbol),
                    side: Cow::Borrowed(side_text(trade)?),
                    size: Cow::Owned(trade.quantity.to_string()),
                    price: Cow::Owned(trade.price.to_string()),
                    tick_direction: Some(Cow::Borrowed(direction)),
                    trade_id: Cow::Borrowed(&trade.trade_id),
                    block_trade: false,
                });
            }
            let last = &run[run.len() - 1];
            let message = PublicTradeMessage {
                topic: Cow::Owned(topic(&last.symbol)),
                kind: Cow::Borrowed("snapshot"),
                ts: last.exchange_time,
                data,
            };
            serde_json::to_string(&message)
                .map(WireFrame::Text)
                .map_err(|e| encode_error(EXCHANGE, last, e.to_string()))
        })
        .collect()
}

/// The REST body Bybit would return for `trades` (newest first, as Bybit).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let list = trades
        .iter()
        .rev()
        .map(|trade| {
            Ok(RestTrade {
                exec_id: Cow::Borrowed(&trade.trade_id),
                symbol: Cow::Borrowed(&trade.symbol),
                price: Cow::Owned(trade.price.to_string()),
                size: Cow::Owned(trade.quantity.to_string()),
                side: Cow::Borrowed(side_text(trade)?),
                time: Cow::Owned(trade.exchange_time.to_string()),
                is_block_trade: false,
            })
        })
        .collect::<Result<Vec<_>, ExchangeError>>()?;
    let time = trades
        .iter()
        .map(|t| t.exchange_time)
        .max()
        .unwrap_or_default();
    serde_json::to_string(&RestResponse {
        ret_code: 0,
        ret_msg: Cow::Borrowed("OK"),
        result: Some(RestResult {
            category: Cow::Borrowed(feed.as_str()),
            list,
        }),
        time,
    })
    .map_err(|e| request_error(EXCHANGE, e.to_string()))
}

/// The `instruments-info` body Bybit would return for `instruments` of
/// `category` (one page, every one `Trading`).
///
/// # Errors
/// [`ExchangeError::Request`] if the body cannot be written.
pub fn encode_instruments(
    instruments: &[Instrument],
    category: &str,
    time: Millis,
) -> Result<String, ExchangeError> {
    let response = InstrumentsResponse {
        ret_code: 0,
        ret_msg: Cow::Borrowed("OK"),
        result: Some(InstrumentsResult {
            category: Cow::Borrowed(category),
            list: instruments
                .iter()
                .map(|i| BybitInstrument {
                    symbol: Cow::Borrowed(&i.symbol),
                    base_coin: Cow::Borrowed(&i.base),
                    quote_coin: Cow::Borrowed(&i.quote),
                    status: Cow::Borrowed("Trading"),
                })
                .collect(),
            next_page_cursor: (category != "spot").then_some(Cow::Borrowed("")),
        }),
        time,
    };
    serde_json::to_string(&response).map_err(|e| request_error(EXCHANGE, e.to_string()))
}

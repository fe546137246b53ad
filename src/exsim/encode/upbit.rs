//! Upbit's frames and REST bodies for given trades: what the simulator
//! sends, the inverse of the adapter's parsers.

use super::*;
use crate::ingest::venues::upbit::*;

/// `2021-04-17` and `16:51:02` (UTC) of a trade time.
fn date_and_time(time: Millis) -> (String, String) {
    let time = utc(time);
    (
        time.format("%Y-%m-%d").to_string(),
        time.format("%H:%M:%S").to_string(),
    )
}

fn ask_bid(trade: &Trade) -> Result<&'static str, ExchangeError> {
    Ok(match side_or_err(EXCHANGE, trade)? {
        Side::Sell => "ASK",
        _ => "BID",
    })
}

/// The BINARY frames Upbit would send for `trades`, one per trade. Fields the
/// model does not carry are filled plainly: message time = trade time,
/// previous close = price, change `EVEN` by 0, stream type `REALTIME`.
///
/// # Errors
/// [`ExchangeError::Encode`] for an unknown side or a non-numeric trade id.
pub fn encode_trades(feed: Feed, trades: &[Trade]) -> Result<Vec<WireFrame>, ExchangeError> {
    let zero = RawValue::from_string("0".to_string())
        .map_err(|e| request_error(EXCHANGE, e.to_string()))?;
    trades
        .iter()
        .map(|trade| {
            let side = ask_bid(trade)?;
            let id = numeric_id(EXCHANGE, trade)?;
            let price = decimal_raw_value(EXCHANGE, trade, trade.price)?;
            let volume = decimal_raw_value(EXCHANGE, trade, trade.quantity)?;
            let (date, time) = date_and_time(trade.exchange_time);
            let text = match feed {
                Feed::Simple => serde_json::to_string(&SimpleTrade {
                    ty: Cow::Borrowed("trade"),
                    cd: Cow::Borrowed(&trade.symbol),
                    tms: trade.exchange_time,
                    td: Cow::Borrowed(&date),
                    ttm: Cow::Borrowed(&time),
                    ttms: trade.exchange_time,
                    tp: &price,
                    tv: &volume,
                    ab: Cow::Borrowed(side),
                    pcp: &price,
                    c: Cow::Borrowed("EVEN"),
                    cp: &zero,
                    sid: id,
                    st: Cow::Borrowed("REALTIME"),
                }),
                Feed::Default => serde_json::to_string(&DefaultTrade {
                    kind: Cow::Borrowed("trade"),
                    code: Cow::Borrowed(&trade.symbol),
                    timestamp: trade.exchange_time,
                    trade_date: Cow::Borrowed(&date),
                    trade_time: Cow::Borrowed(&time),
                    trade_timestamp: trade.exchange_time,
                    trade_price: &price,
                    trade_volume: &volume,
                    ask_bid: Cow::Borrowed(side),
                    prev_closing_price: &price,
                    change: Cow::Borrowed("EVEN"),
                    change_price: &zero,
                    sequential_id: id,
                    best_ask_price: None,
                    best_ask_size: None,
                    best_bid_price: None,
                    best_bid_size: None,
                    stream_type: Cow::Borrowed("REALTIME"),
                }),
            }
            .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))?;
            Ok(WireFrame::Binary(text.into_bytes()))
        })
        .collect()
}

/// The REST body Upbit would return for `trades` (newest first, as Upbit).
///
/// # Errors
/// As [`encode_trades`].
pub fn encode_rest_trades(_feed: Feed, trades: &[Trade]) -> Result<String, ExchangeError> {
    let zero = RawValue::from_string("0".to_string())
        .map_err(|e| request_error(EXCHANGE, e.to_string()))?;
    let mut rows = Vec::with_capacity(trades.len());
    for trade in trades.iter().rev() {
        let side = ask_bid(trade)?;
        let id = numeric_id(EXCHANGE, trade)?;
        let price = decimal_raw_value(EXCHANGE, trade, trade.price)?;
        let volume = decimal_raw_value(EXCHANGE, trade, trade.quantity)?;
        let (date, time) = date_and_time(trade.exchange_time);
        let row = serde_json::to_string(&RestTrade {
            market: Cow::Borrowed(&trade.symbol),
            trade_date_utc: Cow::Borrowed(&date),
            trade_time_utc: Cow::Borrowed(&time),
            timestamp: trade.exchange_time,
            trade_price: &price,
            trade_volume: &volume,
            prev_closing_price: &price,
            change_price: &zero,
            ask_bid: Cow::Borrowed(side),
            sequential_id: id,
        })
        .map_err(|e| encode_error(EXCHANGE, trade, e.to_string()))?;
        rows.push(row);
    }
    Ok(format!("[{}]", rows.join(",")))
}

/// The `market/all` body Upbit would return for `instruments`; with
/// `details`, each market also carries `"market_warning":"NONE"`. (Both
/// names are the base asset: the simulator knows no others.)
///
/// # Errors
/// [`ExchangeError::Request`] if the body cannot be written.
pub fn encode_instruments(
    instruments: &[Instrument],
    details: bool,
) -> Result<String, ExchangeError> {
    let markets: Vec<Market> = instruments
        .iter()
        .map(|i| Market {
            market: Cow::Borrowed(&i.symbol),
            korean_name: Cow::Borrowed(&i.base),
            english_name: Cow::Borrowed(&i.base),
            market_warning: details.then_some(Cow::Borrowed("NONE")),
        })
        .collect();
    serde_json::to_string(&markets).map_err(|e| request_error(EXCHANGE, e.to_string()))
}

//! Import files: parse Binance public-data CSV and tickfetch trade JSON lines
//! into [`Trade`]s, and turn a file straight into candles.
//!
//! ```text
//! BufRead ─► TradeReader (one line at a time) ─► Row { line, &Trade } ─► CandlePipeline ─► on_candle(&Candle)
//!                  │                                                        │
//!                  └─ bad row: ImportError::BadRow { line, reason } ─► on_error (and the import goes on)
//! ```
//!
//! Formats ([`ImportFormat`]):
//! * `binance-aggtrades-csv`: `agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]`
//!   (spot files have 8 columns, USD-M futures 7);
//! * `binance-trades-csv`: `id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]`;
//! * `trades-jsonl`: one [`Trade`] JSON object per line (the wire form of the
//!   trades topic); each must be of the exchange and symbol imported.
//!
//! CSV files may start with a header row or not. Timestamps are epoch
//! milliseconds or microseconds: values above 10^14 are taken as µs and
//! floored to ms. `is_buyer_maker = true` means the taker sold ([`Side::Sell`]).
//! Prices and quantities are parsed from their text exactly ([`Decimal`]).
//! Imported trades get `receive_time = exchange_time`. A CSV symbol's
//! instrument (`BASE-QUOTE`) comes from the same catalogue the live feed
//! uses (`ingest::venues::instruments`): the exchange's instrument list when
//! one is installed (`tickfetch import` loads it first, as the worker does),
//! else the exchange's built-in rule; a symbol the loaded list lacks is an
//! error ([`ImportError::UnknownSymbol`]).
//!
//! The reader streams: it holds one line and one [`Trade`] at a time, so a file of
//! any size imports in constant memory (the candle engine's own memory aside).
//! A bad row stops nothing: it yields an error with its 1-based line number and
//! the reader goes on; only I/O errors end the read.

use std::fmt;
use std::io::BufRead;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::coord::epoch::Epoch;
use crate::ingest::venues::instruments::{self, Instruments};
use crate::ingest::venues::ExchangeError;
use crate::model::{Candle, Exchange, Interval, Millis, Side, Trade, TRADE_TIMES};
use crate::rollup::engine::{CandlePipeline, EngineError, Outcome, PipelineConfig};
use crate::wire::{clip, quoted, MAX_QUOTED_BYTES};

/// Timestamps above this are microseconds (10^14 ms is the year 5138; 10^14 µs
/// is 1973).
pub const MICROS_THRESHOLD: i64 = 100_000_000_000_000;

/// Errors of the importer.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The format name is not one of [`ImportFormat::ALL`].
    #[error("unknown import format {0:?} (expected one of binance-aggtrades-csv, binance-trades-csv, trades-jsonl)")]
    UnknownFormat(String),
    /// The symbol names no instrument: the loaded instrument list lacks it,
    /// or (without a list) the exchange's built-in rule cannot split it.
    #[error(transparent)]
    UnknownSymbol(ExchangeError),
    /// One row could not be read as a trade; the import goes on.
    #[error("line {line}: {reason}")]
    BadRow { line: u64, reason: RowError },
    /// A trade older than the engine's retention horizon: in no candle.
    #[error(
        "line {line}: trade {trade_id} is older than the retention horizon and is in no candle"
    )]
    TooLate { line: u64, trade_id: String },
    /// Reading the input failed; the import stops.
    #[error("reading line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    /// The candle engine could not be set up (bad config, no interval).
    #[error("candle engine: {0}")]
    Engine(#[from] EngineError),
    /// Publishing to Kafka failed; the import stops.
    #[error("publishing to Kafka: {0}")]
    Publish(#[source] crate::kafka::KafkaError),
}

/// Why one row is not a trade (the import goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A header row with a column count the format does not have.
    #[error("header has {columns} columns; {format} has {min} or {max}")]
    Header {
        columns: usize,
        format: ImportFormat,
        min: usize,
        max: usize,
    },
    /// A data row with a column count the format does not have (counted up
    /// to 9: "more than 8").
    #[error("{} columns; {format} rows have {min} or {max}", column_count(*.count))]
    Columns {
        count: usize,
        format: ImportFormat,
        min: usize,
        max: usize,
    },
    #[error("{name} {} is not a non-negative integer", quoted(.text, MAX_QUOTED_BYTES))]
    NotAnId { name: &'static str, text: String },
    #[error("{name} {} is not a decimal: {source}", quoted(.text, MAX_QUOTED_BYTES))]
    NotADecimal {
        name: &'static str,
        text: String,
        source: rust_decimal::Error,
    },
    #[error("{name} {} is negative", quoted(.text, MAX_QUOTED_BYTES))]
    Negative { name: &'static str, text: String },
    /// A price or quantity of zero: no trade has one.
    #[error("{name} {} is zero (a trade's price and quantity are positive)", quoted(.text, MAX_QUOTED_BYTES))]
    Zero { name: &'static str, text: String },
    #[error("{name} {} is not an integer timestamp", quoted(.text, MAX_QUOTED_BYTES))]
    NotATimestamp { name: &'static str, text: String },
    /// A timestamp outside [`TRADE_TIMES`] (after the µs → ms step): a zero,
    /// seconds, nanoseconds or a corrupt field.
    #[error("{name} {} is not between 2009-01-01 and 2100-01-01 (in ms or µs)", quoted(.text, MAX_QUOTED_BYTES))]
    TimeOutOfRange { name: &'static str, text: String },
    #[error("{name} {} is not true or false", quoted(.text, MAX_QUOTED_BYTES))]
    NotABool { name: &'static str, text: String },
    #[error("last_trade_id {last} is below first_trade_id {first}")]
    IdsOutOfOrder { first: u64, last: u64 },
    /// A `trades-jsonl` line that is not a trade.
    #[error("not a trade: {}", clip(&.0.to_string(), MAX_QUOTED_BYTES))]
    NotATrade(#[source] serde_json::Error),
    /// A `trades-jsonl` trade that cannot be right: its price or quantity is
    /// not positive, its trade id or instrument is empty, its exchange time is outside
    /// [`TRADE_TIMES`], or its raw ids are reversed or half there.
    #[error("not a valid trade: {0}")]
    InvalidTrade(&'static str),
    /// A `trades-jsonl` trade of another exchange or symbol.
    #[error(
        "trade of {exchange}:{} in an import of {expected_exchange}:{expected_symbol}",
        clip(.symbol, MAX_QUOTED_BYTES)
    )]
    OtherSymbol {
        exchange: Exchange,
        symbol: String,
        expected_exchange: Exchange,
        expected_symbol: String,
    },
    /// The candle engine refused the trade.
    #[error(transparent)]
    Engine(EngineError),
}

/// `9` → `more than 8` (rows are split into at most 8 fields and a marker).
fn column_count(count: usize) -> String {
    if count > 8 {
        "more than 8".to_owned()
    } else {
        count.to_string()
    }
}

impl ImportError {
    /// `true` if the import cannot go on; `false` for one bad or too-late row.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            ImportError::BadRow { .. } | ImportError::TooLate { .. }
        )
    }

    /// The 1-based line the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            ImportError::BadRow { line, .. }
            | ImportError::TooLate { line, .. }
            | ImportError::Io { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// The file formats `tickfetch import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportFormat {
    /// `binance-aggtrades-csv`.
    BinanceAggTradesCsv,
    /// `binance-trades-csv`.
    BinanceTradesCsv,
    /// `trades-jsonl`.
    TradesJsonl,
}

impl ImportFormat {
    /// Every format.
    pub const ALL: [ImportFormat; 3] = [
        ImportFormat::BinanceAggTradesCsv,
        ImportFormat::BinanceTradesCsv,
        ImportFormat::TradesJsonl,
    ];

    /// The name used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            ImportFormat::BinanceAggTradesCsv => "binance-aggtrades-csv",
            ImportFormat::BinanceTradesCsv => "binance-trades-csv",
            ImportFormat::TradesJsonl => "trades-jsonl",
        }
    }

    /// Column counts accepted (CSV formats).
    const fn columns(self) -> (usize, usize) {
        match self {
            ImportFormat::BinanceAggTradesCsv => (7, 8),
            ImportFormat::BinanceTradesCsv => (6, 7),
            ImportFormat::TradesJsonl => (0, 0),
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportFormat {
    type Err = ImportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImportFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == s)
            .ok_or_else(|| ImportError::UnknownFormat(s.to_owned()))
    }
}

/// `BASE-QUOTE` for a Binance symbol, exactly as the live feed names it
/// (`venues::binance::instrument`: the installed instrument list, else the
/// longest known quote suffix): `XRPETH` → `XRP-ETH`, `BTCFDUSD` → `BTC-FDUSD`.
///
/// # Errors
/// [`ImportError::UnknownSymbol`] if the installed list lacks the symbol, or
/// (without a list) it is not upper-case letters and digits ending in a known
/// quote asset with a non-empty base before it.
pub fn binance_instrument(symbol: &str) -> Result<String, ImportError> {
    crate::ingest::venues::binance::instrument(symbol).map_err(ImportError::UnknownSymbol)
}

/// Counts of one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadReport {
    /// Lines read, header and blank lines included.
    pub lines: u64,
    /// Data rows (lines that are neither blank nor the header).
    pub rows: u64,
    /// Rows parsed into trades.
    pub trades: u64,
    /// Rows that could not be parsed.
    pub bad_rows: u64,
    /// Whether the file had a header row.
    pub header: bool,
}

/// One parsed row: its 1-based line number and the trade (valid until the
/// next read).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub line: u64,
    pub trade: &'a Trade,
}

/// A streaming reader of one import file, for one exchange and symbol.
///
/// [`TradeReader::next_row`] reuses one line buffer and one [`Trade`]; the
/// [`Iterator`] implementation clones each trade out for convenience.
#[derive(Debug)]
pub struct TradeReader<R> {
    reader: R,
    format: ImportFormat,
    exchange: Exchange,
    symbol: String,
    bytes: Vec<u8>,
    trade: Trade,
    line: u64,
    seen_data: bool,
    done: bool,
    report: ReadReport,
}

impl<R: BufRead> TradeReader<R> {
    /// A reader of `format` rows of `exchange`'s `symbol`, naming CSV
    /// symbols by the process-wide instrument catalogue (the live feed's).
    ///
    /// # Errors
    /// [`ImportError::UnknownSymbol`] for a CSV format whose symbol names no
    /// instrument.
    pub fn new(
        reader: R,
        format: ImportFormat,
        exchange: Exchange,
        symbol: &str,
    ) -> Result<Self, ImportError> {
        Self::with_instruments(reader, format, exchange, symbol, &instruments::installed())
    }

    /// As [`TradeReader::new`], naming CSV symbols by `instruments`.
    ///
    /// # Errors
    /// As [`TradeReader::new`].
    pub fn with_instruments(
        reader: R,
        format: ImportFormat,
        exchange: Exchange,
        symbol: &str,
        instruments: &Instruments,
    ) -> Result<Self, ImportError> {
        let instrument = match format {
            ImportFormat::BinanceAggTradesCsv | ImportFormat::BinanceTradesCsv => instruments
                .name(exchange, symbol)
                .map_err(ImportError::UnknownSymbol)?,
            ImportFormat::TradesJsonl => String::new(),
        };
        Ok(TradeReader {
            reader,
            format,
            exchange,
            symbol: symbol.to_owned(),
            bytes: Vec::with_capacity(256),
            trade: Trade {
                exchange,
                symbol: symbol.to_owned(),
                instrument,
                trade_id: String::new(),
                price: Decimal::ZERO,
                quantity: Decimal::ZERO,
                side: Side::Unknown,
                exchange_time: 0,
                receive_time: 0,
                first_trade_id: None,
                last_trade_id: None,
            },
            line: 0,
            seen_data: false,
            done: false,
            report: ReadReport::default(),
        })
    }

    /// Counts so far.
    pub fn report(&self) -> ReadReport {
        self.report
    }

    /// The next trade, or the error of the next bad row; `None` at the end.
    /// After an [`ImportError::Io`] the reader is done.
    pub fn next_row(&mut self) -> Option<Result<Row<'_>, ImportError>> {
        loop {
            if self.done {
                return None;
            }
            self.bytes.clear();
            match self.reader.read_until(b'\n', &mut self.bytes) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(_) => {}
                Err(source) => {
                    self.done = true;
                    return Some(Err(ImportError::Io {
                        line: self.line + 1,
                        source,
                    }));
                }
            }
            self.line += 1;
            self.report.lines += 1;
            let line = self.line;
            let Ok(text) = std::str::from_utf8(&self.bytes) else {
                self.report.rows += 1;
                self.report.bad_rows += 1;
                return Some(Err(ImportError::BadRow {
                    line,
                    reason: RowError::NotUtf8,
                }));
            };
            let text = text.strip_prefix('\u{feff}').unwrap_or(text).trim();
            if text.is_empty() {
                continue;
            }
            let first_data = !self.seen_data;
            self.seen_data = true;
            if first_data && self.format != ImportFormat::TradesJsonl && is_header(text) {
                self.report.header = true;
                let (min, max) = self.format.columns();
                let columns = text.split(',').count();
                if (min..=max).contains(&columns) {
                    continue;
                }
                self.report.bad_rows += 1;
                return Some(Err(ImportError::BadRow {
                    line,
                    reason: RowError::Header {
                        columns,
                        format: self.format,
                        min,
                        max,
                    },
                }));
            }
            self.report.rows += 1;
            let parsed = match self.format {
                ImportFormat::BinanceAggTradesCsv => parse_aggtrade(text, &mut self.trade),
                ImportFormat::BinanceTradesCsv => parse_binance_trade(text, &mut self.trade),
                ImportFormat::TradesJsonl => {
                    parse_jsonl(text, self.exchange, &self.symbol, &mut self.trade)
                }
            };
            return Some(match parsed {
                Ok(()) => {
                    self.report.trades += 1;
                    Ok(Row {
                        line,
                        trade: &self.trade,
                    })
                }
                Err(reason) => {
                    self.report.bad_rows += 1;
                    Err(ImportError::BadRow { line, reason })
                }
            });
        }
    }
}

impl<R: BufRead> Iterator for TradeReader<R> {
    type Item = Result<Trade, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().map(|row| row.map(|row| row.trade.clone()))
    }
}

/// A first line whose first field is not a number is a header.
fn is_header(text: &str) -> bool {
    let first = text.split(',').next().unwrap_or("").trim();
    first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a CSV line into at most 8 fields (a 9th marks "too many").
fn split_fields(text: &str) -> ([&str; 9], usize) {
    let mut fields = [""; 9];
    let mut count = 0;
    for field in text.split(',') {
        if count == fields.len() {
            break;
        }
        fields[count] = field.trim();
        count += 1;
    }
    (fields, count)
}

fn check_columns(format: ImportFormat, count: usize) -> Result<(), RowError> {
    let (min, max) = format.columns();
    if (min..=max).contains(&count) {
        Ok(())
    } else {
        Err(RowError::Columns {
            count,
            format,
            min,
            max,
        })
    }
}

fn parse_id(name: &'static str, text: &str) -> Result<u64, RowError> {
    text.parse().map_err(|_| RowError::NotAnId {
        name,
        text: text.to_owned(),
    })
}

/// A non-negative decimal (`quote_qty`, which the import does not use).
fn parse_decimal(name: &'static str, text: &str) -> Result<Decimal, RowError> {
    let value = Decimal::from_str(text).map_err(|source| RowError::NotADecimal {
        name,
        text: text.to_owned(),
        source,
    })?;
    if value < Decimal::ZERO {
        return Err(RowError::Negative {
            name,
            text: text.to_owned(),
        });
    }
    Ok(value)
}

/// A price or quantity: a decimal above zero.
fn parse_positive(name: &'static str, text: &str) -> Result<Decimal, RowError> {
    let value = parse_decimal(name, text)?;
    if value.is_zero() {
        return Err(RowError::Zero {
            name,
            text: text.to_owned(),
        });
    }
    Ok(value)
}

/// Epoch ms from ms or µs, within [`TRADE_TIMES`].
fn parse_time(name: &'static str, text: &str) -> Result<Millis, RowError> {
    let value: i64 = text.parse().map_err(|_| RowError::NotATimestamp {
        name,
        text: text.to_owned(),
    })?;
    if value < 0 {
        return Err(RowError::Negative {
            name,
            text: text.to_owned(),
        });
    }
    let millis = if value > MICROS_THRESHOLD {
        value / 1_000
    } else {
        value
    };
    if !TRADE_TIMES.contains(&millis) {
        return Err(RowError::TimeOutOfRange {
            name,
            text: text.to_owned(),
        });
    }
    Ok(millis)
}

fn parse_bool(name: &'static str, text: &str) -> Result<bool, RowError> {
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(RowError::NotABool {
            name,
            text: text.to_owned(),
        })
    }
}

fn taker_side(is_buyer_maker: bool) -> Side {
    if is_buyer_maker {
        Side::Sell
    } else {
        Side::Buy
    }
}

/// `agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]`
fn parse_aggtrade(text: &str, trade: &mut Trade) -> Result<(), RowError> {
    let (f, count) = split_fields(text);
    check_columns(ImportFormat::BinanceAggTradesCsv, count)?;
    parse_id("agg_trade_id", f[0])?;
    let price = parse_positive("price", f[1])?;
    let quantity = parse_positive("quantity", f[2])?;
    let first = parse_id("first_trade_id", f[3])?;
    let last = parse_id("last_trade_id", f[4])?;
    if last < first {
        return Err(RowError::IdsOutOfOrder { first, last });
    }
    let time = parse_time("transact_time", f[5])?;
    let side = taker_side(parse_bool("is_buyer_maker", f[6])?);
    if count == 8 {
        parse_bool("is_best_match", f[7])?;
    }
    trade.trade_id.clear();
    trade.trade_id.push_str(f[0]);
    trade.price = price;
    trade.quantity = quantity;
    trade.side = side;
    trade.exchange_time = time;
    trade.receive_time = time;
    trade.first_trade_id = Some(first);
    trade.last_trade_id = Some(last);
    Ok(())
}

/// `id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]`
fn parse_binance_trade(text: &str, trade: &mut Trade) -> Result<(), RowError> {
    let (f, count) = split_fields(text);
    check_columns(ImportFormat::BinanceTradesCsv, count)?;
    parse_id("id", f[0])?;
    let price = parse_positive("price", f[1])?;
    let quantity = parse_positive("qty", f[2])?;
    parse_decimal("quote_qty", f[3])?;
    let time = parse_time("time", f[4])?;
    let side = taker_side(parse_bool("is_buyer_maker", f[5])?);
    if count == 7 {
        parse_bool("is_best_match", f[6])?;
    }
    trade.trade_id.clear();
    trade.trade_id.push_str(f[0]);
    trade.price = price;
    trade.quantity = quantity;
    trade.side = side;
    trade.exchange_time = time;
    trade.receive_time = time;
    trade.first_trade_id = None;
    trade.last_trade_id = None;
    Ok(())
}

fn parse_jsonl(
    text: &str,
    exchange: Exchange,
    symbol: &str,
    trade: &mut Trade,
) -> Result<(), RowError> {
    let parsed: Trade = serde_json::from_str(text).map_err(RowError::NotATrade)?;
    if let Some(problem) = jsonl_trade_problem(&parsed) {
        return Err(RowError::InvalidTrade(problem));
    }
    if parsed.exchange != exchange || parsed.symbol != symbol {
        return Err(RowError::OtherSymbol {
            exchange: parsed.exchange,
            symbol: parsed.symbol,
            expected_exchange: exchange,
            expected_symbol: symbol.to_owned(),
        });
    }
    *trade = parsed;
    Ok(())
}

/// What is wrong with a `trades-jsonl` trade that the CSV formats cannot
/// produce (the CSV parsers check each field as they read it).
fn jsonl_trade_problem(trade: &Trade) -> Option<&'static str> {
    if trade.price <= Decimal::ZERO {
        Some("price is not positive")
    } else if trade.quantity <= Decimal::ZERO {
        Some("quantity is not positive")
    } else if trade.trade_id.is_empty() {
        Some("empty trade_id")
    } else if trade.instrument.is_empty() {
        Some("empty instrument")
    } else if !TRADE_TIMES.contains(&trade.exchange_time) {
        Some("exchange_time is not between 2009-01-01 and 2100-01-01 (epoch ms)")
    } else if trade.first_trade_id.is_some() != trade.last_trade_id.is_some() {
        Some("only one of first_trade_id and last_trade_id")
    } else if trade.first_trade_id > trade.last_trade_id {
        Some("last_trade_id is below first_trade_id")
    } else {
        None
    }
}

/// Counts of one [`candles_from_reader`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// What the reader saw.
    pub read: ReadReport,
    /// Trades merged into open windows.
    pub accepted: u64,
    /// Trades already counted (same trade id).
    pub duplicates: u64,
    /// Late trades merged into closed windows (corrected candles).
    pub corrected: u64,
    /// Trades beyond the retention horizon (reported through `on_error`).
    pub too_late: u64,
    /// Candles handed to `on_candle`.
    pub candles: u64,
}

/// Reads a whole file through the candle pipeline: calls `on_candle` for every
/// candle of `intervals` in emission order (corrections included, each with its
/// revision), and `on_error` for each bad or too-late row, then closes every
/// window at the end of input.
///
/// # Errors
/// Terminal errors only: [`ImportError::UnknownSymbol`], [`ImportError::Engine`]
/// (bad config, no interval) and [`ImportError::Io`]. Bad rows go to `on_error`.
#[allow(clippy::too_many_arguments)]
pub fn candles_from_reader<R: BufRead>(
    reader: R,
    format: ImportFormat,
    exchange: Exchange,
    symbol: &str,
    intervals: &[Interval],
    config: PipelineConfig,
    mut on_candle: impl FnMut(&Candle),
    mut on_error: impl FnMut(&ImportError),
) -> Result<ImportReport, ImportError> {
    let mut pipeline = CandlePipeline::new(intervals, config)?;
    let mut rows = TradeReader::new(reader, format, exchange, symbol)?;
    let mut report = ImportReport::default();
    let mut out = Vec::new();
    loop {
        let error = match rows.next_row() {
            None => break,
            Some(Ok(row)) => match pipeline.on_trade(row.trade, &mut out) {
                Ok(Outcome::Accepted) => {
                    report.accepted += 1;
                    None
                }
                Ok(Outcome::Duplicate) => {
                    report.duplicates += 1;
                    None
                }
                Ok(Outcome::Corrected) => {
                    report.corrected += 1;
                    None
                }
                Ok(Outcome::TooLate) => {
                    report.too_late += 1;
                    Some(ImportError::TooLate {
                        line: row.line,
                        trade_id: row.trade.trade_id.clone(),
                    })
                }
                Err(e) if e.is_terminal() => return Err(e.into()),
                Err(e) => Some(ImportError::BadRow {
                    line: row.line,
                    reason: RowError::Engine(e),
                }),
            },
            Some(Err(e)) if e.is_terminal() => return Err(e),
            Some(Err(e)) => Some(e),
        };
        if let Some(error) = error {
            on_error(&error);
        }
        for candle in out.drain(..) {
            report.candles += 1;
            on_candle(&candle);
        }
    }
    pipeline.finish(&mut out)?;
    for candle in out.drain(..) {
        report.candles += 1;
        on_candle(&candle);
    }
    report.read = rows.report();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CandleStatus;
    use std::io::Cursor;

    fn read_all(
        format: ImportFormat,
        symbol: &str,
        text: &str,
    ) -> (Vec<Result<Trade, String>>, ReadReport) {
        let mut reader = TradeReader::new(
            Cursor::new(text.as_bytes()),
            format,
            Exchange::Binance,
            symbol,
        )
        .expect("reader");
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row() {
            rows.push(row.map(|r| r.trade.clone()).map_err(|e| e.to_string()));
        }
        (rows, reader.report())
    }

    #[test]
    fn binance_symbols_split_into_instruments() {
        for (symbol, expected) in [
            ("XRPETH", Some("XRP-ETH")),
            ("BTCUSDT", Some("BTC-USDT")),
            ("ETHBUSD", Some("ETH-BUSD")),
            ("BTCFDUSD", Some("BTC-FDUSD")),
            ("BNBBTC", Some("BNB-BTC")),
            ("USDTTRY", Some("USDT-TRY")),
            ("1000SATSUSDT", Some("1000SATS-USDT")),
            ("USDT", None),
            ("XRPQQQ", None),
            ("btcusdt", None),
            ("BTC-USDT", None),
            ("", None),
        ] {
            let got = binance_instrument(symbol).ok();
            assert_eq!(got.as_deref(), expected, "{symbol}");
        }
        let err = binance_instrument("XRPQQQ").expect_err("unknown quote");
        assert!(err.to_string().contains("\"XRPQQQ\""), "{err}");
        assert!(err.is_terminal());
    }

    #[test]
    fn formats_parse_from_their_names() {
        for format in ImportFormat::ALL {
            assert_eq!(format.as_str().parse::<ImportFormat>().ok(), Some(format));
        }
        assert!(matches!(
            "csv".parse::<ImportFormat>(),
            Err(ImportError::UnknownFormat(_))
        ));
    }

    #[test]
    fn aggtrade_rows_parse_with_and_without_header_in_ms_and_us() {
        let expected_time = 1_570_752_011_620;
        for (name, text) in [
            (
                "spot with header",
                "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n13519807,0.00141342,23.00000000,15373518,15373520,1570752011620,true,true\n",
            ),
            ("spot without header", "13519807,0.00141342,23.00000000,15373518,15373520,1570752011620,True,True"),
            ("futures 7 columns", "13519807,0.00141342,23.00000000,15373518,15373520,1570752011620,true\r\n"),
            ("microseconds", "13519807,0.00141342,23.00000000,15373518,15373520,1570752011620999,true,true\n"),
        ] {
            let (rows, report) = read_all(ImportFormat::BinanceAggTradesCsv, "XRPETH", text);
            assert_eq!(rows.len(), 1, "{name}");
            let trade = rows[0].as_ref().expect(name);
            assert_eq!(trade.trade_id, "13519807", "{name}");
            assert_eq!(trade.price.to_string(), "0.00141342", "{name}");
            assert_eq!(trade.quantity.to_string(), "23.00000000", "{name}");
            assert_eq!(trade.instrument, "XRP-ETH", "{name}");
            assert_eq!(trade.side, Side::Sell, "{name}: buyer maker = taker sold");
            assert_eq!((trade.exchange_time, trade.receive_time), (expected_time, expected_time), "{name}");
            assert_eq!(trade.trade_count(), 3, "{name}");
            assert_eq!((report.rows, report.trades, report.bad_rows), (1, 1, 0), "{name}");
            assert_eq!(report.header, name.contains("header") && !name.contains("without"), "{name}");
        }
    }

    #[test]
    fn trade_rows_parse() {
        let text = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n\
                    28457,4261.61000000,0.00500000,21.30805000,1640995200000,false,true\n\
                    28458,4261.60000000,0.01000000,42.61600000,1640995200001123,true\n";
        let (rows, report) = read_all(ImportFormat::BinanceTradesCsv, "ETHUSDT", text);
        assert_eq!(
            report,
            ReadReport {
                lines: 3,
                rows: 2,
                trades: 2,
                bad_rows: 0,
                header: true
            }
        );
        let a = rows[0].as_ref().expect("row 1");
        assert_eq!(
            (a.side, a.exchange_time, a.first_trade_id),
            (Side::Buy, 1_640_995_200_000, None)
        );
        assert_eq!(a.instrument, "ETH-USDT");
        let b = rows[1].as_ref().expect("row 2");
        assert_eq!(
            (b.trade_id.as_str(), b.side, b.exchange_time),
            ("28458", Side::Sell, 1_640_995_200_001)
        );
    }

    #[test]
    fn bad_rows_carry_their_line_and_stop_nothing() {
        let text = "1,0.5,1,1,1,1570752011620,true,true\n\
                    \n\
                    2,abc,1,2,2,1570752011620,true,true\n\
                    3,0.5,1,3,3,1570752011620,maybe,true\n\
                    4,0.5,1,4\n\
                    5,0.5,1,5,4,1570752011620,true,true\n\
                    6,-0.5,1,6,6,1570752011620,true,true\n\
                    7,0.5,1,7,7,1570752011620,true,true,x\n\
                    8,0.5,1,8,8,1570752011620,false,true\n";
        let (rows, report) = read_all(ImportFormat::BinanceAggTradesCsv, "XRPETH", text);
        let errors: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.as_ref().err().map(String::as_str))
            .collect();
        for (i, (line, needle)) in [
            (3, "price \"abc\""),
            (4, "is_buyer_maker \"maybe\""),
            (5, "4 columns"),
            (6, "below first_trade_id"),
            (7, "negative"),
            (8, "more than 8 columns"),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                errors[i].starts_with(&format!("line {line}: ")),
                "{}",
                errors[i]
            );
            assert!(errors[i].contains(needle), "{}", errors[i]);
        }
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|t| t.trade_id.clone()))
            .collect();
        assert_eq!(ids, ["1", "8"]);
        assert_eq!(
            report,
            ReadReport {
                lines: 9,
                rows: 8,
                trades: 2,
                bad_rows: 6,
                header: false
            }
        );
    }

    #[test]
    fn jsonl_rows_parse_and_must_match_the_symbol() {
        let good = r#"{"exchange":"binance","symbol":"XRPETH","instrument":"XRP-ETH","trade_id":"1","price":"0.5","quantity":"2","side":"buy","exchange_time":1570752011620,"receive_time":1005}"#;
        let other = good.replace("XRPETH", "BTCUSDT");
        let text = format!("{good}\n{other}\nnot json\n");
        let (rows, report) = read_all(ImportFormat::TradesJsonl, "XRPETH", &text);
        let trade = rows[0].as_ref().expect("row 1");
        assert_eq!((trade.receive_time, trade.side), (1005, Side::Buy));
        assert!(rows[1]
            .as_ref()
            .expect_err("row 2")
            .contains("binance:BTCUSDT"));
        assert!(rows[2]
            .as_ref()
            .expect_err("row 3")
            .starts_with("line 3: not a trade"));
        assert_eq!((report.trades, report.bad_rows), (1, 2));
    }

    /// Found by `tests/fuzz.rs`: a zero price or quantity, and times no
    /// trade has (zero, seconds, far future), were accepted.
    #[test]
    fn zero_prices_and_implausible_times_are_bad_rows() {
        let text = "1,0,1,1,1,1570752011620,true,true\n\
                    2,0.5,0.000,2,2,1570752011620,true,true\n\
                    3,-0,1,3,3,1570752011620,true,true\n\
                    4,0.5,1,4,4,0,true,true\n\
                    5,0.5,1,5,5,1570752011,true,true\n\
                    6,0.5,1,6,6,99999999999999,true,true\n\
                    7,0.5,1,7,7,9223372036854775807,true,true\n\
                    8,0.5,1,8,8,1570752011620,true,true\n";
        let (rows, _) = read_all(ImportFormat::BinanceAggTradesCsv, "XRPETH", text);
        let errors: Vec<String> = rows.iter().filter_map(|r| r.clone().err()).collect();
        for (i, needle) in [
            "price \"0\" is zero",
            "quantity \"0.000\" is zero",
            "price \"-0\" is zero",
            "transact_time \"0\" is not between",
            "transact_time \"1570752011\" is not between",
            "transact_time \"99999999999999\" is not between",
            "transact_time \"9223372036854775807\" is not between",
        ]
        .into_iter()
        .enumerate()
        {
            assert!(errors[i].contains(needle), "{}: {needle}", errors[i]);
        }
        assert_eq!(errors.len(), 7);
        let (rows, _) = read_all(
            ImportFormat::BinanceTradesCsv,
            "ETHUSDT",
            "1,0.0,1,0,1640995200000,false,true\n2,1,1,0,1640995200000,false,true\n",
        );
        assert!(rows[0]
            .as_ref()
            .unwrap_err()
            .contains("price \"0.0\" is zero"));
        assert!(
            rows[1].is_ok(),
            "a zero quote_qty is not used: {:?}",
            rows[1]
        );
    }

    /// Found by `tests/fuzz.rs`: `trades-jsonl` took any trade serde could
    /// read, e.g. a negative price or an `exchange_time` of `i64::MIN`
    /// (whose 1s window start overflows in `publish_from_reader`).
    #[test]
    fn jsonl_trades_that_cannot_be_right_are_bad_rows() {
        let good = r#"{"exchange":"binance","symbol":"XRPETH","instrument":"XRP-ETH","trade_id":"1","price":"0.5","quantity":"2","side":"buy","exchange_time":1570752011620,"receive_time":1570752011620,"first_trade_id":3,"last_trade_id":4}"#;
        let cases = [
            (
                r#""price":"0.5""#,
                r#""price":"-0.5""#,
                "price is not positive",
            ),
            (
                r#""price":"0.5""#,
                r#""price":"0""#,
                "price is not positive",
            ),
            (
                r#""quantity":"2""#,
                r#""quantity":"0.0""#,
                "quantity is not positive",
            ),
            (r#""trade_id":"1""#, r#""trade_id":"""#, "empty trade_id"),
            (
                r#""instrument":"XRP-ETH""#,
                r#""instrument":"""#,
                "empty instrument",
            ),
            (
                r#""exchange_time":1570752011620"#,
                r#""exchange_time":-9223372036854775808"#,
                "exchange_time is not between",
            ),
            (
                r#""exchange_time":1570752011620"#,
                r#""exchange_time":1570752011"#,
                "exchange_time is not between",
            ),
            (
                r#""last_trade_id":4"#,
                r#""last_trade_id":2"#,
                "below first_trade_id",
            ),
            (r#","last_trade_id":4"#, "", "only one of"),
        ];
        let text: Vec<String> = cases
            .iter()
            .map(|(from, to, _)| good.replace(from, to))
            .chain([good.to_string()])
            .collect();
        let (rows, report) = read_all(ImportFormat::TradesJsonl, "XRPETH", &text.join("\n"));
        for (row, (_, _, needle)) in rows.iter().zip(&cases) {
            let error = row.as_ref().expect_err(needle);
            assert!(error.contains(needle), "{error}: {needle}");
        }
        assert!(rows[cases.len()].is_ok());
        assert_eq!((report.trades, report.bad_rows), (1, cases.len() as u64));
    }

    #[test]
    fn row_errors_quote_a_bounded_part_of_the_field() {
        let long = "9".repeat(100_000);
        let text = format!("1,0.5,1,1,1,{long}x,true,true\n1,{long}.x,1,1,1,1570752011620,true\n");
        let (rows, _) = read_all(ImportFormat::BinanceAggTradesCsv, "XRPETH", &text);
        for row in rows {
            let error = row.expect_err("bad row");
            assert!(error.len() < 1024, "{} bytes", error.len());
        }
    }

    #[test]
    fn candles_from_reader_builds_candles_and_reports() {
        let text = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match\n\
                    1,2.0,1,10,10,1570752000100,false,true\n\
                    2,3.0,1,11,12,1570752000200,true,true\n\
                    2,3.0,1,11,12,1570752000200,true,true\n\
                    3,oops,1,13,13,1570752000300,true,true\n\
                    4,1.0,1,14,14,1570752002100,true,true\n\
                    5,9.0,1,15,15,1570751000000,true,true\n";
        let mut candles = Vec::new();
        let mut errors = Vec::new();
        let report = candles_from_reader(
            Cursor::new(text.as_bytes()),
            ImportFormat::BinanceAggTradesCsv,
            Exchange::Binance,
            "XRPETH",
            &[Interval::S1, Interval::S5],
            PipelineConfig::default(),
            |c| candles.push(c.clone()),
            |e| errors.push((e.line(), e.to_string())),
        )
        .expect("import");
        let got: Vec<(Interval, Millis, CandleStatus, u64)> = candles
            .iter()
            .map(|c| {
                (
                    c.interval,
                    c.open_time - 1_570_752_000_000,
                    c.status,
                    c.trade_count,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Interval::S1, 0, CandleStatus::Complete, 3),
                (Interval::S1, 1_000, CandleStatus::Quiet, 0),
                (Interval::S1, 2_000, CandleStatus::Complete, 1),
                (Interval::S5, 0, CandleStatus::Complete, 4),
            ]
        );
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![Some(5), Some(7)]
        );
        assert!(errors[1].1.contains("trade 5"), "{}", errors[1].1);
        assert_eq!(
            (
                report.accepted,
                report.duplicates,
                report.too_late,
                report.corrected,
                report.candles
            ),
            (3, 1, 1, 0, 4)
        );
        assert_eq!(
            (report.read.rows, report.read.trades, report.read.bad_rows),
            (6, 5, 1)
        );
        let no_intervals = candles_from_reader(
            Cursor::new(text.as_bytes()),
            ImportFormat::BinanceAggTradesCsv,
            Exchange::Binance,
            "XRPETH",
            &[],
            PipelineConfig::default(),
            |_| {},
            |_| {},
        );
        assert!(matches!(
            no_intervals,
            Err(ImportError::Engine(EngineError::NoIntervals))
        ));
    }
}

/// Counts of one [`publish_from_reader`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    /// What the reader saw.
    pub read: ReadReport,
    /// Trades queued to the trades topic.
    pub trades: u64,
    /// Watermark records queued.
    pub watermarks: u64,
}

/// Reads a whole file into the trades topic, as a worker would publish it: each
/// trade keyed `exchange:symbol`, a watermark each time the trades enter a new
/// second (nothing earlier follows), and, when `close_with_grace` is given, a
/// last watermark at the end of the 5m window of the last trade plus that grace,
/// so that every window of the file closes at every level and no later one
/// opens (leave it out when more of the same symbol follows). Bad rows go to
/// `on_error`. The caller flushes the publisher.
///
/// # Errors
/// Terminal errors only: an unknown symbol, I/O, or a Kafka producer error
/// (wrapped as [`ImportError::Publish`]).
pub fn publish_from_reader<R: BufRead>(
    reader: R,
    format: ImportFormat,
    exchange: Exchange,
    symbol: &str,
    close_with_grace: Option<Millis>,
    publisher: &mut crate::ingest::output::publisher::TradePublisher,
    mut on_error: impl FnMut(&ImportError),
) -> Result<PublishReport, ImportError> {
    let mut rows = TradeReader::new(reader, format, exchange, symbol)?;
    let mut report = PublishReport::default();
    let mut last_second: Option<Millis> = None;
    let mut last_time: Option<Millis> = None;
    let publish = ImportError::Publish;
    while let Some(row) = rows.next_row() {
        match row {
            Ok(row) => {
                let time = row.trade.exchange_time;
                let second = Interval::S1.window_start(time);
                if last_second.is_some_and(|s| second > s) {
                    publisher
                        .send_watermark(exchange, symbol, second, Epoch::NONE)
                        .map_err(publish)?;
                    report.watermarks += 1;
                }
                last_second = Some(last_second.map_or(second, |s| s.max(second)));
                last_time = Some(last_time.map_or(time, |t| t.max(time)));
                publisher
                    .send_trade(row.trade, Epoch::NONE)
                    .map_err(publish)?;
                report.trades += 1;
            }
            Err(error) if error.is_terminal() => return Err(error),
            Err(error) => on_error(&error),
        }
    }
    if let (Some(last), Some(grace_ms)) = (last_time, close_with_grace) {
        let end = Interval::M5.window_start(last) + Interval::M5.millis();
        publisher
            .send_watermark(exchange, symbol, end + grace_ms, Epoch::NONE)
            .map_err(publish)?;
        report.watermarks += 1;
    }
    report.read = rows.report();
    Ok(report)
}

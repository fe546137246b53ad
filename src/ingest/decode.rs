//! Decoding recorded or piped exchange frames into normalised trades: the core
//! of `tickfetch decode --exchange NAME [--file PATH]`, and a way for tests to
//! replay recordings through the same parser the worker runs.
//!
//! Input is lines. Each line is one of:
//!
//! - a recording object (the shared `*_extract_*.jsonl` files):
//!   `{"recv_ts":1633998523.957215,"dir":"in","raw":"<payload>"…}`; only
//!   `dir == "in"` lines are frames, and their receive time is `recv_ts`
//!   (seconds, converted from the decimal text to ms, truncating);
//! - a cryptofeed capture line: `<recv_ts>: <payload>` (a Python `b'…'` repr
//!   for binary frames), with `<url> <-> <ts>` (connect) and
//!   `<url> <- <ts>: <sent>` (out) lines skipped;
//! - anything else: one exchange frame as received (JSON, or OKX's `pong`),
//!   stamped with the caller's clock value.
//!
//! [`decode_reader`] streams: it hands each trade to a callback, counts frames
//! by kind, and records malformed lines by 1-based line number with the
//! adapter's message, then goes on with the next line.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ingest::venues::{self, ExchangeError, Frame, MAX_PROBLEM_BYTES};
use crate::model::{Exchange, Millis, Trade};
use crate::wire::clip;

/// Malformed lines kept in a [`DecodeReport`]; later ones are only counted.
pub const MAX_MALFORMED_KEPT: usize = 1000;

/// What a decode run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Lines read.
    pub lines: u64,
    /// Lines that held a received frame (decoded or not).
    pub frames: u64,
    /// Blank lines and recorded connect/sent lines.
    pub skipped: u64,
    /// Trades handed to the callback.
    pub trades: u64,
    /// Decoded frames by [`Frame::kind`]: `trades`, `subscribe_ack`, `pong`,
    /// `kline_1m`, `l2update`, …
    pub frames_by_kind: BTreeMap<String, u64>,
    /// The first [`MAX_MALFORMED_KEPT`] lines that failed, in order.
    pub malformed: Vec<MalformedLine>,
    /// All lines that failed.
    pub malformed_total: u64,
}

impl DecodeReport {
    /// Frames that were not trades, by kind.
    pub fn non_trade_frames(&self) -> impl Iterator<Item = (&str, u64)> {
        self.frames_by_kind
            .iter()
            .filter(|(kind, _)| kind.as_str() != "trades")
            .map(|(kind, count)| (kind.as_str(), *count))
    }
}

impl fmt::Display for DecodeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} lines, {} frames, {} trades, {} malformed, {} skipped",
            self.lines, self.frames, self.trades, self.malformed_total, self.skipped
        )?;
        let others: Vec<String> = self
            .non_trade_frames()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        if !others.is_empty() {
            write!(f, "; other frames: {}", others.join(", "))?;
        }
        Ok(())
    }
}

/// A line that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLine {
    /// 1-based.
    pub line: u64,
    pub message: String,
}

/// Errors of decoding. Reading or writing stops a run ([`is_terminal`]);
/// a bad line is reported and skipped.
///
/// [`is_terminal`]: DecodeError::is_terminal
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("reading line {line}: {source}")]
    Read { line: u64, source: io::Error },
    #[error("writing the trades of line {line}: {source}")]
    Output { line: u64, source: io::Error },
    /// A recording line whose wrapper (not the exchange frame) is bad. The
    /// message shows at most [`MAX_PROBLEM_BYTES`] of the description (which
    /// quotes the line).
    #[error("bad recording line: {}", clip(.0, MAX_PROBLEM_BYTES))]
    Recording(String),
    /// The exchange frame is bad.
    #[error(transparent)]
    Frame(#[from] ExchangeError),
}

impl DecodeError {
    /// True when the run cannot go on (the input or output failed).
    pub fn is_terminal(&self) -> bool {
        matches!(self, DecodeError::Read { .. } | DecodeError::Output { .. })
    }
}

/// One input line, unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Nothing to decode: blank, or a recorded connect/sent line.
    Skip,
    /// A received frame and when it was received.
    Frame {
        payload: Cow<'a, [u8]>,
        receive_time: Millis,
    },
}

/// A line of an `*_extract_*.jsonl` recording.
#[derive(Debug, Deserialize)]
struct RecordingLine<'a> {
    #[serde(borrow)]
    recv_ts: &'a RawValue,
    #[serde(borrow)]
    dir: Cow<'a, str>,
    #[serde(borrow, default)]
    raw: Option<Cow<'a, str>>,
}

/// Unwrap one line: recording object, cryptofeed capture line, or bare frame
/// (received at `clock`).
///
/// # Errors
/// [`DecodeError::Recording`] for a recording line that is not well formed.
pub fn unwrap_line(line: &[u8], clock: Millis) -> Result<Line<'_>, DecodeError> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(Line::Skip);
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Ok(Line::Frame {
            payload: Cow::Borrowed(trimmed),
            receive_time: clock,
        });
    };
    if text.starts_with('{') && text.contains("\"recv_ts\"") {
        return recording_line(text);
    }
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        if let Some((stamp, payload)) = text.split_once(": ") {
            let receive_time = seconds_to_millis(stamp)?;
            let payload = match python_bytes_literal(payload) {
                Some(bytes) => Cow::Owned(bytes?),
                None => Cow::Borrowed(payload.as_bytes()),
            };
            return Ok(Line::Frame {
                payload,
                receive_time,
            });
        }
    }
    let is_capture_event = (text.starts_with("ws") || text.starts_with("http"))
        && (text.contains(" <-> ") || text.contains(" <- "));
    if is_capture_event {
        return Ok(Line::Skip);
    }
    Ok(Line::Frame {
        payload: Cow::Borrowed(trimmed),
        receive_time: clock,
    })
}

fn recording_line(text: &str) -> Result<Line<'_>, DecodeError> {
    let line: RecordingLine = serde_json::from_str(text)
        .map_err(|e| DecodeError::Recording(format!("{e}: {}", short(text))))?;
    if line.dir != "in" {
        return Ok(Line::Skip);
    }
    let receive_time = seconds_to_millis(line.recv_ts.get())?;
    let raw = line.raw.ok_or_else(|| {
        DecodeError::Recording(format!("an `in` line without `raw`: {}", short(text)))
    })?;
    Ok(Line::Frame {
        payload: match raw {
            Cow::Borrowed(raw) => Cow::Borrowed(raw.as_bytes()),
            Cow::Owned(raw) => Cow::Owned(raw.into_bytes()),
        },
        receive_time,
    })
}

fn short(text: &str) -> String {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}…", &text[..end])
    } else {
        text.to_string()
    }
}

/// Epoch seconds as decimal text (`1633998523.957215`) to epoch ms, exactly
/// from the digits (truncating below the millisecond), never through `f64`.
///
/// # Errors
/// [`DecodeError::Recording`] for anything but `digits[.digits]`.
pub fn seconds_to_millis(text: &str) -> Result<Millis, DecodeError> {
    let bad = || {
        DecodeError::Recording(format!(
            "bad receive time {text:?}: expected seconds like 1633998523.957215"
        ))
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let seconds: Millis = whole.parse().map_err(|_| bad())?;
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |acc, b| acc * 10 + Millis::from(b - b'0'));
    seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(bad)
}

/// Decode a Python `bytes` repr (`b'…'` or `b"…"`), as cryptofeed logs binary
/// frames. `None` when `text` is not one.
fn python_bytes_literal(text: &str) -> Option<Result<Vec<u8>, DecodeError>> {
    let quote = match text.get(..2)? {
        "b'" => '\'',
        "b\"" => '"',
        _ => return None,
    };
    let body = text[2..].strip_suffix(quote)?;
    let bad =
        |what: &str| DecodeError::Recording(format!("bad bytes literal ({what}): {}", short(text)));
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'\'') => out.push(b'\''),
            Some(b'"') => out.push(b'"'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let [Some(hi), Some(lo)] = hex else {
                    return Some(Err(bad("short \\x escape")));
                };
                let digits = [hi, lo];
                let Some(value) = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                else {
                    return Some(Err(bad("bad \\x escape")));
                };
                out.push(value);
            }
            _ => return Some(Err(bad("unknown escape"))),
        }
    }
    Some(Ok(out))
}

/// Decode one line: `None` when there is nothing to decode.
///
/// # Errors
/// [`DecodeError::Recording`] or [`DecodeError::Frame`] for a bad line.
pub fn decode_line(
    exchange: Exchange,
    line: &[u8],
    clock: Millis,
) -> Result<Option<Frame>, DecodeError> {
    match unwrap_line(line, clock)? {
        Line::Skip => Ok(None),
        Line::Frame {
            payload,
            receive_time,
        } => Ok(Some(venues::parse_frame(exchange, &payload, receive_time)?)),
    }
}

/// Decode every line of `reader`, handing each trade to `on_trade` in input
/// order. Bare frames are stamped with `clock`. Bad lines are recorded in the
/// report and skipped.
///
/// # Errors
/// [`DecodeError::Read`] when reading fails, [`DecodeError::Output`] when
/// `on_trade` fails; both stop the run.
pub fn decode_reader<R, F>(
    exchange: Exchange,
    mut reader: R,
    clock: Millis,
    mut on_trade: F,
) -> Result<DecodeReport, DecodeError>
where
    R: BufRead,
    F: FnMut(Trade) -> io::Result<()>,
{
    let mut report = DecodeReport::default();
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let line_number = report.lines + 1;
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|source| DecodeError::Read {
                line: line_number,
                source,
            })?;
        if read == 0 {
            return Ok(report);
        }
        report.lines = line_number;
        let outcome = match unwrap_line(&buffer, clock) {
            Ok(Line::Skip) => {
                report.skipped += 1;
                continue;
            }
            Ok(Line::Frame {
                payload,
                receive_time,
            }) => {
                report.frames += 1;
                venues::parse_frame(exchange, &payload, receive_time).map_err(DecodeError::from)
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(frame) => {
                *report
                    .frames_by_kind
                    .entry(frame.kind().to_string())
                    .or_default() += 1;
                if let Frame::Trades(trades) = frame {
                    for trade in trades {
                        on_trade(trade).map_err(|source| DecodeError::Output {
                            line: line_number,
                            source,
                        })?;
                        report.trades += 1;
                    }
                }
            }
            Err(error) => {
                report.malformed_total += 1;
                if report.malformed.len() < MAX_MALFORMED_KEPT {
                    report.malformed.push(MalformedLine {
                        line: line_number,
                        message: error.to_string(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    const AGG: &str = r#"{"stream":"lrcbtc@aggTrade","data":{"e":"aggTrade","E":1633998534486,"s":"LRCBTC","a":9213679,"p":"0.00000638","q":"177.00000000","f":12368013,"l":12368013,"T":1633998534486,"m":false,"M":true}}"#;

    #[test]
    fn receive_times_come_from_the_decimal_text() {
        for (text, expected) in [
            ("1633998523.957215", 1_633_998_523_957),
            ("1618678263.7055109", 1_618_678_263_705),
            ("1633998534.48106", 1_633_998_534_481),
            ("1652459224.5", 1_652_459_224_500),
            ("1652459224", 1_652_459_224_000),
            ("0.0009", 0),
        ] {
            assert_eq!(seconds_to_millis(text).unwrap(), expected, "{text}");
        }
        for bad in ["", "-1.5", "1e9", "1.2.3", "abc", ".5"] {
            assert!(seconds_to_millis(bad).is_err(), "{bad}");
        }
    }

    /// The payload and receive time a line should unwrap to, if any.
    type Expected = Option<(&'static [u8], Millis)>;

    #[test]
    fn lines_unwrap_from_every_format() {
        let recorded =
            serde_json::json!({"recv_ts": 1633998534.481201, "dir": "in", "raw": AGG}).to_string();
        let cases: Vec<(&str, String, Expected)> = vec![
            (
                "recording in",
                recorded,
                Some((AGG.as_bytes(), 1_633_998_534_481)),
            ),
            (
                "recording out",
                r#"{"recv_ts": 1.5, "dir": "out", "raw": "x"}"#.into(),
                None,
            ),
            (
                "recording connect",
                r#"{"recv_ts": 1.5, "dir": "connect", "url": "wss://x"}"#.into(),
                None,
            ),
            (
                "capture",
                format!("1633998534.481201: {AGG}"),
                Some((AGG.as_bytes(), 1_633_998_534_481)),
            ),
            (
                "capture bytes",
                r#"1618678263.010785: b'{"ty":"trade","s":"it\'s\x41"}'"#.into(),
                Some((
                    br#"{"ty":"trade","s":"it'sA"}"#.as_slice(),
                    1_618_678_263_010,
                )),
            ),
            (
                "capture connect",
                "wss://api.upbit.com/websocket/v1 <-> 1618678261.681707".into(),
                None,
            ),
            (
                "capture sent",
                r#"wss://x <- 1618678262.670261: [{"ticket":"t"}]"#.into(),
                None,
            ),
            ("bare", format!("  {AGG}\n"), Some((AGG.as_bytes(), 42))),
            ("pong", "pong".into(), Some((b"pong".as_slice(), 42))),
            ("blank", "  \n".into(), None),
        ];
        for (name, line, expected) in cases {
            let got = unwrap_line(line.as_bytes(), 42).unwrap();
            let expected = match expected {
                None => Line::Skip,
                Some((payload, receive_time)) => Line::Frame {
                    payload: Cow::Borrowed(payload),
                    receive_time,
                },
            };
            assert_eq!(got, expected, "{name}");
        }
        assert!(unwrap_line(br#"{"recv_ts": 1.5, "dir": "in"}"#, 0).is_err());
        assert!(unwrap_line(br#"{"recv_ts": "x", "dir": "in", "raw": "{}"}"#, 0).is_err());
    }

    #[test]
    fn a_run_reports_kinds_and_bad_lines_and_goes_on() {
        let input = [
            AGG.to_string(),
            String::new(),
            r#"{"stream":"lrcbtc@kline_1m","data":{"e":"kline"}}"#.to_string(),
            AGG[..50].to_string(),
            AGG.replace(r#""p":"0.00000638""#, r#""p":"0.000x""#),
            r#"{"result":null,"id":1}"#.to_string(),
            AGG.replace("9213679", "9213680"),
        ]
        .join("\n");
        let mut trades = Vec::new();
        let report = decode_reader(Exchange::Binance, input.as_bytes(), 5, |t| {
            trades.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            (report.lines, report.frames, report.skipped, report.trades),
            (7, 6, 1, 2)
        );
        assert_eq!(
            report.malformed.iter().map(|m| m.line).collect::<Vec<_>>(),
            [4, 5]
        );
        assert!(
            report.malformed[1].message.contains("field `p`"),
            "{}",
            report.malformed[1].message
        );
        assert_eq!(
            report.non_trade_frames().collect::<Vec<_>>(),
            [("kline_1m", 1), ("subscribe_ack", 1)]
        );
        assert_eq!(trades[1].trade_id, "9213680");
        assert_eq!((trades[0].receive_time, trades[0].side), (5, Side::Buy));
        assert!(
            report
                .to_string()
                .starts_with("7 lines, 6 frames, 2 trades, 2 malformed"),
            "{report}"
        );
    }

    #[test]
    fn bad_recording_lines_have_short_messages() {
        let stamp = "8".repeat(100_000);
        for line in [
            format!("{stamp}.5x: {AGG}"),
            format!(r#"{{"recv_ts": "{stamp}", "dir": "in", "raw": "{{}}"}}"#),
            format!(r#"{{"recv_ts": {stamp}, "dir": "in", "raw": "{{}}"}}"#),
        ] {
            let message = unwrap_line(line.as_bytes(), 0).unwrap_err().to_string();
            assert!(message.starts_with("bad recording line: "), "{message}");
            assert!(message.len() < 1024, "{} bytes", message.len());
        }
    }

    #[test]
    fn output_errors_stop_the_run() {
        let input = format!("{AGG}\n{AGG}\n");
        let err = decode_reader(Exchange::Binance, input.as_bytes(), 0, |_| {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        })
        .unwrap_err();
        assert!(err.is_terminal());
        assert!(matches!(err, DecodeError::Output { line: 1, .. }), "{err}");
    }
}

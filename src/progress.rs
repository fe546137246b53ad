//! Progress of a long command (`tickfetch replay`, `tickfetch import`) on
//! stderr: one line rewritten in place on a terminal (done, total, percent,
//! rate, ETA), a plain line every 5 s otherwise (logs, CI).

use std::io::{IsTerminal, Read, Write as _};
use std::time::{Duration, Instant};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Records,
    Bytes,
}

/// One progress line.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    unit: Unit,
    started: Instant,
    last: Instant,
    terminal: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: u64, unit: Unit) -> Self {
        Self {
            what,
            total,
            done: 0,
            unit,
            started: Instant::now(),
            last: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Counts `n` more; prints when due.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print(false);
        }
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Records => n.to_string(),
            Unit::Bytes => format!("{:.1} MB", n as f64 / 1e6),
        }
    }

    /// Prints the line now; `last`: the final one (ends the terminal line).
    pub fn print(&self, last: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let unit = match self.unit {
            Unit::Records => " records",
            Unit::Bytes => "",
        };
        let line = format!(
            "{}: {}/{}{unit} ({pct:.0}%), {}/s, ETA {left:.0} s",
            self.what,
            self.amount(self.done),
            self.amount(self.total),
            self.amount(rate as u64)
        );
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

/// A reader that counts what passes through it on a [`Progress`] in bytes,
/// printing the last line at its end.
pub struct ProgressReader<R> {
    inner: R,
    progress: Progress,
    ended: bool,
}

impl<R: Read> ProgressReader<R> {
    pub fn new(inner: R, what: &'static str, total: u64) -> Self {
        Self {
            inner,
            progress: Progress::new(what, total, Unit::Bytes),
            ended: false,
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        if n == 0 && !buf.is_empty() && !self.ended {
            self.ended = true;
            self.progress.print(true);
        }
        Ok(n)
    }
}

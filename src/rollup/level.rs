//! The seam between the Kafka stage and the candle engine: one [`Level`] of the
//! rollup (trades → 1s, 1s → 5s, 5s → 1m, 1m → 5m) behind an object-safe trait,
//! with the record decoding each level needs.

use crate::model::Candle;

/// What applying one input record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// New data, counted.
    Accepted,
    /// A watermark or other progress record.
    Progress,
    /// Already counted (same trade id, or a candle revision already held).
    Duplicate,
    /// Late, merged into a closed window: a corrected candle went out.
    Corrected,
    /// Later than the retention horizon: not merged, sent to the dead letters.
    TooLate,
}

/// One level of the rollup as the Kafka stage drives it.
pub trait Level: Send {
    /// Decodes one input record (`kind` is the `tickfetch-kind` header) and
    /// applies it, pushing any candles that closed or were corrected to `out`.
    ///
    /// # Errors
    /// A record that does not decode, with the reason; nothing was applied.
    fn apply(
        &mut self,
        kind: Option<&[u8]>,
        payload: &[u8],
        out: &mut Vec<Candle>,
    ) -> Result<ApplyOutcome, String>;

    /// The state of one symbol (`exchange:symbol`) as JSON, for the changelog.
    fn snapshot(&self, key: &str) -> Option<serde_json::Value>;

    /// Puts back a state [`Level::snapshot`] returned.
    ///
    /// # Errors
    /// A state that does not decode.
    fn restore(&mut self, key: &str, state: serde_json::Value) -> Result<(), String>;
}

//! Okx's messages as serde structs, each with a raw payload in its doc
//! comment; [`parse`](super::parse) turns them into `Trade`s.

use super::*;

/// `{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRequest<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(borrow)]
    pub args: Vec<ChannelArg<'a>>,
}

/// `{"channel":"trades","instId":"BTC-USDT"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelArg<'a> {
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    #[serde(rename = "instId", borrow)]
    pub inst_id: Cow<'a, str>,
}

/// A `trades` (or `trades-all`) push.
///
/// ```json
/// {"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",
///  "tradeId":"338476307","px":"30236","sz":"0.0002","side":"buy","ts":"1652459224818"}]}
/// ```
/// Since 2023 a `trades` row also has `"count":"3"` (and later `source`, `seqId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradesPush<'a> {
    #[serde(borrow)]
    pub arg: ChannelArg<'a>,
    #[serde(borrow)]
    pub data: Vec<OkxTrade<'a>>,
}

/// One trade of a push, or a row of the REST response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkxTrade<'a> {
    #[serde(rename = "instId", borrow)]
    pub inst_id: Cow<'a, str>,
    /// The last fill's id when `count` > 1.
    #[serde(rename = "tradeId", borrow)]
    pub trade_id: Cow<'a, str>,
    #[serde(borrow)]
    pub px: Cow<'a, str>,
    #[serde(borrow)]
    pub sz: Cow<'a, str>,
    /// The taker's side, `buy` or `sell`.
    #[serde(borrow)]
    pub side: Cow<'a, str>,
    /// Trade time, ms as a string.
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    /// Fills aggregated (`trades` channel only).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Cow<'a, str>>,
}

/// The `GET /api/v5/market/trades` body.
///
/// ```json
/// {"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00013669",
///  "px":"102537.9","tradeId":"734864333","ts":"1747087163557"}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestResponse<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    #[serde(borrow, default)]
    pub msg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub data: Vec<OkxTrade<'a>>,
}

/// The `GET /api/v5/public/instruments?instType=SPOT` body, with the fields
/// tickfetch reads (`tickSz`, `lotSz`, `minSz`, `maxLmtSz`… are skipped).
///
/// ```json
/// {"code":"0","msg":"","data":[{"alias":"","baseCcy":"BTC","category":"1","ctMult":"",
///  "ctType":"","ctVal":"","ctValCcy":"","expTime":"","instFamily":"","instId":"BTC-USDT",
///  "instType":"SPOT","lever":"10","listTime":"1606468572000","lotSz":"0.00000001",
///  "minSz":"0.00001","optType":"","quoteCcy":"USDT","settleCcy":"","state":"live",
///  "stk":"","tickSz":"0.1","uly":""}]}
/// ```
/// An error: `{"code":"51000","msg":"Parameter instType error","data":[]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentsResponse<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    #[serde(borrow, default)]
    pub msg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub data: Vec<OkxInstrument<'a>>,
}

/// One instrument of the list (`baseCcy` and `quoteCcy` are empty on
/// derivatives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkxInstrument<'a> {
    #[serde(rename = "instType", borrow)]
    pub inst_type: Cow<'a, str>,
    #[serde(rename = "instId", borrow)]
    pub inst_id: Cow<'a, str>,
    #[serde(rename = "baseCcy", borrow, default)]
    pub base_ccy: Cow<'a, str>,
    #[serde(rename = "quoteCcy", borrow, default)]
    pub quote_ccy: Cow<'a, str>,
    /// `live`, `suspend`, `preopen`, `test`.
    #[serde(borrow, default)]
    pub state: Cow<'a, str>,
}

//! The control endpoint: faults, history and stats over HTTP, for scripts,
//! benchmarks and workers running in another process.
//!
//! | method and path | body / query | answer |
//! | --- | --- | --- |
//! | `POST /control/fault` | [`FaultRequest`] JSON, e.g. `{"exchange":"binance","symbol":"BTCUSDT","fault":"drop","count":5}`; faults: `drop`, `gap`, `duplicate` (`count`), `stall`, `down` (`duration_ms`), `no-pong`, `ignore-pongs` (optional `duration_ms`), `malformed`, `close` (`abrupt`), `reject` | `{"ok":true}` |
//! | `POST /control/clear` | `?exchange=&symbol=` (both optional) | `{"ok":true}` |
//! | `POST /control/generate` | `{"exchange":"okx","symbol":"BTC-USDT","orders":3}` | the raw trades made, JSON lines |
//! | `GET /control/history` | `?exchange=&symbol=[&feed=aggTrade]` | the trades recorded, tickfetch trade JSON lines |
//! | `GET /control/symbols` | `?exchange=` | JSON array of symbols |
//! | `GET /control/stats` | | `{"exchanges":[…]}` per-exchange counters |
//! | `GET /metrics` | | the same counters in the Prometheus text format |
//!
//! Errors are `{"error":"…"}` with status 400 (bad input) or 404.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::json;

use super::faults::{Fault, FaultRequest};
use super::http::{Request, Response};
use super::{Shared, SimError};
use crate::ingest::venues::Feed;
use crate::model::{Exchange, Trade};

/// `POST /control/generate` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    exchange: Exchange,
    symbol: String,
    #[serde(default = "one")]
    orders: usize,
}

fn one() -> usize {
    1
}

fn bad(error: &SimError) -> Response {
    Response::error(400, &error.to_string())
}

fn json_lines(trades: &[Trade]) -> Response {
    let mut body = String::new();
    for trade in trades {
        if let Ok(line) = serde_json::to_string(trade) {
            body.push_str(&line);
            body.push('\n');
        }
    }
    Response::ndjson(body)
}

fn exchange_param(request: &Request) -> Result<Option<Exchange>, SimError> {
    request
        .param("exchange")
        .map(|e| Exchange::from_str(e).map_err(|e| SimError::BadRequest(e.to_string())))
        .transpose()
}

/// The stats as Prometheus text: `tickfetch_exsim_<counter>{exchange="…"}`.
pub(crate) fn metrics(shared: &Shared) -> Response {
    let stats = shared.stats();
    let mut families: BTreeMap<String, Vec<(Exchange, u64)>> = BTreeMap::new();
    for snapshot in &stats.exchanges {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(snapshot) else {
            continue;
        };
        for (name, value) in fields {
            if let Some(n) = value.as_u64() {
                families
                    .entry(name)
                    .or_default()
                    .push((snapshot.exchange, n));
            } else if let Some(b) = value.as_bool() {
                families
                    .entry(name)
                    .or_default()
                    .push((snapshot.exchange, u64::from(b)));
            }
        }
    }
    let mut body = String::new();
    for (name, samples) in families {
        let gauge = matches!(
            name.as_str(),
            "connections_open" | "symbols" | "replay_done"
        );
        let metric = if gauge {
            format!("tickfetch_exsim_{name}")
        } else {
            format!("tickfetch_exsim_{name}_total")
        };
        body.push_str(&format!(
            "# TYPE {metric} {}\n",
            if gauge { "gauge" } else { "counter" }
        ));
        for (exchange, value) in samples {
            body.push_str(&format!("{metric}{{exchange=\"{exchange}\"}} {value}\n"));
        }
    }
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body,
    }
}

/// Answer a request below `/control`.
pub(crate) fn handle(shared: &Shared, request: &Request) -> Response {
    let route = request.path.trim_end_matches('/');
    match (request.method.as_str(), route) {
        ("POST", "/control/fault") => {
            let fault = serde_json::from_slice::<FaultRequest>(&request.body)
                .map_err(|e| SimError::BadFault(e.to_string()))
                .and_then(Fault::try_from)
                .and_then(|fault| shared.inject(fault));
            match fault {
                Ok(()) => Response::json(200, json!({"ok": true}).to_string()),
                Err(e) => bad(&e),
            }
        }
        ("POST", "/control/clear") => match exchange_param(request) {
            Ok(exchange) => {
                shared.clear_faults(exchange, request.param("symbol"));
                Response::json(200, json!({"ok": true}).to_string())
            }
            Err(e) => bad(&e),
        },
        ("POST", "/control/generate") => {
            let result = serde_json::from_slice::<GenerateRequest>(&request.body)
                .map_err(|e| SimError::BadRequest(e.to_string()))
                .and_then(|r| shared.generate(r.exchange, &r.symbol, r.orders));
            match result {
                Ok(trades) => json_lines(&trades),
                Err(e) => bad(&e),
            }
        }
        ("GET", "/control/history") => {
            let history = (|| {
                let exchange = exchange_param(request)?
                    .ok_or_else(|| SimError::BadRequest("`exchange` is required".into()))?;
                let symbol = request
                    .param("symbol")
                    .ok_or_else(|| SimError::BadRequest("`symbol` is required".into()))?;
                match request.param("feed") {
                    None => shared.history(exchange, symbol),
                    Some(name) => {
                        let feed = Feed::from_str(&format!("{exchange}:{name}"))
                            .map_err(|e| SimError::BadRequest(e.to_string()))?;
                        shared.feed_history(feed, symbol)
                    }
                }
            })();
            match history {
                Ok(trades) => json_lines(&trades),
                Err(e) => bad(&e),
            }
        }
        ("GET", "/control/symbols") => match exchange_param(request) {
            Ok(Some(exchange)) => match shared.book(exchange) {
                Ok(book) => Response::json(200, json!(book.symbols()).to_string()),
                Err(e) => bad(&e),
            },
            Ok(None) => bad(&SimError::BadRequest("`exchange` is required".into())),
            Err(e) => bad(&e),
        },
        ("GET", "/control/stats") => match serde_json::to_string(&shared.stats()) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::error(500, &e.to_string()),
        },
        _ => Response::not_found(&request.path),
    }
}

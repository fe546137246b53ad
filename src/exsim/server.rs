//! The listener: one loopback port serves every simulated exchange, its
//! REST endpoints and the control endpoint.
//!
//! ```text
//! accept ─▶ read request head ─┬─ /healthz, /metrics            → "ok", counters
//!                              ├─ /control/…                    → control.rs
//!                              ├─ /{exchange}/… + Upgrade       → protocol.rs + session.rs
//!                              └─ /{exchange}/…                 → rest.rs
//! ```
//!
//! Each connection runs in the server's `JoinSet` (reaped as it ends, a panic
//! logged); on cancellation the server stops accepting, every session sends
//! a close frame, and stragglers are aborted after [`DRAIN_DEADLINE`].

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::http::{self, Request, Response};
use super::market::ExchangeStats;
use super::protocol::Protocol;
use super::session::{self, SessionContext};
use super::{control, rest, Shared, SimError};
use crate::model::Exchange;
use crate::shutdown::CancellationToken;

/// Open connections (websocket and HTTP) beyond which new ones are refused.
pub const MAX_CONNECTIONS: usize = 10_000;
/// How long open connections get to close after cancellation.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// Accept and serve connections until `cancel`.
///
/// # Errors
/// None today: accept errors (out of file descriptors, say) are logged and
/// retried.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(limit = MAX_CONNECTIONS, "connection refused: too many open");
                        continue;
                    }
                    connections.spawn(handle(stream, shared.clone(), cancel.child_token()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = done {
                    if error.is_panic() {
                        tracing::error!(%error, "a simulator connection panicked");
                    }
                }
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    Ok(())
}

/// Serve one TCP connection: one HTTP request, or one websocket session.
async fn handle(mut stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let request = match http::read_request(&mut stream).await {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(%error, "bad request");
            let _ = Response::error(400, &error.to_string())
                .write_to(&mut stream)
                .await;
            return;
        }
    };
    let response = match route(&shared, &request) {
        Route::Response(response) => response,
        Route::Websocket(exchange, path) => {
            return websocket(stream, request, &shared, exchange, &path, cancel).await;
        }
    };
    if let Err(error) = response.write_to(&mut stream).await {
        tracing::debug!(%error, "client left before the response");
    }
}

enum Route {
    Response(Response),
    Websocket(Exchange, String),
}

fn route(shared: &Shared, request: &Request) -> Route {
    let path = request.path.as_str();
    if path == "/healthz" {
        return Route::Response(Response::text(200, "ok"));
    }
    if path == "/metrics" {
        return Route::Response(control::metrics(shared));
    }
    if path == "/control" || path.starts_with("/control/") {
        return Route::Response(control::handle(shared, request));
    }
    let trimmed = path.trim_start_matches('/');
    let (first, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let Ok(exchange) = Exchange::from_str(first) else {
        return Route::Response(Response::not_found(path));
    };
    let Ok(book) = shared.book(exchange) else {
        return Route::Response(Response::error(
            404,
            &format!("{exchange} is not simulated here"),
        ));
    };
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    };
    if request.is_websocket() {
        Route::Websocket(exchange, rest)
    } else {
        Route::Response(rest::handle(&book, &rest, request))
    }
}

async fn websocket(
    mut stream: TcpStream,
    request: Request,
    shared: &Shared,
    exchange: Exchange,
    path: &str,
    cancel: CancellationToken,
) {
    let Ok(book) = shared.book(exchange) else {
        return;
    };
    if book.is_down(std::time::Instant::now()) {
        let _ = Response::error(503, &format!("{exchange} is down (simulated fault)"))
            .write_to(&mut stream)
            .await;
        return;
    }
    let conn_id = shared.next_connection_id();
    let protocol = match Protocol::open(exchange, path, &request.query, conn_id, &book) {
        Ok(protocol) => protocol,
        Err(unknown) => {
            let _ = Response::error(404, &unknown.0).write_to(&mut stream).await;
            return;
        }
    };
    let answer = match http::upgrade_response(&request) {
        Ok(answer) => answer,
        Err(error) => {
            let _ = Response::error(400, &error.to_string())
                .write_to(&mut stream)
                .await;
            return;
        }
    };
    if tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let ws = WebSocketStream::from_partially_read(
        stream,
        request.leftover,
        Role::Server,
        // A client's subscriptions are small: the same read limits as
        // the workers' connections.
        Some(crate::ingest::connection::ws_limits()),
    )
    .await;
    let stats = &book.stats;
    ExchangeStats::add(&stats.connections_total, 1);
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("ws", %exchange, conn_id, path);
    tracing::debug!(parent: &span, "websocket opened");
    session::run(
        ws,
        SessionContext {
            book: book.clone(),
            rules: shared.rules.clone(),
            protocol,
            cancel,
        },
    )
    .instrument(span)
    .await;
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
}

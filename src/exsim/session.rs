//! One websocket connection of a simulated exchange.
//!
//! A session owns the socket and loops over:
//!
//! ```text
//! client frames ──▶ rate limit (Binance) ─▶ Protocol::on_message ─▶ replies
//!                   pongs ─▶ clears the server ping's deadline (unless ignore-pongs)
//! book events   ──▶ Trades: the batch's frames in each subscribed feed's dialect
//!                   Malformed / Close: the fault, if it concerns this connection
//!                   (every event already waiting goes out in the same write)
//! timers        ──▶ server pings (Binance), pong deadline, max age,
//!                   idle timeout (OKX, Upbit), Coinbase heartbeats
//! ```
//!
//! Under a `no-pong` fault the session stops reading, so neither tungstenite
//! (which answers websocket pings while reading) nor the protocol answers
//! anything; data keeps flowing. A connection that falls more than the event
//! channel's capacity behind is closed, as a real exchange drops a slow
//! consumer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::market::{Event, ExchangeBook, ExchangeStats, Series, TradeBatch};
use super::protocol::Protocol;
use super::ConnectionRules;
use crate::ingest::venues::{receive_time_now, WireFrame};
use crate::model::Exchange;
use crate::shutdown::CancellationToken;

/// How often a session checks its deadlines (pong, age, idle, faults).
pub const HOUSEKEEPING_TICK: Duration = Duration::from_millis(50);
/// Coinbase heartbeat period.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The most book events a session turns into one write.
pub const EVENTS_PER_WRITE: usize = 256;
/// A send that cannot complete in this long means the client stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    ClientClosed,
    Shutdown,
    Forced { abrupt: bool },
    RateLimit,
    PongTimeout,
    MaxAge,
    Idle,
    SlowConsumer,
    SocketError,
}

type Sink = futures::stream::SplitSink<WebSocketStream<TcpStream>, Message>;

/// Everything a session needs from the server.
pub(crate) struct SessionContext {
    pub book: Arc<ExchangeBook>,
    pub rules: ConnectionRules,
    pub protocol: Protocol,
    pub cancel: CancellationToken,
}

fn to_message(frame: &WireFrame) -> Message {
    match frame {
        WireFrame::Text(text) => Message::text(text.clone()),
        WireFrame::Binary(bytes) => Message::binary(bytes.clone()),
    }
}

/// Binance `/ws` connections get the bare event: the `data` of the wrapper.
fn unwrap_binance(frame: &WireFrame) -> WireFrame {
    #[derive(serde::Deserialize)]
    struct Wrapper<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    match frame {
        WireFrame::Text(text) => match serde_json::from_str::<Wrapper>(text) {
            Ok(wrapper) => WireFrame::Text(wrapper.data.get().to_string()),
            Err(_) => frame.clone(),
        },
        WireFrame::Binary(_) => frame.clone(),
    }
}

/// A frame that fails every adapter's `parse_frame`: a real trade frame cut
/// in half (or a bare fragment when there is no trade yet).
fn corrupt_frame(book: &ExchangeBook, protocol: &Protocol, symbol: Option<&str>) -> WireFrame {
    let subscriptions = protocol.subscriptions();
    let pick = symbol
        .and_then(|s| subscriptions.get_key_value(s))
        .or_else(|| subscriptions.iter().next());
    let sample = pick.and_then(|(symbol, feeds)| {
        let feed = *feeds.first()?;
        let trade = book.last_trade(symbol, Series::of(feed))?;
        super::encode::encode_trades(feed, &[trade])
            .ok()?
            .into_iter()
            .next()
    });
    let bytes: Vec<u8> = match &sample {
        Some(frame) => {
            let bytes = frame.as_bytes();
            bytes[..bytes.len() / 2].to_vec()
        }
        None => br#"{"corrupt":"#.to_vec(),
    };
    match (book.exchange, sample) {
        (Exchange::Upbit, _) | (_, Some(WireFrame::Binary(_))) => WireFrame::Binary(bytes),
        _ => WireFrame::Text(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

struct Session {
    sink: Sink,
    book: Arc<ExchangeBook>,
    rules: ConnectionRules,
    protocol: Protocol,
    opened: Instant,
    last_activity: Instant,
    awaiting_pong_since: Option<Instant>,
    incoming: VecDeque<Instant>,
    ping_counter: u64,
}

impl Session {
    async fn send(&mut self, message: Message) -> Result<(), Ending> {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(message)).await {
            Ok(Ok(())) => {
                self.last_activity = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(Ending::SocketError),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    /// Queue every frame, then flush once (one write for a batch).
    async fn send_frames(&mut self, frames: &[WireFrame]) -> Result<(), Ending> {
        self.send_messages(frames.iter().map(to_message).collect())
            .await
    }

    async fn send_messages(&mut self, messages: Vec<Message>) -> Result<(), Ending> {
        if messages.is_empty() {
            return Ok(());
        }
        let sink = &mut self.sink;
        let write = async {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.last_activity = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(Ending::SocketError),
            Err(_) => Err(Ending::SlowConsumer),
        }
    }

    /// Count one client message against the rate limit; `Err` to close.
    fn count_incoming(&mut self, now: Instant) -> Result<(), Ending> {
        self.last_activity = now;
        let Some(limit) = self.rules.max_incoming_per_second(self.book.exchange) else {
            return Ok(());
        };
        while self
            .incoming
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.incoming.pop_front();
        }
        self.incoming.push_back(now);
        if self.incoming.len() > limit as usize {
            return Err(Ending::RateLimit);
        }
        Ok(())
    }

    async fn on_client(&mut self, message: Message) -> Result<(), Ending> {
        let now = Instant::now();
        match message {
            Message::Text(text) => {
                self.count_incoming(now)?;
                let replies =
                    self.protocol
                        .on_message(text.as_bytes(), &self.book, receive_time_now());
                self.send_frames(&replies).await
            }
            Message::Binary(bytes) => {
                self.count_incoming(now)?;
                let replies = self
                    .protocol
                    .on_message(&bytes, &self.book, receive_time_now());
                self.send_frames(&replies).await
            }
            // tungstenite queues the pong; it goes out with the next write.
            Message::Ping(_) => {
                self.count_incoming(now)?;
                self.sink.flush().await.map_err(|_| Ending::SocketError)
            }
            Message::Pong(_) => {
                self.count_incoming(now)?;
                let ignore = self.book.ignore_pongs(
                    self.protocol.subscriptions().keys().map(String::as_str),
                    now,
                );
                if !ignore {
                    self.awaiting_pong_since = None;
                }
                Ok(())
            }
            Message::Close(_) => Err(Ending::ClientClosed),
            Message::Frame(_) => Ok(()),
        }
    }

    /// Queues the frames of `batch` for each subscribed feed's dialect
    /// (sent with the next flush); returns how many trades and frames.
    fn queue_trades(&self, batch: &TradeBatch, out: &mut Vec<Message>) -> (u64, u64) {
        let Some(feeds) = self.protocol.subscriptions().get(&batch.symbol) else {
            return (0, 0);
        };
        let (mut trades, mut frames) = (0, 0);
        for feed in feeds.iter().filter(|f| Series::of(**f) == batch.series) {
            let encoded = batch.encoded(*feed);
            if encoded.failed > 0 {
                ExchangeStats::add(&self.book.stats.encode_errors, encoded.failed as u64);
            }
            trades += (batch.trades.len() - encoded.failed) as u64;
            frames += encoded.frames.len() as u64;
            if self.protocol.binance_raw() {
                out.extend(
                    encoded
                        .frames
                        .iter()
                        .map(|f| to_message(&unwrap_binance(f))),
                );
            } else {
                out.extend(encoded.frames.iter().map(to_message));
            }
        }
        (trades, frames)
    }

    /// Handles `first` and every event already waiting behind it (up to
    /// [`EVENTS_PER_WRITE`]), writing their frames with one flush: a
    /// connection carrying hundreds of symbols gets an event per symbol
    /// per tick, and one write each would cost the server a syscall per
    /// trade. A close fault sends what came before it, then ends.
    async fn on_events(
        &mut self,
        first: Event,
        events: &mut broadcast::Receiver<Event>,
    ) -> Result<(), Ending> {
        let mut out = Vec::new();
        let (mut trades, mut frames) = (0, 0);
        let mut ending = None;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(event) = next.take() {
            taken += 1;
            match event {
                Event::Trades(batch) => {
                    let (t, f) = self.queue_trades(&batch, &mut out);
                    trades += t;
                    frames += f;
                }
                Event::Malformed { symbol } => {
                    let concerned = symbol.as_deref().is_none_or(|s| self.protocol.carries(s));
                    if concerned && !self.protocol.subscriptions().is_empty() {
                        let frame = corrupt_frame(&self.book, &self.protocol, symbol.as_deref());
                        ExchangeStats::add(&self.book.stats.malformed_sent, 1);
                        out.push(to_message(&frame));
                    }
                }
                Event::Close { symbol, abrupt } => {
                    if symbol.as_deref().is_none_or(|s| self.protocol.carries(s)) {
                        ending = Some(Ending::Forced { abrupt });
                        break;
                    }
                }
            }
            if taken < EVENTS_PER_WRITE {
                next = match events.try_recv() {
                    Ok(event) => Some(event),
                    Err(TryRecvError::Lagged(_)) => return Err(Ending::SlowConsumer),
                    // Closed: the next `recv` says so.
                    Err(TryRecvError::Empty | TryRecvError::Closed) => None,
                };
            }
        }
        self.send_messages(out).await?;
        ExchangeStats::add(&self.book.stats.trades_sent, trades);
        ExchangeStats::add(&self.book.stats.frames_sent, frames);
        ending.map_or(Ok(()), Err)
    }

    /// Deadlines: max age, pong deadline, idle timeout.
    fn check_deadlines(&self, now: Instant) -> Result<(), Ending> {
        let exchange = self.book.exchange;
        if let Some(age) = self.rules.max_connection_age(exchange) {
            if now.duration_since(self.opened) >= age {
                return Err(Ending::MaxAge);
            }
        }
        if let Some(since) = self.awaiting_pong_since {
            if now.duration_since(since) >= self.rules.pong_deadline {
                return Err(Ending::PongTimeout);
            }
        }
        if let Some(idle) = self.rules.idle_timeout(exchange) {
            if now.duration_since(self.last_activity) >= idle {
                return Err(Ending::Idle);
            }
        }
        Ok(())
    }

    fn reading_paused(&self, now: Instant) -> bool {
        self.book.no_pong(
            self.protocol.subscriptions().keys().map(String::as_str),
            now,
        )
    }

    async fn close(mut self, ending: Ending) {
        let stats = &self.book.stats;
        let (code, reason) = match ending {
            Ending::ClientClosed | Ending::SocketError => (None, ""),
            Ending::Forced { abrupt: true } => {
                ExchangeStats::add(&stats.forced_closes, 1);
                (None, "")
            }
            Ending::Forced { abrupt: false } => {
                ExchangeStats::add(&stats.forced_closes, 1);
                (Some(CloseCode::Away), "forced close (simulated fault)")
            }
            Ending::Shutdown => (Some(CloseCode::Away), "server shutting down"),
            Ending::RateLimit => {
                ExchangeStats::add(&stats.rate_limit_closes, 1);
                (Some(CloseCode::Policy), "too many incoming messages")
            }
            Ending::PongTimeout => {
                ExchangeStats::add(&stats.pong_timeout_closes, 1);
                (Some(CloseCode::Policy), "pong timeout")
            }
            Ending::MaxAge => {
                ExchangeStats::add(&stats.age_closes, 1);
                (Some(CloseCode::Away), "maximum connection age reached")
            }
            Ending::Idle => {
                ExchangeStats::add(&stats.idle_closes, 1);
                (Some(CloseCode::Away), "idle timeout")
            }
            Ending::SlowConsumer => {
                ExchangeStats::add(&stats.slow_consumer_closes, 1);
                (Some(CloseCode::Policy), "slow consumer")
            }
        };
        tracing::debug!(exchange = %self.book.exchange, ?ending, "websocket session ends");
        if ending == Ending::ClientClosed {
            // Answer the client's close (tungstenite queued the reply).
            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.close()).await;
        } else if let Some(code) = code {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }
}

/// Serve one upgraded websocket until it ends.
pub(crate) async fn run(ws: WebSocketStream<TcpStream>, ctx: SessionContext) {
    let SessionContext {
        book,
        rules,
        protocol,
        cancel,
    } = ctx;
    let (sink, mut stream) = ws.split();
    let mut events = book.subscribe_events();
    let now = Instant::now();
    let mut session = Session {
        sink,
        book: book.clone(),
        rules,
        protocol,
        opened: now,
        last_activity: now,
        awaiting_pong_since: None,
        incoming: VecDeque::new(),
        ping_counter: 0,
    };
    let server_pings = session.rules.server_ping_interval(book.exchange);
    let mut ping_timer = tokio::time::interval(server_pings.unwrap_or(Duration::from_secs(3600)));
    ping_timer.reset();
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_TICK);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.reset();

    let ending = loop {
        let paused = session.reading_paused(Instant::now());
        let step: Result<(), Ending> = tokio::select! {
            _ = cancel.cancelled() => Err(Ending::Shutdown),
            message = stream.next(), if !paused => match message {
                Some(Ok(message)) => session.on_client(message).await,
                Some(Err(_)) | None => Err(Ending::ClientClosed),
            },
            event = events.recv() => match event {
                Ok(event) => session.on_events(event, &mut events).await,
                Err(RecvError::Lagged(_)) => Err(Ending::SlowConsumer),
                Err(RecvError::Closed) => Err(Ending::Shutdown),
            },
            _ = ping_timer.tick(), if server_pings.is_some() => {
                session.ping_counter += 1;
                session.awaiting_pong_since.get_or_insert_with(Instant::now);
                let payload = session.ping_counter.to_string().into_bytes();
                session.send(Message::Ping(payload.into())).await
            },
            _ = heartbeat.tick() => {
                let frames = session.protocol.heartbeats(&book, receive_time_now());
                session.send_frames(&frames).await
            },
            _ = housekeeping.tick() => session.check_deadlines(Instant::now()),
        };
        if let Err(ending) = step {
            break ending;
        }
    };
    session.close(ending).await;
}

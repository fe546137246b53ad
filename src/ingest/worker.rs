//! The ingest worker: runs feeds (an exchange feed and its symbols), each as
//! a feed task over its connection shards, and publishes through one output
//! thread.
//!
//! ```text
//! Worker ─ start_feed(FeedConfig, Role) ─▶ FeedHandle (promote / fence / stop / stats)
//!   feed task ──┬─ run_shard × ⌈symbols / per-connection limit⌉ ──ConnectionEvent (bounded)──┐
//!               │◀──────────────────────────────────────────────────────────────────────────┘
//!               ├─ SymbolFeed per symbol (pure): dedup, order, gaps, resync, watermark ─▶ REST backfill
//!               └─ Output (bounded) ─▶ publisher thread ─▶ trades topic / dead-letter topic
//! ```
//!
//! Roles, epochs and the watermark rule are the feed's: see `ingest::feed`.
//!
//! At start the worker loads the instrument list of every exchange of
//! `[[ingest.feeds]]` (`ingest.instruments`, see `venues::instruments`) and
//! installs it, so that every trade it parses is named by the exchange's own
//! metadata; a list it cannot get is logged and the exchange's built-in rule
//! names its symbols instead.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::events::{FeedEvents, FeedStatsSnapshot};
use super::feed::task::FeedTask;
use super::feed::{FeedCommand, FeedSpec, Tuning};
pub use super::feed::{ResumePoint, Role};
use super::output::{Output, Publishers, OUTPUT_QUEUE};
use super::venues::instruments;
pub use super::IngestError;
use crate::config::{Config, FeedConfig};
use crate::coord::epoch::{process_owner, Epoch, EpochClaimer};
use crate::coord::store::HeldUntil;
use crate::kafka::KafkaError;
use crate::model::Exchange;
use crate::shutdown::{CancellationToken as Shutdown, DRAIN_DEADLINE};

/// Commands queued to one feed task.
pub const FEED_COMMANDS: usize = 16;

/// Control of one running feed.
#[derive(Clone)]
pub struct FeedHandle {
    name: String,
    commands: mpsc::Sender<FeedCommand>,
    events: FeedEvents,
    cancel: CancellationToken,
}

impl FeedHandle {
    /// The feed's name (`binance:aggTrade`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feed's counters.
    pub fn stats(&self) -> FeedStatsSnapshot {
        self.events.stats.snapshot()
    }

    /// Makes a replica the primary, publishing from just after `resume`
    /// (symbol → the last trade the previous primary published; a symbol
    /// without an entry publishes its whole buffer).
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has ended.
    pub async fn promote(&self, resume: HashMap<String, ResumePoint>) -> Result<(), IngestError> {
        self.promote_with(resume, None).await
    }

    /// Like [`promote`](Self::promote), publishing under `epoch`, the one
    /// the master wrote into the feed's assignment.
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has ended.
    pub async fn promote_under(
        &self,
        epoch: Epoch,
        resume: HashMap<String, ResumePoint>,
    ) -> Result<(), IngestError> {
        self.promote_with(resume, Some(epoch)).await
    }

    async fn promote_with(
        &self,
        resume: HashMap<String, ResumePoint>,
        epoch: Option<Epoch>,
    ) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Promote {
            resume,
            epoch,
            reply,
        })
        .await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// Whether the feed task has ended (stopped, fenced or failed).
    pub fn has_ended(&self) -> bool {
        self.commands.is_closed()
    }

    /// Fences the feed: it publishes nothing more, drops its connections and
    /// ends (a newer primary owns it). Returns the positions it had handed
    /// to the publisher (for a primary: what a successor resumes after, once
    /// the publisher is flushed).
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has already ended.
    pub async fn fence(&self) -> Result<HashMap<String, ResumePoint>, IngestError> {
        self.fence_with(None).await
    }

    /// A planned handover: like [`fence`](Self::fence), but a primary first
    /// goes on publishing until every symbol has published a trade the
    /// exchange made at or after `until` (epoch ms), for at most `within`,
    /// so that nothing made before the move is left to its successor's
    /// buffer, which may have begun just before it. With `within` zero it
    /// is a fence.
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has already ended.
    pub async fn hand_over(
        &self,
        until: crate::model::Millis,
        within: std::time::Duration,
    ) -> Result<HashMap<String, ResumePoint>, IngestError> {
        if within.is_zero() {
            return self.fence().await;
        }
        self.fence_with(Some(super::feed::CatchUp { until, within }))
            .await
    }

    async fn fence_with(
        &self,
        catch_up: Option<super::feed::CatchUp>,
    ) -> Result<HashMap<String, ResumePoint>, IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Fence { catch_up, reply }).await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// The last trade released per symbol (for a primary: published), with
    /// recent ids: what a successor resumes from.
    ///
    /// # Errors
    /// [`IngestError::FeedGone`] when the feed has ended.
    pub async fn positions(&self) -> Result<HashMap<String, ResumePoint>, IngestError> {
        let (reply, done) = oneshot::channel();
        self.command(FeedCommand::Positions { reply }).await?;
        done.await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }

    /// Stops the feed: connections close; what was already handed to the
    /// publisher is still published. Trades held behind an open gap are not:
    /// a successor resumes after the last published trade and fills the gap.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    async fn command(&self, command: FeedCommand) -> Result<(), IngestError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| IngestError::FeedGone(self.name.clone()))
    }
}

/// Flushes a worker's publisher: see [`Worker::flush`].
#[derive(Clone)]
pub struct Flusher {
    output: mpsc::Sender<Output>,
}

impl Flusher {
    /// Waits until everything handed to the publisher so far is acknowledged.
    ///
    /// # Errors
    /// A delivery failure, or the publisher is gone.
    pub async fn flush(&self) -> Result<(), IngestError> {
        let (reply, done) = oneshot::channel();
        self.output
            .send(Output::Flush(reply))
            .await
            .map_err(|_| IngestError::PublisherGone)?;
        done.await.map_err(|_| IngestError::PublisherGone)??;
        Ok(())
    }
}

/// A running worker: the publisher thread and the feeds started on it.
pub struct Worker {
    config: Arc<Config>,
    tuning: Tuning,
    output: mpsc::Sender<Output>,
    publisher: tokio::task::JoinHandle<Result<(), KafkaError>>,
    feeds: JoinSet<(String, Result<(), IngestError>)>,
    cancel: CancellationToken,
    /// Where primaries claim their epochs (`None` with `etcd.epochs` off).
    epochs: Option<EpochClaimer>,
    /// In a cluster: the worker's lease, which primaries must hold to publish.
    held: Option<HeldUntil>,
}

impl Worker {
    /// Loads and installs the instrument lists of the configured exchanges,
    /// connects the producers (and etcd, for epochs) and starts the publisher
    /// thread; no feed runs yet.
    ///
    /// # Errors
    /// Kafka unreachable, or a conflicting Kafka option; shutdown while
    /// loading the instrument lists or waiting for etcd.
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Worker, IngestError> {
        let epochs = if config.etcd.epochs {
            let claimer = EpochClaimer::connect_waiting(&config.etcd, &process_owner(), &shutdown)
                .await
                .map_err(|e| IngestError::Epochs(Box::new(e)))?
                .ok_or(IngestError::Stopped)?;
            Some(claimer)
        } else {
            None
        };
        Self::start_with(config, shutdown, epochs).await
    }

    /// A worker whose primaries publish under the epochs the master assigns
    /// ([`start_assigned`](Self::start_assigned),
    /// [`FeedHandle::promote_under`]); it claims none itself. Its feeds publish only while `held` says the worker's lease is held.
    ///
    /// # Errors
    /// Kafka unreachable, or a conflicting Kafka option.
    pub async fn start_for_cluster(
        config: Config,
        shutdown: Shutdown,
        held: HeldUntil,
    ) -> Result<Worker, IngestError> {
        let mut worker = Self::start_with(config, shutdown, None).await?;
        worker.held = Some(held);
        Ok(worker)
    }

    async fn start_with(
        config: Config,
        shutdown: Shutdown,
        epochs: Option<EpochClaimer>,
    ) -> Result<Worker, IngestError> {
        // Bounded by `ingest.instruments_timeout_ms`; never fails (a list it
        // cannot get leaves the built-in rules).
        let loaded = tokio::select! {
            loaded = instruments::load_configured(&config.ingest) => loaded,
            _ = shutdown.cancelled() => return Err(IngestError::Stopped),
        };
        loaded.instruments.install();
        let publishers = Publishers::connect(&config).await?;
        let (output, queue) = mpsc::channel(OUTPUT_QUEUE);
        let publisher = tokio::task::spawn_blocking(move || publishers.run(queue));
        Ok(Worker {
            tuning: Tuning::from_config(&config.ingest),
            config: Arc::new(config),
            output,
            publisher,
            feeds: JoinSet::new(),
            cancel: shutdown.child_token(),
            epochs,
            held: None,
        })
    }

    /// Starts one feed in `role`.
    ///
    /// # Errors
    /// [`IngestError::Feed`] when the feed config does not resolve.
    pub fn start_feed(
        &mut self,
        config: &FeedConfig,
        role: Role,
    ) -> Result<FeedHandle, IngestError> {
        self.start_assigned(config, role, Epoch::NONE)
    }

    /// Starts one feed in `role`; as primary it publishes under `epoch`
    /// (the master's), or claims one when that is [`Epoch::NONE`].
    ///
    /// # Errors
    /// [`IngestError::Feed`] when the feed config does not resolve.
    pub fn start_assigned(
        &mut self,
        config: &FeedConfig,
        role: Role,
        epoch: Epoch,
    ) -> Result<FeedHandle, IngestError> {
        let spec = FeedSpec::from_config(config, &self.config.ingest)?;
        let (commands, command_queue) = mpsc::channel(FEED_COMMANDS);
        let events = FeedEvents::new(spec.name.clone());
        let cancel = self.cancel.child_token();
        let handle = FeedHandle {
            name: spec.name.clone(),
            commands,
            events: events.clone(),
            cancel: cancel.clone(),
        };
        let task = FeedTask::new(
            spec,
            self.tuning.clone(),
            role,
            self.output.clone(),
            events,
            cancel,
            self.epochs.clone(),
        )
        .with_epoch(epoch)
        .with_lease(self.held.clone());
        let name = handle.name.clone();
        let span = tracing::info_span!("feed", feed = %name, role = ?role);
        self.feeds
            .spawn(async move { (name, task.run(command_queue).await) }.instrument(span));
        Ok(handle)
    }

    /// Waits until everything handed to the publisher so far is acknowledged.
    ///
    /// # Errors
    /// A delivery failure, or the publisher is gone.
    pub async fn flush(&self) -> Result<(), IngestError> {
        self.flusher().flush().await
    }

    /// A handle that flushes the publisher from another task.
    pub fn flusher(&self) -> Flusher {
        Flusher {
            output: self.output.clone(),
        }
    }

    /// Collects feeds that have ended, returning the first failure.
    pub fn reap_ended(&mut self) -> Option<IngestError> {
        let mut first = None;
        while let Some(joined) = self.feeds.try_join_next() {
            if let Err(e) = reap(joined) {
                first.get_or_insert(e);
            }
        }
        first
    }

    /// Runs until shutdown (or until every feed has ended), then drains:
    /// feeds stop, the publisher flushes.
    ///
    /// # Errors
    /// A feed or the publisher failed.
    pub async fn run(mut self) -> Result<(), IngestError> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                joined = self.feeds.join_next() => match joined {
                    None => break,
                    Some(joined) => {
                        if let Err(e) = reap(joined) {
                            tracing::error!(error = %e, "feed failed");
                            first_error.get_or_insert(e);
                        }
                    }
                },
            }
        }
        self.shutdown_inner(first_error).await
    }

    /// Stops every feed and the publisher, flushing what was queued.
    ///
    /// # Errors
    /// A feed or the publisher failed.
    pub async fn shutdown(self) -> Result<(), IngestError> {
        self.shutdown_inner(None).await
    }

    async fn shutdown_inner(
        mut self,
        mut first_error: Option<IngestError>,
    ) -> Result<(), IngestError> {
        self.cancel.cancel();
        let drain = async {
            while let Some(joined) = self.feeds.join_next().await {
                if let Err(e) = reap(joined) {
                    first_error.get_or_insert(e);
                }
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!("feeds did not stop within the drain deadline; aborting them");
            self.feeds.shutdown().await;
        }
        drop(self.output);
        match self.publisher.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => {
                first_error.get_or_insert(IngestError::Task(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn reap(
    joined: Result<(String, Result<(), IngestError>), tokio::task::JoinError>,
) -> Result<(), IngestError> {
    match joined {
        Ok((_, result)) => result,
        Err(e) => Err(IngestError::Task(e)),
    }
}

/// Runs the feeds of `[ingest] feeds` as primaries until `shutdown`.
///
/// # Errors
/// A feed that does not resolve, Kafka unreachable, or the publisher failed.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), IngestError> {
    let feeds = config.ingest.feeds.clone();
    if feeds.is_empty() {
        tracing::warn!("no feeds configured ([[ingest.feeds]]); waiting for shutdown");
    }
    one_publisher_per_symbol(&feeds)?;
    let mut worker = Worker::start(config, shutdown).await?;
    for feed in &feeds {
        let handle = worker.start_feed(feed, Role::Primary)?;
        tracing::info!(
            feed = handle.name(),
            symbols = feed.symbols.len(),
            "feed started"
        );
    }
    if feeds.is_empty() {
        worker.cancel.cancelled().await;
    }
    worker.run().await
}

/// A feed's symbols as the exchanges spell them: trimmed, upper case, each
/// once, in the configured order, empty ones dropped.
pub(crate) fn normalised_symbols(configured: &[String]) -> Vec<String> {
    let mut symbols: Vec<String> = Vec::with_capacity(configured.len());
    for symbol in configured {
        let symbol = symbol.trim().to_ascii_uppercase();
        if !symbol.is_empty() && !symbols.contains(&symbol) {
            symbols.push(symbol);
        }
    }
    symbols
}

/// Checks that no symbol of an exchange is in two feeds: its trades would be
/// published twice under two epochs (and two id spaces, for Binance's
/// `trade` and `aggTrade`), and readers would fence one of them.
///
/// # Errors
/// [`IngestError::Feed`] naming the symbol and both feeds.
pub fn one_publisher_per_symbol(feeds: &[FeedConfig]) -> Result<(), IngestError> {
    let mut owner: HashMap<(Exchange, String), String> = HashMap::new();
    for (index, feed) in feeds.iter().enumerate() {
        let name = format!(
            "ingest.feeds[{index}] ({}:{})",
            feed.exchange,
            feed.feed.as_deref().unwrap_or("default")
        );
        for symbol in normalised_symbols(&feed.symbols) {
            if let Some(first) = owner.get(&(feed.exchange, symbol.clone())) {
                return Err(IngestError::Feed {
                    feed: name,
                    problem: format!(
                        "symbol {symbol} is also in {first}; each symbol of an exchange belongs to one feed"
                    ),
                });
            }
            owner.insert((feed.exchange, symbol), name.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(exchange: Exchange, name: Option<&str>, symbols: &[&str]) -> FeedConfig {
        FeedConfig {
            exchange,
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            ws_url: None,
            rest_url: None,
            feed: name.map(str::to_string),
            symbols_per_connection: None,
            max_connection_age_ms: None,
            ping_interval_ms: None,
            pong_timeout_ms: None,
        }
    }

    #[test]
    fn a_symbol_belongs_to_one_feed_per_exchange() {
        let cases = [
            (
                "disjoint symbols",
                vec![
                    feed(Exchange::Binance, Some("aggTrade"), &["BTCUSDT"]),
                    feed(Exchange::Binance, Some("trade"), &["ETHUSDT"]),
                ],
                None,
            ),
            (
                "same symbol on two exchanges",
                vec![
                    feed(Exchange::Binance, None, &["BTC-USDT"]),
                    feed(Exchange::Okx, None, &["BTC-USDT"]),
                ],
                None,
            ),
            (
                "repeated within one feed",
                vec![feed(Exchange::Binance, None, &["BTCUSDT", "btcusdt"])],
                None,
            ),
            (
                "trade and aggTrade of one symbol",
                vec![
                    feed(Exchange::Binance, Some("aggTrade"), &["BTCUSDT"]),
                    feed(Exchange::Binance, Some("trade"), &["ETHUSDT", "btcusdt"]),
                ],
                Some("feed ingest.feeds[1] (binance:trade): symbol BTCUSDT is also in ingest.feeds[0] (binance:aggTrade)"),
            ),
        ];
        for (name, feeds, want) in cases {
            let got = one_publisher_per_symbol(&feeds)
                .err()
                .map(|e| e.to_string());
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(prefix) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(prefix)),
                    "{name}: {got:?}"
                ),
            }
        }
    }
}

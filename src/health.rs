//! Readiness probes: the checks behind `/readyz` that every binary shares.
//!
//! Each probe is a task that asks one service a cheap question every
//! [`PROBE_INTERVAL`] and sets its check on the process health
//! ([`crate::telemetry::health`]): `kafka`
//! (broker metadata), `etcd` (endpoint status), `mongodb` (`ping`), and
//! `lag` (a consumer group's committed offsets against the ends of its
//! topics, also exported as `tickfetch_consumer_lag_records`). A check
//! turns unready with the error as its reason within a probe interval plus
//! the probe's timeout of a service going away, and ready again when it
//! answers. The binaries' own checks (a stage's partitions, a worker's
//! lease) are set where that state lives.
//!
//! [`Probes`] owns its tasks: they stop on shutdown or when it is dropped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::task::JoinHandle;

use crate::config::{Config, EtcdConfig, KafkaConfig, MongoConfig};
use crate::kafka::client_config;
use crate::shutdown::CancellationToken;
use crate::telemetry::{health, register};

/// How often each probe asks.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long one question may take before it counts as unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a consumer group's lag is read.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);

fn lag_gauge() -> &'static IntGaugeVec {
    static GAUGE: OnceLock<IntGaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        register(
            IntGaugeVec::new(
                Opts::new(
                    "tickfetch_consumer_lag_records",
                    "records of the topic not yet committed by the consumer group",
                ),
                &["group", "topic", "partition"],
            )
            .expect("static metric definition"),
        )
    })
}

/// The probe tasks of one process.
#[derive(Default)]
pub struct Probes {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs `probe` every `interval` until `shutdown`.
fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut probe: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => probe().await,
            }
        }
    })
}

impl Probes {
    pub fn new() -> Self {
        Self::default()
    }

    /// `kafka`: the brokers answer a metadata request.
    pub fn kafka(&mut self, config: &KafkaConfig, shutdown: &CancellationToken) {
        let bootstrap = config.bootstrap.clone();
        let client = client_config(
            config,
            &[
                ("group.id", "tickfetch.probe"),
                // Back within a second of the broker's return.
                ("reconnect.backoff.max.ms", "1000"),
            ],
        )
        .and_then(|c| {
            c.create::<BaseConsumer>()
                .map_err(crate::kafka::KafkaError::client("creating the kafka probe"))
        });
        let client = match client {
            Ok(client) => Arc::new(client),
            Err(e) => {
                health().unready("kafka", e);
                return;
            }
        };
        health().unready("kafka", "not probed yet");
        self.tasks
            .push(every(PROBE_INTERVAL, shutdown.clone(), move || {
                let (client, bootstrap) = (Arc::clone(&client), bootstrap.clone());
                async move {
                    let answer = tokio::task::spawn_blocking(move || {
                        client
                            .fetch_metadata(None, PROBE_TIMEOUT)
                            .map(|m| m.brokers().len())
                    })
                    .await;
                    match answer {
                        Ok(Ok(brokers)) if brokers > 0 => health().ready("kafka"),
                        Ok(Ok(_)) => {
                            health().unready("kafka", format!("{bootstrap}: no broker listed"))
                        }
                        Ok(Err(e)) => {
                            health().unready("kafka", format!("{bootstrap} does not answer: {e}"))
                        }
                        Err(e) => health().unready("kafka", format!("probe failed: {e}")),
                    }
                }
            }));
    }

    /// `etcd`: an endpoint answers a status request.
    pub fn etcd(&mut self, config: &EtcdConfig, shutdown: &CancellationToken) {
        let endpoints = config.endpoints.clone();
        let etcd = config.clone();
        health().unready("etcd", "not probed yet");
        let shared = Arc::new(tokio::sync::Mutex::new(None::<etcd_client::Client>));
        self.tasks
            .push(every(PROBE_INTERVAL, shutdown.clone(), move || {
                let (shared, endpoints, etcd) =
                    (Arc::clone(&shared), endpoints.clone(), etcd.clone());
                async move {
                    let mut slot = shared.lock().await;
                    let answer = tokio::time::timeout(PROBE_TIMEOUT * 2, async {
                        if slot.is_none() {
                            let options =
                                match crate::coord::store::connect_options(&etcd, PROBE_TIMEOUT) {
                                    Ok(options) => options.with_timeout(PROBE_TIMEOUT),
                                    Err(e) => {
                                        return Err(etcd_client::Error::InvalidArgs(e.to_string()))
                                    }
                                };
                            *slot = Some(
                                etcd_client::Client::connect(&endpoints, Some(options)).await?,
                            );
                        }
                        match slot.as_mut() {
                            Some(client) => client.status().await.map(|_| ()),
                            None => Ok(()),
                        }
                    })
                    .await;
                    let who = endpoints.join(",");
                    match answer {
                        Ok(Ok(())) => health().ready("etcd"),
                        Ok(Err(e)) => {
                            health().unready("etcd", format!("{who} does not answer: {e}"))
                        }
                        Err(_) => health().unready(
                            "etcd",
                            format!("{who} does not answer within {:?}", PROBE_TIMEOUT * 2),
                        ),
                    }
                }
            }));
    }

    /// `mongodb`: the server answers `ping`.
    pub fn mongodb(&mut self, config: &MongoConfig, shutdown: &CancellationToken) {
        let mongo = config.clone();
        let options = async move { mongo.client_options().await };
        let database = config.database.clone();
        health().unready("mongodb", "not probed yet");
        let shared = Arc::new(tokio::sync::Mutex::new(None::<mongodb::Client>));
        let options = Arc::new(tokio::sync::Mutex::new(Some(options)));
        self.tasks
            .push(every(PROBE_INTERVAL, shutdown.clone(), move || {
                let (shared, options, database) =
                    (Arc::clone(&shared), Arc::clone(&options), database.clone());
                async move {
                    let mut slot = shared.lock().await;
                    if slot.is_none() {
                        // Parsing the URI resolves nothing on the network but
                        // a mongodb+srv name: done on the first probe.
                        let parsed = match options.lock().await.take() {
                            Some(parse) => parse.await,
                            None => return,
                        };
                        let client = parsed.map_err(|e| e.to_string()).and_then(|mut o| {
                            o.server_selection_timeout = Some(PROBE_TIMEOUT);
                            mongodb::Client::with_options(o).map_err(|e| e.to_string())
                        });
                        match client {
                            Ok(client) => *slot = Some(client),
                            Err(e) => {
                                health().unready("mongodb", format!("bad mongodb.uri: {e}"));
                                return;
                            }
                        }
                    }
                    let Some(client) = slot.as_ref() else { return };
                    let ping = tokio::time::timeout(
                        PROBE_TIMEOUT * 2,
                        client
                            .database(&database)
                            .run_command(mongodb::bson::doc! { "ping": 1 }),
                    )
                    .await;
                    match ping {
                        Ok(Ok(_)) => health().ready("mongodb"),
                        Ok(Err(e)) => health().unready("mongodb", format!("does not answer: {e}")),
                        Err(_) => health().unready(
                            "mongodb",
                            format!("does not answer within {:?}", PROBE_TIMEOUT * 2),
                        ),
                    }
                }
            }));
    }

    /// `lag`: consumer group `group` is at most `telemetry.ready_max_lag`
    /// records behind on `topics` in all (0: any lag is ready, the lag is
    /// still read); each partition's lag exported.
    pub fn lag(
        &mut self,
        config: &Config,
        group: String,
        topics: Vec<String>,
        shutdown: &CancellationToken,
    ) {
        let config = Arc::new(config.clone());
        let bound = config.telemetry.ready_max_lag;
        health().unready("lag", "not read yet");
        self.tasks
            .push(every(LAG_INTERVAL, shutdown.clone(), move || {
                let (config, group, topics) = (Arc::clone(&config), group.clone(), topics.clone());
                async move {
                    let read = tokio::task::spawn_blocking(move || {
                        let mut total = 0;
                        for topic in &topics {
                            for p in crate::lag::partition_lags(&config, &group, topic)? {
                                lag_gauge()
                                    .with_label_values(&[
                                        group.as_str(),
                                        topic.as_str(),
                                        &p.partition.to_string(),
                                    ])
                                    .set(p.lag());
                                total += p.lag();
                            }
                        }
                        Ok::<_, crate::kafka::KafkaError>((total, topics.join(", ")))
                    })
                    .await;
                    match read {
                        Ok(Ok((total, _))) if bound == 0 || total as u64 <= bound => {
                            health().ready("lag")
                        }
                        Ok(Ok((total, topics))) => health().unready(
                            "lag",
                            format!("{total} records behind on {topics} (telemetry.ready_max_lag = {bound})"),
                        ),
                        Ok(Err(e)) => health().unready("lag", format!("cannot read the lag: {e}")),
                        Err(e) => health().unready("lag", format!("probe failed: {e}")),
                    }
                }
            }));
    }
}

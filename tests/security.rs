//! Secured services, started by the test: Apache Kafka with a SASL_SSL
//! listener and SCRAM-SHA-512 users, etcd with client TLS
//! (`--client-cert-auth`) and authentication (a user whose role covers the
//! test's key prefix only), SecantusDB over TLS with SCRAM authentication.
//! The certificates are made with `openssl`; the passwords come from files.
//!
//! - The four rollup stages and the sink run the candle oracle through them
//!   to MongoDB, exact; a worker registers with etcd's auth, takes its feeds
//!   and publishes its trades.
//! - Wrong credentials stop a stage, the sink and an etcd client with an
//!   error naming the service and the mechanism or user, never the password.
//! - No password appears in any log line of the run, in `/metrics`, in the
//!   config's `Debug` output, or in `tickfetch status`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::oracle::*;
use common::pipeline::*;
use common::secure::{AuthMongo, Certs, SecureEtcd, SecureKafka};
use common::Proc;
use tickfetch::config::{Config, KafkaProtocol, KafkaSecurity, PasswordSource};
use tickfetch::coord::keyspace::{AssignmentRecord, WorkerRecord};
use tickfetch::coord::store::Store;
use tickfetch::exsim::{generated_symbols, Simulator};
use tickfetch::ingest::venues::Feed;
use tickfetch::model::Exchange;

const USER: &str = "tickfetch";
// Distinctive, so that a search of the logs cannot miss one.
const KAFKA_PASSWORD: &str = "kafka-pw-Zr5xq81QvN";
const ETCD_PASSWORD: &str = "etcd-pw-Pq72vvHs3K";
const MONGO_PASSWORD: &str = "mongo-pw-Lm3k9wYt0B";
const WRONG_PASSWORD: &str = "wrong-pw-Ux4Jd7Rk2E";
/// The other mechanisms' users.
const SCRAM_256: (&str, &str, &str) = ("SCRAM-SHA-256", "tickfetch-256", "kafka256-pw-Hw8sLq2Zc");
const PLAIN: (&str, &str, &str) = ("PLAIN", "tickfetch-plain", "plain-pw-Rt6nBv1Xy");

fn secrets() -> [&'static str; 7] {
    [
        SCRAM_256.2,
        PLAIN.2,
        KAFKA_PASSWORD,
        ETCD_PASSWORD,
        MONGO_PASSWORD,
        WRONG_PASSWORD,
        // The etcd root user's (SecureEtcd).
        "etcd-pw-Pq72vvHs3K-root",
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{what} shows a password ({secret}):\n{text}"
        );
    }
}

fn password_file(dir: &Path, name: &str, password: &str) -> PasswordSource {
    let path = dir.join(format!("{name}.password"));
    std::fs::write(&path, format!("{password}\n")).expect("password file");
    PasswordSource::File(path)
}

/// `config` pointed at the secured services, passwords from files in `dir`.
fn secured(
    mut config: Config,
    dir: &Path,
    certs: &Certs,
    kafka: &SecureKafka,
    etcd: &SecureEtcd,
    mongo: &AuthMongo,
) -> Config {
    config.kafka.bootstrap = kafka.bootstrap();
    config.kafka.security = KafkaSecurity {
        protocol: KafkaProtocol::SaslSsl,
        sasl_mechanism: Some("SCRAM-SHA-512".into()),
        username: USER.into(),
        password: Some(password_file(dir, "kafka", KAFKA_PASSWORD)),
        ca_file: Some(certs.ca.clone()),
        cert_file: None,
        key_file: None,
    };
    config.etcd.endpoints = vec![etcd.endpoint()];
    config.etcd.username = USER.into();
    config.etcd.password = Some(password_file(dir, "etcd", ETCD_PASSWORD));
    config.etcd.ca_file = Some(certs.ca.clone());
    config.etcd.cert_file = Some(certs.client_cert.clone());
    config.etcd.key_file = Some(certs.client_key.clone());
    config.mongodb.uri = mongo.uri();
    config.mongodb.username = USER.into();
    config.mongodb.password = Some(password_file(dir, "mongodb", MONGO_PASSWORD));
    config
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// Waits (90 s at most) for `proc` to exit, and asserts that it failed
/// with an error naming the service (`named`) and saying why (`why`);
/// returns its log.
fn stopped_with(mut proc: Proc, named: &str, why: &str) -> String {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} still runs after 90 s; log:\n{}",
            proc.name,
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = proc.log_text();
    assert!(!status.success(), "{}: {status}; log:\n{log}", proc.name);
    assert!(
        log.contains(named) && log.contains(why),
        "{}: the error names the service ({named}) and says why ({why}):\n{log}",
        proc.name
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_kafka_etcd_and_mongodb() {
    tickfetch::telemetry::init_logging(tickfetch::config::LogFormat::Text);
    let Some(oracle) = oracle_dir("secured_kafka_etcd_and_mongodb") else {
        return;
    };
    let mut config = pipeline_config("security");
    config.sink.intervals = vec![
        tickfetch::model::Interval::M1,
        tickfetch::model::Interval::M5,
    ];
    let dir = common::work_dir(&config);
    let certs = Certs::make(&dir.join("certs"));
    let kafka = SecureKafka::start(
        &dir,
        &certs,
        &[
            ("SCRAM-SHA-512", USER, KAFKA_PASSWORD),
            (SCRAM_256.0, SCRAM_256.1, SCRAM_256.2),
        ],
        &[(PLAIN.1, PLAIN.2)],
    );
    let etcd = SecureEtcd::start(&dir, &certs, USER, ETCD_PASSWORD, &config.etcd.prefix).await;
    let mongo = AuthMongo::start(&dir, &certs, USER, MONGO_PASSWORD).await;
    let config = secured(config, &dir, &certs, &kafka, &etcd, &mongo);
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    outputs.insert("the config's Debug output".into(), format!("{config:?}"));

    // The oracle through the four stages (their epochs claimed in etcd) and
    // the sink, whose /metrics is read on the way.
    let sink_port = free_port();
    let mut procs: Vec<Proc> = STAGES
        .iter()
        .map(|stage| spawn_stage(&config, stage, 0))
        .collect();
    procs.push(Proc::spawn(
        &config,
        "tickfetch-sink",
        "sink",
        &[
            "--all-partitions",
            "--set",
            &format!("telemetry.http_addr=127.0.0.1:{sink_port}"),
        ],
    ));
    publish_oracle(&config, &oracle.join(TRADES_CSV), 1, |_| {}).await;
    let (m1, m5) = read_downstream(&config, Duration::from_secs(240)).await;
    assert_oracle_candles(&oracle, &m1, &m5);
    assert_stored(&config, &m1, &m5).await;
    outputs.insert(
        "the sink's /metrics".into(),
        http_get(sink_port, "/metrics"),
    );
    outputs.insert("the sink's /readyz".into(), http_get(sink_port, "/readyz"));
    drop(procs);

    // The other mechanisms reach the brokers too (a topic created by each).
    for (mechanism, user, password) in [SCRAM_256, PLAIN] {
        let mut other = config.kafka.clone();
        other.security.sasl_mechanism = Some(mechanism.into());
        other.security.username = user.into();
        other.security.password = Some(password_file(&dir, user, password));
        let topic = format!("{}.{}", config.topics.prefix, mechanism.to_lowercase());
        tickfetch::kafka::ensure_topics(
            &other,
            &[tickfetch::kafka::TopicSpec {
                name: topic,
                partitions: 1,
                compacted: false,
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{mechanism} as {user}: {e}"));
    }

    // A worker with etcd's auth: registers, takes its feeds, publishes.
    let symbols = generated_symbols(Exchange::Binance, 3);
    let sim = Simulator::generating(BTreeMap::from([(Exchange::Binance, symbols.clone())]), 20.0)
        .await
        .expect("simulator");
    let feed: Feed = "binance:trade".parse().expect("feed");
    let mut cluster = config.clone();
    cluster.ingest.feeds = vec![sim.feed_config(feed, &[])];
    cluster.cluster.lease_ttl_ms = 3_000;
    let master = Proc::spawn(&cluster, "tickfetch-coord", "master", &["--id", "master"]);
    let worker = Proc::spawn(&cluster, "tickfetch-ingest", "w1", &["--worker-id", "w1"]);
    let store = Store::connect(&cluster.etcd)
        .await
        .expect("etcd with TLS and auth");
    let cli = |args: &[&str]| common::tickfetch_cli(&cluster, args);
    common::add_feed(&cluster, "binance", "trade", 0, &symbols);
    let started = Instant::now();
    loop {
        let workers = store
            .list::<WorkerRecord, &str>(&[])
            .await
            .expect("workers");
        let assigned = store
            .list::<AssignmentRecord, &str>(&[])
            .await
            .expect("assignments");
        let held = assigned
            .records
            .iter()
            .filter(|a| a.value.primary == "w1" && a.value.epoch != 0)
            .count();
        if workers.records.iter().any(|w| w.value.id == "w1") && held == symbols.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "w1 did not register and take {} feeds; log:\n{}",
            symbols.len(),
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    loop {
        let published = common::trades::read_trades_topic(&cluster).await;
        let of = |s: &String| {
            published
                .trades
                .get(&tickfetch::wire::feed_key(Exchange::Binance, s))
                .map_or(0, Vec::len)
        };
        let on: usize = symbols.iter().map(of).sum();
        if symbols.iter().all(|s| of(s) > 0) {
            eprintln!("w1 published {on} trades over SASL_SSL");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "w1 published no trade of some symbol; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    outputs.insert("tickfetch status".into(), cli(&["status"]));
    drop(worker);
    drop(master);

    // Wrong credentials: a clear error, naming the service and who, never
    // the password.
    let bad_dir = dir.join("wrong");
    std::fs::create_dir_all(&bad_dir).expect("dir");
    let mut wrong_kafka = config.clone();
    wrong_kafka.topics.prefix = format!("{}-wrong-kafka", config.topics.prefix);
    wrong_kafka.kafka.security.password = Some(password_file(&bad_dir, "kafka", WRONG_PASSWORD));
    let log = stopped_with(
        spawn_stage(&wrong_kafka, "1s", 0),
        &format!(
            "Error: kafka at {} (sasl_ssl, SCRAM-SHA-512 as user {USER})",
            kafka.bootstrap()
        ),
        "invalid credentials",
    );
    outputs.insert("a stage with a wrong Kafka password".into(), log);

    let mut wrong_etcd = config.etcd.clone();
    wrong_etcd.password = Some(password_file(&bad_dir, "etcd", WRONG_PASSWORD));
    let message = Store::connect(&wrong_etcd)
        .await
        .map(|_| ())
        .expect_err("a wrong etcd password is refused")
        .to_string();
    assert!(
        message.contains(&etcd.endpoint()) && message.contains(USER),
        "the error names etcd and the user: {message}"
    );
    eprintln!("etcd, wrong password: {message}");
    outputs.insert("an etcd client with a wrong password".into(), message);

    let mut wrong_etcd_stage = config.clone();
    wrong_etcd_stage.topics.prefix = format!("{}-wrong-etcd", config.topics.prefix);
    wrong_etcd_stage.etcd.password = Some(password_file(&bad_dir, "etcd-stage", WRONG_PASSWORD));
    let log = stopped_with(
        spawn_stage(&wrong_etcd_stage, "1s", 0),
        &format!(
            "Error: etcd at {}: connecting (TLS, as user {USER})",
            etcd.endpoint()
        ),
        "authentication failed",
    );
    outputs.insert("a stage with a wrong etcd password".into(), log);

    let mut wrong_mongo = config.clone();
    wrong_mongo.topics.prefix = format!("{}-wrong-mongo", config.topics.prefix);
    wrong_mongo.mongodb.password = Some(password_file(&bad_dir, "mongodb", WRONG_PASSWORD));
    let log = stopped_with(
        Proc::spawn(
            &wrong_mongo,
            "tickfetch-sink",
            "sink-wrong",
            &["--all-partitions"],
        ),
        &format!(
            "Error: mongodb at {} as user {USER} refused us",
            mongo.uri()
        ),
        "AuthenticationFailed",
    );
    outputs.insert("the sink with a wrong MongoDB password".into(), log);

    // Every log of the run (stages, sink, master, worker, CLI runs).
    for entry in std::fs::read_dir(&dir).expect("logs") {
        let path: PathBuf = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            outputs.insert(path.display().to_string(), text);
        }
    }
    for (what, text) in &outputs {
        assert_no_secret(what, text);
    }
    let lines: usize = outputs.values().map(|t| t.lines().count()).sum();
    eprintln!(
        "no password in {} outputs ({lines} lines): logs, /metrics, Debug, status, errors",
        outputs.len()
    );
    drop(sim);
    drop((kafka, etcd, mongo));
}

/// Waits until `proc`'s log holds `text`.
fn wait_log(proc: &Proc, text: &str) -> String {
    let started = Instant::now();
    loop {
        let log = proc.log_text();
        if log.contains(text) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not log {text:?}; log:\n{log}",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The endpoints listen on loopback by default; told to listen on every
/// interface, the metrics endpoint (a master here) and the simulator warn
/// that they have no authentication.
#[test]
fn endpoints_beyond_loopback_warn_that_they_have_no_authentication() {
    let config = common::config("security-binds");
    let master = Proc::spawn(
        &config,
        "tickfetch-coord",
        "master-loopback",
        &[
            "--id",
            "master-loopback",
            "--set",
            "telemetry.http_addr=127.0.0.1:0",
        ],
    );
    let log = wait_log(&master, "metrics and health endpoint listening");
    assert!(!log.contains("beyond loopback"), "{log}");
    let everywhere = Proc::spawn(
        &config,
        "tickfetch-coord",
        "master-everywhere",
        &[
            "--id",
            "master-everywhere",
            "--set",
            "telemetry.http_addr=0.0.0.0:0",
        ],
    );
    wait_log(
        &everywhere,
        "listens beyond loopback and has no authentication",
    );

    let mut command = std::process::Command::new(common::binary("tickfetch-exsim"));
    command.args(["--listen", "0.0.0.0:0", "generate", "--rate", "0"]);
    let sim = Proc::start(&config, "exsim-everywhere", command);
    wait_log(&sim, "its control endpoint has no authentication");
    drop((master, everywhere, sim));
}

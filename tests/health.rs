//! `/healthz` and `/readyz` of a running stage really turn: a stage on a
//! broker of this test's own reports unready with the broker's address when
//! the broker is killed, ready again when it is back; a stage whose
//! partitions a newer instance took reports them fenced.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::up::free_port;
use common::Proc;

/// `GET path` on loopback `port`: (status code, body); `None` while nothing
/// answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Some((code, body))
}

/// Polls `/readyz` until `want(code, body)`; returns the body and how long
/// it took.
fn wait_readyz(port: u16, what: &str, want: impl Fn(u16, &str) -> bool) -> (String, Duration) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(90) {
        if let Some((code, body)) = get(port, "/readyz") {
            if want(code, &body) {
                return (body, started.elapsed());
            }
            last = Some((code, body));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/readyz never {what}; last answer: {last:?}");
}

fn stage_on(config: &tickfetch::config::Config, name: &str, port: u16, extra: &[&str]) -> Proc {
    let addr = format!("telemetry.http_addr=\"127.0.0.1:{port}\"");
    let mut args = vec!["--stage", "1s", "--set", addr.as_str()];
    args.extend_from_slice(extra);
    Proc::spawn(config, "tickfetch-rollup", name, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_turns_unready_while_its_broker_is_down_and_reports_being_fenced() {
    let mut config = common::pipeline::pipeline_config("health");
    let own = common::OwnStack::start(&config);
    let env = own.env.clone();
    config.kafka.bootstrap = env.kafka_bootstrap.clone();

    // A stage in the consumer group, then a newer instance with fixed
    // partitions taking all of them: the group member reports them fenced.
    let group_port = free_port();
    let older = stage_on(&config, "rollup-1s-group", group_port, &[]);
    let (body, took) = wait_readyz(group_port, "ready", |code, _| code == 200);
    eprintln!("stage ready after {:.1} s:\n{body}", took.as_secs_f64());
    for check in ["kafka: ok", "etcd: ok", "partitions: ok", "lag: ok"] {
        assert!(body.contains(check), "{check} in:\n{body}");
    }
    let static_port = free_port();
    let newer = stage_on(
        &config,
        "rollup-1s-static",
        static_port,
        &["--partitions", "all"],
    );
    let (body, _) = wait_readyz(group_port, "fenced", |code, body| {
        code == 503 && body.contains("partitions: fenced: p0,p1 taken by a newer instance")
    });
    eprintln!("the older stage, fenced:\n{body}");
    wait_readyz(static_port, "ready (the newer stage)", |code, _| {
        code == 200
    });
    assert_eq!(get(group_port, "/healthz").map(|(c, _)| c), Some(200));
    drop(newer);
    drop(older);

    // A stage of another group on the test's broker, which is killed:
    // unready, naming the broker; alive all along; ready once it is back.
    config.rollup.group_prefix = format!("{}-b", config.rollup.group_prefix);
    let port = free_port();
    let _stage = stage_on(&config, "rollup-1s-b", port, &[]);
    wait_readyz(port, "ready", |code, _| code == 200);
    own.kill_broker();
    let (body, took) = wait_readyz(port, "unready for the broker", |code, body| {
        code == 503 && body.contains("kafka:") && !body.contains("kafka: ok")
    });
    eprintln!(
        "unready {:.1} s after the broker was killed:\n{body}",
        took.as_secs_f64()
    );
    assert!(body.contains(&env.kafka_bootstrap), "{body}");
    assert_eq!(get(port, "/healthz").map(|(c, _)| c), Some(200));

    let again = common::OwnStack::up(&own.dir).expect("the broker starts again");
    assert_eq!(again.kafka_bootstrap, env.kafka_bootstrap);
    let (_, took) = wait_readyz(port, "ready again", |code, _| code == 200);
    eprintln!(
        "ready {:.1} s after the broker was started again",
        took.as_secs_f64()
    );
}

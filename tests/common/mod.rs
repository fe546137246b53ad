//! Shared test harness: one local stack per test run, unique names per test.
//!
//! The stack comes from the environment when `KAFKA_BOOTSTRAP`, `ETCD_ENDPOINTS`
//! and `MONGODB_URI` are set (the README's test command starts one and sets
//! them); otherwise the first test to ask starts (or reuses) one under
//! `target/test-stack` with `tickfetch::stack::up`. Every test then takes its own
//! topic prefix, etcd prefix and database name from [`unique`].
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tickfetch::config::Config;
use tickfetch::stack::{StackEnv, StackOptions};

/// The running stack's addresses, started once per test process if needed.
pub fn stack() -> &'static StackEnv {
    static STACK: OnceLock<StackEnv> = OnceLock::new();
    STACK.get_or_init(|| {
        let from_env = (
            std::env::var("KAFKA_BOOTSTRAP"),
            std::env::var("ETCD_ENDPOINTS"),
            std::env::var("MONGODB_URI"),
        );
        if let (Ok(kafka_bootstrap), Ok(etcd_endpoints), Ok(mongodb_uri)) = from_env {
            return StackEnv {
                kafka_bootstrap,
                etcd_endpoints,
                mongodb_uri,
            };
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-stack");
        // A thread of its own: tests calling this may already be inside a runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(tickfetch::stack::up(&StackOptions::new(dir)))
        })
        .join()
        .expect("stack thread")
        .expect("local stack starts")
    })
}

/// A name no other test or run uses: `{tag}-{pid}-{n}-{random}`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}-{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A config pointing at the test stack, with this test's own topic prefix,
/// etcd prefix, database and consumer groups.
pub fn config(tag: &str) -> Config {
    let env = stack();
    let name = unique(tag);
    let mut config = Config::default();
    config.kafka.bootstrap = env.kafka_bootstrap.clone();
    config.etcd.endpoints = env.etcd_endpoints.split(',').map(str::to_string).collect();
    config.etcd.prefix = format!("/test/{name}");
    config.mongodb.uri = env.mongodb_uri.clone();
    config.mongodb.database = name.replace(['-', '.'], "_");
    config.topics.prefix = name.clone();
    config.rollup.group_prefix = format!("{name}.rollup");
    config.sink.group_id = format!("{name}.sink");
    config
}

/// The shared data folder (`TICKFETCH_SHARED_DATA`, default `../shared/data`), or
/// `None` with a message saying the test is skipped.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let root = std::env::var_os("TICKFETCH_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let path = root.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} not found (set TICKFETCH_SHARED_DATA to the shared data folder)",
            path.display()
        );
        None
    }
}

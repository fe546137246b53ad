//! Coordination against a real etcd: fencing epochs.

mod common;

use tickfetch::coord::epoch::{Epoch, EpochClaimer};
use tickfetch::shutdown::CancellationToken;

#[tokio::test]
async fn epochs_are_etcd_revisions_and_every_later_claim_is_higher() {
    let config = common::config("coord-epoch");
    let first = EpochClaimer::connect(&config.etcd, "worker-a:1")
        .await
        .expect("etcd connects");
    let second = EpochClaimer::connect(&config.etcd, "worker-b:2")
        .await
        .expect("etcd connects");
    assert_eq!(
        first.current("feeds/binance:trade").await.expect("read"),
        None,
        "never claimed"
    );
    let a = first.claim("feeds/binance:trade").await.expect("claim");
    // Another scope in between: epochs are global, so order holds across scopes.
    let other = second.claim("rollup/g.1s/p0").await.expect("claim");
    let b = second.claim("feeds/binance:trade").await.expect("claim");
    assert!(a.is_some() && a < other && other < b, "{a} < {other} < {b}");

    // The key holds the current owner: its mod_revision is the newest epoch.
    let (epoch, claim) = first
        .current("feeds/binance:trade")
        .await
        .expect("read")
        .expect("claimed");
    assert_eq!((epoch, claim.owner.as_str()), (b, "worker-b:2"));
    assert_eq!(
        first.key("feeds/binance:trade"),
        format!("{}/epochs/feeds/binance:trade", config.etcd.prefix)
    );
}

#[tokio::test]
async fn an_unreachable_etcd_is_named_in_the_error_and_waiting_ends_on_shutdown() {
    let mut config = common::config("coord-down");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    config.etcd.endpoints = vec![format!("127.0.0.1:{port}")];
    let error = match EpochClaimer::connect(&config.etcd, "w:1").await {
        Ok(claimer) => claimer.claim("feeds/x").await.map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        stop.cancel();
    });
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        EpochClaimer::connect_waiting(&config.etcd, "w:1", &shutdown),
    )
    .await
    .expect("waiting ends on shutdown");
    assert!(waited.expect("no refusal: etcd is unreachable").is_none());
    assert_eq!(Epoch::NONE.header_value(), None);
}

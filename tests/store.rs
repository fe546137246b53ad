//! The etcd object mapper against a real etcd: typed records, conditional
//! writes, paginated listings, guarded transactions, leases that end and tell
//! their holder, and watches that resume after an etcd restart and list again
//! after compaction. Faults run on an etcd of the test's own.

mod common;

use std::time::Duration;

use common::etcd::PrivateEtcd;
use serde::{Deserialize, Serialize};
use tickfetch::coord::store::{Outcome, Record, Store, StoreError, WatchEvent};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Feed {
    exchange: String,
    symbol: String,
    replicas: u32,
}

impl Record for Feed {
    const TEMPLATE: &'static str = "feeds/{exchange}/{symbol}";
    fn key_values(&self) -> Vec<String> {
        vec![self.exchange.clone(), self.symbol.clone()]
    }
}

fn feed(exchange: &str, symbol: &str, replicas: u32) -> Feed {
    Feed {
        exchange: exchange.into(),
        symbol: symbol.into(),
        replicas,
    }
}

async fn shared_store(tag: &str) -> Store {
    Store::connect(&common::config(tag).etcd)
        .await
        .expect("etcd answers")
}

/// Retries `op` while etcd is coming back.
async fn retrying<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd call failed: {e}"),
        }
    }
}

async fn next_event(watch: &mut tickfetch::coord::store::Watch<Feed>) -> WatchEvent<Feed> {
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("a watch event within 30 s")
        .expect("watch event")
}

#[tokio::test]
async fn records_round_trip_and_conditional_writes_refuse_stale_revisions() {
    let store = shared_store("store-cas").await;
    let btc = feed("binance", "BTCUSDT", 1);
    assert_eq!(
        store
            .get::<Feed, _>(&["binance", "BTCUSDT"])
            .await
            .expect("get"),
        None
    );
    let written = store.create(&btc).await.expect("create");
    let Outcome::Written { revision } = written else {
        panic!("created: {written:?}");
    };
    let held = store
        .get::<Feed, _>(&["binance", "BTCUSDT"])
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (held.value.clone(), held.mod_revision),
        (btc.clone(), revision)
    );
    assert_eq!(held.key, "feeds/binance/BTCUSDT");

    // A second create finds it there.
    match store
        .create(&feed("binance", "BTCUSDT", 9))
        .await
        .expect("create")
    {
        Outcome::Conflict { current } => assert_eq!(current.map(|c| c.value), Some(btc.clone())),
        other => panic!("create over an existing record: {other:?}"),
    }
    // CAS with the revision read succeeds once; the stale revision then fails
    // and shows what is there now.
    let two = feed("binance", "BTCUSDT", 2);
    assert!(matches!(
        store
            .compare_and_swap(&two, held.mod_revision)
            .await
            .expect("cas"),
        Outcome::Written { .. }
    ));
    match store
        .compare_and_swap(&feed("binance", "BTCUSDT", 3), held.mod_revision)
        .await
        .expect("cas")
    {
        Outcome::Conflict { current } => {
            let current = current.expect("still there");
            assert_eq!(current.value, two);
            assert!(current.mod_revision > held.mod_revision);
        }
        other => panic!("a stale CAS was applied: {other:?}"),
    }
    // CAS with 0 means "only if absent".
    assert!(matches!(
        store
            .compare_and_swap(&feed("okx", "BTC-USDT", 1), 0)
            .await
            .expect("cas"),
        Outcome::Written { .. }
    ));

    assert!(store
        .delete::<Feed, _>(&["binance", "BTCUSDT"])
        .await
        .expect("delete"));
    assert!(!store
        .delete::<Feed, _>(&["binance", "BTCUSDT"])
        .await
        .expect("delete"));
    assert_eq!(
        store
            .get::<Feed, _>(&["binance", "BTCUSDT"])
            .await
            .expect("get"),
        None
    );

    // Values that cannot fill the template are refused before etcd sees them.
    let bad = store.get::<Feed, _>(&["binance", "BTC/USDT"]).await;
    assert!(matches!(bad, Err(StoreError::Key { .. })), "{bad:?}");
}

#[tokio::test]
async fn a_value_that_does_not_decode_names_its_key() {
    let config = common::config("store-decode");
    let store = Store::connect(&config.etcd).await.expect("etcd");
    store.put(&feed("upbit", "KRW-BTC", 1)).await.expect("put");
    let mut raw = etcd_client::Client::connect(config.etcd.endpoints.clone(), None)
        .await
        .expect("etcd");
    raw.put(store.absolute("feeds/upbit/KRW-ETH"), "not json", None)
        .await
        .expect("raw put");
    match store.get::<Feed, _>(&["upbit", "KRW-ETH"]).await {
        Err(StoreError::Decode { key, .. }) => assert_eq!(key, "feeds/upbit/KRW-ETH"),
        other => panic!("a bad value: {other:?}"),
    }
    let listing = store.list::<Feed, &str>(&[]).await.expect("list");
    assert_eq!(listing.records.len(), 1, "the good record is listed");
    assert_eq!(
        listing
            .undecodable
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["feeds/upbit/KRW-ETH"]
    );
}

#[tokio::test]
async fn listings_page_through_more_records_than_one_page_at_one_revision() {
    let store = shared_store("store-pages").await.with_page_size(7);
    for i in 0..40 {
        store
            .put(&feed("binance", &format!("S{i:03}USDT"), 1))
            .await
            .expect("put");
    }
    for i in 0..13 {
        store
            .put(&feed("bybit", &format!("S{i:03}USDT"), 1))
            .await
            .expect("put");
    }
    let all = store.list::<Feed, &str>(&[]).await.expect("list");
    assert_eq!(all.records.len(), 53, "every record, over 8 pages");
    let keys: Vec<&str> = all.records.iter().map(|r| r.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "in key order");
    assert!(all.records.iter().all(|r| r.mod_revision <= all.revision));

    let binance = store.list::<Feed, _>(&["binance"]).await.expect("list");
    assert_eq!(binance.records.len(), 40);
    // A prefix of one field's value is not a prefix of another's: `bybit`
    // does not list `bybitx`.
    store
        .put(&feed("bybitx", "S000USDT", 1))
        .await
        .expect("put");
    let bybit = store.list::<Feed, _>(&["bybit"]).await.expect("list");
    assert_eq!(bybit.records.len(), 13);
    let one = store
        .list::<Feed, _>(&["bybit", "S001USDT"])
        .await
        .expect("list");
    assert_eq!(one.records.len(), 1, "all fields: exactly that record");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Leader {
    id: String,
}

impl Record for Leader {
    const TEMPLATE: &'static str = "master/leader";
    fn key_values(&self) -> Vec<String> {
        Vec::new()
    }
}

#[tokio::test]
async fn a_batch_writes_everything_or_nothing_under_its_guards() {
    let store = shared_store("store-batch").await;
    let leader = Leader {
        id: "master-a".into(),
    };
    let Outcome::Written { revision: elected } = store.create(&leader).await.expect("create")
    else {
        panic!("leader key exists already");
    };
    let a = feed("okx", "BTC-USDT", 1);
    store.put(&a).await.expect("put");
    let held = store
        .get::<Feed, _>(&["okx", "BTC-USDT"])
        .await
        .expect("get")
        .expect("a");

    // Guarded by the leader key's creation and by the record's revision.
    let outcome = store
        .commit(
            store
                .batch()
                .require_created("master/leader", elected)
                .require::<Feed, _>(&["okx", "BTC-USDT"], held.mod_revision)
                .put(&feed("okx", "BTC-USDT", 2))
                .put(&feed("okx", "ETH-USDT", 1))
                .delete::<Feed, _>(&["okx", "SOL-USDT"]),
        )
        .await
        .expect("commit");
    assert!(outcome.committed);
    let after = store.list::<Feed, _>(&["okx"]).await.expect("list");
    assert_eq!(after.records.len(), 2);
    assert!(
        after
            .records
            .iter()
            .all(|r| r.mod_revision == outcome.revision),
        "one revision"
    );

    // A new leader takes the key: the old leader's guarded writes fail whole.
    store.delete::<Leader, &str>(&[]).await.expect("resign");
    store
        .create(&Leader {
            id: "master-b".into(),
        })
        .await
        .expect("elect");
    let stale = store
        .commit(
            store
                .batch()
                .require_created("master/leader", elected)
                .put(&feed("okx", "BTC-USDT", 7))
                .put(&feed("okx", "XRP-USDT", 1)),
        )
        .await
        .expect("commit");
    assert!(!stale.committed, "a deposed leader changes nothing");
    let unchanged = store.list::<Feed, _>(&["okx"]).await.expect("list");
    assert_eq!(unchanged.records.len(), 2);
    assert_eq!(unchanged.records[0].value.replicas, 2);
}

#[tokio::test]
async fn a_watch_shows_every_record_a_transaction_wrote() {
    let store = shared_store("store-watch-batch").await;
    let from = store.list::<Feed, &str>(&[]).await.expect("list").revision + 1;
    let mut watch = store.watch::<Feed, &str>(&[], from).await.expect("watch");
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i:02}-USDT")).collect();
    let batch = symbols
        .iter()
        .fold(store.batch(), |batch, s| batch.put(&feed("okx", s, 1)));
    let outcome = store.commit(batch).await.expect("commit");
    let mut seen = Vec::new();
    while seen.len() < symbols.len() {
        match next_event(&mut watch).await {
            WatchEvent::Put(record) => {
                assert_eq!(record.mod_revision, outcome.revision, "one revision");
                seen.push(record.value.symbol);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen, symbols,
        "every record of the transaction, in key order"
    );
    assert_eq!(watch.next_revision(), outcome.revision + 1);
}

#[tokio::test]
async fn a_revoked_lease_removes_its_records_and_tells_the_holder() {
    let config = common::config("store-lease");
    let store = Store::connect(&config.etcd).await.expect("etcd");
    let lease = store
        .grant_lease(Duration::from_secs(5))
        .await
        .expect("lease");
    let worker = feed("binance", "WORKER", 1);
    store.put_leased(&worker, &lease).await.expect("put");
    let held = store
        .get::<Feed, _>(&["binance", "WORKER"])
        .await
        .expect("get")
        .expect("present");
    assert_eq!(held.lease, lease.id());
    // Kept alive past its TTL.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(lease.is_alive());
    assert!(store
        .get::<Feed, _>(&["binance", "WORKER"])
        .await
        .expect("get")
        .is_some());

    // Someone else revokes it: the record goes and the holder learns it.
    let mut raw = etcd_client::Client::connect(config.etcd.endpoints.clone(), None)
        .await
        .expect("etcd");
    raw.lease_revoke(lease.id()).await.expect("revoke");
    assert_eq!(
        store
            .get::<Feed, _>(&["binance", "WORKER"])
            .await
            .expect("get"),
        None
    );
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the holder learns within a refresh interval");
    assert!(matches!(
        store.put_leased(&worker, &lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn a_lease_unrefreshed_for_its_ttl_is_lost_and_its_records_expire() {
    let mut etcd = PrivateEtcd::start("store-expiry");
    let store = Store::connect(&etcd.etcd_config()).await.expect("etcd");
    let lease = store
        .grant_lease(Duration::from_secs(3))
        .await
        .expect("lease");
    store
        .put_leased(&feed("binance", "WORKER", 1), &lease)
        .await
        .expect("put");
    // etcd away: the holder cannot confirm the lease any more, so after two
    // thirds of its TTL it counts it lost, before etcd could expire it.
    etcd.kill9();
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("the holder learns it lost the lease");
    etcd.restart();
    // Nobody refreshes it any more: etcd expires it and deletes the record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let present = retrying(|| store.get::<Feed, _>(&["binance", "WORKER"])).await;
        if present.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leased record outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_watch_resumes_after_etcd_restarts_without_missing_a_revision() {
    let mut etcd = PrivateEtcd::start("store-watch-restart");
    let store = Store::connect(&etcd.etcd_config()).await.expect("etcd");
    store.put(&feed("okx", "A", 1)).await.expect("put");
    let listing = store.list::<Feed, _>(&["okx"]).await.expect("list");
    let mut watch = store
        .watch::<Feed, _>(&["okx"], listing.revision + 1)
        .await
        .expect("watch");
    store.put(&feed("okx", "B", 1)).await.expect("put");
    match next_event(&mut watch).await {
        WatchEvent::Put(r) => assert_eq!(r.value.symbol, "B"),
        other => panic!("{other:?}"),
    }

    etcd.kill9();
    etcd.restart();
    // Written before the watch reconnects: it must still report them, in order.
    let (c, other, d) = (
        feed("okx", "C", 1),
        feed("bybit", "OTHER", 1),
        feed("okx", "D", 1),
    );
    retrying(|| store.put(&c)).await;
    retrying(|| store.delete::<Feed, _>(&["okx", "A"])).await;
    retrying(|| store.put(&other)).await;
    retrying(|| store.put(&d)).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(match next_event(&mut watch).await {
            WatchEvent::Put(r) => format!("put {}", r.value.symbol),
            WatchEvent::Deleted { key, .. } => format!("delete {key}"),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(seen, ["put C", "delete feeds/okx/A", "put D"]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_lists_again_and_carries_on() {
    let etcd = PrivateEtcd::start("store-watch-compact");
    let store = Store::connect(&etcd.etcd_config()).await.expect("etcd");
    store.put(&feed("okx", "A", 1)).await.expect("put");
    store.put(&feed("okx", "B", 1)).await.expect("put");
    let old = store
        .list::<Feed, _>(&["okx"])
        .await
        .expect("list")
        .revision;
    store.put(&feed("okx", "C", 1)).await.expect("put");
    store
        .delete::<Feed, _>(&["okx", "A"])
        .await
        .expect("delete");
    let now = store.put(&feed("okx", "B", 2)).await.expect("put");
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd");
    raw.compact(now, None).await.expect("compact");

    let mut watch = store
        .watch::<Feed, _>(&["okx"], old + 1)
        .await
        .expect("watch");
    match next_event(&mut watch).await {
        WatchEvent::Relisted(listing) => {
            let held: Vec<(String, u32)> = listing
                .records
                .iter()
                .map(|r| (r.value.symbol.clone(), r.value.replicas))
                .collect();
            assert_eq!(held, [("B".to_string(), 2), ("C".to_string(), 1)]);
            assert!(listing.revision >= now);
        }
        other => panic!("expected a re-listing, got {other:?}"),
    }
    store.put(&feed("okx", "D", 1)).await.expect("put");
    match next_event(&mut watch).await {
        WatchEvent::Put(r) => assert_eq!(r.value.symbol, "D"),
        other => panic!("{other:?}"),
    }
}

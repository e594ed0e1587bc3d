//! The replicated stores: a Sentinel set and a Redis Cluster on loopback, started by the
//! test kit from Debian's redis-server. The fleet (three replicas of the release binary
//! behind nginx) runs on their URLs while the store fails over under load; the fault
//! soak's shoppers keep a ledger of every acknowledged change, so a change lost in the
//! failover, or applied twice by a resend, shows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::soak::{self, SoakOptions};
use testkit::{RedisCluster, Replicated};

use crate::helpers::{
    RedisServer, binary, eventually, primary_with_replica, start_binary, visitor,
};

/// The longest the shop may go without acknowledging a change when the primary dies: the
/// sentinels' down-after (2 s), an election, the promotion and the replicas finding the new
/// primary. With a 1 s down-after it was under 5 s in most CI runs, but 15 to 20 s when a
/// sentinel counted the just-promoted primary as down and failed over again: the first
/// promoted one then kept acting as primary, without replicas, until Sentinel next polled
/// it (10 s), and neither it nor the new one could confirm a change. Not covered: a failover
/// whose first election fails, which a sentinel tries again only after twice the
/// failover-timeout (10 s); not seen in any run so far.
const FAILOVER_WINDOW_MS: u64 = 10_000;

/// The same after `SENTINEL FAILOVER`: the old primary keeps running (and keeps its
/// connections) until Sentinel next polls it, up to 10 s; the replicas leave it once too
/// few replicas confirm their changes, measured 4.6 to 5.6 s without an answered change
/// (1.1 to 10.2 s with the earlier 1 s down-after).
const PLANNED_FAILOVER_WINDOW_MS: u64 = 12_000;

/// The soak on `store` with only `faults`, every change confirmed by one replica.
async fn failover_soak(store: Replicated, faults: &[&'static str], seconds: u64) -> Value {
    let report = soak::run(SoakOptions {
        binary: binary().into(),
        duration: Duration::from_secs(seconds),
        seed: 7,
        shoppers: 8,
        replicas: 3,
        replicated: Some(store),
        wait_replicas: 1,
        faults: faults.to_vec(),
    })
    .await;
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

/// Asserts a report with at least one fault, no 500, every change answered in the end,
/// and no longer than `limit_ms` without an answered change.
fn assert_bounded(report: &Value, limit_ms: u64) {
    let errors = report["errors_5xx"].as_object().unwrap();
    assert!(
        !errors.keys().any(|kind| kind.starts_with("500")),
        "{report:#}"
    );
    assert_eq!(report["abandoned"], 0, "{report:#}");
    assert!(report["faults_total"].as_u64() >= Some(1), "{report:#}");
    let window = report["longest_unavailable_ms"].as_u64().unwrap();
    assert!(window < limit_ms, "no change answered for {window} ms");
}

/// Asserts a clean report (nothing lost, nothing applied twice, every answer and read
/// agreeing with the ledger), bounded as [`assert_bounded`] with the window of a kill.
fn assert_clean_with_bounded_window(report: &Value) {
    assert!(soak::report_ok(report), "{report:#}");
    assert_bounded(report, FAILOVER_WINDOW_MS);
}

/// Sentinel (a primary, two replicas, three sentinels): the primary is SIGKILLed under load
/// and later comes back as a replica. Every acknowledged change survives (each was
/// confirmed by a replica with `REDIS_WAIT_REPLICAS=1`), nothing is applied twice, no 500,
/// and the fleet answers changes again within the window without any restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_killed_sentinel_primary_loses_no_acknowledged_change() {
    let report = failover_soak(Replicated::Sentinel, &["redis_primary_kill"], 40).await;
    assert_clean_with_bounded_window(&report);
}

/// Sentinel: `SENTINEL FAILOVER` under load (a replica is promoted, then the old primary
/// is demoted, which closes the app's connections to it): no 500, a bounded window, and
/// changes work again without a restart. Not asserted: that nothing is lost. Sentinel
/// promotes first and demotes after, and the changes the old primary (and the replica
/// still following it) took in between are dropped when they follow the new one; the
/// report's `lost` shows how many (docs/configuration.md, "Failover").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_sentinel_failover_on_command_gives_no_500_and_recovers() {
    let report = failover_soak(Replicated::Sentinel, &["redis_failover"], 30).await;
    assert_bounded(&report, PLANNED_FAILOVER_WINDOW_MS);
}

/// Cluster (three primaries, three replicas): a primary SIGKILLed under load, its replica
/// takes over its slots, and it later rejoins as a replica: nothing lost or doubled, no
/// 500, a bounded window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_killed_cluster_primary_loses_no_acknowledged_change() {
    let report = failover_soak(Replicated::Cluster, &["redis_primary_kill"], 40).await;
    assert_clean_with_bounded_window(&report);
}

/// Cluster: carts land on every primary (their keys spread over the slots), and after
/// `SCRIPT FLUSH` on every node each next change still succeeds (the `NOSCRIPT` path
/// sends the script to the node that owns the key).
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn cluster_carts_spread_over_the_slots_and_survive_a_script_flush() {
    let cluster = RedisCluster::start(3).await;
    let replica = start_binary(&[("REDIS_URL", &cluster.url()), ("REPLICA_ID", "c1")]).await;
    let add = |shopper: reqwest::Client, product: &'static str| {
        let url = replica.url("/api/cart/items");
        async move {
            shopper
                .post(url)
                .json(&json!({"product_id": product, "quantity": 1}))
                .send()
                .await
                .unwrap()
        }
    };
    let shoppers: Vec<reqwest::Client> = (0..30).map(|_| visitor()).collect();
    for shopper in &shoppers {
        assert_eq!(
            add(shopper.clone(), "ceramic-mug").await.status(),
            StatusCode::OK
        );
    }
    let keys = cluster.keys_per_primary();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter().all(|n| *n > 0),
        "carts on every primary: {keys:?}"
    );

    cluster.flush_scripts();
    for shopper in &shoppers {
        let response = add(shopper.clone(), "ceramic-mug").await;
        assert_eq!(response.status(), StatusCode::OK);
        let cart: Value = response.json().await.unwrap();
        assert_eq!(cart["item_count"], 2, "{cart}");
    }
}

/// A primary demoted under the app's feet (`REPLICAOF`) answers `READONLY` to writes: the
/// app answers 503 with Retry-After (`outcome_unknown`: the client may have resent the
/// write on a new connection, so the app cannot tell it was never applied), not a 500,
/// and the cart is unchanged; `/readyz` stays 200 (a failover under way is the store's
/// condition, the same for every replica, and reads still work); once the server is a
/// primary again changes work without a restart.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_demoted_primary_gives_a_503_then_recovers() {
    let other = RedisServer::start().await;
    let redis = RedisServer::start().await;
    let replica = start_binary(&[("REDIS_URL", &redis.url()), ("REPLICA_ID", "r1")]).await;
    let shopper = visitor();
    let url = replica.url("/api/cart/items");
    let add = || {
        shopper
            .post(&url)
            .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
            .send()
    };
    assert_eq!(add().await.unwrap().status(), StatusCode::OK);
    // Its data stays until the sync with the other server starts: stop that at once.
    redis.cli(&["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    other.pause();

    let response = add().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let ready = visitor().get(replica.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    redis.cli(&["REPLICAOF", "NO", "ONE"]);
    other.resume();
    eventually("changes to work again", async || {
        add().await.unwrap().status() == StatusCode::OK
    })
    .await;
    let cart: Value = shopper
        .get(replica.url("/api/cart"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cart["item_count"], 2,
        "the refused add changed nothing: {cart}"
    );
}

/// `REDIS_WAIT_REPLICAS=1`: while its one replica is paused, a change answers 503
/// `outcome_unknown` within the command timeout (the write is on the primary, not
/// confirmed), and so does its resend (not the stored answer, which no replica holds yet);
/// once the replica runs again, the same change resent with its `Idempotency-Key` answers
/// 200 and counts once.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_unconfirmed_change_answers_outcome_unknown_then_counts_once() {
    let (primary, follower) = primary_with_replica().await;
    let replica = start_binary(&[
        ("REDIS_URL", &primary.url()),
        ("REPLICA_ID", "w1"),
        ("REDIS_WAIT_REPLICAS", "1"),
    ])
    .await;
    let shopper = visitor();
    let url = replica.url("/api/cart/items");
    let add = |key: &'static str| {
        shopper
            .post(&url)
            .header("Idempotency-Key", key)
            .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
            .send()
    };
    assert_eq!(add("wait-1").await.unwrap().status(), StatusCode::OK);

    follower.pause();
    let started = std::time::Instant::now();
    let response = add("wait-2").await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2_500), "took {took:?}");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    // Resent while the replica is still away: the primary holds the change and its answer,
    // but answering from them would acknowledge what a failover could still drop.
    let resent = add("wait-2").await.unwrap();
    assert_eq!(resent.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resent.json().await.unwrap();
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");

    follower.resume();
    let mut answered = None;
    eventually("the resent change to be confirmed", async || {
        let response = add("wait-2").await.unwrap();
        let ok = response.status() == StatusCode::OK;
        if ok {
            answered = Some(response.json::<Value>().await.unwrap());
        }
        ok
    })
    .await;
    let cart = answered.unwrap();
    assert_eq!(cart["item_count"], 2, "applied once: {cart}");
}

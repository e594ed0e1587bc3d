//! The live fleet view: `/api/fleet` and `/fleet`, built from the heartbeats every replica
//! writes to the session store. With Redis: a replica joins within 3 s of answering,
//! vanishes within 5 s of a SIGKILL, shows `draining` while it stops and leaves when it
//! exits; heartbeats are one key and about one write per replica per second, never one
//! per request. In memory: the fleet is the replica itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use testkit::replica::{Replica, ReplicaSpec};
use testkit::{Signal, eventually_within};

use crate::helpers::{RedisServer, TestApp, binary, visitor};

async fn fleet_of(url: &str) -> Value {
    let response = visitor().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

fn ids(fleet: &Value) -> Vec<String> {
    fleet["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn member<'a>(fleet: &'a Value, id: &str) -> Option<&'a Value> {
    fleet["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
}

/// With sessions in memory the fleet is the replica itself, with every field of the
/// contract, and its count of requests moves.
#[tokio::test]
async fn in_memory_the_fleet_is_the_replica_itself() {
    let app = TestApp::in_memory("replica-solo").await;
    for _ in 0..3 {
        visitor().get(app.url("/")).send().await.unwrap();
    }
    let fleet = fleet_of(&app.url("/api/fleet")).await;
    assert_eq!(fleet["served_by"], "replica-solo");
    assert_eq!(ids(&fleet), ["replica-solo"]);
    let me = &fleet["replicas"][0];
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(me["draining"], false);
    assert!(me["requests_total"].as_u64().unwrap() >= 3, "{me}");
    assert!(me["requests_per_sec"].is_number(), "{me}");
    assert!(me["last_seen_ms"].is_u64(), "{me}");
    let started = me["started_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{started}"
    );
}

/// `/fleet` is a page with a row per replica (a snapshot without JavaScript), and every
/// page's header links to it.
#[tokio::test]
async fn the_fleet_page_is_a_snapshot_linked_from_every_page() {
    let app = TestApp::in_memory("replica-page").await;
    for path in ["/", "/cart", "/fleet", "/no/such/page"] {
        let page = visitor()
            .get(app.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(r#"<a href="/fleet""#),
            "{path} has no fleet link"
        );
    }
    let response = visitor().get(app.url("/fleet")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"<tr data-replica="replica-page""#),
        "{page}"
    );
    assert!(page.contains(r#"<script src="/static/fleet.js" defer>"#));
    let script = visitor()
        .get(app.url("/static/fleet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
}

fn spec(redis: &RedisServer, id: &str) -> ReplicaSpec {
    ReplicaSpec::new(
        binary(),
        &[
            ("REDIS_URL", &redis.url()),
            ("REPLICA_ID", id),
            ("SHUTDOWN_DRAIN_MS", "3000"),
            ("WORKER_THREADS", "1"),
        ],
    )
}

/// Replicas join the view within 3 s of answering, a SIGKILLed one vanishes within 5 s,
/// a stopping one shows `draining` and leaves once it exits; every replica answers with
/// the same fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn replicas_join_drain_and_vanish_from_the_fleet_within_bounds() {
    let redis = RedisServer::start().await;
    let a = Replica::start(&spec(&redis, "replica-a")).await;
    let fleet_url = a.url("/api/fleet");

    let mut b = Replica::start(&spec(&redis, "replica-b")).await;
    let answered = Instant::now();
    eventually_within(
        "replica-b to join the fleet",
        Duration::from_secs(3),
        async || ids(&fleet_of(&fleet_url).await) == ["replica-a", "replica-b"],
    )
    .await;
    println!("replica-b joined {:?} after answering", answered.elapsed());
    let from_b = fleet_of(&b.url("/api/fleet")).await;
    assert_eq!(ids(&from_b), ["replica-a", "replica-b"]);
    assert_eq!(from_b["served_by"], "replica-b");

    let c = Replica::start(&spec(&redis, "replica-c")).await;
    eventually_within(
        "replica-c to join the fleet",
        Duration::from_secs(3),
        async || ids(&fleet_of(&fleet_url).await).len() == 3,
    )
    .await;

    b.signal(Signal::SIGKILL);
    let killed = Instant::now();
    b.wait_for_exit(Duration::from_secs(5)).await;
    eventually_within(
        "killed replica-b to vanish",
        Duration::from_secs(5).saturating_sub(killed.elapsed()),
        async || ids(&fleet_of(&fleet_url).await) == ["replica-a", "replica-c"],
    )
    .await;
    println!("replica-b vanished {:?} after SIGKILL", killed.elapsed());

    let mut c = c;
    c.signal(Signal::SIGTERM);
    eventually_within(
        "replica-c to report draining",
        Duration::from_secs(2),
        async || {
            member(&fleet_of(&fleet_url).await, "replica-c").is_some_and(|c| c["draining"] == true)
        },
    )
    .await;
    assert!(c.wait_for_exit(Duration::from_secs(15)).await.success());
    // It deleted its heartbeat on the way out: gone at once, not after it goes stale.
    assert_eq!(ids(&fleet_of(&fleet_url).await), ["replica-a"]);
    drop(a);
}

/// What a replica reports moves with what it serves: requests counted and a rate while it
/// is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn heartbeats_report_the_requests_a_replica_serves() {
    let redis = RedisServer::start().await;
    let busy = Replica::start(&spec(&redis, "replica-busy")).await;
    let _idle = Replica::start(&spec(&redis, "replica-idle")).await;
    let shopper = visitor();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(2500) {
        let response = shopper.get(busy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sent += 1;
    }
    // Asked of the busy replica, whose load is over: polling the idle one would give it a
    // rate of its own.
    eventually_within(
        "the busy replica's count",
        Duration::from_secs(3),
        async || {
            let fleet = fleet_of(&busy.url("/api/fleet")).await;
            member(&fleet, "replica-busy").is_some_and(|busy| {
                busy["requests_total"].as_u64().unwrap() >= sent
                    && busy["requests_per_sec"].as_f64().unwrap() > 1.0
            })
        },
    )
    .await;
    let fleet = fleet_of(&busy.url("/api/fleet")).await;
    let quiet = member(&fleet, "replica-idle").unwrap();
    assert!(quiet["requests_per_sec"].as_f64().unwrap() < 5.0, "{quiet}");
}

/// Heartbeats are one key, written about once a second by each replica however many
/// requests it serves: anonymous browsing still writes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn heartbeats_are_one_key_and_one_write_per_replica_per_second() {
    let redis = RedisServer::start().await;
    let replicas = [
        Replica::start(&spec(&redis, "replica-x")).await,
        Replica::start(&spec(&redis, "replica-y")).await,
    ];
    let changes = || -> u64 {
        let info = redis.cli(&["INFO", "persistence"]);
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("rdb_changes_since_last_save in INFO persistence")
    };
    let changes_before = changes();
    let shopper = visitor();
    let started = Instant::now();
    let mut pages = 0;
    while started.elapsed() < Duration::from_secs(3) {
        for replica in &replicas {
            for path in ["/", "/cart", "/api/cart", "/fleet", "/api/fleet"] {
                let response = shopper.get(replica.url(path)).send().await.unwrap();
                assert!(response.status().is_success(), "{path}");
                pages += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let keys = redis.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(
        keys,
        ["elastic-cart:fleet"],
        "after {pages} anonymous pages"
    );
    // Every write Redis applied, whatever the command: a heartbeat is an HSET and a
    // PEXPIRE (and an HDEL per stale field), one per replica per second, plus the beat
    // each may have started the window with.
    let written = changes() - changes_before;
    let beats = (elapsed.ceil() as u64 + 1) * replicas.len() as u64;
    assert!(
        written <= 2 * beats && written >= replicas.len() as u64,
        "{written} writes in {elapsed:.1} s of {pages} pages"
    );
}

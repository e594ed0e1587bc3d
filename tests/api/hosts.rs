//! Across hosts: the store and the replicas on test hosts of their own (network namespaces
//! on a bridge, `testkit::hosts`), where a lost machine goes silent instead of resetting its
//! connections, as it does across real machines. Each scenario runs under the fault soak's
//! shoppers (changes resent with their `Idempotency-Key` until answered, every answer and
//! read checked against a ledger), prints its report, and asserts:
//!
//! - nothing acknowledged is lost with `REDIS_WAIT_REPLICAS=1`, nothing applied twice, no
//!   500;
//! - no replica stays behind: each serves changes again within [`RECOVERY`] of the moment
//!   the store can be reached again (the name moved, the host back, the partition over);
//! - while the store is silent, no request waits longer than [`LONGEST_REQUEST`]: a 503
//!   with `Retry-After`, never a hang.
//!
//! They need root (namespaces, iptables) and run once, on Redis (the Valkey pass skips
//! them: they test the network, not the server).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::PATIENCE;
use testkit::host_fleet::{HostFleet, HostFleetOptions, HostStore, every_replica_serves_changes};
use testkit::soak::{LedgerLoad, report_ok};

use crate::helpers::binary;

/// The longest a replica may take to serve changes again once the store can be reached:
/// the kernel ends the silent connection within 2 s of its first unacknowledged byte
/// (`TCP_USER_TIMEOUT`, twice the command timeout); a connect already under way to the old
/// address gives up within 2 s (the connect timeout); the next try comes within the 1 s
/// longest reconnect delay and resolves the name again. Measured: see the report's
/// `recovery_ms`.
const RECOVERY: Duration = Duration::from_secs(5);

/// The longest one request may take while the store is silent, at the default 1 s command
/// timeout: its commands time out after 1 s each, and a change sends at most two before
/// its answer (the read, then the compare-and-set or its `WAIT`).
const LONGEST_REQUEST: Duration = Duration::from_millis(2_000);

/// The same for a checkout, which sends more commands (the read, the compare-and-set that
/// takes the cart, the new session's record).
const LONGEST_CHECKOUT: Duration = Duration::from_millis(3_000);

/// The bound when fred keeps failing on its own and the store's watchdog must replace the
/// connections: 10 s without any answer, then a connect (the sentinels, the primary).
const STUCK_AFTER_BOUND: Duration = Duration::from_secs(15);

/// How long ElastiCache takes to count a silent primary out, as the harness plays it.
const DETECTION: Duration = Duration::from_secs(3);

/// Shoppers of each scenario.
const SHOPPERS: usize = 6;

/// Held by each scenario while it runs: one at a time, so that two fleets of a dozen
/// processes and their shoppers do not share the two cores of a CI machine and stretch
/// the bounds above (the other integration tests still run beside them).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Asserts what every scenario must show (see the module's doc); `report` is the load's.
fn assert_exactly_once(report: &Value) {
    assert!(report_ok(report), "{report:#}");
}

/// Asserts that no shopper's request took longer than `limit`.
fn assert_no_request_longer_than(report: &Value, limit: Duration) {
    let limit = limit.as_millis() as u64;
    for field in ["longest_read_ms", "longest_change_ms"] {
        let took = report[field].as_u64().unwrap();
        assert!(took <= limit, "{field} {took} > {limit}: {report:#}");
    }
}

/// Asserts that every replica served changes again within [`RECOVERY`].
fn assert_every_replica_back(recovery: &[Value], report: &Value) {
    for (n, took) in recovery.iter().enumerate() {
        let took = took.as_u64();
        assert!(
            took.is_some_and(|ms| ms <= RECOVERY.as_millis() as u64),
            "app-{} did not serve a change within {RECOVERY:?} ({took:?} ms): {report:#}",
            n + 1
        );
    }
}

/// Prints a scenario's figures: the load's report with the scenario's own measurements.
fn print_report(scenario: &str, report: &mut Value, extra: Value) {
    let fields = report.as_object_mut().unwrap();
    fields.insert("scenario".into(), json!(scenario));
    for (key, value) in extra.as_object().unwrap() {
        fields.insert(key.clone(), value.clone());
    }
    println!("{}", serde_json::to_string_pretty(report).unwrap());
}

/// ElastiCache's Multi-AZ failover, played on hosts: the primary's host goes silent (no
/// reset: the app's connections to it simply stop getting answers), the replica furthest
/// ahead is promoted, the other follows it, and the primary endpoint's name moves to it.
/// Every replica serves changes again within [`RECOVERY`] of the move, no request waits
/// longer than [`LONGEST_REQUEST`] (a checkout sent meanwhile [`LONGEST_CHECKOUT`]), and
/// with `REDIS_WAIT_REPLICAS=1` nothing acknowledged is lost or applied twice. Then the old primary's host comes back already demoted (made
/// a replica of the new primary from its own loopback before its packets flow again, as
/// ElastiCache's replaced node rejoins): it syncs, and the shop goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_elasticache_failover_from_a_silent_primary_leaves_no_replica_behind() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut fleet = HostFleet::start(HostFleetOptions::new(binary())).await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 25).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    // A shopper about to check out, straight on one replica.
    let buyer = testkit::http::visitor();
    let app = fleet.apps[0].replica.url("");
    let added =
        testkit::http::add_item(&buyer, &format!("{app}/api/cart/items"), "tea-sampler", 2).await;
    assert_eq!(added.status(), reqwest::StatusCode::OK);

    let old = fleet.primary();
    let silent_at = Instant::now();
    fleet.caches[old].host.silence();
    // While the store is silent, a checkout (several commands) answers 503 within 3 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let checkout = buyer
        .post(format!("{app}/checkout"))
        .send()
        .await
        .expect("an answer to the checkout");
    let checkout_took = started.elapsed();
    assert_eq!(checkout.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(checkout.headers()["retry-after"], "1");
    assert!(checkout_took <= LONGEST_CHECKOUT, "took {checkout_took:?}");
    tokio::time::sleep(DETECTION.saturating_sub(silent_at.elapsed())).await;
    let new = fleet.promote_furthest();
    fleet.move_primary_name();
    let moved_after = silent_at.elapsed();
    let recovery = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
    let back_after = silent_at.elapsed();
    assert!(
        load.wait_for_more(100, PATIENCE).await,
        "the shop works after the failover: {}",
        fleet.state()
    );

    // The old primary's host returns, demoted before its packets flow.
    fleet.demote(old);
    fleet.caches[old].host.heal();
    fleet.wait_until_replicated().await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let mut report = load.finish().await;

    print_report(
        "elasticache_failover",
        &mut report,
        json!({
            "promoted": format!("cache-{}", new + 1),
            "name_moved_after_ms": moved_after.as_millis() as u64,
            "recovery_ms": recovery,
            "every_replica_back_after_silence_ms": back_after.as_millis() as u64,
            "checkout_while_silent_ms": checkout_took.as_millis() as u64,
        }),
    );
    assert_exactly_once(&report);
    assert_every_replica_back(&recovery, &report);
    assert_no_request_longer_than(&report, LONGEST_REQUEST);
}

/// The primary's host goes silent twice without any failover: for 1.5 s (under the 2 s
/// after which the kernel gives up on the connection: the retransmissions arrive once it
/// is back, and Redis runs the commands the app had long answered 503 for) and for 5 s
/// (over it: the app reconnects to the same name). Each time every replica serves changes
/// again within [`RECOVERY`] of the host's return, no request waits longer than
/// [`LONGEST_REQUEST`], and the commands that arrive late apply nothing twice: a change
/// answered `outcome_unknown` and resent with its key counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_primary_silent_for_seconds_without_failover_loses_and_doubles_nothing() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let fleet = HostFleet::start(HostFleetOptions::new(binary())).await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 26).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let primary = &fleet.caches[fleet.primary()].host;
    let mut recovery = Vec::new();
    for silence in [Duration::from_millis(1_500), Duration::from_secs(5)] {
        primary.silence();
        tokio::time::sleep(silence).await;
        primary.heal();
        let back = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
        assert_every_replica_back(&back, &json!({ "silence": silence.as_millis() as u64 }));
        recovery.push(json!({ "silent_ms": silence.as_millis() as u64, "recovery_ms": back }));
        assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    }
    let mut report = load.finish().await;
    print_report(
        "primary_silent_no_failover",
        &mut report,
        json!({ "silences": recovery }),
    );
    assert_exactly_once(&report);
    assert_no_request_longer_than(&report, LONGEST_REQUEST);
}

/// One app host of three is cut off from every Redis host (its packets dropped both ways,
/// no reset) but still reached by nginx. Asked directly, it answers a change 503 with
/// `Retry-After` within [`LONGEST_REQUEST`], and its `/readyz` 503 while the others' stay
/// 200 (an orchestrator's readiness gate takes it out); through nginx, shoppers' changes that land on
/// it are resent with their keys and count once, and the reads that land on it fail with
/// a 503: nginx does not pass a read's 503 on, since in a store outage every replica
/// answers 503 and `proxy_next_upstream http_503` would then count every replica failed
/// and answer 502 "no live upstreams" (tried: docs/design.md, Known limits). Their share is about
/// its share of the traffic. Once the partition heals it serves changes again within
/// [`RECOVERY`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_app_host_cut_off_from_the_store_answers_503_and_comes_back() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let fleet = HostFleet::start(HostFleetOptions {
        apps: 3,
        ..HostFleetOptions::new(binary())
    })
    .await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 27).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let cut = &fleet.apps[0];
    let (reads_before, failed_before) = load.reads();
    for cache in &fleet.caches {
        cut.host.partition_from(cache.host.addr());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let direct = testkit::http::visitor()
        .post(cut.replica.url("/api/cart/items"))
        .header("Idempotency-Key", "cut-off-1")
        .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
        .send()
        .await
        .expect("an answer from the cut-off replica");
    let direct_took = started.elapsed();
    assert_eq!(direct.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(direct.headers()["retry-after"], "1");
    let direct_body: Value = direct.json().await.unwrap();
    assert!(direct_took <= LONGEST_REQUEST, "took {direct_took:?}");
    // Readiness says what is wrong with this replica: it cannot reach the store; the
    // others can, and stay ready.
    let ready = |app: &testkit::host_fleet::AppNode| {
        let url = app.replica.url("/readyz");
        async move {
            let response = testkit::http::bare_client().get(url).send().await;
            response.map(|response| response.status().as_u16()).ok()
        }
    };
    assert_eq!(
        ready(cut).await,
        Some(503),
        "the cut-off replica is unready"
    );
    for other in &fleet.apps[1..] {
        assert_eq!(ready(other).await, Some(200), "the others stay ready");
    }
    // Shopping goes on through the other replica (more slowly: a shopper whose request
    // lands on the cut-off one waits a command timeout for its 503).
    assert!(load.wait_for_more(20, PATIENCE).await, "the shop works");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (reads_during, failed_during) = load.reads();
    cut.host.heal();
    let recovery = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let mut report = load.finish().await;
    let reads = reads_during - reads_before;
    let failed = failed_during - failed_before;
    let share = failed as f64 / reads.max(1) as f64;
    print_report(
        "app_host_partitioned_from_store",
        &mut report,
        json!({
            "direct_change": { "took_ms": direct_took.as_millis() as u64, "body": direct_body },
            "reads_during_partition": reads,
            "failed_reads_during_partition": failed,
            "failed_read_share": share,
            "recovery_ms": recovery,
        }),
    );
    assert_exactly_once(&report);
    assert_every_replica_back(&recovery, &report);
    assert_no_request_longer_than(&report, LONGEST_REQUEST);
    // One replica of three: about its third of the reads (round robin); bounded with room
    // for the few dozen reads a partition of seconds sees.
    assert!(share <= 0.6, "{share} of the reads failed: {report:#}");
}

/// One app host goes silent as a whole (a lost machine) under load through the shipped
/// nginx.conf: while it is lost no GET fails (nginx gives up on the silent replica after its 3 s read
/// timeout and asks the other), no acknowledged change is lost (a change in flight there
/// gets nginx's 504 after 10 s and is resent with its key), and nothing waits longer than
/// those timeouts. Back on the network, the replica serves changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_silent_app_host_costs_no_read_and_no_acknowledged_change() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let fleet = HostFleet::start(HostFleetOptions::new(binary())).await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 28).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let lost = &fleet.apps[0].host;
    let (reads_before, failed_before) = load.reads();
    lost.silence();
    // Long enough for nginx to count it out and try it again after its 5 s fail_timeout.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let (reads_after, failed_after) = load.reads();
    lost.heal();
    let recovery = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let mut report = load.finish().await;
    let failed_while_lost = failed_after - failed_before;
    print_report(
        "app_host_silent",
        &mut report,
        json!({
            "recovery_ms": recovery,
            "reads_while_lost": reads_after - reads_before,
            "failed_reads_while_lost": failed_while_lost,
        }),
    );
    assert_exactly_once(&report);
    // While it was lost; once back it may answer a read 503 until it has reconnected to
    // the store (its connection died with the silence), as any replica just started.
    assert_eq!(failed_while_lost, 0, "{report:#}");
    assert_every_replica_back(&recovery, &report);
    // nginx's read timeout plus a read elsewhere; its change timeout.
    let read_ms = report["longest_read_ms"].as_u64().unwrap();
    let change_ms = report["longest_change_ms"].as_u64().unwrap();
    assert!(read_ms <= 3_000 + 1_000, "{report:#}");
    assert!(change_ms <= 10_000 + 1_000, "{report:#}");
}

/// A slow replication link (each replica 100 ms from the primary each way, through the
/// test kit's proxy) and the primary's host silent, then an ElastiCache-style failover:
/// with `REDIS_WAIT_REPLICAS=0` the changes answered in the replicas' lag are lost (the
/// numbers are reported, not asserted); with `=1` none is, and nothing counts twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_failover_over_a_slow_replication_link_loses_only_what_wait_did_not_confirm() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut figures = Vec::new();
    for wait_replicas in [0, 1] {
        let mut fleet = HostFleet::start(HostFleetOptions {
            wait_replicas,
            replication_delay: Some(Duration::from_millis(100)),
            ..HostFleetOptions::new(binary())
        })
        .await;
        let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 29).await;
        assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
        let old = fleet.primary();
        let silent_at = Instant::now();
        fleet.caches[old].host.silence();
        tokio::time::sleep(DETECTION).await;
        fleet.promote_furthest();
        fleet.move_primary_name();
        let recovery = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
        let back_after = silent_at.elapsed();
        assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
        let mut report = load.finish().await;
        print_report(
            "slow_replication_failover",
            &mut report,
            json!({
                "wait_replicas": wait_replicas,
                "recovery_ms": recovery,
                "every_replica_back_after_silence_ms": back_after.as_millis() as u64,
            }),
        );
        // Without WAIT a lost set or removal shows as units beyond the ledger too
        // (`applied_twice`), as in the Failover rows of docs/configuration.md; nothing is ever resent twice.
        assert_eq!(report["abandoned"], 0, "{report:#}");
        assert_every_replica_back(&recovery, &report);
        if wait_replicas == 1 {
            assert_exactly_once(&report);
        }
        figures.push(json!({
            "wait_replicas": wait_replicas,
            "acknowledged": report["changes_acknowledged"],
            "lost": report["lost"],
            "extra": report["applied_twice"],
        }));
    }
    println!("losses: {}", json!(figures));
}

/// Sentinel with each sentinel on a host of its own, and the primary's host going silent:
/// the sentinels count it out (2 s) and promote a replica; the app's connection to the
/// silent primary ends (`TCP_USER_TIMEOUT`), and it asks the sentinels again. Every replica
/// serves changes again within [`RECOVERY`] of the sentinels' switch, nothing acknowledged
/// is lost or doubled, and no request waits longer than [`LONGEST_REQUEST`]. The old
/// primary then returns and the sentinels make it a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_sentinel_set_on_hosts_fails_over_a_silent_primary_and_no_replica_stays_behind() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut fleet = HostFleet::start(HostFleetOptions {
        store: HostStore::Sentinel,
        ..HostFleetOptions::new(binary())
    })
    .await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 30).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let old = fleet.primary();
    let silent_at = Instant::now();
    fleet.caches[old].host.silence();
    let new = fleet
        .wait_for_sentinel_failover(old, Duration::from_secs(30))
        .await;
    let switched_after = silent_at.elapsed();
    let recovery = every_replica_serves_changes(&fleet, RECOVERY * 4).await;
    let back_after = silent_at.elapsed();
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    fleet.caches[old].host.heal();
    fleet.wait_until_replicated().await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let mut report = load.finish().await;
    print_report(
        "sentinel_on_hosts",
        &mut report,
        json!({
            "promoted": format!("cache-{}", new + 1),
            "sentinels_switched_after_ms": switched_after.as_millis() as u64,
            "recovery_ms": recovery,
            "every_replica_back_after_silence_ms": back_after.as_millis() as u64,
        }),
    );
    assert_exactly_once(&report);
    assert_every_replica_back(&recovery, &report);
    assert_no_request_longer_than(&report, LONGEST_REQUEST);
}

/// Sentinel whose sentinels were replaced, as an orchestrator replaces tasks: the app names
/// them all `sentinel:26379` (sentinel-1 here). After connecting, fred asks only the peers
/// that sentinel named then (sentinel-2 and -3), never the configured name again. Two new
/// sentinels join, the two old peers go silent for good, then the primary's host goes
/// silent: the live sentinels fail over, but fred, asking only the gone peers, would stay
/// on 503 for good (as all three replicas did in a Swarm run). The watchdog replaces the
/// connections once nothing has been answered for 10 s, the new ones ask the configured
/// name, and every replica serves changes again within [`STUCK_AFTER_BOUND`] of the
/// silence; nothing acknowledged is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn replaced_sentinels_do_not_leave_a_replica_asking_gone_ones() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut fleet = HostFleet::start(HostFleetOptions {
        store: HostStore::SentinelByName,
        ..HostFleetOptions::new(binary())
    })
    .await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 31).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    fleet.add_sentinel().await;
    fleet.add_sentinel().await;
    fleet.silence_sentinel(1);
    fleet.silence_sentinel(2);
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let old = fleet.primary();
    let silent_at = Instant::now();
    fleet.caches[old].host.silence();
    let new = fleet
        .wait_for_sentinel_failover(old, Duration::from_secs(30))
        .await;
    let switched_after = silent_at.elapsed();
    let left = STUCK_AFTER_BOUND.saturating_sub(silent_at.elapsed());
    let recovery = every_replica_serves_changes(&fleet, left * 2).await;
    let back_after = silent_at.elapsed();
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");
    let mut report = load.finish().await;
    print_report(
        "replaced_sentinels",
        &mut report,
        json!({
            "promoted": format!("cache-{}", new + 1),
            "sentinels_switched_after_ms": switched_after.as_millis() as u64,
            "recovery_ms": recovery,
            "every_replica_back_after_silence_ms": back_after.as_millis() as u64,
        }),
    );
    assert_exactly_once(&report);
    for (n, took) in recovery.iter().enumerate() {
        let within = took
            .as_u64()
            .map(|ms| switched_after.as_millis() as u64 + ms);
        assert!(
            within.is_some_and(|ms| ms <= STUCK_AFTER_BOUND.as_millis() as u64),
            "app-{} served no change within {STUCK_AFTER_BOUND:?} of the silence: {report:#}",
            n + 1
        );
    }
}

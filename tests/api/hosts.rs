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
use testkit::host_fleet::{HostFleet, HostFleetOptions, every_replica_serves_changes};
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

/// How long ElastiCache takes to count a silent primary out, as the harness plays it.
const DETECTION: Duration = Duration::from_secs(3);

/// Shoppers of each scenario.
const SHOPPERS: usize = 6;

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
/// longer than [`LONGEST_REQUEST`], and with `REDIS_WAIT_REPLICAS=1` nothing acknowledged
/// is lost or applied twice. Then the old primary's host comes back already demoted (made
/// a replica of the new primary from its own loopback before its packets flow again, as
/// ElastiCache's replaced node rejoins): it syncs, and the shop goes on undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_elasticache_failover_from_a_silent_primary_leaves_no_replica_behind() {
    let mut fleet = HostFleet::start(HostFleetOptions::new(binary())).await;
    let load = LedgerLoad::start(&fleet.url(""), SHOPPERS, 25).await;
    assert!(load.wait_for_more(100, PATIENCE).await, "the shop works");

    let old = fleet.primary();
    let silent_at = Instant::now();
    fleet.caches[old].host.silence();
    tokio::time::sleep(DETECTION).await;
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
        }),
    );
    assert_exactly_once(&report);
    assert_every_replica_back(&recovery, &report);
    assert_no_request_longer_than(&report, LONGEST_REQUEST);
}

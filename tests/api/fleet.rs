//! The fleet on loopback, without Docker (`testkit::LoopbackFleet`): a real redis-server,
//! three replicas of the release binary and a real nginx running the shipped nginx.conf.
//! The elasticity scenario itself lives in `testkit::scenario`, shared with the compose
//! end-to-end test.

use reqwest::StatusCode;
use serde_json::Value;
use testkit::scenario::{self, Lifecycle, Steps};
use testkit::two_tabs::{TwoTabsOptions, two_tabs};
use testkit::{Balance, FleetOptions, LoopbackFleet, Replicated};

use crate::helpers::{binary, get_json, simultaneous_adds, start_session, visitor};

/// 100 simultaneous adds with one session cookie, through nginx over three replicas: every
/// one succeeds and every one counts, and nginx spread them over every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn simultaneous_adds_through_the_fleet_all_count() {
    let fleet = LoopbackFleet::start(FleetOptions::new(binary())).await;
    let shopper = visitor();
    let items = fleet.url("/api/cart/items");
    start_session(&shopper, &items).await;

    let statuses = simultaneous_adds(&shopper, &[items]).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let cart: Value = get_json(&shopper, &fleet.url("/api/cart")).await;
    assert_eq!(cart["item_count"], 101);
    let mut expected = vec!["\"POST /api/cart/items HTTP/1.1\" 200".to_owned()];
    expected.extend((0..3).map(|i| format!("served_by=replica-{i}")));
    let nginx = fleet.nginx.as_ref().expect("a balancer");
    nginx.wait_for_access_log(&expected).await;
}

/// The benchmark's lost-update experiment (`testkit::two_tabs`), smaller: shoppers who
/// change one cart from two tabs at once, through nginx over three replicas, lose no
/// acknowledged unit, and every add is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn two_tabs_of_one_cart_lose_no_acknowledged_unit_through_the_fleet() {
    let fleet = LoopbackFleet::start(FleetOptions::new(binary())).await;
    let options = TwoTabsOptions {
        shoppers: 16,
        adds_per_tab: 25,
    };
    let tally = two_tabs(&fleet.url(""), options).await;
    assert_eq!(tally.failed_shoppers, 0, "{tally:?}");
    assert_eq!(tally.refused, 0, "{tally:?}");
    assert_eq!(tally.acknowledged, 16 * (1 + 2 * 25), "{tally:?}");
    assert_eq!(tally.in_carts, tally.acknowledged, "{tally:?}");
    assert_eq!(
        (tally.lost, tally.unacknowledged_in_carts),
        (0, 0),
        "{tally:?}"
    );
}

/// The whole elasticity scenario on loopback: round robin without stickiness, a SIGKILLed
/// replica under reads, a draining replica under reads and writes, a restarted replica,
/// scaling 3 -> 5 -> 2, and a Redis restart on its append-only file; no read or write
/// fails and every cart holds exactly its acknowledged changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_fleet_survives_kills_drains_scaling_and_a_store_restart() {
    let mut fleet = LoopbackFleet::start(FleetOptions::new(binary())).await;
    let report = scenario::run(&mut fleet, Steps::default()).await;
    let nginx = fleet.nginx.as_ref().expect("a balancer");
    assert_eq!(
        report.failed,
        0,
        "{report}\nnginx said:\n{}",
        nginx.upstream_errors()
    );
}

/// The scenario on a Sentinel store (a primary, two replicas, three sentinels) with
/// `REDIS_WAIT_REPLICAS=1`: the replica steps as above, then the store's primary SIGKILLed
/// under writes resent with their `Idempotency-Key`: changes are acknowledged again within
/// seconds, without restarting a replica, and every cart holds exactly its acknowledged
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_fleet_on_sentinel_survives_its_primary_killed() {
    let mut fleet = LoopbackFleet::start(FleetOptions {
        replicated: Some(Replicated::Sentinel),
        ..FleetOptions::new(binary()).env("REDIS_WAIT_REPLICAS", "1")
    })
    .await;
    let steps = Steps {
        replicas: Some(Lifecycle::Manual),
        store_restart: false,
        store_failover: true,
    };
    let report = scenario::run(&mut fleet, steps).await;
    let nginx = fleet.nginx.as_ref().expect("a balancer");
    assert_eq!(
        report.failed,
        0,
        "{report}\nnginx said:\n{}",
        nginx.upstream_errors()
    );
}

/// The balancer variants of the sticky-versus-shared experiment
/// (`benches/sticky_vs_shared`) do what they claim on the shipped nginx.conf: with
/// `CookieRoute` (after nginx's route cookie) and `IpHash` each of 12 visitors, each from
/// its own /24 of the loopback network, always reaches one replica, and together they
/// reach more than one; with round robin each visitor reaches every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_sticky_balancers_stick_and_round_robin_does_not() {
    for (balance, per_visitor) in [
        (Balance::CookieRoute, 1),
        (Balance::IpHash, 1),
        (Balance::RoundRobin, 3),
    ] {
        let mut options = FleetOptions::new(binary());
        options.redis = false;
        options.balance = balance;
        let fleet = LoopbackFleet::start(options).await;
        let mut all = std::collections::BTreeSet::new();
        for n in 0..12u8 {
            let address = std::net::Ipv4Addr::new(127, 1, n, 1);
            let shopper = reqwest::Client::builder()
                .cookie_store(true)
                .local_address(std::net::IpAddr::V4(address))
                .build()
                .unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let response = shopper.get(fleet.url("/api/cart")).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                seen.insert(
                    response.headers()["x-served-by"]
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            assert_eq!(
                seen.len(),
                per_visitor,
                "{balance:?}, visitor {n}: {seen:?}"
            );
            all.extend(seen);
        }
        assert!(
            all.len() > 1,
            "{balance:?}: every visitor on one replica: {all:?}"
        );
    }
}

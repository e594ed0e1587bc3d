//! Overlapping changes of one session on different replicas all count (issue: lost
//! updates). The scenario: 100 simultaneous adds with one session cookie, spread over
//! three replicas sharing one Redis.

use std::time::{Duration, Instant};

use elastic_cart::ChangePolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use testkit::Signal;

use crate::helpers::{
    ADDS, RedisServer, TestApp, get_json, record_key, redis_client, simultaneous_adds,
    start_binary, start_session, visitor,
};

async fn item_count(shopper: &reqwest::Client, url: &str) -> u64 {
    let cart: Value = get_json(shopper, url).await;
    cart["item_count"].as_u64().unwrap()
}

/// The scenario over three in-process replicas sharing one Redis: a session, then
/// `ADDS` simultaneous adds, all of which must succeed. Returns the final unit count.
async fn adds_over_three_replicas(serialised: bool) -> u64 {
    let redis = RedisServer::start().await;
    let changes = ChangePolicy {
        serialised,
        ..ChangePolicy::default()
    };
    let mut apps = Vec::new();
    for i in 0..3 {
        let id = format!("replica-{i}");
        let ttl = Duration::from_secs(600);
        apps.push(TestApp::with_redis_options(&redis.url(), &id, ttl, changes).await);
    }
    let shopper = visitor();
    start_session(&shopper, &apps[0].url("/api/cart/items")).await;

    let urls: Vec<String> = apps.iter().map(|app| app.url("/api/cart/items")).collect();
    let statuses = simultaneous_adds(&shopper, &urls).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    item_count(&shopper, &apps[1].url("/api/cart")).await
}

/// With serialised changes, 100 simultaneous adds over three replicas all succeed and the
/// cart ends with exactly 100 more units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn simultaneous_adds_over_three_replicas_all_count() {
    assert_eq!(adds_over_three_replicas(true).await, 1 + ADDS as u64);
}

/// The same scenario with serialisation switched off loses updates: tower-sessions'
/// load-then-save alone is not enough, so the test above can catch the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn without_serialisation_simultaneous_adds_are_lost() {
    let count = adds_over_three_replicas(false).await;
    assert!(
        count < 1 + ADDS as u64,
        "no update was lost ({count}); the race did not happen"
    );
}

/// A replica killed in the middle of a burst of changes blocks nobody: the other replica
/// changes the session at once, and every acknowledged change is in the cart, none twice.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_replica_killed_mid_change_leaves_the_session_usable() {
    let redis = RedisServer::start().await;
    let doomed = start_binary(&[("REDIS_URL", &redis.url()), ("REPLICA_ID", "doomed")]).await;
    let survivor = start_binary(&[("REDIS_URL", &redis.url()), ("REPLICA_ID", "survivor")]).await;
    let shopper = visitor();
    start_session(&shopper, &doomed.url("/api/cart/items")).await;

    let burst = {
        let shopper = shopper.clone();
        let url = doomed.url("/api/cart/items");
        tokio::spawn(async move { simultaneous_adds(&shopper, &[url]).await })
    };
    // Kill as soon as the burst has landed at least one change (checked through the other
    // replica), so the kill falls inside the burst rather than before it.
    let cart = survivor.url("/api/cart");
    let deadline = Instant::now() + crate::helpers::PATIENCE;
    while item_count(&shopper, &cart).await <= 1 {
        assert!(Instant::now() < deadline, "no change of the burst landed");
        tokio::task::yield_now().await;
    }
    doomed.signal(Signal::SIGKILL);
    let statuses = burst.await.unwrap();
    let acknowledged = statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
    assert!(
        acknowledged < ADDS as u64,
        "the replica died after the burst, not during it"
    );

    let started = Instant::now();
    start_session(&shopper, &survivor.url("/api/cart/items")).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let count = item_count(&shopper, &survivor.url("/api/cart")).await;
    // The first add, the acknowledged adds, perhaps some whose answer was lost with the
    // replica, and the survivor's add.
    assert!(
        count > 1 + acknowledged,
        "{count} < {acknowledged} acknowledged + 2"
    );
    assert!(
        count <= 1 + ADDS as u64 + 1,
        "{count}: a change counted twice"
    );
}

/// Writes into the session `id` what a checkout leaves for a moment after taking the cart:
/// no cart, and a checked-out mark made `age_ms` ago holding the order.
async fn mark_checked_out(redis: &RedisServer, id: &str, age_ms: i128) -> Vec<u8> {
    use fred::prelude::{Expiration, KeysInterface};
    use tower_sessions::session::Record;

    let client = redis_client(redis).await;
    let stored: Vec<u8> = client.get(record_key(id)).await.unwrap();
    let mut record: Record = rmp_serde::from_slice(&stored).unwrap();
    record.data.remove("cart");
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let order = json!({"lines": [{"name": "Paper filters", "quantity": 1, "line_total_cents": 650}],
                       "item_count": 1, "total_cents": 650});
    record.data.insert(
        "checked_out".into(),
        json!({"at_ms": now_ms - age_ms, "order": order}),
    );
    let marked = rmp_serde::to_vec(&record).unwrap();
    let _: () = client
        .set(
            record_key(id),
            marked.as_slice(),
            Some(Expiration::EX(600)),
            None,
            false,
        )
        .await
        .unwrap();
    marked
}

/// A change that reaches a session in the instant a checkout has taken its cart (marked,
/// not yet deleted) is refused with 409: it neither lands in the closed session nor is
/// reported as done.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_change_racing_a_checkout_is_refused() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    let first = app.add(&shopper, "paper-filters", 1).await;
    let id = crate::helpers::session_cookie(&first).unwrap();
    let marked = mark_checked_out(&redis, &id, 0).await;

    let late = app.add(&shopper, "paper-filters", 1).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["error"]["code"], "checked_out");
    let after: Vec<u8> =
        fred::prelude::KeysInterface::get(&redis_client(&redis).await, record_key(&id))
            .await
            .unwrap();
    assert_eq!(after, marked, "the closed session was written");
}

/// A checkout cut short after taking the cart (the store failed before the session moved to
/// its new id) locks nothing: a retried checkout finishes it and shows the order, and a
/// change starts a new session once the mark is old.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_checkout_cut_short_is_finished_by_a_retry_or_left_behind() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;

    let retrying = visitor();
    let first = app.add(&retrying, "paper-filters", 1).await;
    let id = crate::helpers::session_cookie(&first).unwrap();
    mark_checked_out(&redis, &id, 0).await;
    let retry = retrying.post(app.url("/checkout")).send().await.unwrap();
    assert_eq!(retry.headers()["location"], "/checkout/complete");
    let page = crate::helpers::get_text(&retrying, &app.url("/checkout/complete")).await;
    assert!(page.contains("1 × Paper filters"), "{page}");

    let moving_on = visitor();
    let first = app.add(&moving_on, "paper-filters", 1).await;
    let id = crate::helpers::session_cookie(&first).unwrap();
    mark_checked_out(&redis, &id, 60_000).await;
    let change = app.add(&moving_on, "paper-filters", 1).await;
    assert_eq!(change.status(), StatusCode::OK);
    let new_id = crate::helpers::session_cookie(&change).expect("a new session");
    assert_ne!(new_id, id);
    let body: Value = change.json().await.unwrap();
    assert_eq!(
        body["item_count"], 1,
        "the new session holds just this change"
    );
}

/// Without competition a change of an existing session costs two round trips, as a plain
/// save would: a `GET`, and one `EVALSHA` whose script compares and sets (and leaves the
/// change's marker).
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_uncontended_change_costs_a_get_and_one_evalsha() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    let items = app.url("/api/cart/items");
    start_session(&shopper, &items).await;
    start_session(&shopper, &items).await; // loads the script into Redis

    redis.reset_stats();
    for _ in 0..10 {
        start_session(&shopper, &items).await;
    }
    let calls = redis.command_calls();
    // Round trips: 10 GETs and 10 EVALSHAs. The script's own GET and its two SETs (the
    // record, and the change's marker) run inside Redis but show in its statistics too.
    let expected = [("evalsha", 10), ("get", 20), ("set", 20)];
    assert_eq!(calls, expected.map(|(k, v)| (k.to_owned(), v)).into());
}

/// A change is applied at most once even when the Redis client resends it: 200
/// simultaneous adds of one session over two replicas while every client connection to
/// Redis is killed every 150 ms. Each add the shopper was told about (200) is in the cart;
/// only adds answered `outcome_unknown` may be in it or not; nothing is in it twice. (fred
/// resends a command that was in flight when its connection dropped; before the change
/// markers, the resent compare-and-set took its own earlier write for a lost race and the
/// change was applied again: 1 or 2 units too many in 4 of 6 runs as first reported, 1 in 2
/// of 4 runs here.) The change's marker
/// key lets a resent copy know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn changes_resent_after_a_dropped_connection_count_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let (redis, a, b) = crate::helpers::two_replicas().await;
    let shopper = visitor();
    start_session(&shopper, &a.url("/api/cart/items")).await;
    let running = Arc::new(AtomicBool::new(true));
    let kills = Arc::new(AtomicU32::new(0));
    let killer = {
        let (admin, running, kills) = (redis.admin(), running.clone(), kills.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                admin.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                kills.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let urls = [a.url("/api/cart/items"), b.url("/api/cart/items")];
    let answers = crate::helpers::adds_with_codes(&shopper, &urls, 200).await;
    running.store(false, Ordering::Relaxed);
    killer.join().unwrap();

    let acknowledged = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count() as u64;
    let unknown = answers
        .iter()
        .filter(|(_, code)| code == "outcome_unknown")
        .count() as u64;
    let others: Vec<_> = answers
        .iter()
        .filter(|(s, code)| *s != StatusCode::OK && code != "outcome_unknown")
        .collect();
    let added = item_count(&shopper, &a.url("/api/cart")).await - 1;
    assert!(
        kills.load(Ordering::Relaxed) > 0,
        "no connection was killed"
    );
    assert!(
        (acknowledged..=acknowledged + unknown).contains(&added),
        "{added} units added for {acknowledged} acknowledged and {unknown} unknown adds \
         (other answers: {others:?})"
    );
}

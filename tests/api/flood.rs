//! Abuse: a flood of new sessions from many addresses, through the shipped nginx.conf,
//! against a small store (`maxmemory 32mb`, `noeviction`, as compose runs it but smaller),
//! while existing shoppers keep shopping. Without the protections (nginx's limit of new
//! sessions per address, the replicas' memory budget for new sessions) the flood fills
//! the store in seconds on this machine and from then on every shopper's change is refused
//! (docs/design.md, "Abuse: a flood of new sessions", has both runs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::flood::{FloodOptions, flood, flood_addresses};
use testkit::{FleetOptions, LoopbackFleet, RedisCluster, RedisServer, eventually};

use crate::helpers::{add_item, binary, get_json, get_text, start_binary, start_session, visitor};

/// The test's store ceiling.
const MAXMEMORY: u64 = 32 * 1024 * 1024;
/// How long the flood lasts: without the protections the store is full after 12 s here.
const FLOOD_FOR: Duration = Duration::from_secs(30);
/// /24s and addresses in each that the flood comes from: few enough that nginx's limit
/// per address holds back the half that sends no cookie (8 addresses may start 8 x 5,048
/// sessions in 30 s; they send about three times that here).
const FLOOD_ADDRESSES: (u8, u8) = (16, 1);
const SHOPPERS: usize = 16;
/// A shopper's pace: a change every 100 ms, one after the other (a busy shopper clicks
/// every few seconds; sixteen of these are a shop's worth of changes).
const SHOPPER_PACE: Duration = Duration::from_millis(100);
const PRODUCTS: [&str; 4] = [
    "espresso-beans",
    "ceramic-mug",
    "paper-filters",
    "tea-sampler",
];

/// Existing shoppers lose nothing and every change of theirs is answered 200 while the
/// flood runs; the store's used memory never reaches its ceiling; the flood is refused
/// with 429, `Retry-After` and the JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_session_flood_from_many_addresses_cannot_fill_the_store_or_cost_a_shopper_a_change() {
    let mut options = FleetOptions::new(binary());
    options.persist = false;
    let fleet = LoopbackFleet::start(options).await;
    let redis = fleet.redis.as_ref().expect("a store");
    redis.cli(&["CONFIG", "SET", "maxmemory", &MAXMEMORY.to_string()]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    // Every replica has read the new ceiling (it reads the store's memory every second).
    let probe = reqwest::Client::new();
    let line = format!("elastic_cart_store_memory_max_bytes {MAXMEMORY}");
    for id in ["replica-0", "replica-1", "replica-2"] {
        let url = fleet.replica_url(id, "/metrics");
        eventually(&format!("{id} reading maxmemory"), async || {
            get_text(&probe, &url).await.lines().any(|l| l == line)
        })
        .await;
    }

    let items = fleet.url("/api/cart/items");
    let mut shoppers = Vec::new();
    for _ in 0..SHOPPERS {
        let shopper = visitor();
        start_session(&shopper, &items).await;
        shoppers.push(shopper);
    }
    let used_before = used_memory(redis);

    let peak = Arc::new(AtomicU64::new(0));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = sample_used_memory(redis, peak.clone(), flooding.clone());
    let flood_options = FloodOptions {
        items_url: items.clone(),
        addresses: flood_addresses(FLOOD_ADDRESSES.0, FLOOD_ADDRESSES.1),
        workers: 64,
        duration: FLOOD_FOR,
    };
    let flood_run = tokio::spawn(async move { flood(&flood_options).await });
    let shopping: Vec<_> = shoppers
        .iter()
        .enumerate()
        .map(|(n, shopper)| {
            let (shopper, base) = (shopper.clone(), fleet.url("/api/cart/items/"));
            tokio::spawn(async move { shop(n, shopper, base, Instant::now() + FLOOD_FOR).await })
        })
        .collect();
    let mut shopped = Vec::new();
    for shopper in shopping {
        shopped.push(shopper.await.expect("a shopper"));
    }
    let tally = flood_run.await.expect("the flood");
    flooding.store(false, Ordering::Relaxed);
    sampler.join().expect("the memory sampler");
    let peak = peak.load(Ordering::Relaxed);
    let used_after = used_memory(redis);
    let sessions = dbsize(redis);

    // Who refused the flood: the replicas count their refusals, nginx answered the rest.
    let mut by_replicas = 0;
    for id in ["replica-0", "replica-1", "replica-2"] {
        let metrics = get_text(&probe, &fleet.replica_url(id, "/metrics")).await;
        by_replicas += metrics
            .lines()
            .find_map(|line| line.strip_prefix("elastic_cart_new_sessions_refused_total "))
            .and_then(|value| value.parse::<u64>().ok())
            .expect("the replica counts refused new sessions");
    }

    // Then every shopper's cart holds exactly its last acknowledged quantities.
    let mut lost = 0;
    for (shopper, done) in shoppers.iter().zip(&shopped) {
        let cart: Value = get_json(shopper, &fleet.url("/api/cart")).await;
        let held: BTreeMap<String, u64> = cart["items"]
            .as_array()
            .expect("cart items")
            .iter()
            .map(|item| {
                let id = item["product_id"].as_str().unwrap().to_owned();
                (id, item["quantity"].as_u64().unwrap())
            })
            .collect();
        lost += done
            .acknowledged
            .iter()
            .filter(|(product, quantity)| held.get(*product) != Some(quantity))
            .count();
    }
    let changes: u64 = shopped.iter().map(|s| s.answered).sum();
    let failed: BTreeMap<u16, u64> = shopped.iter().fold(BTreeMap::new(), |mut all, s| {
        for (status, count) in &s.failed {
            *all.entry(*status).or_default() += count;
        }
        all
    });
    let created = tally.created.max(1);
    println!(
        "flood: {} requests in {:.1} s ({:.0}/s) from {} addresses in 16 /24s: {} created, \
         {} refused with 429 ({by_replicas} by the replicas' memory budget, the rest by \
         nginx's limit per address), {} unclear 429s, other {:?}, {} unanswered",
        tally.sent(),
        tally.elapsed.as_secs_f64(),
        tally.rate(),
        FLOOD_ADDRESSES.0 as usize * FLOOD_ADDRESSES.1 as usize,
        tally.created,
        tally.refused,
        tally.unclear_refusals,
        tally.other,
        tally.unanswered
    );
    println!(
        "shoppers: {SHOPPERS}, {changes} changes answered 200 ({:.0}/s), failed {failed:?}, \
         lost {lost}",
        changes as f64 / FLOOD_FOR.as_secs_f64()
    );
    println!(
        "store: used {used_before} B before, peak {peak} B ({:.1}% of {MAXMEMORY}), {used_after} \
         B after; {sessions} keys; about {} B per created session",
        peak as f64 * 100.0 / MAXMEMORY as f64,
        used_after.saturating_sub(used_before) / created
    );

    assert!(changes > 0, "the shoppers made no change");
    assert!(failed.is_empty(), "shoppers' changes refused: {failed:?}");
    assert_eq!(
        lost, 0,
        "lines whose acknowledged quantity is not in the cart"
    );
    assert!(
        peak < MAXMEMORY,
        "the store reached its ceiling: peak {peak} B"
    );
    assert!(
        by_replicas > 0,
        "the replicas' memory budget refused nothing: {tally:?}"
    );
    assert!(
        tally.refused > by_replicas,
        "nginx's limit per address refused nothing: {tally:?}"
    );
    assert_eq!(
        tally.unclear_refusals, 0,
        "429s without Retry-After or the JSON error"
    );
    assert!(
        tally.other.is_empty() && tally.unanswered == 0,
        "the flood got other answers: {tally:?}"
    );
}

/// What one shopper did: the last quantity acknowledged for each product, the changes
/// answered 200, and the statuses of the others.
struct Shopped {
    acknowledged: BTreeMap<String, u64>,
    answered: u64,
    failed: BTreeMap<u16, u64>,
}

/// Sets quantities of its lines (`PUT`, each with its own `Idempotency-Key`) one after the
/// other until `end`.
async fn shop(n: usize, shopper: reqwest::Client, line_base: String, end: Instant) -> Shopped {
    let mut done = Shopped {
        acknowledged: BTreeMap::new(),
        answered: 0,
        failed: BTreeMap::new(),
    };
    let mut step = 0u64;
    let mut pace = tokio::time::interval(SHOPPER_PACE);
    while Instant::now() < end {
        pace.tick().await;
        step += 1;
        let product = PRODUCTS[(n + step as usize) % PRODUCTS.len()];
        let quantity = 1 + step % 99;
        let response = shopper
            .put(format!("{line_base}{product}"))
            .header("idempotency-key", format!("flood-shopper-{n}-{step}"))
            .json(&json!({ "quantity": quantity }))
            .send()
            .await;
        match response.map(|r| r.status()) {
            Ok(StatusCode::OK) => {
                done.answered += 1;
                done.acknowledged.insert(product.to_owned(), quantity);
            }
            Ok(status) => *done.failed.entry(status.as_u16()).or_default() += 1,
            Err(_) => *done.failed.entry(0).or_default() += 1,
        }
    }
    done
}

/// The store's `used_memory`.
fn used_memory(redis: &RedisServer) -> u64 {
    used_memory_of(&redis.cli(&["INFO", "memory"])).expect("INFO memory has used_memory")
}

fn dbsize(redis: &RedisServer) -> u64 {
    redis
        .cli(&["DBSIZE"])
        .trim()
        .parse()
        .expect("DBSIZE is a number")
}

/// Samples the store's used memory every 100 ms into `peak` while `running`.
fn sample_used_memory(
    redis: &RedisServer,
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let admin = redis.admin();
    std::thread::spawn(move || {
        while running.load(Ordering::Relaxed) {
            // Nothing while the store does not answer (`try_cli` prints nothing then).
            let used = used_memory_of(&admin.try_cli(&["INFO", "memory"])).unwrap_or(0);
            peak.fetch_max(used, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// On a Redis Cluster every primary's memory is read and the fullest decides: one primary
/// above the budget stops new sessions (a new key may hash to it), carts already started
/// go on, and new sessions are created again once it has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn on_a_cluster_the_fullest_primary_decides_whether_new_sessions_fit() {
    let cluster = RedisCluster::start(3).await;
    let replica = start_binary(&[("REDIS_URL", &cluster.url()), ("REPLICA_ID", "c1")]).await;
    let items = replica.url("/api/cart/items");
    let shopper = visitor();
    start_session(&shopper, &items).await;

    // One primary with a ceiling just above what it holds: 90 % full.
    let full = cluster.primary_ports()[1];
    let used = used_memory_of(&cluster.node_cli(full, &["INFO", "memory"]))
        .expect("INFO memory has used_memory");
    let ceiling = used * 10 / 9;
    cluster.node_cli(full, &["CONFIG", "SET", "maxmemory", &ceiling.to_string()]);
    let probe = reqwest::Client::new();
    let metrics = replica.url("/metrics");
    let line = format!("elastic_cart_store_memory_max_bytes {ceiling}");
    eventually("the replica reading the full primary", async || {
        get_text(&probe, &metrics).await.lines().any(|l| l == line)
    })
    .await;

    let newcomer = visitor();
    let refused = add_item(&newcomer, &items, "ceramic-mug", 1).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_new_sessions", "{body}");
    let kept = add_item(&shopper, &items, "ceramic-mug", 1).await;
    assert_eq!(kept.status(), StatusCode::OK, "a cart already started");

    cluster.node_cli(full, &["CONFIG", "SET", "maxmemory", "0"]);
    eventually("new sessions created again", async || {
        add_item(&newcomer, &items, "ceramic-mug", 1).await.status() == StatusCode::OK
    })
    .await;
}

/// `used_memory` in the text of `INFO memory`.
fn used_memory_of(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .and_then(|value| value.parse().ok())
}

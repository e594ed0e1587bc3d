//! The fault soak: the shop's load through nginx over a loopback fleet while faults come
//! in a seeded random order, with a ledger of every change each shopper made, checked
//! against the carts at the end.
//!
//! Each shopper is one session, doing one thing at a time: adds, sets and removes with an
//! `Idempotency-Key` each, and reads. A change whose answer is a 5xx or never came is
//! resent with the same key until it is answered (as docs/api.md tells clients to do); only a
//! 200 enters the ledger. Every 200 answer and every read must equal the fold of the
//! ledger so far, and at the end every cart must equal it exactly: a unit too few is lost,
//! a unit too many was applied twice.
//!
//! Faults, one at a time with a few seconds of calm between: SIGKILL or SIGTERM of a
//! replica and its restart, scale out and back in, the crash button, Redis SIGSTOP and
//! SIGCONT, Redis restarted on its append-only file, `CLIENT KILL`, `CLIENT PAUSE`, and
//! latency, a stall or cut connections between the replicas and Redis ([`FaultProxy`]).
//! On a replicated store ([`Replicated`]) the store's faults are those of a failover
//! instead: the primary SIGKILLed (and back as a replica), `SENTINEL FAILOVER` (the old
//! primary answers `READONLY`), and `SCRIPT FLUSH` on every node of a cluster.
//!
//! [`FaultProxy`]: crate::proxy::FaultProxy

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fleet::{FleetOptions, LoopbackFleet, Replicated};
use crate::scenario::Fleet;
use crate::shoppers::{Lines, lines_of};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The elastic-cart binary.
    pub binary: std::path::PathBuf,
    /// How long the load and the faults last.
    pub duration: Duration,
    /// Seeds the order and the parameters of the faults and the shoppers' choices.
    pub seed: u64,
    /// Simultaneous shoppers, one session each.
    pub shoppers: usize,
    /// Replicas in the steady state.
    pub replicas: usize,
    /// A replicated store instead of the one redis-server behind the fault proxy.
    pub replicated: Option<Replicated>,
    /// `REDIS_WAIT_REPLICAS` of every replica.
    pub wait_replicas: u32,
    /// The kinds of fault to draw from (of [`faults_for`]); empty: [`default_faults`].
    pub faults: Vec<&'static str>,
}

/// The faults of the fleet's own replicas, whatever the store.
const REPLICA_FAULTS: [&str; 4] = [
    "replica_sigkill",
    "replica_sigterm",
    "scale_out_and_in",
    "crash_button",
];

/// The kinds of fault on one redis-server behind the fault proxy, in the order of the
/// report.
pub const FAULTS: [&str; 12] = [
    "replica_sigkill",
    "replica_sigterm",
    "scale_out_and_in",
    "crash_button",
    "redis_sigstop",
    "redis_restart",
    "redis_client_kill",
    "redis_client_pause",
    "net_delay",
    "net_stall",
    "net_cut",
    "net_loss",
];

/// The faults a soak on `store` draws from when none are named: all that it takes but
/// `redis_failover`, which can lose changes (Sentinel promotes before it demotes; see
/// docs/configuration.md, "Failover"), so a clean report cannot be asked of it.
pub fn default_faults(store: Option<Replicated>) -> Vec<&'static str> {
    faults_for(store)
        .into_iter()
        .filter(|kind| *kind != "redis_failover")
        .collect()
}

/// The kinds of fault a fleet on `store` takes: those of its replicas, and those of its
/// store.
pub fn faults_for(store: Option<Replicated>) -> Vec<&'static str> {
    let store_faults: &[&'static str] = match store {
        None => return FAULTS.to_vec(),
        Some(Replicated::Sentinel) => &["redis_primary_kill", "redis_failover"],
        Some(Replicated::Cluster) => &["redis_primary_kill", "redis_script_flush"],
    };
    REPLICA_FAULTS.iter().chain(store_faults).copied().collect()
}

/// What happened, for the report.
#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    reads: u64,
    changes_acknowledged: u64,
    resends: u64,
    refused_4xx: BTreeMap<String, u64>,
    errors_5xx: BTreeMap<String, u64>,
    connection_errors: u64,
    /// Answers or reads that did not equal the ledger's fold at that moment.
    disagreements: Vec<String>,
    /// Units missing from, and units beyond, the ledger's fold, counted where a
    /// disagreement was seen (the shopper then goes on from what the shop holds, so one
    /// divergence is counted once) and in the final carts.
    lost: u64,
    doubled: u64,
    /// Changes given up after a minute of resends without an answer (their outcome is
    /// unknown).
    abandoned: u64,
    /// 200s whose body was not a cart, and other answers that are neither 4xx nor 5xx.
    other_answers: BTreeMap<String, u64>,
    last_ack: Option<Instant>,
    longest_unavailable: Duration,
    /// Reads that were not answered 200 (each also counted by status or as a connection
    /// error).
    failed_reads: u64,
    /// The longest single request of each kind, answered or not (resends count apart).
    longest_read: Duration,
    longest_change: Duration,
}

/// One change of a cart, as the ledger keeps it.
#[derive(Debug, Clone)]
enum Change {
    Add(String, u64),
    Set(String, u64),
    Remove(String),
}

impl Change {
    fn apply(&self, cart: &mut Lines) {
        match self {
            Self::Add(product, quantity) => *cart.entry(product.clone()).or_default() += quantity,
            Self::Set(product, quantity) => {
                cart.insert(product.clone(), *quantity);
            }
            Self::Remove(product) => {
                cart.remove(product);
            }
        }
    }

    fn request(&self, http: &reqwest::Client, shop: &str) -> reqwest::RequestBuilder {
        match self {
            Self::Add(product, quantity) => http
                .post(format!("{shop}/api/cart/items"))
                .json(&json!({"product_id": product, "quantity": quantity})),
            Self::Set(product, quantity) => http
                .put(format!("{shop}/api/cart/items/{product}"))
                .json(&json!({"quantity": quantity})),
            Self::Remove(product) => http.delete(format!("{shop}/api/cart/items/{product}")),
        }
    }
}

/// Runs the soak and returns its report (see [`report_ok`]).
///
/// # Panics
///
/// If a fault of [`SoakOptions::faults`] is not one the store takes.
pub async fn run(options: SoakOptions) -> Value {
    let applicable = faults_for(options.replicated);
    let kinds = if options.faults.is_empty() {
        default_faults(options.replicated)
    } else {
        for kind in &options.faults {
            assert!(
                applicable.contains(kind),
                "fault {kind} is not one of {applicable:?}"
            );
        }
        options.faults.clone()
    };
    let mut fleet = LoopbackFleet::start(FleetOptions {
        replicas: options.replicas,
        store_proxy: options.replicated.is_none(),
        replicated: options.replicated,
        ..FleetOptions::new(&options.binary)
            .env("DEMO_CHAOS", "1")
            .env("REDIS_WAIT_REPLICAS", &options.wait_replicas.to_string())
    })
    .await;
    let shop = fleet.url("");
    let started = Instant::now();
    let deadline = started + options.duration;
    let load = LedgerLoad::start(&shop, options.shoppers, options.seed).await;
    let faults = inject_faults(&mut fleet, &kinds, options.seed, options.replicas, deadline).await;
    tokio::time::sleep_until(deadline.into()).await;
    let mut report = load.finish().await;

    let store = match options.replicated {
        None => "redis",
        Some(Replicated::Sentinel) => "sentinel",
        Some(Replicated::Cluster) => "cluster",
    };
    let head = json!({
        "store": store,
        "wait_replicas": options.wait_replicas,
        "seed": options.seed,
        "duration_secs": started.elapsed().as_secs(),
        "replicas": options.replicas,
        "shoppers": options.shoppers,
        "faults": faults,
        "faults_total": faults.values().sum::<u64>(),
    });
    let fields = report.as_object_mut().expect("a report object");
    for (key, value) in head.as_object().expect("an object") {
        fields.insert(key.clone(), value.clone());
    }
    report
}

/// Shoppers keeping the ledger described above, against a shop until
/// [`LedgerLoad::finish`]: the soak's load, and the host scenarios' (tests/api/hosts.rs).
#[derive(Debug)]
pub struct LedgerLoad {
    shop: String,
    stats: Arc<Mutex<Stats>>,
    running: Arc<AtomicBool>,
    shoppers: Vec<tokio::task::JoinHandle<(reqwest::Client, Lines)>>,
}

impl LedgerLoad {
    /// Starts `shoppers` shoppers (one session each, choices seeded by `seed`) on the shop
    /// at `shop`, once it lists its products.
    pub async fn start(shop: &str, shoppers: usize, seed: u64) -> Self {
        let products = catalog(shop).await;
        let stats = Arc::new(Mutex::new(Stats::default()));
        let running = Arc::new(AtomicBool::new(true));
        let shoppers = (0..shoppers)
            .map(|n| {
                let (shop, products) = (shop.to_owned(), products.clone());
                let (stats, running) = (stats.clone(), running.clone());
                let seed = seed.wrapping_mul(1000).wrapping_add(n as u64);
                tokio::spawn(shop_while(shop, products, stats, seed, n, running))
            })
            .collect();
        Self {
            shop: shop.to_owned(),
            stats,
            running,
            shoppers,
        }
    }

    /// Changes answered 200 so far.
    pub fn acknowledged(&self) -> u64 {
        self.stats.lock().expect("stats").changes_acknowledged
    }

    /// Reads so far, and those of them that were not answered 200.
    pub fn reads(&self) -> (u64, u64) {
        let stats = self.stats.lock().expect("stats");
        (stats.reads + stats.failed_reads, stats.failed_reads)
    }

    /// When the last change was answered 200, if one was.
    pub fn last_acknowledged(&self) -> Option<Instant> {
        self.stats.lock().expect("stats").last_ack
    }

    /// Waits until `more` changes have been answered 200 since the call; false if they
    /// were not within `limit`.
    pub async fn wait_for_more(&self, more: u64, limit: Duration) -> bool {
        let target = self.acknowledged() + more;
        crate::poll_until(limit, async || self.acknowledged() >= target).await
    }

    /// Stops the shoppers (each finishes resending its last change until it is answered),
    /// reads every cart once more, and reports (see [`report_ok`]).
    pub async fn finish(self) -> Value {
        self.running.store(false, Ordering::Relaxed);
        let mut carts_checked = 0u64;
        for shopper in self.shoppers {
            let (http, expected) = shopper.await.expect("a shopper task");
            let actual = final_cart(&http, &self.shop).await;
            carts_checked += 1;
            if actual != expected {
                disagree(
                    &mut self.stats.lock().expect("stats"),
                    "final cart".into(),
                    &expected,
                    &actual,
                );
            }
        }
        let stats = self.stats.lock().expect("stats");
        json!({
            "requests": stats.requests,
            "reads": stats.reads,
            "failed_reads": stats.failed_reads,
            "changes_acknowledged": stats.changes_acknowledged,
            "resends": stats.resends,
            "carts_checked": carts_checked,
            "lost": stats.lost,
            "applied_twice": stats.doubled,
            "abandoned": stats.abandoned,
            "disagreements": stats.disagreements.len(),
            "disagreement_examples": stats.disagreements.iter().take(5).collect::<Vec<_>>(),
            "refused_4xx": stats.refused_4xx,
            "errors_5xx": stats.errors_5xx,
            "connection_errors": stats.connection_errors,
            "other_answers": stats.other_answers,
            "longest_unavailable_ms": stats.longest_unavailable.as_millis() as u64,
            "longest_read_ms": stats.longest_read.as_millis() as u64,
            "longest_change_ms": stats.longest_change.as_millis() as u64,
        })
    }
}

/// Whether the report shows a clean run: nothing lost, nothing applied twice, every answer
/// and read agreeing with the ledger, no change left unanswered, no 500.
pub fn report_ok(report: &Value) -> bool {
    let zero = |field: &str| report[field].as_u64() == Some(0);
    zero("lost")
        && zero("applied_twice")
        && zero("abandoned")
        && zero("disagreements")
        && report["errors_5xx"]
            .as_object()
            .is_some_and(|errors| !errors.keys().any(|kind| kind.starts_with("500")))
        && report["changes_acknowledged"].as_u64() > Some(0)
}

/// The product ids, asked of the shop (retrying while the fleet settles).
async fn catalog(shop: &str) -> Vec<String> {
    let http = crate::http::visitor();
    for _ in 0..50 {
        if let Ok(response) = http.get(format!("{shop}/api/products")).send().await
            && let Ok(body) = response.json::<Value>().await
            && let Some(products) = body.as_array()
        {
            return products
                .iter()
                .filter_map(|product| Some(product["id"].as_str()?.to_owned()))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the shop did not list its products");
}

/// Units of `expected` missing from `actual`, and units of `actual` beyond `expected`.
fn divergence(expected: &Lines, actual: &Lines) -> (u64, u64) {
    let products: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let (mut lost, mut doubled) = (0, 0);
    for product in products {
        let want = expected.get(product).copied().unwrap_or(0);
        let got = actual.get(product).copied().unwrap_or(0);
        lost += want.saturating_sub(got);
        doubled += got.saturating_sub(want);
    }
    (lost, doubled)
}

/// Records that the shop holds `actual` where the ledger says `expected`.
fn disagree(stats: &mut Stats, what: String, expected: &Lines, actual: &Lines) {
    let (lost, doubled) = divergence(expected, actual);
    stats.lost += lost;
    stats.doubled += doubled;
    stats.disagreements.push(format!(
        "{what}: the shop holds {actual:?}, the ledger says {expected:?}"
    ));
}

/// The cart as the shop reads it once the faults are over (retried until it answers).
async fn final_cart(http: &reqwest::Client, shop: &str) -> Lines {
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{shop}/api/cart")).send().await
            && response.status() == reqwest::StatusCode::OK
            && let Ok(cart) = response.json::<Value>().await
        {
            return lines_of(&cart);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the shop did not answer a final read");
}

/// One shopper: changes and reads while `running`, then the last change's resends are
/// done; returns its client (its session cookie) and the fold of its ledger.
async fn shop_while(
    shop: String,
    products: Vec<String>,
    stats: Arc<Mutex<Stats>>,
    seed: u64,
    n: usize,
    running: Arc<AtomicBool>,
) -> (reqwest::Client, Lines) {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cart = Lines::new();
    let mut changes = 0u64;
    while running.load(Ordering::Relaxed) {
        let product = products[rng.usize(..products.len())].clone();
        let roll = rng.u32(..100);
        if roll >= 70 {
            read(&http, &shop, &mut cart, &stats).await;
            continue;
        }
        let change = match roll {
            0..40 => Change::Add(product, rng.u64(1..=3)),
            40..58 => Change::Set(product, rng.u64(1..=5)),
            _ => Change::Remove(product),
        };
        changes += 1;
        let key = format!("soak-{seed}-{n}-{changes}");
        let mut expected = cart.clone();
        change.apply(&mut expected);
        if let Some(answered) = send_until_answered(&http, &shop, &change, &key, &stats).await {
            let answered = lines_of(&answered);
            if answered != expected {
                let what = format!("answer to {key} {change:?}");
                disagree(
                    &mut stats.lock().expect("stats"),
                    what,
                    &expected,
                    &answered,
                );
            }
            cart = answered;
        }
    }
    (http, cart)
}

/// The status and JSON body of the answer to `request` (`None` if no answer came), and
/// how long the request took.
async fn answer(request: reqwest::RequestBuilder) -> (Option<(u16, Option<Value>)>, Duration) {
    let started = Instant::now();
    let answer = async {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json::<Value>().await.ok()))
    }
    .await;
    (answer, started.elapsed())
}

/// A read, compared with the ledger's fold.
async fn read(http: &reqwest::Client, shop: &str, cart: &mut Lines, stats: &Mutex<Stats>) {
    let (answer, took) = answer(http.get(format!("{shop}/api/cart"))).await;
    let mut stats = stats.lock().expect("stats");
    stats.requests += 1;
    stats.longest_read = stats.longest_read.max(took);
    if !matches!(answer, Some((200, Some(_)))) {
        stats.failed_reads += 1;
    }
    match answer {
        Some((200, Some(body))) => {
            stats.reads += 1;
            let read = lines_of(&body);
            if read != *cart {
                disagree(&mut stats, "read".into(), cart, &read);
                *cart = read;
            }
        }
        Some((status, body)) => count_error(&mut stats, status, body.as_ref()),
        None => stats.connection_errors += 1,
    }
}

/// Counts an answer that is not a 200 by status and error code.
fn count_error(stats: &mut Stats, status: u16, body: Option<&Value>) {
    let code = body
        .and_then(|body| body["error"]["code"].as_str())
        .unwrap_or("-");
    let kind = format!("{status} {code}");
    let counts = match status {
        500.. => &mut stats.errors_5xx,
        400..500 => &mut stats.refused_4xx,
        _ => &mut stats.other_answers,
    };
    *counts.entry(kind).or_default() += 1;
}

/// Sends `change` with `key` until it is answered: its cart on a 200, `None` if refused
/// (a 4xx: not applied). A 5xx, a 408 or no answer is resent with the same key.
async fn send_until_answered(
    http: &reqwest::Client,
    shop: &str,
    change: &Change,
    key: &str,
    stats: &Mutex<Stats>,
) -> Option<Value> {
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (answer, took) =
            answer(change.request(http, shop).header("Idempotency-Key", key)).await;
        {
            let mut stats = stats.lock().expect("stats");
            stats.requests += 1;
            stats.longest_change = stats.longest_change.max(took);
            if attempts > 1 {
                stats.resends += 1;
            }
            match answer {
                Some((200, Some(body))) => {
                    stats.changes_acknowledged += 1;
                    let now = Instant::now();
                    if let Some(last) = stats.last_ack {
                        stats.longest_unavailable = stats.longest_unavailable.max(now - last);
                    }
                    stats.last_ack = Some(now);
                    return Some(body);
                }
                Some((status, body)) if (400..500).contains(&status) && status != 408 => {
                    count_error(&mut stats, status, body.as_ref());
                    return None;
                }
                Some((status, body)) => count_error(&mut stats, status, body.as_ref()),
                None => stats.connection_errors += 1,
            }
            if Instant::now() > give_up {
                stats.abandoned += 1;
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(
            100 + 100 * u64::from(attempts.min(5)),
        ))
        .await;
    }
}

/// Injects faults, one at a time with calm between, until shortly before `deadline`;
/// after each, the fleet is brought back to `base` running replicas. Returns the count of
/// each kind.
async fn inject_faults(
    fleet: &mut LoopbackFleet,
    kinds: &[&'static str],
    seed: u64,
    base: usize,
    deadline: Instant,
) -> BTreeMap<&'static str, u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts: BTreeMap<&'static str, u64> = kinds.iter().map(|kind| (*kind, 0)).collect();
    let http = crate::http::visitor();
    let shop = fleet.url("");
    let started = Instant::now();
    let ms = |rng: &mut fastrand::Rng, range: std::ops::Range<u64>| {
        Duration::from_millis(rng.u64(range))
    };
    while Instant::now() + Duration::from_secs(8) < deadline {
        tokio::time::sleep(ms(&mut rng, 1500..3500)).await;
        let kind = kinds[rng.usize(..kinds.len())];
        *counts.entry(kind).or_default() += 1;
        println!("{:>7.1} s  {kind}", started.elapsed().as_secs_f64());
        let running: Vec<String> = fleet.replicas().await.into_iter().collect();
        let victim = running[rng.usize(..running.len())].clone();
        match kind {
            "replica_sigkill" => {
                fleet.kill(&victim).await;
                tokio::time::sleep(ms(&mut rng, 500..3000)).await;
            }
            "replica_sigterm" => {
                let _ = fleet.stop(&victim).await;
            }
            "scale_out_and_in" => {
                fleet.scale(base + 2).await;
                tokio::time::sleep(ms(&mut rng, 2000..4000)).await;
                fleet.scale(base).await;
            }
            "crash_button" => {
                let _ = http.post(format!("{shop}/chaos/crash")).send().await;
                tokio::time::sleep(ms(&mut rng, 1000..2000)).await;
            }
            "redis_sigstop" => {
                let redis = fleet.redis.as_ref().expect("the fleet has Redis");
                redis.pause();
                tokio::time::sleep(ms(&mut rng, 500..3000)).await;
                redis.resume();
            }
            "redis_restart" => fleet.restart_store().await,
            "redis_primary_kill" => {
                if let Some(sentinel) = &mut fleet.sentinel {
                    let old = sentinel.kill_primary().await;
                    tokio::time::sleep(ms(&mut rng, 500..2000)).await;
                    sentinel.rejoin(old).await;
                } else if let Some(cluster) = &mut fleet.cluster {
                    let old = cluster.kill_primary().await;
                    tokio::time::sleep(ms(&mut rng, 500..2000)).await;
                    cluster.rejoin(old).await;
                }
            }
            "redis_failover" => {
                let sentinel = fleet.sentinel.as_mut().expect("the fleet has Sentinel");
                sentinel.failover().await;
            }
            "redis_script_flush" => {
                let cluster = fleet.cluster.as_ref().expect("the fleet has a cluster");
                cluster.flush_scripts();
            }
            "redis_client_kill" => {
                let redis = fleet.redis.as_ref().expect("the fleet has Redis");
                for _ in 0..rng.u32(3..10) {
                    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
            "redis_client_pause" => {
                let redis = fleet.redis.as_ref().expect("the fleet has Redis");
                let pause = ms(&mut rng, 500..2000);
                redis.cli(&["CLIENT", "PAUSE", &pause.as_millis().to_string(), "WRITE"]);
                tokio::time::sleep(pause).await;
            }
            "net_delay" | "net_stall" | "net_cut" | "net_loss" => {
                let proxy = fleet.proxy.as_ref().expect("the fleet has a store proxy");
                match kind {
                    "net_delay" => {
                        proxy.set_delay(ms(&mut rng, 50..600));
                        tokio::time::sleep(ms(&mut rng, 2000..5000)).await;
                    }
                    "net_stall" => {
                        proxy.set_stalled(true);
                        tokio::time::sleep(ms(&mut rng, 500..2500)).await;
                    }
                    "net_cut" => proxy.cut_all(),
                    // Lost packets come back as retransmissions: bursts of short stalls.
                    _ => {
                        for _ in 0..10 {
                            proxy.set_stalled(true);
                            tokio::time::sleep(ms(&mut rng, 50..400)).await;
                            proxy.set_stalled(false);
                            tokio::time::sleep(ms(&mut rng, 50..300)).await;
                        }
                    }
                }
                proxy.heal();
            }
            other => unreachable!("unknown fault {other}"),
        }
        // Back to the steady state: whatever was killed, stopped or crashed runs again.
        fleet.scale(base).await;
    }
    counts
}

//! The sticky-versus-shared experiment (`scripts/sticky-vs-shared.sh`, or `cargo bench
//! --bench sticky-vs-shared -- [--users N] [--seed N] [--only sticky,sticky_ip,shared]`):
//! the same shop load over three replicas, run once per way of keeping sessions:
//!
//! - `sticky`: nginx sticky by a cookie it issues (`hash $ec_route consistent`, as a load
//!   balancer's stickiness works), sessions in each replica's memory;
//! - `sticky_ip`: nginx `ip_hash`, as sticky sessions are most often configured, sessions
//!   in memory (each shopper comes from its own /24 of 127.0.0.0/8, as from its own network);
//! - `shared`: the product, round robin with sessions in Redis.
//!
//! Each run: steady load, a replica SIGKILLed and started again five seconds later (as a
//! restart policy would), a scale-in from 3 to 2 (graceful), a scale-out to 4, and a final
//! read of every cart. Every shopper remembers what its acknowledged adds put in its cart;
//! a read that shows less counts the shopper in `carts_lost`. Writes
//! `target/sticky-vs-shared/report.json`, `report.md` and `chart.png` (requests/s per
//! replica over time, the events marked).

mod chart;
#[path = "../common/font.rs"]
mod font;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::scenario::Fleet;
use testkit::shoppers::{Lines, lines_of};
use testkit::{Balance, FleetOptions, LoopbackFleet};

/// One way of keeping sessions.
struct Mode {
    key: &'static str,
    what: &'static str,
    balance: Balance,
    redis: bool,
}

const MODES: [Mode; 3] = [
    Mode {
        key: "sticky",
        what: "nginx sticky by its own cookie (hash consistent), sessions in memory",
        balance: Balance::CookieRoute,
        redis: false,
    },
    Mode {
        key: "sticky_ip",
        what: "nginx ip_hash, sessions in memory",
        balance: Balance::IpHash,
        redis: false,
    },
    Mode {
        key: "shared",
        what: "round robin, sessions in Redis (the product)",
        balance: Balance::RoundRobin,
        redis: true,
    },
];

/// The timeline of a run, in seconds from the start of the load.
const STEADY_FROM: u64 = 3;
const KILL_AT: u64 = 15;
const RESTART_AT: u64 = 20;
const SCALE_IN_AT: u64 = 30;
const SCALE_OUT_AT: u64 = 40;
/// How long after joining the added replicas' share is measured.
const JOINED_WINDOW: u64 = 10;
const END_AT: u64 = SCALE_OUT_AT + JOINED_WINDOW + 2;

/// Every how many requests a shopper adds an item (the rest read the cart).
const ADD_EVERY: u64 = 5;

struct Settings {
    users: usize,
    seed: u64,
    only: Option<Vec<String>>,
}

fn parse_args() -> Settings {
    let mut settings = Settings {
        users: 90,
        seed: 7,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--users" => settings.users = value("--users").parse().expect("--users: a number"),
            "--seed" => settings.seed = value("--seed").parse().expect("--seed: a number"),
            "--only" => {
                let names: Vec<String> = value("--only").split(',').map(str::to_owned).collect();
                for name in &names {
                    assert!(
                        MODES.iter().any(|mode| mode.key == name),
                        "--only: no mode {name} (sticky, sticky_ip, shared)"
                    );
                }
                settings.only = Some(names);
            }
            "--bench" => {}
            other => panic!("unknown argument {other}; see benches/sticky_vs_shared/main.rs"),
        }
    }
    assert!(
        (1..=50_000).contains(&settings.users),
        "--users: 1 to 50000"
    );
    settings
}

/// What the shoppers of one run saw.
#[derive(Default)]
struct Tally {
    /// Requests answered, by (second of the run, replica).
    served: Mutex<BTreeMap<(u64, String), u64>>,
    failed: AtomicU64,
    requests: AtomicU64,
    /// Shoppers whose cart vanished or shrank at least once.
    lost: Mutex<BTreeSet<usize>>,
    /// Every read that found a cart smaller than expected, by the second of the run.
    losses: Mutex<Vec<u64>>,
    /// The first few failures, for the report.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(what);
        }
    }
}

/// Whether `seen` holds less of anything than `expected`.
fn shrank(expected: &Lines, seen: &Lines) -> bool {
    expected
        .iter()
        .any(|(product, units)| seen.get(product).copied().unwrap_or(0) < *units)
}

/// A shopper from its own /24 of the loopback network (ip_hash hashes the first three
/// octets), with its own cookie jar.
fn client(user: usize) -> reqwest::Client {
    let address = Ipv4Addr::new(127, 1 + (user / 250) as u8, (user % 250) as u8, 1);
    reqwest::Client::builder()
        .cookie_store(true)
        .local_address(IpAddr::V4(address))
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1)
        .build()
        .expect("an HTTP client")
}

struct User {
    index: usize,
    client: reqwest::Client,
    think: Duration,
    expected: Lines,
}

impl User {
    /// One request: an add every [`ADD_EVERY`], else a read; checks the cart it answers.
    async fn step(
        &mut self,
        shop: &str,
        products: &[String],
        n: u64,
        start: Instant,
        tally: &Tally,
    ) {
        let add = n.is_multiple_of(ADD_EVERY);
        let product = &products[(self.index + (n / ADD_EVERY) as usize) % products.len()];
        let request = if add {
            self.client
                .post(format!("{shop}/api/cart/items"))
                .json(&json!({"product_id": product, "quantity": 1}))
        } else {
            self.client.get(format!("{shop}/api/cart"))
        };
        tally.requests.fetch_add(1, Ordering::Relaxed);
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let second = start.elapsed().as_secs();
                return tally.fail(format!("no answer at {second} s: {err}"));
            }
        };
        let second = start.elapsed().as_secs();
        let status = response.status();
        if let Some(by) = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
        {
            *tally
                .served
                .lock()
                .unwrap()
                .entry((second, by.to_owned()))
                .or_default() += 1;
        }
        if status != reqwest::StatusCode::OK {
            return tally.fail(format!("{status} at {second} s"));
        }
        let Ok(cart) = response.json::<Value>().await else {
            return tally.fail(format!("an unreadable cart at {second} s"));
        };
        if add {
            *self.expected.entry(product.clone()).or_default() += 1;
        }
        let seen = lines_of(&cart);
        if shrank(&self.expected, &seen) {
            tally.lost.lock().unwrap().insert(self.index);
            tally.losses.lock().unwrap().push(second);
        }
        // From here on the shopper expects what it has (a lost cart is counted once).
        self.expected = seen;
    }
}

struct Run {
    mode: &'static Mode,
    tally: Arc<Tally>,
    events: Vec<(f64, String)>,
    /// Replicas added by the scale-out, and when they had joined.
    added: Vec<String>,
    joined_at: f64,
}

async fn run(mode: &'static Mode, settings: &Settings) -> Run {
    let mut options = FleetOptions::new(env!("CARGO_BIN_EXE_elastic-cart"));
    options.redis = mode.redis;
    options.persist = false;
    options.balance = mode.balance;
    let mut fleet = LoopbackFleet::start(options).await;
    let shop = fleet.url("");
    let products: Vec<String> = reqwest::get(format!("{shop}/api/products"))
        .await
        .expect("the catalog")
        .json::<Vec<Value>>()
        .await
        .expect("the catalog as JSON")
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let mut tasks = Vec::new();
    for index in 0..settings.users {
        // Shoppers differ: think times from 20 ms to 500 ms, log-uniform.
        let think = Duration::from_secs_f64(0.02 * 25f64.powf(rng.f64()));
        let mut user = User {
            index,
            client: client(index),
            think,
            expected: Lines::new(),
        };
        let (shop, products, tally, stop) =
            (shop.clone(), products.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                user.step(&shop, &products, n, start, &tally).await;
                n += 1;
                tokio::time::sleep(user.think).await;
            }
            // The final read: is the cart still all there?
            user.step(&shop, &products, 1, start, &tally).await;
        }));
    }

    let mut events = Vec::new();
    let at = async |second: u64| {
        tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
    };
    let now = || start.elapsed().as_secs_f64();
    at(KILL_AT).await;
    fleet.kill("replica-1").await;
    events.push((now(), "kill replica-1".to_owned()));
    at(RESTART_AT).await;
    fleet.start("replica-1").await;
    events.push((now(), "replica-1 restarted".to_owned()));
    at(SCALE_IN_AT).await;
    events.push((now(), "scale in to 2".to_owned()));
    fleet.scale(2).await;
    at(SCALE_OUT_AT).await;
    let before = fleet.replicas().await;
    events.push((now(), "scale out to 4".to_owned()));
    fleet.scale(4).await;
    let joined_at = now();
    let added: Vec<String> = fleet
        .replicas()
        .await
        .difference(&before)
        .cloned()
        .collect();
    at(END_AT).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a shopper task");
    }
    Run {
        mode,
        tally,
        events,
        added,
        joined_at,
    }
}

/// Requests per replica over seconds `[from, to)`.
fn served_between(
    served: &BTreeMap<(u64, String), u64>,
    from: u64,
    to: u64,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ((second, replica), n) in served {
        if (from..to).contains(second) {
            *counts.entry(replica.clone()).or_default() += n;
        }
    }
    counts
}

fn summary(run: &Run, users: usize) -> Value {
    let served = run.tally.served.lock().unwrap().clone();
    let steady = served_between(&served, STEADY_FROM, KILL_AT);
    let total: u64 = steady.values().sum();
    let shares: Vec<f64> = ["replica-0", "replica-1", "replica-2"]
        .iter()
        .map(|id| steady.get(*id).copied().unwrap_or(0) as f64 / total.max(1) as f64)
        .collect();
    let from = run.joined_at.ceil() as u64;
    let window = served_between(&served, from, from + JOINED_WINDOW);
    let window_total: u64 = window.values().sum();
    let added_shares: Vec<f64> = run
        .added
        .iter()
        .map(|id| window.get(id).copied().unwrap_or(0) as f64 / window_total.max(1) as f64)
        .collect();
    let new_share = added_shares.iter().sum::<f64>() / added_shares.len().max(1) as f64;
    let last = served.keys().map(|(s, _)| *s).max().unwrap_or(0);
    let replicas: BTreeSet<String> = served.keys().map(|(_, r)| r.clone()).collect();
    let series: BTreeMap<String, Vec<u64>> = replicas
        .iter()
        .map(|id| {
            let per_second = (0..=last)
                .map(|s| served.get(&(s, id.clone())).copied().unwrap_or(0))
                .collect();
            (id.clone(), per_second)
        })
        .collect();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    // Each loss, by the step of the run it followed.
    let mut losses_after: BTreeMap<&str, u64> =
        ["steady", "kill", "restart", "scale_in", "scale_out"]
            .iter()
            .map(|k| (*k, 0))
            .collect();
    for second in run.tally.losses.lock().unwrap().iter() {
        let step = match *second {
            s if s < KILL_AT => "steady",
            s if s < RESTART_AT => "kill",
            s if s < SCALE_IN_AT => "restart",
            s if s < SCALE_OUT_AT => "scale_in",
            _ => "scale_out",
        };
        *losses_after.entry(step).or_default() += 1;
    }
    json!({
        "losses_after": losses_after,
        "what": run.mode.what,
        "users": users,
        "requests": run.tally.requests.load(Ordering::Relaxed),
        "carts_lost": run.tally.lost.lock().unwrap().len(),
        "failed_requests": run.tally.failed.load(Ordering::Relaxed),
        "max_share": round(shares.iter().copied().fold(0.0, f64::max)),
        "min_share": round(shares.iter().copied().fold(1.0, f64::min)),
        "steady_shares": shares.iter().map(|s| round(*s)).collect::<Vec<_>>(),
        "new_replica_share": round(new_share),
        "new_replicas": run.added,
        "new_replica_shares": added_shares.iter().map(|s| round(*s)).collect::<Vec<_>>(),
        "first_failures": *run.tally.failures.lock().unwrap(),
        "events": run.events.iter().map(|(t, what)| json!({"at_s": round(*t), "what": what})).collect::<Vec<_>>(),
        "requests_per_sec": series,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn markdown(report: &Value, keys: &[&str]) -> String {
    let mut md = format!(
        "# Sticky sessions versus shared sessions\n\n{} shoppers on {}, seed {}. Each run: steady load from {STEADY_FROM} s, \
         replica-1 SIGKILLed at {KILL_AT} s and started again at {RESTART_AT} s, scale in 3 -> 2 at {SCALE_IN_AT} s, \
         scale out to 4 at {SCALE_OUT_AT} s, a final read of every cart at {END_AT} s.\n\n",
        report["users"],
        report["machine"].as_str().unwrap_or_default(),
        report["seed"]
    );
    md.push_str("| | ");
    md.push_str(&keys.join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---:|".repeat(keys.len()));
    md.push('\n');
    let rows: [(&str, &str); 8] = [
        ("how", "what"),
        ("shoppers", "users"),
        ("carts lost (vanished or shrank)", "carts_lost"),
        ("failed requests", "failed_requests"),
        ("largest share, steady (ideal 0.333)", "max_share"),
        ("smallest share, steady", "min_share"),
        (
            "share of each added replica, 10 s after joining (ideal 0.25)",
            "new_replica_share",
        ),
        (
            "lost-cart reads after: steady, kill, restart, scale in, scale out",
            "losses_after",
        ),
    ];
    for (label, field) in rows {
        md.push_str(&format!("| {label} |"));
        for key in keys {
            let value = &report[*key][field];
            match (value.as_str(), value.as_object()) {
                (Some(text), _) => md.push_str(&format!(" {text} |")),
                (_, Some(steps)) => {
                    let counts: Vec<String> =
                        ["steady", "kill", "restart", "scale_in", "scale_out"]
                            .iter()
                            .map(|step| steps.get(*step).map_or("0".to_owned(), Value::to_string))
                            .collect();
                    md.push_str(&format!(" {} |", counts.join(", ")));
                }
                _ => md.push_str(&format!(" {value} |")),
            }
        }
        md.push('\n');
    }
    md.push_str("\nRequests in all: ");
    md.push_str(
        &keys
            .iter()
            .map(|k| format!("{k} {}", report[*k]["requests"]))
            .collect::<Vec<_>>()
            .join(", "),
    );
    md.push_str(".\n");
    md
}

fn main() {
    let settings = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sticky-vs-shared");
    std::fs::create_dir_all(&out).unwrap();
    let mut report = json!({
        "users": settings.users,
        "seed": settings.seed,
        "machine": machine(),
        "timeline_s": {"steady_from": STEADY_FROM, "kill": KILL_AT, "restart": RESTART_AT,
                       "scale_in": SCALE_IN_AT, "scale_out": SCALE_OUT_AT, "end": END_AT},
    });
    let mut keys = Vec::new();
    for mode in &MODES {
        if settings
            .only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|k| k == mode.key))
        {
            continue;
        }
        eprintln!("{}: {} ...", mode.key, mode.what);
        let result = runtime.block_on(run(mode, &settings));
        let summary = summary(&result, settings.users);
        eprintln!(
            "{}: carts_lost {}, failed_requests {}, shares {} .. {}, new_replica_share {}",
            mode.key,
            summary["carts_lost"],
            summary["failed_requests"],
            summary["min_share"],
            summary["max_share"],
            summary["new_replica_share"]
        );
        report[mode.key] = summary;
        keys.push(mode.key);
    }
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    let md = markdown(&report, &keys);
    std::fs::write(out.join("report.md"), &md).unwrap();
    chart::draw(&out.join("chart.png"), &report, &keys);
    println!("{md}");
    println!(
        "Wrote {}/report.json, report.md and chart.png",
        out.display()
    );
}

//! The load generator: N virtual users, each with its own cookies, on a lean hyper
//! client in one thread (so it takes one core at most and its own cost can be reported).
//!
//! The shop mix: 80% `GET /cart` (the HTML page), 15% `POST /api/cart/items`, 5%
//! `GET /api/cart`. The change mixes send only `PUT /api/cart/items/{id}` (a change that
//! never hits a limit), each user to its own session or all users to one shared session,
//! to measure what a change costs without and with contention.

/// What the virtual users do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// 80% cart page, 15% adds, 5% cart JSON.
    Shop,
    /// Only changes, each user in its own session.
    OwnSessionChanges,
    /// Only changes, every user in one session (maximum contention).
    SharedSessionChanges,
}

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::SESSION_COOKIE;

/// The catalogue's products the virtual users add (ten lines of a cart).
pub(crate) const PRODUCTS: [&str; 10] = [
    "espresso-beans",
    "pour-over-kettle",
    "ceramic-mug",
    "hand-grinder",
    "paper-filters",
    "milk-frother",
    "travel-tumbler",
    "digital-scale",
    "cold-brew-jar",
    "tea-sampler",
];
/// Units a user adds before starting a new session, so no cart line reaches its limit.
const UNITS_PER_SESSION: u32 = 500;

/// What one load run measured (after warm-up).
#[derive(Debug, Default)]
pub struct Measured {
    /// Requests completed inside the measured window.
    pub requests: u64,
    /// Of those, the ones that failed (no answer, or not a 2xx/3xx).
    pub errors: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency of every counted request, in microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// Responses per `X-Served-By` value.
    pub served_by: BTreeMap<String, u64>,
    /// CPU time this process used per measured request, in microseconds.
    pub loadgen_cpu_us_per_req: f64,
}

/// Runs `users` virtual users against `base` (e.g. `http://127.0.0.1:8080`) for
/// `warmup`, then measures for `duration`. A request counts if it completes inside the
/// measured window; `snapshot` (CPU times, Redis statistics) runs when the window opens
/// and when it closes, so what it reads covers the same window. Returns what was measured
/// and the two snapshots.
pub fn run<T: Send + 'static>(
    base: &str,
    mix: Mix,
    users: usize,
    warmup: Duration,
    duration: Duration,
    snapshot: impl Fn() -> T + Send + Sync + 'static,
) -> (Measured, [T; 2]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_async(
        base.to_owned(),
        mix,
        users,
        warmup,
        duration,
        std::sync::Arc::new(snapshot),
    ))
}

async fn run_async<T: Send + 'static>(
    base: String,
    mix: Mix,
    users: usize,
    warmup: Duration,
    duration: Duration,
    snapshot: std::sync::Arc<impl Fn() -> T + Send + Sync + 'static>,
) -> (Measured, [T; 2]) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(users)
        .build(connector);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;

    let shared_cookie = match mix {
        Mix::SharedSessionChanges => Some(start_session(&client, &base).await),
        _ => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..users {
        let client = client.clone();
        let base = base.clone();
        let cookie = shared_cookie.clone();
        tasks.spawn(virtual_user(
            client,
            base,
            mix,
            cookie,
            user,
            measure_from,
            end,
        ));
    }
    // The snapshots run on blocking threads (redis-cli takes milliseconds) while the
    // virtual users go on.
    let take_snapshot = || {
        let snapshot = snapshot.clone();
        tokio::task::spawn_blocking(move || snapshot())
    };
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = process_cpu();
    let first = take_snapshot();
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = process_cpu();
    let last = take_snapshot();

    let mut total = Measured {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()),
        ..Measured::default()
    };
    while let Some(result) = tasks.join_next().await {
        let user = result.unwrap();
        total.requests += user.requests;
        total.errors += user.errors;
        total
            .latency_us
            .as_mut()
            .unwrap()
            .add(&user.latency_us)
            .unwrap();
        for (replica, n) in user.served_by {
            *total.served_by.entry(replica).or_default() += n;
        }
    }
    total.elapsed = duration;
    total.loadgen_cpu_us_per_req =
        (cpu_end - cpu_start).as_secs_f64() * 1e6 / total.requests.max(1) as f64;
    (total, [first.await.unwrap(), last.await.unwrap()])
}

struct UserTally {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    served_by: BTreeMap<String, u64>,
}

async fn virtual_user(
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    mix: Mix,
    mut cookie: Option<String>,
    user: usize,
    measure_from: Instant,
    end: Instant,
) -> UserTally {
    let mut tally = UserTally {
        requests: 0,
        errors: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        served_by: BTreeMap::new(),
    };
    let mut units = 0;
    // Every cookie the servers set (the session's, and a sticky balancer's route cookie).
    let mut jar: BTreeMap<String, String> = BTreeMap::new();
    // A small xorshift per user: reproducible mixes without a shared generator.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (user as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let in_window = |done: Instant| (measure_from..=end).contains(&done);
    let mut round = 0usize;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let roll = next() % 100;
        let request = if mix != Mix::Shop {
            let product = PRODUCTS[(next() % PRODUCTS.len() as u64) as usize];
            set(&base, product, 1 + (next() % 99) as u32, &cookie)
        } else if roll < 80 {
            get(&base, "/cart", &cookie)
        } else if roll < 95 {
            if units >= UNITS_PER_SESSION {
                jar.remove(SESSION_COOKIE);
                cookie = (!jar.is_empty()).then(|| cookie_header(&jar));
                units = 0;
            }
            units += 1;
            round += 1;
            let product = PRODUCTS[(user + round) % PRODUCTS.len()];
            add(&base, product, &cookie)
        } else {
            get(&base, "/api/cart", &cookie)
        };
        let sent = Instant::now();
        let outcome = client.request(request).await;
        let ok = match outcome {
            Ok(response) => {
                let status = response.status();
                // The shared session keeps its one cookie, whatever a response sets.
                if mix != Mix::SharedSessionChanges {
                    let mut changed = false;
                    for set in response.headers().get_all(hyper::header::SET_COOKIE) {
                        let pair = set.to_str().unwrap_or_default().split(';').next();
                        if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
                            jar.insert(name.trim().to_owned(), value.to_owned());
                            changed = true;
                        }
                    }
                    if changed {
                        cookie = Some(cookie_header(&jar));
                    }
                }
                let replica = response
                    .headers()
                    .get("x-served-by")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                let body = response.into_body().collect().await;
                if in_window(Instant::now()) {
                    *tally.served_by.entry(replica).or_default() += 1;
                }
                body.is_ok() && (status.is_success() || status.is_redirection())
            }
            Err(_) => false,
        };
        if in_window(Instant::now()) {
            tally.requests += 1;
            tally.errors += u64::from(!ok);
            let micros = sent.elapsed().as_micros() as u64;
            tally.latency_us.record(micros.max(1)).unwrap();
        }
    }
    tally
}

/// The `Cookie` header for every cookie in `jar`.
fn cookie_header(jar: &BTreeMap<String, String>) -> String {
    jar.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn get(base: &str, path: &str, cookie: &Option<String>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(format!("{base}{path}"));
    if let Some(cookie) = cookie {
        builder = builder.header(hyper::header::COOKIE, cookie);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

fn add(base: &str, product: &str, cookie: &Option<String>) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"product_id":"{product}","quantity":1}}"#);
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/api/cart/items"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        builder = builder.header(hyper::header::COOKIE, cookie);
    }
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

fn set(base: &str, product: &str, quantity: u32, cookie: &Option<String>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::PUT)
        .uri(format!("{base}/api/cart/items/{product}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        builder = builder.header(hyper::header::COOKIE, cookie);
    }
    let body = format!(r#"{{"quantity":{quantity}}}"#);
    builder.body(Full::new(Bytes::from(body))).unwrap()
}

/// Creates a session (its first change) and returns its cookie.
async fn start_session(client: &Client<HttpConnector, Full<Bytes>>, base: &str) -> String {
    let response = client
        .request(add(base, PRODUCTS[0], &None))
        .await
        .expect("the first change of the shared session");
    response
        .headers()
        .get(hyper::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

/// CPU time (user + system) this process used so far.
fn process_cpu() -> Duration {
    crate::cpu::process_cpu(std::process::id())
}

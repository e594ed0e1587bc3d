//! A flood of new sessions, as one bot would send it: every request is a visitor's first
//! change (`POST /api/cart/items` without a session, so each one that succeeds creates a
//! session in the store), as fast as the workers can send them, from many source
//! addresses of loopback in /24s of their own (`127.77.N.H`: Linux routes all of 127/8 to
//! the loopback device, so no address needs configuring). The workers of every other
//! address send no cookie; the others send a made-up session cookie, which a balancer
//! cannot tell from a real one. The tally counts the answers, and whether each refusal was a clear one
//! (429 with `Retry-After` and the JSON error `too_many_new_sessions`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::http::SESSION_COOKIE;

/// What to flood with.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// The API's `.../api/cart/items`.
    pub items_url: String,
    /// Source addresses; worker `w` sends from `addresses[w % len]`, with a made-up session
    /// cookie from the odd ones.
    pub addresses: Vec<IpAddr>,
    /// Requests in flight at once (each worker sends one after the other).
    pub workers: usize,
    /// How long to flood.
    pub duration: Duration,
}

/// `nets` /24s of `127.77.0.0/16`, `per_net` addresses in each.
pub fn flood_addresses(nets: u8, per_net: u8) -> Vec<IpAddr> {
    (0..nets)
        .flat_map(|net| {
            (1..=per_net).map(move |host| IpAddr::V4(Ipv4Addr::new(127, 77, net, host)))
        })
        .collect()
}

/// What the flood got.
#[derive(Debug, Default, Clone)]
pub struct FloodTally {
    /// Requests answered 200: sessions created.
    pub created: u64,
    /// Refused with a clear answer: 429, `Retry-After`, the JSON error
    /// `too_many_new_sessions`.
    pub refused: u64,
    /// 429s without `Retry-After` or without that body.
    pub unclear_refusals: u64,
    /// Any other status, by status.
    pub other: BTreeMap<u16, u64>,
    /// Requests without an answer (connection errors, timeouts).
    pub unanswered: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl FloodTally {
    /// Every request sent.
    pub fn sent(&self) -> u64 {
        self.created
            + self.refused
            + self.unclear_refusals
            + self.unanswered
            + self.other.values().sum::<u64>()
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: &FloodTally) {
        self.created += other.created;
        self.refused += other.refused;
        self.unclear_refusals += other.unclear_refusals;
        self.unanswered += other.unanswered;
        for (status, count) in &other.other {
            *self.other.entry(*status).or_default() += count;
        }
    }
}

/// Floods `options.items_url` for `options.duration` and tallies the answers.
pub async fn flood(options: &FloodOptions) -> FloodTally {
    assert!(
        !options.addresses.is_empty(),
        "a flood needs source addresses"
    );
    let started = Instant::now();
    let end = started + options.duration;
    let workers: Vec<_> = (0..options.workers)
        .map(|worker| {
            let address = worker % options.addresses.len();
            let client = reqwest::Client::builder()
                .local_address(options.addresses[address])
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client");
            let url = options.items_url.clone();
            tokio::spawn(flood_worker(client, url, address % 2 == 1, end))
        })
        .collect();
    let mut tally = FloodTally::default();
    for worker in workers {
        tally.add(&worker.await.expect("a flood worker"));
    }
    tally.elapsed = started.elapsed();
    tally
}

async fn flood_worker(
    client: reqwest::Client,
    url: String,
    forged_cookie: bool,
    end: Instant,
) -> FloodTally {
    let mut tally = FloodTally::default();
    while Instant::now() < end {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"product_id":"ceramic-mug","quantity":1}"#);
        if forged_cookie {
            let made_up: String = (0..22).map(|_| fastrand::alphanumeric()).collect();
            request = request.header("cookie", format!("{SESSION_COOKIE}={made_up}"));
        }
        let Ok(response) = request.send().await else {
            tally.unanswered += 1;
            continue;
        };
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let body = response.text().await.unwrap_or_default();
        match status {
            StatusCode::OK => tally.created += 1,
            StatusCode::TOO_MANY_REQUESTS
                if retry_after && body.contains(r#""code":"too_many_new_sessions""#) =>
            {
                tally.refused += 1
            }
            StatusCode::TOO_MANY_REQUESTS => tally.unclear_refusals += 1,
            other => *tally.other.entry(other.as_u16()).or_default() += 1,
        }
    }
    tally
}

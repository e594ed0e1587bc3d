//! The scenario's load: shoppers who keep reading their carts (and some who keep adding)
//! through the shop until stopped, and count what happened. Each shopper is its own
//! client with its own cookie jar, so its own session, like a separate browser.
//!
//! A reader's read counts as good only if it answers 200 with exactly the cart the reader
//! filled before; a writer adds one unit at a time, cycling through the products (so no
//! line reaches its 99-unit limit), and remembers the adds that answered 200: its cart must
//! end up holding exactly those.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::http::visitor;
use crate::poll_until;

/// A cart as product id -> units.
pub type Lines = BTreeMap<String, u64>;

/// One virtual shopper and the cart it should have.
#[derive(Debug, Clone)]
pub struct Shopper {
    /// For messages.
    pub name: String,
    /// Its own cookie jar, so its own session.
    pub client: reqwest::Client,
    /// What its cart holds, as far as acknowledged changes go.
    pub expected: Lines,
}

impl Shopper {
    /// A shopper without a session yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            client: visitor(),
            expected: Lines::new(),
        }
    }

    /// Adds `quantity` of `product` through `shop`; remembered on a 200, else why not (the
    /// status, replica and body, or the connection error).
    pub async fn add(&mut self, shop: &str, product: &str, quantity: u64) -> Result<(), String> {
        let response = self
            .client
            .post(format!("{shop}/api/cart/items"))
            .json(&json!({"product_id": product, "quantity": quantity}))
            .send()
            .await
            .map_err(|err| format!("no answer: {err}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            let by = response
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no replica")
                .to_owned();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{status} from {by}: {body}"));
        }
        *self.expected.entry(product.to_owned()).or_default() += quantity;
        Ok(())
    }

    /// Reads the cart through `shop`: the replica that answered and the lines, or why not.
    pub async fn read(&self, shop: &str) -> Result<(String, Lines, Value), String> {
        let response = self
            .client
            .get(format!("{shop}/api/cart"))
            .send()
            .await
            .map_err(|err| format!("no answer: {err}"))?;
        let status = response.status();
        let served_by = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response.json().await.unwrap_or_default();
        if status != StatusCode::OK {
            return Err(format!("{status} from {served_by}: {body}"));
        }
        Ok((served_by, lines_of(&body), body))
    }

    /// `None` if the cart read through `shop` is what the shopper expects, else why not.
    pub async fn problem(&self, shop: &str) -> Option<String> {
        match self.read(shop).await {
            Ok((_, lines, _)) if lines == self.expected => None,
            Ok((_, lines, _)) => Some(format!(
                "{}: cart {lines:?}, expected {:?}",
                self.name, self.expected
            )),
            Err(why) => Some(format!("{}: {why}", self.name)),
        }
    }
}

/// The lines of a cart as the JSON API returns it.
pub fn lines_of(cart: &Value) -> Lines {
    cart["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            Some((
                item["product_id"].as_str()?.to_owned(),
                item["quantity"].as_u64()?,
            ))
        })
        .collect()
}

/// Successes and failures of one kind of request.
#[derive(Debug, Default)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first failures, for messages.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn succeed(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() < 5 {
            failures.push(why);
        }
    }

    /// Requests that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first few failures, joined.
    pub fn failures(&self) -> String {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ")
    }
}

/// Readers and writers running against a shop until [`Shoppers::stop`].
#[derive(Debug)]
pub struct Shoppers {
    running: Arc<AtomicBool>,
    /// Reads (of readers' carts).
    pub reads: Arc<Tally>,
    /// Adds (of writers).
    pub writes: Arc<Tally>,
    /// Good reads per replica (`X-Served-By`).
    served: Arc<Mutex<BTreeMap<String, u64>>>,
    tasks: Vec<JoinHandle<Shopper>>,
}

impl Shoppers {
    /// Starts `readers` reading and `writers` adding (cycling through `products`) at a
    /// steady pace (the point is continuity, not a flood).
    pub fn start(
        shop: &str,
        readers: Vec<Shopper>,
        writers: Vec<Shopper>,
        products: &[String],
    ) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let reads = Arc::new(Tally::default());
        let writes = Arc::new(Tally::default());
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for reader in readers {
            let (shop, running, reads, served) = (
                shop.to_owned(),
                running.clone(),
                reads.clone(),
                served.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    match reader.read(&shop).await {
                        Ok((by, lines, _)) if lines == reader.expected => {
                            reads.succeed();
                            let mut served = served.lock().unwrap_or_else(|e| e.into_inner());
                            *served.entry(by).or_default() += 1;
                        }
                        Ok((by, lines, _)) => reads.fail(format!(
                            "{}: cart {lines:?} from {by}, expected {:?}",
                            reader.name, reader.expected
                        )),
                        Err(why) => reads.fail(format!("{}: {why}", reader.name)),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                reader
            }));
        }
        for (index, mut writer) in writers.into_iter().enumerate() {
            let (shop, running, writes) = (shop.to_owned(), running.clone(), writes.clone());
            let products = products.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut n = index;
                while running.load(Ordering::Relaxed) {
                    let product = &products[n % products.len()];
                    n += 1;
                    match writer.add(&shop, product, 1).await {
                        Ok(()) => writes.succeed(),
                        Err(why) => writes.fail(format!("{} +1 {product}: {why}", writer.name)),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                writer
            }));
        }
        Self {
            running,
            reads,
            writes,
            served,
            tasks,
        }
    }

    /// Waits until `reads` more good reads and `writes` more good adds have happened than
    /// when this was called; false if they did not within [`crate::PATIENCE`].
    pub async fn wait_for_more(&self, reads: u64, writes: u64) -> bool {
        let reads = self.reads.ok() + reads;
        let writes = self.writes.ok() + writes;
        poll_until(crate::PATIENCE, async || {
            self.reads.ok() >= reads && self.writes.ok() >= writes
        })
        .await
    }

    /// Good reads per replica so far.
    pub fn served(&self) -> BTreeMap<String, u64> {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The replicas that served good reads since `before` (an earlier [`Self::served`]).
    pub fn served_since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        self.served()
            .into_iter()
            .map(|(id, n)| (n - before.get(&id).copied().unwrap_or(0), id))
            .filter(|(n, _)| *n > 0)
            .map(|(n, id)| (id, n))
            .collect()
    }

    /// Stops every shopper and hands them back (writers with what they added).
    pub async fn stop(self) -> Vec<Shopper> {
        self.running.store(false, Ordering::Relaxed);
        let mut shoppers = Vec::new();
        for task in self.tasks {
            shoppers.push(task.await.expect("a shopper task"));
        }
        shoppers
    }
}

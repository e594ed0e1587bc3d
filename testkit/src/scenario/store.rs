//! The steps of the store (step 7): a restart that keeps its data, and a replicated store
//! losing its primary under keyed writers, after which every replica must serve changes
//! again and no acknowledged change is lost or applied twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checks::Report;
use crate::checks::timed;
use crate::poll_until;
use crate::shoppers::Shopper;

use super::{Fleet, Scenario};

impl Scenario {
    pub(super) async fn store_restart(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 6: restart the session store",
            "carts are durable (Redis keeps an append-only file), and the replicas reconnect \
             by themselves",
        );
        fleet.restart_store().await;
        let (started, limit) = (Instant::now(), Duration::from_secs(30));
        let probe = &self.readers[0];
        let answered = poll_until(limit, async || probe.read(&self.shop).await.is_ok()).await;
        let what = "the shop answers again";
        report.check(answered, timed(what, started, "the restart", limit), "");
        self.check_carts(report, "after the store restart").await;
    }

    pub(super) async fn store_failover(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 7: kill the session store's primary under writes",
            "a replica takes over and the replicas find it by themselves; every change \
             answered before, during and after the kill is in its cart (each was confirmed by \
             a replica), and none is applied twice",
        );
        // Carts filled before the kill, read again after it.
        for i in 0..4 {
            let mut reader = Shopper::new(&format!("failover-reader{i}"));
            let product = &self.products[i % self.products.len()];
            let added = reader.add(&self.shop, product, 2).await;
            report.check(
                added.is_ok(),
                format!("{} filled", reader.name),
                format!("{added:?}"),
            );
            self.readers.push(reader);
        }
        let load = KeyedWriters::start(&self.shop, &self.products, 4);
        let steady = poll_until(crate::PATIENCE, async || load.acked() >= 20).await;
        report.check(steady, "changes acknowledged before the kill", "");
        let killed_at = Instant::now();
        fleet.kill_store_primary().await;
        let acked = load.acked();
        let limit = Duration::from_secs(30);
        let resumed = poll_until(limit, async || {
            load.acked_since(killed_at) && load.acked() >= acked + 50
        })
        .await;
        report.check(
            resumed,
            timed("changes acknowledged again", killed_at, "the kill", limit),
            "",
        );
        report.note(format!(
            "longest time without an acknowledged change: {:.1} s",
            load.longest_gap().as_secs_f64()
        ));
        // Not just the fleet as a whole: every replica, each of which must find the new
        // primary by itself (a replica left on the dead primary's silent connection would
        // answer 503 while the others carry the shop).
        let ids = fleet.replicas().await;
        let limit = Duration::from_secs(30);
        let (all, seen) = self
            .wait_until_changes_served_by(&ids, killed_at, limit)
            .await;
        report.check(
            all,
            timed(
                "every replica answers changes again",
                killed_at,
                "the kill",
                limit,
            ),
            format!("replicas {ids:?}, answered changes: {seen:?}"),
        );
        let writers = load.stop().await;
        let resends: u64 = writers.iter().map(|w| w.resends).sum();
        let acknowledged: usize = writers.iter().map(|w| w.acknowledged).sum();
        report.note(format!(
            "{acknowledged} changes acknowledged, {resends} resent with their Idempotency-Key"
        ));
        report.check(
            writers.iter().all(|w| w.abandoned == 0),
            "every change was answered in the end (resent until a 200)",
            "",
        );
        for writer in writers {
            self.writers.push(writer.shopper);
        }
        self.check_carts(report, "after the failover").await;
    }
}

/// One writer of step 7: its shopper (whose `expected` holds the acknowledged adds) and
/// what its sends took.
#[derive(Debug)]
struct KeyedWriter {
    shopper: Shopper,
    acknowledged: usize,
    resends: u64,
    abandoned: u64,
}

/// Writers that add one unit at a time, each add with an `Idempotency-Key` and resent with
/// it on a 5xx or no answer until it is answered, as docs/api.md tells clients to do.
struct KeyedWriters {
    running: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<KeyedWriter>>,
}

impl KeyedWriters {
    fn start(shop: &str, products: &[String], n: usize) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..n)
            .map(|i| {
                let (shop, products) = (shop.to_owned(), products.to_vec());
                let (running, acks) = (running.clone(), acks.clone());
                tokio::spawn(async move {
                    let mut writer = KeyedWriter {
                        shopper: Shopper::new(&format!("failover-writer{i}")),
                        acknowledged: 0,
                        resends: 0,
                        abandoned: 0,
                    };
                    let mut n = i;
                    while running.load(Ordering::Relaxed) {
                        let product = products[n % products.len()].clone();
                        let key = format!("{}-{n}", writer.shopper.name);
                        n += 1;
                        let give_up = Instant::now() + Duration::from_secs(30);
                        loop {
                            let answer = writer
                                .shopper
                                .client
                                .post(format!("{shop}/api/cart/items"))
                                .header("Idempotency-Key", &key)
                                .json(&serde_json::json!({"product_id": product, "quantity": 1}))
                                .send()
                                .await;
                            let status = answer.as_ref().map(|r| r.status().as_u16()).ok();
                            if status == Some(200) {
                                *writer.shopper.expected.entry(product.clone()).or_default() += 1;
                                writer.acknowledged += 1;
                                acks.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(Instant::now());
                                break;
                            }
                            if status.is_some_and(|s| (400..500).contains(&s) && s != 408) {
                                break;
                            }
                            if Instant::now() > give_up {
                                writer.abandoned += 1;
                                break;
                            }
                            writer.resends += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    writer
                })
            })
            .collect();
        Self {
            running,
            acks,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn acked_since(&self, since: Instant) -> bool {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.last().is_some_and(|last| *last > since)
    }

    /// The longest time between two acknowledged changes of any writer.
    fn longest_gap(&self) -> Duration {
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        acks.sort_unstable();
        acks.windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }

    async fn stop(self) -> Vec<KeyedWriter> {
        self.running.store(false, Ordering::Relaxed);
        let mut writers = Vec::new();
        for task in self.tasks {
            writers.push(task.await.expect("a writer task"));
        }
        writers
    }
}

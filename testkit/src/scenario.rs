//! The elasticity scenario, written once: what must hold when replicas are killed,
//! drained, restarted and scaled under load, when the store restarts, and when a
//! replicated store loses its primary. It runs against
//! anything that implements [`Fleet`]: the loopback fleet of the integration tests
//! ([`crate::LoopbackFleet`]), docker compose ([`crate::compose::ComposeFleet`], run by
//! `scripts/compose-e2e.sh`) and Docker Swarm ([`crate::swarm::SwarmFleet`], run by
//! `scripts/swarm-e2e.sh`). It waits on observable counts (good reads, good adds, replicas
//! seen), never on fixed sleeps.
//!
//! Every check prints `PASS` or `FAIL` with what it proves; a failed check does not stop
//! the scenario, so one run shows every problem. The [`Report`] ends with the line
//! "N passed, M failed".
//!
//! The steps live by group: [`replicas`] (kill, drain, restart, scale), [`store`] (restart
//! and failover of the store) and [`rollout`] (the rolling update); [`shoppers`] is the
//! checking load and [`checks`] the list of verdicts.

pub mod checks;
mod replicas;
mod rollout;
pub mod shoppers;
mod store;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub use crate::checks::Report;
use crate::poll_until;
use crate::shoppers::{Shopper, Shoppers};

/// What a fleet can be asked to do. Replica ids are the names replicas answer with in
/// `X-Served-By`.
#[allow(async_fn_in_trait)]
pub trait Fleet {
    /// The shop's base URL (the balancer), e.g. `http://127.0.0.1:8080`.
    fn shop_url(&self) -> String;
    /// The ids of the replicas running now.
    async fn replicas(&mut self) -> BTreeSet<String>;
    /// Kills a replica without warning (SIGKILL).
    async fn kill(&mut self, id: &str);
    /// Stops a replica gracefully (SIGTERM: it drains) and returns once it has exited; an
    /// error says how it ended if not cleanly.
    async fn stop(&mut self, id: &str) -> Result<(), String>;
    /// Starts a killed or stopped replica again, under the same id.
    async fn start(&mut self, id: &str);
    /// Adds or removes replicas (removed ones stop gracefully) until `n` run.
    async fn scale(&mut self, n: usize);
    /// Restarts the session store on its persisted data.
    async fn restart_store(&mut self);
    /// SIGKILLs the primary of a replicated store (Sentinel, Cluster); it may come back
    /// later as a replica. Panics on a store without replicas.
    async fn kill_store_primary(&mut self);
    /// Replaces every replica, one at a time, by one of the app's next version (an
    /// orchestrator's rolling update) and returns once it is done: that version, or why the
    /// update did not complete. Only orchestrated fleets have a next version.
    async fn roll_out(&mut self) -> Result<String, String> {
        Err("this fleet has no next version to roll out".to_owned())
    }
}

/// Who brings replicas back: the scenario itself, or an orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Nothing restarts a replica by itself (loopback, compose after `docker kill`): steps
    /// 1 to 5, where the scenario starts what it killed.
    Manual,
    /// An orchestrator (Swarm) keeps the asked-for number of replicas running and rolls out
    /// new versions: steps 1, 2 (the killed replica is replaced), 5 and 8 (a rolling update
    /// under reads and writes, which is where graceful stops happen there).
    Orchestrated,
}

/// Which steps to run: by default steps 1 to 6, which every fleet on one persisted Redis
/// runs; a fleet on a replicated store adds step 7.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    /// The replica steps, as the fleet's [`Lifecycle`] allows: 1 to 5 (round robin,
    /// SIGKILL, SIGTERM with writes, restart, scale), or 1, 2, 5 and 8 (rolling update).
    pub replicas: Option<Lifecycle>,
    /// Step 6: restart the store and find every cart again (needs a persisted store).
    pub store_restart: bool,
    /// Step 7: kill the store's primary under writes (needs a replicated store whose
    /// changes a replica confirms, `REDIS_WAIT_REPLICAS` >= 1).
    pub store_failover: bool,
}

impl Default for Steps {
    fn default() -> Self {
        Self {
            replicas: Some(Lifecycle::Manual),
            store_restart: true,
            store_failover: false,
        }
    }
}

/// Runs the scenario against `fleet`, which must start with three replicas.
pub async fn run(fleet: &mut impl Fleet, steps: Steps) -> Report {
    let mut state = Scenario::new(fleet.shop_url()).await;
    let mut report = Report::default();
    match steps.replicas {
        Some(Lifecycle::Manual) => {
            state.round_robin(fleet, &mut report).await;
            state.sigkill(fleet, &mut report).await;
            state.sigterm_with_writes(fleet, &mut report).await;
            state.restart(fleet, &mut report).await;
            state.scale(fleet, &mut report).await;
        }
        Some(Lifecycle::Orchestrated) => {
            state.round_robin(fleet, &mut report).await;
            state.sigkill_replaced(fleet, &mut report).await;
            state.scale(fleet, &mut report).await;
            state.rolling_update(fleet, &mut report).await;
        }
        None => {}
    }
    if steps.store_restart {
        state.store_restart(fleet, &mut report).await;
    }
    if steps.store_failover {
        state.store_failover(fleet, &mut report).await;
    }
    report.print(String::new());
    report
}

/// What the steps share: the shop, its products, the shoppers and what was killed.
struct Scenario {
    shop: String,
    products: Vec<String>,
    /// Readers with filled carts; they keep reading through every later step.
    readers: Vec<Shopper>,
    /// Writers of step 3, whose carts must hold exactly their acknowledged adds.
    writers: Vec<Shopper>,
    killed: Option<String>,
}

impl Scenario {
    async fn new(shop: String) -> Self {
        let products: Vec<String> =
            crate::http::get_json(&crate::http::bare_client(), &format!("{shop}/api/products"))
                .await
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|product| Some(product["id"].as_str()?.to_owned()))
                .collect();
        assert!(!products.is_empty(), "the shop lists no products");
        Self {
            shop,
            products,
            readers: Vec::new(),
            writers: Vec::new(),
            killed: None,
        }
    }

    /// The readers, reading continuously until the load is stopped (they come back then).
    fn readers_read(&mut self) -> Shoppers {
        let readers = std::mem::take(&mut self.readers);
        Shoppers::start(&self.shop, readers, Vec::new(), &[])
    }

    /// Every cart is still what its shopper expects.
    async fn check_carts(&self, report: &mut Report, what: &str) {
        let mut problems = Vec::new();
        for shopper in self.readers.iter().chain(&self.writers) {
            problems.extend(shopper.problem(&self.shop).await);
        }
        let n = self.readers.len() + self.writers.len();
        report.check(
            problems.is_empty(),
            format!("{what}: all {n} carts intact"),
            problems.join("; "),
        );
    }

    /// Waits for the load to make progress; a load that stalls is a failed check (and the
    /// scenario goes on), not a panic that would lose the report.
    async fn progress(report: &mut Report, load: &Shoppers, reads: u64, writes: u64) {
        if !load.wait_for_more(reads, writes).await {
            report.check(
                false,
                format!("{reads} more good reads and {writes} more good adds within the patience"),
                format!(
                    "reads: {}; adds: {}",
                    load.reads.failures(),
                    load.writes.failures()
                ),
            );
        }
    }

    fn check_load(report: &mut Report, load: &Shoppers, what: &str) {
        let (ok, failed) = (load.reads.ok(), load.reads.failed());
        report.check(
            failed == 0,
            format!("{what}: {ok} reads, all 200 with the cart unchanged"),
            format!("{failed} failed: {}", load.reads.failures()),
        );
    }

    /// Adds through the balancer (a probe shopper of its own, each add with a key of its
    /// own) until every one of `ids` has answered a change 200, or `limit` since `since`
    /// passes; whether they all did, and which did.
    async fn wait_until_changes_served_by(
        &self,
        ids: &BTreeSet<String>,
        since: Instant,
        limit: Duration,
    ) -> (bool, BTreeSet<String>) {
        let probe = Shopper::new("change-probe");
        let mut seen = BTreeSet::new();
        let mut n = 0usize;
        let left = limit.saturating_sub(since.elapsed());
        let all = poll_until(left, async || {
            let product = &self.products[n % self.products.len()];
            n += 1;
            let answer = probe
                .client
                .post(format!("{}/api/cart/items", self.shop))
                .header("Idempotency-Key", format!("change-probe-{n}"))
                .json(&serde_json::json!({"product_id": product, "quantity": 1}))
                .send()
                .await;
            if let Ok(response) = answer
                && response.status() == reqwest::StatusCode::OK
                && let Some(by) = response.headers().get("x-served-by")
            {
                seen.insert(by.to_str().unwrap_or_default().to_owned());
            }
            ids.is_subset(&seen)
        })
        .await;
        (all, seen)
    }

    /// Reads (as a fresh visitor) until every one of `ids` has answered, or `limit` passes.
    async fn wait_until_served_by(&self, ids: &BTreeSet<String>, limit: Duration) -> bool {
        let probe = Shopper::new("probe");
        let mut seen = BTreeSet::new();
        poll_until(limit, async || {
            if let Ok((by, _, _)) = probe.read(&self.shop).await {
                seen.insert(by);
            }
            ids.is_subset(&seen)
        })
        .await
    }
}

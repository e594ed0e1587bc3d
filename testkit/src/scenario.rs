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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::checks::Report;
use crate::checks::timed;
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

    async fn round_robin(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 1: one session, 60 reads through the balancer",
            "round robin without stickiness: any replica serves any request of one session, \
             and the load spreads evenly",
        );
        let running = fleet.replicas().await;
        report.check(
            running.len() == 3,
            format!("3 replicas run: {running:?}"),
            "",
        );
        let mut shopper = Shopper::new("shopper");
        let mut ok = true;
        for (product, quantity) in [("ceramic-mug", 1), ("ceramic-mug", 1), ("tea-sampler", 3)] {
            ok &= shopper.add(&self.shop, product, quantity).await.is_ok();
        }
        report.check(ok, "added ceramic-mug x2 and tea-sampler x3", "");
        let mut served: BTreeMap<String, u32> = BTreeMap::new();
        let mut problems = Vec::new();
        for _ in 0..60 {
            match shopper.read(&self.shop).await {
                Ok((by, lines, body))
                    if lines == shopper.expected && body["served_by"] == by.as_str() =>
                {
                    *served.entry(by).or_default() += 1;
                }
                Ok((by, lines, body)) => {
                    problems.push(format!("{by}: {lines:?} served_by={}", body["served_by"]))
                }
                Err(why) => problems.push(why),
            }
        }
        report.note(format!("X-Served-By counts: {served:?}"));
        report.check(
            problems.is_empty(),
            "all 60 reads answered 200 with the same cart, served_by equal to X-Served-By",
            problems.join("; "),
        );
        let ids: BTreeSet<String> = served.keys().cloned().collect();
        report.check(
            ids == running,
            "every running replica served this one session",
            "",
        );
        report.check(
            served.len() == 3 && served.values().all(|n| (10..=30).contains(n)),
            "each replica served about a third (10 to 30 of 60)",
            format!("{served:?}"),
        );
        self.readers.push(shopper);
        for i in 0..4 {
            let mut reader = Shopper::new(&format!("reader{i}"));
            let product = self.products[i % self.products.len()].clone();
            let _ = reader.add(&self.shop, &product, i as u64 + 1).await;
            self.readers.push(reader);
        }
        self.check_carts(report, "4 more shoppers filled their carts")
            .await;
    }

    async fn sigkill(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 2: SIGKILL one replica under continuous reads",
            "a replica can die without warning: the balancer moves its requests to the others \
             and no cart lived in it",
        );
        let victim = fleet
            .replicas()
            .await
            .into_iter()
            .next()
            .expect("a replica to kill");
        let load = self.readers_read();
        Self::progress(report, &load, 50, 0).await;
        report.note(format!("killing {victim} while 5 shoppers read"));
        fleet.kill(&victim).await;
        let after_kill = load.served();
        Self::progress(report, &load, 150, 0).await;
        let served = load.served_since(&after_kill);
        Self::check_load(report, &load, "reads during and after the kill");
        report.note(format!("served after the kill: {served:?}"));
        report.check(
            !served.contains_key(&victim) && served.len() == 2,
            "after the kill, only the 2 survivors serve",
            format!("{served:?}"),
        );
        self.readers = load.stop().await;
        self.killed = Some(victim);
        self.check_carts(report, "after the kill").await;
    }

    async fn sigterm_with_writes(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 3: SIGTERM another replica under continuous reads and writes",
            "a replica taken out of service drains, so not one read or write fails, and no \
             write is lost or doubled",
        );
        let running = fleet.replicas().await;
        let victim = running.iter().next().expect("a replica to stop").clone();
        let writers = (0..3)
            .map(|i| Shopper::new(&format!("writer{i}")))
            .collect();
        let load = Shoppers::start(
            &self.shop,
            std::mem::take(&mut self.readers),
            writers,
            &self.products,
        );
        Self::progress(report, &load, 0, 20).await;
        report.note(format!("stopping {victim} while 5 shoppers read and 3 add"));
        let started = Instant::now();
        let stopped = fleet.stop(&victim).await;
        report.note(format!(
            "the stop took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        report.check(
            stopped.is_ok(),
            format!("{victim} drained and exited cleanly"),
            stopped.err().unwrap_or_default(),
        );
        Self::progress(report, &load, 50, 30).await;
        Self::check_load(report, &load, "reads during the stop");
        let (ok, failed) = (load.writes.ok(), load.writes.failed());
        report.check(
            failed == 0,
            format!("adds during the stop: {ok}, all 200"),
            format!("{failed} failed: {}", load.writes.failures()),
        );
        let shoppers = load.stop().await;
        let (writers, readers) = shoppers
            .into_iter()
            .partition(|s| s.name.starts_with("writer"));
        self.readers = readers;
        self.writers = writers;
        self.check_carts(
            report,
            "each writer's cart holds exactly its acknowledged adds",
        )
        .await;
        let left = fleet.replicas().await;
        report.check(
            left.len() == 1,
            format!("one replica left running: {left:?}"),
            "",
        );
    }

    async fn restart(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 4: start the killed replica again",
            "a returning replica is found by the balancer and takes traffic within seconds, \
             without reloading anything by hand",
        );
        let Some(victim) = self.killed.clone() else {
            report.check(false, "step 2 named a killed replica", "");
            return;
        };
        fleet.start(&victim).await;
        let (started, limit) = (Instant::now(), Duration::from_secs(15));
        let seen = self
            .wait_until_served_by(&[victim.clone()].into(), limit)
            .await;
        let what = format!("{victim} serves again");
        report.check(seen, timed(&what, started, "its start", limit), "");
        self.check_carts(report, "after the restart").await;
    }

    async fn scale(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 5: scale to 5 replicas, then to 2, under continuous reads",
            "capacity follows demand: new replicas take traffic within seconds, and removing \
             replicas (a graceful stop) costs no request and no cart",
        );
        fleet.scale(5).await;
        let (scaled, limit) = (Instant::now(), Duration::from_secs(10));
        let want = fleet.replicas().await;
        report.check(want.len() == 5, format!("5 replicas run: {want:?}"), "");
        let seen = self.wait_until_served_by(&want, limit).await;
        report.check(
            seen,
            timed("all 5 serve", scaled, "the scale-out", limit),
            "",
        );
        let load = self.readers_read();
        Self::progress(report, &load, 50, 0).await;
        fleet.scale(2).await;
        let left = fleet.replicas().await;
        let after = load.served();
        Self::progress(report, &load, 150, 0).await;
        let served = load.served_since(&after);
        Self::check_load(report, &load, "reads during the scale-in");
        report.note(format!("served after the scale-in: {served:?}"));
        report.check(
            left.len() == 2 && served.keys().all(|id| left.contains(id)),
            format!("2 replicas left, and only they serve: {left:?}"),
            format!("{served:?}"),
        );
        self.readers = load.stop().await;
        self.check_carts(report, "after scaling").await;
    }

    async fn sigkill_replaced(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 2: SIGKILL one replica under continuous reads; the orchestrator replaces it",
            "a replica can die without warning: the balancer moves its requests to the others, \
             no cart lived in it, and the orchestrator starts a new one that takes traffic by \
             itself",
        );
        let victim = fleet
            .replicas()
            .await
            .into_iter()
            .next()
            .expect("a replica to kill");
        let load = self.readers_read();
        Self::progress(report, &load, 50, 0).await;
        report.note(format!("killing {victim} while 5 shoppers read"));
        let killed = Instant::now();
        fleet.kill(&victim).await;
        let after_kill = load.served();
        Self::progress(report, &load, 150, 0).await;
        let limit = Duration::from_secs(60);
        let replaced = poll_until(limit, async || {
            load.served_since(&after_kill).contains_key(&victim)
        })
        .await;
        let what = format!("a new {victim} serves again");
        report.check(replaced, timed(&what, killed, "the kill", limit), "");
        let running = fleet.replicas().await;
        report.check(
            running.len() == 3,
            format!("3 replicas run again: {running:?}"),
            "",
        );
        Self::check_load(report, &load, "reads during the kill and the replacement");
        report.note(format!("served in all: {:?}", load.served()));
        self.readers = load.stop().await;
        self.check_carts(report, "after the kill").await;
    }

    async fn rolling_update(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
        report.step(
            "Step 8: a rolling update to the next version under reads and writes",
            "the orchestrator replaces the replicas one by one (start the new, drain the old): \
             not one read or write fails, no write is lost or doubled, and in the end every \
             replica runs the new version",
        );
        let before = fleet.replicas().await;
        let versions = VersionProbe::start(&self.shop);
        let writers = (0..3)
            .map(|i| Shopper::new(&format!("update-writer{i}")))
            .collect();
        let load = Shoppers::start(
            &self.shop,
            std::mem::take(&mut self.readers),
            writers,
            &self.products,
        );
        Self::progress(report, &load, 50, 20).await;
        // The version the fleet runs before: the one real version the probe saw.
        let old: BTreeMap<String, u64> = versions
            .seen()
            .into_iter()
            .filter(|(version, _)| !VersionProbe::is_failure(version))
            .collect();
        report.note(format!(
            "before: replicas {before:?}, versions {old:?}; rolling out while 5 shoppers read \
             and 3 add"
        ));
        let started = Instant::now();
        let rolled = fleet.roll_out().await;
        report.note(format!(
            "the update took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        let new = rolled.clone().unwrap_or_default();
        report.check(
            rolled.is_ok() && old.len() == 1 && !old.contains_key(&new),
            format!("the update to version {new} completed (not rolled back)"),
            format!("{rolled:?}, versions before: {old:?}"),
        );
        Self::progress(report, &load, 100, 30).await;
        let seen = versions.stop().await;
        report.note(format!("answers of /healthz per version: {seen:?}"));
        let probes: u64 = seen.values().sum();
        report.check(
            seen.keys().any(|v| old.contains_key(v))
                && seen.contains_key(&new)
                && seen.keys().all(|v| old.contains_key(v) || *v == new),
            format!(
                "{probes} /healthz asked during the update, each answered 200 by the old \
                 version or the new one, and both answered"
            ),
            format!("{seen:?}"),
        );
        Self::check_load(report, &load, "reads during the update");
        let (ok, failed) = (load.writes.ok(), load.writes.failed());
        report.check(
            failed == 0,
            format!("adds during the update: {ok}, all 200"),
            format!("{failed} failed: {}", load.writes.failures()),
        );
        let shoppers = load.stop().await;
        let (writers, readers): (Vec<_>, Vec<_>) = shoppers
            .into_iter()
            .partition(|s| s.name.starts_with("update-writer"));
        self.readers = readers;
        self.writers.extend(writers);
        self.check_carts(report, "each cart holds exactly its acknowledged adds")
            .await;
        let after = fleet.replicas().await;
        let probe = VersionProbe::start(&self.shop);
        let answered = poll_until(crate::PATIENCE, async || {
            probe.seen().values().sum::<u64>() >= 30
        })
        .await;
        let now = probe.stop().await;
        report.check(
            answered && now.keys().all(|v| *v == new) && after.len() == before.len(),
            format!(
                "{} replicas run, and all answer with version {new}",
                after.len()
            ),
            format!("replicas {after:?}, versions {now:?}"),
        );
    }

    async fn store_restart(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

    async fn store_failover(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

/// Asks `/healthz` through the balancer, again and again until stopped, and counts the
/// answers per version (the replicas' `APP_VERSION`).
struct VersionProbe {
    running: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl VersionProbe {
    /// What [`VersionProbe::seen`] counts failed probes under.
    const FAILURES: [&'static str; 4] = ["no answer", "not 200", "not an object", "none"];

    fn start(shop: &str) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let url = format!("{shop}/healthz");
        let task = tokio::spawn({
            let (running, seen) = (running.clone(), seen.clone());
            async move {
                let client = crate::http::bare_client();
                while running.load(Ordering::Relaxed) {
                    let answer = async {
                        let response = client.get(&url).send().await?;
                        let ok = response.status().is_success();
                        Ok::<_, reqwest::Error>((ok, response.json().await?))
                    };
                    let version = match answer.await {
                        Ok((false, _)) => "not 200".to_owned(),
                        Ok((true, serde_json::Value::Object(body))) => body
                            .get("version")
                            .and_then(|v| v.as_str())
                            .unwrap_or("none")
                            .to_owned(),
                        Ok(_) => "not an object".to_owned(),
                        Err(_) => "no answer".to_owned(),
                    };
                    *seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(version)
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            running,
            seen,
            task,
        }
    }

    fn seen(&self) -> BTreeMap<String, u64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a key of [`VersionProbe::seen`] counts probes that failed, not a version.
    fn is_failure(key: &str) -> bool {
        Self::FAILURES.contains(&key)
    }

    async fn stop(self) -> BTreeMap<String, u64> {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.task.await;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.clone()
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
/// it on a 5xx or no answer until it is answered, as README tells clients to do.
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

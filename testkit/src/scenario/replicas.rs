//! The steps that kill, drain, restart and scale replicas under load (steps 1 to 6): no
//! read or acknowledged add may be lost, and the balancer must notice each change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::checks::Report;
use crate::checks::timed;
use crate::poll_until;
use crate::shoppers::{Shopper, Shoppers};

use super::{Fleet, Scenario};

impl Scenario {
    pub(super) async fn round_robin(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

    pub(super) async fn sigkill(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

    pub(super) async fn sigterm_with_writes(
        &mut self,
        fleet: &mut impl Fleet,
        report: &mut Report,
    ) {
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

    pub(super) async fn restart(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

    pub(super) async fn scale(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

    pub(super) async fn sigkill_replaced(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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
}

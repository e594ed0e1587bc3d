//! The rolling update (step 8): a second version replaces the first one replica at a time
//! under load, and the balancer serves both versions side by side, then only the new one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checks::Report;
use crate::poll_until;
use crate::shoppers::{Shopper, Shoppers};

use super::{Fleet, Scenario};

impl Scenario {
    pub(super) async fn rolling_update(&mut self, fleet: &mut impl Fleet, report: &mut Report) {
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

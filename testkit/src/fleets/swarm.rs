//! The fleet as Docker Swarm runs it: the scenario's [`Fleet`] over `docker service` and
//! `docker` commands on one stack deployed from `deploy/swarm/stack.yml` (by
//! `scripts/swarm-e2e.sh`). Replica ids are the tasks' hostnames (`app-<slot>`), which is
//! what each replica answers with in `X-Served-By`; a task that replaces another in its
//! slot has the same id.
//!
//! Swarm, not the scenario, brings replicas back: a killed task is replaced by the
//! service's restart policy, a removed one by nothing (the service was scaled in). A scale
//! and a rolling update return only once the stack has settled (the tasks running, and the
//! containers of removed ones exited), so the scenario's "served since" counts see only
//! the fleet it was told about; a kill returns once the container has exited.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::docker::{docker, docker_quiet};
use crate::poll_until;
use crate::scenario::Fleet;

/// How long Swarm may take to start, replace or remove tasks (a start waits for the first
/// health check).
const SETTLE: Duration = Duration::from_secs(90);

/// A deployed stack whose `app` service is the fleet.
#[derive(Debug, Clone)]
pub struct SwarmFleet {
    /// nginx's address on the host, e.g. `http://127.0.0.1:8080`.
    pub shop_url: String,
    /// The stack's name (`docker stack deploy ... NAME`).
    pub stack: String,
    /// The image a rolling update moves the app to (step 8); its version is the image's
    /// `org.opencontainers.image.version` label, which is the `APP_VERSION` it runs with.
    pub next_image: Option<String>,
    /// The container each killed or stopped replica last ran in, by id.
    gone: BTreeMap<String, String>,
}

impl SwarmFleet {
    /// The fleet of an already deployed stack.
    pub fn new(shop_url: &str, stack: &str) -> Self {
        Self {
            shop_url: shop_url.trim_end_matches('/').to_owned(),
            stack: stack.to_owned(),
            next_image: None,
            gone: BTreeMap::new(),
        }
    }

    /// A service's full name, `<stack>_<service>`.
    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }

    /// The containers of `service` that run tasks Swarm wants running, by hostname.
    fn running(&self, service: &str) -> BTreeMap<String, String> {
        let service = self.service(service);
        let tasks = docker_quiet(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            &service,
        ])
        .unwrap_or_default();
        let tasks: Vec<&str> = tasks.split_whitespace().collect();
        if tasks.is_empty() {
            return BTreeMap::new();
        }
        let format = "{{.Status.State}} {{.Status.ContainerStatus.ContainerID}}";
        let mut args = vec!["inspect", "-f", format];
        args.extend(&tasks);
        let containers: Vec<String> = docker_quiet(&args)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| match line.split_once(' ') {
                Some(("running", id)) if !id.is_empty() => Some(id.to_owned()),
                _ => None,
            })
            .collect();
        containers
            .into_iter()
            .filter_map(|id| {
                let hostname = docker_quiet(&["inspect", "-f", "{{.Config.Hostname}}", &id])?;
                Some((hostname.trim().to_owned(), id))
            })
            .collect()
    }

    /// How many containers of `service` are running, including ones that are stopping.
    fn containers_up(&self, service: &str) -> usize {
        let label = format!(
            "label=com.docker.swarm.service.name={}",
            self.service(service)
        );
        docker_quiet(&["ps", "-q", "--filter", &label])
            .map_or(0, |ids| ids.split_whitespace().count())
    }

    /// Waits until `n` app tasks run and no other app container is still stopping.
    async fn settle(&self, n: usize) -> bool {
        poll_until(SETTLE, async || {
            self.running("app").len() == n && self.containers_up("app") == n
        })
        .await
    }

    fn container(&self, id: &str) -> String {
        self.running("app")
            .remove(id)
            .unwrap_or_else(|| panic!("no running app task with hostname {id}"))
    }

    /// The store container the sentinels name as the primary (Sentinel variant).
    fn store_primary(&self) -> String {
        let sentinels = self.running("sentinel");
        let sentinel = sentinels
            .values()
            .next()
            .unwrap_or_else(|| panic!("{} has no sentinel: not the Sentinel variant", self.stack));
        let candidates: Vec<(String, String)> = ["redis", "redis-replica"]
            .into_iter()
            .flat_map(|service| self.running(service))
            .map(|(hostname, id)| (id, hostname))
            .collect();
        crate::docker::store_primary(&["exec", sentinel, "redis-cli"], &candidates)
    }
}

impl Fleet for SwarmFleet {
    fn shop_url(&self) -> String {
        self.shop_url.clone()
    }

    async fn replicas(&mut self) -> BTreeSet<String> {
        self.running("app").into_keys().collect()
    }

    async fn kill(&mut self, id: &str) {
        let container = self.container(id);
        crate::docker::kill(&container);
        self.gone.insert(id.to_owned(), container);
    }

    async fn stop(&mut self, id: &str) -> Result<(), String> {
        let container = self.container(id);
        let stopped = crate::docker::stop(&container).map_err(|why| format!("{id} {why}"));
        self.gone.insert(id.to_owned(), container);
        stopped
    }

    async fn start(&mut self, id: &str) {
        // The restart policy starts a task in the slot again, with the same hostname: wait
        // for a container other than the one killed or stopped (whose task may still be
        // reported running for a moment).
        let gone = self.gone.get(id).cloned();
        let started = poll_until(SETTLE, async || {
            self.running("app")
                .get(id)
                .is_some_and(|container| Some(container) != gone.as_ref())
        })
        .await;
        assert!(started, "Swarm did not start {id} again within {SETTLE:?}");
    }

    async fn scale(&mut self, n: usize) {
        let scale = format!("{}={n}", self.service("app"));
        docker(&["service", "scale", "--detach=false", &scale]);
        assert!(
            self.settle(n).await,
            "{n} app tasks did not settle within {SETTLE:?}"
        );
    }

    async fn restart_store(&mut self) {
        let redis = self.service("redis");
        docker(&["service", "update", "--force", "--detach=false", &redis]);
    }

    async fn kill_store_primary(&mut self) {
        crate::docker::kill(&self.store_primary());
    }

    async fn roll_out(&mut self) -> Result<String, String> {
        let image = self
            .next_image
            .clone()
            .ok_or("no next image was given (--next-image)")?;
        let label = "{{index .Config.Labels \"org.opencontainers.image.version\"}}";
        let version = docker(&["image", "inspect", "-f", label, &image])
            .trim()
            .to_owned();
        if version.is_empty() {
            return Err(format!(
                "{image} has no org.opencontainers.image.version label"
            ));
        }
        let app = self.service("app");
        let n = self.running("app").len();
        // Local images (no registry): the image is not resolved to a registry digest. The
        // command fails when the update rolls back, which is an answer, not a crash.
        let update = [
            "service",
            "update",
            "--detach=false",
            "--no-resolve-image",
            "--image",
            &image,
            &app,
        ];
        println!("      $ docker {}", update.join(" "));
        if docker_quiet(&update).is_none() {
            let status =
                docker_quiet(&["service", "inspect", "-f", "{{json .UpdateStatus}}", &app]);
            return Err(format!("docker service update failed: {status:?}"));
        }
        // The command returns once the tasks have converged; the update itself ends after
        // the last task's monitor period, as completed, or rolled back or paused on a
        // failure.
        let format = "{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.Message}}{{end}}";
        let mut status = String::new();
        let ended = poll_until(SETTLE, async || {
            status = docker_quiet(&["service", "inspect", "-f", format, &app]).unwrap_or_default();
            !status.starts_with("updating")
        })
        .await;
        if !ended || !status.starts_with("completed") {
            return Err(format!("the update ended {:?}", status.trim()));
        }
        if !self.settle(n).await {
            return Err(format!("{n} app tasks did not settle after the update"));
        }
        Ok(version)
    }
}

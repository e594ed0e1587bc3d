//! The fleet as docker compose runs it: the scenario's [`Fleet`] over `docker` and
//! `docker compose` commands on one compose project. Replica ids are the containers'
//! hostnames, which is what each replica answers with in `X-Served-By`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use crate::scenario::Fleet;

/// A compose project whose `app` service is the fleet.
#[derive(Debug, Clone)]
pub struct ComposeFleet {
    /// nginx's address on the host, e.g. `http://127.0.0.1:8080`.
    pub shop_url: String,
    /// The compose project name.
    pub project: String,
    /// The folder compose resolves relative paths against (the repository).
    pub project_dir: PathBuf,
    /// Compose files (`-f`), in order; empty: the project folder's docker-compose.yml.
    pub files: Vec<PathBuf>,
    /// Extra arguments of `docker compose up`, e.g. `--pull never`.
    pub up_args: Vec<String>,
    /// Container id by hostname, for every app container seen (stopped ones included).
    containers: BTreeMap<String, String>,
}

impl ComposeFleet {
    /// The fleet of an already running project.
    pub fn new(shop_url: &str, project: &str, project_dir: PathBuf) -> Self {
        Self {
            shop_url: shop_url.trim_end_matches('/').to_owned(),
            project: project.to_owned(),
            project_dir,
            files: Vec::new(),
            up_args: Vec::new(),
            containers: BTreeMap::new(),
        }
    }

    fn docker(&self, args: &[&str]) -> String {
        crate::docker::docker(args)
    }

    fn compose(&self, args: &[&str]) -> String {
        let mut command = Command::new("docker");
        command
            .arg("compose")
            .arg("--project-directory")
            .arg(&self.project_dir);
        command.args(["--project-name", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(args);
        crate::docker::run_shown(&format!("docker compose {}", args.join(" ")), &mut command)
    }

    /// Running app containers by hostname; remembers their ids.
    fn running(&mut self) -> BTreeMap<String, String> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let ids = Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter", &project])
            .args(["--filter", "label=com.docker.compose.service=app"])
            .output()
            .expect("running docker ps");
        assert!(
            ids.status.success(),
            "docker ps failed: {}",
            String::from_utf8_lossy(&ids.stderr)
        );
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let names = Command::new("docker")
            .args(["inspect", "-f", "{{.Config.Hostname}}"])
            .args(&ids)
            .output()
            .expect("running docker inspect");
        let running: BTreeMap<String, String> = String::from_utf8_lossy(&names.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .zip(ids)
            .collect();
        self.containers.extend(running.clone());
        running
    }

    fn container(&mut self, id: &str) -> String {
        self.running();
        self.containers
            .get(id)
            .cloned()
            .unwrap_or_else(|| panic!("no app container with hostname {id}"))
    }
}

impl Fleet for ComposeFleet {
    fn shop_url(&self) -> String {
        self.shop_url.clone()
    }

    async fn replicas(&mut self) -> BTreeSet<String> {
        self.running().into_keys().collect()
    }

    async fn kill(&mut self, id: &str) {
        crate::docker::kill(&self.container(id));
    }

    async fn stop(&mut self, id: &str) -> Result<(), String> {
        crate::docker::stop(&self.container(id)).map_err(|why| format!("{id} {why}"))
    }

    async fn start(&mut self, id: &str) {
        let container = self.container(id);
        self.docker(&["start", &container]);
    }

    async fn scale(&mut self, n: usize) {
        let scale = format!("app={n}");
        let mut args = vec!["up", "-d"];
        args.extend(self.up_args.iter().map(String::as_str));
        args.extend(["--scale", &scale, "--no-recreate"]);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.compose(&args);
    }

    async fn restart_store(&mut self) {
        self.compose(&["restart", "redis"]);
    }

    async fn kill_store_primary(&mut self) {
        // The sentinels name the primary: the `redis` service by name at first, a promoted
        // replica by its address after a failover.
        let mut candidates: Vec<(String, String)> = ["redis", "redis-replica"]
            .into_iter()
            .flat_map(|service| self.containers_of(service))
            .collect();
        // Compose's hostname is the container id; the service name is an alias.
        if let Some((id, _)) = self.containers_of("redis").first() {
            candidates.push((id.clone(), "redis".to_owned()));
        }
        let project_dir = self.project_dir.to_string_lossy().into_owned();
        let mut exec = vec!["compose", "--project-directory", &project_dir];
        exec.extend(["--project-name", &self.project]);
        let files: Vec<String> = self
            .files
            .iter()
            .map(|file| file.to_string_lossy().into_owned())
            .collect();
        for file in &files {
            exec.extend(["-f", file]);
        }
        exec.extend(["exec", "-T", "sentinel", "redis-cli"]);
        let victim = crate::docker::store_primary(&exec, &candidates);
        crate::docker::kill(&victim);
    }
}

impl ComposeFleet {
    /// The running containers of `service`: (id, hostname).
    fn containers_of(&self, service: &str) -> Vec<(String, String)> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service = format!("label=com.docker.compose.service={service}");
        let ids = self.docker(&["ps", "-q", "--filter", &project, "--filter", &service]);
        ids.split_whitespace()
            .map(|id| {
                let hostname = self.docker(&["inspect", "-f", "{{.Config.Hostname}}", id]);
                (id.to_owned(), hostname.trim().to_owned())
            })
            .collect()
    }
}

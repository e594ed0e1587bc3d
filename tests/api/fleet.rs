//! The fleet on loopback, without Docker: a real redis-server, three replicas of the real
//! binary and a real nginx running the shipped nginx.conf. Only what cannot work outside
//! Docker is rewritten: the upstream `server app:3000 resolve` line becomes one line per
//! replica (same parameters, minus `resolve`), the Docker DNS `resolver` goes, and nginx
//! listens on a free loopback port. Every balancer setting under test is the shipped one.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::helpers::{
    BinaryApp, RedisServer, add_item, eventually, free_port, get_json, require_binary, visitor,
};

#[path = "../support/nginx_conf.rs"]
mod nginx_conf;
use nginx_conf::nginx_command;

const REPLICAS: usize = 3;

/// nginx running the (rewritten) shipped configuration; stopped on drop.
pub struct Nginx {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
    access_log: std::path::PathBuf,
}

impl Nginx {
    async fn start(replica_ports: &[u16]) -> Self {
        let binary = require_binary("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let access_log = dir.path().join("access.log");
        let child = nginx_command(&binary, dir.path(), port, replica_ports)
            .stdout(std::fs::File::create(&access_log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("error.log")).unwrap())
            .spawn()
            .expect("starting nginx");
        let nginx = Self {
            port,
            child,
            _dir: dir,
            access_log,
        };
        let client = visitor();
        let url = nginx.url("/healthz");
        eventually(
            "nginx to proxy /healthz",
            async || matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK),
        )
        .await;
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until the access log (buffered by the shipped configuration, flushed every
    /// second) holds every one of `needles`.
    async fn wait_for_access_log(&self, needles: &[String]) {
        eventually("nginx's access log", async || {
            let log = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            needles.iter().all(|needle| log.contains(needle.as_str()))
        })
        .await;
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }

    /// nginx's complaints about upstreams, other than refused connections (which it
    /// retries on the next replica), for failure messages.
    fn upstream_errors(&self) -> String {
        self.error_log()
            .lines()
            .filter(|line| !line.contains("connect() failed (111"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which SIGKILL would
        // leave running as orphans.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Counts of a load run.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// What the first failures were, for the assertion message.
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 5 {
            failures.push(why);
        }
    }

    fn failures(&self) -> String {
        self.failures.lock().unwrap().join("; ")
    }
}

/// Visitors that keep reading (and optionally adding to) their carts through nginx until
/// stopped. Each has its own session and its own product.
struct Load {
    running: Arc<AtomicBool>,
    reads: Arc<Tally>,
    writes: Arc<Tally>,
    tasks: Vec<JoinHandle<(reqwest::Client, &'static str, u64)>>,
}

impl Load {
    async fn start(nginx: &Nginx, visitors: usize, write: bool) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let reads = Arc::new(Tally::default());
        let writes = Arc::new(Tally::default());
        let products = elastic_cart::catalog::products();
        let mut tasks = Vec::new();
        for n in 0..visitors {
            let product = products[n % products.len()].id;
            let client = visitor();
            let seeded = add_item(&client, &nginx.url("/api/cart/items"), product, 1).await;
            assert_eq!(seeded.status(), StatusCode::OK);
            let (running, reads, writes) = (running.clone(), reads.clone(), writes.clone());
            let cart_url = nginx.url("/api/cart");
            let items_url = nginx.url("/api/cart/items");
            tasks.push(tokio::spawn(async move {
                let mut added = 1;
                let mut round = 0u64;
                while running.load(Ordering::Relaxed) {
                    round += 1;
                    // A steady pace rather than a flood: the point is continuity, and
                    // rotating products keeps every line under its 99-unit limit.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if write && round.is_multiple_of(3) {
                        let target = products[(round / 3) as usize % products.len()].id;
                        let response = client
                            .post(&items_url)
                            .json(&json!({"product_id": target, "quantity": 1}))
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status() == StatusCode::OK => {
                                added += 1;
                                writes.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => writes.fail(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(err) => writes.fail(err.to_string()),
                        }
                    } else {
                        let response = client.get(&cart_url).send().await;
                        let failure = match response {
                            Ok(r) if r.status() == StatusCode::OK => {
                                let cart: Value = r.json().await.unwrap_or_default();
                                (cart["items"][0]["product_id"] != product)
                                    .then(|| format!("wrong cart {cart}"))
                            }
                            Ok(r) => Some(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(err) => Some(err.to_string()),
                        };
                        match failure {
                            None => _ = reads.ok.fetch_add(1, Ordering::Relaxed),
                            Some(why) => reads.fail(why),
                        }
                    }
                }
                (client, product, added)
            }));
        }
        Self {
            running,
            reads,
            writes,
            tasks,
        }
    }

    /// Waits until the visitors have made `reads` more successful reads and `writes` more
    /// successful writes than they had made when this was called.
    async fn wait_for_more(&self, reads: u64, writes: u64) {
        let reads = self.reads.ok.load(Ordering::Relaxed) + reads;
        let writes = self.writes.ok.load(Ordering::Relaxed) + writes;
        eventually(
            &format!("{reads} reads and {writes} writes in all"),
            async || {
                self.reads.ok.load(Ordering::Relaxed) >= reads
                    && self.writes.ok.load(Ordering::Relaxed) >= writes
            },
        )
        .await;
    }

    /// Stops the visitors and checks that every cart holds exactly what was added.
    /// Returns reads, failed reads, writes, failed writes and what the failures were.
    async fn stop(self, nginx: &Nginx) -> (u64, u64, u64, u64, String) {
        self.running.store(false, Ordering::Relaxed);
        for task in self.tasks {
            let (client, product, added) = task.await.unwrap();
            let cart: Value = get_json(&client, &nginx.url("/api/cart")).await;
            assert_eq!(cart["items"][0]["product_id"], product);
            assert_eq!(cart["item_count"], added, "a cart lost or gained items");
        }
        (
            self.reads.ok.load(Ordering::Relaxed),
            self.reads.failed.load(Ordering::Relaxed),
            self.writes.ok.load(Ordering::Relaxed),
            self.writes.failed.load(Ordering::Relaxed),
            format!(
                "reads: {}; writes: {}",
                self.reads.failures(),
                self.writes.failures()
            ),
        )
    }
}

fn replica_env(redis_url: &str, id: &str) -> Vec<(String, String)> {
    vec![
        ("REDIS_URL".into(), redis_url.into()),
        ("REPLICA_ID".into(), id.into()),
        ("SHUTDOWN_DRAIN_MS".into(), "2000".into()),
        // Three replicas on a small host get one thread each (the single-threaded
        // scheduler), as in the benchmark.
        ("WORKER_THREADS".into(), "1".into()),
    ]
}

async fn start_replica(port: u16, env: &[(String, String)]) -> BinaryApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    BinaryApp::start_on(port, &env).await
}

/// redis-server, `REPLICAS` replicas of the binary and nginx in front of them.
pub struct Fleet {
    pub redis: RedisServer,
    pub ports: Vec<u16>,
    pub envs: Vec<Vec<(String, String)>>,
    pub replicas: Vec<Option<BinaryApp>>,
    pub nginx: Nginx,
}

impl Fleet {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A fleet whose replicas also get `extra_env`.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start().await;
        let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
        let envs: Vec<_> = (0..REPLICAS)
            .map(|i| {
                let mut env = replica_env(&redis.url(), &format!("replica-{i}"));
                env.extend(
                    extra_env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                );
                env
            })
            .collect();
        let mut replicas = Vec::new();
        for (port, env) in ports.iter().zip(&envs) {
            replicas.push(Some(start_replica(*port, env).await));
        }
        let nginx = Nginx::start(&ports).await;
        Self {
            redis,
            ports,
            envs,
            replicas,
            nginx,
        }
    }
}

/// 100 simultaneous adds with one session cookie, through nginx over three replicas: every
/// one succeeds and every one counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_adds_through_the_fleet_all_count() {
    let fleet = Fleet::start().await;
    let shopper = visitor();
    let items = fleet.nginx.url("/api/cart/items");
    crate::concurrency::start_session(&shopper, &items).await;

    let statuses = crate::concurrency::simultaneous_adds(&shopper, &[items]).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let cart: Value = get_json(&shopper, &fleet.nginx.url("/api/cart")).await;
    assert_eq!(cart["item_count"], 101);
    let mut expected = vec!["\"POST /api/cart/items HTTP/1.1\" 200".to_owned()];
    expected.extend((0..REPLICAS).map(|i| format!("served_by=replica-{i}")));
    fleet.nginx.wait_for_access_log(&expected).await;
}

/// Round robin without stickiness, a SIGKILLed replica, a draining replica under reads and
/// writes, and a restarted replica, all through the shipped nginx.conf.
#[tokio::test]
async fn the_fleet_survives_killed_and_stopped_replicas() {
    let Fleet {
        redis: _redis,
        ports,
        envs,
        mut replicas,
        nginx,
    } = Fleet::start().await;

    // 1. One session's reads are spread over every replica, about a third each.
    let shopper = visitor();
    add_item(&shopper, &nginx.url("/api/cart/items"), "ceramic-mug", 2).await;
    let mut served_by: HashMap<String, u32> = HashMap::new();
    for _ in 0..60 {
        let response = shopper.get(nginx.url("/api/cart")).send().await.unwrap();
        let replica = response.headers()["x-served-by"]
            .to_str()
            .unwrap()
            .to_owned();
        let cart: Value = response.json().await.unwrap();
        assert_eq!(cart["item_count"], 2);
        assert_eq!(cart["served_by"], replica.as_str());
        *served_by.entry(replica).or_default() += 1;
    }
    assert_eq!(served_by.len(), REPLICAS, "{served_by:?}");
    assert!(
        served_by.values().all(|n| (10..=30).contains(n)),
        "{served_by:?}"
    );
    let expected = [
        "served_by=replica-0".to_owned(),
        "upstream=127.0.0.1:".to_owned(),
    ];
    nginx.wait_for_access_log(&expected).await;

    // 2. SIGKILL one replica under continuous reads: nginx meets the dead replica (its
    // error log says so) and passes those reads on; no read fails.
    let load = Load::start(&nginx, 6, false).await;
    load.wait_for_more(50, 0).await;
    replicas[0].as_ref().unwrap().signal("KILL");
    let killed = format!("upstream: \"http://127.0.0.1:{}/", ports[0]);
    eventually("nginx to meet the killed replica", async || {
        nginx.error_log().contains(&killed)
    })
    .await;
    load.wait_for_more(100, 0).await;
    let (reads, failed_reads, _, _, failures) = load.stop(&nginx).await;
    assert_eq!(
        failed_reads,
        0,
        "{failed_reads} of {reads} reads failed after SIGKILL ({failures}); nginx said:\n{}",
        nginx.upstream_errors()
    );
    replicas[0] = None;

    // 3. SIGTERM another under reads and writes: it drains, nothing fails, nothing is
    // lost, and writes go on after it has gone.
    let load = Load::start(&nginx, 6, true).await;
    load.wait_for_more(0, 20).await;
    let mut stopping = replicas[1].take().unwrap();
    stopping.signal("TERM");
    let status = stopping.wait_for_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "the draining replica: {status}");
    load.wait_for_more(50, 30).await;
    let (reads, failed_reads, writes, failed_writes, failures) = load.stop(&nginx).await;
    assert_eq!(
        failed_reads + failed_writes,
        0,
        "{failed_reads} of {reads} reads and {failed_writes} of {writes} writes failed \
         during drain ({failures}); nginx said:\n{}",
        nginx.upstream_errors()
    );

    // 4. The killed replica, restarted, takes traffic again within a few seconds.
    replicas[0] = Some(start_replica(ports[0], &envs[0]).await);
    let started = Instant::now();
    eventually("the restarted replica to take traffic", async || {
        let response = shopper.get(nginx.url("/api/cart")).send().await.unwrap();
        response.headers()["x-served-by"] == "replica-0"
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

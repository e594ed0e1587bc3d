//! The fleet across test hosts ([`crate::hosts`]): Redis nodes on hosts of their own (a
//! primary and its replicas, optionally watched by sentinels on hosts of their own),
//! replicas of the release binary on app hosts, and nginx with the shipped nginx.conf in
//! the test's namespace in front of them. What the loopback fleet cannot show: a store or
//! an app machine that goes silent rather than refusing, a partition between two hosts,
//! and a failover that moves the store's DNS name, as ElastiCache's does.
//!
//! The app hosts reach the primary by the name [`PRIMARY_NAME`] (their own `/etc/hosts`),
//! or through the sentinels ([`HostStore::Sentinel`]). The harness plays ElastiCache's part
//! in a failover ([`HostFleet::promote_furthest`], [`HostFleet::move_primary_name`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ha::{SENTINEL_SERVICE, Sentinel, sentinel_password};
use crate::hosts::{Host, Network};
use crate::nginx::{Balance, Nginx};
use crate::proxy::FaultProxy;
use crate::redis::RedisServer;
use crate::replica::{Replica, ReplicaSpec};
use crate::store_user::{StoreKind, StoreUser};
use crate::{PATIENCE, poll_until};

/// The name the app hosts resolve to the primary: ElastiCache's primary endpoint.
pub const PRIMARY_NAME: &str = "cache-primary";

/// The name the app hosts resolve to the sentinels with [`HostStore::SentinelByName`].
pub const SENTINEL_NAME: &str = "sentinel";

/// The port every app replica listens on (each host has its own ports).
pub const APP_PORT: u16 = 3000;

/// How the app finds the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStore {
    /// `redis://cache-primary:6379`: a name the harness moves in a failover.
    Named,
    /// Three sentinels on hosts of their own (`redis-sentinel://`), which fail over by
    /// themselves when the primary goes silent for 2 s.
    Sentinel,
    /// The same, the app naming one address for them all, `sentinel:26379`, which the app
    /// hosts resolve to sentinel-1 (as an orchestrator's service name resolves to the
    /// sentinels' tasks).
    SentinelByName,
}

/// What fleet to start.
#[derive(Debug, Clone)]
pub struct HostFleetOptions {
    /// The elastic-cart binary.
    pub binary: PathBuf,
    /// App hosts, one replica each.
    pub apps: usize,
    /// Redis nodes: the first starts as the primary, the others replicate from it.
    pub caches: usize,
    /// How the app finds the primary.
    pub store: HostStore,
    /// `REDIS_WAIT_REPLICAS` of every replica.
    pub wait_replicas: u32,
    /// Each replica's link to the primary goes through a [`FaultProxy`] that delays every
    /// chunk by this much each way: replicas in another zone, behind.
    pub replication_delay: Option<Duration>,
}

impl HostFleetOptions {
    /// Two app hosts on a named primary with two replicas, changes confirmed by one.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            apps: 2,
            caches: 3,
            store: HostStore::Named,
            wait_replicas: 1,
            replication_delay: None,
        }
    }
}

/// A Redis node and its host (the server first: it stops before its host goes).
#[derive(Debug)]
pub struct CacheNode {
    /// The server, on port 6379 of its host.
    pub redis: RedisServer,
    /// Its host.
    pub host: Host,
}

/// An app replica and its host.
#[derive(Debug)]
pub struct AppNode {
    /// The release binary, on [`APP_PORT`] of its host.
    pub replica: Replica,
    /// Its host.
    pub host: Host,
}

#[derive(Debug)]
struct SentinelNode {
    sentinel: Sentinel,
    host: Host,
    /// Whether the harness silenced its host (then it is not asked who the primary is).
    silenced: bool,
}

/// The fleet; everything stops, and every host and the network go, when it is dropped.
#[derive(Debug)]
pub struct HostFleet {
    /// In front of the app replicas, in the test's namespace.
    pub nginx: Nginx,
    /// The app hosts.
    pub apps: Vec<AppNode>,
    sentinels: Vec<SentinelNode>,
    /// The Redis hosts.
    pub caches: Vec<CacheNode>,
    /// The slow replication links, if any.
    links: Vec<FaultProxy>,
    /// Which of `caches` is the primary now.
    primary: usize,
    network: Network,
}

impl HostFleet {
    /// Starts the Redis hosts (replicas in sync), the sentinels if asked, the app hosts
    /// and nginx; returns once nginx proxies to every replica.
    pub async fn start(options: HostFleetOptions) -> Self {
        let network = Network::new();
        let mut caches = Vec::new();
        let mut links = Vec::new();
        for n in 0..options.caches {
            let host = network.add_host(&format!("cache-{}", n + 1));
            let kind = match options.store {
                HostStore::Named => StoreKind::Single,
                HostStore::Sentinel | HostStore::SentinelByName => StoreKind::Sentinel,
            };
            let mut builder = RedisServer::builder()
                .on(&host.place())
                .app_user(StoreUser::default().on(kind));
            if let Some(primary) = caches.first() {
                let primary: &CacheNode = primary;
                let (addr, port) = match options.replication_delay {
                    Some(delay) => {
                        let target = SocketAddr::from((primary.host.addr(), 6379));
                        let link = FaultProxy::start_between(network.gateway().into(), target);
                        link.set_delay(delay);
                        let port = link.port;
                        links.push(link);
                        (network.gateway(), port)
                    }
                    None => (primary.host.addr(), 6379),
                };
                builder = builder
                    .arg("--replicaof")
                    .arg(&addr.to_string())
                    .arg(&port.to_string());
            }
            let redis = builder.start().await;
            caches.push(CacheNode { redis, host });
        }
        let mut fleet_sentinels = Vec::new();
        if options.store != HostStore::Named {
            let primary = (caches[0].host.addr(), 6379);
            for n in 0..3 {
                let host = network.add_host(&format!("sentinel-{}", n + 1));
                let sentinel = Sentinel::start_at(
                    Some(&host.place()),
                    primary,
                    2,
                    &sentinel_password(caches[0].redis.app_user()),
                )
                .await;
                fleet_sentinels.push(SentinelNode {
                    sentinel,
                    host,
                    silenced: false,
                });
            }
        }
        // As the app user every cache node has, with the sentinels' password.
        let auth = caches[0].redis.app_user().userinfo();
        let sentinels = format!(
            "sentinelServiceName={SENTINEL_SERVICE}&sentinelPassword={}",
            sentinel_password(caches[0].redis.app_user())
        );
        let url = match options.store {
            HostStore::Named => format!("redis://{auth}{PRIMARY_NAME}:6379"),
            HostStore::Sentinel => format!(
                "redis-sentinel://{auth}sentinel-1:26379?{sentinels}\
                 &node=sentinel-2:26379&node=sentinel-3:26379"
            ),
            HostStore::SentinelByName => {
                format!("redis-sentinel://{auth}{SENTINEL_NAME}:26379?{sentinels}")
            }
        };
        wait_until_replicated(&caches, 0).await;
        if options.store != HostStore::Named {
            wait_until_sentinels_know_all(&fleet_sentinels, caches.len() - 1).await;
        }
        let mut apps = Vec::new();
        for n in 0..options.apps {
            let host = network.add_host(&format!("app-{}", n + 1));
            host.set_name(PRIMARY_NAME, caches[0].host.addr());
            if let Some(first) = fleet_sentinels.first() {
                host.set_name(SENTINEL_NAME, first.host.addr());
            }
            let id = format!("app-{}", n + 1);
            let spec = ReplicaSpec::new(
                &options.binary,
                &[
                    ("REDIS_URL", url.as_str()),
                    ("REPLICA_ID", id.as_str()),
                    (
                        "REDIS_WAIT_REPLICAS",
                        options.wait_replicas.to_string().as_str(),
                    ),
                    ("WORKER_THREADS", "1"),
                ],
            )
            .on(&host.place());
            let replica = Replica::start_on(APP_PORT, &spec).await;
            apps.push(AppNode { replica, host });
        }
        let upstreams: Vec<SocketAddr> = apps.iter().map(|app| app.replica.addr).collect();
        Self {
            nginx: Nginx::start_at(&upstreams, Balance::RoundRobin).await,
            apps,
            sentinels: fleet_sentinels,
            caches,
            links,
            primary: 0,
            network,
        }
    }

    /// The shop's URL (nginx) with `path`.
    pub fn url(&self, path: &str) -> String {
        self.nginx.url(path)
    }

    /// The hosts' network (to add a host of a test's own).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Which of [`Self::caches`] is the primary (as far as the harness made it so).
    pub fn primary(&self) -> usize {
        self.primary
    }

    /// Waits until every other Redis node replicates from the primary with its link up.
    pub async fn wait_until_replicated(&self) {
        wait_until_replicated(&self.caches, self.primary).await;
    }

    /// Starts one more sentinel on a host of its own, watching the primary the harness
    /// knows, and waits until every sentinel not silenced counts it and every replica.
    pub async fn add_sentinel(&mut self) {
        let n = self.sentinels.len() + 1;
        let host = self.network.add_host(&format!("sentinel-{n}"));
        let primary = (self.caches[self.primary].host.addr(), 6379);
        let password = sentinel_password(self.caches[0].redis.app_user());
        let sentinel = Sentinel::start_at(Some(&host.place()), primary, 2, &password).await;
        self.sentinels.push(SentinelNode {
            sentinel,
            host,
            silenced: false,
        });
        let live: Vec<&SentinelNode> = self.sentinels.iter().filter(|s| !s.silenced).collect();
        let others = self.sentinels.len() - 1;
        let replicas = (self.caches.len() - 1).to_string();
        let known = poll_until(Duration::from_secs(60), async || {
            live.iter().all(|node| {
                let master = node.sentinel.cli(&["SENTINEL", "master", SENTINEL_SERVICE]);
                let field = |name: &str| {
                    let mut lines = master.lines();
                    while let Some(line) = lines.next() {
                        if line.trim() == name {
                            return lines.next().map(|v| v.trim().to_owned());
                        }
                    }
                    None
                };
                field("num-slaves").as_deref() == Some(replicas.as_str())
                    && field("num-other-sentinels") == Some(others.to_string())
            })
        })
        .await;
        assert!(
            known,
            "the sentinels did not learn the new one: {}",
            self.state()
        );
    }

    /// Silences sentinel `n` (from 0)'s host: a sentinel task gone for good, its address
    /// left behind.
    pub fn silence_sentinel(&mut self, n: usize) {
        self.sentinels[n].host.silence();
        self.sentinels[n].silenced = true;
    }

    /// The primary the sentinels not silenced agree on (index into [`Self::caches`]), if
    /// they do.
    pub fn sentinels_primary(&self) -> Option<usize> {
        let mut named = self
            .sentinels
            .iter()
            .filter(|node| !node.silenced)
            .map(|node| {
                let answer =
                    node.sentinel
                        .cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
                answer.lines().next().map(|addr| addr.trim().to_owned())
            });
        let first = named.next()??;
        if !named.all(|other| other.as_deref() == Some(first.as_str())) {
            return None;
        }
        self.caches
            .iter()
            .position(|node| node.host.addr().to_string() == first)
    }

    /// Waits (up to `limit`) until the sentinels agree on a primary other than `old`;
    /// records it as the primary and returns it.
    pub async fn wait_for_sentinel_failover(&mut self, old: usize, limit: Duration) -> usize {
        let mut new = None;
        let moved = poll_until(limit, async || {
            new = self.sentinels_primary().filter(|now| *now != old);
            new.is_some()
        })
        .await;
        assert!(moved, "the sentinels did not fail over: {}", self.state());
        self.primary = new.expect("a new primary");
        self.primary
    }

    /// What ElastiCache does once it has counted the primary out: the replica furthest
    /// ahead (by replication offset, among the others that answer) is promoted, and the
    /// other replicas follow it. Returns it; the name has not moved yet.
    pub fn promote_furthest(&mut self) -> usize {
        let old = self.primary;
        let offset = |node: &CacheNode| -> Option<u64> {
            let info = node.redis.admin().try_cli(&["INFO", "replication"]);
            info.lines()
                .find_map(|line| line.trim().strip_prefix("slave_repl_offset:"))
                .and_then(|value| value.parse().ok())
        };
        let new = (0..self.caches.len())
            .filter(|n| *n != old)
            .filter_map(|n| Some((offset(&self.caches[n])?, n)))
            .max()
            .map(|(_, n)| n)
            .unwrap_or_else(|| panic!("no replica to promote: {}", self.state()));
        let promoted = self.caches[new].redis.cli(&["REPLICAOF", "NO", "ONE"]);
        assert!(promoted.starts_with("OK"), "REPLICAOF NO ONE: {promoted}");
        let addr = self.caches[new].host.addr().to_string();
        for n in (0..self.caches.len()).filter(|n| *n != old && *n != new) {
            let answer = self.caches[n].redis.cli(&["REPLICAOF", &addr, "6379"]);
            assert!(answer.starts_with("OK"), "REPLICAOF: {answer}");
        }
        self.primary = new;
        new
    }

    /// Points [`PRIMARY_NAME`] at the current primary on every app host.
    pub fn move_primary_name(&self) {
        let addr = self.caches[self.primary].host.addr();
        for app in &self.apps {
            app.host.set_name(PRIMARY_NAME, addr);
        }
    }

    /// Makes node `n` a replica of the current primary, from its own host's loopback (so
    /// also while it is silent to the network): how ElastiCache's replaced node rejoins.
    pub fn demote(&self, n: usize) {
        let addr = self.caches[self.primary].host.addr().to_string();
        let answer = self.caches[n].redis.cli(&["REPLICAOF", &addr, "6379"]);
        assert!(answer.starts_with("OK"), "REPLICAOF: {answer}");
    }

    /// The slow replication links (one per replica that started behind one).
    pub fn links(&self) -> &[FaultProxy] {
        &self.links
    }

    /// What every Redis node and sentinel says, for failure messages.
    pub fn state(&self) -> String {
        let mut state = format!("primary (harness): cache-{}", self.primary + 1);
        for node in &self.caches {
            let info = node.redis.admin().try_cli(&["INFO", "replication"]);
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
                    .unwrap_or("?")
                    .to_owned()
            };
            state.push_str(&format!(
                "\n{} ({}): role {}, master {}, link {}, offset {}",
                node.host.name,
                node.host.addr(),
                field("role"),
                field("master_host"),
                field("master_link_status"),
                field("master_repl_offset"),
            ));
        }
        for node in &self.sentinels {
            let master =
                node.sentinel
                    .cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
            state.push_str(&format!(
                "\nsentinel names {}",
                master.split_whitespace().collect::<Vec<_>>().join(":")
            ));
        }
        state
    }
}

/// Waits until every node but `primary` replicates with its link up.
async fn wait_until_replicated(caches: &[CacheNode], primary: usize) {
    let settled = poll_until(PATIENCE * 2, async || {
        caches
            .iter()
            .enumerate()
            .filter(|(n, _)| *n != primary)
            .all(|(_, node)| {
                let info = node.redis.admin().try_cli(&["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            })
    })
    .await;
    assert!(
        settled,
        "the replicas did not sync with cache-{}",
        primary + 1
    );
}

/// Waits until every sentinel counts `replicas` replicas and the other sentinels: a
/// sentinel that knows no replica when the primary dies never fails over.
async fn wait_until_sentinels_know_all(sentinels: &[SentinelNode], replicas: usize) {
    let replicas = replicas.to_string();
    let others = (sentinels.len() - 1).to_string();
    let known = poll_until(Duration::from_secs(60), async || {
        sentinels.iter().all(|node| {
            let master = node.sentinel.cli(&["SENTINEL", "master", SENTINEL_SERVICE]);
            let field = |name: &str| {
                let mut lines = master.lines();
                while let Some(line) = lines.next() {
                    if line.trim() == name {
                        return lines.next().map(|v| v.trim().to_owned());
                    }
                }
                None
            };
            field("num-slaves").as_deref() == Some(replicas.as_str())
                && field("num-other-sentinels").as_deref() == Some(others.as_str())
        })
    })
    .await;
    assert!(known, "the sentinels did not learn every replica and peer");
}

/// How long until the replica at `base` (`http://addr:port`) answers a change with 200,
/// polling from now; `None` if it did not within `limit`. The probe is a shopper of its
/// own whose change is resent with its `Idempotency-Key` until answered.
pub async fn serves_changes_within(base: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let key = format!("probe-{}", fastrand::u64(..));
    while started.elapsed() < limit {
        let answered = client
            .post(format!("{base}/api/cart/items"))
            .header("Idempotency-Key", &key)
            .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
            .send()
            .await
            .is_ok_and(|response| response.status() == reqwest::StatusCode::OK);
        if answered {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Probes every replica of `fleet` at once ([`serves_changes_within`]); the time each took,
/// in ms (`null` for one that did not within `limit`).
pub async fn every_replica_serves_changes(fleet: &HostFleet, limit: Duration) -> Vec<Value> {
    let probes = fleet.apps.iter().map(|app| {
        let base = app.replica.url("");
        async move { serves_changes_within(&base, limit).await }
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .map(|took| match took {
            Some(took) => json!(took.as_millis() as u64),
            None => Value::Null,
        })
        .collect()
}

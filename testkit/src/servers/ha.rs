//! The replicated session stores, on loopback from Debian's `redis-server`: a Sentinel set
//! (a primary, replicas, and sentinels that fail over when the primary dies) and a Redis
//! Cluster (primaries with a replica each, made by `redis-cli --cluster create`).
//!
//! Both are what an ElastiCache user runs (cluster mode disabled with automatic failover,
//! and cluster mode enabled), sped up: a node counts as down after one second (a sentinel
//! after two: with one, a loaded machine made a sentinel count a primary it had just
//! promoted as down and fail over again, as in redis/redis#8607), so a failover takes
//! seconds, not the tens of seconds of a production setting. The faults they offer are
//! those of a real failover: the primary killed (SIGKILL, and later back as a replica), a
//! failover on command (the old primary turns replica and answers `READONLY` on the
//! connections it keeps), and scripts flushed from every node.
//!
//! Every data node has the app's user ([`crate::store_user`]) with the commands its kind of
//! store needs; the URLs they hand out name it. The sentinels want a password of their own
//! ([`sentinel_password`], `sentinelPassword` in the URL); the nodes' replication and the
//! sentinels' monitoring use the default user.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::binaries::{store_cli, store_server};
use crate::hosts::Place;
use crate::ports::free_port;
use crate::process::Process;
use crate::redis::{RedisAdmin, RedisServer};
use crate::store_user::{StoreKind, StoreUser};
use crate::{eventually, poll_until};

/// Longest a set or cluster takes to settle after a fault: a killed primary that comes
/// back is told to turn replica only when a sentinel next asks it for `INFO` (every 10 s),
/// and then syncs (a diskless full sync waits 5 s for more replicas); a failed election is
/// tried again after twice the failover timeout.
const SETTLE: Duration = Duration::from_secs(60);

/// Polls `check` until it holds; panics naming `what` after [`SETTLE`].
async fn settle(what: &str, check: impl AsyncFnMut() -> bool) {
    if !poll_until(SETTLE, check).await {
        panic!("timed out after {SETTLE:?} waiting for {what}");
    }
}

/// The name the sentinels monitor the primary under (`sentinelServiceName` in the URL).
pub const SENTINEL_SERVICE: &str = "carts";

/// The sentinels' password for apps whose store user is `user`: its password with
/// `-sentinel` after it, so a test that looks for one secret finds both.
pub fn sentinel_password(user: &StoreUser) -> String {
    format!("{}-sentinel", user.password)
}

/// A sentinel: `redis-server --sentinel` with a config file of its own (it rewrites it).
#[derive(Debug)]
pub(crate) struct Sentinel {
    pub(crate) port: u16,
    place: Option<Place>,
    /// What it asks of every client (`requirepass`) and gives its peers
    /// (`sentinel sentinel-pass`).
    password: String,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// A sentinel on loopback watching the primary on loopback `primary_port`.
    async fn start(primary_port: u16, quorum: usize, password: &str) -> Self {
        Self::start_at(None, (Ipv4Addr::LOCALHOST, primary_port), quorum, password).await
    }

    /// A sentinel on port 26379 of a test host ([`crate::hosts`]), or on a free loopback
    /// port without one, watching the primary at `primary`, wanting `password`.
    pub(crate) async fn start_at(
        place: Option<&Place>,
        primary: (Ipv4Addr, u16),
        quorum: usize,
        password: &str,
    ) -> Self {
        let dir = tempfile::tempdir().expect("a folder for a sentinel");
        let (port, bind) = match place {
            Some(place) => (
                26379,
                format!("{} 127.0.0.1\nprotected-mode no", place.addr),
            ),
            None => (free_port(), "127.0.0.1".to_owned()),
        };
        let (primary_addr, primary_port) = primary;
        let config: PathBuf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind {bind}\ndir {dir}\n\
             sentinel monitor {SENTINEL_SERVICE} {primary_addr} {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n\
             sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
             sentinel parallel-syncs {SENTINEL_SERVICE} 1\n\
             requirepass {password}\nsentinel sentinel-pass {password}\n",
            dir = dir.path().display()
        );
        let text = match std::env::var("TESTKIT_REDIS_LOGS") {
            Ok(dir) => format!("{text}logfile {dir}/sentinel-{port}.log\n"),
            Err(_) => text,
        };
        std::fs::write(&config, text).expect("writing sentinel.conf");
        let mut command = match place {
            Some(place) => place.command(store_server()),
            None => Command::new(store_server()),
        };
        command
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn(&mut command, Signal::SIGKILL).expect("starting a sentinel");
        let addr = place.map_or(Ipv4Addr::LOCALHOST, |place| place.addr);
        eventually("a sentinel to accept connections", async || {
            tokio::net::TcpStream::connect((addr, port)).await.is_ok()
        })
        .await;
        Self {
            port,
            place: place.cloned(),
            password: password.to_owned(),
            _process: process,
            _dir: dir,
        }
    }

    /// `redis-cli` against it (from its host's loopback on a test host); what it printed,
    /// empty if it could not connect.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let admin = match &self.place {
            Some(place) => RedisAdmin::on(place, self.port),
            None => RedisAdmin::plain(self.port),
        };
        admin.with_password(&self.password).try_cli(args)
    }
}

/// `redis-cli -p port args...` on loopback; what it printed, or an empty string if it
/// could not connect (a node being killed or restarted).
fn cli(port: u16, args: &[&str]) -> String {
    RedisAdmin::plain(port).try_cli(args)
}

/// The value of `field` in the text of an `INFO` section.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// Whether the server on `port` is a replica whose link to its primary is up.
fn replica_in_sync(port: u16) -> bool {
    let info = cli(port, &["INFO", "replication"]);
    info_field(&info, "role") == Some("slave")
        && info_field(&info, "master_link_status") == Some("up")
}

/// A primary, its replicas and the sentinels watching them; everything stops on drop.
#[derive(Debug)]
pub struct SentinelSet {
    /// The data nodes: the first started as the primary, the others as its replicas.
    /// Which one is the primary now: [`Self::primary_port`].
    pub nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
    /// The sentinels' password.
    sentinel_password: String,
}

impl SentinelSet {
    /// One primary, `replicas` replicas, `sentinels` sentinels (quorum: a majority), each
    /// primary counted down after 2 s. Returns once every replica is in sync and every
    /// sentinel knows them all.
    pub async fn start(replicas: usize, sentinels: usize) -> Self {
        Self::start_with_user(replicas, sentinels, StoreUser::default()).await
    }

    /// As [`Self::start`], every data node with `user` (made a Sentinel set's) as the app's.
    pub async fn start_with_user(replicas: usize, sentinels: usize, user: StoreUser) -> Self {
        let user = user.on(StoreKind::Sentinel);
        let sentinel_password = sentinel_password(&user);
        let primary = RedisServer::builder().app_user(user.clone()).start().await;
        let primary_port = primary.port.to_string();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let replica = RedisServer::builder()
                .app_user(user.clone())
                .arg("--replicaof")
                .arg("127.0.0.1")
                .arg(&primary_port)
                .start()
                .await;
            nodes.push(replica);
        }
        let quorum = sentinels / 2 + 1;
        let mut set = Self {
            sentinels: Vec::new(),
            nodes,
            sentinel_password,
        };
        for _ in 0..sentinels {
            let sentinel = Sentinel::start(set.nodes[0].port, quorum, &set.sentinel_password).await;
            set.sentinels.push(sentinel);
        }
        set.wait_until_settled(None).await;
        set
    }

    /// `redis-sentinel://` with the app user's credentials (for the data nodes), the
    /// sentinels' password and every sentinel, as the app's `REDIS_URL`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://{}127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}\
             &sentinelPassword={}",
            self.nodes[0].app_user().userinfo(),
            self.sentinels[0].port,
            self.sentinel_password
        );
        for sentinel in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", sentinel.port));
        }
        url
    }

    /// The primary's port as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let answer = sentinel.cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
            answer.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The primary's port on which every sentinel agrees, if they do.
    fn agreed_primary(&self) -> Option<u16> {
        let first = self.primary_port()?;
        self.sentinels
            .iter()
            .all(|sentinel| {
                let answer =
                    sentinel.cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]);
                answer.lines().nth(1).map(str::trim) == Some(&first.to_string())
            })
            .then_some(first)
    }

    /// Waits until the sentinels agree on a primary other than `not` that is up, every
    /// other node replicates from it in sync, and every sentinel counts all of them.
    async fn wait_until_settled(&self, not: Option<u16>) {
        let replicas = (self.nodes.len() - 1).to_string();
        let settled = poll_until(SETTLE, async || {
            let Some(primary) = self.agreed_primary() else {
                return false;
            };
            let info = cli(primary, &["INFO", "replication"]);
            Some(primary) != not
                && info_field(&info, "role") == Some("master")
                && self
                    .nodes
                    .iter()
                    .filter(|node| node.port != primary)
                    .all(|node| replica_in_sync(node.port))
                && self.sentinels.iter().all(|sentinel| {
                    let master = sentinel.cli(&["SENTINEL", "master", SENTINEL_SERVICE]);
                    let mut lines = master.lines();
                    while let Some(line) = lines.next() {
                        if line.trim() == "num-slaves" {
                            return lines.next().map(str::trim) == Some(replicas.as_str());
                        }
                    }
                    false
                })
        })
        .await;
        if !settled {
            panic!(
                "the Sentinel set did not settle within {SETTLE:?}: {}",
                self.state()
            );
        }
    }

    /// What every node and the first sentinel say, for a failure message.
    pub fn state(&self) -> String {
        let mut state = String::new();
        for node in &self.nodes {
            let info = cli(node.port, &["INFO", "replication"]);
            state.push_str(&format!(
                "\nnode {}: role {:?}, master_port {:?}, link {:?}",
                node.port,
                info_field(&info, "role"),
                info_field(&info, "master_port"),
                info_field(&info, "master_link_status"),
            ));
        }
        for sentinel in &self.sentinels {
            let master = sentinel.cli(&["SENTINEL", "master", SENTINEL_SERVICE]);
            let replicas = sentinel.cli(&["SENTINEL", "replicas", SENTINEL_SERVICE]);
            state.push_str(&format!(
                "\nsentinel {}: {}\nreplicas: {}",
                sentinel.port,
                master.replace('\n', " "),
                replicas.replace('\n', " ")
            ));
        }
        state
    }

    fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of the set")
    }

    /// SIGKILL of the primary: what it had not yet sent to a replica is gone. Returns its
    /// port once a replica has taken over; [`Self::rejoin`] brings it back.
    pub async fn kill_primary(&mut self) -> u16 {
        let old = self.primary_port().expect("the sentinels name a primary");
        self.node(old).stop();
        settle("a replica to be promoted", async || {
            self.agreed_primary().is_some_and(|now| now != old)
        })
        .await;
        old
    }

    /// Starts a killed node again on its port (empty: no persistence); the sentinels make
    /// it a replica of the new primary. Returns once the set has settled again.
    pub async fn rejoin(&mut self, port: u16) {
        self.node(port).restart().await;
        self.wait_until_settled(None).await;
    }

    /// `SENTINEL FAILOVER`: a replica is promoted and the old primary turns replica; the
    /// connections clients keep to it then answer `READONLY` to writes. Returns once the
    /// set has settled with the new primary.
    pub async fn failover(&mut self) {
        let old = self.primary_port().expect("the sentinels name a primary");
        // A sentinel may answer OK and then abort (no replica it deems fresh enough, a
        // failover of its own too recent): ask the next one until the primary moves.
        let mut moved = false;
        for sentinel in self.sentinels.iter().cycle().take(2 * self.sentinels.len()) {
            let answer = sentinel.cli(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE]);
            if answer.starts_with("OK") {
                moved = poll_until(Duration::from_secs(10), async || {
                    self.agreed_primary().is_some_and(|now| now != old)
                })
                .await;
            }
            if moved {
                break;
            }
        }
        assert!(moved, "no sentinel failed over: {}", self.state());
        self.wait_until_settled(Some(old)).await;
    }
}

/// A Redis Cluster on loopback: primaries with one replica each; stops on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, primaries and replicas (which is which changes with failovers).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `primaries` primaries with one replica each (`redis-cli --cluster create
    /// --cluster-replicas 1`), a node counted down after 1 s. Returns once every node says
    /// the cluster is ok and agrees on who serves the slots.
    pub async fn start(primaries: usize) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..primaries * 2 {
            // The bus port named: by default it is the port + 10000, and a node whose port
            // is above 55535 (Linux hands out ports up to 60999) would exit.
            let node = RedisServer::builder()
                .app_user(StoreUser::default().on(StoreKind::Cluster))
                .arg("--cluster-port")
                .arg(&free_port().to_string())
                .arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg("nodes.conf")
                .arg("--cluster-node-timeout")
                .arg("1000")
                .start()
                .await;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new(store_cli())
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_healthy().await;
        cluster
    }

    /// `redis-cluster://` with the app user's credentials, naming every node, as the app's
    /// `REDIS_URL`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-cluster://{}127.0.0.1:{}",
            self.nodes[0].app_user().userinfo(),
            self.nodes[0].port
        );
        for (n, node) in self.nodes[1..].iter().enumerate() {
            url.push(if n == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// The ports of the nodes that are primaries now, in the view of the node on `port`.
    fn primaries_seen_by(port: u16) -> Vec<u16> {
        cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| {
                let flags = line.split(' ').nth(2).unwrap_or("");
                flags.contains("master") && !flags.contains("fail")
            })
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                let port = address.split('@').next()?.rsplit(':').next()?;
                port.parse().ok()
            })
            .collect()
    }

    /// The primaries now, as the first node that answers sees them.
    pub fn primary_ports(&self) -> Vec<u16> {
        let mut primaries = self
            .nodes
            .iter()
            .map(|node| Self::primaries_seen_by(node.port))
            .find(|primaries| !primaries.is_empty())
            .unwrap_or_default();
        primaries.sort_unstable();
        primaries
    }

    /// Waits until every node says `cluster_state:ok`, all see the same primaries (as
    /// many as there are replicas) and every replica is in sync.
    async fn wait_until_healthy(&self) {
        let half = self.nodes.len() / 2;
        settle("the cluster to be healthy", async || {
            let expected = self.primary_ports();
            expected.len() == half
                && self.nodes.iter().all(|node| {
                    let info = cli(node.port, &["CLUSTER", "INFO"]);
                    let mut seen = Self::primaries_seen_by(node.port);
                    seen.sort_unstable();
                    info_field(&info, "cluster_state") == Some("ok")
                        && seen == expected
                        && (expected.contains(&node.port) || replica_in_sync(node.port))
                })
        })
        .await;
    }

    /// SIGKILL of one primary (the first, in port order); returns its port once its
    /// replica has taken over its slots and the cluster is ok again.
    pub async fn kill_primary(&mut self) -> u16 {
        let victim = self.primary_ports()[0];
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == victim)
            .expect("a node of the cluster");
        node.stop();
        let others: Vec<u16> = self
            .nodes
            .iter()
            .map(|node| node.port)
            .filter(|port| *port != victim)
            .collect();
        let half = self.nodes.len() / 2;
        settle(
            "a replica to take over the killed primary's slots",
            async || {
                others.iter().all(|port| {
                    let info = cli(*port, &["CLUSTER", "INFO"]);
                    let primaries = Self::primaries_seen_by(*port);
                    info_field(&info, "cluster_state") == Some("ok")
                        && primaries.len() == half
                        && !primaries.contains(&victim)
                })
            },
        )
        .await;
        victim
    }

    /// Starts a killed node again on its port with its `nodes.conf`: it rejoins as a
    /// replica of the node that took over. Returns once the cluster is healthy.
    pub async fn rejoin(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of the cluster");
        node.restart().await;
        self.wait_until_healthy().await;
    }

    /// `SCRIPT FLUSH` on every node: the next `EVALSHA` anywhere answers `NOSCRIPT`.
    pub fn flush_scripts(&self) {
        for node in &self.nodes {
            let answer = node.cli(&["SCRIPT", "FLUSH"]);
            assert!(answer.starts_with("OK"), "SCRIPT FLUSH: {answer}");
        }
    }

    /// Runs `redis-cli` with `args` against the node on `port` and returns what it printed
    /// (`CONFIG SET` on one primary, `INFO` of one node).
    pub fn node_cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// How many keys each primary holds (to see carts spread over the slots).
    pub fn keys_per_primary(&self) -> Vec<u64> {
        self.primary_ports()
            .into_iter()
            .map(|port| cli(port, &["DBSIZE"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

//! The fleet on loopback, without Docker: a real redis-server (or a Sentinel set, or a
//! Redis Cluster), replicas of the release binary, and nginx running the shipped
//! nginx.conf in front of them. It implements
//! [`scenario::Fleet`], so the one elasticity scenario runs against it; the browser test
//! and the benchmark use it too.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::ha::{RedisCluster, SentinelSet};
use crate::nginx::{Balance, Nginx};
use crate::ports::free_port;
use crate::proxy::FaultProxy;
use crate::redis::RedisServer;
use crate::replica::{Replica, ReplicaSpec};
use crate::scenario;

/// What fleet to start.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The elastic-cart binary.
    pub binary: PathBuf,
    /// How many replicas.
    pub replicas: usize,
    /// Sessions in Redis (with an append-only file, so it can restart); `false`: each
    /// replica keeps them in memory.
    pub redis: bool,
    /// Whether Redis keeps an append-only file (so the store can restart with its data).
    pub persist: bool,
    /// nginx in front; `false`: the shop is the first replica.
    pub balancer: bool,
    /// Environment of every replica, besides `REDIS_URL` and `REPLICA_ID`.
    pub env: Vec<(String, String)>,
    /// Replicas reach Redis through a [`FaultProxy`] (plain TCP, no TLS or password).
    pub store_proxy: bool,
    /// A replicated store instead of the one redis-server (with `redis`).
    pub replicated: Option<Replicated>,
    /// How nginx picks a replica (the product: round robin).
    pub balance: Balance,
    /// Replicas connect to the one redis-server as its default user, with every right,
    /// instead of as the product's app user (whose keys must carry the product's prefix):
    /// for the benchmark's stand-in servers, whose keys are their own. Only with the one
    /// redis-server reached directly: not through `store_proxy`, nor on a replicated store.
    pub store_admin: bool,
}

/// The replicated stores a fleet can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    /// A primary, two replicas, three sentinels: `redis-sentinel://`.
    Sentinel,
    /// Three primaries with a replica each: `redis-cluster://`.
    Cluster,
}

impl FleetOptions {
    /// The product: three replicas sharing Redis behind nginx, each with one worker thread
    /// (three replicas on a small host), a 2 s drain.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            replicas: 3,
            redis: true,
            persist: true,
            balancer: true,
            env: vec![
                ("SHUTDOWN_DRAIN_MS".into(), "2000".into()),
                ("WORKER_THREADS".into(), "1".into()),
            ],
            store_proxy: false,
            replicated: None,
            balance: Balance::RoundRobin,
            store_admin: false,
        }
    }

    /// One more variable for every replica (replacing an earlier value).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One place a replica can run: its id and port stay when it is stopped and started.
#[derive(Debug)]
struct Slot {
    id: String,
    port: u16,
    replica: Option<Replica>,
}

/// A running fleet; everything in it stops when it is dropped.
#[derive(Debug)]
pub struct LoopbackFleet {
    /// The shared session store, if the fleet has one.
    pub redis: Option<RedisServer>,
    /// The balancer, if the fleet has one.
    pub nginx: Option<Nginx>,
    /// Between the replicas and Redis, with [`FleetOptions::store_proxy`].
    pub proxy: Option<FaultProxy>,
    /// The Sentinel set, with [`Replicated::Sentinel`].
    pub sentinel: Option<SentinelSet>,
    /// The cluster, with [`Replicated::Cluster`].
    pub cluster: Option<RedisCluster>,
    options: FleetOptions,
    slots: Vec<Slot>,
}

impl LoopbackFleet {
    /// Starts Redis, the replicas (one after the other, each answering before the next)
    /// and nginx.
    pub async fn start(options: FleetOptions) -> Self {
        let (mut sentinel, mut cluster) = (None, None);
        match (options.redis, options.replicated) {
            (true, Some(Replicated::Sentinel)) => sentinel = Some(SentinelSet::start(2, 3).await),
            (true, Some(Replicated::Cluster)) => cluster = Some(RedisCluster::start(3).await),
            _ => {}
        }
        let redis = match (options.redis, options.replicated, options.persist) {
            (true, None, true) => Some(RedisServer::builder().aof().start().await),
            (true, None, false) => Some(RedisServer::start().await),
            _ => None,
        };
        let proxy = match (&redis, options.store_proxy) {
            (Some(redis), true) => Some(FaultProxy::start(redis.port)),
            _ => None,
        };
        let mut fleet = Self {
            redis,
            nginx: None,
            proxy,
            sentinel,
            cluster,
            options,
            slots: Vec::new(),
        };
        for _ in 0..fleet.options.replicas {
            fleet.add_slot().await;
        }
        if fleet.options.balancer {
            let balance = fleet.options.balance;
            fleet.nginx = Some(Nginx::start_balanced(&fleet.live_ports(), balance).await);
        }
        fleet
    }

    /// Where shoppers go: nginx, or the first replica without a balancer.
    pub fn url(&self, path: &str) -> String {
        match &self.nginx {
            Some(nginx) => nginx.url(path),
            None => format!("http://127.0.0.1:{}{path}", self.slots[0].port),
        }
    }

    /// A replica's own address, past the balancer: for what nginx would change.
    pub fn replica_url(&self, id: &str, path: &str) -> String {
        let slot = self
            .slots
            .iter()
            .find(|slot| slot.id == id)
            .unwrap_or_else(|| panic!("no replica {id} in this fleet"));
        format!("http://127.0.0.1:{}{path}", slot.port)
    }

    /// Process ids of the running replicas (for CPU accounting).
    pub fn replica_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .filter_map(|slot| Some(slot.replica.as_ref()?.pid()))
            .collect()
    }

    fn spec(&self, id: &str) -> ReplicaSpec {
        let spec = ReplicaSpec {
            binary: self.options.binary.clone(),
            env: self.options.env.clone(),
            log: None,
            place: None,
        }
        .with("REPLICA_ID", id);
        let url = match (&self.proxy, &self.redis, &self.sentinel, &self.cluster) {
            (Some(proxy), Some(redis), ..) => Some(redis.url_via(proxy.port)),
            (Some(proxy), None, ..) => Some(format!("redis://127.0.0.1:{}", proxy.port)),
            (None, Some(redis), ..) if self.options.store_admin => Some(redis.admin_url()),
            (None, Some(redis), ..) => Some(redis.url()),
            (None, None, Some(sentinel), _) => Some(sentinel.url()),
            (None, None, None, Some(cluster)) => Some(cluster.url()),
            (None, None, None, None) => None,
        };
        match url {
            Some(url) => spec.with("REDIS_URL", &url),
            None => spec,
        }
    }

    async fn add_slot(&mut self) {
        let id = format!("replica-{}", self.slots.len());
        let port = free_port();
        let replica = Replica::start_on(port, &self.spec(&id)).await;
        self.slots.push(Slot {
            id,
            port,
            replica: Some(replica),
        });
    }

    /// The ports of the running replicas (nginx's first list).
    fn live_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter(|slot| slot.replica.is_some())
            .map(|slot| slot.port)
            .collect()
    }

    /// Points nginx at every slot's port, running or not.
    fn reload_balancer(&self) {
        if let Some(nginx) = &self.nginx {
            let ports: Vec<u16> = self.slots.iter().map(|slot| slot.port).collect();
            nginx.set_upstreams(&ports);
        }
    }

    fn slot(&mut self, id: &str) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|slot| slot.id == id)
            .unwrap_or_else(|| panic!("no replica {id} in this fleet"))
    }
}

impl scenario::Fleet for LoopbackFleet {
    fn shop_url(&self) -> String {
        self.url("")
    }

    async fn replicas(&mut self) -> BTreeSet<String> {
        self.slots
            .iter_mut()
            .filter_map(|slot| {
                let replica = slot.replica.as_mut()?;
                replica.try_wait().is_none().then(|| slot.id.clone())
            })
            .collect()
    }

    async fn kill(&mut self, id: &str) {
        let slot = self.slot(id);
        if let Some(mut replica) = slot.replica.take() {
            replica.signal(Signal::SIGKILL);
            replica.wait_for_exit(Duration::from_secs(5)).await;
        }
    }

    async fn stop(&mut self, id: &str) -> Result<(), String> {
        let slot = self.slot(id);
        let Some(mut replica) = slot.replica.take() else {
            return Err(format!("{id} was not running"));
        };
        replica.signal(Signal::SIGTERM);
        let status = replica.wait_for_exit(Duration::from_secs(15)).await;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{id} ended with {status}"))
        }
    }

    async fn start(&mut self, id: &str) {
        let spec = self.spec(id);
        let slot = self.slot(id);
        // A replica that exited by itself (the crash button) is started again too.
        if slot
            .replica
            .as_mut()
            .is_some_and(|replica| replica.try_wait().is_some())
        {
            slot.replica = None;
        }
        if slot.replica.is_none() {
            let port = slot.port;
            slot.replica = Some(Replica::start_on(port, &spec).await);
        }
        // The upstream list already names it (stopped replicas stay in it, as a dead
        // container's DNS name would until it is removed).
    }

    async fn scale(&mut self, n: usize) {
        // Out: stopped slots first, then new ones.
        let stopped: Vec<String> = self
            .slots
            .iter_mut()
            .filter_map(|slot| {
                let gone = slot
                    .replica
                    .as_mut()
                    .is_none_or(|replica| replica.try_wait().is_some());
                gone.then(|| slot.id.clone())
            })
            .collect();
        for id in stopped {
            if self.replicas().await.len() >= n {
                break;
            }
            self.start(&id).await;
        }
        let slots = self.slots.len();
        while self.replicas().await.len() < n {
            self.add_slot().await;
        }
        if self.slots.len() > slots {
            // A reload makes nginx's old workers close their idle client connections, which
            // a client may be writing a request on at that very instant; so it happens only
            // when there are new ports to add, as Docker's DNS would add them.
            self.reload_balancer();
        }
        // In: the newest replicas stop gracefully, all at once, as compose does.
        let mut leaving = Vec::new();
        let running = self.replicas().await.len();
        for slot in self.slots.iter_mut().rev() {
            if leaving.len() + n >= running {
                break;
            }
            let running = slot
                .replica
                .as_mut()
                .is_some_and(|replica| replica.try_wait().is_none());
            if let (true, Some(replica)) = (running, slot.replica.take()) {
                replica.signal(Signal::SIGTERM);
                leaving.push(replica);
            }
        }
        for mut replica in leaving {
            replica.wait_for_exit(Duration::from_secs(15)).await;
        }
        // Removed replicas stay in nginx's list, refusing connections, which nginx passes
        // on (as it does for a container whose name has not yet left Docker's DNS).
    }

    async fn restart_store(&mut self) {
        if let Some(redis) = &mut self.redis {
            redis.restart().await;
        }
    }

    async fn kill_store_primary(&mut self) {
        // The killed node stays down (its data gone): the set goes on with one replica.
        if let Some(sentinel) = &mut self.sentinel {
            sentinel.kill_primary().await;
        } else if let Some(cluster) = &mut self.cluster {
            cluster.kill_primary().await;
        } else {
            panic!("this fleet's store has no replica to take over");
        }
    }
}

//! The servers of one benchmark configuration: a [`testkit::LoopbackFleet`] (redis-server,
//! replicas of the release binary, nginx with the shipped nginx.conf), with what the
//! benchmark reads off it. Stopped when dropped.

use testkit::cpu::CpuProbe;
use testkit::{Balance, FleetOptions, LoopbackFleet, Replicated};

/// Replica settings every configuration shares.
pub(crate) struct ReplicaSettings {
    /// Tokio worker threads per replica; `None`: cores / replicas, at least 1.
    pub worker_threads: Option<usize>,
    pub redis_pool_size: usize,
    pub log: Option<String>,
}

pub(crate) struct Running {
    /// Where the load goes: nginx, or the single replica without it.
    pub target: String,
    pub cpu: CpuProbe,
    pub fleet: LoopbackFleet,
}

/// What to start.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub replicas: usize,
    /// Sessions in Redis (without persistence); else in each replica's memory.
    pub redis: bool,
    /// nginx in front, balancing by `balance`.
    pub nginx: bool,
    pub balance: Balance,
    /// A replicated store instead of one redis-server.
    pub replicated: Option<Replicated>,
    /// `REDIS_WAIT_REPLICAS` of the replicas.
    pub wait_replicas: u32,
    /// Which server the replicas run.
    pub server: Server,
}

/// The replicas' server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// elastic-cart, built with the bench profile (or [`REPLICA_BINARY_ENV`]).
    Product,
    /// The benchmark's minimal server (`bare.rs`, in the benchmark binary itself).
    Bare,
    /// The cart on tower-sessions-redis-store (`benches/stock`, built apart).
    Stock,
}

/// Names another build of elastic-cart to run as the replicas, so that two builds can be
/// measured alternately in one run (see docs/benchmark.md).
pub(crate) const REPLICA_BINARY_ENV: &str = "BENCH_REPLICA_BINARY";

/// The replicas' binary: this tree's, built with the bench profile, unless [`REPLICA_BINARY_ENV`] names
/// another.
fn replica_binary() -> std::path::PathBuf {
    std::env::var_os(REPLICA_BINARY_ENV)
        .map_or_else(|| env!("CARGO_BIN_EXE_elastic-cart").into(), Into::into)
}

/// Starts the replicas, their store and nginx as `shape` says.
pub(crate) fn start(shape: &Shape, settings: &ReplicaSettings) -> Running {
    let Shape {
        replicas,
        redis,
        nginx,
        balance,
        replicated,
        wait_replicas,
        server,
    } = *shape;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker_threads = settings.worker_threads.unwrap_or((cores / replicas).max(1));
    let binary = match server {
        Server::Product => replica_binary(),
        Server::Bare => std::env::current_exe().expect("the benchmark's own path"),
        Server::Stock => crate::stock::binary(),
    };
    let mut options = FleetOptions::new(binary)
        .env("WORKER_THREADS", &worker_threads.to_string())
        .env("REDIS_POOL_SIZE", &settings.redis_pool_size.to_string())
        .env("REDIS_WAIT_REPLICAS", &wait_replicas.to_string());
    options.env.retain(|(key, _)| key != "SHUTDOWN_DRAIN_MS");
    if let Some(log) = &settings.log {
        options = options.env("RUST_LOG", log);
    }
    options.replicas = replicas;
    options.redis = redis;
    options.persist = false;
    options.balancer = nginx;
    options.replicated = replicated;
    options.balance = balance;
    // The stand-ins' keys are not under the product's prefix, which bounds its store user.
    options.store_admin = server != Server::Product;
    if server == Server::Bare {
        options = options.env(crate::bare::ENV, "1");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fleet = runtime.block_on(LoopbackFleet::start(options));
    let mut cpu = CpuProbe::default();
    // Every data node of the store counts as "redis" (the sentinels idle).
    let nodes = fleet
        .redis
        .iter()
        .chain(fleet.sentinel.iter().flat_map(|set| &set.nodes))
        .chain(fleet.cluster.iter().flat_map(|cluster| &cluster.nodes));
    for pid in nodes.filter_map(|node| node.pid()) {
        cpu.processes.push(("redis", pid));
    }
    for pid in fleet.replica_pids() {
        cpu.processes.push(("replicas", pid));
    }
    cpu.nginx_master = fleet.nginx.as_ref().map(|nginx| nginx.pid());
    Running {
        target: fleet.url(""),
        cpu,
        fleet,
    }
}

//! The servers of one benchmark configuration: a [`testkit::LoopbackFleet`] (redis-server,
//! replicas of the release binary, nginx with the shipped nginx.conf), with what the
//! benchmark reads off it. Stopped when dropped.

use testkit::cpu::CpuProbe;
use testkit::{FleetOptions, LoopbackFleet, Replicated};

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

/// Starts `replicas` replicas (with Redis, without persistence, if `redis`; on a
/// replicated store if `replicated`, confirming changes with `wait_replicas` replicas)
/// and nginx in front if `nginx`.
pub(crate) fn start(
    replicas: usize,
    redis: bool,
    nginx: bool,
    replicated: Option<Replicated>,
    wait_replicas: u32,
    settings: &ReplicaSettings,
) -> Running {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker_threads = settings.worker_threads.unwrap_or((cores / replicas).max(1));
    let mut options = FleetOptions::new(env!("CARGO_BIN_EXE_elastic-cart"))
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

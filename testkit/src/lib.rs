//! testkit: the one fixture library of elastic-cart, shared by the integration tests, the
//! end-to-end tests, the benchmark and the fleet scenario (its own binary, for compose).
//!
//! Why a crate of its own rather than a shared test module: the benchmark (`benches/`), the
//! test binaries (`tests/`) and the `fleet-scenario` program all link it, so nothing is
//! included twice with `#[path]` and every fixture exists once. It knows nothing of the
//! application's code: it starts real processes (redis-server, the release binary, nginx)
//! and talks HTTP and Redis to them, so it depends on no crate of ours and builds in
//! parallel with it.
//!
//! # Layout
//!
//! A folder per kind of fixture; every module is also re-exported at the root, so
//! `testkit::redis::RedisServer` and `testkit::scenario::Fleet` name the same things
//! wherever a module lives.
//!
//! - [`system`]: this machine: [`ports`] (loopback ports no other fixture of the process
//!   was given), [`binaries`] (where server binaries are, and the Debian package to
//!   install), [`process`] (a child in its own process group, gone with its children when
//!   dropped, also when a test fails), [`cpu`] (CPU time per process), [`docker`].
//! - [`network`]: [`http`] (clients with and without a cookie jar, small request helpers),
//!   [`tls`] (certificates with rcgen), [`proxy`] (the TCP proxy that injects latency,
//!   stalls and cuts), [`hosts`] (test hosts with addresses of their own, network
//!   namespaces on a bridge, that can go silent, be partitioned, and have the names they
//!   resolve moved).
//! - [`servers`]: [`redis`] (`RedisServer` with a builder: port, TLS, password, AOF, a test
//!   host; `TESTKIT_STORE=valkey` starts Valkey instead, and `TESTKIT_REDIS_LOGS=DIR` keeps
//!   every server's and sentinel's log in `DIR`), [`ha`] (a Sentinel set and a Redis
//!   Cluster, with their faults), [`store_user`] (the app's least-privileged Redis user,
//!   which every store has and every URL for the app names), [`replica`] (the release
//!   binary as a child process),
//!   [`nginx`] (the shipped nginx.conf rewritten for loopback, reloaded when a fleet
//!   changes size).
//! - [`fleets`]: [`fleet`] (Redis, replicas and nginx on loopback), [`host_fleet`] (Redis
//!   nodes, sentinels and replicas on test hosts behind nginx, and ElastiCache's failover
//!   played on them), [`compose`] and [`swarm`] (the container fleets).
//! - [`scenario`]: the kill / drain / scale / rolling-update scenario, written once against
//!   [`scenario::Fleet`], which the loopback fleet, compose and swarm implement;
//!   [`shoppers`] is its checking load, [`checks`] its list of verdicts.
//! - [`loads`]: [`load`] (the benchmark's lean load generator), [`soak`] (the fault
//!   soak and its ledger) and [`flood`] (new sessions from many addresses, as a bot sends
//!   them).

pub mod fleets;
pub mod loads;
pub mod network;
pub mod scenario;
pub mod servers;
pub mod system;

pub use crate::fleets::{compose, fleet, host_fleet, swarm};
pub use crate::loads::{flood, load, soak, two_tabs};
pub use crate::network::{hosts, http, proxy, tls};
pub use crate::scenario::{checks, shoppers};
pub use crate::servers::{ha, nginx, redis, replica, store_user};
pub use crate::system::{binaries, cpu, docker, ports, process};

use std::time::{Duration, Instant};

pub use crate::fleet::{FleetOptions, LoopbackFleet, Replicated};
pub use crate::ha::{RedisCluster, SentinelSet};
pub use crate::nginx::{Balance, Nginx};
pub use crate::ports::{bind_unclaimed_port, free_port};
pub use crate::redis::RedisServer;
pub use crate::replica::Replica;
pub use nix::sys::signal::Signal;

/// Longest a fixture or test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `check` every 50 ms until it is true; panics naming `what` after [`PATIENCE`].
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    if !poll_until(PATIENCE, check).await {
        panic!("timed out after {PATIENCE:?} waiting for {what}");
    }
}

/// Polls `check` every 50 ms until it is true; panics naming `what` after `limit` (for
/// claims of a bound, such as "a killed replica leaves the fleet view within 5 s").
pub async fn eventually_within(what: &str, limit: Duration, check: impl AsyncFnMut() -> bool) {
    if !poll_until(limit, check).await {
        panic!("{what} did not happen within {limit:?}");
    }
}

/// Polls `check` every 50 ms until it is true (then true) or `limit` passes (then false).
pub async fn poll_until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

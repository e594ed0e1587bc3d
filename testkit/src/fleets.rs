//! Whole fleets, store + replicas + balancer: on loopback, on test hosts, and as containers
//! (docker compose, Docker Swarm). The scenario runs against each of them.

pub mod compose;
pub mod fleet;
pub mod host_fleet;
pub mod swarm;

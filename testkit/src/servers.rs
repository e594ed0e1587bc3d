//! One real server each: Redis (or Valkey), the replicated stores (Sentinel, Cluster), the
//! release binary as a replica, and nginx with the shipped nginx.conf.

pub mod ha;
pub mod nginx;
pub mod redis;
pub mod replica;

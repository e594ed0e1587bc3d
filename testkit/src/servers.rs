//! One real server each: Redis (or Valkey), the replicated stores (Sentinel, Cluster), the
//! release binary as a replica, and nginx with the shipped nginx.conf; and the store user
//! the app connects as.

pub mod ha;
pub mod nginx;
pub mod redis;
pub mod replica;
pub mod store_user;

//! The API test binary, in two tiers:
//!
//! - `fast`: replicas in this process with the memory store, driven over HTTP on loopback
//!   (plus the unit tests in `src/`); they need nothing installed and run with a plain
//!   `cargo test`.
//! - `integration`: real redis-server processes, the release binary and nginx with the
//!   shipped nginx.conf. These tests are `#[ignore]`d with the reason "integration tier",
//!   so a plain `cargo test` lists them as skipped instead of failing where the servers are
//!   missing; `cargo xtask test integration` checks the servers once, installs them where it
//!   can, and runs them.
//!
//! One module per concern; fixtures come from `helpers` and the `testkit` crate.

mod binary;
mod cart_api;
mod concurrency;
mod contract;
mod failover;
mod fleet;
mod fleet_view;
mod flood;
mod fuzz;
mod helpers;
mod hosts;
mod metrics;
mod pages;
mod redis_failure;
mod secrets;
mod sessions;
mod store_user;
mod tls;

//! Integration tests: real redis-server processes on loopback, replicas in process and the
//! real binary. One test binary, one module per concern.

mod binary;
mod browser;
mod cart_api;
mod concurrency;
mod fleet;
mod helpers;
mod pages;
mod redis_failure;
mod sessions;
mod tls;

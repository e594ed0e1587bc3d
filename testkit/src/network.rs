//! How the fixtures reach each other: HTTP clients, TLS certificates, a TCP proxy that
//! injects faults (latency, stalls, cuts), and test hosts with addresses of their own.

pub mod hosts;
pub mod http;
pub mod proxy;
pub mod tls;

//! This machine as the fixtures need it: free loopback ports, where server binaries are,
//! child processes that die with their test, CPU time per process, and the Docker CLI.

pub mod binaries;
pub mod cpu;
pub mod docker;
pub mod ports;
pub mod process;

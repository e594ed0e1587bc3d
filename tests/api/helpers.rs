//! Test fixtures: a real `redis-server` on a free loopback port, app replicas in this
//! process (the same `elastic_cart::app` that `main` serves) or as the real binary.
//! Everything a fixture starts is stopped when the fixture is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use elastic_cart::session_store::{RedisSettings, SessionBackend};
use elastic_cart::{AppState, ChangePolicy, serve};
use fred::prelude::{ClientLike, Config as RedisConfig, Pool};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Loopback ports handed out to this test process's fixtures so far.
static CLAIMED_PORTS: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A loopback listener on an ephemeral port that no other fixture of this process has been
/// given. Tests run in parallel and a fixture binds its port some time after choosing it
/// (a child process starts, a fleet starts its replicas one by one, a killed replica is
/// restarted on its old port); without the claim, the kernel could hand the same free port
/// to another test meanwhile, whose server would then answer in this test's place.
pub fn bind_unclaimed_port() -> std::net::TcpListener {
    loop {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
        let port = listener.local_addr().unwrap().port();
        let mut claimed = CLAIMED_PORTS.lock().unwrap();
        if !claimed.contains(&port) {
            claimed.push(port);
            return listener;
        }
    }
}

/// A free loopback port, claimed for the caller (see [`bind_unclaimed_port`]).
pub fn free_port() -> u16 {
    bind_unclaimed_port().local_addr().unwrap().port()
}

/// Fails with the Debian package to install when a server binary is missing.
pub fn require_binary(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let path = Path::new(dir).join(binary);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "`{binary}` not found: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// Polls `check` until it is true or `PATIENCE` runs out.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A `redis-server` of our own on a loopback port, without persistence.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(free_port(), Vec::new()).await
    }

    /// Starts a server on `port` with extra `redis-server` arguments.
    pub async fn start_with(port: u16, extra_args: Vec<String>) -> Self {
        let mut server = Self {
            port,
            child: None,
            extra_args,
        };
        server.launch().await;
        server
    }

    async fn launch(&mut self) {
        let binary = require_binary("redis-server", "redis-server");
        let tls = self.extra_args.iter().any(|arg| arg == "--tls-port");
        let mut command = Command::new(binary);
        if tls {
            command.args(["--port", "0", "--tls-port", &self.port.to_string()]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(self.extra_args.iter().filter(|arg| *arg != "--tls-port"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self
            .child
            .insert(command.spawn().expect("starting redis-server"));
        let port = self.port;
        eventually("redis-server to accept connections", async || {
            // Accepting, and still running: not another server that holds the port.
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
                && child.try_wait().unwrap().is_none()
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Kills the server; its data is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// A connected client for inspecting what the app stored.
    pub async fn client(&self) -> Pool {
        let pool = Pool::new(
            RedisConfig::from_url(&self.url()).unwrap(),
            None,
            None,
            None,
            1,
        )
        .expect("building a test redis client");
        pool.init().await.expect("connecting the test redis client");
        pool
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores SIGKILL until continued on some kernels; wake it first.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// One replica running in this test process.
pub struct TestApp {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// A replica whose sessions live in `redis`.
    pub async fn with_redis(redis_url: &str, replica_id: &str) -> Self {
        Self::with_redis_ttl(redis_url, replica_id, Duration::from_secs(1800)).await
    }

    pub async fn with_redis_ttl(redis_url: &str, replica_id: &str, ttl: Duration) -> Self {
        Self::with_redis_options(redis_url, replica_id, ttl, ChangePolicy::default()).await
    }

    pub async fn with_redis_options(
        redis_url: &str,
        replica_id: &str,
        ttl: Duration,
        changes: ChangePolicy,
    ) -> Self {
        let settings = RedisSettings {
            url: redis_url.to_owned(),
            pool_size: 2,
            command_timeout: COMMAND_TIMEOUT,
        };
        let sessions = SessionBackend::redis(&settings, ttl).expect("a valid redis url");
        Self::spawn(sessions, replica_id, changes).await
    }

    /// A replica with sessions in its own memory.
    pub async fn in_memory(replica_id: &str) -> Self {
        let sessions = SessionBackend::memory(Duration::from_secs(1800));
        Self::spawn(sessions, replica_id, ChangePolicy::default()).await
    }

    async fn spawn(sessions: SessionBackend, replica_id: &str, changes: ChangePolicy) -> Self {
        let listener = bind_unclaimed_port();
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState {
            replica_id: replica_id.into(),
            sessions,
            cookie_secure: false,
            static_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("static").into(),
            drain: Default::default(),
            changes,
            chaos: false,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A redis-server and two replicas sharing it, `replica-a` and `replica-b`.
pub async fn two_replicas() -> (RedisServer, TestApp, TestApp) {
    let redis = RedisServer::start().await;
    let a = TestApp::with_redis(&redis.url(), "replica-a").await;
    let b = TestApp::with_redis(&redis.url(), "replica-b").await;
    (redis, a, b)
}

/// An HTTP client with a cookie jar. Cookies ignore ports, so one client is one visitor
/// across every replica on 127.0.0.1.
pub fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A client without cookies, for requests that carry hand-made ones.
pub fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The session cookie's value in a response, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix(&format!("{}=", elastic_cart::SESSION_COOKIE)))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

/// The real binary, started with the given environment; killed on drop.
pub struct BinaryApp {
    pub addr: SocketAddr,
    pub child: Child,
}

impl BinaryApp {
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(free_port(), env).await
    }

    /// Starts the binary listening on `port` of 127.0.0.1.
    pub async fn start_on(port: u16, env: &[(&str, &str)]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_elastic-cart"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", addr.to_string())
            .env(
                "STATIC_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("static"),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the elastic-cart binary");
        let mut app = Self { addr, child };
        let client = bare_client();
        let healthz = app.url("/healthz");
        // Its own answer, not that of another server holding the port.
        let replica_id = env
            .iter()
            .find(|(key, _)| *key == "REPLICA_ID")
            .map(|(_, id)| *id);
        eventually("the binary to answer /healthz", async || {
            if let Some(status) = app.child.try_wait().unwrap() {
                panic!("the binary exited before answering on {addr}: {status}");
            }
            match client.get(&healthz).send().await {
                Ok(response) => replica_id.is_none_or(|id| {
                    response
                        .headers()
                        .get("x-served-by")
                        .is_some_and(|served_by| served_by == id)
                }),
                Err(_) => false,
            }
        })
        .await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the process to exit, failing the test if it still runs after `limit`.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the binary still runs after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `quantity` of `product` to the JSON API's `items_url` (`.../api/cart/items`) with
/// the visitor's session cookie.
pub async fn add_item(
    shopper: &reqwest::Client,
    items_url: &str,
    product: &str,
    quantity: u32,
) -> reqwest::Response {
    shopper
        .post(items_url)
        .json(&serde_json::json!({"product_id": product, "quantity": quantity}))
        .send()
        .await
        .expect("sending an add")
}

/// GETs `url` and returns its JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// GETs `url` and returns its body as text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

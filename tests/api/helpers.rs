//! What the tests of this binary share: replicas in this process (the same
//! `elastic_cart::app` that `main` serves), the real binary through the test kit, a Redis
//! client for inspecting what the app stored, and the requests several modules send.
//! Servers, ports, signals and HTTP clients come from `testkit`, shared with the benchmark
//! and the end-to-end tests.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use elastic_cart::ChangePolicy;
use elastic_cart::config::Config;
use elastic_cart::session::store::keys::{DEFAULT_KEY_PREFIX, session_key};
use elastic_cart::startup::Application;
use fred::prelude::{ClientLike, Config as RedisConfig, Pool};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub(crate) use testkit::http::{
    add_item, bare_client, get_json, get_text, session_cookie, visitor,
};
pub(crate) use testkit::replica::{Replica, ReplicaSpec};
pub(crate) use testkit::{PATIENCE, RedisServer, bind_unclaimed_port, eventually, free_port};

/// The command timeout of in-process replicas: short, so failure tests stay quick.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// The release binary of this package, as cargo built it for the tests; or another build
/// named by `TEST_REPLICA_BINARY`, to show that a test fails without the change it covers
/// (build the earlier commit in a worktree and point this at its binary).
pub(crate) fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("TEST_REPLICA_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_elastic-cart").to_owned())
    })
}

/// Starts the real binary with `env` on a free port and waits until it answers.
pub(crate) async fn start_binary(env: &[(&str, &str)]) -> Replica {
    Replica::start(&ReplicaSpec::new(binary(), env)).await
}

/// The Redis key of the session whose cookie value is `id` (under the default prefix).
pub(crate) fn record_key(id: &str) -> String {
    let id = id.parse().expect("a session id");
    session_key(DEFAULT_KEY_PREFIX, &id)
}

/// A connected client of `redis` as its default user, for inspecting what the app stored.
pub(crate) async fn redis_client(redis: &RedisServer) -> Pool {
    let config = RedisConfig::from_url(&redis.admin_url()).expect("a valid redis url");
    let pool = Pool::new(config, None, None, None, 1).expect("building a test redis client");
    pool.init().await.expect("connecting the test redis client");
    pool
}

/// The configuration of an in-process replica: the binary's defaults, with a short
/// command timeout, two connections and the repository's static files. Every setting a
/// test depends on is set here, defaults included, since the parse also reads the test
/// process's environment (`REDIS_WAIT_REPLICAS` and the rest).
pub(crate) fn config(redis_url: Option<&str>, replica_id: &str, ttl: Duration) -> Config {
    let mut config = Config::try_parse_from(["elastic-cart"]).expect("the defaults parse");
    config.redis_url = redis_url.map(str::to_owned);
    config.replica_id = Some(replica_id.to_owned());
    config.app_version = None;
    config.session_ttl_secs = ttl.as_secs();
    config.session_cookie_secure = false;
    config.demo_chaos = false;
    config.redis_pool_size = NonZeroUsize::new(2).unwrap();
    config.static_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    config.session_key_prefix = DEFAULT_KEY_PREFIX.to_owned();
    config.redis_wait_replicas = 0;
    config.redis_command_timeout_ms = COMMAND_TIMEOUT.as_millis() as u64;
    config
}

/// One replica running in this test process.
pub(crate) struct TestApp {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// A replica whose sessions live in `redis`.
    pub(crate) async fn with_redis(redis_url: &str, replica_id: &str) -> Self {
        Self::with_redis_ttl(redis_url, replica_id, Duration::from_secs(1800)).await
    }

    pub(crate) async fn with_redis_ttl(redis_url: &str, replica_id: &str, ttl: Duration) -> Self {
        Self::with_redis_options(redis_url, replica_id, ttl, ChangePolicy::default()).await
    }

    pub(crate) async fn with_redis_options(
        redis_url: &str,
        replica_id: &str,
        ttl: Duration,
        changes: ChangePolicy,
    ) -> Self {
        Self::spawn(config(Some(redis_url), replica_id, ttl), changes).await
    }

    /// A replica with sessions in its own memory.
    pub(crate) async fn in_memory(replica_id: &str) -> Self {
        let config = config(None, replica_id, Duration::from_secs(1800));
        Self::spawn(config, ChangePolicy::default()).await
    }

    /// A replica with sessions in its own memory and `SESSION_COOKIE_SECURE=true`.
    pub(crate) async fn in_memory_secure(replica_id: &str) -> Self {
        let mut config = config(None, replica_id, Duration::from_secs(1800));
        config.session_cookie_secure = true;
        Self::spawn(config, ChangePolicy::default()).await
    }

    /// Builds the replica as the binary does (`startup::Application`), on a port no other
    /// fixture was given, and serves its router until dropped. Without the fleet
    /// heartbeats: tests here count the commands a request sends to the store.
    async fn spawn(config: Config, changes: ChangePolicy) -> Self {
        let listener = bind_unclaimed_port();
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let app = Application::build_on(&config, listener)
            .expect("a valid test configuration")
            .with_changes(changes);
        let addr = app.addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.serve_until(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /api/cart`: the shopper's cart as JSON.
    pub(crate) async fn cart(&self, shopper: &reqwest::Client) -> serde_json::Value {
        get_json(shopper, &self.url("/api/cart")).await
    }

    /// `POST /api/cart/items`: adds `quantity` of `product` to the shopper's cart.
    pub(crate) async fn add(
        &self,
        shopper: &reqwest::Client,
        product: &str,
        quantity: u32,
    ) -> reqwest::Response {
        add_item(shopper, &self.url("/api/cart/items"), product, quantity).await
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
pub(crate) async fn two_replicas() -> (RedisServer, TestApp, TestApp) {
    let redis = RedisServer::start().await;
    let a = TestApp::with_redis(&redis.url(), "replica-a").await;
    let b = TestApp::with_redis(&redis.url(), "replica-b").await;
    (redis, a, b)
}

/// How many simultaneous adds [`simultaneous_adds`] sends.
pub(crate) const ADDS: usize = 100;
/// Four products, so that even 200 adds leave every line under its 99-unit limit.
const ADD_PRODUCTS: [&str; 4] = [
    "ceramic-mug",
    "tea-sampler",
    "digital-scale",
    "milk-frother",
];

/// Sends [`ADDS`] simultaneous adds of one unit, round robin over `urls`, with the
/// visitor's session; returns the statuses (502 for a request that got no answer).
pub(crate) async fn simultaneous_adds(
    shopper: &reqwest::Client,
    urls: &[String],
) -> Vec<StatusCode> {
    adds_with_codes(shopper, urls, ADDS)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

/// Sends `count` simultaneous adds of one unit, round robin over `urls`; returns each
/// status with the error code of a failure (502 and no code for no answer at all).
pub(crate) async fn adds_with_codes(
    shopper: &reqwest::Client,
    urls: &[String],
    count: usize,
) -> Vec<(StatusCode, String)> {
    let requests = (0..count).map(|i| async move {
        let body = json!({"product_id": ADD_PRODUCTS[i % ADD_PRODUCTS.len()], "quantity": 1});
        let Ok(response) = shopper.post(&urls[i % urls.len()]).json(&body).send().await else {
            return (StatusCode::BAD_GATEWAY, String::new());
        };
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (status, code)
    });
    join_all(requests).await
}

/// Starts a session with its first add (or adds one unit to the visitor's session).
pub(crate) async fn start_session(shopper: &reqwest::Client, url: &str) {
    let response = add_item(shopper, url, "paper-filters", 1).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A Redis primary and a replica of it, once the replica is in sync (for changes confirmed
/// with `WAIT`).
pub(crate) async fn primary_with_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start().await;
    let follower = RedisServer::builder()
        .arg("--replicaof")
        .arg("127.0.0.1")
        .arg(&primary.port.to_string())
        .start()
        .await;
    eventually("the replica to be in sync", async || {
        follower
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    })
    .await;
    (primary, follower)
}

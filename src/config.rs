//! Configuration, read from the environment (or flags) by clap.
//!
//! Every setting has an environment variable, a default and a line in `--help`, so the
//! same binary runs unchanged on a laptop, in docker compose and behind a load balancer.
//! Invalid values stop the process at start with a message that names the variable.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::Parser;

/// Settings of one replica.
#[derive(Debug, Clone, Parser)]
#[command(name = "elastic-cart", version, about)]
pub struct Config {
    /// Something to do instead of serving (`healthcheck`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3000")]
    pub listen_addr: SocketAddr,

    /// Session store, any URL fred takes: redis://[user:password@]host:port[/db] (rediss://
    /// for TLS), redis-sentinel://host:26379?sentinelServiceName=NAME[&node=host:port...],
    /// redis-cluster://host:port[?node=host:port...], and the rediss-, valkey- and valkeys-
    /// forms of each. Unset: sessions are kept in this process's memory (one replica only).
    #[arg(long, env = "REDIS_URL", value_parser = RedisUrlParser, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Name of this replica, shown on every page and in the X-Served-By header.
    /// Default: the hostname (a container's id in docker compose).
    #[arg(long, env = "REPLICA_ID", value_parser = parse_replica_id)]
    pub replica_id: Option<String>,

    /// The version this replica shows on every page and in /healthz, so a rolling update
    /// can be watched replica by replica. Images set it at build time (the Dockerfile's
    /// APP_VERSION build argument); default: the crate's version.
    #[arg(long, env = "APP_VERSION", value_parser = parse_app_version)]
    pub app_version: Option<String>,

    /// Seconds of inactivity (reads count too) after which a session expires.
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub session_ttl_secs: u64,

    /// Send the session cookie only over HTTPS (set it when TLS ends at the balancer).
    #[arg(long, env = "SESSION_COOKIE_SECURE", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub session_cookie_secure: bool,

    /// Show a "crash this replica" button on every page, which makes the replica exit
    /// abruptly after answering. For demos of elasticity only.
    #[arg(long, env = "DEMO_CHAOS", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub demo_chaos: bool,

    /// Number of Redis connections of this replica. One is usually best: fred pipelines
    /// the commands of all requests over it (measured: more connections, less throughput).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value = "1")]
    pub redis_pool_size: NonZeroUsize,

    /// Threads that serve requests; default: the CPUs this process may use (container CPU
    /// limits included). Replicas sharing a host without CPU limits should split its cores
    /// between them. With 1, the replica runs tokio's single-threaded scheduler, which
    /// batches Redis commands better.
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<NonZeroUsize>,

    /// Directory of the stylesheet and images served under /static.
    #[arg(long, env = "STATIC_DIR", default_value = "static")]
    pub static_dir: std::path::PathBuf,

    /// Milliseconds a cart change may keep retrying against simultaneous changes of the same
    /// session (other tabs, double clicks) before it answers 503.
    #[arg(long, env = "SESSION_CHANGE_WAIT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub session_change_wait_ms: u64,

    /// Milliseconds between SIGTERM and closing the listener, during which responses say
    /// `Connection: close` and /readyz says 503, so a balancer moves away without errors.
    #[arg(long, env = "SHUTDOWN_DRAIN_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=8_000))]
    pub shutdown_drain_ms: u64,

    /// What every Redis key of the app starts with; give each app sharing a Redis its own.
    /// 1 to 64 printable characters, no spaces or braces.
    #[arg(long, env = "SESSION_KEY_PREFIX", default_value = crate::session::store::keys::DEFAULT_KEY_PREFIX,
          value_parser = parse_key_prefix)]
    pub session_key_prefix: String,

    /// Redis replicas that must confirm each change (WAIT) before it is answered, so a
    /// failover cannot lose it; 0 answers once the primary has it. A change not confirmed
    /// in half the command timeout answers 503 `outcome_unknown`.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub redis_wait_replicas: u32,

    /// Percent of the store's maxmemory up to which new sessions (a visitor's first change)
    /// are created; above it they are refused with 429 `too_many_new_sessions`, so the
    /// rest is kept for the carts already there. Each replica reads the store's memory
    /// (INFO memory) every second. 0 switches the check off; a store without maxmemory is
    /// never full.
    #[arg(long, env = "STORE_MEMORY_BUDGET_PERCENT", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub store_memory_budget_percent: u8,

    /// Milliseconds a Redis command may take before the request fails with 503.
    #[arg(long, env = "REDIS_COMMAND_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_command_timeout_ms: u64,
}

/// What to do instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the replica at LISTEN_ADDR answers /healthz (for container health checks).
    Healthcheck,
}

impl Config {
    /// How long a stopping replica keeps answering (with `Connection: close`).
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_ms)
    }

    /// How long a session lives without being read or changed.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    /// Upper bound of one Redis command, and so of a request's wait on a sick Redis.
    pub fn redis_command_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_command_timeout_ms)
    }

    /// Threads to serve with: the configured number, else the CPUs this process may use.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// The replica id to use: the configured one, else the hostname.
    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            parse_replica_id(&host).unwrap_or_else(|_| "replica".to_owned())
        })
    }

    /// The version to show: the configured one, else the crate's.
    pub fn app_version(&self) -> String {
        self.app_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
    }
}

/// The URL schemes of the session store: one server, Sentinel and Cluster, over TCP or
/// TLS, as Redis or Valkey (they mean the same to fred).
const REDIS_SCHEMES: [&str; 12] = [
    "redis",
    "rediss",
    "redis-sentinel",
    "rediss-sentinel",
    "redis-cluster",
    "rediss-cluster",
    "valkey",
    "valkeys",
    "valkey-sentinel",
    "valkeys-sentinel",
    "valkey-cluster",
    "valkeys-cluster",
];

/// Parses `REDIS_URL` with [`parse_redis_url`], and says what is wrong without repeating
/// the value: it may hold the store's password, and clap's own message would quote it.
#[derive(Debug, Clone, Copy)]
struct RedisUrlParser;

impl clap::builder::TypedValueParser for RedisUrlParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refuse = |reason: &str| {
            let name = arg.map_or_else(|| "REDIS_URL".to_owned(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid value for '{name}' (not shown, as it may hold a password): {reason}\n"
                ),
            )
            .with_cmd(cmd)
        };
        let value = value.to_str().ok_or_else(|| refuse("not UTF-8"))?;
        parse_redis_url(value).map_err(|reason| refuse(&reason))
    }
}

/// Accepts only URLs the session store can use, so a typo fails at start, not at the
/// first request: a known scheme, and whatever fred requires of it (a host, a Sentinel
/// service name, ports that are numbers).
fn parse_redis_url(value: &str) -> Result<String, String> {
    let scheme = value.split_once("://").map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|scheme| REDIS_SCHEMES.contains(&scheme)) {
        return Err(format!(
            "expected one of {}:// (see docs/configuration.md, \"Session store URLs and failover\")",
            REDIS_SCHEMES.join("://, ")
        ));
    }
    // fred builds the TLS settings of a rediss URL here, before main names the crypto
    // provider; name it first (idempotent), as rustls cannot pick when two are compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    fred::prelude::Config::from_url(value)
        .map(|_| value.to_owned())
        .map_err(|err| err.details().to_string())
}

fn parse_key_prefix(value: &str) -> Result<String, String> {
    if crate::session::store::keys::is_key_prefix(value) {
        Ok(value.to_owned())
    } else {
        Err("use 1 to 64 printable characters without spaces or braces".to_owned())
    }
}

/// Whether `value` can be a replica id: it goes into an HTTP header and onto pages, so
/// 1 to 64 characters among letters, digits, '-', '_' and '.'.
pub fn is_replica_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A version goes onto pages and into JSON: 1 to 64 characters among letters, digits and
/// `.-_+` (what semantic versions, git hashes and image tags use). An empty value (a
/// Dockerfile build argument left unset) means the default.
fn parse_app_version(value: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+');
    if value.is_empty() {
        Ok(env!("CARGO_PKG_VERSION").to_owned())
    } else if value.len() <= 64 && value.chars().all(allowed) {
        Ok(value.to_owned())
    } else {
        Err("use 1 to 64 characters among letters, digits, '.', '-', '_' and '+'".to_owned())
    }
}

fn parse_replica_id(value: &str) -> Result<String, String> {
    if is_replica_id(value) {
        Ok(value.to_owned())
    } else {
        Err("use 1 to 64 characters among letters, digits, '-', '_' and '.'".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("elastic-cart").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_keep_sessions_in_memory_for_half_an_hour() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr.port(), 3000);
        assert_eq!(config.session_ttl(), Duration::from_secs(1800));
        assert!(config.redis_url.is_none());
        assert!(!config.session_cookie_secure);
    }

    #[test]
    fn worker_threads_default_to_the_available_cpus() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse(&[]).unwrap().worker_threads(), cpus);
        assert_eq!(
            parse(&["--worker-threads", "3"]).unwrap().worker_threads(),
            3
        );
    }

    #[test]
    fn rejects_a_redis_url_with_another_scheme() {
        let error = parse(&["--redis-url", "http://localhost:6379"]).unwrap_err();
        assert!(error.to_string().contains("redis://"), "{error}");
        assert!(parse(&["--redis-url", "rediss://u:p@cache:6380"]).is_ok());
    }

    #[test]
    fn takes_every_url_form_of_the_session_store() {
        for url in [
            "redis://cache:6379/1",
            "valkeys://user:secret@cache:6380",
            "redis-sentinel://s1:26379?sentinelServiceName=carts&node=s2:26379&node=s3:26379",
            "rediss-sentinel://u:p@s1:26379/0?sentinelServiceName=carts&sentinelUsername=su&sentinelPassword=sp",
            "rediss-cluster://clustercfg.carts.abc123.euw1.cache.amazonaws.com:6379",
            "valkey-cluster://n1:7000?node=n2:7001",
        ] {
            assert!(parse(&["--redis-url", url]).is_ok(), "{url}");
        }
    }

    #[test]
    fn names_redis_url_for_a_url_the_store_cannot_use() {
        for url in [
            "redis-sentinel://s1:26379",
            "redis://cache:notaport",
            "memcached://cache:11211",
            "redis-cluster://",
        ] {
            let error = parse(&["--redis-url", url]).unwrap_err().to_string();
            assert!(error.contains("--redis-url"), "{url}: {error}");
        }
    }

    #[test]
    fn a_refused_redis_url_is_not_repeated_with_its_password() {
        for url in [
            "redis://app:hunter2-secret@cache:notaport",
            "http://app:hunter2-secret@cache:6379",
            "redis-sentinel://app:hunter2-secret@s1:26379",
        ] {
            let error = parse(&["--redis-url", url]).unwrap_err().to_string();
            assert!(error.contains("--redis-url"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn key_prefix_defaults_to_the_app_and_refuses_braces() {
        assert_eq!(parse(&[]).unwrap().session_key_prefix, "elastic-cart:");
        assert!(parse(&["--session-key-prefix", "shop{1}:"]).is_err());
        assert!(parse(&["--session-key-prefix", ""]).is_err());
        assert_eq!(
            parse(&["--session-key-prefix", "shop-eu:"])
                .unwrap()
                .session_key_prefix,
            "shop-eu:"
        );
        assert!(parse(&["--redis-wait-replicas", "17"]).is_err());
    }

    #[test]
    fn app_version_defaults_to_the_crate_and_refuses_markup() {
        let crate_version = env!("CARGO_PKG_VERSION");
        assert_eq!(parse(&[]).unwrap().app_version(), crate_version);
        assert_eq!(
            parse(&["--app-version", ""]).unwrap().app_version(),
            crate_version
        );
        let tagged = parse(&["--app-version", "1.4.0+g3a9c1e"]).unwrap();
        assert_eq!(tagged.app_version(), "1.4.0+g3a9c1e");
        assert!(parse(&["--app-version", "<b>2</b>"]).is_err());
        assert!(parse(&["--app-version", &"9".repeat(65)]).is_err());
    }

    #[test]
    fn rejects_replica_ids_that_cannot_be_a_header() {
        assert!(parse(&["--replica-id", "app 1"]).is_err());
        assert!(parse(&["--replica-id", "app-1.local"]).is_ok());
    }

    #[test]
    fn rejects_a_zero_pool_zero_workers_and_a_tiny_ttl() {
        assert!(parse(&["--redis-pool-size", "0"]).is_err());
        assert!(parse(&["--worker-threads", "0"]).is_err());
        assert!(parse(&["--session-ttl-secs", "5"]).is_err());
    }
}

//! The store's connections: a pool that reconnects forever, every wait bounded by the
//! command timeout (connect, TCP user timeout, keepalive, fred's unresponsive check), the
//! errors of a failover that make a connection reconnect, how the readiness probe tells an
//! error reply from no reply, and the replacement of the whole pool when the
//! [`watchdog`](super::super::watchdog) finds it stuck.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use fred::prelude::{Builder, ClientLike, Config as RedisConfig, Pool, ReconnectPolicy};
use fred::socket2::TcpKeepalive;
use fred::types::config::{ReconnectError, TcpConfig};

use crate::session::store::watchdog;

/// Settings for connecting to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The store's URL (one server, Sentinel or Cluster; see `Config::redis_url`), with
    /// credentials if any.
    pub url: String,
    /// Connections of this replica; fred pipelines commands over each.
    pub pool_size: usize,
    /// Longest any one command may take before the request answers 503.
    pub command_timeout: Duration,
    /// What every key of the app starts with.
    pub key_prefix: String,
    /// Replicas that must confirm a change (`WAIT`) before it is answered; 0: none.
    pub wait_replicas: u32,
    /// Percent of the store's `maxmemory` up to which new sessions are created; 0: no
    /// limit (see `store::budget`).
    pub memory_budget_percent: u8,
}

/// Replaces the pool behind `pool` (if the store still exists) with a new one built from
/// `settings`, and closes the old one in the background.
pub(super) fn replace_pool(pool: &Weak<ArcSwap<Pool>>, settings: &RedisSettings) {
    let Some(pool) = pool.upgrade() else {
        return;
    };
    let fresh = match build_pool(settings) {
        Ok(fresh) => fresh,
        Err(err) => {
            tracing::warn!(%err, "could not build new session store connections");
            return;
        }
    };
    tracing::warn!(
        after_secs = watchdog::STUCK_AFTER.as_secs(),
        "the session store has not answered: replacing its connections, looking its address up afresh"
    );
    fresh.connect();
    let old = pool.swap(Arc::new(fresh));
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), old.quit()).await;
    });
}

pub(super) fn build_pool(settings: &RedisSettings) -> Result<Pool, fred::error::Error> {
    let timeouts = ConnectionTimeouts::of(settings.command_timeout);
    Builder::from_config(RedisConfig::from_url(&settings.url)?)
        .with_config(|config| {
            // Run the reconnect policy for the first connection too, instead of failing.
            config.fail_fast = false;
        })
        .with_performance_config(|perf| perf.default_command_timeout = settings.command_timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = timeouts.connect;
            conn.internal_command_timeout = timeouts.connect;
            // A server that stops answering while the network still acknowledges (a paused
            // process, a proxy that holds bytes back) is left once no reply came for this
            // long after the last command: fred measures from the latest write, so this
            // catches a quiet connection, not a busy one (see the TCP settings below).
            conn.unresponsive.max_timeout = Some(timeouts.unresponsive);
            conn.unresponsive.interval = timeouts.unresponsive_check;
            // A host that vanishes without a reset (power lost, an instance terminated, a
            // failover that leaves the old primary's address silent) is noticed by the
            // kernel: data unacknowledged for `user_timeout` ends the connection, and so do
            // keepalive probes unanswered on an idle one. fred then reconnects, resolving
            // the store's name again (ElastiCache moves its primary endpoint's name).
            conn.tcp = TcpConfig {
                keepalive: Some(
                    TcpKeepalive::new()
                        .with_time(timeouts.keepalive_idle)
                        .with_interval(timeouts.keepalive_interval)
                        .with_retries(KEEPALIVE_PROBES),
                ),
                user_timeout: Some(timeouts.user),
                ..TcpConfig::default()
            };
            // What a failover answers for a while: reconnect, which finds the new primary
            // (Sentinel, cluster slots) and retries the command there.
            conn.reconnect_errors = vec![
                ReconnectError::ReadOnly,
                ReconnectError::ClusterDown,
                ReconnectError::Loading,
                ReconnectError::MasterDown,
                ReconnectError::Custom("TRYAGAIN"),
            ];
        })
        // Retry forever (0 attempts = no limit), 100 ms doubling up to 1 s between tries.
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            100,
            timeouts.max_reconnect_delay.as_millis() as u32,
            2,
        ))
        .build_pool(settings.pool_size)
}

/// Unanswered keepalive probes after which an idle connection is given up.
const KEEPALIVE_PROBES: u32 = 3;

/// How long each stage of a connection may take, all derived from the command timeout
/// (`REDIS_COMMAND_TIMEOUT_MS`, 1 s by default) so that one setting bounds them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionTimeouts {
    /// Opening a connection (TCP, TLS, `AUTH`, `HELLO`): twice the command timeout, at
    /// least 1 s. A connect to a silent address waits this long before the next try (which
    /// resolves the name again), so it bounds how long a replica stays on a name's old
    /// address; a TLS handshake in the same region takes milliseconds.
    connect: Duration,
    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged by the peer's
    /// kernel before the connection is ended: twice the command timeout, at least 1 s. The
    /// peer's kernel acknowledges even while Redis is busy (a long `WAIT`, a slow script),
    /// so only a lost network or host reaches it; a retransmission or two on a lossy link
    /// stays well below it.
    user: Duration,
    /// fred's own check: no reply for this long after the last command (twice the command
    /// timeout).
    unresponsive: Duration,
    /// How often fred runs that check.
    unresponsive_check: Duration,
    /// Idle time before the first keepalive probe, and the time between probes: an idle
    /// connection to a vanished host is ended within idle + probes × interval (the user
    /// timeout ends it sooner when set, as Linux applies it to probes too).
    keepalive_idle: Duration,
    keepalive_interval: Duration,
    /// Longest pause between reconnect attempts.
    max_reconnect_delay: Duration,
}

impl ConnectionTimeouts {
    fn of(command_timeout: Duration) -> Self {
        let at_least_a_second = (command_timeout * 2).max(Duration::from_secs(1));
        Self {
            connect: at_least_a_second,
            user: at_least_a_second,
            unresponsive: command_timeout * 2,
            unresponsive_check: (command_timeout / 2).max(Duration::from_millis(50)),
            keepalive_idle: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// Whether `err` is the store's own error reply (`LOADING ...`, `READONLY ...`, `OOM ...`,
/// `CLUSTERDOWN ...`: a code in capitals, then the message), rather than no reply at all.
/// A refused password is a reply too, but one that leaves this replica unable to use the
/// store: not counted.
pub(super) fn is_error_reply(err: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    let code = err.details().split_whitespace().next().unwrap_or("");
    matches!(err.kind(), ErrorKind::Unknown | ErrorKind::Cluster)
        && code.len() >= 2
        && code.chars().all(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's error replies count as reached; no reply, a timeout or a refused
    /// password do not.
    #[test]
    fn error_replies_are_told_from_no_reply() {
        use fred::error::{Error, ErrorKind};
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert!(
                is_error_reply(&Error::new(ErrorKind::Unknown, reply)),
                "{reply}"
            );
        }
        assert!(is_error_reply(&Error::new(
            ErrorKind::Cluster,
            "CLUSTERDOWN The cluster is down"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Timeout,
            "Request timed out."
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::IO,
            "Connection reset"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Auth,
            "WRONGPASS invalid"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Unknown,
            "no connection"
        )));
    }

    /// Every stage of a connection is bounded by the command timeout: at the default 1 s a
    /// silent host is left within 2 s of its last acknowledged byte, a connect to a silent
    /// address gives up after 2 s, and reconnects come at least once a second.
    #[test]
    fn connection_timeouts_follow_the_command_timeout() {
        let default = ConnectionTimeouts::of(Duration::from_secs(1));
        assert_eq!(default.user, Duration::from_secs(2));
        assert_eq!(default.connect, Duration::from_secs(2));
        assert_eq!(default.unresponsive, Duration::from_secs(2));
        assert_eq!(default.unresponsive_check, Duration::from_millis(500));
        assert_eq!(default.max_reconnect_delay, Duration::from_secs(1));
        // A tiny command timeout does not make the kernel give up on a healthy but lossy
        // link, nor a TLS handshake fail.
        let tiny = ConnectionTimeouts::of(Duration::from_millis(20));
        assert_eq!(tiny.user, Duration::from_secs(1));
        assert_eq!(tiny.connect, Duration::from_secs(1));
        assert_eq!(tiny.unresponsive_check, Duration::from_millis(50));
    }
}

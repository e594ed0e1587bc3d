//! The last resort of the Redis store's self-healing: when no command has had an answer for
//! [`STUCK_AFTER`] while commands kept failing, the whole connection pool is replaced by a
//! new one, built from the configuration as at start.
//!
//! The kernel ends a connection to a host that went silent (`TCP_USER_TIMEOUT`, see the
//! pool's settings), and fred then reconnects. Two cases remain where fred keeps failing
//! forever on its own:
//!
//! - **A Sentinel set whose sentinels moved.** After each connection fred keeps the
//!   addresses the sentinel it asked gives of its *peers*, and from then on asks only
//!   those, never the configured ones again. Sentinels replaced since (Swarm or Kubernetes
//!   tasks, on new addresses) leave it asking addresses that are gone, for good: seen in
//!   the Swarm Sentinel run, all three replicas answering 503 for over a minute after a
//!   failover the sentinels had long finished. A new pool asks the configured address
//!   (a DNS name, resolved again) first.
//! - **A peer that acknowledges but never answers** (a proxy in front of Redis whose backend
//!   is gone): the kernel is satisfied, and fred's unresponsive check measures from the
//!   latest write, which steady traffic renews.
//!
//! Every store operation reports whether the store answered (`Store::timed`); the fleet's
//! heartbeat, once a second, makes sure there is something to report. A store that is
//! merely down (restarting, failing over) gets a new pool every [`STUCK_AFTER`] while it
//! stays down, which costs a few connects and no request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long commands may go without any answer from the store before the pool is replaced;
/// also the least time between two replacements. Longer than a failover takes to settle
/// (Sentinel's or ElastiCache's few seconds, with fred reconnecting meanwhile), short enough
/// that a stuck replica comes back within seconds rather than never.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(10);

/// How often the watchdog looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// When the store last answered a command, and when a command last got no answer.
#[derive(Debug)]
pub(super) struct Health {
    since: Instant,
    /// Milliseconds after `since` of the last answer (a reply, an error reply included).
    answered_ms: AtomicU64,
    /// Milliseconds after `since` of the last command without an answer.
    unanswered_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            answered_ms: AtomicU64::new(0),
            unanswered_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    /// A command was answered.
    pub(super) fn answered(&self) {
        self.answered_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A command got no answer (a timeout, a lost or refused connection).
    pub(super) fn unanswered(&self) {
        self.unanswered_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long commands have gone unanswered, if the latest one did: the time since the
    /// last answer (or since the start, if there never was one).
    fn stuck_for(&self) -> Option<Duration> {
        let answered = self.answered_ms.load(Ordering::Relaxed);
        let unanswered = self.unanswered_ms.load(Ordering::Relaxed);
        (unanswered > answered)
            .then(|| Duration::from_millis(self.now_ms().saturating_sub(answered)))
    }

    /// Starts afresh: a new pool gets [`STUCK_AFTER`] of its own.
    fn restart(&self) {
        self.answered();
    }
}

/// Looks every second, while `health` lives, and calls `replace` when the store has been
/// unanswering for [`STUCK_AFTER`].
pub(super) fn spawn(health: Weak<Health>, replace: impl Fn() + Send + 'static) {
    tokio::spawn(async move {
        let mut looks = tokio::time::interval(LOOK_EVERY);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            looks.tick().await;
            let Some(health) = health.upgrade() else {
                return;
            };
            if needs_replacing(&health) {
                replace();
            }
        }
    });
}

/// Whether the pool is to be replaced now; if so, the watch starts afresh.
fn needs_replacing(health: &Arc<Health>) -> bool {
    let stuck = health.stuck_for().is_some_and(|stuck| stuck >= STUCK_AFTER);
    if stuck {
        health.restart();
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a run of unanswered commands as long as [`STUCK_AFTER`] replaces the pool; an
    /// answer in between, or a store nobody asks, does not.
    #[test]
    fn replaces_only_after_a_stuck_spell() {
        let back = Duration::from_secs(30);
        let health = Arc::new(Health {
            since: Instant::now() - back,
            ..Health::default()
        });
        assert!(!needs_replacing(&health), "nobody asked");
        health
            .answered_ms
            .store(back.as_millis() as u64 - 12_000, Ordering::Relaxed);
        health.unanswered();
        assert!(needs_replacing(&health), "12 s without an answer");
        assert!(!needs_replacing(&health), "a new pool gets its own time");
        health
            .answered_ms
            .store(back.as_millis() as u64 - 5_000, Ordering::Relaxed);
        health.unanswered();
        assert!(!needs_replacing(&health), "5 s without an answer");
        health.unanswered();
        health.answered();
        assert!(!needs_replacing(&health), "answered since");
    }
}

//! The store's memory budget for new sessions: what keeps a flood of new sessions from
//! filling the store that live carts need.
//!
//! The compose Redis runs with `noeviction` (a live cart is never dropped silently), so a
//! full store refuses every write: every shopper's change would answer 503. A session is
//! created by the first change of a visitor without one, and that is all a flood has to
//! send; so each replica reads the store's memory every second (`INFO memory`, one command
//! per replica and second, never one per request) and, while its used memory is above
//! `STORE_MEMORY_BUDGET_PERCENT` of its `maxmemory`, refuses to create sessions (429
//! `too_many_new_sessions`). Changes of existing sessions go on: the rest of the memory is
//! theirs. Without a fresh reading (a store without `maxmemory`, `INFO` refused, the store
//! unreachable) nothing is refused here: the budget only ever narrows what the store would
//! accept anyway. docs/design.md ("Abuse: a flood of new sessions") has the whole design.
//!
//! A leaf: plain data and functions, read by the store (which keeps one [`Budget`]) and
//! unit-tested here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often each replica reads the store's memory.
pub const READ_EVERY: Duration = Duration::from_secs(1);

/// A reading older than this no longer counts (the store stopped answering `INFO`).
const FRESH_FOR: Duration = Duration::from_secs(5);

/// What the store says of its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `used_memory`: bytes the store's data and buffers take.
    pub used: u64,
    /// `maxmemory`: the ceiling; 0 if the store has none.
    pub max: u64,
}

impl Usage {
    /// Reads `used_memory` and `maxmemory` from the text of `INFO memory`. `None` if
    /// either is missing.
    pub fn from_info(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .filter_map(|line| line.trim_end().split_once(':'))
                .find(|(key, _)| *key == name)
                .and_then(|(_, value)| value.parse::<u64>().ok())
        };
        Some(Self {
            used: field("used_memory")?,
            max: field("maxmemory")?,
        })
    }

    /// The fuller of two stores' usages (the shards of a cluster: a new session lands on
    /// any of them, so the fullest decides).
    pub fn fuller(self, other: Self) -> Self {
        let share = |usage: Self| {
            if usage.max == 0 {
                0.0
            } else {
                usage.used as f64 / usage.max as f64
            }
        };
        if share(other) > share(self) {
            other
        } else {
            self
        }
    }

    /// Whether a new session may be created at this usage, with new sessions allowed up to
    /// `percent` of the ceiling (0: no budget).
    pub fn admits_new_session(self, percent: u8) -> bool {
        if percent == 0 || self.max == 0 {
            return true;
        }
        u128::from(self.used) * 100 < u128::from(self.max) * u128::from(percent)
    }
}

/// The latest reading of the store's memory, shared by every request of a replica.
#[derive(Debug)]
pub struct Budget {
    /// Percent of `maxmemory` up to which new sessions are created; 0: always.
    percent: u8,
    used: AtomicU64,
    max: AtomicU64,
    /// When the reading was taken, in ms since the epoch; 0: never.
    read_at_ms: AtomicU64,
}

impl Budget {
    /// A budget allowing new sessions up to `percent` of the store's `maxmemory`.
    pub fn new(percent: u8) -> Self {
        Self {
            percent,
            used: AtomicU64::new(0),
            max: AtomicU64::new(0),
            read_at_ms: AtomicU64::new(0),
        }
    }

    /// Keeps a fresh reading.
    pub fn record(&self, usage: Usage) {
        self.used.store(usage.used, Ordering::Relaxed);
        self.max.store(usage.max, Ordering::Relaxed);
        self.read_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether a new session may be created now: yes unless a fresh reading says the
    /// store is above the budget.
    pub fn admits_new_session(&self) -> bool {
        self.admits_at(now_ms())
    }

    fn admits_at(&self, now_ms: u64) -> bool {
        let read_at = self.read_at_ms.load(Ordering::Relaxed);
        let fresh = read_at != 0 && now_ms.saturating_sub(read_at) <= FRESH_FOR.as_millis() as u64;
        !fresh
            || Usage {
                used: self.used.load(Ordering::Relaxed),
                max: self.max.load(Ordering::Relaxed),
            }
            .admits_new_session(self.percent)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:26843545\r\nused_memory_human:25.60M\r\n\
                        used_memory_rss:30000000\r\nmaxmemory:33554432\r\n\
                        maxmemory_human:32.00M\r\nmaxmemory_policy:noeviction\r\n";

    #[test]
    fn reads_used_and_max_memory_from_info() {
        assert_eq!(
            Usage::from_info(INFO),
            Some(Usage {
                used: 26_843_545,
                max: 33_554_432
            })
        );
        assert_eq!(Usage::from_info("# Memory\r\nused_memory:1\r\n"), None);
    }

    #[test]
    fn new_sessions_stop_at_the_budget() {
        let usage = |used| Usage { used, max: 1000 };
        assert!(usage(849).admits_new_session(85));
        assert!(!usage(850).admits_new_session(85));
        assert!(!usage(1200).admits_new_session(85));
        // No ceiling, or no budget: never refused here.
        assert!(Usage { used: 10, max: 0 }.admits_new_session(85));
        assert!(usage(999).admits_new_session(0));
    }

    #[test]
    fn the_fullest_shard_decides() {
        let a = Usage { used: 50, max: 100 };
        let b = Usage { used: 90, max: 200 };
        let c = Usage { used: 95, max: 100 };
        assert_eq!(a.fuller(b), a);
        assert_eq!(a.fuller(c), c);
        assert_eq!(Usage { used: 5, max: 0 }.fuller(a), a);
    }

    #[test]
    fn only_a_fresh_reading_refuses() {
        let budget = Budget::new(85);
        assert!(budget.admits_at(1_000_000), "no reading yet");
        budget.record(Usage { used: 90, max: 100 });
        let read_at = budget.read_at_ms.load(Ordering::Relaxed);
        assert!(!budget.admits_at(read_at + 1000));
        assert!(budget.admits_at(read_at + FRESH_FOR.as_millis() as u64 + 1));
        budget.record(Usage { used: 10, max: 100 });
        assert!(budget.admits_at(read_at + 1000));
    }
}

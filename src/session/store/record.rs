//! What a stored session is, for the store and both its kinds: the values it holds, a
//! snapshot that remembers the exact bytes a compare-and-set compares, when a read moves
//! the expiry, and how long a retired record lives on. A leaf under the store, so that
//! the Redis and memory stores need nothing of the module that chooses between them.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value as Json;
use time::OffsetDateTime;
use tower_sessions::session::Record;

/// How long a record outlives its `SessionStore::delete` in Redis: it is retired, not
/// deleted at once. tower-sessions deletes the old record when a session moves to a new id (a
/// checkout's `cycle_id`) before the new record is written, at the end of the request;
/// deleted at once, a checkout whose new record then failed (a lost connection, too few
/// replicas confirming it) had closed the cart and lost the order's confirmation, as the
/// retry found nothing. Retired, the old record keeps its checked-out mark, which holds
/// the order, long enough for the visitor's retry to finish the checkout.
pub const RETIRED_FOR: Duration = Duration::from_secs(60);

/// The values a session holds, by key.
pub type Data = HashMap<String, Json>;

/// A session record as read, with what a compare-and-set needs to detect a change since.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The record as decoded.
    pub record: Record,
    /// The stored bytes (Redis); empty for the memory store, which compares records.
    pub(super) stored: bytes::Bytes,
}

/// Whether a record expiring at `expiry_date` should have its expiry moved now: when less
/// than half of the TTL remains.
pub(super) fn needs_refresh(
    expiry_date: OffsetDateTime,
    now: OffsetDateTime,
    ttl: Duration,
) -> bool {
    expiry_date - now < ttl / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1800);

    #[test]
    fn refreshes_only_past_half_the_ttl() {
        let now = OffsetDateTime::now_utc();
        assert!(!needs_refresh(now + TTL, now, TTL));
        assert!(!needs_refresh(
            now + TTL / 2 + Duration::from_secs(1),
            now,
            TTL
        ));
        assert!(needs_refresh(
            now + TTL / 2 - Duration::from_secs(1),
            now,
            TTL
        ));
    }
}

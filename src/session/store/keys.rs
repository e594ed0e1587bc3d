//! The names of every key the app writes, all under one prefix (`SESSION_KEY_PREFIX`).
//!
//! A prefix lets apps share one Redis (an ElastiCache cluster, say) without colliding, and
//! lets an ACL key pattern (`~elastic-cart:*`) fence the app in. A session's keys put its
//! id in braces, Redis Cluster's hash tag, so the record and its change markers (see
//! `session::markers`) live in one slot and a script may touch both; the prefix itself may
//! hold no braces, so the tag is always ours.

use tower_sessions::session::Id;

/// The prefix when none is configured: it names the app.
pub const DEFAULT_KEY_PREFIX: &str = "elastic-cart:";

/// Whether `value` can prefix the app's keys: 1 to 64 printable ASCII characters without
/// spaces or braces (which would change the cluster slot of every key).
pub fn is_key_prefix(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '{' | '}'))
}

/// The key of session `id`'s record: `<prefix>session:{<id>}`.
pub fn session_key(prefix: &str, id: &Id) -> String {
    use std::fmt::Write as _;
    // Built in place, one allocation of the final size: every request with a session
    // makes one.
    const SESSION: &str = "session:{";
    const ID_CHARS: usize = 22;
    let mut key = String::with_capacity(prefix.len() + SESSION.len() + ID_CHARS + 1);
    key.push_str(prefix);
    key.push_str(SESSION);
    let _ = write!(key, "{id}");
    key.push('}');
    key
}

/// The hash of the fleet's heartbeats, one field per replica: `<prefix>fleet`.
pub(super) fn fleet_key(prefix: &str) -> String {
    format!("{prefix}fleet")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::markers::{ChangeToken, applied_key};

    fn hash_tag(key: &str) -> Option<&str> {
        let (_, rest) = key.split_once('{')?;
        rest.split_once('}').map(|(tag, _)| tag)
    }

    #[test]
    fn a_session_and_its_markers_share_one_cluster_slot() {
        let id = Id::default();
        let record = session_key(DEFAULT_KEY_PREFIX, &id);
        let marker = applied_key(DEFAULT_KEY_PREFIX, &id, &ChangeToken::random());
        assert!(record.starts_with(DEFAULT_KEY_PREFIX));
        assert!(marker.starts_with(DEFAULT_KEY_PREFIX));
        assert_eq!(record, format!("{DEFAULT_KEY_PREFIX}session:{{{id}}}"));
        assert_eq!(hash_tag(&record), Some(id.to_string().as_str()));
        assert_eq!(hash_tag(&record), hash_tag(&marker));
        assert_eq!(
            fred::util::redis_keyslot(record.as_bytes()),
            fred::util::redis_keyslot(marker.as_bytes())
        );
    }

    #[test]
    fn prefixes_may_not_move_the_hash_tag_or_hold_spaces() {
        assert!(is_key_prefix("shop-eu:"));
        assert!(is_key_prefix(DEFAULT_KEY_PREFIX));
        for bad in ["", "a{b}:", "with space:", "tab\t", &"x".repeat(65)] {
            assert!(!is_key_prefix(bad), "{bad:?}");
        }
    }
}

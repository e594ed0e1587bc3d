//! Which changes a session already holds, so that no change is applied twice.
//!
//! The Redis client resends a command that was in flight when its connection dropped. For
//! a compare-and-set that had already written, the resent copy used to find the record
//! changed (by its own write, and maybe by others since), take that for a lost race, and
//! the change was then applied again on the next attempt: 201 units for 200 adds under
//! `CLIENT KILL`. Every change therefore carries a [`ChangeToken`], and the same
//! compare-and-set that writes the record also leaves a short-lived marker key for the
//! token ([`applied_key`]); a copy that finds the marker answers "already applied".
//!
//! The marker is a key of its own rather than a list inside the record: a resend can
//! arrive after any number of other changes of a busy session, and a list that kept
//! enough tokens for that made every compare-and-set send a record of kilobytes (the
//! benchmark's changes-own fell from about 14,500 to 4,000-5,500 changes/s). Its name
//! carries the session id as a hash tag, so it lives in the session key's cluster slot.

use std::time::Duration;

use tower_sessions::session::Id;

/// How long a change's marker lives: longer than any resend can come (the command
/// timeout, the reconnect's backoff) and than a change keeps retrying.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(30);

/// What identifies one change across every attempt and every resend of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeToken(String);

impl ChangeToken {
    /// A fresh token: 64 random bits.
    pub(crate) fn random() -> Self {
        Self(format!("{:016x}", fastrand::u64(..)))
    }
}

/// The marker key of change `token` of session `id`: `<prefix>applied:{<id>}:<token>`, in
/// the session key's cluster slot (the part in braces is what Redis Cluster hashes; the
/// session key is `<prefix>session:{<id>}`, see `store::keys`).
pub(crate) fn applied_key(prefix: &str, id: &Id, token: &ChangeToken) -> String {
    format!("{prefix}applied:{{{id}}}:{}", token.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_unique_and_hash_with_their_session() {
        let id = Id::default();
        let (first, second) = (ChangeToken::random(), ChangeToken::random());
        assert_ne!(
            applied_key("p:", &id, &first),
            applied_key("p:", &id, &second)
        );
        let key = applied_key("p:", &id, &first);
        assert!(key.starts_with("p:applied:"), "{key}");
        let tag = key
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'));
        assert_eq!(tag.map(|(tag, _)| tag.to_owned()), Some(id.to_string()));
    }
}

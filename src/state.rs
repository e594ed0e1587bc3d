//! What every request handler can reach. It lives apart from `lib.rs` so that the routes
//! and the session layer depend on it without reaching back up to the crate root.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::fleet::Presence;
use crate::metrics::Metrics;
use crate::session::store::SessionBackend;
use crate::shutdown::Drain;

/// The state shared by every handler of one replica; cloned per request, so its fields
/// are cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This replica's name, shown on pages and in `X-Served-By`.
    pub replica_id: Arc<str>,
    /// The version this replica runs (`APP_VERSION`), shown on pages and in `/healthz`.
    pub version: Arc<str>,
    /// Where sessions live.
    pub sessions: SessionBackend,
    /// Whether the session cookie is sent over HTTPS only.
    pub cookie_secure: bool,
    /// Directory of the files served under `/static`.
    pub static_dir: Arc<Path>,
    /// Set when the replica is stopping, so it can leave the balancer without errors.
    pub drain: Drain,
    /// How changes of existing sessions are made.
    pub changes: ChangePolicy,
    /// Whether pages offer the "crash this replica" button (demos only).
    pub chaos: bool,
    /// What this replica counts for `GET /metrics` (the session store counts into it too).
    pub metrics: Metrics,
    /// When this replica started and its request rate, for the fleet view.
    pub presence: Arc<Presence>,
}

/// How changes of an existing session are made.
#[derive(Debug, Clone, Copy)]
pub struct ChangePolicy {
    /// Longest a change keeps retrying against competing changes before it answers 503.
    pub max_wait: Duration,
    /// `true` in production. `false` makes changes plain tower-sessions read-modify-writes,
    /// which lose updates when they overlap; it exists so tests can show that loss.
    pub serialised: bool,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(5),
            serialised: true,
        }
    }
}

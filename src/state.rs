//! What every request handler can reach. It lives apart from `lib.rs` so that the routes
//! and the session layer depend on it without reaching back up to the crate root.

use std::path::Path;
use std::sync::Arc;

use crate::fleet::{self, Presence};
use crate::metrics::Metrics;
use crate::session::store::Store;
use crate::session::{ChangePolicy, SessionState};
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
    pub store: Store,
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

impl AppState {
    /// What the fleet view needs of this replica.
    pub fn local(&self) -> fleet::Local {
        fleet::Local {
            replica_id: self.replica_id.clone(),
            version: self.version.clone(),
            presence: self.presence.clone(),
            metrics: self.metrics.clone(),
            drain: self.drain.clone(),
        }
    }
}

impl SessionState for AppState {
    fn store(&self) -> &Store {
        &self.store
    }

    fn change_policy(&self) -> ChangePolicy {
        self.changes
    }
}

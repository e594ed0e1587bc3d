//! The store's memory as `INFO memory` reports it, for the new-session budget
//! (`super::super::budget`) and the `elastic_cart_store_memory_*` gauges. Here, beside the
//! sessions, because it shares their connections and timeouts.
//!
//! On a cluster every primary is asked and the fullest counts: a new session's key may
//! hash to any of them.

use fred::prelude::{ClientLike, Options, Server};
use fred::types::InfoKind;
use tower_sessions::session_store;

use super::{RedisStore, backend_error};
use crate::session::store::budget::Usage;

/// The store's used and maximum memory (the fullest primary's, on a cluster). An error if
/// it does not answer `INFO memory`, or answers without the two fields.
pub(in crate::session::store) async fn read(store: &RedisStore) -> session_store::Result<Usage> {
    let pool = store.pool();
    let client = pool.next();
    // The one server (`None`: wherever the client sends), or every primary of a cluster.
    let nodes: Vec<Option<Server>> = if client.is_clustered() {
        client.active_connections().into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    let mut fullest: Option<Usage> = None;
    for node in nodes {
        let options = Options {
            max_attempts: Some(1),
            cluster_node: node,
            ..Options::default()
        };
        let text: String = client
            .with_options(&options)
            .info(Some(InfoKind::Memory))
            .await
            .map_err(backend_error)?;
        let usage = Usage::from_info(&text).ok_or_else(|| {
            session_store::Error::Backend("INFO memory lacks used_memory or maxmemory".to_owned())
        })?;
        fullest = Some(fullest.map_or(usage, |seen| seen.fuller(usage)));
    }
    fullest.ok_or_else(|| session_store::Error::Backend("no primary to ask".to_owned()))
}

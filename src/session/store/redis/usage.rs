//! The store's memory as `INFO memory` reports it, for the new-session budget
//! (`super::super::budget`) and the `elastic_cart_store_memory_*` gauges. Here, beside the
//! sessions, because it shares their connections and timeouts.
//!
//! On a cluster every primary is asked and the fullest counts: a new session's key may
//! hash to any of them.

use fred::prelude::{ClientLike, Options};
use fred::types::InfoKind;
use tower_sessions::session_store;

use super::{RedisStore, backend_error};
use crate::session::store::budget::Usage;

/// The store's used and maximum memory (the fullest primary's, on a cluster). An error if
/// it does not answer `INFO memory`, or answers without the two fields.
pub(in crate::session::store) async fn read(store: &RedisStore) -> session_store::Result<Usage> {
    let client = store.pool().next().clone();
    let options = Options {
        max_attempts: Some(1),
        ..Options::default()
    };
    let texts: Vec<String> = if client.is_clustered() {
        let mut texts = Vec::new();
        for server in client.active_connections() {
            let options = Options {
                cluster_node: Some(server),
                ..options.clone()
            };
            let text = client
                .with_options(&options)
                .info::<String>(Some(InfoKind::Memory))
                .await
                .map_err(backend_error)?;
            texts.push(text);
        }
        texts
    } else {
        vec![
            client
                .with_options(&options)
                .info::<String>(Some(InfoKind::Memory))
                .await
                .map_err(backend_error)?,
        ]
    };
    texts
        .iter()
        .map(|text| Usage::from_info(text))
        .reduce(|a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a.fuller(b)),
            _ => None,
        })
        .flatten()
        .ok_or_else(|| {
            session_store::Error::Backend("INFO memory lacks used_memory or maxmemory".to_owned())
        })
}

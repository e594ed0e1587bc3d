//! Changes confirmed by replicas: a write and the `WAIT` behind it sent as one pipeline on
//! one connection, so no reconnect can split them, and what a shortfall of replicas means
//! (perhaps a primary a failover left behind: reconnect soon).

use std::sync::atomic::Ordering;

use fred::clients::Client;
use fred::prelude::{ClientLike, Options};
use fred::types::{ClusterHash, CustomCommand, Value};
use time::OffsetDateTime;
use tower_sessions::session::Id;
use tower_sessions::session_store;

use super::scripts::Write;
use super::{RedisStore, backend_error};
use crate::session::markers::{ChangeToken, MARKER_TTL, applied_key};

impl RedisStore {
    /// Sends `write` and, if `confirm` and `wait_replicas` > 0, a `WAIT` for that many
    /// replicas right behind it: one pipeline, written at once on one connection. `WAIT`
    /// counts the writes of the connection it runs on, so it must run on its write's
    /// connection or not at all: sent after the write's answer, a reconnect in between ran
    /// it on a connection that wrote nothing, which it confirms at once. Here the `WAIT` is
    /// never resent on another connection: a lost connection fails it (the change then
    /// answers "outcome unknown"), whatever becomes of the write. Pipelined, it also costs
    /// no round trip of its own; it runs even when the write wrote nothing (a lost race),
    /// and then returns at once unless the replicas lag behind this connection's earlier
    /// writes.
    ///
    /// On a Redis Cluster, a write that a `MOVED` or `ASK` sends to another node leaves its
    /// `WAIT` on the first node (docs/design.md, Known limits: slots being migrated).
    ///
    /// Returns the write's reply and whether the replicas confirmed it (`Ok` when not
    /// asked), for the caller to use if the write wrote.
    pub(super) async fn write_then_wait(
        &self,
        client: &Client,
        write: Write,
        confirm: bool,
    ) -> (Result<Value, fred::error::Error>, session_store::Result<()>) {
        if !confirm || self.wait_replicas == 0 {
            return (client.custom(write.command(), write.args).await, Ok(()));
        }
        let pipeline = client.pipeline();
        // The write may be resent on a new connection (fred's usual attempts; a resent
        // write is safe), the `WAIT` never: it would count none of the old connection's
        // writes. A lost connection thus fails the `WAIT` whatever becomes of the write.
        // (The write keeps its attempts for another reason too: fred follows a cluster's
        // `ASK` by spending one, and with none left it ends the connection's task.)
        let options = Options {
            max_attempts: Some(1),
            ..Options::default()
        };
        // Not fred's blocking `wait`, which would hold back every other command of the
        // connection until it returns: Redis itself keeps the order.
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(write.slot), false);
        let timeout_ms = self.wait_timeout.as_millis() as i64;
        let wait_args = vec![
            Value::from(i64::from(self.wait_replicas)),
            timeout_ms.into(),
        ];
        let queued = async {
            pipeline
                .custom::<(), _>(write.command(), write.args)
                .await?;
            pipeline
                .with_options(&options)
                .custom::<(), _>(wait, wait_args)
                .await
        }
        .await;
        if let Err(err) = queued {
            let unconfirmed = Err(backend_error(format!("WAIT for replicas: {err}")));
            return (Err(err), unconfirmed);
        }
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let reply = replies.next().unwrap_or_else(|| {
            Err(fred::error::Error::new(
                fred::error::ErrorKind::Unknown,
                "no reply to a pipelined write",
            ))
        });
        let confirmed = match (replies.next(), &reply) {
            (Some(count), _) => self.confirmed(count, timeout_ms),
            // The whole pipeline failed (a timeout, a lost connection): one error for both.
            (None, Err(err)) => Err(backend_error(format!("WAIT for replicas: {err}"))),
            (None, Ok(_)) => Err(backend_error("WAIT for replicas: no reply")),
        };
        (reply, confirmed)
    }

    /// The verdict of a `WAIT` that answered `count`: enough replicas, or an error (and a
    /// reconnect soon, see [`Self::reconnect_soon`]).
    fn confirmed(
        &self,
        count: Result<Value, fred::error::Error>,
        timeout_ms: i64,
    ) -> session_store::Result<()> {
        let confirmed: i64 = count
            .and_then(|count| count.convert())
            .map_err(|err| backend_error(format!("WAIT for replicas: {err}")))?;
        if confirmed < i64::from(self.wait_replicas) {
            self.reconnect_soon();
            return Err(backend_error(format!(
                "WAIT: {confirmed} of {} replicas confirmed the write within {timeout_ms} ms",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    /// With `wait_replicas` > 0: writes this change's marker (a key of the session's slot,
    /// which nothing else reads) and waits until the replicas confirm it. Replication keeps
    /// the primary's order, so a replica that has the marker has the record as it was
    /// before it, which is what an answer without a write rests on.
    pub(in crate::session::store) async fn confirm_unchanged(
        &self,
        id: &Id,
        token: &ChangeToken,
    ) -> session_store::Result<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let marker = applied_key(&self.prefix, id, token);
        let ttl_ms = MARKER_TTL.as_millis() as i64;
        let write = Write::new(
            "SET",
            &marker,
            vec![marker.as_str().into(), 1.into(), "PX".into(), ttl_ms.into()],
        );
        let pool = self.pool();
        let (reply, confirmed) = self.write_then_wait(pool.next(), write, true).await;
        reply.map_err(backend_error)?;
        confirmed
    }

    /// Too few replicas confirm: this may be a primary that a failover left behind (fred
    /// learns of a new primary only when its connection fails, and a `SENTINEL FAILOVER`
    /// leaves the old one running for seconds). Reconnecting asks the sentinels or the
    /// cluster again; at most once a second, in the background.
    fn reconnect_soon(&self) {
        let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let now_ms = u64::try_from(now_ms).unwrap_or_default();
        let last = self.last_forced_reconnect_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < 1_000
            || self
                .last_forced_reconnect_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let pool = self.pool();
        tokio::spawn(async move {
            if let Err(err) = pool.force_reconnection().await {
                tracing::warn!(%err, "reconnecting after too few replicas confirmed");
            }
        });
    }
}

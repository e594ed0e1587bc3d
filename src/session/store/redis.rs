//! Sessions in Redis, shared by every replica: one key per session
//! (`<prefix>session:{<id>}`, see [`super::keys`]) holding the MessagePack record of
//! tower-sessions. On top of a plain store:
//!
//! - **Compare-and-set.** [`RedisStore::snapshot`] reads a record with the exact bytes
//!   it came from, and [`RedisStore::replace_if_unchanged`] writes new data only if the
//!   stored bytes are still those (one `EVALSHA` of a small script; `EVAL` when the node
//!   does not know it, which is also right on a cluster, where a script load would go to
//!   one node only). Cart changes build on it (see `session::update`), and so does the
//!   expiry refresh.
//! - **Expiry on inactivity that counts reads, without a write per read.** The record
//!   carries its expiry date. A load whose record has less than half its TTL left moves
//!   the expiry with a compare-and-set (so a refresh never overwrites a concurrent
//!   change). Most reads stay one `GET`.
//! - **Undecodable records are a fresh session, not a 500.** Old formats or corruption
//!   are logged and treated as absent.
//! - **A record that vanished between load and save is written again.** A plain
//!   `SET .. XX` would drop the nil reply and lose the change silently.
//! - **Bounded waits and self-healing.** Every command has a timeout and the pool
//!   reconnects forever, so a dead or paused Redis costs a request at most the timeout
//!   (it answers 503) and the replica recovers by itself when Redis returns. The errors
//!   of a failover (`READONLY` from a demoted primary, `CLUSTERDOWN`, `LOADING`,
//!   `MASTERDOWN`, `TRYAGAIN`) make the connection reconnect, which asks Sentinel or the
//!   cluster where the primary is now.
//! - **Changes confirmed by replicas, if asked.** Redis replicates asynchronously: a
//!   change acknowledged just before a primary dies can be lost in a failover. With
//!   `wait_replicas` > 0 every change is answered only once `WAIT` says that many replicas
//!   hold it; otherwise the change fails as "outcome unknown", which a retry with the same
//!   `Idempotency-Key` settles.
//!
//! The parts live in submodules: [`scripts`] (the commands it sends: a write to one key,
//! the Lua of the compare-and-set and the retirement), [`replication`] (a write and its
//! `WAIT` as one pipeline), [`connections`] (the pool, its timeouts, the pool's
//! replacement), [`heartbeats`] (the fleet view's hash, which shares the connections) and
//! [`usage`] (the store's memory, for the new-session budget).

mod connections;
pub(super) mod heartbeats;
mod replication;
mod scripts;
pub(super) mod usage;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface, LuaInterface, Options, Pool};
use fred::types::Value;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

pub use self::connections::RedisSettings;
use self::connections::{build_pool, is_error_reply, replace_pool};
use self::scripts::{REPLACE_IF_UNCHANGED, REPLACE_IF_UNCHANGED_SHA, RETIRE, Write};
use super::keys::session_key;
use super::record::{Data, RETIRED_FOR, Snapshot, needs_refresh};
use super::watchdog::{self, Health};
use crate::metrics::Metrics;
use crate::session::markers::{ChangeToken, MARKER_TTL, applied_key};

/// Sessions in Redis, one key per session, holding the MessagePack record.
#[derive(Debug, Clone)]
pub(super) struct RedisStore {
    /// The connections; replaced as a whole by the [`watchdog`] when they stop answering.
    pool: Arc<ArcSwap<Pool>>,
    /// Whether the store answers, for the watchdog.
    health: Arc<Health>,
    ttl: Duration,
    prefix: String,
    wait_replicas: u32,
    /// How long `WAIT` may block: half the command timeout. Redis answers a connection's
    /// commands in order, so the commands queued behind a `WAIT` wait for it too.
    wait_timeout: Duration,
    /// When a shortfall of replicas last made the connections reconnect (ms since the
    /// epoch), so it happens at most once a second.
    last_forced_reconnect_ms: Arc<AtomicU64>,
    /// Counts the reads that move an expiry.
    metrics: Metrics,
}

impl RedisStore {
    /// Builds the pool and starts connecting in the background.
    pub(super) fn connect(
        settings: &RedisSettings,
        ttl: Duration,
        metrics: Metrics,
    ) -> Result<Self, fred::error::Error> {
        let first = build_pool(settings)?;
        first.connect();
        let pool = Arc::new(ArcSwap::from_pointee(first));
        let health = Arc::new(Health::default());
        let replace = {
            let (pool, settings) = (Arc::downgrade(&pool), settings.clone());
            move || replace_pool(&pool, &settings)
        };
        watchdog::spawn(Arc::downgrade(&health), replace);
        Ok(Self {
            pool,
            health,
            ttl,
            prefix: settings.key_prefix.clone(),
            wait_replicas: settings.wait_replicas,
            wait_timeout: settings.command_timeout / 2,
            last_forced_reconnect_ms: Arc::default(),
            metrics,
        })
    }

    /// The connections now.
    fn pool(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// Whether the store answers, for the watchdog (`Store::timed` reports every operation).
    pub(super) fn health(&self) -> &Health {
        &self.health
    }

    fn key(&self, id: &Id) -> String {
        session_key(&self.prefix, id)
    }

    fn with_new_expiry(&self, record: &Record) -> Record {
        Record {
            expiry_date: OffsetDateTime::now_utc() + self.ttl,
            ..record.clone()
        }
    }

    /// The `GET` of session `id`'s record. Boxed: fred's command futures are kilobytes
    /// large, and inline they would be copied with every caller's future
    /// (docs/benchmark.md).
    fn get_stored(
        &self,
        id: &Id,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Bytes>, fred::error::Error>> + Send + '_>> {
        let pool = self.pool();
        let key = self.key(id);
        Box::pin(async move { pool.get(key).await })
    }

    pub(super) async fn snapshot(&self, id: &Id) -> session_store::Result<Option<Snapshot>> {
        let stored = match self.get_stored(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(None),
            // Not a session of ours (another type under the key): a fresh session.
            Err(err) if err.details().starts_with("WRONGTYPE") => {
                tracing::warn!(%err, "session key holds another Redis type; starting a fresh session");
                return Ok(None);
            }
            Err(err) => return Err(backend_error(err)),
        };
        match rmp_serde::from_slice(&stored) {
            Ok(record) => Ok(Some(Snapshot { record, stored })),
            Err(err) => {
                tracing::warn!(%err, "undecodable session record; starting a fresh session");
                Ok(None)
            }
        }
    }

    /// The value under `key` of session `id`, decoded straight from the stored bytes (see
    /// `super::read`), moving the expiry as [`SessionStore::load`] does. `None` if there is
    /// no such record or it does not decode so: tower-sessions' load then decides.
    pub(super) async fn read_value<T: DeserializeOwned + Send>(
        &self,
        id: &Id,
        key: &str,
    ) -> session_store::Result<Option<Option<T>>> {
        let stored = match self.get_stored(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Ok(None),
            Err(err) if err.details().starts_with("WRONGTYPE") => return Ok(None),
            Err(err) => return Err(backend_error(err)),
        };
        let Ok((expiry_date, value)) = super::read::one_value(&stored, key) else {
            return Ok(None);
        };
        if needs_refresh(expiry_date, OffsetDateTime::now_utc(), self.ttl) {
            // Once per half TTL of a session: the whole record, for the refresh.
            let Ok(record) = rmp_serde::from_slice::<Record>(&stored) else {
                return Ok(None);
            };
            let snapshot = Snapshot { record, stored };
            // Boxed: this branch's futures are kilobytes large, and inline they would be
            // copied with every read's (docs/benchmark.md).
            Box::pin(self.refresh_expiry(&snapshot)).await;
        }
        Ok(Some(value))
    }

    /// Moves a record's expiry (same data) unless it changed meanwhile, in which case the
    /// change that did it moved the expiry already. A failure costs only the refresh.
    async fn refresh_expiry(&self, snapshot: &Snapshot) {
        let data = snapshot.record.data.clone();
        match self.replace_if_unchanged(snapshot, data, None).await {
            Ok(_) => self.metrics.expiry_refreshed(),
            Err(err) => tracing::warn!(%err, "could not refresh a session's expiry"),
        }
    }

    pub(super) async fn replace_if_unchanged(
        &self,
        snapshot: &Snapshot,
        data: Data,
        token: Option<&ChangeToken>,
    ) -> session_store::Result<bool> {
        let record = Record {
            data,
            ..self.with_new_expiry(&snapshot.record)
        };
        let bytes = encode(&record)?;
        let expire_at_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let (marker, marker_ttl_ms) = match token {
            Some(token) => (
                applied_key(&self.prefix, &record.id, token),
                MARKER_TTL.as_millis() as i64,
            ),
            None => (
                applied_key(&self.prefix, &record.id, &ChangeToken::random()),
                0,
            ),
        };
        let key = self.key(&record.id);
        let script = |name: &'static str, script: &str| {
            let args = vec![
                Value::from(script),
                2.into(),
                Value::from(key.as_str()),
                Value::from(marker.as_str()),
                Value::from(snapshot.stored.clone()),
                Value::from(bytes.as_slice()),
                Value::from(expire_at_ms as i64),
                Value::from(marker_ttl_ms),
            ];
            Write::new(name, &key, args)
        };
        // One connection for the write and its `WAIT`, which counts that connection's writes.
        let pool = self.pool();
        let client = pool.next();
        let confirm = token.is_some();
        let sha = REPLACE_IF_UNCHANGED_SHA.as_str();
        let (mut reply, mut confirmed) = self
            .write_then_wait(client, script("EVALSHA", sha), confirm)
            .await;
        // The node does not know the script yet (first use, a restart, a failover, a node of
        // a cluster that never ran it): `EVAL` sends it along, to the node that owns the
        // key, and the node keeps it for the next `EVALSHA`.
        if reply
            .as_ref()
            .is_err_and(|err| err.details().starts_with("NOSCRIPT"))
        {
            (reply, confirmed) = self
                .write_then_wait(client, script("EVAL", REPLACE_IF_UNCHANGED), confirm)
                .await;
        }
        let replaced: i64 = reply
            .and_then(|reply| reply.convert())
            .map_err(backend_error)?;
        match (replaced, token) {
            // Written by this copy: confirmed with the `WAIT` behind it.
            (1, Some(_)) => confirmed?,
            // A copy resent by the client on a new connection found its marker: that
            // connection wrote nothing, so confirm with a write of its own.
            (2, Some(token)) => self.confirm_unchanged(&snapshot.record.id, token).await?,
            _ => {}
        }
        Ok(replaced != 0)
    }
}

impl RedisStore {
    /// Whether this replica reaches the store: a `PING` that gets any reply, an error reply
    /// included. A store that is loading, full or failing over has been reached: that is
    /// the store's condition, which every replica shares, and reads may still work. An
    /// error only when no reply came: not connected, the connection lost, or no answer
    /// within the command timeout. Sent once, not resent after a reconnect.
    pub(super) async fn probe(&self) -> session_store::Result<()> {
        let options = Options {
            max_attempts: Some(1),
            ..Options::default()
        };
        match self
            .pool()
            .next()
            .with_options(&options)
            .ping::<Value>(None)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_error_reply(&err) => Ok(()),
            Err(err) => Err(backend_error(err)),
        }
    }

    pub(super) async fn close(&self) {
        let _ = self.pool().quit().await;
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.expiry_date = OffsetDateTime::now_utc() + self.ttl;
        let expire_at = record.expiry_date.unix_timestamp();
        let bytes = encode(record)?;
        let pool = self.pool();
        let client = pool.next();
        // An id already taken (128 random bits: in theory only) gets another.
        loop {
            let key = self.key(&record.id);
            let args = vec![
                Value::from(key.as_str()),
                Value::from(bytes.as_slice()),
                "EXAT".into(),
                expire_at.into(),
                "NX".into(),
            ];
            let (created, confirmed) = self
                .write_then_wait(client, Write::new("SET", &key, args), true)
                .await;
            if !created.map_err(backend_error)?.is_null() {
                return confirmed;
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let record = self.with_new_expiry(record);
        let bytes = encode(&record)?;
        let expire_at = record.expiry_date.unix_timestamp();
        let key = self.key(&record.id);
        let pool = self.pool();
        let client = pool.next();
        let set = |only_if: Option<&'static str>| {
            let mut args = vec![
                Value::from(key.as_str()),
                Value::from(bytes.as_slice()),
                "EXAT".into(),
                expire_at.into(),
            ];
            args.extend(only_if.map(Value::from));
            Write::new("SET", &key, args)
        };
        let (replaced, confirmed) = self.write_then_wait(client, set(Some("XX")), true).await;
        if !replaced.map_err(backend_error)?.is_null() {
            return confirmed;
        }
        // The key expired or was deleted after this request loaded it. The request's
        // change is still the user's latest intent: write it back rather than drop it.
        tracing::info!("session record vanished before save; writing it again");
        let (written, confirmed) = self.write_then_wait(client, set(None), true).await;
        written.map_err(backend_error)?;
        confirmed
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(snapshot) = self.snapshot(session_id).await? else {
            return Ok(None);
        };
        if needs_refresh(
            snapshot.record.expiry_date,
            OffsetDateTime::now_utc(),
            self.ttl,
        ) {
            self.refresh_expiry(&snapshot).await;
        }
        Ok(Some(snapshot.record))
    }

    /// Retires the record: it expires [`RETIRED_FOR`] from now, or sooner if it was
    /// to expire sooner anyway (see there why).
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let retired_for = RETIRED_FOR.as_millis() as i64;
        self.pool()
            .next()
            .eval::<(), _, _, _>(RETIRE, self.key(session_id), retired_for)
            .await
            .map_err(backend_error)
    }
}

fn backend_error(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

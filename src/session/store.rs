//! Where session records live: Redis (shared by every replica) or this process's memory.
//!
//! [`Store`] is the `tower_sessions::SessionStore` the session layer uses, and the
//! one seam between the session logic above and the two stores below:
//!
//! - [`redis`]: every replica shares one Redis (one server, Sentinel or Cluster):
//!   compare-and-set, expiry that counts reads without a write per read, changes confirmed
//!   by replicas if asked, bounded waits and self-healing connections.
//! - [`memory`]: the same rules in this process's memory, for one replica without Redis.
//! - [`keys`]: the name of every Redis key, under the configured prefix.
//! - [`budget`]: the store's memory budget for new sessions, so a flood of them cannot
//!   fill the store that live carts need.
//! - `record`: what a stored session is ([`Data`], [`Snapshot`]), for both stores.
//! - [`watchdog`]: replaces the Redis connections when nothing has been answered for a
//!   while (the cases fred does not leave by itself).
//!
//! Both offer the two operations that cart changes are built on (see `session::update`):
//! [`Store::snapshot`] reads a record together with what a later
//! [`Store::replace_if_unchanged`] needs to detect that it changed meanwhile.

pub mod budget;
pub mod keys;
mod memory;
mod read;
mod record;
mod redis;
mod watchdog;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use self::budget::{Budget, Usage};
use self::memory::MemoryStore;
pub use self::record::{Data, RETIRED_FOR, Snapshot};
pub use self::redis::RedisSettings;
use self::redis::RedisStore;
pub use self::redis::heartbeats::Heartbeat;
use self::redis::{heartbeats, usage};
use super::markers::ChangeToken;
use crate::metrics::{Metrics, StoreOp};

/// The session store of one replica.
#[derive(Debug, Clone)]
pub struct Store {
    kind: Kind,
    /// Where each operation's duration and failure are counted.
    metrics: Metrics,
    /// The latest reading of the store's memory, which new sessions must fit in.
    budget: Arc<Budget>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// In an `Arc`: the state is cloned for every request, the pool's handles need not be.
    Redis(Arc<RedisStore>),
    /// For a single replica: sessions die with the process.
    Memory(MemoryStore),
}

impl Store {
    /// A Redis-backed store. Connecting happens in the background: a replica started
    /// while Redis is down keeps running, answers 503 and connects when Redis comes.
    pub fn redis(
        settings: &RedisSettings,
        ttl: Duration,
        metrics: &Metrics,
    ) -> Result<Self, fred::error::Error> {
        let store = RedisStore::connect(settings, ttl, metrics.clone())?;
        Ok(Self {
            kind: Kind::Redis(Arc::new(store)),
            metrics: metrics.clone(),
            budget: Arc::new(Budget::new(settings.memory_budget_percent)),
        })
    }

    /// A store in this process's memory: for a single replica, demos and tests.
    pub fn memory(ttl: Duration, metrics: &Metrics) -> Self {
        Self {
            kind: Kind::Memory(MemoryStore::new(ttl, metrics.clone())),
            metrics: metrics.clone(),
            budget: Arc::new(Budget::new(0)),
        }
    }

    /// Whether every replica shares this store (Redis), rather than each its own memory.
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, Kind::Redis(_))
    }

    /// The instruments this store counts into (changes count their races there too).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs one store operation `op`, counting its duration and, if it fails, its kind.
    /// Boxed here, as `async_trait` boxes the `SessionStore` methods: the Redis client's
    /// futures are kilobytes large, and inline they would make the future of every
    /// handler that awaits one that much larger, copied each time it moves
    /// (docs/benchmark.md).
    fn timed<'a, T: Send + 'a>(
        &'a self,
        op: StoreOp,
        work: impl Future<Output = session_store::Result<T>> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = session_store::Result<T>> + Send + 'a>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = work.await;
            let failure = result
                .as_ref()
                .err()
                .map(|err| crate::error::store_error_kind(&err.to_string()));
            if let Kind::Redis(redis) = &self.kind {
                // A refusal and too few replicas are answers; anything else is none.
                match failure {
                    None | Some("refusing_writes" | "unconfirmed") => redis.health().answered(),
                    Some(_) => redis.health().unanswered(),
                }
            }
            self.metrics.record_store(op, started.elapsed(), failure);
            result
        })
    }

    /// Whether this replica reaches the store now (used by `/readyz`): any reply counts,
    /// an error reply included (a store that is full, loading or failing over is the same
    /// for every replica, and reads may still work); only no reply is an error. The memory
    /// store is always reached.
    pub async fn probe(&self) -> session_store::Result<()> {
        match &self.kind {
            Kind::Redis(redis) => self.timed(StoreOp::Probe, redis.probe()).await,
            Kind::Memory(_) => Ok(()),
        }
    }

    /// The store's memory now (`None` in memory, which has no ceiling of its own).
    pub async fn memory_usage(&self) -> session_store::Result<Option<Usage>> {
        match &self.kind {
            Kind::Redis(redis) => self
                .timed(StoreOp::Memory, usage::read(redis))
                .await
                .map(Some),
            Kind::Memory(_) => Ok(None),
        }
    }

    /// Whether a new session may be created: the store's memory, as last read, is within
    /// its budget for new sessions (see [`budget`]).
    pub fn admits_new_session(&self) -> bool {
        self.budget.admits_new_session()
    }

    /// Reads the store's memory every [`budget::READ_EVERY`] until `stop`: for the
    /// new-session budget and the `elastic_cart_store_memory_*` gauges. Nothing to read in
    /// memory.
    pub async fn watch_memory(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        if !self.is_shared() {
            return;
        }
        let mut ticks = tokio::time::interval(budget::READ_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = &mut stop => break,
            }
            match self.memory_usage().await {
                Ok(Some(usage)) => {
                    if failing {
                        tracing::info!("the store's memory is read again");
                        failing = false;
                    }
                    self.budget.record(usage);
                    self.metrics.store_memory(usage.used, usage.max);
                }
                Ok(None) => {}
                Err(err) if !failing => {
                    tracing::warn!(%err, "cannot read the store's memory (INFO memory); new sessions are not limited until it can");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// The value under `key` of session `id` (`Some(None)`: the session holds none), read
    /// with one `GET` and decoded straight into `T`, without building the rest of the
    /// record. `None` where tower-sessions' load must decide instead: the memory store, a
    /// missing session (whose cookie its layer then removes), a record or value that does
    /// not decode as `T`.
    pub async fn read_value<T: serde::de::DeserializeOwned + Send>(
        &self,
        id: &Id,
        key: &str,
    ) -> session_store::Result<Option<Option<T>>> {
        match &self.kind {
            Kind::Redis(redis) => self.timed(StoreOp::Load, redis.read_value(id, key)).await,
            Kind::Memory(_) => Ok(None),
        }
    }

    /// Reads a session record for a later [`Self::replace_if_unchanged`]. `None` if there
    /// is no such session (or it no longer decodes).
    pub async fn snapshot(&self, id: &Id) -> session_store::Result<Option<Snapshot>> {
        self.timed(StoreOp::Snapshot, async {
            match &self.kind {
                Kind::Redis(redis) => redis.snapshot(id).await,
                Kind::Memory(memory) => Ok(memory.snapshot(id)),
            }
        })
        .await
    }

    /// Stores `data` in the snapshot's session, with a fresh expiry, if the session is
    /// still exactly as the snapshot saw it; `true` also if the session already holds the
    /// change `token` stands for (a resent write). `false` if another change came first,
    /// or the session vanished.
    pub(crate) async fn replace_if_unchanged(
        &self,
        snapshot: &Snapshot,
        data: Data,
        token: &ChangeToken,
    ) -> session_store::Result<bool> {
        self.timed(StoreOp::Replace, async {
            match &self.kind {
                Kind::Redis(redis) => {
                    redis
                        .replace_if_unchanged(snapshot, data, Some(token))
                        .await
                }
                Kind::Memory(memory) => Ok(memory.replace_if_unchanged(snapshot, data)),
            }
        })
        .await
    }

    /// Makes sure the session as `snapshot` read it is safe to answer from when a change
    /// writes nothing (a replayed `Idempotency-Key`, a change that changes nothing): with
    /// `REDIS_WAIT_REPLICAS` set, that the replicas hold it, so the answer cannot rest on a
    /// write a failover will drop. Otherwise nothing to do.
    pub(crate) async fn confirm_unchanged(
        &self,
        snapshot: &Snapshot,
        token: &ChangeToken,
    ) -> session_store::Result<()> {
        match &self.kind {
            Kind::Redis(redis) => {
                let confirm = redis.confirm_unchanged(&snapshot.record.id, token);
                self.timed(StoreOp::Confirm, confirm).await
            }
            Kind::Memory(_) => Ok(()),
        }
    }

    /// Writes a replica's fleet heartbeat (see `crate::fleet`); nothing to do in memory,
    /// where the fleet is this replica.
    pub async fn heartbeat(&self, beat: &Heartbeat<'_>) -> session_store::Result<()> {
        match &self.kind {
            Kind::Redis(redis) => {
                self.timed(StoreOp::Heartbeat, heartbeats::write(redis, beat))
                    .await
            }
            Kind::Memory(_) => Ok(()),
        }
    }

    /// The store's time (ms since the epoch) and the fleet's heartbeats (field, value,
    /// ...); `None` in memory, where there is no fleet to read.
    pub async fn fleet(&self) -> session_store::Result<Option<(u64, Vec<String>)>> {
        match &self.kind {
            Kind::Redis(redis) => self
                .timed(StoreOp::Fleet, heartbeats::read(redis))
                .await
                .map(Some),
            Kind::Memory(_) => Ok(None),
        }
    }

    /// Deletes replica `id`'s heartbeat (when it stops).
    pub async fn leave_fleet(&self, id: &str) -> session_store::Result<()> {
        match &self.kind {
            Kind::Redis(redis) => {
                self.timed(StoreOp::Leave, heartbeats::leave(redis, id))
                    .await
            }
            Kind::Memory(_) => Ok(()),
        }
    }

    /// Closes the Redis connections, if any.
    pub async fn close(&self) {
        if let Kind::Redis(redis) = &self.kind {
            redis.close().await;
        }
    }
}

#[async_trait]
impl SessionStore for Store {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.timed(StoreOp::Create, async {
            match &self.kind {
                Kind::Redis(store) => store.create(record).await,
                Kind::Memory(store) => store.create(record).await,
            }
        })
        .await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.timed(StoreOp::Save, async {
            match &self.kind {
                Kind::Redis(store) => store.save(record).await,
                Kind::Memory(store) => store.save(record).await,
            }
        })
        .await
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        self.timed(StoreOp::Load, async {
            match &self.kind {
                Kind::Redis(store) => store.load(session_id).await,
                Kind::Memory(store) => store.load(session_id).await,
            }
        })
        .await
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.timed(StoreOp::Delete, async {
            match &self.kind {
                Kind::Redis(store) => store.delete(session_id).await,
                Kind::Memory(store) => store.delete(session_id).await,
            }
        })
        .await
    }
}

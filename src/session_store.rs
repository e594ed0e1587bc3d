//! Where session records live: Redis (shared by every replica) or this process's memory.
//!
//! [`SessionBackend`] is the `tower_sessions::SessionStore` the session layer uses. Over
//! the stock `tower_sessions_redis_store::RedisStore` (whose key layout and MessagePack
//! record format it keeps, and which it uses to create and delete records) it adds what
//! an elastic fleet needs:
//!
//! - **Compare-and-set.** [`SessionBackend::snapshot`] reads a record with the exact bytes
//!   it came from, and [`SessionBackend::replace_if_unchanged`] writes new data only if
//!   the stored bytes are still those (one `EVALSHA` of a small script). Cart changes build
//!   on it (see `session_update`), and so does the expiry refresh.
//! - **Expiry on inactivity that counts reads, without a write per read.** The record
//!   carries its expiry date. A load whose record has less than half its TTL left moves
//!   the expiry with a compare-and-set (so a refresh never overwrites a concurrent
//!   change). Most reads stay one `GET`.
//! - **Undecodable records are a fresh session, not a 500.** Old formats or corruption
//!   are logged and treated as absent.
//! - **A record that vanished between load and save is written again.** The stock store
//!   saves with `SET .. XX` and drops the nil reply, losing the change silently.
//! - **Bounded waits and self-healing.** Every command has a timeout and the pool
//!   reconnects forever, so a dead or paused Redis costs a request at most the timeout
//!   (it answers 503) and the replica recovers by itself when Redis returns.
//!
//! The memory backend keeps the same rules for a single replica without Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, Config as RedisConfig, Expiration, KeysInterface, LuaInterface, Pool,
    ReconnectPolicy, SetOptions,
};
use fred::types::Value;
use serde_json::Value as Json;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions_redis_store::RedisStore;

/// Replaces a record's value and expiry only if it is still byte for byte the one read.
/// Returns 1 if it replaced, 0 if the record had changed or vanished.
const REPLACE_IF_UNCHANGED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  return 1
end
return 0
";

/// The SHA-1 of [`REPLACE_IF_UNCHANGED`], for `EVALSHA`.
static REPLACE_IF_UNCHANGED_SHA: LazyLock<String> =
    LazyLock::new(|| fred::util::sha1_hash(REPLACE_IF_UNCHANGED));

/// The values a session holds, by key.
pub type Data = HashMap<String, Json>;

/// A session record as read, with what a compare-and-set needs to detect a change since.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub record: Record,
    /// The stored bytes (Redis); empty for the memory store, which compares records.
    stored: Vec<u8>,
}

/// Settings for connecting to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub pool_size: usize,
    pub command_timeout: Duration,
}

/// The session store of one replica.
#[derive(Debug, Clone)]
pub enum SessionBackend {
    /// In an `Arc`: the state is cloned for every request, the pool's handles need not be.
    Redis(Arc<RedisSessions>),
    Memory(MemorySessions),
}

impl SessionBackend {
    /// A Redis-backed store. Connecting happens in the background: a replica started
    /// while Redis is down keeps running, answers 503 and connects when Redis comes.
    pub fn redis(settings: &RedisSettings, ttl: Duration) -> Result<Self, fred::error::Error> {
        let pool = build_pool(settings)?;
        pool.connect();
        Ok(Self::Redis(Arc::new(RedisSessions {
            store: RedisStore::new(pool.clone()),
            pool,
            ttl,
        })))
    }

    /// A store in this process's memory: for a single replica, demos and tests.
    pub fn memory(ttl: Duration) -> Self {
        Self::Memory(MemorySessions::new(ttl))
    }

    /// Whether the store answers now (used by `/readyz`).
    pub async fn ping(&self) -> Result<(), session_store::Error> {
        match self {
            Self::Redis(redis) => redis
                .pool
                .ping::<()>(None)
                .await
                .map_err(|err| session_store::Error::Backend(err.to_string())),
            Self::Memory(_) => Ok(()),
        }
    }

    /// Reads a session record for a later [`Self::replace_if_unchanged`]. `None` if there
    /// is no such session (or it no longer decodes).
    pub async fn snapshot(&self, id: &Id) -> session_store::Result<Option<Snapshot>> {
        match self {
            Self::Redis(redis) => redis.snapshot(id).await,
            Self::Memory(memory) => Ok(memory.snapshot(id)),
        }
    }

    /// Stores `data` in the snapshot's session, with a fresh expiry, if the session is
    /// still exactly as the snapshot saw it. `false` if it changed or vanished meanwhile.
    pub async fn replace_if_unchanged(
        &self,
        snapshot: &Snapshot,
        data: Data,
    ) -> session_store::Result<bool> {
        match self {
            Self::Redis(redis) => redis.replace_if_unchanged(snapshot, data).await,
            Self::Memory(memory) => Ok(memory.replace_if_unchanged(snapshot, data)),
        }
    }

    /// Closes the Redis connections, if any.
    pub async fn close(&self) {
        if let Self::Redis(redis) = self {
            let _ = redis.pool.quit().await;
        }
    }
}

fn build_pool(settings: &RedisSettings) -> Result<Pool, fred::error::Error> {
    let timeout = settings.command_timeout;
    // Connecting (TCP, TLS, AUTH) may legitimately take longer than one command; it runs in
    // the background while requests fail fast on the command timeout.
    let connect_timeout = timeout.max(Duration::from_secs(5));
    Builder::from_config(RedisConfig::from_url(&settings.url)?)
        .with_config(|config| {
            // Run the reconnect policy for the first connection too, instead of failing.
            config.fail_fast = false;
        })
        .with_performance_config(|perf| perf.default_command_timeout = timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = connect_timeout;
            conn.internal_command_timeout = connect_timeout;
            // A connection that stops answering (paused server, lost network) is dropped
            // and reopened rather than waited on forever.
            conn.unresponsive.max_timeout = Some(timeout * 2);
            conn.unresponsive.interval = (timeout / 2).max(Duration::from_millis(50));
        })
        // Retry forever (0 attempts = no limit), 100 ms doubling up to 2 s between tries.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build_pool(settings.pool_size)
}

/// Whether a record expiring at `expiry_date` should have its expiry moved now: when less
/// than half of the TTL remains.
fn needs_refresh(expiry_date: OffsetDateTime, now: OffsetDateTime, ttl: Duration) -> bool {
    expiry_date - now < ttl / 2
}

fn backend_error(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

/// Sessions in Redis, one key per session (the id), holding the MessagePack record.
#[derive(Debug, Clone)]
pub struct RedisSessions {
    /// The stock store: creates records (retrying id collisions) and deletes them.
    store: RedisStore<Pool>,
    pool: Pool,
    ttl: Duration,
}

impl RedisSessions {
    fn with_new_expiry(&self, record: &Record) -> Record {
        Record {
            expiry_date: OffsetDateTime::now_utc() + self.ttl,
            ..record.clone()
        }
    }

    async fn snapshot(&self, id: &Id) -> session_store::Result<Option<Snapshot>> {
        let Some(stored) = self
            .pool
            .get::<Option<Vec<u8>>, _>(id.to_string())
            .await
            .map_err(backend_error)?
        else {
            return Ok(None);
        };
        match rmp_serde::from_slice(&stored) {
            Ok(record) => Ok(Some(Snapshot { record, stored })),
            Err(err) => {
                tracing::warn!(%err, "undecodable session record; starting a fresh session");
                Ok(None)
            }
        }
    }

    async fn replace_if_unchanged(
        &self,
        snapshot: &Snapshot,
        data: Data,
    ) -> session_store::Result<bool> {
        let record = Record {
            data,
            ..self.with_new_expiry(&snapshot.record)
        };
        let bytes = encode(&record)?;
        let expire_at_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let keys = vec![record.id.to_string()];
        let args = vec![
            Value::from(snapshot.stored.as_slice()),
            Value::from(bytes.as_slice()),
            Value::from(expire_at_ms as i64),
        ];
        let sha = REPLACE_IF_UNCHANGED_SHA.as_str();
        let replaced: i64 = match self.pool.evalsha(sha, keys.clone(), args.clone()).await {
            // The server does not know the script yet (first use, or Redis restarted).
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                let _: String = self
                    .pool
                    .script_load(REPLACE_IF_UNCHANGED)
                    .await
                    .map_err(backend_error)?;
                self.pool.evalsha(sha, keys, args).await
            }
            result => result,
        }
        .map_err(backend_error)?;
        Ok(replaced == 1)
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        record.expiry_date = OffsetDateTime::now_utc() + self.ttl;
        self.store.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let record = self.with_new_expiry(record);
        let bytes = encode(&record)?;
        let expire = Expiration::EXAT(record.expiry_date.unix_timestamp());
        let key = record.id.to_string();
        let replaced: Value = self
            .pool
            .set(
                &key,
                bytes.as_slice(),
                Some(expire.clone()),
                Some(SetOptions::XX),
                false,
            )
            .await
            .map_err(backend_error)?;
        if replaced.is_null() {
            // The key expired or was deleted after this request loaded it. The request's
            // change is still the user's latest intent: write it back rather than drop it.
            tracing::info!("session record vanished before save; writing it again");
            let _: Value = self
                .pool
                .set(&key, bytes.as_slice(), Some(expire), None, false)
                .await
                .map_err(backend_error)?;
        }
        Ok(())
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
            // Same data, new expiry; if the record changed meanwhile, the change that did it
            // moved the expiry already. A failure costs only the refresh, not the read.
            let data = snapshot.record.data.clone();
            if let Err(err) = self.replace_if_unchanged(&snapshot, data).await {
                tracing::warn!(%err, "could not refresh a session's expiry");
            }
        }
        Ok(Some(snapshot.record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.store.delete(session_id).await
    }
}

/// Sessions in this process's memory. Expired records are dropped when met.
#[derive(Debug, Clone)]
pub struct MemorySessions {
    records: Arc<Mutex<HashMap<Id, Record>>>,
    /// When (Unix seconds) abandoned records are next swept out; sweeping on every new
    /// session would scan the whole map each time.
    next_sweep: Arc<AtomicI64>,
    ttl: Duration,
}

impl MemorySessions {
    /// Seconds between two sweeps of expired records.
    const SWEEP_EVERY_SECS: i64 = 60;

    fn new(ttl: Duration) -> Self {
        Self {
            records: Arc::default(),
            next_sweep: Arc::default(),
            ttl,
        }
    }

    fn snapshot(&self, id: &Id) -> Option<Snapshot> {
        let now = OffsetDateTime::now_utc();
        let records = self.records();
        let record = records.get(id).filter(|record| record.expiry_date > now)?;
        Some(Snapshot {
            record: record.clone(),
            stored: Vec::new(),
        })
    }

    fn replace_if_unchanged(&self, snapshot: &Snapshot, data: Data) -> bool {
        let mut records = self.records();
        match records.get_mut(&snapshot.record.id) {
            Some(current) if *current == snapshot.record => {
                current.data = data;
                current.expiry_date = OffsetDateTime::now_utc() + self.ttl;
                true
            }
            _ => false,
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Record>> {
        // A panic while holding the lock cannot leave a map half-written; keep serving.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        record.expiry_date = now + self.ttl;
        let mut records = self.records();
        let now_secs = now.unix_timestamp();
        if now_secs >= self.next_sweep.load(Ordering::Relaxed) {
            records.retain(|_, stored| stored.expiry_date > now);
            self.next_sweep
                .store(now_secs + Self::SWEEP_EVERY_SECS, Ordering::Relaxed);
        }
        while records.contains_key(&record.id) {
            record.id = Id::default();
        }
        records.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let record = Record {
            expiry_date: OffsetDateTime::now_utc() + self.ttl,
            ..record.clone()
        };
        self.records().insert(record.id, record);
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        let mut records = self.records();
        let Some(record) = records.get_mut(session_id) else {
            return Ok(None);
        };
        if record.expiry_date <= now {
            records.remove(session_id);
            return Ok(None);
        }
        if needs_refresh(record.expiry_date, now, self.ttl) {
            record.expiry_date = now + self.ttl;
        }
        Ok(Some(record.clone()))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.records().remove(session_id);
        Ok(())
    }
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Self::Redis(store) => store.create(record).await,
            Self::Memory(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Self::Redis(store) => store.save(record).await,
            Self::Memory(store) => store.save(record).await,
        }
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Self::Redis(store) => store.load(session_id).await,
            Self::Memory(store) => store.load(session_id).await,
        }
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        match self {
            Self::Redis(store) => store.delete(session_id).await,
            Self::Memory(store) => store.delete(session_id).await,
        }
    }
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

    fn record_expiring_in(ttl: Duration) -> Record {
        Record {
            id: Id::default(),
            data: HashMap::default(),
            expiry_date: OffsetDateTime::now_utc() + ttl,
        }
    }

    #[tokio::test]
    async fn memory_store_moves_the_expiry_of_a_record_read_late() {
        let store = MemorySessions::new(TTL);
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() + Duration::from_secs(60);

        let loaded = store.load(&record.id).await.unwrap().unwrap();
        assert!(loaded.expiry_date - OffsetDateTime::now_utc() > TTL / 2);
    }

    #[tokio::test]
    async fn memory_store_forgets_expired_records() {
        let store = MemorySessions::new(TTL);
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(store.load(&record.id).await.unwrap().is_none());
    }
}

//! Where session records live: Redis (shared by every replica) or this process's memory.
//!
//! [`SessionBackend`] is the `tower_sessions::SessionStore` the session layer uses. Over
//! the stock `tower_sessions_redis_store::RedisStore` (whose key layout and MessagePack
//! record format it keeps, and which it uses to create and delete records) it adds what
//! an elastic fleet needs:
//!
//! - **Expiry on inactivity that counts reads, without a write per read.** The record
//!   carries its expiry date. A load whose record has less than half its TTL left moves
//!   the expiry with a compare-and-set script (only if the record is still the one just
//!   read, so a refresh never overwrites a concurrent change). Most reads stay one `GET`.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, ClientLike, Config as RedisConfig, Expiration, KeysInterface, LuaInterface, Pool,
    ReconnectPolicy, SetOptions,
};
use fred::types::Value;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions_redis_store::RedisStore;

/// Replaces a record's value and expiry only if it is still byte for byte the one read.
const REFRESH_IF_UNCHANGED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return false
";

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
    Redis(RedisSessions),
    Memory(MemorySessions),
}

impl SessionBackend {
    /// A Redis-backed store. Connecting happens in the background: a replica started
    /// while Redis is down keeps running, answers 503 and connects when Redis comes.
    pub fn redis(settings: &RedisSettings, ttl: Duration) -> Result<Self, fred::error::Error> {
        let pool = build_pool(settings)?;
        pool.connect();
        Ok(Self::Redis(RedisSessions {
            store: RedisStore::new(pool.clone()),
            pool,
            ttl,
        }))
    }

    /// A store in this process's memory: for a single replica, demos and tests.
    pub fn memory(ttl: Duration) -> Self {
        Self::Memory(MemorySessions {
            records: Arc::default(),
            ttl,
        })
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

    /// The Redis pool, if sessions live in Redis.
    pub fn redis_pool(&self) -> Option<&Pool> {
        match self {
            Self::Redis(redis) => Some(&redis.pool),
            Self::Memory(_) => None,
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

    /// Moves the record's expiry if it is still unchanged; a failure only costs the
    /// refresh, the read itself succeeded.
    async fn refresh(&self, key: String, stored: Vec<u8>, record: &Record) {
        let refreshed = self.with_new_expiry(record);
        let result = match encode(&refreshed) {
            Ok(bytes) => {
                let expire_at_ms = refreshed.expiry_date.unix_timestamp_nanos() / 1_000_000;
                self.pool
                    .eval::<Value, _, _, _>(
                        REFRESH_IF_UNCHANGED,
                        vec![key],
                        vec![
                            Value::from(stored.as_slice()),
                            Value::from(bytes.as_slice()),
                            Value::from(expire_at_ms as i64),
                        ],
                    )
                    .await
                    .map(drop)
                    .map_err(backend_error)
            }
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(%err, "could not refresh a session's expiry");
        }
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
        let key = session_id.to_string();
        let Some(stored) = self
            .pool
            .get::<Option<Vec<u8>>, _>(&key)
            .await
            .map_err(backend_error)?
        else {
            return Ok(None);
        };
        let record: Record = match rmp_serde::from_slice(&stored) {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, "undecodable session record; starting a fresh session");
                return Ok(None);
            }
        };
        if needs_refresh(record.expiry_date, OffsetDateTime::now_utc(), self.ttl) {
            self.refresh(key, stored, &record).await;
        }
        Ok(Some(record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.store.delete(session_id).await
    }
}

/// Sessions in this process's memory. Expired records are dropped when met.
#[derive(Debug, Clone)]
pub struct MemorySessions {
    records: Arc<Mutex<HashMap<Id, Record>>>,
    ttl: Duration,
}

impl MemorySessions {
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
        records.retain(|_, stored| stored.expiry_date > now);
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
        let store = MemorySessions {
            records: Arc::default(),
            ttl: TTL,
        };
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() + Duration::from_secs(60);

        let loaded = store.load(&record.id).await.unwrap().unwrap();
        assert!(loaded.expiry_date - OffsetDateTime::now_utc() > TTL / 2);
    }

    #[tokio::test]
    async fn memory_store_forgets_expired_records() {
        let store = MemorySessions {
            records: Arc::default(),
            ttl: TTL,
        };
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(store.load(&record.id).await.unwrap().is_none());
    }
}

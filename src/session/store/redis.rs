//! Sessions in Redis, shared by every replica: one key per session (its id) holding the
//! MessagePack record of the stock `tower_sessions_redis_store::RedisStore`, whose key
//! layout and format it keeps and which it uses to create and delete records. On top of it:
//!
//! - **Compare-and-set.** [`RedisSessions::snapshot`] reads a record with the exact bytes
//!   it came from, and [`RedisSessions::replace_if_unchanged`] writes new data only if the
//!   stored bytes are still those (one `EVALSHA` of a small script). Cart changes build on
//!   it (see `session::update`), and so does the expiry refresh.
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

use std::sync::LazyLock;
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

use super::{Data, Snapshot, needs_refresh};
use crate::session::ledger::{ChangeToken, MARKER_TTL, applied_key};

/// Replaces a record's value and expiry only if it is still byte for byte the one read,
/// and leaves the change's marker (KEYS[2], for ARGV[4] ms; none for 0, an expiry
/// refresh, which repeats harmlessly). Returns 1 if it replaced; 2
/// if the marker is there already (a resent copy of a write that happened); 0 if the
/// record had changed or vanished.
const REPLACE_IF_UNCHANGED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  if ARGV[4] ~= '0' then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  end
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 2
end
return 0
";

/// Where `/readyz` writes its probe, one key per replica, gone a few seconds after the last
/// probe. Not a session id: those are 22 characters of base64 without a colon.
const PROBE_KEY_PREFIX: &str = "elastic-cart:readyz:";
const PROBE_KEY_TTL: Duration = Duration::from_secs(10);

/// The SHA-1 of [`REPLACE_IF_UNCHANGED`], for `EVALSHA`.
static REPLACE_IF_UNCHANGED_SHA: LazyLock<String> =
    LazyLock::new(|| fred::util::sha1_hash(REPLACE_IF_UNCHANGED));

/// Settings for connecting to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL, with credentials if any.
    pub url: String,
    /// Connections of this replica; fred pipelines commands over each.
    pub pool_size: usize,
    /// Longest any one command may take before the request answers 503.
    pub command_timeout: Duration,
}

/// Sessions in Redis, one key per session (the id), holding the MessagePack record.
#[derive(Debug, Clone)]
pub(super) struct RedisSessions {
    /// The stock store: creates records (retrying id collisions) and deletes them.
    store: RedisStore<Pool>,
    pool: Pool,
    ttl: Duration,
}

impl RedisSessions {
    /// Builds the pool and starts connecting in the background.
    pub(super) fn connect(
        settings: &RedisSettings,
        ttl: Duration,
    ) -> Result<Self, fred::error::Error> {
        let pool = build_pool(settings)?;
        pool.connect();
        Ok(Self {
            store: RedisStore::new(pool.clone()),
            pool,
            ttl,
        })
    }

    pub(super) async fn probe_writes(&self, probe: &str) -> session_store::Result<()> {
        let key = format!("{PROBE_KEY_PREFIX}{probe}");
        let expire = Some(Expiration::PX(PROBE_KEY_TTL.as_millis() as i64));
        self.pool
            .set::<(), _, _>(key, 1, expire, None, false)
            .await
            .map_err(backend_error)
    }

    pub(super) async fn close(&self) {
        let _ = self.pool.quit().await;
    }

    fn with_new_expiry(&self, record: &Record) -> Record {
        Record {
            expiry_date: OffsetDateTime::now_utc() + self.ttl,
            ..record.clone()
        }
    }

    pub(super) async fn snapshot(&self, id: &Id) -> session_store::Result<Option<Snapshot>> {
        let stored = match self.pool.get::<Option<Vec<u8>>, _>(id.to_string()).await {
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
                applied_key(&record.id, token),
                MARKER_TTL.as_millis() as i64,
            ),
            None => (applied_key(&record.id, &ChangeToken::random()), 0),
        };
        let keys = vec![record.id.to_string(), marker];
        let args = vec![
            Value::from(snapshot.stored.as_slice()),
            Value::from(bytes.as_slice()),
            Value::from(expire_at_ms as i64),
            Value::from(marker_ttl_ms),
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
        Ok(replaced != 0)
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
            if let Err(err) = self.replace_if_unchanged(&snapshot, data, None).await {
                tracing::warn!(%err, "could not refresh a session's expiry");
            }
        }
        Ok(Some(snapshot.record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.store.delete(session_id).await
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

fn backend_error(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

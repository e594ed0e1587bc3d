//! Sessions in Redis, shared by every replica: one key per session
//! (`<prefix>session:{<id>}`, see [`super::keys`]) holding the MessagePack record of
//! tower-sessions. On top of a plain store:
//!
//! - **Compare-and-set.** [`RedisSessions::snapshot`] reads a record with the exact bytes
//!   it came from, and [`RedisSessions::replace_if_unchanged`] writes new data only if the
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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::Client;
use fred::prelude::{
    Builder, ClientLike, Config as RedisConfig, HashesInterface, KeysInterface, LuaInterface,
    Options, Pool, ReconnectPolicy,
};
use fred::socket2::TcpKeepalive;
use fred::types::config::{ReconnectError, TcpConfig};
use fred::types::{ClusterHash, CustomCommand, Value};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::keys::{fleet_key, session_key};
use super::watchdog::{self, Health};
use super::{Data, Snapshot, needs_refresh};
use crate::metrics::Metrics;
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

/// Shortens a record's life (KEYS[1]) to ARGV[1] ms unless it has less left: what
/// `PEXPIRE .. LT` does from Redis 7.0 on, here for 6.2 too (`PXAT` needs 6.2 already).
/// Once per checkout: sent whole, not by its hash.
const RETIRE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
";

/// Writes a replica's heartbeat into the fleet hash (KEYS[1]): field ARGV[1] gets Redis's
/// time in ms and the report ARGV[2]; fields stamped more than ARGV[3] ms ago are deleted
/// (a field it cannot read, from another version, is left to the hash's expiry, so
/// versions side by side in a rolling update do not delete each other's); the hash expires
/// ARGV[4] ms from now. Redis's clock, so the replicas' clocks need not agree.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now) .. ' ' .. ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local seen = tonumber(string.match(fields[i + 1], '^%d+'))
  if seen ~= nil and now - seen > tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Reads the fleet hash (KEYS[1]) with Redis's time in ms in front: `[now, field, value,
/// field, value, ...]`.
const FLEET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, string.format('%.0f', now))
return fields
";

/// The SHA-1 of [`REPLACE_IF_UNCHANGED`], for `EVALSHA`.
static REPLACE_IF_UNCHANGED_SHA: LazyLock<String> =
    LazyLock::new(|| fred::util::sha1_hash(REPLACE_IF_UNCHANGED));

/// Settings for connecting to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The store's URL (one server, Sentinel or Cluster; see `Config::redis_url`), with
    /// credentials if any.
    pub url: String,
    /// Connections of this replica; fred pipelines commands over each.
    pub pool_size: usize,
    /// Longest any one command may take before the request answers 503.
    pub command_timeout: Duration,
    /// What every key of the app starts with.
    pub key_prefix: String,
    /// Replicas that must confirm a change (`WAIT`) before it is answered; 0: none.
    pub wait_replicas: u32,
}

/// Sessions in Redis, one key per session, holding the MessagePack record.
#[derive(Debug, Clone)]
pub(super) struct RedisSessions {
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

impl RedisSessions {
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
    /// `WAIT` on the first node (README, Known limits: slots being migrated).
    ///
    /// Returns the write's reply and whether the replicas confirmed it (`Ok` when not
    /// asked), for the caller to use if the write wrote.
    async fn write_then_wait(
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
    pub(super) async fn confirm_unchanged(
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

    /// Writes replica `id`'s heartbeat `report` (see `crate::fleet`).
    pub(super) async fn heartbeat(
        &self,
        id: &str,
        report: &str,
        fresh_for: Duration,
        key_ttl: Duration,
    ) -> session_store::Result<()> {
        let args: Vec<Value> = vec![
            id.into(),
            report.into(),
            (fresh_for.as_millis() as i64).into(),
            (key_ttl.as_millis() as i64).into(),
        ];
        self.pool()
            .next()
            .eval::<(), _, _, _>(HEARTBEAT, fleet_key(&self.prefix), args)
            .await
            .map_err(backend_error)
    }

    /// Redis's time (ms since the epoch) and the fleet hash's fields and values.
    pub(super) async fn fleet(&self) -> session_store::Result<(u64, Vec<String>)> {
        let mut reply: Vec<String> = self
            .pool()
            .next()
            .eval(FLEET, fleet_key(&self.prefix), Vec::<Value>::new())
            .await
            .map_err(backend_error)?;
        if reply.is_empty() {
            return Err(backend_error("the fleet script answered nothing"));
        }
        let now = reply.remove(0).parse().map_err(backend_error)?;
        Ok((now, reply))
    }

    /// Deletes replica `id`'s heartbeat.
    pub(super) async fn leave_fleet(&self, id: &str) -> session_store::Result<()> {
        self.pool()
            .hdel::<(), _, _>(fleet_key(&self.prefix), id)
            .await
            .map_err(backend_error)
    }

    pub(super) async fn close(&self) {
        let _ = self.pool().quit().await;
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

#[async_trait]
impl SessionStore for RedisSessions {
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

    /// Retires the record: it expires [`super::RETIRED_FOR`] from now, or sooner if it was
    /// to expire sooner anyway (see there why).
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let retired_for = super::RETIRED_FOR.as_millis() as i64;
        self.pool()
            .next()
            .eval::<(), _, _, _>(RETIRE, self.key(session_id), retired_for)
            .await
            .map_err(backend_error)
    }
}

/// A write to one key: the command, its arguments, and the key's cluster slot (where a
/// `WAIT` behind it must go too).
#[derive(Debug)]
struct Write {
    name: &'static str,
    slot: u16,
    args: Vec<Value>,
}

impl Write {
    fn new(name: &'static str, key: &str, args: Vec<Value>) -> Self {
        Self {
            name,
            slot: fred::util::redis_keyslot(key.as_bytes()),
            args,
        }
    }

    fn command(&self) -> CustomCommand {
        CustomCommand::new_static(self.name, ClusterHash::Custom(self.slot), false)
    }
}

/// Replaces the pool behind `pool` (if the store still exists) with a new one built from
/// `settings`, and closes the old one in the background.
fn replace_pool(pool: &Weak<ArcSwap<Pool>>, settings: &RedisSettings) {
    let Some(pool) = pool.upgrade() else {
        return;
    };
    let fresh = match build_pool(settings) {
        Ok(fresh) => fresh,
        Err(err) => {
            tracing::warn!(%err, "could not build new session store connections");
            return;
        }
    };
    tracing::warn!(
        after_secs = watchdog::STUCK_AFTER.as_secs(),
        "the session store has not answered: replacing its connections, looking its address up afresh"
    );
    fresh.connect();
    let old = pool.swap(Arc::new(fresh));
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), old.quit()).await;
    });
}

fn build_pool(settings: &RedisSettings) -> Result<Pool, fred::error::Error> {
    let timeouts = ConnectionTimeouts::of(settings.command_timeout);
    Builder::from_config(RedisConfig::from_url(&settings.url)?)
        .with_config(|config| {
            // Run the reconnect policy for the first connection too, instead of failing.
            config.fail_fast = false;
        })
        .with_performance_config(|perf| perf.default_command_timeout = settings.command_timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = timeouts.connect;
            conn.internal_command_timeout = timeouts.connect;
            // A server that stops answering while the network still acknowledges (a paused
            // process, a proxy that holds bytes back) is left once no reply came for this
            // long after the last command: fred measures from the latest write, so this
            // catches a quiet connection, not a busy one (see the TCP settings below).
            conn.unresponsive.max_timeout = Some(timeouts.unresponsive);
            conn.unresponsive.interval = timeouts.unresponsive_check;
            // A host that vanishes without a reset (power lost, an instance terminated, a
            // failover that leaves the old primary's address silent) is noticed by the
            // kernel: data unacknowledged for `user_timeout` ends the connection, and so do
            // keepalive probes unanswered on an idle one. fred then reconnects, resolving
            // the store's name again (ElastiCache moves its primary endpoint's name).
            conn.tcp = TcpConfig {
                keepalive: Some(
                    TcpKeepalive::new()
                        .with_time(timeouts.keepalive_idle)
                        .with_interval(timeouts.keepalive_interval)
                        .with_retries(KEEPALIVE_PROBES),
                ),
                user_timeout: Some(timeouts.user),
                ..TcpConfig::default()
            };
            // What a failover answers for a while: reconnect, which finds the new primary
            // (Sentinel, cluster slots) and retries the command there.
            conn.reconnect_errors = vec![
                ReconnectError::ReadOnly,
                ReconnectError::ClusterDown,
                ReconnectError::Loading,
                ReconnectError::MasterDown,
                ReconnectError::Custom("TRYAGAIN"),
            ];
        })
        // Retry forever (0 attempts = no limit), 100 ms doubling up to 1 s between tries.
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            100,
            timeouts.max_reconnect_delay.as_millis() as u32,
            2,
        ))
        .build_pool(settings.pool_size)
}

/// Unanswered keepalive probes after which an idle connection is given up.
const KEEPALIVE_PROBES: u32 = 3;

/// How long each stage of a connection may take, all derived from the command timeout
/// (`REDIS_COMMAND_TIMEOUT_MS`, 1 s by default) so that one setting bounds them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnectionTimeouts {
    /// Opening a connection (TCP, TLS, `AUTH`, `HELLO`): twice the command timeout, at
    /// least 1 s. A connect to a silent address waits this long before the next try (which
    /// resolves the name again), so it bounds how long a replica stays on a name's old
    /// address; a TLS handshake in the same region takes milliseconds.
    connect: Duration,
    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged by the peer's
    /// kernel before the connection is ended: twice the command timeout, at least 1 s. The
    /// peer's kernel acknowledges even while Redis is busy (a long `WAIT`, a slow script),
    /// so only a lost network or host reaches it; a retransmission or two on a lossy link
    /// stays well below it.
    user: Duration,
    /// fred's own check: no reply for this long after the last command (twice the command
    /// timeout).
    unresponsive: Duration,
    /// How often fred runs that check.
    unresponsive_check: Duration,
    /// Idle time before the first keepalive probe, and the time between probes: an idle
    /// connection to a vanished host is ended within idle + probes × interval (the user
    /// timeout ends it sooner when set, as Linux applies it to probes too).
    keepalive_idle: Duration,
    keepalive_interval: Duration,
    /// Longest pause between reconnect attempts.
    max_reconnect_delay: Duration,
}

impl ConnectionTimeouts {
    fn of(command_timeout: Duration) -> Self {
        let at_least_a_second = (command_timeout * 2).max(Duration::from_secs(1));
        Self {
            connect: at_least_a_second,
            user: at_least_a_second,
            unresponsive: command_timeout * 2,
            unresponsive_check: (command_timeout / 2).max(Duration::from_millis(50)),
            keepalive_idle: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// Whether `err` is the store's own error reply (`LOADING ...`, `READONLY ...`, `OOM ...`,
/// `CLUSTERDOWN ...`: a code in capitals, then the message), rather than no reply at all.
/// A refused password is a reply too, but one that leaves this replica unable to use the
/// store: not counted.
fn is_error_reply(err: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    let code = err.details().split_whitespace().next().unwrap_or("");
    matches!(err.kind(), ErrorKind::Unknown | ErrorKind::Cluster)
        && code.len() >= 2
        && code.chars().all(|c| c.is_ascii_uppercase())
}

fn backend_error(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    rmp_serde::to_vec(record).map_err(|err| session_store::Error::Encode(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's error replies count as reached; no reply, a timeout or a refused
    /// password do not.
    #[test]
    fn error_replies_are_told_from_no_reply() {
        use fred::error::{Error, ErrorKind};
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MASTERDOWN Link with MASTER is down",
        ] {
            assert!(
                is_error_reply(&Error::new(ErrorKind::Unknown, reply)),
                "{reply}"
            );
        }
        assert!(is_error_reply(&Error::new(
            ErrorKind::Cluster,
            "CLUSTERDOWN The cluster is down"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Timeout,
            "Request timed out."
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::IO,
            "Connection reset"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Auth,
            "WRONGPASS invalid"
        )));
        assert!(!is_error_reply(&Error::new(
            ErrorKind::Unknown,
            "no connection"
        )));
    }

    /// Every stage of a connection is bounded by the command timeout: at the default 1 s a
    /// silent host is left within 2 s of its last acknowledged byte, a connect to a silent
    /// address gives up after 2 s, and reconnects come at least once a second.
    #[test]
    fn connection_timeouts_follow_the_command_timeout() {
        let default = ConnectionTimeouts::of(Duration::from_secs(1));
        assert_eq!(default.user, Duration::from_secs(2));
        assert_eq!(default.connect, Duration::from_secs(2));
        assert_eq!(default.unresponsive, Duration::from_secs(2));
        assert_eq!(default.unresponsive_check, Duration::from_millis(500));
        assert_eq!(default.max_reconnect_delay, Duration::from_secs(1));
        // A tiny command timeout does not make the kernel give up on a healthy but lossy
        // link, nor a TLS handshake fail.
        let tiny = ConnectionTimeouts::of(Duration::from_millis(20));
        assert_eq!(tiny.user, Duration::from_secs(1));
        assert_eq!(tiny.connect, Duration::from_secs(1));
        assert_eq!(tiny.unresponsive_check, Duration::from_millis(50));
    }
}

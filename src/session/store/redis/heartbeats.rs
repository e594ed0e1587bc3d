//! The fleet's heartbeats in the store (see `crate::fleet`, which decides what they say and
//! when they are written): one hash of every replica's latest report, stamped by Redis's
//! clock. They live here, beside the sessions, because they share the store's connections,
//! its key prefix and its timeouts; nothing else of the session store touches them.

use std::time::Duration;

use fred::prelude::{HashesInterface, LuaInterface};
use fred::types::Value;
use tower_sessions::session_store;

use super::{RedisStore, backend_error};
use crate::session::store::keys::fleet_key;

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

/// One replica's heartbeat, as the fleet view writes it into the store.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    /// The replica's id: its field in the fleet hash.
    pub id: &'a str,
    /// What it reports of itself.
    pub report: &'a str,
    /// How long the field counts; older fields are deleted by the next heartbeat.
    pub fresh_for: Duration,
    /// How long the hash outlives its last heartbeat.
    pub key_ttl: Duration,
}

/// Writes a replica's heartbeat (see `crate::fleet`).
pub(in crate::session::store) async fn write(
    store: &RedisStore,
    beat: &Heartbeat<'_>,
) -> session_store::Result<()> {
    let args: Vec<Value> = vec![
        beat.id.into(),
        beat.report.into(),
        (beat.fresh_for.as_millis() as i64).into(),
        (beat.key_ttl.as_millis() as i64).into(),
    ];
    store
        .pool()
        .next()
        .eval::<(), _, _, _>(HEARTBEAT, fleet_key(&store.prefix), args)
        .await
        .map_err(backend_error)
}

/// Redis's time (ms since the epoch) and the fleet hash's fields and values.
pub(in crate::session::store) async fn read(
    store: &RedisStore,
) -> session_store::Result<(u64, Vec<String>)> {
    let mut reply: Vec<String> = store
        .pool()
        .next()
        .eval(FLEET, fleet_key(&store.prefix), Vec::<Value>::new())
        .await
        .map_err(backend_error)?;
    if reply.is_empty() {
        return Err(backend_error("the fleet script answered nothing"));
    }
    let now = reply.remove(0).parse().map_err(backend_error)?;
    Ok((now, reply))
}

/// Deletes replica `id`'s heartbeat.
pub(in crate::session::store) async fn leave(
    store: &RedisStore,
    id: &str,
) -> session_store::Result<()> {
    store
        .pool()
        .hdel::<(), _, _>(fleet_key(&store.prefix), id)
        .await
        .map_err(backend_error)
}

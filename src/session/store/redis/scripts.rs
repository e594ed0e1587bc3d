//! The commands the store sends: a write to one key with its cluster slot ([`Write`]),
//! and the Lua scripts of the session records: the compare-and-set every change and expiry
//! refresh rests on, and the retirement of a checked-out record. Scripts run atomically on
//! the node that holds the key, which is what makes them safe across replicas.

use std::sync::LazyLock;

use fred::types::{ClusterHash, CustomCommand, Value};

/// Replaces a record's value and expiry only if it is still byte for byte the one read,
/// and leaves the change's marker (KEYS[2], for ARGV[4] ms; none for 0, an expiry
/// refresh, which repeats harmlessly). Returns 1 if it replaced; 2
/// if the marker is there already (a resent copy of a write that happened); 0 if the
/// record had changed or vanished.
pub(super) const REPLACE_IF_UNCHANGED: &str = r"
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
pub(super) const RETIRE: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
";

/// The SHA-1 of [`REPLACE_IF_UNCHANGED`], for `EVALSHA`.
pub(super) static REPLACE_IF_UNCHANGED_SHA: LazyLock<String> =
    LazyLock::new(|| fred::util::sha1_hash(REPLACE_IF_UNCHANGED));

/// A write to one key: the command, its arguments, and the key's cluster slot (where a
/// `WAIT` behind it must go too).
#[derive(Debug)]
pub(super) struct Write {
    pub(super) name: &'static str,
    pub(super) slot: u16,
    pub(super) args: Vec<Value>,
}

impl Write {
    pub(super) fn new(name: &'static str, key: &str, args: Vec<Value>) -> Self {
        Self {
            name,
            slot: fred::util::redis_keyslot(key.as_bytes()),
            args,
        }
    }

    pub(super) fn command(&self) -> CustomCommand {
        CustomCommand::new_static(self.name, ClusterHash::Custom(self.slot), false)
    }
}

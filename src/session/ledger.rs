//! Which changes a session record already holds, so that no change is applied twice.
//!
//! The Redis client resends a command that was in flight when its connection dropped
//! (fred's default is up to three attempts). For a compare-and-set that had already
//! written, the resent copy used to see its own write as a conflict, and the change was
//! then applied again on the next attempt. Every change therefore carries a token that
//! the same compare-and-set writes into the record's ledger; the script answers "already
//! applied" when it finds the token in the record it meets (see `store::redis`), whether
//! the record is still the one the change wrote or a later one built on it.
//!
//! The ledger keeps the tokens of the last [`RECENT_MS`] (a resend comes within the
//! command timeout and the client's reconnect), so an idle cart carries one or two.
//!
//! A client's own retry is another request, with a new token. A client that sends an
//! `Idempotency-Key` gets the first answer back instead ([`REPLAYS_KEY`]): the record
//! keeps the answers of its last [`MAX_REPLAYS`] keyed changes, written by the same
//! compare-and-set as the change, so this costs no extra round trip.

use serde_json::Value;

use super::store::Data;

/// The record key of the ledger: `{token: unix ms of the change}`.
pub(crate) const LEDGER_KEY: &str = "applied";

/// How long a change's token stays in the ledger.
pub(crate) const RECENT_MS: i128 = 30_000;

/// What identifies one change across every attempt and every resend of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeToken(String);

impl ChangeToken {
    /// A fresh token: 64 random bits, as text that cannot occur elsewhere in a record.
    pub(crate) fn random() -> Self {
        Self(format!("chg-{:016x}", fastrand::u64(..)))
    }

    /// The token as the store's script looks for it.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes `token` into `data`'s ledger at `now_ms`, dropping tokens older than
/// [`RECENT_MS`].
pub(crate) fn record(data: &mut Data, token: &ChangeToken, now_ms: i128) {
    let mut ledger = match data.remove(LEDGER_KEY) {
        Some(Value::Object(ledger)) => ledger,
        _ => serde_json::Map::new(),
    };
    ledger.retain(|_, at| {
        at.as_i64()
            .is_some_and(|at| now_ms - i128::from(at) < RECENT_MS)
    });
    ledger.insert(token.0.clone(), Value::from(now_ms as i64));
    data.insert(LEDGER_KEY.to_owned(), Value::Object(ledger));
}

/// Whether `data` holds the change `token` stands for.
pub(crate) fn holds(data: &Data, token: &ChangeToken) -> bool {
    data.get(LEDGER_KEY)
        .and_then(Value::as_object)
        .is_some_and(|ledger| ledger.contains_key(&token.0))
}

/// The record key of the answers to changes made with an `Idempotency-Key`:
/// `{key: {"at": unix ms, "fp": fingerprint of the request, "body": the answer}}`.
pub(crate) const REPLAYS_KEY: &str = "replays";

/// How many keyed answers a session keeps; the oldest goes first.
pub(crate) const MAX_REPLAYS: usize = 8;

/// A change made with an `Idempotency-Key`: the key, and what the request asked for.
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    /// The client's key, as it sent it.
    pub(crate) key: String,
    /// A digest of the method, path and body, so the same key cannot stand for another
    /// request.
    pub(crate) fingerprint: String,
}

impl Keyed {
    /// The key for a request described by `request` (method, path and what it asks).
    pub(crate) fn new(key: &str, request: &str) -> Self {
        Self {
            key: key.to_owned(),
            fingerprint: fred::util::sha1_hash(request),
        }
    }
}

/// What the session already knows of a keyed change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Prior {
    /// Nothing: apply it.
    None,
    /// It was applied, and this was the answer.
    Answered(String),
    /// The key was used for another request.
    OtherRequest,
}

/// Whether `data` holds the answer to `keyed`.
pub(crate) fn prior(data: &Data, keyed: &Keyed) -> Prior {
    let Some(entry) = data
        .get(REPLAYS_KEY)
        .and_then(|replays| replays.get(&keyed.key))
    else {
        return Prior::None;
    };
    if entry["fp"].as_str() != Some(keyed.fingerprint.as_str()) {
        return Prior::OtherRequest;
    }
    match entry["body"].as_str() {
        Some(body) => Prior::Answered(body.to_owned()),
        None => Prior::None,
    }
}

/// Keeps `body` as the answer to `keyed`, dropping the oldest answers past
/// [`MAX_REPLAYS`].
pub(crate) fn remember(data: &mut Data, keyed: &Keyed, body: String, now_ms: i128) {
    let mut replays = match data.remove(REPLAYS_KEY) {
        Some(Value::Object(replays)) => replays,
        _ => serde_json::Map::new(),
    };
    while replays.len() >= MAX_REPLAYS {
        let oldest = replays
            .iter()
            .min_by_key(|(_, entry)| entry["at"].as_i64().unwrap_or(i64::MIN))
            .map(|(key, _)| key.clone());
        match oldest {
            Some(key) => replays.remove(&key),
            None => break,
        };
    }
    let entry = serde_json::json!({"at": now_ms as i64, "fp": keyed.fingerprint, "body": body});
    replays.insert(keyed.key.clone(), entry);
    data.insert(REPLAYS_KEY.to_owned(), Value::Object(replays));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_token_is_held_until_it_ages_out() {
        let mut data = Data::new();
        let (first, second) = (ChangeToken::random(), ChangeToken::random());
        assert_ne!(first, second);
        record(&mut data, &first, 1_000);
        assert!(holds(&data, &first));
        assert!(!holds(&data, &second));
        record(&mut data, &second, 1_000 + RECENT_MS - 1);
        assert!(holds(&data, &first) && holds(&data, &second));
        record(&mut data, &ChangeToken::random(), 1_000 + RECENT_MS);
        assert!(!holds(&data, &first), "an old token is dropped");
        assert!(holds(&data, &second));
    }

    #[test]
    fn a_ledger_in_an_unknown_shape_starts_afresh() {
        let mut data = Data::new();
        data.insert(LEDGER_KEY.to_owned(), Value::from("garbage"));
        let token = ChangeToken::random();
        record(&mut data, &token, 5);
        assert!(holds(&data, &token));
    }

    #[test]
    fn a_keyed_answer_is_replayed_only_for_the_same_request() {
        let mut data = Data::new();
        let add = Keyed::new("k1", "POST /api/cart/items ceramic-mug 1");
        assert_eq!(prior(&data, &add), Prior::None);
        remember(&mut data, &add, "{\"item_count\":1}".into(), 10);
        assert_eq!(
            prior(&data, &add),
            Prior::Answered("{\"item_count\":1}".into())
        );
        let other = Keyed::new("k1", "POST /api/cart/items ceramic-mug 2");
        assert_eq!(prior(&data, &other), Prior::OtherRequest);
    }

    #[test]
    fn only_the_latest_answers_are_kept() {
        let mut data = Data::new();
        let keyed = |n: usize| Keyed::new(&format!("k{n}"), "DELETE /api/cart");
        for n in 0..MAX_REPLAYS + 2 {
            remember(&mut data, &keyed(n), n.to_string(), n as i128);
        }
        assert_eq!(prior(&data, &keyed(0)), Prior::None);
        assert_eq!(prior(&data, &keyed(1)), Prior::None);
        assert_eq!(prior(&data, &keyed(2)), Prior::Answered("2".into()));
        assert_eq!(
            prior(&data, &keyed(MAX_REPLAYS + 1)),
            Prior::Answered((MAX_REPLAYS + 1).to_string())
        );
    }
}

//! The answers to changes made with an `Idempotency-Key`, kept in the session record.
//!
//! A client's retry is a new request: without a key, nobody can tell whether the first
//! attempt's change happened (its answer may be lost, or say `outcome_unknown`). A client
//! that sends a key gets the first answer back instead: the record keeps the answers of
//! its last [`MAX_REPLAYS`] keyed changes, written by the same compare-and-set as the
//! change, so this costs no extra round trip. Browser add forms send a key of their own
//! (a token rendered into each page).

use serde_json::Value;

use super::store::Data;

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

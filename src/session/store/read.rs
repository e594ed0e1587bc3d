//! Reading one value of a stored record without decoding the rest.
//!
//! tower-sessions decodes a whole record into `serde_json::Value`s (a map of maps, a
//! string for every key), and a read of the cart then converts its `Value` once more. A
//! page view needs one value and the expiry date, so [`one_value`] walks the MessagePack
//! record once, decodes the value under the wanted key straight into its type and skips
//! the others without building them (docs/benchmark.md has what it saves).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use time::OffsetDateTime;

/// The expiry date of the record in `stored` (encoded as `super::redis` encodes a
/// `tower_sessions::session::Record`: an array of id, data and expiry date) and its value
/// under `key`, if any. An error if the record, or that value, does not decode as expected:
/// the caller then takes tower-sessions' way, which knows what to do with either.
pub(super) fn one_value<T: DeserializeOwned>(
    stored: &[u8],
    key: &str,
) -> Result<(OffsetDateTime, Option<T>), rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(stored);
    deserializer.deserialize_any(RecordOf {
        key,
        value: PhantomData,
    })
}

/// Visits a record, keeping the value under `key`.
struct RecordOf<'k, T> {
    key: &'k str,
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RecordOf<'_, T> {
    type Value = (OffsetDateTime, Option<T>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session record: [id, data, expiry date]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        seq.next_element::<IgnoredAny>()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let value = seq
            .next_element_seed(DataOf {
                key: self.key,
                value: PhantomData::<T>,
            })?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let expiry_date = seq
            .next_element::<OffsetDateTime>()?
            .ok_or_else(|| A::Error::invalid_length(2, &self))?;
        Ok((expiry_date, value))
    }
}

/// Visits a record's data (a map from keys to values), keeping the value under `key`.
struct DataOf<'k, T> {
    key: &'k str,
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for DataOf<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for DataOf<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session's data: a map of values by key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == self.key && found.is_none() {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, borrowed from the stored bytes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Serialize;
    use tower_sessions::session::{Id, Record};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Line {
        product_id: String,
        quantity: u32,
    }

    fn stored(data: &[(&str, serde_json::Value)]) -> (Record, Vec<u8>) {
        let record = Record {
            id: Id::default(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<HashMap<_, _>>(),
            expiry_date: OffsetDateTime::now_utc(),
        };
        let bytes = rmp_serde::to_vec(&record).unwrap();
        (record, bytes)
    }

    #[test]
    fn decodes_the_wanted_value_and_the_expiry_as_the_whole_record_would() {
        let line = serde_json::json!({"product_id": "mug", "quantity": 2});
        let (record, bytes) = stored(&[
            ("replays", serde_json::json!({"k": ["a", 1, {"x": null}]})),
            ("line", line.clone()),
            ("last_order", serde_json::json!(3.5)),
        ]);
        let (expiry, value) = one_value::<Line>(&bytes, "line").unwrap();
        assert_eq!(expiry, record.expiry_date);
        assert_eq!(value, Some(serde_json::from_value(line).unwrap()));
    }

    #[test]
    fn a_missing_key_is_none_and_a_value_of_another_shape_an_error() {
        let (_, bytes) = stored(&[("line", serde_json::json!("not a line"))]);
        assert!(matches!(one_value::<Line>(&bytes, "other"), Ok((_, None))));
        assert!(one_value::<Line>(&bytes, "line").is_err());
    }

    #[test]
    fn bytes_that_are_no_record_are_an_error() {
        assert!(one_value::<Line>(b"\x92\x01", "line").is_err());
        assert!(one_value::<Line>(b"", "line").is_err());
        assert!(one_value::<Line>(&rmp_serde::to_vec(&"text").unwrap(), "line").is_err());
    }
}

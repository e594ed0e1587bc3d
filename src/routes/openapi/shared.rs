//! What many routes of the OpenAPI document share, for their `#[utoipa::path]`: the error
//! answers of each kind of route ([`error_sets`], whose `code` is an enum of the codes
//! that status can carry), the values the catalogue and the cart rules bound (a product
//! id, a quantity), and the `Idempotency-Key` of a change. A leaf: the handlers' modules
//! use it, and the document (`super`) is assembled from them.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Object, ObjectBuilder, RefOr, Type};

use crate::cart::MAX_LINE_QUANTITY;
use crate::catalog;

/// One error answer: the JSON error whose `code` is one of `codes`.
pub(super) fn error_response(status: u16, codes: &[&str]) -> Response {
    let report = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().copied())),
        )
        .required("code")
        .property("message", Object::with_type(Type::String))
        .required("message");
    let envelope = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("error", report)
        .required("error");
    let description = match codes {
        [code] => format!("`{code}`"),
        _ => codes
            .iter()
            .map(|code| format!("`{code}`"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    ResponseBuilder::new()
        .description(format!("{status}: {description} (see the API reference)"))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(envelope)).build(),
        )
        .build()
}

/// Error answers, by status, with the codes each can carry; [`error_sets`] combines them.
type Codes = &'static [(u16, &'static [&'static str])];

/// What any route with a session may answer when the store is in trouble.
const STORE: Codes = &[(503, &["store_unavailable", "store_refusing_writes"])];
/// What a change (POST, PUT, DELETE under `/api/cart`) may answer besides.
const CHANGE: Codes = &[
    (400, &["invalid_idempotency_key"]),
    (403, &["cross_origin"]),
    (409, &["checked_out"]),
    (422, &["idempotency_key_reused"]),
    (503, &["outcome_unknown", "session_busy"]),
];
/// What a change of one product's line may answer besides.
const LINE: Codes = &[
    // A product id in the path that is not valid UTF-8 once decoded (`%FF`).
    (400, &["malformed_request"]),
    (404, &["unknown_product"]),
    (422, &["line_full", "too_many_lines"]),
];
/// What a route that reads a JSON body may answer besides.
const BODY: Codes = &[
    (400, &["malformed_request"]),
    (408, &["request_timeout"]),
    (413, &["payload_too_large"]),
    (415, &["unsupported_media_type"]),
    (422, &["invalid_input"]),
];
/// What a change that may start a session (a body-carrying change of a line) may answer
/// besides: the store's memory budget for new sessions, or nginx's limit of new sessions
/// per client address, refused it.
const NEW_SESSION: Codes = &[(429, &["too_many_new_sessions"])];
/// What `/readyz` answers when this replica should get no traffic.
const NOT_READY: Codes = &[(503, &["store_unavailable", "draining"])];

/// The error answers of `sets` together, one response per status.
fn combine(sets: &[Codes]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for (status, codes) in sets.iter().flat_map(|set| set.iter()) {
        let known = by_status.entry(*status).or_default();
        for code in *codes {
            if !known.contains(code) {
                known.push(code);
            }
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), error_response(status, &codes).into()))
        .collect()
}

/// The error answers of each kind of route, for `responses(...)` of `#[utoipa::path]`.
pub(crate) mod error_sets {
    use super::*;

    macro_rules! error_set {
        ($(#[$doc:meta] $name:ident = [$($set:ident),*];)*) => {$(
            #[$doc]
            pub(crate) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    combine(&[$($set),*])
                }
            }
        )*};
    }

    error_set! {
        /// A read of the session (`GET /api/cart`, `GET /api/fleet`).
        ReadErrors = [STORE];
        /// A change of the whole cart (`DELETE /api/cart`).
        CartChangeErrors = [STORE, CHANGE];
        /// A change of one line without a body (`DELETE /api/cart/items/{product_id}`).
        LineChangeErrors = [STORE, CHANGE, LINE];
        /// A change of one line with a JSON body (the first one starts the session).
        LineBodyChangeErrors = [STORE, CHANGE, LINE, BODY, NEW_SESSION];
        /// `/readyz` when not ready.
        NotReady = [NOT_READY];
    }
}

/// A product id: one of the catalogue's.
pub(crate) fn product_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(catalog::products().iter().map(|product| product.id)))
        .description(Some("A product of the catalogue (`GET /api/products`)."))
        .build()
}

/// The quantity `POST /api/cart/items` adds: 1 to 99.
pub(crate) fn add_quantity() -> Object {
    quantity(1, "Units to add; the line holds at most 99.")
}

/// The quantity `PUT /api/cart/items/{product_id}` sets a line to: 0 (removes it) to 99.
pub(crate) fn line_quantity() -> Object {
    quantity(0, "The line's new quantity; 0 removes the line.")
}

fn quantity(minimum: u32, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(minimum))
        .maximum(Some(MAX_LINE_QUANTITY))
        .description(Some(description))
        .build()
}

/// The optional `Idempotency-Key` of a change.
pub(crate) struct IdempotencyKeyParam;

impl utoipa::IntoParams for IdempotencyKeyParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<utoipa::openapi::path::Parameter> {
        let key = ObjectBuilder::new()
            .schema_type(Type::String)
            // 1 to 255 visible ASCII characters but `"`, quoted or not.
            .pattern(Some(r#"^([!#-~]{1,255}|"[!#-~]{1,255}")$"#));
        vec![
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .description(Some(
                    "Makes a retried change count once: a retry with the same key, on any \
                     replica, within the session's life, gets the first answer again and \
                     changes nothing; the same key with another request answers 422 \
                     `idempotency_key_reused`.",
                ))
                .schema(Some(key))
                .build(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_shared_by_two_sets_list_the_codes_of_both() {
        let responses = combine(&[STORE, CHANGE]);
        let RefOr::T(unavailable) = &responses["503"] else {
            panic!("an inline response");
        };
        assert!(unavailable.description.contains("`store_unavailable`"));
        assert!(unavailable.description.contains("`session_busy`"));
    }

    #[test]
    fn the_quantities_are_bounded_by_the_cart_rules() {
        let add = serde_json::to_value(add_quantity()).unwrap();
        assert_eq!(add["minimum"], 1);
        assert_eq!(add["maximum"], MAX_LINE_QUANTITY);
        let line = serde_json::to_value(line_quantity()).unwrap();
        assert_eq!(line["minimum"], 0);
    }
}

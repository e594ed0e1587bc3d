//! The OpenAPI 3.1 document of the JSON API, made from the code by utoipa and served at
//! `GET /api/openapi.json` (no session), so that clients can be generated and standard
//! tools (schemathesis in CI) can check the service against it.
//!
//! Each handler describes itself with `#[utoipa::path]` next to its code (`api`, `health`),
//! its body types derive `ToSchema`. This module holds what is the same for many routes:
//! the error answers of each kind of route ([`error_sets`], whose `code` is an enum of the
//! codes that status can carry), the schemas of values the catalogue and the cart rules
//! bound (a product id, a quantity), and what the server layer adds to every answer
//! (`X-Served-By`, and `Retry-After` on a 503).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Object, ObjectBuilder, RefOr, Type};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::cart::MAX_LINE_QUANTITY;
use crate::catalog;
use crate::state::AppState;

/// The path the document is served at.
pub(crate) const PATH: &str = "/api/openapi.json";

/// `GET /api/openapi.json`, outside every session layer.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route(PATH, get(serve))
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "This document.", content_type = "application/json",
        body = Object)),
)]
async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// The document as JSON, made once.
pub(crate) fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &DOCUMENT
}

/// The whole document: the API's routes, the health routes and this one.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Document::openapi();
    doc.merge(super::api::Doc::openapi());
    doc.merge(super::health::Doc::openapi());
    ServerLayer.modify(&mut doc);
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "elastic-cart",
        description = "A shopping cart served by identical replicas behind a round-robin \
            balancer, its sessions in a shared Redis. The session is the `cart_session` \
            cookie: send it back to keep the cart. Changes (POST, PUT, DELETE) take an optional \
            `Idempotency-Key`: a retry with the same key gets the first answer again and \
            changes nothing, on any replica. Errors are `{\"error\":{\"code\",\"message\"}}`; \
            a 503 says when to retry with `Retry-After`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(serve),
    tags(
        (name = "cart", description = "The visitor's cart, kept in the session."),
        (name = "catalog", description = "What the shop sells."),
        (name = "fleet", description = "The replicas serving the shop."),
        (name = "operations", description = "Health checks and metrics, without a session."),
        (name = "meta", description = "This document."),
    ),
)]
struct Document;

/// What the server layer adds to every answer, whichever route made it: `X-Served-By`,
/// `Retry-After` on a 503, and the answers to a request head that is too large.
struct ServerLayer;

impl Modify for ServerLayer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                server_answers(operation);
            }
        }
    }
}

fn server_answers(operation: &mut Operation) {
    let too_large = [
        (414, &["uri_too_long"][..]),
        (431, &["headers_too_large"][..]),
    ];
    for (status, codes) in too_large {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(status, codes).into());
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.headers.insert(
            "X-Served-By".to_owned(),
            HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::String)))
                .description(Some("The id of the replica that answered."))
                .build()
                .into(),
        );
        if status == "503" {
            response
                .headers
                .insert("Retry-After".to_owned(), retry_after().into());
        }
    }
}

fn retry_after() -> Header {
    HeaderBuilder::new()
        .schema(Some(Object::with_type(Type::Integer)))
        .description(Some(
            "Seconds to wait before retrying (with the same Idempotency-Key for a change).",
        ))
        .build()
}

/// One error answer: the JSON error whose `code` is one of `codes`.
fn error_response(status: u16, codes: &[&str]) -> Response {
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
        /// A change of one line with a JSON body.
        LineBodyChangeErrors = [STORE, CHANGE, LINE, BODY];
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
    fn every_answer_names_its_replica_and_every_503_says_when_to_retry() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let headers = &response["headers"];
                    assert!(
                        headers.get("X-Served-By").is_some(),
                        "{method} {path} {status} lacks X-Served-By"
                    );
                    if status == "503" {
                        assert!(headers.get("Retry-After").is_some());
                    }
                }
            }
        }
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

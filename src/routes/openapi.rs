//! The OpenAPI 3.1 document of the JSON API, made from the code by utoipa and served at
//! `GET /api/openapi.json` (no session), so that clients can be generated and standard
//! tools (schemathesis in CI) can check the service against it.
//!
//! Each handler describes itself with `#[utoipa::path]` next to its code (`api`, `health`),
//! its body types derive `ToSchema`; [`shared`] holds what many routes share (error
//! answers, bounded values, the `Idempotency-Key`). This module assembles the document
//! and adds what the server layer adds to every answer (`X-Served-By`, and `Retry-After`
//! on a 503 or 429).

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::{Object, RefOr, Type};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

pub(crate) mod shared;

use shared::error_response;

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
            cookie (`__Host-cart_session` where the shop sets it Secure): send it back to \
            keep the cart. Changes (POST, PUT, DELETE) take an optional \
            `Idempotency-Key`: a retry with the same key gets the first answer again and \
            changes nothing, on any replica. Errors are `{\"error\":{\"code\",\"message\"}}`; \
            a 503 or 429 says when to retry with `Retry-After`.",
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
/// `Retry-After` on a 503 or 429, and the answers to a request head that is too large.
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
        if status == "503" || status == "429" {
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

#[cfg(test)]
mod tests {
    use super::*;

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
                    if status == "503" || status == "429" {
                        assert!(headers.get("Retry-After").is_some());
                    }
                }
            }
        }
    }
}

//! HTTP routes, one router per kind of client, each deciding how its errors look:
//!
//! - [`pages`]: browser pages; errors are HTML pages (and so is any unknown path);
//! - [`api`]: the JSON API under `/api`; errors are the JSON error;
//! - [`health`]: `/healthz` and `/readyz` for balancers, outside the session layer;
//! - [`openapi`]: the API's OpenAPI document at `/api/openapi.json`, made from the
//!   handlers' own descriptions;
//! - [`chaos`]: the demo's crash button, only with `DEMO_CHAOS=1`.

pub(crate) mod api;
pub(crate) mod chaos;
pub(crate) mod health;
pub(crate) mod openapi;
pub(crate) mod pages;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_sessions::SessionManagerLayer;

use crate::catalog::{self, Product};
use crate::error::{Error, ErrorReport};
use crate::session::cookie::HostCookieLayer;
use crate::session::store::Store;
use crate::state::AppState;

/// Every route pattern the routers register, as `MatchedPath` names them (nested ones
/// with their prefix), so that the request duration of each is reported at 0 from the
/// first scrape. A new route is added here too: `tests/api/metrics.rs` requests each of
/// these and every route docs/api.md names, and fails if one is counted under a pattern
/// the first scrape did not show.
pub(crate) const PATTERNS: [&str; 18] = [
    // pages
    "/",
    "/cart",
    "/cart/items",
    "/cart/items/{product_id}",
    "/cart/items/{product_id}/remove",
    "/cart/clear",
    "/checkout",
    "/checkout/complete",
    "/fleet",
    // api
    "/api/products",
    "/api/fleet",
    "/api/cart",
    "/api/cart/items",
    "/api/cart/items/{product_id}",
    "/api/openapi.json",
    // health
    "/healthz",
    "/readyz",
    "/metrics",
];

/// The patterns of [`PATTERNS`] and, with `DEMO_CHAOS=1`, the crash button's.
pub(crate) fn patterns(chaos: bool) -> impl Iterator<Item = &'static str> {
    PATTERNS.into_iter().chain(chaos.then_some("/chaos/crash"))
}

/// The session layer, given to each router that reads or changes sessions, behind the
/// move of a plain session cookie to its `__Host-` name (`crate::session::cookie`).
pub(crate) type SessionLayer = Stack<SessionManagerLayer<Store>, HostCookieLayer>;

/// The layers of [`body_guards`], outermost last.
type BodyGuards = Stack<RequestBodyDeadlineLayer, Stack<RequestBodyLimitLayer, Identity>>;

/// The guards of a route that reads a body: a declared length over the limit is answered
/// 413 without being parsed (and read and thrown away after the answer, up to a bound, so
/// the client sees the answer rather than a reset: `crate::server::unread_bodies`, as for
/// every answer given before its body was read), and a body that is not all there within
/// [`crate::limits::BODY_READ_TIMEOUT`] ends the request (408), so a slow or lying client cannot
/// hold a connection. A deadline for the whole body rather than an idle timeout, which a
/// byte every few seconds would keep from ever firing. Only on such routes: the others
/// never read a body, and the guards cost a timer and an allocation per request.
pub(crate) fn body_guards() -> ServiceBuilder<BodyGuards> {
    ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(crate::limits::MAX_BODY_BYTES))
        .layer(RequestBodyDeadlineLayer::new(
            crate::limits::BODY_READ_TIMEOUT,
        ))
}

/// The catalogue's product `id`, or the 404 of an unknown product (a form or a request
/// naming one that is not, or is no longer, sold).
pub(crate) fn known_product(id: &str) -> Result<&'static Product, Error> {
    catalog::find(id).ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

/// Answers unknown paths with our 404.
pub(crate) async fn not_found(request: Request) -> Error {
    Error::NotFound(request.uri().path().to_owned())
}

/// Gives every error response our JSON body, including the ones made outside our
/// handlers: axum's 405, tower-sessions' 500 when saving the session failed (a store
/// outage, so our 503), a missing static file's 404, tower-http's 413 for a declared
/// length over the limit.
/// Mapped over every response (a `tower::util::MapResponseLayer`: no boxing per request).
pub(crate) fn json_errors(response: Response) -> Response {
    with_our_body(response)
}

/// For the browser pages: every error as an HTML error page.
pub(crate) fn html_errors(state: &AppState, response: Response) -> Response {
    let response = with_our_body(response);
    let Some(report) = response.extensions().get::<ErrorReport>() else {
        return response;
    };
    let page = pages::error_page(state, response.status(), report);
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(page))
}

/// An error response made outside our handlers, with our error's body and headers,
/// keeping its original status and headers (405's Allow, say).
fn with_our_body(response: Response) -> Response {
    if response.extensions().get::<ErrorReport>().is_some() || response.status().as_u16() < 400 {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (ours, body) = bare_error(parts.status).into_response().into_parts();
    parts.headers.extend(ours.headers);
    parts.extensions.extend(ours.extensions);
    parts.status = ours.status;
    Response::from_parts(parts, body)
}

/// Our error for an empty error response made outside our handlers.
fn bare_error(status: StatusCode) -> Error {
    match status {
        StatusCode::INTERNAL_SERVER_ERROR => {
            Error::StoreUnavailable("the session layer could not save the session".to_owned())
        }
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed,
        StatusCode::NOT_FOUND => Error::NotFound("no such resource".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        other => Error::Other(other),
    }
}

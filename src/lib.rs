//! elastic-cart: a shopping cart whose only per-user state is a session in a shared store,
//! so any number of identical replicas behind a round-robin balancer can serve any request.
//!
//! # Layout
//!
//! Dependencies point one way, from the top of this list down (CONTRIBUTING.md has the same
//! list with every file):
//!
//! - [`startup`]: turns a [`config::Config`] into a running replica (store, listener,
//!   state, heartbeats, drain); `main` only wires; [`config`]: settings from the
//!   environment.
//! - this file: [`app`] builds the router without any I/O, so tests drive exactly what
//!   `main` serves; [`serve`] runs it until a shutdown signal.
//! - `routes`: the browser pages (views and handlers), the JSON API, health checks and the
//!   chaos button, each a router that decides how its own errors look.
//! - [`state`]: what every handler can reach.
//! - [`fleet`]: the heartbeats every replica writes and the live fleet view built from
//!   them; it takes the store and [`fleet::Local`], not the whole state.
//! - [`session`]: the typed cart session over tower-sessions, cart changes that stay
//!   correct when they overlap across replicas, and [`session::store`], the app's handle on
//!   Redis or memory.
//! - [`server`]: the HTTP/1.1 connections under the router; `security`: cross-origin checks
//!   and security headers; `extract`: extractors whose rejections are our error;
//!   [`shutdown`]: draining before a replica leaves the balancer; [`metrics`]: what a
//!   replica counts for Prometheus; [`log_line`]: the log's line format.
//! - `error`: the one error type.
//! - `cart`, `order`, [`catalog`]: the shop's rules as plain data and functions;
//!   [`limits`]: request sizes and deadlines, a leaf every layer reads.

pub(crate) mod cart;
pub mod catalog;
pub mod config;
pub(crate) mod error;
pub(crate) mod extract;
pub mod fleet;
pub mod limits;
pub mod log_line;
pub mod metrics;
pub(crate) mod order;
pub(crate) mod routes;
pub(crate) mod security;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod startup;
pub mod state;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::middleware;
use tower::ServiceBuilder;
use tower::layer::util::Stack;
use tower::util::MapResponseLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::{SetResponseHeader, SetResponseHeaderLayer};
use tower_http::trace::TraceLayer;
use tower_sessions::SessionManagerLayer;
use tower_sessions::cookie::SameSite;
use tracing::{Level, Span};

pub use crate::limits::{BODY_READ_TIMEOUT, MAX_BODY_BYTES};
pub use crate::routes::chaos::CRASH_EXIT_STATUS;
pub use crate::session::ChangePolicy;
pub use crate::session::{SECURE_SESSION_COOKIE, SESSION_COOKIE};
pub use crate::state::AppState;

/// Header naming the replica that answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Builds the whole application. Does no I/O, so tests can build it freely.
pub fn app(state: AppState) -> Router {
    let session_layer = SessionManagerLayer::new(state.store.clone())
        // `__Host-cart_session` when secure: Secure, Path=/ (the default), no Domain.
        .with_name(session::session_cookie_name(state.cookie_secure))
        // Lax, not the default Strict: a visitor arriving from another site keeps the cart.
        .with_same_site(SameSite::Lax)
        .with_secure(state.cookie_secure)
        .with_http_only(true);
    // In front of it, what moves a visitor holding the plain cookie to the `__Host-` one.
    let sessions = Stack::new(
        session_layer,
        session::cookie::HostCookieLayer::new(state.cookie_secure),
    );
    let served_by = HeaderValue::from_str(&state.replica_id)
        .expect("replica ids are validated to be header-safe");
    let chaos = state.chaos;
    let replica = state.replica_id.clone();
    let metrics = state.metrics.clone();
    metrics.expect_routes(routes::patterns(chaos));
    let drain = state.drain.clone();

    let router = Router::new()
        .merge(routes::pages::router(&state, sessions.clone()))
        .nest("/api", routes::api::router(sessions))
        // Health checks get no session layer: a balancer's probe every few seconds must
        // never create a session or read one, and /readyz asks the store itself.
        .merge(routes::health::router())
        .merge(routes::openapi::router())
        .nest("/static", static_files(&state.static_dir))
        // Top-down: the first layer sees a request first and its response last.
        .layer(
            ServiceBuilder::new()
                // First, so a request's time includes every layer below it.
                .layer(metrics::CountRequestsLayer::new(metrics))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(move |request: &Request<_>| request_span(&replica, request))
                        .on_request(())
                        .on_response(log_response)
                        .on_failure(()),
                )
                // Plain response maps, not `axum::middleware`'s `from_fn` and
                // `map_response`, which box the inner service and the future of every
                // request (docs/benchmark.md).
                .layer(MapResponseLayer::new(security::add_security_headers))
                .layer(SetResponseHeaderLayer::overriding(SERVED_BY, served_by))
                .layer(MapResponseLayer::new(move |response| {
                    shutdown::close_connection_while_draining(&drain, response)
                }))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(MapResponseLayer::new(routes::json_errors)),
        )
        .with_state(state);
    if chaos {
        // Outermost, so that after a crash answer nothing at all is answered.
        router.layer(middleware::from_fn(
            routes::chaos::answer_nothing_after_a_crash,
        ))
    } else {
        router
    }
}

/// The stylesheet, script and images, cached for a few minutes: a page view is then one
/// request, so round robin moves on with every reload instead of being absorbed by
/// stylesheet fetches.
fn static_files(dir: &Path) -> Router<AppState> {
    let files = SetResponseHeader::overriding(
        // A folder is no file: 404, not a redirect to a folder listing we do not serve.
        ServeDir::new(dir).append_index_html_on_directories(false),
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(static_errors))
}

/// Longest file name the file system takes (`NAME_MAX`); `ServeDir` answers a longer one
/// with a 500, as it does any error of the file system other than a missing file.
const MAX_FILE_NAME: usize = 255;

/// A path the file system cannot hold names no file of ours: 404 before `ServeDir` tries.
/// What `ServeDir` still answers 500 (out of descriptors, an I/O error) is a fault of this
/// replica, answered as our `internal` error, not as tower-sessions' failed save.
async fn static_errors(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    if path.split('/').any(|name| name.len() > MAX_FILE_NAME) {
        return error::Error::NotFound(path.to_owned()).into_response();
    }
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        return error::Error::Internal("a static file could not be read".to_owned())
            .into_response();
    }
    response
}

/// The span of one request: info, but debug for the health checks, which balancers send
/// every few seconds to every replica (their lines would bury the shop's).
fn request_span<B>(replica: &str, request: &Request<B>) -> Span {
    let (method, path) = (request.method(), request.uri().path());
    if matches!(path, "/healthz" | "/readyz") {
        tracing::debug_span!("request", replica = %replica, %method, path = %path)
    } else {
        tracing::info_span!("request", replica = %replica, %method, path = %path)
    }
}

/// One line per answered request, at the level of its span.
fn log_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = format_args!("{:.2}", latency.as_secs_f64() * 1000.0);
    match span.metadata().map(|meta| *meta.level()) {
        Some(Level::INFO) => tracing::info!(status, latency_ms, "served"),
        Some(_) => tracing::debug!(status, latency_ms, "served"),
        None => {}
    }
}

/// Serves the application on `listener` until `shutdown` completes, then stops accepting
/// and finishes the requests in flight. `main` passes a [`shutdown::ClosableListener`],
/// which it closes (without resetting queued connections) before `shutdown` completes.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
{
    server::serve(listener, app(state), shutdown).await;
}

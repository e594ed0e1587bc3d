//! elastic-cart: a shopping cart whose only per-user state is a session in a shared store,
//! so any number of identical replicas behind a round-robin balancer can serve any request.
//!
//! # Layout
//!
//! - [`config`]: settings from the environment (`elastic-cart --help` lists them).
//! - [`catalog`]: the products, compiled in.
//! - [`cart`]: the cart rules as plain functions.
//! - [`session`]: the typed session (`CartSession`) over `tower_sessions::Session`.
//! - [`session_store`]: where sessions live (Redis or memory), with bounded waits.
//! - [`session_update`]: cart changes that stay correct when they overlap across replicas.
//! - [`routes`]: browser pages, the JSON API, health checks.
//! - [`error`]: the one error type and its responses.
//! - [`security`]: cross-origin request checks and security headers.
//! - [`shutdown`]: draining before a replica leaves the balancer.
//!
//! [`app`] builds the router without any I/O so tests drive exactly what `main` serves;
//! [`serve`] runs it until a shutdown signal.

pub mod cart;
pub mod catalog;
pub mod config;
pub mod error;
pub mod extract;
pub mod routes;
pub mod security;
pub mod session;
pub mod session_store;
pub mod session_update;
pub mod shutdown;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::middleware;
use tower::ServiceBuilder;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::SessionManagerLayer;
use tower_sessions::cookie::SameSite;
use tracing::Span;

use crate::session_store::SessionBackend;
use crate::shutdown::Drain;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cart_session";
/// Header naming the replica that answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// What every request handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This replica's name, shown on pages and in `X-Served-By`.
    pub replica_id: Arc<str>,
    /// Where sessions live.
    pub sessions: SessionBackend,
    /// Whether the session cookie is sent over HTTPS only.
    pub cookie_secure: bool,
    /// Directory of the files served under `/static`.
    pub static_dir: Arc<Path>,
    /// Set when the replica is stopping, so it can leave the balancer without errors.
    pub drain: Drain,
    /// How changes of existing sessions are made.
    pub changes: ChangePolicy,
    /// Whether pages offer the "crash this replica" button (demos only).
    pub chaos: bool,
}

/// How changes of an existing session are made.
#[derive(Debug, Clone, Copy)]
pub struct ChangePolicy {
    /// Longest a change keeps retrying against competing changes before it answers 503.
    pub max_wait: Duration,
    /// `true` in production. `false` makes changes plain tower-sessions read-modify-writes,
    /// which lose updates when they overlap; it exists so tests can show that loss.
    pub serialised: bool,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(5),
            serialised: true,
        }
    }
}

/// Builds the whole application. Does no I/O, so tests can build it freely.
pub fn app(state: AppState) -> Router {
    let sessions = SessionManagerLayer::new(state.sessions.clone())
        .with_name(SESSION_COOKIE)
        // Lax, not the default Strict: a visitor arriving from another site keeps the cart.
        .with_same_site(SameSite::Lax)
        .with_secure(state.cookie_secure)
        .with_http_only(true);
    let served_by = HeaderValue::from_str(&state.replica_id)
        .expect("replica ids are validated to be header-safe");
    let replica = state.replica_id.clone();
    let chaos = state.chaos;

    let router = Router::new()
        .merge(routes::pages::router(state.chaos))
        .nest("/api", routes::api::router())
        .layer(sessions)
        .merge(routes::health::router())
        .nest_service(
            "/static",
            // Cached for a few minutes: a page view is then one request, so round robin
            // moves on with every reload instead of being absorbed by stylesheet fetches.
            ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                ))
                .service(ServeDir::new(&*state.static_dir)),
        )
        .fallback(routes::not_found)
        .layer(middleware::from_fn(security::reject_cross_origin))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::render_error_pages,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.drain.clone(),
            shutdown::close_connections_while_draining,
        ))
        .layer(SetResponseHeaderLayer::overriding(SERVED_BY, served_by))
        .layer(middleware::map_response(security::add_security_headers))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request<_>| {
                    tracing::info_span!(
                        "request",
                        replica = %replica,
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                })
                .on_request(())
                .on_response(|response: &Response<_>, latency: Duration, _: &Span| {
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms = format_args!("{:.2}", latency.as_secs_f64() * 1000.0),
                        "served"
                    );
                })
                .on_failure(()),
        )
        .with_state(state);
    if chaos {
        router.layer(middleware::from_fn(
            routes::pages::answer_nothing_after_a_crash,
        ))
    } else {
        router
    }
}

/// Serves the application on `listener` until `shutdown` completes, then stops accepting
/// and finishes the requests in flight. `main` passes a [`shutdown::ClosableListener`],
/// which it closes (without resetting queued connections) before `shutdown` completes.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

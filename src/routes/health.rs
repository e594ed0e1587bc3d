//! Health checks for balancers and orchestrators: `/healthz` (the process answers) and
//! `/readyz` (this replica should get traffic: it is not draining and it reaches the
//! session store); and `/metrics` for Prometheus. None of them has a session.
//!
//! Readiness says what is wrong with *this* replica, not with the store: an orchestrator
//! routes only to ready replicas, so a store that is full or failing over (answering,
//! but refusing writes for a while) must not make every replica unready at once, which
//! would route nothing although reads still work. A replica that cannot reach the store at
//! all (its network cut off, its connection lost) is unready, and traffic goes to the
//! others.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::{Error, Result};
use crate::extract::AppJson;
use crate::state::AppState;

use super::openapi::shared::error_sets::NotReady;

/// The routes of the OpenAPI document (`super::openapi`).
#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, metrics))]
pub(crate) struct Doc;

/// What `/healthz` and `/readyz` answer when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(value_type = String)]
    status: &'static str,
    /// The replica's id.
    #[schema(value_type = String)]
    served_by: std::sync::Arc<str>,
    /// The version it runs (`APP_VERSION`).
    #[schema(value_type = String)]
    version: std::sync::Arc<str>,
}

impl Health {
    fn of(state: &AppState, status: &'static str) -> AppJson<Self> {
        AppJson(Self {
            status,
            served_by: state.replica_id.clone(),
            version: state.version.clone(),
        })
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "This replica's Prometheus metrics in the \
        OpenMetrics text format (docs/operations.md).",
        content_type = "application/openmetrics-text", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let text = state.metrics.render(state.drain.is_draining());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers.", body = Health)),
)]
async fn healthz(State(state): State<AppState>) -> AppJson<Health> {
    Health::of(&state, "ok")
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "This replica reaches the session store and is not \
            stopping.", body = Health),
        NotReady,
    ),
)]
async fn readyz(State(state): State<AppState>) -> Result<AppJson<Health>> {
    if state.drain.is_draining() {
        return Err(Error::Draining);
    }
    state
        .store
        .probe()
        .await
        .map_err(|err| Error::from_store(err.to_string()))?;
    Ok(Health::of(&state, "ready"))
}

/// Asks the replica at `addr` for `/healthz`; true on a 200. Used by
/// `elastic-cart healthcheck`, so container images need no curl.
pub(crate) async fn probe(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(3), exchange).await,
        Ok(Ok(true))
    )
}

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
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::extract::AppJson;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

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

async fn healthz(State(state): State<AppState>) -> AppJson<Value> {
    AppJson(json!({
        "status": "ok",
        "served_by": &*state.replica_id,
        "version": &*state.version,
    }))
}

async fn readyz(State(state): State<AppState>) -> Result<AppJson<Value>> {
    if state.drain.is_draining() {
        return Err(Error::Draining);
    }
    state
        .store
        .probe()
        .await
        .map_err(|err| Error::from_store(err.to_string()))?;
    Ok(AppJson(
        json!({ "status": "ready", "served_by": &*state.replica_id, "version": &*state.version }),
    ))
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

//! Health checks for balancers and orchestrators: `/healthz` (the process answers) and
//! `/readyz` (the session store answers too).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Error, Result};
use crate::extract::Json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "served_by": &*state.replica_id }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>> {
    if state.drain.is_draining() {
        return Err(Error::Draining);
    }
    state
        .sessions
        .ping()
        .await
        .map_err(|err| Error::StoreUnavailable(err.to_string()))?;
    Ok(Json(
        json!({ "status": "ready", "served_by": &*state.replica_id }),
    ))
}

/// Asks the replica at `addr` for `/healthz`; true on a 200. Used by
/// `elastic-cart healthcheck`, so container images need no curl.
pub async fn probe(addr: std::net::SocketAddr) -> bool {
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

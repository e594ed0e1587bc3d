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
    state
        .sessions
        .ping()
        .await
        .map_err(|err| Error::StoreUnavailable(err.to_string()))?;
    Ok(Json(
        json!({ "status": "ready", "served_by": &*state.replica_id }),
    ))
}

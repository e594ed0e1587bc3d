//! Leaving the fleet without failing a request.
//!
//! A balancer keeps idle keep-alive connections to every replica. If a stopping replica
//! just closed its listener and sockets, a request that nginx had already written onto such
//! a connection would fail, and nginx does not retry a POST that it has sent. So a stopping
//! replica first *drains*: for a short period it keeps serving, but every response says
//! `Connection: close` (nginx then drops that connection instead of reusing it) and
//! `/readyz` answers 503. Only then does it stop accepting and finish what is in flight;
//! by that time nginx reaches it only with new connections, which are refused and which
//! nginx passes on to another replica (`proxy_next_upstream error`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Whether this replica is on its way out.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Adds `Connection: close` to every response while draining.
pub async fn close_connections_while_draining(
    State(drain): State<Drain>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

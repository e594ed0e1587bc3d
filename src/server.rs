//! The HTTP/1.1 server under the router.
//!
//! `axum::serve` runs hyper without a timer, so hyper's deadline for a request head never
//! fires: a client that sends half a header line and waits holds its connection (and a
//! descriptor) for as long as it likes, and 300 such clients held 300. This loop is
//! axum's, with the connection settings a replica reachable without nginx needs:
//!
//! - the head of each request must arrive within [`HEADER_READ_TIMEOUT`], else the
//!   connection is closed; on a keep-alive connection the same deadline bounds the idle
//!   wait for the next request, which is why nginx's upstream `keepalive_timeout` (1 s)
//!   must stay below it, or nginx could reuse a connection at the moment it is closed;
//! - a head may be at most [`MAX_HEAD_BYTES`] (nginx's own limit in front is 32 KiB);
//! - hyper's own answers to heads it cannot take (400, 414, 431) get our JSON error body
//!   ([`error_bodies`]);
//! - a body the router answers without reading to its end is read and thrown away after
//!   it, within bounds, so the client gets the answer rather than a reset
//!   ([`unread_bodies`]).
//!
//! Bodies have their own deadline and limit, on the routes that read one
//! (`routes::body_guards`).

pub(crate) mod error_bodies;
pub(crate) mod unread_bodies;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

pub use crate::limits::{HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};

/// How long connections accepted just before the shutdown have to read their first
/// request before they are told to close.
const FIRST_READ_GRACE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// each connection finish its request in flight, and returns once all are closed.
pub(crate) async fn serve<L>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener,
{
    let mut connections = http1::Builder::new();
    connections
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(error_bodies::WithErrorBodies::new(io));
        let service = router
            .clone()
            .map_request(unread_bodies::drain_on_drop::<hyper::body::Incoming>);
        let connection = connections.serve_connection(io, TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // The last connections were accepted from the kernel's queue as the listener closed,
    // most with a request already waiting in them. Signalled before its first poll, hyper
    // would close such a connection unread (resetting it: nginx cannot resend a POST), so
    // each first gets a moment to be polled and read its request, which it then finishes.
    tokio::time::sleep(FIRST_READ_GRACE).await;
    graceful.shutdown().await;
}

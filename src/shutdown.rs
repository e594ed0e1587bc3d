//! Leaving the fleet without failing a request.
//!
//! A balancer keeps idle keep-alive connections to every replica. If a stopping replica
//! just closed its listener and sockets, a request that nginx had already written onto such
//! a connection would fail, and nginx does not retry a POST that it has sent. So a stopping
//! replica first *drains*: for a short period it keeps serving, but every response says
//! `Connection: close` (nginx then drops that connection instead of reusing it) and
//! `/readyz` answers 503. Only then does it stop accepting and finish what is in flight;
//! by that time nginx reaches it only with new connections, which are refused and which
//! nginx passes on to another replica (`proxy_next_upstream error`). Connections that the
//! kernel had already completed when the replica stops accepting are accepted and answered
//! first ([`ClosableListener`]), since closing the socket would reset them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

/// Whether this replica is on its way out.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// From now on, answers say `Connection: close` and `/readyz` 503.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::start`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Adds `Connection: close` to `response` while draining (mapped over every response).
pub fn close_connection_while_draining(drain: &Drain, mut response: Response) -> Response {
    if drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Wraps `listener` so that it can be closed without resetting the connections waiting in
/// its queue. Serve the returned listener; [`ListenerCloser::close`] closes it.
pub fn closable(listener: TcpListener) -> (ClosableListener, ListenerCloser) {
    let close_requested = Arc::new(Notify::new());
    let (closed_tx, closed_rx) = oneshot::channel();
    (
        ClosableListener {
            listening: Listening::Open(listener),
            close_requested: close_requested.clone(),
            closed: Some(closed_tx),
        },
        ListenerCloser {
            close_requested,
            closed: closed_rx,
        },
    )
}

/// A TCP listener that, told to close, first accepts every connection already waiting in
/// the kernel's queue and only then closes its socket.
///
/// Closing a listening socket resets the connections queued in it: the kernel has completed
/// them, and nginx may already have written a request onto one, which it does not resend if
/// it is a POST. Accepted instead, they are answered (with `Connection: close`: the replica
/// is draining by then). Only connections that arrive in the instant between the last
/// (empty) accept and the close can still meet a reset.
pub struct ClosableListener {
    listening: Listening,
    close_requested: Arc<Notify>,
    closed: Option<oneshot::Sender<()>>,
}

enum Listening {
    Open(TcpListener),
    /// Told to close: accepting what is queued, without waiting for more.
    Emptying(std::net::TcpListener),
    Closed,
}

/// Closes a [`ClosableListener`].
pub struct ListenerCloser {
    close_requested: Arc<Notify>,
    closed: oneshot::Receiver<()>,
}

impl ListenerCloser {
    /// Asks the listener to close and waits until it has accepted what was queued and
    /// closed its socket (or until the listener is gone).
    pub async fn close(self) {
        self.close_requested.notify_one();
        let _ = self.closed.await;
    }
}

impl ClosableListener {
    fn start_emptying(&mut self) {
        if let Listening::Open(listener) = std::mem::replace(&mut self.listening, Listening::Closed)
        {
            // A plain socket, so that each accept asks the kernel itself instead of the
            // runtime's record of readiness, which may lag.
            match listener.into_std() {
                Ok(listener) => self.listening = Listening::Emptying(listener),
                Err(_) => self.finish_closing(),
            }
        }
    }

    /// Closes the socket (if still open) and tells the closer.
    fn finish_closing(&mut self) {
        self.listening = Listening::Closed;
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl Listener for ClosableListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match &mut self.listening {
                Listening::Open(listener) => {
                    tokio::select! {
                        biased;
                        () = self.close_requested.notified() => self.start_emptying(),
                        // axum's accept, which logs and retries failed accepts.
                        connection = Listener::accept(listener) => return connection,
                    }
                }
                Listening::Emptying(listener) => match listener.accept() {
                    Ok((stream, addr)) => {
                        let stream = stream
                            .set_nonblocking(true)
                            .and_then(|()| TcpStream::from_std(stream));
                        if let Ok(stream) = stream {
                            return (stream, addr);
                        }
                    }
                    Err(err) if is_per_connection(&err) => {}
                    // Empty (WouldBlock), or failing for good: close now.
                    Err(_) => self.finish_closing(),
                },
                Listening::Closed => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listening {
            Listening::Open(listener) => listener.local_addr(),
            Listening::Emptying(listener) => listener.local_addr(),
            Listening::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Connections the kernel completed before the close are accepted, not reset; after
    /// the close, new connections are refused.
    #[tokio::test]
    async fn closing_accepts_the_queued_connections_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut listener, closer) = closable(listener);
        // Nothing accepts these yet: they wait in the kernel's queue.
        let mut queued: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let closing = tokio::spawn(closer.close());

        for _ in 0..queued.len() {
            let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("a queued connection is accepted after the close request");
            stream.write_all(b"x").await.unwrap();
        }
        for client in &mut queued {
            let mut byte = [0u8; 1];
            client
                .read_exact(&mut byte)
                .expect("a queued connection is served, not reset");
            assert_eq!(&byte, b"x");
        }
        // The next accept finds the queue empty and closes the socket.
        let more = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(more.is_err(), "accepted a connection nobody made");
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close() returns once the socket is closed")
            .unwrap();
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

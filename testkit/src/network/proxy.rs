//! A TCP proxy that injects network faults between the replicas and Redis: added latency,
//! a stall (bytes held back, as on a link that drops every packet for a while), and every
//! connection cut at once. Portable where `tc netem` in a network namespace is not (it
//! needs no privileges), and it injects the faults at the place the replicas see them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ports::bind_unclaimed_port;

#[derive(Debug, Default)]
struct Faults {
    delay_ms: AtomicU64,
    stalled: AtomicBool,
    /// Bytes that, once a client has sent them, stall the proxy (see
    /// [`FaultProxy::stall_after`]).
    trigger: std::sync::Mutex<Option<Vec<u8>>>,
    /// Connections are numbered as they come; those numbered below this pass nothing (see
    /// [`FaultProxy::freeze_open`]).
    frozen_below: AtomicU64,
    /// The next connection's number.
    next_connection: AtomicU64,
}

/// A running proxy from a loopback port to `127.0.0.1:<target>`; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// The port clients connect to.
    pub port: u16,
    faults: Arc<Faults>,
    cuts: watch::Sender<u64>,
    accepting: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding connections to `target` (a loopback port), without faults.
    pub fn start(target: u16) -> Self {
        Self::serve(
            bind_unclaimed_port(),
            SocketAddr::from(([127, 0, 0, 1], target)),
        )
    }

    /// Starts forwarding connections made to `listen` (an address of the test's own, such
    /// as a test network's gateway, on a port of the system's choice) to `target`: a link
    /// between two test hosts ([`crate::hosts`]) that the proxy can slow down or stall.
    pub fn start_between(listen: IpAddr, target: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind((listen, 0))
            .unwrap_or_else(|err| panic!("binding a proxy on {listen}: {err}"));
        Self::serve(listener, target)
    }

    fn serve(listener: std::net::TcpListener, target: SocketAddr) -> Self {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        let port = listener.local_addr().expect("a bound address").port();
        let faults = Arc::new(Faults::default());
        let (cuts, cut_rx) = watch::channel(0);
        let accepting = tokio::spawn(accept(listener, target, faults.clone(), cut_rx));
        Self {
            port,
            faults,
            cuts,
            accepting,
        }
    }

    /// Every chunk of bytes, either way, waits `delay` before it is passed on.
    pub fn set_delay(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// While stalled, no byte is passed on either way (they wait, as retransmissions
    /// would); connections stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.faults.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Stalls (as [`Self::set_stalled`]) right after passing on the first chunk from a
    /// client that contains `bytes`: the command carrying them reaches the server, and
    /// neither its reply nor anything after it gets through until [`Self::heal`]. A fault
    /// placed at one step of a request (the third of its commands, say) rather than at a
    /// moment in time.
    pub fn stall_after(&self, bytes: &[u8]) {
        *self.faults.trigger.lock().expect("the trigger") = Some(bytes.to_vec());
    }

    /// The connections open now pass nothing more, either way, until [`Self::heal`]; they
    /// stay open, and new connections work: a peer that still acknowledges (the proxy's
    /// kernel does) but never answers, such as a proxy whose backend is gone.
    pub fn freeze_open(&self) {
        let next = self.faults.next_connection.load(Ordering::Relaxed);
        self.faults.frozen_below.store(next, Ordering::Relaxed);
    }

    /// Closes every open connection now, mid-command or not; new ones are accepted.
    pub fn cut_all(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }

    /// Back to a plain proxy.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
        *self.faults.trigger.lock().expect("the trigger") = None;
        self.faults.frozen_below.store(0, Ordering::Relaxed);
        self.set_stalled(false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut_all();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    faults: Arc<Faults>,
    cuts: watch::Receiver<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let (faults, mut cuts) = (faults.clone(), cuts.clone());
        let number = faults.next_connection.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // From here on, a cut ends this connection, even one made while connecting.
            cuts.mark_unchanged();
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = pass_on(client_read, server_write, &faults, number, true) => {}
                _ = pass_on(server_read, client_write, &faults, number, false) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

/// Copies `from` to `to` (a client's bytes if `from_client`) on connection `number`,
/// applying the faults to each chunk, until either side ends.
async fn pass_on(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
    number: u64,
    from_client: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let delay = faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        while faults.stalled.load(Ordering::Relaxed)
            || number < faults.frozen_below.load(Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        to.write_all(&buf[..n]).await?;
        if from_client {
            let mut trigger = faults.trigger.lock().expect("the trigger");
            let hit = trigger.as_ref().is_some_and(|bytes| {
                !bytes.is_empty() && buf[..n].windows(bytes.len()).any(|w| w == bytes)
            });
            if hit {
                *trigger = None;
                faults.stalled.store(true, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_delays_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(target);
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let mut buf = [0u8; 4];
        client.write_all(b"ping").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set_delay(Duration::from_millis(150));
        let started = std::time::Instant::now();
        client.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "both ways delayed"
        );
        proxy.heal();

        proxy.cut_all();
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
            .await
            .expect("a cut connection ends")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

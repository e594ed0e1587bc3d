//! From a [`Config`] to a running replica: the session store, the listener, the state, the
//! fleet heartbeats, and the graceful shutdown (drain, close the listener, finish what is
//! in flight). `main` only parses the configuration, starts the runtime and logging, and
//! calls [`run`].

use std::future::Future;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::limits::LISTEN_BACKLOG;
use crate::metrics::Metrics;
use crate::session::ChangePolicy;
use crate::session::store::{RedisSettings, Store};
use crate::shutdown::{self, Drain};
use crate::state::AppState;

/// Longest a shutdown takes, drain period included, before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Serves until SIGTERM or SIGINT, then drains and stops. The error says what could not be
/// started, naming the setting at fault.
pub async fn run(config: Config) -> Result<(), String> {
    Application::build(&config)
        .await?
        .run_until(shutdown_signal())
        .await;
    Ok(())
}

/// A replica built from its configuration and ready to serve: what `main` runs and what
/// the tests start in their own process, so both serve the same thing.
pub struct Application {
    state: AppState,
    listener: TcpListener,
    drain_period: Duration,
}

/// A listener on `addr` whose queue of connections not yet accepted holds
/// [`LISTEN_BACKLOG`]; `TcpListener::bind` gives 128 (the standard library's value), which
/// a balancer that opens a connection per request in flight overflows in a burst.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind`: a restarted replica may bind while its old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Application {
    /// The store (Redis or memory), the listener on `LISTEN_ADDR`, the state and the
    /// metrics for `config`.
    pub async fn build(config: &Config) -> Result<Self, String> {
        let metrics = Metrics::new(&config.app_version());
        let store = session_store(config, &metrics)?;
        let listener = listen(config.listen_addr)
            .map_err(|err| format!("LISTEN_ADDR {} cannot be bound: {err}", config.listen_addr))?;
        Ok(Self::assemble(config, metrics, store, listener))
    }

    /// As [`Self::build`], on a listener the caller bound (tests take a port no other
    /// fixture was given).
    pub fn build_on(config: &Config, listener: TcpListener) -> Result<Self, String> {
        let metrics = Metrics::new(&config.app_version());
        let store = session_store(config, &metrics)?;
        Ok(Self::assemble(config, metrics, store, listener))
    }

    fn assemble(config: &Config, metrics: Metrics, store: Store, listener: TcpListener) -> Self {
        let replica_id = config.replica_id();
        tracing::info!(
            replica = %replica_id,
            version = %config.app_version(),
            addr = %listener.local_addr().unwrap_or(config.listen_addr),
            store = if config.redis_url.is_some() { "redis" } else { "memory" },
            "listening"
        );
        let state = AppState {
            replica_id: replica_id.into(),
            version: config.app_version().into(),
            store,
            cookie_secure: config.session_cookie_secure,
            static_dir: config.static_dir.clone().into(),
            drain: Drain::default(),
            changes: ChangePolicy {
                max_wait: Duration::from_millis(config.session_change_wait_ms),
                serialised: true,
            },
            chaos: config.demo_chaos,
            metrics,
            presence: Default::default(),
        };
        Self {
            state,
            listener,
            drain_period: config.shutdown_drain(),
        }
    }

    /// Changes of existing sessions made the way `changes` says (tests show what
    /// unserialised changes lose).
    pub fn with_changes(mut self, changes: ChangePolicy) -> Self {
        self.state.changes = changes;
        self
    }

    /// Where it listens.
    pub fn addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves, with the fleet heartbeats and the store's memory read every second, until
    /// `signal`; then drains for the configured period, closes the listener, finishes what
    /// is in flight (at most [`SHUTDOWN_LIMIT`]), leaves the fleet view and closes the
    /// store.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) {
        let Self {
            state,
            listener,
            drain_period,
        } = self;
        let store = state.store.clone();
        let drain = state.drain.clone();
        let (stop_beats, beats_stopped) = oneshot::channel();
        let beats = tokio::spawn(crate::fleet::heartbeats(
            store.clone(),
            state.local(),
            beats_stopped,
        ));
        let (stop_watching, watching_stopped) = oneshot::channel();
        tokio::spawn(store.clone().watch_memory(watching_stopped));
        let presence = state.presence.clone();
        let (signalled_tx, mut signalled_rx) = watch::channel(false);
        let (listener, listener_closer) = shutdown::closable(listener);
        let server = crate::serve(listener, state, async move {
            signal.await;
            let _ = signalled_tx.send(true);
            tracing::info!(?drain_period, "draining: answering with Connection: close");
            drain.start();
            presence.beat_now();
            tokio::time::sleep(drain_period).await;
            tracing::info!("closing the listener; finishing requests in flight");
            listener_closer.close().await;
        });
        let shutdown_limit = async move {
            let _ = signalled_rx.wait_for(|signalled| *signalled).await;
            tokio::time::sleep(SHUTDOWN_LIMIT).await;
        };
        tokio::select! {
            () = server => {}
            () = shutdown_limit => tracing::warn!("requests still in flight after {SHUTDOWN_LIMIT:?}; exiting"),
        }
        // Out of the fleet view before the connections close.
        let _ = stop_watching.send(());
        let _ = stop_beats.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), beats).await;
        store.close().await;
        tracing::info!("stopped");
    }

    /// Serves the router alone until `signal`, then stops at once: no heartbeats, no drain.
    /// For tests that count every command the store gets, which heartbeats would add to.
    pub async fn serve_until(self, signal: impl Future<Output = ()> + Send + 'static) {
        crate::serve(self.listener, self.state, signal).await;
    }
}

/// Redis if `REDIS_URL` is set, else this process's memory (with a warning: one replica
/// only).
fn session_store(config: &Config, metrics: &Metrics) -> Result<Store, String> {
    let Some(url) = &config.redis_url else {
        tracing::warn!(
            "REDIS_URL is not set: sessions live in this process's memory, so run only one replica"
        );
        return Ok(Store::memory(config.session_ttl(), metrics));
    };
    let settings = RedisSettings {
        url: url.clone(),
        pool_size: config.redis_pool_size.get(),
        command_timeout: config.redis_command_timeout(),
        key_prefix: config.session_key_prefix.clone(),
        wait_replicas: config.redis_wait_replicas,
        memory_budget_percent: config.store_memory_budget_percent,
    };
    Store::redis(&settings, config.session_ttl(), metrics)
        .map_err(|err| format!("REDIS_URL is not usable: {err}"))
}

/// `elastic-cart healthcheck`: whether the local replica answers `/healthz`.
pub async fn healthcheck(config: &Config) -> Result<(), String> {
    let mut addr = config.listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if crate::routes::health::probe(addr).await {
        Ok(())
    } else {
        Err(format!("no healthy replica answers at {addr}"))
    }
}

/// Completes on SIGTERM (docker stop, orchestrators) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A burst of connections while the replica is busy (here: never accepting) waits in
    /// the kernel's queue, every handshake completed, instead of being dropped at 128.
    #[tokio::test]
    async fn the_listener_queues_a_burst_of_five_hundred_connections() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connected = tokio::task::spawn_blocking(move || {
            (0..500)
                .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)))
                .collect::<Result<Vec<_>, _>>()
                .map(|streams| streams.len())
        })
        .await
        .unwrap();
        assert_eq!(connected.unwrap(), 500);
        drop(listener);
    }
}

//! The `elastic-cart` binary: reads the configuration, starts the async runtime, connects
//! the session store, serves and shuts down gracefully on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use elastic_cart::config::{Command, Config};
use elastic_cart::session_store::{RedisSettings, SessionBackend};
use elastic_cart::shutdown::{self, Drain};
use elastic_cart::{AppState, ChangePolicy, serve};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// glibc's allocator serialises threads on its arena locks under this load (profiled with
/// perf: malloc and its futex waits took about a fifth of a replica's CPU); mimalloc keeps
/// per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Our request lines at info; tower-sessions only at warn, because it opens an info-level
/// span for every session access, which costs a registry entry per request.
const DEFAULT_LOG: &str = "info,tower_sessions=warn,tower_sessions_core=warn";

/// Longest a shutdown takes, drain period included, before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let config = Config::parse();
    // A health probe (every few seconds in compose) needs no thread pool.
    let threads = match config.command {
        Some(Command::Healthcheck) => 1,
        None => config.worker_threads(),
    };
    match runtime(threads) {
        Ok(runtime) => runtime.block_on(start(config)),
        Err(err) => {
            eprintln!("elastic-cart: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// With one thread, tokio's single-threaded scheduler rather than a one-worker pool: it
/// runs woken tasks in the order they were woken, so the Redis client's task runs after
/// the requests that became ready together and sends their commands in one write. The
/// multi-threaded scheduler runs a task woken by the running one next (its "LIFO slot"),
/// so the client ran, and wrote, more often. Measured with 3 replicas on 2 cores (the
/// benchmark's fleet-3): 5.1 instead of 3.2 commands per Redis read, 6 instead of 8 µs of
/// Redis CPU per request, 8.5% more requests/s (median of 8 alternating pairs of runs).
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(worker_threads);
        builder
    };
    builder.enable_all().build()
}

async fn start(config: Config) -> ExitCode {
    // Name the TLS crypto provider (for rediss://) rather than rely on rustls guessing,
    // which fails when more than one provider is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(Command::Healthcheck) = config.command {
        return healthcheck(&config).await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        // Colours only for a person at a terminal, not in container logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("elastic-cart: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let replica_id = config.replica_id();
    let sessions = match &config.redis_url {
        Some(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                pool_size: config.redis_pool_size.get(),
                command_timeout: config.redis_command_timeout(),
            };
            SessionBackend::redis(&settings, config.session_ttl())
                .map_err(|err| format!("REDIS_URL is not usable: {err}"))?
        }
        None => {
            tracing::warn!(
                "REDIS_URL is not set: sessions live in this process's memory, \
                 so run only one replica"
            );
            SessionBackend::memory(config.session_ttl())
        }
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|err| format!("LISTEN_ADDR {} cannot be bound: {err}", config.listen_addr))?;
    tracing::info!(
        replica = %replica_id,
        addr = %config.listen_addr,
        store = if config.redis_url.is_some() { "redis" } else { "memory" },
        "listening"
    );

    let drain = Drain::default();
    let state = AppState {
        replica_id: replica_id.into(),
        sessions: sessions.clone(),
        cookie_secure: config.session_cookie_secure,
        static_dir: config.static_dir.clone().into(),
        drain: drain.clone(),
        changes: ChangePolicy {
            max_wait: Duration::from_millis(config.session_change_wait_ms),
            serialised: true,
        },
        chaos: config.demo_chaos,
    };
    let drain_period = config.shutdown_drain();
    let (signalled_tx, mut signalled_rx) = watch::channel(false);
    let (listener, listener_closer) = shutdown::closable(listener);
    let server = serve(listener, state, async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(true);
        tracing::info!(?drain_period, "draining: answering with Connection: close");
        drain.start();
        tokio::time::sleep(drain_period).await;
        tracing::info!("closing the listener; finishing requests in flight");
        listener_closer.close().await;
    });
    let shutdown_limit = async move {
        let _ = signalled_rx.wait_for(|signalled| *signalled).await;
        tokio::time::sleep(SHUTDOWN_LIMIT).await;
    };
    tokio::select! {
        result = server => result.map_err(|err| format!("server failed: {err}"))?,
        () = shutdown_limit => tracing::warn!("requests still in flight after {SHUTDOWN_LIMIT:?}; exiting"),
    }
    sessions.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `elastic-cart healthcheck`: asks the local replica for /healthz.
async fn healthcheck(config: &Config) -> ExitCode {
    let mut addr = config.listen_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if elastic_cart::routes::health::probe(addr).await {
        ExitCode::SUCCESS
    } else {
        eprintln!("elastic-cart: no healthy replica answers at {addr}");
        ExitCode::FAILURE
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

//! The `elastic-cart` binary: parses the configuration, starts the async runtime and
//! logging, and hands over to [`elastic_cart::startup`].

use std::process::ExitCode;

use clap::Parser;
use elastic_cart::config::{Command, Config};
use elastic_cart::log_line::{LogFields, LogLine};
use elastic_cart::startup;
use tracing_subscriber::EnvFilter;

/// mimalloc keeps per-thread heaps; glibc's allocator serialises threads on its arena
/// locks under load (docs/benchmark.md has the profile and the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Our request lines at info; tower-sessions only at warn, because it opens an info-level
/// span for every session access, which costs a registry entry per request.
const DEFAULT_LOG: &str = "info,tower_sessions=warn,tower_sessions_core=warn";

fn main() -> ExitCode {
    let config = Config::parse();
    // A health probe (every few seconds in compose) needs no thread pool.
    let threads = match config.command {
        Some(Command::Healthcheck) => 1,
        None => config.worker_threads(),
    };
    let runtime = match runtime(threads) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("elastic-cart: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Name the TLS crypto provider (for rediss://) rather than rely on rustls guessing,
    // which fails when more than one provider is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match config.command {
        Some(Command::Healthcheck) => runtime.block_on(startup::healthcheck(&config)),
        None => {
            init_logging();
            let result = runtime.block_on(startup::run(config));
            if let Err(message) = &result {
                tracing::error!("{message}");
            }
            result
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("elastic-cart: {message}");
            ExitCode::FAILURE
        }
    }
}

/// With one thread, tokio's single-threaded scheduler rather than a one-worker pool: it
/// runs woken tasks in the order they were woken, so the Redis client's task runs after
/// the requests that became ready together and sends their commands in one write (the
/// multi-threaded scheduler runs a task woken by the running one next, so the client ran,
/// and wrote, more often; docs/benchmark.md has the measurement).
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

fn init_logging() {
    let logs = tracing_subscriber::fmt().with_env_filter(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
    );
    // Colours only for a person at a terminal; container logs get the same line without
    // them, written by `LogLine` and `LogFields`, which cost less per request.
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        logs.init();
    } else {
        logs.with_ansi(false)
            .fmt_fields(LogFields)
            .event_format(LogLine)
            .init();
    }
}

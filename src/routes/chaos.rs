//! The demo's "Crash a replica" button (`POST /chaos/crash`), routed only with
//! `DEMO_CHAOS=1`: the replica answers, then ends abruptly, as a crashing server would.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{Redirect, Response};
use axum::routing::post;

use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/chaos/crash", post(crash))
}

/// Exit status of a replica crashed on purpose (`EX_SOFTWARE`).
pub const CRASH_EXIT_STATUS: i32 = 70;

/// Set by the crash answer. A crash ends the whole process, so the flag is the process's.
static CRASHED: AtomicBool = AtomicBool::new(false);

/// Answers, then exits abruptly, the way a crashing replica would: no drain, no goodbye.
/// Only routed with `DEMO_CHAOS=1`.
async fn crash(State(state): State<AppState>) -> Redirect {
    tracing::warn!("crashing on request (DEMO_CHAOS)");
    CRASHED.store(true, Ordering::SeqCst);
    // This answer says Connection: close, so the balancer does not keep the connection
    // for another request.
    state.drain.start();
    tokio::spawn(async {
        // Long enough for this answer to leave; then gone, like a crash.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        std::process::exit(CRASH_EXIT_STATUS);
    });
    Redirect::to(&format!(
        "/cart?notice=crashed&replica={}",
        state.replica_id
    ))
}

/// Once the crash answer is given, the replica answers nothing more: a request reaching it
/// before the exit (nginx may hold other keep-alive connections to it, and a browser loads
/// more than one thing at a time) waits, unanswered, for the exit. That request then fails
/// at the connection, as against a crashed server, and nginx passes a GET on to another
/// replica, so the page after the crash always comes from another replica, as its notice
/// says. It waits rather than exiting at once because on a multi-threaded runtime the crash
/// answer itself may not have been written yet. Only layered with `DEMO_CHAOS=1`.
pub(crate) async fn answer_nothing_after_a_crash(request: Request, next: Next) -> Response {
    if CRASHED.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    next.run(request).await
}

//! The one error type of the service and how it becomes a response.
//!
//! Handlers return `Result<_, Error>`. Every error renders as the JSON contract
//! `{"error":{"code","message"}}` and carries an [`ErrorReport`] in the response extensions;
//! `routes::render_error_pages` turns that into an HTML page for browser routes. Store
//! trouble is a 503 with `Retry-After`; internal faults are logged with their cause and
//! shown only as an opaque message.

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::cart::CartError;

/// Seconds a client is asked to wait before retrying when the session store is away.
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

/// `Retry-After` of a new session refused for the store's memory: room comes back only as
/// sessions expire, so a prompt retry would be refused too.
pub(crate) const NEW_SESSION_RETRY_AFTER_SECS: u32 = 60;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("no product with id '{}'", excerpt(.0))]
    UnknownProduct(String),
    #[error("no such page: {}", excerpt(.0))]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Cart(#[from] CartError),
    /// Well-formed input with a value out of range or of the wrong type.
    #[error("{0}")]
    InvalidInput(String),
    /// Input that could not be parsed at all.
    #[error("{0}")]
    Malformed(String),
    #[error(
        "request body exceeds the limit of {} bytes",
        crate::limits::MAX_BODY_BYTES
    )]
    PayloadTooLarge,
    /// A request line over hyper's limit (about 64 KiB).
    #[error("the request's URI is too long")]
    UriTooLong,
    /// A request head over [`crate::limits::MAX_HEAD_BYTES`], or with too many headers.
    #[error(
        "the request's headers are too large or too many (at most 100 headers, {} bytes)",
        crate::limits::MAX_HEAD_BYTES
    )]
    HeadersTooLarge,
    /// The whole body was not there within [`crate::limits::BODY_READ_TIMEOUT`].
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The session store did not answer in time; the cause is logged, not shown.
    #[error("the session store is unavailable; please retry shortly")]
    StoreUnavailable(String),
    /// The store answered but refused to write (out of memory under `noeviction`, a
    /// failing snapshot): nothing was written. The cause is logged.
    #[error(
        "the session store refuses writes just now, so nothing was changed; please retry \
         shortly"
    )]
    StoreRefusingWrites(String),
    /// A change was sent to the store, but its answer never came (a timeout, a dropped
    /// connection): it may or may not have been applied. The cause is logged.
    #[error(
        "the session store did not confirm this change, so it may or may not have been \
         applied; a retry with the same Idempotency-Key is safe (it is applied at most once)"
    )]
    OutcomeUnknown(String),
    /// The same `Idempotency-Key` came with another request.
    #[error("this Idempotency-Key was already used for another request")]
    IdempotencyKeyReused,
    /// An `Idempotency-Key` that is not a short string of visible characters.
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// A visitor's first change, refused because the store's memory is above its budget
    /// for new sessions (`store::budget`): a flood of new sessions must not fill the store
    /// that existing carts need. Existing sessions are not refused.
    #[error(
        "the shop is starting no new carts just now (too many were started); carts already \
         started are unaffected; please retry in a minute"
    )]
    TooManyNewSessions,
    /// A change lost the race for its session for longer than the configured wait.
    #[error("too many simultaneous changes of this cart; please retry shortly")]
    SessionBusy,
    /// A change arrived for a session that a checkout has just closed.
    #[error("this cart was just checked out; reload the page and try again")]
    CheckedOut,
    /// An unsafe request that a browser sent from another site.
    #[error("cross-origin request refused")]
    CrossOrigin,
    /// This replica is shutting down (only `/readyz` says so).
    #[error("this replica is shutting down")]
    Draining,
    /// A fault of ours; the cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
    /// Another status that a layer outside our handlers answered with an empty body.
    #[error("{}", .0.canonical_reason().unwrap_or("request failed"))]
    Other(StatusCode),
}

/// At most the first 40 characters of client input, for messages that name it.
fn excerpt(input: &str) -> String {
    const MAX: usize = 40;
    match input.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &input[..end]),
        None => input.to_owned(),
    }
}

impl Error {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::UnknownProduct(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Cart(_) | Self::InvalidInput(_) | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::StoreUnavailable(_)
            | Self::StoreRefusingWrites(_)
            | Self::OutcomeUnknown(_)
            | Self::SessionBusy
            | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::CheckedOut => StatusCode::CONFLICT,
            Self::TooManyNewSessions => StatusCode::TOO_MANY_REQUESTS,
            Self::CrossOrigin => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Other(status) => *status,
        }
    }

    /// A stable, machine-readable name for the error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::UnknownProduct(_) => "unknown_product",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Cart(CartError::LineFull { .. }) => "line_full",
            Self::Cart(CartError::TooManyLines) => "too_many_lines",
            Self::InvalidInput(_) => "invalid_input",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::Malformed(_) => "malformed_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::StoreRefusingWrites(_) => "store_refusing_writes",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::Draining => "draining",
            Self::SessionBusy => "session_busy",
            Self::TooManyNewSessions => "too_many_new_sessions",
            Self::CheckedOut => "checked_out",
            Self::CrossOrigin => "cross_origin",
            Self::Internal(_) => "internal",
            Self::Other(status) if status.is_server_error() => "server_error",
            Self::Other(_) => "request_error",
        }
    }

    /// Maps an axum extractor rejection (bad JSON, bad form, body too large) to our error,
    /// keeping axum's explanation of what was wrong.
    fn from_rejection(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(text),
            StatusCode::UNPROCESSABLE_ENTITY => Self::InvalidInput(text),
            _ => Self::Malformed(text),
        }
    }
}

/// Whether a body error comes from the body read timeout.
fn body_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        if body_timed_out(&rejection) {
            return Self::RequestTimeout;
        }
        Self::from_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<FormRejection> for Error {
    fn from(rejection: FormRejection) -> Self {
        if body_timed_out(&rejection) {
            return Self::RequestTimeout;
        }
        Self::from_rejection(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Self::from_rejection(rejection.status(), rejection.body_text())
    }
}

/// Whether a store error is Redis refusing a write it received, rather than a failure to
/// reach it: out of memory under `noeviction`, a failing snapshot with
/// `stop-writes-on-bgsave-error`. Such a write was not done (a script stops at its first
/// refused write, before writing anything), so its outcome is known.
fn refuses_writes(cause: &str) -> bool {
    // Not `READONLY`: that is a failover under way (a demoted primary), which reconnects.
    ["OOM command not allowed", "MISCONF "]
        .iter()
        .any(|sign| cause.contains(sign))
}

/// Every kind [`store_error_kind`] can answer, for the metrics to show each at 0 before
/// the first failure.
pub(crate) const STORE_ERROR_KINDS: [&str; 4] =
    ["timeout", "unavailable", "refusing_writes", "unconfirmed"];

/// The kind of a session store failure, as `elastic_cart_store_errors_total` counts it:
/// `timeout` (no answer within REDIS_COMMAND_TIMEOUT_MS), `refusing_writes` (out of
/// memory, a failed disk), `unconfirmed` (too few replicas confirmed a change, `WAIT`) or
/// `unavailable` (no connection, a failover under way, anything else).
pub(crate) fn store_error_kind(cause: &str) -> &'static str {
    if refuses_writes(cause) {
        "refusing_writes"
    } else if cause.contains("Timeout Error") || cause.contains("timed out") {
        "timeout"
    } else if cause.contains("WAIT: ") {
        "unconfirmed"
    } else {
        "unavailable"
    }
}

impl Error {
    /// The error for a store failure outside a change: refused, or unavailable.
    pub(crate) fn from_store(cause: String) -> Self {
        if refuses_writes(&cause) {
            Self::StoreRefusingWrites(cause)
        } else {
            Self::StoreUnavailable(cause)
        }
    }

    /// The error for a change's failed write: refused (not applied), or without an answer,
    /// so it may or may not have been applied.
    pub(crate) fn from_failed_write(cause: String) -> Self {
        if refuses_writes(&cause) {
            Self::StoreRefusingWrites(cause)
        } else {
            Self::OutcomeUnknown(cause)
        }
    }
}

impl From<tower_sessions::session_store::Error> for Error {
    fn from(err: tower_sessions::session_store::Error) -> Self {
        Error::from_store(err.to_string())
    }
}

impl From<tower_sessions::session::Error> for Error {
    fn from(err: tower_sessions::session::Error) -> Self {
        match err {
            tower_sessions::session::Error::Store(err) => Self::from_store(err.to_string()),
            tower_sessions::session::Error::SerdeJson(err) => Self::Internal(err.to_string()),
        }
    }
}

/// What went wrong, as shown to clients; left in the response extensions so browser
/// routes can render it as a page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ErrorReport {
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: &'a ErrorReport,
}

impl Error {
    fn report(&self) -> ErrorReport {
        ErrorReport {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// The JSON body `{"error":{"code","message"}}`, for answers written outside axum.
    pub(crate) fn json_body(&self) -> String {
        serde_json::to_string(&ErrorEnvelope {
            error: &self.report(),
        })
        .expect("an error report always serialises")
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Self::StoreUnavailable(cause) => tracing::warn!(%cause, "session store unavailable"),
            Self::StoreRefusingWrites(cause) => {
                tracing::warn!(%cause, "session store refuses writes")
            }
            Self::OutcomeUnknown(cause) => {
                tracing::warn!(%cause, "a change's write went unanswered")
            }
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            _ => {}
        }
        let report = self.report();
        let mut response = (self.status(), Json(ErrorEnvelope { error: &report })).into_response();
        if matches!(
            self,
            Self::StoreUnavailable(_)
                | Self::StoreRefusingWrites(_)
                | Self::OutcomeUnknown(_)
                | Self::SessionBusy
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if matches!(self, Self::TooManyNewSessions) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(NEW_SESSION_RETRY_AFTER_SECS),
            );
        }
        response.extensions_mut().insert(report);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_ask_clients_to_retry() {
        let response = Error::StoreUnavailable("connection refused".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn store_failures_are_counted_by_kind() {
        let mut seen = std::collections::HashSet::new();
        for (cause, kind) in [
            (
                "Backend error: Timeout Error: Request timed out.",
                "timeout",
            ),
            (
                "Backend error: OOM command not allowed when used memory > 'maxmemory'.",
                "refusing_writes",
            ),
            (
                "Backend error: WAIT: 0 of 1 replicas confirmed the write within 500 ms",
                "unconfirmed",
            ),
            (
                "Backend error: IO Error: Connection refused (os error 111)",
                "unavailable",
            ),
        ] {
            assert_eq!(store_error_kind(cause), kind, "{cause}");
            seen.insert(kind);
        }
        // Each kind above, and no other, is the list the metrics create in advance.
        assert_eq!(seen, STORE_ERROR_KINDS.into_iter().collect());
    }

    #[test]
    fn refused_writes_are_told_from_outages() {
        for refused in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "ERR Error running script: OOM command not allowed when used memory > 'maxmemory'",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        ] {
            assert_eq!(
                Error::from_failed_write(refused.into()).code(),
                "store_refusing_writes"
            );
            assert_eq!(
                Error::from_store(refused.into()).code(),
                "store_refusing_writes"
            );
        }
        let timeout = "Timeout Error: Request timed out.".to_owned();
        assert_eq!(
            Error::from_failed_write(timeout.clone()).code(),
            "outcome_unknown"
        );
        assert_eq!(Error::from_store(timeout).code(), "store_unavailable");
        let failover = "READONLY You can't write against a read only replica.".to_owned();
        assert_eq!(Error::from_store(failover).code(), "store_unavailable");
    }

    #[test]
    fn messages_show_only_an_excerpt_of_the_input() {
        let long = "x".repeat(10_000);
        let message = Error::UnknownProduct(long).to_string();
        assert!(message.len() < 80, "{message}");
        assert_eq!(Error::NotFound("/a".into()).to_string(), "no such page: /a");
    }

    #[test]
    fn internal_causes_are_not_shown() {
        let response = Error::Internal("secret detail".into()).into_response();
        let report = response.extensions().get::<ErrorReport>().unwrap();
        assert_eq!(report.message, "internal error");
    }
}

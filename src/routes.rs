//! HTTP routes: browser pages, the JSON API and health checks, plus the middleware that
//! turns errors into pages for browsers.

pub mod api;
pub mod health;
pub mod pages;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{Error, ErrorReport};

/// Answers unknown paths with our 404.
pub async fn not_found(request: Request) -> Error {
    Error::NotFound(request.uri().path().to_owned())
}

/// Gives every error response our shape: an HTML page for browser routes, the JSON error
/// for the API and health checks.
///
/// It also catches the bare (empty-bodied) errors produced outside our handlers: axum's 405
/// and tower-sessions' 500 when saving the session failed, which is a store outage and so
/// becomes our 503.
pub async fn render_error_pages(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let wants_json = path.starts_with("/api/") || matches!(path, "/api" | "/healthz" | "/readyz");
    let response = next.run(request).await;

    let response = if response.extensions().get::<ErrorReport>().is_none()
        && response.status().as_u16() >= 400
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        // Keep the original status and headers (405's Allow, say); give it our body.
        let (mut parts, _) = response.into_parts();
        let ours = bare_error(parts.status).into_response();
        let (ours_parts, body) = ours.into_parts();
        parts.headers.extend(ours_parts.headers);
        parts.extensions.extend(ours_parts.extensions);
        parts.status = ours_parts.status;
        Response::from_parts(parts, body)
    } else {
        response
    };
    match response.extensions().get::<ErrorReport>() {
        Some(report) if !wants_json => {
            let page = pages::error_page(&state, response.status(), report);
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            Response::from_parts(parts, Body::from(page))
        }
        _ => response,
    }
}

/// Our error for an empty error response made outside our handlers.
fn bare_error(status: StatusCode) -> Error {
    match status {
        StatusCode::INTERNAL_SERVER_ERROR => {
            Error::StoreUnavailable("the session layer could not save the session".to_owned())
        }
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed,
        StatusCode::NOT_FOUND => Error::NotFound("no such resource".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        other => Error::Other(other),
    }
}

//! Request extractors whose rejections are our [`Error`], so a bad body or path gets the
//! same JSON error (or error page) as every other failure.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use crate::error::Error;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `axum::Json` with our error for bad JSON (400), wrong types or ranges (422),
/// a missing content type (415) and oversized bodies (413).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub(crate) struct AppJson<T>(pub T);

/// `axum::Form` with our error for invalid fields (422) and oversized bodies (413).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Form), rejection(Error))]
pub(crate) struct AppForm<T>(pub T);

/// `axum::extract::Path` with our error.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub(crate) struct AppPath<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for AppJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

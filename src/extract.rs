//! Request extractors whose rejections are our [`Error`], so a bad body or path gets the
//! same JSON error (or error page) as every other failure.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use crate::error::Error;

/// `axum::Json` with our error for bad JSON (400), wrong types or ranges (422),
/// a missing content type (415) and oversized bodies (413). Only a JSON object is a body:
/// serde would read a struct from an array too (`["ceramic-mug", 1]`), which no client
/// means.
#[derive(Debug)]
pub(crate) struct AppJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = Error;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Error> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(Error::InvalidInput(
                "the body must be a JSON object".to_owned(),
            ));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|err| Error::InvalidInput(err.to_string()))
    }
}

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

/// The `Idempotency-Key` header of a change, if it has one (the IETF draft "The
/// Idempotency-Key HTTP Header Field": a string, quoted or not). A malformed one is 400.
#[derive(Debug)]
pub(crate) struct IdempotencyKey(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Error> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let text = value.to_str().map_err(|_| Error::InvalidIdempotencyKey)?;
        let key = text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(text);
        let valid = (1..=255).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if valid {
            Ok(Self(Some(key.to_owned())))
        } else {
            Err(Error::InvalidIdempotencyKey)
        }
    }
}

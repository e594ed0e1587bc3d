//! Over-limit bodies answered, not reset. A replica that refuses a body by its declared
//! length and closes the connection at once leaves the client's unsent bytes unread; the
//! kernel then resets the connection, and a client that writes its whole body before
//! reading (most HTTP libraries without `Expect: 100-continue`, and nginx, which then
//! answers its own 502) never sees the 413. So a body declared over
//! [`MAX_BODY_BYTES`] but within [`MAX_DRAINED_BYTES`] is read and thrown away, within
//! the body deadline, before the 413 goes out; a larger one is refused at once, as before.
//! Nothing changes for a body within the limit: one header comparison.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::BoxError;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::Error;
use crate::limits::{BODY_READ_TIMEOUT, MAX_BODY_BYTES, MAX_DRAINED_BYTES};

/// Puts [`DrainOversized`] in front of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrainOversizedLayer;

impl<S> Layer<S> for DrainOversizedLayer {
    type Service = DrainOversized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainOversized { inner }
    }
}

/// Answers a body declared over the limit with 413 after reading it (see the module).
#[derive(Debug, Clone)]
pub(crate) struct DrainOversized<S> {
    inner: S,
}

impl<S, B> Service<Request> for DrainOversized<S>
where
    S: Service<Request, Response = axum::http::Response<B>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match declared_length(&request) {
            Some(length) if length > MAX_BODY_BYTES as u64 => {
                let drain = length <= MAX_DRAINED_BYTES as u64;
                let body = request.into_body();
                Answer::Refused {
                    future: Box::pin(async move {
                        if drain {
                            discard(body).await;
                        }
                        Error::PayloadTooLarge.into_response()
                    }),
                }
            }
            _ => Answer::Passed {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// The route's own answer, or the 413 once the body is drained.
    #[project = AnswerProjection]
    pub(crate) enum Answer<F> {
        Passed { #[pin] future: F },
        Refused { future: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F, B, E> Future for Answer<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Passed { future } => future
                .poll(cx)
                .map(|answer| answer.map(|response| response.map(Body::new))),
            AnswerProjection::Refused { future } => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// The body's declared `Content-Length`, if it has a valid one.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads `body` to its end and drops it, for at most [`BODY_READ_TIMEOUT`] and at most
/// [`MAX_DRAINED_BYTES`]: a slow or endless sender is still cut off.
async fn discard(body: Body) {
    let read = async {
        let mut body = body;
        let mut total = 0;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, |data| data.len());
            if total > MAX_DRAINED_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, read).await;
}

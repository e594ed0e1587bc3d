//! The session cookie's name, and moving visitors from the plain name to the `__Host-` one.
//!
//! With `SESSION_COOKIE_SECURE=true` the cookie is [`SECURE_SESSION_COOKIE`]: a browser
//! takes a `__Host-` cookie only if it is `Secure`, has `Path=/` and no `Domain`, so no
//! page of a sibling domain or a plain-HTTP page can set or overwrite it. Without it (the
//! plain HTTP demo) the cookie stays [`SESSION_COOKIE`].
//!
//! A fleet that switches to secure must not lose the carts of visitors whose browser still
//! holds the plain cookie, so [`HostCookieLayer`] sits in front of the session layer: a
//! request that carries the plain cookie but not the `__Host-` one shows the session layer
//! its value under the new name (the same session id, so the same cart); the answer then
//! sets the new cookie, unless the session layer set or removed it itself, and expires the
//! plain one, which would otherwise go on carrying the session id without `Secure`. Off
//! (not secure), the layer passes everything through.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Name of the session cookie over plain HTTP (`SESSION_COOKIE_SECURE` unset).
pub const SESSION_COOKIE: &str = "cart_session";

/// Name of the session cookie with `SESSION_COOKIE_SECURE=true`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-cart_session";

/// The session cookie's name: [`SECURE_SESSION_COOKIE`] when `secure`, else
/// [`SESSION_COOKIE`].
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The attributes of the session cookie the session layer sets when secure (no `Max-Age`:
/// it lasts as long as the browser's session, as the session layer's does).
const SECURE_ATTRIBUTES: &str = "; HttpOnly; SameSite=Lax; Secure; Path=/";

/// Removes the plain cookie (its path was `/`, it had no domain).
const EXPIRE_PLAIN: &str =
    "cart_session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

/// What a request's cookies ask of the move to the `__Host-` name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Move {
    /// No plain cookie: nothing to do.
    Nothing,
    /// A plain cookie beside a `__Host-` one (or one that names no session): expire it.
    ExpirePlain,
    /// Only a plain cookie, naming this session id: show it under the new name, set the
    /// new cookie, expire the plain one.
    Rename(String),
}

/// What `headers` (a request's) ask of the move.
fn move_for(headers: &HeaderMap) -> Move {
    let (mut plain, mut host) = (None, false);
    for (name, value) in cookies(headers) {
        if name == SECURE_SESSION_COOKIE {
            host = true;
        } else if name == SESSION_COOKIE && plain.is_none() {
            plain = Some(value);
        }
    }
    match plain {
        None => Move::Nothing,
        Some(id) if !host && is_session_id(id) => Move::Rename(id.to_owned()),
        Some(_) => Move::ExpirePlain,
    }
}

/// Every `name=value` pair of a request's `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Whether `value` can be a session id as the session layer writes one (22 characters of
/// URL-safe base64): only such a value is copied into a cookie of ours.
fn is_session_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Whether the response sets (or removes) the `__Host-` cookie itself.
fn sets_secure_cookie(headers: &HeaderMap) -> bool {
    headers.get_all(header::SET_COOKIE).iter().any(|value| {
        value
            .as_bytes()
            .strip_prefix(SECURE_SESSION_COOKIE.as_bytes())
            .is_some_and(|rest| rest.starts_with(b"="))
    })
}

/// Adds to a request's headers what `moving` asks for.
fn rename_in_request(headers: &mut HeaderMap, moving: &Move) {
    if let Move::Rename(id) = moving
        && let Ok(value) = HeaderValue::from_str(&format!("{SECURE_SESSION_COOKIE}={id}"))
    {
        headers.append(header::COOKIE, value);
    }
}

/// Adds to a response's headers what `moving` asks for.
fn finish_in_response(headers: &mut HeaderMap, moving: &Move) {
    if let Move::Rename(id) = moving
        && !sets_secure_cookie(headers)
        && let Ok(value) =
            HeaderValue::from_str(&format!("{SECURE_SESSION_COOKIE}={id}{SECURE_ATTRIBUTES}"))
    {
        headers.append(header::SET_COOKIE, value);
    }
    if *moving != Move::Nothing {
        headers.append(header::SET_COOKIE, HeaderValue::from_static(EXPIRE_PLAIN));
    }
}

/// Puts [`HostCookie`] in front of the session layer; `secure` turns it on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostCookieLayer {
    secure: bool,
}

impl HostCookieLayer {
    pub(crate) fn new(secure: bool) -> Self {
        Self { secure }
    }
}

impl<S> Layer<S> for HostCookieLayer {
    type Service = HostCookie<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HostCookie {
            inner,
            secure: self.secure,
        }
    }
}

/// Moves a request that carries only the plain cookie to the `__Host-` one (see the
/// module).
#[derive(Debug, Clone)]
pub(crate) struct HostCookie<S> {
    inner: S,
    secure: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HostCookie<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Moved<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let moving = if self.secure {
            move_for(request.headers())
        } else {
            Move::Nothing
        };
        rename_in_request(request.headers_mut(), &moving);
        Moved {
            future: self.inner.call(request),
            moving,
        }
    }
}

pin_project! {
    /// The session layer's answer, with the move finished in it.
    pub(crate) struct Moved<F> {
        #[pin]
        future: F,
        moving: Move,
    }
}

impl<F, B, E> Future for Moved<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = ready!(this.future.poll(cx));
        if let Ok(response) = &mut answer {
            finish_in_response(response.headers_mut(), this.moving);
        }
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

    fn cookie_headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::COOKIE, HeaderValue::from_static(value));
        }
        headers
    }

    fn set_cookies(headers: &HeaderMap) -> Vec<&str> {
        headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    }

    #[test]
    fn the_name_is_host_prefixed_only_when_secure() {
        assert_eq!(session_cookie_name(true), "__Host-cart_session");
        assert_eq!(session_cookie_name(false), "cart_session");
    }

    #[test]
    fn only_a_plain_cookie_is_renamed() {
        let headers = cookie_headers(&["theme=dark; cart_session=AAAAAAAAAAAAAAAAAAAAAA"]);
        assert_eq!(move_for(&headers), Move::Rename(ID.to_owned()));
        // The first of two, as the session layer would read it.
        let two = cookie_headers(&["cart_session=AAAAAAAAAAAAAAAAAAAAAA", "cart_session=B"]);
        assert_eq!(move_for(&two), Move::Rename(ID.to_owned()));
    }

    #[test]
    fn the_host_cookie_wins_and_the_plain_one_is_expired() {
        for order in [
            [
                "__Host-cart_session=B",
                "cart_session=AAAAAAAAAAAAAAAAAAAAAA",
            ],
            [
                "cart_session=AAAAAAAAAAAAAAAAAAAAAA",
                "__Host-cart_session=B",
            ],
        ] {
            assert_eq!(move_for(&cookie_headers(&order)), Move::ExpirePlain);
        }
        let only_host = cookie_headers(&["__Host-cart_session=B"]);
        assert_eq!(move_for(&only_host), Move::Nothing);
    }

    #[test]
    fn a_plain_cookie_that_names_no_session_is_expired_not_copied() {
        for value in ["cart_session=", "cart_session=a b", "cart_session=\"x\""] {
            let headers = cookie_headers(&[value]);
            assert_eq!(move_for(&headers), Move::ExpirePlain, "{value}");
        }
        assert_eq!(move_for(&cookie_headers(&["other=1"])), Move::Nothing);
        assert_eq!(move_for(&HeaderMap::new()), Move::Nothing);
    }

    #[test]
    fn a_renamed_request_carries_the_host_cookie_too() {
        let mut headers = cookie_headers(&["cart_session=AAAAAAAAAAAAAAAAAAAAAA"]);
        rename_in_request(&mut headers, &Move::Rename(ID.to_owned()));
        assert_eq!(
            cookies(&headers).collect::<Vec<_>>(),
            [("cart_session", ID), ("__Host-cart_session", ID)]
        );
    }

    #[test]
    fn the_answer_sets_the_host_cookie_and_expires_the_plain_one() {
        let mut headers = HeaderMap::new();
        finish_in_response(&mut headers, &Move::Rename(ID.to_owned()));
        assert_eq!(
            set_cookies(&headers),
            [
                "__Host-cart_session=AAAAAAAAAAAAAAAAAAAAAA; HttpOnly; SameSite=Lax; Secure; Path=/",
                EXPIRE_PLAIN,
            ]
        );
    }

    #[test]
    fn a_host_cookie_the_session_layer_set_is_left_alone() {
        let mut headers = HeaderMap::new();
        let removal = "__Host-cart_session=; Path=/; Max-Age=0";
        headers.append(header::SET_COOKIE, HeaderValue::from_static(removal));
        finish_in_response(&mut headers, &Move::Rename(ID.to_owned()));
        assert_eq!(set_cookies(&headers), [removal, EXPIRE_PLAIN]);

        let mut untouched = HeaderMap::new();
        finish_in_response(&mut untouched, &Move::Nothing);
        assert!(set_cookies(&untouched).is_empty());
    }
}

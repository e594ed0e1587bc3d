//! Browser-facing protections: cross-origin request forgery checks and security headers.
//!
//! Forgery protection follows the approach of Go's `CrossOriginProtection`: an unsafe
//! request (POST, PUT, PATCH, DELETE) is refused if the browser says it comes from another
//! site (`Sec-Fetch-Site`), or, from browsers that do not send that header, if its `Origin`
//! is not this site: the same host and port, and the same scheme as the request's (the
//! `X-Forwarded-Proto` that the balancer sets, else plain `http`, which is all a replica
//! serves itself), so a page on `http://shop` cannot post to `https://shop`. Clients that send neither (curl, scripts, the API tests) are not
//! browsers carrying a victim's cookies, so they pass. No token is needed, so anonymous
//! browsing still writes nothing to the session store.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::error::Error;

/// Refuses unsafe cross-origin requests from browsers with 403. A plain tower layer (no
/// boxing, no clone of the inner service per request), since every request passes it.
#[expect(
    clippy::result_large_err,
    reason = "tower-http's validator hands its refusal back as the response"
)]
pub(crate) fn reject_cross_origin() -> ValidateRequestHeaderLayer<
    impl FnMut(&mut Request) -> Result<(), Response> + Clone + Send + Sync + 'static,
> {
    ValidateRequestHeaderLayer::custom(|request: &mut Request| {
        let unsafe_method = !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        if unsafe_method && is_cross_origin(request.headers()) {
            return Err(Error::CrossOrigin.into_response());
        }
        Ok(())
    })
}

fn is_cross_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        // "none" is a navigation the user started (address bar, bookmark).
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let request_scheme = headers
        .get("x-forwarded-proto")
        .and_then(|proto| proto.to_str().ok())
        .and_then(|proto| proto.split(',').next())
        .map_or_else(
            || "http".to_owned(),
            |proto| proto.trim().to_ascii_lowercase(),
        );
    let origin_authority = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(scheme, authority)| (scheme.to_ascii_lowercase(), authority));
    match (origin_authority, host) {
        (Some((scheme, authority)), Some(host)) => {
            scheme != request_scheme || normalise(&scheme, authority) != normalise(&scheme, host)
        }
        _ => true,
    }
}

/// `host[:port]` in lower case with the scheme's default port left out, so that
/// `Shop.Example:443` and `shop.example` compare equal under https.
fn normalise(scheme: &str, authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    authority
        .strip_suffix(default_port)
        .map(str::to_owned)
        .unwrap_or(authority)
}

/// Headers that keep pages from being framed, sniffed or fed foreign scripts.
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::X_FRAME_OPTIONS, "DENY"),
];

/// Adds [`SECURITY_HEADERS`] to every response (a `tower::util::MapResponseLayer`).
pub(crate) fn add_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        assert!(!is_cross_origin(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!is_cross_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(is_cross_origin(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
        assert!(is_cross_origin(&headers(&[(
            "sec-fetch-site",
            "same-site"
        )])));
    }

    #[test]
    fn origin_must_match_the_host_when_fetch_metadata_is_missing() {
        let same = [
            ("origin", "http://shop.test:8080"),
            ("host", "shop.test:8080"),
        ];
        assert!(!is_cross_origin(&headers(&same)));
        let other = [("origin", "https://evil.test"), ("host", "shop.test:8080")];
        assert!(is_cross_origin(&headers(&other)));
        assert!(is_cross_origin(&headers(&[
            ("origin", "null"),
            ("host", "shop.test")
        ])));
    }

    #[test]
    fn origin_must_have_the_requests_scheme() {
        let https_behind_balancer = [
            ("origin", "https://shop.test"),
            ("host", "shop.test"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(!is_cross_origin(&headers(&https_behind_balancer)));
        let insecure_page = [
            ("origin", "http://shop.test"),
            ("host", "shop.test"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(is_cross_origin(&headers(&insecure_page)));
        let https_origin_on_plain_http = [("origin", "https://shop.test"), ("host", "shop.test")];
        assert!(is_cross_origin(&headers(&https_origin_on_plain_http)));
    }

    #[test]
    fn clients_without_either_header_pass() {
        assert!(!is_cross_origin(&headers(&[("host", "shop.test")])));
    }
}

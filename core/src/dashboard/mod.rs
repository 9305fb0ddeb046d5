//! `GET /dashboard`: one self-contained page that reads the status and summary endpoints.
//!
//! The page holds no data and no secret: it asks for a client key, keeps it in the tab's
//! session storage and sends it as a header to `/v1/gateway/status` and `/v1/gateway/summary`.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

const PAGE: &str = include_str!("page.html");

/// The page's body (static: no copy per request).
pub fn body() -> Bytes {
    Bytes::from_static(PAGE.as_bytes())
}

/// The page's headers: HTML that may reach nothing but this origin.
pub fn headers() -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; \
             style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h
}

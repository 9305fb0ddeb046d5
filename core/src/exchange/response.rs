//! The response the exchange decided on: status, every header, and where the body comes from.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::cache::{self, CacheStatus};
use crate::error::GatewayError;
use crate::headers;

/// How the upstream's body travels to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// An event stream: every chunk goes to the client as it arrives, then to
    /// [`super::Exchange::on_chunk`]; the end goes to [`super::Exchange::on_end`].
    Observe,
    /// An event stream with a part to cut (the usage chunk the gateway asked for on the client's
    /// behalf): every chunk goes to [`super::Exchange::on_chunk_filtered`] first, and what it
    /// returns goes to the client (nothing when it returns no bytes); the end goes to
    /// [`super::Exchange::on_end`].
    Filter,
    /// An upstream error body: passed on as it is. A runtime that can hand the body over without
    /// touching it may do so and report nothing but the end (if it sees it).
    Untouched,
}

#[derive(Debug, Clone)]
pub enum ResponseBody {
    /// Bytes the gateway has in hand.
    Full(Bytes),
    /// The current attempt's upstream body.
    Relay(RelayMode),
    /// Bytes the exchange goes on emitting ([`crate::Action::Emit`]) until
    /// [`crate::Action::End`]: the runtime keeps driving it behind the response.
    Driven,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Every header to send, the gateway's own included.
    pub headers: HeaderMap,
    pub body: ResponseBody,
    /// Bytes to send before the relayed body: the upstream's events the exchange already read
    /// (held back until the first content, so another upstream could still take over).
    pub prefix: Bytes,
    /// A relayed stream that is being recorded: its end may yield a [`super::Store`] (a runtime
    /// that must register background work before it returns the response does so now).
    pub store_on_end: bool,
}

impl Response {
    /// The OpenAI-shaped error response.
    pub fn error(
        err: &GatewayError,
        request_id: &HeaderValue,
        cache: Option<CacheStatus>,
    ) -> Response {
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in err.extra_headers() {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        if let Some(secs) = err.retry_after_secs() {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if !request_id.is_empty() {
            headers.insert(headers::REQUEST_ID, request_id.clone());
        }
        if let Some(c) = cache {
            headers.insert(
                cache::STATUS_HEADER,
                HeaderValue::from_static(c.header_value()),
            );
        }
        Response {
            status: err.status(),
            headers,
            body: ResponseBody::Full(Bytes::from(err.body())),
            prefix: Bytes::new(),
            store_on_end: false,
        }
    }

    /// A 500 for a runtime that misused the exchange; never expected.
    pub fn internal(message: &str) -> Response {
        let err = GatewayError::Internal {
            message: message.to_string(),
        };
        Response::error(&err, &HeaderValue::from_static(""), None)
    }

    /// The status as a number the runtimes' HTTP types accept (100..=999).
    pub fn status(&self) -> u16 {
        if (100..=999).contains(&self.status) {
            self.status
        } else {
            502
        }
    }
}

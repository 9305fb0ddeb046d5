//! Which headers cross the gateway in each direction.
//!
//! Decided here once so that both runtimes forward exactly the same set. Everything not named is
//! passed through, so provider-specific headers (`openai-beta`, rate-limit and `retry-after`
//! headers) reach their destination without the gateway knowing them, except those that would
//! let a client choose whose account pays (see [`forward_to_upstream`]).

/// Names the upstream whose answer a response carries.
pub const UPSTREAM_NAME: &str = "x-gateway-upstream";
/// How many upstream attempts a response took.
pub const ATTEMPTS: &str = "x-gateway-attempts";
/// A client's choice of first upstream: an upstream's name or region.
pub const PIN_REGION: &str = "x-gateway-region";
/// The model sent upstream (after `auto`, a tier or a tier's fallback).
pub const MODEL: &str = "x-gateway-model";
/// What a JSON answer cost, in USD (a plain decimal; `0` from the cache).
pub const COST_USD: &str = "x-gateway-cost-usd";
/// `over-budget` when no model fitted `x-gateway-cost-budget-usd`.
pub const SELECTION: &str = "x-gateway-selection";
/// The gateway's own time and the upstream's, in milliseconds.
pub const SERVER_TIMING: &str = "server-timing";

/// Hop-by-hop headers (RFC 9110 §7.6.1) and framing headers the runtimes set themselves.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Headers that select who is billed or whose credentials are used at the provider. Upstream
/// calls carry the operator's key, so the operator, not the client, decides these.
const ACCOUNT_SELECTING: &[&str] = &[
    "openai-organization",
    "openai-project",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
];

/// Whether `name` is a hop-by-hop or framing header (never configured by the operator).
pub fn is_hop_by_hop(name: &str) -> bool {
    is_one_of(HOP_BY_HOP, name)
}

/// Should a client's request header be sent upstream?
///
/// The client's `authorization` never is (the operator's key replaces it); nor are headers that
/// choose the billed organisation or project or carry other credentials, cookies, platform
/// headers (`cf-*`, `fly-*`, `x-forwarded-*`), or `accept-encoding`: the gateway asks for identity
/// encoding so that it can observe stream events as they pass.
pub fn forward_to_upstream(name: &str) -> bool {
    let name = name.trim();
    !(is_one_of(HOP_BY_HOP, name)
        || is_one_of(ACCOUNT_SELECTING, name)
        || is_one_of(
            &[
                "authorization",
                "cookie",
                "accept-encoding",
                "x-request-id",
                "x-real-ip",
                "forwarded",
            ],
            name,
        )
        || starts_with_one_of(&["cf-", "fly-", "x-forwarded-", "x-gateway-"], name))
}

/// Should an upstream response header be passed to the client?
///
/// `x-request-id` is the gateway's own (the upstream's is renamed, see
/// [`UPSTREAM_REQUEST_ID`]); cookies and the upstream's server identity stay behind.
pub fn forward_to_client(name: &str) -> bool {
    let name = name.trim();
    !(is_one_of(HOP_BY_HOP, name)
        || is_one_of(
            &[
                "set-cookie",
                "x-request-id",
                "server",
                "alt-svc",
                "via",
                "date",
            ],
            name,
        )
        || starts_with_one_of(&["cf-", "fly-", "x-gateway-"], name))
}

/// A header map as the `(name, value)` pairs the cache's key and controls read, any number of
/// times.
#[derive(Clone, Copy)]
pub struct Pairs<'a>(pub &'a http::HeaderMap);

type PairFn<'a> = fn((&'a http::HeaderName, &'a http::HeaderValue)) -> (&'a str, &'a [u8]);

impl<'a> IntoIterator for Pairs<'a> {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = std::iter::Map<http::header::Iter<'a, http::HeaderValue>, PairFn<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }
}

/// The header under which the upstream's own request id is passed back.
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";
pub const REQUEST_ID: &str = "x-request-id";

// The two lookups below are never inlined: one loop then serves every list, where inlined
// into each caller every list was unrolled into comparisons of its own (over 10 KB of the
// Worker's bundle for these few names).

/// Whether `name` is one of `list`, ignoring ASCII case.
#[inline(never)]
fn is_one_of(list: &[&str], name: &str) -> bool {
    list.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether `name` starts with one of `prefixes`, ignoring ASCII case.
#[inline(never)]
fn starts_with_one_of(prefixes: &[&str], name: &str) -> bool {
    prefixes.iter().any(|prefix| {
        name.as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    })
}

/// Request header fields the gateway accepts (beyond, a 431 in the OpenAI shape rather than a
/// server's bare one: the native server's own limits are set above these).
pub const MAX_REQUEST_HEADER_FIELDS: usize = 200;
/// Request header bytes (names and values) the gateway accepts.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;

/// `Some((fields, bytes))` when a request's headers exceed the limits above.
pub fn too_large(headers: &http::HeaderMap) -> Option<(usize, usize)> {
    let fields = headers.len();
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    (fields > MAX_REQUEST_HEADER_FIELDS || bytes > MAX_REQUEST_HEADER_BYTES)
        .then_some((fields, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_and_hop_by_hop_headers_stay_at_the_gateway() {
        for h in [
            "Authorization",
            "cookie",
            "Connection",
            "Host",
            "content-length",
            "CF-Connecting-IP",
            "x-forwarded-for",
            "fly-region",
            "accept-encoding",
            "OpenAI-Organization",
            "openai-project",
            "api-key",
            "x-api-key",
        ] {
            assert!(!forward_to_upstream(h), "{h}");
        }
        for h in ["content-type", "openai-beta", "user-agent", "accept"] {
            assert!(forward_to_upstream(h), "{h}");
        }
    }

    #[test]
    fn rate_limit_and_retry_headers_reach_the_client() {
        for h in [
            "retry-after",
            "x-ratelimit-remaining-requests",
            "content-type",
            "openai-processing-ms",
        ] {
            assert!(forward_to_client(h), "{h}");
        }
        for h in [
            "set-cookie",
            "transfer-encoding",
            "x-request-id",
            "server",
            "content-length",
        ] {
            assert!(!forward_to_client(h), "{h}");
        }
    }

    #[test]
    fn short_and_non_ascii_names_do_not_panic() {
        assert!(forward_to_upstream("c"));
        assert!(forward_to_client("é"));
        assert!(forward_to_upstream("cfé"));
    }
}

//! Conversions between the platform's headers and the core's `http::HeaderMap`, without the
//! workers-rs iterator that unwraps internally.

use http::{HeaderMap, HeaderName, HeaderValue};
use worker::Headers;

/// The platform's headers as a map (names the `http` crate refuses are skipped: the platform
/// would not have accepted them either).
pub fn to_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    let Ok(Some(entries)) = js_sys::try_iter(headers.0.as_ref()) else {
        return map;
    };
    for entry in entries.flatten() {
        let pair = js_sys::Array::from(&entry);
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// The core's headers for the platform (values that are not visible ASCII are skipped: a
/// JavaScript `Headers` takes strings only).
pub fn from_map(map: &HeaderMap) -> Headers {
    let headers = Headers::new();
    for (name, value) in map {
        if let Ok(v) = value.to_str() {
            let _ = headers.append(name.as_str(), v);
        }
    }
    headers
}

pub fn content_length(map: &HeaderMap) -> Option<u64> {
    map.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

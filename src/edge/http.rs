//! Conversions between the platform's headers and the core's `http::HeaderMap`: one call across
//! the boundary each way, with the headers as text (`js/io.js`), rather than a call per header.

use http::{HeaderMap, HeaderName, HeaderValue};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::web_sys::Headers;

#[wasm_bindgen(module = "/src/edge/js/io.js")]
extern "C" {
    #[wasm_bindgen(js_name = headerText)]
    fn header_text(headers: &Headers) -> String;
    #[wasm_bindgen(js_name = headersFrom)]
    fn headers_from(text: &str) -> Headers;
}

/// The platform's headers as a map (names or values the `http` crate refuses are skipped).
pub fn to_map(headers: &Headers) -> HeaderMap {
    parse(&header_text(headers))
}

/// The core's headers for the platform (values that are not visible ASCII are skipped: a
/// JavaScript `Headers` takes strings only).
pub fn from_map(map: &HeaderMap) -> Headers {
    headers_from(&to_text(map))
}

/// `name:value` lines, as `js/io.js` reads and writes them.
pub fn to_text(map: &HeaderMap) -> String {
    let mut text = String::with_capacity(map.len() * 32);
    for (name, value) in map {
        if let Ok(v) = value.to_str() {
            text.push_str(name.as_str());
            text.push(':');
            text.push_str(v);
            text.push('\n');
        }
    }
    text
}

fn parse(text: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

pub fn content_length(map: &HeaderMap) -> Option<u64> {
    map.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

//! Conversions between the platform's headers and the core's `http::HeaderMap`: one call across
//! the boundary each way, with the headers as text (`js/io.js`), rather than a call per header;
//! the client's request head in one call.

use http::{HeaderMap, HeaderName, HeaderValue};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::web_sys::Headers;

#[wasm_bindgen(module = "/src/edge/js/io.js")]
extern "C" {
    #[wasm_bindgen(js_name = headerText)]
    fn header_text(headers: &Headers) -> String;
}

/// The platform's headers as text (`name:value` lines), for [`parse`].
pub fn text_of(headers: &Headers) -> String {
    header_text(headers)
}

/// `name:value` lines, as `js/io.js` reads and writes them (values that are not visible ASCII
/// are skipped: a JavaScript `Headers` takes strings only).
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

/// Headers as `js/io.js` writes them, as a map (names or values the `http` crate refuses are
/// skipped).
pub fn parse(text: &str) -> HeaderMap {
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

/// The client's request head as `js/io.js`'s `requestHead` writes it.
pub struct Head {
    text: String,
}

impl Head {
    pub fn read(request: &worker::web_sys::Request) -> Head {
        Head {
            text: super::io::request_head(request),
        }
    }

    /// (method, URL, location line, headers).
    pub fn parts(&self) -> (&str, &str, &str, HeaderMap) {
        let mut lines = self.text.splitn(4, '\n');
        let method = lines.next().unwrap_or("");
        let url = lines.next().unwrap_or("");
        let location = lines.next().unwrap_or("");
        let headers = parse(lines.next().unwrap_or(""));
        (method, url, location, headers)
    }
}

pub fn content_length(map: &HeaderMap) -> Option<u64> {
    map.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

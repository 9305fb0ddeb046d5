//! The platform calls of every request, each one call from wasm (`js/io.js`): the request's
//! head, the upstream `fetch`, the response.

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::web_sys::{AbortSignal, ReadableStream, Request, Response};

#[wasm_bindgen(module = "/src/edge/js/io.js")]
extern "C" {
    /// `fetch(url, { method, headers, body, signal })`, the headers as `http::to_text` writes
    /// them.
    #[wasm_bindgen(catch)]
    pub fn send(
        url: &str,
        method: &str,
        headers: &str,
        body: Option<Uint8Array>,
        signal: &AbortSignal,
    ) -> Result<Promise, JsValue>;

    /// The request's method, URL, location (`request.cf`) and headers, one per line (the
    /// headers as `http::to_text` writes them); [`super::http::Head`] reads it.
    #[wasm_bindgen(js_name = requestHead)]
    pub fn request_head(request: &Request) -> String;

    /// A response with these bytes as its body (copied by the platform).
    #[wasm_bindgen(js_name = respond, catch)]
    pub fn respond_bytes(status: u16, headers: &str, body: &[u8]) -> Result<Response, JsValue>;

    /// A response with this stream as its body, or none.
    #[wasm_bindgen(js_name = respond, catch)]
    pub fn respond_stream(
        status: u16,
        headers: &str,
        body: Option<ReadableStream>,
    ) -> Result<Response, JsValue>;

    /// `String(error)`: the platform's own text for a failure.
    pub fn message(error: &JsValue) -> String;
}

//! The upstream `fetch`, in one call from wasm (`js/io.js`).

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::web_sys::AbortSignal;

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

    /// `String(error)`: the platform's own text for a failure.
    pub fn message(error: &JsValue) -> String;
}

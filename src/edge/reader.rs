//! The upstream's body read chunk by chunk by the loop (when the core looks at the first events
//! before answering), with a reader that can then be handed, with any read in progress, to the
//! relay (`stream::relay`), which reads the rest from JavaScript.

use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStream;

#[wasm_bindgen(module = "/src/edge/js/relay.js")]
extern "C" {
    #[wasm_bindgen(js_name = getReader, catch)]
    fn get_reader(body: &ReadableStream) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_name = read)]
    fn read(reader: &JsValue) -> Promise;
}

pub struct Reader {
    reader: JsValue,
    /// A read in progress: kept when the loop stops waiting for it at a timer.
    pending: Option<(Promise, JsFuture)>,
}

/// What the platform says when it cut a read short; workers-rs ends the body normally then.
const ABORTED: &str = "Error: aborted";

impl Reader {
    /// `None` when the body is already locked.
    pub fn new(body: &ReadableStream) -> Option<Reader> {
        Some(Reader {
            reader: get_reader(body).ok()?,
            pending: None,
        })
    }

    /// The next chunk; `None` at the end. Safe to abandon: the read stays in progress.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let (_, future) = self.pending.get_or_insert_with(|| {
            let p = read(&self.reader);
            (p.clone(), JsFuture::from(p))
        });
        let out = future.await;
        self.pending = None;
        let r = match out {
            Ok(r) => r,
            Err(e) => {
                let message = e
                    .dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.to_string()));
                return (message.as_deref() != Some(ABORTED)).then_some(Err(()));
            }
        };
        let done = Reflect::get(&r, &JsValue::from_str("done"))
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            return None;
        }
        let value = Reflect::get(&r, &JsValue::from_str("value")).ok()?;
        Some(Ok(Uint8Array::new(&value).to_vec()))
    }

    /// The reader and the read in progress, if any.
    pub fn into_parts(self) -> (JsValue, Option<Promise>) {
        (self.reader, self.pending.map(|(p, _)| p))
    }
}

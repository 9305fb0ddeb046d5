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
    pending: Option<Promise>,
    future: Option<JsFuture>,
}

/// What the platform says when it cut a read short; workers-rs ends the body normally then.
const ABORTED: &str = "Error: aborted";

impl Reader {
    /// `None` when the body is already locked.
    pub fn new(body: &ReadableStream) -> Option<Reader> {
        Some(Reader {
            reader: get_reader(body).ok()?,
            pending: None,
            future: None,
        })
    }

    /// The read in progress, started if there is none: what the JavaScript loop awaits (then
    /// [`Reader::settled`]).
    pub fn read(&mut self) -> Promise {
        self.pending
            .get_or_insert_with(|| read(&self.reader))
            .clone()
    }

    /// The read in progress ended with `outcome` (its promise's value or error): the chunk,
    /// `None` at the end.
    pub fn settled(&mut self, outcome: Result<JsValue, JsValue>) -> Option<Result<Vec<u8>, ()>> {
        self.pending = None;
        self.future = None;
        let r = match outcome {
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

    /// The next chunk; `None` at the end. Safe to abandon: the read stays in progress.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let promise = self.read();
        let out = self
            .future
            .get_or_insert_with(|| JsFuture::from(promise))
            .await;
        self.settled(out)
    }

    /// The reader and the read in progress, if any.
    pub fn into_parts(self) -> (JsValue, Option<Promise>) {
        (self.reader, self.pending)
    }
}

//! An upstream event stream on its way to the client. The loop that moves the chunks is
//! JavaScript (`js/relay.js`): a chunk goes out in the turn it arrives and is shown to the core's
//! [`Exchange::on_chunk`] in the same turn, through [`Tap`], one synchronous call into wasm.
//! At the end the core says what to append (an error event for a cut-off stream) and what to
//! store. The log line is written when the tap is freed: when the stream ends, or when the
//! client goes away (its figures cover the whole stream). When identical requests follow the
//! stream live, the core says so after a chunk ([`Exchange::publish_due`]) and the isolate's
//! router wakes them.

use bytes::Bytes;
use futures_channel::oneshot;
use gateway_core::limits::LimitCall;
use gateway_core::{BodyEnd, EndOfRelay, Exchange, Store};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::web_sys::ReadableStream;

use super::reader::Reader;
use super::{clock, shared, write_log};

#[wasm_bindgen(module = "/src/edge/js/relay.js")]
extern "C" {
    #[wasm_bindgen(js_name = relay)]
    fn relay_js(
        reader: &JsValue,
        pending: Option<js_sys::Promise>,
        prefix: Option<js_sys::Uint8Array>,
        tap: Tap,
        filter: bool,
    ) -> ReadableStream;
}

/// The client's body: `prefix`, then the rest of `reader`, observed (or filtered) by the core.
pub fn relay(
    reader: Reader,
    prefix: Bytes,
    filter: bool,
    exchange: Exchange,
    store: Option<oneshot::Sender<Store>>,
    settle: Option<oneshot::Sender<LimitCall>>,
) -> ReadableStream {
    let (reader, pending) = reader.into_parts();
    let prefix = (!prefix.is_empty()).then(|| js_sys::Uint8Array::from(&prefix[..]));
    let tap = Tap {
        exchange,
        filter,
        store,
        settle,
        tail: None,
        abort: false,
    };
    relay_js(&reader, pending, prefix, tap, filter)
}

/// The core's side of a relayed stream, called by `js/relay.js`.
#[wasm_bindgen]
pub struct Tap {
    exchange: Exchange,
    filter: bool,
    store: Option<oneshot::Sender<Store>>,
    /// Where the settlement of the key's reservation goes when the exchange finishes.
    settle: Option<oneshot::Sender<LimitCall>>,
    tail: Option<Vec<u8>>,
    abort: bool,
}

#[wasm_bindgen]
impl Tap {
    /// A chunk from the upstream. Observed (already sent): returns nothing. Filtered: returns
    /// nothing to send the chunk as it is, else what to send instead (maybe nothing yet).
    pub fn chunk(&mut self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        let chunk = Bytes::from(chunk);
        let now = clock::now();
        let out = if self.filter {
            let (ptr, len) = (chunk.as_ptr(), chunk.len());
            let out = self.exchange.on_chunk_filtered(chunk, now);
            // The same bytes back: the platform's copy goes out, no copy out of wasm.
            (!(out.as_ptr() == ptr && out.len() == len)).then(|| Vec::from(out))
        } else {
            self.exchange.on_chunk(&chunk, now);
            None
        };
        if self.exchange.publish_due() {
            let ex = &mut self.exchange;
            shared::with(|r| ex.publish(r));
        }
        out
    }

    /// The upstream's body ended (`failed`: with an error).
    pub fn end(&mut self, failed: bool) {
        let how = if failed {
            BodyEnd::Failed
        } else {
            BodyEnd::Complete
        };
        let ex = &mut self.exchange;
        let end = shared::with(|r| ex.on_end(how, clock::now(), r));
        self.apply(end);
    }

    /// Milliseconds until the core's idle deadline; negative when it has none.
    pub fn idle_ms(&self) -> f64 {
        match self.exchange.poll_timeout() {
            Some(at) => at.remaining(clock::now().instant).as_secs_f64() * 1000.0,
            None => -1.0,
        }
    }

    /// The idle timer fired: whether the core ended the relay (then see `take_tail`).
    pub fn timeout(&mut self) -> bool {
        let ex = &mut self.exchange;
        match shared::with(|r| ex.handle_relay_timeout(clock::now(), r)) {
            Some(end) => {
                self.apply(end);
                true
            }
            None => false,
        }
    }

    /// What to send after the last chunk, once ended.
    pub fn take_tail(&mut self) -> Option<Vec<u8>> {
        self.tail.take()
    }

    /// Whether the body must end with an error rather than close.
    pub fn aborted(&self) -> bool {
        self.abort
    }
}

impl Tap {
    fn apply(&mut self, end: EndOfRelay) {
        if let (Some(store), Some(tx)) = (end.store, self.store.take()) {
            let _ = tx.send(store);
        }
        self.tail = end.tail.map(Vec::from);
        self.abort = end.abort;
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let ex = &mut self.exchange;
        if let Some(log) = shared::with(|r| ex.finish(clock::now(), r)) {
            write_log(&log);
        }
        if let (Some(call), Some(tx)) = (ex.take_settlement(), self.settle.take()) {
            let _ = tx.send(call);
        }
    }
}

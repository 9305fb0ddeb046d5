//! One Workers Analytics Engine data point per request, when the Worker has an `ANALYTICS`
//! binding: the request's log record in the core's schema ([`gateway_core::analytics`]),
//! written where the log line is written.
//!
//! The call is dynamic (`binding.writeDataPoint(point)` on whatever object the binding is), so
//! it works with the real binding, which returns nothing, and with a stand-in such as a service
//! binding to a Worker with a `writeDataPoint` method (the conformance suite's mock), which
//! returns a promise (waited for under the request's `waitUntil`). Nothing is awaited on the
//! request's path, and a failure never reaches the request: it is counted, and logged at the
//! 1st, 10th, 100th, ... failure of the isolate.

use std::cell::{Cell, RefCell};

use gateway_core::analytics;
use gateway_core::log::RequestLog;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::Env;

#[wasm_bindgen]
extern "C" {
    /// Whatever the binding is: only its `writeDataPoint` method is used.
    type Dataset;

    /// `dataset.writeDataPoint(point)`, called as a method: a service binding's RPC stub has
    /// no `Function.prototype.call` (`f.call(..)` there is a call of a remote method `call`).
    #[wasm_bindgen(method, js_name = writeDataPoint, catch)]
    fn write_data_point(this: &Dataset, point: &JsValue) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen(module = "cloudflare:workers")]
extern "C" {
    /// The current request's `waitUntil`, reachable where its `Context` is not (the log line
    /// is written deep inside a response's body stream).
    #[wasm_bindgen(js_name = waitUntil, catch)]
    fn wait_until(promise: &js_sys::Promise) -> Result<(), JsValue>;
}

/// The binding's name in `wrangler.toml` (`[[analytics_engine_datasets]]`).
pub const BINDING: &str = "ANALYTICS";

thread_local! {
    // An isolate's bindings do not change while it lives, so the binding is looked up on its
    // first request: `Some(None)` is "looked, there is none".
    static DATASET: RefCell<Option<Option<JsValue>>> = const { RefCell::new(None) };
    static FAILURES: Cell<u64> = const { Cell::new(0) };
}

/// Looks the binding up, once per isolate.
pub fn bind(env: &Env) {
    DATASET.with(|d| {
        if d.borrow().is_some() {
            return;
        }
        let found = js_sys::Reflect::get(env, &JsValue::from_str(BINDING))
            .ok()
            .filter(|v| v.is_object());
        *d.borrow_mut() = Some(found);
    });
}

/// Writes the request's data point, if the Worker has the binding.
pub fn write(log: &RequestLog) {
    let Some(dataset) = DATASET.with(|d| d.borrow().clone().flatten()) else {
        return;
    };
    match call(&dataset, log) {
        // The real binding returns nothing. A stand-in's call gives a promise (an RPC call's is
        // a callable thenable) that may still fail, and that the platform cancels when the
        // request ends unless told to wait for it.
        Ok(ret) if !ret.is_undefined() => {
            let done = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&ret));
            let watched = wasm_bindgen_futures::future_to_promise(async move {
                if let Err(e) = done.await {
                    failed(&e);
                }
                Ok(JsValue::UNDEFINED)
            });
            if let Err(e) = wait_until(&watched) {
                failed(&e);
            }
        }
        Ok(_) => {}
        Err(e) => failed(&e),
    }
}

fn call(dataset: &JsValue, log: &RequestLog) -> Result<JsValue, JsValue> {
    let p = analytics::data_point(log);
    // Built in place: smaller in the bundle than JSON text for `JSON.parse`.
    let texts = |v: &[String]| {
        v.iter()
            .map(|s| JsValue::from_str(s))
            .collect::<js_sys::Array>()
    };
    let point = js_sys::Object::new();
    js_sys::Reflect::set(&point, &"indexes".into(), &texts(&p.indexes))?;
    js_sys::Reflect::set(&point, &"blobs".into(), &texts(&p.blobs))?;
    let doubles: js_sys::Array = p.doubles.iter().map(|d| JsValue::from_f64(*d)).collect();
    js_sys::Reflect::set(&point, &"doubles".into(), &doubles)?;
    dataset.unchecked_ref::<Dataset>().write_data_point(&point)
}

fn failed(e: &JsValue) {
    let n = FAILURES.with(|f| {
        f.set(f.get().saturating_add(1));
        f.get()
    });
    // Every request of a broken binding fails alike: a line per power of ten says so, with the
    // count, without a line per request.
    let mut p: u64 = 1;
    while p < n {
        p = p.saturating_mul(10);
    }
    if p != n {
        return;
    }
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_default();
    let message = serde_json::to_string(&message).unwrap_or_default();
    worker::console_error!("{{\"analytics_write_failures\":{n},\"error\":{message}}}");
}

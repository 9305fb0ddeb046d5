//! A request's loop, driven from JavaScript (`js/drive.js`).
//!
//! The common path of a request (read its body, call the upstream, read the answer, respond)
//! waits on three platform promises. Awaited from Rust, each wait is a `JsFuture` (two closures
//! registered with a `FinalizationRegistry`), a wake-up through `queueMicrotask` and a poll of
//! the request's future: wasm-bindgen's machinery cost more CPU than the gateway's own work
//! (bench/README.md, "Where the Worker's time and memory go"). Here JavaScript awaits the
//! promise the core's action needs and hands the outcome back in one synchronous call
//! ([`Driver::settle`]), which also asks the core for its next action. The core's deadline is
//! one JavaScript timer.
//!
//! Actions that are rarer or need more than one promise (a shared cache lookup, a key's limits,
//! waiting on another request's flight, a backoff, chunks read before answering, a body of
//! undeclared length, a driven response) go to the async loop ([`super::run`]), which takes
//! over the request from there ([`Driver::slow`]).

use bytes::Bytes;
use gateway_core::{Action, AttemptId, BodyError, Exchange};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::web_sys::{Request as JsRequest, Response as JsResponse};
use worker::{Context, Env};

use super::{clock, conclude, finish_later, internal_error, kv_cache, run, shared, timeout};
use super::{Exit, Io, Origin, Pending, Unfinished};

#[wasm_bindgen(module = "/src/edge/js/drive.js")]
extern "C" {
    /// Runs the loop; resolves to the response.
    fn drive(driver: Driver) -> js_sys::Promise;
}

pub fn start(
    ex: Exchange,
    req: JsRequest,
    declared: Option<u64>,
    env: Env,
    ctx: Context,
) -> js_sys::Promise {
    drive(Driver {
        ex: Some(ex),
        io: Io::default(),
        req,
        declared,
        env,
        ctx,
        waiting: Waiting::Nothing,
        pending: None,
    })
}

/// What the promise JavaScript is awaiting brings.
enum Waiting {
    Nothing,
    /// The client's body (no more than `limit` bytes).
    Body {
        limit: u64,
    },
    /// The upstream's answer to the call in progress.
    Head,
    /// The upstream's whole body.
    UpstreamBody {
        limit: u64,
    },
    /// The next chunk of the upstream's body (of this attempt).
    Chunk(AttemptId),
}

/// A request between the core's actions, as the JavaScript loop holds it.
#[wasm_bindgen]
pub struct Driver {
    /// Taken when the response is built (or the async loop takes over).
    ex: Option<Exchange>,
    io: Io,
    req: JsRequest,
    /// The client's `content-length`.
    declared: Option<u64>,
    env: Env,
    ctx: Context,
    waiting: Waiting,
    /// An action left to the async loop.
    pending: Option<Pending>,
}

/// What the loop does next, as JavaScript reads it: a `Promise` to await (then
/// [`Driver::settle`] or [`Driver::fail`], or [`Driver::timeout`] at the deadline), the
/// `Response` (the end), or `undefined` (the async loop takes over: [`Driver::slow`]).
type Next = JsValue;

#[wasm_bindgen]
impl Driver {
    /// The first action.
    pub fn step(&mut self) -> Next {
        self.advance()
    }

    /// Milliseconds until the core's deadline; negative when it has none.
    pub fn wait_ms(&self) -> f64 {
        match self.ex.as_ref().and_then(Exchange::poll_timeout) {
            Some(at) => at.remaining(clock::now().instant).as_secs_f64() * 1000.0,
            None => -1.0,
        }
    }

    /// The awaited promise fulfilled with `value`; the next action.
    pub fn settle(&mut self, value: JsValue) -> Next {
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Nothing);
        let Some(ex) = self.ex.as_mut() else {
            return self.advance();
        };
        let now = clock::now;
        match waiting {
            Waiting::Nothing => {}
            Waiting::Body { limit } => match read(value, limit) {
                Ok(b) => ex.on_body(b, now()),
                Err(e) => ex.on_body_error(e, now()),
            },
            Waiting::Head => match value.dyn_into::<JsResponse>() {
                Ok(resp) => {
                    let (status, headers) = (resp.status(), super::http::text_of(&resp.headers()));
                    self.io.answered(ex, resp, status, &headers);
                }
                Err(e) => self.io.failed(ex, &e),
            },
            Waiting::UpstreamBody { limit } => match read(value, limit) {
                Ok(b) => shared::with(|r| ex.on_upstream_body(b, now(), r)),
                Err(e) => shared::with(|r| ex.on_upstream_body_error(e, now(), r)),
            },
            Waiting::Chunk(id) => self.io.chunk(ex, id, Ok(value)),
        }
        self.advance()
    }

    /// The awaited promise fulfilled with the upstream's answer, its status and headers read
    /// by JavaScript (`headerText`); the next action.
    pub fn answered(&mut self, resp: JsResponse, status: u16, headers: &str) -> Next {
        if !matches!(self.waiting, Waiting::Head) {
            return self.settle(resp.into());
        }
        self.waiting = Waiting::Nothing;
        if let Some(ex) = self.ex.as_mut() {
            self.io.answered(ex, resp, status, headers);
        }
        self.advance()
    }

    /// The awaited promise rejected with `error`; the next action.
    pub fn fail(&mut self, error: JsValue) -> Next {
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Nothing);
        let Some(ex) = self.ex.as_mut() else {
            return self.advance();
        };
        match waiting {
            Waiting::Nothing => {}
            Waiting::Body { .. } => ex.on_body_error(BodyError::Failed, clock::now()),
            Waiting::Head => self.io.failed(ex, &error),
            Waiting::UpstreamBody { .. } => {
                shared::with(|r| ex.on_upstream_body_error(BodyError::Failed, clock::now(), r))
            }
            Waiting::Chunk(id) => self.io.chunk(ex, id, Err(error)),
        }
        self.advance()
    }

    /// The core's deadline came first (the awaited promise is left as it is: a call in
    /// progress goes on unless the core gives it up); the next action.
    pub fn timeout(&mut self) -> Next {
        self.waiting = Waiting::Nothing;
        if let Some(ex) = self.ex.as_mut() {
            timeout(ex);
        }
        self.advance()
    }

    /// The async loop takes over from the pending action; resolves to the response.
    pub fn slow(mut self) -> js_sys::Promise {
        let ex = self.ex.take();
        let pending = self.pending.take();
        let mut io = std::mem::take(&mut self.io);
        wasm_bindgen_futures::future_to_promise(async move {
            let d = self;
            let origin = Origin {
                req: &d.req,
                declared: d.declared,
                ctx: &d.ctx,
            };
            let mut guard = Unfinished(ex, &d.ctx, &d.env);
            let exit = match guard.0.as_mut() {
                Some(ex) => run(ex, &mut io, Some(&origin), &d.env, None, pending).await,
                None => Exit::Ended,
            };
            let response = match guard.0.take() {
                Some(ex) => conclude(exit, ex, io, &d.env, &d.ctx),
                None => internal_error(),
            };
            response.map(JsValue::from)
        })
    }
}

impl Driver {
    /// Performs the core's actions that need no waiting, up to one that does.
    fn advance(&mut self) -> Next {
        let Some(ex) = self.ex.as_mut() else {
            return respond_or_500(internal_error());
        };
        loop {
            let seen = shared::generation();
            let action = shared::with(|r| ex.poll_action(clock::now(), r));
            match action {
                Action::ReadBody { limit } => {
                    if self.declared.is_none_or(|n| n > limit) {
                        if self.req.body().is_none() {
                            ex.on_body(Bytes::new(), clock::now());
                            continue;
                        }
                        // A body of undeclared length is read in chunks, within the limit.
                        return self.hand_over(Action::ReadBody { limit }, seen);
                    }
                    match self.req.array_buffer() {
                        Ok(p) => {
                            self.waiting = Waiting::Body { limit };
                            return p.into();
                        }
                        Err(_) => ex.on_body_error(BodyError::Failed, clock::now()),
                    }
                }
                Action::Lookup {
                    key,
                    shared: usable,
                } => {
                    // Without a usable KV the answer is known now: a miss.
                    if usable && self.env.kv(kv_cache::BINDING).is_ok() {
                        let action = Action::Lookup {
                            key,
                            shared: usable,
                        };
                        return self.hand_over(action, seen);
                    }
                    ex.on_lookup(None, clock::now());
                }
                Action::Send(attempt) => {
                    self.io.begin(ex, attempt);
                    if let Some(call) = &self.io.call {
                        self.waiting = Waiting::Head;
                        return call.promise.clone().into();
                    }
                }
                Action::AwaitResponse => match &self.io.call {
                    Some(call) => {
                        self.waiting = Waiting::Head;
                        return call.promise.clone().into();
                    }
                    None => return self.hand_over(Action::AwaitResponse, seen),
                },
                Action::ReadUpstreamBody { limit }
                    if self.io.upstream_len.is_some_and(|n| n <= limit) =>
                {
                    let read = self.io.upstream.take().map(|(_, r)| r.array_buffer());
                    match read {
                        Some(Ok(p)) => {
                            self.waiting = Waiting::UpstreamBody { limit };
                            return p.into();
                        }
                        _ => shared::with(|r| {
                            ex.on_upstream_body_error(BodyError::Failed, clock::now(), r)
                        }),
                    }
                }
                Action::ReadUpstreamChunk => match self.io.reader() {
                    Some((id, reader)) => {
                        self.waiting = Waiting::Chunk(id);
                        return reader.read().into();
                    }
                    None => timeout(ex),
                },
                Action::Store(store) => kv_cache::store_later(&self.ctx, &self.env, store),
                Action::Respond(response) => {
                    let Some(ex) = self.ex.take() else {
                        return respond_or_500(internal_error());
                    };
                    let io = std::mem::take(&mut self.io);
                    let exit = Exit::Respond(response);
                    return respond_or_500(conclude(exit, ex, io, &self.env, &self.ctx));
                }
                other => return self.hand_over(other, seen),
            }
        }
    }

    fn hand_over(&mut self, action: Action, seen: u64) -> Next {
        self.pending = Some((action, seen));
        JsValue::UNDEFINED
    }
}

/// A whole body (`arrayBuffer()`, as a `Uint8Array`), within `limit`.
fn read(value: JsValue, limit: u64) -> Result<Bytes, BodyError> {
    let bytes = value
        .dyn_into::<js_sys::Uint8Array>()
        .map_err(|_| BodyError::Failed)?;
    if u64::from(bytes.length()) > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(bytes.to_vec()))
}

fn respond_or_500(r: Result<JsResponse, JsValue>) -> Next {
    match r {
        Ok(resp) => resp.into(),
        Err(e) => e,
    }
}

impl Drop for Driver {
    /// The platform gave up on the request (the client went away) before it was answered.
    fn drop(&mut self) {
        if let Some(ex) = self.ex.as_mut() {
            finish_later(ex, &self.ctx, &self.env);
        }
    }
}

//! The edge runtime: the gateway as a Cloudflare Worker (wasm32 only).
//!
//! The loop that drives the core's [`Exchange`] for each request. Every branch is IO (read a
//! body, read or write KV, `fetch` the upstream, wait); every decision is the core's. Errors never
//! escape as the platform's bare 500: the core renders every failure in the OpenAI shape.
//!
//! A request starts in the JavaScript loop ([`driver`]), which performs the common steps with
//! one call into wasm per outcome; [`run`], the same loop in Rust, takes over for the rarer ones.

mod analytics;
mod body;
mod clock;
mod driver;
mod http;
mod io;
mod kv_cache;
mod limiter;
mod location;
mod probes;
mod reader;
mod settings;
mod shared;
mod stream;

use std::future::Future;
use std::pin::pin;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::future::{select, Either};
use gateway_core::limits::LimitCall;
use gateway_core::log::RequestLog;
use gateway_core::time::Instant;
use gateway_core::{
    Action, Attempt, AttemptId, BodyEnd, Exchange, RelayMode, RequestParts,
    Response as CoreResponse, ResponseBody as CoreBody, TransportError,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::web_sys::{Request as JsRequest, Response as JsResponse};
use worker::{event, AbortController, Context, Delay, Env, Response};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The Worker's `fetch` handler, exported as `#[event(fetch)]` would export it, without the
/// conversions it makes on every request that the gateway does not use (a `worker::Request`
/// with `request.cf` and the path copied out, a `worker::Response` turned back into the
/// platform's through a `ResponseInit` built field by field): the head is read in one call
/// (`io::request_head`) and the response built in one (`io::respond_*`). The request's loop
/// runs in JavaScript ([`driver`]).
#[wasm_bindgen]
pub fn fetch(req: JsRequest, env: Env, ctx: worker::worker_sys::Context) -> js_sys::Promise {
    let ctx = Context::new(ctx);
    let now = clock::now();
    analytics::bind(&env);
    let head = http::Head::read(&req);
    let (method, url, location, headers) = head.parts();
    let declared = http::content_length(&headers);
    let (path, query) = gateway_core::target::of_url(url);
    let parts = RequestParts {
        method,
        path,
        query,
        headers,
        location: location::of(location),
    };
    let ex = match settings::gateway(&env) {
        Ok(gw) => Exchange::new(gw, parts, now, random16()),
        Err(e) => Exchange::refused("worker", e, parts, now, random16()),
    };
    probes::refresh(&env, &ctx);
    driver::start(ex, req, declared, env, ctx)
}

/// An upstream `fetch` in progress: kept across the core's timers (a keepalive must not
/// cancel it), aborted when replaced or no longer wanted.
struct Call {
    id: AttemptId,
    /// The platform's `fetch`, awaited by the JavaScript loop or, through `future`, by [`run`].
    promise: js_sys::Promise,
    future: Option<JsFuture>,
    /// Taken once answered: aborting then would cut the response's body.
    controller: Option<AbortController>,
}

impl Call {
    /// Starts the attempt's `fetch`; `Err` when the platform refused to start it.
    fn start(attempt: Attempt) -> Result<Call, (AttemptId, TransportError)> {
        let controller = AbortController::default();
        let body = (!attempt.body.is_empty()).then(|| js_sys::Uint8Array::from(&attempt.body[..]));
        let promise = io::send(
            &attempt.url,
            attempt.method,
            &http::to_text(&attempt.headers),
            body,
            &controller.signal(),
        )
        .map_err(|e| (attempt.id, transport_error(&io::message(&e))))?;
        Ok(Call {
            id: attempt.id,
            promise,
            future: None,
            controller: Some(controller),
        })
    }
}

/// The IO a request holds between the core's actions.
#[derive(Default)]
struct Io {
    call: Option<Call>,
    /// The current upstream response and the attempt it belongs to.
    upstream: Option<(AttemptId, JsResponse)>,
    /// Its declared length (`content-length`), read when its head was.
    upstream_len: Option<u64>,
    /// Its body, once reading chunks began.
    chunks: Option<reader::Reader>,
    timer: Timer,
}

impl Io {
    /// A new attempt replaces whatever the previous one left (dropping a call aborts it).
    fn begin(&mut self, ex: &mut Exchange, attempt: Attempt) {
        self.upstream = None;
        self.upstream_len = None;
        self.chunks = None;
        self.call = None;
        match Call::start(attempt) {
            Ok(call) => self.call = Some(call),
            Err((id, e)) => shared::with(|r| ex.on_transport_error(id, e, clock::now(), r)),
        }
    }

    /// The call in progress answered with `resp`.
    fn answered(&mut self, ex: &mut Exchange, resp: JsResponse, status: u16, headers: &str) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        // Answered: nothing left to abort.
        call.controller = None;
        let headers = http::parse(headers);
        self.upstream_len = http::content_length(&headers);
        self.upstream = Some((call.id, resp));
        shared::with(|r| ex.on_response_head(call.id, status, headers, clock::now(), r));
    }

    /// The current upstream body's reader (made at the first read), with the attempt it
    /// belongs to.
    fn reader(&mut self) -> Option<(AttemptId, &mut reader::Reader)> {
        reader_of(&self.upstream, &mut self.chunks)
    }

    /// The JavaScript loop's read of the upstream body ended with `outcome`.
    fn chunk(&mut self, ex: &mut Exchange, id: AttemptId, outcome: Result<JsValue, JsValue>) {
        let chunk = self.chunks.as_mut().and_then(|c| c.settled(outcome));
        self.chunk_read(ex, id, chunk);
    }

    /// A read of the upstream body gave `chunk` (`None`: the body ended).
    fn chunk_read(&mut self, ex: &mut Exchange, id: AttemptId, chunk: Option<Result<Vec<u8>, ()>>) {
        let now = clock::now();
        match chunk {
            Some(Ok(c)) => shared::with(|r| ex.on_upstream_chunk(id, Bytes::from(c), now, r)),
            Some(Err(())) => shared::with(|r| ex.on_upstream_end(id, BodyEnd::Failed, now, r)),
            None => shared::with(|r| ex.on_upstream_end(id, BodyEnd::Complete, now, r)),
        }
    }

    /// The call in progress failed.
    fn failed(&mut self, ex: &mut Exchange, error: &JsValue) {
        if let Some(call) = self.call.take() {
            let e = transport_error(&io::message(error));
            shared::with(|r| ex.on_transport_error(call.id, e, clock::now(), r));
        }
    }
}

/// [`Io::reader`], borrowing only what it needs.
fn reader_of<'a>(
    upstream: &Option<(AttemptId, JsResponse)>,
    chunks: &'a mut Option<reader::Reader>,
) -> Option<(AttemptId, &'a mut reader::Reader)> {
    let (id, resp) = upstream.as_ref()?;
    if chunks.is_none() {
        *chunks = resp.body().and_then(|b| reader::Reader::new(&b));
    }
    Some((*id, chunks.as_mut()?))
}

/// Why the loop stopped.
enum Exit {
    Respond(CoreResponse),
    /// A driven response ended (or its client went away).
    Ended,
}

type Sink = mpsc::Sender<worker::Result<Vec<u8>>>;

/// What the loop may need from the request that started it (absent once it runs behind a
/// driven response).
struct Origin<'a> {
    req: &'a JsRequest,
    declared: Option<u64>,
    ctx: &'a Context,
}

/// An exchange whose response has not begun; finished if dropped so (the platform cancelled
/// the request).
struct Unfinished<'a>(Option<Exchange>, &'a Context, &'a Env);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(ex) = self.0.as_mut() {
            finish_later(ex, self.1, self.2);
        }
    }
}

/// The loop's end for the request that started it: the response, or, for a driven one, its
/// head now and the loop going on behind it, feeding the body.
fn conclude(
    exit: Exit,
    mut ex: Exchange,
    mut io: Io,
    env: &Env,
    ctx: &Context,
) -> Result<JsResponse, JsValue> {
    let response = match exit {
        Exit::Respond(r) => r,
        Exit::Ended => CoreResponse::internal("a response ended before it began"),
    };
    if let CoreBody::Driven = response.body {
        let (tx, rx) = mpsc::channel(8);
        let env = env.clone();
        let status = response.status();
        let headers = http::to_text(&response.headers);
        // A timer wakes the task that first polled it: the loop's new task needs its own.
        io.timer = Timer::default();
        wasm_bindgen_futures::spawn_local(async move {
            let mut tx = tx;
            if let Exit::Respond(_) = run(&mut ex, &mut io, None, &env, Some(&mut tx), None).await {
                let err = worker::Error::RustError("a second response head".into());
                let _ = send_to(&mut tx, Err(err)).await;
            }
            if let Some(call) = finish(&mut ex) {
                // Before the body ends: the response keeps this task alive until then.
                let _ = limiter::apply(&env, &call).await;
            }
        });
        return match Response::from_stream(rx).map(|r| r.body().clone()) {
            Ok(worker::ResponseBody::Stream(body)) => {
                io::respond_stream(status, &headers, Some(body)).or_else(|_| internal_error())
            }
            _ => internal_error(),
        };
    }
    let upstream = io.upstream.take().map(|(_, r)| r);
    respond(response, ex, upstream, io.chunks.take(), env, ctx)
}

/// An action the core asked for that the JavaScript loop left to [`run`], with the router's
/// wake-up generation read before it was asked for.
type Pending = (Action, u64);

/// The core's loop: performs each action it asks for and reports the outcome.
async fn run(
    ex: &mut Exchange,
    io: &mut Io,
    origin: Option<&Origin<'_>>,
    env: &Env,
    mut sink: Option<&mut Sink>,
    mut first: Option<Pending>,
) -> Exit {
    loop {
        let (action, seen) = match first.take() {
            Some(pending) => pending,
            None => {
                let seen = shared::generation();
                (shared::with(|r| ex.poll_action(clock::now(), r)), seen)
            }
        };
        match action {
            Action::ReadBody { limit } => {
                let req = origin.map(|o| o.req);
                let whole = || match req {
                    Some(r) => r.array_buffer(),
                    None => Err(JsValue::UNDEFINED),
                };
                let source = body::Source {
                    whole: &whole,
                    stream: req.and_then(|r| r.body()),
                };
                let read = body::read_all(source, origin.and_then(|o| o.declared), limit);
                match until(&mut io.timer, ex.poll_timeout(), read).await {
                    Some(Ok(b)) => ex.on_body(Bytes::from(b), clock::now()),
                    Some(Err(e)) => ex.on_body_error(e, clock::now()),
                    None => timeout(ex),
                }
            }
            Action::Lookup { key, shared } => {
                let found = kv_cache::get(env, &key, shared).await;
                ex.on_lookup(found, clock::now());
            }
            Action::Limit(call) => {
                match until(&mut io.timer, ex.poll_timeout(), limiter::apply(env, &call)).await {
                    Some(reply) => shared::with(|r| ex.on_limit(reply, clock::now(), r)),
                    None => timeout(ex),
                }
            }
            Action::AwaitFlight => {
                match until(&mut io.timer, ex.poll_timeout(), shared::woken_since(seen)).await {
                    Some(()) => ex.on_wakeup(clock::now()),
                    None => timeout(ex),
                }
            }
            Action::Send(attempt) => {
                io.begin(ex, attempt);
                if io.call.is_some() {
                    await_call(ex, io).await;
                }
            }
            Action::AwaitResponse => await_call(ex, io).await,
            Action::ReadUpstreamChunk => {
                let Some((id, stream)) = reader_of(&io.upstream, &mut io.chunks) else {
                    timeout(ex);
                    continue;
                };
                // Safe to abandon at a timer: the stream keeps a read in progress.
                match until(&mut io.timer, ex.poll_timeout(), stream.next()).await {
                    Some(chunk) => io.chunk_read(ex, id, chunk),
                    None => timeout(ex),
                }
            }
            Action::Wait => {
                if let Some(at) = ex.poll_timeout() {
                    Delay::from(at.remaining(clock::now().instant)).await;
                }
                timeout(ex);
            }
            Action::ReadUpstreamBody { limit } => {
                let resp = io.upstream.take().map(|(_, r)| r);
                let declared = io.upstream_len;
                let whole = || match &resp {
                    Some(r) => r.array_buffer(),
                    None => Err(JsValue::UNDEFINED),
                };
                let source = body::Source {
                    whole: &whole,
                    stream: resp.as_ref().and_then(|r| r.body()),
                };
                let read = body::read_all(source, declared, limit);
                match until(&mut io.timer, ex.poll_timeout(), read).await {
                    Some(Ok(b)) => {
                        shared::with(|r| ex.on_upstream_body(Bytes::from(b), clock::now(), r))
                    }
                    Some(Err(e)) => shared::with(|r| ex.on_upstream_body_error(e, clock::now(), r)),
                    None => timeout(ex),
                }
            }
            Action::Store(store) => match origin {
                Some(o) => kv_cache::store_later(o.ctx, env, store),
                // Behind a driven response the loop itself is kept alive by the response.
                None => kv_cache::put(env.clone(), store).await,
            },
            Action::Emit(bytes) => {
                let Some(tx) = sink.as_deref_mut() else {
                    continue;
                };
                if send_to(tx, Ok(Vec::from(bytes))).await.is_err() {
                    // The client went away.
                    return Exit::Ended;
                }
            }
            Action::End { abort } => {
                if let (true, Some(tx)) = (abort, sink.as_deref_mut()) {
                    let err =
                        worker::Error::RustError("the upstream's response was cut off".into());
                    let _ = send_to(tx, Err(err)).await;
                }
                return Exit::Ended;
            }
            Action::Respond(response) => return Exit::Respond(response),
        }
    }
}

/// Sends to a driven response's body, waiting while it is full; `Err` when the client is gone.
async fn send_to(tx: &mut Sink, item: worker::Result<Vec<u8>>) -> Result<(), ()> {
    futures_util::future::poll_fn(|cx| tx.poll_ready(cx))
        .await
        .map_err(|_| ())?;
    tx.start_send(item).map_err(|_| ())
}

fn timeout(ex: &mut Exchange) {
    shared::with(|r| ex.handle_timeout(clock::now(), r));
}

/// Waits for the call in progress (or the core's next deadline, which leaves it running).
async fn await_call(ex: &mut Exchange, io: &mut Io) {
    let Some(call) = io.call.as_mut() else {
        if let Some(at) = ex.poll_timeout() {
            Delay::from(at.remaining(clock::now().instant)).await;
        }
        return timeout(ex);
    };
    let future = call
        .future
        .get_or_insert_with(|| JsFuture::from(call.promise.clone()));
    match until(&mut io.timer, ex.poll_timeout(), future).await {
        Some(Ok(resp)) => match resp.dyn_into::<JsResponse>() {
            Ok(resp) => {
                let (status, headers) = (resp.status(), http::text_of(&resp.headers()));
                io.answered(ex, resp, status, &headers);
            }
            Err(e) => io.failed(ex, &e),
        },
        Some(Err(e)) => io.failed(ex, &e),
        None => timeout(ex),
    }
}

fn respond(
    response: CoreResponse,
    mut ex: Exchange,
    upstream: Option<JsResponse>,
    chunks: Option<reader::Reader>,
    env: &Env,
    ctx: &Context,
) -> Result<JsResponse, JsValue> {
    let status = response.status();
    let headers = http::to_text(&response.headers);
    let prefix = response.prefix;
    let built = match (response.body, upstream) {
        (CoreBody::Relay(mode @ (RelayMode::Observe | RelayMode::Filter)), Some(up)) => {
            let reader = chunks.or_else(|| up.body().and_then(|b| reader::Reader::new(&b)));
            match reader {
                Some(reader) => {
                    let store = response
                        .store_on_end
                        .then(|| kv_cache::store_when_complete(ctx, env));
                    let filter = mode == RelayMode::Filter;
                    let settle = ex.settles().then(|| limiter::settle_when_sent(ctx, env));
                    let body = stream::relay(reader, prefix, filter, ex, store, settle);
                    io::respond_stream(status, &headers, Some(body))
                }
                None => {
                    // The body was already taken: the core ends the stream as cut off.
                    let end = shared::with(|r| ex.on_end(BodyEnd::Failed, clock::now(), r));
                    finish_later(&mut ex, ctx, env);
                    io::respond_bytes(status, &headers, end.tail.as_deref().unwrap_or_default())
                }
            }
        }
        // An upstream error body goes to the platform untouched (no copy through wasm).
        (CoreBody::Relay(RelayMode::Untouched), Some(up)) => {
            finish_later(&mut ex, ctx, env);
            io::respond_stream(status, &headers, up.body())
        }
        (CoreBody::Relay(_) | CoreBody::Driven, _) => {
            finish_later(&mut ex, ctx, env);
            io::respond_stream(status, &headers, None)
        }
        // No body at all rather than an empty one: the platform refuses any body, even an
        // empty one, with 204, 205 and 304.
        (CoreBody::Full(bytes), _) if bytes.is_empty() => {
            finish_later(&mut ex, ctx, env);
            io::respond_stream(status, &headers, None)
        }
        (CoreBody::Full(bytes), _) => {
            finish_later(&mut ex, ctx, env);
            io::respond_bytes(status, &headers, &bytes)
        }
    };
    built.or_else(|_| internal_error())
}

/// Only if the platform refuses to build a response: still the OpenAI shape, never its HTML page.
/// (If even this is refused, the platform answers its own 500.)
fn internal_error() -> Result<JsResponse, JsValue> {
    let r = CoreResponse::internal("the response could not be built");
    let body = match &r.body {
        CoreBody::Full(b) => &b[..],
        CoreBody::Relay(_) | CoreBody::Driven => &[],
    };
    io::respond_bytes(r.status(), &http::to_text(&r.headers), body)
}

/// Ends an exchange and writes its log line; gives the settlement of its key's reservation to
/// make in the background, if any.
#[must_use]
fn finish(ex: &mut Exchange) -> Option<LimitCall> {
    if let Some(log) = shared::with(|r| ex.finish(clock::now(), r)) {
        write_log(&log);
    }
    ex.take_settlement()
}

/// [`finish`], settling under `wait_until`.
fn finish_later(ex: &mut Exchange, ctx: &Context, env: &Env) {
    if let Some(call) = finish(ex) {
        limiter::settle_later(ctx, env, call);
    }
}

/// The request's log line and, with an `ANALYTICS` binding, its data point: the same record.
pub(crate) fn write_log(log: &RequestLog) {
    worker::console_log!("{}", log.to_line());
    analytics::write(log);
}

/// What kind of failure a `fetch` met; the platform says so only in its message.
fn transport_error(message: &str) -> TransportError {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["refused"]) {
        TransportError::Refused
    } else if has(&["tls", "ssl", "certificate"]) {
        TransportError::Tls
    } else if has(&["dns", "resolve", "name not"]) {
        TransportError::Dns
    } else if has(&["timed out", "timeout"]) {
        TransportError::TimedOut
    } else if has(&["reset", "connection lost", "closed", "disconnected"]) {
        TransportError::Reset
    } else {
        TransportError::Other
    }
}

/// The core's deadline as one platform timer, kept from step to step: a plain request would
/// otherwise set and clear a timer at every step (reading its body, waiting for the upstream,
/// reading the answer), each a call into the platform.
#[derive(Default)]
struct Timer {
    /// When the armed timer fires.
    at: Option<Instant>,
    delay: Option<Delay>,
}

/// Runs `io` until the core's deadline: `None` when the deadline came first. A timer armed for
/// an earlier deadline is kept (when it fires, the wait goes on until this one).
async fn until<F: Future>(
    timer: &mut Timer,
    deadline: Option<Instant>,
    io: F,
) -> Option<F::Output> {
    let Some(at) = deadline else {
        return Some(io.await);
    };
    let mut io = pin!(io);
    loop {
        if timer.at.is_some_and(|armed| armed > at) {
            timer.delay = None;
        }
        if timer.delay.is_none() {
            timer.at = Some(at);
        }
        let delay = timer
            .delay
            .get_or_insert_with(|| Delay::from(at.remaining(clock::now().instant)));
        match select(io.as_mut(), delay).await {
            Either::Left((out, _)) => return Some(out),
            Either::Right(_) => {
                timer.delay = None;
                timer.at = None;
                if clock::now().instant >= at {
                    return None;
                }
            }
        }
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b
}

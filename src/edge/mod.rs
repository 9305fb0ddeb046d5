//! The edge runtime: the gateway as a Cloudflare Worker (wasm32 only).
//!
//! The loop that drives the core's [`Exchange`] for each request. Every branch is IO (read a
//! body, read or write KV, `fetch` the upstream, wait); every decision is the core's. Errors never
//! escape as the platform's bare 500: the core renders every failure in the OpenAI shape.

mod body;
mod clock;
mod http;
mod kv_cache;
mod location;
mod settings;
mod shared;
mod stream;

use std::future::Future;
use std::pin::pin;

use bytes::Bytes;
use futures_util::future::{select, Either};
use gateway_core::log::RequestLog;
use gateway_core::time::Instant;
use gateway_core::{
    Action, Attempt, BodyEnd, Exchange, RelayMode, RequestParts, Response as CoreResponse,
    ResponseBody as CoreBody, TransportError,
};
use worker::{
    event, AbortController, Context, Delay, Env, Fetch, Method, Request, RequestInit, Response,
    ResponseBody,
};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let now = clock::now();
    let headers = http::to_map(req.headers());
    let declared = http::content_length(&headers);
    let method = req.method().to_string();
    let path = req.path();
    let url = req.inner().url();
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(q));
    let parts = RequestParts {
        method: &method,
        path: &path,
        query,
        headers,
        location: location::of(&req),
    };
    let ex = match settings::gateway(&env) {
        Ok(gw) => Exchange::new(gw, parts, now, random16()),
        Err(e) => Exchange::refused("worker", e, parts, now, random16()),
    };
    Ok(drive(ex, &req, declared, &env, &ctx).await)
}

async fn drive(
    mut ex: Exchange,
    req: &Request,
    declared: Option<u64>,
    env: &Env,
    ctx: &Context,
) -> Response {
    let mut upstream: Option<Response> = None;
    loop {
        let seen = shared::generation();
        let action = shared::with(|r| ex.poll_action(clock::now(), r));
        match action {
            Action::ReadBody { limit } => {
                let read = body::read_all(req.inner().body(), declared, limit);
                match until(ex.poll_timeout(), read).await {
                    Some(Ok(b)) => ex.on_body(Bytes::from(b), clock::now()),
                    Some(Err(e)) => ex.on_body_error(e, clock::now()),
                    None => ex.handle_timeout(clock::now()),
                }
            }
            Action::Lookup { key, shared } => {
                let found = kv_cache::get(env, &key, shared).await;
                ex.on_lookup(found, clock::now());
            }
            Action::AwaitFlight => {
                match until(ex.poll_timeout(), shared::woken_since(seen)).await {
                    Some(()) => ex.on_wakeup(clock::now()),
                    None => ex.handle_timeout(clock::now()),
                }
            }
            Action::Send(attempt) => {
                let id = attempt.id;
                let controller = AbortController::default();
                match until(ex.poll_timeout(), send(attempt, &controller)).await {
                    Some(Ok(resp)) => {
                        let status = resp.status_code();
                        let headers = http::to_map(resp.headers());
                        upstream = Some(resp);
                        ex.on_response_head(id, status, headers, clock::now());
                    }
                    Some(Err(e)) => ex.on_transport_error(id, e, clock::now()),
                    None => {
                        controller.abort();
                        ex.handle_timeout(clock::now());
                    }
                }
            }
            Action::ReadUpstreamBody { limit } => {
                let resp = upstream.take();
                let declared = resp.as_ref().and_then(|r| {
                    r.headers()
                        .get("content-length")
                        .ok()
                        .flatten()
                        .and_then(|v| v.trim().parse().ok())
                });
                let stream = resp.and_then(|r| match r.into_parts().1 {
                    ResponseBody::Stream(s) => Some(s),
                    _ => None,
                });
                match until(ex.poll_timeout(), body::read_all(stream, declared, limit)).await {
                    Some(Ok(b)) => ex.on_upstream_body(Bytes::from(b), clock::now()),
                    Some(Err(e)) => ex.on_upstream_body_error(e, clock::now()),
                    None => ex.handle_timeout(clock::now()),
                }
            }
            Action::Store(store) => kv_cache::store_later(ctx, env, store),
            Action::Respond(response) => return respond(response, ex, upstream, env, ctx),
        }
    }
}

fn respond(
    response: CoreResponse,
    mut ex: Exchange,
    upstream: Option<Response>,
    env: &Env,
    ctx: &Context,
) -> Response {
    let status = response.status();
    let headers = http::from_map(&response.headers);
    let built = match (response.body, upstream) {
        (CoreBody::Relay(RelayMode::Observe), Some(mut up)) => match up.stream() {
            Ok(s) => {
                let store = response
                    .store_on_end
                    .then(|| kv_cache::store_when_complete(ctx, env));
                Response::from_stream(stream::Relay::new(s, ex, store))
            }
            Err(_) => {
                // The body was already taken: the core ends the stream as cut off.
                let end = shared::with(|r| ex.on_end(BodyEnd::Failed, clock::now(), r));
                finish(&mut ex);
                Response::from_bytes(end.tail.map(Vec::from).unwrap_or_default())
            }
        },
        // An upstream error body goes to the platform untouched (no copy through wasm).
        (CoreBody::Relay(RelayMode::Untouched), Some(up)) => {
            finish(&mut ex);
            Response::from_body(up.into_parts().1)
        }
        (CoreBody::Relay(_), None) => {
            finish(&mut ex);
            Response::empty()
        }
        // No body at all rather than an empty one: the platform refuses any body, even an
        // empty one, with 204, 205 and 304.
        (CoreBody::Full(bytes), _) if bytes.is_empty() => {
            finish(&mut ex);
            Response::empty()
        }
        (CoreBody::Full(bytes), _) => {
            finish(&mut ex);
            Response::from_bytes(Vec::from(bytes))
        }
    };
    match built {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => internal_error(),
    }
}

/// Only if the platform refuses to build a response: still the OpenAI shape, never its HTML page.
fn internal_error() -> Response {
    let r = CoreResponse::internal("the response could not be built");
    let status = r.status();
    let headers = http::from_map(&r.headers);
    let body = match r.body {
        CoreBody::Full(b) => Vec::from(b),
        CoreBody::Relay(_) => Vec::new(),
    };
    match Response::from_bytes(body) {
        Ok(resp) => resp.with_status(status).with_headers(headers),
        Err(_) => Response::builder().with_status(500).empty(),
    }
}

fn finish(ex: &mut Exchange) {
    if let Some(log) = shared::with(|r| ex.finish(clock::now(), r)) {
        write_log(&log);
    }
}

pub(crate) fn write_log(log: &RequestLog) {
    worker::console_log!("{}", log.to_line());
}

async fn send(attempt: Attempt, controller: &AbortController) -> Result<Response, TransportError> {
    let mut init = RequestInit::new();
    init.with_method(Method::from(attempt.method.to_string()))
        .with_headers(http::from_map(&attempt.headers));
    if !attempt.body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(&attempt.body[..]).into()));
    }
    let request = Request::new_with_init(&attempt.url, &init).map_err(|_| TransportError::Other)?;
    Fetch::Request(request)
        .send_with_signal(&controller.signal())
        .await
        .map_err(|e| transport_error(&e.to_string()))
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

/// Runs `io` until the core's deadline: `None` when the deadline came first.
async fn until<F: Future>(deadline: Option<Instant>, io: F) -> Option<F::Output> {
    let Some(at) = deadline else {
        return Some(io.await);
    };
    let wait = at.remaining(clock::now().instant);
    match select(pin!(io), Delay::from(wait)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b
}

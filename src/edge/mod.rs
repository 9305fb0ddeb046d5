//! The edge runtime: the gateway as a Cloudflare Worker (wasm32 only).
//!
//! A thin adapter: it converts requests and responses, calls upstreams with `Fetch`, reads env
//! bindings, and asks the core ([`crate::Gateway`]) for every decision. Errors never escape as
//! the platform's bare 500: everything becomes an OpenAI-shaped response.

mod body;
mod kv_cache;
mod location;
mod settings;
mod stream;

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use worker::{
    event, AbortController, Context, Delay, Env, Fetch, Headers, Method, Request, RequestInit,
    Response, ResponseBody,
};

use crate::cache::{self, CacheLookup, CachePlan, CacheStatus};
use crate::error::GatewayError;
use crate::gateway::{Forward, Plan, RequestHead, ResponseMode};
use crate::headers;
use crate::log::{elapsed_ms, format_time, RequestLog};
use crate::request_id;
use crate::Gateway;

use self::stream::{EdgeLog, TappedStream};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let start = js_sys::Date::now();
    let request_id = request_id::choose(
        req.headers()
            .get(headers::REQUEST_ID)
            .ok()
            .flatten()
            .as_deref(),
        random16(),
    );
    let location = location::of(&req);
    let mut log = RequestLog {
        time: format_time(start.max(0.0) as u64),
        request_id,
        runtime: "worker",
        method: req.method().to_string(),
        path: req.path().chars().take(200).collect(),
        client_location: location,
        ..Default::default()
    };

    let outcome = match settings::gateway(&env) {
        Ok(gw) => {
            log.region = gw.settings().region.clone();
            let io = Io {
                env: &env,
                ctx: &ctx,
            };
            handle(&gw, &io, req, &mut log, start).await
        }
        Err(err) => Err(err),
    };

    let mut edge_log = EdgeLog::new(log, start);
    let response = match outcome {
        Ok(Outcome::Full {
            status,
            headers,
            body,
        }) => {
            edge_log.log.status = status;
            edge_log.log.bytes_out = body.len() as u64;
            drop(edge_log);
            Response::from_bytes(body).map(|r| r.with_status(status).with_headers(headers))
        }
        Ok(Outcome::Passed {
            status,
            headers,
            body,
        }) => {
            edge_log.log.status = status;
            edge_log.log.bytes_out = headers
                .get("content-length")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            drop(edge_log);
            Response::from_body(body).map(|r| r.with_status(status).with_headers(headers))
        }
        Ok(Outcome::Streamed {
            status,
            headers,
            body,
            store,
        }) => {
            edge_log.log.status = status;
            let tapped = TappedStream::new(body, edge_log, store);
            Response::from_stream(tapped).map(|r| r.with_status(status).with_headers(headers))
        }
        Err(err) => {
            edge_log.log.status = err.status();
            edge_log.log.error_code = err.code().map(str::to_string);
            let body = err.body();
            edge_log.log.bytes_out = body.len() as u64;
            let request_id = edge_log.log.request_id.clone();
            drop(edge_log);
            return Ok(error_response(&err, &request_id));
        }
    };
    match response {
        Ok(r) => Ok(r),
        Err(e) => Ok(error_response(
            &GatewayError::Internal {
                message: format!("could not build the response: {e}"),
            },
            "",
        )),
    }
}

fn error_response(err: &GatewayError, request_id: &str) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    for (k, v) in err.extra_headers() {
        let _ = headers.set(k, v);
    }
    if !request_id.is_empty() {
        let _ = headers.set(headers::REQUEST_ID, request_id);
    }
    match Response::from_bytes(err.body()) {
        Ok(r) => r.with_status(err.status()).with_headers(headers),
        // Building a byte response cannot realistically fail; if it does, an empty one with the
        // right status is still better than the platform's HTML error page.
        Err(_) => Response::empty()
            .map(|r| r.with_status(err.status()))
            .unwrap_or_else(|_| Response::builder().with_status(500).empty()),
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b
}

/// The platform handles the edge runtime does IO through.
struct Io<'a> {
    env: &'a Env,
    ctx: &'a Context,
}

enum Outcome {
    /// Bytes the gateway has in hand.
    Full {
        status: u16,
        headers: Headers,
        body: Vec<u8>,
    },
    /// The upstream's body handed to the platform untouched (no copy through wasm).
    Passed {
        status: u16,
        headers: Headers,
        body: ResponseBody,
    },
    /// An event stream, observed chunk by chunk on its way to the client.
    Streamed {
        status: u16,
        headers: Headers,
        body: worker::ByteStream,
        store: Option<stream::StreamStore>,
    },
}

async fn handle(
    gw: &Rc<Gateway>,
    io: &Io<'_>,
    req: Request,
    log: &mut RequestLog,
    start: f64,
) -> Result<Outcome, GatewayError> {
    let method = req.method().to_string();
    let path = req.path();
    let authorization = req.headers().get("authorization").ok().flatten();
    let content_type = req.headers().get("content-type").ok().flatten();
    let head = RequestHead {
        method: &method,
        path: &path,
        authorization: authorization.as_deref(),
        content_type: content_type.as_deref(),
    };
    let admitted = gw.admit(&head)?;
    log.client = admitted.client.as_ref().map(|c| c.0.clone());

    let body = if admitted.reads_body() {
        let declared = req
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok());
        gw.check_declared_length(declared)?;
        read_body(gw, &req, declared).await?
    } else {
        Vec::new()
    };
    log.bytes_in = body.len() as u64;

    let url = req.inner().url();
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(q));
    match gw.plan(&admitted, query, &body)? {
        Plan::Reply(reply) => {
            let headers = Headers::new();
            let _ = headers.set("content-type", reply.content_type);
            set_request_id(&headers, log);
            Ok(Outcome::Full {
                status: reply.status,
                headers,
                body: reply.body.to_vec(),
            })
        }
        Plan::Forward(forward) => {
            log.model = forward.model.clone();
            log.stream = forward.stream;
            let req_headers: Vec<(String, String)> = req.headers().entries().collect();
            let plan = gw.cache_plan(
                &admitted,
                &forward,
                req_headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            );
            let lookup = match plan {
                CachePlan::Bypass(_) => None,
                CachePlan::Use(lookup) => Some(lookup),
            };
            let status = if lookup.is_some() {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            };
            log.cache = Some(status.log_value());
            if let Some(lookup) = &lookup {
                let now = now_ms();
                if let Some(entry) = kv_cache::get(io.env, lookup, now).await {
                    log.cache = Some(CacheStatus::Hit.log_value());
                    let reply = lookup.hit_reply(&entry, now);
                    let headers = Headers::new();
                    let _ = headers.set("content-type", &reply.content_type);
                    for (name, value) in reply.cache_headers() {
                        let _ = headers.set(name, &value);
                    }
                    set_request_id(&headers, log);
                    return Ok(Outcome::Full {
                        status: reply.status,
                        headers,
                        body: reply.body.to_vec(),
                    });
                }
            }
            let mut outcome = call_upstream(
                gw,
                io,
                &req_headers,
                forward,
                body,
                lookup.as_ref(),
                log,
                start,
            )
            .await?;
            let (Outcome::Full { headers, .. }
            | Outcome::Passed { headers, .. }
            | Outcome::Streamed { headers, .. }) = &mut outcome;
            let _ = headers.set(cache::STATUS_HEADER, status.header_value());
            Ok(outcome)
        }
    }
}

fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

fn set_request_id(headers: &Headers, log: &RequestLog) {
    let _ = headers.set(headers::REQUEST_ID, &log.request_id);
}

/// Reads the client's body, failing with 413 past the limit and 408 past the body timeout.
async fn read_body(
    gw: &Gateway,
    req: &Request,
    declared: Option<u64>,
) -> Result<Vec<u8>, GatewayError> {
    let settings = gw.settings();
    let limit = settings.max_body_bytes;
    let read = body::read_all(req.inner().body(), declared, limit);
    let timeout = Delay::from(Duration::from_millis(settings.body_timeout_ms));
    match select(Box::pin(read), timeout).await {
        Either::Left((Ok(body), _)) => Ok(body),
        Either::Left((Err(body::ReadError::TooLarge), _)) => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Either::Left((Err(body::ReadError::Failed), _)) => Err(GatewayError::MalformedJson {
            detail: "the request body could not be read".into(),
        }),
        Either::Right(_) => Err(GatewayError::RequestTimeout),
    }
}

#[allow(clippy::too_many_arguments)]
async fn call_upstream(
    gw: &Gateway,
    io: &Io<'_>,
    req_headers: &[(String, String)],
    forward: Forward,
    body: Vec<u8>,
    lookup: Option<&CacheLookup>,
    log: &mut RequestLog,
    start: f64,
) -> Result<Outcome, GatewayError> {
    let up_headers = Headers::new();
    for (name, value) in req_headers {
        if headers::forward_to_upstream(name) {
            let _ = up_headers.append(name, value);
        }
    }
    if let Some(auth) = gw.upstream_authorization() {
        let _ = up_headers.set("authorization", auth);
    }
    let _ = up_headers.set("accept-encoding", "identity");
    set_request_id(&up_headers, log);

    let mut init = RequestInit::new();
    init.with_method(if forward.method == "GET" {
        Method::Get
    } else {
        Method::Post
    })
    .with_headers(up_headers);
    if forward.method != "GET" {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let upstream_req = Request::new_with_init(&forward.url, &init)
        .map_err(|_| GatewayError::UpstreamUnreachable)?;

    let settings = gw.settings();
    let controller = AbortController::default();
    let signal = controller.signal();
    let sent = js_sys::Date::now();
    let send = async move { Fetch::Request(upstream_req).send_with_signal(&signal).await };
    let timeout = Delay::from(Duration::from_millis(settings.upstream_timeout_ms));
    let mut upstream = match select(Box::pin(send), timeout).await {
        Either::Left((Ok(r), _)) => r,
        Either::Left((Err(_), _)) => return Err(GatewayError::UpstreamUnreachable),
        Either::Right(_) => {
            controller.abort();
            return Err(GatewayError::UpstreamTimeout);
        }
    };
    log.upstream_ms = Some(elapsed_ms(sent, js_sys::Date::now()));

    let status = upstream.status_code();
    let out = Headers::new();
    for (name, value) in upstream.headers().entries() {
        if headers::forward_to_client(&name) {
            let _ = out.append(&name, &value);
        }
    }
    if let Ok(Some(id)) = upstream.headers().get(headers::REQUEST_ID) {
        let _ = out.set(headers::UPSTREAM_REQUEST_ID, &id);
    }
    set_request_id(&out, log);

    let content_type = upstream.headers().get("content-type").ok().flatten();
    let cache_control = upstream.headers().get("cache-control").ok().flatten();
    match gw.response_mode(status, content_type.as_deref()) {
        ResponseMode::Stream => {
            let body = upstream
                .stream()
                .map_err(|_| GatewayError::UpstreamInvalidResponse)?;
            let store = lookup.and_then(|l| {
                let recorder =
                    l.stream_recorder(status, content_type.as_deref(), cache_control.as_deref())?;
                let sender = kv_cache::store_when_complete(io.ctx, io.env, l);
                Some(stream::StreamStore { recorder, sender })
            });
            Ok(Outcome::Streamed {
                status,
                headers: out,
                body,
                store,
            })
        }
        ResponseMode::PassThrough => {
            if let Ok(Some(len)) = upstream.headers().get("content-length") {
                let _ = out.set("content-length", &len);
            }
            let (_, body) = upstream.into_parts();
            Ok(Outcome::Passed {
                status,
                headers: out,
                body,
            })
        }
        ResponseMode::Buffered => {
            let limit = settings.max_upstream_response_bytes;
            let remaining = settings.upstream_timeout_ms as f64 - (js_sys::Date::now() - start);
            let declared = upstream
                .headers()
                .get("content-length")
                .ok()
                .flatten()
                .and_then(|v| v.trim().parse().ok());
            let stream = match upstream.into_parts().1 {
                ResponseBody::Stream(s) => Some(s),
                _ => None,
            };
            let read = async move {
                body::read_all(stream, declared, limit)
                    .await
                    .map_err(|_| GatewayError::UpstreamInvalidResponse)
            };
            let timeout = Delay::from(Duration::from_millis(remaining.max(1.0) as u64));
            let bytes = match select(Box::pin(read), timeout).await {
                Either::Left((result, _)) => result?,
                Either::Right(_) => return Err(GatewayError::UpstreamTimeout),
            };
            let usage = gw.check_buffered(&bytes)?;
            log.set_usage(usage);
            if let Some(l) = lookup {
                let shared = bytes::Bytes::from(bytes);
                if let Some(entry) = l.buffered_entry(
                    status,
                    content_type.as_deref(),
                    cache_control.as_deref(),
                    &shared,
                    now_ms(),
                ) {
                    kv_cache::store_later(io.ctx, io.env, l, entry);
                }
                // The entry was encoded (copied) already; this takes the buffer back without a copy.
                return Ok(Outcome::Full {
                    status,
                    headers: out,
                    body: Vec::from(shared),
                });
            }
            Ok(Outcome::Full {
                status,
                headers: out,
                body: bytes,
            })
        }
    }
}

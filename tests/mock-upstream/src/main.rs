//! mock-upstream: an OpenAI-compatible server for tests and benchmarks.
//!
//! `mock-upstream --port N --api-key K --name NAME [--host 127.0.0.1] [--delay-ms D]`
//!
//! `--delay-ms D` (default 0) delays every request except the `/__*` control endpoints by D ms
//! (a fixed network latency, e.g. for a region simulation).
//!
//! The request's model name selects the behaviour (anything after `@` is ignored, so tests can
//! use unique names and read their own call counts):
//!
//! | model                    | behaviour                                                        |
//! |--------------------------|------------------------------------------------------------------|
//! | anything else            | a deterministic answer derived from the input, with `usage`       |
//! | `mock-stream-{N}x{D}ms`  | when streamed: N content events, D ms apart                       |
//! | `mock-error-{STATUS}`    | that status with an OpenAI error body (429 adds `retry-after: 7`) |
//! | `mock-slow-{D}ms`        | waits D ms before the response headers                            |
//! | `mock-cutoff-{N}`        | streams N events, then drops the connection (no `[DONE]`)          |
//! | `mock-garbage`           | 200 with a truncated JSON body                                    |
//! | `mock-stream-error`      | streams 2 events, then an error event, then ends                  |
//! | `mock-hangup`            | closes the connection without answering                           |
//! | `mock-echo-headers`      | answers with the request headers it received, as JSON content     |
//! | `mock-json-always`       | a JSON answer even when a stream was asked for                    |
//! | `mock-status-{STATUS}`   | that status (200-999, odd ones included) with a small JSON body   |
//!
//! A model name ending in `-stamped` (before any `@`) behaves as without it, and every streamed
//! content chunk then carries `"mock_sent_unix_us"`: the wall-clock time (Unix microseconds) at
//! which the mock sent it, so that a client on the same machine can tell how long each event
//! took to reach it through a gateway (`bench/profile-worker.mjs --trace`).
//!
//! Request headers that shape the answer's `usage` (any model with a normal answer; the JSON
//! answer's and, with `stream_options.include_usage`, the usage chunk's; embeddings unchanged):
//!
//! | header                        | effect                                                     |
//! |-------------------------------|------------------------------------------------------------|
//! | `x-mock-cached-tokens: N`     | `usage.prompt_tokens_details: {"cached_tokens": N}`, N capped at `prompt_tokens` |
//! | `x-mock-reasoning-tokens: N`  | `usage.completion_tokens_details: {"reasoning_tokens": N}`; as OpenAI counts them, the N tokens are inside `completion_tokens` (the visible words + N) and `total_tokens` |
//!
//! A value that is not a whole number is ignored (as if the header were absent). Without these
//! headers `usage` is as before: `prompt_tokens`, `completion_tokens`, `total_tokens` only.
//!
//! Streams are OpenAI-shaped SSE, but every content chunk (the first one too) carries
//! `delta: {"role": "assistant", "content": "<text>"}`; there is no role-only first chunk.
//! They end with a `finish_reason: "stop"` chunk (`delta: {}`), a usage chunk when
//! `stream_options.include_usage` is set, and `data: [DONE]`.
//!
//! Whole-upstream faults make this mock misbehave for EVERY request until cleared, whatever the
//! model name. `POST /__fault` with a JSON object sets one (replacing the previous one; unknown
//! fields or wrong types → 400), `DELETE /__fault` clears it, `GET /__fault` shows it (`{}` when
//! none); all three answer with the current fault. Fields (all optional, combinable):
//!
//! | field                              | effect                                                  |
//! |------------------------------------|---------------------------------------------------------|
//! | `"status": N` (400-599)            | every chat/completions/embeddings request and `GET /v1/models` answers N with an OpenAI error body (type/code per status, e.g. 429 `rate_limit_error`/`rate_limit_exceeded`, 503 `server_error`/`service_unavailable`) |
//! | `"retry_after": "S"`               | with `status`: header `retry-after: S`, verbatim (seconds or an HTTP date) |
//! | `"retry_after_ms": N`              | with `status`: header `retry-after-ms: N`                |
//! | `"reset_requests": "1s"`           | with `status`: header `x-ratelimit-reset-requests`       |
//! | `"reset_tokens": "6m0s"`           | with `status`: header `x-ratelimit-reset-tokens`         |
//! | `"body_retry_after": N`            | with `status`: `"retry_after": N` inside the `error` object |
//! | `"insufficient_quota": true`       | 429 with type and code `insufficient_quota`, no retry headers |
//! | `"first_byte_delay_ms": N`         | waits N ms before the response headers                  |
//! | `"delay_ms": N`                    | waits N ms before handling (adds to the above and to `--delay-ms`) |
//! | `"hang": true`                     | never answers; the connection stays open until the client leaves |
//! | `"cut_after_events": N`            | streamed requests: the head and N content events (N may be 0), then the connection drops |
//! | `"error_event_before_content": true` | streamed: the head, a role-only chunk (`delta: {"role":"assistant","content":""}`), an error event (`code: "overloaded"`), end; no `[DONE]` |
//! | `"error_event_after_content": true`  | streamed: one content event (or `cut_after_events` of them), the error event, end |
//!
//! The retry fields without `status` are rejected. Order per request: the delays, then `hang`,
//! then `status` (before the key is checked), then the normal handling, where the stream fields
//! replace the model's behaviour for `stream: true` chat/completions requests (even
//! `mock-error-*`, `mock-status-*`, `mock-hangup`, `mock-garbage`, `mock-json-always`; only
//! `mock-slow-{D}ms` still waits and `mock-stream-{N}x{D}ms` still spaces the events D ms
//! apart); non-streamed requests keep their normal answers. With several stream fields,
//! `error_event_before_content` wins, then `error_event_after_content`, then the cut.
//!
//! `GET /__calls` reports call counts: `{"total": T, "models": {MODEL: n, …, "__models": m,
//! "__total": t}, "__models": m, "__total": t}`, where `__total` counts every request to the
//! chat/completions/embeddings endpoints and `__models` every `GET /v1/models` (faulted ones
//! included), and `total` is the sum of the per-key counts as before (without `__total`).
//! `GET /__last` answers with the JSON body of the last chat/completions/completions/embeddings
//! request received (whatever came of it: faulted, unauthorised and failing ones included; a
//! body that is not JSON as a JSON string of its text), or `{}` when none came since the start or
//! the last reset: tests read what the gateway sent upstream. `GET /__last?model=NAME` is the
//! same for the last request whose `model` was exactly NAME (`@` suffix included), so that
//! concurrent tests each see their own.
//! `POST /__reset` clears the counts, the last bodies and the fault. The `/__*` endpoints need no
//! API key.
//! Every response carries `x-mock-upstream: NAME`.

mod fault;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use fault::{Fault, StreamFault};

type Body = BoxBody<Bytes, std::io::Error>;

struct Mock {
    api_key: String,
    name: HeaderValue,
    calls: Mutex<BTreeMap<String, u64>>,
    /// Requests to the chat/completions/embeddings endpoints (`__total` in `/__calls`).
    total: AtomicU64,
    /// The whole-upstream fault, if any.
    fault: Mutex<Option<Fault>>,
    /// `--delay-ms`: a fixed delay for every non-control request.
    delay_ms: u64,
    /// The last inference request's body (`GET /__last`), and the last one per model name.
    last: Mutex<LastBodies>,
}

/// What `GET /__last` shows.
#[derive(Default)]
struct LastBodies {
    any: Option<Value>,
    by_model: BTreeMap<String, Value>,
}

#[derive(Debug, PartialEq)]
enum Behaviour {
    Normal,
    Stream { chunks: u32, delay_ms: u64 },
    Error(u16),
    Status(u16),
    Slow(u64),
    Cutoff(u32),
    Garbage,
    StreamError,
    Hangup,
    EchoHeaders,
    JsonAlways,
}

/// Whether the model name asks for send times in stream chunks (`-stamped`).
fn stamped(model: &str) -> bool {
    model.split('@').next().unwrap_or(model).ends_with(STAMPED)
}

const STAMPED: &str = "-stamped";

/// The wall clock in Unix microseconds.
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn behaviour(model: &str) -> Behaviour {
    let base = model.split('@').next().unwrap_or(model);
    let base = base.strip_suffix(STAMPED).unwrap_or(base);
    let num = |s: &str| s.parse::<u64>().ok();
    if let Some(rest) = base.strip_prefix("mock-stream-") {
        if rest == "error" {
            return Behaviour::StreamError;
        }
        if let Some((n, d)) = rest.trim_end_matches("ms").split_once('x') {
            if let (Some(n), Some(d)) = (num(n), num(d)) {
                return Behaviour::Stream {
                    chunks: n.min(100_000) as u32,
                    delay_ms: d,
                };
            }
        }
    }
    if let Some(code) = base.strip_prefix("mock-status-").and_then(num) {
        if (200..1000).contains(&code) {
            return Behaviour::Status(code as u16);
        }
    }
    if let Some(code) = base.strip_prefix("mock-error-").and_then(num) {
        if (400..600).contains(&code) {
            return Behaviour::Error(code as u16);
        }
    }
    if let Some(ms) = base
        .strip_prefix("mock-slow-")
        .and_then(|r| num(r.trim_end_matches("ms")))
    {
        return Behaviour::Slow(ms);
    }
    if let Some(n) = base.strip_prefix("mock-cutoff-").and_then(num) {
        return Behaviour::Cutoff(n as u32);
    }
    match base {
        "mock-garbage" => Behaviour::Garbage,
        "mock-hangup" => Behaviour::Hangup,
        "mock-echo-headers" => Behaviour::EchoHeaders,
        "mock-json-always" => Behaviour::JsonAlways,
        _ => Behaviour::Normal,
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn unauthorized() -> Response<Body> {
    openai_error(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided.",
        "invalid_request_error",
        "invalid_api_key",
    )
}

fn hash_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count().max(1) as u64
}

/// The deterministic answer: the same model and input always give the same text.
fn answer_text(model: &str, input: &Value) -> String {
    let input_text = input.to_string();
    let digest = hash_hex(&[model.as_bytes(), input_text.as_bytes()]);
    let last = match input {
        Value::Array(msgs) => msgs
            .last()
            .and_then(|m| m.get("content"))
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| c.to_string())
            })
            .unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let short: String = last.chars().take(60).collect();
    format!("Mock answer {digest} to: {short}")
}

fn sse_frame(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// How a stream ends.
enum Ending {
    /// The finish chunk, the usage chunk if asked for, `[DONE]`.
    Done,
    /// The connection drops (no `[DONE]`).
    Cut,
    /// This error event, then the end of the body (no `[DONE]`).
    Error(Value),
}

fn fault_error(status: u16, body: &Value, headers: &[fault::Header]) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, body);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    r
}

fn bad_fault(message: &str) -> Response<Body> {
    openai_error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        "invalid_fault",
    )
}

impl Mock {
    fn new(api_key: String, name: &str, delay_ms: u64) -> Mock {
        Mock {
            api_key,
            name: HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("mock")),
            calls: Mutex::new(BTreeMap::new()),
            total: AtomicU64::new(0),
            fault: Mutex::new(None),
            delay_ms,
            last: Mutex::new(LastBodies::default()),
        }
    }

    fn count(&self, key: &str) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry(key.to_string()).or_default() += 1;
        }
    }

    /// Notes an inference request's body for `GET /__last`.
    fn remember(&self, body: &[u8], parsed: Option<&Value>) {
        let shown = match parsed {
            Some(v) => v.clone(),
            None => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        if let Ok(mut last) = self.last.lock() {
            if let Some(model) = parsed.and_then(|v| v.get("model")).and_then(Value::as_str) {
                last.by_model.insert(model.to_string(), shown.clone());
            }
            last.any = Some(shown);
        }
    }

    /// `GET /__last` (`query`: the request's query string, if any).
    fn last_json(&self, query: Option<&str>) -> Value {
        let model = query.and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("model="))
                .map(percent_decode)
        });
        let Ok(last) = self.last.lock() else {
            return json!({});
        };
        let found = match model {
            Some(m) => last.by_model.get(&m).cloned(),
            None => last.any.clone(),
        };
        found.unwrap_or_else(|| json!({}))
    }

    fn fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    fn set_fault(&self, fault: Option<Fault>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    fn fault_json(&self) -> Value {
        self.fault()
            .map(|f| f.to_json())
            .unwrap_or_else(|| json!({}))
    }

    /// The fault's part that comes before the normal handling: the delays, `hang`, `status`.
    /// `Some` is the answer; `None` means carry on.
    async fn before(&self, fault: Option<&Fault>, model: Option<&str>) -> Option<Response<Body>> {
        let fault = fault?;
        let delay = fault.delay_total_ms();
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if fault.hang {
            // Never answer; hyper drops this future when the client goes away.
            std::future::pending::<()>().await;
        }
        let (status, body, headers) = fault.error_answer(model)?;
        Some(fault_error(status, &body, &headers))
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::io::Error> {
        let mut resp = self.clone().route(req).await?;
        resp.headers_mut()
            .insert("x-mock-upstream", self.name.clone());
        resp.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("mock-req-1"));
        Ok(resp)
    }

    async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::io::Error> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/__calls") => {
                let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
                let total: u64 = calls.values().sum();
                let all = self.total.load(Ordering::Relaxed);
                let models_probes = calls.get("__models").copied().unwrap_or(0);
                let mut models = serde_json::Map::new();
                for (k, v) in calls {
                    models.insert(k, json!(v));
                }
                models.insert("__models".into(), json!(models_probes));
                models.insert("__total".into(), json!(all));
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({"total": total, "models": models, "__total": all, "__models": models_probes}),
                ));
            }
            (Method::POST, "/__reset") => {
                if let Ok(mut c) = self.calls.lock() {
                    c.clear();
                }
                self.total.store(0, Ordering::Relaxed);
                if let Ok(mut last) = self.last.lock() {
                    *last = LastBodies::default();
                }
                self.set_fault(None);
                return Ok(json_response(StatusCode::OK, &json!({"reset": true})));
            }
            (Method::GET, "/__last") => {
                let shown = self.last_json(req.uri().query());
                return Ok(json_response(StatusCode::OK, &shown));
            }
            (Method::GET, "/__fault") => {
                return Ok(json_response(StatusCode::OK, &self.fault_json()));
            }
            (Method::DELETE, "/__fault") => {
                self.set_fault(None);
                return Ok(json_response(StatusCode::OK, &json!({})));
            }
            (Method::POST, "/__fault") => {
                let bytes = match req.into_body().collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => return Ok(bad_fault(&format!("cannot read the fault body: {e}"))),
                };
                return Ok(match Fault::parse(&bytes) {
                    Ok(f) => {
                        let shown = f.to_json();
                        self.set_fault(Some(f));
                        json_response(StatusCode::OK, &shown)
                    }
                    Err(e) => bad_fault(&e),
                });
            }
            _ => {}
        }

        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
        if req.method() == Method::GET && path == "/health" {
            return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})));
        }

        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v == format!("Bearer {}", self.api_key))
            .unwrap_or(false);
        let fault = self.fault();

        if req.method() == Method::GET && path == "/v1/models" {
            self.count("__models");
            if let Some(r) = self.before(fault.as_ref(), None).await {
                return Ok(r);
            }
            if !authorized {
                return Ok(unauthorized());
            }
            return Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": [
                    {"id": "mock-model", "object": "model", "created": 1700000000, "owned_by": "mock"},
                    {"id": "mock-embedding", "object": "model", "created": 1700000000, "owned_by": "mock"}
                ]}),
            ));
        }
        let kind = match path.as_str() {
            "/v1/chat/completions" => "chat",
            "/v1/completions" => "text",
            "/v1/embeddings" => "embedding",
            _ => {
                return Ok(openai_error(
                    StatusCode::NOT_FOUND,
                    "Unknown path",
                    "invalid_request_error",
                    "not_found",
                ));
            }
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        self.remember(&bytes, parsed.as_ref());
        let model = parsed
            .as_ref()
            .and_then(|r| r.get("model"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if parsed.is_some() {
            self.count(&model);
        } else {
            self.count("__invalid_json");
        }
        let fault_model = parsed.as_ref().map(|_| model.as_str());
        if let Some(r) = self.before(fault.as_ref(), fault_model).await {
            return Ok(r);
        }
        let Some(request) = parsed else {
            return Ok(openai_error(
                StatusCode::BAD_REQUEST,
                "Invalid JSON",
                "invalid_request_error",
                "invalid_json",
            ));
        };
        if !authorized {
            return Ok(unauthorized());
        }
        let behaviour = behaviour(&model);
        let stream_requested = request
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // A fault's stream shape replaces the model's for streamed chat/completions requests.
        let stream_fault = match (&fault, kind, stream_requested) {
            (Some(f), "chat" | "text", true) => f.stream_fault(),
            _ => None,
        };
        // An upstream that ignores `stream` and answers with one JSON document.
        let stream =
            stream_fault.is_some() || (behaviour != Behaviour::JsonAlways && stream_requested);
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        match behaviour {
            Behaviour::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ if stream_fault.is_some() => {}
            Behaviour::Error(code) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = openai_error(
                    status,
                    &format!("Mock upstream error {code}"),
                    if code >= 500 {
                        "server_error"
                    } else {
                        "requests"
                    },
                    &format!("mock_{code}"),
                );
                if code == 429 {
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from_static("7"));
                    r.headers_mut().insert(
                        "x-ratelimit-remaining-requests",
                        HeaderValue::from_static("0"),
                    );
                }
                return Ok(r);
            }
            Behaviour::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                return Ok(json_response(status, &json!({"status": code})));
            }
            Behaviour::Hangup => return Err(std::io::Error::other("mock hangup")),
            Behaviour::Garbage => {
                return Ok(full(
                    StatusCode::OK,
                    "application/json",
                    &b"{\"id\":\"chatcmpl-garbage\",\"choices\":[{\"mess"[..],
                ));
            }
            _ => {}
        }

        let input = match kind {
            "chat" => request.get("messages").cloned().unwrap_or(Value::Null),
            "text" => request.get("prompt").cloned().unwrap_or(Value::Null),
            _ => request.get("input").cloned().unwrap_or(Value::Null),
        };
        if kind == "embedding" {
            return Ok(embeddings(&model, &input));
        }
        let text = if behaviour == Behaviour::EchoHeaders {
            let mut seen = serde_json::Map::new();
            for (k, v) in parts.headers.iter() {
                let shown = if k == http::header::AUTHORIZATION {
                    if authorized {
                        "<the upstream key>".to_string()
                    } else {
                        "<another key>".to_string()
                    }
                } else {
                    v.to_str().unwrap_or("<binary>").to_string()
                };
                seen.insert(k.as_str().to_string(), Value::String(shown));
            }
            Value::Object(seen).to_string()
        } else {
            answer_text(&model, &input)
        };
        let usage = usage_of(
            words(&input.to_string()),
            words(&text),
            &UsageDetails::from_headers(&parts.headers),
        );
        let id = format!(
            "{}-mock-{}",
            if kind == "chat" { "chatcmpl" } else { "cmpl" },
            hash_hex(&[model.as_bytes(), text.as_bytes()])
        );

        if !stream {
            let body = if kind == "chat" {
                json!({"id": id, "object": "chat.completion", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
                       "usage": usage})
            } else {
                json!({"id": id, "object": "text_completion", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
                       "usage": usage})
            };
            return Ok(json_response(StatusCode::OK, &body));
        }

        let spacing_ms = match behaviour {
            Behaviour::Stream { delay_ms, .. } => delay_ms,
            _ => 0,
        };
        // (role-only first chunk, content pieces, ending)
        let (role_chunk, pieces, ending) = match stream_fault {
            Some(StreamFault::ErrorBeforeContent) => {
                (true, Vec::new(), Ending::Error(fault::stream_error_event()))
            }
            Some(StreamFault::ErrorAfterContent { events }) => (
                false,
                pieces_of(&text, events),
                Ending::Error(fault::stream_error_event()),
            ),
            Some(StreamFault::Cut { events }) => (false, pieces_of(&text, events), Ending::Cut),
            None => {
                let (chunks, ending) = match behaviour {
                    Behaviour::Stream { chunks, .. } => (chunks, Ending::Done),
                    Behaviour::Cutoff(n) => (n, Ending::Cut),
                    Behaviour::StreamError => (
                        2,
                        Ending::Error(
                            json!({"error": {"message": "Mock error inside the stream", "type": "server_error", "param": null, "code": "mock_stream_error"}}),
                        ),
                    ),
                    _ => (3, Ending::Done),
                };
                (false, split_text(&text, chunks.max(1) as usize), ending)
            }
        };
        let stamp = stamped(&model);
        let chunk = move |content: Option<&str>, finish: Option<&str>| -> Value {
            let mut v = if kind == "chat" {
                let delta = match content {
                    Some(c) => json!({"role": "assistant", "content": c}),
                    None => json!({}),
                };
                json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            } else {
                json!({"id": id, "object": "text_completion", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish}]})
            };
            // Made right before it is sent (the loop below builds each chunk when it is due).
            if stamp && content.is_some() {
                v["mock_sent_unix_us"] = json!(unix_us());
            }
            v
        };

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        tokio::spawn(async move {
            if role_chunk {
                // `delta: {"role": "assistant", "content": ""}` (chat) / `text: ""` (completions).
                if tx
                    .send(Ok(Frame::data(sse_frame(&chunk(Some(""), None)))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 && spacing_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(spacing_ms)).await;
                }
                if tx
                    .send(Ok(Frame::data(sse_frame(&chunk(Some(piece), None)))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            match ending {
                Ending::Cut => {
                    // Give the client time to see the head and events, then break the connection.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(Err(std::io::Error::other("mock cut-off"))).await;
                }
                Ending::Error(err) => {
                    let _ = tx.send(Ok(Frame::data(sse_frame(&err)))).await;
                }
                Ending::Done => {
                    let mut tail = sse_frame(&chunk(None, Some("stop"))).to_vec();
                    if include_usage {
                        let mut u = chunk(None, None);
                        u["choices"] = json!([]);
                        u["usage"] = usage;
                        tail.extend_from_slice(&sse_frame(&u));
                    }
                    tail.extend_from_slice(b"data: [DONE]\n\n");
                    let _ = tx.send(Ok(Frame::data(Bytes::from(tail)))).await;
                }
            }
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        Ok(r)
    }
}

/// What the `x-mock-cached-tokens` / `x-mock-reasoning-tokens` request headers asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct UsageDetails {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl UsageDetails {
    fn from_headers(headers: &http::HeaderMap) -> UsageDetails {
        let count = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        UsageDetails {
            cached_tokens: count("x-mock-cached-tokens"),
            reasoning_tokens: count("x-mock-reasoning-tokens"),
        }
    }
}

/// An answer's `usage`: reasoning tokens are counted inside `completion_tokens` and cached ones
/// inside `prompt_tokens`, as OpenAI does.
fn usage_of(prompt_tokens: u64, visible_tokens: u64, details: &UsageDetails) -> Value {
    let completion_tokens = visible_tokens + details.reasoning_tokens.unwrap_or(0);
    let mut u = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens});
    if let Some(n) = details.cached_tokens {
        u["prompt_tokens_details"] = json!({"cached_tokens": n.min(prompt_tokens)});
    }
    if let Some(n) = details.reasoning_tokens {
        u["completion_tokens_details"] = json!({"reasoning_tokens": n});
    }
    u
}

/// `%XX` escapes and `+` of a query value decoded (model names are plain, but `@` may come as
/// `%40`); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Exactly `n` pieces of `text` (none for 0), for a fault's content events.
fn pieces_of(text: &str, n: u32) -> Vec<String> {
    if n == 0 {
        Vec::new()
    } else {
        split_text(text, n as usize)
    }
}

fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let per = chars.len().div_ceil(n).max(1);
    let mut out: Vec<String> = chars.chunks(per).map(|c| c.iter().collect()).collect();
    while out.len() < n {
        out.push(String::new());
    }
    out
}

fn embeddings(model: &str, input: &Value) -> Response<Body> {
    let inputs: Vec<Value> = match input {
        Value::Array(a) if a.iter().all(Value::is_string) => a.clone(),
        other => vec![other.clone()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let digest = Sha256::digest(text.to_string().as_bytes());
            let vector: Vec<f64> = digest[..8].iter().map(|b| (*b as f64) / 255.0).collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let tokens = words(&input.to_string());
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Serves `mock` on `listener` until the process ends.
async fn serve(listener: TcpListener, mock: Arc<Mock>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mock = mock.clone();
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| mock.clone().handle(req)),
            )
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: mock-upstream --port N --api-key KEY --name NAME [--host 127.0.0.1] [--delay-ms 0]"
        );
        return;
    }
    let port: u16 = arg(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(9090);
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let api_key = arg(&args, "--api-key").unwrap_or_else(|| "mock-upstream-key".into());
    let name = arg(&args, "--name").unwrap_or_else(|| "mock".into());
    let delay_ms: u64 = match arg(&args, "--delay-ms").map(|d| d.parse()) {
        None => 0,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("mock-upstream: bad --delay-ms: {e}");
            std::process::exit(2);
        }
    };
    let mock = Arc::new(Mock::new(api_key, &name, delay_ms));
    let addr: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mock-upstream: bad address {host}:{port}: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-upstream: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("mock-upstream '{name}' listening on http://{local}");
    serve(listener, mock).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_select_behaviours() {
        assert_eq!(behaviour("gpt-4o"), Behaviour::Normal);
        assert_eq!(
            behaviour("mock-stream-5x200ms"),
            Behaviour::Stream {
                chunks: 5,
                delay_ms: 200
            }
        );
        assert_eq!(
            behaviour("mock-stream-5x200ms@test1"),
            Behaviour::Stream {
                chunks: 5,
                delay_ms: 200
            }
        );
        assert_eq!(
            behaviour("mock-stream-5x200ms-stamped@test1"),
            Behaviour::Stream {
                chunks: 5,
                delay_ms: 200
            }
        );
        assert!(stamped("mock-stream-5x200ms-stamped@test1"));
        assert!(!stamped("mock-stream-5x200ms@test-stamped"));
        assert!(!stamped("mock-stream-5x200ms"));
        assert_eq!(behaviour("mock-error-429"), Behaviour::Error(429));
        assert_eq!(behaviour("mock-slow-1500ms"), Behaviour::Slow(1500));
        assert_eq!(behaviour("mock-cutoff-2"), Behaviour::Cutoff(2));
        assert_eq!(behaviour("mock-stream-error"), Behaviour::StreamError);
    }

    #[test]
    fn answers_are_deterministic_and_depend_on_the_input() {
        let a = answer_text("m", &json!([{"role": "user", "content": "hi"}]));
        assert_eq!(
            a,
            answer_text("m", &json!([{"role": "user", "content": "hi"}]))
        );
        assert_ne!(
            a,
            answer_text("m", &json!([{"role": "user", "content": "ho"}]))
        );
    }

    #[test]
    fn text_splits_into_the_requested_number_of_pieces() {
        assert_eq!(split_text("abcdef", 3).len(), 3);
        assert_eq!(split_text("ab", 5).len(), 5);
        assert_eq!(split_text("abcdef", 3).concat(), "abcdef");
    }

    /// Starts a mock on a free port; returns its address.
    async fn start(delay_ms: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = Arc::new(Mock::new("k".into(), "a", delay_ms));
        tokio::spawn(serve(listener, mock));
        addr
    }

    /// One HTTP/1.1 request with `connection: close`; the raw response text, as far as the
    /// server sent it before closing (chunked bodies are left encoded).
    async fn raw(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
        raw_with(addr, method, path, &[], body).await
    }

    /// [`raw`] with extra request headers.
    async fn raw_with(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: mock\r\nauthorization: Bearer k\r\n{extra}\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => panic!("no answer within 5 s"),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_of(resp: &str) -> u16 {
        resp.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap()
    }

    fn header_of<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
        let head = resp.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json_of(resp: &str) -> Value {
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap()
    }

    /// The JSON of every `data:` line of a (chunked) SSE answer, and whether `[DONE]` came.
    fn events_of(resp: &str) -> (Vec<Value>, bool) {
        let mut done = false;
        let mut events = Vec::new();
        for line in resp.lines() {
            if let Some(d) = line.strip_prefix("data: ") {
                if d == "[DONE]" {
                    done = true;
                } else {
                    events.push(serde_json::from_str(d).unwrap());
                }
            }
        }
        (events, done)
    }

    const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#;
    const CHAT_STREAM: &str =
        r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hi there"}]}"#;

    #[tokio::test]
    async fn faults_apply_to_every_request_until_reset() {
        let addr = start(0).await;

        // Normal stream: every chunk carries role and content; it ends with [DONE].
        let r = raw(addr, "POST", "/v1/chat/completions", CHAT_STREAM).await;
        assert_eq!(status_of(&r), 200);
        let (events, done) = events_of(&r);
        assert!(done);
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        assert_ne!(events[0]["choices"][0]["delta"]["content"], "");

        let fault = r#"{"status":429,"retry_after":"3","retry_after_ms":3000,"reset_requests":"1s","reset_tokens":"6m0s","body_retry_after":5}"#;
        let r = raw(addr, "POST", "/__fault", fault).await;
        assert_eq!(status_of(&r), 200, "{r}");
        assert_eq!(json_of(&r)["status"], 429);
        assert_eq!(
            json_of(&raw(addr, "GET", "/__fault", "").await)["retry_after"],
            "3"
        );

        let r = raw(addr, "POST", "/v1/chat/completions", CHAT).await;
        assert_eq!(status_of(&r), 429);
        assert_eq!(header_of(&r, "retry-after"), Some("3"));
        assert_eq!(header_of(&r, "retry-after-ms"), Some("3000"));
        assert_eq!(header_of(&r, "x-ratelimit-reset-requests"), Some("1s"));
        assert_eq!(header_of(&r, "x-ratelimit-reset-tokens"), Some("6m0s"));
        assert_eq!(header_of(&r, "x-mock-upstream"), Some("a"));
        let e = &json_of(&r)["error"];
        assert_eq!(e["type"], "rate_limit_error");
        assert_eq!(e["message"], "Rate limit exceeded for model gpt-4.1");
        assert_eq!(e["retry_after"], 5);

        let r = raw(addr, "GET", "/v1/models", "").await;
        assert_eq!(status_of(&r), 429);
        let r = raw(
            addr,
            "POST",
            "/v1/embeddings",
            r#"{"model":"e","input":"x"}"#,
        )
        .await;
        assert_eq!(status_of(&r), 429);

        let calls = json_of(&raw(addr, "GET", "/__calls", "").await);
        assert_eq!(calls["__total"], 3, "{calls}");
        assert_eq!(calls["__models"], 1, "{calls}");
        assert_eq!(calls["models"]["__total"], 3, "{calls}");
        assert_eq!(calls["models"]["gpt-4.1"], 2, "{calls}");

        let r = raw(addr, "POST", "/__fault", r#"{"status":503,"bogus":1}"#).await;
        assert_eq!(status_of(&r), 400);
        assert!(json_of(&r)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus"));

        // Cut after 2 content events: no [DONE].
        raw(addr, "POST", "/__fault", r#"{"cut_after_events":2}"#).await;
        let r = raw(addr, "POST", "/v1/chat/completions", CHAT_STREAM).await;
        assert_eq!(status_of(&r), 200);
        assert_eq!(header_of(&r, "x-mock-upstream"), Some("a"));
        let (events, done) = events_of(&r);
        assert_eq!(events.len(), 2, "{r}");
        assert!(!done);
        // Cut after 0: the head, then nothing.
        raw(addr, "POST", "/__fault", r#"{"cut_after_events":0}"#).await;
        let r = raw(addr, "POST", "/v1/chat/completions", CHAT_STREAM).await;
        assert_eq!(status_of(&r), 200);
        assert_eq!(events_of(&r), (vec![], false));
        // A non-streamed request is not affected by the stream faults.
        assert_eq!(
            status_of(&raw(addr, "POST", "/v1/chat/completions", CHAT).await),
            200
        );

        raw(
            addr,
            "POST",
            "/__fault",
            r#"{"error_event_before_content":true}"#,
        )
        .await;
        let r = raw(addr, "POST", "/v1/chat/completions", CHAT_STREAM).await;
        assert_eq!(header_of(&r, "content-type"), Some("text/event-stream"));
        let (events, done) = events_of(&r);
        assert!(!done);
        assert_eq!(events.len(), 2, "{r}");
        assert_eq!(
            events[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(events[1]["error"]["code"], "overloaded");

        raw(
            addr,
            "POST",
            "/__fault",
            r#"{"error_event_after_content":true}"#,
        )
        .await;
        let r = raw(
            addr,
            "POST",
            "/v1/completions",
            r#"{"model":"m","prompt":"p","stream":true}"#,
        )
        .await;
        let (events, done) = events_of(&r);
        assert!(!done);
        assert_eq!(events.len(), 2, "{r}");
        assert_ne!(events[0]["choices"][0]["text"], "");
        assert_eq!(events[1]["error"]["type"], "server_error");

        raw(addr, "POST", "/__fault", r#"{"insufficient_quota":true}"#).await;
        let r = raw(addr, "POST", "/v1/chat/completions", CHAT).await;
        assert_eq!(status_of(&r), 429);
        assert_eq!(header_of(&r, "retry-after"), None);
        assert_eq!(json_of(&r)["error"]["code"], "insufficient_quota");

        let r = raw(addr, "DELETE", "/__fault", "").await;
        assert_eq!(json_of(&r), json!({}));
        assert_eq!(
            status_of(&raw(addr, "POST", "/v1/chat/completions", CHAT).await),
            200
        );

        raw(addr, "POST", "/__fault", r#"{"status":500}"#).await;
        raw(addr, "POST", "/__reset", "").await;
        assert_eq!(json_of(&raw(addr, "GET", "/__fault", "").await), json!({}));
        let calls = json_of(&raw(addr, "GET", "/__calls", "").await);
        assert_eq!(calls["__total"], 0);
        assert_eq!(status_of(&raw(addr, "GET", "/v1/models", "").await), 200);
    }

    #[tokio::test]
    async fn usage_headers_add_cached_and_reasoning_details() {
        let addr = start(0).await;
        // A prompt of a few words (the mock counts whitespace-separated words of the messages).
        const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"one two three four five"}]}"#;
        // Without the headers, usage is as it always was.
        let plain = json_of(&raw(addr, "POST", "/v1/chat/completions", CHAT).await);
        let u = plain["usage"].as_object().unwrap();
        assert_eq!(u.len(), 3, "{plain}");
        let prompt = u["prompt_tokens"].as_u64().unwrap();
        let visible = u["completion_tokens"].as_u64().unwrap();
        assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + visible);

        let headers = [
            ("x-mock-cached-tokens", "2"),
            ("x-mock-reasoning-tokens", "7"),
        ];
        let v = json_of(&raw_with(addr, "POST", "/v1/chat/completions", &headers, CHAT).await);
        assert_eq!(
            v["choices"], plain["choices"],
            "the visible answer does not change"
        );
        let u = &v["usage"];
        assert_eq!(u["prompt_tokens"], prompt);
        assert_eq!(u["prompt_tokens_details"], json!({"cached_tokens": 2}));
        // Reasoning tokens are inside completion_tokens, as OpenAI counts them.
        assert_eq!(u["completion_tokens"], visible + 7);
        assert_eq!(
            u["completion_tokens_details"],
            json!({"reasoning_tokens": 7})
        );
        assert_eq!(u["total_tokens"], prompt + visible + 7);

        // Cached tokens are capped at the prompt; each header works alone; junk is ignored.
        let v = json_of(
            &raw_with(
                addr,
                "POST",
                "/v1/chat/completions",
                &[("x-mock-cached-tokens", "100000")],
                CHAT,
            )
            .await,
        );
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], prompt);
        assert_eq!(v["usage"]["completion_tokens"], visible);
        assert!(v["usage"].get("completion_tokens_details").is_none(), "{v}");
        let v = json_of(
            &raw_with(
                addr,
                "POST",
                "/v1/chat/completions",
                &[("x-mock-reasoning-tokens", "lots")],
                CHAT,
            )
            .await,
        );
        assert_eq!(v["usage"], plain["usage"]);

        // Text completions too.
        let body = r#"{"model":"m","prompt":"once upon a time"}"#;
        let v = json_of(
            &raw_with(
                addr,
                "POST",
                "/v1/completions",
                &[("x-mock-reasoning-tokens", "3")],
                body,
            )
            .await,
        );
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"],
            3
        );
    }

    #[tokio::test]
    async fn stamped_streams_carry_each_content_chunks_send_time_and_others_do_not() {
        let addr = start(0).await;
        let body = |model: &str| {
            format!(
                r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"one two three four"}}]}}"#
            )
        };
        let before = unix_us();
        let r = raw(
            addr,
            "POST",
            "/v1/chat/completions",
            &body("mock-stream-3x30ms-stamped@t"),
        )
        .await;
        let after = unix_us();
        let (events, done) = events_of(&r);
        assert!(done);
        let sent: Vec<u64> = events
            .iter()
            .filter(|e| e["choices"][0]["delta"]["content"].is_string())
            .map(|e| e["mock_sent_unix_us"].as_u64().expect("a send time"))
            .collect();
        assert_eq!(sent.len(), 3, "{r}");
        assert!(
            sent.iter().all(|t| (before..=after).contains(t)),
            "{sent:?}"
        );
        // Paced as asked: 30 ms apart.
        assert!(sent.windows(2).all(|w| w[1] - w[0] >= 30_000), "{sent:?}");
        // The finish chunk has no content and no stamp; an unstamped stream has none at all.
        assert!(events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop"
                && e.get("mock_sent_unix_us").is_none()));
        let (plain, _) = events_of(
            &raw(
                addr,
                "POST",
                "/v1/chat/completions",
                &body("mock-stream-3x30ms@t"),
            )
            .await,
        );
        assert!(plain.iter().all(|e| e.get("mock_sent_unix_us").is_none()));
    }

    #[tokio::test]
    async fn usage_headers_shape_the_usage_chunk_of_streams_that_ask_for_it() {
        let addr = start(0).await;
        let headers = [
            ("x-mock-cached-tokens", "1"),
            ("x-mock-reasoning-tokens", "4"),
        ];
        let with_usage = r#"{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi there"}]}"#;
        let (events, done) =
            events_of(&raw_with(addr, "POST", "/v1/chat/completions", &headers, with_usage).await);
        assert!(done);
        let last = events.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        let u = &last["usage"];
        assert_eq!(u["prompt_tokens_details"], json!({"cached_tokens": 1}));
        assert_eq!(
            u["completion_tokens_details"],
            json!({"reasoning_tokens": 4})
        );
        let content: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(u["completion_tokens"], words(&content) + 4);
        assert_eq!(
            u["total_tokens"],
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
        // Without include_usage there is no usage chunk, headers or not: the same events as
        // without the headers.
        let r = raw_with(addr, "POST", "/v1/chat/completions", &headers, CHAT_STREAM).await;
        let (events, done) = events_of(&r);
        assert!(done);
        assert!(events.iter().all(|e| e.get("usage").is_none()), "{r}");
        assert_eq!(
            events_of(&raw(addr, "POST", "/v1/chat/completions", CHAT_STREAM).await),
            (events, true)
        );
    }

    #[tokio::test]
    async fn last_shows_the_last_request_body_per_model_until_reset() {
        let addr = start(0).await;
        assert_eq!(json_of(&raw(addr, "GET", "/__last", "").await), json!({}));
        raw(addr, "POST", "/v1/chat/completions", CHAT).await;
        let stream =
            r#"{"model":"other@x","stream":true,"messages":[{"role":"user","content":"a"}]}"#;
        raw(addr, "POST", "/v1/chat/completions", stream).await;
        let last = json_of(&raw(addr, "GET", "/__last", "").await);
        assert_eq!(last, serde_json::from_str::<Value>(stream).unwrap());
        let by_model = json_of(&raw(addr, "GET", "/__last?model=gpt-4.1", "").await);
        assert_eq!(by_model, serde_json::from_str::<Value>(CHAT).unwrap());
        let escaped = json_of(&raw(addr, "GET", "/__last?model=other%40x", "").await);
        assert_eq!(escaped["model"], "other@x");
        assert_eq!(
            json_of(&raw(addr, "GET", "/__last?model=nobody", "").await),
            json!({})
        );
        // Embeddings count too.
        let embed = r#"{"model":"e","input":"x"}"#;
        raw(addr, "POST", "/v1/embeddings", embed).await;
        assert_eq!(
            json_of(&raw(addr, "GET", "/__last", "").await)["input"],
            "x"
        );
        // A body that is not JSON is shown as a string.
        raw(addr, "POST", "/v1/chat/completions", "{nope").await;
        assert_eq!(
            json_of(&raw(addr, "GET", "/__last", "").await),
            json!("{nope")
        );
        // Other paths do not replace it; the reset clears it.
        raw(addr, "GET", "/v1/models", "").await;
        assert_eq!(
            json_of(&raw(addr, "GET", "/__last", "").await),
            json!("{nope")
        );
        raw(addr, "POST", "/__reset", "").await;
        assert_eq!(json_of(&raw(addr, "GET", "/__last", "").await), json!({}));
        assert_eq!(
            json_of(&raw(addr, "GET", "/__last?model=gpt-4.1", "").await),
            json!({})
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%40b+c"), "a@b c");
        assert_eq!(percent_decode("bad%4"), "bad%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[tokio::test]
    async fn delays_add_up_and_hang_never_answers() {
        let addr = start(30).await;
        raw(
            addr,
            "POST",
            "/__fault",
            r#"{"delay_ms":40,"first_byte_delay_ms":50}"#,
        )
        .await;
        let t = std::time::Instant::now();
        assert_eq!(status_of(&raw(addr, "GET", "/v1/models", "").await), 200);
        assert!(
            t.elapsed() >= Duration::from_millis(120),
            "{:?}",
            t.elapsed()
        );

        raw(addr, "POST", "/__fault", r#"{"hang":true}"#).await;
        let hung = tokio::time::timeout(
            Duration::from_millis(300),
            raw(addr, "POST", "/v1/chat/completions", CHAT),
        )
        .await;
        assert!(hung.is_err(), "a hanging mock answered");
        let calls = json_of(&raw(addr, "GET", "/__calls", "").await);
        assert_eq!(calls["__total"], 1, "{calls}");
    }
}

//! mock-upstream: an OpenAI-compatible server for tests and benchmarks.
//!
//! `mock-upstream --port N --api-key K --name NAME [--host 127.0.0.1]`
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
//! `GET /__calls` reports call counts per model; `POST /__reset` clears them. Every response
//! carries `x-mock-upstream: NAME`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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

type Body = BoxBody<Bytes, std::io::Error>;

struct Mock {
    api_key: String,
    name: HeaderValue,
    calls: Mutex<BTreeMap<String, u64>>,
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

fn behaviour(model: &str) -> Behaviour {
    let base = model.split('@').next().unwrap_or(model);
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

impl Mock {
    fn count(&self, key: &str) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry(key.to_string()).or_default() += 1;
        }
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
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({"total": total, "models": calls}),
                ));
            }
            (Method::POST, "/__reset") => {
                if let Ok(mut c) = self.calls.lock() {
                    c.clear();
                }
                return Ok(json_response(StatusCode::OK, &json!({"reset": true})));
            }
            (Method::GET, "/health") => {
                return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            _ => {}
        }

        let authorized = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v == format!("Bearer {}", self.api_key))
            .unwrap_or(false);

        if req.method() == Method::GET && path == "/v1/models" {
            self.count("__models");
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
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let request: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                self.count("__invalid_json");
                return Ok(openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid JSON",
                    "invalid_request_error",
                    "invalid_json",
                ));
            }
        };
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.count(&model);
        if !authorized {
            return Ok(unauthorized());
        }
        let behaviour = behaviour(&model);
        // An upstream that ignores `stream` and answers with one JSON document.
        let stream = behaviour != Behaviour::JsonAlways
            && request
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        match behaviour {
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
            Behaviour::Slow(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
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
        let prompt_tokens = words(&input.to_string());
        let completion_tokens = words(&text);
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
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

        let (chunks, delay_ms) = match behaviour {
            Behaviour::Stream { chunks, delay_ms } => (chunks, delay_ms),
            Behaviour::Cutoff(n) => (n, 0),
            Behaviour::StreamError => (2, 0),
            _ => (3, 0),
        };
        let pieces = split_text(&text, chunks.max(1) as usize);
        let chunk = move |content: Option<&str>, finish: Option<&str>| -> Value {
            if kind == "chat" {
                let delta = match content {
                    Some(c) => json!({"role": "assistant", "content": c}),
                    None => json!({}),
                };
                json!({"id": id, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            } else {
                json!({"id": id, "object": "text_completion", "created": 1700000000, "model": model,
                       "choices": [{"index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish}]})
            }
        };

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        tokio::spawn(async move {
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 && delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                if tx
                    .send(Ok(Frame::data(sse_frame(&chunk(Some(piece), None)))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            match behaviour {
                Behaviour::Cutoff(_) => {
                    // Give the client time to see the events, then break the connection.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tx.send(Err(std::io::Error::other("mock cut-off"))).await;
                    return;
                }
                Behaviour::StreamError => {
                    let err = json!({"error": {"message": "Mock error inside the stream", "type": "server_error", "param": null, "code": "mock_stream_error"}});
                    let _ = tx.send(Ok(Frame::data(sse_frame(&err)))).await;
                    return;
                }
                _ => {}
            }
            let mut tail = sse_frame(&chunk(None, Some("stop"))).to_vec();
            if include_usage {
                let mut u = chunk(None, None);
                u["choices"] = json!([]);
                u["usage"] = usage;
                tail.extend_from_slice(&sse_frame(&u));
            }
            tail.extend_from_slice(b"data: [DONE]\n\n");
            let _ = tx.send(Ok(Frame::data(Bytes::from(tail)))).await;
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: mock-upstream --port N --api-key KEY --name NAME [--host 127.0.0.1]");
        return;
    }
    let port: u16 = arg(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(9090);
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let api_key = arg(&args, "--api-key").unwrap_or_else(|| "mock-upstream-key".into());
    let name = arg(&args, "--name").unwrap_or_else(|| "mock".into());
    let mock = Arc::new(Mock {
        api_key,
        name: HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("mock")),
        calls: Mutex::new(BTreeMap::new()),
    });
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
}

//! One timed call: a chat completion, plain or streamed, and what the client saw of it.
//!
//! - ttft, plain: from just before the request is handed to the client (connecting, when no
//!   kept-alive connection is free, included) until the first non-empty chunk of the response
//!   body. The gateway buffers a plain answer to check and price it, so this is close to total.
//! - ttft, stream: until the first event with content (text, a tool call, reasoning, a refusal,
//!   a finish) has arrived whole; the events are read by the core's own observer
//!   (`gateway_core::sse::SseObserver`), so the definition is the one behind the gateway's logged
//!   `ttft_ms`, seen from the client's side of the network.
//! - total: until the end of the response body.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::sse::SseObserver;
use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::args::Mode;
use crate::driver::{transport_error, UpstreamClient};

/// A plain answer larger than this is refused rather than held (a probe asks for 16 tokens).
const PLAIN_LIMIT: usize = 16 << 20;
/// Of an error answer, only this much is read, for its message.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The end of a stream kept to quote its error event.
const STREAM_TAIL: usize = 8 << 10;

/// Why a call counts as failed: a stable `kind` for scripts and a `detail` for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `http_401`, `timeout`, `refused`, `reset`, `timed_out`, `tls`, `dns`, `other`,
    /// `body_error`, `invalid_answer`, `empty_body`, `too_large`, `not_a_stream`,
    /// `stream_error`, `no_content`, `stream_cut`.
    pub kind: String,
    pub detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

/// What one call gave. Times are kept for failed calls too (for the JSON samples), but only a
/// call without `error` enters the figures.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub status: Option<u16>,
    /// Until the response head.
    pub head: Option<Duration>,
    pub ttft: Option<Duration>,
    pub total: Option<Duration>,
    /// `x-gateway-upstream`: the upstream that answered.
    pub upstream: Option<String>,
    /// `x-gateway-attempts`.
    pub attempts: Option<u32>,
    /// `x-gateway-cache`: `BYPASS` expected; a `HIT` would mean the figure is not the upstream's.
    pub cache: Option<String>,
    /// `server-timing`: the gateway's own time and its wait on upstreams, as of the head.
    pub gateway_ms: Option<f64>,
    pub upstream_ms: Option<f64>,
    pub error: Option<Failure>,
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Everything a call needs; `headers` already hold the key, content type and cache control.
pub struct CallSpec<'a> {
    /// `{base}/v1/chat/completions`.
    pub endpoint: &'a str,
    pub headers: &'a HeaderMap,
    pub model: &'a str,
    pub region: Option<&'a HeaderValue>,
    pub mode: Mode,
    pub prompt: &'a str,
    pub max_tokens: u32,
    pub timeout: Duration,
    /// Sent as `x-request-id`, so the call can be found in the gateway's log.
    pub request_id: &'a str,
}

/// The request body: a one-message chat completion at temperature 1. The gateway caches only
/// temperature-0 answers (unless a model is opted in), so even without `no-store` nothing
/// would be answered from its cache; 1 is also the only value reasoning models accept.
pub fn body(model: &str, prompt: &str, mode: Mode, max_tokens: u32) -> Bytes {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 1,
        "stream": mode == Mode::Stream,
    });
    if max_tokens > 0 {
        if let Some(o) = b.as_object_mut() {
            o.insert("max_tokens".into(), json!(max_tokens));
        }
    }
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

/// Makes one call within `spec.timeout` (everything included) and reports it.
pub async fn call(client: &UpstreamClient, spec: &CallSpec<'_>) -> Sample {
    let mut s = Sample::default();
    let start = Instant::now();
    match tokio::time::timeout(spec.timeout, measure(client, spec, start, &mut s)).await {
        Ok(Ok(())) => {}
        Ok(Err(f)) => s.error = Some(f),
        Err(_) => {
            let stage = if s.status.is_some() {
                "the end of the body"
            } else {
                "an answer"
            };
            s.error = Some(Failure::new(
                "timeout",
                format!(
                    "no {stage} within {} s (--timeout-secs)",
                    spec.timeout.as_secs()
                ),
            ));
        }
    }
    s
}

async fn measure(
    client: &UpstreamClient,
    spec: &CallSpec<'_>,
    start: Instant,
    s: &mut Sample,
) -> Result<(), Failure> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(spec.endpoint)
        .header(
            ACCEPT,
            match spec.mode {
                Mode::Plain => "application/json",
                Mode::Stream => "text/event-stream",
            },
        )
        .header("x-request-id", spec.request_id);
    if let Some(h) = builder.headers_mut() {
        h.extend(spec.headers.clone());
        if let Some(r) = spec.region {
            h.insert(gateway_core::headers::PIN_REGION, r.clone());
        }
    }
    let request = builder
        .body(Full::new(body(
            spec.model,
            spec.prompt,
            spec.mode,
            spec.max_tokens,
        )))
        .map_err(|e| Failure::new("other", format!("cannot build the request: {e}")))?;

    let response = client
        .request(request)
        .await
        .map_err(|e| Failure::new(transport_error(&e).as_str(), innermost(&e)))?;
    s.head = Some(start.elapsed());
    let status = response.status();
    s.status = Some(status.as_u16());
    read_headers(response.headers(), s);
    let content_type = header(response.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
    let mut body = response.into_body();

    if !status.is_success() {
        let bytes = read_prefix(&mut body, ERROR_BODY_LIMIT).await;
        s.total = Some(start.elapsed());
        return Err(Failure::new(
            format!("http_{}", status.as_u16()),
            error_message(&bytes).unwrap_or_else(|| reason(status)),
        ));
    }
    match spec.mode {
        Mode::Plain => plain(&mut body, start, s).await,
        Mode::Stream => {
            if !content_type.starts_with("text/event-stream") {
                return Err(Failure::new(
                    "not_a_stream",
                    format!("asked for a stream, got '{content_type}'"),
                ));
            }
            stream(&mut body, start, s).await
        }
    }
}

async fn plain(body: &mut Incoming, start: Instant, s: &mut Sample) -> Result<(), Failure> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::new("body_error", innermost(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if s.ttft.is_none() {
            s.ttft = Some(start.elapsed());
        }
        if buf.len() + data.len() > PLAIN_LIMIT {
            return Err(Failure::new(
                "too_large",
                format!("the answer is over {} MiB", PLAIN_LIMIT >> 20),
            ));
        }
        buf.extend_from_slice(&data);
    }
    s.total = Some(start.elapsed());
    if buf.is_empty() {
        return Err(Failure::new("empty_body", "a 2xx answer without a body"));
    }
    match serde_json::from_slice::<Value>(&buf) {
        Ok(v) if v.get("choices").is_some_and(Value::is_array) => Ok(()),
        Ok(v) => Err(Failure::new(
            "invalid_answer",
            error_message(&buf).unwrap_or_else(|| {
                format!(
                    "a JSON answer without `choices`: {}",
                    clip(&v.to_string(), 120)
                )
            }),
        )),
        Err(e) => Err(Failure::new(
            "invalid_answer",
            format!("the answer is not JSON: {e}"),
        )),
    }
}

async fn stream(body: &mut Incoming, start: Instant, s: &mut Sample) -> Result<(), Failure> {
    let mut observer = SseObserver::new();
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::new("body_error", innermost(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        observer.observe(&data);
        if s.ttft.is_none() && observer.saw_content() {
            s.ttft = Some(start.elapsed());
        }
        tail.extend_from_slice(&data);
        if tail.len() > STREAM_TAIL {
            tail.drain(..tail.len() - STREAM_TAIL);
        }
    }
    s.total = Some(start.elapsed());
    if observer.saw_error() {
        return Err(Failure::new(
            "stream_error",
            stream_error(&tail).unwrap_or_else(|| "an error event in the stream".into()),
        ));
    }
    if s.ttft.is_none() {
        return Err(Failure::new(
            "no_content",
            "the stream ended without an event with content",
        ));
    }
    if !observer.saw_done() {
        return Err(Failure::new(
            "stream_cut",
            "the stream ended without `data: [DONE]`",
        ));
    }
    Ok(())
}

/// Reads at most about `limit` bytes of a body (an error answer, for its message).
async fn read_prefix(body: &mut Incoming, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    buf
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn read_headers(headers: &HeaderMap, s: &mut Sample) {
    use gateway_core::headers::{ATTEMPTS, SERVER_TIMING, UPSTREAM_NAME};
    s.upstream = header(headers, UPSTREAM_NAME).filter(|v| !v.is_empty());
    s.attempts = header(headers, ATTEMPTS).and_then(|v| v.parse().ok());
    s.cache = header(headers, gateway_core::cache::STATUS_HEADER);
    if let Some(t) = header(headers, SERVER_TIMING) {
        s.gateway_ms = server_timing(&t, "gateway");
        s.upstream_ms = server_timing(&t, "upstream");
    }
}

/// The `dur` of metric `name` in a `server-timing` value (`gateway;dur=1.2, upstream;dur=80`).
pub fn server_timing(value: &str, name: &str) -> Option<f64> {
    value.split(',').find_map(|metric| {
        let mut parts = metric.split(';').map(str::trim);
        if parts.next()? != name {
            return None;
        }
        parts
            .find_map(|p| p.strip_prefix("dur="))
            .and_then(|d| d.trim_matches('"').parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d >= 0.0)
    })
}

/// `code: message` of an OpenAI error body (`{"error": {"message", "code", ...}}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .unwrap_or("");
    let code = e
        .get("code")
        .and_then(Value::as_str)
        .or_else(|| e.get("type").and_then(Value::as_str));
    let text = match code {
        Some(c) if !message.is_empty() => format!("{c}: {message}"),
        Some(c) => c.to_string(),
        None if !message.is_empty() => message.to_string(),
        None => return None,
    };
    Some(clip(&text, 200))
}

/// The message of the last `data: {"error": ...}` event in the end of a stream.
pub fn stream_error(tail: &[u8]) -> Option<String> {
    tail.split(|b| *b == b'\n').rev().find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = line.strip_prefix(b"data:")?;
        let data = data.strip_prefix(b" ").unwrap_or(data);
        data.starts_with(b"{\"error\"")
            .then(|| error_message(data))
            .flatten()
    })
}

fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .map_or_else(|| format!("status {}", status.as_u16()), str::to_string)
}

/// The deepest cause of an error: "Connection refused (os error 111)" rather than "client
/// error (Connect)".
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    let mut depth = 0;
    while let Some(next) = last.source() {
        last = next;
        depth += 1;
    }
    let top = e.to_string();
    let deepest = last.to_string();
    if depth == 0 || deepest.is_empty() {
        top
    } else {
        format!("{top}: {deepest}")
    }
}

/// At most `max` characters, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_asks_for_a_short_uncached_answer() {
        let b: Value = serde_json::from_slice(&body("m", "Hi", Mode::Stream, 16)).unwrap();
        assert_eq!(
            b,
            json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                   "temperature": 1, "stream": true, "max_tokens": 16})
        );
        let b: Value = serde_json::from_slice(&body("m", "Hi", Mode::Plain, 0)).unwrap();
        assert_eq!(b["stream"], false);
        assert!(b.get("max_tokens").is_none());
    }

    #[test]
    fn server_timing_durations() {
        let v = "gateway;dur=1.5, upstream;dur=80";
        assert_eq!(server_timing(v, "gateway"), Some(1.5));
        assert_eq!(server_timing(v, "upstream"), Some(80.0));
        assert_eq!(server_timing(v, "cache"), None);
        assert_eq!(
            server_timing("gateway;desc=\"x\";dur=\"2\"", "gateway"),
            Some(2.0)
        );
        assert_eq!(server_timing("gateway;dur=NaN", "gateway"), None);
        assert_eq!(server_timing("", "gateway"), None);
    }

    #[test]
    fn error_messages_of_openai_bodies_and_streams() {
        let body = br#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(
            error_message(body).as_deref(),
            Some("invalid_api_key: Incorrect API key provided.")
        );
        assert_eq!(
            error_message(br#"{"error":{"message":"m","type":"server_error","code":null}}"#)
                .as_deref(),
            Some("server_error: m")
        );
        assert_eq!(
            error_message(br#"{"error":"plain"}"#).as_deref(),
            Some("plain")
        );
        assert_eq!(error_message(b"<html>"), None);
        assert_eq!(error_message(br#"{"choices":[]}"#), None);

        let tail = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"cut\",\"code\":\"upstream_stream_interrupted\"}}\r\n\r\n";
        assert_eq!(
            stream_error(tail).as_deref(),
            Some("upstream_stream_interrupted: cut")
        );
        assert_eq!(stream_error(b"data: [DONE]\n\n"), None);
    }

    #[test]
    fn clipping_counts_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("ééé", 2), "é…");
    }
}

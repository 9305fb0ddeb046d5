//! A small HTTP client for the cases, on hyper: whole responses, and event streams read frame by
//! frame with the arrival time of every event.
//!
//! Every response is checked for the upstream key: whatever a case tests, a response that
//! contains it fails.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::harness::UPSTREAM_KEY;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long any one request may take, body included. Generous: the slowest case waits ~1.5 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client without connection reuse: every request gets a fresh connection, so a case never
/// inherits a connection another case's request left in a strange state.
pub fn new_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// `GET url` → status (used while waiting for processes to start).
pub async fn get_status(http: &HttpClient, url: &str, timeout: Duration) -> Result<u16, String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, http.request(req)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Ok(Ok(r)) => {
            let status = r.status().as_u16();
            let _ = r.into_body().collect().await;
            Ok(status)
        }
    }
}

/// `GET url` → JSON body (for the mock's `/__calls`).
pub async fn get_json(http: &HttpClient, url: &str) -> Value {
    control(http, Method::GET, url, None).await
}

/// A request to a mock's control endpoint (`/__calls`, `/__fault`, `/__reset`) → its JSON
/// answer, which must be a 200.
pub async fn control(http: &HttpClient, method: Method, url: &str, body: Option<&Value>) -> Value {
    let mut req = Request::builder().method(method.clone()).uri(url);
    let bytes = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(v).expect("serialisable"))
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(bytes)).expect("valid request");
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, http.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e:?}"));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: body failed: {e:?}"))
        .to_bytes();
    assert_eq!(
        status,
        200,
        "{method} {url}: status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {url}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

/// A request being built. Authenticated with the first client key unless told otherwise.
pub struct Call {
    http: HttpClient,
    base: String,
    target: String,
    method: Method,
    path: String,
    authorization: Option<String>,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Call {
    pub fn new(
        http: HttpClient,
        base: &str,
        target: &str,
        method: Method,
        path: &str,
        key: &str,
    ) -> Call {
        Call {
            http,
            base: base.to_string(),
            target: target.to_string(),
            method,
            path: path.to_string(),
            authorization: Some(format!("Bearer {key}")),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Sends no `Authorization` header.
    pub fn no_auth(mut self) -> Call {
        self.authorization = None;
        self
    }

    /// `Authorization: Bearer <key>`.
    pub fn key(mut self, key: &str) -> Call {
        self.authorization = Some(format!("Bearer {key}"));
        self
    }

    /// A raw `Authorization` value.
    pub fn authorization(mut self, value: &str) -> Call {
        self.authorization = Some(value.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, v: &Value) -> Call {
        let body = serde_json::to_vec(v).expect("serialisable");
        self.header("content-type", "application/json").body(body)
    }

    /// A body as is, without adding a content type.
    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = body.into();
        self
    }

    fn label(&self) -> String {
        format!("[{}] {} {}", self.target, self.method, self.path)
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(format!("{}{}", self.base, self.path));
        if let Some(h) = req.headers_mut() {
            if let Some(a) = &self.authorization {
                h.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(a).expect("header value"),
                );
            }
            for (k, v) in &self.headers {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                    HeaderValue::from_str(v).expect("header value"),
                );
            }
        }
        req.body(Full::new(self.body.clone()))
            .expect("valid request")
    }

    /// Sends the request and reads the whole response.
    pub async fn send(self) -> Resp {
        let label = self.label();
        let start = Instant::now();
        let work = async {
            let resp = self
                .http
                .request(self.build())
                .await
                .map_err(|e| format!("request failed: {e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("status {} but the body failed: {e:?}", parts.status))?
                .to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("{label}: no complete response within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let resp = Resp {
            label,
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            elapsed: start.elapsed(),
        };
        assert_no_upstream_key(&resp.label, &resp.headers, &resp.body);
        resp
    }

    /// Sends the request and reads the response as an event stream, noting when each event
    /// arrived. A body that ends with a transport error is recorded, not a panic.
    pub async fn stream(self) -> Streamed {
        let label = self.label();
        let start = Instant::now();
        let deadline = start + REQUEST_TIMEOUT;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(self.build()))
            .await
            .unwrap_or_else(|_| panic!("{label}: no response head within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{label}: request failed: {e:?}"));
        let head_at = start.elapsed();
        let (parts, mut body) = resp.into_parts();
        let mut parser = SseParser::default();
        let mut raw = Vec::new();
        let mut body_error = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frame = match tokio::time::timeout(remaining, body.frame()).await {
                Err(_) => panic!(
                    "{label}: stream not finished within {REQUEST_TIMEOUT:?}; so far: {}",
                    String::from_utf8_lossy(&raw)
                ),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    body_error = Some(format!("{e:?}"));
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let at = start.elapsed();
            if let Ok(data) = frame.into_data() {
                raw.extend_from_slice(&data);
                parser.push(&data, at);
            }
        }
        assert_no_upstream_key(&label, &parts.headers, &raw);
        Streamed {
            label,
            status: parts.status.as_u16(),
            headers: parts.headers,
            head_at,
            events: parser.events,
            comments: parser.comments,
            raw: String::from_utf8_lossy(&raw).into_owned(),
            unterminated: String::from_utf8_lossy(&parser.pending).into_owned(),
            body_error,
        }
    }
}

fn assert_no_upstream_key(label: &str, headers: &HeaderMap, body: &[u8]) {
    for (name, value) in headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(UPSTREAM_KEY),
            "{label}: response header '{name}' contains the upstream key"
        );
    }
    assert!(
        !String::from_utf8_lossy(body).contains(UPSTREAM_KEY),
        "{label}: response body contains the upstream key"
    );
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A whole response.
pub struct Resp {
    /// `[target] METHOD /path`, for messages.
    pub label: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: status {}, body is not JSON ({e}): {}",
                self.label,
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status, showing the body when it differs.
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "{}: expected status {status}, got {}; body: {}",
            self.label,
            self.status,
            self.text()
        );
        self
    }
}

/// One server-sent event: its `data` lines joined, and when its last byte arrived.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub at: Duration,
    pub data: String,
}

impl SseEvent {
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// An SSE comment block (lines starting with `:`, such as `: keepalive`), and when it arrived.
#[derive(Debug, Clone)]
pub struct SseComment {
    pub at: Duration,
    /// The comment lines, each without its leading `:` and one space.
    pub text: String,
}

/// A response read as an event stream.
pub struct Streamed {
    pub label: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// When the response head arrived.
    pub head_at: Duration,
    pub events: Vec<SseEvent>,
    /// Blocks made only of comment lines, in order.
    pub comments: Vec<SseComment>,
    pub raw: String,
    /// Bytes after the last complete event (an event the stream never finished).
    pub unterminated: String,
    /// The transport error the body ended with, if it did not end cleanly.
    pub body_error: Option<String>,
}

impl Streamed {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn expect_status(&self, status: u16) -> &Streamed {
        assert_eq!(
            self.status, status,
            "{}: expected status {status}, got {}; body: {}",
            self.label, self.status, self.raw
        );
        self
    }

    pub fn expect_event_stream(&self) -> &Streamed {
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("text/event-stream"),
            "{}: content-type is '{ct}', expected text/event-stream",
            self.label
        );
        self
    }

    /// The concatenated `choices[].delta.content` of all chunks.
    pub fn content(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            if let Some(v) = e.json() {
                for c in v["choices"].as_array().into_iter().flatten() {
                    if let Some(s) = c["delta"]["content"].as_str() {
                        out.push_str(s);
                    }
                }
            }
        }
        out
    }
}

/// An incremental parser of `text/event-stream` bodies.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    events: Vec<SseEvent>,
    comments: Vec<SseComment>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8], at: Duration) {
        // CRLF and LF line ends are treated alike.
        self.pending
            .extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block[..end]).into_owned();
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                self.events.push(SseEvent {
                    at,
                    data: data.join("\n"),
                });
            } else {
                let comments: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix(':'))
                    .map(|c| c.strip_prefix(' ').unwrap_or(c))
                    .collect();
                if !comments.is_empty() {
                    self.comments.push(SseComment {
                        at,
                        text: comments.join("\n"),
                    });
                }
            }
        }
    }
}

//! One request, native: read what the core needs, ask it what to do, do the IO.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ai_edge_gateway::cache::{CacheStatus, STATUS_HEADER};
use ai_edge_gateway::error::GatewayError;
use ai_edge_gateway::gateway::{Forward, Plan, RequestHead, ResponseMode};
use ai_edge_gateway::headers;
use ai_edge_gateway::log::{format_time, RequestLog};
use ai_edge_gateway::request_id;
use ai_edge_gateway::Gateway;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::{GatewayBody, LogGuard};
use crate::cache::{self, Cache, Recording, Step};

type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Proxy {
    gateway: Arc<Gateway>,
    client: UpstreamClient,
    upstream_auth: Option<HeaderValue>,
    region: Option<String>,
    cache: Option<Arc<Cache>>,
}

/// What a successful request sends back, before the log guard is attached.
enum Outcome {
    Full {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Streamed {
        status: StatusCode,
        headers: HeaderMap,
        body: Incoming,
        observe_sse: bool,
        recording: Option<Box<Recording>>,
    },
}

fn upstream_client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// Request ids need uniqueness, not secrecy: a per-thread generator seeded once from the OS
// avoids a system call per request.
fn random16() -> [u8; 16] {
    fastrand::u128(..).to_le_bytes()
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Proxy {
    pub fn new(gateway: Arc<Gateway>) -> Proxy {
        let upstream_auth = gateway.upstream_authorization().and_then(|v| {
            let mut v = HeaderValue::from_str(v).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        let region = gateway.settings().region.clone();
        let cache = Cache::from_env(&gateway.settings().cache);
        Proxy {
            gateway,
            client: upstream_client(),
            upstream_auth,
            region,
            cache,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let request_id = request_id::choose(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            random16(),
        );
        let mut log = RequestLog {
            time: format_time(now_unix_ms()),
            request_id,
            runtime: self.gateway.runtime(),
            region: self.region.clone(),
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().chars().take(200).collect(),
            ..Default::default()
        };

        let outcome = self.run(&parts, body, &mut log).await;
        let request_id = HeaderValue::from_str(&log.request_id).ok();
        let cache_status = log.cache;
        let (status, mut headers, body) = match outcome {
            Ok(Outcome::Full {
                status,
                headers,
                body,
            }) => {
                log.status = status.as_u16();
                (
                    status,
                    headers,
                    GatewayBody::full(body, LogGuard { log, start }),
                )
            }
            Ok(Outcome::Streamed {
                status,
                headers,
                body,
                observe_sse,
                recording,
            }) => {
                log.status = status.as_u16();
                (
                    status,
                    headers,
                    GatewayBody::upstream(body, observe_sse, LogGuard { log, start })
                        .with_recording(recording),
                )
            }
            Err(err) => {
                log.status = err.status();
                log.error_code = err.code().map(str::to_string);
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                for (k, v) in err.extra_headers() {
                    headers.insert(*k, HeaderValue::from_static(v));
                }
                let status =
                    StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (
                    status,
                    headers,
                    GatewayBody::full(Bytes::from(err.body()), LogGuard { log, start }),
                )
            }
        };
        if let Some(id) = request_id {
            headers.insert(headers::REQUEST_ID, id);
        }
        if let Some(c) = cache_status {
            headers.insert(STATUS_HEADER, HeaderValue::from_static(cache_header(c)));
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    async fn run(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        log: &mut RequestLog,
    ) -> Result<Outcome, GatewayError> {
        let gw = &self.gateway;
        let head = RequestHead {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            authorization: header_str(&parts.headers, AUTHORIZATION),
            content_type: header_str(&parts.headers, CONTENT_TYPE),
        };
        let admitted = gw.admit(&head)?;
        log.client = admitted.client.as_ref().map(|c| c.0.clone());

        let body = if admitted.reads_body() {
            let declared = header_str(&parts.headers, CONTENT_LENGTH).and_then(|v| v.parse().ok());
            gw.check_declared_length(declared)?;
            self.read_body(body).await?
        } else {
            Bytes::new()
        };
        log.bytes_in = body.len() as u64;

        match gw.plan(&admitted, parts.uri.query(), &body)? {
            Plan::Reply(reply) => {
                let mut headers = HeaderMap::new();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
                Ok(Outcome::Full {
                    status: StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
                    headers,
                    body: reply.body,
                })
            }
            Plan::Forward(forward) => {
                log.model = forward.model.clone();
                log.stream = forward.stream;
                let request_headers: Vec<(&str, &[u8])> = parts
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes()))
                    .collect();
                let plan = gw.cache_plan(&admitted, &forward, request_headers.iter().copied());
                let wait = Duration::from_millis(gw.settings().upstream_timeout_ms);
                let miss = match cache::begin(self.cache.as_ref(), plan, wait).await {
                    Step::Bypass => {
                        log.cache = Some(CacheStatus::Bypass.log_value());
                        None
                    }
                    Step::Hit(entry) => {
                        log.cache = Some(CacheStatus::Hit.log_value());
                        let mut headers = HeaderMap::new();
                        if let Ok(ct) = HeaderValue::from_str(&entry.content_type) {
                            headers.insert(CONTENT_TYPE, ct);
                        }
                        headers.insert(
                            http::header::AGE,
                            HeaderValue::from(entry.age_secs(now_unix_ms())),
                        );
                        return Ok(Outcome::Full {
                            status: StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK),
                            headers,
                            body: entry.body.clone(),
                        });
                    }
                    Step::Miss(miss) => {
                        log.cache = Some(CacheStatus::Miss.log_value());
                        Some(miss)
                    }
                };
                self.forward(parts, forward, body, log, miss).await
            }
        }
    }

    async fn read_body(&self, body: Incoming) -> Result<Bytes, GatewayError> {
        let settings = self.gateway.settings();
        let limit = settings.max_body_bytes;
        let read = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect();
        match tokio::time::timeout(Duration::from_millis(settings.body_timeout_ms), read).await {
            Err(_) => Err(GatewayError::RequestTimeout),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(GatewayError::PayloadTooLarge { limit })
            }
            Ok(Err(_)) => Err(GatewayError::MalformedJson {
                detail: "the request body could not be read".into(),
            }),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    async fn forward(
        &self,
        parts: &http::request::Parts,
        forward: Forward,
        body: Bytes,
        log: &mut RequestLog,
        miss: Option<cache::Miss>,
    ) -> Result<Outcome, GatewayError> {
        let gw = &self.gateway;
        let mut builder = Request::builder().method(forward.method).uri(&forward.url);
        if let Some(h) = builder.headers_mut() {
            for (name, value) in parts.headers.iter() {
                if headers::forward_to_upstream(name.as_str()) {
                    h.append(name.clone(), value.clone());
                }
            }
            if let Some(auth) = &self.upstream_auth {
                h.insert(AUTHORIZATION, auth.clone());
            }
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            if let Ok(id) = HeaderValue::from_str(&log.request_id) {
                h.insert(headers::REQUEST_ID, id);
            }
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|_| GatewayError::UpstreamUnreachable)?;

        let timeout = Duration::from_millis(gw.settings().upstream_timeout_ms);
        let sent = Instant::now();
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(_)) => return Err(GatewayError::UpstreamUnreachable),
            Ok(Ok(r)) => r,
        };
        log.upstream_ms = Some(ms_since(sent));

        let (up, up_body) = response.into_parts();
        let mut out = HeaderMap::with_capacity(up.headers.len() + 2);
        for (name, value) in up.headers.iter() {
            if headers::forward_to_client(name.as_str()) {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = up.headers.get(headers::REQUEST_ID) {
            out.insert(headers::UPSTREAM_REQUEST_ID, id.clone());
        }

        let content_type = header_str(&up.headers, CONTENT_TYPE);
        let cache_control = header_str(&up.headers, http::header::CACHE_CONTROL);
        match gw.response_mode(up.status.as_u16(), content_type) {
            ResponseMode::Stream => Ok(Outcome::Streamed {
                status: up.status,
                headers: out,
                body: up_body,
                observe_sse: true,
                recording: miss
                    .and_then(|m| m.recording(up.status.as_u16(), content_type, cache_control)),
            }),
            ResponseMode::PassThrough => Ok(Outcome::Streamed {
                status: up.status,
                headers: out,
                body: up_body,
                observe_sse: false,
                recording: None,
            }),
            ResponseMode::Buffered => {
                let limit = usize::try_from(gw.settings().max_upstream_response_bytes)
                    .unwrap_or(usize::MAX);
                let remaining = timeout.saturating_sub(sent.elapsed());
                let read = Limited::new(up_body, limit).collect();
                let bytes = match tokio::time::timeout(remaining, read).await {
                    Err(_) => return Err(GatewayError::UpstreamTimeout),
                    Ok(Err(_)) => return Err(GatewayError::UpstreamInvalidResponse),
                    Ok(Ok(c)) => c.to_bytes(),
                };
                let usage = gw.check_buffered(&bytes)?;
                log.set_usage(usage);
                if let Some(m) = miss {
                    m.complete_buffered(up.status.as_u16(), content_type, cache_control, &bytes)
                        .await;
                }
                out.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                Ok(Outcome::Full {
                    status: up.status,
                    headers: out,
                    body: bytes,
                })
            }
        }
    }
}

fn cache_header(log_value: &str) -> &'static str {
    [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::Bypass]
        .into_iter()
        .find(|c| c.log_value() == log_value)
        .unwrap_or(CacheStatus::Bypass)
        .header_value()
}

fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

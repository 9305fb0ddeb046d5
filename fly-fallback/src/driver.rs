//! One request, native: the loop that drives the core's [`Exchange`]. Every branch is IO (read
//! a body, look up or write the cache, call the upstream, wait); every decision is the core's.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::{
    Action, Attempt, BodyError, Exchange, Gateway, RequestParts, Response as CoreResponse,
    ResponseBody, TransportError, UNREAD_BODY_DRAIN_BYTES, UNREAD_BODY_LINGER,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::GatewayBody;
use crate::cache::Cache;
use crate::clock::{self, until};
use crate::shared::Shared;

type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Driver {
    gateway: Arc<Gateway>,
    client: UpstreamClient,
    cache: Option<Arc<Cache>>,
    shared: Arc<Shared>,
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

// Request ids need uniqueness, not secrecy: a per-thread generator seeded once from the OS
// avoids a system call per request.
fn random16() -> [u8; 16] {
    fastrand::u128(..).to_le_bytes()
}

/// Reads a whole body within `limit` bytes.
async fn read_whole<B>(body: B, limit: u64) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Failed),
    }
}

/// Reads and discards a request body the answer did not need, within the core's bounds, so the
/// connection closes after the client finished writing rather than with its data unread.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut left = UNREAD_BODY_DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(UNREAD_BODY_LINGER, read).await;
}

impl Driver {
    pub fn new(gateway: Arc<Gateway>, shared: Arc<Shared>) -> Driver {
        let cache = Cache::from_env(&gateway.settings().cache, shared.clone());
        Driver {
            gateway,
            client: upstream_client(),
            cache,
            shared,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<GatewayBody> {
        let (parts, body) = req.into_parts();
        let mut client_body = Some(body);
        let mut upstream_body: Option<Incoming> = None;
        let mut ex = Exchange::new(
            self.gateway.clone(),
            RequestParts {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: parts.headers,
                location: Default::default(),
            },
            clock::now(),
            random16(),
        );
        loop {
            let seen = self.shared.generation();
            let action = self.shared.with(|r| ex.poll_action(clock::now(), r));
            match action {
                Action::ReadBody { limit } => {
                    let read = async {
                        match client_body.take() {
                            Some(b) => read_whole(b, limit).await,
                            None => Ok(Bytes::new()),
                        }
                    };
                    match until(ex.poll_timeout(), read).await {
                        Some(Ok(b)) => ex.on_body(b, clock::now()),
                        Some(Err(e)) => ex.on_body_error(e, clock::now()),
                        None => ex.handle_timeout(clock::now()),
                    }
                }
                Action::Lookup { key, shared } => {
                    let found = match &self.cache {
                        Some(c) => c.get(&key, shared).await,
                        None => None,
                    };
                    ex.on_lookup(found, clock::now());
                }
                Action::AwaitFlight => {
                    match until(ex.poll_timeout(), self.shared.woken_since(seen)).await {
                        Some(()) => ex.on_wakeup(clock::now()),
                        None => ex.handle_timeout(clock::now()),
                    }
                }
                Action::Send(attempt) => {
                    let id = attempt.id;
                    match until(ex.poll_timeout(), self.send(attempt)).await {
                        Some(Ok(resp)) => {
                            let (head, body) = resp.into_parts();
                            upstream_body = Some(body);
                            ex.on_response_head(
                                id,
                                head.status.as_u16(),
                                head.headers,
                                clock::now(),
                            );
                        }
                        Some(Err(e)) => ex.on_transport_error(id, e, clock::now()),
                        None => ex.handle_timeout(clock::now()),
                    }
                }
                Action::ReadUpstreamBody { limit } => {
                    let read = async {
                        match upstream_body.take() {
                            Some(b) => read_whole(b, limit).await,
                            None => Err(BodyError::Failed),
                        }
                    };
                    match until(ex.poll_timeout(), read).await {
                        Some(Ok(b)) => ex.on_upstream_body(b, clock::now()),
                        Some(Err(e)) => ex.on_upstream_body_error(e, clock::now()),
                        None => ex.handle_timeout(clock::now()),
                    }
                }
                Action::Store(store) => {
                    if let Some(c) = &self.cache {
                        c.store(store).await;
                    }
                }
                Action::Respond(response) => {
                    if let Some(body) = client_body.take() {
                        tokio::spawn(drain(body));
                    }
                    return self.respond(response, ex, upstream_body.take());
                }
            }
        }
    }

    async fn send(&self, attempt: Attempt) -> Result<Response<Incoming>, TransportError> {
        let mut builder = Request::builder().method(attempt.method).uri(&attempt.url);
        if let Some(h) = builder.headers_mut() {
            *h = attempt.headers;
        }
        let request = builder
            .body(Full::new(attempt.body))
            .map_err(|_| TransportError::Other)?;
        self.client
            .request(request)
            .await
            .map_err(|e| transport_error(&e))
    }

    fn respond(
        &self,
        response: CoreResponse,
        ex: Exchange,
        upstream: Option<Incoming>,
    ) -> Response<GatewayBody> {
        let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = match (response.body, upstream) {
            (ResponseBody::Full(bytes), _) => {
                GatewayBody::full(bytes, ex, self.shared.clone(), self.cache.clone())
            }
            (ResponseBody::Relay(_), Some(up)) => {
                GatewayBody::relay(up, ex, self.shared.clone(), self.cache.clone())
            }
            (ResponseBody::Relay(_), None) => {
                GatewayBody::full(Bytes::new(), ex, self.shared.clone(), self.cache.clone())
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = response.headers;
        resp
    }
}

/// What kind of failure an upstream call met, from the error chain hyper and the OS give.
fn transport_error(e: &hyper_util::client::legacy::Error) -> TransportError {
    use std::error::Error;
    use std::io::ErrorKind;
    let mut source: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return TransportError::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return TransportError::Tls;
            }
            match io.kind() {
                ErrorKind::ConnectionRefused => return TransportError::Refused,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return TransportError::Reset,
                ErrorKind::TimedOut => return TransportError::TimedOut,
                _ => {}
            }
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return TransportError::Reset;
            }
            if h.is_timeout() {
                return TransportError::TimedOut;
            }
        }
        source = s.source();
    }
    // hyper-util's connector reports resolution failures only in its message.
    if e.is_connect() && format!("{e:?}").contains("dns error") {
        return TransportError::Dns;
    }
    TransportError::Other
}

//! One request, native: the loop that drives the core's [`Exchange`]. Every branch is IO (read
//! a body, look up or write the cache, call the upstream, wait); every decision is the core's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway_core::{
    Action, Attempt, AttemptId, BodyEnd, BodyError, Exchange, Gateway, RelayMode, RequestParts,
    Response as CoreResponse, ResponseBody, TransportError, UNREAD_BODY_DRAIN_BYTES,
    UNREAD_BODY_LINGER,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::body::{BoxError, GatewayBody};
use crate::cache::Cache;
use crate::clock::{self, until};
use crate::shared::Shared;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Driver {
    gateway: Arc<Gateway>,
    client: UpstreamClient,
    cache: Option<Arc<Cache>>,
    shared: Arc<Shared>,
}

pub fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(connect_timeout));
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

/// An exchange whose response has not begun; finished if dropped so.
struct Unfinished<'a> {
    ex: Option<Box<Exchange>>,
    shared: &'a Arc<Shared>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(ex) = self.ex.as_mut() {
            finish(ex, self.shared);
        }
    }
}

/// Ends an exchange and writes its log line.
pub fn finish(ex: &mut Exchange, shared: &Arc<Shared>) {
    let now = clock::now();
    if let Some(log) = shared.with(|r| ex.finish(now, r)) {
        let mut line = log.to_line();
        line.push('\n');
        crate::log_sink::write(line);
    }
    if let Some(call) = ex.take_settlement() {
        // The settlement must not wait for (or be lost with) the client: it runs on its own.
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = shared.limiter.apply(&call).await;
        });
    }
}

/// An upstream call in progress: kept across the core's timers (a keepalive must not cancel it).
type Call = Pin<Box<dyn Future<Output = Result<Response<Incoming>, TransportError>> + Send>>;

/// The IO a request holds between the core's actions.
struct Io {
    client_body: Option<Incoming>,
    call: Option<(AttemptId, Call)>,
    /// The current upstream body and the attempt it belongs to.
    upstream: Option<(AttemptId, Incoming)>,
}

/// Why the loop stopped.
enum Exit {
    Respond(CoreResponse),
    /// A driven response ended (or its client went away).
    Ended,
}

/// A driven response's body, fed by the loop running behind it.
type Sink = mpsc::Sender<Result<Bytes, BoxError>>;

/// The next data frame of a body (trailers are not forwarded). Safe to drop while waiting: no
/// frame is lost.
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, ()>> {
    loop {
        match body.frame().await {
            None => return None,
            Some(Err(_)) => return Some(Err(())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
        }
    }
}

impl Driver {
    /// A driver with its own upstream client: each worker thread has one, so an upstream
    /// connection is always driven by the thread whose requests use it. The cache (and its
    /// Redis) is shared.
    pub fn new(gateway: Arc<Gateway>, shared: Arc<Shared>, cache: Option<Arc<Cache>>) -> Driver {
        let connect_timeout = gateway.settings().routing.connect_timeout;
        Driver {
            gateway,
            client: upstream_client(connect_timeout),
            cache,
            shared,
        }
    }

    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<GatewayBody> {
        let (parts, body) = req.into_parts();
        let mut io = Io {
            client_body: Some(body),
            call: None,
            upstream: None,
        };
        // Boxed: the exchange (3 KB) then moves by pointer into the response body and through
        // hyper, instead of being copied at each move of the request's future and its body.
        let ex = Box::new(Exchange::new(
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
        ));
        // If the client goes away before the response (hyper drops this future), the guard
        // still ends the exchange: its upstream is released and its line logged.
        let mut guard = Unfinished {
            ex: Some(ex),
            shared: &self.shared,
        };
        let exit = match guard.ex.as_mut() {
            Some(ex) => self.run(ex, &mut io, None).await,
            None => Exit::Ended,
        };
        let Some(ex) = guard.ex.take() else {
            return head(
                CoreResponse::internal("the exchange was lost"),
                GatewayBody::empty(self.shared.clone()),
            );
        };
        let response = match exit {
            Exit::Respond(r) => r,
            Exit::Ended => CoreResponse::internal("a response ended before it began"),
        };
        if let Some(body) = io.client_body.take() {
            tokio::spawn(drain(body));
        }
        if let ResponseBody::Driven = response.body {
            // The head goes out now; the loop goes on behind it, feeding the body.
            let (tx, rx) = mpsc::channel(8);
            let this = self.clone();
            tokio::spawn(async move { this.run_driven(ex, io, tx).await });
            return head(response, GatewayBody::channel(rx, self.shared.clone()));
        }
        self.respond(response, ex, io.upstream.take().map(|(_, b)| b))
    }

    async fn run_driven(self: Arc<Self>, mut ex: Box<Exchange>, mut io: Io, tx: Sink) {
        if let Exit::Respond(_) = self.run(&mut ex, &mut io, Some(&tx)).await {
            let _ = tx.send(Err(BoxError::from("a second response head"))).await;
        }
        finish(&mut ex, &self.shared);
    }

    /// The core's loop: performs each action it asks for and reports the outcome.
    async fn run(&self, ex: &mut Exchange, io: &mut Io, sink: Option<&Sink>) -> Exit {
        loop {
            let seen = self.shared.generation();
            let action = self.shared.with(|r| ex.poll_action(clock::now(), r));
            match action {
                Action::ReadBody { limit } => {
                    let read = async {
                        match io.client_body.take() {
                            Some(b) => read_whole(b, limit).await,
                            None => Ok(Bytes::new()),
                        }
                    };
                    match until(ex.poll_timeout(), read).await {
                        Some(Ok(b)) => ex.on_body(b, clock::now()),
                        Some(Err(e)) => ex.on_body_error(e, clock::now()),
                        None => self.timeout(ex),
                    }
                }
                Action::Lookup { key, shared } => {
                    let found = match &self.cache {
                        Some(c) => c.get(&key, shared).await,
                        None => None,
                    };
                    ex.on_lookup(found, clock::now());
                }
                Action::Limit(call) => {
                    match until(ex.poll_timeout(), self.shared.limiter.apply(&call)).await {
                        Some(reply) => self.shared.with(|r| ex.on_limit(reply, clock::now(), r)),
                        None => self.timeout(ex),
                    }
                }
                Action::AwaitFlight => {
                    match until(ex.poll_timeout(), self.shared.woken_since(seen)).await {
                        Some(()) => ex.on_wakeup(clock::now()),
                        None => self.timeout(ex),
                    }
                }
                Action::Send(attempt) => {
                    // A new attempt replaces whatever the previous one left.
                    io.upstream = None;
                    let id = attempt.id;
                    let client = self.client.clone();
                    io.call = Some((id, Box::pin(send(client, attempt))));
                    self.await_call(ex, io).await;
                }
                Action::AwaitResponse => self.await_call(ex, io).await,
                Action::ReadUpstreamChunk => {
                    let Some((id, body)) = io.upstream.as_mut() else {
                        self.timeout(ex);
                        continue;
                    };
                    let id = *id;
                    match until(ex.poll_timeout(), next_data(body)).await {
                        Some(Some(Ok(chunk))) => self
                            .shared
                            .with(|r| ex.on_upstream_chunk(id, chunk, clock::now(), r)),
                        Some(Some(Err(()))) => self
                            .shared
                            .with(|r| ex.on_upstream_end(id, BodyEnd::Failed, clock::now(), r)),
                        Some(None) => self
                            .shared
                            .with(|r| ex.on_upstream_end(id, BodyEnd::Complete, clock::now(), r)),
                        None => self.timeout(ex),
                    }
                }
                Action::Wait => {
                    if let Some(at) = ex.poll_timeout() {
                        tokio::time::sleep_until(clock::to_tokio(at)).await;
                    }
                    self.timeout(ex);
                }
                Action::ReadUpstreamBody { limit } => {
                    let read = async {
                        match io.upstream.take() {
                            Some((_, b)) => read_whole(b, limit).await,
                            None => Err(BodyError::Failed),
                        }
                    };
                    match until(ex.poll_timeout(), read).await {
                        Some(Ok(b)) => self
                            .shared
                            .with(|r| ex.on_upstream_body(b, clock::now(), r)),
                        Some(Err(e)) => self
                            .shared
                            .with(|r| ex.on_upstream_body_error(e, clock::now(), r)),
                        None => self.timeout(ex),
                    }
                }
                Action::Store(store) => {
                    if let Some(c) = &self.cache {
                        c.store(store).await;
                    }
                }
                Action::Emit(bytes) => {
                    let Some(tx) = sink else { continue };
                    if tx.send(Ok(bytes)).await.is_err() {
                        // The client went away.
                        return Exit::Ended;
                    }
                }
                Action::End { abort } => {
                    if let (true, Some(tx)) = (abort, sink) {
                        let _ = tx
                            .send(Err(BoxError::from("the upstream's response was cut off")))
                            .await;
                    }
                    return Exit::Ended;
                }
                Action::Respond(response) => return Exit::Respond(response),
            }
        }
    }

    fn timeout(&self, ex: &mut Exchange) {
        self.shared.with(|r| ex.handle_timeout(clock::now(), r));
    }

    /// Waits for the call in progress (or the core's next deadline, which leaves it running).
    async fn await_call(&self, ex: &mut Exchange, io: &mut Io) {
        let Some((id, call)) = io.call.as_mut() else {
            if let Some(at) = ex.poll_timeout() {
                tokio::time::sleep_until(clock::to_tokio(at)).await;
            }
            return self.timeout(ex);
        };
        let id = *id;
        match until(ex.poll_timeout(), call.as_mut()).await {
            Some(Ok(resp)) => {
                io.call = None;
                let (head, body) = resp.into_parts();
                io.upstream = Some((id, body));
                self.shared.with(|r| {
                    ex.on_response_head(id, head.status.as_u16(), head.headers, clock::now(), r)
                });
            }
            Some(Err(e)) => {
                io.call = None;
                self.shared
                    .with(|r| ex.on_transport_error(id, e, clock::now(), r));
            }
            None => self.timeout(ex),
        }
    }

    fn respond(
        &self,
        response: CoreResponse,
        ex: Box<Exchange>,
        upstream: Option<Incoming>,
    ) -> Response<GatewayBody> {
        let prefix = response.prefix.clone();
        let body = match (&response.body, upstream) {
            (ResponseBody::Full(bytes), _) => {
                GatewayBody::full(bytes.clone(), ex, self.shared.clone(), self.cache.clone())
            }
            (ResponseBody::Relay(mode), Some(up)) => GatewayBody::relay(
                up,
                prefix,
                *mode == RelayMode::Filter,
                ex,
                self.shared.clone(),
                self.cache.clone(),
            ),
            (ResponseBody::Relay(_) | ResponseBody::Driven, None)
            | (ResponseBody::Driven, Some(_)) => {
                GatewayBody::full(Bytes::new(), ex, self.shared.clone(), self.cache.clone())
            }
        };
        head(response, body)
    }
}

fn head(response: CoreResponse, body: GatewayBody) -> Response<GatewayBody> {
    let status = StatusCode::from_u16(response.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = response.headers;
    resp
}

/// Makes an upstream call (also used by the probes).
pub async fn send(
    client: UpstreamClient,
    attempt: Attempt,
) -> Result<Response<Incoming>, TransportError> {
    let mut builder = Request::builder().method(attempt.method).uri(&attempt.url);
    if let Some(h) = builder.headers_mut() {
        *h = attempt.headers;
    }
    let request = builder
        .body(Full::new(attempt.body))
        .map_err(|_| TransportError::Other)?;
    client
        .request(request)
        .await
        .map_err(|e| transport_error(&e))
}

/// What kind of failure an upstream call met, from the error chain hyper and the OS give.
pub(crate) fn transport_error(e: &hyper_util::client::legacy::Error) -> TransportError {
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

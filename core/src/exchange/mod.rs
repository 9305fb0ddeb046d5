//! One request, from its head to its log line, as a state machine the runtime drives.
//!
//! In the style of quinn-proto's sans-IO connection: the exchange owns every decision and every
//! deadline; the runtime performs the IO it asks for and reports what happened, with the time.
//!
//! # The runtime's loop
//! ```text
//! let mut ex = Exchange::new(gateway, parts, now, random);
//! loop {
//!     match ex.poll_action(now, &mut router) {            // then: router.take_wakeup()
//!         Action::ReadBody { limit }          => race(read client body, ex.poll_timeout())
//!                                                -> ex.on_body / ex.on_body_error / ex.handle_timeout
//!         Action::Lookup { key, shared }      => ex.on_lookup(stored entry or None, now)
//!         Action::Limit(call)                 => race(apply call.op to the limiter store's
//!                                                object call.object, ex.poll_timeout())
//!                                                -> ex.on_limit(Ok(reply) / Err(()), now,
//!                                                   router)
//!                                                   / ex.handle_timeout
//!         Action::AwaitFlight                 => race(router wake-up, ex.poll_timeout())
//!                                                -> ex.on_wakeup / ex.handle_timeout
//!         Action::Send(attempt)               => drop any call in progress; start this one and
//!                                                keep it until answered: race(it, ex.poll_timeout())
//!                                                -> ex.on_response_head / ex.on_transport_error
//!                                                   / ex.handle_timeout
//!         Action::AwaitResponse               => race(the call in progress, ex.poll_timeout())
//!                                                (same reports as Send)
//!         Action::ReadUpstreamChunk           => race(next chunk of the upstream body,
//!                                                ex.poll_timeout()) -> ex.on_upstream_chunk /
//!                                                ex.on_upstream_end / ex.handle_timeout (a read
//!                                                in progress must survive the timer)
//!         Action::Wait                        => sleep until ex.poll_timeout(); ex.handle_timeout
//!         Action::Emit(bytes)                 => (a driven response) send bytes to the client
//!         Action::End { abort }               => (a driven response) end it; break
//!         Action::ReadUpstreamBody { limit }  => race(read whole body, ex.poll_timeout())
//!                                                -> ex.on_upstream_body / ex.on_upstream_body_error
//!                                                   / ex.handle_timeout
//!         Action::Store(store)                => write it in the background; report the shared
//!                                                store's outcome with router.store_result
//!         Action::Respond(response)           => send its head, then `prefix`, then its body;
//!                                                break, unless the body is `Driven`: then keep
//!                                                running this loop behind the response (Emit
//!                                                feeds its body) until End
//!     }
//! }
//! // A relayed body: hand each chunk to the client, then ex.on_chunk(&chunk, now) (observation
//! // never holds a chunk back); if ex.publish_due() then: ex.publish(&mut router) and
//! // router.take_wakeup() (requests follow this stream: wake them; never true for a stream
//! // nobody follows, whose relay never takes the router); at its end ex.on_end(..) gives a tail
//! // to send, a store to make, or an abort. When the response is over (or the client is gone): ex.finish(now, &mut router)
//! // gives the log record, once; then ex.take_settlement() gives a limiter call to make in the
//! // background (the correction of the key's reservation to the actual usage), if any.
//! ```
//! Every branch the runtime takes is IO; none is a decision.

mod accounting;
mod attempts;
mod decide;
mod follow;
mod limit;
mod relay;
mod response;

#[cfg(test)]
mod cost_tests;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod fanout_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

use crate::cache::{self, CacheEntry, CacheKey, CacheLookup, CacheStatus};
use crate::error::{ConfigError, GatewayError, TransportError};
use crate::gateway::{Admitted, Forward, Gateway, RequestHead, ResponseMode};
use crate::geo::ClientLocation;
use crate::headers;
use crate::limits::LimitCall;
use crate::log::AttemptLog;
use crate::log::{format_time, RequestLog};
use crate::request_id;
use crate::router::{FlightId, Router, Verdict};
use crate::sse::{HideUsage, SseObserver};
use crate::time::{millis_f64, Instant, Now};

use attempts::Held;
use decide::header_str;
pub use response::{RelayMode, Response, ResponseBody};

/// What the runtime knows of a request when it arrives.
#[derive(Debug)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: HeaderMap,
    pub location: ClientLocation,
}

/// Identifies one upstream attempt; reports about another attempt are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptId(pub u32);

/// An upstream call to make.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: AttemptId,
    /// Index of the upstream in the settings.
    pub upstream: usize,
    pub upstream_name: String,
    pub method: &'static str,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A cache entry to write, after (or while) the response is sent.
#[derive(Debug, Clone)]
pub struct Store {
    pub key: CacheKey,
    pub entry: Arc<CacheEntry>,
    /// Also write the shared store (Redis, KV); false while it is backing off.
    pub shared: bool,
    ttl_secs: u64,
}

impl Store {
    pub fn new(key: CacheKey, entry: Arc<CacheEntry>, shared: bool, ttl_secs: u64) -> Store {
        Store {
            key,
            entry,
            shared,
            ttl_secs,
        }
    }

    /// The TTL to give a store that expires entries itself, no lower than the store's own
    /// minimum (Workers KV refuses less than 60 s; the entry's own expiry still applies).
    pub fn storage_ttl_secs(&self, min_ttl_secs: u64) -> u64 {
        self.ttl_secs.max(min_ttl_secs).max(1)
    }
}

/// An entry as a store returned it.
#[derive(Debug, Clone)]
pub enum Found {
    /// Already decoded (an in-process cache).
    Entry(Arc<CacheEntry>),
    /// Stored bytes (Redis, KV), checked and decoded by the exchange.
    Encoded(Bytes),
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit the action named.
    TooLarge,
    /// The connection failed while reading.
    Failed,
}

/// How a relayed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The upstream finished its body.
    Complete,
    /// The upstream's body failed part-way.
    Failed,
}

/// What to do at the end of a relayed body.
#[derive(Debug, Default)]
pub struct EndOfRelay {
    /// Bytes to send after the upstream's last chunk (an error event for a cut-off stream).
    pub tail: Option<Bytes>,
    /// A recorded stream to store.
    pub store: Option<Store>,
    /// End the client's response with an error, so it sees the truncation (a body that is not
    /// an event stream has no way to say it was cut off).
    pub abort: bool,
}

/// The next thing the runtime must do.
#[derive(Debug)]
pub enum Action {
    /// Read the client's whole body, refusing more than `limit` bytes.
    ReadBody { limit: u64 },
    /// Look `key` up: the in-process cache, and the shared store when `shared`.
    Lookup { key: CacheKey, shared: bool },
    /// Apply `call.op` atomically to the limiter store's object `call.object`, then report the
    /// reply with [`Exchange::on_limit`] (`Err(())` when the store failed).
    Limit(LimitCall),
    /// Wait for [`Router::take_wakeup`] (another request's answer) or [`Exchange::poll_timeout`].
    AwaitFlight,
    /// Call an upstream (dropping any call still in progress).
    Send(Attempt),
    /// Keep waiting for the call in progress.
    AwaitResponse,
    /// Read the next chunk of the current upstream body.
    ReadUpstreamChunk,
    /// Wait until [`Exchange::poll_timeout`], then [`Exchange::handle_timeout`].
    Wait,
    /// A driven response: send these bytes to the client.
    Emit(Bytes),
    /// A driven response is over; `abort`: end it with an error (not an event stream).
    End { abort: bool },
    /// Read the upstream's whole body, refusing more than `limit` bytes.
    ReadUpstreamBody { limit: u64 },
    /// Write a cache entry in the background, then poll again.
    Store(Store),
    /// Send this response; the exchange's part in deciding is over.
    Respond(Response),
}

/// A request body the gateway answered without reading (a 413 decided from `content-length`, a
/// 401): the runtime reads and discards up to this much of it, for up to [`UNREAD_BODY_LINGER`],
/// after sending the answer, so a client that writes its whole body before reading (Python's
/// `http.client`, and so the OpenAI SDK) gets the answer instead of a broken pipe.
pub const UNREAD_BODY_DRAIN_BYTES: u64 = 32 * 1024 * 1024;
pub const UNREAD_BODY_LINGER: Duration = Duration::from_secs(5);

/// How early a runtime's timer may fire and still count (see [`Exchange::handle_timeout`]).
const TIMER_SLACK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Body,
    Flight,
    /// The current attempt's first byte (and, for a stream, first content).
    Upstream,
    /// Before another round of attempts.
    Backoff,
    /// Silence between two chunks of a driven stream.
    Idle,
    /// Silence of the stream a follower follows.
    Follow,
    /// The limiter's store.
    Limit,
}

/// A stream's events before the first one with content are held back (an error or a cut before
/// content is replaced by the next upstream's stream); beyond this much, they are let through.
const MAX_HELD_PREFIX: usize = 64 * 1024;

#[derive(Debug)]
enum Step {
    ReadBody,
    AwaitBody,
    Plan,
    Lookup,
    AwaitLookup,
    /// Reserve in the key's limits; with the cache entry that answers, for a hit.
    Limit(Option<Arc<CacheEntry>>),
    AwaitLimit(Option<Arc<CacheEntry>>),
    Join,
    AwaitFlight,
    CheckFlight,
    Send,
    AwaitHead,
    /// Reading a stream's events (before content; or all of them in a driven response).
    AwaitChunk,
    /// Waiting before another round of attempts.
    Backoff,
    ReadUpstream,
    AwaitUpstreamBody,
    Store(Store, Response),
    Respond(Response),
    Relaying,
    /// A driven response following another request's stream.
    Follow,
    /// A driven response's last steps.
    StoreThenEnd(Store),
    End {
        abort: bool,
    },
    Done,
}

/// What is known of the upstream's answer.
#[derive(Debug)]
struct UpstreamHead {
    status: u16,
    headers: HeaderMap,
}

/// The observation of a relayed body.
#[derive(Debug)]
struct Relay {
    /// Present for event streams.
    sse: Option<SseObserver>,
    /// Cuts the usage chunk the client did not ask for.
    hide: Option<HideUsage>,
    recorder: Option<cache::StreamRecorder>,
    ended: bool,
    /// When the upstream last sent something (the idle deadline runs from it).
    last_activity: Instant,
}

pub struct Exchange {
    gw: Arc<Gateway>,
    step: Step,
    log: RequestLog,
    started: Instant,
    request_id: HeaderValue,
    headers: HeaderMap,
    query: Option<String>,
    admitted: Option<Admitted>,
    body: Bytes,
    forward: Option<Forward>,
    cache_status: Option<CacheStatus>,
    lookup: Option<CacheLookup>,
    /// The flight this request leads, until it lands.
    leading: Option<(CacheKey, FlightId)>,
    /// The flight this request waits on.
    waiting: Option<(CacheKey, FlightId)>,
    /// The answer to share with the waiters when the response goes out.
    landing: Option<Arc<CacheEntry>>,
    /// The stream this request follows (another request's, live).
    following: Option<follow::Follow>,
    /// The relayed stream's followers must be woken ([`Exchange::publish`]).
    publish_due: bool,
    deadline: Option<(Instant, Timer)>,
    attempts: u32,
    sent_at: Option<Instant>,
    upstream: Option<UpstreamHead>,
    relay: Option<Relay>,
    /// Bytes of the relayed body reported so far.
    relay_counted: u64,
    finished: bool,
    /// State for choices (power of two, jitter), seeded from the runtime's random bytes.
    random: u64,
    /// Where the client is, for the nearest upstream.
    client_point: Option<(f64, f64)>,
    /// `x-gateway-region`.
    pin: Option<String>,
    /// Upstreams in the order to try; computed at the first attempt.
    order: Option<Vec<usize>>,
    next_in_order: usize,
    /// Rounds of attempts started after every upstream in the order was tried.
    rounds: u32,
    /// An upstream chosen for the attempt after a backoff.
    after_backoff: Option<usize>,
    /// No attempt starts after this.
    attempts_deadline: Option<Instant>,
    /// The upstream of the attempt in progress (in flight in the router), and whether its
    /// verdict was given.
    current: Option<(usize, bool)>,
    /// The headers sent upstream on every attempt (the client's, filtered).
    forward_headers: Option<HeaderMap>,
    /// The last upstream answer that may be given to the client if every attempt fails.
    held: Option<Held>,
    auth_failures: u32,
    last_failure: Option<GatewayError>,
    /// A stream's events before content.
    prefix: Vec<Bytes>,
    prefix_len: usize,
    /// The response head went out before the upstream was known (keepalives): the body is
    /// driven through [`Action::Emit`].
    committed: bool,
    commit_due: bool,
    keepalive_at: Option<Instant>,
    outbox: Option<Bytes>,
    /// A tier's models after the current one, tried when all of its upstreams fail.
    chain: Vec<String>,
    /// The attempt count when the current model of a tier took over: it gets one attempt even
    /// past `max_attempts`.
    model_floor: Option<u32>,
    /// The gateway asked the upstream for the usage chunk the client did not ask for: it is
    /// cut from what the client gets.
    hide_usage: bool,
    /// A stream's prompt, estimated, for a cost when no usage comes.
    prompt_estimate: u64,
    /// Time spent waiting on upstreams so far, and since when it is being spent now.
    upstream_busy: Duration,
    busy_since: Option<Instant>,
    /// The key's limits: what is being reserved, what was, and the headers it gives.
    limits: limit::Limits,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("step", &self.step)
            .field("request_id", &self.log.request_id)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Starts the exchange for a request head. `random` must be 16 bytes from the runtime's
    /// RNG (for a request id when the client sent none, and the choices between upstreams).
    pub fn new(gw: Arc<Gateway>, parts: RequestParts<'_>, now: Now, random: [u8; 16]) -> Exchange {
        let mut ex = Exchange::start(gw, &parts, now, random);
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let head = RequestHead {
            method: parts.method,
            path: parts.path,
            authorization: header(AUTHORIZATION.as_str()),
            content_type: header(CONTENT_TYPE.as_str()),
        };
        let declared = header(CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
        let admitted = match headers::too_large(&parts.headers) {
            Some((fields, bytes)) => Err(GatewayError::HeadersTooLarge { fields, bytes }),
            None => ex.gw.admit(&head),
        };
        match admitted {
            Err(e) => ex.fail(e),
            Ok(a) => {
                ex.log.key_id = a.client.as_ref().map(|c| c.0.clone());
                ex.limits.policy = a.policy.clone();
                let reads_body = a.reads_body();
                ex.admitted = Some(a);
                if reads_body {
                    match ex.gw.check_declared_length(declared) {
                        Ok(()) => ex.step = Step::ReadBody,
                        Err(e) => ex.fail(e),
                    }
                }
            }
        }
        ex.pin = header(headers::PIN_REGION)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.chars().take(64).collect());
        ex.client_point = attempts::client_point(ex.gw.settings(), &parts.location, &parts.headers);
        ex.headers = parts.headers;
        ex
    }

    /// The exchange for a request that arrives while the settings are invalid (a Worker reads
    /// them per isolate): answers 500 naming the setting, and logs like any other request.
    pub fn refused(
        runtime: &'static str,
        err: ConfigError,
        parts: RequestParts<'_>,
        now: Now,
        random: [u8; 16],
    ) -> Exchange {
        let gw = Arc::new(Gateway::unconfigured(runtime));
        let mut ex = Exchange::start(gw, &parts, now, random);
        ex.log.error_detail = Some(err.to_string());
        ex.fail(GatewayError::Misconfigured(err));
        ex
    }

    fn start(gw: Arc<Gateway>, parts: &RequestParts<'_>, now: Now, random: [u8; 16]) -> Exchange {
        let client_id = parts
            .headers
            .get(headers::REQUEST_ID)
            .and_then(|v| v.to_str().ok());
        let request_id = request_id::choose(client_id, random);
        let log = RequestLog {
            time: format_time(now.unix.as_millis()),
            runtime: gw.runtime(),
            region: gw.settings().region.clone(),
            client_location: parts.location.clone(),
            method: parts.method.to_string(),
            path: parts.path.chars().take(200).collect(),
            request_id: request_id.clone(),
            ..Default::default()
        };
        Exchange {
            // The id is visible ASCII by construction (request_id::choose).
            request_id: HeaderValue::from_str(&request_id)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            gw,
            step: Step::Plan,
            log,
            started: now.instant,
            headers: HeaderMap::new(),
            query: parts.query.filter(|q| !q.is_empty()).map(str::to_string),
            admitted: None,
            body: Bytes::new(),
            forward: None,
            cache_status: None,
            lookup: None,
            leading: None,
            waiting: None,
            landing: None,
            following: None,
            publish_due: false,
            deadline: None,
            attempts: 0,
            sent_at: None,
            upstream: None,
            relay: None,
            relay_counted: 0,
            finished: false,
            random: u64::from_le_bytes([
                random[8], random[9], random[10], random[11], random[12], random[13], random[14],
                random[15],
            ]) | 1,
            client_point: None,
            pin: None,
            order: None,
            next_in_order: 0,
            rounds: 0,
            after_backoff: None,
            attempts_deadline: None,
            current: None,
            forward_headers: None,
            held: None,
            auth_failures: 0,
            last_failure: None,
            prefix: Vec::new(),
            prefix_len: 0,
            committed: false,
            commit_due: false,
            keepalive_at: None,
            outbox: None,
            chain: Vec::new(),
            model_floor: None,
            hide_usage: false,
            prompt_estimate: 0,
            upstream_busy: Duration::ZERO,
            busy_since: None,
            limits: limit::Limits::default(),
        }
    }

    /// The request id (the client's own if it sent a sane one).
    pub fn request_id(&self) -> &str {
        &self.log.request_id
    }

    /// The next action. Cheap and free of IO: the runtime may hold the router's lock around it.
    pub fn poll_action(&mut self, now: Now, router: &mut Router) -> Action {
        if let Some(bytes) = self.outbox.take() {
            return Action::Emit(bytes);
        }
        if std::mem::take(&mut self.commit_due) {
            let mut response = self.commit(now);
            self.timing_header(&mut response.headers, now);
            self.rate_headers(&mut response.headers);
            return Action::Respond(response);
        }
        loop {
            match std::mem::replace(&mut self.step, Step::Done) {
                Step::ReadBody => {
                    self.step = Step::AwaitBody;
                    self.set_deadline(
                        self.started,
                        self.gw.settings().body_timeout_ms,
                        Timer::Body,
                    );
                    return Action::ReadBody {
                        limit: self.gw.settings().max_body_bytes,
                    };
                }
                Step::Plan => self.plan(now, router),
                Step::Lookup => match &self.lookup {
                    Some(l) if l.read => {
                        self.step = Step::AwaitLookup;
                        return Action::Lookup {
                            key: l.key,
                            shared: router.store_usable(now.instant),
                        };
                    }
                    // `no-cache`: no lookup and no waiting on others; the answer refreshes the
                    // entry.
                    _ => self.step = Step::Limit(None),
                },
                Step::Limit(hit) => {
                    if let Some(call) = self.limit_call(hit, now, router) {
                        return Action::Limit(call);
                    }
                }
                Step::Join => self.join(now, router),
                Step::CheckFlight => self.check_flight(now, router),
                Step::AwaitFlight => {
                    self.step = Step::AwaitFlight;
                    return Action::AwaitFlight;
                }
                Step::Send => {
                    if let Some(attempt) = self.start_attempt(now, router) {
                        return Action::Send(attempt);
                    }
                    if let Some(bytes) = self.outbox.take() {
                        return Action::Emit(bytes);
                    }
                }
                Step::AwaitHead => {
                    self.step = Step::AwaitHead;
                    return Action::AwaitResponse;
                }
                Step::AwaitChunk => {
                    self.step = Step::AwaitChunk;
                    return Action::ReadUpstreamChunk;
                }
                Step::Backoff => {
                    self.step = Step::Backoff;
                    return Action::Wait;
                }
                Step::ReadUpstream => {
                    self.step = Step::AwaitUpstreamBody;
                    return Action::ReadUpstreamBody {
                        limit: self.gw.settings().max_upstream_response_bytes,
                    };
                }
                Step::Store(mut store, response) => {
                    // The waiters get it when the response goes out: by then the runtime has
                    // put it in its in-process cache, so no later request misses it.
                    self.landing = Some(store.entry.clone());
                    store.shared = router.store_usable(now.instant);
                    self.step = Step::Respond(response);
                    return Action::Store(store);
                }
                Step::Respond(mut response) => {
                    self.respond_started(&mut response, now, router);
                    return Action::Respond(response);
                }
                Step::Follow => {
                    if let Some(action) = self.follow(now) {
                        return action;
                    }
                }
                Step::StoreThenEnd(store) => {
                    self.step = Step::End { abort: false };
                    return Action::Store(store);
                }
                Step::End { abort } => {
                    self.step = Step::Done;
                    return Action::End { abort };
                }
                // Asked for an action while one is outstanding: the runtime skipped a report.
                // Answer rather than hang.
                step @ (Step::AwaitBody
                | Step::AwaitLookup
                | Step::AwaitLimit(_)
                | Step::AwaitUpstreamBody
                | Step::Relaying
                | Step::Done) => {
                    if matches!(step, Step::Relaying | Step::Done) {
                        self.step = step;
                        if self.committed {
                            return Action::End { abort: false };
                        }
                        return Action::Respond(Response::internal(
                            "the response was already sent",
                        ));
                    }
                    self.fail(GatewayError::Internal {
                        message: "an IO result was not reported".into(),
                    });
                }
            }
        }
    }

    /// The instant by which the outstanding IO must have been reported, if any. While a body is
    /// relayed by the runtime: when the upstream will have been silent for too long (then call
    /// [`Exchange::handle_relay_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Step::Relaying = self.step {
            let relay = self.relay.as_ref().filter(|r| !r.ended)?;
            return Some(relay.last_activity.plus(self.idle_timeout()));
        }
        let deadline = self.deadline.map(|(t, _)| t);
        // Keepalives only interrupt waits that survive a timer (never a body being read whole).
        let keepalive = match self.step {
            Step::AwaitHead | Step::AwaitChunk | Step::Backoff => self.keepalive_at,
            _ => None,
        };
        match (deadline, keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deadline passed: decides what that means for the step in progress.
    pub fn handle_timeout(&mut self, now: Now, router: &mut Router) {
        // A timer set in whole milliseconds against a millisecond clock (the Worker's) may fire
        // just before the instant; it still counts, rather than leave the step waiting.
        let due = |at: Instant| now.instant.plus(TIMER_SLACK) >= at;
        if matches!(
            self.step,
            Step::AwaitHead | Step::AwaitChunk | Step::Backoff
        ) {
            if let Some(at) = self.keepalive_at.filter(|&at| due(at)) {
                let interval = self.gw.settings().routing.keepalive_interval;
                self.keepalive_at = Some(at.max(now.instant).plus(interval));
                if self.committed {
                    self.outbox = Some(Bytes::from_static(b": keepalive\n\n"));
                } else {
                    self.commit_due = true;
                }
            }
        }
        let Some((at, timer)) = self.deadline else {
            return;
        };
        if !due(at) {
            return;
        }
        self.deadline = None;
        match (timer, &self.step) {
            (Timer::Body, Step::AwaitBody) => self.fail(GatewayError::RequestTimeout),
            (Timer::Flight, Step::AwaitFlight) => {
                // Waited long enough on another request: call the upstream ourselves.
                self.waiting = None;
                self.step = Step::Send;
            }
            (Timer::Upstream, Step::AwaitHead | Step::AwaitUpstreamBody | Step::AwaitChunk) => {
                self.log.upstream_error = Some(TransportError::TimedOut.as_str());
                self.attempt_failed(
                    now,
                    router,
                    Verdict::Failed,
                    "timed_out",
                    attempts::Failure::Error(GatewayError::UpstreamTimeout),
                );
            }
            (Timer::Backoff, Step::Backoff) => self.step = Step::Send,
            (Timer::Limit, Step::AwaitLimit(_)) => {
                router.limiter_result(false, now.instant);
                self.on_limit(Err(()), now, router);
            }
            (Timer::Idle, Step::AwaitChunk) => self.driven_stalled(now, router),
            (Timer::Follow, Step::Follow) => self.follow_stalled(),
            _ => {}
        }
    }

    /// The client's whole body.
    pub fn on_body(&mut self, body: Bytes, _now: Now) {
        if !matches!(self.step, Step::AwaitBody) {
            return;
        }
        self.deadline = None;
        self.log.bytes_in = body.len() as u64;
        self.body = body;
        self.step = Step::Plan;
    }

    pub fn on_body_error(&mut self, e: BodyError, _now: Now) {
        if !matches!(self.step, Step::AwaitBody) {
            return;
        }
        self.deadline = None;
        self.fail(match e {
            BodyError::TooLarge => GatewayError::PayloadTooLarge {
                limit: self.gw.settings().max_body_bytes,
            },
            BodyError::Failed => GatewayError::MalformedJson {
                detail: "the request body could not be read".into(),
            },
        });
    }

    /// The result of [`Action::Lookup`]: what the store had under the key, if anything. A store
    /// error is `None` (a miss), reported to the router by the runtime.
    pub fn on_lookup(&mut self, found: Option<Found>, now: Now) {
        if !matches!(self.step, Step::AwaitLookup) {
            return;
        }
        let Some(lookup) = &self.lookup else {
            self.step = Step::Limit(None);
            return;
        };
        let entry = match found {
            Some(Found::Entry(e)) => lookup.accept_entry(&e, now.unix.as_millis()).then_some(e),
            Some(Found::Encoded(bytes)) => {
                lookup.accept(&bytes, now.unix.as_millis()).map(Arc::new)
            }
            None => None,
        };
        // The key's limits come after the lookup: a hit counts against requests only.
        self.step = Step::Limit(entry);
    }

    /// The router woke parked requests: re-check the flight.
    pub fn on_wakeup(&mut self, _now: Now) {
        if matches!(self.step, Step::AwaitFlight) {
            self.step = Step::CheckFlight;
        }
    }

    /// The upstream's response head for an attempt.
    pub fn on_response_head(
        &mut self,
        id: AttemptId,
        status: u16,
        headers: HeaderMap,
        now: Now,
        router: &mut Router,
    ) {
        if !matches!(self.step, Step::AwaitHead) || id != AttemptId(self.attempts) {
            return;
        }
        if let Some(sent) = self.sent_at {
            self.log.upstream_ms = Some(millis_f64(now.instant.since(sent)));
        }
        if !(200..=599).contains(&status) {
            // Not a final status a client can be given (and the Worker's platform refuses it).
            return self.attempt_failed(
                now,
                router,
                Verdict::Failed,
                "invalid_status",
                attempts::Failure::Error(GatewayError::UpstreamInvalidResponse),
            );
        }
        let head = UpstreamHead { status, headers };
        if attempts::may_fail_over(status) {
            // Read (bounded) to decide: the body may say the quota is spent, or when to come
            // back; and it is what the client gets if no other upstream does better.
            self.upstream = Some(head);
            self.step = Step::ReadUpstream;
            return;
        }
        if matches!(status, 204 | 205 | 304) {
            // These never carry a body (HTTP says so, and the Worker's platform refuses one).
            self.deadline = None;
            self.healthy(now, router);
            let response = self.upstream_response(&head, ResponseBody::Full(Bytes::new()));
            self.step = Step::Respond(response);
            return;
        }
        let content_type = header_str(&head.headers, CONTENT_TYPE.as_str());
        let mut mode = self.gw.response_mode(status, content_type, self.log.stream);
        let declared = header_str(&head.headers, CONTENT_LENGTH.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if mode == ResponseMode::Buffered
            && declared.is_some_and(|n| n > self.gw.settings().max_upstream_response_bytes)
        {
            // Too large to hold: relayed as it comes, unchecked and not cached, rather than
            // refused after the upstream did the work. (An undeclared length is read up to the
            // limit and then refused: by then it cannot be relayed whole.)
            mode = ResponseMode::PassThrough;
        }
        match mode {
            ResponseMode::Buffered => {
                // The deadline still runs from the send: the upstream timeout covers the
                // whole answer of a non-streamed request.
                self.upstream = Some(head);
                self.step = Step::ReadUpstream;
            }
            ResponseMode::Stream => {
                // The first-byte deadline runs on until the first event with content: until
                // then another upstream can still take over, unseen by the client.
                let recorder = self.lookup.as_ref().and_then(|l| {
                    l.stream_recorder(
                        status,
                        header_str(&head.headers, CONTENT_TYPE.as_str()),
                        header_str(&head.headers, "cache-control"),
                    )
                });
                self.relay = Some(Relay {
                    sse: Some(SseObserver::new()),
                    hide: self.hide_usage.then(HideUsage::new),
                    recorder,
                    ended: false,
                    last_activity: now.instant,
                });
                self.prefix.clear();
                self.prefix_len = 0;
                if self.committed || self.may_try_again() {
                    self.upstream = Some(head);
                    self.step = Step::AwaitChunk;
                    return;
                }
                // No other attempt could take over: holding the head back would only delay it.
                self.deadline = None;
                self.keepalive_at = None;
                self.healthy(now, router);
                let mut response =
                    self.upstream_response(&head, ResponseBody::Relay(self.stream_mode()));
                response.store_on_end = self.relay.as_ref().is_some_and(|r| r.recorder.is_some());
                self.step = Step::Respond(response);
            }
            ResponseMode::PassThrough => {
                self.deadline = None;
                self.healthy(now, router);
                self.relay = Some(Relay {
                    sse: None,
                    hide: None,
                    recorder: None,
                    ended: false,
                    last_activity: now.instant,
                });
                let mut response =
                    self.upstream_response(&head, ResponseBody::Relay(RelayMode::Untouched));
                if let Some(len) = head.headers.get(CONTENT_LENGTH) {
                    response.headers.insert(CONTENT_LENGTH, len.clone());
                    self.log.bytes_out = len
                        .to_str()
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                }
                if self.committed {
                    // Headers are out: an answer that is not a stream can only be told as an
                    // error event.
                    return self.give_up_with(now, router, Some(head));
                }
                self.step = Step::Respond(response);
            }
        }
    }

    /// An attempt failed before a response head.
    pub fn on_transport_error(
        &mut self,
        id: AttemptId,
        e: TransportError,
        now: Now,
        router: &mut Router,
    ) {
        if !matches!(self.step, Step::AwaitHead) || id != AttemptId(self.attempts) {
            return;
        }
        self.log.upstream_error = Some(e.as_str());
        let err = match e {
            TransportError::TimedOut => GatewayError::UpstreamTimeout,
            cause => GatewayError::UpstreamUnreachable { cause },
        };
        self.attempt_failed(
            now,
            router,
            Verdict::Failed,
            e.as_str(),
            attempts::Failure::Error(err),
        );
    }

    /// The upstream's whole body, for [`Action::ReadUpstreamBody`].
    pub fn on_upstream_body(&mut self, body: Bytes, now: Now, router: &mut Router) {
        if !matches!(self.step, Step::AwaitUpstreamBody) {
            return;
        }
        let Some(head) = self.upstream.take() else {
            return self.fail(GatewayError::Internal {
                message: "no upstream head".into(),
            });
        };
        if attempts::may_fail_over(head.status) {
            return self.upstream_refused(head, body, now, router);
        }
        let usage = match self.gw.check_buffered(&body) {
            Ok(u) => u,
            Err(e) => {
                return self.attempt_failed(
                    now,
                    router,
                    Verdict::Failed,
                    "invalid_body",
                    attempts::Failure::Error(e),
                )
            }
        };
        self.deadline = None;
        self.healthy(now, router);
        let cost = self.account(usage, false);
        let entry = self.lookup.as_ref().and_then(|l| {
            l.buffered_entry(
                head.status,
                header_str(&head.headers, CONTENT_TYPE.as_str()),
                header_str(&head.headers, "cache-control"),
                &body,
                usage,
                now.unix.as_millis(),
            )
        });
        let mut response = self.upstream_response(&head, ResponseBody::Full(body.clone()));
        response
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(c) = cost.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
            response.headers.insert(headers::COST_USD, c);
        }
        match (entry, &self.lookup) {
            (Some(entry), Some(l)) => {
                let store = Store {
                    key: l.key,
                    entry: Arc::new(entry),
                    shared: true,
                    ttl_secs: l.ttl_secs,
                };
                self.step = Step::Store(store, response);
            }
            _ => self.step = Step::Respond(response),
        }
    }

    pub fn on_upstream_body_error(&mut self, _e: BodyError, now: Now, router: &mut Router) {
        if !matches!(self.step, Step::AwaitUpstreamBody) {
            return;
        }
        self.attempt_failed(
            now,
            router,
            Verdict::Failed,
            "body_failed",
            attempts::Failure::Error(GatewayError::UpstreamInvalidResponse),
        );
    }
}

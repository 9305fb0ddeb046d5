//! The exchange on virtual time, against scripted clients and upstreams, with no sockets: a
//! [`Sim`] plays the runtime (clock, router, in-process cache store) and [`Sim::drive`] runs the
//! same loop the runtimes run, so every path they take is covered here with exact timings.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::*;
use crate::log::RequestLog;
use crate::time::UnixMillis;
use crate::Settings;

pub(super) const CLIENT_KEY: &str = "client-1";
pub(super) const UPSTREAM_KEY: &str = "sk-upstream";
pub(super) const CHAT: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
pub(super) const CHAT0: &[u8] =
    br#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
pub(super) const STREAM0: &[u8] =
    br#"{"model":"m","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
pub(super) const ANSWER: &[u8] =
    br#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
pub(super) const SSE: [&[u8]; 3] = [
    b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
    b"data: [DONE]\n\n",
];

pub(super) fn gateway(config: &str) -> Arc<Gateway> {
    let settings = Settings::from_lookup(|k| match k {
        "UPSTREAM_BASE_URL" => Some("http://up.example/v1".into()),
        "UPSTREAM_API_KEY" => Some(UPSTREAM_KEY.into()),
        "GATEWAY_API_KEYS" => Some(CLIENT_KEY.into()),
        "GATEWAY_CONFIG" => Some(config.into()),
        _ => None,
    })
    .unwrap();
    Arc::new(Gateway::new(settings, "sim"))
}

/// Timeouts small enough to read: body 1 s, upstream 1.5 s (as in the conformance suite),
/// 2 s of silence in a stream; one attempt (failover is tested with [`REGIONS`]).
pub(super) const CONFIG: &str = r#"{"max_body_bytes":1000,"body_timeout_ms":1000,"upstream_timeout_ms":1500,"stream_idle_timeout_ms":2000,"max_upstream_response_bytes":500,"routing":{"max_attempts":1,"keepalive_after_ms":0}}"#;

/// What the client sends after its head.
#[derive(Clone)]
pub(super) enum ClientBody {
    /// The whole body, this many ms after the head.
    After(u64, &'static [u8]),
    /// More than the limit while reading.
    TooLarge(u64),
    /// Never finishes.
    Never,
}

/// What the upstream does with an attempt.
#[derive(Clone)]
pub(super) enum Up {
    Head {
        after_ms: u64,
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: UpBody,
    },
    Fail(u64, TransportError),
    Silent,
}

#[derive(Clone)]
pub(super) enum UpBody {
    Whole(u64, &'static [u8]),
    TooLarge,
    /// Chunks, each this many ms after the previous one, then the end.
    Chunks(Vec<(u64, &'static [u8])>, BodyEnd),
}

pub(super) fn json_answer(after_ms: u64, body: &'static [u8]) -> Up {
    Up::Head {
        after_ms,
        status: 200,
        headers: vec![
            ("content-type", "application/json"),
            ("x-request-id", "up-1"),
        ],
        body: UpBody::Whole(0, body),
    }
}

pub(super) fn sse_answer(chunks: Vec<(u64, &'static [u8])>, end: BodyEnd) -> Up {
    Up::Head {
        after_ms: 5,
        status: 200,
        headers: vec![("content-type", "text/event-stream")],
        body: UpBody::Chunks(chunks, end),
    }
}

#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
    /// The ms (since the request's start) each relayed chunk reached the client.
    pub(super) chunk_times: Vec<u64>,
    pub(super) aborted: bool,
    pub(super) log: RequestLog,
}

impl Outcome {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// The current upstream body: chunks (ms after the previous one), the next one, its end, and
/// when the last one came (µs).
pub(super) type Cursor = (Vec<(u64, &'static [u8])>, usize, BodyEnd, u64);

/// The runtime, played on virtual time.
pub(super) struct Sim {
    pub(super) gw: Arc<Gateway>,
    pub(super) router: Router,
    now_us: u64,
    pub(super) store: BTreeMap<CacheKey, Arc<CacheEntry>>,
    pub(super) sends: Vec<Attempt>,
    /// When (ms) each attempt was sent.
    pub(super) send_times: Vec<u64>,
    shared_lookups: Vec<bool>,
    /// The call in progress: its id, when it answers (µs), and how.
    pending: Option<(AttemptId, Option<u64>, Up)>,
    /// The current upstream body: chunks, the next one, its end, when the last one came (µs).
    chunks: Cursor,
    /// What a driven response emitted (ms, bytes), and how it ended.
    emitted: Vec<(u64, Bytes)>,
    ended: Option<bool>,
    /// The upstream scripts a driven response goes on with.
    pub(super) driven_ups: Vec<Up>,
    /// The limiter's store, shared by every exchange of the simulation.
    pub(super) limiter: crate::limits::MemoryCounters,
    /// The limiter's store fails (Some(ms): after that long; None: it answers at once).
    pub(super) limiter_down: Option<u64>,
    pub(super) limit_calls: Vec<crate::limits::LimitCall>,
}

impl Sim {
    pub(super) fn new(config: &str) -> Sim {
        Sim {
            gw: gateway(config),
            router: Router::new(),
            now_us: 1_000_000,
            store: BTreeMap::new(),
            sends: Vec::new(),
            send_times: Vec::new(),
            shared_lookups: Vec::new(),
            pending: None,
            chunks: (Vec::new(), 0, BodyEnd::Complete, 0),
            emitted: Vec::new(),
            ended: None,
            driven_ups: Vec::new(),
            limiter: crate::limits::MemoryCounters::new(),
            limiter_down: None,
            limit_calls: Vec::new(),
        }
    }

    pub(super) fn now(&self) -> Now {
        Now {
            instant: Instant::from_micros(self.now_us),
            unix: UnixMillis(1_700_000_000_000 + self.now_us / 1000),
        }
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.now_us += ms * 1000;
    }

    pub(super) fn ms(&self) -> u64 {
        self.now_us / 1000
    }

    pub(super) fn start(
        &self,
        method: &'static str,
        path: &'static str,
        headers: &[(&str, &str)],
    ) -> Exchange {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Exchange::new(
            self.gw.clone(),
            RequestParts {
                method,
                path,
                query: None,
                headers: map,
                location: ClientLocation::default(),
            },
            self.now(),
            [7; 16],
        )
    }

    pub(super) fn chat(&self) -> Exchange {
        self.start(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", "Bearer client-1"),
                ("content-type", "application/json"),
            ],
        )
    }

    /// Waits `ms` for an event, unless the exchange's deadline comes first (then it is handled
    /// and `false` returned).
    pub(super) fn wait(&mut self, ex: &mut Exchange, ms: u64) -> bool {
        let due = self.now_us.saturating_add(ms.saturating_mul(1000));
        self.wait_until(ex, due)
    }

    pub(super) fn wait_until(&mut self, ex: &mut Exchange, due: u64) -> bool {
        match ex.poll_timeout() {
            Some(t) if t.as_micros() <= due => {
                self.now_us = self.now_us.max(t.as_micros());
                let now = self.now();
                ex.handle_timeout(now, &mut self.router);
                false
            }
            _ => {
                self.now_us = self.now_us.max(due);
                true
            }
        }
    }

    pub(super) fn poll(&mut self, ex: &mut Exchange) -> Action {
        let now = self.now();
        ex.poll_action(now, &mut self.router)
    }

    /// Runs the exchange to its response; relays the body; finishes it.
    pub(super) fn drive(&mut self, ex: Exchange, client: ClientBody, up: &Up) -> Outcome {
        self.drive_seq(ex, client, std::slice::from_ref(up))
    }

    /// As [`Sim::drive`], attempt `n` (from 1) answered by `ups[n - 1]` (the last one for any
    /// later attempt).
    pub(super) fn drive_seq(
        &mut self,
        mut ex: Exchange,
        client: ClientBody,
        ups: &[Up],
    ) -> Outcome {
        let started = self.ms();
        let response = self.until_response_seq(&mut ex, client, ups);
        self.finish_response(ex, response, started)
    }

    pub(super) fn until_response(
        &mut self,
        ex: &mut Exchange,
        client: ClientBody,
        up: &Up,
    ) -> Response {
        self.until_response_seq(ex, client, std::slice::from_ref(up))
    }

    fn script(ups: &[Up], attempt: u32) -> Up {
        let i = (attempt as usize)
            .saturating_sub(1)
            .min(ups.len().saturating_sub(1));
        ups.get(i).cloned().unwrap_or(Up::Silent)
    }

    pub(super) fn until_response_seq(
        &mut self,
        ex: &mut Exchange,
        client: ClientBody,
        ups: &[Up],
    ) -> Response {
        loop {
            if let Some(r) = self.step(ex, &client, ups) {
                return r;
            }
        }
    }

    /// One action of the runtime's loop; `Some` when it is a response.
    fn step(&mut self, ex: &mut Exchange, client: &ClientBody, ups: &[Up]) -> Option<Response> {
        match self.poll(ex) {
            Action::ReadBody { limit } => match client {
                ClientBody::After(ms, body) => {
                    if self.wait(ex, *ms) {
                        if body.len() as u64 > limit {
                            ex.on_body_error(BodyError::TooLarge, self.now());
                        } else {
                            ex.on_body(Bytes::from_static(body), self.now());
                        }
                    }
                }
                ClientBody::TooLarge(ms) => {
                    if self.wait(ex, *ms) {
                        ex.on_body_error(BodyError::TooLarge, self.now());
                    }
                }
                ClientBody::Never => {
                    assert!(!self.wait(ex, u64::MAX / 4000), "a body deadline exists");
                }
            },
            Action::Lookup { key, shared } => {
                self.shared_lookups.push(shared);
                let found = self.store.get(&key).cloned().map(Found::Entry);
                ex.on_lookup(found, self.now());
            }
            Action::Limit(call) => {
                self.limit_calls.push(call.clone());
                match self.limiter_down {
                    Some(ms) => {
                        if self.wait(ex, ms) {
                            ex.on_limit(Err(()), self.now(), &mut self.router);
                        }
                    }
                    None => {
                        let reply = self.limiter.apply(&call.op, self.now().unix.as_millis());
                        ex.on_limit(Ok(reply), self.now(), &mut self.router);
                    }
                }
            }
            Action::AwaitFlight => {
                // Nobody else runs in a single-exchange simulation: the wait times out.
                assert!(
                    !self.wait(ex, u64::MAX / 4000),
                    "a flight wait has a deadline"
                );
            }
            Action::Send(attempt) => {
                let id = attempt.id;
                self.sends.push(attempt);
                self.send_times.push(self.ms());
                let up = Sim::script(ups, id.0);
                let due = match &up {
                    Up::Head { after_ms, .. } => Some(self.now_us + after_ms * 1000),
                    Up::Fail(ms, _) => Some(self.now_us + ms * 1000),
                    Up::Silent => None,
                };
                self.pending = Some((id, due, up));
                self.await_response(ex);
            }
            Action::AwaitResponse => self.await_response(ex),
            Action::ReadUpstreamChunk => self.read_chunk(ex),
            Action::Wait => {
                assert!(!self.wait(ex, u64::MAX / 4000), "a wait has a deadline");
            }
            Action::ReadUpstreamBody { limit } => {
                let up = self.pending.as_ref().map(|p| p.2.clone());
                let now = self.now();
                match up {
                    Some(Up::Head {
                        body: UpBody::Whole(ms, bytes),
                        ..
                    }) => {
                        if self.wait(ex, ms) {
                            let now = self.now();
                            if bytes.len() as u64 > limit {
                                ex.on_upstream_body_error(
                                    BodyError::TooLarge,
                                    now,
                                    &mut self.router,
                                );
                            } else {
                                ex.on_upstream_body(
                                    Bytes::from_static(bytes),
                                    now,
                                    &mut self.router,
                                );
                            }
                        }
                    }
                    Some(Up::Head {
                        body: UpBody::TooLarge,
                        ..
                    }) => ex.on_upstream_body_error(BodyError::TooLarge, now, &mut self.router),
                    _ => ex.on_upstream_body_error(BodyError::Failed, now, &mut self.router),
                }
            }
            Action::Store(store) => {
                self.store.insert(store.key, store.entry.clone());
            }
            Action::Emit(bytes) => {
                self.emitted.push((self.ms(), bytes));
            }
            Action::End { abort } => {
                self.ended = Some(abort);
            }
            Action::Respond(response) => return Some(response),
        }
        None
    }

    fn await_response(&mut self, ex: &mut Exchange) {
        let Some((id, due, up)) = self.pending.clone() else {
            panic!("no call in progress");
        };
        let Some(due) = due else {
            assert!(!self.wait(ex, u64::MAX / 4000), "an attempt has a deadline");
            return;
        };
        if !self.wait_until(ex, due) {
            return;
        }
        let now = self.now();
        match up {
            Up::Head {
                status,
                headers,
                body,
                ..
            } => {
                let mut map = HeaderMap::new();
                for (n, v) in headers {
                    map.append(n, HeaderValue::from_static(v));
                }
                self.chunks = match body {
                    UpBody::Chunks(c, end) => (c, 0, end, self.now_us),
                    UpBody::Whole(ms, b) => (vec![(ms, b)], 0, BodyEnd::Complete, self.now_us),
                    UpBody::TooLarge => (Vec::new(), 0, BodyEnd::Failed, self.now_us),
                };
                ex.on_response_head(id, status, map, now, &mut self.router);
            }
            Up::Fail(_, e) => ex.on_transport_error(id, e, now, &mut self.router),
            Up::Silent => {}
        }
    }

    fn read_chunk(&mut self, ex: &mut Exchange) {
        let Some((id, ..)) = self.pending.clone() else {
            panic!("no call in progress");
        };
        let (chunks, pos, end, last) = self.chunks.clone();
        match chunks.get(pos) {
            Some(&(ms, chunk)) => {
                if self.wait_until(ex, last + ms * 1000) {
                    self.chunks.1 += 1;
                    self.chunks.3 = self.now_us;
                    let now = self.now();
                    ex.on_upstream_chunk(id, Bytes::from_static(chunk), now, &mut self.router);
                }
            }
            None if end == BodyEnd::Failed && chunks.is_empty() && pos == 0 => {
                let now = self.now();
                ex.on_upstream_end(id, end, now, &mut self.router);
            }
            None => {
                let now = self.now();
                ex.on_upstream_end(id, end, now, &mut self.router);
            }
        }
    }

    /// Relays the rest of the body as the runtime would (or, for a driven response, keeps
    /// driving), then finishes the exchange.
    pub(super) fn finish_response(
        &mut self,
        mut ex: Exchange,
        response: Response,
        started: u64,
    ) -> Outcome {
        let mut out = Outcome {
            status: response.status,
            headers: response.headers,
            body: Vec::new(),
            chunk_times: Vec::new(),
            aborted: false,
            log: RequestLog::default(),
        };
        if !response.prefix.is_empty() {
            out.body.extend_from_slice(&response.prefix);
            out.chunk_times.push(self.ms() - started);
        }
        match response.body {
            ResponseBody::Full(b) => out.body = b.to_vec(),
            ResponseBody::Relay(mode) => {
                let (chunks, pos, end, _) = self.chunks.clone();
                for &(ms, chunk) in chunks.iter().skip(pos) {
                    self.advance(ms);
                    if mode == RelayMode::Filter {
                        let sent = ex.on_chunk_filtered(Bytes::from_static(chunk), self.now());
                        if !sent.is_empty() {
                            out.body.extend_from_slice(&sent);
                            out.chunk_times.push(self.ms() - started);
                        }
                    } else {
                        out.body.extend_from_slice(chunk);
                        out.chunk_times.push(self.ms() - started);
                        ex.on_chunk(&Bytes::from_static(chunk), self.now());
                    }
                }
                let now = self.now();
                let end = ex.on_end(end, now, &mut self.router);
                if let Some(t) = end.tail {
                    out.body.extend_from_slice(&t);
                }
                if let Some(s) = end.store {
                    self.store.insert(s.key, s.entry);
                }
                out.aborted = end.abort;
            }
            ResponseBody::Driven => {
                self.emitted.clear();
                self.ended = None;
                let ups = self.driven_ups.clone();
                while self.ended.is_none() {
                    if let Some(r) = self.step(&mut ex, &ClientBody::Never, &ups) {
                        panic!("a second response: {r:?}");
                    }
                }
                for (t, b) in std::mem::take(&mut self.emitted) {
                    out.body.extend_from_slice(&b);
                    out.chunk_times.push(t - started);
                }
                out.aborted = self.ended == Some(true);
            }
        }
        let now = self.now();
        out.log = ex.finish(now, &mut self.router).expect("the log record");
        assert!(
            ex.finish(now, &mut self.router).is_none(),
            "the log record comes once"
        );
        if let Some(call) = ex.take_settlement() {
            self.limit_calls.push(call.clone());
            self.limiter.apply(&call.op, now.unix.as_millis());
        }
        out
    }

    /// As the old two-step API: relay a response from [`Sim::until_response`].
    pub(super) fn relay(
        &mut self,
        ex: Exchange,
        response: Response,
        _up: &Up,
        started: u64,
    ) -> Outcome {
        self.finish_response(ex, response, started)
    }
}

#[test]
fn health_is_answered_locally_with_a_request_id() {
    let mut sim = Sim::new(CONFIG);
    let ex = sim.start("GET", "/health", &[]);
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 200);
    assert!(sim.sends.is_empty());
    assert_eq!(out.header("x-request-id").map(str::len), Some(36));
    assert_eq!(out.header("x-gateway-cache"), None);
    assert_eq!(out.log.status, 200);
}

#[test]
fn a_missing_key_is_401_before_any_body_is_read_or_upstream_called() {
    let mut sim = Sim::new(CONFIG);
    let ex = sim.start("POST", "/v1/chat/completions", &[]);
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 401);
    assert_eq!(out.code(), "missing_api_key");
    assert_eq!(out.header("www-authenticate"), Some("Bearer"));
    assert!(sim.sends.is_empty());
    assert_eq!(out.log.error_code.as_deref(), Some("missing_api_key"));
}

#[test]
fn a_declared_length_over_the_limit_is_413_without_reading_the_body() {
    let mut sim = Sim::new(CONFIG);
    let ex = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-length", "1001"),
        ],
    );
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 413);
    assert_eq!(sim.ms(), 1_000, "no time spent reading");
}

#[test]
fn a_body_too_large_while_reading_is_413() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::TooLarge(10), &Up::Silent);
    assert_eq!(out.status, 413);
    assert_eq!(out.code(), "request_too_large");
}

#[test]
fn a_body_not_finished_by_the_body_deadline_is_408_at_exactly_the_deadline() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 408);
    assert_eq!(sim.ms(), 1_000 + 1_000);
    assert!(sim.sends.is_empty());
    assert_eq!(out.log.total_ms, 1_000.0);
}

#[test]
fn a_timer_firing_within_a_millisecond_of_the_deadline_counts_an_earlier_one_does_not() {
    let sim = Sim::new(CONFIG);
    let mut router = Router::new();
    let mut ex = sim.chat();
    assert!(matches!(
        ex.poll_action(sim.now(), &mut router),
        Action::ReadBody { .. }
    ));
    let deadline = ex.poll_timeout().unwrap();
    let at = |us_before: u64| Now {
        instant: Instant::from_micros(deadline.as_micros() - us_before),
        unix: sim.now().unix,
    };
    ex.handle_timeout(at(5_000), &mut router);
    assert_eq!(
        ex.poll_timeout(),
        Some(deadline),
        "5 ms early: still waiting for the body"
    );
    ex.handle_timeout(at(500), &mut router);
    let Action::Respond(r) = ex.poll_action(at(500), &mut router) else {
        panic!("timed out")
    };
    assert_eq!(r.status, 408);
}

#[test]
fn an_invalid_body_is_400_naming_the_param_without_an_upstream_call() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(1, br#"{"messages":[]}"#),
        &Up::Silent,
    );
    assert_eq!(out.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["error"]["param"], "model");
    assert!(sim.sends.is_empty());
    assert_eq!(
        out.header("x-gateway-cache"),
        None,
        "decided before the cache"
    );
}

#[test]
fn the_upstream_gets_the_operators_key_the_request_id_and_the_body_byte_for_byte() {
    let mut sim = Sim::new(CONFIG);
    let ex = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("x-request-id", "client-chosen-id"),
            ("openai-beta", "assistants=v2"),
            ("cookie", "session=1"),
            ("x-multi", "one"),
            ("accept-encoding", "gzip"),
            ("x-multi", "two"),
            ("cookie", "other=2"),
        ],
    );
    let out = sim.drive(ex, ClientBody::After(1, CHAT), &json_answer(20, ANSWER));
    assert_eq!(out.status, 200);
    let sent = &sim.sends[0];
    assert_eq!(sent.url, "http://up.example/v1/chat/completions");
    assert_eq!(sent.method, "POST");
    assert_eq!(&sent.body[..], CHAT);
    let h = |n: &str| sent.headers.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(h("authorization"), Some("Bearer sk-upstream"));
    assert!(sent.headers.get("authorization").unwrap().is_sensitive());
    assert_eq!(h("x-request-id"), Some("client-chosen-id"));
    assert_eq!(h("openai-beta"), Some("assistants=v2"));
    assert_eq!(h("accept-encoding"), Some("identity"));
    assert_eq!(h("cookie"), None);
    let multi: Vec<&str> = sent
        .headers
        .get_all("x-multi")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(multi, ["one", "two"], "every value of a repeated header");
    assert_eq!(out.header("x-request-id"), Some("client-chosen-id"));
}

#[test]
fn a_json_answer_is_checked_sent_with_its_length_and_its_usage_logged() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(1, CHAT),
        &json_answer(20, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.body, ANSWER);
    assert_eq!(
        out.header("content-length"),
        Some(&*ANSWER.len().to_string())
    );
    assert_eq!(out.header("x-upstream-request-id"), Some("up-1"));
    assert_eq!(out.header("x-gateway-cache"), Some("BYPASS"));
    assert_eq!(out.log.prompt_tokens, Some(3));
    assert_eq!(out.log.upstream_ms, Some(20.0));
    assert_eq!(out.log.bytes_in, CHAT.len() as u64);
    assert_eq!(out.log.bytes_out, ANSWER.len() as u64);
    assert_eq!(out.log.model.as_deref(), Some("m"));
}

#[test]
fn an_answer_declared_larger_than_the_limit_is_relayed_unread_not_refused() {
    // CONFIG allows 500 bytes to be buffered; the upstream declares 600.
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    let big: &'static [u8] = Box::leak(vec![b' '; 600].into_boxed_slice());
    let up = Up::Head {
        after_ms: 1,
        status: 200,
        headers: vec![
            ("content-type", "application/json"),
            ("content-length", "600"),
        ],
        body: UpBody::Chunks(vec![(1, big)], BodyEnd::Complete),
    };
    let response = sim.until_response(&mut ex, ClientBody::After(0, CHAT0), &up);
    assert!(
        matches!(response.body, ResponseBody::Relay(RelayMode::Untouched)),
        "{response:?}"
    );
    assert_eq!(response.headers.get("content-length").unwrap(), "600");
    let out = sim.relay(ex, response, &up, 1_000);
    assert_eq!(out.body.len(), 600);
    assert!(sim.store.is_empty(), "not read, so not cached");
}

#[test]
fn a_garbage_or_oversized_answer_is_502() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(1, CHAT),
        &json_answer(5, b"{\"id\":"),
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (502, "upstream_invalid_response")
    );
    let big = Up::Head {
        after_ms: 5,
        status: 200,
        headers: vec![("content-type", "application/json")],
        body: UpBody::TooLarge,
    };
    let out = sim.drive(sim.chat(), ClientBody::After(1, CHAT), &big);
    assert_eq!(out.status, 502);
}

#[test]
fn no_head_within_the_upstream_timeout_is_504_at_exactly_the_deadline() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::After(100, CHAT), &Up::Silent);
    assert_eq!((out.status, out.code().as_str()), (504, "upstream_timeout"));
    assert_eq!(
        sim.ms(),
        1_000 + 100 + 1_500,
        "the upstream timeout runs from the send"
    );
}

#[test]
fn a_buffered_answer_has_the_upstream_timeout_from_the_send_not_from_the_request_start() {
    // The client took 900 ms to send its body; the upstream answers its head after 1,000 ms
    // and its body 400 ms later: 1,400 ms after the send, inside the 1,500 ms.
    let slow_body = Up::Head {
        after_ms: 1_000,
        status: 200,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Whole(400, ANSWER),
    };
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::After(900, CHAT), &slow_body);
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));

    let too_slow = Up::Head {
        after_ms: 1_000,
        status: 200,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Whole(600, ANSWER),
    };
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::After(900, CHAT), &too_slow);
    assert_eq!(out.status, 504);
    assert_eq!(sim.ms(), 1_000 + 900 + 1_500);
}

#[test]
fn transport_errors_keep_their_kind_in_the_log() {
    for (e, status, code) in [
        (TransportError::Refused, 502, "upstream_unreachable"),
        (TransportError::Reset, 502, "upstream_unreachable"),
        (TransportError::Tls, 502, "upstream_unreachable"),
        (TransportError::Dns, 502, "upstream_unreachable"),
        (TransportError::TimedOut, 504, "upstream_timeout"),
    ] {
        let mut sim = Sim::new(CONFIG);
        let out = sim.drive(sim.chat(), ClientBody::After(1, CHAT), &Up::Fail(3, e));
        assert_eq!((out.status, out.code().as_str()), (status, code), "{e:?}");
        assert_eq!(out.log.upstream_error, Some(e.as_str()));
    }
}

#[test]
fn a_stream_request_answered_with_json_is_relayed_as_it_comes_not_buffered() {
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    let up = Up::Head {
        after_ms: 5,
        status: 200,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Chunks(vec![(10, b"{\"id\":"), (10, b"\"x\"}")], BodyEnd::Complete),
    };
    let response = sim.until_response(&mut ex, ClientBody::After(0, STREAM0), &up);
    assert!(
        matches!(response.body, ResponseBody::Relay(RelayMode::Untouched)),
        "{response:?}"
    );
    let out = sim.relay(ex, response, &up, 1_000);
    assert_eq!(out.status, 200);
    assert_eq!(out.body, b"{\"id\":\"x\"}");
    assert_eq!(out.chunk_times, vec![15, 25], "each part when it came");
    assert!(sim.store.is_empty());
}

#[test]
fn bodiless_statuses_are_answered_without_a_body_and_odd_ones_are_502() {
    for status in [204u16, 205, 304] {
        let mut sim = Sim::new(CONFIG);
        let up = Up::Head {
            after_ms: 1,
            status,
            headers: vec![
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
            body: UpBody::Whole(0, b"{}"),
        };
        let out = sim.drive(sim.chat(), ClientBody::After(0, CHAT0), &up);
        assert_eq!(out.status, status);
        assert!(out.body.is_empty());
        assert_eq!(out.header("content-length"), None);
        assert!(sim.store.is_empty(), "not cached");
    }
    for status in [101u16, 199, 600, 999] {
        let mut sim = Sim::new(CONFIG);
        let up = Up::Head {
            after_ms: 1,
            status,
            headers: vec![],
            body: UpBody::Whole(0, b"{}"),
        };
        let out = sim.drive(sim.chat(), ClientBody::After(0, CHAT), &up);
        assert_eq!(
            (out.status, out.code().as_str()),
            (502, "upstream_invalid_response")
        );
    }
}

#[test]
fn upstream_errors_pass_through_untouched_with_their_headers() {
    let mut sim = Sim::new(CONFIG);
    let limited = Up::Head {
        after_ms: 5,
        status: 429,
        headers: vec![
            ("content-type", "application/json"),
            ("retry-after", "5"),
            ("x-ratelimit-remaining-requests", "0"),
            ("content-length", "17"),
            ("set-cookie", "a=b"),
            ("server", "upstream/1.0"),
        ],
        body: UpBody::Whole(1, b"{\"error\":\"slow\"}\n"),
    };
    let out = sim.drive(sim.chat(), ClientBody::After(1, CHAT0), &limited);
    assert_eq!(out.status, 429);
    assert_eq!(out.header("retry-after"), Some("5"));
    assert_eq!(out.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(out.header("content-length"), Some("17"));
    assert_eq!(out.header("set-cookie"), None);
    assert_eq!(out.header("server"), None);
    assert_eq!(out.header("x-gateway-cache"), Some("MISS"));
    assert_eq!(out.body, b"{\"error\":\"slow\"}\n");
    assert!(sim.store.is_empty(), "errors are never stored");
}

#[test]
fn errors_after_the_cache_decision_carry_the_cache_status_on_every_runtime() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(sim.chat(), ClientBody::After(1, CHAT0), &Up::Silent);
    assert_eq!(out.status, 504);
    assert_eq!(out.header("x-gateway-cache"), Some("MISS"));
    assert_eq!(out.log.cache, Some("miss"));
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(1, CHAT),
        &Up::Fail(1, TransportError::Refused),
    );
    assert_eq!(out.header("x-gateway-cache"), Some("BYPASS"));
}

#[test]
fn stream_chunks_reach_the_client_when_they_arrive_and_a_clean_end_adds_nothing() {
    let mut sim = Sim::new(CONFIG);
    let up = sse_answer(
        vec![(200, SSE[0]), (200, SSE[1]), (200, SSE[2])],
        BodyEnd::Complete,
    );
    let out = sim.drive(sim.chat(), ClientBody::After(0, CHAT), &up);
    assert_eq!(out.status, 200);
    assert_eq!(out.chunk_times, vec![205, 405, 605], "nothing held back");
    assert_eq!(out.body, SSE.concat());
    assert_eq!(out.header("content-length"), None);
    assert!(!out.aborted);
    assert_eq!(out.log.stream_complete, Some(true));
    assert_eq!(out.log.completion_tokens, Some(1));
    assert_eq!(out.log.total_ms, 605.0);
    assert_eq!(out.log.bytes_out, SSE.concat().len() as u64);
}

#[test]
fn a_cut_off_or_failed_stream_ends_with_an_error_event_and_is_not_stored() {
    for end in [BodyEnd::Complete, BodyEnd::Failed] {
        let mut sim = Sim::new(CONFIG);
        let up = sse_answer(vec![(10, SSE[0])], end);
        let out = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &up);
        let text = String::from_utf8_lossy(&out.body);
        assert!(
            text.ends_with("\n\n") && text.contains("upstream_stream_interrupted"),
            "{text}"
        );
        assert!(
            !out.aborted,
            "an event stream says it was cut off with an event"
        );
        assert_eq!(out.log.stream_complete, Some(false));
        assert!(sim.store.is_empty());
    }
}

#[test]
fn a_stream_silent_for_the_idle_timeout_is_ended_with_an_error_event() {
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    let up = sse_answer(vec![(0, SSE[0])], BodyEnd::Complete);
    let Response { body, .. } = sim.until_response(&mut ex, ClientBody::After(0, STREAM0), &up);
    assert!(
        matches!(body, ResponseBody::Relay(RelayMode::Filter)),
        "no usage asked for: the gateway's usage chunk is cut"
    );
    let head_at = sim.now().instant;
    assert_eq!(
        ex.poll_timeout(),
        Some(head_at.plus(Duration::from_secs(2)))
    );
    sim.advance(1_500);
    ex.on_chunk_filtered(Bytes::from_static(SSE[1]), sim.now());
    let deadline = sim.now().instant.plus(Duration::from_secs(2));
    assert_eq!(
        ex.poll_timeout(),
        Some(deadline),
        "every chunk restarts the idle time"
    );
    sim.advance(1_999);
    let now = sim.now();
    assert!(
        ex.handle_relay_timeout(now, &mut sim.router).is_none(),
        "not yet: re-arm"
    );
    sim.advance(1);
    let now = sim.now();
    let end = ex
        .handle_relay_timeout(now, &mut sim.router)
        .expect("stalled");
    let tail = String::from_utf8(end.tail.unwrap().to_vec()).unwrap();
    assert!(tail.starts_with("data: {\"error\"") && tail.contains("upstream_stream_timeout"));
    assert!(end.store.is_none() && !end.abort);
    assert!(
        sim.router.take_wakeup(),
        "identical requests waiting on it are released"
    );
    assert_eq!(ex.poll_timeout(), None, "the relay is over");
    let log = ex.finish(now, &mut sim.router).unwrap();
    assert_eq!(log.stream_complete, Some(false));
    assert_eq!(log.error_code.as_deref(), Some("upstream_stream_timeout"));
}

#[test]
fn a_silent_error_body_is_aborted_at_the_idle_timeout() {
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    let up = Up::Head {
        after_ms: 1,
        status: 404,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Chunks(Vec::new(), BodyEnd::Complete),
    };
    sim.until_response(&mut ex, ClientBody::After(0, CHAT), &up);
    sim.advance(2_000);
    let now = sim.now();
    assert!(ex.handle_relay_timeout(now, &mut sim.router).unwrap().abort);
}

#[test]
fn models_are_fetched_from_the_upstream_when_none_are_configured_with_the_query() {
    let mut sim = Sim::new(CONFIG);
    let mut map = HeaderMap::new();
    map.insert("authorization", HeaderValue::from_static("Bearer client-1"));
    let ex = Exchange::new(
        sim.gw.clone(),
        RequestParts {
            method: "GET",
            path: "/v1/models",
            query: Some("api-version=2"),
            headers: map,
            location: ClientLocation::default(),
        },
        sim.now(),
        [3; 16],
    );
    let out = sim.drive(
        ex,
        ClientBody::Never,
        &json_answer(2, br#"{"object":"list","data":[]}"#),
    );
    assert_eq!(out.status, 200);
    assert_eq!(sim.sends[0].method, "GET");
    assert_eq!(
        sim.sends[0].url,
        "http://up.example/v1/models?api-version=2"
    );
    assert!(sim.sends[0].body.is_empty());
    assert_eq!(
        out.header("x-gateway-cache"),
        None,
        "only inference routes are cached"
    );
}

#[test]
fn stored_bytes_from_a_shared_store_are_checked_before_they_are_served() {
    let mut sim = Sim::new(CONFIG);
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(1, ANSWER),
    );
    let (key, entry) = sim
        .store
        .iter()
        .next()
        .map(|(k, e)| (*k, e.clone()))
        .unwrap();
    let encoded = Bytes::from(entry.encode());
    for (bytes, hit) in [
        (encoded.clone(), true),
        (Bytes::from_static(b"garbage"), false),
        (encoded.slice(..encoded.len() - 1), false),
    ] {
        let mut ex = sim.chat();
        sim.poll(&mut ex);
        ex.on_body(Bytes::from_static(CHAT0), sim.now());
        let Action::Lookup { key: asked, .. } = sim.poll(&mut ex) else {
            panic!()
        };
        assert_eq!(asked, key);
        ex.on_lookup(Some(Found::Encoded(bytes)), sim.now());
        let next = sim.poll(&mut ex);
        assert_eq!(matches!(next, Action::Respond(_)), hit, "{next:?}");
    }
}

#[test]
fn a_failed_error_body_is_aborted_so_the_client_sees_the_truncation() {
    let mut sim = Sim::new(CONFIG);
    // A client error (not one another upstream could improve on) is relayed as it comes.
    let up = Up::Head {
        after_ms: 1,
        status: 400,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Chunks(vec![(1, b"{\"err")], BodyEnd::Failed),
    };
    let out = sim.drive(sim.chat(), ClientBody::After(0, CHAT), &up);
    assert_eq!(out.status, 400);
    assert!(out.aborted);
    assert_eq!(out.log.bytes_out, 5, "what was really relayed");
}

#[test]
fn a_deterministic_answer_is_stored_then_served_from_the_cache_with_its_age() {
    let mut sim = Sim::new(CONFIG);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.header("x-gateway-cache"), Some("MISS"));
    assert_eq!(sim.store.len(), 1);
    sim.advance(3_000);
    let out = sim.drive(sim.chat(), ClientBody::After(0, CHAT0), &Up::Silent);
    assert_eq!(out.status, 200);
    assert_eq!(out.body, ANSWER);
    assert_eq!(out.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(out.header("age"), Some("3"));
    assert_eq!(sim.sends.len(), 1, "the hit made no upstream call");
    assert_eq!(out.log.cache, Some("hit"));
}

#[test]
fn a_complete_stream_is_stored_and_replayed_byte_for_byte() {
    let mut sim = Sim::new(CONFIG);
    let up = sse_answer(
        vec![(5, SSE[0]), (5, SSE[1]), (5, SSE[2])],
        BodyEnd::Complete,
    );
    let first = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &up);
    assert_eq!(sim.store.len(), 1);
    let second = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &Up::Silent);
    assert_eq!(second.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("content-type"), Some("text/event-stream"));
}

#[test]
fn identical_concurrent_misses_make_one_upstream_call_and_share_the_answer() {
    let mut sim = Sim::new(CONFIG);
    let mut leader = sim.chat();
    let mut waiter = sim.chat();
    // Both read their bodies and miss the cache.
    for ex in [&mut leader, &mut waiter] {
        assert!(matches!(sim.poll(ex), Action::ReadBody { .. }));
        ex.on_body(Bytes::from_static(CHAT0), sim.now());
        assert!(matches!(sim.poll(ex), Action::Lookup { .. }));
        ex.on_lookup(None, sim.now());
    }
    let Action::Send(attempt) = sim.poll(&mut leader) else {
        panic!("the first miss calls the upstream")
    };
    assert!(matches!(sim.poll(&mut waiter), Action::AwaitFlight));
    assert!(
        waiter.poll_timeout().is_some(),
        "a waiter never waits forever"
    );

    sim.advance(50);
    let mut head = HeaderMap::new();
    head.insert("content-type", HeaderValue::from_static("application/json"));
    leader.on_response_head(attempt.id, 200, head, sim.now(), &mut sim.router);
    assert!(matches!(
        sim.poll(&mut leader),
        Action::ReadUpstreamBody { .. }
    ));
    leader.on_upstream_body(Bytes::from_static(ANSWER), sim.now(), &mut sim.router);
    assert!(matches!(sim.poll(&mut leader), Action::Store(_)));
    assert!(
        !sim.router.take_wakeup(),
        "not before the runtime stored it"
    );
    assert!(matches!(sim.poll(&mut leader), Action::Respond(_)));
    assert!(sim.router.take_wakeup(), "the response wakes the waiter");

    waiter.on_wakeup(sim.now());
    let Action::Respond(r) = sim.poll(&mut waiter) else {
        panic!("the waiter answers")
    };
    assert_eq!(r.headers.get("x-gateway-cache").unwrap(), "HIT");
    assert!(matches!(r.body, ResponseBody::Full(ref b) if &b[..] == ANSWER));
}

#[test]
fn waiters_call_the_upstream_themselves_when_the_leader_has_nothing_to_share() {
    let mut sim = Sim::new(CONFIG);
    let mut leader = sim.chat();
    let mut waiter = sim.chat();
    for ex in [&mut leader, &mut waiter] {
        sim.poll(ex);
        ex.on_body(Bytes::from_static(CHAT0), sim.now());
        sim.poll(ex);
        ex.on_lookup(None, sim.now());
    }
    let Action::Send(attempt) = sim.poll(&mut leader) else {
        panic!()
    };
    assert!(matches!(sim.poll(&mut waiter), Action::AwaitFlight));
    leader.on_transport_error(
        attempt.id,
        TransportError::Reset,
        sim.now(),
        &mut sim.router,
    );
    assert!(matches!(sim.poll(&mut leader), Action::Respond(_)));
    assert!(sim.router.take_wakeup());
    waiter.on_wakeup(sim.now());
    assert!(matches!(sim.poll(&mut waiter), Action::Send(_)));
}

#[test]
fn a_waiter_gives_up_at_its_deadline_and_calls_the_upstream() {
    let mut sim = Sim::new(CONFIG);
    let mut leader = sim.chat();
    sim.poll(&mut leader);
    leader.on_body(Bytes::from_static(CHAT0), sim.now());
    sim.poll(&mut leader);
    leader.on_lookup(None, sim.now());
    assert!(matches!(sim.poll(&mut leader), Action::Send(_)));
    // The waiter runs the whole loop: its flight wait times out, then it calls the upstream.
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert_eq!(sim.sends.len(), 1, "the waiter's own call");
    assert_eq!(
        out.log.total_ms, 1_505.0,
        "waited the upstream timeout, then 5 ms"
    );
}

#[test]
fn a_client_gone_mid_stream_releases_the_waiters_and_is_logged_incomplete() {
    let mut sim = Sim::new(CONFIG);
    let mut leader = sim.chat();
    sim.poll(&mut leader);
    leader.on_body(Bytes::from_static(STREAM0), sim.now());
    sim.poll(&mut leader);
    leader.on_lookup(None, sim.now());
    let Action::Send(a) = sim.poll(&mut leader) else {
        panic!()
    };
    let mut head = HeaderMap::new();
    head.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    leader.on_response_head(a.id, 200, head, sim.now(), &mut sim.router);
    // One attempt allowed: nothing could take over, so the head goes out at once.
    let Action::Respond(r) = sim.poll(&mut leader) else {
        panic!()
    };
    assert!(r.store_on_end, "a recorded stream may be stored at its end");
    assert!(r.prefix.is_empty());
    assert!(
        sim.router.take_wakeup(),
        "the stream goes live: streamed waiters may follow it"
    );
    leader.on_chunk(&Bytes::from_static(SSE[0]), sim.now());
    assert!(!leader.publish_due(), "nobody follows: nothing to publish");
    let log = leader.finish(sim.now(), &mut sim.router).unwrap();
    assert!(
        sim.router.take_wakeup(),
        "the client went away: nothing to share"
    );
    assert_eq!(log.stream_complete, Some(false));
    assert!(sim.store.is_empty());
}

#[test]
fn a_failing_shared_store_is_skipped_during_its_backoff() {
    let mut sim = Sim::new(CONFIG);
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(1, ANSWER),
    );
    let now = sim.now().instant;
    sim.router.store_result(false, now);
    sim.store.clear();
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(1, ANSWER),
    );
    sim.advance(3_000);
    sim.store.clear();
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(1, ANSWER),
    );
    assert_eq!(sim.shared_lookups, vec![true, false, true]);
}

#[test]
fn no_cache_skips_the_lookup_and_refreshes_the_entry_no_store_bypasses() {
    let mut sim = Sim::new(CONFIG);
    let fresh = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("cache-control", "no-cache"),
        ],
    );
    let out = sim.drive(fresh, ClientBody::After(0, CHAT0), &json_answer(1, ANSWER));
    assert_eq!(out.header("x-gateway-cache"), Some("MISS"));
    assert!(sim.shared_lookups.is_empty(), "no lookup");
    assert_eq!(sim.store.len(), 1, "the entry is refreshed");
    let bypass = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("cache-control", "no-store"),
        ],
    );
    let out = sim.drive(bypass, ClientBody::After(0, CHAT0), &json_answer(1, ANSWER));
    assert_eq!(out.header("x-gateway-cache"), Some("BYPASS"));
    assert_eq!(sim.sends.len(), 2);
}

#[test]
fn reports_for_another_attempt_or_step_are_ignored() {
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    sim.poll(&mut ex);
    ex.on_response_head(
        AttemptId(9),
        200,
        HeaderMap::new(),
        sim.now(),
        &mut sim.router,
    );
    ex.on_body(Bytes::from_static(CHAT), sim.now());
    let Action::Send(a) = sim.poll(&mut ex) else {
        panic!()
    };
    ex.on_transport_error(
        AttemptId(a.id.0 + 1),
        TransportError::Reset,
        sim.now(),
        &mut sim.router,
    );
    ex.on_body(Bytes::from_static(b"again"), sim.now());
    ex.on_transport_error(a.id, TransportError::Refused, sim.now(), &mut sim.router);
    let Action::Respond(r) = sim.poll(&mut ex) else {
        panic!()
    };
    assert_eq!(r.status, 502);
}

#[test]
fn polling_without_reporting_is_a_500_not_a_hang_or_a_panic() {
    let mut sim = Sim::new(CONFIG);
    let mut ex = sim.chat();
    assert!(matches!(sim.poll(&mut ex), Action::ReadBody { .. }));
    let Action::Respond(r) = sim.poll(&mut ex) else {
        panic!()
    };
    assert_eq!(r.status, 500);
    let Action::Respond(again) = sim.poll(&mut ex) else {
        panic!()
    };
    assert_eq!(again.status, 500);
}

#[test]
fn invalid_settings_answer_500_naming_the_setting_and_are_logged() {
    let sim = Sim::new(CONFIG);
    let mut ex = Exchange::refused(
        "sim",
        ConfigError::new("UPSTREAM_BASE_URL", "is required"),
        RequestParts {
            method: "GET",
            path: "/health",
            query: None,
            headers: HeaderMap::new(),
            location: ClientLocation::default(),
        },
        sim.now(),
        [1; 16],
    );
    let mut router = Router::new();
    let Action::Respond(r) = ex.poll_action(sim.now(), &mut router) else {
        panic!()
    };
    assert_eq!(r.status, 500);
    let ResponseBody::Full(body) = r.body else {
        panic!()
    };
    assert!(String::from_utf8_lossy(&body).contains("UPSTREAM_BASE_URL"));
    let log = ex.finish(sim.now(), &mut router).unwrap();
    assert_eq!(log.error_code.as_deref(), Some("gateway_misconfigured"));
    assert_eq!(
        log.error_detail.as_deref(),
        Some("UPSTREAM_BASE_URL: is required"),
        "the details go to the log"
    );
}

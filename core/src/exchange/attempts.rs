//! The attempt loop: which upstream next, what a failure means (fail over, eject, give up), a
//! stream held back until its first content, keepalives while nothing has come, and what the
//! client gets when every attempt failed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

use super::{
    Attempt, AttemptId, AttemptLog, BodyEnd, Exchange, Response, ResponseBody, Step, Timer,
    UpstreamHead, MAX_HELD_PREFIX,
};
use crate::config::{Platform, Settings};
use crate::error::GatewayError;
use crate::geo::ClientLocation;
use crate::headers;
use crate::router::{OrderRequest, Report, Router, Verdict};
use crate::routing::{backoff::backoff, geo, retry_hint};
use crate::time::{millis_f64, Now};

/// An upstream answer kept in case no other upstream does better.
#[derive(Debug)]
pub(super) struct Held {
    head: UpstreamHead,
    body: Bytes,
    upstream: usize,
}

/// Why an attempt failed, as far as the client's eventual answer is concerned.
#[derive(Debug)]
pub(super) enum Failure {
    /// An answer the client may get as it was.
    Answer(Held),
    /// The upstream refused the operator's key: never shown to the client.
    Auth,
    /// No usable answer.
    Error(GatewayError),
}

/// Statuses after which another upstream may do better: 401/403 (the operator's key), 408,
/// 429 and every 5xx. Other client errors are the client's own and pass through.
pub(super) fn may_fail_over(status: u16) -> bool {
    matches!(status, 401 | 403 | 408 | 429) || (500..=599).contains(&status)
}

/// Where the client is: the edge's coordinates, else (natively) the Fly region its request
/// came through or the machine's own, else the centre of its continent.
pub(super) fn client_point(
    settings: &Settings,
    location: &ClientLocation,
    headers: &HeaderMap,
) -> Option<(f64, f64)> {
    if let (Some(lat), Some(lon)) = (location.latitude, location.longitude) {
        return Some((lat, lon));
    }
    if settings.platform == Platform::Native {
        let fly = headers
            .get("fly-region")
            .and_then(|v| v.to_str().ok())
            .and_then(|code| geo::fly_region(code.trim()));
        if let Some(p) = fly.or_else(|| settings.region.as_deref().and_then(geo::fly_region)) {
            return Some(p);
        }
    }
    location
        .continent
        .as_deref()
        .and_then(geo::continent_centre)
}

fn header_value(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

impl Exchange {
    pub(super) fn idle_timeout(&self) -> Duration {
        self.gw
            .settings()
            .stream_idle_timeout(self.log.model.as_deref())
    }

    fn upstream_name(&self, i: usize) -> String {
        self.gw
            .settings()
            .upstreams
            .get(i)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to spread choices; seeded from the runtime's RNG.
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The upstream to try next, or `None` when it is time to wait (backoff) or give up (the
    /// step is then set).
    fn next_upstream(&mut self, now: Now, router: &mut Router) -> Option<usize> {
        let gw = self.gw.clone();
        let settings = gw.settings();
        if self.order.is_none() {
            let model = self.log.model.clone().unwrap_or_default();
            let random = self.next_random();
            let req = OrderRequest {
                model: &model,
                client: self.client_point,
                pin: self.pin.as_deref(),
                now: now.instant,
                random,
            };
            let order = router.order(settings, &req);
            if order.is_empty() {
                // A tier's model that no upstream serves: the next one may be.
                if self.next_model() {
                    return self.next_upstream(now, router);
                }
                if self.attempts > 0 {
                    self.give_up(now, router);
                } else {
                    self.fail(GatewayError::ModelNotServed { model });
                }
                return None;
            }
            self.order = Some(order);
            self.attempts_deadline = Some(now.instant.plus(settings.routing.deadline));
        }
        let routing = &settings.routing;
        let out_of_time = self.attempts_deadline.is_some_and(|d| now.instant >= d);
        if !self.attempts_left() || out_of_time {
            if !out_of_time && self.next_model() {
                return self.next_upstream(now, router);
            }
            self.give_up(now, router);
            return None;
        }
        if let Some(i) = self.after_backoff.take() {
            return Some(i);
        }
        let next = self
            .order
            .as_deref()
            .and_then(|o| o.get(self.next_in_order))
            .copied();
        if let Some(i) = next {
            self.next_in_order += 1;
            return Some(i);
        }
        // Every upstream of this model was tried: a tier's next model, before another round.
        if self.next_model() {
            return self.next_upstream(now, router);
        }
        // Every upstream in the order was tried: another round, on those still available (not
        // ejected or open-circuited by this request's own failures), after a backoff.
        let order = self.order.as_deref().unwrap_or_default();
        let Some(&i) = order.iter().find(|&&i| router.available(i, now.instant)) else {
            self.give_up(now, router);
            return None;
        };
        let random = self.next_random();
        let cap = routing.retry_backoff.saturating_mul(32);
        let wait = backoff(self.rounds, routing.retry_backoff, cap, random);
        self.rounds = self.rounds.saturating_add(1);
        let until = now.instant.plus(wait);
        if self.attempts_deadline.is_some_and(|d| until >= d) {
            self.give_up(now, router);
            return None;
        }
        self.after_backoff = Some(i);
        self.deadline = Some((until, Timer::Backoff));
        self.step = Step::Backoff;
        None
    }

    /// Whether another attempt could follow the current one (so a stream is worth holding back
    /// until its first content).
    pub(super) fn may_try_again(&self) -> bool {
        self.attempts < self.gw.settings().routing.max_attempts || !self.chain.is_empty()
    }

    /// The next attempt, if there is one to make now.
    pub(super) fn start_attempt(&mut self, now: Now, router: &mut Router) -> Option<Attempt> {
        let i = self.next_upstream(now, router)?;
        let gw = self.gw.clone();
        let settings = gw.settings();
        let upstream = settings.upstreams.get(i)?;
        router.begin(i, now.instant);
        self.busy_start(now);
        self.current = Some((i, false));
        self.attempts += 1;
        self.sent_at = Some(now.instant);
        self.upstream = None;
        self.relay = None;
        let first_byte = now
            .instant
            .plus(settings.first_byte_timeout(self.log.model.as_deref()));
        let at = match self.attempts_deadline {
            Some(d) if d < first_byte => d,
            _ => first_byte,
        };
        self.deadline = Some((at, Timer::Upstream));
        if self.log.stream && self.keepalive_at.is_none() && !self.committed {
            let after = settings.routing.keepalive_after;
            if !after.is_zero() {
                self.keepalive_at = Some(self.started.plus(after));
            }
        }
        self.step = Step::AwaitHead;
        let mut out = self.forward_headers().clone();
        for (name, value) in &upstream.headers {
            out.insert(name.clone(), value.clone());
        }
        let (method, path) = match &self.forward {
            Some(f) => (f.method, f.path.as_str()),
            None => ("GET", ""),
        };
        if let Some(auth) = &upstream.authorization {
            out.insert(AUTHORIZATION, auth.clone());
        }
        out.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        out.insert(headers::REQUEST_ID, self.request_id.clone());
        Some(Attempt {
            id: AttemptId(self.attempts),
            upstream: i,
            upstream_name: upstream.name.clone(),
            method,
            url: format!("{}{}", upstream.base_url, path),
            headers: out,
            // Reference-counted: every attempt sends the same bytes without a copy.
            body: if method == "GET" {
                Bytes::new()
            } else {
                self.body.clone()
            },
        })
    }

    /// The client's headers that go upstream, filtered once for every attempt.
    fn forward_headers(&mut self) -> &HeaderMap {
        if self.forward_headers.is_none() {
            let client_headers = std::mem::take(&mut self.headers);
            let mut out = HeaderMap::with_capacity(client_headers.len() + 3);
            // A name comes once for all its values (`None` for the later ones).
            let mut current: Option<(http::HeaderName, bool)> = None;
            for (name, value) in client_headers {
                if let Some(n) = name {
                    let forward = headers::forward_to_upstream(n.as_str());
                    current = Some((n, forward));
                }
                if let Some((n, true)) = &current {
                    out.append(n.clone(), value);
                }
            }
            self.forward_headers = Some(out);
        }
        self.forward_headers.get_or_insert_with(HeaderMap::new)
    }

    fn record_attempt(&mut self, outcome: String, now: Now) {
        let Some((i, _)) = self.current else {
            return;
        };
        let ms = self
            .sent_at
            .map_or(0.0, |s| millis_f64(now.instant.since(s)));
        let upstream = self.upstream_name(i);
        let model = self
            .log
            .selection
            .as_ref()
            .and_then(|_| self.log.model.clone());
        self.log.attempts.push(AttemptLog {
            upstream,
            model,
            outcome,
            ms,
        });
    }

    /// The current attempt succeeded (content, or an answer that is the client's own): its
    /// upstream is healthy; it stays in flight until the response ends.
    pub(super) fn healthy(&mut self, now: Now, router: &mut Router) {
        let Some((i, false)) = self.current else {
            return;
        };
        self.current = Some((i, true));
        let latency = self.sent_at.map(|s| now.instant.since(s));
        let status = self.upstream.as_ref().map(|h| h.status);
        let outcome = match status {
            Some(s) if !(200..300).contains(&s) => format!("http_{s}"),
            _ => "ok".to_string(),
        };
        self.record_attempt(outcome, now);
        self.log.upstream = Some(self.upstream_name(i));
        let gw = self.gw.clone();
        let report = Report {
            verdict: Verdict::Healthy,
            kind: "ok",
            latency,
            started: self.sent_at,
        };
        router.report(gw.settings(), i, report, now.instant, now.unix);
    }

    /// The current attempt failed: record it, tell the router, and move on to the next.
    pub(super) fn attempt_failed(
        &mut self,
        now: Now,
        router: &mut Router,
        verdict: Verdict,
        kind: &'static str,
        failure: Failure,
    ) {
        self.deadline = None;
        self.relay = None;
        self.prefix.clear();
        self.prefix_len = 0;
        self.busy_stop(now);
        if let Some((i, _)) = self.current {
            self.record_attempt(kind.to_string(), now);
            let gw = self.gw.clone();
            let report = Report {
                verdict,
                kind,
                latency: None,
                started: self.sent_at,
            };
            router.report(gw.settings(), i, report, now.instant, now.unix);
            router.release(i);
        }
        self.current = None;
        match failure {
            Failure::Answer(h) => self.held = Some(h),
            Failure::Auth => self.auth_failures += 1,
            Failure::Error(e) => self.last_failure = Some(e),
        }
        self.step = Step::Send;
    }

    /// An answer with a status another upstream may improve on, read whole.
    pub(super) fn upstream_refused(
        &mut self,
        head: UpstreamHead,
        body: Bytes,
        now: Now,
        router: &mut Router,
    ) {
        let status = head.status;
        let (verdict, kind) = match status {
            401 | 403 => (
                Verdict::EjectMax,
                if status == 401 {
                    "http_401"
                } else {
                    "http_403"
                },
            ),
            429 if retry_hint::is_insufficient_quota(&body) => {
                (Verdict::EjectMax, "insufficient_quota")
            }
            429 => (
                Verdict::Eject(retry_hint::retry_hint(&head.headers, Some(&body), now.unix)),
                "http_429",
            ),
            503 => match retry_hint::retry_hint(&head.headers, Some(&body), now.unix) {
                Some(hint) => (Verdict::Eject(Some(hint)), "http_503"),
                None => (Verdict::Failed, "http_503"),
            },
            408 => (Verdict::Failed, "http_408"),
            500 => (Verdict::Failed, "http_500"),
            502 => (Verdict::Failed, "http_502"),
            504 => (Verdict::Failed, "http_504"),
            _ => (Verdict::Failed, "http_5xx"),
        };
        let failure = if matches!(status, 401 | 403) {
            // Loud: the operator's key for this upstream is wrong or revoked.
            self.log.error_detail = Some(format!(
                "upstream {} refused the gateway's key ({status}); ejected",
                self.current
                    .map(|(i, _)| self.upstream_name(i))
                    .unwrap_or_default()
            ));
            Failure::Auth
        } else {
            let upstream = self.current.map_or(0, |(i, _)| i);
            Failure::Answer(Held {
                head,
                body,
                upstream,
            })
        };
        let outcome = if kind == "http_5xx" {
            format!("http_{status}")
        } else {
            kind.to_string()
        };
        self.attempt_failed_as(now, router, verdict, kind, outcome, failure);
    }

    fn attempt_failed_as(
        &mut self,
        now: Now,
        router: &mut Router,
        verdict: Verdict,
        kind: &'static str,
        outcome: String,
        failure: Failure,
    ) {
        if let Some((i, _)) = self.current {
            self.record_attempt(outcome, now);
            let gw = self.gw.clone();
            let report = Report {
                verdict,
                kind,
                latency: None,
                started: self.sent_at,
            };
            router.report(gw.settings(), i, report, now.instant, now.unix);
            router.release(i);
            self.current = None;
        }
        self.attempt_failed(now, router, verdict, kind, failure);
    }

    /// Every attempt failed (or none is left): the client gets the last upstream answer that
    /// was not a 401/403, as it was; else 502 `upstream_auth_failed` when only keys were
    /// refused; else the last failure.
    pub(super) fn give_up(&mut self, now: Now, router: &mut Router) {
        self.give_up_with(now, router, None);
    }

    pub(super) fn give_up_with(
        &mut self,
        now: Now,
        router: &mut Router,
        passthrough: Option<UpstreamHead>,
    ) {
        self.deadline = None;
        self.keepalive_at = None;
        if let Some(head) = passthrough {
            // Committed: a non-stream answer to a stream request after keepalives.
            let err = GatewayError::UpstreamInvalidResponse;
            self.log.error_code = err.code().map(str::to_string);
            self.log.status = head.status;
            self.outbox = Some(Bytes::from(err.sse_event()));
            self.step = Step::End { abort: false };
            return;
        }
        if let Some(held) = self.held.take() {
            self.log.upstream = Some(self.upstream_name(held.upstream));
            if self.committed {
                self.outbox = Some(sse_of_answer(&held));
                self.log.error_code = Some(format!("upstream_{}", held.head.status));
                self.step = Step::End { abort: false };
                return;
            }
            let mut response = self.upstream_response_from(
                &held.head,
                ResponseBody::Full(held.body.clone()),
                Some(held.upstream),
            );
            response.headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(held.body.len()),
            );
            let order = self.order.clone().unwrap_or_default();
            // With one upstream the answer goes as it was; with several, one without a hint
            // says when the first of them is back.
            if !response.headers.contains_key(RETRY_AFTER) && order.len() > 1 {
                if let Some(at) = router.soonest_available(&order, now.instant) {
                    let secs = at.since(now.instant).as_millis().div_ceil(1000);
                    response
                        .headers
                        .insert(RETRY_AFTER, header_value(secs.max(1) as u64));
                }
            }
            if held.head.status >= 400 {
                self.log.error_code = Some(format!("upstream_{}", held.head.status));
            }
            self.step = Step::Respond(response);
            return;
        }
        let err = if self.auth_failures > 0 && self.last_failure.is_none() {
            GatewayError::UpstreamAuthFailed
        } else {
            self.last_failure
                .take()
                .unwrap_or(GatewayError::UpstreamAuthFailed)
        };
        self.fail(err);
    }

    /// Keepalives are due while nothing has come: the response head goes out now (`200`, an
    /// event stream), its body driven by this exchange.
    pub(super) fn commit(&mut self, now: Now) -> Response {
        self.committed = true;
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        headers.insert(headers::REQUEST_ID, self.request_id.clone());
        if let Some(c) = self.cache_status {
            headers.insert(
                crate::cache::STATUS_HEADER,
                HeaderValue::from_static(c.header_value()),
            );
        }
        self.log.status = 200;
        self.model_headers(&mut headers);
        let _ = now;
        // The first keepalive goes out with the head.
        self.outbox = Some(Bytes::from_static(b": keepalive\n\n"));
        Response {
            status: 200,
            headers,
            body: ResponseBody::Driven,
            prefix: Bytes::new(),
            store_on_end: false,
        }
    }

    /// A chunk of the current upstream body, for [`super::Action::ReadUpstreamChunk`].
    pub fn on_upstream_chunk(
        &mut self,
        id: AttemptId,
        chunk: Bytes,
        now: Now,
        router: &mut Router,
    ) {
        if !matches!(self.step, Step::AwaitChunk) || id != AttemptId(self.attempts) {
            return;
        }
        let Some(relay) = &mut self.relay else {
            return;
        };
        let had_content = relay.sse.as_ref().is_none_or(|s| s.saw_content());
        relay.last_activity = now.instant;
        if let Some(o) = &mut relay.sse {
            o.observe(&chunk);
        }
        let chunk = match &mut relay.hide {
            Some(h) => h.filter(chunk),
            None => chunk,
        };
        if let Some(r) = &mut relay.recorder {
            if r.record(&chunk) {
                router.publish();
            }
        }
        self.log.bytes_out += chunk.len() as u64;
        self.relay_counted += chunk.len() as u64;
        if had_content {
            // A driven stream after its first content: straight through.
            self.deadline = Some((now.instant.plus(self.idle_timeout()), Timer::Idle));
            if !chunk.is_empty() {
                self.outbox = Some(chunk);
            }
            return;
        }
        let (content, error) = relay
            .sse
            .as_ref()
            .map_or((true, false), |s| (s.saw_content(), s.saw_error()));
        self.prefix_len += chunk.len();
        self.prefix.push(chunk);
        if error && !content {
            // An error event before any content: the next upstream may do better. The events
            // are kept as this upstream's answer in case none does.
            self.log.bytes_out = 0;
            self.relay_counted = 0;
            let body = self.take_prefix();
            return self.stream_failed(body, "stream_error", now, router);
        }
        if !content && self.prefix_len <= MAX_HELD_PREFIX {
            return;
        }
        self.healthy(now, router);
        let prefix = self.take_prefix();
        self.keepalive_at = None;
        if self.committed {
            self.deadline = Some((now.instant.plus(self.idle_timeout()), Timer::Idle));
            self.first_token(now);
            // The head went out with the keepalives: this is the stream identical requests
            // may follow from now on.
            self.go_live(
                200,
                Some(HeaderValue::from_static("text/event-stream")),
                router,
            );
            if !prefix.is_empty() {
                self.outbox = Some(prefix);
            }
            return;
        }
        self.deadline = None;
        let Some(head) = self.upstream.take() else {
            return;
        };
        let mut response = self.upstream_response(&head, ResponseBody::Relay(self.stream_mode()));
        response.prefix = prefix;
        response.store_on_end = self.relay.as_ref().is_some_and(|r| r.recorder.is_some());
        self.step = Step::Respond(response);
    }

    fn take_prefix(&mut self) -> Bytes {
        self.prefix_len = 0;
        match self.prefix.len() {
            0 => Bytes::new(),
            1 => self.prefix.pop().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(self.prefix.iter().map(Bytes::len).sum());
                for p in self.prefix.drain(..) {
                    all.extend_from_slice(&p);
                }
                all.freeze()
            }
        }
    }

    fn stream_failed(&mut self, body: Bytes, kind: &'static str, now: Now, router: &mut Router) {
        let Some(head) = self.upstream.take() else {
            return self.attempt_failed(
                now,
                router,
                Verdict::Failed,
                kind,
                Failure::Error(GatewayError::UpstreamStreamInterrupted),
            );
        };
        let upstream = self.current.map_or(0, |(i, _)| i);
        self.attempt_failed(
            now,
            router,
            Verdict::Failed,
            kind,
            Failure::Answer(Held {
                head,
                body,
                upstream,
            }),
        );
    }

    /// The current upstream body ended, for [`super::Action::ReadUpstreamChunk`].
    pub fn on_upstream_end(&mut self, id: AttemptId, end: BodyEnd, now: Now, router: &mut Router) {
        if !matches!(self.step, Step::AwaitChunk) || id != AttemptId(self.attempts) {
            return;
        }
        let content = self
            .relay
            .as_ref()
            .and_then(|r| r.sse.as_ref())
            .is_some_and(|s| s.saw_content());
        if !content {
            // Cut (or ended) before any content: as if it had not answered.
            let tail = self
                .relay
                .as_ref()
                .and_then(|r| r.sse.as_ref())
                .filter(|s| s.needs_termination_error())
                .map(|_| GatewayError::UpstreamStreamInterrupted.sse_event());
            self.log.bytes_out = 0;
            self.relay_counted = 0;
            let mut body = BytesMut::from(&self.take_prefix()[..]);
            if let Some(t) = tail {
                body.extend_from_slice(&t);
            }
            let kind = if end == BodyEnd::Failed {
                "stream_cut"
            } else {
                "stream_ended"
            };
            return self.stream_failed(body.freeze(), kind, now, router);
        }
        // A driven stream after content: its end is the response's.
        self.deadline = None;
        let out = self.on_end(end, now, router);
        self.outbox = out.tail;
        self.step = match out.store {
            Some(store) => Step::StoreThenEnd(store),
            None => Step::End { abort: false },
        };
    }

    /// A driven stream went silent for too long after content.
    pub(super) fn driven_stalled(&mut self, now: Now, router: &mut Router) {
        if let Some(end) = self.handle_relay_timeout_inner(now, router) {
            self.outbox = end.tail;
        }
        self.step = Step::End { abort: false };
    }

    /// Releases the router's hold of the attempt in progress (the response is over).
    pub(super) fn release_current(&mut self, router: &mut Router) {
        if let Some((i, verdict_given)) = self.current.take() {
            if !verdict_given {
                router.release_trial(i);
            }
            router.release(i);
        }
    }

    /// Adds the gateway's routing headers to a response from upstream `i`.
    pub(super) fn routing_headers(&self, headers: &mut HeaderMap, upstream: Option<usize>) {
        if let Some(name) = upstream
            .and_then(|i| self.gw.settings().upstreams.get(i))
            .and_then(|u| HeaderValue::from_str(&u.name).ok())
        {
            headers.insert(headers::UPSTREAM_NAME, name);
        }
        if self.attempts > 0 {
            headers.insert(headers::ATTEMPTS, header_value(u64::from(self.attempts)));
        }
        self.model_headers(headers);
    }
}

/// An upstream's failed answer as one SSE error event (the headers are already out).
fn sse_of_answer(held: &Held) -> Bytes {
    let is_sse = held
        .head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
    if is_sse {
        return held.body.clone();
    }
    let is_error_json = serde_json::from_slice::<serde_json::Value>(&held.body)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
    if is_error_json && !held.body.contains(&b'\n') {
        let mut out = BytesMut::with_capacity(held.body.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&held.body);
        out.extend_from_slice(b"\n\n");
        return out.freeze();
    }
    Bytes::from(GatewayError::UpstreamInvalidResponse.sse_event())
}

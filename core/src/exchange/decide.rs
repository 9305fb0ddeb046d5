//! The decisions between the IO steps: planning, the cache and its flights, the attempt, the
//! responses and their headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

use super::response::Response;
use super::{Attempt, AttemptId, Exchange, ResponseBody, Step, Timer, UpstreamHead};
use crate::cache::{self, CacheEntry, CachePlan, CacheStatus};
use crate::error::GatewayError;
use crate::gateway::Plan;
use crate::headers;
use crate::router::{FlightState, Join, Router};
use crate::time::{Instant, Now};

/// Decisions between the IO steps.
impl Exchange {
    pub(super) fn fail(&mut self, err: GatewayError) {
        self.deadline = None;
        self.log.error_code = err.code().map(str::to_string);
        let response = Response::error(&err, &self.request_id, self.cache_status);
        self.step = Step::Respond(response);
    }

    pub(super) fn set_deadline(&mut self, from: Instant, ms: u64, timer: Timer) {
        self.deadline = Some((from.plus(Duration::from_millis(ms)), timer));
    }

    /// The body is in (or not needed): validate, answer locally, or prepare the upstream call.
    pub(super) fn plan(&mut self) {
        let Some(admitted) = &self.admitted else {
            return self.fail(GatewayError::Internal {
                message: "planned before admission".into(),
            });
        };
        let plan = match self.gw.plan(admitted, self.query.as_deref(), &self.body) {
            Ok(p) => p,
            Err(e) => return self.fail(e),
        };
        match plan {
            Plan::Reply(reply) => {
                let mut headers = HeaderMap::with_capacity(2);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
                headers.insert(headers::REQUEST_ID, self.request_id.clone());
                self.step = Step::Respond(Response {
                    status: reply.status,
                    headers,
                    body: ResponseBody::Full(reply.body),
                    store_on_end: false,
                });
            }
            Plan::Forward(mut forward) => {
                self.log.model = forward.model.clone();
                self.log.stream = forward.stream;
                if admitted.route.has_body() {
                    let plan =
                        self.gw
                            .cache_plan(admitted, &forward, headers::Pairs(&self.headers));
                    match plan {
                        CachePlan::Bypass(_) => self.cache_status = Some(CacheStatus::Bypass),
                        CachePlan::Use(l) => {
                            self.cache_status = Some(CacheStatus::Miss);
                            self.lookup = Some(l);
                        }
                    }
                }
                // The parsed body served validation and the cache key; the bytes are what is sent.
                forward.request = None;
                self.forward = Some(forward);
                self.step = if self.lookup.is_some() {
                    Step::Lookup
                } else {
                    Step::Send
                };
            }
        }
    }

    pub(super) fn join(&mut self, now: Now, router: &mut Router) {
        let Some(key) = self.lookup.as_ref().map(|l| l.key) else {
            self.step = Step::Send;
            return;
        };
        let max_wait = Duration::from_millis(self.gw.settings().upstream_timeout_ms);
        match router.join(key, now.instant, max_wait) {
            Join::Lead(id) => {
                self.leading = Some((key, id));
                self.step = Step::Send;
            }
            Join::Wait { id, until } => {
                self.waiting = Some((key, id));
                let own = self.started.plus(max_wait);
                self.deadline = Some((until.min(own), Timer::Flight));
                self.step = Step::AwaitFlight;
            }
        }
    }

    pub(super) fn check_flight(&mut self, now: Now, router: &mut Router) {
        let Some((key, id)) = self.waiting else {
            self.step = Step::Send;
            return;
        };
        match router.flight(&key, id, now.instant) {
            FlightState::Pending { .. } => self.step = Step::AwaitFlight,
            FlightState::Landed(Some(entry)) => {
                self.waiting = None;
                self.deadline = None;
                self.take_landed(&entry, now);
            }
            // Nothing to share: call the upstream ourselves.
            FlightState::Landed(None) | FlightState::Gone => {
                self.waiting = None;
                self.deadline = None;
                self.step = Step::Send;
            }
        }
    }

    /// Another request's answer, if it fits this request.
    pub(super) fn take_landed(&mut self, entry: &Arc<CacheEntry>, now: Now) {
        let fits = self
            .lookup
            .as_ref()
            .is_some_and(|l| l.accept_entry(entry, now.unix.as_millis()));
        if fits {
            self.hit(entry, now);
        } else {
            self.step = Step::Send;
        }
    }

    pub(super) fn hit(&mut self, entry: &CacheEntry, now: Now) {
        self.cache_status = Some(CacheStatus::Hit);
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&entry.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/json")),
        );
        headers.insert(
            http::header::AGE,
            HeaderValue::from(entry.age_secs(now.unix.as_millis())),
        );
        headers.insert(
            cache::STATUS_HEADER,
            HeaderValue::from_static(CacheStatus::Hit.header_value()),
        );
        headers.insert(headers::REQUEST_ID, self.request_id.clone());
        self.step = Step::Respond(Response {
            status: entry.status,
            headers,
            body: ResponseBody::Full(entry.body.clone()),
            store_on_end: false,
        });
    }

    pub(super) fn attempt(&mut self, now: Now) -> Attempt {
        self.attempts += 1;
        self.sent_at = Some(now.instant);
        self.set_deadline(
            now.instant,
            self.gw.settings().upstream_timeout_ms,
            Timer::Upstream,
        );
        self.step = Step::AwaitHead;
        let (method, url) = match &self.forward {
            Some(f) => (f.method, f.url.clone()),
            None => ("GET", String::new()),
        };
        // The client's headers and body are handed over, not kept: natively they are slices of
        // the connection's read buffer, which a long stream would otherwise pin (about 8 KiB a
        // stream). A second attempt (failover) will keep a compact copy instead.
        let client_headers = std::mem::take(&mut self.headers);
        let body = std::mem::take(&mut self.body);
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
        if let Some(auth) = self.gw.upstream_authorization() {
            out.insert(AUTHORIZATION, auth.clone());
        }
        out.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        out.insert(headers::REQUEST_ID, self.request_id.clone());
        Attempt {
            id: AttemptId(self.attempts),
            method,
            url,
            headers: out,
            body: if method == "GET" { Bytes::new() } else { body },
        }
    }

    /// The response for an upstream answer: its status and the headers that may cross, with
    /// the gateway's own.
    pub(super) fn upstream_response(&self, head: &UpstreamHead, body: ResponseBody) -> Response {
        let mut out = HeaderMap::with_capacity(head.headers.len() + 3);
        for (name, value) in &head.headers {
            if headers::forward_to_client(name.as_str()) {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = head.headers.get(headers::REQUEST_ID) {
            out.insert(headers::UPSTREAM_REQUEST_ID, id.clone());
        }
        out.insert(headers::REQUEST_ID, self.request_id.clone());
        if let Some(c) = self.cache_status {
            out.insert(
                cache::STATUS_HEADER,
                HeaderValue::from_static(c.header_value()),
            );
        }
        Response {
            status: head.status,
            headers: out,
            body,
            store_on_end: false,
        }
    }

    pub(super) fn respond_started(&mut self, response: &Response, now: Now, router: &mut Router) {
        self.log.status = response.status;
        match &response.body {
            ResponseBody::Full(b) => {
                self.log.bytes_out = b.len() as u64;
                self.step = Step::Done;
            }
            ResponseBody::Relay(_) => self.step = Step::Relaying,
        }
        let entry = self.landing.take();
        if !response.store_on_end {
            // Nothing more will come of this flight.
            self.land(entry, now, router);
        }
    }

    /// Ends the flight this request leads, sharing `entry` with its waiters.
    pub(super) fn land(&mut self, entry: Option<Arc<CacheEntry>>, now: Now, router: &mut Router) {
        if let Some((key, id)) = self.leading.take() {
            router.land(key, id, entry, now.instant);
        }
    }
}

pub(super) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

//! The decisions between the IO steps: planning, the cache and its flights, the attempt, the
//! responses and their headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};

use super::response::Response;
use super::{Exchange, ResponseBody, Step, Timer, UpstreamHead};
use crate::cache::{self, CacheEntry, CachePlan, CacheStatus};
use crate::error::GatewayError;
use crate::gateway::Plan;
use crate::headers;
use crate::router::{FlightState, Join, Live, Router};
use crate::time::{Instant, Now};

/// Decisions between the IO steps.
impl Exchange {
    pub(super) fn fail(&mut self, err: GatewayError) {
        self.deadline = None;
        self.log.error_code = err.code().map(str::to_string);
        self.log.limited = err.limit_refusal();
        if self.committed {
            // The head is out: the failure can only be told as one error event.
            self.outbox = Some(Bytes::from(err.sse_event()));
            self.step = Step::End { abort: false };
            return;
        }
        let mut response = Response::error(&err, &self.request_id, self.cache_status);
        let last = self.log.attempts.last().and_then(|a| {
            self.gw
                .settings()
                .upstreams
                .iter()
                .position(|u| u.name == a.upstream)
        });
        self.routing_headers(&mut response.headers, last);
        self.step = Step::Respond(response);
    }

    pub(super) fn set_deadline(&mut self, from: Instant, ms: u64, timer: Timer) {
        self.deadline = Some((from.plus(Duration::from_millis(ms)), timer));
    }

    /// The body is in (or not needed): validate, answer locally, or prepare the upstream call.
    pub(super) fn plan(&mut self, now: Now, router: &mut Router) {
        let Some(admitted) = self.admitted.clone() else {
            return self.fail(GatewayError::Internal {
                message: "planned before admission".into(),
            });
        };
        let admitted = &admitted;
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
                    prefix: Bytes::new(),
                    store_on_end: false,
                });
            }
            Plan::Key => self.key_info(),
            Plan::Dashboard => {
                let mut headers = crate::dashboard::headers();
                headers.insert(headers::REQUEST_ID, self.request_id.clone());
                self.step = Step::Respond(Response {
                    status: 200,
                    headers,
                    body: ResponseBody::Full(crate::dashboard::body()),
                    prefix: Bytes::new(),
                    store_on_end: false,
                });
            }
            Plan::Summary => {
                let viewer = match admitted.policy.as_deref() {
                    Some(p) => crate::metrics::Viewer::Key(&p.id),
                    None => crate::metrics::Viewer::Operator,
                };
                let summary =
                    router.summary(self.gw.settings(), self.gw.runtime(), viewer, now.unix);
                let body = serde_json::to_vec(&summary).unwrap_or_default();
                let mut headers = HeaderMap::with_capacity(3);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
                headers.insert(headers::REQUEST_ID, self.request_id.clone());
                self.step = Step::Respond(Response {
                    status: 200,
                    headers,
                    body: ResponseBody::Full(Bytes::from(body)),
                    prefix: Bytes::new(),
                    store_on_end: false,
                });
            }
            Plan::Status => {
                let status =
                    router.status(self.gw.settings(), self.gw.runtime(), now.instant, now.unix);
                let body = serde_json::to_vec(&status).unwrap_or_default();
                let mut headers = HeaderMap::with_capacity(3);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                );
                headers.insert(headers::REQUEST_ID, self.request_id.clone());
                self.step = Step::Respond(Response {
                    status: 200,
                    headers,
                    body: ResponseBody::Full(Bytes::from(body)),
                    prefix: Bytes::new(),
                    store_on_end: false,
                });
            }
            Plan::Estimate => {
                let settings = self.gw.settings();
                let answer = crate::selection::estimate_answer(
                    &settings.selector,
                    &settings.prices,
                    &self.body,
                    &self.headers,
                    admitted.policy.as_ref().map(|p| &p.models),
                );
                match answer {
                    Ok(body) => {
                        let mut headers = HeaderMap::with_capacity(3);
                        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        headers.insert(
                            http::header::CACHE_CONTROL,
                            HeaderValue::from_static("no-store"),
                        );
                        headers.insert(headers::REQUEST_ID, self.request_id.clone());
                        self.step = Step::Respond(Response {
                            status: 200,
                            headers,
                            body: ResponseBody::Full(body),
                            prefix: Bytes::new(),
                            store_on_end: false,
                        });
                    }
                    Err(e) => self.fail(e),
                }
            }
            Plan::Forward(mut forward) => {
                self.log.requested_model = forward.model.clone();
                self.log.model = forward.model.clone();
                self.log.stream = forward.stream;
                let route = admitted.route;
                if let Err(e) = self.choose_model(route, &mut forward) {
                    return self.fail(e);
                }
                let requested = self.log.requested_model.clone().unwrap_or_default();
                if let Err(e) = self.limit_demand(&requested, &forward) {
                    return self.fail(e);
                }
                if admitted.route.has_body() {
                    let first = if self.gw.settings().routing.cache_per_region {
                        let req = crate::router::OrderRequest {
                            model: forward.model.as_deref().unwrap_or(""),
                            client: self.client_point,
                            pin: self.pin.as_deref(),
                            now: now.instant,
                            random: self.random,
                        };
                        router.order(self.gw.settings(), &req).first().copied()
                    } else {
                        None
                    };
                    let route = self.gw.cache_route(&forward, first);
                    let plan = self.gw.cache_plan(
                        admitted,
                        &forward,
                        &route,
                        headers::Pairs(&self.headers),
                    );
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
                    Step::Limit(None)
                };
            }
        }
    }

    pub(super) fn join(&mut self, now: Now, router: &mut Router) {
        let Some(key) = self.lookup.as_ref().map(|l| l.key) else {
            self.step = Step::Send;
            return;
        };
        let max_wait = self
            .gw
            .settings()
            .first_byte_timeout(self.log.model.as_deref());
        match router.join(key, now.instant, max_wait) {
            Join::Lead(id) => {
                self.leading = Some((key, id));
                self.step = Step::Send;
            }
            Join::Wait { id, until } => {
                self.waiting = Some((key, id));
                let own = self.started.plus(max_wait);
                self.deadline = Some((until.min(own), Timer::Flight));
                // Its leader may be relaying already: follow at once rather than at the next
                // wake-up.
                self.step = Step::CheckFlight;
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
            // A plain request (never on a stream's flight: the form is in the key) waits for
            // the landed answer.
            FlightState::Live(_) if !self.log.stream => self.step = Step::AwaitFlight,
            FlightState::Live(live) => {
                self.waiting = None;
                self.deadline = None;
                if !self.start_following(&live, now) {
                    // Too late to follow (the recording was dropped): call the upstream.
                    self.step = Step::Send;
                }
            }
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
        let mut headers = HeaderMap::with_capacity(8);
        self.account_hit(entry, &mut headers);
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
        self.model_headers(&mut headers);
        self.step = Step::Respond(Response {
            status: entry.status,
            headers,
            body: ResponseBody::Full(entry.body.clone()),
            prefix: Bytes::new(),
            store_on_end: false,
        });
    }

    /// The response for an upstream answer: its status and the headers that may cross, with
    /// the gateway's own.
    pub(super) fn upstream_response(&self, head: &UpstreamHead, body: ResponseBody) -> Response {
        self.upstream_response_from(head, body, self.current.map(|(i, _)| i))
    }

    /// As [`Exchange::upstream_response`], for the answer of upstream `upstream`.
    pub(super) fn upstream_response_from(
        &self,
        head: &UpstreamHead,
        body: ResponseBody,
        upstream: Option<usize>,
    ) -> Response {
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
        self.routing_headers(&mut out, upstream);
        Response {
            status: head.status,
            headers: out,
            body,
            prefix: Bytes::new(),
            store_on_end: false,
        }
    }

    pub(super) fn respond_started(
        &mut self,
        response: &mut Response,
        now: Now,
        router: &mut Router,
    ) {
        self.log.status = response.status;
        match &response.body {
            ResponseBody::Full(b) => {
                self.log.bytes_out = b.len() as u64;
                self.step = Step::Done;
                self.busy_stop(now);
                self.first_token(now);
            }
            ResponseBody::Relay(_) => {
                self.log.bytes_out = self.log.bytes_out.max(response.prefix.len() as u64);
                self.step = Step::Relaying;
                if !response.prefix.is_empty() {
                    self.first_token(now);
                }
            }
            // A follower's (a leader's own driven response is never given by a step: see
            // `commit`).
            ResponseBody::Driven => self.step = Step::Follow,
        }
        self.timing_header(&mut response.headers, now);
        self.rate_headers(&mut response.headers);
        // The client's request is no longer needed for another attempt.
        self.body = Bytes::new();
        self.forward_headers = None;
        let entry = self.landing.take();
        if response.store_on_end {
            let content_type = response.headers.get(CONTENT_TYPE).cloned();
            self.go_live(response.status, content_type, router);
        } else {
            // Nothing more will come of this flight.
            self.land(entry, now, router);
        }
    }

    /// The stream this request relays is its flight's answer in the making: identical streamed
    /// requests may follow it from now on.
    pub(super) fn go_live(
        &mut self,
        status: u16,
        content_type: Option<HeaderValue>,
        router: &mut Router,
    ) {
        let Some((key, id)) = self.leading else {
            return;
        };
        let Some(tape) = self
            .relay
            .as_ref()
            .and_then(|r| r.recorder.as_ref())
            .map(|r| r.tape().clone())
        else {
            return;
        };
        let content_type =
            content_type.unwrap_or_else(|| HeaderValue::from_static("text/event-stream"));
        let live = Live {
            status,
            content_type,
            tape,
        };
        router.go_live(&key, id, Arc::new(live));
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

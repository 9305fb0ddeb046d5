//! The key's limits in the exchange: the models it may use, the reservation before the
//! upstream (after the cache lookup: a hit counts against requests only), the `x-ratelimit-*`
//! headers on every response, the settlement to the actual usage, and `GET /v1/gateway/key`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::response::Response;
use super::{Exchange, ResponseBody, Step, Timer};
use crate::cache::CacheEntry;
use crate::error::GatewayError;
use crate::gateway::Forward;
use crate::headers;
use crate::limits::{
    self, Demand, KeyPolicy, LimitCall, OnStoreError, Pending, RateValues, Reply, Reservation,
};
use crate::log::format_time;
use crate::pricing::Money;
use crate::router::Router;
use crate::selection::estimate_tokens;
use crate::time::Now;

/// The limits' part of an exchange.
#[derive(Debug, Default)]
pub(super) struct Limits {
    /// The key's policy, when it is one of `keys`.
    pub(super) policy: Option<Arc<KeyPolicy>>,
    /// What the request reserves (computed with the plan).
    demand: Option<Demand>,
    pending: Option<Pending>,
    reservation: Option<Reservation>,
    requests: Option<RateValues>,
    tokens: Option<RateValues>,
    settlement: Option<LimitCall>,
    /// `GET /v1/gateway/key`.
    key_info: bool,
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

fn insert_values(headers: &mut HeaderMap, v: &RateValues, names: [&HeaderName; 3]) {
    let [limit, remaining, reset] = names;
    headers.insert(limit.clone(), HeaderValue::from(v.limit));
    headers.insert(remaining.clone(), HeaderValue::from(v.remaining));
    if let Ok(r) = HeaderValue::from_str(&limits::openai_duration(v.reset_ms)) {
        headers.insert(reset.clone(), r);
    }
}

#[derive(Serialize)]
struct KeyInfo<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<BudgetInfo>,
}

#[derive(Serialize)]
struct LimitsInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<WindowInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<WindowInfo>,
}

#[derive(Serialize)]
struct WindowInfo {
    limit: u64,
    remaining: u64,
    reset_secs: f64,
}

#[derive(Serialize)]
struct BudgetInfo {
    amount_usd: Money,
    period: &'static str,
    spent_usd: Money,
    reserved_usd: Money,
    remaining_usd: Money,
    resets_at: String,
}

fn window(v: RateValues) -> WindowInfo {
    WindowInfo {
        limit: v.limit,
        remaining: v.remaining,
        reset_secs: v.reset_ms as f64 / 1000.0,
    }
}

impl Exchange {
    /// Checks the models the key may use and computes what the request reserves. `requested`
    /// is the model the client named (`auto`, `tier:NAME` or a model).
    pub(super) fn limit_demand(
        &mut self,
        requested: &str,
        forward: &Forward,
    ) -> Result<(), GatewayError> {
        let Some(policy) = self.limits.policy.clone() else {
            return Ok(());
        };
        let not_allowed = || GatewayError::ModelNotAllowed {
            model: requested.to_string(),
        };
        if !policy.models.allows_request(requested) {
            return Err(not_allowed());
        }
        let model = forward.model.as_deref().unwrap_or_default();
        if !policy.models.allows_model(model) {
            return Err(not_allowed());
        }
        if !policy.is_limited() {
            return Ok(());
        }
        let settings = self.gw.settings();
        let Some(request) = forward.request.as_ref() else {
            return Ok(());
        };
        let est = estimate_tokens(request, settings.limits.default_max_tokens);
        let tokens = est.prompt_tokens.saturating_add(est.max_output_tokens);
        let mut cost = Money::ZERO;
        if policy.budget.is_some() {
            // The worst case over every model the request may end on (a tier's fallbacks).
            for m in std::iter::once(model).chain(self.chain.iter().map(String::as_str)) {
                let Some(price) = settings.prices.get(m) else {
                    return Err(GatewayError::InvalidField {
                        param: "model".into(),
                        message: format!(
                            "The model '{}' has no price in this gateway and this key has a spend budget, so it cannot be used with this key. Ask the gateway's operator to price it.",
                            m.chars().take(100).collect::<String>()
                        ),
                    });
                };
                cost = cost.max(price.estimate(est.prompt_tokens, est.max_output_tokens).1);
            }
        }
        self.limits.demand = Some(Demand {
            tokens,
            cost,
            hit: false,
        });
        Ok(())
    }

    /// `GET /v1/gateway/key`: the limiter is asked what is left (if the key has limits).
    pub(super) fn key_info(&mut self) {
        self.limits.key_info = true;
        self.step = Step::Limit(None);
    }

    /// The limiter call for [`Step::Limit`], or None when the key has none to make (the step
    /// then moves on).
    pub(super) fn limit_call(
        &mut self,
        hit: Option<Arc<CacheEntry>>,
        now: Now,
        router: &mut Router,
    ) -> Option<LimitCall> {
        let policy = self.limits.policy.clone().filter(|p| p.is_limited());
        let Some(policy) = policy else {
            self.after_limit(hit, None, now);
            return None;
        };
        let shard = ((self.random >> 11) % u64::from(policy.shards.max(1))) as u32;
        let now_ms = now.unix.as_millis();
        let call = if self.limits.key_info {
            limits::peek(&policy, shard, now_ms)
        } else {
            let demand = match hit {
                Some(_) => Demand {
                    tokens: 0,
                    cost: Money::ZERO,
                    hit: true,
                },
                None => self.limits.demand.unwrap_or(Demand {
                    tokens: 0,
                    cost: Money::ZERO,
                    hit: false,
                }),
            };
            limits::reserve(&policy, shard, &demand, now_ms).map(|(call, pending)| {
                self.limits.pending = Some(pending);
                call
            })
        };
        let Some(call) = call else {
            self.after_limit(hit, None, now);
            return None;
        };
        if !router.limiter_usable(now.instant) {
            // Resting after a failure: decided as a failure, without the call.
            self.step = Step::AwaitLimit(hit);
            self.on_limit(Err(()), now, router);
            return None;
        }
        let timeout = self.gw.settings().limits.store_timeout_ms;
        self.set_deadline(now.instant, timeout, Timer::Limit);
        self.step = Step::AwaitLimit(hit);
        Some(call)
    }

    /// The limiter store's reply to [`super::Action::Limit`]; `Err(())` when it failed.
    pub fn on_limit(&mut self, reply: Result<Reply, ()>, now: Now, router: &mut Router) {
        let hit = match std::mem::replace(&mut self.step, Step::Done) {
            Step::AwaitLimit(hit) => hit,
            other => {
                self.step = other;
                return;
            }
        };
        let called = matches!(self.deadline, Some((_, Timer::Limit)));
        self.deadline = None;
        if called {
            router.limiter_result(reply.is_ok(), now.instant);
        }
        let Some(policy) = self.limits.policy.clone() else {
            return self.after_limit(hit, None, now);
        };
        let now_ms = now.unix.as_millis();
        let reply = match reply {
            Ok(r) => r,
            Err(()) => {
                self.log.limiter_error = true;
                self.limits.pending = None;
                if self.limits.key_info {
                    return self.fail(GatewayError::LimiterUnavailable {
                        retry_after_ms: 1000,
                    });
                }
                return match self.gw.settings().limits.on_store_error {
                    OnStoreError::Allow => self.after_limit(hit, None, now),
                    OnStoreError::Deny => self.fail(GatewayError::LimiterUnavailable {
                        retry_after_ms: 1000,
                    }),
                };
            }
        };
        if self.limits.key_info {
            return self.after_limit(None, Some(&reply), now);
        }
        let Some(pending) = self.limits.pending.take() else {
            return self.after_limit(hit, None, now);
        };
        let verdict = limits::decide(&policy, pending, &reply, now_ms);
        self.limits.requests = verdict.requests;
        self.limits.tokens = verdict.tokens;
        match verdict.outcome {
            Ok(reservation) => {
                self.limits.reservation = Some(reservation);
                self.after_limit(hit, None, now);
            }
            Err(e) => self.fail(e),
        }
    }

    fn after_limit(&mut self, hit: Option<Arc<CacheEntry>>, peeked: Option<&Reply>, now: Now) {
        if self.limits.key_info {
            return self.answer_key_info(peeked, now);
        }
        match hit {
            Some(entry) => self.hit(&entry, now),
            None if self.lookup.as_ref().is_some_and(|l| l.read) => self.step = Step::Join,
            None => self.step = Step::Send,
        }
    }

    fn answer_key_info(&mut self, peeked: Option<&Reply>, now: Now) {
        let Some(client) = self.log.key_id.clone() else {
            return self.fail(GatewayError::MissingApiKey);
        };
        let policy = self.limits.policy.clone();
        let now_ms = now.unix.as_millis();
        let standing = policy
            .as_ref()
            .filter(|p| p.is_limited())
            .map(|p| limits::standing(p, peeked, now_ms));
        let (requests, tokens, budget) = match standing {
            Some(s) => (s.requests, s.tokens, s.budget),
            None => (None, None, None),
        };
        let info = KeyInfo {
            id: &client,
            name: policy.as_ref().and_then(|p| p.name.as_deref()),
            models: policy.as_ref().and_then(|p| p.models.describe()),
            limits: (requests.is_some() || tokens.is_some()).then(|| LimitsInfo {
                requests: requests.map(window),
                tokens: tokens.map(window),
            }),
            budget: budget.map(|b| BudgetInfo {
                amount_usd: b.amount,
                period: b.period.as_str(),
                spent_usd: b.spent,
                reserved_usd: b.reserved,
                remaining_usd: b.amount.saturating_sub(b.spent).saturating_sub(b.reserved),
                resets_at: format_time(b.resets_at_ms),
            }),
        };
        let body = serde_json::to_vec(&info).unwrap_or_default();
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

    /// `x-ratelimit-*` for the key's limited dimensions, on every response once known.
    pub(super) fn rate_headers(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.limits.requests {
            insert_values(
                headers,
                v,
                [&LIMIT_REQUESTS, &REMAINING_REQUESTS, &RESET_REQUESTS],
            );
        }
        if let Some(v) = &self.limits.tokens {
            insert_values(
                headers,
                v,
                [&LIMIT_TOKENS, &REMAINING_TOKENS, &RESET_TOKENS],
            );
        }
    }

    /// At the end: the correction of the reservation to what the request used.
    pub(super) fn settle_limits(&mut self, now: Now) {
        let Some(r) = self.limits.reservation.take() else {
            return;
        };
        let tokens = self
            .log
            .prompt_tokens
            .unwrap_or(0)
            .saturating_add(self.log.completion_tokens.unwrap_or(0));
        let cost = self.log.cost_usd.unwrap_or(Money::ZERO);
        self.limits.settlement = limits::settle(&r, tokens, cost, now.unix.as_millis());
    }

    /// Whether [`Exchange::take_settlement`] will have a call after [`Exchange::finish`] (a
    /// reservation was granted): a runtime that must register background work before it hands
    /// the response over does so only then.
    pub fn settles(&self) -> bool {
        self.limits.reservation.is_some() || self.limits.settlement.is_some()
    }

    /// The limiter call that settles the request's reservation, once [`Exchange::finish`] has
    /// been called: to make in the background. None when there is nothing to settle.
    pub fn take_settlement(&mut self) -> Option<LimitCall> {
        self.limits.settlement.take()
    }
}

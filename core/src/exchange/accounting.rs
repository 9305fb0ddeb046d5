//! What a request cost and how long it took: the model choice (`auto`, tiers and their
//! fallback), usage and price, the cost headers, `server-timing` and the log's timings.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::{Exchange, RelayMode};
use crate::cache::CacheEntry;
use crate::error::GatewayError;
use crate::gateway::Forward;
use crate::headers;
use crate::pricing::Money;
use crate::rewrite;
use crate::route::Route;
use crate::selection::{estimate_tokens, Hints};
use crate::sse::{SseObserver, Usage};
use crate::time::{millis_f64, Now};

/// Bytes of streamed text per estimated token (no tokenizer fits in the Worker).
const BYTES_PER_TOKEN: u64 = 4;

impl Exchange {
    /// Resolves `auto` and `tier:NAME`, and decides what the upstream is sent: the model chosen,
    /// and for a stream whose client did not ask for usage, the usage chunk (to price it).
    pub(super) fn choose_model(
        &mut self,
        route: Route,
        forward: &mut Forward,
    ) -> Result<(), GatewayError> {
        let gw = self.gw.clone();
        let settings = gw.settings();
        let Some(request) = forward.request.as_mut() else {
            return Ok(());
        };
        let mut new_model = None;
        let requested = forward.model.clone().unwrap_or_default();
        if settings.selector.is_selection(&requested) {
            let hints = Hints::from_headers(&self.headers)?;
            let estimate = estimate_tokens(request, settings.selector.default_max_output_tokens());
            let policy = self.limits.policy.clone();
            let allowed = |m: &str| policy.as_ref().is_none_or(|p| p.models.allows_model(m));
            let choice = settings.selector.select(
                &settings.prices,
                &requested,
                &hints,
                &estimate,
                &allowed,
            )?;
            request.insert(
                "model".into(),
                serde_json::Value::String(choice.model.clone()),
            );
            forward.model = Some(choice.model.clone());
            self.log.model = Some(choice.model.clone());
            self.log.selection = Some(choice.reason);
            self.log.over_budget = choice.over_budget;
            self.chain = choice.chain;
            new_model = Some(choice.model);
        }
        let usage_capable = matches!(route, Route::ChatCompletions | Route::Completions);
        self.hide_usage = forward.stream && usage_capable && !rewrite::asks_for_usage(request);
        if forward.stream && usage_capable {
            self.prompt_estimate = estimate_tokens(request, 0).prompt_tokens;
        }
        if new_model.is_some() || self.hide_usage {
            if let Some(body) = rewrite::rewrite(&self.body, new_model.as_deref(), self.hide_usage)
            {
                self.body = body;
            }
        }
        Ok(())
    }

    /// The tier's next model takes over when every upstream of the current one failed. Returns
    /// false when there is none.
    pub(super) fn next_model(&mut self) -> bool {
        if self.chain.is_empty() {
            return false;
        }
        let model = self.chain.remove(0);
        if let Some(body) = rewrite::rewrite(&self.body, Some(&model), false) {
            self.body = body;
        }
        // Another model's answer must not be stored as this request's (the key names the first
        // model): nothing of this request is cached.
        if let Some(l) = &mut self.lookup {
            l.write = false;
        }
        self.log.model = Some(model);
        self.order = None;
        self.next_in_order = 0;
        self.rounds = 0;
        self.after_backoff = None;
        self.model_floor = Some(self.attempts);
        true
    }

    /// Whether the attempt budget allows one more attempt (a tier's new model always gets one).
    pub(super) fn attempts_left(&self) -> bool {
        self.attempts < self.gw.settings().routing.max_attempts
            || self.model_floor == Some(self.attempts)
    }

    /// Logs `usage` and its cost on the resolved model; returns the cost when it is priced.
    pub(super) fn account(&mut self, usage: Option<Usage>, estimated: bool) -> Option<Money> {
        let usage = usage?;
        self.log.set_usage(Some(usage));
        let model = self.log.model.as_deref().unwrap_or_default();
        match self.gw.settings().prices.cost(model, &usage) {
            Some(cost) => {
                self.log.cost_usd = Some(cost);
                self.log.cost_estimated = Some(estimated);
                Some(cost)
            }
            None => {
                self.log.unpriced = true;
                None
            }
        }
    }

    /// A stream's cost: from its usage chunk, else estimated from what was relayed.
    pub(super) fn account_stream(&mut self, sse: Option<&SseObserver>) {
        let Some(sse) = sse else {
            return;
        };
        if self.log.cost_usd.is_some() || self.log.unpriced {
            return;
        }
        match sse.usage() {
            Some(u) => {
                self.account(Some(u), false);
            }
            None => {
                let completion = sse.content_bytes().div_ceil(BYTES_PER_TOKEN);
                let usage = Usage {
                    prompt_tokens: self.prompt_estimate,
                    completion_tokens: completion,
                    total_tokens: self.prompt_estimate + completion,
                    ..Usage::default()
                };
                self.account(Some(usage), true);
            }
        }
    }

    /// A cache hit costs nothing; it saved what the stored answer cost.
    pub(super) fn account_hit(&mut self, entry: &CacheEntry, headers: &mut HeaderMap) {
        let model = self.log.model.as_deref().unwrap_or_default();
        let prices = &self.gw.settings().prices;
        if prices.get(model).is_none() {
            self.log.unpriced = true;
            return;
        }
        self.log.cost_usd = Some(Money::ZERO);
        self.log.cost_estimated = Some(false);
        self.log.saved_usd = entry.usage.and_then(|u| prices.cost(model, &u));
        if !entry.is_stream() {
            headers.insert(headers::COST_USD, HeaderValue::from_static("0"));
        }
    }

    /// `x-gateway-model` (and `x-gateway-selection`) on a response to an inference request.
    pub(super) fn model_headers(&self, headers: &mut HeaderMap) {
        if let Some(m) = self
            .log
            .model
            .as_deref()
            .filter(|_| self.forward.is_some())
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            headers.insert(headers::MODEL, m);
        }
        if self.log.over_budget {
            headers.insert(headers::SELECTION, HeaderValue::from_static("over-budget"));
        }
    }

    fn upstream_time(&self, now: Now) -> Duration {
        self.upstream_busy
            + self
                .busy_since
                .map_or(Duration::ZERO, |s| now.instant.since(s))
    }

    /// `server-timing: gateway;dur=X, upstream;dur=Y` as of the response head.
    pub(super) fn timing_header(&self, headers: &mut HeaderMap, now: Now) {
        let total = now.instant.since(self.started);
        let upstream = self.upstream_time(now);
        let gateway = total.saturating_sub(upstream);
        let value = format!(
            "gateway;dur={:.3}, upstream;dur={:.3}",
            millis_f64(gateway),
            millis_f64(upstream)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(headers::SERVER_TIMING, v);
        }
    }

    pub(super) fn busy_start(&mut self, now: Now) {
        self.busy_since.get_or_insert(now.instant);
    }

    pub(super) fn busy_stop(&mut self, now: Now) {
        if let Some(s) = self.busy_since.take() {
            self.upstream_busy += now.instant.since(s);
        }
    }

    /// The first content reached the client.
    pub(super) fn first_token(&mut self, now: Now) {
        if self.log.ttft_ms.is_none() && (200..300).contains(&self.log.status) {
            self.log.ttft_ms = Some(millis_f64(now.instant.since(self.started)));
        }
    }

    /// The overhead in the log line: the time not spent waiting on upstreams.
    pub(super) fn log_overhead(&mut self, now: Now) {
        self.busy_stop(now);
        let total = now.instant.since(self.started);
        self.log.overhead_ms = Some(millis_f64(total.saturating_sub(self.upstream_busy)));
    }

    /// How a successful stream is relayed.
    pub(super) fn stream_mode(&self) -> RelayMode {
        if self.hide_usage {
            RelayMode::Filter
        } else {
            RelayMode::Observe
        }
    }
}

//! The label series only `/metrics` shows (feature `series`, enabled by `fly-fallback`):
//! requests by route, status, model, upstream and cache; attempts and failovers by outcome; cost
//! by model and key; refusals by key and limit; unpriced answers by model; the OpenTelemetry
//! GenAI histograms.

use std::collections::BTreeMap;

use super::histogram::{self, Histogram};
use super::labels::{self, OTHER};
use super::{entry, MAX_SERIES};
use crate::config::Settings;
use crate::log::RequestLog;
use crate::pricing::Money;

/// `requests` by these labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    pub route: &'static str,
    pub status: u16,
    pub model: String,
    pub upstream: String,
    /// `hit`, `miss`, `bypass`, or empty (not an inference route).
    pub cache: &'static str,
}

/// The GenAI conventions' attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GenAiKey {
    pub operation: &'static str,
    pub provider: &'static str,
    pub request_model: String,
    pub response_model: String,
}

#[derive(Debug, Clone, Default)]
pub struct Series {
    pub requests: BTreeMap<RequestKey, u64>,
    /// Upstream attempts by (upstream, outcome): `ok`, `http_<status>`, `timed_out`, ...
    pub attempts: BTreeMap<(String, String), u64>,
    /// Attempts after which the request moved to another upstream, by (upstream, outcome).
    pub failovers: BTreeMap<(String, String), u64>,
    /// Cost by (model, key id).
    pub cost: BTreeMap<(String, String), Money>,
    /// Requests refused by a key's limits, by (key id, `requests` | `tokens` | `budget` |
    /// `store`).
    pub refusals: BTreeMap<(String, &'static str), u64>,
    /// Answers with usage for a model without a price, by model.
    pub unpriced: BTreeMap<String, u64>,
    /// `gen_ai.client.token.usage` by attributes and token type (`input` | `output`).
    pub token_usage: BTreeMap<(GenAiKey, &'static str), Histogram>,
    /// `gen_ai.server.request.duration` by attributes and `error.type` (empty when none).
    pub request_duration: BTreeMap<(GenAiKey, String), Histogram>,
    pub time_to_first_token: BTreeMap<GenAiKey, Histogram>,
    pub time_per_output_token: BTreeMap<GenAiKey, Histogram>,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, fold: impl FnOnce() -> K) {
    let slot = entry(map, key, fold);
    *slot = slot.saturating_add(1);
}

fn other2() -> (String, String) {
    (OTHER.to_string(), OTHER.to_string())
}

/// Attempt outcomes are the gateway's own words or `http_<status>`; anything else is folded.
fn bounded_outcome(outcome: &str) -> String {
    let ok = outcome.len() <= 32
        && outcome
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        outcome.to_string()
    } else {
        OTHER.to_string()
    }
}

fn hist<'m, K: Ord>(
    map: &'m mut BTreeMap<K, Histogram>,
    key: K,
    fold: impl FnOnce() -> K,
    bounds: &'static [f64],
) -> &'m mut Histogram {
    let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
        fold()
    } else {
        key
    };
    map.entry(key).or_insert_with(|| Histogram::new(bounds))
}

impl Series {
    pub(super) fn record(
        &mut self,
        log: &RequestLog,
        settings: &Settings,
        route: &'static str,
        model: &str,
    ) {
        let upstream = log.upstream.clone().unwrap_or_default();
        let cache = log.cache.unwrap_or("");
        let key = log.key_id.clone().unwrap_or_default();
        bump(
            &mut self.requests,
            RequestKey {
                route,
                status: log.status,
                model: model.to_string(),
                upstream,
                cache,
            },
            || RequestKey {
                route,
                status: log.status,
                model: OTHER.to_string(),
                upstream: OTHER.to_string(),
                cache,
            },
        );
        for (i, a) in log.attempts.iter().enumerate() {
            let outcome = bounded_outcome(&a.outcome);
            bump(
                &mut self.attempts,
                (a.upstream.clone(), outcome.clone()),
                other2,
            );
            if log
                .attempts
                .get(i + 1)
                .is_some_and(|n| n.upstream != a.upstream)
            {
                bump(&mut self.failovers, (a.upstream.clone(), outcome), other2);
            }
        }
        if let Some(cost) = log.cost_usd {
            *entry(&mut self.cost, (model.to_string(), key.clone()), other2) += cost;
        }
        if let Some(kind) = log.limited {
            bump(&mut self.refusals, (key, kind), || {
                (OTHER.to_string(), kind)
            });
        }
        if log.unpriced {
            bump(&mut self.unpriced, model.to_string(), || OTHER.to_string());
        }
        if let Some(operation) = labels::operation_name(route) {
            if !model.is_empty() {
                self.record_genai(log, settings, operation, model);
            }
        }
    }

    fn record_genai(
        &mut self,
        log: &RequestLog,
        settings: &Settings,
        operation: &'static str,
        model: &str,
    ) {
        let provider = log
            .upstream
            .as_deref()
            .and_then(|name| settings.upstreams.iter().find(|u| u.name == name))
            .map_or("_OTHER", |u| labels::provider_name(&u.host));
        let requested = log
            .requested_model
            .as_deref()
            .map(|m| labels::model_label(settings, m))
            .unwrap_or_else(|| model.to_string());
        let genai = GenAiKey {
            operation,
            provider,
            request_model: requested,
            response_model: model.to_string(),
        };
        let fold = || GenAiKey {
            operation,
            provider,
            request_model: OTHER.to_string(),
            response_model: OTHER.to_string(),
        };
        for (kind, tokens) in [
            ("input", log.prompt_tokens),
            ("output", log.completion_tokens),
        ] {
            if let Some(t) = tokens {
                hist(
                    &mut self.token_usage,
                    (genai.clone(), kind),
                    || (fold(), kind),
                    histogram::TOKEN_USAGE,
                )
                .observe(t as f64);
            }
        }
        let error_type = if log.status >= 400 {
            log.status.to_string()
        } else {
            String::new()
        };
        hist(
            &mut self.request_duration,
            (genai.clone(), error_type.clone()),
            || (fold(), error_type),
            histogram::REQUEST_DURATION,
        )
        .observe(log.total_ms / 1000.0);
        if log.stream && log.status < 400 {
            if let Some(ttft) = log.ttft_ms {
                hist(
                    &mut self.time_to_first_token,
                    genai.clone(),
                    fold,
                    histogram::TIME_TO_FIRST_TOKEN,
                )
                .observe(ttft / 1000.0);
                // After the first token, per the conventions: (total - ttft) / (tokens - 1).
                if let Some(tokens) = log.completion_tokens.filter(|t| *t > 1) {
                    let per = (log.total_ms - ttft).max(0.0) / 1000.0 / (tokens - 1) as f64;
                    hist(
                        &mut self.time_per_output_token,
                        genai,
                        fold,
                        histogram::TIME_PER_OUTPUT_TOKEN,
                    )
                    .observe(per);
                }
            }
        }
    }
}

//! What an instance has served, counted from each request's log record: the figures behind
//! `/metrics` (fly-fallback), `GET /v1/gateway/summary` and the dashboard (both runtimes).
//!
//! The [`Tally`] lives in the [`crate::Router`] and is fed by [`crate::Exchange::finish`], so
//! both runtimes count the same things the same way; a runtime only exposes it. Series are keyed
//! by bounded labels (see [`labels`]); a family that reaches [`MAX_SERIES`] folds new label sets
//! into `other`, whatever the traffic.

pub mod histogram;
pub mod labels;
mod recent;
mod summary;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::log::RequestLog;
use crate::pricing::Money;
use crate::time::UnixMillis;

pub use histogram::Histogram;
pub use recent::{Recent, RecentBucket, RECENT_BUCKETS, RECENT_STEP_SECS};
pub use summary::{Summary, Viewer};

use labels::OTHER;

/// Label sets per family at most (a family beyond it counts new sets under `other`).
pub const MAX_SERIES: usize = 1000;

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

/// Spend and traffic of one model (the model sent upstream).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Money,
}

/// Spend and traffic of one client key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyTotals {
    pub requests: u64,
    pub cost: Money,
    /// Requests its limits refused.
    pub refused: u64,
}

#[derive(Debug, Clone)]
pub struct Tally {
    /// When the first request was counted.
    pub since: Option<UnixMillis>,
    pub requests: BTreeMap<RequestKey, u64>,
    /// Upstream attempts by (upstream, outcome): `ok`, `http_<status>`, `timed_out`, ...
    pub attempts: BTreeMap<(String, String), u64>,
    /// Attempts after which the request moved to another upstream, by (upstream, outcome).
    pub failovers: BTreeMap<(String, String), u64>,
    /// Requests by cache result (`hit`, `miss`, `bypass`).
    pub cache: BTreeMap<&'static str, u64>,
    /// Bytes sent to clients from the cache.
    pub cache_bytes_served: u64,
    /// What the cache hits would have cost.
    pub cache_saved: Money,
    /// Cost by (model, key id).
    pub cost: BTreeMap<(String, String), Money>,
    /// Requests refused by a key's limits, by (key id, `requests` | `tokens` | `budget` |
    /// `store`).
    pub refusals: BTreeMap<(String, &'static str), u64>,
    /// Answers with usage for a model without a price, by model.
    pub unpriced: BTreeMap<String, u64>,
    /// Error answers by (status, code).
    pub errors: BTreeMap<(u16, String), u64>,
    pub models: BTreeMap<String, ModelTotals>,
    pub keys: BTreeMap<String, KeyTotals>,
    /// `gen_ai.client.token.usage` by attributes and token type (`input` | `output`).
    pub token_usage: BTreeMap<(GenAiKey, &'static str), Histogram>,
    /// `gen_ai.server.request.duration` by attributes and `error.type` (empty when none).
    pub request_duration: BTreeMap<(GenAiKey, String), Histogram>,
    pub time_to_first_token: BTreeMap<GenAiKey, Histogram>,
    pub time_per_output_token: BTreeMap<GenAiKey, Histogram>,
    /// The gateway's own time (`overhead_ms`), every request that has it.
    pub overhead: Histogram,
    /// Inference requests' total time (the summary's p50 and p90).
    pub latency: Histogram,
    /// Streams' time to first token (the summary's `ttft_p50`).
    pub ttft: Histogram,
    /// The last few minutes, for rates.
    pub recent: Recent,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            since: None,
            requests: BTreeMap::new(),
            attempts: BTreeMap::new(),
            failovers: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_bytes_served: 0,
            cache_saved: Money::ZERO,
            cost: BTreeMap::new(),
            refusals: BTreeMap::new(),
            unpriced: BTreeMap::new(),
            errors: BTreeMap::new(),
            models: BTreeMap::new(),
            keys: BTreeMap::new(),
            token_usage: BTreeMap::new(),
            request_duration: BTreeMap::new(),
            time_to_first_token: BTreeMap::new(),
            time_per_output_token: BTreeMap::new(),
            overhead: Histogram::new(histogram::OVERHEAD),
            latency: Histogram::new(histogram::SUMMARY_LATENCY),
            ttft: Histogram::new(histogram::SUMMARY_LATENCY),
            recent: Recent::default(),
        }
    }
}

impl Tally {
    pub fn new() -> Tally {
        Tally::default()
    }

    /// Counts one finished request.
    pub fn record(&mut self, log: &RequestLog, settings: &Settings, now: UnixMillis) {
        self.since.get_or_insert(now);
        let route = labels::route_name(&log.method, &log.path);
        let model = log
            .model
            .as_deref()
            .map(|m| labels::model_label(settings, m))
            .unwrap_or_default();
        let upstream = log.upstream.clone().unwrap_or_default();
        let cache = log.cache.unwrap_or("");
        let key = log.key_id.clone().unwrap_or_default();
        let error = log.status >= 400;

        bump(
            &mut self.requests,
            RequestKey {
                route,
                status: log.status,
                model: model.clone(),
                upstream: upstream.clone(),
                cache,
            },
            || RequestKey {
                route,
                status: log.status,
                model: OTHER.to_string(),
                upstream: OTHER.to_string(),
                cache,
            },
            1,
        );

        let mut failed_over = false;
        for (i, a) in log.attempts.iter().enumerate() {
            let outcome = bounded_outcome(&a.outcome);
            bump(
                &mut self.attempts,
                (a.upstream.clone(), outcome.clone()),
                || (OTHER.to_string(), OTHER.to_string()),
                1,
            );
            let next = log.attempts.get(i + 1);
            if next.is_some_and(|n| n.upstream != a.upstream) {
                failed_over = true;
                bump(
                    &mut self.failovers,
                    (a.upstream.clone(), outcome),
                    || (OTHER.to_string(), OTHER.to_string()),
                    1,
                );
            }
        }

        if let Some(c) = log.cache {
            *self.cache.entry(c).or_default() += 1;
            if c == "hit" {
                self.cache_bytes_served = self.cache_bytes_served.saturating_add(log.bytes_out);
                if let Some(saved) = log.saved_usd {
                    self.cache_saved += saved;
                }
            }
        }

        let cost = log.cost_usd.unwrap_or(Money::ZERO);
        if log.cost_usd.is_some() {
            let fold = || (OTHER.to_string(), OTHER.to_string());
            *entry(&mut self.cost, (model.clone(), key.clone()), fold) += cost;
        }
        if let Some(kind) = log.limited {
            bump(
                &mut self.refusals,
                (key.clone(), kind),
                || (OTHER.to_string(), kind),
                1,
            );
        }
        if log.unpriced {
            bump(&mut self.unpriced, model.clone(), || OTHER.to_string(), 1);
        }
        if error {
            let code = log.error_code.clone().unwrap_or_default();
            bump(
                &mut self.errors,
                (log.status, code),
                || (log.status, OTHER.to_string()),
                1,
            );
        }

        if !model.is_empty() {
            let m = entry(&mut self.models, model.clone(), || OTHER.to_string());
            m.requests += 1;
            m.input_tokens = m
                .input_tokens
                .saturating_add(log.prompt_tokens.unwrap_or(0));
            m.output_tokens = m
                .output_tokens
                .saturating_add(log.completion_tokens.unwrap_or(0));
            m.cost += cost;
        }
        if !key.is_empty() {
            let k = entry(&mut self.keys, key.clone(), || OTHER.to_string());
            k.requests += 1;
            k.cost += cost;
            if log.limited.is_some() {
                k.refused += 1;
            }
        }

        if let Some(ms) = log.overhead_ms {
            self.overhead.observe(ms / 1000.0);
        }
        if let Some(operation) = labels::operation_name(route) {
            self.latency.observe(log.total_ms / 1000.0);
            if log.stream {
                if let Some(ttft) = log.ttft_ms {
                    self.ttft.observe(ttft / 1000.0);
                }
            }
            if !model.is_empty() {
                self.record_genai(log, settings, operation, &model);
            }
        }

        self.recent
            .add(now, error, failed_over, log.cache == Some("hit"));
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

    /// The summary's view (see [`Summary`]).
    pub fn summary<'a>(
        &'a self,
        settings: &'a Settings,
        viewer: Viewer<'a>,
        now: UnixMillis,
    ) -> Summary<'a> {
        summary::build(self, settings, viewer, now)
    }
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

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, fold: impl FnOnce() -> K, by: u64) {
    let slot = entry(map, key, fold);
    *slot = slot.saturating_add(by);
}

// The fold key is built only when needed: most calls find their series.
fn entry<K: Ord, V: Default>(map: &mut BTreeMap<K, V>, key: K, fold: impl FnOnce() -> K) -> &mut V {
    let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
        fold()
    } else {
        key
    };
    map.entry(key).or_default()
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

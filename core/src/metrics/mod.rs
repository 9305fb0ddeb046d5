//! What an instance has served, counted from each request's log record: the figures behind
//! `/metrics` (fly-fallback), `GET /v1/gateway/summary` and the dashboard (both runtimes).
//!
//! The [`Tally`] lives in the [`crate::Router`] and is fed by [`crate::Exchange::finish`], so
//! both runtimes count the same things the same way; a runtime only exposes it. Series are keyed
//! by bounded labels (see [`labels`]); a family that reaches [`MAX_SERIES`] folds new label sets
//! into `other`, whatever the traffic.
//!
//! What the summary (and so the Worker) needs is always counted; the label series only
//! `/metrics` shows (by model, key, outcome, and the GenAI histograms) are behind the `series`
//! feature, which `fly-fallback` enables: they would cost the Worker's bundle about 15 KiB
//! gzipped for figures it never shows.

pub mod histogram;
pub mod labels;
mod recent;
#[cfg(feature = "series")]
mod series;
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
#[cfg(feature = "series")]
pub use series::{GenAiKey, RequestKey, Series};
pub use summary::{Summary, Viewer};

use labels::OTHER;

/// Label sets per family at most (a family beyond it counts new sets under `other`).
pub const MAX_SERIES: usize = 1000;

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

/// Attempts on one upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    pub ok: u64,
    pub failed: u64,
    /// Attempts after which the request moved to another upstream.
    pub failovers: u64,
}

#[derive(Debug, Clone)]
pub struct Tally {
    /// When the first request was counted.
    pub since: Option<UnixMillis>,
    /// Requests by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts by upstream.
    pub upstreams: BTreeMap<String, UpstreamCounts>,
    /// Requests that moved from one upstream to another at least once.
    pub failed_over: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bypass: u64,
    /// Bytes sent to clients from the cache.
    pub cache_bytes_served: u64,
    /// What the cache hits would have cost.
    pub cache_saved: Money,
    /// Requests refused by a key's limits.
    pub refused: u64,
    /// Answers with usage for a model without a price.
    pub unpriced: u64,
    /// Error answers by (status, code).
    pub errors: BTreeMap<(u16, String), u64>,
    pub models: BTreeMap<String, ModelTotals>,
    pub keys: BTreeMap<String, KeyTotals>,
    /// The gateway's own time (`overhead_ms`), every request that has it.
    pub overhead: Histogram,
    /// Inference requests' total time (the summary's p50 and p90).
    pub latency: Histogram,
    /// Streams' time to first token (the summary's `ttft_p50`).
    pub ttft: Histogram,
    /// The last few minutes, for rates.
    pub recent: Recent,
    /// The label series of `/metrics`.
    #[cfg(feature = "series")]
    pub series: Series,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            since: None,
            statuses: BTreeMap::new(),
            upstreams: BTreeMap::new(),
            failed_over: 0,
            cache_hits: 0,
            cache_misses: 0,
            cache_bypass: 0,
            cache_bytes_served: 0,
            cache_saved: Money::ZERO,
            refused: 0,
            unpriced: 0,
            errors: BTreeMap::new(),
            models: BTreeMap::new(),
            keys: BTreeMap::new(),
            overhead: Histogram::new(histogram::OVERHEAD),
            latency: Histogram::new(histogram::SUMMARY_LATENCY),
            ttft: Histogram::new(histogram::SUMMARY_LATENCY),
            recent: Recent::default(),
            #[cfg(feature = "series")]
            series: Series::default(),
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
        let key = log.key_id.as_deref().unwrap_or_default();
        let error = log.status >= 400;

        let n = self.statuses.entry(log.status).or_default();
        *n = n.saturating_add(1);

        let mut failed_over = false;
        for (i, a) in log.attempts.iter().enumerate() {
            let moved = log
                .attempts
                .get(i + 1)
                .is_some_and(|n| n.upstream != a.upstream);
            failed_over |= moved;
            let u = entry(&mut self.upstreams, a.upstream.clone(), || {
                OTHER.to_string()
            });
            if a.outcome == "ok" {
                u.ok += 1;
            } else {
                u.failed += 1;
            }
            u.failovers += u64::from(moved);
        }
        self.failed_over += u64::from(failed_over);

        match log.cache {
            Some("hit") => {
                self.cache_hits += 1;
                self.cache_bytes_served = self.cache_bytes_served.saturating_add(log.bytes_out);
                if let Some(saved) = log.saved_usd {
                    self.cache_saved += saved;
                }
            }
            Some("miss") => self.cache_misses += 1,
            Some("bypass") => self.cache_bypass += 1,
            _ => {}
        }

        let cost = log.cost_usd.unwrap_or(Money::ZERO);
        self.refused += u64::from(log.limited.is_some());
        self.unpriced += u64::from(log.unpriced);
        if error {
            let code = log.error_code.clone().unwrap_or_default();
            let n = entry(&mut self.errors, (log.status, code), || {
                (log.status, OTHER.to_string())
            });
            *n = n.saturating_add(1);
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
            let k = entry(&mut self.keys, key.to_string(), || OTHER.to_string());
            k.requests += 1;
            k.cost += cost;
            k.refused += u64::from(log.limited.is_some());
        }

        if let Some(ms) = log.overhead_ms {
            self.overhead.observe(ms / 1000.0);
        }
        if labels::operation_name(route).is_some() {
            self.latency.observe(log.total_ms / 1000.0);
            if log.stream {
                if let Some(ttft) = log.ttft_ms {
                    self.ttft.observe(ttft / 1000.0);
                }
            }
        }
        #[cfg(feature = "series")]
        self.series.record(log, settings, route, &model);

        self.recent
            .add(now, error, failed_over, log.cache == Some("hit"));
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

/// The entry for `key`, or for `fold()` when the map is full and has no `key` (the fold key is
/// built only when needed: most calls find their series).
pub(crate) fn entry<K: Ord, V: Default>(
    map: &mut BTreeMap<K, V>,
    key: K,
    fold: impl FnOnce() -> K,
) -> &mut V {
    let key = if map.len() >= MAX_SERIES && !map.contains_key(&key) {
        fold()
    } else {
        key
    };
    map.entry(key).or_default()
}

//! `GET /v1/gateway/summary`: the tally as the dashboard reads it.

use serde::Serialize;

use super::{RecentBucket, Tally, RECENT_BUCKETS, RECENT_STEP_SECS};
use crate::config::Settings;
use crate::log::format_time;
use crate::pricing::Money;
use crate::time::UnixMillis;

/// Who asks: an operator key (`GATEWAY_API_KEYS`) sees every key's spend; a key of `keys` (a
/// tenant) sees only its own row of `spend.by_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    Operator,
    Key(&'a str),
}

#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub object: &'static str,
    pub runtime: &'static str,
    pub region: Option<&'a str>,
    /// `process` (fly-fallback) or `isolate` (a Worker isolate counts only what it served).
    pub scope: &'static str,
    pub time: String,
    pub since: Option<String>,
    pub requests: Requests,
    pub series: Series,
    pub failovers: u64,
    pub attempts: Vec<UpstreamAttempts<'a>>,
    pub cache: Cache,
    pub spend: Spend<'a>,
    pub top_errors: Vec<TopError<'a>>,
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize, Default)]
pub struct Requests {
    pub total: u64,
    pub errors: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    pub last_minute: u64,
    pub errors_last_minute: u64,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub step_secs: u64,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub at: String,
    pub requests: u64,
    pub errors: u64,
    pub failovers: u64,
    pub cache_hits: u64,
}

#[derive(Debug, Serialize)]
pub struct UpstreamAttempts<'a> {
    pub upstream: &'a str,
    pub ok: u64,
    pub failed: u64,
    pub failovers: u64,
    pub ejections: u64,
}

#[derive(Debug, Serialize)]
pub struct Cache {
    pub hits: u64,
    pub misses: u64,
    pub bypass: u64,
    pub hit_rate: Option<f64>,
    pub saved_usd: Money,
    pub bytes_served: u64,
}

#[derive(Debug, Serialize)]
pub struct Spend<'a> {
    pub total_usd: Money,
    pub unpriced: u64,
    pub by_model: Vec<ModelSpend<'a>>,
    pub by_key: Vec<KeySpend<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ModelSpend<'a> {
    pub model: &'a str,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Money,
}

#[derive(Debug, Serialize)]
pub struct KeySpend<'a> {
    pub key_id: &'a str,
    pub name: Option<&'a str>,
    pub requests: u64,
    pub cost_usd: Money,
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct TopError<'a> {
    pub status: u16,
    pub code: &'a str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub ttft_p50: Option<f64>,
    pub overhead_p50: Option<f64>,
}

/// Milliseconds with 0.01 ms precision (the buckets are coarser than that anyway).
fn ms(seconds: Option<f64>) -> Option<f64> {
    seconds.map(|s| (s * 100_000.0).round() / 100.0)
}

/// Keeps `v` sorted by `key` descending as items arrive (a few dozen rows: no sort code).
fn insert_by<T>(v: &mut Vec<T>, item: T, key: impl Fn(&T) -> u128) {
    let k = key(&item);
    let at = v.partition_point(|x| key(x) >= k);
    v.insert(at, item);
}

pub(super) fn build<'a>(
    t: &'a Tally,
    settings: &'a Settings,
    viewer: Viewer<'a>,
    now: UnixMillis,
) -> Summary<'a> {
    let mut requests = Requests::default();
    for (status, n) in &t.statuses {
        requests.total += n;
        if *status >= 400 {
            requests.errors += n;
        }
        if (400..500).contains(status) {
            requests.client_errors += n;
        }
        if *status >= 500 {
            requests.server_errors += n;
        }
    }
    requests.rate_limited = t.refused;

    let points: Vec<RecentBucket> = t.recent.points(now).collect();
    let last_minute = 60 / RECENT_STEP_SECS as usize;
    for b in points
        .iter()
        .skip(RECENT_BUCKETS.saturating_sub(last_minute))
    {
        requests.last_minute += b.requests;
        requests.errors_last_minute += b.errors;
    }
    let series = Series {
        step_secs: RECENT_STEP_SECS,
        points: points
            .iter()
            .map(|b| Point {
                at: format_time(b.step * RECENT_STEP_SECS * 1000),
                requests: b.requests,
                errors: b.errors,
                failovers: b.failovers,
                cache_hits: b.cache_hits,
            })
            .collect(),
    };

    let attempts: Vec<UpstreamAttempts<'a>> = settings
        .upstreams
        .iter()
        .map(|u| {
            let c = t.upstreams.get(&u.name).copied().unwrap_or_default();
            UpstreamAttempts {
                upstream: &u.name,
                ok: c.ok,
                failed: c.failed,
                failovers: c.failovers,
                ejections: 0,
            }
        })
        .collect();

    let (hits, misses) = (t.cache_hits, t.cache_misses);
    let cache = Cache {
        hits,
        misses,
        bypass: t.cache_bypass,
        hit_rate: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        saved_usd: t.cache_saved,
        bytes_served: t.cache_bytes_served,
    };

    let mut by_model = Vec::new();
    for (model, m) in &t.models {
        let row = ModelSpend {
            model,
            requests: m.requests,
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            cost_usd: m.cost,
        };
        insert_by(&mut by_model, row, |r| r.cost_usd.picos());
    }
    let mut by_key = Vec::new();
    for (id, k) in &t.keys {
        if matches!(viewer, Viewer::Key(me) if me != id) {
            continue;
        }
        let row = KeySpend {
            key_id: id,
            name: settings.keys.name_of(id),
            requests: k.requests,
            cost_usd: k.cost,
            refused: k.refused,
        };
        insert_by(&mut by_key, row, |r| r.cost_usd.picos());
    }
    let spend = Spend {
        total_usd: t.models.values().map(|m| m.cost).sum(),
        unpriced: t.unpriced,
        by_model,
        by_key,
    };

    let mut top_errors = Vec::new();
    for ((status, code), n) in &t.errors {
        let row = TopError {
            status: *status,
            code,
            count: *n,
        };
        insert_by(&mut top_errors, row, |r| u128::from(r.count));
        top_errors.truncate(10);
    }

    Summary {
        object: "gateway.summary",
        runtime: "",
        region: settings.region.as_deref(),
        scope: "process",
        time: format_time(now.as_millis()),
        since: t.since.map(|s| format_time(s.as_millis())),
        requests,
        series,
        failovers: t.failed_over,
        attempts,
        cache,
        spend,
        top_errors,
        latency_ms: Latency {
            p50: ms(t.latency.quantile(0.5)),
            p90: ms(t.latency.quantile(0.9)),
            ttft_p50: ms(t.ttft.quantile(0.5)),
            overhead_p50: ms(t.overhead.quantile(0.5)),
        },
    }
}

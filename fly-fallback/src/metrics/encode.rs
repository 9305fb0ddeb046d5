//! The tally as Prometheus families. Names and labels follow the OpenTelemetry GenAI semantic
//! conventions (dots become underscores, the unit a suffix) where they apply; the gateway's own
//! families are `gateway_*`.

use std::sync::Arc;

use gateway_core::metrics::{Histogram, Tally};
use gateway_core::Gateway;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::shared::Shared;

/// What the scrape reads of an upstream besides the tally (its live state).
struct UpstreamNow {
    name: String,
    region: String,
    state: &'static str,
    latency_seconds: Option<f64>,
    in_flight: u32,
    ejections: u64,
}

pub struct TallyCollector {
    pub gateway: Arc<Gateway>,
    pub shared: Arc<Shared>,
}

impl std::fmt::Debug for TallyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TallyCollector")
    }
}

const STATES: [&str; 5] = ["healthy", "ejected", "half_open", "open", "down"];

type Fmt = Result<(), std::fmt::Error>;

/// A series without labels.
const NO_LABELS: [(&str, &str); 0] = [];

fn counter<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, f64)>,
) -> Fmt {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, f64)>,
) -> Fmt {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram<'h, L: EncodeLabelSet + 'h>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, &'h Histogram)>,
) -> Fmt {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    for (labels, h) in series {
        // prometheus-client adds the buckets up itself.
        let buckets: Vec<(f64, u64)> = h.buckets().collect();
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum(),
            h.count(),
            &buckets,
            None,
        )?;
    }
    Ok(())
}

impl Collector for TallyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let settings = self.gateway.settings();
        let now = crate::clock::now();
        // A copy, so the router's lock is held for a clone, not for the encoding.
        let (tally, upstreams): (Tally, Vec<UpstreamNow>) = self.shared.with(|r| {
            let status = r.status(settings, self.gateway.runtime(), now.instant, now.unix);
            let ups = status
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| UpstreamNow {
                    name: u.name.to_string(),
                    region: u.region.to_string(),
                    state: u.state,
                    latency_seconds: u.latency_ms.map(|ms| ms / 1000.0),
                    in_flight: u.in_flight,
                    ejections: r.ejections(i),
                })
                .collect();
            (r.tally().clone(), ups)
        });
        encode_tally(&mut e, &tally)?;
        encode_upstreams(&mut e, &upstreams)?;
        counter(
            &mut e,
            "gateway_log_lines_dropped",
            "Request log lines dropped because stdout was not keeping up (LOG_LOSSLESS=false).",
            None,
            [(NO_LABELS, crate::log_sink::dropped_total() as f64)],
        )?;
        gauge(
            &mut e,
            "gateway_build_info",
            "The gateway's version and runtime (always 1).",
            None,
            [(
                [
                    ("version", gateway_core::VERSION),
                    ("runtime", self.gateway.runtime()),
                    ("region", settings.region.as_deref().unwrap_or("")),
                ],
                1.0,
            )],
        )
    }
}

fn encode_tally(e: &mut DescriptorEncoder, t: &Tally) -> Fmt {
    let series = &t.series;
    counter(
        e,
        "gateway_requests",
        "Requests answered, by route, status, model (as sent upstream), upstream and cache result.",
        None,
        series.requests.iter().map(|(k, n)| {
            let status = k.status.to_string();
            (
                vec![
                    ("route", k.route.to_string()),
                    ("status", status),
                    ("model", k.model.clone()),
                    ("upstream", k.upstream.clone()),
                    ("cache", k.cache.to_string()),
                ],
                *n as f64,
            )
        }),
    )?;
    counter(
        e,
        "gateway_upstream_attempts",
        "Upstream attempts, by upstream and outcome (ok, http_<status>, timed_out, refused, ...).",
        None,
        series.attempts.iter().map(|((u, o), n)| {
            (
                [("upstream", u.as_str()), ("outcome", o.as_str())],
                *n as f64,
            )
        }),
    )?;
    counter(
        e,
        "gateway_failovers",
        "Attempts after which the request moved to another upstream, by the upstream left and its outcome.",
        None,
        series.failovers
            .iter()
            .map(|((u, o), n)| ([("upstream", u.as_str()), ("outcome", o.as_str())], *n as f64)),
    )?;
    counter(
        e,
        "gateway_cache_requests",
        "Inference requests by cache result (hit, miss, bypass).",
        None,
        [
            ("hit", t.cache_hits),
            ("miss", t.cache_misses),
            ("bypass", t.cache_bypass),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| ([("result", r)], n as f64)),
    )?;
    counter(
        e,
        "gateway_cache_served",
        "Bytes sent to clients from the response cache.",
        Some(&Unit::Bytes),
        [(NO_LABELS, t.cache_bytes_served as f64)],
    )?;
    counter(
        e,
        "gateway_cache_saved_usd",
        "What the answers served from the cache cost when they were made, in USD.",
        None,
        [(NO_LABELS, t.cache_saved.as_f64())],
    )?;
    counter(
        e,
        "gateway_cost_usd",
        "Spend in USD (usage times the model's price), by model and client key id.",
        None,
        series
            .cost
            .iter()
            .map(|((m, k), c)| ([("model", m.as_str()), ("key", k.as_str())], c.as_f64())),
    )?;
    counter(
        e,
        "gateway_rate_limit_refusals",
        "Requests refused by a key's limits, by key id and limit (requests, tokens, budget, store).",
        None,
        series.refusals
            .iter()
            .map(|((k, l), n)| ([("key", k.as_str()), ("limit", *l)], *n as f64)),
    )?;
    counter(
        e,
        "gateway_unpriced_responses",
        "Answers with usage for a model that has no price (counted, never as free), by model.",
        None,
        series
            .unpriced
            .iter()
            .map(|(m, n)| ([("model", m.as_str())], *n as f64)),
    )?;
    counter(
        e,
        "gateway_errors",
        "Error answers (status >= 400), by status and error code.",
        None,
        t.errors.iter().map(|((s, c), n)| {
            (
                vec![("status", s.to_string()), ("code", c.clone())],
                *n as f64,
            )
        }),
    )?;
    histogram(
        e,
        "gateway_overhead",
        "The gateway's own time per request (total time less time waiting on upstreams).",
        Some(&Unit::Seconds),
        [(NO_LABELS, &t.overhead)],
    )?;
    let genai = |k: &gateway_core::metrics::GenAiKey| {
        vec![
            ("gen_ai_operation_name", k.operation.to_string()),
            ("gen_ai_provider_name", k.provider.to_string()),
            ("gen_ai_request_model", k.request_model.clone()),
            ("gen_ai_response_model", k.response_model.clone()),
        ]
    };
    histogram(
        e,
        "gen_ai_client_token_usage",
        "Number of input and output tokens used (OpenTelemetry gen_ai.client.token.usage).",
        None,
        series.token_usage.iter().map(|((k, kind), h)| {
            let mut l = genai(k);
            l.push(("gen_ai_token_type", kind.to_string()));
            (l, h)
        }),
    )?;
    histogram(
        e,
        "gen_ai_server_request_duration",
        "Generative AI request duration, as the gateway served it (gen_ai.server.request.duration).",
        Some(&Unit::Seconds),
        series.request_duration.iter().map(|((k, err), h)| {
            let mut l = genai(k);
            l.push(("error_type", err.clone()));
            (l, h)
        }),
    )?;
    histogram(
        e,
        "gen_ai_server_time_to_first_token",
        "Time to the first content of a stream (gen_ai.server.time_to_first_token).",
        Some(&Unit::Seconds),
        series
            .time_to_first_token
            .iter()
            .map(|(k, h)| (genai(k), h)),
    )?;
    histogram(
        e,
        "gen_ai_server_time_per_output_token",
        "Time per output token after the first, for streams (gen_ai.server.time_per_output_token).",
        Some(&Unit::Seconds),
        series
            .time_per_output_token
            .iter()
            .map(|(k, h)| (genai(k), h)),
    )
}

fn encode_upstreams(e: &mut DescriptorEncoder, ups: &[UpstreamNow]) -> Fmt {
    // One series per state, 1 for the current one: a state change is a value change, not a
    // series that appears and disappears.
    gauge(
        e,
        "gateway_upstream_state",
        "Each upstream's state (1 for the current one): healthy, ejected, half_open, open, down.",
        None,
        ups.iter().flat_map(|u| {
            STATES.iter().map(move |s| {
                (
                    [
                        ("upstream", u.name.as_str()),
                        ("region", u.region.as_str()),
                        ("state", *s),
                    ],
                    if u.state == *s { 1.0 } else { 0.0 },
                )
            })
        }),
    )?;
    gauge(
        e,
        "gateway_upstream_latency",
        "Each upstream's latency moving average (time to first content).",
        Some(&Unit::Seconds),
        ups.iter().filter_map(|u| {
            u.latency_seconds
                .map(|l| ([("upstream", u.name.as_str())], l))
        }),
    )?;
    gauge(
        e,
        "gateway_upstream_in_flight",
        "Calls in flight to each upstream.",
        None,
        ups.iter()
            .map(|u| ([("upstream", u.name.as_str())], f64::from(u.in_flight))),
    )?;
    counter(
        e,
        "gateway_upstream_ejections",
        "Times each upstream was ejected (it asked to be left alone, or refused the operator's key).",
        None,
        ups.iter()
            .map(|u| ([("upstream", u.name.as_str())], u.ejections as f64)),
    )
}

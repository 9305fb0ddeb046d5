//! The scenarios, run against every live target with the same load generator, mock and request
//! bodies: sequential overhead, fixed-rate load, maximum throughput under a p99 bound,
//! streaming, cache hits, memory; and the soak.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::load::{self, Conn, LoadStats, RequestSpec};
use crate::progress::Progress;
use crate::sys;
use crate::targets::{self, Paths, Planned, Proc, TargetSpec};

/// Durations and sizes of every scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Knobs {
    pub seq_batches: usize,
    pub seq_batch: usize,
    pub rates: Vec<f64>,
    pub rate_warmup_s: f64,
    pub rate_s: f64,
    pub open_connections: usize,
    pub closed_levels: Vec<usize>,
    pub closed_warmup_s: f64,
    pub closed_s: f64,
    /// The closed-loop level whose CPU cost per request is reported.
    pub cpu_level: usize,
    /// How long that level is measured: longer than the others, since the goals read it and a
    /// runtime's occasional stall (workerd's reach 100-400 ms) moves a short window's figure.
    #[serde(default)]
    pub cpu_level_s: Option<f64>,
    pub search_steps: usize,
    pub search_s: f64,
    pub p99_bound_ms: f64,
    pub streams: usize,
    pub stream_concurrency: usize,
    pub hold_streams: usize,
    pub hold_within_s: f64,
    pub cache_requests: usize,
    pub timeout_s: f64,
    /// Longest wait, before starting, for other processes to leave the machine alone.
    pub quiet_wait_s: f64,
}

impl Knobs {
    pub fn full() -> Knobs {
        Knobs {
            seq_batches: 15,
            seq_batch: 200,
            rates: vec![500.0, 1000.0, 2000.0, 4000.0, 8000.0],
            rate_warmup_s: 1.0,
            rate_s: 5.0,
            open_connections: 64,
            closed_levels: vec![1, 4, 16, 32, 64],
            closed_warmup_s: 1.0,
            closed_s: 3.0,
            cpu_level: 32,
            cpu_level_s: Some(9.0),
            search_steps: 4,
            search_s: 3.0,
            p99_bound_ms: 10.0,
            streams: 100,
            stream_concurrency: 20,
            hold_streams: 1000,
            hold_within_s: 60.0,
            cache_requests: 1000,
            timeout_s: 30.0,
            quiet_wait_s: 300.0,
        }
    }

    pub fn smoke() -> Knobs {
        Knobs {
            seq_batches: 3,
            seq_batch: 50,
            rates: vec![200.0],
            rate_warmup_s: 0.3,
            rate_s: 1.0,
            open_connections: 16,
            closed_levels: vec![4],
            closed_warmup_s: 0.3,
            closed_s: 1.0,
            cpu_level: 4,
            cpu_level_s: None,
            search_steps: 0,
            search_s: 1.0,
            p99_bound_ms: 10.0,
            streams: 4,
            stream_concurrency: 4,
            hold_streams: 50,
            hold_within_s: 10.0,
            cache_requests: 50,
            timeout_s: 10.0,
            quiet_wait_s: 0.0,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// How long the closed loop at `connections` is measured.
    pub fn closed_seconds(&self, connections: usize) -> f64 {
        match self.cpu_level_s {
            Some(s) if connections == self.cpu_level => s.max(self.closed_s),
            _ => self.closed_s,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Sequential {
    pub requests: usize,
    pub errors: usize,
    /// Median of the per-batch medians.
    pub p50_us: f64,
    pub batch_medians_us: Vec<f64>,
    /// Median over batches of (this target's batch median - direct's batch median).
    pub added_us: Option<f64>,
}

/// Issue 14: the added latency of a key with limits (every request reserves in the limiter's
/// store before the upstream and settles after) against the unlimited key, on the same target,
/// in interleaved sequential batches.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LimitedKey {
    /// Where the target keeps the key's counters.
    pub store: String,
    /// The model both keys ask for (priced: the limited key has a budget).
    pub model: String,
    pub batches: usize,
    pub batch: usize,
    pub errors: usize,
    pub limited_errors: usize,
    /// The unlimited key in this scenario: median of its batch medians.
    pub unlimited_p50_us: f64,
    /// The limited key: median of its batch medians.
    pub limited_p50_us: f64,
    /// Median over batch pairs of (limited batch median - unlimited batch median).
    pub limited_added_us: Option<f64>,
    pub unlimited_batch_medians_us: Vec<f64>,
    pub limited_batch_medians_us: Vec<f64>,
    /// The limited key's answers carried `x-ratelimit-limit-requests` (checked before and
    /// after the batches): the gateway treated it as limited.
    pub ratelimit_headers: bool,
    /// Workerd: whether its log has the Worker's `limiter_per_isolate` line (no Durable
    /// Object binding: counters per isolate). `None` for targets without such a log.
    pub per_isolate_fallback: Option<bool>,
    /// Why there are no figures.
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RatePoint {
    pub rate: f64,
    /// `None` when not run because a lower rate already saturated the target.
    pub stats: Option<LoadStats>,
    pub saturated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosedPoint {
    pub concurrency: usize,
    pub stats: LoadStats,
    /// CPU time of the target's processes per answered request, in microseconds.
    pub cpu_us_per_request: Option<f64>,
    /// CPU time of the mock upstream per answered request, in microseconds.
    pub mock_cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Streaming {
    pub streams: usize,
    pub complete: usize,
    pub first_error: Option<String>,
    pub events_per_stream: f64,
    /// Median time to the first event.
    pub first_event_p50_us: f64,
    pub first_event_p99_us: f64,
    /// Median time to the response head.
    pub head_p50_us: f64,
    /// Median (over streams) arrival time of each event, relative to the request.
    pub event_offsets_us: Vec<f64>,
    pub last_event_p50_us: f64,
    /// Relative to direct: the first event's added delay, and the median added delay of the
    /// following events.
    pub added_first_event_us: Option<f64>,
    pub added_per_event_us: Option<f64>,
    /// Median time from the mock's send of an event (stamped into it) to its arrival, over
    /// every event of every complete stream; `None` when the events carried no stamp (a
    /// gateway that rewrites the chunks).
    #[serde(default)]
    pub transit_p50_us: Option<f64>,
    /// Relative to direct: what the target adds to each event on its way, apart from when the
    /// request reached the upstream (the figures above count from the request's start).
    #[serde(default)]
    pub added_relay_per_event_us: Option<f64>,
    /// The added delays come from direct streams run at the same time.
    #[serde(default)]
    pub paired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Memory {
    pub idle_kib: Option<u64>,
    pub after_load_kib: Option<u64>,
    pub streams_kib: Option<u64>,
    pub streams_open: usize,
    pub streams_wanted: usize,
    pub streams_failed: usize,
    pub streams_error: Option<String>,
    /// For a bundle on workerd: its isolate with as many streams open (`crate::isolate`).
    #[serde(default)]
    pub isolate: Option<crate::isolate::IsolateMemory>,
    #[serde(default)]
    pub isolate_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TargetResult {
    pub name: String,
    pub description: String,
    pub version: String,
    pub skipped: Option<String>,
    pub failed: Option<String>,
    pub sequential: Option<Sequential>,
    /// Issue 14: a key with limits against the unlimited one (this project's targets only).
    #[serde(default)]
    pub limited_key: Option<LimitedKey>,
    pub rates: Vec<RatePoint>,
    pub closed: Vec<ClosedPoint>,
    /// The highest open-loop rate found whose p99 stayed under the bound with no errors.
    pub max_rate_under_bound: Option<f64>,
    pub search: Vec<(f64, LoadStats)>,
    pub streaming: Option<Streaming>,
    /// p50 latency of cache hits, or why there is none.
    pub cache_hit_p50_us: Option<f64>,
    pub cache_note: String,
    pub memory: Memory,
}

impl TargetResult {
    pub fn ok(&self) -> bool {
        self.skipped.is_none() && self.failed.is_none()
    }

    pub fn peak_rps(&self) -> Option<f64> {
        self.closed
            .iter()
            .map(|c| c.stats.rps)
            .fold(None, |a, b| Some(a.map_or(b, |a: f64| a.max(b))))
    }

    pub fn closed_at(&self, c: usize) -> Option<&ClosedPoint> {
        self.closed.iter().find(|p| p.concurrency == c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub knobs: Knobs,
    pub machine: sys::Machine,
    pub mock_idle_kib: Option<u64>,
    pub targets: Vec<TargetResult>,
    pub notes: Vec<String>,
    pub wall_seconds: f64,
}

/// A started target with its requests.
pub struct Live {
    pub spec: TargetSpec,
    pub proc_: Option<Proc>,
    pub pid: u32,
    pub chat: Arc<RequestSpec>,
    pub stream: Arc<RequestSpec>,
    pub hold: Arc<RequestSpec>,
    /// A deterministic request (`temperature: 0`) that a caching gateway may answer from cache.
    pub cacheable: Arc<RequestSpec>,
    /// For targets configured with the limited key: the same chat request on the priced model,
    /// with the unlimited key and with the limited one.
    pub limited: Option<(Arc<RequestSpec>, Arc<RequestSpec>)>,
}

/// The request body. The user message is 21 characters long so that the mock's answer is
/// exactly 50 characters, streamed as 50 one-character events: no event has empty content
/// (LiteLLM drops such events, which would make the streams incomparable).
pub fn chat_body(model: &str, stream: bool) -> Bytes {
    let mut v = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": "Tell me about gateway"}
        ],
        "max_tokens": 32,
    });
    if stream {
        v["stream"] = json!(true);
    }
    Bytes::from(v.to_string())
}

/// The chat request with `temperature: 0`, which makes it deterministic and so cacheable.
pub fn cacheable_body(model: &str) -> Bytes {
    let mut v: Value = serde_json::from_slice(&chat_body(model, false)).unwrap_or_default();
    v["temperature"] = json!(0);
    Bytes::from(v.to_string())
}

fn spec_for(t: &TargetSpec, model: &str, stream: bool) -> Arc<RequestSpec> {
    spec_with(t, &t.headers, model, stream)
}

fn spec_with(
    t: &TargetSpec,
    headers: &[(String, String)],
    model: &str,
    stream: bool,
) -> Arc<RequestSpec> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    Arc::new(RequestSpec::post_json(
        t.addr(),
        &format!("{}/chat/completions", t.prefix),
        &h,
        chat_body(model, stream),
    ))
}

/// Checks that the target answers a chat request and a 50-event stream as the mock would.
pub async fn check(live: &Live, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut conn = Conn::new(live.spec.addr());
    // Some servers listen before they are ready: retry the first request for a while.
    let answer = loop {
        let r = tokio::time::timeout(Duration::from_secs(10), conn.send(&live.chat)).await;
        match r {
            Ok(Ok(a)) if a.status == 200 => break a,
            other => {
                if Instant::now() > deadline {
                    return Err(match other {
                        Ok(Ok(a)) => format!(
                            "chat request: status {}: {}",
                            a.status,
                            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
                        ),
                        Ok(Err(e)) => format!("chat request: {e}"),
                        Err(_) => "chat request timed out".into(),
                    });
                }
                conn = Conn::new(live.spec.addr());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let v: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("chat answer is not JSON: {e}"))?;
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !content.starts_with("Mock answer") {
        return Err(format!(
            "unexpected chat answer: {}",
            &v.to_string()[..v.to_string().len().min(300)]
        ));
    }
    let trace = tokio::time::timeout(
        Duration::from_secs(30),
        conn.send_stream(&live.stream, Instant::now(), &mut None),
    )
    .await
    .map_err(|_| "stream timed out".to_string())??;
    if trace.status != 200 || trace.events.len() < targets::STREAM_EVENTS || !trace.done {
        return Err(format!(
            "stream: status {}, {} events, [DONE] {}",
            trace.status,
            trace.events.len(),
            trace.done
        ));
    }
    Ok(())
}

pub struct Started {
    pub mock: Proc,
    pub live: Vec<Live>,
    pub results: Vec<TargetResult>,
}

/// Starts the mock and every planned target; checks each; returns the live ones (in order) and
/// a result stub for every target.
pub async fn start_all(
    paths: &Paths,
    names: &[String],
    progress: &Progress,
) -> Result<Started, String> {
    std::fs::create_dir_all(&paths.work).map_err(|e| format!("{}: {e}", paths.work.display()))?;
    let mock_port = targets::free_port();
    let mut mock = Proc::start(&targets::mock_launch(paths, mock_port))?;
    targets::wait_port(mock_port, &mut mock, Duration::from_secs(10))
        .map_err(|e| format!("mock-upstream: {e}"))?;
    let mut live = Vec::new();
    let mut results = Vec::new();
    for planned in targets::plan(paths, mock_port, names) {
        match planned {
            Planned::Skipped { name, reason } => {
                progress.note(&format!("{name}: skipped: {reason}"));
                results.push(TargetResult {
                    name,
                    skipped: Some(reason),
                    ..Default::default()
                });
            }
            Planned::Ready(spec) => {
                progress.set(&format!("starting {}", spec.name));
                let mut r = TargetResult {
                    name: spec.name.clone(),
                    description: spec.description.clone(),
                    version: spec.version.clone(),
                    ..Default::default()
                };
                let (proc_, pid) = match &spec.launch {
                    None => (None, mock.pid),
                    Some(l) => match Proc::start(l) {
                        Ok(mut p) => match targets::wait_port(spec.port, &mut p, spec.startup) {
                            Ok(()) => {
                                let pid = p.pid;
                                (Some(p), pid)
                            }
                            Err(e) => {
                                r.failed = Some(format!("{e}; see {}", l.stderr_log.display()));
                                progress.note(&format!(
                                    "{}: failed: {}",
                                    spec.name,
                                    r.failed.as_deref().unwrap_or("")
                                ));
                                results.push(r);
                                continue;
                            }
                        },
                        Err(e) => {
                            r.failed = Some(e);
                            results.push(r);
                            continue;
                        }
                    },
                };
                let l = Live {
                    chat: spec_for(&spec, targets::CHAT_MODEL, false),
                    stream: spec_for(&spec, targets::STREAM_MODEL, true),
                    hold: spec_for(&spec, targets::HOLD_MODEL, true),
                    cacheable: {
                        let mut c = (*spec_for(&spec, targets::CHAT_MODEL, false)).clone();
                        c.body = cacheable_body(targets::CHAT_MODEL);
                        Arc::new(c)
                    },
                    limited: spec.limited_headers.as_ref().map(|h| {
                        (
                            spec_for(&spec, targets::PRICED_MODEL, false),
                            spec_with(&spec, h, targets::PRICED_MODEL, false),
                        )
                    }),
                    spec: *spec,
                    proc_,
                    pid,
                };
                match check(&l, l.spec.startup).await {
                    Ok(()) => {
                        live.push(l);
                    }
                    Err(e) => {
                        r.failed = Some(format!("did not answer correctly: {e}"));
                        progress.note(&format!("{}: failed: {e}", l.spec.name));
                    }
                }
                results.push(r);
            }
        }
    }
    Ok(Started {
        mock,
        live,
        results,
    })
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Sequential requests, batch by batch, the targets interleaved within each batch round so
/// that drift of the machine hits all of them alike.
pub async fn sequential(live: &[Live], k: &Knobs, progress: &Progress) -> Vec<Sequential> {
    progress.set("sequential: warming up");
    let mut conns: Vec<Conn> = live.iter().map(|l| Conn::new(l.spec.addr())).collect();
    for (l, c) in live.iter().zip(conns.iter_mut()) {
        load::sequential(c, &l.chat, 100, k.timeout()).await;
    }
    let mut medians = vec![Vec::new(); live.len()];
    let mut errors = vec![0usize; live.len()];
    for b in 0..k.seq_batches {
        progress.set(&format!("sequential: batch {}/{}", b + 1, k.seq_batches));
        for (i, (l, c)) in live.iter().zip(conns.iter_mut()).enumerate() {
            let lat = load::sequential(c, &l.chat, k.seq_batch, k.timeout()).await;
            errors[i] += lat.iter().filter(|x| x.is_none()).count();
            let mut us: Vec<f64> = lat
                .iter()
                .flatten()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect();
            medians[i].push(median(&mut us));
        }
    }
    let direct = live.iter().position(|l| l.spec.name == "direct");
    let direct_medians = direct.map(|d| medians[d].clone());
    live.iter()
        .enumerate()
        .map(|(i, _)| {
            let mut m = medians[i].clone();
            let added = direct_medians.as_ref().map(|d| {
                let mut diffs: Vec<f64> = m.iter().zip(d).map(|(a, b)| a - b).collect();
                median(&mut diffs)
            });
            Sequential {
                requests: k.seq_batches * k.seq_batch,
                errors: errors[i],
                p50_us: median(&mut m),
                batch_medians_us: medians[i].clone(),
                added_us: added,
            }
        })
        .collect()
}

/// Median over pairs of (a - b); `None` without pairs.
fn median_of_differences(a: &[f64], b: &[f64]) -> Option<f64> {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    (!d.is_empty()).then(|| median(&mut d))
}

/// Whether a log holds a JSON line with `"event":"<event>"`.
fn log_has_event(log: &str, event: &str) -> bool {
    let needle = format!("\"event\":\"{event}\"");
    log.lines().any(|l| l.contains(&needle))
}

/// One request: its status and whether it carried the rate-limit header.
async fn probe(conn: &mut Conn, spec: &RequestSpec, timeout: Duration) -> Result<bool, String> {
    match tokio::time::timeout(timeout, conn.send(spec)).await {
        Err(_) => Err("timed out".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(a)) if a.status == 200 => Ok(a.headers.contains_key(targets::RATELIMIT_HEADER)),
        Ok(Ok(a)) => Err(format!(
            "status {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        )),
    }
}

/// Issue 14: for every target configured with the limited key, sequential batches of the same
/// request with the unlimited key and with the limited one, on one keep-alive connection, the
/// two keys taking turns batch by batch (which one goes first alternates), so that drift of the
/// machine hits both alike. Returns the index in `live` of each measured target.
pub async fn limited_key(
    live: &[Live],
    k: &Knobs,
    progress: &Progress,
) -> Vec<(usize, LimitedKey)> {
    let mut runs: Vec<(usize, Conn, LimitedKey)> = Vec::new();
    for (i, l) in live.iter().enumerate() {
        let Some((plain, limited)) = &l.limited else {
            continue;
        };
        progress.set(&format!("{}: limited key: warming up", l.spec.name));
        let mut conn = Conn::new(l.spec.addr());
        let mut r = LimitedKey {
            store: l.spec.limiter_store.clone().unwrap_or_default(),
            model: targets::PRICED_MODEL.into(),
            batches: k.seq_batches,
            batch: k.seq_batch,
            ..Default::default()
        };
        match (
            probe(&mut conn, plain, k.timeout()).await,
            probe(&mut conn, limited, k.timeout()).await,
        ) {
            (Ok(plain_headers), Ok(limited_headers)) => {
                r.ratelimit_headers = limited_headers && !plain_headers;
                if !r.ratelimit_headers {
                    r.failed = Some(format!(
                        "`{}` on the limited key's answer: {limited_headers}, on the unlimited key's: {plain_headers} (the key is not treated as limited)",
                        targets::RATELIMIT_HEADER
                    ));
                }
            }
            (Err(e), _) => r.failed = Some(format!("unlimited key, priced model: {e}")),
            (_, Err(e)) => r.failed = Some(format!("limited key: {e}")),
        }
        if r.failed.is_none() {
            load::sequential(&mut conn, plain, 100, k.timeout()).await;
            load::sequential(&mut conn, limited, 100, k.timeout()).await;
        }
        runs.push((i, conn, r));
    }
    let batch_us = |lat: &[Option<Duration>]| {
        let mut us: Vec<f64> = lat
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e6)
            .collect();
        (median(&mut us), lat.iter().filter(|x| x.is_none()).count())
    };
    for b in 0..k.seq_batches {
        progress.set(&format!("limited key: batch {}/{}", b + 1, k.seq_batches));
        for (i, conn, r) in runs.iter_mut().filter(|(_, _, r)| r.failed.is_none()) {
            let (plain, limited) = live[*i].limited.as_ref().expect("limited requests");
            for limited_turn in [b % 2 == 1, b % 2 == 0] {
                let spec = if limited_turn { limited } else { plain };
                let lat = load::sequential(conn, spec, k.seq_batch, k.timeout()).await;
                let (m, errors) = batch_us(&lat);
                if limited_turn {
                    r.limited_batch_medians_us.push(m);
                    r.limited_errors += errors;
                } else {
                    r.unlimited_batch_medians_us.push(m);
                    r.errors += errors;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, mut conn, mut r) in runs {
        let l = &live[i];
        if r.failed.is_none() {
            r.limited_added_us =
                median_of_differences(&r.limited_batch_medians_us, &r.unlimited_batch_medians_us);
            r.limited_p50_us = median(&mut r.limited_batch_medians_us.clone());
            r.unlimited_p50_us = median(&mut r.unlimited_batch_medians_us.clone());
            // Still limited at the end (a store that failed meanwhile lets requests through
            // without the headers when `on_store_error` is `allow`).
            match probe(
                &mut conn,
                &l.limited.as_ref().expect("limited requests").1,
                k.timeout(),
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    r.ratelimit_headers = false;
                    r.failed = Some(format!(
                        "the limited key's last answer had no `{}`",
                        targets::RATELIMIT_HEADER
                    ));
                }
                Err(e) => r.failed = Some(format!("limited key after the batches: {e}")),
            }
        }
        r.per_isolate_fallback = l
            .spec
            .launch
            .as_ref()
            .and_then(|x| x.stdout_log.as_ref())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|log| log_has_event(&log, targets::PER_ISOLATE_EVENT));
        if let Some(f) = &r.failed {
            progress.note(&format!("{}: limited key: {f}", l.spec.name));
        } else if r.per_isolate_fallback == Some(true) {
            progress.note(&format!(
                "{}: limited key: the Worker logged `{}`: no Durable Object, counters per isolate",
                l.spec.name,
                targets::PER_ISOLATE_EVENT
            ));
        }
        out.push((i, r));
    }
    out
}

/// Cores' worth of CPU other processes may use during a measurement before it is repeated.
const FOREIGN_LIMIT: f64 = 0.2;

/// Waits (up to `max`) until other processes leave the machine alone for a few seconds;
/// returns the cores' worth of CPU they used in the last window.
pub async fn wait_quiet(max: Duration, progress: &Progress) -> f64 {
    let start = Instant::now();
    let mut told = false;
    loop {
        let a = sys::cpu_snapshot();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let f = sys::foreign_cores(&a, &sys::cpu_snapshot());
        if f < FOREIGN_LIMIT / 2.0 || start.elapsed() >= max {
            return f;
        }
        if !told {
            progress.note(&format!("other processes are using {f:.2} cores: waiting (up to {:.0} s) for the machine to be quiet", max.as_secs_f64()));
            told = true;
        }
        progress.set(&format!("waiting for quiet: others use {f:.2} cores"));
    }
}

/// Seconds the guarded measurements may still spend waiting for quiet in this run.
static WAIT_BUDGET_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(300);

pub fn set_wait_budget(seconds: u64) {
    WAIT_BUDGET_S.store(seconds, std::sync::atomic::Ordering::Relaxed);
}

/// Runs a measurement; if other processes took a noticeable share of the machine meanwhile,
/// waits a little for quiet (within the run's budget) and, if it comes, runs it once more,
/// keeping the less disturbed of the two. The figure records how disturbed it was.
async fn guarded<F, Fut>(label: &str, progress: &Progress, mut run: F) -> LoadStats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = LoadStats>,
{
    use std::sync::atomic::Ordering;
    let mut best: Option<LoadStats> = None;
    for attempt in 0..2 {
        let a = sys::cpu_snapshot();
        let mut s = run().await;
        let f = sys::foreign_cores(&a, &sys::cpu_snapshot());
        s.foreign_cores = Some(f);
        if best
            .as_ref()
            .is_none_or(|b| b.foreign_cores.unwrap_or(0.0) > f)
        {
            best = Some(s);
        }
        let budget = WAIT_BUDGET_S.load(Ordering::Relaxed);
        if f < FOREIGN_LIMIT || attempt == 1 || budget == 0 {
            break;
        }
        let wait = budget.min(30);
        progress.note(&format!("{label}: other processes used {f:.2} cores during the run; waiting up to {wait} s to repeat it"));
        let t = Instant::now();
        let q = wait_quiet(Duration::from_secs(wait), progress).await;
        let spent = t.elapsed().as_secs();
        WAIT_BUDGET_S.store(budget.saturating_sub(spent.max(1)), Ordering::Relaxed);
        if q >= FOREIGN_LIMIT / 2.0 {
            progress.note(&format!(
                "{label}: the machine stayed busy ({q:.2} cores); keeping the disturbed figure"
            ));
            break;
        }
    }
    best.unwrap_or_default()
}

fn passes(s: &LoadStats, rate: f64, bound_ms: f64) -> bool {
    s.errors == 0 && s.p99_us <= bound_ms * 1000.0 && s.rps >= rate * 0.95
}

fn saturated(s: &LoadStats, rate: f64) -> bool {
    s.error_rate() > 0.01 || s.rps < rate * 0.9
}

/// Everything but the sequential scenario, for one target.
pub async fn per_target(
    l: &Live,
    direct: Option<&Live>,
    mock_pid: u32,
    k: &Knobs,
    r: &mut TargetResult,
    progress: &Progress,
) {
    let name = &l.spec.name;
    let secs = Duration::from_secs_f64;

    // Fixed rates, rising; stop at the first rate the target cannot keep up with.
    let mut stop = false;
    for &rate in &k.rates {
        if stop {
            r.rates.push(RatePoint {
                rate,
                stats: None,
                saturated: true,
            });
            progress.inc();
            continue;
        }
        let label = format!("{name}: {rate} req/s fixed rate");
        progress.set(&label);
        let s = guarded(&label, progress, || {
            load::open_loop(
                l.chat.clone(),
                rate,
                k.open_connections,
                secs(k.rate_warmup_s),
                secs(k.rate_s),
                k.timeout(),
                secs(2.0),
            )
        })
        .await;
        stop = saturated(&s, rate);
        r.rates.push(RatePoint {
            rate,
            stats: Some(s),
            saturated: stop,
        });
        progress.inc();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Closed loop at rising concurrency: peak throughput, and the CPU cost per request.
    for &c in &k.closed_levels {
        let label = format!("{name}: closed loop, {c} connections");
        progress.set(&label);
        let (mut cpu0, mut mcpu0, mut t) = (0.0, 0.0, Instant::now());
        let s = guarded(&label, progress, || {
            cpu0 = sys::tree_cpu_seconds(l.pid);
            mcpu0 = sys::tree_cpu_seconds(mock_pid);
            t = Instant::now();
            load::closed_loop(
                l.chat.clone(),
                c,
                secs(k.closed_warmup_s),
                secs(k.closed_seconds(c)),
                k.timeout(),
            )
        })
        .await;
        let elapsed = t.elapsed().as_secs_f64();
        let (cpu1, mcpu1) = (
            sys::tree_cpu_seconds(l.pid),
            sys::tree_cpu_seconds(mock_pid),
        );
        // CPU was measured over warm-up + run; scale the request count the same way.
        let all_requests = s.rps * elapsed;
        let per = |d: f64| (all_requests > 0.0).then(|| d / all_requests * 1e6);
        let own = if l.pid == mock_pid {
            None
        } else {
            per(cpu1 - cpu0)
        };
        r.closed.push(ClosedPoint {
            concurrency: c,
            stats: s,
            cpu_us_per_request: own.or_else(|| per(cpu1 - cpu0)),
            mock_cpu_us_per_request: per(mcpu1 - mcpu0),
        });
        progress.inc();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The highest fixed rate with p99 under the bound: bisection between the best passing rate
    // seen so far and the closed-loop peak.
    if k.search_steps > 0 {
        let mut lo = r
            .rates
            .iter()
            .filter_map(|p| {
                p.stats
                    .as_ref()
                    .filter(|s| passes(s, p.rate, k.p99_bound_ms))
                    .map(|_| p.rate)
            })
            .fold(0.0f64, f64::max);
        let mut hi = r.peak_rps().unwrap_or(lo) * 1.05;
        for step in 0..k.search_steps {
            if hi <= lo * 1.03 {
                break;
            }
            let mid = ((lo + hi) / 2.0).round().max(1.0);
            let label = format!(
                "{name}: searching the p99 < {} ms rate, step {}: {mid} req/s",
                k.p99_bound_ms,
                step + 1
            );
            progress.set(&label);
            let s = guarded(&label, progress, || {
                load::open_loop(
                    l.chat.clone(),
                    mid,
                    k.open_connections,
                    secs(k.rate_warmup_s),
                    secs(k.search_s),
                    k.timeout(),
                    secs(2.0),
                )
            })
            .await;
            if passes(&s, mid, k.p99_bound_ms) {
                lo = mid;
            } else {
                hi = mid;
            }
            r.search.push((mid, s));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        r.max_rate_under_bound = (lo > 0.0).then_some(lo);
    }
    progress.inc();
    r.memory.after_load_kib = sys::tree_rss_kib(l.pid);

    // Streams: time to first event and the arrival of every event.
    progress.set(&format!(
        "{name}: streaming ({} x {} events)",
        k.streams,
        targets::STREAM_EVENTS
    ));
    r.streaming = Some(streaming(l, direct, k).await);
    progress.inc();

    // Cache hits: only once the gateway says HIT.
    progress.set(&format!("{name}: cache hits"));
    cache(l, k, r).await;
    progress.inc();

    // Memory with many open streams.
    progress.set(&format!(
        "{name}: memory with {} open streams",
        k.hold_streams
    ));
    let held = load::hold_streams(l.hold.clone(), k.hold_streams, secs(k.hold_within_s)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    r.memory.streams_kib = sys::tree_rss_kib(l.pid);
    r.memory.streams_open = held.open;
    r.memory.streams_wanted = k.hold_streams;
    r.memory.streams_failed = held.failed;
    r.memory.streams_error = held.first_error.clone();
    held.close().await;
    // Let the target notice the closed connections before the next one is measured.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(probe) = &l.spec.isolate {
        progress.set(&format!(
            "{name}: isolate memory with {} open streams",
            k.hold_streams
        ));
        match crate::isolate::measure(probe, k.hold_streams, secs(k.hold_within_s)).await {
            Ok(m) => r.memory.isolate = Some(m),
            Err(e) => r.memory.isolate_error = Some(e),
        }
    }
    progress.inc();
}

/// Streams through the target; when `direct` is given, the same number of streams straight to
/// the mock run at the same time, so that both see the same mock timer behaviour and the added
/// delays compare like with like.
async fn streaming(l: &Live, direct: Option<&Live>, k: &Knobs) -> Streaming {
    // A stream's length: its loops start spread over it, so requests arrive as steady traffic.
    let spread = Duration::from_millis(targets::STREAM_GAP_MS * targets::STREAM_EVENTS as u64);
    let run = |spec: Arc<RequestSpec>| {
        load::streams(spec, k.streams, k.stream_concurrency, spread, k.timeout())
    };
    match direct.filter(|d| d.spec.name != l.spec.name) {
        Some(d) => {
            let (t, base) = tokio::join!(run(l.stream.clone()), run(d.stream.clone()));
            let mut out = summarize(t);
            let base = summarize(base);
            if base.complete > 0 {
                relate(&mut out, &base);
                out.paired = true;
            }
            out
        }
        None => summarize(run(l.stream.clone()).await),
    }
}

fn relate(s: &mut Streaming, direct: &Streaming) {
    if s.complete == 0 {
        return;
    }
    s.added_first_event_us = Some(s.first_event_p50_us - direct.first_event_p50_us);
    let mut later: Vec<f64> = s
        .event_offsets_us
        .iter()
        .zip(&direct.event_offsets_us)
        .skip(1)
        .map(|(a, b)| a - b)
        .collect();
    s.added_per_event_us = Some(median(&mut later));
    if let (Some(t), Some(d)) = (s.transit_p50_us, direct.transit_p50_us) {
        s.added_relay_per_event_us = Some(t - d);
    }
}

fn summarize(traces: Vec<Result<load::StreamTrace, String>>) -> Streaming {
    let mut out = Streaming {
        streams: traces.len(),
        ..Default::default()
    };
    let mut ok = Vec::new();
    for t in traces {
        match t {
            Ok(t) if t.status == 200 && t.events.len() >= targets::STREAM_EVENTS && t.done => {
                ok.push(t)
            }
            Ok(t) => {
                out.first_error.get_or_insert(format!(
                    "status {}, {} events, [DONE] {}",
                    t.status,
                    t.events.len(),
                    t.done
                ));
            }
            Err(e) => {
                out.first_error.get_or_insert(e);
            }
        }
    }
    out.complete = ok.len();
    if ok.is_empty() {
        return out;
    }
    out.events_per_stream = ok.iter().map(|t| t.events.len() as f64).sum::<f64>() / ok.len() as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut first: Vec<f64> = ok.iter().map(|t| us(t.events[0])).collect();
    out.first_event_p50_us = median(&mut first.clone());
    out.head_p50_us = median(&mut ok.iter().map(|t| us(t.head)).collect::<Vec<_>>());
    out.first_event_p99_us = quantile(&mut first, 0.99);
    out.event_offsets_us = (0..targets::STREAM_EVENTS)
        .map(|i| median(&mut ok.iter().map(|t| us(t.events[i])).collect::<Vec<_>>()))
        .collect();
    out.last_event_p50_us = *out.event_offsets_us.last().unwrap_or(&0.0);
    let mut transit: Vec<f64> = ok
        .iter()
        .flat_map(|t| t.transit_us.iter().copied())
        .collect();
    // Only when (nearly) every event kept its stamp: a gateway that rebuilds chunks drops it.
    if transit.len() * 10 >= ok.len() * targets::STREAM_EVENTS * 9 {
        out.transit_p50_us = Some(median(&mut transit));
    }
    out
}

/// Fills in the streaming figures relative to direct where they were not measured in pairs.
pub fn relate_streams(results: &mut [TargetResult]) {
    let Some(direct) = results
        .iter()
        .find(|r| r.name == "direct")
        .and_then(|r| r.streaming.clone())
        .filter(|s| s.complete > 0)
    else {
        return;
    };
    for r in results.iter_mut() {
        if let Some(s) = r.streaming.as_mut().filter(|s| !s.paired) {
            relate(s, &direct);
        }
    }
}

/// The header a caching gateway sets on a hit.
pub const CACHE_HEADER: &str = "x-gateway-cache";

async fn cache(l: &Live, k: &Knobs, r: &mut TargetResult) {
    let mut conn = Conn::new(l.spec.addr());
    let mut hit = false;
    // The first answer is a miss; the entry may be stored just after it was sent.
    for _ in 0..5 {
        if let Ok(Ok(a)) = tokio::time::timeout(k.timeout(), conn.send(&l.cacheable)).await {
            hit = a
                .headers
                .get(CACHE_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("HIT"));
        }
        if hit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !hit {
        r.cache_note = format!("n/a (no `{CACHE_HEADER}: HIT`)");
        return;
    }
    let lat = load::sequential(&mut conn, &l.cacheable, k.cache_requests, k.timeout()).await;
    let mut us: Vec<f64> = lat
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1e6)
        .collect();
    r.cache_hit_p50_us = Some(median(&mut us));
    r.cache_note = format!("{} sequential hits", us.len());
}

/// Steps the progress bar counts for one target (besides the shared sequential step).
pub fn steps_per_target(k: &Knobs) -> u64 {
    (k.rates.len() + k.closed_levels.len() + 4) as u64
}

/// One soak sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakSample {
    pub at_s: f64,
    pub rss_kib: Option<u64>,
    pub stats: LoadStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakResult {
    pub target: String,
    pub version: String,
    pub rate: f64,
    pub seconds: f64,
    pub samples: Vec<SoakSample>,
    pub rss_start_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub rss_max_kib: Option<u64>,
    pub growth_kib: Option<i64>,
    pub errors: u64,
    pub ok: u64,
}

/// The soak: a fixed rate for a long time in windows; resident memory after each window.
pub async fn soak(
    l: &Live,
    rate: f64,
    total: Duration,
    window: Duration,
    k: &Knobs,
    progress: &Progress,
) -> SoakResult {
    let start = Instant::now();
    let mut samples: Vec<SoakSample> = Vec::new();
    let mut first = true;
    while start.elapsed() + window / 2 < total {
        let warm = if first {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        first = false;
        let s = load::open_loop(
            l.chat.clone(),
            rate,
            k.open_connections,
            warm,
            window,
            k.timeout(),
            Duration::from_secs(2),
        )
        .await;
        let rss = sys::tree_rss_kib(l.pid);
        progress.set(&format!(
            "{}: soak {:.0}/{:.0} s, p99 {:.2} ms, RSS {} KiB, errors {}",
            l.spec.name,
            start.elapsed().as_secs_f64(),
            total.as_secs_f64(),
            s.p99_us / 1000.0,
            rss.unwrap_or(0),
            s.errors
        ));
        progress.inc();
        samples.push(SoakSample {
            at_s: start.elapsed().as_secs_f64(),
            rss_kib: rss,
            stats: s,
        });
    }
    // Growth: from the end of the first minute (allocator pools and connection pools warmed
    // up) to the end.
    let base = samples
        .iter()
        .find(|s| s.at_s >= 60.0)
        .or(samples.first())
        .and_then(|s| s.rss_kib);
    let end = samples.last().and_then(|s| s.rss_kib);
    SoakResult {
        target: l.spec.name.clone(),
        version: l.spec.version.clone(),
        rate,
        seconds: start.elapsed().as_secs_f64(),
        rss_start_kib: base,
        rss_end_kib: end,
        rss_max_kib: samples.iter().filter_map(|s| s.rss_kib).max(),
        growth_kib: base.zip(end).map(|(a, b)| b as i64 - a as i64),
        errors: samples.iter().map(|s| s.stats.errors).sum(),
        ok: samples.iter().map(|s| s.stats.ok).sum(),
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_the_goals_read_is_measured_longer_than_the_others() {
        let k = Knobs::full();
        assert_eq!(k.closed_seconds(k.cpu_level), 9.0);
        assert_eq!(k.closed_seconds(16), k.closed_s);
        // Without the knob (smoke, quick, or results from before it): every level alike.
        let smoke = Knobs::smoke();
        assert_eq!(smoke.closed_seconds(smoke.cpu_level), smoke.closed_s);
        let old: Knobs = serde_json::from_value({
            let mut v = serde_json::to_value(Knobs::full()).expect("knobs");
            v.as_object_mut().expect("an object").remove("cpu_level_s");
            v
        })
        .expect("knobs without cpu_level_s");
        assert_eq!(old.closed_seconds(32), old.closed_s);
    }

    #[test]
    fn the_relay_delay_per_event_is_the_stamped_transit_above_directs() {
        let trace = |offset_ms: u64, transit_us: f64, stamped: bool| load::StreamTrace {
            status: 200,
            events: (0..targets::STREAM_EVENTS as u64)
                .map(|i| Duration::from_millis(offset_ms + i * targets::STREAM_GAP_MS))
                .collect(),
            transit_us: if stamped {
                vec![transit_us; targets::STREAM_EVENTS]
            } else {
                Vec::new()
            },
            done: true,
            ..Default::default()
        };
        // Through the target: events 6 ms late from the request's start (a late start), each
        // 0.9 ms from the mock's send; direct: 0.2 ms.
        let mut through = summarize(vec![Ok(trace(6, 900.0, true)), Ok(trace(6, 900.0, true))]);
        let direct = summarize(vec![Ok(trace(0, 200.0, true))]);
        relate(&mut through, &direct);
        assert_eq!(through.added_per_event_us, Some(6000.0));
        assert_eq!(through.transit_p50_us, Some(900.0));
        assert_eq!(through.added_relay_per_event_us, Some(700.0));
        // A gateway that rebuilt the chunks without the stamp: no such figure.
        let mut rebuilt = summarize(vec![Ok(trace(6, 0.0, false))]);
        relate(&mut rebuilt, &direct);
        assert_eq!(rebuilt.transit_p50_us, None);
        assert_eq!(rebuilt.added_relay_per_event_us, None);
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 1.0), 5.0);
    }

    #[test]
    fn added_latency_is_the_median_of_paired_differences() {
        // Pairs, not the difference of medians: (12-10, 30-11, 13-12) -> median 2.
        assert_eq!(
            median_of_differences(&[12.0, 30.0, 13.0], &[10.0, 11.0, 12.0]),
            Some(2.0)
        );
        assert_eq!(median_of_differences(&[5.0, 7.0], &[6.0, 6.0]), Some(0.0));
        // Extra batches on one side are left out.
        assert_eq!(median_of_differences(&[4.0, 100.0], &[1.0]), Some(3.0));
        assert_eq!(median_of_differences(&[], &[1.0]), None);
    }

    #[test]
    fn the_per_isolate_line_is_found_only_as_an_event() {
        let log =
            "workerd starting\n{\"event\":\"limiter_per_isolate\",\"message\":\"no LIMITER\"}\n";
        assert!(log_has_event(log, "limiter_per_isolate"));
        assert!(!log_has_event(
            "{\"event\":\"request\",\"path\":\"/v1/chat/completions\"}\n",
            "limiter_per_isolate"
        ));
        assert!(!log_has_event(
            "limiter_per_isolate mentioned in passing",
            "limiter_per_isolate"
        ));
        assert!(!log_has_event("", "limiter_per_isolate"));
    }

    #[test]
    fn the_answer_streams_as_fifty_non_empty_events() {
        // The mock answers "Mock answer <12 hex> to: <message>" and splits it into 50 pieces.
        let v: Value = serde_json::from_slice(&chat_body(targets::STREAM_MODEL, true)).unwrap();
        let msg = v
            .pointer("/messages/1/content")
            .and_then(Value::as_str)
            .unwrap();
        let answer_len = "Mock answer ".len() + 12 + " to: ".len() + msg.len();
        assert_eq!(answer_len, targets::STREAM_EVENTS);
        assert_eq!(v["stream"], json!(true));
    }

    #[test]
    fn a_rate_passes_only_with_no_errors_and_p99_under_the_bound() {
        let s = LoadStats {
            ok: 1000,
            rps: 1000.0,
            p99_us: 9000.0,
            ..Default::default()
        };
        assert!(passes(&s, 1000.0, 10.0));
        assert!(!passes(
            &LoadStats {
                errors: 1,
                ..s.clone()
            },
            1000.0,
            10.0
        ));
        assert!(!passes(
            &LoadStats {
                p99_us: 11_000.0,
                ..s.clone()
            },
            1000.0,
            10.0
        ));
        assert!(!passes(&LoadStats { rps: 900.0, ..s }, 1000.0, 10.0));
    }
}

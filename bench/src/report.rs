//! The written results: results.md (absolute figures, ratios, the goals), machine.md,
//! results.json, and README-snippet.md for the README's performance section.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::scenarios::{Results, SoakResult, TargetResult};

pub fn ms(us: f64) -> String {
    let m = us / 1000.0;
    if m.abs() < 1.0 {
        format!("{m:.3} ms")
    } else if m.abs() < 10.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.1} ms")
    }
}

pub fn num(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > 1e-9 => {
            let r = a / b;
            if r.abs() >= 100.0 {
                format!("{r:.0}×")
            } else if r.abs() >= 10.0 {
                format!("{r:.1}×")
            } else {
                format!("{r:.2}×")
            }
        }
        _ => "–".into(),
    }
}

/// The figures compared across targets, each `None` when not measured.
struct Key {
    added_us: Option<f64>,
    seq_p50_us: Option<f64>,
    max_rate: Option<f64>,
    peak: Option<f64>,
    at32: Option<f64>,
    cpu_us: Option<f64>,
    first_event_us: Option<f64>,
    /// Later events from the request's start (holds the request's late start).
    per_event_us: Option<f64>,
    /// What the target adds to each event on its way (from the mock's send stamp).
    relay_us: Option<f64>,
    idle_kib: Option<u64>,
    streams_kib: Option<u64>,
}

fn key(r: &TargetResult, cpu_level: usize) -> Key {
    let s = r.streaming.as_ref();
    Key {
        added_us: r.sequential.as_ref().and_then(|s| s.added_us),
        seq_p50_us: r.sequential.as_ref().map(|s| s.p50_us),
        max_rate: r.max_rate_under_bound,
        peak: r.peak_rps(),
        at32: r.closed_at(cpu_level).map(|c| c.stats.rps),
        cpu_us: r.closed_at(cpu_level).and_then(|c| c.cpu_us_per_request),
        first_event_us: s.and_then(|s| s.added_first_event_us),
        per_event_us: s.and_then(|s| s.added_per_event_us),
        relay_us: s.and_then(|s| s.added_relay_per_event_us),
        idle_kib: r.memory.idle_kib,
        streams_kib: r.memory.streams_kib,
    }
}

/// The added delay per stream event: from the mock's send stamp when the events kept it, else
/// (a gateway that rebuilds the chunks) from the request's start, said so.
fn per_event(k: &Key) -> String {
    match (k.relay_us, k.per_event_us) {
        (Some(v), _) => ms(v),
        (None, Some(v)) => format!("{} (from the request's start)", ms(v)),
        (None, None) => "–".into(),
    }
}

fn summary_table(res: &Results, out: &mut String) {
    let c = res.knobs.cpu_level;
    let bound = res.knobs.p99_bound_ms;
    let _ = writeln!(
        out,
        "| target | added latency (sequential, p50) | sequential p50 | max req/s with p99 < {bound} ms | req/s at {c} conns | peak req/s | CPU per request | added delay, first event | added delay per event | RSS idle | RSS, {} open streams | cache hit p50 |",
        num(res.knobs.hold_streams as f64)
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in res.targets.iter().filter(|r| r.ok()) {
        let k = key(r, c);
        let held = if r.memory.streams_open < r.memory.streams_wanted {
            format!(" ({} open)", num(r.memory.streams_open as f64))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
            r.name,
            if r.name == "direct" {
                "(floor)".into()
            } else {
                opt(k.added_us, ms)
            },
            opt(k.seq_p50_us, ms),
            opt(k.max_rate, num),
            opt(k.at32, num),
            opt(k.peak, num),
            opt(k.cpu_us, |v| format!("{v:.0} µs")),
            if r.name == "direct" {
                "(floor)".into()
            } else {
                opt(k.first_event_us, ms)
            },
            if r.name == "direct" {
                "(floor)".into()
            } else {
                per_event(&k)
            },
            opt(k.idle_kib, mib),
            opt(k.streams_kib, mib),
            held,
            r.cache_hit_p50_us.map(ms).unwrap_or_else(|| "n/a".into()),
        );
    }
}

fn ratio_tables(res: &Results, out: &mut String) {
    let c = res.knobs.cpu_level;
    let ok: Vec<&TargetResult> = res.targets.iter().filter(|r| r.ok()).collect();
    let Some(direct) = ok.iter().find(|r| r.name == "direct") else {
        return;
    };
    let d = key(direct, c);
    let _ = writeln!(out, "\n### Ratios to direct (the mock alone)\n");
    let _ = writeln!(out, "Latency and memory: target ÷ direct (lower is better); throughput: target ÷ direct (higher is better, 1× is the floor's ceiling).\n");
    let _ = writeln!(out, "| target | sequential p50 | max req/s, p99 < {} ms | req/s at {c} conns | peak req/s | RSS idle | RSS with streams |", res.knobs.p99_bound_ms);
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for r in ok.iter().filter(|r| r.name != "direct") {
        let k = key(r, c);
        let f = |v: Option<u64>| v.map(|v| v as f64);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            ratio(k.seq_p50_us, d.seq_p50_us),
            ratio(k.max_rate, d.max_rate),
            ratio(k.at32, d.at32),
            ratio(k.peak, d.peak),
            ratio(f(k.idle_kib), f(d.idle_kib)),
            ratio(f(k.streams_kib), f(d.streams_kib)),
        );
    }
    let Some(fly) = ok.iter().find(|r| r.name == "fly-fallback") else {
        return;
    };
    let peers: Vec<&&TargetResult> = ok
        .iter()
        .filter(|r| r.name != "direct" && r.name != "fly-fallback")
        .collect();
    if peers.is_empty() {
        return;
    }
    let f = key(fly, c);
    let _ = writeln!(out, "\n### fly-fallback compared with each peer\n");
    let _ = writeln!(out, "How many times better fly-fallback is (peer ÷ fly-fallback for latency, CPU and memory; fly-fallback ÷ peer for throughput).\n");
    let mut head = String::from("| figure |");
    let mut rule = String::from("|---|");
    for p in &peers {
        head.push_str(&format!(" vs {} |", p.name));
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    type Row = Box<dyn Fn(&Key, &Key) -> String>;
    let rows: Vec<(&str, Row)> = vec![
        (
            "added latency, sequential p50",
            Box::new(|f: &Key, p: &Key| ratio(p.added_us, f.added_us)),
        ),
        (
            "sequential p50 (total)",
            Box::new(|f: &Key, p: &Key| ratio(p.seq_p50_us, f.seq_p50_us)),
        ),
        (
            "max req/s with p99 under the bound",
            Box::new(|f: &Key, p: &Key| ratio(f.max_rate, p.max_rate)),
        ),
        (
            "req/s at 32 connections",
            Box::new(|f: &Key, p: &Key| ratio(f.at32, p.at32)),
        ),
        (
            "peak req/s",
            Box::new(|f: &Key, p: &Key| ratio(f.peak, p.peak)),
        ),
        (
            "CPU per request",
            Box::new(|f: &Key, p: &Key| ratio(p.cpu_us, f.cpu_us)),
        ),
        (
            "added delay, first stream event",
            Box::new(|f: &Key, p: &Key| {
                ratio(
                    p.first_event_us.map(|v| v.max(1.0)),
                    f.first_event_us.map(|v| v.max(1.0)),
                )
            }),
        ),
        (
            "RSS idle",
            Box::new(|f: &Key, p: &Key| {
                ratio(p.idle_kib.map(|v| v as f64), f.idle_kib.map(|v| v as f64))
            }),
        ),
        (
            "RSS with open streams",
            Box::new(|f: &Key, p: &Key| {
                ratio(
                    p.streams_kib.map(|v| v as f64),
                    f.streams_kib.map(|v| v as f64),
                )
            }),
        ),
    ];
    for (label, fun) in rows {
        let mut line = format!("| {label} |");
        for p in &peers {
            line.push_str(&format!(" {} |", fun(&f, &key(p, c))));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Issue 14: the limited key against the unlimited one, per target configured with it.
fn limited_key_table(res: &Results, out: &mut String) {
    let rows: Vec<&TargetResult> = res
        .targets
        .iter()
        .filter(|r| r.ok() && r.limited_key.is_some())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Limited key (issue 14)\n");
    let _ = writeln!(
        out,
        "This project's targets are configured with a second client key in `GATEWAY_CONFIG` `keys` with `rpm` {}, `tpm` {} and a budget of {} USD a day (`limits.shard_rpm` = `rpm`: one limiter object), never reached here; each of its requests reserves in the limiter's store before the upstream call and settles after it (in the background). {} batches of {} sequential requests with each key take turns on one keep-alive connection (which key goes first alternates), both asking for the same priced model (`{}`). Added by the limiter = the median over batch pairs of (limited batch median − unlimited batch median).\n",
        num(crate::targets::LIMITED_RPM as f64),
        num(crate::targets::LIMITED_TPM as f64),
        num(crate::targets::LIMITED_BUDGET_USD as f64),
        res.knobs.seq_batches,
        res.knobs.seq_batch,
        crate::targets::PRICED_MODEL,
    );
    let _ = writeln!(
        out,
        "| target | limiter store | unlimited key p50 | limited key p50 | added by the limiter (p50) | errors (unlimited / limited) | per-isolate fallback |\n|---|---|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let Some(l) = &r.limited_key else { continue };
        if let Some(f) = &l.failed {
            let _ = writeln!(
                out,
                "| {} | {} | not measured: {f} | | | | |",
                r.name, l.store
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} / {} | {} |",
            r.name,
            l.store,
            ms(l.unlimited_p50_us),
            ms(l.limited_p50_us),
            opt(l.limited_added_us, |v| format!("{v:.0} µs")),
            num(l.errors as f64),
            num(l.limited_errors as f64),
            match l.per_isolate_fallback {
                Some(true) => format!(
                    "**yes**: `{}` in the log",
                    crate::targets::PER_ISOLATE_EVENT
                ),
                Some(false) => format!(
                    "no (`{}` not in the log)",
                    crate::targets::PER_ISOLATE_EVENT
                ),
                None => "–".into(),
            },
        );
    }
}

/// The key figures of the target named `name`, if it was measured.
fn measured(res: &Results, name: &str) -> Option<Key> {
    res.targets
        .iter()
        .find(|r| r.name == name && r.ok())
        .map(|r| key(r, res.knobs.cpu_level))
}

fn goal_rows(
    res: &Results,
    soak: Option<&SoakResult>,
) -> Vec<(String, String, String, &'static str)> {
    let c = res.knobs.cpu_level;
    let find = |n: &str| measured(res, n);
    let mut rows = Vec::new();
    let Some(fly) = find("fly-fallback") else {
        return rows;
    };
    let yes = |b: bool| if b { "met" } else { "missed" };
    if let Some(a) = fly.added_us {
        rows.push((
            "native added latency at p50".into(),
            "≤ 0.100 ms".into(),
            ms(a),
            yes(a <= 100.0),
        ));
    }
    for (peer, factor) in [("portkey", 10.0), ("litellm", 20.0)] {
        if let (Some(p), Some(a)) = (find(peer).and_then(|p| p.added_us), fly.added_us) {
            rows.push((
                format!("added latency vs {peer}"),
                format!("≤ 1/{factor:.0} of {peer}'s ({})", ms(p / factor)),
                format!("{} = 1/{:.0}", ms(a), p / a.max(0.001)),
                yes(a <= p / factor),
            ));
        }
    }
    for (peer, factor) in [("portkey", 5.0), ("litellm", 20.0)] {
        if let Some(p) = find(peer) {
            for (label, fv, pv) in [
                (format!("req/s at {c} connections"), fly.at32, p.at32),
                (
                    "max req/s with p99 under the bound".to_string(),
                    fly.max_rate,
                    p.max_rate,
                ),
            ] {
                if let (Some(fv), Some(pv)) = (fv, pv) {
                    rows.push((
                        format!("throughput vs {peer}: {label}"),
                        format!("≥ {factor:.0}× {peer}'s ({})", num(pv * factor)),
                        format!("{} = {:.1}×", num(fv), fv / pv.max(0.001)),
                        yes(fv >= pv * factor),
                    ));
                }
            }
        }
    }
    if let Some(e) = fly.relay_us.or(fly.per_event_us) {
        rows.push((
            "added delay per stream event".into(),
            "≤ 1 ms".into(),
            ms(e),
            yes(e <= 1000.0),
        ));
    }
    if let Some(m) = fly.streams_kib {
        let r = res.targets.iter().find(|r| r.name == "fly-fallback");
        let open = r.map(|r| r.memory.streams_open).unwrap_or(0);
        rows.push((
            format!(
                "RSS with {} open streams",
                num(res.knobs.hold_streams as f64)
            ),
            "≤ 64 MB".into(),
            format!("{} ({} open)", mib(m), num(open as f64)),
            yes(m as f64 * 1024.0 <= 64e6 && open >= res.knobs.hold_streams),
        ));
    }
    if let Some(s) = soak.filter(|s| s.target == "fly-fallback") {
        if let (Some(g), Some(b)) = (s.growth_kib, s.rss_start_kib) {
            let flat = (g as f64) <= (b as f64 * 0.05).max(1024.0);
            rows.push((
                "RSS flat across the soak".into(),
                "growth ≤ 5% (or 1 MiB)".into(),
                format!(
                    "{:+.1} MiB over {:.0} s at {} req/s",
                    g as f64 / 1024.0,
                    s.seconds,
                    num(s.rate)
                ),
                yes(flat),
            ));
        }
    }
    rows
}

/// A goal's row: its name, the target, the measured figure and whether it is met.
type GoalRow = (String, String, String, &'static str);

/// One "at most" or "at least" goal, when the figure was measured.
struct Goal<'a> {
    name: String,
    target: &'a str,
    value: Option<f64>,
    show: fn(f64) -> String,
    met: &'a dyn Fn(f64) -> bool,
}

impl Goal<'_> {
    fn row(self) -> Option<GoalRow> {
        let v = self.value?;
        let met = if (self.met)(v) { "met" } else { "missed" };
        Some((self.name, self.target.to_string(), (self.show)(v), met))
    }
}

/// Issue 12's targets: the Worker on bare workerd, and fly-fallback's own cost.
fn speed_goal_rows(res: &Results) -> Vec<GoalRow> {
    let c = res.knobs.cpu_level;
    let find = |n: &str| measured(res, n);
    let us = |v: f64| format!("{v:.0} µs");
    let mut goals = Vec::new();
    if let Some(w) = find("worker-workerd") {
        goals.extend([
            Goal {
                name: "Worker: added delay, first stream event".into(),
                target: "≤ 2 ms",
                value: w.first_event_us,
                show: ms,
                met: &|v| v <= 2000.0,
            },
            Goal {
                name: "Worker: added delay per later event".into(),
                target: "≤ 0.5 ms",
                value: w.relay_us.or(w.per_event_us),
                show: ms,
                met: &|v| v <= 500.0,
            },
            Goal {
                name: "Worker: added latency per plain request (p50)".into(),
                target: "≤ 0.3 ms",
                value: w.added_us,
                show: ms,
                met: &|v| v <= 300.0,
            },
            Goal {
                name: format!("Worker: req/s at {c} connections"),
                target: "≥ 4,000",
                value: w.at32,
                show: num,
                met: &|v| v >= 4000.0,
            },
        ]);
    }
    if let Some(f) = find("fly-fallback") {
        goals.extend([
            Goal {
                name: "fly-fallback: added latency (p50)".into(),
                target: "≤ 0.08 ms",
                value: f.added_us,
                show: ms,
                met: &|v| v <= 80.0,
            },
            Goal {
                name: "fly-fallback: CPU per request".into(),
                target: "≤ 30 µs",
                value: f.cpu_us,
                show: us,
                met: &|v| v <= 30.0,
            },
        ]);
    }
    let mut rows: Vec<GoalRow> = goals.into_iter().filter_map(Goal::row).collect();
    if let Some(w) = res
        .targets
        .iter()
        .find(|r| r.name == "worker-workerd" && r.ok())
    {
        rows.extend(isolate_goal_row(&w.memory, res.knobs.hold_streams));
    }
    rows
}

/// Cloudflare's limit on an isolate's memory.
const ISOLATE_LIMIT_BYTES: f64 = 128e6;

/// The Worker's memory goal, from its isolate's figures (`crate::isolate`); the process RSS
/// is no measure of it (it holds workerd itself and every connection's buffers). Met only
/// when every stream was open when the figures were read.
fn isolate_goal_row(m: &crate::scenarios::Memory, wanted: usize) -> Option<GoalRow> {
    let name = format!("Worker: {} open streams", num(wanted as f64));
    let target = "within 128 MB of isolate memory".to_string();
    let rss = m
        .streams_kib
        .map(|k| format!("; workerd process RSS {}", mib(k)))
        .unwrap_or_default();
    let Some(i) = &m.isolate else {
        let why = m.isolate_error.as_deref()?;
        return Some((name, target, format!("not measured ({why}){rss}"), "–"));
    };
    let total = i.total()?;
    let opened = if i.open < wanted {
        format!(", only {} of them open", num(i.open as f64))
    } else {
        String::new()
    };
    let met = i.open >= wanted && (total as f64) <= ISOLATE_LIMIT_BYTES;
    Some((
        name,
        target,
        format!(
            "isolate {} ({}){opened}{rss}",
            bytes_mib(total),
            isolate_parts(i)
        ),
        if met { "met" } else { "missed" },
    ))
}

fn bytes_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1_048_576.0)
}

/// The isolate's figures, each in MiB: "JS heap …, array buffers …, wasm memory …".
fn isolate_parts(i: &crate::isolate::IsolateMemory) -> String {
    let part = |label: &str, v: Option<u64>| v.map(|b| format!("{label} {}", bytes_mib(b)));
    [
        part("JS heap", i.js_heap_used),
        part("array buffers", i.array_buffers),
        part("wasm memory", i.wasm_memory),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

/// The Worker against `worker-js-floor` (a gateway's least work in plain JavaScript on the
/// same workerd) in the same run: what of the Worker's cost is its own. Rows: (figure, floor,
/// Worker, Worker ÷ floor, where a ratio above 1 is the Worker's extra cost).
fn floor_rows(res: &Results) -> Vec<(String, String, String, String)> {
    let c = res.knobs.cpu_level;
    let (Some(w), Some(f)) = (
        measured(res, "worker-workerd"),
        measured(res, "worker-js-floor"),
    ) else {
        return Vec::new();
    };
    let us = |v: f64| format!("{v:.0} µs");
    // (figure, Worker, floor, how to show it, more is better). For req/s the ratio is
    // floor ÷ Worker, so that above 1 is the Worker's extra cost there too.
    type Figure = (String, Option<f64>, Option<f64>, fn(f64) -> String, bool);
    let figures: [Figure; 6] = [
        (
            "added latency per plain request (p50)".into(),
            w.added_us,
            f.added_us,
            ms,
            false,
        ),
        (
            format!("req/s at {c} connections"),
            w.at32,
            f.at32,
            num,
            true,
        ),
        ("CPU per request".into(), w.cpu_us, f.cpu_us, us, false),
        (
            "added delay, first stream event".into(),
            w.first_event_us,
            f.first_event_us,
            ms,
            false,
        ),
        (
            "added delay per later event".into(),
            w.relay_us,
            f.relay_us,
            ms,
            false,
        ),
        (
            "later events, from the request's start".into(),
            w.per_event_us,
            f.per_event_us,
            ms,
            false,
        ),
    ];
    figures
        .into_iter()
        .filter_map(|(name, wv, fv, show, more_is_better)| {
            let (wv, fv) = (wv?, fv?);
            let ratio = if more_is_better { fv / wv } else { wv / fv };
            (ratio.is_finite() && wv > 0.0 && fv > 0.0)
                .then(|| (name, show(fv), show(wv), format!("{ratio:.2}×")))
        })
        .collect()
}

fn goals_table(res: &Results, soak: Option<&SoakResult>, out: &mut String) {
    let speed = speed_goal_rows(res);
    if !speed.is_empty() {
        let _ = writeln!(
            out,
            "| goal (issue 12) | target | measured | |\n|---|---|---|---|"
        );
        for (g, t, m, y) in speed {
            let _ = writeln!(out, "| {g} | {t} | {m} | {y} |");
        }
        let _ = writeln!(out);
    }
    let floor = floor_rows(res);
    if !floor.is_empty() {
        let _ = writeln!(
            out,
            "| the Worker against the JavaScript floor (same run) | `worker-js-floor` | `worker-workerd` | Worker's cost ÷ floor's |\n|---|---:|---:|---:|"
        );
        for (name, f, w, r) in floor {
            let _ = writeln!(out, "| {name} | {f} | {w} | {r} |");
        }
        let _ = writeln!(out);
    }
    let rows = goal_rows(res, soak);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| goal (issue 5) | target | measured (fly-fallback) | |\n|---|---|---|---|"
    );
    for (g, t, m, y) in rows {
        let _ = writeln!(out, "| {g} | {t} | {m} | {y} |");
    }
}

fn detail_tables(res: &Results, out: &mut String) {
    let _ = writeln!(out, "\n## Fixed-rate load (open loop)\n");
    let _ = writeln!(
        out,
        "Requests scheduled at a fixed rate over {} connections for {} s after {} s of warm-up; latency counts from each request's scheduled time, so queueing is charged (no coordinated omission). A target that cannot keep up at one rate is not tried at higher ones.\n",
        res.knobs.open_connections, res.knobs.rate_s, res.knobs.rate_warmup_s
    );
    let _ = writeln!(out, "| target | rate | achieved req/s | p50 | p99 | p99.9 | max | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in res.targets.iter().filter(|r| r.ok()) {
        for p in &r.rates {
            match &p.stats {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {} ({:.2}%){} |",
                        r.name,
                        num(p.rate),
                        num(s.rps),
                        ms(s.p50_us),
                        ms(s.p99_us),
                        ms(s.p999_us),
                        ms(s.max_us),
                        num(s.errors as f64),
                        s.error_rate() * 100.0,
                        if p.saturated { ", saturated" } else { "" }
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | not run: saturated at a lower rate | | | | | |",
                        r.name,
                        num(p.rate)
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "\n## Closed loop (maximum rate)\n");
    let _ = writeln!(
        out,
        "Each connection sends its next request as soon as the last one is answered, {} s after {} s of warm-up{}. CPU is user + system time of the target's processes (and of the mock) per answered request.\n",
        res.knobs.closed_s,
        res.knobs.closed_warmup_s,
        match res.knobs.cpu_level_s {
            Some(s) if s > res.knobs.closed_s => format!(
                " ({s} s at {} connections, the level the summary and the goals read)",
                res.knobs.cpu_level
            ),
            _ => String::new(),
        }
    );
    let _ = writeln!(out, "| target | connections | req/s | p50 | p99 | p99.9 | errors | target CPU / req | mock CPU / req |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in res.targets.iter().filter(|r| r.ok()) {
        for p in &r.closed {
            let s = &p.stats;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                p.concurrency,
                num(s.rps),
                ms(s.p50_us),
                ms(s.p99_us),
                ms(s.p999_us),
                num(s.errors as f64),
                opt(p.cpu_us_per_request, |v| format!("{v:.0} µs")),
                opt(p.mock_cpu_us_per_request, |v| format!("{v:.0} µs")),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Highest rate with p99 under {} ms\n",
        res.knobs.p99_bound_ms
    );
    let _ = writeln!(out, "Bisection between the best passing fixed rate and the closed-loop peak; a rate passes with no errors, p99 under the bound and at least 95% of the rate achieved.\n");
    let _ = writeln!(out, "| target | tried req/s | achieved | p99 | errors | passed |\n|---|---:|---:|---:|---:|---|");
    for r in res.targets.iter().filter(|r| r.ok()) {
        for (rate, s) in &r.search {
            let pass = s.errors == 0
                && s.p99_us <= res.knobs.p99_bound_ms * 1000.0
                && s.rps >= rate * 0.95;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.name,
                num(*rate),
                num(s.rps),
                ms(s.p99_us),
                num(s.errors as f64),
                if pass { "yes" } else { "no" }
            );
        }
    }
    let _ = writeln!(out, "\n## Streaming\n");
    let _ = writeln!(
        out,
        "{} streams of {} events {} ms apart ({} at a time, their starts spread over one stream's length so that requests arrive as steady traffic rather than in one burst). Added delays are relative to as many streams straight to the mock run at the same time (so both see the same mock timer jitter): the first event's (median over streams), and the median over events 2..{} of the difference in each event's median arrival time, counted from the request's start (so it also holds the request's late arrival at the mock, which paces the events from then). The mock stamps each content event with its send time: \"mock's send to arrival\" is the median over every event of its time from the mock to the client, and \"added per event, from the mock's send\" is that minus direct's, what the target adds to each event on its way (\"–\" where the target rebuilt the chunks without the stamp). The summary's and the goals' per-event figures are this one.\n",
        res.knobs.streams,
        crate::targets::STREAM_EVENTS,
        crate::targets::STREAM_GAP_MS,
        res.knobs.stream_concurrency,
        crate::targets::STREAM_EVENTS
    );
    let _ = writeln!(out, "| target | complete | events/stream | first event p50 | first event p99 | last event p50 | added, first event | added per later event, from the request's start | mock's send to arrival, p50 | added per event, from the mock's send |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in res.targets.iter().filter(|r| r.ok()) {
        if let Some(s) = &r.streaming {
            let _ = writeln!(
                out,
                "| {} | {}/{} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                s.complete,
                s.streams,
                s.events_per_stream,
                ms(s.first_event_p50_us),
                ms(s.first_event_p99_us),
                ms(s.last_event_p50_us),
                opt(s.added_first_event_us, ms),
                opt(s.added_per_event_us, ms),
                opt(s.transit_p50_us, ms),
                opt(s.added_relay_per_event_us, ms),
            );
        }
    }
    let _ = writeln!(out, "\n## Memory, cache\n");
    let _ = writeln!(out, "Resident size (VmRSS from /proc, summed over the target's process tree): idle after start-up and a correctness check, after the load scenarios, and with streams held open (each on its own connection, measured once all delivered their first event).\n");
    let _ = writeln!(out, "| target | RSS idle | RSS after load | RSS with streams | streams open | cache |\n|---|---:|---:|---:|---:|---|");
    for r in res.targets.iter().filter(|r| r.ok()) {
        let m = &r.memory;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}/{}{} | {} |",
            r.name,
            opt(m.idle_kib, mib),
            opt(m.after_load_kib, mib),
            opt(m.streams_kib, mib),
            m.streams_open,
            m.streams_wanted,
            m.streams_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            r.cache_hit_p50_us
                .map(|v| format!("hit p50 {}", ms(v)))
                .unwrap_or_else(|| r.cache_note.clone()),
        );
    }
    isolate_table(res, out);
}

/// The isolate's own memory with the streams open, for the targets on workerd.
fn isolate_table(res: &Results, out: &mut String) {
    let rows: Vec<_> = res
        .targets
        .iter()
        .filter(|r| r.ok() && (r.memory.isolate.is_some() || r.memory.isolate_error.is_some()))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nThe isolate's own memory (what Cloudflare's 128 MB limit applies to) with {} streams open: `bench/profile-worker.mjs --hold` on a workerd of its own with the V8 inspector, serving the same bundle, read once every stream has delivered its first event. The JavaScript heap figure includes garbage not yet collected (workerd's inspector does not collect on request).\n", num(res.knobs.hold_streams as f64));
    let _ = writeln!(out, "| target | streams open | JS heap used | array buffers | wasm memory | isolate total | of 128 MB | workerd RSS (its own workerd) |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        match &r.memory.isolate {
            Some(i) => {
                let b = |v: Option<u64>| v.map(bytes_mib).unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    out,
                    "| {} | {}/{} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    i.open,
                    i.streams,
                    b(i.js_heap_used),
                    b(i.array_buffers),
                    b(i.wasm_memory),
                    b(i.total()),
                    i.total()
                        .map(|t| format!("{:.0}%", t as f64 / ISOLATE_LIMIT_BYTES * 100.0))
                        .unwrap_or_else(|| "–".into()),
                    i.workerd_rss_mib
                        .map(|v| format!("{v:.1} MiB"))
                        .unwrap_or_else(|| "–".into()),
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | not measured: {} | | | | | | |",
                    r.name,
                    r.memory.isolate_error.as_deref().unwrap_or_default()
                );
            }
        }
    }
}

fn mock_cost(res: &Results, out: &mut String) {
    let Some(d) = res.targets.iter().find(|r| r.name == "direct" && r.ok()) else {
        return;
    };
    let _ = writeln!(out, "\n## The mock's own cost\n");
    let c = d.closed_at(res.knobs.cpu_level);
    let _ = writeln!(
        out,
        "Every figure includes the mock upstream and the load generator, which share the machine's {} cores with the target. Alone (direct), the mock answers sequentially in {} (p50, including the client), serves {} req/s at {} connections using {} of CPU per request, and holds {} idle / {} with {} open streams.",
        res.machine.cores,
        opt(d.sequential.as_ref().map(|s| s.p50_us), ms),
        opt(c.map(|c| c.stats.rps), num),
        res.knobs.cpu_level,
        opt(c.and_then(|c| c.mock_cpu_us_per_request), |v| format!("{v:.0} µs")),
        opt(d.memory.idle_kib, mib),
        opt(d.memory.streams_kib, mib),
        num(res.knobs.hold_streams as f64),
    );
    let gw: Vec<String> = res
        .targets
        .iter()
        .filter(|r| r.ok() && r.name != "direct")
        .filter_map(|r| {
            r.closed_at(res.knobs.cpu_level)
                .and_then(|c| c.mock_cpu_us_per_request)
                .map(|m| format!("{} {m:.0} µs", r.name))
        })
        .collect();
    if !gw.is_empty() {
        let _ = writeln!(
            out,
            "Behind each gateway, the mock's CPU per request was: {}.",
            gw.join(", ")
        );
    }
}

pub fn machine_md(res: &Results) -> String {
    let m = &res.machine;
    let mut s = String::from("# Machine\n\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {} |", m.date);
    let _ = writeln!(s, "| cores | {} |", m.cores);
    let _ = writeln!(s, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(s, "| memory | {} |", m.memory);
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(s, "| OS | {} |", m.os);
    for (k, v) in &m.versions {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

pub fn results_md(res: &Results, soak: Option<&SoakResult>) -> String {
    let mut out = String::from("# Benchmark: ai-edge-gateway and its peers\n\n");
    let m = &res.machine;
    let _ = writeln!(
        out,
        "Measured {} on {} cores ({}), {}, kernel {}, by `bench/run.sh` in {:.0} s. Every target sits in front of the same mock upstream on loopback and is driven by the same load generator (bench/, keep-alive HTTP/1.1, HDR histograms) with the same request bodies. Machine details: [machine.md](machine.md); raw figures: [results.json](results.json).\n",
        m.date, m.cores, m.cpu_model, m.memory, m.kernel, res.wall_seconds
    );
    let _ = writeln!(
        out,
        "## Targets\n\n| target | what | version |\n|---|---|---|"
    );
    for r in &res.targets {
        let what = match (&r.skipped, &r.failed) {
            (Some(s), _) => format!("skipped: {s}"),
            (_, Some(f)) => format!("failed: {f}"),
            _ => r.description.clone(),
        };
        let _ = writeln!(out, "| {} | {} | {} |", r.name, what, r.version);
    }
    let _ = writeln!(out, "\n## Summary\n");
    summary_table(res, &mut out);
    let _ = writeln!(out, "\n![latency by rate](latency.png)\n\n![throughput](throughput.png)\n\n![added latency](overhead.png)\n\n![memory](memory.png)\n");
    ratio_tables(res, &mut out);
    limited_key_table(res, &mut out);
    let _ = writeln!(out, "\n## Goals\n");
    goals_table(res, soak, &mut out);
    if soak.is_none() {
        let _ = writeln!(out, "\nThe soak is a separate command (`bench/run.sh soak`); its result is in soak.md when run.");
    }
    mock_cost(res, &mut out);
    detail_tables(res, &mut out);
    if !res.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &res.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    let errs: Vec<String> = res
        .targets
        .iter()
        .filter(|r| r.ok())
        .flat_map(|r| {
            r.rates
                .iter()
                .filter_map(|p| p.stats.as_ref())
                .chain(r.closed.iter().map(|c| &c.stats))
                .filter_map(|s| s.first_error.clone())
                .take(1)
                .map(move |e| format!("{}: first error: {e}", r.name))
        })
        .collect();
    if !errs.is_empty() {
        let _ = writeln!(out, "\n### Errors seen\n");
        for e in errs {
            let _ = writeln!(out, "- {e}");
        }
    }
    out
}

pub fn snippet(res: &Results, soak: Option<&SoakResult>) -> String {
    let mut out =
        String::from("<!-- generated by `bench/run.sh` into bench/results/README-snippet.md -->\n");
    let m = &res.machine;
    let _ = writeln!(
        out,
        "Measured by `bench/run.sh` on {} cores ({}), {}: every target in front of the same mock upstream, driven by the same load generator. Full results, method and ratios: [bench/results/results.md](bench/results/results.md).\n",
        m.cores, m.cpu_model, m.date
    );
    summary_table(res, &mut out);
    let _ = writeln!(out);
    goals_table(res, soak, &mut out);
    let _ = writeln!(out, "\n![latency by rate](bench/results/latency.png)\n\n![throughput](bench/results/throughput.png)");
    out
}

pub fn soak_md(s: &SoakResult) -> String {
    let mut out = format!("# Soak: {}\n\n", s.target);
    let _ = writeln!(
        out,
        "{} at {} req/s (open loop) for {:.0} s: {} answered, {} errors. RSS at 60 s {}, at the end {}, max {}; growth {}.\n\n![soak](soak.png)\n",
        s.version,
        num(s.rate),
        s.seconds,
        num(s.ok as f64),
        num(s.errors as f64),
        opt(s.rss_start_kib, mib),
        opt(s.rss_end_kib, mib),
        opt(s.rss_max_kib, mib),
        opt(s.growth_kib, |g| format!("{:+.2} MiB", g as f64 / 1024.0)),
    );
    let _ = writeln!(
        out,
        "| time | req/s | p50 | p99 | p99.9 | errors | RSS |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for x in &s.samples {
        let _ = writeln!(
            out,
            "| {:.0} s | {} | {} | {} | {} | {} | {} |",
            x.at_s,
            num(x.stats.rps),
            ms(x.stats.p50_us),
            ms(x.stats.p99_us),
            ms(x.stats.p999_us),
            x.stats.errors,
            opt(x.rss_kib, mib)
        );
    }
    out
}

pub fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.join(name).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(num(1631.4), "1,631");
        assert_eq!(num(132.0), "132");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(ms(52.0), "0.052 ms");
        assert_eq!(ms(1290.0), "1.29 ms");
        assert_eq!(ms(29_000.0), "29.0 ms");
        assert_eq!(ratio(Some(10.0), Some(4.0)), "2.50×");
        assert_eq!(ratio(Some(1.0), None), "–");
    }

    #[test]
    fn the_limited_key_table_has_a_row_per_configured_target() {
        use crate::scenarios::{Knobs, LimitedKey};
        let lk = LimitedKey {
            store: "in-process counters".into(),
            unlimited_p50_us: 270.0,
            limited_p50_us: 290.0,
            limited_added_us: Some(21.4),
            per_isolate_fallback: Some(false),
            ..Default::default()
        };
        let res = Results {
            knobs: Knobs::smoke(),
            machine: Default::default(),
            mock_idle_kib: None,
            targets: vec![
                TargetResult {
                    name: "direct".into(),
                    ..Default::default()
                },
                TargetResult {
                    name: "fly-fallback".into(),
                    limited_key: Some(lk.clone()),
                    ..Default::default()
                },
                TargetResult {
                    name: "worker-workerd".into(),
                    limited_key: Some(LimitedKey {
                        failed: Some("limited key: status 401".into()),
                        ..lk
                    }),
                    ..Default::default()
                },
            ],
            notes: vec![],
            wall_seconds: 1.0,
        };
        let md = results_md(&res, None);
        assert!(md.contains("## Limited key (issue 14)"));
        assert!(md.contains("| fly-fallback | in-process counters | 0.270 ms | 0.290 ms | 21 µs | 0 / 0 | no (`limiter_per_isolate` not in the log) |"));
        assert!(md.contains(
            "| worker-workerd | in-process counters | not measured: limited key: status 401 |"
        ));
        assert!(!md.contains("| direct | in-process"));
        // Without any limited-key figure, no section.
        let none = Results {
            targets: vec![res.targets[0].clone()],
            ..res
        };
        assert!(!results_md(&none, None).contains("Limited key"));
    }

    #[test]
    fn the_per_event_figure_is_the_stamped_one_and_says_so_when_it_is_not() {
        use crate::scenarios::{Knobs, Streaming};
        let target = |name: &str, from_start: f64, relay: Option<f64>| TargetResult {
            name: name.into(),
            streaming: Some(Streaming {
                complete: 1,
                added_per_event_us: Some(from_start),
                added_relay_per_event_us: relay,
                ..Default::default()
            }),
            ..Default::default()
        };
        let res = Results {
            knobs: Knobs::smoke(),
            machine: Default::default(),
            mock_idle_kib: None,
            targets: vec![
                target("worker-workerd", 6300.0, Some(800.0)),
                target("litellm", 9000.0, None),
            ],
            notes: vec![],
            wall_seconds: 1.0,
        };
        let md = results_md(&res, None);
        let row = |name: &str| {
            md.lines()
                // The summary's row (the targets table comes first, without figures).
                .find(|l| l.starts_with(&format!("| {name} |")) && l.contains(" ms"))
                .unwrap_or_default()
                .to_string()
        };
        assert!(row("worker-workerd").contains("| 0.800 ms |"), "{md}");
        assert!(!row("worker-workerd").contains("6.30 ms"), "{md}");
        assert!(
            row("litellm").contains("| 9.00 ms (from the request's start) |"),
            "{md}"
        );
        assert!(
            md.contains("| Worker: added delay per later event | ≤ 0.5 ms | 0.800 ms | missed |"),
            "{md}"
        );
    }

    #[test]
    fn the_floor_table_divides_the_workers_cost_by_the_floors() {
        use crate::scenarios::{Knobs, Sequential};
        let target = |name: &str, added: f64| TargetResult {
            name: name.into(),
            sequential: Some(Sequential {
                added_us: Some(added),
                ..Default::default()
            }),
            ..Default::default()
        };
        let res = Results {
            knobs: Knobs::smoke(),
            machine: Default::default(),
            mock_idle_kib: None,
            targets: vec![
                target("worker-workerd", 1500.0),
                target("worker-js-floor", 600.0),
            ],
            notes: vec![],
            wall_seconds: 1.0,
        };
        let rows = floor_rows(&res);
        assert_eq!(
            rows,
            vec![(
                "added latency per plain request (p50)".to_string(),
                "0.600 ms".to_string(),
                "1.50 ms".to_string(),
                "2.50×".to_string()
            )]
        );
        let md = results_md(&res, None);
        assert!(
            md.contains("| added latency per plain request (p50) | 0.600 ms | 1.50 ms | 2.50× |")
        );
        // Without the floor in the run, no table.
        let alone = Results {
            targets: vec![res.targets[0].clone()],
            ..res
        };
        assert!(floor_rows(&alone).is_empty());
        assert!(!results_md(&alone, None).contains("JavaScript floor"));
    }

    #[test]
    fn the_memory_goal_is_judged_on_the_isolates_figures_with_every_stream_open() {
        use crate::isolate::IsolateMemory;
        use crate::scenarios::{Knobs, Memory};
        let memory = |open: usize, heap: u64| Memory {
            streams_kib: Some(340 * 1024),
            isolate: Some(IsolateMemory {
                streams: 1000,
                open,
                js_heap_used: Some(heap),
                array_buffers: Some(10 * 1_048_576),
                wasm_memory: Some(4 * 1_048_576),
                workerd_rss_mib: Some(220.0),
            }),
            ..Default::default()
        };
        let row = isolate_goal_row(&memory(1000, 14 * 1_048_576), 1000).expect("a row");
        assert_eq!(row.3, "met");
        assert_eq!(
            row.2,
            "isolate 28.0 MiB (JS heap 14.0 MiB, array buffers 10.0 MiB, wasm memory 4.0 MiB); workerd process RSS 340.0 MiB"
        );
        // Over the limit, or not every stream open: not met.
        assert_eq!(
            isolate_goal_row(&memory(1000, 120 * 1_048_576), 1000)
                .expect("a row")
                .3,
            "missed"
        );
        let partial = isolate_goal_row(&memory(600, 14 * 1_048_576), 1000).expect("a row");
        assert_eq!(partial.3, "missed");
        assert!(partial.2.contains("only 600 of them open"), "{}", partial.2);
        // Not measured: said why, judged neither way.
        let failed = Memory {
            isolate_error: Some("node is missing".into()),
            ..Default::default()
        };
        let row = isolate_goal_row(&failed, 1000).expect("a row");
        assert_eq!(
            (row.2.as_str(), row.3),
            ("not measured (node is missing)", "–")
        );
        assert!(isolate_goal_row(&Memory::default(), 1000).is_none());

        // The run's report: the goal and the isolate table.
        let res = Results {
            knobs: Knobs::smoke(),
            machine: Default::default(),
            mock_idle_kib: None,
            targets: vec![TargetResult {
                name: "worker-workerd".into(),
                memory: memory(1000, 14 * 1_048_576),
                ..Default::default()
            }],
            notes: vec![],
            wall_seconds: 1.0,
        };
        let md = results_md(&res, None);
        assert!(
            md.contains("| within 128 MB of isolate memory | isolate 28.0 MiB"),
            "{md}"
        );
        assert!(
            md.contains("| worker-workerd | 1000/1000 | 14.0 MiB | 10.0 MiB | 4.0 MiB | 28.0 MiB | 23% | 220.0 MiB |"),
            "{md}"
        );
    }
}

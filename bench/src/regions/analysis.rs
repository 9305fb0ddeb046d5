//! From the raw records and status samples to the figures the report shows.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{nearest, routing_config, Plan, PHASES, REGIONS};

/// One request as a client saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: String,
    /// Scheduled time, seconds from the start of the steady phase.
    pub at_s: f64,
    /// From the scheduled time to the whole answer; `None`: no answer.
    pub latency_ms: Option<f64>,
    /// 0: no HTTP answer.
    pub status: u16,
    /// `x-gateway-upstream`.
    pub upstream: Option<String>,
    /// `x-gateway-attempts` (0 when absent).
    pub attempts: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetInfo {
    /// `netns` or `loopback`.
    pub mode: String,
    pub latency: String,
    pub cut: String,
    /// Why the preferred mechanism was not used, when it was not.
    pub why: Option<String>,
    /// Each region's mock, in region order.
    pub addresses: Vec<String>,
    pub mock_delay_ms: Option<Vec<u64>>,
    pub netem_one_way_us: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamSnap {
    pub name: String,
    pub state: String,
    /// Attempts begun on it so far.
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u64,
    pub latency_ms: Option<f64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusSample {
    pub at_s: f64,
    pub upstreams: Vec<UpstreamSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseStatus {
    pub phase: String,
    pub at_s: f64,
    pub status: Vec<UpstreamSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at_s: f64,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionInfo {
    pub name: String,
    pub city: String,
    pub weight: u32,
    pub fallbacks: Vec<String>,
    pub design_rtt_ms: (u32, u32),
    pub simulated_rtt_ms: f64,
    pub address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    pub code: String,
    pub city: String,
    pub nearest: String,
    pub distance_km: f64,
}

/// One client location in one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub client: String,
    pub phase: String,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Answered requests per upstream (`x-gateway-upstream`), in region order.
    pub served: Vec<(String, u64)>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Answers that took more than one attempt.
    pub failovers: u64,
    /// Answers slower than 1 s.
    pub slow: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// Start of the one-second bucket (by scheduled time).
    pub at_s: f64,
    pub n: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSeries {
    pub client: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharePoint {
    pub at_s: f64,
    /// Answers per upstream in region order, then errors.
    pub served: Vec<u64>,
    pub errors: u64,
}

/// Attempts the gateway began on each upstream between two status samples, per second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptPoint {
    pub at_s: f64,
    pub per_second: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CutAnalysis {
    pub region: String,
    pub cut_at_s: f64,
    pub restored_at_s: f64,
    /// Locations whose nearest region is the one cut.
    pub affected: Vec<String>,
    /// The cut region's state whenever it changed (status samples), seconds from the start.
    pub state_changes: Vec<(f64, String)>,
    /// Seconds after the cut when a status sample first showed it not healthy, and `down`.
    pub first_not_healthy_after_cut_s: Option<f64>,
    pub first_down_after_cut_s: Option<f64>,
    /// Seconds after the restore when a sample first showed it healthy again.
    pub healthy_after_restore_s: Option<f64>,
    /// Attempts begun on the cut region between the cut and the restore.
    pub attempts_during_cut: u64,
    /// Of those, the ones begun after the first sample that showed it not healthy.
    pub attempts_after_marked: u64,
    /// (seconds after the cut, attempts) for each sample interval with attempts after it was
    /// first marked.
    pub attempts_after_marked_at: Vec<(f64, u64)>,
    /// Requests from the affected locations during the cut: answered after more than one
    /// attempt, slower than 1 s, failed.
    pub affected_requests: u64,
    pub affected_failovers: u64,
    pub affected_slow: u64,
    pub affected_errors: u64,
    pub affected_max_ms: Option<f64>,
    /// Of the slow ones: answered within 1-2 s (a connect timeout, then the fallback), and
    /// after 4.5 s or more (an open connection gone silent: the first-byte timeout).
    pub affected_slow_1_2s: u64,
    pub affected_slow_over_4_5s: u64,
    /// Requests from the affected locations (any phase) still waiting for their answer when a
    /// status sample first showed the region not healthy, and how many of those were answered
    /// more than 1 s after that sample.
    pub waiting_when_marked: u64,
    pub waiting_when_marked_answered_1s_later: u64,
    /// Seconds after the cut when the last request slower than 1 s was sent.
    pub last_slow_sent_after_cut_s: Option<f64>,
    /// Seconds after the restore when the region first served a request again (sent time).
    pub first_served_after_restore_s: Option<f64>,
    /// Share of the affected locations' answers it served in the restored phase.
    pub restored_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionsResult {
    pub generated: String,
    pub command: String,
    pub machine: String,
    pub net: NetInfo,
    pub regions: Vec<RegionInfo>,
    pub clients: Vec<ClientInfo>,
    pub rate_per_client: f64,
    pub phase_secs: f64,
    pub warmup_secs: f64,
    pub routing: serde_json::Value,
    pub rows: Vec<Row>,
    pub status_at_phase_end: Vec<PhaseStatus>,
    pub status_timeline: Vec<StatusSample>,
    pub attempts_timeline: Vec<AttemptPoint>,
    pub latency_timeline: Vec<ClientSeries>,
    pub share_timeline: Vec<SharePoint>,
    pub events: Vec<Event>,
    pub cut: CutAnalysis,
    pub findings: Vec<String>,
    pub notes: Vec<String>,
}

pub struct Input<'a> {
    pub plan: &'a Plan,
    pub net: NetInfo,
    pub records: Vec<Record>,
    pub status_timeline: Vec<StatusSample>,
    pub snapshots: Vec<PhaseStatus>,
    pub events: Vec<Event>,
    pub wall_start: SystemTime,
    /// Cores' worth of CPU used by other processes while the load ran.
    pub foreign_cores: f64,
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn phase_of(at_s: f64, phase_secs: f64) -> Option<usize> {
    if at_s < 0.0 {
        return None;
    }
    let i = (at_s / phase_secs).floor() as usize;
    (i < PHASES.len()).then_some(i)
}

fn ok(r: &Record) -> bool {
    r.status == 200
}

pub fn row(client: &str, phase: &str, recs: &[&Record]) -> Row {
    let mut lat: Vec<f64> = recs.iter().filter_map(|r| r.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let served = REGIONS
        .iter()
        .map(|g| {
            (
                g.name.to_string(),
                recs.iter()
                    .filter(|r| ok(r) && r.upstream.as_deref() == Some(g.name))
                    .count() as u64,
            )
        })
        .collect();
    Row {
        client: client.to_string(),
        phase: phase.to_string(),
        requests: recs.len() as u64,
        ok: recs.iter().filter(|r| ok(r)).count() as u64,
        errors: recs.iter().filter(|r| !ok(r)).count() as u64,
        served,
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        max_ms: lat.last().copied(),
        failovers: recs.iter().filter(|r| ok(r) && r.attempts > 1).count() as u64,
        slow: recs
            .iter()
            .filter(|r| r.latency_ms.is_some_and(|l| l > 1000.0))
            .count() as u64,
        first_error: recs.iter().find_map(|r| r.error.clone()),
    }
}

/// `upstream_down` / `upstream_up` lines of the gateway's log, as events relative to `t0_unix`.
pub fn probe_events(log: &str, t0_unix: f64) -> Vec<Event> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            matches!(
                v["event"].as_str(),
                Some("upstream_down") | Some("upstream_up")
            )
        })
        .filter_map(|v| {
            let t = parse_rfc3339(v["time"].as_str()?)?;
            Some(Event {
                at_s: t - t0_unix,
                what: format!(
                    "gateway log: {} {} ({})",
                    v["event"].as_str().unwrap_or(""),
                    v["upstream"].as_str().unwrap_or(""),
                    v["detail"].as_str().unwrap_or("")
                ),
            })
        })
        .collect()
}

/// `2026-11-22T19:37:01.123Z` → Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

fn utc_string(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {kernel}")
}

/// Rounded to `1/scale`: the JSON keeps what the report can show.
fn round(v: f64, scale: f64) -> f64 {
    (v * scale).round() / scale
}

pub fn analyse(mut inp: Input<'_>) -> RegionsResult {
    for s in &mut inp.status_timeline {
        s.at_s = round(s.at_s, 1000.0);
    }
    for s in &mut inp.snapshots {
        s.at_s = round(s.at_s, 1000.0);
    }
    for e in &mut inp.events {
        e.at_s = round(e.at_s, 1000.0);
    }
    let plan = inp.plan;
    let cut_name = REGIONS[plan.cut].name;
    let t_cut = plan.phase_secs;
    let t_restore = 2.0 * plan.phase_secs;
    let t_end = 3.0 * plan.phase_secs;
    let clients: Vec<ClientInfo> = plan
        .clients
        .iter()
        .map(|c| {
            let (n, d) = nearest(c.point);
            ClientInfo {
                code: c.code.clone(),
                city: c.city.clone(),
                nearest: n.to_string(),
                distance_km: d,
            }
        })
        .collect();
    let regions: Vec<RegionInfo> = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| RegionInfo {
            name: r.name.into(),
            city: r.city.into(),
            weight: r.weight,
            fallbacks: r.fallbacks.iter().map(|s| s.to_string()).collect(),
            design_rtt_ms: r.rtt_ms,
            simulated_rtt_ms: r.rtt(),
            address: inp.net.addresses.get(i).cloned().unwrap_or_default(),
        })
        .collect();

    // Rows: per location and phase, then all locations per phase.
    let mut rows = Vec::new();
    for c in &clients {
        for (pi, phase) in PHASES.iter().enumerate() {
            let recs: Vec<&Record> = inp
                .records
                .iter()
                .filter(|r| r.client == c.code && phase_of(r.at_s, plan.phase_secs) == Some(pi))
                .collect();
            rows.push(row(&c.code, phase, &recs));
        }
    }
    for (pi, phase) in PHASES.iter().enumerate() {
        let recs: Vec<&Record> = inp
            .records
            .iter()
            .filter(|r| phase_of(r.at_s, plan.phase_secs) == Some(pi))
            .collect();
        rows.push(row("all", phase, &recs));
    }

    // Per-second series.
    let seconds = t_end.ceil() as usize;
    let latency_timeline = clients
        .iter()
        .map(|c| ClientSeries {
            client: c.code.clone(),
            points: (0..seconds)
                .map(|s| {
                    let recs: Vec<&Record> = inp
                        .records
                        .iter()
                        .filter(|r| {
                            r.client == c.code && r.at_s >= s as f64 && r.at_s < (s + 1) as f64
                        })
                        .collect();
                    let mut lat: Vec<f64> = recs.iter().filter_map(|r| r.latency_ms).collect();
                    lat.sort_by(f64::total_cmp);
                    Point {
                        at_s: s as f64,
                        n: recs.len() as u64,
                        errors: recs.iter().filter(|r| !ok(r)).count() as u64,
                        p50_ms: quantile(&lat, 0.5).map(|v| round(v, 100.0)),
                        max_ms: lat.last().map(|v| round(*v, 100.0)),
                    }
                })
                .collect(),
        })
        .collect();
    let share_timeline = (0..seconds)
        .map(|s| {
            let recs: Vec<&Record> = inp
                .records
                .iter()
                .filter(|r| r.at_s >= s as f64 && r.at_s < (s + 1) as f64)
                .collect();
            SharePoint {
                at_s: s as f64,
                served: REGIONS
                    .iter()
                    .map(|g| {
                        recs.iter()
                            .filter(|r| ok(r) && r.upstream.as_deref() == Some(g.name))
                            .count() as u64
                    })
                    .collect(),
                errors: recs.iter().filter(|r| !ok(r)).count() as u64,
            }
        })
        .collect();
    let requests_of = |s: &StatusSample, name: &str| {
        s.upstreams
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.requests)
    };
    let attempts_timeline: Vec<AttemptPoint> = inp
        .status_timeline
        .windows(2)
        .filter(|w| !w[0].upstreams.is_empty() && !w[1].upstreams.is_empty())
        .map(|w| {
            let dt = (w[1].at_s - w[0].at_s).max(1e-3);
            AttemptPoint {
                at_s: w[1].at_s,
                per_second: REGIONS
                    .iter()
                    .map(|g| {
                        let a = requests_of(&w[0], g.name).unwrap_or(0);
                        let b = requests_of(&w[1], g.name).unwrap_or(0);
                        round(b.saturating_sub(a) as f64 / dt, 100.0)
                    })
                    .collect(),
            }
        })
        .collect();

    // The cut.
    let state_of = |s: &StatusSample| {
        s.upstreams
            .iter()
            .find(|u| u.name == cut_name)
            .map(|u| u.state.clone())
    };
    let mut cut = CutAnalysis {
        region: cut_name.into(),
        cut_at_s: t_cut,
        restored_at_s: t_restore,
        affected: clients
            .iter()
            .filter(|c| c.nearest == cut_name)
            .map(|c| c.code.clone())
            .collect(),
        ..Default::default()
    };
    let mut last: Option<String> = None;
    for s in &inp.status_timeline {
        if let Some(st) = state_of(s) {
            if last.as_deref() != Some(&st) {
                cut.state_changes.push((s.at_s, st.clone()));
                last = Some(st);
            }
        }
    }
    let during = |s: &&StatusSample| s.at_s >= t_cut && s.at_s < t_restore + 0.25;
    cut.first_not_healthy_after_cut_s = inp
        .status_timeline
        .iter()
        .filter(during)
        .find(|s| state_of(s).is_some_and(|st| st != "healthy"))
        .map(|s| s.at_s - t_cut);
    cut.first_down_after_cut_s = inp
        .status_timeline
        .iter()
        .filter(during)
        .find(|s| state_of(s).as_deref() == Some("down"))
        .map(|s| s.at_s - t_cut);
    cut.healthy_after_restore_s = inp
        .status_timeline
        .iter()
        .filter(|s| s.at_s >= t_restore)
        .find(|s| state_of(s).as_deref() == Some("healthy"))
        .map(|s| s.at_s - t_restore);
    let snap_requests = |phase: &str| {
        inp.snapshots
            .iter()
            .find(|p| p.phase == phase)
            .and_then(|p| p.status.iter().find(|u| u.name == cut_name))
            .map(|u| u.requests)
    };
    if let (Some(a), Some(b)) = (snap_requests(PHASES[0]), snap_requests(PHASES[1])) {
        cut.attempts_during_cut = b.saturating_sub(a);
    }
    if let Some(marked) = cut.first_not_healthy_after_cut_s.map(|m| m + t_cut) {
        let samples: Vec<&StatusSample> = inp
            .status_timeline
            .iter()
            .filter(|s| s.at_s >= marked - 1e-9 && s.at_s <= t_restore + 0.25)
            .collect();
        for w in samples.windows(2) {
            let a = requests_of(w[0], cut_name).unwrap_or(0);
            let b = requests_of(w[1], cut_name).unwrap_or(0);
            if b > a {
                cut.attempts_after_marked += b - a;
                cut.attempts_after_marked_at
                    .push(((w[1].at_s - t_cut * 1.0).max(0.0), b - a));
            }
        }
    }
    let affected_cut: Vec<&Record> = inp
        .records
        .iter()
        .filter(|r| {
            cut.affected.contains(&r.client) && phase_of(r.at_s, plan.phase_secs) == Some(1)
        })
        .collect();
    cut.affected_requests = affected_cut.len() as u64;
    cut.affected_failovers = affected_cut
        .iter()
        .filter(|r| ok(r) && r.attempts > 1)
        .count() as u64;
    cut.affected_errors = affected_cut.iter().filter(|r| !ok(r)).count() as u64;
    let slow: Vec<&&Record> = affected_cut
        .iter()
        .filter(|r| r.latency_ms.is_some_and(|l| l > 1000.0))
        .collect();
    cut.affected_slow = slow.len() as u64;
    cut.affected_slow_1_2s = slow
        .iter()
        .filter(|r| r.latency_ms.is_some_and(|l| l < 2000.0))
        .count() as u64;
    cut.affected_slow_over_4_5s = slow
        .iter()
        .filter(|r| r.latency_ms.is_some_and(|l| l >= 4500.0))
        .count() as u64;
    if let Some(marked) = cut.first_not_healthy_after_cut_s.map(|m| m + t_cut) {
        let waiting: Vec<&Record> = inp
            .records
            .iter()
            .filter(|r| {
                cut.affected.contains(&r.client)
                    && r.at_s < marked
                    && r.latency_ms.is_none_or(|l| r.at_s + l / 1000.0 > marked)
            })
            .collect();
        cut.waiting_when_marked = waiting.len() as u64;
        cut.waiting_when_marked_answered_1s_later = waiting
            .iter()
            .filter(|r| {
                r.latency_ms
                    .is_none_or(|l| r.at_s + l / 1000.0 > marked + 1.0)
            })
            .count() as u64;
    }
    cut.affected_max_ms = affected_cut
        .iter()
        .filter_map(|r| r.latency_ms)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    cut.last_slow_sent_after_cut_s = slow
        .iter()
        .map(|r| r.at_s - t_cut)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    cut.first_served_after_restore_s = inp
        .records
        .iter()
        .filter(|r| r.at_s >= t_restore && ok(r) && r.upstream.as_deref() == Some(cut_name))
        .map(|r| r.at_s - t_restore)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.min(t))));
    let affected_restored: Vec<&Record> = inp
        .records
        .iter()
        .filter(|r| {
            cut.affected.contains(&r.client)
                && phase_of(r.at_s, plan.phase_secs) == Some(2)
                && ok(r)
        })
        .collect();
    if !affected_restored.is_empty() {
        cut.restored_share = Some(
            affected_restored
                .iter()
                .filter(|r| r.upstream.as_deref() == Some(cut_name))
                .count() as f64
                / affected_restored.len() as f64,
        );
    }

    // Requests sent in the steady phase but still in flight when the cut came.
    let caught: BTreeMap<String, u64> = inp
        .records
        .iter()
        .filter(|r| {
            phase_of(r.at_s, plan.phase_secs) == Some(0)
                && r.latency_ms.is_none_or(|l| r.at_s + l / 1000.0 > t_cut)
        })
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.client.clone()).or_default() += 1;
            m
        });
    let findings = findings(&rows, &clients, &cut, &inp.events, &caught);
    let notes = vec![format!(
        "Other processes on the machine used {:.2} cores on average while the load ran (the simulation's own processes, the load generator, the gateway and the mocks, not counted).",
        inp.foreign_cores
    )];
    RegionsResult {
        generated: utc_string(inp.wall_start),
        command: plan.command.clone(),
        machine: machine(),
        net: inp.net,
        regions,
        clients,
        rate_per_client: plan.rate,
        phase_secs: plan.phase_secs,
        warmup_secs: plan.warmup_secs,
        routing: routing_config(),
        rows,
        status_at_phase_end: inp.snapshots,
        status_timeline: inp.status_timeline,
        attempts_timeline,
        latency_timeline,
        share_timeline,
        events: inp.events,
        cut,
        findings,
        notes,
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.0}%", a as f64 * 100.0 / b as f64)
    }
}

fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// What the run shows, in sentences; facts only (the judgement is the reader's).
fn findings(
    rows: &[Row],
    clients: &[ClientInfo],
    cut: &CutAnalysis,
    events: &[Event],
    caught: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut f = Vec::new();
    let find =
        |client: &str, phase: &str| rows.iter().find(|r| r.client == client && r.phase == phase);
    // Steady: nearest region? (Requests still in flight when the cut came are the cut's.)
    let mut off = Vec::new();
    let mut excused = Vec::new();
    for c in clients {
        if let Some(r) = find(&c.code, PHASES[0]) {
            let by_nearest = r
                .served
                .iter()
                .find(|(n, _)| *n == c.nearest)
                .map_or(0, |(_, k)| *k);
            let elsewhere = r.requests - by_nearest;
            let in_flight = caught.get(&c.code).copied().unwrap_or(0);
            if elsewhere > in_flight || r.ok == 0 {
                off.push(format!(
                    "{} ({} of {} answers from its nearest region {})",
                    c.code, by_nearest, r.requests, c.nearest
                ));
            } else if elsewhere > 0 {
                excused.push(format!("{} {}", c.code, elsewhere));
            }
        }
    }
    if off.is_empty() {
        f.push(format!(
            "Steady phase: every location was served by its nearest region{}.",
            if excused.is_empty() {
                String::new()
            } else {
                format!(
                    ", except requests sent just before the cut and still in flight when it came, answered by a fallback (or failed) like those of the cut phase ({})",
                    excused.join(", ")
                )
            }
        ));
    } else {
        f.push(format!(
            "Steady phase: not every answer came from the nearest region: {}.",
            off.join("; ")
        ));
    }
    // The cut, as the affected clients saw it.
    if !cut.affected.is_empty() {
        let served: BTreeMap<String, u64> = cut
            .affected
            .iter()
            .filter_map(|c| find(c, PHASES[1]))
            .flat_map(|r| r.served.iter().cloned())
            .fold(BTreeMap::new(), |mut m, (n, k)| {
                *m.entry(n).or_default() += k;
                m
            });
        let ok: u64 = served.values().sum();
        let by: Vec<String> = served
            .iter()
            .filter(|(_, k)| **k > 0)
            .map(|(n, k)| format!("{n} {}", pct(*k, ok)))
            .collect();
        f.push(format!(
            "During the cut, the locations nearest {} ({}) sent {} requests: {} failed, {} were answered after more than one attempt, {} took over 1 s (the slowest {}); answers came from {}.",
            cut.region,
            cut.affected.join(", "),
            cut.affected_requests,
            cut.affected_errors,
            cut.affected_failovers,
            cut.affected_slow,
            cut.affected_max_ms.map_or("–".into(), |m| format!("{:.2} s", m / 1000.0)),
            if by.is_empty() { "nowhere".into() } else { by.join(", ") },
        ));
        if cut.affected_slow > 0 {
            f.push(format!(
                "Of the {} slow ones, {} were answered within 1-2 s (a connect that timed out after 1 s, then the fallback) and {} after 4.5 s or more (a request on an open connection that went silent: the 5 s first-byte timeout, then the fallback){}.",
                cut.affected_slow,
                cut.affected_slow_1_2s,
                cut.affected_slow_over_4_5s,
                cut.last_slow_sent_after_cut_s
                    .map(|t| format!("; the last of them was sent {} after the cut", secs(t)))
                    .unwrap_or_default()
            ));
        }
        if cut.waiting_when_marked > 0 {
            f.push(format!(
                "{} requests from those locations were already waiting on {} when the status first showed it not healthy; {} of them were still waiting a second later{}.",
                cut.waiting_when_marked,
                cut.region,
                cut.waiting_when_marked_answered_1s_later,
                if cut.waiting_when_marked_answered_1s_later > 0 {
                    " (an attempt already in flight is not failed over when its upstream's breaker opens or probes mark it down: it waits for its own timeout)"
                } else {
                    ""
                }
            ));
        }
    }
    match (cut.first_not_healthy_after_cut_s, cut.first_down_after_cut_s) {
        (Some(a), Some(b)) => f.push(format!(
            "`GET /v1/gateway/status` (sampled every 0.5 s) first showed {} not healthy {} after the cut, and `down` {} after it.",
            cut.region, secs(a), secs(b)
        )),
        (Some(a), None) => f.push(format!(
            "`GET /v1/gateway/status` first showed {} not healthy {} after the cut, but never `down` during the cut.",
            cut.region, secs(a)
        )),
        _ => f.push(format!(
            "`GET /v1/gateway/status` never showed {} as anything but healthy during the cut.",
            cut.region
        )),
    }
    let changes: Vec<String> = cut
        .state_changes
        .iter()
        .map(|(t, s)| format!("{s} at {t:.1} s"))
        .collect();
    if !changes.is_empty() {
        f.push(format!(
            "{}'s state over the run (seconds from the start of the steady phase; cut at {:.0} s, back at {:.0} s): {}.",
            cut.region,
            cut.cut_at_s,
            cut.restored_at_s,
            changes.join(", ")
        ));
    }
    let logged: Vec<String> = events
        .iter()
        .filter(|e| e.what.starts_with("gateway log"))
        .map(|e| {
            format!(
                "{} at {:.1} s",
                e.what.trim_start_matches("gateway log: "),
                e.at_s
            )
        })
        .collect();
    if !logged.is_empty() {
        f.push(format!("The gateway logged: {}.", logged.join("; ")));
    }
    f.push(format!(
        "Attempts the gateway began on {} during the cut (its status counter): {}; after the first sample that showed it not healthy: {}{}.",
        cut.region,
        cut.attempts_during_cut,
        cut.attempts_after_marked,
        if cut.attempts_after_marked_at.is_empty() {
            String::new()
        } else {
            format!(
                " (seconds after the cut: {})",
                cut.attempts_after_marked_at
                    .iter()
                    .map(|(t, n)| if *n == 1 { format!("{t:.1}") } else { format!("{t:.1} ×{n}") })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    match cut.healthy_after_restore_s {
        Some(t) => f.push(format!(
            "After it was brought back, {} showed healthy again {} later; it served its first request again {} after; in the restored phase it answered {} of its nearby locations' requests.",
            cut.region,
            secs(t),
            cut.first_served_after_restore_s.map_or("never".into(), secs),
            cut.restored_share.map_or("–".into(), |s| format!("{:.0}%", s * 100.0)),
        )),
        None => f.push(format!(
            "After it was brought back, {} never showed healthy again before the end.",
            cut.region
        )),
    }
    let errs: Vec<String> = rows
        .iter()
        .filter(|r| r.client == "all" && r.errors > 0)
        .map(|r| {
            format!(
                "{}: {} ({})",
                r.phase,
                r.errors,
                r.first_error.clone().unwrap_or_default()
            )
        })
        .collect();
    if errs.is_empty() {
        f.push("No request failed in any phase.".into());
    } else {
        f.push(format!("Failed requests: {}.", errs.join("; ")));
    }
    // Locations away from the cut region.
    let others: Vec<String> = clients
        .iter()
        .filter(|c| !cut.affected.contains(&c.code))
        .filter_map(|c| {
            let a = find(&c.code, PHASES[0])?;
            let b = find(&c.code, PHASES[1])?;
            let moved = a.served != b.served
                && b.served
                    .iter()
                    .zip(&a.served)
                    .any(|(x, y)| (x.1 == 0) != (y.1 == 0));
            let slower = matches!((a.p99_ms, b.p99_ms), (Some(x), Some(y)) if y > 2.0 * x + 10.0);
            (moved || slower || b.errors > 0).then(|| {
                format!(
                    "{} (p99 {:.0} → {:.0} ms, {} errors)",
                    c.code,
                    a.p99_ms.unwrap_or(0.0),
                    b.p99_ms.unwrap_or(0.0),
                    b.errors
                )
            })
        })
        .collect();
    if others.is_empty() {
        f.push(
            "Locations away from the cut region kept their region and latency during the cut."
                .into(),
        );
    } else {
        f.push(format!(
            "Locations away from the cut region that changed during the cut: {}.",
            others.join("; ")
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses() {
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000.123)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("nonsense"), None);
    }

    #[test]
    fn utc_strings() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(utc_string(t), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.99), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_design_locations_pick_the_expected_regions() {
        for (code, want) in [
            ("nrt", "ap-northeast"),
            ("hkg", "ap-northeast"),
            ("sin", "ap-southeast"),
            ("syd", "ap-southeast"),
            ("sjc", "us-west"),
            ("iad", "us-east"),
            ("fra", "eu-central"),
        ] {
            let (_, _, lat, lon) = super::super::CLIENT_LOCATIONS
                .iter()
                .find(|l| l.0 == code)
                .copied()
                .unwrap();
            assert_eq!(nearest((lat, lon)).0, want, "{code}");
        }
    }
}

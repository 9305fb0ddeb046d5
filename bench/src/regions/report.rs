//! `results.md` and the README snippet of the region simulation.

use std::fmt::Write;

use super::analysis::{RegionsResult, Row};
use super::PHASES;

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 10_000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        let p = a as f64 * 100.0 / b as f64;
        if p > 0.0 && p < 1.0 {
            "<1%".into()
        } else if p > 99.0 && p < 100.0 {
            ">99%".into()
        } else {
            format!("{p:.0}%")
        }
    }
}

/// "ap-northeast" when one upstream served everything, else each with its share.
fn served(r: &Row) -> String {
    let total: u64 = r.served.iter().map(|(_, n)| n).sum();
    let mut parts: Vec<(&String, u64)> = r
        .served
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name, *n))
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    match parts.as_slice() {
        [] => "–".into(),
        [(name, _)] => format!("{name} 100%"),
        _ => parts
            .iter()
            .map(|(name, n)| format!("{name} {}", pct(*n, total)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn phase_title(res: &RegionsResult, phase: &str) -> String {
    match phase {
        "steady" => "steady".into(),
        "cut" => format!("{} cut", res.cut.region),
        "restored" => format!("{} back", res.cut.region),
        other => other.into(),
    }
}

fn nearest_of(res: &RegionsResult, client: &str) -> String {
    res.clients
        .iter()
        .find(|c| c.code == client)
        .map(|c| c.nearest.clone())
        .unwrap_or_default()
}

fn main_table(res: &RegionsResult) -> String {
    let mut s = String::new();
    s.push_str("| location (nearest region) | phase | requests | errors | served by (`x-gateway-upstream`) | p50 | p99 | max | answered after > 1 attempt |\n");
    s.push_str("|---|---|---:|---:|---|---:|---:|---:|---:|\n");
    for r in &res.rows {
        let who = if r.client == "all" {
            "**all**".to_string()
        } else {
            format!("{} ({})", r.client, nearest_of(res, &r.client))
        };
        let _ = writeln!(
            s,
            "| {who} | {} | {} | {} | {} | {} | {} | {} | {} |",
            phase_title(res, &r.phase),
            r.requests,
            r.errors,
            served(r),
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            if r.failovers == 0 {
                "0".into()
            } else {
                format!("{} ({})", r.failovers, pct(r.failovers, r.ok))
            }
        );
    }
    s
}

/// One row per location, the three phases side by side: for the README.
fn compact_table(res: &RegionsResult) -> String {
    let mut s = String::new();
    let t: Vec<String> = PHASES.iter().map(|p| phase_title(res, p)).collect();
    let _ = writeln!(
        s,
        "| location → nearest | {0}: served by | {0}: p50 / p99 | {1}: served by | {1}: p50 / p99 / max | {1}: > 1 attempt | {2}: served by | {2}: p50 / p99 | errors |",
        t[0], t[1], t[2]
    );
    s.push_str("|---|---|---:|---|---:|---:|---|---:|---:|\n");
    let mut clients: Vec<String> = res.clients.iter().map(|c| c.code.clone()).collect();
    clients.push("all".into());
    for c in clients {
        let get = |p: &str| res.rows.iter().find(|r| r.client == c && r.phase == p);
        let (Some(a), Some(b), Some(d)) = (get(PHASES[0]), get(PHASES[1]), get(PHASES[2])) else {
            continue;
        };
        let who = if c == "all" {
            "**all**".to_string()
        } else {
            format!("{c} → {}", nearest_of(res, &c))
        };
        let _ = writeln!(
            s,
            "| {who} | {} | {} / {} | {} | {} / {} / {} | {} | {} | {} / {} | {} |",
            served(a),
            ms(a.p50_ms),
            ms(a.p99_ms),
            served(b),
            ms(b.p50_ms),
            ms(b.p99_ms),
            ms(b.max_ms),
            pct(b.failovers, b.ok),
            served(d),
            ms(d.p50_ms),
            ms(d.p99_ms),
            a.errors + b.errors + d.errors
        );
    }
    s
}

fn status_table(res: &RegionsResult) -> String {
    let mut s = String::new();
    s.push_str("| upstream |");
    for p in &res.status_at_phase_end {
        let _ = write!(
            s,
            " end of {} ({:.0} s) |",
            phase_title(res, &p.phase),
            p.at_s
        );
    }
    s.push('\n');
    s.push_str("|---|");
    for _ in &res.status_at_phase_end {
        s.push_str("---|");
    }
    s.push('\n');
    for g in &res.regions {
        let _ = write!(s, "| {} |", g.name);
        for p in &res.status_at_phase_end {
            match p.status.iter().find(|u| u.name == g.name) {
                Some(u) => {
                    let _ = write!(
                        s,
                        " **{}** · {} attempts, {} errors{}{} |",
                        u.state,
                        u.requests,
                        u.errors,
                        u.latency_ms
                            .map(|l| format!(" · {l:.0} ms avg"))
                            .unwrap_or_default(),
                        u.last_error
                            .as_ref()
                            .map(|e| format!(" · last error {e}"))
                            .unwrap_or_default()
                    );
                }
                None => s.push_str(" (no answer) |"),
            }
        }
        s.push('\n');
    }
    s
}

fn mechanism(res: &RegionsResult) -> String {
    format!(
        "{}: latency by {}; the cut: {}.",
        if res.net.mode == "netns" {
            "Each region's mock in its own network namespace behind a veth link"
        } else {
            "Every mock on 127.0.0.1"
        },
        res.net.latency,
        res.net.cut
    )
}

pub fn results_md(res: &RegionsResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Region simulation\n");
    let _ = writeln!(
        s,
        "Run by `{}` on {}, {}. Re-render with `target/release/bench regions --report`.\n",
        res.command, res.machine, res.generated
    );
    s.push_str("## Set-up\n\n");
    let _ = writeln!(s, "- **Network.** {}", mechanism(res));
    if let Some(w) = &res.net.why {
        let _ = writeln!(s, "  ({}.)", w.trim_end_matches('.'));
    }
    let _ = writeln!(
        s,
        "- **Load.** {} client locations, each sending {} non-streamed chat completions a second (open loop: each request at its scheduled time on a pooled keep-alive connection, its latency counted from that time) with its Fly region code in `fly-region`, `temperature: 0.7` and `cache-control: no-store` (nothing answered from the cache). Phases: {:.0} s warm-up (not reported), then {:.0} s each: steady; {} cut; {} brought back.",
        res.clients.len(),
        res.rate_per_client,
        res.warmup_secs,
        res.phase_secs,
        res.cut.region,
        res.cut.region
    );
    let _ = writeln!(
        s,
        "- **Gateway.** `fly-fallback` (release build) on 127.0.0.1 with the five upstreams below and `routing` = `{}`; `GET /v1/gateway/status` sampled every 0.5 s.\n",
        res.routing
    );
    s.push_str("| region | city | design's relayed round trip | simulated round trip | weight | fallbacks | mock |\n|---|---|---:|---:|---:|---|---|\n");
    for g in &res.regions {
        let _ = writeln!(
            s,
            "| {} | {} | {}-{} ms | {} ms | {} | {} | {} |",
            g.name,
            g.city,
            g.design_rtt_ms.0,
            g.design_rtt_ms.1,
            g.simulated_rtt_ms,
            g.weight,
            g.fallbacks.join(", "),
            g.address
        );
    }
    s.push_str("\n| location | city | nearest region (great circle) |\n|---|---|---|\n");
    for c in &res.clients {
        let _ = writeln!(
            s,
            "| {} | {} | {} ({:.0} km) |",
            c.code, c.city, c.nearest, c.distance_km
        );
    }
    s.push_str("\nThe latency a location sees is the round trip of the region that answered plus the gateway: the simulation gives each region one round trip (the design's figure for its own users), not one per location and region, so a location that fails over sees the fallback region's figure, not its distance to it.\n\n");
    s.push_str("## Results\n\n");
    s.push_str("Requests count in the phase in which they were sent (so the few sent in the last round trip before the cut, and caught in flight by it, are in the steady phase). Latency: from the scheduled time to the whole answer (the load generator's timer adds up to about 1 ms). Served by: answers per upstream, from `x-gateway-upstream`; > 1 attempt: answers whose `x-gateway-attempts` was above 1.\n\n");
    s.push_str(&main_table(res));
    s.push_str("\n![latency and share over time](timeline.png)\n\n");
    s.push_str("## What happened\n\n");
    for f in &res.findings {
        let _ = writeln!(s, "- {f}");
    }
    s.push_str("\n## `GET /v1/gateway/status` at the end of each phase\n\n");
    s.push_str("Attempts and errors are the gateway's counters since it started (warm-up and the checks included).\n\n");
    s.push_str(&status_table(res));
    s.push_str("\n## Events\n\nSeconds from the start of the steady phase.\n\n");
    for e in &res.events {
        let _ = writeln!(s, "- {:.1} s: {}", e.at_s, e.what);
    }
    if !res.notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        for n in &res.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

pub fn snippet(res: &RegionsResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Measured by `bench/regions.sh` on {}, {}. {} {} locations × {} req/s, phases of {:.0} s. Full report: [bench/results/regions/results.md](bench/results/regions/results.md).\n",
        res.machine, res.generated, mechanism(res), res.clients.len(), res.rate_per_client, res.phase_secs
    );
    s.push_str(&compact_table(res));
    s.push('\n');
    for f in &res.findings {
        let _ = writeln!(s, "- {f}");
    }
    s.push_str("\n![region simulation timeline](bench/results/regions/timeline.png)\n");
    s
}

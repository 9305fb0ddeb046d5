//! The report as aligned text tables for a terminal.

use std::fmt::Write;

use super::num::{saving_pct, share_pct, thousands, usd};
use super::report::{Group, LogReport, Report, WhatIfReport};

/// Columns of text, left- or right-aligned, padded to their widest cell.
struct Table {
    head: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(cols: &[(&'static str, bool)]) -> Table {
        Table {
            head: cols.iter().map(|(h, _)| *h).collect(),
            right: cols.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::from("  ");
            for ((cell, w), right) in cells.zip(&widths).zip(&self.right) {
                let pad = w.saturating_sub(cell.chars().count());
                if *right {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.push_str(&" ".repeat(pad));
                }
                s.push_str("   ");
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(out, &mut self.head.iter().copied());
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(out, &mut rule.iter().map(String::as_str));
        for row in &self.rows {
            line(out, &mut row.iter().map(String::as_str));
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(u128::from(n)),
        if n == 1 { one } else { many }
    )
}

fn n(v: u64) -> String {
    thousands(u128::from(v))
}

/// Renders the whole report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    if let Some(logs) = &report.logs {
        render_logs(logs, &mut out);
    }
    render_what_if(&report.what_if, &mut out);
    out
}

fn render_logs(l: &LogReport, out: &mut String) {
    let i = &l.input;
    let t = &l.totals;
    let period = match (&t.first_day, &t.last_day) {
        (Some(a), Some(b)) if a == b => format!(", {a}"),
        (Some(a), Some(b)) => format!(", {a} to {b}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "COST REPORT: {} from {}{period}",
        plural(t.requests, "request", "requests"),
        i.sources.join(", ")
    );
    let mut input = format!(
        "  {} read: {}",
        plural(i.lines, "line", "lines"),
        plural(i.requests, "request record", "request records")
    );
    if i.events > 0 {
        input += &format!(
            ", {} (ignored)",
            plural(i.events, "other event", "other events")
        );
    }
    if i.skipped > 0 {
        input += &format!(
            ", {} skipped ({} not JSON, {} not a request record)",
            n(i.skipped),
            n(i.not_json),
            n(i.not_a_request)
        );
    }
    let _ = writeln!(out, "{input}");
    for e in &i.skipped_examples {
        let _ = writeln!(out, "    skipped {e}");
    }

    let _ = writeln!(out, "\nTOTALS");
    let mut tt = Table::new(&[("", false), ("", true), ("", false)]);
    tt.row(vec!["requests".into(), n(t.requests), String::new()]);
    tt.row(vec![
        "prompt tokens".into(),
        n(t.prompt_tokens),
        format!("of which cached {}", n(t.cached_tokens)),
    ]);
    tt.row(vec![
        "completion tokens".into(),
        n(t.completion_tokens),
        format!("of which reasoning {}", n(t.reasoning_tokens)),
    ]);
    tt.row(vec![
        "total tokens".into(),
        n(t.total_tokens),
        String::new(),
    ]);
    tt.row(vec!["spend".into(), usd(t.spend_usd), String::new()]);
    tt.row(vec![
        "estimated cost".into(),
        n(t.estimated_requests),
        "requests priced from estimated token counts".into(),
    ]);
    tt.row(vec![
        "unpriced".into(),
        n(t.unpriced_requests),
        "requests whose model has no price (not in the spend)".into(),
    ]);
    render_bare(&tt, out);

    for (title, col, groups) in [
        ("SPEND BY MODEL", "model", &l.by_model),
        ("SPEND BY KEY", "key", &l.by_key),
        ("SPEND BY UPSTREAM", "upstream", &l.by_upstream),
        ("SPEND BY DAY", "day", &l.by_day),
    ] {
        let _ = writeln!(out, "\n{title}");
        if groups.is_empty() {
            let _ = writeln!(out, "  (no requests)");
        } else {
            groups_table(col, groups, t.spend_usd.picos()).render(out);
        }
    }

    let c = &l.cache;
    let _ = writeln!(out, "\nCACHE");
    let _ = writeln!(
        out,
        "  {} (misses {}, bypass {}): saved {}",
        plural(c.hits, "hit", "hits"),
        n(c.misses),
        n(c.bypass),
        usd(c.saved_usd)
    );
    out.push('\n');
}

/// A table without its header and rule.
fn render_bare(t: &Table, out: &mut String) {
    let mut s = String::new();
    t.render(&mut s);
    for line in s.lines().skip(2) {
        out.push_str(line);
        out.push('\n');
    }
}

fn groups_table(col: &'static str, groups: &[Group], total: u128) -> Table {
    let mut t = Table::new(&[
        (col, false),
        ("requests", true),
        ("tokens", true),
        ("spend", true),
        ("share", true),
        ("notes", false),
    ]);
    for g in groups {
        let mut notes = Vec::new();
        if g.unpriced > 0 {
            notes.push(format!("{} unpriced", n(g.unpriced)));
        }
        if g.estimated > 0 {
            notes.push(format!("{} estimated", n(g.estimated)));
        }
        t.row(vec![
            g.name.clone(),
            n(g.requests),
            n(g.tokens),
            usd(g.spend_usd),
            share_pct(g.spend_usd.picos(), total, 1).map_or("-".into(), |s| format!("{s}%")),
            notes.join(", "),
        ]);
    }
    t
}

fn render_what_if(w: &WhatIfReport, out: &mut String) {
    let t = &w.traffic;
    let one = if w.one_price {
        ", one price per model (every token at its input price)"
    } else {
        ""
    };
    match t.synthetic_tokens {
        Some(tokens) => {
            let _ = writeln!(out, "WHAT-IF: {} tokens{one}", n(tokens));
        }
        None => {
            let _ = writeln!(out, "WHAT-IF: the same traffic on other models{one}");
            let _ = writeln!(
                out,
                "  traffic: {}, {} prompt tokens (cached {}), {} completion tokens (reasoning {})",
                plural(t.requests, "request", "requests"),
                n(t.prompt_tokens),
                n(t.cached_tokens),
                n(t.completion_tokens),
                n(t.reasoning_tokens)
            );
            if t.left_out_cache_hits + t.left_out_unpriced > 0 {
                let _ = writeln!(
                    out,
                    "  left out: {} (free on any model), {} (no logged price to compare)",
                    plural(t.left_out_cache_hits, "cache hit", "cache hits"),
                    plural(t.left_out_unpriced, "unpriced request", "unpriced requests")
                );
            }
        }
    }
    let base = w.baseline.cost_usd;
    let saving = |c| saving_pct(base, c, 1).map_or("-".into(), |s| format!("{s}%"));
    let mut table = Table::new(&[
        ("scenario", false),
        ("$/M in", true),
        ("$/M out", true),
        ("cost", true),
        ("saving", true),
    ]);
    if w.as_routed.is_some() {
        table.row(vec![
            "as routed".into(),
            String::new(),
            String::new(),
            usd(base_routed(w)),
            if w.baseline.label == "as routed" {
                "(baseline)".into()
            } else {
                saving(base_routed(w))
            },
        ]);
    }
    for a in &w.all_on {
        let name = format!("all on {}", a.model);
        let is_base = w.baseline.label == name;
        table.row(vec![
            name,
            a.input_per_m_usd.to_string(),
            a.output_per_m_usd.to_string(),
            usd(a.cost_usd),
            if is_base {
                "(baseline)".into()
            } else {
                saving(a.cost_usd)
            },
        ]);
    }
    let labels = mix_labels(w);
    for (m, label) in w.mixes.iter().zip(&labels) {
        table.row(vec![
            label.clone(),
            m.input_per_m_usd.to_string(),
            m.output_per_m_usd.to_string(),
            usd(m.cost_usd),
            saving(m.cost_usd),
        ]);
    }
    table.render(out);
    let _ = writeln!(
        out,
        "  saving: against {} ({}); negative: costs more",
        w.baseline.label,
        usd(base)
    );
    for (m, label) in w.mixes.iter().zip(&labels) {
        let _ = writeln!(out, "\n  {label} = {}", m.spec);
        let label = if w.one_price { "price" } else { "input" };
        let _ = writeln!(out, "    {label}:  {}", m.arithmetic.input);
        if let Some(o) = &m.arithmetic.output {
            let _ = writeln!(out, "    output: {o}");
        }
        let _ = writeln!(out, "    cost:   {}", m.arithmetic.cost);
        if let Some(s) = saving_pct(base, m.cost_usd, 2) {
            let _ = writeln!(
                out,
                "    saving: ({} - {}) / {} = {s}%",
                usd(base),
                usd(m.cost_usd),
                usd(base)
            );
        }
    }
    out.push('\n');
}

/// Short names for the mixes: `mix 5/10/35/50%`, numbered when there are several.
pub fn mix_labels(w: &WhatIfReport) -> Vec<String> {
    let many = w.mixes.len() > 1;
    w.mixes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let shares: Vec<&str> = m.shares.iter().map(|s| s.share_pct.as_str()).collect();
            let number = if many {
                format!(" #{}", i + 1)
            } else {
                String::new()
            };
            format!("mix{number} {}%", shares.join("/"))
        })
        .collect()
}

fn base_routed(w: &WhatIfReport) -> gateway_core::pricing::Money {
    w.as_routed
        .as_ref()
        .map(|v| v.iter().map(|m| m.cost_usd).sum())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_right_for_numbers() {
        let mut t = Table::new(&[("name", false), ("n", true)]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "1,000".into()]);
        let mut s = String::new();
        t.render(&mut s);
        assert_eq!(
            s,
            "  name         n\n  ------   -----\n  a            1\n  longer   1,000\n"
        );
    }
}

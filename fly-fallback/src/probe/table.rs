//! The report as an aligned text table for a terminal.

use std::fmt::Write;

use super::report::{Report, Row, Served};
use super::stats::Summary;

/// A column: its heading, and whether its cells are numbers (right-aligned).
struct Col {
    head: &'static str,
    right: bool,
}

const COLS: &[Col] = &[
    Col {
        head: "model",
        right: false,
    },
    Col {
        head: "region",
        right: false,
    },
    Col {
        head: "mode",
        right: false,
    },
    Col {
        head: "ok",
        right: true,
    },
    Col {
        head: "errors",
        right: true,
    },
    Col {
        head: "p50",
        right: true,
    },
    Col {
        head: "p90",
        right: true,
    },
    Col {
        head: "min",
        right: true,
    },
    Col {
        head: "max",
        right: true,
    },
    Col {
        head: "p50",
        right: true,
    },
    Col {
        head: "p90",
        right: true,
    },
    Col {
        head: "min",
        right: true,
    },
    Col {
        head: "max",
        right: true,
    },
    Col {
        head: "served by",
        right: false,
    },
];

/// Headings over groups of columns: (first column, text).
const GROUPS: &[(usize, &str)] = &[(5, "time to first token, ms"), (9, "total time, ms")];

const GAP: &str = "   ";

/// A figure in milliseconds, to a tenth.
pub fn ms(v: f64) -> String {
    format!("{v:.1}")
}

fn figures(s: Option<&Summary>) -> [String; 4] {
    match s {
        Some(s) => [ms(s.p50), ms(s.p90), ms(s.min), ms(s.max)],
        None => ["-", "-", "-", "-"].map(String::from),
    }
}

fn upstream_label(s: &Served) -> String {
    match &s.region {
        Some(r) if *r != s.upstream => format!("{} ({r})", s.upstream),
        _ => s.upstream.clone(),
    }
}

/// Who answered: `eu-1 (eu)`, or `eu-1 (eu) ×2, us-1 ×1`; `!` when not the pin.
pub fn served_cell(r: &Row) -> String {
    let mut cell = match r.served_by.as_slice() {
        [] => "-".to_string(),
        [one] => upstream_label(one),
        many => many
            .iter()
            .map(|s| format!("{} ×{}", upstream_label(s), s.calls))
            .collect::<Vec<_>>()
            .join(", "),
    };
    if r.off_pin > 0 {
        cell.push_str(" !");
    }
    cell
}

fn cells(r: &Row) -> Vec<String> {
    let mut v = vec![
        r.model.clone(),
        r.region.clone().unwrap_or_else(|| "auto".into()),
        r.mode.to_string(),
        r.ok.to_string(),
        r.errors.to_string(),
    ];
    v.extend(figures(r.ttft_ms.as_ref()));
    v.extend(figures(r.total_ms.as_ref()));
    v.push(served_cell(r));
    v
}

fn line(cells: &[String], widths: &[usize], out: &mut String) {
    let mut s = String::from("  ");
    for ((cell, w), col) in cells.iter().zip(widths).zip(COLS) {
        let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
        if col.right {
            s.push_str(&pad);
            s.push_str(cell);
        } else {
            s.push_str(cell);
            s.push_str(&pad);
        }
        s.push_str(GAP);
    }
    out.push_str(s.trim_end());
    out.push('\n');
}

/// The rows as aligned columns under their headings.
pub fn rows_table(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = COLS.iter().map(|c| c.head.chars().count()).collect();
    for row in &body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    // The group headings start where their first column does.
    let mut groups = String::from("  ");
    for (first, text) in GROUPS {
        let start = 2 + widths
            .iter()
            .take(*first)
            .map(|w| w + GAP.len())
            .sum::<usize>();
        let len = groups.chars().count();
        if start > len {
            groups.push_str(&" ".repeat(start - len));
        } else if len > 2 {
            groups.push(' ');
        }
        groups.push_str(text);
    }
    out.push_str(groups.trim_end());
    out.push('\n');
    let head: Vec<String> = COLS.iter().map(|c| c.head.to_string()).collect();
    line(&head, &widths, &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule, &widths, &mut out);
    for row in &body {
        line(row, &widths, &mut out);
    }
    out
}

/// The whole report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let g = &report.gateway;
    let about: Vec<String> = [
        g.runtime.as_ref().map(|r| match &g.version {
            Some(v) => format!("{r} {v}"),
            None => r.clone(),
        }),
        g.region.as_ref().map(|r| format!("region {r}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join(", "))
    };
    let _ = writeln!(out, "LATENCY PROBE: {}{about}", g.url);
    let s = &report.settings;
    let at_once = if s.concurrency == 1 {
        "one at a time".to_string()
    } else {
        format!("{} at a time", s.concurrency)
    };
    let max_tokens = if s.max_tokens == 0 {
        "no max_tokens".to_string()
    } else {
        format!("max_tokens {}", s.max_tokens)
    };
    let _ = writeln!(
        out,
        "  {} calls, {} per row, interleaved, {at_once}; {max_tokens}; cache bypassed (no-store)",
        report.calls, s.calls_per_row
    );
    if let Some(list) = &g.upstreams {
        let names: Vec<String> = list
            .iter()
            .map(|u| {
                let state = if u.state.is_empty() {
                    String::new()
                } else {
                    format!(", {}", u.state)
                };
                format!("{} (region {}{state})", u.name, u.region)
            })
            .collect();
        let _ = writeln!(out, "  upstreams: {}", names.join(", "));
    }
    if report.interrupted {
        let _ = writeln!(
            out,
            "  INTERRUPTED after {} of {} calls: the figures cover those made",
            report.calls, report.calls_planned
        );
    }
    out.push('\n');
    out.push_str(&rows_table(&report.rows));
    let _ = writeln!(
        out,
        "  p50/p90: nearest rank over the successful calls. ttft: plain, the first byte of the \
         body; stream, the first event with content."
    );
    if report.rows.iter().any(|r| r.off_pin > 0) {
        let _ = writeln!(
            out,
            "  !: some calls were answered by an upstream the pin does not name (the pinned one \
             was unavailable and the gateway failed over, or no upstream has that name or region)."
        );
    }
    let hits: u32 = report.rows.iter().map(|r| r.cache_hits).sum();
    if hits > 0 {
        let _ = writeln!(
            out,
            "  warning: {hits} call(s) were answered from the gateway's cache (x-gateway-cache: \
             HIT); their times are not the upstream's."
        );
    }
    let failed: Vec<&Row> = report.rows.iter().filter(|r| r.errors > 0).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nERRORS");
        for r in failed {
            for e in &r.errors_by_kind {
                let _ = writeln!(
                    out,
                    "  {} @ {} ({}): {} × {}: {}",
                    r.model,
                    r.region.as_deref().unwrap_or("auto"),
                    r.mode,
                    e.count,
                    e.kind,
                    e.example
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, region: Option<&str>, ttft: Option<Summary>) -> Row {
        Row {
            model: model.into(),
            region: region.map(String::from),
            mode: "plain",
            calls: 3,
            ok: 3,
            errors: 0,
            ttft_ms: ttft,
            total_ms: ttft,
            served_by: vec![Served {
                upstream: "eu-1".into(),
                region: Some("eu".into()),
                calls: 3,
            }],
            off_pin: 0,
            cache_hits: 0,
            errors_by_kind: Vec::new(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn columns_align_under_their_group_headings() {
        let s = Summary {
            p50: 101.25,
            p90: 1234.5,
            min: 99.0,
            max: 1234.5,
            mean: 0.0,
        };
        let text = rows_table(&[
            row("a-long-model", Some("eu"), Some(s)),
            row("b", None, None),
        ]);
        // Numbers right-aligned, names left-aligned, each group heading over its first column.
        let want = [
            "                                                time to first token, ms          total time, ms",
            "  model          region   mode    ok   errors     p50      p90    min      max     p50      p90    min      max   served by",
            "  ------------   ------   -----   --   ------   -----   ------   ----   ------   -----   ------   ----   ------   ---------",
            "  a-long-model   eu       plain    3        0   101.2   1234.5   99.0   1234.5   101.2   1234.5   99.0   1234.5   eu-1 (eu)",
            "  b              auto     plain    3        0       -        -      -        -       -        -      -        -   eu-1 (eu)",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "\n{text}");
    }

    #[test]
    fn served_by_counts_several_upstreams_and_marks_off_pin_answers() {
        let mut r = row("m", Some("eu"), None);
        r.served_by.push(Served {
            upstream: "us".into(),
            region: Some("us".into()),
            calls: 1,
        });
        r.served_by[0].calls = 2;
        r.off_pin = 1;
        assert_eq!(served_cell(&r), "eu-1 (eu) ×2, us ×1 !");
    }
}

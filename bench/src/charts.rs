//! PNG charts with plotters' bitmap backend. Text needs a font: DejaVu Sans (Debian's
//! fonts-dejavu-core, which setup-peers.sh installs) or the file named by BENCH_FONT.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::scenarios::{Results, SoakResult};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for plotters; charts are skipped without one.
pub fn init_font() -> Result<PathBuf, String> {
    let path = std::env::var_os("BENCH_FONT")
        .map(PathBuf::from)
        .or_else(|| FONT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()))
        .ok_or("no font found: install fonts-dejavu-core (bench/setup-peers.sh does) or set BENCH_FONT")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font("sans-serif", style, bytes)
            .map_err(|_| format!("{}: not a usable font", path.display()))?;
    }
    Ok(path)
}

const PALETTE: &[RGBColor] = &[
    RGBColor(90, 90, 90),    // direct
    RGBColor(31, 119, 180),  // fly-fallback
    RGBColor(214, 39, 40),   // portkey
    RGBColor(44, 160, 44),   // litellm
    RGBColor(148, 103, 189), // worker-workerd
    RGBColor(196, 170, 222), // worker-js-floor (a lighter worker-workerd)
    RGBColor(255, 127, 14),
];

fn color_of(name: &str, index: usize) -> RGBColor {
    let i = match name {
        "direct" => 0,
        "fly-fallback" => 1,
        "portkey" => 2,
        "litellm" => 3,
        "worker-workerd" => 4,
        "worker-js-floor" => 5,
        _ => 6 + index,
    };
    PALETTE[i % PALETTE.len()]
}

type Err = Box<dyn std::error::Error>;

fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.01, 1.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf((hi.log10() + 0.15).ceil().max(lo.log10() + 1.0));
    (lo, hi)
}

/// Latency percentiles by target and rate: one panel per percentile.
pub fn latency(res: &Results, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1500, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(80);
    let (title, legend) = title.split_vertically(45);
    title.titled(
        "Latency at fixed request rates (open loop, from the scheduled time; log scales; x: saturated)",
        ("sans-serif", 22).into_font(),
    )?;
    let panels = body.split_evenly((1, 3));
    let targets_in_legend: Vec<_> = res
        .targets
        .iter()
        .filter(|r| r.ok() && r.rates.iter().any(|p| p.stats.is_some()))
        .collect();
    // One legend for the three panels, in a strip under the title.
    let mut x = 120;
    for (i, r) in targets_in_legend.iter().enumerate() {
        let c = color_of(&r.name, i);
        legend.draw(&PathElement::new(
            vec![(x, 16), (x + 30, 16)],
            c.stroke_width(4),
        ))?;
        legend.draw(&Circle::new((x + 15, 16), 4, c.filled()))?;
        legend.draw(&Text::new(
            r.name.clone(),
            (x + 38, 7),
            ("sans-serif", 17).into_font(),
        ))?;
        x += 60 + 10 * r.name.len() as i32;
    }
    let targets: Vec<_> = res
        .targets
        .iter()
        .filter(|r| r.ok() && r.rates.iter().any(|p| p.stats.is_some()))
        .collect();
    let all = targets
        .iter()
        .flat_map(|r| r.rates.iter().filter_map(|p| p.stats.as_ref()))
        .flat_map(|s| [s.p50_us / 1000.0, s.p999_us / 1000.0]);
    let (ylo, yhi) = log_range(all);
    // Rates are evenly spaced on the x axis (they usually double), labelled with their value.
    let rates: Vec<f64> = res.knobs.rates.clone();
    let xi = |rate: f64| {
        rates
            .iter()
            .position(|r| (*r - rate).abs() < 1e-9)
            .unwrap_or(0) as f64
    };
    let (xlo, xhi) = (-0.3, rates.len() as f64 - 0.7);
    let labels = rates.clone();
    let xfmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            format!("{:.0}", labels[i as usize])
        } else {
            String::new()
        }
    };
    type Pick = fn(&crate::load::LoadStats) -> f64;
    let pick: [(&str, Pick); 3] = [
        ("p50", |s| s.p50_us),
        ("p99", |s| s.p99_us),
        ("p99.9", |s| s.p999_us),
    ];
    for (panel, (label, f)) in panels.iter().zip(pick) {
        let mut chart = ChartBuilder::on(panel)
            .caption(label, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(xlo..xhi, (ylo..yhi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("requests per second (scheduled)")
            .y_desc("latency, ms")
            .x_labels(rates.len() + 1)
            .x_label_formatter(&xfmt)
            .y_labels(12)
            .y_label_formatter(&|y| format!("{y}"))
            .label_style(("sans-serif", 14))
            .draw()?;
        // The p99 bound of the throughput scenario.
        let bound = res.knobs.p99_bound_ms;
        if bound > ylo && bound < yhi {
            chart.draw_series(LineSeries::new(
                [(xlo, bound), (xhi, bound)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))?;
        }
        for (i, r) in targets.iter().enumerate() {
            let c = color_of(&r.name, i);
            let pts: Vec<(f64, f64)> = r
                .rates
                .iter()
                .filter_map(|p| {
                    p.stats
                        .as_ref()
                        .map(|s| (xi(p.rate), (f(s) / 1000.0).max(ylo)))
                })
                .collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))?;
            // Saturated points: a cross.
            chart.draw_series(
                r.rates
                    .iter()
                    .filter(|p| p.saturated)
                    .filter_map(|p| {
                        p.stats
                            .as_ref()
                            .map(|s| (xi(p.rate), (f(s) / 1000.0).max(ylo)))
                    })
                    .map(|p| Cross::new(p, 8, c.stroke_width(2))),
            )?;
        }
    }
    root.present()?;
    Ok(())
}

/// Grouped bars: one group per category, one bar per series; values printed above the bars.
#[allow(clippy::too_many_arguments)]
fn bars(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(String, RGBColor, Vec<Option<f64>>)],
    log: bool,
    fmt: &dyn Fn(f64) -> String,
    legend_at: SeriesLabelPosition,
) -> Result<(), Err> {
    let n = categories.len().max(1) as f64;
    let values = series.iter().flat_map(|s| s.2.iter().flatten().cloned());
    let (lo, hi) = if log {
        log_range(values)
    } else {
        (0.0, values.fold(0.0, f64::max).max(1e-9) * 1.18)
    };
    let cats = categories.to_vec();
    let xfmt = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
            cats[i as usize].clone()
        } else {
            String::new()
        }
    };
    let m = series.len().max(1) as f64;
    let w = 0.8 / m;
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(categories.len() + 1)
                .x_label_formatter(&xfmt)
                .y_desc(y_desc)
                .y_label_formatter(&|y| fmt(*y))
                .label_style(("sans-serif", 15))
                .draw()?;
            for (j, (name, color, vals)) in series.iter().enumerate() {
                let c = *color;
                let x0 = |i: usize| i as f64 - 0.4 + j as f64 * w;
                chart
                    .draw_series(vals.iter().enumerate().filter_map(|(i, v)| {
                        v.map(|v| {
                            Rectangle::new(
                                [(x0(i), $base), (x0(i) + w * 0.92, v.max($base))],
                                c.filled(),
                            )
                        })
                    }))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())
                    });
                chart.draw_series(vals.iter().enumerate().filter_map(|(i, v)| {
                    v.map(|v| {
                        Text::new(
                            fmt(v),
                            (x0(i) + w * 0.46, v.max($base)),
                            TextStyle::from(("sans-serif", 13).into_font()).pos(
                                plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Center,
                                    plotters::style::text_anchor::VPos::Bottom,
                                ),
                            ),
                        )
                    })
                }))?;
            }
            if series.len() > 1 {
                chart
                    .configure_series_labels()
                    .position(legend_at.clone())
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .draw()?;
            }
        }};
    }
    macro_rules! builder {
        () => {{
            let mut b = ChartBuilder::on(area);
            b.caption(title, ("sans-serif", 20))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(80);
            b
        }};
    }
    if log {
        let chart = builder!().build_cartesian_2d(-0.6..n - 0.4, (lo..hi).log_scale())?;
        draw!(chart, lo);
    } else {
        let chart = builder!().build_cartesian_2d(-0.6..n - 0.4, lo..hi)?;
        draw!(chart, lo);
    }
    Ok(())
}

fn k(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn msf(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else if v >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn throughput(res: &Results, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let t: Vec<_> = res.targets.iter().filter(|r| r.ok()).collect();
    let cats: Vec<String> = t.iter().map(|r| r.name.clone()).collect();
    let c = res.knobs.cpu_level;
    let series = vec![
        (
            format!(
                "max req/s with p99 < {} ms (open loop)",
                res.knobs.p99_bound_ms
            ),
            RGBColor(31, 119, 180),
            t.iter().map(|r| r.max_rate_under_bound).collect(),
        ),
        (
            format!("req/s at {c} connections (closed loop)"),
            RGBColor(255, 127, 14),
            t.iter()
                .map(|r| r.closed_at(c).map(|p| p.stats.rps))
                .collect(),
        ),
        (
            "peak req/s (closed loop, any latency)".into(),
            RGBColor(150, 150, 150),
            t.iter().map(|r| r.peak_rps()).collect(),
        ),
    ];
    bars(
        &root,
        "Throughput by target (log scale; same machine, mock and load generator)",
        "requests per second",
        &cats,
        &series,
        true,
        &k,
        SeriesLabelPosition::UpperRight,
    )?;
    root.present()?;
    Ok(())
}

pub fn overhead(res: &Results, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let t: Vec<_> = res
        .targets
        .iter()
        .filter(|r| r.ok() && r.name != "direct")
        .collect();
    let cats: Vec<String> = t.iter().map(|r| r.name.clone()).collect();
    let pos = |v: Option<f64>| v.map(|v| (v / 1000.0).max(0.001));
    let series = vec![
        (
            "added latency per request, sequential p50".to_string(),
            RGBColor(31, 119, 180),
            t.iter()
                .map(|r| pos(r.sequential.as_ref().and_then(|s| s.added_us)))
                .collect(),
        ),
        (
            "added delay, first stream event".to_string(),
            RGBColor(214, 39, 40),
            t.iter()
                .map(|r| pos(r.streaming.as_ref().and_then(|s| s.added_first_event_us)))
                .collect(),
        ),
        (
            "added delay per stream event".to_string(),
            RGBColor(44, 160, 44),
            t.iter()
                // From the mock's send stamp when the events kept it (as the summary table).
                .map(|r| {
                    pos(r
                        .streaming
                        .as_ref()
                        .and_then(|s| s.added_relay_per_event_us.or(s.added_per_event_us)))
                })
                .collect(),
        ),
    ];
    bars(
        &root,
        "Latency added over direct-to-mock (ms, log scale; lower is better)",
        "ms",
        &cats,
        &series,
        true,
        &msf,
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present()?;
    Ok(())
}

pub fn memory(res: &Results, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let t: Vec<_> = res.targets.iter().filter(|r| r.ok()).collect();
    let cats: Vec<String> = t.iter().map(|r| r.name.clone()).collect();
    let mb = |v: Option<u64>| v.map(|v| v as f64 / 1024.0);
    let series = vec![
        (
            "idle".to_string(),
            RGBColor(150, 150, 150),
            t.iter().map(|r| mb(r.memory.idle_kib)).collect(),
        ),
        (
            "after load".to_string(),
            RGBColor(255, 127, 14),
            t.iter().map(|r| mb(r.memory.after_load_kib)).collect(),
        ),
        (
            format!("{} open streams", res.knobs.hold_streams),
            RGBColor(31, 119, 180),
            t.iter().map(|r| mb(r.memory.streams_kib)).collect(),
        ),
    ];
    bars(
        &root,
        "Resident memory, MiB (VmRSS of the process tree; log scale)",
        "MiB",
        &cats,
        &series,
        true,
        &msf,
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present()?;
    Ok(())
}

pub fn soak(s: &SoakResult, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let tmax = s.samples.last().map(|x| x.at_s).unwrap_or(1.0).max(1.0);
    let rss: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter_map(|x| x.rss_kib.map(|r| (x.at_s, r as f64 / 1024.0)))
        .collect();
    let rmax = rss.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("Soak: {} at {} req/s — resident memory", s.target, s.rate),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..tmax, 0.0..rmax)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("RSS, MiB")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(LineSeries::new(rss, RGBColor(31, 119, 180).stroke_width(2)))?;
    let lat: Vec<(f64, f64, f64)> = s
        .samples
        .iter()
        .map(|x| (x.at_s, x.stats.p50_us / 1000.0, x.stats.p99_us / 1000.0))
        .collect();
    let lmax = lat.iter().map(|p| p.2).fold(0.1, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency per window (p50, p99)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..tmax, 0.0..lmax)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            lat.iter().map(|p| (p.0, p.1)),
            RGBColor(44, 160, 44).stroke_width(2),
        ))?
        .label("p50")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 18, y)],
                RGBColor(44, 160, 44).stroke_width(3),
            )
        });
    chart
        .draw_series(LineSeries::new(
            lat.iter().map(|p| (p.0, p.2)),
            RGBColor(214, 39, 40).stroke_width(2),
        ))?
        .label("p99")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 18, y)],
                RGBColor(214, 39, 40).stroke_width(3),
            )
        });
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws every comparison chart into `dir`; returns the files written and any failures.
pub fn all(res: &Results, dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    type Chart = fn(&Results, &Path) -> Result<(), Err>;
    let charts: [(&str, Chart); 4] = [
        ("latency.png", latency),
        ("throughput.png", throughput),
        ("overhead.png", overhead),
        ("memory.png", memory),
    ];
    for (name, f) in charts {
        match f(res, &dir.join(name)) {
            Ok(()) => ok.push(name.to_string()),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    (ok, failed)
}

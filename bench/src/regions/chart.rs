//! `timeline.png`: latency per location, the share each upstream served, the attempts the
//! gateway began on each upstream, and each upstream's state, over time, with the cut marked.

use std::path::Path;

use plotters::prelude::*;

use super::analysis::RegionsResult;
use super::REGIONS;

type Err = Box<dyn std::error::Error>;

const CLIENT_COLORS: &[RGBColor] = &[
    RGBColor(214, 39, 40),   // red
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(23, 190, 207),  // cyan
    RGBColor(31, 119, 180),  // blue
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(127, 127, 127), // grey
    RGBColor(188, 189, 34),  // olive
];

const REGION_COLORS: [RGBColor; 5] = [
    RGBColor(228, 26, 28),  // ap-northeast
    RGBColor(255, 160, 40), // ap-southeast
    RGBColor(55, 126, 184), // us-west
    RGBColor(77, 175, 74),  // us-east
    RGBColor(152, 78, 163), // eu-central
];

fn state_color(state: &str) -> RGBColor {
    match state {
        "healthy" => RGBColor(120, 200, 120),
        "ejected" => RGBColor(250, 210, 60),
        "half_open" => RGBColor(250, 150, 50),
        "open" => RGBColor(230, 70, 50),
        "down" => RGBColor(120, 20, 20),
        _ => RGBColor(200, 200, 200),
    }
}

const STATES: [&str; 5] = ["healthy", "ejected", "half_open", "open", "down"];

pub fn timeline(res: &RegionsResult, path: &Path) -> Result<(), Err> {
    let root = BitMapBackend::new(path, (1400, 1320)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(40);
    title.titled(
        &format!(
            "Region simulation: {} locations × {} req/s; {} cut at {:.0} s, back at {:.0} s",
            res.clients.len(),
            res.rate_per_client,
            res.cut.region,
            res.cut.cut_at_s,
            res.cut.restored_at_s
        ),
        ("sans-serif", 22).into_font(),
    )?;
    let (lat_area, rest) = rest.split_vertically(500);
    let (share_area, rest) = rest.split_vertically(280);
    let (att_area, state_area) = rest.split_vertically(270);
    let t_end = 3.0 * res.phase_secs;
    let (t_cut, t_back) = (res.cut.cut_at_s, res.cut.restored_at_s);
    let cut_shade = RGBColor(230, 60, 60).mix(0.10);

    // 1. Latency per location: per-second median (line) and slowest (triangles), log scale.
    let hi_val = res
        .latency_timeline
        .iter()
        .flat_map(|c| c.points.iter().filter_map(|p| p.max_ms))
        .fold(100.0, f64::max);
    let lo_val = res
        .latency_timeline
        .iter()
        .flat_map(|c| c.points.iter().filter_map(|p| p.p50_ms))
        .fold(f64::MAX, f64::min)
        .min(hi_val);
    let ylo = 10f64.powf((lo_val.max(1.0) * 0.7).log10().floor());
    let yhi = 10f64.powf((hi_val * 1.5).log10().ceil());
    let mut chart = ChartBuilder::on(&lat_area)
        .caption(
            "latency each location saw, per second (line: median; ▲: slowest), log scale",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..t_end, (ylo..yhi).log_scale())?;
    chart
        .configure_mesh()
        .y_desc("ms")
        .y_labels(10)
        .y_label_formatter(&|y| format!("{y}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(t_cut, ylo), (t_back, yhi)],
        cut_shade.filled(),
    )))?;
    for (i, c) in res.latency_timeline.iter().enumerate() {
        let color = CLIENT_COLORS[i % CLIENT_COLORS.len()];
        let med: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter_map(|p| p.p50_ms.map(|v| (p.at_s + 0.5, v.max(ylo))))
            .collect();
        let nearest = res
            .clients
            .iter()
            .find(|x| x.code == c.client)
            .map(|x| x.nearest.clone())
            .unwrap_or_default();
        chart
            .draw_series(LineSeries::new(med, color.stroke_width(2)))?
            .label(format!("{} → {}", c.client, nearest))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        chart.draw_series(c.points.iter().filter_map(|p| {
            p.max_ms
                .map(|v| TriangleMarker::new((p.at_s + 0.5, v.max(ylo)), 4, color.filled()))
        }))?;
    }
    for (t, label) in [(t_cut, "cut"), (t_back, "back")] {
        chart.draw_series(LineSeries::new(
            [(t, ylo), (t, yhi)],
            BLACK.mix(0.6).stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label,
            (t + 0.3, yhi / 1.6),
            ("sans-serif", 16).into_font(),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;

    // 2. Share of answers per upstream, per second (stacked).
    let mut chart = ChartBuilder::on(&share_area)
        .caption(
            "share of answers by upstream (x-gateway-upstream), per second of sending",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..t_end, 0.0..100.0)?;
    chart
        .configure_mesh()
        .y_desc("%")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (k, g) in REGIONS.iter().enumerate() {
        let color = REGION_COLORS[k];
        chart
            .draw_series(res.share_timeline.iter().filter_map(|p| {
                let total: u64 = p.served.iter().sum::<u64>() + p.errors;
                if total == 0 {
                    return None;
                }
                let below: u64 = p.served.iter().take(k).sum();
                let lo = below as f64 * 100.0 / total as f64;
                let hi =
                    (below + p.served.get(k).copied().unwrap_or(0)) as f64 * 100.0 / total as f64;
                (hi > lo)
                    .then(|| Rectangle::new([(p.at_s, lo), (p.at_s + 1.0, hi)], color.filled()))
            }))?
            .label(g.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .draw_series(res.share_timeline.iter().filter_map(|p| {
            let total: u64 = p.served.iter().sum::<u64>() + p.errors;
            (p.errors > 0 && total > 0).then(|| {
                let lo = (total - p.errors) as f64 * 100.0 / total as f64;
                Rectangle::new([(p.at_s, lo), (p.at_s + 1.0, 100.0)], BLACK.filled())
            })
        }))?
        .label("error")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], BLACK.filled()));
    for t in [t_cut, t_back] {
        chart.draw_series(LineSeries::new(
            [(t, 0.0), (t, 100.0)],
            BLACK.mix(0.8).stroke_width(2),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;

    // 3. Attempts begun on each upstream per second (the status endpoint's counters).
    let amax = res
        .attempts_timeline
        .iter()
        .flat_map(|p| p.per_second.iter().copied())
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&att_area)
        .caption(
            "attempts the gateway began on each upstream, per second (GET /v1/gateway/status every 0.5 s)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..t_end, 0.0..amax)?;
    chart
        .configure_mesh()
        .y_desc("attempts/s")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(t_cut, 0.0), (t_back, amax)],
        cut_shade.filled(),
    )))?;
    for (k, g) in REGIONS.iter().enumerate() {
        let color = REGION_COLORS[k];
        let pts: Vec<(f64, f64)> = res
            .attempts_timeline
            .iter()
            .filter(|p| p.at_s >= 0.0)
            .filter_map(|p| p.per_second.get(k).map(|v| (p.at_s, *v)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(g.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;

    // 4. Each upstream's state.
    let names: Vec<String> = REGIONS.iter().map(|r| r.name.to_string()).collect();
    let labels = names.clone();
    let mut chart = ChartBuilder::on(&state_area)
        .caption("state in GET /v1/gateway/status", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..t_end, -0.5..(names.len() as f64 - 0.5))?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the steady phase (latency and share: by time sent; attempts and state: by time sampled)")
        .y_labels(names.len())
        .y_label_formatter(&move |y: &f64| {
            let i = y.round();
            if (y - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                labels[labels.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .disable_y_mesh()
        .label_style(("sans-serif", 13))
        .draw()?;
    let samples: Vec<_> = res
        .status_timeline
        .iter()
        .filter(|s| s.at_s >= -0.5 && !s.upstreams.is_empty())
        .collect();
    for w in samples.windows(2) {
        for (k, name) in names.iter().enumerate() {
            let Some(u) = w[0].upstreams.iter().find(|u| &u.name == name) else {
                continue;
            };
            let y = (names.len() - 1 - k) as f64;
            let (x0, x1) = (w[0].at_s.max(0.0), w[1].at_s.min(t_end));
            if x1 > x0 {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, y - 0.35), (x1, y + 0.35)],
                    state_color(&u.state).filled(),
                )))?;
            }
        }
    }
    for s in STATES {
        let c = state_color(s);
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(s)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    for t in [t_cut, t_back] {
        chart.draw_series(LineSeries::new(
            [(t, -0.5), (t, names.len() as f64 - 0.5)],
            BLACK.mix(0.8).stroke_width(2),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;
    root.present()?;
    Ok(())
}

//! `--chart`: a PNG of horizontal bars, one per scenario (as routed, all on each model, each
//! mix), each bar split by model in the model's colour and labelled with its dollar figure.
//!
//! Text needs a font, read at run time from the machine (nothing is downloaded): DejaVu Sans
//! (Debian's fonts-dejavu-core) or the TrueType file named by `COST_REPORT_FONT`.

use std::path::{Path, PathBuf};

use gateway_core::pricing::Money;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::num::{saving_pct, thousands, usd};
use super::report::Report;
use super::table::mix_labels;
use super::what_if::DESIGN_MODELS;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The chart's geometry: its height follows the number of bars and of legend lines.
pub const WIDTH: u32 = 1200;
const TITLE_H: u32 = 90;
const ROW_H: u32 = 48;
const AXIS_H: u32 = 50;
const LEGEND_LINE_H: u32 = 28;
const LEGEND_PER_LINE: usize = 3;
const BOTTOM_H: u32 = 16;

/// Height of a chart of `rows` bars and `models` legend entries.
pub fn height(rows: usize, models: usize) -> u32 {
    let legend_lines = models.div_ceil(LEGEND_PER_LINE) as u32;
    TITLE_H + ROW_H * rows as u32 + AXIS_H + LEGEND_LINE_H * legend_lines + BOTTOM_H
}

/// Colour-blind-friendly categorical colours (Tableau 10).
pub(crate) const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) fn init_font() -> Result<PathBuf, String> {
    let path = std::env::var_os("COST_REPORT_FONT")
        .map(PathBuf::from)
        .or_else(|| FONT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()))
        .ok_or(
            "no font found for the chart: install fonts-dejavu-core or set COST_REPORT_FONT \
             to a TrueType file",
        )?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font("sans-serif", style, bytes)
            .map_err(|_| format!("{}: not a usable font", path.display()))?;
    }
    Ok(path)
}

/// One bar: its label, its parts by model, its total and what the label after it says.
struct Bar {
    label: String,
    parts: Vec<(String, Money)>,
    total: Money,
    note: String,
}

/// A short dollar figure for a label: exact when short, else four significant digits.
fn short_usd(m: Money) -> String {
    let exact = usd(m);
    if exact.len() <= 10 {
        return exact;
    }
    let v = m.as_f64();
    if v >= 100.0 {
        return usd(Money::from_picos(
            m.picos() / 10_000_000_000 * 10_000_000_000,
        ));
    }
    format!("${}", trim(format!("{v:.*}", sig_decimals(v, 4))))
}

fn sig_decimals(v: f64, digits: i32) -> usize {
    if v <= 0.0 || !v.is_finite() {
        return 0;
    }
    (digits - 1 - v.log10().floor() as i32).clamp(0, 12) as usize
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// An axis tick: a float (charts only) with as many decimals as its magnitude needs.
fn axis_usd(v: f64, step: f64) -> String {
    if v.abs() < step / 1e6 {
        return "$0".into();
    }
    let s = trim(format!(
        "{v:.*}",
        sig_decimals(step, 2).max(sig_decimals(v, 2))
    ));
    match s.split_once('.') {
        None => s
            .parse::<u128>()
            .map_or(format!("${s}"), |w| format!("${}", thousands(w))),
        Some(_) => format!("${s}"),
    }
}

/// The bars, the title and the subtitle.
fn bars(report: &Report) -> (Vec<Bar>, String, String) {
    let w = &report.what_if;
    let base = w.baseline.cost_usd;
    let note = |label: &str, cost: Money| {
        if w.baseline.label == label {
            format!("{} (baseline)", short_usd(cost))
        } else {
            match saving_pct(base, cost, 1) {
                Some(s) => match s.strip_prefix('-') {
                    Some(more) => format!("{}  ({more}% more)", short_usd(cost)),
                    None => format!("{}  ({s}% less)", short_usd(cost)),
                },
                None => short_usd(cost),
            }
        }
    };
    let mut v = Vec::new();
    if let Some(routed) = &w.as_routed {
        let total: Money = routed.iter().map(|m| m.cost_usd).sum();
        v.push(Bar {
            label: "as routed".into(),
            parts: routed
                .iter()
                .map(|m| (m.model.clone(), m.cost_usd))
                .collect(),
            total,
            note: note("as routed", total),
        });
    }
    for a in &w.all_on {
        let label = format!("all on {}", a.model);
        v.push(Bar {
            note: note(&label, a.cost_usd),
            label,
            parts: vec![(a.model.clone(), a.cost_usd)],
            total: a.cost_usd,
        });
    }
    for (m, label) in w.mixes.iter().zip(mix_labels(w)) {
        v.push(Bar {
            label,
            parts: m
                .shares
                .iter()
                .map(|s| (s.model.clone(), s.cost_usd))
                .collect(),
            total: m.cost_usd,
            note: note("", m.cost_usd),
        });
    }
    let t = &w.traffic;
    let what = match t.synthetic_tokens {
        Some(n) => format!("{} tokens", thousands(u128::from(n))),
        None => format!(
            "{} requests, {} tokens as logged (cache hits and unpriced requests left out)",
            thousands(u128::from(t.requests)),
            thousands(u128::from(t.prompt_tokens) + u128::from(t.completion_tokens))
        ),
    };
    let one = if w.one_price {
        "; one price per model (its input price)"
    } else {
        ""
    };
    let sub = match t.synthetic_tokens {
        Some(_) if w.one_price => format!(
            "Every token at the model's input price (one price per model); saving against {}",
            w.baseline.label
        ),
        _ => format!("{what}{one}; saving against {}", w.baseline.label),
    };
    let title = match t.synthetic_tokens {
        Some(n) => format!(
            "What {} tokens cost on each model and mix (USD)",
            thousands(u128::from(n))
        ),
        None => "Spend as routed vs what-if scenarios (USD)".to_string(),
    };
    (v, title, sub)
}

/// The models in colour order: the design's first (the same colours in every chart), then the
/// others as they first appear in the bars.
fn models_of(bars: &[Bar]) -> Vec<String> {
    let drawn = |m: &str| {
        bars.iter()
            .flat_map(|b| &b.parts)
            .any(|(x, cost)| x == m && *cost > Money::ZERO)
    };
    let mut models: Vec<String> = DESIGN_MODELS
        .iter()
        .filter(|m| drawn(m))
        .map(|m| m.to_string())
        .collect();
    for (m, cost) in bars.iter().flat_map(|b| &b.parts) {
        if *cost > Money::ZERO && !models.contains(m) {
            models.push(m.clone());
        }
    }
    models
}

/// Draws the chart; returns its size.
pub fn draw(report: &Report, path: &Path) -> Result<(u32, u32), String> {
    init_font()?;
    let (bars, title, subtitle) = bars(report);
    let models = models_of(&bars);
    let size = (WIDTH, height(bars.len(), models.len()));
    draw_bars(&bars, &models, (&title, &subtitle), path, size)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(size)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_bars(
    bars: &[Bar],
    models: &[String],
    (title, subtitle): (&str, &str),
    path: &Path,
    size: (u32, u32),
) -> DrawResult {
    let colour = |m: &str| {
        let i = models.iter().position(|x| x == m).unwrap_or(0);
        PALETTE.get(i % PALETTE.len()).copied().unwrap_or(BLACK)
    };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(TITLE_H);
    let (body, legend) = rest.split_vertically(ROW_H * bars.len() as u32 + AXIS_H);

    top.draw(&Text::new(
        title.to_string(),
        (20, 16),
        ("sans-serif", 26).into_font().style(FontStyle::Bold),
    ))?;
    top.draw(&Text::new(
        subtitle.to_string(),
        (20, 54),
        ("sans-serif", 16).into_font().color(&RGBColor(80, 80, 80)),
    ))?;

    let n = bars.len();
    let max = bars.iter().map(|b| b.total.as_f64()).fold(0.0, f64::max);
    // Room after the longest bar for its label.
    let x_max = if max > 0.0 { max * 1.32 } else { 1.0 };
    let step = x_max / 8.0;
    let label_w = bars
        .iter()
        .map(|b| b.label.chars().count() as u32)
        .max()
        .unwrap_or(10)
        * 9
        + 24;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    // Row 0 at the top: segment n-1.
    let rows = n as i32;
    let seg = |i: usize| rows - 1 - i as i32;
    let y_label = move |y: &SegmentValue<i32>| match y {
        SegmentValue::CenterOf(v) => labels
            .get((rows - 1 - v) as usize)
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(&body)
        .margin_left(12)
        .margin_right(28)
        .margin_top(6)
        .x_label_area_size(AXIS_H)
        .y_label_area_size(label_w.min(WIDTH / 2))
        // An integer range is inclusive here: 0..=rows-1 is `rows` bands.
        .build_cartesian_2d(0f64..x_max, (0..(rows - 1).max(0)).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(9)
        .y_labels(n + 1)
        .x_label_formatter(&|x| axis_usd(*x, step))
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    let label_style = TextStyle::from(("sans-serif", 16).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK);
    let band = |x0: f64, x1: f64, v: i32| {
        [
            (x0, SegmentValue::Exact(v)),
            (x1, SegmentValue::Exact(v + 1)),
        ]
    };
    let gap = ROW_H / 5;
    for (i, bar) in bars.iter().enumerate() {
        let v = seg(i);
        let mut x0 = 0.0;
        for (model, cost) in &bar.parts {
            let x1 = x0 + cost.as_f64();
            if x1 > x0 {
                let mut fill = Rectangle::new(band(x0, x1, v), colour(model).filled());
                fill.set_margin(gap, gap, 0, 0);
                let mut edge = Rectangle::new(band(x0, x1, v), WHITE.stroke_width(1));
                edge.set_margin(gap, gap, 0, 0);
                chart.draw_series([fill, edge])?;
            }
            x0 = x1;
        }
        chart.draw_series(std::iter::once(
            EmptyElement::at((bar.total.as_f64(), SegmentValue::CenterOf(v)))
                + Text::new(bar.note.clone(), (8, 0), label_style.clone()),
        ))?;
    }

    // The legend: a swatch and each model's name, with its as-routed spend where it has one.
    let routed = bars.first().filter(|b| b.label == "as routed");
    let col_w = (WIDTH - 40) / LEGEND_PER_LINE as u32;
    for (i, model) in models.iter().enumerate() {
        let x = 20 + (i % LEGEND_PER_LINE) as i32 * col_w as i32;
        let y = 4 + (i / LEGEND_PER_LINE) as i32 * LEGEND_LINE_H as i32;
        legend.draw(&Rectangle::new(
            [(x, y + 4), (x + 18, y + 20)],
            colour(model).filled(),
        ))?;
        let spent = routed
            .and_then(|b| b.parts.iter().find(|(m, _)| m == model))
            .map(|(_, c)| format!("   {} as routed", short_usd(*c)))
            .unwrap_or_default();
        legend.draw(&Text::new(
            format!("{model}{spent}"),
            (x + 26, y + 3),
            ("sans-serif", 16).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse_usd(s).unwrap()
    }

    #[test]
    fn labels_are_exact_when_short_and_rounded_when_long() {
        assert_eq!(short_usd(m("8")), "$8");
        assert_eq!(short_usd(m("2.985")), "$2.985");
        assert_eq!(short_usd(m("0.000184")), "$0.000184");
        assert_eq!(short_usd(m("0.000798123")), "$0.0007981");
        assert_eq!(short_usd(m("1234.56789")), "$1,234.56");
    }

    #[test]
    fn axis_ticks_show_what_their_step_needs() {
        assert_eq!(axis_usd(0.0, 0.5), "$0");
        assert_eq!(axis_usd(2.0, 0.5), "$2");
        assert_eq!(axis_usd(2.5, 0.5), "$2.5");
        assert_eq!(axis_usd(0.0004, 0.0001), "$0.0004");
        assert_eq!(axis_usd(2000.0, 500.0), "$2,000");
    }

    #[test]
    fn the_height_follows_bars_and_legend_lines() {
        // 90 + 6 × 48 + 50 + 2 × 28 + 16.
        assert_eq!(height(6, 5), 500);
        assert_eq!(height(5, 4), 90 + 240 + 50 + 56 + 16);
        assert_eq!(height(5, 3), 90 + 240 + 50 + 28 + 16);
    }
}

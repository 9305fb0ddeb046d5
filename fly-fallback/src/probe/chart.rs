//! `--chart`: a PNG with one band per row (model, region, mode): a bar to the TTFT p50 and one
//! to the total p50, each with a whisker from min to max. The font is `cost-report`'s (DejaVu
//! Sans, or the TrueType file named by `COST_REPORT_FONT`).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::report::{Report, Row};
use super::stats::Summary;
use super::table::{ms, served_cell};
use crate::cost_report::chart::{init_font, PALETTE};

pub const WIDTH: u32 = 1200;
const TITLE_H: u32 = 84;
const ROW_H: u32 = 64;
const AXIS_H: u32 = 50;
const LEGEND_H: u32 = 40;
const BOTTOM_H: u32 = 8;

/// Height of a chart of `rows` rows.
pub fn height(rows: usize) -> u32 {
    TITLE_H + ROW_H * rows.max(1) as u32 + AXIS_H + LEGEND_H + BOTTOM_H
}

/// TTFT and total, in the first two colours of the palette.
fn colours() -> (RGBColor, RGBColor) {
    (
        PALETTE.first().copied().unwrap_or(BLUE),
        PALETTE.get(1).copied().unwrap_or(RED),
    )
}

/// A row's label: `model @ region · mode`.
fn label(r: &Row) -> String {
    format!(
        "{} @ {} · {}",
        r.model,
        r.region.as_deref().unwrap_or("auto"),
        r.mode
    )
}

/// Under a row's label: its counts and who answered.
fn note(r: &Row) -> String {
    let failed = if r.errors > 0 {
        format!(", {} failed", r.errors)
    } else {
        String::new()
    };
    format!("{} ok{failed} · {}", r.ok, served_cell(r))
}

/// The end of the time axis: 30% past the longest whisker, where its label goes.
fn axis_max(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    max * 1.3
}

/// Draws the chart; returns its size.
pub fn draw(report: &Report, path: &Path) -> Result<(u32, u32), String> {
    init_font()?;
    let size = (WIDTH, height(report.rows.len()));
    draw_rows(report, path, size).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(size)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_rows(report: &Report, path: &Path, size: (u32, u32)) -> DrawResult {
    let rows = &report.rows;
    let n = rows.len().max(1);
    let (ttft_colour, total_colour) = colours();
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(TITLE_H);
    let (body, legend) = rest.split_vertically(ROW_H * n as u32 + AXIS_H);

    top.draw(&Text::new(
        "Gateway latency by model, region and mode".to_string(),
        (20, 14),
        ("sans-serif", 26).into_font().style(FontStyle::Bold),
    ))?;
    let s = &report.settings;
    top.draw(&Text::new(
        format!(
            "{}  ·  {} calls per row  ·  bars: p50 of the successful calls, whiskers: min to max",
            report.gateway.url, s.calls_per_row
        ),
        (20, 52),
        ("sans-serif", 16).into_font().color(&RGBColor(80, 80, 80)),
    ))?;

    let max = rows
        .iter()
        .flat_map(|r| [r.ttft_ms.as_ref(), r.total_ms.as_ref()])
        .flatten()
        .map(|s| s.max)
        .fold(0.0, f64::max);
    let x_max = axis_max(max);
    let labels: Vec<String> = rows.iter().map(label).collect();
    let notes: Vec<String> = rows.iter().map(note).collect();
    // Wide enough for the longest label (16 px text) and note (13 px), at most half the width.
    let widest = |texts: &[String], px_per_char: u32| {
        texts
            .iter()
            .map(|t| t.chars().count() as u32 * px_per_char)
            .max()
            .unwrap_or(0)
    };
    let label_w = (widest(&labels, 9).max(widest(&notes, 7)) + 30).clamp(120, WIDTH / 2);
    let mut chart = ChartBuilder::on(&body)
        .margin_left(12)
        .margin_right(28)
        .margin_top(6)
        .x_label_area_size(AXIS_H)
        .y_label_area_size(label_w)
        .build_cartesian_2d(0f64..x_max, 0f64..n as f64)?;
    // Every other row shaded, under the grid lines. Row 0 at the top.
    let base_of = |i: usize| n.saturating_sub(1 + i) as f64;
    chart.draw_series((1..rows.len()).step_by(2).map(|i| {
        Rectangle::new(
            [(0.0, base_of(i)), (x_max, base_of(i) + 1.0)],
            RGBColor(246, 246, 246).filled(),
        )
    }))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(10)
        .x_max_light_lines(1)
        .x_label_formatter(&|x| format!("{x:.0} ms"))
        .label_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    let value_style = TextStyle::from(("sans-serif", 14).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK);
    let label_style = TextStyle::from(("sans-serif", 16).into_font())
        .pos(Pos::new(HPos::Right, VPos::Center))
        .color(&BLACK);
    let note_style = TextStyle::from(("sans-serif", 13).into_font())
        .pos(Pos::new(HPos::Right, VPos::Center))
        .color(&RGBColor(100, 100, 100));
    for (i, row) in rows.iter().enumerate() {
        let base = base_of(i);
        let (lx, ly) = chart.backend_coord(&(0.0, base + 0.6));
        root.draw(&Text::new(
            labels.get(i).cloned().unwrap_or_default(),
            (lx - 10, ly),
            label_style.clone(),
        ))?;
        let (nx, ny) = chart.backend_coord(&(0.0, base + 0.3));
        root.draw(&Text::new(
            notes.get(i).cloned().unwrap_or_default(),
            (nx - 10, ny),
            note_style.clone(),
        ))?;

        for (summary, colour, y0, y1, what) in [
            (row.ttft_ms.as_ref(), ttft_colour, 0.54, 0.86, "ttft"),
            (row.total_ms.as_ref(), total_colour, 0.14, 0.46, "total"),
        ] {
            let yc = base + (y0 + y1) / 2.0;
            let Some(s) = summary else {
                if what == "ttft" {
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((0.0, base + 0.5))
                            + Text::new("no successful call", (8, 0), value_style.clone()),
                    ))?;
                }
                continue;
            };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, base + y0), (s.p50, base + y1)],
                colour.filled(),
            )))?;
            whisker(&mut chart, s, yc)?;
            chart.draw_series(std::iter::once(
                EmptyElement::at((s.max, yc))
                    + Text::new(format!("{} ms", ms(s.p50)), (8, 0), value_style.clone()),
            ))?;
        }
    }

    // The legend: the two bars' colours and what a whisker means.
    let mut x = 20;
    for (colour, text) in [
        (ttft_colour, "time to first token, p50"),
        (total_colour, "total time, p50"),
    ] {
        legend.draw(&Rectangle::new([(x, 10), (x + 18, 26)], colour.filled()))?;
        legend.draw(&Text::new(
            text.to_string(),
            (x + 26, 9),
            ("sans-serif", 16).into_font(),
        ))?;
        x += 300;
    }
    legend.draw(&PathElement::new(
        vec![(x, 18), (x + 30, 18)],
        BLACK.stroke_width(2),
    ))?;
    for end in [x, x + 30] {
        legend.draw(&PathElement::new(
            vec![(end, 12), (end, 24)],
            BLACK.stroke_width(2),
        ))?;
    }
    legend.draw(&Text::new(
        "min to max".to_string(),
        (x + 40, 9),
        ("sans-serif", 16).into_font(),
    ))?;
    root.present()?;
    Ok(())
}

/// A horizontal line from min to max at height `yc`, with a cap at each end.
fn whisker<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    s: &Summary,
    yc: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = BLACK.stroke_width(2);
    chart.draw_series([
        PathElement::new(vec![(s.min, yc), (s.max, yc)], style),
        PathElement::new(vec![(s.min, yc - 0.09), (s.min, yc + 0.09)], style),
        PathElement::new(vec![(s.max, yc - 0.09), (s.max, yc + 0.09)], style),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_height_follows_the_rows() {
        assert_eq!(height(4), 84 + 4 * 64 + 50 + 40 + 8);
        // An empty report still draws its axes.
        assert_eq!(height(0), height(1));
    }

    #[test]
    fn the_axis_leaves_room_for_labels() {
        assert_eq!(axis_max(0.0), 1.0);
        assert_eq!(axis_max(f64::NAN), 1.0);
        assert!((axis_max(100.0) - 130.0).abs() < 1e-9);
    }
}

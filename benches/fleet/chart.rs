//! The benchmark's chart: requests/s and p99 latency per configuration, as a PNG.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::Summary;

/// Two bar charts, one above the other: requests/s, and p99 latency on a log scale (the worst-case
/// `changes-shared` is a hundred times the others) with the 15 ms target (issue 6/6) drawn in.
pub(crate) fn draw(path: &Path, summaries: &[Summary]) {
    crate::font::register_sans();
    // One above the other, each the full width, so every configuration's name fits under
    // its bar.
    let root = BitMapBackend::new(path, (1800, 880)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (left, right) = root.split_vertically(440);
    let names: Vec<&str> = summaries.iter().map(|s| s.name.as_str()).collect();

    let rps: Vec<f64> = summaries.iter().map(|s| s.rps).collect();
    let top = rps.iter().copied().fold(0.0, f64::max) * 1.15 + f64::EPSILON;
    bars(
        &left,
        "requests/s (higher is better)",
        &names,
        &rps,
        (0.0..top, 0.0),
        None,
        &RGBColor(11, 110, 79),
    );

    let p99: Vec<f64> = summaries.iter().map(|s| s.p99_ms).collect();
    let highest = p99.iter().copied().fold(P99_TARGET_MS, f64::max);
    let lowest = p99
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(P99_TARGET_MS);
    // Whole decades, so the axis reads 1, 10, 100...
    let floor = 10f64.powf((lowest / 1.5).log10().floor());
    let ceiling = 10f64.powf((highest * 1.5).log10().ceil());
    bars(
        &right,
        "p99 latency, ms, log scale (lower is better; line: 15 ms target)",
        &names,
        &p99,
        ((floor..ceiling).log_scale(), floor),
        Some(P99_TARGET_MS),
        &RGBColor(180, 35, 24),
    );
    root.present().unwrap();
}

/// The p99 latency the issue sets as the target, drawn on the chart.
const P99_TARGET_MS: f64 = 15.0;

/// One bar per configuration on the `y` axis (its range, and the value bars start from),
/// each labelled with its value, and a horizontal line at `line` if given.
fn bars<Y>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    names: &[&str],
    values: &[f64],
    (y, base): (Y, f64),
    line: Option<f64>,
    color: &RGBColor,
) where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..names.len() - 1).into_segmented(), y)
        .unwrap();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).copied().unwrap_or("").to_owned(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| {
            if y.abs() >= 10.0 || *y == 0.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .unwrap();
    chart
        .draw_series(values.iter().enumerate().map(|(i, value)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), base),
                    (SegmentValue::Exact(i + 1), *value),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .unwrap();
    if let Some(line) = line {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::Exact(0), line),
                    (SegmentValue::Exact(names.len()), line),
                ],
                BLACK.stroke_width(2),
            )))
            .unwrap();
    }
    // Centred just above each bar.
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(values.iter().enumerate().map(|(i, value)| {
            Text::new(
                if *value >= 100.0 {
                    format!("{value:.0}")
                } else {
                    format!("{value:.2}")
                },
                (SegmentValue::CenterOf(i), *value),
                label_style.clone(),
            )
        }))
        .unwrap();
}

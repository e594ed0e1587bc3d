//! The experiment's chart: requests/s per replica over time, one panel per run, the events
//! (kill, restart, scale in, scale out) drawn as vertical lines.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

pub(crate) fn draw(path: &Path, report: &Value, keys: &[&str]) {
    crate::font::register_sans();
    let height = 300 * keys.len().max(1) as u32;
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let top = keys
        .iter()
        .flat_map(|key| series(&report[*key]).into_iter().flat_map(|(_, v)| v))
        .fold(1u64, u64::max) as f64
        * 1.15;
    for (panel, key) in root.split_evenly((keys.len().max(1), 1)).iter().zip(keys) {
        let run = &report[*key];
        let lines = series(run);
        let last = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(1) as f64;
        let title = format!(
            "{key}: {} | carts lost {}, failed requests {}",
            run["what"].as_str().unwrap_or_default(),
            run["carts_lost"],
            run["failed_requests"]
        );
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..last, 0f64..top)
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("requests/s")
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .unwrap();
        for event in run["events"].as_array().into_iter().flatten() {
            let at = event["at_s"].as_f64().unwrap_or(0.0);
            chart
                .draw_series(LineSeries::new([(at, 0.0), (at, top)], BLACK.mix(0.35)))
                .unwrap();
            chart
                .draw_series([Text::new(
                    event["what"].as_str().unwrap_or_default().to_owned(),
                    (at + 0.3, top * 0.97),
                    ("sans-serif", 12),
                )])
                .unwrap();
        }
        for (i, (replica, values)) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    values
                        .iter()
                        .enumerate()
                        .map(|(s, n)| (s as f64 + 0.5, *n as f64)),
                    colour.stroke_width(2),
                ))
                .unwrap()
                .label(replica.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(25)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}

/// The run's requests/s per replica, by replica id.
fn series(run: &Value) -> Vec<(String, Vec<u64>)> {
    run["requests_per_sec"]
        .as_object()
        .map(|replicas| {
            replicas
                .iter()
                .map(|(id, values)| {
                    let values = values
                        .as_array()
                        .map(|v| v.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default();
                    (id.clone(), values)
                })
                .collect()
        })
        .unwrap_or_default()
}

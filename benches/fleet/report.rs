//! Turns samples into the report: a Markdown table, JSON and a PNG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::json;

use testkit::load::Measured;

/// How the benchmark was run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub users: usize,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub repeats: usize,
    /// Tokio worker threads per replica; `None`: the machine's cores shared out among the
    /// replicas of a configuration (at least one each), as CPU limits would in production.
    pub worker_threads: Option<usize>,
    pub redis_pool_size: usize,
    /// The replicas' `RUST_LOG`, if not the binary's default (their logs go to /dev/null).
    pub log: Option<String>,
    /// Configurations to run; empty means all.
    pub only: Vec<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            users: 64,
            warmup_secs: 3,
            duration_secs: 10,
            repeats: 5,
            worker_threads: None,
            redis_pool_size: 1,
            log: None,
            only: Vec::new(),
        }
    }
}

/// One measured run of one configuration.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub requests: u64,
    pub loadgen_cpu_us_per_req: f64,
    /// CPU time per request of each server role (`replicas`, `nginx`, `redis`), in µs.
    pub cpu_us_per_req: BTreeMap<&'static str, f64>,
    /// Share of responses per replica, in percent.
    pub served_share: BTreeMap<String, f64>,
    /// Redis commands run during the measurement, by name (none without Redis).
    pub redis_commands: Option<BTreeMap<String, u64>>,
}

impl Sample {
    pub(crate) fn new(
        measured: &Measured,
        redis_commands: Option<BTreeMap<String, u64>>,
        cpu_us_per_req: BTreeMap<&'static str, f64>,
    ) -> Self {
        let histogram = measured.latency_us.as_ref().unwrap();
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        let total: u64 = measured.served_by.values().sum();
        Self {
            rps: measured.requests as f64 / measured.elapsed.as_secs_f64(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: histogram.max() as f64 / 1000.0,
            errors: measured.errors,
            requests: measured.requests,
            loadgen_cpu_us_per_req: measured.loadgen_cpu_us_per_req,
            cpu_us_per_req,
            served_share: measured
                .served_by
                .iter()
                .map(|(replica, n)| (replica.clone(), *n as f64 * 100.0 / total.max(1) as f64))
                .collect(),
            redis_commands,
        }
    }

    /// Redis commands per request, as `INFO commandstats` counts them (commands that a
    /// script runs count too).
    pub(crate) fn redis_cmds_per_req(&self) -> Option<f64> {
        self.redis_commands
            .as_ref()
            .map(|calls| calls.values().sum::<u64>() as f64 / self.requests.max(1) as f64)
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median sample of a configuration, field by field.
struct Summary {
    name: String,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    redis_cmds_per_req: Option<f64>,
    redis_commands: String,
    served_share: String,
    loadgen_cpu_us_per_req: f64,
    /// Median CPU µs per request per role; `None` where the configuration has no such role.
    replicas_cpu: Option<f64>,
    nginx_cpu: Option<f64>,
    redis_cpu: Option<f64>,
}

fn summarise(name: &str, samples: &[Sample]) -> Summary {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f));
    let last = samples.last();
    Summary {
        name: name.to_owned(),
        rps: m(|s| s.rps),
        p50_ms: m(|s| s.p50_ms),
        p95_ms: m(|s| s.p95_ms),
        p99_ms: m(|s| s.p99_ms),
        max_ms: m(|s| s.max_ms),
        errors: samples.iter().map(|s| s.errors).sum(),
        redis_cmds_per_req: samples
            .iter()
            .all(|s| s.redis_commands.is_some())
            .then(|| m(|s| s.redis_cmds_per_req().unwrap_or(f64::NAN))),
        redis_commands: last
            .and_then(|s| s.redis_commands.as_ref())
            .map(|calls| {
                let requests = last.map_or(1, |s| s.requests.max(1)) as f64;
                calls
                    .iter()
                    .map(|(name, n)| format!("{name} {:.2}", *n as f64 / requests))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".to_owned()),
        served_share: last
            .map(|s| {
                s.served_share
                    .iter()
                    .map(|(replica, share)| format!("{replica} {share:.0}%"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        loadgen_cpu_us_per_req: m(|s| s.loadgen_cpu_us_per_req),
        replicas_cpu: role_cpu(samples, "replicas"),
        nginx_cpu: role_cpu(samples, "nginx"),
        redis_cpu: role_cpu(samples, "redis"),
    }
}

fn role_cpu(samples: &[Sample], role: &str) -> Option<f64> {
    samples
        .iter()
        .all(|s| s.cpu_us_per_req.contains_key(role))
        .then(|| median(samples.iter().map(|s| s.cpu_us_per_req[role])))
}

fn cell(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

/// Writes report.md, report.json and chart.png into `out`; returns the Markdown table.
pub(crate) fn write(out: &Path, settings: &Settings, samples: &[(&str, Vec<Sample>)]) -> String {
    let summaries: Vec<Summary> = samples
        .iter()
        .map(|(name, samples)| summarise(name, samples))
        .collect();
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );

    let mut table = String::new();
    writeln!(
        table,
        "| config | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | Redis cmds/req | Redis commands per request (last round) | share per replica (last round) | CPU µs/req: replicas | nginx | Redis | load generator |"
    )
    .unwrap();
    writeln!(
        table,
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"
    )
    .unwrap();
    for s in &summaries {
        writeln!(
            table,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            s.name,
            s.rps,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            s.redis_cmds_per_req
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
            s.redis_commands,
            s.served_share,
            cell(s.replicas_cpu),
            cell(s.nginx_cpu),
            cell(s.redis_cpu),
            s.loadgen_cpu_us_per_req
        )
        .unwrap();
    }
    // The ratio of the medians, and the ratio within each round: the machine's speed drifts
    // between rounds (here by up to 15%), and the two configurations of one round share it.
    let ratio = |a: &str, b: &str| {
        let rounds = |name: &str| samples.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
        let Some((a, b)) = rounds(a).zip(rounds(b)) else {
            return "not measured".to_owned();
        };
        let of_medians = median(a.iter().map(|s| s.rps)) / median(b.iter().map(|s| s.rps));
        let per_round: Vec<String> = a
            .iter()
            .zip(b)
            .map(|(a, b)| format!("{:.0}%", a.rps / b.rps * 100.0))
            .collect();
        format!(
            "{:.0}% of the requests/s (per round: {})",
            of_medians * 100.0,
            per_round.join(", ")
        )
    };
    let md = format!(
        "# elastic-cart benchmark\n\n\
         Machine: {machine}. Settings: {} virtual users, {} s warm-up, {} s measured, \
         {} rounds in alternating order (medians shown; errors summed), replicas with \
         {}, {} Redis connections and RUST_LOG {} each. Mix: 80% GET /cart, \
         15% POST /api/cart/items, 5% GET /api/cart.\n\n{table}\n\
         fleet-3 / sticky-1: {}. redis-1 / memory-1: {}.\n",
        settings.users,
        settings.warmup_secs,
        settings.duration_secs,
        settings.repeats,
        settings.worker_threads.map_or_else(
            || "tokio worker threads = cores / replicas (at least 1), as CPU limits would set \
                 them"
                .to_owned(),
            |n| format!("{n} tokio worker threads"),
        ),
        settings.redis_pool_size,
        settings.log.as_deref().unwrap_or("unset (the default)"),
        ratio("fleet-3", "sticky-1"),
        ratio("redis-1", "memory-1"),
    );
    std::fs::write(out.join("report.md"), &md).unwrap();

    let configs: Vec<_> = summaries
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "rps": s.rps, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms,
                "p99_ms": s.p99_ms, "max_ms": s.max_ms, "errors": s.errors,
                "redis_cmds_per_req": s.redis_cmds_per_req,
                "loadgen_cpu_us_per_req": s.loadgen_cpu_us_per_req,
                "replicas_cpu_us_per_req": s.replicas_cpu,
                "nginx_cpu_us_per_req": s.nginx_cpu,
                "redis_cpu_us_per_req": s.redis_cpu,
            })
        })
        .collect();
    let report = json!({
        "machine": machine,
        "settings": {
            "users": settings.users, "warmup_secs": settings.warmup_secs,
            "duration_secs": settings.duration_secs, "repeats": settings.repeats,
            "worker_threads": settings.worker_threads.map_or_else(
                || json!("cores / replicas"),
                |n| json!(n),
            ),
            "redis_pool_size": settings.redis_pool_size, "log": settings.log,
        },
        "configs": configs,
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    chart(&out.join("chart.png"), &summaries);
    md
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Two bar charts side by side: requests/s, and p99 latency on a log scale (the worst-case
/// `changes-shared` is a hundred times the others) with the 20 ms target drawn in.
fn chart(path: &Path, summaries: &[Summary]) {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("DejaVuSans.ttf: install the Debian package fonts-dejavu-core");
    let _ = plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    );
    let root = BitMapBackend::new(path, (1400, 440)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (left, right) = root.split_horizontally(700);
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
        "p99 latency, ms, log scale (lower is better; line: 20 ms target)",
        &names,
        &p99,
        ((floor..ceiling).log_scale(), floor),
        Some(P99_TARGET_MS),
        &RGBColor(180, 35, 24),
    );
    root.present().unwrap();
}

/// The p99 latency the issue sets as the target, drawn on the chart.
const P99_TARGET_MS: f64 = 20.0;

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
        .label_style(("sans-serif", 14))
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

//! Turns samples into the report: a Markdown table, JSON and a PNG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use testkit::load::Measured;

use crate::hops::Hops;
use crate::lost_update::LostUpdates;

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
    /// Whether to measure the cost curve (fleet-3 by users and by live sessions).
    pub curve: bool,
    /// Whether to run the lost-update experiment (two tabs per shopper, stock-3 and
    /// fleet-3), with `users` shoppers.
    pub lost_update: bool,
    /// Adds each of a shopper's two tabs sends in the lost-update experiment.
    pub adds_per_tab: u32,
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
            curve: true,
            lost_update: true,
            adds_per_tab: 50,
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
    /// nginx's request and upstream times (none without nginx).
    pub hops: Option<Hops>,
}

impl Sample {
    pub(crate) fn new(
        measured: &Measured,
        redis_commands: Option<BTreeMap<String, u64>>,
        cpu_us_per_req: BTreeMap<&'static str, f64>,
        hops: Option<Hops>,
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
            hops,
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
pub(crate) struct Summary {
    pub(crate) name: String,
    pub(crate) rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    pub(crate) p99_ms: f64,
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
    /// Medians of nginx's p99 request time and p99 upstream time.
    nginx_p99_ms: Option<f64>,
    upstream_p99_ms: Option<f64>,
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
        nginx_p99_ms: hop(samples, |h| h.nginx_p99_ms),
        upstream_p99_ms: hop(samples, |h| h.upstream_p99_ms),
    }
}

fn hop(samples: &[Sample], f: fn(&Hops) -> f64) -> Option<f64> {
    samples
        .iter()
        .all(|s| s.hops.is_some())
        .then(|| median(samples.iter().filter_map(|s| s.hops.as_ref().map(f))))
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

/// nginx's times: whole milliseconds as nginx writes them, one decimal for medians.
fn ms_cell(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

/// One point of the cost curve: fleet-3 with `users` users and `sessions` live sessions
/// besides theirs.
pub(crate) struct CurvePoint {
    pub users: usize,
    pub sessions: usize,
    pub sample: Sample,
    /// Redis memory per live session, where sessions were added.
    pub bytes_per_session: Option<f64>,
}

impl CurvePoint {
    /// The mean latency of a closed loop: users / requests per second.
    pub(crate) fn mean_ms(&self) -> f64 {
        self.users as f64 * 1000.0 / self.sample.rps
    }
}

/// The cost curve as a Markdown table.
fn curve_table(curve: &[CurvePoint]) -> String {
    if curve.is_empty() {
        return "Cost curve: not measured (--no-curve).\n".to_owned();
    }
    let mut table = String::from(
        "Cost curve of fleet-3, one run per point:\n\n\
         | users | live sessions added | req/s | mean ms | p99 ms | p99 / mean | nginx p99 ms | upstream p99 ms | errors | Redis bytes per session |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for point in curve {
        writeln!(
            table,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            point.users,
            point.sessions,
            point.sample.rps,
            point.mean_ms(),
            point.sample.p99_ms,
            point.sample.p99_ms / point.mean_ms(),
            point
                .sample
                .hops
                .map_or("-".to_owned(), |h| format!("{:.0}", h.nginx_p99_ms)),
            point
                .sample
                .hops
                .map_or("-".to_owned(), |h| format!("{:.0}", h.upstream_p99_ms)),
            point.sample.errors,
            point
                .bytes_per_session
                .map_or("-".to_owned(), |b| format!("{b:.0}"))
        )
        .unwrap();
    }
    table
}

/// The lost-update experiment as a Markdown table.
fn lost_update_table(lost: &[LostUpdates]) -> String {
    let Some(first) = lost.first() else {
        return "Lost updates: not measured (--no-lost-update).\n".to_owned();
    };
    let mut table = format!(
        "Lost updates: {} shoppers at once, each changing one cart from two tabs (its session \
         made first by one add, then {} adds of one unit from each tab, overlapping):\n\n\
         | config | units acknowledged | units in the carts | units lost | lost % | units in the carts unacknowledged | adds refused | shoppers failed | seconds |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        first.options.shoppers, first.options.adds_per_tab
    );
    for LostUpdates { name, tally, .. } in lost {
        writeln!(
            table,
            "| {name} | {} | {} | {} | {:.1}% | {} | {} | {} | {:.1} |",
            tally.acknowledged,
            tally.in_carts,
            tally.lost,
            tally.lost as f64 * 100.0 / tally.acknowledged.max(1) as f64,
            tally.unacknowledged_in_carts,
            tally.refused,
            tally.failed_shoppers,
            tally.elapsed.as_secs_f64()
        )
        .unwrap();
    }
    table
}

/// Writes report.md, report.json and chart.png into `out`; returns the Markdown table.
pub(crate) fn write(
    out: &Path,
    settings: &Settings,
    samples: &[(&str, Vec<Sample>)],
    curve: &[CurvePoint],
    lost: &[LostUpdates],
) -> String {
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
        "| config | req/s | p50 ms | p95 ms | p99 ms | max ms | nginx p99 ms | upstream p99 ms | errors | Redis cmds/req | Redis commands per request (last round) | share per replica (last round) | CPU µs/req: replicas | nginx | Redis | load generator |"
    )
    .unwrap();
    writeln!(
        table,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"
    )
    .unwrap();
    for s in &summaries {
        writeln!(
            table,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            s.name,
            s.rps,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.max_ms,
            ms_cell(s.nginx_p99_ms),
            ms_cell(s.upstream_p99_ms),
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
    let ratio_of = |a: &str, b: &str| -> Option<(f64, Vec<f64>)> {
        let rounds = |name: &str| samples.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
        let (a, b) = rounds(a).zip(rounds(b))?;
        let of_medians = median(a.iter().map(|s| s.rps)) / median(b.iter().map(|s| s.rps));
        let per_round = a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect();
        Some((of_medians, per_round))
    };
    let ratio = |a: &str, b: &str| match ratio_of(a, b) {
        None => "not measured".to_owned(),
        Some((of_medians, per_round)) => {
            let rounds: Vec<String> = per_round
                .iter()
                .map(|r| format!("{:.0}%", r * 100.0))
                .collect();
            format!(
                "{:.0}% of the requests/s (median of the rounds {:.0}%; per round: {})",
                of_medians * 100.0,
                median(per_round.iter().copied()) * 100.0,
                rounds.join(", ")
            )
        }
    };
    const RATIOS: [(&str, &str); 8] = [
        ("fleet-3", "bare-3"),
        ("fleet-3", "sticky-3"),
        ("fleet-3", "stock-3"),
        ("fleet-3", "sticky-1"),
        ("redis-1", "memory-1"),
        ("fleet-3-sentinel", "fleet-3"),
        ("fleet-3-sentinel-wait1", "fleet-3-sentinel"),
        ("fleet-3-cluster", "fleet-3"),
    ];
    let ratios_md: Vec<String> = RATIOS
        .iter()
        .map(|(a, b)| format!("{a} / {b}: {}.", ratio(a, b)))
        .collect();
    let ratios_json: serde_json::Map<String, serde_json::Value> = RATIOS
        .iter()
        .filter_map(|(a, b)| {
            let (of_medians, per_round) = ratio_of(a, b)?;
            Some((
                format!("{a} / {b}"),
                json!({
                    "of_medians": of_medians,
                    "median_of_rounds": median(per_round.iter().copied()),
                    "per_round": per_round,
                }),
            ))
        })
        .collect();
    let md = format!(
        "# elastic-cart benchmark\n\n\
         Machine: {machine}. Settings: {} virtual users, {} s warm-up, {} s measured, \
         {} rounds in alternating order (medians shown; errors summed), replicas with \
         {}, {} Redis connections and RUST_LOG {} each. Mix: 80% GET /cart, \
         15% POST /api/cart/items, 5% GET /api/cart.\n\n{table}\n{}\n\n{}\n{}",
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
        ratios_md.join(" "),
        curve_table(curve),
        lost_update_table(lost),
    );
    std::fs::write(out.join("report.md"), &md).unwrap();

    let configs: Vec<_> = summaries
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "rps": s.rps, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms,
                "p99_ms": s.p99_ms, "max_ms": s.max_ms, "errors": s.errors,
                "nginx_p99_ms": s.nginx_p99_ms, "upstream_p99_ms": s.upstream_p99_ms,
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
        "ratios": ratios_json,
        "curve": curve.iter().map(|p| json!({
            "users": p.users, "sessions": p.sessions, "rps": p.sample.rps,
            "mean_ms": p.mean_ms(), "p99_ms": p.sample.p99_ms, "errors": p.sample.errors,
            "nginx_p99_ms": p.sample.hops.map(|h| h.nginx_p99_ms),
            "upstream_p99_ms": p.sample.hops.map(|h| h.upstream_p99_ms),
            "redis_bytes_per_session": p.bytes_per_session,
        })).collect::<Vec<_>>(),
        "lost_update": lost.iter().map(|l| json!({
            "name": l.name, "shoppers": l.options.shoppers,
            "adds_per_tab": l.options.adds_per_tab,
            "units_acknowledged": l.tally.acknowledged, "units_in_carts": l.tally.in_carts,
            "units_lost": l.tally.lost,
            "units_in_carts_unacknowledged": l.tally.unacknowledged_in_carts,
            "adds_refused": l.tally.refused,
            "shoppers_failed": l.tally.failed_shoppers,
            "seconds": l.tally.elapsed.as_secs_f64(),
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    crate::chart::draw(&out.join("chart.png"), &summaries);
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

//! What sharing sessions costs, measured side by side in one run (`scripts/bench.sh`, or
//! `cargo bench --bench fleet -- [--users N] [--warmup S] [--duration S] [--repeats N]
//! [--worker-threads N] [--redis-pool-size N] [--log FILTER] [--only a,b]`).
//!
//! Nine configurations, with real servers on loopback, each run `--repeats` times in
//! alternating order (medians are reported):
//! 1. `memory-1`: one replica, in-memory sessions, no nginx;
//! 2. `redis-1`: one replica, Redis sessions, no nginx;
//! 3. `sticky-1`: nginx and one replica with in-memory sessions (what sticky sessions cost
//!    per server);
//! 4. `fleet-3`: nginx and three replicas with Redis sessions (the product);
//! 5. `changes-own` and `changes-shared`: the fleet under changes only (`PUT` of a cart
//!    line), each user in its own session, then all users in one session: the cost of
//!    serialised changes without and with contention;
//! 6. `fleet-3-sentinel`, `fleet-3-sentinel-wait1` and `fleet-3-cluster`: the product on
//!    a replicated store (a primary, two replicas, three sentinels; three primaries with a
//!    replica each), without and with `REDIS_WAIT_REPLICAS=1`: what failover costs.
//!
//! Replicas get the machine's cores divided among them as worker threads (`WORKER_THREADS`)
//! unless `--worker-threads` says otherwise. Besides latency and throughput, each run reports
//! the CPU time per request of the replicas, nginx, Redis and the load generator.
//!
//! Writes `target/bench/report.md`, `target/bench/report.json` and `target/bench/chart.png`.

mod chart;
#[path = "../common/font.rs"]
mod font;
mod report;
mod servers;

use std::collections::BTreeMap;
use std::time::Duration;

use report::{Sample, Settings};
use servers::ReplicaSettings;
use testkit::Replicated;
use testkit::load::{self, Mix};

/// One configuration of the comparison.
struct Setup {
    name: &'static str,
    replicas: usize,
    redis: bool,
    nginx: bool,
    mix: Mix,
    /// A replicated store instead of one redis-server.
    replicated: Option<Replicated>,
    /// `REDIS_WAIT_REPLICAS` of the replicas.
    wait_replicas: u32,
}

const SETUPS: [Setup; 9] = [
    Setup {
        name: "memory-1",
        replicas: 1,
        redis: false,
        nginx: false,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
    },
    Setup {
        name: "redis-1",
        replicas: 1,
        redis: true,
        nginx: false,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
    },
    Setup {
        name: "sticky-1",
        replicas: 1,
        redis: false,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
    },
    Setup {
        name: "fleet-3",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
    },
    // What a change costs in the fleet, without and with contention (see session_update).
    Setup {
        name: "changes-own",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::OwnSessionChanges,
        replicated: None,
        wait_replicas: 0,
    },
    Setup {
        name: "changes-shared",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::SharedSessionChanges,
        replicated: None,
        wait_replicas: 0,
    },
    // The product on a replicated store: what Sentinel, WAIT and a cluster cost.
    Setup {
        name: "fleet-3-sentinel",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: Some(Replicated::Sentinel),
        wait_replicas: 0,
    },
    Setup {
        name: "fleet-3-sentinel-wait1",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: Some(Replicated::Sentinel),
        wait_replicas: 1,
    },
    Setup {
        name: "fleet-3-cluster",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: Some(Replicated::Cluster),
        wait_replicas: 0,
    },
];

fn main() {
    let settings = parse_args();
    let replica = ReplicaSettings {
        worker_threads: settings.worker_threads,
        redis_pool_size: settings.redis_pool_size,
        log: settings.log.clone(),
    };
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..settings.repeats {
        let chosen = SETUPS
            .iter()
            .filter(|setup| settings.only.is_empty() || settings.only.contains(&setup.name));
        let order: Vec<&Setup> = if round % 2 == 0 {
            chosen.collect()
        } else {
            chosen.rev().collect()
        };
        for setup in order {
            let sample = measure(setup, &settings, &replica);
            eprintln!(
                "round {}/{} {:<9} {:>8.0} req/s  p99 {:>6.2} ms  errors {}",
                round + 1,
                settings.repeats,
                setup.name,
                sample.rps,
                sample.p99_ms,
                sample.errors
            );
            samples.entry(setup.name).or_default().push(sample);
        }
    }
    let ordered: Vec<(&str, Vec<Sample>)> = SETUPS
        .iter()
        .filter_map(|setup| Some((setup.name, samples.remove(setup.name)?)))
        .collect();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let table = report::write(&out, &settings, &ordered);
    println!("{table}");
    println!(
        "wrote {}/report.md, report.json and chart.png",
        out.display()
    );
}

fn measure(setup: &Setup, settings: &Settings, replica: &ReplicaSettings) -> Sample {
    let running = servers::start(
        setup.replicas,
        setup.redis,
        setup.nginx,
        setup.replicated,
        setup.wait_replicas,
        replica,
    );
    // Redis statistics and CPU times cover the measured window only: read when it opens
    // and when it closes.
    let redis = running.fleet.redis.as_ref().map(|redis| redis.admin());
    let cpu = running.cpu.clone();
    let (measured, [(cpu_before, before), (cpu_after, after)]) = load::run(
        &running.target,
        setup.mix,
        settings.users,
        Duration::from_secs(settings.warmup_secs),
        Duration::from_secs(settings.duration_secs),
        // CPU first: running redis-cli takes a few milliseconds.
        move || {
            (
                cpu.read(),
                redis.as_ref().map(|redis| redis.command_calls()),
            )
        },
    );
    let commands = before.zip(after).map(|(before, after)| {
        after
            .into_iter()
            .filter(|(name, _)| !matches!(name.as_str(), "info" | "ping"))
            .map(|(name, calls)| {
                let delta = calls - before.get(&name).copied().unwrap_or(0);
                (name, delta)
            })
            .filter(|(_, delta)| *delta > 0)
            .collect::<BTreeMap<_, _>>()
    });
    let cpu_us_per_req = cpu_after
        .into_iter()
        .map(|(role, after)| {
            let used = after.saturating_sub(cpu_before.get(role).copied().unwrap_or_default());
            (
                role,
                used.as_secs_f64() * 1e6 / measured.requests.max(1) as f64,
            )
        })
        .collect();
    Sample::new(&measured, commands, cpu_us_per_req)
}

fn parse_args() -> Settings {
    let mut settings = Settings::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--users" => settings.users = value("--users") as usize,
            "--warmup" => settings.warmup_secs = value("--warmup"),
            "--duration" => settings.duration_secs = value("--duration"),
            "--repeats" => settings.repeats = value("--repeats") as usize,
            "--worker-threads" => {
                settings.worker_threads = Some(value("--worker-threads") as usize)
            }
            "--redis-pool-size" => settings.redis_pool_size = value("--redis-pool-size") as usize,
            "--only" => {
                let names = args
                    .next()
                    .expect("--only needs names, e.g. sticky-1,fleet-3");
                settings.only = names
                    .split(',')
                    .map(|name| {
                        SETUPS
                            .iter()
                            .find(|setup| setup.name == name)
                            .unwrap_or_else(|| panic!("no configuration {name}"))
                            .name
                    })
                    .collect();
            }
            "--log" => settings.log = Some(args.next().expect("--log needs a filter, e.g. info")),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    settings
}

//! What sharing sessions costs, measured side by side in one run (`scripts/bench.sh`, or
//! `cargo bench --bench fleet -- [--users N] [--warmup S] [--duration S] [--repeats N]
//! [--worker-threads N] [--redis-pool-size N] [--log FILTER] [--only a,b] [--no-curve]
//! [--no-lost-update] [--adds-per-tab N]`).
//!
//! Twelve configurations, with real servers on loopback, each run `--repeats` times in
//! alternating order (medians are reported):
//! 1. `memory-1`: one replica, in-memory sessions, no nginx;
//! 2. `redis-1`: one replica, Redis sessions, no nginx;
//! 3. `sticky-1`: nginx and one replica with in-memory sessions (what sticky sessions cost
//!    per server);
//! 4. `fleet-3`: nginx and three replicas with Redis sessions (the product);
//!    `sticky-3`: nginx sticky by its route cookie over three replicas with in-memory
//!    sessions (the same shape without Redis); `bare-3`: the same shape as fleet-3 with the
//!    benchmark's minimal server (`bare.rs`) doing the product's Redis commands (the same
//!    shape without our stack); `stock-3`: the same cart on tower-sessions with the stock
//!    Redis store, tower-sessions-redis-store (`benches/stock`, what a Rust user would
//!    pick instead);
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
//! `BENCH_REPLICA_BINARY=<path>` runs another build of elastic-cart as the replicas (to
//! measure two builds alternately with the same benchmark binary).
//!
//! After the rounds and the cost curve comes the lost-update experiment (`lost_update.rs`):
//! `--users` shoppers, each changing one cart from two tabs at once (`--adds-per-tab`
//! adds each), against stock-3 and fleet-3; it reports the units acknowledged, the units
//! in the carts and the units lost per configuration.
//!
//! Writes `target/bench/report.md`, `target/bench/report.json` and `target/bench/chart.png`.

mod bare;
#[path = "../common/cart_page.rs"]
mod cart_page;
mod chart;
mod curve;
#[path = "../common/font.rs"]
mod font;
mod hops;
mod lost_update;
mod report;
mod servers;
mod stock;

use std::collections::BTreeMap;
use std::time::Duration;

use report::{Sample, Settings};
use servers::{ReplicaSettings, Server};
use testkit::load::{self, Mix};
use testkit::two_tabs::TwoTabsOptions;
use testkit::{Balance, Replicated};

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
    /// How nginx picks a replica.
    balance: Balance,
    /// Which server the replicas run.
    server: Server,
}

const SETUPS: [Setup; 12] = [
    Setup {
        name: "memory-1",
        replicas: 1,
        redis: false,
        nginx: false,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "redis-1",
        replicas: 1,
        redis: true,
        nginx: false,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "sticky-1",
        replicas: 1,
        redis: false,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "fleet-3",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    // The fleet's shape without Redis (sticky) and without our stack (bare).
    Setup {
        name: "sticky-3",
        replicas: 3,
        redis: false,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::CookieRoute,
        server: Server::Product,
    },
    Setup {
        name: "bare-3",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Bare,
    },
    Setup {
        name: "stock-3",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Stock,
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
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "changes-shared",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::SharedSessionChanges,
        replicated: None,
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
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
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "fleet-3-sentinel-wait1",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: Some(Replicated::Sentinel),
        wait_replicas: 1,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
    Setup {
        name: "fleet-3-cluster",
        replicas: 3,
        redis: true,
        nginx: true,
        mix: Mix::Shop,
        replicated: Some(Replicated::Cluster),
        wait_replicas: 0,
        balance: Balance::RoundRobin,
        server: Server::Product,
    },
];

fn main() {
    // Started as a replica of `bare-3`: serve, never return.
    if bare::serve_if_asked().is_some() {
        return;
    }
    let settings = parse_args();
    // stock-3's server is built before anything is measured (its build takes minutes).
    if settings.lost_update || settings.only.is_empty() || settings.only.contains(&"stock-3") {
        stock::binary();
    }
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
            let sample = measure_setup(setup, &settings, &replica);
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
    let curve = if settings.curve {
        cost_curve(&settings, &replica)
    } else {
        Vec::new()
    };
    let lost = if settings.lost_update {
        lost_update::run(
            TwoTabsOptions {
                shoppers: settings.users,
                adds_per_tab: settings.adds_per_tab,
            },
            &replica,
        )
    } else {
        Vec::new()
    };
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let table = report::write(&out, &settings, &ordered, &curve, &lost);
    println!("{table}");
    println!(
        "wrote {}/report.md, report.json and chart.png",
        out.display()
    );
}

/// Users of the cost curve's load points, and live sessions of its store points (at 64
/// users).
const CURVE_USERS: [usize; 4] = [16, 64, 256, 1024];
const CURVE_SESSIONS: [usize; 3] = [1_000, 100_000, 1_000_000];

/// `fleet-3` at each point of the cost curve, once each.
fn cost_curve(settings: &Settings, replica: &ReplicaSettings) -> Vec<report::CurvePoint> {
    let fleet = SETUPS.iter().find(|s| s.name == "fleet-3").unwrap();
    let points = CURVE_USERS
        .iter()
        .map(|users| (*users, 0))
        .chain(CURVE_SESSIONS.iter().map(|sessions| (64, *sessions)));
    points
        .map(|(users, sessions)| {
            let (sample, bytes_per_session) = measure(fleet, settings, replica, users, sessions);
            eprintln!(
                "curve: {users} users, {sessions} sessions: {:.0} req/s, p99 {:.2} ms, errors {}",
                sample.rps, sample.p99_ms, sample.errors
            );
            report::CurvePoint {
                users,
                sessions,
                sample,
                bytes_per_session,
            }
        })
        .collect()
}

/// The servers `setup` runs on.
fn shape(setup: &Setup) -> servers::Shape {
    servers::Shape {
        replicas: setup.replicas,
        redis: setup.redis,
        nginx: setup.nginx,
        replicated: setup.replicated,
        wait_replicas: setup.wait_replicas,
        balance: setup.balance,
        server: setup.server,
    }
}

fn measure_setup(setup: &Setup, settings: &Settings, replica: &ReplicaSettings) -> Sample {
    measure(setup, settings, replica, settings.users, 0).0
}

/// One run of `setup` with `users`, after filling its Redis with `sessions` live sessions
/// (whose Redis memory per session it returns too).
fn measure(
    setup: &Setup,
    settings: &Settings,
    replica: &ReplicaSettings,
    users: usize,
    sessions: usize,
) -> (Sample, Option<f64>) {
    let running = servers::start(&shape(setup), replica);
    let bytes_per_session = match (&running.fleet.redis, sessions) {
        (Some(redis), n) if n > 0 => Some(curve::prefill(&running.target, redis, n)),
        _ => None,
    };
    // Redis statistics and CPU times cover the measured window only: read when it opens
    // and when it closes.
    let redis = running.fleet.redis.as_ref().map(|redis| redis.admin());
    let cpu = running.cpu.clone();
    let (measured, [(cpu_before, before), (cpu_after, after)]) = load::run(
        &running.target,
        setup.mix,
        users,
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
    // nginx's view of the same window: its access log is flushed every second.
    let hops = running.fleet.nginx.as_ref().and_then(|nginx| {
        std::thread::sleep(Duration::from_millis(1200));
        hops::from_access_log(&nginx.access_log(), measured.requests as usize)
    });
    if measured.errors > 0
        && let Some(nginx) = &running.fleet.nginx
    {
        // What went wrong, as nginx saw it (the fleet and its logs go when this returns).
        let log = nginx.error_log();
        let last: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("no live upstreams"))
            .take(5)
            .collect();
        eprintln!(
            "{} errors; nginx's first complaints:\n{}",
            measured.errors,
            last.join("\n")
        );
    }
    (
        Sample::new(&measured, commands, cpu_us_per_req, hops),
        bytes_per_session,
    )
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
            "--no-curve" => settings.curve = false,
            "--no-lost-update" => settings.lost_update = false,
            "--adds-per-tab" => settings.adds_per_tab = value("--adds-per-tab") as u32,
            "--log" => settings.log = Some(args.next().expect("--log needs a filter, e.g. info")),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    settings
}

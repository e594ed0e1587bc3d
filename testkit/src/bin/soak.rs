//! The fault soak (see `testkit::soak`), run by `scripts/soak.sh`. Prints each fault as it
//! comes and a summary; writes the report as JSON; exits 0 only for a clean run.
//!
//! ```text
//! soak --binary target/release/elastic-cart [--minutes 10] [--seed 1] [--shoppers 12]
//!      [--replicas 3] [--store redis|sentinel|cluster] [--wait-replicas 0]
//!      [--faults kind,kind...] [--report target/soak/report.json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use testkit::Replicated;
use testkit::soak::{self, SoakOptions};

fn usage(why: &str) -> ! {
    eprintln!(
        "soak: {why}\nusage: soak --binary PATH [--minutes N] [--seed S] [--shoppers N] \
         [--replicas N] [--store redis|sentinel|cluster] [--wait-replicas N] \
         [--faults KIND,...] [--report PATH]"
    );
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("{name} takes a number, not {value:?}")))
}

fn main() -> ExitCode {
    let mut binary = None;
    let mut minutes = 10.0f64;
    let mut seed = 1u64;
    let mut shoppers = 12usize;
    let mut replicas = 3usize;
    let mut report_path = PathBuf::from("target/soak/report.json");
    let mut replicated = None;
    let mut wait_replicas = 0u32;
    let mut faults = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(name) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{name} needs a value")));
        match name.as_str() {
            "--binary" => binary = Some(PathBuf::from(value)),
            "--minutes" => minutes = number(&name, &value),
            "--seed" => seed = number(&name, &value),
            "--shoppers" => shoppers = number(&name, &value),
            "--replicas" => replicas = number(&name, &value),
            "--report" => report_path = PathBuf::from(value),
            "--store" => {
                replicated = match value.as_str() {
                    "redis" => None,
                    "sentinel" => Some(Replicated::Sentinel),
                    "cluster" => Some(Replicated::Cluster),
                    other => usage(&format!(
                        "--store takes redis, sentinel or cluster, not {other}"
                    )),
                }
            }
            "--wait-replicas" => wait_replicas = number(&name, &value),
            "--faults" => faults = value.split(',').map(str::to_owned).collect(),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
        usage("--minutes must be above 0 and at most a day");
    }
    if shoppers == 0 || replicas == 0 {
        usage("--shoppers and --replicas must be at least 1");
    }
    let applicable = soak::faults_for(replicated);
    let faults = faults
        .iter()
        .map(|kind| {
            applicable
                .iter()
                .copied()
                .find(|known| known == kind)
                .unwrap_or_else(|| usage(&format!("--faults: {kind} is not one of {applicable:?}")))
        })
        .collect();
    let options = SoakOptions {
        binary: binary.unwrap_or_else(|| usage("--binary is required")),
        duration: Duration::from_secs_f64(minutes * 60.0),
        seed,
        shoppers,
        replicas,
        replicated,
        wait_replicas,
        faults,
    };
    println!(
        "soak: {minutes} min, seed {seed}, {shoppers} shoppers, {replicas} replicas behind nginx, \
         store {:?}, REDIS_WAIT_REPLICAS={wait_replicas}",
        replicated
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(soak::run(options));
    let text = serde_json::to_string_pretty(&report).expect("a JSON report");
    if let Some(dir) = report_path.parent() {
        std::fs::create_dir_all(dir).expect("creating the report's folder");
    }
    std::fs::write(&report_path, &text).expect("writing the report");
    println!("{text}");
    println!("report: {}", report_path.display());
    if soak::report_ok(&report) {
        println!("soak passed: nothing lost, nothing applied twice");
        ExitCode::SUCCESS
    } else {
        println!("soak FAILED");
        ExitCode::FAILURE
    }
}

//! Runs the elasticity scenario against a running docker compose project (started by
//! `scripts/compose-e2e.sh`) or a deployed Swarm stack (`scripts/swarm-e2e.sh`). Prints
//! every check and "N passed, M failed"; exits 0 only if every check passed.
//!
//! ```text
//! fleet-scenario --shop-url http://127.0.0.1:8080 --project elastic-cart-e2e \
//!     --project-dir . [--compose-file FILE]... [--compose-up-arg ARG]... [--store-failover]
//! fleet-scenario --shop-url http://127.0.0.1:8080 --swarm-stack elastic-cart-swarm-e2e \
//!     --next-image IMAGE [--store-failover]
//! ```
//!
//! Compose: steps 1 to 6. Swarm: steps 1, 2 (Swarm replaces the killed replica), 5 and 8
//! (a rolling update to `--next-image`). `--store-failover`: only step 7, killing the
//! primary of the stack's Sentinel store (docker-compose.ha.yml, deploy/swarm/stack.ha.yml).

use std::path::PathBuf;
use std::process::ExitCode;

use testkit::compose::ComposeFleet;
use testkit::scenario::{self, Lifecycle, Report, Steps};
use testkit::swarm::SwarmFleet;

fn main() -> ExitCode {
    let mut shop_url = "http://127.0.0.1:8080".to_owned();
    let mut project = None;
    let mut project_dir = PathBuf::from(".");
    let mut files = Vec::new();
    let mut up_args = Vec::new();
    let mut stack = None;
    let mut next_image = None;
    let mut store_failover = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--store-failover" {
            store_failover = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match name.as_str() {
            "--shop-url" => shop_url = value(),
            "--project" => project = Some(value()),
            "--project-dir" => project_dir = PathBuf::from(value()),
            "--compose-file" => files.push(PathBuf::from(value())),
            "--compose-up-arg" => up_args.push(value()),
            "--swarm-stack" => stack = Some(value()),
            "--next-image" => next_image = Some(value()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let steps = |lifecycle| {
        if store_failover {
            Steps {
                replicas: None,
                store_restart: false,
                store_failover: true,
            }
        } else {
            Steps {
                replicas: Some(lifecycle),
                store_restart: lifecycle == Lifecycle::Manual,
                store_failover: false,
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report: Report = match (project, stack) {
        (Some(project), None) => {
            let mut fleet = ComposeFleet::new(&shop_url, &project, project_dir);
            fleet.files = files;
            fleet.up_args = up_args;
            runtime.block_on(scenario::run(&mut fleet, steps(Lifecycle::Manual)))
        }
        (None, Some(stack)) => {
            let mut fleet = SwarmFleet::new(&shop_url, &stack);
            if next_image.is_none() && !store_failover {
                usage("--swarm-stack needs --next-image (the rolling update's image)");
            }
            fleet.next_image = next_image;
            runtime.block_on(scenario::run(&mut fleet, steps(Lifecycle::Orchestrated)))
        }
        _ => usage("give either --project (compose) or --swarm-stack (Swarm)"),
    };
    println!("{} passed, {} failed", report.passed, report.failed);
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("fleet-scenario: {problem}");
    eprintln!(
        "usage: fleet-scenario --project NAME [--shop-url URL] [--project-dir DIR] \
         [--compose-file FILE]... [--compose-up-arg ARG]... [--store-failover]\n       \
         fleet-scenario --swarm-stack NAME --next-image IMAGE [--shop-url URL] \
         [--store-failover]"
    );
    std::process::exit(2)
}

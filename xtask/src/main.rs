//! `cargo xtask`: the project's tasks, in Rust so that they need nothing but cargo.
//!
//! ```text
//! cargo xtask test               # every tier: fast, integration, e2e
//! cargo xtask test fast          # unit tests and in-process tests (nothing to install)
//! cargo xtask test integration   # real redis-server, nginx and the release binary
//! cargo xtask test e2e           # headless Chromium, the compose and Swarm scenarios, and
//!                                 # the Kubernetes manifests validated offline (and checkov)
//! cargo xtask test fast integration
//! ```
//!
//! Why an xtask: it is the convention Rust projects use for tasks beyond `cargo test`
//! (rust-analyzer, cargo itself), it runs wherever cargo runs, and it keeps the tiers, the
//! packages they need and the commands they run in one readable file. Before running a
//! tier it checks, once, that the servers the tier needs are installed; as root with apt it
//! installs the missing Debian packages, otherwise it stops at once naming them.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// A tier: what it needs installed and what it runs.
struct Tier {
    name: &'static str,
    what: &'static str,
    /// (binary or file, Debian package)
    needs: &'static [(&'static str, &'static str)],
}

const TIERS: [Tier; 3] = [
    Tier {
        name: "fast",
        what: "unit tests and in-process tests with the memory store",
        needs: &[],
    },
    Tier {
        name: "integration",
        what: "real redis-server (one, Sentinel, Cluster), the same tests on valkey-server, \
               nginx with the shipped nginx.conf, the release binary; schemathesis against \
               the OpenAPI document; a session flood from many addresses against a small \
               store; the store and the \
               replicas on test hosts (network namespaces) that go silent, are partitioned \
               and fail over by a moved name; a one-minute fault soak on one Redis and one \
               on Sentinel",
        needs: &[
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            ("valkey-server", "valkey-server"),
            ("valkey-cli", "valkey-tools"),
            ("nginx", "nginx"),
            ("ip", "iproute2"),
            ("iptables", "iptables"),
            ("/usr/bin/python3", "python3"),
            ("/usr/share/doc/python3-venv", "python3-venv"),
        ],
    },
    Tier {
        name: "e2e",
        what: "the Kubernetes manifests validated offline and checked by checkov; headless \
               Chromium through the loopback fleet; every page kind through the Nu HTML checker and axe-core; \
               the Prometheus rules with promtool; the scenario on docker compose, scraped \
               by Prometheus, and on a single-node Docker Swarm (deploy/swarm/stack.yml, \
               then its Sentinel variant)",
        needs: &[
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            ("nginx", "nginx"),
            ("chromium", "chromium"),
            ("chromedriver", "chromium-driver"),
            (
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "fonts-dejavu-core",
            ),
            ("curl", "curl"),
            ("docker", "docker.io"),
            ("/usr/bin/python3", "python3"),
            ("/usr/share/doc/python3-venv", "python3-venv"),
            ("java", "default-jre-headless"),
            ("promtool", "prometheus"),
            ("jq", "jq"),
        ],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask test [fast|integration|e2e|all]...");
            ExitCode::from(2)
        }
    }
}

fn test(names: &[String]) -> ExitCode {
    let chosen: Vec<&Tier> = if names.is_empty() || names.iter().any(|n| n == "all") {
        TIERS.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for name in names {
            match TIERS.iter().find(|tier| tier.name == name) {
                Some(tier) => chosen.push(tier),
                None => {
                    eprintln!("xtask: no tier `{name}` (fast, integration, e2e, all)");
                    return ExitCode::from(2);
                }
            }
        }
        chosen
    };
    let mut times = Vec::new();
    for tier in &chosen {
        println!("\n=== tier {}: {}", tier.name, tier.what);
        let started = Instant::now();
        // Each tier's packages are checked (and installed) just before it runs, so a
        // machine without Docker still runs the tiers before e2e.
        let ok = match install(tier).and_then(|()| tools_venv(tier)) {
            Ok(()) => run_tier(tier.name),
            Err(message) => {
                eprintln!("xtask: {message}");
                false
            }
        };
        times.push((tier.name, started.elapsed(), ok));
        if !ok {
            break;
        }
    }
    println!("\n=== wall time per tier");
    for (name, took, ok) in &times {
        let verdict = if *ok { "ok" } else { "FAILED" };
        println!("  {name:<12} {:>6.0} s  {verdict}", took.as_secs_f64());
    }
    if times.iter().all(|(_, _, ok)| *ok) && times.len() == chosen.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Makes target/tools-venv, the venv with the pinned Python tools of
/// scripts/python-tools.txt (schemathesis, the Nu HTML checker, axe-core), for the tiers
/// that run them; again only when that list changed since it was made.
fn tools_venv(tier: &Tier) -> Result<(), String> {
    if tier.name == "fast" {
        return Ok(());
    }
    let root = repository();
    let list = root.join("scripts/python-tools.txt");
    let venv = root.join("target/tools-venv");
    let stamp = venv.join("python-tools.txt");
    let wanted = std::fs::read(&list).map_err(|err| format!("reading {list:?}: {err}"))?;
    if std::fs::read(&stamp).is_ok_and(|made| made == wanted) {
        return Ok(());
    }
    println!("xtask: making {} from {}", venv.display(), list.display());
    let made = |python: &str| {
        run(Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv))
            && run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&list))
    };
    // Debian's python3 first: a python3 earlier on PATH may be a user's own build.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    if !made(python) {
        return Err(format!(
            "could not make {} (pip install -r {}): install the Debian packages \
             python3-venv and python3-pip",
            venv.display(),
            list.display()
        ));
    }
    std::fs::write(&stamp, wanted).map_err(|err| format!("writing {stamp:?}: {err}"))
}

/// Runs one tier's commands; true if they all passed.
fn run_tier(name: &str) -> bool {
    let cargo_test = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO"));
        command.args(["test", "--release", "--locked"]).args(args);
        run(&mut command)
    };
    // The same, with `TESTKIT_STORE=valkey`: the test kit starts valkey-server.
    let on_valkey = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO"));
        command.args(["test", "--release", "--locked"]).args(args);
        command.env("TESTKIT_STORE", "valkey");
        run(&mut command)
    };
    match name {
        "fast" => cargo_test(&["--workspace", "--lib", "--bins", "--test", "api"]),
        "integration" => {
            cargo_test(&["--test", "api", "--", "--ignored"])
                && valkey_pass(&on_valkey)
                && run(Command::new("bash").args(["scripts/soak.sh", "--minutes", "1"]))
                && run(Command::new("bash").args([
                    "scripts/soak.sh",
                    "--minutes",
                    "1",
                    "--store",
                    "sentinel",
                    "--wait-replicas",
                    "1",
                    "--report",
                    "target/soak/sentinel.json",
                ]))
        }
        "e2e" => {
            run(Command::new("bash").arg("scripts/k8s-validate.sh"))
                && cargo_test(&["--test", "e2e", "--", "--ignored"])
                && run(Command::new("bash").arg("scripts/prometheus-rules.sh"))
                && run(Command::new("bash").arg("scripts/compose-e2e.sh"))
                && run(Command::new("bash").arg("scripts/swarm-e2e.sh"))
        }
        _ => unreachable!("tiers are checked before they run"),
    }
}

/// Runs `command` in the repository, showing it; true on success.
fn run(command: &mut Command) -> bool {
    command.current_dir(repository());
    println!("$ {command:?}");
    match command.status() {
        Ok(status) => status.success(),
        Err(err) => {
            eprintln!("xtask: cannot run {command:?}: {err}");
            false
        }
    }
}

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
}

/// The integration tests that start a store, again on Valkey (`on_valkey` runs cargo
/// with `TESTKIT_STORE=valkey`, which makes the test kit start `valkey-server` and use
/// `valkey-cli`). Not the host scenarios (`hosts::`): they test what the network does to
/// the replicas' connections, the same whichever server answers, and take minutes. Nor the
/// contract tests (`contract::`): schemathesis checks the HTTP API against its document,
/// which no store changes. Nor the flood (`flood::`): it measures nginx's limit and the
/// replicas' memory budget, and Valkey's `INFO memory` has the same two fields.
fn valkey_pass(on_valkey: &dyn Fn(&[&str]) -> bool) -> bool {
    let version = Command::new("valkey-server")
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("\n=== the integration tests again on Valkey: {version}");
    on_valkey(&[
        "--test",
        "api",
        "--",
        "--ignored",
        "--skip",
        "hosts::",
        "--skip",
        "contract::",
        "--skip",
        "flood::",
    ])
}

/// Makes sure what a tier needs is installed: checks once, installs the missing Debian
/// packages as root with apt, or says which ones to install.
fn install(tier: &Tier) -> Result<(), String> {
    let mut missing: Vec<&str> = tier
        .needs
        .iter()
        .filter(|(binary, _)| !installed(binary))
        .map(|(_, package)| *package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    // docker.io is never installed here: a machine with its own Docker Engine keeps it.
    if !root || !installed("apt-get") || missing.contains(&"docker.io") {
        return Err(format!(
            "missing Debian packages: {list}\n  install them (apt-get install {list}), \
             or run a tier that does not need them (cargo xtask test fast)"
        ));
    }
    println!("xtask: installing {list}");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    if !apt(&["update", "-qq"]) {
        return Err("apt-get update failed".to_owned());
    }
    // Packages the release lacks (Valkey, on bookworm) come from its backports.
    let (current, backported): (Vec<&str>, Vec<&str>) =
        missing.iter().partition(|package| in_release(package));
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&current);
    if !current.is_empty() && !apt(&install) {
        return Err(format!("apt-get could not install {}", current.join(" ")));
    }
    if backported.is_empty() {
        return Ok(());
    }
    let backports = add_backports()?;
    let mut install = vec![
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "-t",
        &backports,
    ];
    install.extend(&backported);
    if apt(&["update", "-qq"]) && apt(&install) {
        Ok(())
    } else {
        Err(format!(
            "apt-get could not install {} (not in this release, nor in {backports})",
            backported.join(" ")
        ))
    }
}

/// Whether this Debian release itself (its main suite, updates or security) has `package`.
/// Not just "apt has a candidate": a machine may also list a later suite (the stand-in
/// images add unstable, pinned low), which must not be where a server comes from.
fn in_release(package: &str) -> bool {
    let Some(codename) = codename() else {
        return true;
    };
    let suites = [
        format!(" {codename}/"),
        format!(" {codename}-updates/"),
        format!(" {codename}-security/"),
    ];
    Command::new("apt-cache")
        .args(["madison", package])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| suites.iter().any(|suite| line.contains(suite.as_str())))
        })
}

/// This Debian release's code name (`bookworm`), from /etc/os-release.
fn codename() -> Option<String> {
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
}

/// Adds this Debian release's backports to apt's sources (once) and returns its suite
/// name, e.g. `bookworm-backports`. Only packages asked for with `-t` come from it.
fn add_backports() -> Result<String, String> {
    let codename = codename().ok_or("no VERSION_CODENAME in /etc/os-release: not Debian?")?;
    let suite = format!("{codename}-backports");
    let source = "/etc/apt/sources.list.d/elastic-cart-backports.list";
    if !Path::new(source).exists() {
        println!("xtask: adding {suite} to apt's sources ({source})");
        std::fs::write(
            source,
            format!("deb http://deb.debian.org/debian {suite} main\n"),
        )
        .map_err(|err| format!("writing {source}: {err}"))?;
    }
    Ok(suite)
}

/// Whether `name` (a command on PATH or in the sbin folders, or an absolute path) exists.
fn installed(name: &str) -> bool {
    if name.starts_with('/') {
        return Path::new(name).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| dir.join(name).is_file())
}

//! Running `docker` commands for the container fleets ([`crate::compose`],
//! [`crate::swarm`]): each command is shown as it runs, and its output is shown only when
//! it fails, which ends the scenario with what docker said.

use std::process::Command;

/// Runs `command` (shown as `shown`) and returns its standard output; panics with its
/// status and output if it fails.
pub fn run_shown(shown: &str, command: &mut Command) -> String {
    println!("      $ {shown}");
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("running {shown}: {err}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        panic!(
            "{shown} exited {}: {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text
}

/// `docker ARGS...`, shown.
pub fn docker(args: &[&str]) -> String {
    run_shown(
        &format!("docker {}", args.join(" ")),
        Command::new("docker").args(args),
    )
}

/// `docker ARGS...` without showing it (for polls): its output, or `None` if it failed.
pub fn docker_quiet(args: &[&str]) -> Option<String> {
    let output = Command::new("docker").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// SIGKILLs a container and returns once it has exited (`docker kill` returns once the
/// signal is sent).
pub fn kill(container: &str) {
    docker(&["kill", container]);
    docker(&["wait", container]);
}

/// Stops a container (SIGTERM, then SIGKILL after its grace period) and says how it ended:
/// `Ok` on exit status 0, else the status.
pub fn stop(container: &str) -> Result<(), String> {
    docker(&["stop", container]);
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", container]);
    match code.trim() {
        "0" => Ok(()),
        other => Err(format!("exited with status {other}")),
    }
}

/// Of `candidates` (container id, hostname), the store container the sentinels name as
/// the primary: `sentinel` is a command that runs `redis-cli` in a sentinel's container
/// (`docker exec` or `docker compose exec`), to which the sentinel arguments are added. A
/// sentinel names a primary by hostname or by address.
pub fn store_primary(sentinel: &[&str], candidates: &[(String, String)]) -> String {
    let mut ask = sentinel.to_vec();
    ask.extend([
        "-p",
        "26379",
        "SENTINEL",
        "get-master-addr-by-name",
        "carts",
    ]);
    let answer = docker(&ask);
    let host = answer.lines().next().map(str::trim).unwrap_or_default();
    assert!(
        !host.is_empty(),
        "the sentinels name no primary: {answer:?}"
    );
    let format = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}";
    candidates
        .iter()
        .find(|(id, hostname)| {
            hostname == host
                || docker(&["inspect", "-f", format, id])
                    .split_whitespace()
                    .any(|address| address == host)
        })
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no store container answers to {host}"))
}

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

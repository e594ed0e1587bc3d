//! The shipped nginx.conf, rewritten for a fleet on loopback, and the command that runs it.
//! Shared by the fleet tests and the benchmark (each includes this file), so both run the
//! balancer settings users run.

use std::path::Path;
use std::process::Command;

/// Writes the shipped nginx.conf, rewritten for loopback, into `dir` and returns the
/// command that runs nginx on it in the foreground, with `dir` as its prefix (pid file,
/// temporary files) and its error log on stderr. The access log goes to stdout.
pub fn nginx_command(
    binary: &Path,
    dir: &Path,
    listen_port: u16,
    replica_ports: &[u16],
) -> Command {
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx.conf"))
        .expect("reading the shipped nginx.conf");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        loopback_nginx_conf(&shipped, listen_port, replica_ports),
    )
    .unwrap();
    let mut command = Command::new(binary);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr", "-g"])
        .arg(format!(
            "daemon off; pid {};",
            dir.join("nginx.pid").display()
        ));
    command
}

/// Rewrites only what cannot work outside Docker: the upstream `server app:3000 resolve`
/// line becomes one line per replica port (same parameters, minus `resolve`), Docker's DNS
/// `resolver` goes, and nginx listens on `listen_port` of 127.0.0.1.
pub fn loopback_nginx_conf(shipped: &str, listen_port: u16, replica_ports: &[u16]) -> String {
    let mut out = String::new();
    let mut rewrote_server = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("resolver ") {
            out.push_str(&format!("{indent}# (resolver: Docker DNS only)\n"));
        } else if trimmed.starts_with("server app:3000") {
            let params: Vec<&str> = trimmed
                .trim_end_matches(';')
                .split_whitespace()
                .skip(2)
                .filter(|param| *param != "resolve")
                .collect();
            for port in replica_ports {
                out.push_str(&format!(
                    "{indent}server 127.0.0.1:{port} {};\n",
                    params.join(" ")
                ));
            }
            rewrote_server = true;
        } else if trimmed == "listen 8080;" {
            out.push_str(&format!("{indent}listen 127.0.0.1:{listen_port};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(rewrote_server, "nginx.conf has no `server app:3000` line");
    out
}

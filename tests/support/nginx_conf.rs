//! The shipped nginx.conf, rewritten for a fleet on loopback. Shared by the fleet tests and
//! the benchmark (each includes this file), so both run the balancer settings users run.

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

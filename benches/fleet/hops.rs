//! Where a request's time goes, as nginx's access log tells it: `request_time` runs from
//! nginx reading the request's first bytes to its answer's last, `upstream_time` from
//! nginx connecting to (or reusing a connection to) a replica to the replica's answer's
//! end. The load generator's latency minus nginx's is time before nginx reads the request
//! (accept and socket queues, the load generator itself); nginx's minus the upstream's is
//! nginx's own; the upstream's is the replica's, its runtime's queue and its store's.

/// 99th percentiles of the two times, in milliseconds (nginx writes them to the
/// millisecond).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hops {
    pub nginx_p99_ms: f64,
    pub upstream_p99_ms: f64,
}

/// The times of the last `last` lines of the access log (the shipped `upstream` format):
/// the requests of the measured window, give or take the few in flight at its edges.
/// `None` without lines.
pub(crate) fn from_access_log(log: &str, last: usize) -> Option<Hops> {
    let lines: Vec<&str> = log.lines().collect();
    let window = &lines[lines.len().saturating_sub(last)..];
    let mut nginx: Vec<f64> = Vec::with_capacity(window.len());
    let mut upstream: Vec<f64> = Vec::with_capacity(window.len());
    for line in window {
        if let Some(seconds) = field(line, "request_time=").and_then(|v| v.parse().ok()) {
            nginx.push(seconds);
        }
        // `0.001, 0.002` when nginx tried two replicas; `-` when it reached none.
        if let Some(value) = line.split_once("upstream_time=").map(|(_, v)| v.trim()) {
            let tries: Vec<f64> = value.split(", ").filter_map(|v| v.parse().ok()).collect();
            if !tries.is_empty() {
                upstream.push(tries.iter().sum());
            }
        }
    }
    Some(Hops {
        nginx_p99_ms: quantile(&mut nginx, 0.99)?,
        upstream_p99_ms: quantile(&mut upstream, 0.99)?,
    })
}

/// The value of `name` (up to the next space) in `line`.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(name)?;
    rest.split(' ').next()
}

/// The `q` quantile in milliseconds, nearest rank.
fn quantile(seconds: &mut [f64], q: f64) -> Option<f64> {
    if seconds.is_empty() {
        return None;
    }
    seconds.sort_by(f64::total_cmp);
    let rank = ((q * seconds.len() as f64).ceil() as usize).clamp(1, seconds.len());
    Some(seconds[rank - 1] * 1000.0)
}

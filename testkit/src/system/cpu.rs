//! CPU time of processes, from `/proc`: what the benchmark reports per request for the
//! replicas, nginx (master and workers), Redis and the load generator.

use std::collections::BTreeMap;
use std::time::Duration;

/// Reads the CPU time the servers of a configuration used, by role.
#[derive(Debug, Clone, Default)]
pub struct CpuProbe {
    /// (role, process id) of each process counted.
    pub processes: Vec<(&'static str, u32)>,
    /// nginx's master; its workers are found as its children when read.
    pub nginx_master: Option<u32>,
}

impl CpuProbe {
    /// CPU time (user + system) so far per role: `replicas`, `redis`, `nginx`.
    pub fn read(&self) -> BTreeMap<&'static str, Duration> {
        let mut by_role: BTreeMap<&'static str, Duration> = BTreeMap::new();
        for (role, pid) in &self.processes {
            *by_role.entry(role).or_default() += process_cpu(*pid);
        }
        if let Some(master) = self.nginx_master {
            let workers = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    stat_fields(*pid).get(1).and_then(|ppid| ppid.parse().ok()) == Some(master)
                });
            let nginx = by_role.entry("nginx").or_default();
            *nginx += process_cpu(master);
            for worker in workers {
                *nginx += process_cpu(worker);
            }
        }
        by_role
    }
}

/// The fields of /proc/{pid}/stat after the command name (which may contain spaces), so
/// that index 0 is the state, 1 the parent's pid, 11 and 12 user and system time.
fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            Some(rest.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// CPU time (user + system) that process `pid` used so far.
pub fn process_cpu(pid: u32) -> Duration {
    let ticks: u64 = stat_fields(pid)
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

//! The agent's own resource use, from /proc/self: peak and current RSS, CPU time.
//! Reported with `--stats` so that the agent's footprint is measured by the agent.

use serde::Serialize;

/// Resource use of this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessUsage {
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (VmRSS), KiB.
    pub rss_kib: u64,
    /// CPU time in user mode, milliseconds.
    pub cpu_user_ms: u64,
    /// CPU time in kernel mode, milliseconds.
    pub cpu_system_ms: u64,
}

impl ProcessUsage {
    /// Reads /proc/self/status and /proc/self/stat; fields it cannot read stay 0.
    pub fn current() -> ProcessUsage {
        let mut u = ProcessUsage::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let kib = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmHWM:") {
                    u.peak_rss_kib = kib(line);
                } else if line.starts_with("VmRSS:") {
                    u.rss_kib = kib(line);
                }
            }
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            let ticks = rustix::param::clock_ticks_per_second().max(1);
            if let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
                let f: Vec<&str> = after.split(' ').collect();
                // Fields 14 and 15 (utime, stime) are 11 and 12 after the comm.
                let ms = |i: usize| {
                    f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1000 / ticks
                };
                u.cpu_user_ms = ms(11);
                u.cpu_system_ms = ms(12);
            }
        }
        u
    }
}

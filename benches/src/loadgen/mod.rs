//! `viaduct-loadgen`'s library: acting as a focus (`focus`), or signalling through
//! Janus's API (`janus`, with `sdp`), what peers send (`traffic`), running them and
//! measuring (`engine`, with `xdp` for AF_XDP media), the report (`report`), plots (`plot`), and the capacity search
//! (`capacity`).

pub mod capacity;
pub mod engine;
pub mod focus;
pub mod janus;
pub mod plot;
pub mod report;
pub mod rx_time;
pub mod sdp;
mod start;
pub mod traffic;
pub mod xdp;

/// User + system CPU seconds of process `pid` (or `self`), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// The machine's (steal, total) CPU time in ticks so far, from the first line of
/// `/proc/stat`: on a VM, steal is time a vCPU was runnable but the hypervisor ran
/// something else, which shows up here as latency no code of ours caused.
pub fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = f.iter().take(8).sum();
    Some((*f.get(7)?, total))
}

/// The share of CPU time stolen between two [`steal_ticks`] readings.
pub fn steal_ratio(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    (total > 0).then(|| after.0.saturating_sub(before.0) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn steal_is_read_and_bounded() {
        let a = super::steal_ticks().expect("/proc/stat");
        assert!(a.0 <= a.1);
        let r = super::steal_ratio((10, 100), (15, 200)).unwrap();
        assert!((r - 0.05).abs() < 1e-9);
        assert_eq!(super::steal_ratio((0, 100), (0, 100)), None);
    }
}

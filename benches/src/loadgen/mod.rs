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

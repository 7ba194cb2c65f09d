//! Turning a run's raw results into the report: every (sender, receiver) stream that
//! should exist, how much of it arrived, latency percentiles, jitter, CPU, as a human
//! table and as JSON.

use std::collections::HashMap;

use serde::Serialize;

use super::engine::{RunResult, Scenario};
use super::traffic;

/// Latency percentiles, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct SecondReport {
    /// Seconds since the start.
    pub t: usize,
    /// Packets received per second.
    pub received_pps: u64,
    /// p99 latency in that second, ms.
    pub p99_ms: f64,
}

/// A trial of the capacity search.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// Participants.
    pub participants: usize,
    /// Conferences.
    pub conferences: usize,
    /// Loss.
    pub loss_ratio: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// Forwarded packets per second received by the peers.
    pub forwarded_pps: f64,
    /// VM steal time during the trial.
    pub steal_ratio: Option<f64>,
    /// Met the bounds.
    pub pass: bool,
}

/// The capacity search's answer.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// Most participants that met the bounds.
    pub participants: usize,
    /// Per bridge core.
    pub participants_per_core: f64,
    /// Forwarded pps at that load.
    pub forwarded_pps: f64,
    /// p99 at that load, ms.
    pub p99_ms: f64,
    /// Loss bound used.
    pub loss_bound: f64,
    /// p99 bound used, ms.
    pub p99_bound_ms: f64,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// The whole report (`--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Conferences.
    pub conferences: usize,
    /// Participants in all.
    pub participants: usize,
    /// Participants per conference.
    pub participants_per_conference: usize,
    /// Video bitrate per participant, kbps.
    pub video_kbps: u32,
    /// Simulcast on.
    pub simulcast: bool,
    /// (sender, receiver, stream) triples that should carry packets.
    pub streams_expected: u64,
    /// Of those, how many carried at least one.
    pub streams_received: u64,
    /// Packets the peers sent.
    pub packets_sent: u64,
    /// Packets the peers should have received (sent × other members).
    pub packets_expected: u64,
    /// Packets the peers received (RTP from the bridge).
    pub packets_received: u64,
    /// Sends the kernel refused at the load generator.
    pub send_failures: u64,
    /// Received per second of sending.
    pub forwarded_pps: f64,
    /// 1 − received / expected.
    pub loss_ratio: f64,
    /// Packets decrypted and checked.
    pub packets_checked: u64,
    /// Checked packets that failed authentication.
    pub auth_failures: u64,
    /// Checked packets whose payload did not match.
    pub payload_mismatches: u64,
    /// Checked packets refused as replays (duplicates).
    pub replays: u64,
    /// SRTP profiles DTLS negotiated with the SFU.
    pub srtp_profiles: Vec<String>,
    /// How the load generator's media went: `kernel-gro` (the peers' sockets, taking
    /// segmented runs whole), `kernel` (split by the kernel at delivery) or `xdp`.
    pub loadgen_io: String,
    /// One-way latency through the bridge.
    pub latency_ms: Latency,
    /// Mean interarrival jitter over streams, ms.
    pub jitter_ms: f64,
    /// CPU seconds the bridge used during the run (when its pid is known).
    pub bridge_cpu_seconds: Option<f64>,
    /// CPU seconds the load generator used during the run.
    pub loadgen_cpu_seconds: Option<f64>,
    /// Load generator CPU nanoseconds per received packet.
    pub loadgen_ns_per_received_packet: Option<f64>,
    /// Share of the machine's CPU time the hypervisor stole during the run (a VM's
    /// latency tail follows it).
    pub machine_steal_ratio: Option<f64>,
    /// Sending time.
    pub duration_s: f64,
    /// Per second.
    pub series: Vec<SecondReport>,
    /// With `--find-capacity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Builds the report of one run.
pub fn build(
    r: &RunResult,
    s: &Scenario,
    bridge_cpu: Option<f64>,
    loadgen_cpu: Option<f64>,
) -> Report {
    // Streams each participant sends.
    let mut members: HashMap<usize, Vec<(u32, Vec<u32>)>> = HashMap::new();
    for (index, conf, plan) in &r.plans {
        let mut ssrcs = vec![traffic::ssrc(*index, traffic::AUDIO)];
        ssrcs.extend(
            plan.video_layers
                .iter()
                .map(|&(st, _)| traffic::ssrc(*index, st)),
        );
        members.entry(*conf).or_default().push((*index, ssrcs));
    }
    let (mut streams_expected, mut streams_received) = (0u64, 0u64);
    let (mut expected, mut received) = (0u64, 0u64);
    let (mut jitter_sum, mut jitter_n) = (0.0, 0u64);
    let (mut checked, mut auth, mut mismatch, mut replays) = (0, 0, 0, 0);
    for rx in &r.receivers {
        checked += rx.checked;
        auth += rx.auth_failures;
        mismatch += rx.payload_mismatches;
        replays += rx.replays;
        for (sender, ssrcs) in members.get(&rx.conference).into_iter().flatten() {
            if *sender == rx.index {
                continue;
            }
            for ssrc in ssrcs {
                streams_expected += 1;
                let sent = r.sent.get(ssrc).copied().unwrap_or(0);
                expected += sent;
                if let Some(st) = rx.streams.get(ssrc) {
                    if st.received > 0 {
                        streams_received += 1;
                    }
                    received += st.received.min(sent);
                    jitter_sum += st.jitter_ns;
                    jitter_n += 1;
                }
            }
        }
    }
    let duration_s = r.duration.as_secs_f64();
    let l = &r.latency;
    let q = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            ms(l.value_at_quantile(p))
        }
    };
    let total_received: u64 = r
        .receivers
        .iter()
        .flat_map(|x| x.streams.values())
        .map(|s| s.received)
        .sum();
    Report {
        conferences: s.conferences,
        participants: s.conferences * s.participants,
        participants_per_conference: s.participants,
        video_kbps: s.video_kbps,
        simulcast: s.simulcast,
        streams_expected,
        streams_received,
        packets_sent: r.sent.values().sum(),
        packets_expected: expected,
        packets_received: total_received,
        send_failures: r.send_failures,
        forwarded_pps: total_received as f64 / duration_s.max(1e-9),
        loss_ratio: if expected == 0 {
            0.0
        } else {
            1.0 - received as f64 / expected as f64
        },
        packets_checked: checked,
        auth_failures: auth,
        payload_mismatches: mismatch,
        replays,
        srtp_profiles: r.profiles.clone(),
        loadgen_io: match (&s.xdp, s.gro) {
            (Some(_), _) => "xdp",
            (None, true) => "kernel-gro",
            (None, false) => "kernel",
        }
        .to_owned(),
        latency_ms: Latency {
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: if l.is_empty() { 0.0 } else { ms(l.max()) },
        },
        jitter_ms: if jitter_n == 0 {
            0.0
        } else {
            jitter_sum / jitter_n as f64 / 1e6
        },
        bridge_cpu_seconds: bridge_cpu,
        loadgen_cpu_seconds: loadgen_cpu,
        loadgen_ns_per_received_packet: loadgen_cpu
            .filter(|_| total_received > 0)
            .map(|c| c * 1e9 / total_received as f64),
        machine_steal_ratio: None,
        duration_s,
        series: r
            .seconds
            .iter()
            .enumerate()
            .map(|(t, sec)| SecondReport {
                t,
                received_pps: sec.received,
                p99_ms: if sec.latency.is_empty() {
                    0.0
                } else {
                    ms(sec.latency.value_at_quantile(0.99))
                },
            })
            .collect(),
        capacity: None,
    }
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<28} {v}\n"));
    out.push_str("viaduct-loadgen report\n");
    row(
        &mut out,
        "conferences × participants",
        format!(
            "{} × {} ({} in all)",
            r.conferences, r.participants_per_conference, r.participants
        ),
    );
    row(
        &mut out,
        "video",
        format!(
            "{} kbps{}",
            r.video_kbps,
            if r.simulcast { ", simulcast ×3" } else { "" }
        ),
    );
    row(&mut out, "duration", format!("{:.1} s", r.duration_s));
    row(
        &mut out,
        "streams received / expected",
        format!("{} / {}", r.streams_received, r.streams_expected),
    );
    row(&mut out, "packets sent", r.packets_sent.to_string());
    row(
        &mut out,
        "packets received / expected",
        format!("{} / {}", r.packets_received, r.packets_expected),
    );
    row(&mut out, "forwarded pps", format!("{:.0}", r.forwarded_pps));
    row(&mut out, "loss", format!("{:.4}%", r.loss_ratio * 100.0));
    row(
        &mut out,
        "latency p50 / p99 / p99.9",
        format!(
            "{:.3} / {:.3} / {:.3} ms",
            r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999
        ),
    );
    row(&mut out, "jitter (mean)", format!("{:.3} ms", r.jitter_ms));
    row(&mut out, "SRTP profiles", r.srtp_profiles.join(", "));
    row(&mut out, "load generator I/O", r.loadgen_io.clone());
    row(
        &mut out,
        "checked / auth failures",
        format!("{} / {}", r.packets_checked, r.auth_failures),
    );
    row(
        &mut out,
        "payload mismatches",
        r.payload_mismatches.to_string(),
    );
    if let Some(c) = r.bridge_cpu_seconds {
        row(
            &mut out,
            "bridge CPU",
            format!(
                "{c:.2} s ({:.0}% of one core)",
                100.0 * c / r.duration_s.max(1e-9)
            ),
        );
    }
    if let Some(c) = r.loadgen_cpu_seconds {
        row(
            &mut out,
            "load generator CPU",
            format!(
                "{c:.2} s, {:.0} ns per received packet",
                r.loadgen_ns_per_received_packet.unwrap_or(0.0)
            ),
        );
    }
    if let Some(st) = r.machine_steal_ratio {
        row(
            &mut out,
            "VM steal time",
            format!("{:.1}% of the machine's CPU time", 100.0 * st),
        );
    }
    if let Some(cap) = &r.capacity {
        out.push_str("capacity search (loss < bound, p99 < bound):\n");
        for t in &cap.trials {
            out.push_str(&format!(
                "  {:>5} participants  loss {:.4}%  p99 {:.3} ms  {:.0} pps  steal {:.1}%  {}\n",
                t.participants,
                t.loss_ratio * 100.0,
                t.p99_ms,
                t.forwarded_pps,
                100.0 * t.steal_ratio.unwrap_or(0.0),
                if t.pass { "pass" } else { "FAIL" }
            ));
        }
        row(
            &mut out,
            "capacity",
            format!(
                "{} participants ({:.1} per bridge core)",
                cap.participants, cap.participants_per_core
            ),
        );
    }
    out
}

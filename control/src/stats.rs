//! Sampling the bridge's counters and presenting them: rates and stress computed once
//! per period, `GET /colibri/stats` with Jitsi Videobridge's keys and units (kbps in
//! JSON), and `GET /metrics` for Prometheus.
//!
//! Stress: each worker's load is its packet rate (received + sent) over the configured
//! capacity of one worker (`worker-capacity-pps`); `stress_level` is the bridge's total
//! packet rate over the capacity of all its workers (the bridge places each new
//! conference on its least-loaded worker, so the mean is what a focus can still use).
//! At Jicofo's threshold of 0.8 the bridge is carrying 80% of what the workers were
//! measured to forward.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use viaduct_bridge::command::protocol::{Counters, Reply, RequestBody, StatsSnapshot};

use crate::app::{AppState, Phase};
use crate::metrics::{Sample, CONTENT_TYPE};

/// The result of one sampling period.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    /// What was computed.
    pub sample: Sample,
    /// When.
    pub at: Option<Instant>,
}

/// Rates from two snapshots `dt` apart. A counter that went backwards (the bridge
/// restarted) counts from zero.
pub fn compute(
    prev: Option<&StatsSnapshot>,
    now: &StatsSnapshot,
    dt: Duration,
    capacity_pps: f64,
) -> Sample {
    let secs = dt.as_secs_f64().max(1e-3);
    let delta = |new: u64, old: Option<u64>| match old {
        Some(o) if new >= o => (new - o) as f64,
        _ => new as f64,
    };
    let t = &now.totals;
    let p = prev.map(|p| &p.totals);
    let rate = |f: fn(&Counters) -> u64| delta(f(t), p.map(f)) / secs;
    let bytes_in = rate(|c| c.bytes_in);
    // Loss on the way in: what the senders' sequence numbers say was sent, less what
    // arrived (and authenticated), over the period.
    let expected = delta(t.rtp_expected, p.map(|c| c.rtp_expected));
    let arrived = delta(t.rtp_in, p.map(|c| c.rtp_in));
    let incoming_loss = if expected > 0.0 {
        ((expected - arrived) / expected).clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Loss on the way out, as the receivers report it (fraction lost, /256, per block).
    let blocks = delta(t.report_blocks, p.map(|c| c.report_blocks));
    let outgoing_loss = if blocks > 0.0 {
        (delta(t.report_fraction_lost, p.map(|c| c.report_fraction_lost)) / 256.0 / blocks)
            .clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Round trip: the mean of the period's measurements.
    let rtt_samples = delta(t.rtt_samples, p.map(|c| c.rtt_samples));
    let rtt_seconds = if rtt_samples > 0.0 {
        delta(t.rtt_micros, p.map(|c| c.rtt_micros)) / rtt_samples / 1e6
    } else {
        0.0
    };
    let bytes_out = rate(|c| c.bytes_out);
    let worker_stress: Vec<f64> = now
        .workers
        .iter()
        .map(|w| {
            let old = prev.and_then(|p| p.workers.iter().find(|x| x.worker == w.worker));
            let pps = (delta(w.counters.packets_in, old.map(|o| o.counters.packets_in))
                + delta(w.counters.packets_out, old.map(|o| o.counters.packets_out)))
                / secs;
            pps / capacity_pps
        })
        .collect();
    let stress = if worker_stress.is_empty() {
        0.0
    } else {
        worker_stress.iter().sum::<f64>() / worker_stress.len() as f64
    };
    // Per-endpoint activity over the period.
    let before: HashMap<(&str, &str), &Counters> = prev
        .map(|p| {
            p.endpoint_stats
                .iter()
                .map(|e| ((e.conference.as_str(), e.endpoint.as_str()), &e.counters))
                .collect()
        })
        .unwrap_or_default();
    let (mut audio, mut video, mut inactive) = (0u64, 0u64, 0u64);
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for e in &now.endpoint_stats {
        *sizes.entry(e.conference.as_str()).or_default() += 1;
        let old = before.get(&(e.conference.as_str(), e.endpoint.as_str()));
        let grew = |f: fn(&Counters) -> u64| match old {
            Some(o) => f(&e.counters) > f(o),
            None => f(&e.counters) > 0,
        };
        audio += u64::from(grew(|c| c.audio_in));
        video += u64::from(grew(|c| c.video_in));
        inactive += u64::from(!grew(|c| c.rtp_in));
    }
    Sample {
        snapshot: now.clone(),
        incoming_bits_per_second: bytes_in * 8.0,
        outgoing_bits_per_second: bytes_out * 8.0,
        incoming_packets_per_second: rate(|c| c.packets_in),
        outgoing_packets_per_second: rate(|c| c.packets_out),
        stress,
        worker_stress,
        endpoints_sending_audio: audio,
        endpoints_sending_video: video,
        inactive_endpoints: inactive,
        largest_conference: sizes.values().copied().max().unwrap_or(0),
        incoming_loss,
        outgoing_loss,
        rtt_seconds,
    }
}

/// Samples the bridge every period; drives the shutdown state machine.
pub async fn run_sampler(state: AppState) {
    let mut tick = tokio::time::interval(state.config.stats_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: Option<(StatsSnapshot, Instant)> = None;
    loop {
        tick.tick().await;
        let snapshot = match state.link.request(RequestBody::Stats).await {
            Ok(Reply::Stats(s)) => Some(*s),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "stats sample skipped");
                None
            }
        };
        if let Some(snap) = snapshot {
            let now = Instant::now();
            let dt = prev
                .as_ref()
                .map(|(_, t)| now - *t)
                .unwrap_or(state.config.stats_interval);
            let mut sample = compute(
                prev.as_ref().map(|(s, _)| s),
                &snap,
                dt,
                state.config.worker_capacity_pps,
            );
            if sample.rtt_seconds == 0.0 && snap.endpoints > 0 {
                // No report this period named a forwarded sender report (receivers
                // report about once a second): the last round trip known still holds.
                sample.rtt_seconds = state
                    .inner()
                    .last
                    .as_ref()
                    .map_or(0.0, |l| l.sample.rtt_seconds);
            }
            state.metrics.observe(&sample);
            state.inner().last = Some(Sampled {
                sample,
                at: Some(now),
            });
            prev = Some((snap, now));
        }
        crate::ops::check_shutdown(&state);
        let (healthy, drain, phase) = {
            let inner = state.inner();
            (state.link.is_up(), inner.drain, inner.phase)
        };
        state.metrics.set_state(
            healthy,
            drain,
            phase != Phase::Running,
            phase == Phase::ShuttingDown,
        );
    }
}

/// `current_timestamp` as JVB writes it: UTC `yyyy-MM-dd HH:mm:ss.SSS`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `GET /colibri/stats`.
pub async fn colibri_stats(State(state): State<AppState>) -> Json<Value> {
    Json(stats_json(&state))
}

/// The `/colibri/stats` object.
pub fn stats_json(state: &AppState) -> Value {
    let inner = state.inner();
    let s = inner
        .last
        .as_ref()
        .map(|l| l.sample.clone())
        .unwrap_or_default();
    let snap = &s.snapshot;
    let t = &snap.totals;
    let endpoints = snap.endpoints;
    let workers: Vec<Value> = snap
        .workers
        .iter()
        .map(|w| {
            json!({
                "worker": w.worker,
                "port": w.port,
                "conferences": w.conferences,
                "endpoints": w.endpoints,
                "stress": s.worker_stress.get(w.worker).copied().unwrap_or(0.0),
                "packets_received": w.counters.packets_in,
                "packets_sent": w.counters.packets_out,
            })
        })
        .collect();
    let d = serde_json::to_value(t.drops).unwrap_or(Value::Null);
    json!({
        "conferences": snap.conferences,
        "endpoints": endpoints,
        "participants": endpoints,
        "local_endpoints": endpoints,
        "local_active_endpoints": endpoints as u64 - s.inactive_endpoints.min(endpoints as u64),
        "largest_conference": s.largest_conference,
        "endpoints_sending_audio": s.endpoints_sending_audio,
        "endpoints_sending_video": s.endpoints_sending_video,
        "inactive_endpoints": s.inactive_endpoints,
        "bit_rate_download": s.incoming_bits_per_second / 1000.0,
        "bit_rate_upload": s.outgoing_bits_per_second / 1000.0,
        "packet_rate_download": s.incoming_packets_per_second,
        "packet_rate_upload": s.outgoing_packets_per_second,
        // Incoming loss from the senders' sequence numbers, outgoing from the receivers'
        // reception reports; the round trip (ms) from the reports that name a sender
        // report the bridge forwarded.
        "rtt_aggregate": s.rtt_seconds * 1000.0,
        "incoming_loss": s.incoming_loss,
        "outgoing_loss": s.outgoing_loss,
        "overall_loss": s.incoming_loss.max(s.outgoing_loss),
        "stress_level": s.stress,
        "average_participant_stress": state.config.average_participant_stress,
        "total_conferences_created": inner.totals.conferences_created,
        "total_conferences_completed": inner.totals.conferences_completed,
        "total_conference_seconds": inner.totals.conference_seconds.round() as u64,
        "total_participants": inner.totals.participants,
        "total_bytes_received": t.bytes_in,
        "total_bytes_sent": t.bytes_out,
        "total_packets_received": t.packets_in,
        "total_packets_sent": t.packets_out,
        "total_ice_succeeded": inner.totals.ice_succeeded,
        "total_ice_failed": inner.totals.ice_failed,
        "endpoints_ice_failed": inner.totals.ice_failed,
        "dtls_failed_endpoints": inner.totals.dtls_failed,
        "graceful_shutdown": inner.phase != Phase::Running,
        "shutting_down": inner.phase == Phase::ShuttingDown,
        "drain": inner.drain,
        "healthy": state.link.is_up(),
        "version": env!("CARGO_PKG_VERSION"),
        "region": state.config.region,
        "current_timestamp": timestamp(SystemTime::now()),
        "viaduct": {
            "io_backend": snap.io_backend,
            "bridge_link_up": state.link.is_up(),
            "worker_capacity_pps": state.config.worker_capacity_pps,
            "workers": workers,
            "drops": d,
        },
    })
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaduct_bridge::command::protocol::{EndpointStats, WorkerStats};

    #[test]
    fn timestamps_like_jvb() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_321_234_567);
        assert_eq!(timestamp(t), "2026-11-22 04:20:34.567");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000");
    }

    fn snap(pin: u64, pout: u64, bin: u64, audio: u64) -> StatsSnapshot {
        let counters = Counters {
            packets_in: pin,
            packets_out: pout,
            bytes_in: bin,
            rtp_in: audio,
            audio_in: audio,
            ..Default::default()
        };
        StatsSnapshot {
            endpoints: 2,
            totals: counters,
            workers: vec![WorkerStats {
                worker: 0,
                counters,
                ..Default::default()
            }],
            endpoint_stats: vec![
                EndpointStats {
                    conference: "c".into(),
                    endpoint: "a".into(),
                    counters,
                    ..Default::default()
                },
                EndpointStats {
                    conference: "c".into(),
                    endpoint: "b".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn rates_stress_and_activity() {
        let a = snap(1000, 9000, 100_000, 10);
        let b = snap(2000, 18_000, 200_000, 20);
        let s = compute(Some(&a), &b, Duration::from_secs(1), 100_000.0);
        assert_eq!(s.incoming_packets_per_second, 1000.0);
        assert_eq!(s.outgoing_packets_per_second, 9000.0);
        assert_eq!(s.incoming_bits_per_second, 800_000.0);
        assert!((s.stress - 0.1).abs() < 1e-9);
        assert_eq!(s.endpoints_sending_audio, 1);
        assert_eq!(s.inactive_endpoints, 1);
        assert_eq!(s.largest_conference, 2);
        // A bridge restart (counters went down) counts from zero.
        let c = snap(500, 500, 1000, 1);
        let s = compute(Some(&b), &c, Duration::from_secs(1), 100_000.0);
        assert_eq!(s.incoming_packets_per_second, 500.0);
    }

    #[test]
    fn incoming_loss_from_expected_and_arrived() {
        let mut a = snap(0, 0, 0, 100);
        a.totals.rtp_expected = 100;
        let mut b = snap(0, 0, 0, 190);
        // 100 more expected, 90 more arrived: 10% lost over the period.
        b.totals.rtp_expected = 200;
        let s = compute(Some(&a), &b, Duration::from_secs(1), 1.0);
        assert!((s.incoming_loss - 0.1).abs() < 1e-9, "{}", s.incoming_loss);
        // Nothing expected: no loss; more arrived than expected (reordering across
        // the period boundary): clamped to 0.
        assert_eq!(
            compute(Some(&b), &b, Duration::from_secs(1), 1.0).incoming_loss,
            0.0
        );
        let mut c = snap(0, 0, 0, 300);
        c.totals.rtp_expected = 250;
        assert_eq!(
            compute(Some(&b), &c, Duration::from_secs(1), 1.0).incoming_loss,
            0.0
        );
    }
}

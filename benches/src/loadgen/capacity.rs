//! The capacity search: the largest number of participants (whole conferences) that
//! holds loss and p99 latency under their bounds for the trial's duration, found by
//! doubling and then bisecting. A trial that fails on latency alone (no loss) is run
//! once more before it counts: on a shared VM one scheduling hiccup can push a p99
//! past its bound at any load, and a single spike should not end the search.

use anyhow::Result;

use super::report::{Capacity, Report, Trial};

/// Bounds and limits of the search.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Largest loss ratio that passes.
    pub loss: f64,
    /// Largest p99 latency that passes, ms.
    pub p99_ms: f64,
    /// Most conferences ever tried.
    pub max_conferences: usize,
    /// Most trials.
    pub max_trials: usize,
    /// Bridge cores, for the per-core figure.
    pub bridge_cores: usize,
}

/// Whether a trial's report meets the bounds (and nothing failed to authenticate).
pub fn passes(r: &Report, b: &Bounds) -> bool {
    r.loss_ratio < b.loss
        && r.latency_ms.p99 < b.p99_ms
        && r.auth_failures == 0
        && r.payload_mismatches == 0
        && r.streams_received == r.streams_expected
}

/// Runs `trial(conferences)` as the search needs; returns the capacity and the report
/// of the largest passing trial (or the last one if none passed).
pub fn search(
    start: usize,
    participants_per_conference: usize,
    b: Bounds,
    mut trial: impl FnMut(usize) -> Result<Report>,
) -> Result<(Capacity, Report)> {
    let (mut lo, mut hi): (usize, Option<usize>) = (0, None);
    let mut n = start.clamp(1, b.max_conferences.max(1));
    let mut trials = Vec::new();
    let mut best: Option<Report> = None;
    let mut last: Option<Report> = None;
    while trials.len() < b.max_trials {
        let mut r = trial(n)?;
        let mut pass = passes(&r, &b);
        if !pass && r.loss_ratio < b.loss && trials.len() + 1 < b.max_trials {
            trials.push(trial_of(&r, n, participants_per_conference, pass));
            r = trial(n)?;
            pass = passes(&r, &b);
        }
        trials.push(trial_of(&r, n, participants_per_conference, pass));
        if pass {
            lo = n;
            best = Some(r.clone());
        } else {
            hi = Some(n);
        }
        last = Some(r);
        let next = match hi {
            None if n >= b.max_conferences => break,
            None => (n * 2).min(b.max_conferences),
            Some(h) if h <= lo + 1 => break,
            Some(h) => (lo + h) / 2,
        };
        if next == n || next == 0 {
            break;
        }
        n = next;
    }
    let chosen = best
        .or(last)
        .ok_or_else(|| anyhow::anyhow!("no trial ran"))?;
    let participants = lo * participants_per_conference;
    let capacity = Capacity {
        participants,
        participants_per_core: participants as f64 / b.bridge_cores.max(1) as f64,
        forwarded_pps: if lo > 0 { chosen.forwarded_pps } else { 0.0 },
        p99_ms: if lo > 0 { chosen.latency_ms.p99 } else { 0.0 },
        loss_bound: b.loss,
        p99_bound_ms: b.p99_ms,
        trials,
    };
    Ok((capacity, chosen))
}

/// The record of one trial of `conferences` conferences.
fn trial_of(r: &Report, conferences: usize, per_conference: usize, pass: bool) -> Trial {
    Trial {
        participants: conferences * per_conference,
        conferences,
        loss_ratio: r.loss_ratio,
        p99_ms: r.latency_ms.p99,
        forwarded_pps: r.forwarded_pps,
        steal_ratio: r.machine_steal_ratio,
        pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(loss: f64, p99: f64) -> Report {
        Report {
            loss_ratio: loss,
            latency_ms: super::super::report::Latency {
                p99,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            loss: 0.001,
            p99_ms: 5.0,
            max_conferences: 64,
            max_trials: 20,
            bridge_cores: 1,
        }
    }

    #[test]
    fn doubles_then_bisects_to_the_largest_passing_load() {
        // Up to 11 conferences pass; 12 and more lose packets.
        let (cap, _) = search(1, 10, bounds(), |n| {
            Ok(if n <= 11 {
                report(0.0, 1.0)
            } else {
                report(0.05, 1.0)
            })
        })
        .unwrap();
        assert_eq!(cap.participants, 110);
        assert!(cap.trials.iter().all(|t| t.pass == (t.conferences <= 11)));
    }

    #[test]
    fn a_latency_spike_is_retried_once_but_loss_is_not() {
        // 4 conferences hit one latency spike, then pass; 8 lose packets (no retry).
        let mut runs = std::collections::HashMap::<usize, usize>::new();
        let (cap, _) = search(1, 10, bounds(), |n| {
            let k = runs.entry(n).or_default();
            *k += 1;
            Ok(match n {
                4 if *k == 1 => report(0.0, 40.0),
                n if n >= 6 => report(0.02, 1.0),
                _ => report(0.0, 1.0),
            })
        })
        .unwrap();
        assert_eq!(cap.participants, 50);
        assert_eq!(runs[&4], 2, "the spike was retried");
        assert_eq!(runs[&8], 1, "a lossy trial is not retried");
        // A load that fails on latency twice fails.
        let (cap, _) = search(1, 10, bounds(), |n| {
            Ok(if n >= 2 {
                report(0.0, 40.0)
            } else {
                report(0.0, 1.0)
            })
        })
        .unwrap();
        assert_eq!(cap.participants, 10);
    }
}

//! Round-trip time between the bridge and one endpoint, from the RTCP the bridge already
//! relays (RFC 3550 §6.4.1): when it forwards a sender report to the endpoint it notes
//! the report's NTP timestamp (middle 32 bits) and the time; when the endpoint's
//! reception report names that timestamp as its LSR, the round trip is the time since
//! the forward less the endpoint's DLSR. That is the bridge ↔ endpoint leg only, whoever
//! sent the report. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

/// Sender reports remembered per endpoint: a 10-person conference forwards each
/// endpoint the reports of 9 senders' 2 streams, about one each per second.
const REMEMBERED: usize = 32;

/// Longest round trip believed; anything longer is a stale or forged LSR.
const MAX_RTT: Duration = Duration::from_secs(10);

/// The middle 32 bits of a 64-bit NTP timestamp: what a report block's LSR holds.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// What one endpoint's round trip is known to be.
#[derive(Clone, Debug, Default)]
pub struct Rtt {
    /// (reported SSRC, NTP middle bits, when forwarded); a ring.
    forwarded: [Option<(u32, u32, Instant)>; REMEMBERED],
    next: usize,
}

impl Rtt {
    /// The bridge forwarded `ssrc`'s sender report with NTP timestamp `ntp` to this
    /// endpoint at `now`.
    pub fn on_sender_report_forwarded(&mut self, ssrc: u32, ntp: u64, now: Instant) {
        let lsr = ntp_middle(ntp);
        if lsr == 0 {
            return;
        }
        self.forwarded[self.next] = Some((ssrc, lsr, now));
        self.next = (self.next + 1) % REMEMBERED;
    }

    /// The endpoint reported on `ssrc` with `lsr` and `dlsr` (1/65536 s) at `now`.
    /// Returns the round trip when `lsr` names a report forwarded to it and the result
    /// is plausible (not negative, under 10 s).
    pub fn on_report_block(
        &mut self,
        ssrc: u32,
        lsr: u32,
        dlsr: u32,
        now: Instant,
    ) -> Option<Duration> {
        if lsr == 0 {
            return None;
        }
        let &(_, _, forwarded) = self
            .forwarded
            .iter()
            .flatten()
            .find(|&&(s, l, _)| s == ssrc && l == lsr)?;
        let held = Duration::from_secs(u64::from(dlsr) >> 16)
            + Duration::from_nanos(((u64::from(dlsr) & 0xffff) * 1_000_000_000) >> 16);
        let rtt = now.checked_duration_since(forwarded)?.checked_sub(held)?;
        (rtt <= MAX_RTT).then_some(rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NTP: u64 = 0xe6a1_2345_6789_abcd;

    #[test]
    fn a_report_naming_a_forwarded_sr_gives_the_round_trip_less_the_hold() {
        let t0 = Instant::now();
        let mut rtt = Rtt::default();
        rtt.on_sender_report_forwarded(7, NTP, t0);
        // Held 250 ms (16384/65536 s) at the endpoint, back 290 ms after the forward.
        let got = rtt.on_report_block(7, ntp_middle(NTP), 16_384, t0 + Duration::from_millis(290));
        assert_eq!(got, Some(Duration::from_millis(40)));
    }

    #[test]
    fn unknown_zero_negative_and_stale_reports_give_nothing() {
        let t0 = Instant::now();
        let mut rtt = Rtt::default();
        rtt.on_sender_report_forwarded(7, NTP, t0);
        let later = t0 + Duration::from_millis(100);
        let lsr = ntp_middle(NTP);
        // Another SSRC's report, an LSR never forwarded, no SR yet (LSR 0).
        assert_eq!(rtt.on_report_block(8, lsr, 0, later), None);
        assert_eq!(rtt.on_report_block(7, lsr ^ 1, 0, later), None);
        assert_eq!(rtt.on_report_block(7, 0, 0, later), None);
        // A hold longer than the time since the forward (a forged DLSR).
        assert_eq!(rtt.on_report_block(7, lsr, 65_536, later), None);
        // Longer than MAX_RTT.
        assert_eq!(
            rtt.on_report_block(7, lsr, 0, t0 + Duration::from_secs(11)),
            None
        );
    }

    #[test]
    fn the_oldest_forward_is_forgotten_first() {
        let t0 = Instant::now();
        let mut rtt = Rtt::default();
        for i in 0..=REMEMBERED as u64 {
            rtt.on_sender_report_forwarded(1, NTP + (i << 16), t0);
        }
        let later = t0 + Duration::from_millis(5);
        assert_eq!(rtt.on_report_block(1, ntp_middle(NTP), 0, later), None);
        let newest = ntp_middle(NTP + ((REMEMBERED as u64) << 16));
        assert_eq!(
            rtt.on_report_block(1, newest, 0, later),
            Some(Duration::from_millis(5))
        );
    }
}

//! SRTP/SRTCP packet-index bookkeeping: the RFC 3711 §3.3.1 / Appendix A index (ROC)
//! estimation and the §3.3.2 sliding replay window (128 packets, one `u128`).
//! Pure arithmetic; no crypto, no allocation, no notion of SSRCs.

/// Width of the replay window in packets (RFC 3711 §3.3.2 requires at least 64).
pub const WINDOW: u64 = 128;

/// Result of estimating a packet's 48-bit index from its 16-bit sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimate {
    /// The estimated index `ROC << 16 | SEQ`.
    Index(u64),
    /// The estimate would need ROC = -1: the packet predates the first one seen.
    BeforeStart,
    /// The estimate would need ROC = 2^32: the key has been used up (RFC 3711 §9.2).
    Exhausted,
}

/// Estimates the packet index of `seq` given `highest`, the highest index seen so far on
/// the stream (`s_l` and `ROC` of RFC 3711 Appendix A: `ROC = highest >> 16`,
/// `s_l = highest & 0xffff`). The index chosen is the one within ±2^15 of `highest`.
pub fn estimate_index(highest: u64, seq: u16) -> Estimate {
    let roc = (highest >> 16) as i64;
    let s_l = (highest & 0xffff) as i64;
    let seq_i = i64::from(seq);
    // RFC 3711 Appendix A, verbatim.
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    if v < 0 {
        Estimate::BeforeStart
    } else if v > i64::from(u32::MAX) {
        Estimate::Exhausted
    } else {
        Estimate::Index(((v as u64) << 16) | u64::from(seq))
    }
}

/// Sliding replay window (RFC 3711 §3.3.2) over 64-bit indices: remembers the highest
/// accepted index and which of the [`WINDOW`] indices at or below it were accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted index; meaningful only when `bits != 0`.
    top: u64,
    /// Bit `i` set = index `top - i` accepted. Bit 0 is set once anything was accepted.
    bits: u128,
}

impl ReplayWindow {
    /// Highest accepted index (0 while empty).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Whether `index` may be accepted: newer than the top, or inside the window and
    /// not yet seen. Does not change the window (call `accept` after authentication).
    pub fn check(&self, index: u64) -> bool {
        if self.bits == 0 || index > self.top {
            return true;
        }
        let delta = self.top - index;
        delta < WINDOW && self.bits & (1u128 << delta) == 0
    }

    /// Records `index` as received (after it authenticated). Idempotent.
    pub fn accept(&mut self, index: u64) {
        if self.bits == 0 {
            self.top = index;
            self.bits = 1;
        } else if index > self.top {
            let shift = index - self.top;
            self.bits = if shift >= WINDOW {
                1
            } else {
                (self.bits << shift) | 1
            };
            self.top = index;
        } else {
            let delta = self.top - index;
            if delta < WINDOW {
                self.bits |= 1u128 << delta;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(roc: u64, seq: u16) -> Estimate {
        Estimate::Index((roc << 16) | u64::from(seq))
    }

    #[test]
    fn estimate_table() {
        // (highest ROC, highest seq, incoming seq, expected)
        let cases: &[(u64, u16, u16, Estimate)] = &[
            (0, 0, 0, idx(0, 0)),
            (0, 100, 101, idx(0, 101)),
            (0, 100, 50, idx(0, 50)),
            (0, 65530, 65535, idx(0, 65535)),
            // forward wrap: 65535 -> 0 bumps ROC
            (0, 65535, 0, idx(1, 0)),
            (0, 65530, 10, idx(1, 10)),
            (7, 65000, 300, idx(8, 300)),
            // late packet from before the wrap: ROC - 1
            (1, 3, 65533, idx(0, 65533)),
            (5, 10, 65000, idx(4, 65000)),
            // before the first packet of the stream
            (0, 5, 65534, Estimate::BeforeStart),
            // exact half-way boundaries (Appendix A uses strict comparisons)
            (3, 0, 32768, idx(3, 32768)),
            (3, 0, 32769, idx(2, 32769)),
            (3, 32768, 0, idx(3, 0)),
            (3, 32769, 0, idx(4, 0)),
            (3, 40000, 7232, idx(3, 7232)),
            (3, 40000, 7231, idx(4, 7231)),
            // ROC at its maximum
            (u64::from(u32::MAX), 65535, 0, Estimate::Exhausted),
            (
                u64::from(u32::MAX),
                65535,
                65534,
                idx(u64::from(u32::MAX), 65534),
            ),
        ];
        for &(roc, sl, seq, want) in cases {
            let highest = (roc << 16) | u64::from(sl);
            assert_eq!(
                estimate_index(highest, seq),
                want,
                "roc={roc} s_l={sl} seq={seq}"
            );
        }
    }

    #[test]
    fn estimate_follows_a_wrapping_stream() {
        let mut highest = 65530u64;
        let mut seq = 65530u16;
        for _ in 0..70000u32 {
            seq = seq.wrapping_add(1);
            let Estimate::Index(i) = estimate_index(highest, seq) else {
                panic!("no estimate")
            };
            assert_eq!(i, highest + 1);
            highest = i;
        }
        assert_eq!(highest >> 16, 2);
    }

    #[test]
    fn replay_window_table() {
        let mut w = ReplayWindow::default();
        assert_eq!(w, ReplayWindow::default());
        assert!(w.check(1000));
        w.accept(1000);
        assert!(!w.check(1000), "duplicate of top");
        assert!(w.check(1001));
        assert!(w.check(999));
        assert!(w.check(1000 - 127), "oldest index inside the window");
        assert!(!w.check(1000 - 128), "just outside the window");
        assert!(!w.check(0));

        w.accept(999);
        assert!(!w.check(999));
        w.accept(1000 - 127);
        assert!(!w.check(1000 - 127));

        // Advance by one: everything shifts, old bits stay remembered.
        w.accept(1001);
        assert_eq!(w.top(), 1001);
        assert!(!w.check(1000));
        assert!(!w.check(999));
        assert!(w.check(998));
        assert!(!w.check(1001 - 128), "873 fell out of the window");
        assert!(w.check(1001 - 127));

        // Jump by exactly the window size: only the new top remains.
        w.accept(1001 + 128);
        assert!(!w.check(1001 + 128));
        assert!(!w.check(1001), "1001 is now 128 behind: too old");
        assert!(w.check(1001 + 1));
        assert!(w.check(1001 + 127));

        // Huge jump.
        w.accept(u64::MAX - 1);
        assert!(!w.check(u64::MAX - 1));
        assert!(w.check(u64::MAX));
        assert!(w.check(u64::MAX - 2));
        assert!(!w.check(0));
    }

    #[test]
    fn replay_window_from_zero() {
        let mut w = ReplayWindow::default();
        w.accept(0);
        assert!(!w.check(0));
        assert!(w.check(1));
        w.accept(5);
        assert!(!w.check(0));
        assert!(!w.check(5));
        assert!(w.check(1) && w.check(4));
        w.accept(3);
        assert!(!w.check(3));
        // Accepting twice is harmless.
        w.accept(3);
        assert!(!w.check(3) && w.check(2));
    }
}

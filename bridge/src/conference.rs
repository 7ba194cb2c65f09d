//! A conference on one worker: its member endpoints (slots in the worker's endpoint
//! table), which member sends each SSRC, and each received stream's highest sequence
//! number (RFC 3550 A.1: how many packets were expected, for loss). No I/O, no crypto.

use std::collections::HashMap;

use crate::command::protocol::MediaKind;

/// Members a conference is sized for up front, so joining does not reallocate.
pub const EXPECTED_MEMBERS: usize = 64;

/// SSRCs a conference is sized for up front (audio + 3 simulcast layers + RTX each).
const EXPECTED_SSRCS: usize = 8 * EXPECTED_MEMBERS;

/// One conference.
#[derive(Debug)]
pub struct Conference {
    /// The controller's id.
    pub id: String,
    /// Endpoint slots, in join order.
    pub members: Vec<usize>,
    streams: HashMap<u32, Stream>,
}

/// A stream jump beyond this many sequence numbers (either way) is a restart of the
/// sender's numbering, not loss or reordering (RFC 3550 A.1's MAX_DROPOUT).
const MAX_DROPOUT: i32 = 3000;

/// One SSRC in a conference.
#[derive(Clone, Copy, Debug)]
struct Stream {
    owner: usize,
    kind: Option<MediaKind>,
    /// Highest sequence number received, once a packet was.
    max_seq: Option<u16>,
}

/// What [`Conference::on_rtp`] learned of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The declared kind of its SSRC.
    pub kind: Option<MediaKind>,
    /// How far it advanced its stream's highest sequence number: the packets now
    /// expected (RFC 3550 A.3) beyond those expected before it. 0 for a reordered or
    /// duplicate packet.
    pub expected: u64,
}

impl Conference {
    /// An empty conference.
    pub fn new(id: String) -> Self {
        Self {
            id,
            members: Vec::with_capacity(EXPECTED_MEMBERS),
            streams: HashMap::with_capacity(EXPECTED_SSRCS),
        }
    }

    /// Adds a member.
    pub fn join(&mut self, slot: usize) {
        if !self.members.contains(&slot) {
            self.members.push(slot);
        }
    }

    /// Removes a member and every SSRC it owned.
    pub fn leave(&mut self, slot: usize) {
        self.members.retain(|&m| m != slot);
        self.streams.retain(|_, s| s.owner != slot);
    }

    /// Records that `slot` sent an authenticated RTP packet with `ssrc` and `seq`: the
    /// SSRC is claimed for it (allocating only the first time an SSRC appears) and the
    /// stream's highest sequence number advanced. One map lookup per packet.
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, slot: usize) -> Received {
        let s = self.streams.entry(ssrc).or_insert(Stream {
            owner: slot,
            kind: None,
            max_seq: None,
        });
        if s.owner != slot {
            // Another member now sends it (a declared SSRC moved, or a collision).
            *s = Stream {
                owner: slot,
                kind: None,
                max_seq: None,
            };
        }
        let expected = match s.max_seq {
            None => {
                s.max_seq = Some(seq);
                1
            }
            Some(max) => {
                let delta = i32::from(seq.wrapping_sub(max) as i16);
                if delta.abs() > MAX_DROPOUT {
                    // Far ahead or far behind: a restarted sequence, not loss or
                    // reordering; count from here.
                    s.max_seq = Some(seq);
                    1
                } else if delta > 0 {
                    s.max_seq = Some(seq);
                    delta as u64
                } else {
                    0
                }
            }
        };
        Received {
            kind: s.kind,
            expected,
        }
    }

    /// Records that `slot` declared `ssrc` as a source of `kind`.
    pub fn declare_ssrc(&mut self, ssrc: u32, slot: usize, kind: MediaKind) {
        let s = self.streams.entry(ssrc).or_insert(Stream {
            owner: slot,
            kind: Some(kind),
            max_seq: None,
        });
        if s.owner != slot {
            s.max_seq = None;
        }
        s.owner = slot;
        s.kind = Some(kind);
    }

    /// The member sending `ssrc`.
    pub fn owner(&self, ssrc: u32) -> Option<usize> {
        self.streams.get(&ssrc).map(|s| s.owner)
    }

    /// The declared kind of `ssrc`, if its sender declared it.
    pub fn kind(&self, ssrc: u32) -> Option<MediaKind> {
        self.streams.get(&ssrc).and_then(|s| s.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_ssrc_ownership() {
        let mut c = Conference::new("c".into());
        c.join(3);
        c.join(4);
        c.join(3);
        assert_eq!(c.members, vec![3, 4]);
        c.on_rtp(100, 1, 3);
        c.declare_ssrc(200, 4, MediaKind::Video);
        assert_eq!(c.on_rtp(200, 1, 4).kind, Some(MediaKind::Video));
        assert_eq!(c.kind(200), Some(MediaKind::Video));
        assert_eq!(c.kind(100), None);
        assert_eq!(c.owner(100), Some(3));
        c.leave(3);
        assert_eq!(c.members, vec![4]);
        assert_eq!(c.owner(100), None);
        assert_eq!(c.owner(200), Some(4));
    }

    #[test]
    fn expected_packets_follow_the_highest_sequence_number() {
        let mut c = Conference::new("c".into());
        let exp = |c: &mut Conference, seq: u16| c.on_rtp(7, seq, 0).expected;
        assert_eq!(exp(&mut c, 65530), 1);
        assert_eq!(exp(&mut c, 65531), 1);
        // 65532 and 65533 lost; the stream wraps.
        assert_eq!(exp(&mut c, 65534), 3);
        assert_eq!(exp(&mut c, 2), 4);
        // Reordered and duplicate packets expect nothing more.
        assert_eq!(exp(&mut c, 1), 0);
        assert_eq!(exp(&mut c, 2), 0);
        // A jump far ahead is a restart, not 30000 losses; far back likewise.
        assert_eq!(exp(&mut c, 30000), 1);
        assert_eq!(exp(&mut c, 30001), 1);
        assert_eq!(exp(&mut c, 20000), 1);
        assert_eq!(exp(&mut c, 20001), 1);
    }
}

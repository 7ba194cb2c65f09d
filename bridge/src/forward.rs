//! The forwarding policy: who receives a packet. This first version relays every RTP
//! packet to every other connected member of the conference, and routes RTCP feedback
//! by its media SSRC to that stream's sender (RFC 4585 6.1), falling back to everyone
//! when it cannot tell. Last-N, simulcast layer choice and BWE come later, here.

use crate::rtcp;

/// Most distinct targets an RTCP compound is routed to before it goes to everyone.
pub const MAX_RTCP_TARGETS: usize = 8;

/// Where an RTCP compound goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpRoute {
    /// Every other connected member (sender reports, SDES, BYE, unknown media SSRCs).
    Everyone,
    /// Only these members (the senders of the streams the feedback is about).
    Only {
        /// Member slots, the first `len` valid.
        targets: [usize; MAX_RTCP_TARGETS],
        /// How many.
        len: usize,
    },
}

/// RTP: each member other than the sender, in member order.
pub fn rtp_receivers(members: &[usize], sender: usize) -> impl Iterator<Item = usize> + '_ {
    members.iter().copied().filter(move |&m| m != sender)
}

/// Routes a decrypted RTCP compound from `sender`. `owner` maps a media SSRC to the
/// member sending it. Feedback and receiver reports go to the senders they are about;
/// anything else, or an SSRC nobody owns, goes to everyone. Never drops feedback for an
/// unknown *sender* SSRC (a receive-only transceiver has one nobody signalled).
pub fn route_rtcp(
    compound: &[u8],
    sender: usize,
    owner: impl Fn(u32) -> Option<usize>,
) -> RtcpRoute {
    let mut targets = [0usize; MAX_RTCP_TARGETS];
    let mut len = 0;
    let add = |slot: usize, targets: &mut [usize; MAX_RTCP_TARGETS], len: &mut usize| -> bool {
        if slot == sender || targets[..*len].contains(&slot) {
            return true;
        }
        if *len == MAX_RTCP_TARGETS {
            return false;
        }
        targets[*len] = slot;
        *len += 1;
        true
    };
    for packet in rtcp::iter(compound) {
        let Ok(packet) = packet else {
            return RtcpRoute::Everyone;
        };
        match packet.packet_type() {
            rtcp::PSFB if packet.is_fir() => {
                // RFC 5104 4.3.1: a FIR's media SSRC is 0; the targets are in its FCI.
                for (ssrc, _) in packet.fir_entries() {
                    let Some(slot) = owner(ssrc) else {
                        return RtcpRoute::Everyone;
                    };
                    if !add(slot, &mut targets, &mut len) {
                        return RtcpRoute::Everyone;
                    }
                }
            }
            rtcp::RTPFB | rtcp::PSFB => {
                let Some(slot) = packet.media_ssrc().and_then(&owner) else {
                    return RtcpRoute::Everyone;
                };
                if !add(slot, &mut targets, &mut len) {
                    return RtcpRoute::Everyone;
                }
            }
            rtcp::RR => {
                for ssrc in packet.report_block_ssrcs() {
                    let Some(slot) = owner(ssrc) else {
                        return RtcpRoute::Everyone;
                    };
                    if !add(slot, &mut targets, &mut len) {
                        return RtcpRoute::Everyone;
                    }
                }
            }
            // SDES and BYE ride along with whatever they accompany.
            rtcp::SDES | rtcp::BYE => {}
            _ => return RtcpRoute::Everyone,
        }
    }
    if len == 0 {
        // Only SDES/BYE, or reports about nothing: let everyone see it.
        RtcpRoute::Everyone
    } else {
        RtcpRoute::Only { targets, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ssrc: u32) -> Option<usize> {
        match ssrc {
            0xA => Some(0),
            0xB => Some(1),
            0xC => Some(2),
            _ => None,
        }
    }

    #[test]
    fn rtp_goes_to_everyone_else() {
        let members = [0, 1, 2, 5];
        let got: Vec<_> = rtp_receivers(&members, 1).collect();
        assert_eq!(got, vec![0, 2, 5]);
        let alone: Vec<_> = rtp_receivers(&[3], 3).collect();
        assert!(alone.is_empty());
    }

    #[test]
    fn pli_goes_to_the_media_sender_only() {
        let mut buf = [0u8; 64];
        // Sender SSRC 0x1234 was never signalled (receive-only transceiver): still routed.
        let n = rtcp::write_pli(&mut buf, 0x1234, 0xB).unwrap();
        match route_rtcp(&buf[..n], 0, owner) {
            RtcpRoute::Only { targets, len } => assert_eq!(&targets[..len], &[1]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fir_goes_to_the_sender_named_in_its_entries() {
        let mut buf = [0u8; 64];
        let n = rtcp::write_fir(&mut buf, 0x1234, 0xC, 1).unwrap();
        match route_rtcp(&buf[..n], 0, owner) {
            RtcpRoute::Only { targets, len } => assert_eq!(&targets[..len], &[2]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn feedback_for_unknown_media_goes_to_everyone() {
        let mut buf = [0u8; 64];
        let n = rtcp::write_pli(&mut buf, 0xA, 0xFFFF).unwrap();
        assert_eq!(route_rtcp(&buf[..n], 0, owner), RtcpRoute::Everyone);
    }

    #[test]
    fn sender_report_goes_to_everyone() {
        let mut buf = [0u8; 64];
        let n = rtcp::write_sr(&mut buf, 0xA, 1, 2, 3, 4).unwrap();
        assert_eq!(route_rtcp(&buf[..n], 0, owner), RtcpRoute::Everyone);
    }

    #[test]
    fn feedback_about_own_stream_goes_nowhere_else() {
        let mut buf = [0u8; 64];
        let n = rtcp::write_pli(&mut buf, 0xB, 0xA).unwrap();
        // Member 0 asks about its own SSRC: no other target.
        assert_eq!(route_rtcp(&buf[..n], 0, owner), RtcpRoute::Everyone);
    }

    #[test]
    fn garbage_goes_to_everyone_rather_than_panicking() {
        assert_eq!(
            route_rtcp(&[0x80, 200, 0xff, 0xff], 0, owner),
            RtcpRoute::Everyone
        );
    }
}

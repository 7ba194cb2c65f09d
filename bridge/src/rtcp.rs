//! RTCP compound packet walking (RFC 3550 6.4, RFC 4585 6.1, RFC 5104) with zero-copy
//! accessors for SR/RR report blocks and PLI/FIR/NACK/REMB feedback, plus allocation-free
//! writers for SR, empty RR, PLI, FIR and NACK. Never panics on untrusted bytes.

/// Sender report.
pub const SR: u8 = 200;
/// Receiver report.
pub const RR: u8 = 201;
/// Source description.
pub const SDES: u8 = 202;
/// Goodbye.
pub const BYE: u8 = 203;
/// Application-defined.
pub const APP: u8 = 204;
/// Transport-layer feedback (RFC 4585 6.2).
pub const RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585 6.3).
pub const PSFB: u8 = 206;
/// Extended reports (RFC 3611).
pub const XR: u8 = 207;

/// RTPFB FMT: Generic NACK (RFC 4585 6.2.1).
pub const FMT_NACK: u8 = 1;
/// PSFB FMT: Picture Loss Indication (RFC 4585 6.3.1).
pub const FMT_PLI: u8 = 1;
/// PSFB FMT: Full Intra Request (RFC 5104 4.3.1).
pub const FMT_FIR: u8 = 4;
/// PSFB FMT: application layer feedback, used by REMB.
pub const FMT_AFB: u8 = 15;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
/// SR: header, SSRC, 20 bytes of sender info.
const SR_BLOCKS_AT: usize = 28;
/// RR: header, SSRC.
const RR_BLOCKS_AT: usize = 8;
/// RTPFB/PSFB: header, sender SSRC, media SSRC.
const FCI_AT: usize = 12;

/// Everything that can go wrong walking or writing RTCP.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpError {
    /// Fewer than 4 bytes left for a packet header (or an empty compound).
    #[error("RTCP packet shorter than its header")]
    TooShort,
    /// Version field is not 2.
    #[error("RTCP version is not 2")]
    BadVersion,
    /// Length field points past the end of the buffer.
    #[error("RTCP length field exceeds the buffer")]
    BadLength,
    /// P bit set but the padding count is 0 or larger than the packet body.
    #[error("invalid RTCP padding")]
    BadPadding,
    /// Packet too short for what its type and count announce.
    #[error("RTCP packet body too short for its type")]
    BadBody,
    /// Output buffer too small.
    #[error("output buffer too small for RTCP packet")]
    BufferTooSmall,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at.checked_add(4)?)? {
        &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

fn be32_chunk(c: &[u8]) -> u32 {
    be32(c, 0).unwrap_or(0)
}

/// Sender info of an SR (RFC 3550 6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp.
    pub ntp: u64,
    /// RTP timestamp matching `ntp`.
    pub rtp_ts: u32,
    /// Sender's packet count.
    pub packets: u32,
    /// Sender's octet count.
    pub octets: u32,
}

/// One SR/RR reception report block (RFC 3550 6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source being reported on.
    pub ssrc: u32,
    /// Fraction lost since the last report, /256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed, sign-extended).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter.
    pub jitter: u32,
    /// Last SR timestamp (middle 32 bits of NTP).
    pub lsr: u32,
    /// Delay since last SR, 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn from_chunk(c: &[u8]) -> Self {
        let word1 = be32(c, 4).unwrap_or(0);
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((word1 << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32_chunk(c),
            fraction_lost: (word1 >> 24) as u8,
            cumulative_lost,
            highest_seq: be32(c, 8).unwrap_or(0),
            jitter: be32(c, 12).unwrap_or(0),
            lsr: be32(c, 16).unwrap_or(0),
            dlsr: be32(c, 20).unwrap_or(0),
        }
    }
}

/// One packet of a compound RTCP packet, as yielded by [`iter`].
#[derive(Clone, Copy, Debug)]
pub struct RtcpPacket<'a> {
    /// The packet bytes including header and padding.
    buf: &'a [u8],
    /// End of content (excluding padding).
    content_end: usize,
}

impl<'a> RtcpPacket<'a> {
    /// Checks one packet (RFC 3550 6.4, 6.5-6.7, RFC 4585 6.1) at the start of `rest`;
    /// returns it and its length.
    fn parse_one(rest: &'a [u8]) -> Result<Self, RtcpError> {
        let (&[b0, pt, l0, l1], _) = rest.split_first_chunk::<4>().ok_or(RtcpError::TooShort)?;
        if b0 >> 6 != 2 {
            return Err(RtcpError::BadVersion);
        }
        let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let buf = rest.get(..len).ok_or(RtcpError::BadLength)?;
        let mut content_end = len;
        if b0 & 0x20 != 0 {
            let pad = usize::from(*buf.last().ok_or(RtcpError::BadPadding)?);
            if pad == 0 || pad > len - HEADER_LEN {
                return Err(RtcpError::BadPadding);
            }
            content_end -= pad;
        }
        let count = usize::from(b0 & 0x1F);
        let min = match pt {
            SR => SR_BLOCKS_AT + REPORT_BLOCK_LEN * count,
            RR => RR_BLOCKS_AT + REPORT_BLOCK_LEN * count,
            BYE => HEADER_LEN + 4 * count,
            APP | RTPFB | PSFB => FCI_AT,
            XR => 8,
            _ => HEADER_LEN,
        };
        if content_end < min {
            return Err(RtcpError::BadBody);
        }
        Ok(RtcpPacket { buf, content_end })
    }

    fn content(&self) -> &'a [u8] {
        self.buf.get(..self.content_end).unwrap_or(&[])
    }

    /// Packet type (200 = SR, ...).
    pub fn packet_type(&self) -> u8 {
        self.buf.get(1).copied().unwrap_or(0)
    }

    /// The 5-bit RC / SC / FMT field.
    pub fn count(&self) -> u8 {
        self.buf.first().copied().unwrap_or(0) & 0x1F
    }

    /// The 5-bit FMT of a feedback packet (same bits as [`count`](Self::count)).
    pub fn fmt(&self) -> u8 {
        self.count()
    }

    /// Whether the P bit is set.
    pub fn has_padding(&self) -> bool {
        self.buf.first().copied().unwrap_or(0) & 0x20 != 0
    }

    /// Total length in bytes, header and padding included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: a parsed packet has at least its 4-byte header.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole packet bytes (header and padding included).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Everything after the 4-byte header, padding excluded.
    pub fn body(&self) -> &'a [u8] {
        self.content().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Bytes 4..8 for packets that start with the sender's SSRC: SR, RR, APP, RTPFB, PSFB,
    /// XR. `None` for SDES/BYE (chunks/lists of sources) and unknown types.
    pub fn sender_ssrc(&self) -> Option<u32> {
        match self.packet_type() {
            SR | RR | APP | RTPFB | PSFB | XR => be32(self.content(), 4),
            _ => None,
        }
    }

    /// The media SSRC a feedback packet (RTPFB/PSFB) is about: bytes 8..12 (RFC 4585 6.1).
    /// `None` for other types. Note that FIR sets it to 0; see [`fir_entries`](Self::fir_entries).
    pub fn media_ssrc(&self) -> Option<u32> {
        match self.packet_type() {
            RTPFB | PSFB => be32(self.content(), 8),
            _ => None,
        }
    }

    /// SR sender info (RFC 3550 6.4.1); `None` for other types.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != SR {
            return None;
        }
        let c = self.content();
        let hi = u64::from(be32(c, 8)?);
        let lo = u64::from(be32(c, 12)?);
        Some(SenderInfo {
            ntp: (hi << 32) | lo,
            rtp_ts: be32(c, 16)?,
            packets: be32(c, 20)?,
            octets: be32(c, 24)?,
        })
    }

    /// SR/RR reception report blocks (RFC 3550 6.4.1, 6.4.2); empty for other types.
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        let at = match self.packet_type() {
            SR => SR_BLOCKS_AT,
            RR => RR_BLOCKS_AT,
            _ => self.content_end,
        };
        self.content()
            .get(at..)
            .unwrap_or(&[])
            .chunks_exact(REPORT_BLOCK_LEN)
            .take(usize::from(self.count()))
            .map(ReportBlock::from_chunk)
    }

    /// SR/RR report blocks' source SSRCs (the streams being reported on).
    pub fn report_block_ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.report_blocks().map(|b| b.ssrc)
    }

    /// BYE's list of leaving sources (RFC 3550 6.6); empty for other types.
    pub fn bye_ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = if self.packet_type() == BYE {
            usize::from(self.count())
        } else {
            0
        };
        self.body().chunks_exact(4).take(n).map(be32_chunk)
    }

    /// Feedback control information (after the media SSRC) of RTPFB/PSFB; empty otherwise.
    pub fn fci(&self) -> &'a [u8] {
        match self.packet_type() {
            RTPFB | PSFB => self.content().get(FCI_AT..).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Picture Loss Indication (RFC 4585 6.3.1): PSFB, FMT 1.
    pub fn is_pli(&self) -> bool {
        self.packet_type() == PSFB && self.fmt() == FMT_PLI
    }

    /// Full Intra Request (RFC 5104 4.3.1): PSFB, FMT 4.
    pub fn is_fir(&self) -> bool {
        self.packet_type() == PSFB && self.fmt() == FMT_FIR
    }

    /// Generic NACK (RFC 4585 6.2.1): RTPFB, FMT 1.
    pub fn is_nack(&self) -> bool {
        self.packet_type() == RTPFB && self.fmt() == FMT_NACK
    }

    /// REMB (draft-alvestrand-rmcat-remb): PSFB, FMT 15, FCI starting with "REMB".
    pub fn is_remb(&self) -> bool {
        self.packet_type() == PSFB
            && self.fmt() == FMT_AFB
            && self.fci().get(..4) == Some(&b"REMB"[..])
    }

    /// REMB bitrate in bits per second (saturating), and the SSRCs it applies to.
    pub fn remb(&self) -> Option<(u64, impl Iterator<Item = u32> + 'a)> {
        if !self.is_remb() {
            return None;
        }
        let fci = self.fci();
        let &[num, b1, b2, b3] = fci.get(4..8)? else {
            return None;
        };
        let exp = u32::from(b1 >> 2);
        let mantissa = (u64::from(b1 & 0x03) << 16) | (u64::from(b2) << 8) | u64::from(b3);
        let bitrate = match mantissa.checked_shl(exp) {
            Some(v) if v >> exp == mantissa => v,
            _ => u64::MAX,
        };
        let ssrcs = fci
            .get(8..)
            .unwrap_or(&[])
            .chunks_exact(4)
            .take(usize::from(num))
            .map(be32_chunk);
        Some((bitrate, ssrcs))
    }

    /// Generic NACK FCI entries `(PID, BLP)` (RFC 4585 6.2.1); empty for non-NACK.
    pub fn nack_pairs(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        let fci = if self.is_nack() { self.fci() } else { &[] };
        fci.chunks_exact(4).map(|c| {
            let w = be32_chunk(c);
            ((w >> 16) as u16, w as u16)
        })
    }

    /// Every sequence number a Generic NACK reports lost (PID, then PID+1+i per BLP bit i).
    pub fn nack_lost(&self) -> impl Iterator<Item = u16> + 'a {
        self.nack_pairs().flat_map(|(pid, blp)| {
            std::iter::once(pid).chain(
                (0u16..16)
                    .filter(move |i| blp & (1 << i) != 0)
                    .map(move |i| pid.wrapping_add(i + 1)),
            )
        })
    }

    /// FIR entries `(SSRC, command sequence number)` (RFC 5104 4.3.1.1); empty for non-FIR.
    pub fn fir_entries(&self) -> impl Iterator<Item = (u32, u8)> + 'a {
        let fci = if self.is_fir() { self.fci() } else { &[] };
        fci.chunks_exact(8).map(|c| {
            let seq = c.get(4).copied().unwrap_or(0);
            (be32_chunk(c), seq)
        })
    }
}

/// Iterator over the packets of a compound RTCP packet; see [`iter`].
#[derive(Clone, Debug)]
pub struct RtcpIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match RtcpPacket::parse_one(self.rest) {
            Ok(p) => {
                self.rest = self.rest.get(p.len()..).unwrap_or(&[]);
                Some(Ok(p))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Walks a compound RTCP packet (RFC 3550 6.4): each packet's length field is its size in
/// 32-bit words minus one and it must fit; version must be 2. Yields `Err` once on the
/// first malformed packet and stops.
pub fn iter(buf: &[u8]) -> RtcpIter<'_> {
    RtcpIter {
        rest: buf,
        failed: false,
    }
}

/// Checks that the whole compound is well-formed and returns its number of packets.
/// An empty buffer is [`RtcpError::TooShort`]. Reduced-size RTCP (RFC 5506) is accepted:
/// the first packet need not be SR/RR.
pub fn validate(buf: &[u8]) -> Result<usize, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::TooShort);
    }
    let mut n = 0;
    for p in iter(buf) {
        p?;
        n += 1;
    }
    Ok(n)
}

/// Writes a 4-byte header plus the given words; returns the length.
fn write_words(buf: &mut [u8], count: u8, pt: u8, words: &[u32]) -> Result<usize, RtcpError> {
    let total = HEADER_LEN + 4 * words.len();
    let out = buf.get_mut(..total).ok_or(RtcpError::BufferTooSmall)?;
    // `words` is a handful of fixed entries: the length always fits in u16.
    let len = u16::try_from(words.len()).map_err(|_| RtcpError::BufferTooSmall)?;
    let (hdr, body) = out.split_at_mut(HEADER_LEN);
    hdr.copy_from_slice(&[0x80 | (count & 0x1F), pt, 0, 0]);
    if let Some(l) = hdr.get_mut(2..4) {
        l.copy_from_slice(&len.to_be_bytes());
    }
    for (dst, w) in body.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    Ok(total)
}

/// Picture Loss Indication (RFC 4585 6.3.1). 12 bytes.
pub fn write_pli(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, RtcpError> {
    write_words(buf, FMT_PLI, PSFB, &[sender_ssrc, media_ssrc])
}

/// Full Intra Request (RFC 5104 4.3.1) for `media_ssrc` with command sequence number
/// `seq_nr`; the header's media SSRC is 0 as the RFC requires. 20 bytes.
pub fn write_fir(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    seq_nr: u8,
) -> Result<usize, RtcpError> {
    let entry = u32::from(seq_nr) << 24;
    write_words(buf, FMT_FIR, PSFB, &[sender_ssrc, 0, media_ssrc, entry])
}

/// Generic NACK (RFC 4585 6.2.1) with one `(PID, BLP)` entry. 16 bytes.
pub fn write_nack(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    pid: u16,
    blp: u16,
) -> Result<usize, RtcpError> {
    let entry = (u32::from(pid) << 16) | u32::from(blp);
    write_words(buf, FMT_NACK, RTPFB, &[sender_ssrc, media_ssrc, entry])
}

/// Empty receiver report (RFC 3550 6.4.2, RC = 0). 8 bytes.
pub fn write_rr(buf: &mut [u8], sender_ssrc: u32) -> Result<usize, RtcpError> {
    write_words(buf, 0, RR, &[sender_ssrc])
}

/// Sender report without report blocks (RFC 3550 6.4.1). 28 bytes.
pub fn write_sr(
    buf: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
) -> Result<usize, RtcpError> {
    let words = [
        ssrc,
        (ntp >> 32) as u32,
        ntp as u32,
        rtp_ts,
        packets,
        octets,
    ];
    write_words(buf, 0, SR, &words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// SR from 0x11111111 with two report blocks, then SDES CNAME "abc", then PLI.
    fn compound() -> ([u8; 256], usize) {
        let mut b = [0u8; 256];
        let mut n = 0;
        // SR, RC=2: 28 + 48 = 76 bytes = 19 words -> length 18.
        b[0..4].copy_from_slice(&[0x82, SR, 0, 18]);
        b[4..8].copy_from_slice(&0x1111_1111u32.to_be_bytes());
        b[8..16].copy_from_slice(&0xE000_0000_8000_0000u64.to_be_bytes());
        b[16..20].copy_from_slice(&1000u32.to_be_bytes());
        b[20..24].copy_from_slice(&50u32.to_be_bytes());
        b[24..28].copy_from_slice(&6000u32.to_be_bytes());
        // Block 1: ssrc A, fraction 0x10, cumulative -2.
        b[28..32].copy_from_slice(&0xAAAA_AAAAu32.to_be_bytes());
        b[32..36].copy_from_slice(&[0x10, 0xFF, 0xFF, 0xFE]);
        b[36..40].copy_from_slice(&0x0001_0005u32.to_be_bytes());
        b[40..44].copy_from_slice(&7u32.to_be_bytes());
        b[44..48].copy_from_slice(&8u32.to_be_bytes());
        b[48..52].copy_from_slice(&9u32.to_be_bytes());
        // Block 2: ssrc B.
        b[52..56].copy_from_slice(&0xBBBB_BBBBu32.to_be_bytes());
        n += 76;
        // SDES, SC=1: ssrc, CNAME(1) len 3 "abc", END + pad -> 4+4+5+3 = 16 bytes.
        b[n..n + 16].copy_from_slice(&[
            0x81, SDES, 0, 3, 0x11, 0x11, 0x11, 0x11, 1, 3, b'a', b'b', b'c', 0, 0, 0,
        ]);
        n += 16;
        n += write_pli(&mut b[n..], 0x1111_1111, 0xAAAA_AAAA).unwrap();
        (b, n)
    }

    #[test]
    fn sr_with_report_blocks_and_compound() {
        let (b, n) = compound();
        assert_eq!(validate(&b[..n]), Ok(3));
        let pkts: Vec<_> = iter(&b[..n]).map(Result::unwrap).collect();
        let sr = &pkts[0];
        assert_eq!(sr.packet_type(), SR);
        assert_eq!(sr.count(), 2);
        assert_eq!(sr.len(), 76);
        assert_eq!(sr.body().len(), 72);
        assert_eq!(sr.sender_ssrc(), Some(0x1111_1111));
        assert_eq!(sr.media_ssrc(), None);
        assert_eq!(
            sr.sender_info(),
            Some(SenderInfo {
                ntp: 0xE000_0000_8000_0000,
                rtp_ts: 1000,
                packets: 50,
                octets: 6000
            })
        );
        assert_eq!(
            sr.report_block_ssrcs().collect::<Vec<_>>(),
            vec![0xAAAA_AAAA, 0xBBBB_BBBB]
        );
        let rb = sr.report_blocks().next().unwrap();
        assert_eq!(rb.fraction_lost, 0x10);
        assert_eq!(rb.cumulative_lost, -2);
        assert_eq!(rb.highest_seq, 0x0001_0005);
        assert_eq!((rb.jitter, rb.lsr, rb.dlsr), (7, 8, 9));

        let sdes = &pkts[1];
        assert_eq!(sdes.packet_type(), SDES);
        assert_eq!(sdes.count(), 1);
        assert_eq!(sdes.sender_ssrc(), None);
        assert_eq!(sdes.report_block_ssrcs().count(), 0);

        let pli = &pkts[2];
        assert!(pli.is_pli() && !pli.is_fir() && !pli.is_nack());
        assert_eq!(pli.sender_ssrc(), Some(0x1111_1111));
        assert_eq!(pli.media_ssrc(), Some(0xAAAA_AAAA));
        assert_eq!(pli.len(), 12);
    }

    #[test]
    fn feedback_media_ssrc() {
        let mut b = [0u8; 64];
        let n = write_fir(&mut b, 1, 0xDEAD_BEEF, 7).unwrap();
        assert_eq!(n, 20);
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert!(p.is_fir() && !p.is_pli());
        assert_eq!(p.media_ssrc(), Some(0));
        assert_eq!(p.fir_entries().collect::<Vec<_>>(), vec![(0xDEAD_BEEF, 7)]);

        let n = write_nack(&mut b, 1, 0x1234, 100, 0b101).unwrap();
        assert_eq!(n, 16);
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert!(p.is_nack() && !p.is_pli());
        assert_eq!(p.media_ssrc(), Some(0x1234));
        assert_eq!(p.nack_pairs().collect::<Vec<_>>(), vec![(100, 0b101)]);
        assert_eq!(p.nack_lost().collect::<Vec<_>>(), vec![100, 101, 103]);
        let n = write_nack(&mut b, 1, 0x1234, 65535, 1).unwrap();
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert_eq!(p.nack_lost().collect::<Vec<_>>(), vec![65535, 0]);

        let n = write_pli(&mut b, 5, 6).unwrap();
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert_eq!(p.media_ssrc(), Some(6));
        assert_eq!(p.fir_entries().count(), 0);
        assert_eq!(p.nack_pairs().count(), 0);
    }

    #[test]
    fn remb() {
        // REMB: exp 3, mantissa 0x1_0000 -> 524288 bps, 2 SSRCs.
        let mut b = [0u8; 64];
        b[..4].copy_from_slice(&[0x8F, PSFB, 0, 6]);
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        b[12..16].copy_from_slice(b"REMB");
        b[16..20].copy_from_slice(&[2, (3 << 2) | 1, 0, 0]);
        b[20..24].copy_from_slice(&10u32.to_be_bytes());
        b[24..28].copy_from_slice(&11u32.to_be_bytes());
        let p = iter(&b[..28]).next().unwrap().unwrap();
        assert!(p.is_remb());
        let (rate, ssrcs) = p.remb().unwrap();
        assert_eq!(rate, 0x1_0000 << 3);
        assert_eq!(ssrcs.collect::<Vec<_>>(), vec![10, 11]);
        // Huge exponent saturates.
        b[17] = 0xFF;
        let p = iter(&b[..28]).next().unwrap().unwrap();
        assert_eq!(p.remb().unwrap().0, u64::MAX);
    }

    #[test]
    fn writers_round_trip() {
        let mut b = [0u8; 64];
        let n = write_rr(&mut b, 42).unwrap();
        assert_eq!(n, 8);
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert_eq!(
            (p.packet_type(), p.count(), p.sender_ssrc()),
            (RR, 0, Some(42))
        );
        assert_eq!(p.report_block_ssrcs().count(), 0);

        let n = write_sr(&mut b, 9, 0x0102_0304_0506_0708, 3, 4, 5).unwrap();
        assert_eq!(n, 28);
        assert_eq!(validate(&b[..n]), Ok(1));
        let p = iter(&b[..n]).next().unwrap().unwrap();
        assert_eq!(p.sender_ssrc(), Some(9));
        assert_eq!(
            p.sender_info(),
            Some(SenderInfo {
                ntp: 0x0102_0304_0506_0708,
                rtp_ts: 3,
                packets: 4,
                octets: 5
            })
        );
        for short in 0..28 {
            assert_eq!(
                write_sr(&mut b[..short], 1, 2, 3, 4, 5),
                Err(RtcpError::BufferTooSmall)
            );
            if short < 8 {
                assert_eq!(write_rr(&mut b[..short], 1), Err(RtcpError::BufferTooSmall));
            }
            if short < 12 {
                assert_eq!(
                    write_pli(&mut b[..short], 1, 2),
                    Err(RtcpError::BufferTooSmall)
                );
            }
        }
    }

    #[test]
    fn bad_length_and_version() {
        let (mut b, n) = compound();
        // SDES length pointing past the end.
        b[79] = 60;
        let r: Vec<_> = iter(&b[..n]).collect();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok());
        assert_eq!(r[1].as_ref().err(), Some(&RtcpError::BadLength));
        assert_eq!(validate(&b[..n]), Err(RtcpError::BadLength));

        let (mut b, n) = compound();
        b[76] = 0x41;
        assert_eq!(validate(&b[..n]), Err(RtcpError::BadVersion));

        // SR claiming 3 report blocks but sized for 2.
        let (mut b, n) = compound();
        b[0] = 0x83;
        assert_eq!(validate(&b[..n]), Err(RtcpError::BadBody));

        // Feedback packet without media SSRC.
        assert_eq!(
            validate(&[0x81, PSFB, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::BadBody)
        );

        // Trailing bytes too short for a header.
        let (b, n) = compound();
        let mut c = [0u8; 256];
        c[..n].copy_from_slice(&b[..n]);
        c[n] = 0x80;
        assert_eq!(validate(&c[..n + 2]), Err(RtcpError::TooShort));
        assert_eq!(validate(&[]), Err(RtcpError::TooShort));
    }

    #[test]
    fn padding() {
        // RR with 4 bytes of padding.
        let mut b = [0x80 | 0x20, RR, 0, 2, 0, 0, 0, 5, 0, 0, 0, 4];
        let p = iter(&b).next().unwrap().unwrap();
        assert!(p.has_padding());
        assert_eq!(p.len(), 12);
        assert_eq!(p.body(), &[0, 0, 0, 5]);
        assert_eq!(p.sender_ssrc(), Some(5));
        b[11] = 0;
        assert_eq!(validate(&b), Err(RtcpError::BadPadding));
        b[11] = 9;
        assert_eq!(validate(&b), Err(RtcpError::BadPadding));
        // Padding eating into the mandatory SSRC.
        b[11] = 8;
        assert_eq!(validate(&b), Err(RtcpError::BadBody));
    }

    #[test]
    fn truncations_never_panic() {
        let (b, n) = compound();
        for cut in 0..n {
            let r = validate(&b[..cut]);
            // Only cuts on a packet boundary are valid.
            assert_eq!(r.is_ok(), cut == 76 || cut == 92, "{cut}");
            for p in iter(&b[..cut]).flatten() {
                exercise(&p);
            }
        }
        // Shrinking the length field of each packet in turn.
        for at in [2usize, 3, 78, 79, 94, 95] {
            for v in 0..=255u8 {
                let mut c = b;
                c[at] = v;
                let _ = validate(&c[..n]);
                for p in iter(&c[..n]).flatten() {
                    exercise(&p);
                }
            }
        }
    }

    fn exercise(p: &RtcpPacket<'_>) {
        let _ = (p.packet_type(), p.count(), p.sender_ssrc(), p.media_ssrc());
        let _ = (p.body().len(), p.fci().len(), p.sender_info());
        let _ = p.report_blocks().count();
        let _ = p.bye_ssrcs().count();
        let _ = p.nack_lost().count();
        let _ = p.fir_entries().count();
        if let Some((_, s)) = p.remb() {
            let _ = s.count();
        }
        let _ = (p.is_pli(), p.is_fir(), p.is_nack(), p.is_remb());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4585);
        let mut b = [0u8; 160];
        for i in 0..50_000 {
            let n = rng.gen_range(0..b.len());
            rng.fill(&mut b[..n]);
            if i % 2 == 0 && n >= 4 {
                // Plausible header: version 2, a known type, small length.
                b[0] = (b[0] & 0x3F) | 0x80;
                b[1] = rng.gen_range(200..=207);
                b[2] = 0;
                b[3] %= 40;
            }
            let total = validate(&b[..n]);
            let mut count = 0;
            let mut bytes = 0;
            for p in iter(&b[..n]) {
                match p {
                    Ok(p) => {
                        count += 1;
                        bytes += p.len();
                        exercise(&p);
                    }
                    Err(_) => break,
                }
            }
            if let Ok(t) = total {
                assert_eq!((t, bytes), (count, n));
            }
        }
    }
}

//! Zero-copy RTP header view (RFC 3550 5.1) with RFC 8285 header extensions and the
//! RFC 6464 audio level, RFC 5761 / RFC 7983 RTP-vs-RTCP demux, and in-place rewriters
//! for forwarding. Nothing here allocates or panics on untrusted bytes.

/// Fixed RTP header length.
pub const FIXED_HEADER_LEN: usize = 12;
/// RFC 8285 4.2 one-byte header extension profile.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 4.3 two-byte header extension profile (low 4 bits are "appbits").
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Everything that can go wrong parsing or writing an RTP header.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtpError {
    /// Buffer shorter than the header it announces.
    #[error("RTP packet shorter than its header")]
    TooShort,
    /// Version field is not 2.
    #[error("RTP version is not 2")]
    BadVersion,
    /// P bit set but the padding count is 0 or larger than the payload.
    #[error("invalid RTP padding")]
    BadPadding,
    /// Output buffer too small.
    #[error("output buffer too small for RTP header")]
    BufferTooSmall,
    /// A value given to a writer is out of range (payload type > 127, extension id/len).
    #[error("invalid argument for RTP writer")]
    InvalidArgument,
}

/// Zero-copy view of a parsed RTP packet.
#[derive(Clone, Copy, Debug)]
pub struct RtpHeader<'a> {
    buf: &'a [u8],
    header_len: usize,
    payload_end: usize,
    /// (profile, start, end) of the header extension data, offsets into `buf`.
    ext: Option<(u16, usize, usize)>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

impl<'a> RtpHeader<'a> {
    /// Parses an RTP packet (RFC 3550 5.1 fixed header, 5.3.1 header extension).
    ///
    /// Version must be 2; `header_len = 12 + 4*CC (+ 4 + 4*length if X)` must fit in
    /// `buf`. If P is set, the last byte is the padding count and must be in
    /// `1..=payload bytes`; [`payload`](Self::payload) then excludes it.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let (&b0, _) = buf.split_first().ok_or(RtpError::TooShort)?;
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let cc = usize::from(b0 & 0x0F);
        let mut header_len = FIXED_HEADER_LEN + 4 * cc;
        let mut ext = None;
        if b0 & 0x10 != 0 {
            let data = header_len + 4;
            if buf.len() < data {
                return Err(RtpError::TooShort);
            }
            let profile = be16(buf, header_len);
            let words = usize::from(be16(buf, header_len + 2));
            header_len = data + 4 * words;
            ext = Some((profile, data, header_len));
        }
        if buf.len() < header_len {
            return Err(RtpError::TooShort);
        }
        let mut payload_end = buf.len();
        if b0 & 0x20 != 0 {
            let pad = usize::from(*buf.last().ok_or(RtpError::BadPadding)?);
            if pad == 0 || pad > buf.len() - header_len {
                return Err(RtpError::BadPadding);
            }
            payload_end -= pad;
        }
        Ok(RtpHeader {
            buf,
            header_len,
            payload_end,
            ext,
        })
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn b0(&self) -> u8 {
        self.buf.first().copied().unwrap_or(0)
    }

    fn b1(&self) -> u8 {
        self.buf.get(1).copied().unwrap_or(0)
    }

    /// Marker bit.
    pub fn marker(&self) -> bool {
        self.b1() & 0x80 != 0
    }

    /// Payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.b1() & 0x7F
    }

    /// Sequence number.
    pub fn sequence(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        be32(self.buf, 4)
    }

    /// Synchronisation source.
    pub fn ssrc(&self) -> u32 {
        be32(self.buf, 8)
    }

    /// Whether the P bit is set.
    pub fn has_padding(&self) -> bool {
        self.b0() & 0x20 != 0
    }

    /// Number of padding bytes at the end (0 without P).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    /// Contributing sources.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = usize::from(self.b0() & 0x0F);
        self.buf
            .get(FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * n)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| be32(c, 0))
    }

    /// Header length: fixed header, CSRCs and the extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Payload without header and padding.
    pub fn payload(&self) -> &'a [u8] {
        self.buf
            .get(self.header_len..self.payload_end)
            .unwrap_or(&[])
    }

    /// Header extension profile ("defined by profile" field) if X is set.
    pub fn extension_profile(&self) -> Option<u16> {
        self.ext.map(|(p, _, _)| p)
    }

    /// Offsets `start..end` into the packet of extension element `id`'s value
    /// (RFC 8285 4.2 one-byte or 4.3 two-byte form), for in-place rewriting.
    /// `None` if absent, not an RFC 8285 block, or the block is malformed.
    pub fn extension_range(&self, id: u8) -> Option<(usize, usize)> {
        let (profile, start, end) = self.ext?;
        let data = self.buf.get(start..end)?;
        let two_byte = if profile == ONE_BYTE_PROFILE {
            if !(1..=14).contains(&id) {
                return None;
            }
            false
        } else if profile & 0xFFF0 == TWO_BYTE_PROFILE {
            if id == 0 {
                return None;
            }
            true
        } else {
            return None;
        };
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            if b == 0 {
                // Padding byte (both forms).
                i += 1;
                continue;
            }
            let (eid, len, hdr) = if two_byte {
                (b, usize::from(*data.get(i + 1)?), 2)
            } else {
                let eid = b >> 4;
                if eid == 15 {
                    // RFC 8285 4.2: id 15 stops processing.
                    return None;
                }
                (eid, usize::from(b & 0x0F) + 1, 1)
            };
            let vstart = i + hdr;
            let vend = vstart + len;
            if vend > data.len() {
                return None;
            }
            if eid == id {
                return Some((start + vstart, start + vend));
            }
            i = vend;
        }
        None
    }

    /// RFC 8285 one-byte (0xBEDE) or two-byte (0x100x) extension element value by id.
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        let (s, e) = self.extension_range(id)?;
        self.buf.get(s..e)
    }

    /// RFC 6464 client-to-mixer audio level in extension `id`: (voice activity, level in
    /// -dBov, 0..=127).
    pub fn audio_level(&self, id: u8) -> Option<(bool, u8)> {
        let &b = self.extension(id)?.first()?;
        Some((b & 0x80 != 0, b & 0x7F))
    }
}

/// RFC 7983 demux: first byte 128..=191 is RTP or RTCP.
pub fn is_rtp_or_rtcp(first_byte: u8) -> bool {
    (128..=191).contains(&first_byte)
}

/// RFC 5761 4: on a muxed port, an RTP/RTCP packet whose second byte (marker bit plus
/// payload type) is 192..=223 — i.e. RTCP packet types 192..=223, payload type
/// 64..=95 with M set — is RTCP.
pub fn is_rtcp(buf: &[u8]) -> bool {
    match buf {
        [b0, b1, ..] => is_rtp_or_rtcp(*b0) && (192..=223).contains(b1),
        _ => false,
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Rewrites the SSRC in place; does nothing if `buf` is shorter than 12 bytes.
pub fn set_ssrc(buf: &mut [u8], ssrc: u32) {
    if buf.len() >= FIXED_HEADER_LEN {
        put(buf, 8, &ssrc.to_be_bytes());
    }
}

/// Rewrites the sequence number in place; does nothing if `buf` is shorter than 12 bytes.
pub fn set_sequence(buf: &mut [u8], seq: u16) {
    if buf.len() >= FIXED_HEADER_LEN {
        put(buf, 2, &seq.to_be_bytes());
    }
}

/// Rewrites the timestamp in place; does nothing if `buf` is shorter than 12 bytes.
pub fn set_timestamp(buf: &mut [u8], ts: u32) {
    if buf.len() >= FIXED_HEADER_LEN {
        put(buf, 4, &ts.to_be_bytes());
    }
}

/// Rewrites the payload type (low 7 bits of byte 1), keeping the marker bit; does
/// nothing if `buf` is shorter than 12 bytes.
pub fn set_payload_type(buf: &mut [u8], pt: u8) {
    if buf.len() >= FIXED_HEADER_LEN {
        if let Some(b) = buf.get_mut(1) {
            *b = (*b & 0x80) | (pt & 0x7F);
        }
    }
}

/// Sets or clears the marker bit; does nothing if `buf` is shorter than 12 bytes.
pub fn set_marker(buf: &mut [u8], marker: bool) {
    if buf.len() >= FIXED_HEADER_LEN {
        if let Some(b) = buf.get_mut(1) {
            *b = (*b & 0x7F) | if marker { 0x80 } else { 0 };
        }
    }
}

/// Writes a version-2 RTP header without CSRCs (RFC 3550 5.1), plus an optional RFC 8285
/// one-byte extension element `(id 1..=14, 1..=16 bytes)` padded to a word. Returns the
/// header length; the payload goes right after it.
pub fn write_header(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    ext: Option<(u8, &[u8])>,
) -> Result<usize, RtpError> {
    if pt > 127 {
        return Err(RtpError::InvalidArgument);
    }
    let ext_len = match ext {
        None => 0,
        Some((id, val)) => {
            if !(1..=14).contains(&id) || !(1..=16).contains(&val.len()) {
                return Err(RtpError::InvalidArgument);
            }
            4 + (1 + val.len()).div_ceil(4) * 4
        }
    };
    let total = FIXED_HEADER_LEN + ext_len;
    let out = buf.get_mut(..total).ok_or(RtpError::BufferTooSmall)?;
    out.fill(0);
    let (fixed, ext_out) = out.split_at_mut(FIXED_HEADER_LEN);
    fixed[0] = 0x80 | if ext.is_some() { 0x10 } else { 0 };
    fixed[1] = pt | if marker { 0x80 } else { 0 };
    fixed[2..4].copy_from_slice(&seq.to_be_bytes());
    fixed[4..8].copy_from_slice(&ts.to_be_bytes());
    fixed[8..12].copy_from_slice(&ssrc.to_be_bytes());
    if let Some((id, val)) = ext {
        // ext_len - 4 is a multiple of 4 and at most 20.
        let words = ((ext_len - 4) / 4) as u16;
        put(ext_out, 0, &ONE_BYTE_PROFILE.to_be_bytes());
        put(ext_out, 2, &words.to_be_bytes());
        // len - 1 fits in 4 bits: 1..=16 checked above.
        put(ext_out, 4, &[(id << 4) | (val.len() - 1) as u8]);
        put(ext_out, 5, val);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn packet(ext: Option<(u8, &[u8])>, payload: &[u8]) -> ([u8; 256], usize) {
        let mut b = [0u8; 256];
        let h = write_header(&mut b, 111, true, 0xBEEF, 0x1234_5678, 0xCAFE_BABE, ext).unwrap();
        b[h..h + payload.len()].copy_from_slice(payload);
        (b, h + payload.len())
    }

    #[test]
    fn basic_round_trip() {
        let (b, n) = packet(None, b"hello");
        let h = RtpHeader::parse(&b[..n]).unwrap();
        assert!(h.marker());
        assert_eq!(h.payload_type(), 111);
        assert_eq!(h.sequence(), 0xBEEF);
        assert_eq!(h.timestamp(), 0x1234_5678);
        assert_eq!(h.ssrc(), 0xCAFE_BABE);
        assert_eq!(h.header_len(), 12);
        assert_eq!(h.payload(), b"hello");
        assert_eq!(h.csrcs().count(), 0);
        assert_eq!(h.extension(1), None);
        assert_eq!(h.extension_profile(), None);
        assert!(!h.has_padding());
    }

    #[test]
    fn one_byte_extension_and_audio_level() {
        let (b, n) = packet(Some((1, &[0x80 | 42])), b"opus");
        let h = RtpHeader::parse(&b[..n]).unwrap();
        assert_eq!(h.header_len(), 12 + 4 + 4);
        assert_eq!(h.extension_profile(), Some(ONE_BYTE_PROFILE));
        assert_eq!(h.extension(1), Some(&[0x80 | 42][..]));
        assert_eq!(h.audio_level(1), Some((true, 42)));
        assert_eq!(h.audio_level(2), None);
        assert_eq!(h.extension(0), None);
        assert_eq!(h.extension(15), None);
        assert_eq!(h.payload(), b"opus");

        let (b, n) = packet(Some((14, &[9; 16])), b"");
        let h = RtpHeader::parse(&b[..n]).unwrap();
        assert_eq!(h.header_len(), 12 + 4 + 20);
        assert_eq!(h.extension(14), Some(&[9; 16][..]));
        assert_eq!(h.payload(), b"");
    }

    #[test]
    fn multiple_one_byte_elements_with_padding() {
        // X=1, CC=2, ext: id 3 len 2, pad, pad, id 5 len 1, then stop.
        let mut b = [0u8; 64];
        b[0] = 0x92;
        b[1] = 96;
        b[12..16].copy_from_slice(&1u32.to_be_bytes());
        b[16..20].copy_from_slice(&2u32.to_be_bytes());
        b[20..22].copy_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        b[22..24].copy_from_slice(&2u16.to_be_bytes());
        b[24..32].copy_from_slice(&[0x31, 0xAA, 0xBB, 0, 0, 0x50, 0xCC, 0]);
        b[32..35].copy_from_slice(b"pay");
        let h = RtpHeader::parse(&b[..35]).unwrap();
        assert_eq!(h.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(h.header_len(), 32);
        assert_eq!(h.extension(3), Some(&[0xAA, 0xBB][..]));
        assert_eq!(h.extension(5), Some(&[0xCC][..]));
        assert_eq!(h.extension_range(5), Some((30, 31)));
        assert_eq!(h.extension(4), None);
        assert_eq!(h.payload(), b"pay");
        // id 15 terminates processing.
        b[27] = 0xF0;
        let h = RtpHeader::parse(&b[..35]).unwrap();
        assert_eq!(h.extension(3), Some(&[0xAA, 0xBB][..]));
        assert_eq!(h.extension(5), None);
        // Element overrunning the block -> None, not a panic.
        b[29] = 0x5F;
        let h = RtpHeader::parse(&b[..35]).unwrap();
        assert_eq!(h.extension(5), None);
    }

    #[test]
    fn two_byte_extension() {
        let mut b = [0u8; 64];
        b[0] = 0x90;
        b[12..14].copy_from_slice(&0x1000u16.to_be_bytes());
        b[14..16].copy_from_slice(&2u16.to_be_bytes());
        // id 20 len 0, pad, id 7 len 3.
        b[16..24].copy_from_slice(&[20, 0, 0, 7, 3, 1, 2, 3]);
        let h = RtpHeader::parse(&b[..24]).unwrap();
        assert_eq!(h.extension(20), Some(&[][..]));
        assert_eq!(h.extension(7), Some(&[1, 2, 3][..]));
        assert_eq!(h.extension(8), None);
        assert_eq!(h.payload(), b"");
        // Unknown profile: no elements.
        b[12..14].copy_from_slice(&0x1234u16.to_be_bytes());
        let h = RtpHeader::parse(&b[..24]).unwrap();
        assert_eq!(h.extension(7), None);
    }

    #[test]
    fn padding() {
        let (mut b, n) = packet(None, b"data\0\0\x03");
        b[0] |= 0x20;
        let h = RtpHeader::parse(&b[..n]).unwrap();
        assert!(h.has_padding());
        assert_eq!(h.padding_len(), 3);
        assert_eq!(h.payload(), b"data");
        // Padding count 0 or larger than the payload is an error.
        b[n - 1] = 0;
        assert_eq!(RtpHeader::parse(&b[..n]).err(), Some(RtpError::BadPadding));
        b[n - 1] = 8;
        assert_eq!(RtpHeader::parse(&b[..n]).err(), Some(RtpError::BadPadding));
        // Whole payload is padding: fine.
        b[n - 1] = 7;
        assert_eq!(RtpHeader::parse(&b[..n]).unwrap().payload(), b"");
        // P set with no payload byte at all.
        assert_eq!(RtpHeader::parse(&b[..12]).err(), Some(RtpError::BadPadding));
    }

    #[test]
    fn errors() {
        assert_eq!(RtpHeader::parse(&[]).err(), Some(RtpError::TooShort));
        let (mut b, n) = packet(Some((2, b"ab")), b"x");
        for cut in 0..n - 1 {
            assert_eq!(
                RtpHeader::parse(&b[..cut]).err(),
                Some(RtpError::TooShort),
                "{cut}"
            );
        }
        b[0] = 0x40 | (b[0] & 0x3F);
        assert_eq!(RtpHeader::parse(&b[..n]).err(), Some(RtpError::BadVersion));
        // CC announcing more CSRCs than present.
        let (mut b, n) = packet(None, b"abc");
        b[0] |= 0x01;
        assert_eq!(RtpHeader::parse(&b[..n]).err(), Some(RtpError::TooShort));
        // Extension length past the end.
        let (mut b, n) = packet(Some((2, b"ab")), b"");
        b[15] = 9;
        assert_eq!(RtpHeader::parse(&b[..n]).err(), Some(RtpError::TooShort));
    }

    #[test]
    fn writer_errors() {
        let mut b = [0u8; 64];
        assert_eq!(
            write_header(&mut b, 128, false, 0, 0, 0, None),
            Err(RtpError::InvalidArgument)
        );
        for bad in [(0u8, &b"a"[..]), (15, b"a"), (1, b""), (1, &[0; 17])] {
            assert_eq!(
                write_header(&mut b, 96, false, 0, 0, 0, Some(bad)),
                Err(RtpError::InvalidArgument)
            );
        }
        for short in 0..12 {
            assert_eq!(
                write_header(&mut b[..short], 96, false, 0, 0, 0, None),
                Err(RtpError::BufferTooSmall)
            );
        }
        for short in 12..20 {
            assert_eq!(
                write_header(&mut b[..short], 96, false, 0, 0, 0, Some((1, b"abc"))),
                Err(RtpError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn setters() {
        let (mut b, n) = packet(Some((1, &[5])), b"p");
        set_ssrc(&mut b[..n], 7);
        set_sequence(&mut b[..n], 8);
        set_timestamp(&mut b[..n], 9);
        set_payload_type(&mut b[..n], 100);
        set_marker(&mut b[..n], false);
        let h = RtpHeader::parse(&b[..n]).unwrap();
        assert_eq!((h.ssrc(), h.sequence(), h.timestamp()), (7, 8, 9));
        assert_eq!((h.payload_type(), h.marker()), (100, false));
        assert_eq!(h.audio_level(1), Some((false, 5)));
        set_marker(&mut b[..n], true);
        assert!(RtpHeader::parse(&b[..n]).unwrap().marker());
        // Short buffers: no panic, untouched.
        let mut short = [0xAAu8; 11];
        set_ssrc(&mut short, 0);
        set_sequence(&mut short, 0);
        set_timestamp(&mut short, 0);
        set_payload_type(&mut short, 0);
        set_marker(&mut short, false);
        assert_eq!(short, [0xAA; 11]);
        set_ssrc(&mut [], 0);
    }

    #[test]
    fn demux() {
        assert!(is_rtp_or_rtcp(128) && is_rtp_or_rtcp(191));
        assert!(!is_rtp_or_rtcp(127) && !is_rtp_or_rtcp(192) && !is_rtp_or_rtcp(0));
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 206]));
        assert!(is_rtcp(&[0x80, 192]) && is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 111]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x00, 200]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3550);
        let mut b = [0u8; 128];
        for i in 0..50_000 {
            let n = rng.gen_range(0..b.len());
            rng.fill(&mut b[..n]);
            if i % 2 == 0 && n > 0 {
                b[0] = (b[0] & 0x3F) | 0x80;
            }
            if i % 4 == 0 && n > 14 {
                b[0] |= 0x10;
                b[12..14]
                    .copy_from_slice(&if i % 8 == 0 { 0xBEDEu16 } else { 0x1003 }.to_be_bytes());
            }
            if let Ok(h) = RtpHeader::parse(&b[..n]) {
                assert!(h.header_len() <= n);
                assert!(h.header_len() + h.payload().len() + h.padding_len() == n);
                let _ = h.csrcs().count();
                for id in 0..=255 {
                    if let Some((s, e)) = h.extension_range(id) {
                        assert!(s <= e && e <= h.header_len());
                    }
                    let _ = h.audio_level(id);
                }
            }
            set_ssrc(&mut b[..n], 1);
            set_sequence(&mut b[..n], 1);
            set_timestamp(&mut b[..n], 1);
        }
    }
}

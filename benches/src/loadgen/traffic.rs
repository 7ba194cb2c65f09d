//! What synthetic peers send: SSRC numbering, RTP packets with an RFC 6464 audio-level
//! element and a send-time element (one-byte header extensions, in the clear under
//! SRTP, so every received packet yields a latency without decrypting), and payloads
//! that carry the sender, stream, sequence and send time so a decrypted sample can be
//! checked byte for byte.

/// RFC 6464 client-to-mixer audio level extension id.
pub const EXT_AUDIO_LEVEL: u8 = 1;
/// Send time (nanoseconds since the run's epoch, 8 bytes) extension id.
pub const EXT_SEND_TIME: u8 = 5;
/// Opus payload type.
pub const PT_AUDIO: u8 = 111;
/// VP8 payload type.
pub const PT_VIDEO: u8 = 96;
/// Largest RTP payload a video packet carries (1.5 Mbps at 30 fps is then 5 packets a
/// frame, 150 pps, the standard scenario's rate).
pub const MAX_VIDEO_PAYLOAD: usize = 1250;
/// Bytes of the payload that identify it (sender, stream, sequence, send time).
pub const PAYLOAD_HEAD: usize = 21;
/// Header length with both extension elements: 12 + 4 (extension header) + 12.
pub const HEADER_LEN: usize = 28;

/// Stream numbers within a participant.
pub const AUDIO: u8 = 0;

/// The SSRC of participant `p`'s stream `stream` (0 audio, 1..=3 video layers).
pub fn ssrc(participant: u32, stream: u8) -> u32 {
    ((participant + 1) << 4) | u32::from(stream)
}

/// The participant and stream an SSRC belongs to.
pub fn owner(ssrc: u32) -> Option<(u32, u8)> {
    let p = ssrc >> 4;
    (p > 0).then(|| (p - 1, (ssrc & 0xf) as u8))
}

/// Sends `data` to `to` as datagrams of `segment` bytes (the last may be shorter) in one
/// segmented send (`UDP_SEGMENT`), or datagram by datagram where the kernel refuses that.
/// True when every datagram was sent.
pub fn send_segmented(
    socket: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    data: &[u8],
    segment: usize,
) -> bool {
    if segment >= data.len() || segment == 0 {
        return socket.send_to(data, to).is_ok();
    }
    // struct cmsghdr { size_t len; int level; int type; } + a u16, CMSG_SPACE(2) bytes;
    // the kernel copies it in, so no alignment is needed here.
    let mut control = [0u8; 24];
    let header = std::mem::size_of::<usize>() + 8;
    control[..8].copy_from_slice(&(header + 2).to_ne_bytes());
    control[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    control[12..16].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    control[16..18].copy_from_slice(&(segment as u16).to_ne_bytes());
    let addr = socket2::SockAddr::from(to);
    let bufs = [std::io::IoSlice::new(data)];
    let msg = socket2::MsgHdr::new()
        .with_addr(&addr)
        .with_buffers(&bufs)
        .with_control(&control);
    if socket2::SockRef::from(socket).sendmsg(&msg, 0).is_ok() {
        return true;
    }
    // Every datagram is tried, whatever became of the one before.
    data.chunks(segment)
        .filter(|d| socket.send_to(d, to).is_err())
        .count()
        == 0
}

/// Writes an RTP packet (header with both extension elements, then a checkable
/// payload of `payload_len` bytes, at least [`PAYLOAD_HEAD`]). Returns its length.
#[allow(clippy::too_many_arguments)]
pub fn write_packet(
    buf: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    audio_level: u8,
    sent_ns: u64,
    ext_seq: u64,
    payload_len: usize,
) -> usize {
    let payload_len = payload_len.max(PAYLOAD_HEAD);
    let len = HEADER_LEN + payload_len;
    let b = &mut buf[..len];
    b[0] = 0x90; // V=2, X=1
    b[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&ts.to_be_bytes());
    b[8..12].copy_from_slice(&ssrc.to_be_bytes());
    b[12..14].copy_from_slice(&0xBEDEu16.to_be_bytes());
    b[14..16].copy_from_slice(&3u16.to_be_bytes());
    b[16] = EXT_AUDIO_LEVEL << 4;
    b[17] = audio_level;
    b[18] = (EXT_SEND_TIME << 4) | 7;
    b[19..27].copy_from_slice(&sent_ns.to_be_bytes());
    b[27] = 0; // padding
    let (participant, stream) = owner(ssrc).unwrap_or((0, 0));
    let p = &mut b[HEADER_LEN..];
    p[0..4].copy_from_slice(&participant.to_be_bytes());
    p[4] = stream;
    p[5..13].copy_from_slice(&ext_seq.to_be_bytes());
    p[13..21].copy_from_slice(&sent_ns.to_be_bytes());
    let fill = filler(participant, ext_seq);
    p[PAYLOAD_HEAD..].fill(fill);
    len
}

fn filler(participant: u32, ext_seq: u64) -> u8 {
    (participant as u8) ^ (ext_seq as u8) ^ 0x5a
}

/// The send time in a received (still encrypted) packet's clear header.
pub fn send_time(packet: &[u8]) -> Option<u64> {
    let h = viaduct_bridge::rtp::RtpHeader::parse(packet).ok()?;
    let v = h.extension(EXT_SEND_TIME)?;
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Checks a decrypted packet's payload against its header: the sender and stream
/// match the SSRC, the send time matches the header's, and the filler is intact.
pub fn payload_ok(plain: &[u8]) -> bool {
    check_payload(plain, true).is_some()
}

/// [`payload_ok`] that returns the payload's send time. With `strict` false (an SFU
/// that rewrites sequence numbers and strips extensions) the sequence number and a
/// missing send-time extension are not held against the packet; the SSRC must
/// already be the sender's.
pub fn check_payload(plain: &[u8], strict: bool) -> Option<u64> {
    let h = viaduct_bridge::rtp::RtpHeader::parse(plain).ok()?;
    let (participant, stream) = owner(h.ssrc())?;
    let p = h.payload();
    if p.len() < PAYLOAD_HEAD {
        return None;
    }
    let sent = h
        .extension(EXT_SEND_TIME)
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes);
    let ext_seq = u64::from_be_bytes(p[5..13].try_into().ok()?);
    let payload_sent = u64::from_be_bytes(p[13..21].try_into().ok()?);
    let ok = p[0..4] == participant.to_be_bytes()
        && p[4] == stream
        && (!strict || (ext_seq as u16) == h.sequence())
        && match sent {
            Some(t) => t == payload_sent,
            None => !strict,
        }
        && p[PAYLOAD_HEAD..]
            .iter()
            .all(|&b| b == filler(participant, ext_seq));
    ok.then_some(payload_sent)
}

/// What one participant sends.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Audio packets carry voice (a loud level) rather than silence.
    pub speaker: bool,
    /// Audio payload bytes (Opus-like).
    pub audio_bytes: usize,
    /// Video layers: (SSRC stream number, bytes per frame).
    pub video_layers: Vec<(u8, usize)>,
    /// Video frames per second.
    pub fps: u32,
}

impl Plan {
    /// A plan from the command line's figures. Simulcast splits the bitrate 10/25/65%
    /// over three layers.
    pub fn new(speaker: bool, video_kbps: u32, fps: u32, simulcast: bool) -> Self {
        let frame = |kbps: f64| ((kbps * 1000.0 / 8.0) / f64::from(fps.max(1))) as usize;
        let total = f64::from(video_kbps);
        let video_layers = if video_kbps == 0 {
            vec![]
        } else if simulcast {
            vec![
                (1, frame(total * 0.10)),
                (2, frame(total * 0.25)),
                (3, frame(total * 0.65)),
            ]
        } else {
            vec![(1, frame(total))]
        };
        Self {
            speaker,
            audio_bytes: 120,
            video_layers,
            fps: fps.max(1),
        }
    }

    /// Packets per second this plan sends.
    pub fn pps(&self) -> f64 {
        let video: usize = self
            .video_layers
            .iter()
            .map(|&(_, bytes)| bytes.div_ceil(MAX_VIDEO_PAYLOAD).max(1))
            .sum();
        50.0 + video as f64 * f64::from(self.fps)
    }

    /// Time between two video frames.
    pub fn frame_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1) / self.fps.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let mut buf = [0u8; 1500];
        let n = write_packet(
            &mut buf,
            PT_VIDEO,
            true,
            7,
            90,
            ssrc(41, 2),
            0x80 | 20,
            123_456,
            65_543,
            1000,
        );
        let pkt = &buf[..n];
        assert_eq!(send_time(pkt), Some(123_456));
        assert!(payload_ok(pkt));
        let h = viaduct_bridge::rtp::RtpHeader::parse(pkt).unwrap();
        assert_eq!(h.ssrc(), ssrc(41, 2));
        assert!(h.marker());
        assert_eq!(h.audio_level(EXT_AUDIO_LEVEL), Some((true, 20)));
        assert_eq!(owner(h.ssrc()), Some((41, 2)));
        let mut bad = pkt.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!payload_ok(&bad));
        // As an SFU that rewrites the sequence number and strips extensions sends it.
        let mut rewritten = pkt.to_vec();
        rewritten[2..4].copy_from_slice(&999u16.to_be_bytes());
        assert!(!payload_ok(&rewritten));
        assert_eq!(check_payload(&rewritten, false), Some(123_456));
        assert_eq!(check_payload(&bad, false), None);
    }

    #[test]
    fn plan_rates() {
        let p = Plan::new(true, 1500, 30, false);
        // 1.5 Mbps at 30 fps: 6250-byte frames in 5 packets; 150 + 50 pps.
        assert_eq!(p.video_layers, vec![(1, 6250)]);
        assert_eq!(p.pps(), 200.0);
        assert_eq!(Plan::new(false, 0, 30, false).pps(), 50.0);
    }
}

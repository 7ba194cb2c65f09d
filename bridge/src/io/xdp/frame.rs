//! Ethernet II + IPv4/IPv6 + UDP for the AF_XDP backend: parse a received frame into its
//! source, MACs and a mutable payload view, and write headers (checksums included) in
//! front of a payload already in place in a UMEM frame. Sans-IO; no VLANs, IP options,
//! IPv6 extension headers or fragments (the XDP program passes those to the kernel).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Ethernet II header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_LEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_LEN: usize = 40;
/// UDP header length.
pub const UDP_LEN: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
/// Hop limit / TTL of frames we build (the kernel's default).
const TTL: u8 = 64;

/// Bytes of headers in front of the payload for a destination of this family.
pub fn header_len(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => ETH_LEN + IPV4_LEN + UDP_LEN,
        IpAddr::V6(_) => ETH_LEN + IPV6_LEN + UDP_LEN,
    }
}

/// Why a received frame was not handed to the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its headers say.
    #[error("truncated frame")]
    Truncated,
    /// Not IPv4/IPv6 + UDP without options or extension headers, or a fragment.
    #[error("not a plain UDP datagram")]
    NotUdp,
    /// The IPv4 header checksum does not match.
    #[error("bad checksum")]
    Checksum,
}

/// A parsed received frame: where the UDP payload lies and who sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender (scope id set to `ifindex` for link-local IPv6).
    pub src: SocketAddr,
    /// Destination address and port (ours, as the XDP program matched).
    pub dst: SocketAddr,
    /// The Ethernet source: the sender, or the router that forwarded it to us.
    pub src_mac: [u8; 6],
    /// Offset of the UDP payload in the frame.
    pub payload: usize,
    /// Payload length (Ethernet padding excluded).
    pub len: usize,
}

/// Parse `frame`, checking the IPv4 header checksum. The UDP checksum is not checked
/// here: a locally sent datagram crossing a veth still carries a partial checksum
/// (CHECKSUM_PARTIAL, completed only by a NIC), a real NIC has already dropped frames with
/// a bad FCS, and every payload the bridge accepts is authenticated above UDP (SRTP/SRTCP
/// tags, STUN MESSAGE-INTEGRITY, DTLS record MACs), so corruption is still a counted drop.
/// [`udp_checksum_ok`] checks it when wanted.
pub fn parse(frame: &[u8], ifindex: u32) -> Result<Received, FrameError> {
    if frame.len() < ETH_LEN {
        return Err(FrameError::Truncated);
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[ETH_LEN..];
    let (src_ip, dst_ip, udp_off, udp_avail) = match ethertype {
        ETHERTYPE_IPV4 => {
            if ip.len() < IPV4_LEN {
                return Err(FrameError::Truncated);
            }
            // RFC 791: version 4, IHL 5 (no options), not a fragment (MF or offset).
            if ip[0] != 0x45
                || ip[9] != IPPROTO_UDP
                || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0
            {
                return Err(FrameError::NotUdp);
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if total < IPV4_LEN + UDP_LEN || total > ip.len() {
                return Err(FrameError::Truncated);
            }
            if fold(sum(&ip[..IPV4_LEN], 0)) != 0xffff {
                return Err(FrameError::Checksum);
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ETH_LEN + IPV4_LEN,
                total - IPV4_LEN,
            )
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < IPV6_LEN {
                return Err(FrameError::Truncated);
            }
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if payload < UDP_LEN || IPV6_LEN + payload > ip.len() {
                return Err(FrameError::Truncated);
            }
            let src = Ipv6Addr::from(
                <[u8; 16]>::try_from(&ip[8..24]).map_err(|_| FrameError::Truncated)?,
            );
            let dst = Ipv6Addr::from(
                <[u8; 16]>::try_from(&ip[24..40]).map_err(|_| FrameError::Truncated)?,
            );
            (
                IpAddr::V6(src),
                IpAddr::V6(dst),
                ETH_LEN + IPV6_LEN,
                payload,
            )
        }
        _ => return Err(FrameError::NotUdp),
    };
    let udp = &frame[udp_off..udp_off + udp_avail];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return Err(FrameError::Truncated);
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let with_scope = |ip: IpAddr, port| match ip {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, ifindex))
        }
        ip => SocketAddr::new(ip, port),
    };
    Ok(Received {
        src: with_scope(src_ip, sport),
        dst: with_scope(dst_ip, dport),
        src_mac,
        payload: udp_off + UDP_LEN,
        len: udp_len - UDP_LEN,
    })
}

/// Whether the UDP checksum of a frame [`parse`] accepted is right (RFC 768: zero means
/// none over IPv4; RFC 8200 §8.1 makes it mandatory over IPv6).
pub fn udp_checksum_ok(frame: &[u8], r: &Received) -> bool {
    let udp = &frame[r.payload - UDP_LEN..r.payload + r.len];
    let checksum = u16::from_be_bytes([udp[6], udp[7]]);
    if checksum == 0 && r.src.is_ipv4() {
        return true;
    }
    let s = pseudo_header(&r.src.ip(), &r.dst.ip(), udp.len() as u32);
    fold(sum(udp, s)) == 0xffff
}

/// Addresses of a frame to build.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Our MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC.
    pub dst_mac: [u8; 6],
    /// Our address (same family as `dst`).
    pub src: SocketAddr,
    /// The destination.
    pub dst: SocketAddr,
}

/// Write Ethernet, IP and UDP headers into `frame[..header_len]` for the `payload_len`
/// bytes already at `frame[header_len..]`, checksums included; returns the frame length,
/// or None when the families differ or the frame is too small.
pub fn write_headers(
    frame: &mut [u8],
    route: &Route,
    payload_len: usize,
    ip_id: u16,
) -> Option<usize> {
    let hlen = header_len(&route.dst.ip());
    let total = hlen + payload_len;
    if frame.len() < total || route.src.is_ipv4() != route.dst.is_ipv4() {
        return None;
    }
    let udp_len = u16::try_from(UDP_LEN + payload_len).ok()?;
    frame[0..6].copy_from_slice(&route.dst_mac);
    frame[6..12].copy_from_slice(&route.src_mac);
    let udp_off = match (route.src.ip(), route.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let ip = &mut frame[ETH_LEN..ETH_LEN + IPV4_LEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(udp_len + IPV4_LEN as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            ip[8] = TTL;
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ETH_LEN + IPV4_LEN
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let ip = &mut frame[ETH_LEN..ETH_LEN + IPV6_LEN];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            ETH_LEN + IPV6_LEN
        }
        _ => return None,
    };
    let udp = &mut frame[udp_off..total];
    udp[0..2].copy_from_slice(&route.src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&route.dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let s = pseudo_header(&route.src.ip(), &route.dst.ip(), u32::from(udp_len));
    let mut c = !fold(sum(udp, s));
    if c == 0 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

/// RFC 768 / RFC 8200 §8.1 pseudo-header sum.
fn pseudo_header(src: &IpAddr, dst: &IpAddr, udp_len: u32) -> u64 {
    let mut s = u64::from(IPPROTO_UDP) + u64::from(udp_len);
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            s = sum(&a.octets(), s);
            s = sum(&b.octets(), s);
        }
        (a, b) => {
            s = sum(&ip_octets16(a), s);
            s = sum(&ip_octets16(b), s);
        }
    }
    s
}

fn ip_octets16(ip: &IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// One's-complement sum (RFC 1071) of `data` as big-endian 16-bit words, added to
/// `initial`, unfolded. The sum does not depend on byte order until it is folded (RFC
/// 1071 §2(B)), so it adds native 64-bit words in two independent chains and swaps the
/// folded result once: 1.9 times as fast as one big-endian chain on a 1200-byte payload
/// (80 ns against 150 ns here), which was 4% of the xdp backend's profile.
fn sum(data: &[u8], initial: u64) -> u64 {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_ne_bytes(w)
    };
    let add = |acc: u64, w: u64| {
        let (s, carry) = acc.overflowing_add(w);
        s + u64::from(carry)
    };
    let (mut a, mut b) = (0u64, 0u64);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        a = add(a, word(&c[..8]));
        b = add(b, word(&c[8..]));
    }
    let mut tail = [0u8; 16];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    a = add(a, word(&tail[..8]));
    b = add(b, word(&tail[8..]));
    let native = fold(add(a, b));
    add(initial, u64::from(u16::from_be(native)))
}

/// Fold a 64-bit one's-complement sum to 16 bits.
fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn build(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let route = Route {
            src_mac: A,
            dst_mac: B,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        };
        let hlen = header_len(&route.dst.ip());
        let mut frame = vec![0u8; 2048];
        frame[hlen..hlen + payload.len()].copy_from_slice(payload);
        let n = write_headers(&mut frame, &route, payload.len(), 7).unwrap();
        frame.truncate(n);
        frame
    }

    #[test]
    fn ipv4_round_trip_and_known_checksums() {
        let f = build("10.77.0.1:10000", "10.77.0.2:40000", b"hello");
        assert_eq!(f.len(), 42 + 5);
        let r = parse(&f, 3).unwrap();
        assert_eq!(r.src, "10.77.0.1:10000".parse().unwrap());
        assert_eq!(r.dst, "10.77.0.2:40000".parse().unwrap());
        assert_eq!(r.src_mac, A);
        assert_eq!(&f[r.payload..r.payload + r.len], b"hello");
        // Ethernet padding to 60 bytes is ignored.
        let mut padded = f.clone();
        padded.resize(60, 0);
        assert_eq!(parse(&padded, 3).unwrap().len, 5);
        // A flipped payload bit fails the UDP checksum, a flipped TTL the header's.
        assert!(udp_checksum_ok(&f, &r));
        let mut bad = f.clone();
        bad[44] ^= 1;
        assert!(!udp_checksum_ok(&bad, &parse(&bad, 3).unwrap()));
        let mut bad = f.clone();
        bad[ETH_LEN + 8] ^= 1;
        assert_eq!(parse(&bad, 3), Err(FrameError::Checksum));
        // A zero UDP checksum means none over IPv4.
        let mut none = f.clone();
        none[40..42].copy_from_slice(&[0, 0]);
        assert!(udp_checksum_ok(&none, &parse(&none, 3).unwrap()));
    }

    #[test]
    fn sum_matches_sixteen_bit_big_endian_words_at_every_length() {
        let data: Vec<u8> = (0..1300u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..70).chain([1199, 1200, 1201, 1300]) {
            for initial in [0, 0x11, 0xffff_ffff, u64::MAX - 5] {
                // RFC 1071 as written: 16-bit words, an odd byte padded with zero.
                let mut naive = u128::from(initial);
                for w in data[..len].chunks(2) {
                    naive += u128::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
                }
                while naive > 0xffff {
                    naive = (naive & 0xffff) + (naive >> 16);
                }
                assert_eq!(
                    u128::from(fold(sum(&data[..len], initial))),
                    naive,
                    "length {len}, initial {initial:#x}"
                );
            }
        }
    }

    #[test]
    fn ipv4_header_checksum_matches_rfc1071_example() {
        // A classic header (from RFC 1071-style worked examples): checksum 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!fold(sum(&hdr, 0)), 0xb861);
    }

    #[test]
    fn ipv6_round_trip_with_scope() {
        let f = build("[fd77::1]:10000", "[fd77::2]:5000", &[0x80; 1200]);
        let r = parse(&f, 9).unwrap();
        assert_eq!(r.src, "[fd77::1]:10000".parse().unwrap());
        assert_eq!(r.len, 1200);
        let f = build("[fe80::1]:1", "[fe80::2]:2", b"x");
        let r = parse(&f, 9).unwrap();
        match r.src {
            SocketAddr::V6(a) => assert_eq!(a.scope_id(), 9),
            _ => unreachable!(),
        }
        assert!(udp_checksum_ok(&f, &r));
        let mut zero = f.clone();
        zero[ETH_LEN + IPV6_LEN + 6..ETH_LEN + IPV6_LEN + 8].copy_from_slice(&[0, 0]);
        assert!(!udp_checksum_ok(&zero, &parse(&zero, 9).unwrap()));
    }

    #[test]
    fn declines_what_it_cannot_parse() {
        let f = build("10.0.0.1:1", "10.0.0.2:2", b"abcd");
        for cut in [0, 13, 20, 33, 41] {
            assert!(parse(&f[..cut], 0).is_err(), "cut at {cut}");
        }
        let mut frag = f.clone();
        frag[ETH_LEN + 6] = 0x20; // MF
        assert_eq!(parse(&frag, 0), Err(FrameError::NotUdp));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp, 0), Err(FrameError::NotUdp));
        let route = Route {
            src_mac: A,
            dst_mac: B,
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "[fd77::2]:2".parse().unwrap(),
        };
        assert!(write_headers(&mut [0u8; 256], &route, 4, 0).is_none());
        let route = Route {
            dst: "10.0.0.2:2".parse().unwrap(),
            ..route
        };
        assert!(write_headers(&mut [0u8; 40], &route, 4, 0).is_none());
    }
}

//! The per-datagram parsing a worker does before any crypto or forwarding, on realistic
//! packets built with the library's own writers. Every benchmark reports one element
//! per operation (per datagram for `demux/classify`), so criterion's time per element
//! is the cost of one parse/check/write.
//!
//! - `rtp/parse`: `RtpHeader::parse` of a 1200-byte RTP packet with an RFC 6464
//!   audio-level one-byte extension, reading SSRC, sequence, payload and audio level.
//! - `rtcp/walk`: `rtcp::iter` over an SR (two report blocks) + SDES + PLI compound,
//!   reading packet types and media SSRCs. `rtcp/route_sr_compound` and
//!   `rtcp/route_rr_compound`: `forward::route_rtcp` on that compound (which an SR
//!   sends to everyone at its first packet) and on the same with an RR instead of the
//!   SR (walked to the end and routed to the reports' and PLI's senders).
//! - `stun/parse`, `stun/check`: `StunMessage::parse` of a browser-style ICE binding
//!   request (FINGERPRINT is checked during parsing), then with the ICE-lite
//!   `lite::check_request` (HMAC-SHA1 MESSAGE-INTEGRITY) as the bridge does per check.
//!   `stun/answer`: `write_binding_success` for an IPv4 peer into a buffer.
//! - `demux/classify`: the RFC 7983 first-byte split (STUN / DTLS / RTP-RTCP) plus
//!   `rtp::is_rtcp`, as the worker does, over a mix of STUN, DTLS, RTP and RTCP.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use viaduct_bridge::forward::{route_rtcp, RtcpRoute};
use viaduct_bridge::ice::{lite, stun};
use viaduct_bridge::{rtcp, rtp};

const RTP_LEN: usize = 1200;
const AUDIO_LEVEL_ID: u8 = 1;

const LOCAL_UFRAG: &[u8] = b"vdct4f2a";
const REMOTE_UFRAG: &[u8] = b"Xy7q";
const LOCAL_PWD: &[u8] = b"bridgepassword0123456789";
const TID: [u8; 12] = [
    0x5a, 0x1c, 0x03, 0x77, 0x9e, 0x21, 0x40, 0xb8, 0x0d, 0x66, 0xf1, 0x2e,
];

/// A 1200-byte Opus-like RTP packet with a voice-active audio level of -30 dBov.
fn rtp_packet(seq: u16) -> Vec<u8> {
    let mut buf = vec![0u8; RTP_LEN];
    let level = [0x80 | 30];
    let h = rtp::write_header(
        &mut buf,
        111,
        false,
        seq,
        0x1234_5678,
        0xCAFE_BABE,
        Some((AUDIO_LEVEL_ID, &level)),
    )
    .expect("rtp header");
    for (i, b) in buf[h..].iter_mut().enumerate() {
        *b = i as u8;
    }
    buf
}

/// Appends a report block (RFC 3550 6.4.1) about `ssrc`.
fn push_report_block(out: &mut Vec<u8>, ssrc: u32) {
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[0x10, 0x00, 0x00, 0x02]); // fraction lost, cumulative lost
    out.extend_from_slice(&0x0001_0005u32.to_be_bytes()); // extended highest seq
    out.extend_from_slice(&42u32.to_be_bytes()); // jitter
    out.extend_from_slice(&0x8000_1234u32.to_be_bytes()); // LSR
    out.extend_from_slice(&0x0000_4000u32.to_be_bytes()); // DLSR
}

/// Sets the report count and the length field of the report starting at `start`.
fn patch_report(out: &mut [u8], start: usize, count: u8) {
    let words = u16::try_from((out.len() - start) / 4 - 1).expect("length");
    out[start] = (out[start] & !0x1F) | count;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// SDES (RFC 3550 6.5) with one chunk: CNAME item, END, padding to a word.
fn push_sdes(out: &mut Vec<u8>, ssrc: u32, cname: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0x81, rtcp::SDES, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1); // CNAME
    out.push(u8::try_from(cname.len()).expect("cname"));
    out.extend_from_slice(cname);
    out.push(0); // END
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    patch_report(out, start, 1);
}

/// SR or RR from `SENDER` with report blocks about 0xA and 0xB, SDES CNAME, then a PLI
/// for 0xC: what a browser sends for one audio and two video streams it receives.
fn rtcp_compound(sender_report: bool) -> Vec<u8> {
    const SENDER: u32 = 0x1111_1111;
    let mut b = [0u8; 64];
    let mut out = Vec::new();
    let n = if sender_report {
        rtcp::write_sr(&mut b, SENDER, 0xE000_0000_8000_0000, 1000, 50, 6000)
    } else {
        rtcp::write_rr(&mut b, SENDER)
    }
    .expect("report");
    out.extend_from_slice(&b[..n]);
    push_report_block(&mut out, 0xA);
    push_report_block(&mut out, 0xB);
    patch_report(&mut out, 0, 2);
    push_sdes(&mut out, SENDER, b"{9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b}");
    let n = rtcp::write_pli(&mut b, SENDER, 0xC).expect("pli");
    out.extend_from_slice(&b[..n]);
    assert_eq!(rtcp::validate(&out), Ok(3));
    out
}

fn owner(ssrc: u32) -> Option<usize> {
    match ssrc {
        0xA => Some(1),
        0xB => Some(2),
        0xC => Some(3),
        _ => None,
    }
}

fn username() -> Vec<u8> {
    [LOCAL_UFRAG, b":", REMOTE_UFRAG].concat()
}

/// A nominating connectivity check from a controlling browser.
fn binding_request() -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = stun::write_binding_request(
        &mut buf,
        &TID,
        &username(),
        LOCAL_PWD,
        0x6E7F_1EFF,
        0x1B2C_3D4E_5F60_7182,
        true,
    )
    .expect("binding request");
    buf.truncate(n);
    buf
}

fn rtp_parse(c: &mut Criterion) {
    let pkt = rtp_packet(4711);
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| {
            let h = rtp::RtpHeader::parse(black_box(&pkt)).expect("rtp");
            (
                h.ssrc(),
                h.sequence(),
                h.payload().len(),
                h.audio_level(AUDIO_LEVEL_ID),
            )
        })
    });
    group.finish();
}

fn rtcp_benches(c: &mut Criterion) {
    let sr = rtcp_compound(true);
    let rr = rtcp_compound(false);
    assert_eq!(route_rtcp(&sr, 0, owner), RtcpRoute::Everyone);
    assert!(matches!(
        route_rtcp(&rr, 0, owner),
        RtcpRoute::Only { len: 3, .. }
    ));
    let mut group = c.benchmark_group("rtcp");
    group.throughput(Throughput::Elements(1));
    group.bench_function("walk", |b| {
        b.iter(|| {
            let mut types = 0u32;
            let mut media = 0u32;
            for p in rtcp::iter(black_box(&sr)).flatten() {
                types = types.wrapping_add(u32::from(p.packet_type()));
                media ^= p.media_ssrc().unwrap_or(0);
            }
            (types, media)
        })
    });
    group.bench_function("route_sr_compound", |b| {
        b.iter(|| route_rtcp(black_box(&sr), 0, owner))
    });
    group.bench_function("route_rr_compound", |b| {
        b.iter(|| route_rtcp(black_box(&rr), 0, owner))
    });
    group.finish();
}

fn stun_benches(c: &mut Criterion) {
    let req = binding_request();
    let msg = stun::StunMessage::parse(&req).expect("stun");
    assert_eq!(
        lite::check_request(&msg, LOCAL_PWD, Some(REMOTE_UFRAG)),
        Ok(true)
    );
    let mut group = c.benchmark_group("stun");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| stun::StunMessage::parse(black_box(&req)).expect("stun"))
    });
    group.bench_function("check", |b| {
        b.iter(|| {
            let msg = stun::StunMessage::parse(black_box(&req)).expect("stun");
            lite::check_request(&msg, black_box(LOCAL_PWD), Some(REMOTE_UFRAG))
        })
    });
    let peer: SocketAddr = "203.0.113.45:54321".parse().expect("addr");
    let mut out = [0u8; 128];
    group.bench_function("answer", |b| {
        b.iter(|| {
            stun::write_binding_success(&mut out, black_box(&TID), black_box(peer), LOCAL_PWD)
                .expect("answer")
        })
    });
    group.finish();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

/// The worker's RFC 7983 demux (`Worker::on_datagram`).
fn classify(buf: &[u8]) -> Kind {
    let Some(&first) = buf.first() else {
        return Kind::Other;
    };
    if stun::is_stun(first) {
        return Kind::Stun;
    }
    match first {
        20..=63 => Kind::Dtls,
        128..=191 => {
            if rtp::is_rtcp(buf) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Other,
    }
}

fn demux(c: &mut Criterion) {
    // A DTLS 1.2 application-data record header plus some body.
    let mut dtls = vec![23u8, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 7, 0, 32];
    dtls.resize(13 + 32, 0xAB);
    let mut marker = rtp_packet(1);
    rtp::set_marker(&mut marker, true);
    // Mostly media, as on a loaded port: 5 RTP, 1 RTCP, 1 STUN, 1 DTLS.
    let mix: Vec<Vec<u8>> = vec![
        rtp_packet(1),
        rtp_packet(2),
        binding_request(),
        rtp_packet(3),
        rtcp_compound(false),
        marker,
        dtls,
        rtp_packet(4),
    ];
    let kinds: Vec<Kind> = mix.iter().map(|d| classify(d)).collect();
    for k in [Kind::Stun, Kind::Dtls, Kind::Rtp, Kind::Rtcp] {
        assert!(kinds.contains(&k), "{k:?} missing from the mix");
    }
    assert!(!kinds.contains(&Kind::Other));
    let mut group = c.benchmark_group("demux");
    group.throughput(Throughput::Elements(mix.len() as u64));
    group.bench_function("classify", |b| {
        b.iter(|| {
            let mut counts = [0u32; 5];
            for d in black_box(&mix) {
                counts[classify(d) as usize] += 1;
            }
            counts
        })
    });
    group.finish();
}

criterion_group!(benches, rtp_parse, rtcp_benches, stun_benches, demux);
criterion_main!(benches);

//! The per-packet path of a worker without sockets: one SRTP packet from a sender is
//! authenticated and decrypted once, then encrypted for each of N receivers into the
//! send batch (N = 1, 9, 49), for both SRTP profiles. Throughput is in forwarded
//! packets, so criterion's time per element is the cost per forwarded packet.
//! Also: SRTP protect/unprotect alone, and webrtc-srtp on the same packet for scale.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use viaduct_bridge::srtp::{Context, Profile, SessionKeys};
use viaduct_bridge::testbed::Testbed;

const PAYLOAD: usize = 1188; // 1200-byte RTP packets

fn profiles() -> [(Profile, &'static str); 2] {
    [
        (Profile::AeadAes128Gcm, "gcm"),
        (Profile::Aes128CmHmacSha1_80, "cm_sha1_80"),
    ]
}

fn fan_out(c: &mut Criterion) {
    for (profile, name) in profiles() {
        let mut group = c.benchmark_group(format!("forward/{name}"));
        for receivers in [1usize, 9, 49] {
            let mut bed = Testbed::new(profile, receivers).expect("testbed");
            group.throughput(Throughput::Elements(receivers as u64));
            group.bench_function(format!("{receivers}_receivers"), |b| {
                let mut buf = vec![0u8; 1500];
                b.iter_custom(|iters| {
                    // Packets are made outside the timed region (the sender's cost).
                    let mut packets = Vec::with_capacity(iters as usize);
                    for _ in 0..iters {
                        let n = bed.next_packet(&mut buf, PAYLOAD).expect("packet");
                        packets.push(buf[..n].to_vec());
                    }
                    let start = std::time::Instant::now();
                    for p in &mut packets {
                        let sent = bed.forward(p);
                        debug_assert_eq!(sent, receivers);
                    }
                    start.elapsed()
                });
            });
        }
        group.finish();
    }
}

fn keys(profile: Profile) -> (Context, Context) {
    let len = 2 * (profile.master_key_len() + profile.master_salt_len());
    let material: Vec<u8> = (0..len as u8).collect();
    let client = SessionKeys::from_dtls(profile, &material, true).expect("keys");
    let server = SessionKeys::from_dtls(profile, &material, false).expect("keys");
    (
        client.outbound().expect("ctx"),
        server.inbound().expect("ctx"),
    )
}

fn srtp(c: &mut Criterion) {
    for (profile, name) in profiles() {
        let mut group = c.benchmark_group(format!("srtp/{name}"));
        group.throughput(Throughput::Elements(1));
        let (mut tx, mut rx) = keys(profile);
        let mut buf = vec![0u8; 1500];
        let mut seq = 0u16;
        buf[0] = 0x80;
        buf[1] = 111;
        buf[8..12].copy_from_slice(&0x1234u32.to_be_bytes());
        group.bench_function("protect_1200B", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.protect_rtp(&mut buf, 12 + PAYLOAD).expect("protect")
            })
        });
        let (mut tx, mut rx2) = keys(profile);
        std::mem::swap(&mut rx, &mut rx2);
        let mut s = 0u16;
        group.bench_function("unprotect_1200B", |b| {
            b.iter_batched_ref(
                || {
                    s = s.wrapping_add(1);
                    let mut p = vec![0u8; 1500];
                    p[0] = 0x80;
                    p[1] = 111;
                    p[2..4].copy_from_slice(&s.to_be_bytes());
                    p[8..12].copy_from_slice(&0x1234u32.to_be_bytes());
                    let n = tx.protect_rtp(&mut p, 12 + PAYLOAD).expect("protect");
                    p.truncate(n);
                    p
                },
                |p| rx.unprotect_rtp(p).expect("unprotect"),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn oracle(c: &mut Criterion) {
    use webrtc_srtp::protection_profile::ProtectionProfile as P;
    for (profile, theirs, name) in [
        (Profile::AeadAes128Gcm, P::AeadAes128Gcm, "gcm"),
        (
            Profile::Aes128CmHmacSha1_80,
            P::Aes128CmHmacSha1_80,
            "cm_sha1_80",
        ),
    ] {
        let key: Vec<u8> = (0..16).collect();
        let salt: Vec<u8> = (0..profile.master_salt_len() as u8).collect();
        let mut ctx =
            webrtc_srtp::context::Context::new(&key, &salt, theirs, None, None).expect("ctx");
        let mut pkt = vec![0u8; 12 + PAYLOAD];
        pkt[0] = 0x80;
        pkt[1] = 111;
        pkt[8..12].copy_from_slice(&0x1234u32.to_be_bytes());
        let mut seq = 0u16;
        let mut group = c.benchmark_group(format!("webrtc_srtp/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("encrypt_rtp_1200B", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                ctx.encrypt_rtp(&pkt).expect("encrypt")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, fan_out, srtp, oracle);
criterion_main!(benches);

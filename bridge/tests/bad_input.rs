//! Bad input against a running call: each kind is dropped or refused and counted, the
//! bridge does not crash, and the call keeps relaying afterwards.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{ssrc_of, Call};
use std::sync::Arc;
use viaduct_bridge::command::protocol::{
    ErrorCode, Event, FromBridge, MediaKind, MediaSource, Reply, RequestBody,
};
use viaduct_bridge::dtls::{self, Identity, Role};
use viaduct_bridge::ice::stun;
use viaduct_bridge::peer::{Incoming, Peer};
use viaduct_bridge::srtp::Profile;

fn call() -> Call {
    Call::start("auto", Profile::AeadAes128Gcm, 3)
}

fn bridge_addr(call: &Call) -> std::net::SocketAddr {
    call.peers[0].bridge_addr().unwrap()
}

/// Asserts no peer receives anything within a short while.
fn assert_quiet(call: &mut Call) {
    for p in &mut call.peers {
        while let Some(m) = p.recv(Duration::from_millis(50)).unwrap() {
            assert!(matches!(m, Incoming::Control), "unexpected delivery: {m:?}");
        }
    }
}

fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn packets_from_unknown_address_are_dropped() {
    let mut call = Call::start("auto", Profile::AeadAes128Gcm, 3);
    let stranger = UdpSocket::bind(call.loopback).unwrap();
    let target = bridge_addr(&call);
    // An RTP-looking, a DTLS-looking and a junk datagram, plus a copy of a valid SRTP
    // packet replayed from the wrong address.
    let valid = call.peers[0]
        .protect_rtp(ssrc_of(0), 5000, 1, false, b"hello")
        .unwrap();
    for d in [
        &[0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..],
        &[22, 254, 253, 0][..],
        &[0xff; 40][..],
        &valid[..],
    ] {
        stranger.send_to(d, target).unwrap();
    }
    settle();
    assert_quiet(&mut call);
    let stats = call.link.stats();
    assert_eq!(stats.totals.drops.unbound_source, 4);
    call.exchange(10);
}

#[test]
fn forged_message_integrity_is_refused() {
    let mut call = call();
    let target = bridge_addr(&call);
    let alloc = call.allocations[0].clone();
    let peer_ice = call.peers[0].ice_credentials();
    let attacker = UdpSocket::bind(call.loopback).unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 512];
    let username = format!("{}:{}", alloc.ice.ufrag, peer_ice.ufrag);
    let n = stun::write_binding_request(
        &mut buf,
        &[9; 12],
        username.as_bytes(),
        b"not-the-password-at-all",
        1,
        7,
        true,
    )
    .unwrap();
    attacker.send_to(&buf[..n], target).unwrap();
    // No answer, and the endpoint is not re-bound to the attacker.
    assert!(attacker.recv_from(&mut buf).is_err());
    let stats = call.link.stats();
    assert_eq!(stats.totals.drops.stun_integrity, 1);
    call.exchange(10);
}

#[test]
fn tampered_srtp_is_refused() {
    let mut call = call();
    let seq = call.next_seq(0);
    let mut pkt = call.peers[0]
        .protect_rtp(ssrc_of(0), seq, 1, false, b"tamper me")
        .unwrap();
    let mid = pkt.len() / 2;
    pkt[mid] ^= 0x40;
    call.peers[0].send_raw(&pkt).unwrap();
    settle();
    assert_quiet(&mut call);
    assert_eq!(call.link.stats().totals.drops.srtp_auth, 1);
    call.exchange(10);
}

#[test]
fn replayed_srtp_is_refused() {
    let mut call = call();
    let seq = call.next_seq(0);
    let pkt = call.peers[0]
        .protect_rtp(ssrc_of(0), seq, 1, false, b"only once")
        .unwrap();
    for _ in 0..3 {
        call.peers[0].send_raw(&pkt).unwrap();
    }
    settle();
    for p in &mut call.peers[1..] {
        let mut got = 0;
        while let Some(m) = p.recv(Duration::from_millis(100)).unwrap() {
            if let Incoming::Rtp { payload, .. } = m {
                assert_eq!(&payload[..], b"only once");
                got += 1;
            }
        }
        assert_eq!(got, 1, "a replayed packet was forwarded");
    }
    assert_eq!(call.link.stats().totals.drops.srtp_replay, 2);
    call.exchange(10);
}

#[test]
fn truncated_and_garbage_stun_rtp_rtcp_are_dropped() {
    let mut call = call();
    let p = &call.peers[0];
    let mut stun_buf = [0u8; 512];
    let n =
        stun::write_binding_request(&mut stun_buf, &[3; 12], b"a:b", b"pw", 1, 1, false).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        stun_buf[..n - 7].to_vec(),                          // truncated STUN
        vec![0, 1, 0, 200, 0x21, 0x12, 0xa4, 0x42],          // STUN header claiming 200 bytes
        vec![0x00; 20],                                      // no magic cookie
        vec![0x80],                                          // one-byte RTP
        vec![0x80, 111, 0, 1, 0, 0],                         // truncated RTP header
        vec![0x8f, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],       // 15 CSRCs announced, none there
        vec![0x81, 200, 0, 50, 0, 0, 0, 1],                  // RTCP claiming 204 bytes
        vec![0x81, 201, 0, 1],                               // truncated RTCP
        (0..300u16).map(|i| (i * 7) as u8 | 0x80).collect(), // random-ish RTP
        vec![64; 10],                                        // first byte in no RFC 7983 range
        vec![],                                              // empty datagram
    ];
    for c in &cases {
        p.send_raw(c).unwrap();
    }
    settle();
    assert_quiet(&mut call);
    let d = call.link.stats().totals.drops;
    let total = d.stun_malformed + d.malformed + d.srtp_auth + d.srtp_replay;
    assert_eq!(
        total as usize,
        cases.len(),
        "every bad datagram counted once: {d:?}"
    );
    assert!(call.bridge.is_running());
    call.exchange(10);
}

#[test]
fn dtls_peer_with_wrong_certificate_fails() {
    let mut call = call();
    let alloc = match call.link.request(RequestBody::CreateEndpoint {
        conference: "call".into(),
        endpoint: "impostor".into(),
    }) {
        Ok(Reply::EndpointCreated(a)) => a,
        other => panic!("{other:?}"),
    };
    let identity = Arc::new(Identity::generate().unwrap());
    let handle = dtls::spawn(identity.clone(), Role::Client, "impostor-dtls").unwrap();
    let mut impostor = Peer::bind(call.loopback.parse().unwrap(), handle, identity).unwrap();
    let other = Identity::generate().unwrap();
    let mut fp = impostor.fingerprint();
    fp.value = other.fingerprint().to_owned(); // signal someone else's certificate
    call.link
        .request(RequestBody::UpdateEndpoint {
            conference: "call".into(),
            endpoint: "impostor".into(),
            ice: Some(impostor.ice_credentials()),
            fingerprint: Some(fp),
            sources: Some(vec![MediaSource {
                kind: MediaKind::Audio,
                ssrcs: vec![77],
                groups: vec![],
                name: None,
            }]),
            force_mute: None,
        })
        .unwrap();
    assert!(impostor
        .connect(&alloc, std::time::Duration::from_secs(5))
        .is_err());
    let ev = call.link.wait_event(
        |e| matches!(e, Event::EndpointFailed { endpoint, .. } if endpoint == "impostor"),
    );
    assert!(matches!(ev, Event::EndpointFailed { reason, .. } if reason.contains("fingerprint")));
    assert_eq!(call.link.stats().dtls_failed, 1);
    // The impostor receives nothing of the call; the others carry on.
    call.exchange(10);
    while let Some(m) = impostor.recv(Duration::from_millis(50)).unwrap() {
        assert!(!matches!(m, Incoming::Rtp { .. }), "impostor got media");
    }
}

#[test]
fn garbage_on_the_command_socket_gets_an_error() {
    let mut call = call();
    for line in [
        "this is not json",
        "{\"id\":5,\"type\":\"reboot\"}",
        "{\"id\":6}",
        "[1,2,3]",
        "{\"id\":7,\"type\":\"create-endpoint\",\"conference\":42}",
    ] {
        call.link.send_line(line);
        match call.link.read() {
            FromBridge::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    // Requests about things that do not exist get their own codes.
    assert_eq!(
        call.link
            .request(RequestBody::ExpireConference {
                conference: "nope".into()
            })
            .unwrap_err()
            .0,
        ErrorCode::ConferenceNotFound
    );
    assert_eq!(
        call.link
            .request(RequestBody::ExpireEndpoint {
                conference: "call".into(),
                endpoint: "nope".into()
            })
            .unwrap_err()
            .0,
        ErrorCode::UnknownEndpoint
    );
    assert_eq!(
        call.link
            .request(RequestBody::CreateConference {
                conference: "call".into()
            })
            .unwrap_err()
            .0,
        ErrorCode::ConferenceAlreadyExists
    );
    assert_eq!(
        call.link
            .request(RequestBody::CreateEndpoint {
                conference: "call".into(),
                endpoint: "ep0".into()
            })
            .unwrap_err()
            .0,
        ErrorCode::EndpointAlreadyExists
    );
    call.exchange(10);
}

#[test]
fn feedback_is_routed_to_the_media_sender() {
    let mut call = call();
    // Peer 2 asks peer 1 for a keyframe, from a sender SSRC nobody signalled.
    let mut pli = [0u8; 12];
    let n = viaduct_bridge::rtcp::write_pli(&mut pli, 0xDEAD_BEEF, ssrc_of(1)).unwrap();
    call.peers[2].send_rtcp(&pli[..n]).unwrap();
    let mut got = false;
    while let Some(m) = call.peers[1].recv(Duration::from_millis(200)).unwrap() {
        if let Incoming::Rtcp(c) = m {
            assert_eq!(&c[..], &pli[..n]);
            got = true;
        }
    }
    assert!(got, "the media sender did not get the PLI");
    for p in [0usize, 2] {
        while let Some(m) = call.peers[p].recv(Duration::from_millis(50)).unwrap() {
            assert!(
                !matches!(m, Incoming::Rtcp(_)),
                "peer {p} got someone else's PLI"
            );
        }
    }
    call.exchange(5);
}

#[test]
fn consent_expiry_expires_the_endpoint() {
    let mut bridge = common::Bridge::start("auto", &["--consent-timeout", "1"]);
    let mut link = bridge.link();
    drop(
        link.request(RequestBody::CreateConference {
            conference: "c".into(),
        })
        .unwrap(),
    );
    let alloc = match link.request(RequestBody::CreateEndpoint {
        conference: "c".into(),
        endpoint: "quiet".into(),
    }) {
        Ok(Reply::EndpointCreated(a)) => a,
        other => panic!("{other:?}"),
    };
    let identity = Arc::new(Identity::generate().unwrap());
    let handle = dtls::spawn(identity.clone(), Role::Client, "quiet-dtls").unwrap();
    let mut peer = Peer::bind(common::peer_bind(false).parse().unwrap(), handle, identity).unwrap();
    link.request(RequestBody::UpdateEndpoint {
        conference: "c".into(),
        endpoint: "quiet".into(),
        ice: Some(peer.ice_credentials()),
        fingerprint: Some(peer.fingerprint()),
        sources: None,
        force_mute: None,
    })
    .unwrap();
    peer.connect(&alloc, Duration::from_secs(5)).unwrap();
    // No more checks from the peer: consent lapses after 1 s.
    let ev = link.wait_event(|e| matches!(e, Event::EndpointExpired { .. }));
    assert!(
        matches!(ev, Event::EndpointExpired { endpoint, reason, .. } if endpoint == "quiet" && reason == "consent-expired")
    );
    assert_eq!(link.stats().endpoints, 0);
}

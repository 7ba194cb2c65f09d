//! Acceptance: a real `viaduct-bridge` process on loopback relays a 3-peer conference —
//! ICE, DTLS, SRTP and SRTCP — on both I/O backends and both SRTP profiles, and every
//! peer receives and decrypts exactly the other two peers' payloads.

mod common;

use std::time::Duration;

use common::Call;
use viaduct_bridge::command::protocol::{Event, Reply, RequestBody};
use viaduct_bridge::peer::Peer;
use viaduct_bridge::srtp::Profile;

fn three_peer_call(backend: &str, profile: Profile) {
    let mut call = Call::start(backend, profile, 3);
    call.exchange(20);
    call.exchange(5);
    let stats = call.link.stats();
    assert_eq!(stats.io_backend, common::expected_backend(backend));
    assert_eq!(stats.endpoints, 3);
    assert_eq!(stats.dtls_succeeded, 3);
    assert_eq!(stats.totals.rtp_in, 3 * 25);
    assert_eq!(stats.totals.rtcp_in, 3 * 2);
    assert_eq!(
        stats.totals.drops,
        Default::default(),
        "no drops in a clean call"
    );
    for ep in &stats.endpoint_stats {
        assert!(ep.connected);
        assert_eq!(ep.counters.rtp_in, 25, "{}", ep.endpoint);
    }
    // Tear down through the link.
    call.link
        .request(RequestBody::ExpireConference {
            conference: "call".into(),
        })
        .unwrap();
    assert!(
        matches!(call.link.request(RequestBody::Stats), Ok(Reply::Stats(s)) if s.endpoints == 0)
    );
    assert!(call.bridge.is_running());
}

#[test]
fn call_uring_gcm() {
    three_peer_call("uring", Profile::AeadAes128Gcm);
}

#[test]
fn call_uring_cm_sha1() {
    three_peer_call("uring", Profile::Aes128CmHmacSha1_80);
}

#[test]
fn call_mmsg_gcm() {
    three_peer_call("mmsg", Profile::AeadAes128Gcm);
}

#[test]
fn call_mmsg_cm_sha1() {
    three_peer_call("mmsg", Profile::Aes128CmHmacSha1_80);
}

#[test]
fn call_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let mut call = Call::start_on("auto", Profile::AeadAes128Gcm, 3, "::1");
    let want = if common::Net::from_env() == common::Net::Xdp {
        common::netns::BRIDGE_V6
    } else {
        "::1"
    };
    assert!(call.allocations[0].candidates[0].ip == want);
    call.exchange(10);
}

#[test]
fn a_nominating_check_from_a_new_address_moves_the_endpoint() {
    let mut call = Call::start("auto", Profile::AeadAes128Gcm, 3);
    call.exchange(5);
    let old = call.peers[1].local_addr().unwrap();
    call.peers[1]
        .rebind(call.loopback.parse().unwrap())
        .unwrap();
    call.peers[1].send_check(true).unwrap();
    // The success response arrives on the new socket.
    let mut answered = false;
    while let Some(m) = call.peers[1]
        .recv(std::time::Duration::from_millis(300))
        .unwrap()
    {
        answered |= m == viaduct_bridge::peer::Incoming::Control;
    }
    assert!(answered, "no answer to the check from the new address");
    call.exchange(10);
    let stats = call.link.stats();
    let ep1 = stats
        .endpoint_stats
        .iter()
        .find(|e| e.endpoint == "ep1")
        .unwrap();
    let now = call.peers[1].local_addr().unwrap();
    assert_ne!(old, now);
    assert_eq!(ep1.remote.as_deref(), Some(now.to_string().as_str()));
}

#[test]
fn an_endpoint_that_never_checks_is_reported_failed() {
    let mut bridge = common::Bridge::start("auto", &["--consent-timeout", "1"]);
    let mut link = bridge.link();
    link.request(RequestBody::CreateConference {
        conference: "c".into(),
    })
    .unwrap();
    link.request(RequestBody::CreateEndpoint {
        conference: "c".into(),
        endpoint: "ghost".into(),
    })
    .unwrap();
    let ev = link.wait_event(|e| {
        matches!(
            e,
            viaduct_bridge::command::protocol::Event::EndpointFailed { .. }
        )
    });
    assert!(
        matches!(ev, viaduct_bridge::command::protocol::Event::EndpointFailed { endpoint, reason, .. } if endpoint == "ghost" && reason == "ice-timeout")
    );
}

#[test]
fn force_mute_drops_and_counts_then_unmute_restores() {
    use viaduct_bridge::command::protocol::ForceMute;
    use viaduct_bridge::peer::Incoming;
    let mut call = Call::start("auto", Profile::AeadAes128Gcm, 3);
    let mute = |call: &mut Call, audio: bool| {
        call.link
            .request(RequestBody::UpdateEndpoint {
                conference: "call".into(),
                endpoint: "ep0".into(),
                ice: None,
                fingerprint: None,
                sources: None,
                force_mute: Some(ForceMute {
                    audio,
                    video: false,
                }),
            })
            .unwrap();
    };
    mute(&mut call, true);
    for _ in 0..5 {
        let seq = call.next_seq(0);
        call.peers[0]
            .send_rtp(common::ssrc_of(0), seq, 0, false, b"muted speech")
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    for p in &mut call.peers[1..] {
        while let Some(m) = p.recv(std::time::Duration::from_millis(50)).unwrap() {
            assert!(
                !matches!(m, Incoming::Rtp { .. }),
                "muted audio was forwarded"
            );
        }
    }
    let stats = call.link.stats();
    assert_eq!(stats.totals.drops.muted, 5);
    let ep0 = stats
        .endpoint_stats
        .iter()
        .find(|e| e.endpoint == "ep0")
        .unwrap();
    assert_eq!(
        ep0.counters.audio_in, 5,
        "declared audio SSRC counted as audio"
    );
    mute(&mut call, false);
    call.exchange(5);
}

/// A browser starts its DTLS handshake as soon as it has sent its answer; the answer
/// (with the fingerprint) may reach the bridge later. The bridge holds the first
/// records and replays them when the fingerprint arrives, dropping none.
#[test]
fn a_handshake_that_starts_before_the_fingerprint_arrives_completes() {
    let mut call = Call::start("mmsg", Profile::AeadAes128Gcm, 0);
    let alloc = match call.link.request(RequestBody::CreateEndpoint {
        conference: "call".into(),
        endpoint: "early".into(),
    }) {
        Ok(Reply::EndpointCreated(a)) => a,
        other => panic!("create endpoint: {other:?}"),
    };
    let mut peer = Peer::bind(
        call.loopback.parse().unwrap(),
        call.dtls.clone(),
        call.identity.clone(),
    )
    .unwrap();
    let (ice, fingerprint) = (peer.ice_credentials(), peer.fingerprint());
    // ICE and the ClientHello go out now; the fingerprint follows 300 ms later.
    let connecting =
        std::thread::spawn(move || peer.connect(&alloc, Duration::from_secs(10)).map(|_| peer));
    std::thread::sleep(Duration::from_millis(300));
    call.link
        .request(RequestBody::UpdateEndpoint {
            conference: "call".into(),
            endpoint: "early".into(),
            ice: Some(ice),
            fingerprint: Some(fingerprint),
            sources: None,
            force_mute: None,
        })
        .expect("update endpoint");
    connecting.join().unwrap().expect("the handshake completes");
    call.link.wait_event(
        |e| matches!(e, Event::EndpointConnected { endpoint, .. } if endpoint == "early"),
    );
    let stats = call.link.stats();
    let ep = stats
        .endpoint_stats
        .iter()
        .find(|e| e.endpoint == "early")
        .unwrap();
    assert_eq!(
        ep.counters.drops.dtls_no_fingerprint, 0,
        "early records were held, not dropped"
    );
}

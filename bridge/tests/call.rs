//! Acceptance: a real `viaduct-bridge` process on loopback relays a 3-peer conference —
//! ICE, DTLS, SRTP and SRTCP — on both I/O backends and both SRTP profiles, and every
//! peer receives and decrypts exactly the other two peers' payloads.

mod common;

use common::Call;
use viaduct_bridge::command::protocol::{Reply, RequestBody};
use viaduct_bridge::srtp::Profile;

fn three_peer_call(backend: &str, profile: Profile) {
    let mut call = Call::start(backend, profile, 3);
    call.exchange(20);
    call.exchange(5);
    let stats = call.link.stats();
    assert_eq!(stats.io_backend, backend);
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

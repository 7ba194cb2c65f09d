//! End to end: real `viaduct-bridge` and `viaduct-control` processes; a colibri2 client
//! written from JVB's documented JSON allocates a call, synthetic peers complete
//! ICE/DTLS/SRTP through the bridge, and stats, metrics and records follow.

mod common;

use std::time::{Duration, Instant};

use common::{colibri2_call, exchange, Peers, Stack};
use serde_json::{json, Value};
use viaduct_bridge::peer::{Incoming, Peer};

const MEETING: &str = "beccf2ed-5441-4bfe-96d0-f0cb9d5b3e6a";

fn create_body(ids: &[&str]) -> Value {
    json!({
        "meeting-id": MEETING, "name": "room@muc.example", "create": true, "rtcstats-enabled": false,
        "endpoints": ids.iter().map(|id| json!({
            "create": true, "id": id, "stats-id": format!("{id}-stats"), "muc-role": "participant",
            "medias": [{"type": "audio", "payload-types": [{"name": "opus", "id": "111", "channels": "2", "clockrate": "48000"}],
                        "rtp-hdrexts": [{"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1}]}],
            "transport": {"ice-controlling": true},
            "capabilities": ["source-names"]
        })).collect::<Vec<_>>()
    })
}

/// Creates a 2-endpoint conference through colibri2 (with every field a Jicofo sends)
/// and connects two peers.
fn call(stack: &Stack, peers: &Peers) -> Vec<Peer> {
    let (created, out) = colibri2_call(stack, peers, MEETING, &create_body(&["alice", "bob"]));
    let eps = created["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(
        eps[0]["transport"]["transport"]["xmlns"],
        "urn:xmpp:jingle:transports:ice-udp:1"
    );
    assert_eq!(created["sources"][0]["id"], "jvb-a0");
    out
}

fn promtool_check(text: &str) {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        if std::env::var("VIADUCT_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
            panic!("promtool is required (apt-get install prometheus)");
        }
        eprintln!("SKIPPED promtool check: promtool not installed");
        return;
    };
    assert!(out.status.success());
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn colibri2_call_with_stats_metrics_and_records() {
    let stack = Stack::new(true);
    stack.wait_healthy();
    let peers = Peers::new();
    let mut call = call(&stack, &peers);
    assert_eq!(exchange(&mut call, 1, 50), vec![50, 50]);

    // Keep media flowing until a stats sample sees it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 100;
    let stats = loop {
        assert_eq!(exchange(&mut call, seq, 10), vec![10, 10]);
        seq += 10;
        let s = stack.stats();
        // A sample may land between the first exchange's packets: wait for one that
        // counts all of them, not only for the first that moved.
        if s["bit_rate_download"].as_f64().unwrap() > 0.0
            && s["endpoints_sending_audio"] == 2
            && s["total_packets_received"].as_u64().unwrap() >= 100
        {
            break s;
        }
        assert!(Instant::now() < deadline, "stats never moved: {s}");
    };
    assert_eq!(stats["conferences"], 1);
    assert_eq!(stats["endpoints"], 2);
    assert_eq!(stats["largest_conference"], 2);
    assert!(stats["packet_rate_upload"].as_f64().unwrap() > 0.0);
    assert!(stats["total_packets_received"].as_u64().unwrap() >= 100);
    assert_eq!(stats["total_ice_succeeded"], 2);
    assert_eq!(stats["total_conferences_created"], 1);
    assert_eq!(stats["healthy"], true);
    assert_eq!(stats["graceful_shutdown"], false);
    assert!(stats["stress_level"].as_f64().unwrap() > 0.0);
    assert!(stats["current_timestamp"].as_str().unwrap().len() == 23);

    let m = stack.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    assert!(
        metric(&m.body, "viaduct_packets_received_total") >= 100.0,
        "{}",
        m.body
    );
    assert_eq!(metric(&m.body, "viaduct_endpoints "), 2.0);
    assert_eq!(metric(&m.body, "viaduct_ice_succeeded_total"), 2.0);
    assert_eq!(metric(&m.body, "viaduct_bridge_link_up"), 1.0);
    promtool_check(&m.body);

    // Every other packet "lost" on the way in: the stats see about half missing.
    for k in 0..100u16 {
        let seq = 20_000 + 2 * k;
        call[0]
            .send_rtp(1000, seq, u32::from(seq) * 960, false, b"gap")
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0.0;
    while Instant::now() < deadline && seen < 0.3 {
        seen = stack.stats()["incoming_loss"].as_f64().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!((0.3..=0.7).contains(&seen), "incoming_loss {seen}");
    // Bob reports losing half of Alice's stream: the outgoing loss says so.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend(1001u32.to_be_bytes()); // Bob's SSRC
    rr.extend(1000u32.to_be_bytes()); // about Alice's
    rr.extend([128, 0, 0, 10]); // fraction lost 128/256, cumulative 10
    rr.extend([0u8; 16]); // highest seq, jitter, LSR, DLSR
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0.0;
    while Instant::now() < deadline && seen < 0.4 {
        call[1].send_rtcp(&rr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        seen = stack.stats()["outgoing_loss"].as_f64().unwrap();
    }
    assert!((seen - 0.5).abs() < 1e-6, "outgoing_loss {seen}");

    // Round trip: Alice's sender report reaches Bob through the bridge; Bob answers
    // 30 ms later naming it (LSR) with a hold (DLSR) of 10 ms. The bridge times the
    // leg between the forward and the answer: at least 20 ms on loopback.
    let ntp: u64 = 0xe6a1_0000_8000_0000;
    let lsr = (ntp >> 16) as u32;
    let mut sr = vec![0x80, 200, 0, 6];
    sr.extend(1000u32.to_be_bytes()); // Alice's SSRC
    sr.extend(ntp.to_be_bytes());
    sr.extend([0u8; 12]); // RTP timestamp, packet and octet counts
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend(1001u32.to_be_bytes()); // Bob's SSRC
    rr.extend(1000u32.to_be_bytes()); // about Alice's
    rr.extend([0u8; 12]); // nothing lost; highest seq, jitter
    rr.extend(lsr.to_be_bytes());
    rr.extend(655u32.to_be_bytes()); // 10 ms in 1/65536 s
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rtt_ms = 0.0;
    while Instant::now() < deadline && rtt_ms == 0.0 {
        call[0].send_rtcp(&sr).unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Some(Incoming::Rtcp(got)) = call[1].recv(Duration::from_millis(50)).unwrap() {
                if got.get(1) == Some(&200) && got.get(4..8) == Some(&1000u32.to_be_bytes()[..]) {
                    std::thread::sleep(Duration::from_millis(30));
                    call[1].send_rtcp(&rr).unwrap();
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        rtt_ms = stack.stats()["rtt_aggregate"].as_f64().unwrap();
    }
    assert!(
        (20.0..1000.0).contains(&rtt_ms),
        "rtt_aggregate {rtt_ms} ms"
    );
    let m = stack.get("/metrics");
    let rtt_s = metric(&m.body, "viaduct_rtt_seconds");
    assert!((0.02..1.0).contains(&rtt_s), "viaduct_rtt_seconds {rtt_s}");

    // Expire one endpoint, then the conference.
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"endpoints": [{"id": "bob", "expire": true}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["endpoints"][0]["expire"], true);
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"expire": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"endpoints": []}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.reason(), "CONFERENCE_NOT_FOUND");

    let r = stack.request(
        "GET",
        &format!("/conferences/{MEETING}"),
        None,
        Some(common::SECRET),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = r.json();
    assert_eq!(rec["peak_participants"], 2);
    assert_eq!(rec["participants_total"], 2);
    assert_eq!(rec["name"], "room@muc.example");
    assert!(rec["duration_ms"].as_i64().unwrap() >= 0);
    let kinds: Vec<&str> = rec["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "conference_created",
        "endpoint_joined",
        "endpoint_connected",
        "endpoint_left",
        "conference_expired",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    let s = stack.stats();
    assert_eq!(s["total_conferences_completed"], 1);
}

#[test]
fn control_restart_loses_no_media_and_reconciles() {
    let mut stack = Stack::new(true);
    stack.wait_healthy();
    let peers = Peers::new();
    let mut call = call(&stack, &peers);
    assert_eq!(exchange(&mut call, 1, 20), vec![20, 20]);
    // SIGKILL the control service mid-call: media keeps flowing, nothing lost.
    stack.control.as_mut().unwrap().kill();
    assert_eq!(exchange(&mut call, 21, 200), vec![200, 200]);
    stack.start_control(&[]);
    stack.wait_healthy();
    assert_eq!(exchange(&mut call, 221, 20), vec![20, 20]);
    // The restarted service knows the conference again and can change it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.stats()["conferences"] != 1 {
        assert!(
            Instant::now() < deadline,
            "stats never showed the conference"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"endpoints": [{"id": "alice", "force-mute": {"audio": true, "video": false}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Alice is muted now: Bob hears nothing of her, Alice still hears Bob.
    assert_eq!(exchange(&mut call, 241, 10), vec![10, 0]);
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"expire": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn graceful_shutdown_refuses_new_conferences_and_exits_when_empty() {
    let mut stack = Stack::new(true);
    stack.wait_healthy();
    let peers = Peers::new();
    let _call = call(&stack, &peers);
    let r = stack.focus(
        "POST",
        "/colibri/shutdown",
        &json!({"graceful-shutdown": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut other = create_body(&["x"]);
    other["meeting-id"] = json!("another");
    let r = stack.focus("POST", "/colibri/v2/conferences", &other);
    assert_eq!(r.status, 503);
    assert_eq!(r.reason(), "GRACEFUL_SHUTDOWN");
    assert_eq!(stack.stats()["graceful_shutdown"], true);
    // The running conference still works and can be changed.
    let r = stack.focus(
        "PATCH",
        &format!("/colibri/v2/conferences/{MEETING}"),
        &json!({"expire": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let status = stack
        .control
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "control did not exit after the last endpoint left: {status:?}"
    );
}

#[test]
fn sigterm_with_no_endpoints_exits() {
    let mut stack = Stack::new(true);
    stack.wait_healthy();
    stack.control.as_ref().unwrap().signal("-TERM");
    let status = stack
        .control
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

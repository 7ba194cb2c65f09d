//! `udp-reflector`, the benchmark's physical reference, as real processes on loopback:
//! its load side's report must count every datagram it sent coming back from each other
//! member of the conference, with latencies, whether video goes out as frames (one
//! segmented send each) or packet by packet, on both kernel backends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_udp-reflector");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `udp-reflector serve` on a free loopback port; returns it and its address.
fn serve(backend: &str) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--io-backend", backend])
        .args(["--seconds", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("udp-reflector: serving on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (proc, addr)
}

/// One second of load on 2 conferences × 3 participants; the JSON report.
fn load(addr: &str, pid: u32, extra: &[&str]) -> Value {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["load", "--target", addr, "--conferences", "2"])
        .args(["--participants", "3", "--seconds", "1"])
        .args(["--reflector-pid", &pid.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(report: &Value) {
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    };
    // Six participants, each 50 audio + 150 video datagrams in the one-second window.
    assert_eq!(n("sent"), 6 * 200, "{report}");
    assert_eq!(n("send_failures"), 0, "{report}");
    assert_eq!(n("expected"), n("sent") * 2, "{report}");
    assert_eq!(n("received"), n("expected"), "{report}");
    assert_eq!(n("foreign"), 0, "{report}");
    assert_eq!(report["loss_ratio"].as_f64(), Some(0.0), "{report}");
    let latency = &report["latency_ms"];
    assert_eq!(latency["samples"].as_u64(), Some(n("received")), "{report}");
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    assert!(report["reflector_cpu_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn frames_on_io_uring_come_back_from_every_other_member() {
    let (server, addr) = serve("uring");
    check(&load(&addr, server.0.id(), &[]));
}

#[test]
fn packet_by_packet_on_mmsg_comes_back_from_every_other_member() {
    let (server, addr) = serve("mmsg");
    check(&load(&addr, server.0.id(), &["--video-fps", "0"]));
}

#[test]
fn an_oversized_frame_is_refused() {
    let out = Command::new(BIN)
        .args(["load", "--target", "127.0.0.1:9", "--conferences", "1"])
        .args([
            "--participants",
            "2",
            "--video-pps",
            "3000",
            "--video-fps",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--video-fps"));
}

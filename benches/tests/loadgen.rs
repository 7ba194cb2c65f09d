//! `viaduct-loadgen` against real processes: a small run on the bridge's command socket
//! and one through the control service's colibri2 API; the JSON report must show every
//! stream received, no authentication failure, no loss on loopback, and latencies. With
//! the `xdp` feature (as root), the same run over a veth pair between two namespaces with
//! both the bridge and the load generator on AF_XDP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

static BUILD: Once = Once::new();

/// A binary of the workspace next to this test's target directory (built if needed:
/// a no-op after `cargo test --workspace`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    BUILD.call_once(|| {
        // With the xdp feature the bridge must have it too (and every test of this build
        // uses the same binaries).
        let features: &[&str] = if cfg!(feature = "xdp") {
            &["--features", "viaduct-bridge/xdp,viaduct-benches/xdp"]
        } else {
            &[]
        };
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--workspace", "--bins"])
            .args(features)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build failed");
    });
    dir.join(name)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("viaduct-lg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bridge(dir: &Path) -> Proc {
    let child = Command::new(bin("viaduct-bridge"))
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--bind",
            "127.0.0.1",
            "--port-base",
            "0",
            "--log",
            "warn",
            "--socket",
        ])
        .arg(dir.join("bridge.sock"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("bridge.sock").exists() {
        assert!(Instant::now() < deadline, "bridge socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

fn loadgen(args: &[&str], json: &Path) -> Value {
    loadgen_in(None, args, json)
}

/// Runs the load generator (in network namespace `netns`, when given, through `ip netns
/// exec`, which also gives it that namespace's /sys) and reads its JSON report.
fn loadgen_in(netns: Option<&str>, args: &[&str], json: &Path) -> Value {
    let exe = env!("CARGO_BIN_EXE_viaduct-loadgen");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, exe]);
            c
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--quiet")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("forwarded pps"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn assert_clean(r: &Value, streams: u64) {
    assert_eq!(r["streams_expected"], streams, "{r:#}");
    assert_eq!(r["streams_received"], streams, "{r:#}");
    assert_eq!(r["auth_failures"], 0);
    assert_eq!(r["payload_mismatches"], 0);
    assert_eq!(r["loss_ratio"].as_f64().unwrap(), 0.0, "{r:#}");
    assert_eq!(r["packets_received"], r["packets_expected"]);
    assert!(r["packets_checked"].as_u64().unwrap() > 0);
    for p in ["p50", "p99", "p999"] {
        assert!(r["latency_ms"][p].as_f64().unwrap() > 0.0, "{p}: {r:#}");
    }
    assert!(r["forwarded_pps"].as_f64().unwrap() > 0.0);
    assert!(r["duration_s"].as_f64().unwrap() >= 2.0);
}

#[test]
fn two_conferences_of_three_on_the_bridge_socket() {
    let dir = tempdir("bridge");
    let b = bridge(&dir);
    let pid = b.0.id().to_string();
    let sock = dir.join("bridge.sock");
    let r = loadgen(
        &[
            "--bridge-socket",
            sock.to_str().unwrap(),
            "--bridge-pid",
            &pid,
            "--conferences",
            "2",
            "--participants",
            "3",
            "--video-kbps",
            "300",
            "--duration",
            "3",
        ],
        &dir.join("report.json"),
    );
    // 6 receivers × 2 other members × (audio + video).
    assert_clean(&r, 6 * 2 * 2);
    assert!(r["bridge_cpu_seconds"].as_f64().unwrap() > 0.0);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn through_the_control_service_with_simulcast() {
    let dir = tempdir("control");
    let b = bridge(&dir);
    let mut child = Command::new(bin("viaduct-control"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--focus-secret",
            "loadgen-test-secret",
            "--log",
            "warn",
            "--bridge-socket",
        ])
        .arg(dir.join("bridge.sock"))
        .arg("--db")
        .arg(dir.join("records.sqlite"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // It prints the address it bound: an ephemeral port no other test can take.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let listen = line.trim().rsplit(' ').next().unwrap().to_owned();
    let control = Proc(child);
    // Wait for the control service to be healthy.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = viaduct_benches::http::request(
            listen.parse().unwrap(),
            "GET",
            "/about/health",
            None,
            None,
        ) {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "control never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{listen}");
    let r = loadgen(
        &[
            "--control",
            &url,
            "--focus-secret",
            "loadgen-test-secret",
            "--participants",
            "3",
            "--video-kbps",
            "300",
            "--simulcast",
            "--duration",
            "2",
        ],
        &dir.join("report.json"),
    );
    // 3 receivers × 2 other members × (audio + 3 layers).
    assert_clean(&r, 3 * 2 * 4);
    drop(control);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "xdp")]
#[allow(dead_code)] // the helpers the bridge's own tests use and these do not
#[path = "../../bridge/tests/common/netns.rs"]
mod netns;

/// The benchmark's veth setup in small: the bridge on AF_XDP in one namespace, the load
/// generator's media on AF_XDP in the other; every packet crosses the veth pair.
#[cfg(feature = "xdp")]
#[test]
fn both_ends_on_af_xdp_over_veth() {
    let Some(ns) = netns::Netns::create(1) else {
        return;
    };
    let dir = tempdir("xdp");
    let sock = dir.join("bridge.sock");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.a])
        .arg(bin("viaduct-bridge"))
        .args(["--cores", "1", "--no-pin", "--bind", netns::BRIDGE_V4])
        .args([
            "--port-base",
            "0",
            "--io-backend",
            "xdp",
            "--xdp-iface",
            &ns.va,
        ])
        .args(["--log", "warn", "--socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _bridge = Proc(child); // `ip netns exec` execs the bridge: this is its pid
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "bridge socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let peer_ip = netns::PEER_V4.trim_end_matches(":0");
    let r = loadgen_in(
        Some(&ns.b),
        &[
            "--bridge-socket",
            sock.to_str().unwrap(),
            "--conferences",
            "2",
            "--participants",
            "3",
            "--video-kbps",
            "300",
            "--duration",
            "3",
            "--local-ip",
            peer_ip,
            "--allow-remote",
            "--io",
            "xdp",
            "--xdp-iface",
            &ns.vb,
        ],
        &dir.join("xdp.json"),
    );
    assert_clean(&r, 2 * 3 * 2 * 2);
    assert_eq!(r["loadgen_io"], "xdp", "{r:#}");
}

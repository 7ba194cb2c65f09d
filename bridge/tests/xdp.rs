//! The AF_XDP backend: a 3-peer call on both SRTP profiles (IPv4 and IPv6) with the
//! bridge on `--io-backend xdp` in one network namespace and the peers in another, a
//! receive ring overrun counted as drops, and what happens when AF_XDP cannot be had (`auto` falls back with one warning, explicit
//! `xdp` exits with a clear error). The namespace tests need root, and the bridge built
//! with `--features xdp`; they skip otherwise, or fail under `VIADUCT_REQUIRE_XDP=1`.
//! (`VIADUCT_TEST_XDP=1` re-runs call.rs and bad_input.rs the same way.)

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Call, Net};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use viaduct_bridge::srtp::Profile;

/// Whether this test binary's bridge has AF_XDP; if not, skip: the default build has no
/// AF_XDP by design (scripts/test.sh runs these again with `--features xdp`, where
/// missing machine support fails under `VIADUCT_REQUIRE_XDP=1`).
fn xdp_built() -> bool {
    if viaduct_bridge::io::xdp::compiled_in() {
        return true;
    }
    eprintln!("skipped: built without the `xdp` feature (cargo test --features xdp)");
    false
}

fn xdp_call(profile: Profile, v6: bool) {
    if !xdp_built() {
        return;
    }
    let bind = if v6 { "::1" } else { "127.0.0.1" };
    let Some(mut call) = Call::start_in(Net::Xdp, "xdp", profile, 3, bind) else {
        return;
    };
    // Rounds small enough for the peers' default socket buffers (they read after all sent).
    for _ in 0..10 {
        call.exchange(20);
    }
    let stats = call.link.stats();
    assert_eq!(stats.io_backend, "xdp");
    assert_eq!(stats.endpoints, 3);
    assert_eq!(stats.dtls_succeeded, 3);
    assert_eq!(stats.totals.rtp_in, 3 * 200);
    assert_eq!(stats.totals.rtcp_in, 3 * 10);
    assert_eq!(
        stats.totals.drops,
        Default::default(),
        "no drops in a clean call"
    );
}

#[test]
fn xdp_call_gcm_v4() {
    xdp_call(Profile::AeadAes128Gcm, false);
}

#[test]
fn xdp_call_cm_sha1_v4() {
    xdp_call(Profile::Aes128CmHmacSha1_80, false);
}

#[test]
fn xdp_call_gcm_v6() {
    xdp_call(Profile::AeadAes128Gcm, true);
}

/// Runs the bridge with `args` until it logs "command socket ready" or exits; returns
/// (its stderr so far, whether it still runs). Kills it afterwards.
fn run_bridge(args: &[&str]) -> (String, bool) {
    let dir = std::env::temp_dir().join(format!("viaduct-xdp-fallback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join(format!("{}.sock", args.join("_").replace(['/', ' '], "")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct-bridge"))
        .args(args)
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--port-base",
            "0",
            "--log",
            "info",
        ])
        .arg("--socket")
        .arg(&socket)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start viaduct-bridge");
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = loop {
        if socket.exists() {
            break true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "bridge neither started nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (err, running)
}

/// A worker that falls behind its AF_XDP receive ring loses datagrams in the kernel, and
/// they are counted (`drops.xdp_rx`), not lost silently: the bridge (our child, by its
/// PID) is stopped, sent more datagrams than its ring holds, resumed, and asked.
#[test]
fn xdp_ring_overflow_is_counted() {
    if !xdp_built() {
        return;
    }
    let Some(mut bridge) = common::Bridge::start_in(Net::Xdp, "xdp", &["--xdp-frames", "64"])
    else {
        return;
    };
    let mut link = bridge.link();
    let before = link.stats();
    assert_eq!(before.io_backend, "xdp");
    assert_eq!(before.totals.drops.xdp_rx, 0);
    let target: std::net::SocketAddr =
        format!("{}:{}", common::netns::BRIDGE_V4, before.workers[0].port)
            .parse()
            .unwrap();
    let peer = std::net::UdpSocket::bind(common::netns::PEER_V4).unwrap();
    // Not from an endpoint: each datagram that reaches the worker is an unbound_source
    // drop. One first, so that the neighbour entry exists before the bridge stops.
    let counted = |link: &mut common::Link| {
        let d = link.stats().totals.drops;
        (d.unbound_source, d.xdp_rx)
    };
    peer.send_to(b"hello?", target).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted(&mut link).0 < 1 {
        assert!(
            Instant::now() < deadline,
            "the first datagram never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    const SENT: u64 = 500;
    let pid = Pid::from_raw(bridge.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..SENT {
        peer.send_to(format!("datagram {i}").as_bytes(), target)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    kill(pid, Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (unbound, xdp_rx) = loop {
        let (unbound, xdp_rx) = counted(&mut link);
        if unbound - 1 + xdp_rx >= SENT || Instant::now() > deadline {
            break (unbound - 1, xdp_rx);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // 64 frames: 32 to receive into. Every datagram is accounted for, most as ring drops.
    assert_eq!(
        unbound + xdp_rx,
        SENT,
        "{unbound} reached the worker, {xdp_rx} dropped"
    );
    assert!(
        unbound <= 64,
        "{unbound} reached the worker past a 32-frame ring"
    );
    assert!(link.stats().workers[0].counters.drops.xdp_rx == xdp_rx);
    assert!(bridge.is_running());
}

#[test]
fn auto_falls_back_when_xdp_cannot_attach() {
    let (log, running) = run_bridge(&[
        "--io-backend",
        "auto",
        "--xdp-iface",
        "viaduct-nosuch0",
        "--bind",
        "127.0.0.1",
    ]);
    assert!(running, "auto must fall back and run:\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("AF_XDP unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "one fallback line:\n{log}");
    assert!(
        log.contains("backend=uring") || log.contains("backend=mmsg"),
        "a kernel backend runs:\n{log}"
    );
}

#[test]
fn explicit_xdp_fails_clearly() {
    let (log, running) = run_bridge(&[
        "--io-backend",
        "xdp",
        "--xdp-iface",
        "viaduct-nosuch0",
        "--bind",
        "127.0.0.1",
    ]);
    assert!(
        !running,
        "explicit xdp must not start without AF_XDP:\n{log}"
    );
    assert!(log.contains("xdp"), "{log}");
    assert!(
        log.contains("viaduct-nosuch0") || log.contains("without AF_XDP"),
        "names the interface or the missing feature:\n{log}"
    );
    let (log, running) = run_bridge(&["--io-backend", "xdp", "--bind", "127.0.0.1"]);
    assert!(!running);
    assert!(log.contains("--xdp-iface"), "{log}");
}

/// Both attach modes start on a veth (native XDP on veth is copy mode, like generic).
#[test]
fn xdp_attaches_in_generic_and_native_mode() {
    if !xdp_built() {
        return;
    }
    for mode in ["generic", "native"] {
        let Some(ns) = common::netns::Netns::create(1) else {
            return;
        };
        let dir =
            std::env::temp_dir().join(format!("viaduct-xdp-mode-{}-{mode}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("b.sock");
        let mut child = Command::new("ip")
            .args(ns.exec_prefix())
            .arg(env!("CARGO_BIN_EXE_viaduct-bridge"))
            .args([
                "--io-backend",
                "xdp",
                "--xdp-iface",
                &ns.va,
                "--xdp-mode",
                mode,
            ])
            .args([
                "--bind",
                common::netns::BRIDGE_V4,
                "--cores",
                "1",
                "--no-pin",
                "--log",
                "warn",
            ])
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(child.try_wait().unwrap().is_none(), "{mode}: bridge exited");
            assert!(Instant::now() < deadline, "{mode}: bridge did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

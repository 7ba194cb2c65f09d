//! Janus and Viaduct through the same `viaduct-loadgen`: one conference of three peers
//! each, run by `scripts/bench-vs-janus.sh --smoke` in a private network namespace it
//! creates (veth carrying 127.0.0.2) and that goes away with it. Both reports must show
//! every stream received, authenticated and intact. Skipped, with a message, only when
//! Janus is not installed; with `VIADUCT_REQUIRE_JANUS=1` (CI) a missing Janus fails.
//! Needs root (the namespace). Bounded: the script's runs have a 60 s limit each, and
//! the whole test is killed after 90 s.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn report(dir: &Path, name: &str) -> Value {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn assert_every_stream(r: &Value, who: &str) {
    // 3 participants, each receiving 2 others' audio and video.
    assert_eq!(r["streams_expected"], 12, "{who}: {r:#}");
    assert_eq!(r["streams_received"], 12, "{who}: {r:#}");
    assert_eq!(r["auth_failures"], 0, "{who}: {r:#}");
    assert_eq!(r["payload_mismatches"], 0, "{who}: {r:#}");
    assert!(r["packets_checked"].as_u64().unwrap() > 0, "{who}: {r:#}");
    assert!(r["loss_ratio"].as_f64().unwrap() < 0.01, "{who}: {r:#}");
    assert!(
        r["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{who}: {r:#}"
    );
    assert!(
        !r["srtp_profiles"].as_array().unwrap().is_empty(),
        "{who}: {r:#}"
    );
}

#[test]
fn janus_and_viaduct_side_by_side() {
    if on_path("janus").is_none() {
        if std::env::var("VIADUCT_REQUIRE_JANUS").as_deref() == Ok("1") {
            panic!("janus is not installed and VIADUCT_REQUIRE_JANUS=1: apt-get install janus");
        }
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED janus_and_viaduct_side_by_side: janus is not installed (apt-get install janus)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // viaduct-loadgen is built for this test; viaduct-bridge next to it (a no-op after
    // `cargo test --workspace`).
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "viaduct-bridge", "--bins"])
        .current_dir(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building viaduct-bridge failed");
    let bin = Path::new(env!("CARGO_BIN_EXE_viaduct-loadgen"))
        .parent()
        .unwrap()
        .to_owned();
    let out = std::env::temp_dir().join(format!("viaduct-janus-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(root.join("scripts/bench-vs-janus.sh"))
        .arg("--smoke")
        .arg(&out)
        .env("BENCH_BIN_DIR", &bin)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scripts/bench-vs-janus.sh --smoke took more than 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "scripts/bench-vs-janus.sh --smoke failed: {status}"
    );
    let janus = report(&out, "janus");
    let viaduct = report(&out, "viaduct");
    assert_every_stream(&janus, "janus");
    assert_every_stream(&viaduct, "viaduct");
    let _ = std::fs::remove_dir_all(&out);
}

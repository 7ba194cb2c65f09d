//! Real WebRTC clients against the demo page and `GET /ws`: headless Chromium pages
//! (playwright-core, `tests/browser/scenario.js`) and an aiortc client
//! (`tests/aiortc/client.py`, driven by `tests/browser/aiortc-scenario.js`), each run
//! by `tests/browser/run-in-netns.sh` in a private network namespace with only `lo`
//! (`unshare -n`), against fresh `viaduct-bridge` and `viaduct-control --auth dev`.
//!
//! Needs Chromium (Debian's `chromium`), node with `npm ci` done in `tests/browser`,
//! `unshare` and `ip`, and for the interop test a venv in `tests/aiortc/.venv` with
//! aiortc and websockets. Without them the tests print why and pass, unless
//! `VIADUCT_REQUIRE_BROWSER=1`, where a missing tool fails them.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a scenario may run, start-up and teardown included.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn required() -> bool {
    std::env::var("VIADUCT_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn chromium() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(c) = std::env::var_os("CHROMIUM") {
        candidates.push(c.into());
    }
    candidates.push("/usr/lib/chromium/chromium".into());
    candidates.push("/usr/bin/chromium".into());
    candidates.into_iter().find(|c| c.is_file())
}

/// How to enter a private network namespace: `unshare -n` as root, else with a user
/// namespace (`unshare -rn`).
fn unshare_prefix() -> Option<Vec<&'static str>> {
    if runs("unshare", &["-n", "true"]) {
        Some(vec!["unshare", "-n"])
    } else if runs("unshare", &["-rn", "true"]) {
        Some(vec!["unshare", "-rn"])
    } else {
        None
    }
}

fn python() -> PathBuf {
    std::env::var_os("VIADUCT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/aiortc/.venv/bin/python"))
}

/// What this machine lacks for the browser tests (empty: nothing).
fn missing_tools(with_aiortc: bool) -> Vec<String> {
    let mut missing = Vec::new();
    if chromium().is_none() {
        missing.push(
            "Chromium (apt-get install chromium; or set $CHROMIUM to its executable)".to_owned(),
        );
    }
    if !runs("node", &["--version"]) {
        missing.push("node (v20+)".to_owned());
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("playwright-core (npm ci --prefix tests/browser)".to_owned());
    }
    if unshare_prefix().is_none() {
        missing.push("a working `unshare -n` (util-linux; root or user namespaces)".to_owned());
    }
    if !runs("ip", &["-V"]) {
        missing.push("ip (iproute2)".to_owned());
    }
    if with_aiortc
        && !runs(
            python().to_str().unwrap_or("python3"),
            &["-c", "import aiortc, websockets"],
        )
    {
        missing.push(format!(
            "aiortc + websockets for {} (python3 -m venv tests/aiortc/.venv && \
             tests/aiortc/.venv/bin/pip install -r tests/aiortc/requirements.txt)",
            python().display()
        ));
    }
    missing
}

/// False (after printing why) when the tools are missing and not required.
fn tools_present(test: &str, with_aiortc: bool) -> bool {
    let missing = missing_tools(with_aiortc);
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join("; "));
    assert!(!required(), "VIADUCT_REQUIRE_BROWSER=1 but {msg}");
    println!("SKIPPED {msg} (set VIADUCT_REQUIRE_BROWSER=1 to make this a failure)");
    eprintln!("SKIPPED {msg}");
    false
}

/// One browser scenario at a time on this machine (they are CPU-heavy, and nextest runs
/// tests as separate processes): an exclusive lock on a file in the temp directory.
fn machine_lock() -> File {
    let f = File::create(std::env::temp_dir().join("viaduct-browser-tests.lock"))
        .expect("create the lock file");
    f.lock().expect("lock the browser-test lock file");
    f
}

/// Runs `scenario` under `unshare -n sh tests/browser/run-in-netns.sh` and returns its
/// JSON report (the last stdout line that is a JSON object) and exit code.
fn run_scenario(scenario: &str, extra: &[&str]) -> (Value, Option<i32>) {
    let _lock = machine_lock();
    let bridge = common::bridge_bin();
    let control = PathBuf::from(env!("CARGO_BIN_EXE_viaduct-control"));
    let root = repo();
    let prefix = unshare_prefix().expect("unshare");
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg("sh")
        .arg(root.join("tests/browser/run-in-netns.sh"))
        .arg(&bridge)
        .arg(&control)
        .arg(root.join(scenario))
        .args(extra)
        .current_dir(&root)
        .env("VIADUCT_PYTHON", python())
        .env("VIADUCT_SCENARIO_TIMEOUT", "150")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(c) = chromium() {
        cmd.env("CHROMIUM", c);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start run-in-netns.sh");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = tx.send(line);
        }
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the scenario") {
            break s;
        }
        if started.elapsed() > SCENARIO_DEADLINE {
            // TERM lets the script stop what it started (its trap), then KILL.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("{scenario} ran longer than {SCENARIO_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The reader thread ends at EOF; give it a moment to drain.
    std::thread::sleep(Duration::from_millis(200));
    let lines: Vec<String> = rx.try_iter().collect();
    let report = lines
        .iter()
        .rev()
        .find_map(|l| {
            l.trim_start()
                .starts_with('{')
                .then(|| serde_json::from_str::<Value>(l).ok())
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!(
                "{scenario} printed no JSON report (exit {:?}); stdout: {lines:?}",
                status.code()
            )
        });
    println!(
        "{scenario}: exit {:?} after {:.1} s",
        status.code(),
        started.elapsed().as_secs_f64()
    );
    (report, status.code())
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Two, then three Chromium pages through the bridge; chat with history; moderator
/// mute and kick; a closed page's endpoint goes away.
#[test]
fn chromium_pages_call_chat_kick() {
    if !tools_present("chromium_pages_call_chat_kick", false) {
        return;
    }
    let (r, code) = run_scenario("tests/browser/scenario.js", &[]);
    let failures = &r["failures"];
    assert_eq!(
        (code, r["ok"].as_bool()),
        (Some(0), Some(true)),
        "scenario failed: {failures}"
    );

    // Every receiver decoded video and got audio from every sender, with 2 and 3 people.
    let two = r["two_party"].as_array().expect("two_party");
    assert_eq!(two.len(), 2, "{two:?}");
    let three = r["media_pairs"].as_array().expect("media_pairs");
    assert_eq!(three.len(), 6, "{three:?}");
    for pair in two.iter().chain(three) {
        assert!(
            num(&pair["framesDecoded"]) > 0.0,
            "no video decoded: {pair}"
        );
        assert!(
            num(&pair["audioPackets"]) > 0.0,
            "no audio received: {pair}"
        );
    }
    for (who, t) in r["transport"].as_object().expect("transport") {
        assert_eq!(t["dtlsState"], "connected", "{who}: {t}");
        // Chromium 156 offers DTLS 1.3 and lists AES_CM_128_HMAC_SHA1_80 first; the
        // bridge answers DTLS 1.2 and chooses AEAD_AES_128_GCM by its own preference.
        assert_eq!(t["tlsVersion"], "FEFD", "{who}: {t}");
        assert_eq!(t["srtpCipher"], "SRTP_AEAD_AES_128_GCM", "{who}: {t}");
        assert!(
            t["candidatePair"]["remote"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{who}: {t}"
        );
    }

    // Chat reached everyone, and the late joiner got it in the history.
    let chat = &r["chat"];
    assert_eq!(chat["delivered"]["Bob"], true, "{chat}");
    assert_eq!(chat["delivered"]["Carol"], true, "{chat}");
    assert_eq!(chat["history_late_joiner"], true, "{chat}");

    // Moderator mute: the target was told, a participant's attempt was refused.
    assert_eq!(r["mute"]["by_ok"], true, "{}", r["mute"]);
    assert_eq!(
        r["mute"]["participant_refused"], "forbidden",
        "{}",
        r["mute"]
    );

    // The kick: the kicked page was told, the others saw reason "kicked".
    let kick = &r["kick"];
    assert_eq!(kick["kicked_saw"], true, "{kick}");
    assert_eq!(kick["by_ok"], true, "{kick}");
    for who in ["Alice", "Bob", "Carol"] {
        assert_eq!(kick["others_reason"][who], "kicked", "{who}: {kick}");
    }

    // A closed page: the bridge's endpoint count dropped by one.
    let eps = &r["endpoints"];
    assert_eq!(num(&eps["after"]), num(&eps["before"]) - 1.0, "{eps}");
    assert!(num(&eps["drop_ms"]) < 10_000.0, "{eps}");
}

/// A Chromium page and an aiortc client in one room receive each other's media.
#[test]
fn aiortc_and_chromium_interop() {
    if !tools_present("aiortc_and_chromium_interop", true) {
        return;
    }
    let (r, code) = run_scenario("tests/browser/aiortc-scenario.js", &[]);
    let failures = &r["failures"];
    assert_eq!(
        (code, r["ok"].as_bool()),
        (Some(0), Some(true)),
        "scenario failed: {failures}"
    );
    let page = &r["chromium_from_aiortc"];
    assert!(num(&page["framesDecoded"]) > 0.0, "{page}");
    assert!(num(&page["audioPackets"]) > 0.0, "{page}");
    let py = &r["aiortc_from_chromium"];
    assert!(num(&py["video_frames"]) > 0.0, "{py}");
    assert!(num(&py["audio_frames"]) > 0.0, "{py}");
    assert_eq!(r["aiortc_exit"], 0, "{}", r["aiortc"]);
}

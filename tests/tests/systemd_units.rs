//! The systemd units: `systemd-analyze verify` accepts both (on copies whose
//! ExecStart points at binaries installed into a staging root: verify needs the
//! executable to exist), and they say what the operator guide promises.
//!
//! `systemd-analyze verify` does not resolve `User=`: a unit naming a user that does
//! not exist yet still verifies (checked here on a machine without `viaduct`). The
//! user comes from the sysusers entry install.sh writes; `install.rs` checks that
//! `systemd-sysusers` creates it.

use std::path::Path;
use std::process::Command;

use viaduct_tests::{assert_ok, have_tool, install_into, run, Scratch};

const UNITS: [&str; 2] = ["viaduct-bridge.service", "viaduct-control.service"];

fn unit(name: &str) -> String {
    std::fs::read_to_string(viaduct_tests::repo().join("systemd").join(name)).unwrap()
}

/// The `Key=value` lines of a unit (comments and sections left out).
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn has(s: &[(String, String)], key: &str, value: &str) -> bool {
    s.iter().any(|(k, v)| k == key && v == value)
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    if !have_tool("systemd-analyze", "VIADUCT_REQUIRE_SYSTEMD") {
        return;
    }
    let d = Scratch::new("units");
    let root = d.join("root");
    install_into(&root, &[]);
    let check = d.join("check");
    std::fs::create_dir_all(&check).unwrap();
    let bin = root.join("usr/local/bin");
    let mut files = Vec::new();
    for u in UNITS {
        let text = std::fs::read_to_string(root.join("etc/systemd/system").join(u)).unwrap();
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        let p = check.join(u);
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .current_dir(&check));
    assert_ok("systemd-analyze verify", &out);
    // Warnings (unknown keys, bad values) do not fail verify: none may name our units.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<_> = stderr.lines().filter(|l| l.contains("viaduct-")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns:\n{stderr}");
    assert!(Path::new(&files[0]).exists());
}

#[test]
fn units_say_what_the_operator_guide_promises() {
    let bridge = settings(&unit("viaduct-bridge.service"));
    let control = settings(&unit("viaduct-control.service"));
    for s in [&bridge, &control] {
        for (k, v) in [
            ("Type", "notify"),
            ("User", "viaduct"),
            ("Group", "viaduct"),
            ("Restart", "on-failure"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
            ("ConfigurationDirectory", "viaduct"),
        ] {
            assert!(has(s, k, v), "{k}={v} missing in {s:?}");
        }
        assert!(s.iter().any(|(k, _)| k == "WatchdogSec"));
        assert!(s.iter().any(|(k, _)| k == "TimeoutStopSec"));
        assert!(s.iter().any(|(k, _)| k == "LimitNOFILE"));
    }
    assert!(has(&bridge, "RuntimeDirectory", "viaduct"));
    assert!(has(
        &bridge,
        "ExecStart",
        "/usr/local/bin/viaduct-bridge --config /etc/viaduct/bridge.toml"
    ));
    assert!(bridge.iter().any(|(k, _)| k == "LimitMEMLOCK"));
    assert!(bridge.iter().any(|(k, v)| k == "SystemCallFilter"
        && v.contains("io_uring_setup")
        && !v.starts_with('~')));
    assert!(has(&control, "StateDirectory", "viaduct"));
    assert!(has(
        &control,
        "EnvironmentFile",
        "-/etc/viaduct/control.env"
    ));
    assert!(has(
        &control,
        "ExecStart",
        "/usr/local/bin/viaduct-control --config /etc/viaduct/control.toml"
    ));
    // Control wants the bridge and starts after it, but never takes it down with it.
    assert!(control
        .iter()
        .any(|(k, v)| k == "Wants" && v.contains("viaduct-bridge.service")));
    assert!(control
        .iter()
        .any(|(k, v)| k == "After" && v.contains("viaduct-bridge.service")));
    for k in ["Requires", "BindsTo", "PartOf", "Requisite"] {
        assert!(!control.iter().any(|(key, _)| key == k), "control has {k}=");
    }
}

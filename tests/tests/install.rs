//! `scripts/install.sh --destdir` and `scripts/uninstall.sh`: the staged tree
//! (binaries, units, configs, modes), installed configs that the binaries accept with
//! `--check-config`, idempotence (an operator's config survives a reinstall), the
//! `--prefix` rewrite of the units, and the sysusers entry creating the user.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use viaduct_tests::{assert_ok, have_tool, install_into, run, Scratch};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The focus secret written to control.env.
fn secret_of(env_file: &str) -> String {
    env_file
        .lines()
        .find_map(|l| l.strip_prefix("VIADUCT_FOCUS_SECRET="))
        .expect("control.env sets VIADUCT_FOCUS_SECRET")
        .to_owned()
}

/// Runs `bin --config file --check-config` with `env`; returns stdout.
fn check_config(bin: &Path, file: &Path, env: &[(&str, &str)]) -> String {
    let out = run(Command::new(bin)
        .arg("--config")
        .arg(file)
        .arg("--check-config")
        .env_remove("VIADUCT_FOCUS_SECRET")
        .env_remove("VIADUCT_CONFIG")
        .env_remove("VIADUCT_CONTROL_CONFIG")
        .envs(env.iter().copied()));
    assert_ok(
        &format!("{} --check-config {}", bin.display(), file.display()),
        &out,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The config with every `# key = value` and `# [table]` line uncommented.
fn uncommented(text: &str) -> String {
    let name = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| name(k)) => rest,
            Some(rest)
                if rest
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .is_some_and(name) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn install_into_a_staging_root_lays_out_a_working_tree() {
    let d = Scratch::new("install");
    let root = d.join("root");
    install_into(&root, &[]);

    let bridge = root.join("usr/local/bin/viaduct-bridge");
    let control = root.join("usr/local/bin/viaduct-control");
    for b in [&bridge, &control] {
        assert_eq!(mode(b), 0o755, "{}", b.display());
    }
    for u in ["viaduct-bridge.service", "viaduct-control.service"] {
        let p = root.join("etc/systemd/system").join(u);
        assert_eq!(mode(&p), 0o644);
        let text = read(&p);
        assert!(text.contains("ExecStart=/usr/local/bin/viaduct-"), "{text}");
        assert!(text.contains("Type=notify"));
    }
    assert_eq!(mode(&root.join("etc/viaduct")), 0o750);
    for c in ["bridge.toml", "control.toml", "control.env"] {
        assert_eq!(mode(&root.join("etc/viaduct").join(c)), 0o640, "{c}");
    }
    assert!(root
        .join("usr/local/share/doc/viaduct/operations.md")
        .is_file());
    let sysusers = read(&root.join("usr/lib/sysusers.d/viaduct.conf"));
    assert!(sysusers.contains("u viaduct "), "{sysusers}");

    // The secret: fresh, long, random-looking.
    let env = read(&root.join("etc/viaduct/control.env"));
    let secret = secret_of(&env);
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));

    // The installed configs parse and validate, as installed (all defaults) ...
    let bridge_toml = root.join("etc/viaduct/bridge.toml");
    let control_toml = root.join("etc/viaduct/control.toml");
    let shown = check_config(&bridge, &bridge_toml, &[]);
    assert!(shown.contains("port_base: 10000"), "{shown}");
    let shown = check_config(
        &control,
        &control_toml,
        &[("VIADUCT_FOCUS_SECRET", &secret)],
    );
    assert!(shown.contains("listen: 127.0.0.1:8080"), "{shown}");
    assert!(
        !shown.contains(&secret),
        "--check-config printed the secret"
    );
    // ... and with every documented key uncommented (names and value types are right).
    for (bin, file, env) in [
        (&bridge, &bridge_toml, vec![]),
        (
            &control,
            &control_toml,
            vec![("VIADUCT_FOCUS_SECRET", secret.as_str())],
        ),
    ] {
        let text = read(file);
        let full = uncommented(&text);
        assert!(full.lines().count() == text.lines().count() && full != text);
        let p = d.join(file.file_name().unwrap());
        std::fs::write(&p, full).unwrap();
        check_config(bin, &p, &env);
    }
    // A key the binary does not know is refused, so the check above means something.
    let bogus = d.join("bogus.toml");
    std::fs::write(&bogus, "no-such-key = 1\n").unwrap();
    let out = run(Command::new(&bridge)
        .arg("--config")
        .arg(&bogus)
        .arg("--check-config"));
    assert!(!out.status.success());

    // Idempotent: a second install keeps the operator's edits and the secret.
    let edited = format!("{}\nport-base = 20000\n", read(&bridge_toml));
    std::fs::write(&bridge_toml, &edited).unwrap();
    let out = install_into(&root, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    assert_eq!(read(&bridge_toml), edited);
    assert_eq!(read(&root.join("etc/viaduct/control.env")), env);
    assert!(check_config(&bridge, &bridge_toml, &[]).contains("port_base: 20000"));

    // Uninstall keeps configs; --purge removes them.
    let script = viaduct_tests::repo().join("scripts/uninstall.sh");
    let out = run(Command::new("bash")
        .arg(&script)
        .arg("--destdir")
        .arg(&root));
    assert_ok("uninstall.sh", &out);
    assert!(!bridge.exists() && !control.exists());
    assert!(!root
        .join("etc/systemd/system/viaduct-bridge.service")
        .exists());
    assert!(!root.join("usr/lib/sysusers.d/viaduct.conf").exists());
    assert!(bridge_toml.exists());
    let out = run(Command::new("bash")
        .arg(&script)
        .arg("--destdir")
        .arg(&root)
        .arg("--purge"));
    assert_ok("uninstall.sh --purge", &out);
    assert!(!root.join("etc/viaduct").exists());
}

#[test]
fn prefix_moves_binaries_and_the_units_follow() {
    let d = Scratch::new("install-prefix");
    let root = d.join("root");
    install_into(&root, &["--prefix", "/opt/viaduct"]);
    assert!(root.join("opt/viaduct/bin/viaduct-bridge").is_file());
    let unit = read(&root.join("etc/systemd/system/viaduct-bridge.service"));
    assert!(
        unit.contains(
            "ExecStart=/opt/viaduct/bin/viaduct-bridge --config /etc/viaduct/bridge.toml"
        ),
        "{unit}"
    );
    let unit = read(&root.join("etc/systemd/system/viaduct-control.service"));
    assert!(unit
        .contains("ExecStart=/opt/viaduct/bin/viaduct-control --config /etc/viaduct/control.toml"));
}

#[test]
fn sysusers_entry_creates_the_viaduct_user_in_the_staged_root() {
    if !have_tool("systemd-sysusers", "VIADUCT_REQUIRE_SYSTEMD") {
        return;
    }
    let d = Scratch::new("sysusers");
    let root = d.join("root");
    install_into(&root, &[]);
    let out = run(Command::new("systemd-sysusers").arg(format!("--root={}", root.display())));
    assert_ok("systemd-sysusers --root", &out);
    let passwd = read(&root.join("etc/passwd"));
    let user = passwd
        .lines()
        .find(|l| l.starts_with("viaduct:"))
        .unwrap_or_else(|| panic!("no viaduct user in {passwd}"));
    assert!(
        user.ends_with(":/var/lib/viaduct:/usr/sbin/nologin"),
        "{user}"
    );
    assert!(read(&root.join("etc/group"))
        .lines()
        .any(|l| l.starts_with("viaduct:")));
}

#[test]
fn tune_host_reads_without_root_and_writes_nothing() {
    let out = run(Command::new("bash")
        .arg(viaduct_tests::repo().join("scripts/tune-host.sh"))
        .args(["--workers", "1"]));
    assert_ok("tune-host.sh", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    for section in [
        "net.core.rmem_max",
        "net.ipv4.udp_mem",
        "cores for the bridge",
        "io_uring",
        "RLIMIT_MEMLOCK",
    ] {
        assert!(text.contains(section), "missing {section}:\n{text}");
    }
    let out = run(Command::new("bash")
        .arg(viaduct_tests::repo().join("scripts/tune-host.sh"))
        .arg("--bogus"));
    assert!(!out.status.success());
}

//! The appliance as systemd runs it, with real processes on loopback: `NOTIFY_SOCKET`
//! points at a datagram socket this test listens on, so READY=1, WATCHDOG=1 and
//! STOPPING=1 are checked at the moments they must come; SIGTERM during a call (the
//! control service drains, both processes exit 0, nothing panics); and every metric the
//! Grafana dashboard and the alert rules query exists on a live `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{colibri2_call, create_body, exchange, Peers, Proc, Stack};
use serde_json::{json, Value};
use viaduct_bridge::command::client::Client;
use viaduct_bridge::command::protocol::RequestBody;
use viaduct_bridge::peer::Peer;

const MEETING: &str = "appliance-call";

/// A fresh stack description (no process started) in its own temp directory.
fn empty_stack() -> Stack {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "viaduct-appliance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Stack {
        socket: dir.join("bridge.sock"),
        db: dir.join("records.sqlite"),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir,
        bridge: None,
        control: None,
    }
}

/// Starts the bridge with its stderr in `<dir>/bridge.log` and extra environment.
fn start_bridge(stack: &mut Stack, env: &[(&str, &str)]) -> PathBuf {
    let log = stack.dir.join("bridge.log");
    let child = Command::new(common::bridge_bin())
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--bind",
            "127.0.0.1",
            "--port-base",
            "0",
            "--log",
            "info",
        ])
        .arg("--socket")
        .arg(&stack.socket)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start viaduct-bridge");
    stack.bridge = Some(Proc(child));
    log
}

/// Starts the control service with its stderr in `<dir>/control.log` and extra
/// environment; learns its HTTP address from its first stdout line.
fn start_control(stack: &mut Stack, env: &[(&str, &str)]) -> PathBuf {
    let log = stack.dir.join("control.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct-control"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--focus-secret",
            common::SECRET,
            "--stats-interval-ms",
            "200",
            "--shutdown-delay",
            "0",
            "--log",
            "info",
        ])
        .arg("--bridge-socket")
        .arg(&stack.socket)
        .arg("--db")
        .arg(&stack.db)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start viaduct-control");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read control's stdout");
    stack.http = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("control did not say where it listens: {line:?}"));
    stack.control = Some(Proc(child));
    log
}

/// The service manager's end of `NOTIFY_SOCKET`: a thread reads every datagram at
/// once (as systemd does; a full queue would block the sender) into a list.
struct Notify {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Notify {
    fn new(dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("notify-{name}.sock"));
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (list, flag) = (seen.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    list.lock().unwrap().push(msg);
                }
            }
        });
        Self {
            path,
            seen,
            stop,
            reader: Some(reader),
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// How many messages so far have the line `line`.
    fn count(&self, line: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    /// Waits until `nth` messages (counting from the start) have the line `line`;
    /// returns the last of them.
    fn wait_for_nth(&self, line: &str, nth: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let hits: Vec<_> = seen
                    .iter()
                    .filter(|m| m.lines().any(|l| l == line))
                    .collect();
                if hits.len() >= nth {
                    return hits[nth - 1].clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no {line} (#{nth}) within {within:?}; saw {seen:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, line: &str, within: Duration) -> String {
        self.wait_for_nth(line, 1, within)
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn assert_no_panic(log: &Path) {
    let text = read_log(log);
    assert!(
        !text.contains("panicked"),
        "{} has a panic:\n{text}",
        log.display()
    );
}

#[test]
fn bridge_is_ready_only_when_serving_pings_the_watchdog_and_stops_cleanly() {
    let mut stack = empty_stack();
    let notify = Notify::new(&stack.dir, "bridge");
    let np = notify.path().to_owned();
    let log = start_bridge(
        &mut stack,
        &[("NOTIFY_SOCKET", &np), ("WATCHDOG_USEC", "1000000")],
    );
    let ready = notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(ready.contains("STATUS=serving"), "{ready}");
    // At READY the command socket answers at once, and the worker's UDP port is bound.
    let mut link = Client::connect(&stack.socket, Duration::ZERO)
        .expect("command socket answers when READY=1 arrives");
    let stats = link.stats().expect("stats");
    let port = stats.workers[0].port;
    assert_ne!(port, 0);
    let taken = UdpSocket::bind(("127.0.0.1", port));
    assert!(
        taken.is_err(),
        "UDP port {port} not bound by the bridge at READY"
    );
    assert!(ready.contains(&port.to_string()), "{ready}");
    // The socket is for the bridge's user and group only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&stack.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    // A conference for the stop to expire.
    link.request(RequestBody::CreateConference {
        conference: "c1".into(),
    })
    .unwrap();
    link.request(RequestBody::CreateEndpoint {
        conference: "c1".into(),
        endpoint: "e1".into(),
    })
    .unwrap();
    // Watchdog pings while the worker turns (period: half of 1 s, at least 600 ms).
    notify.wait_for_nth("WATCHDOG=1", 2, Duration::from_secs(5));
    assert_eq!(notify.count("STOPPING=1"), 0, "STOPPING before any signal");
    drop(link);

    let bridge = stack.bridge.as_mut().unwrap();
    bridge.signal("-TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = bridge.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "bridge exit: {status:?}"
    );
    assert!(!stack.socket.exists(), "command socket left behind");
    let text = read_log(&log);
    assert!(text.contains("viaduct-bridge stopped"), "{text}");
    assert!(text.contains("conferences_expired=1"), "{text}");
    assert!(text.contains("endpoints_expired=1"), "{text}");
    assert_no_panic(&log);
}

#[test]
fn control_is_ready_while_the_bridge_is_away_pings_and_says_stopping() {
    let mut stack = empty_stack();
    let notify = Notify::new(&stack.dir, "control");
    let np = notify.path().to_owned();
    // No bridge yet: the link retries, and the service is ready all the same.
    let log = start_control(
        &mut stack,
        &[("NOTIFY_SOCKET", &np), ("WATCHDOG_USEC", "400000")],
    );
    let ready = notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(ready.contains("bridge link connecting"), "{ready}");
    // HTTP answers at READY (503 while the bridge link is down).
    assert_eq!(stack.get("/about/health").status, 503);
    notify.wait_for_nth("WATCHDOG=1", 2, Duration::from_secs(5));
    // The bridge comes; the link comes up by itself.
    let bridge_log = start_bridge(&mut stack, &[]);
    stack.wait_healthy();
    assert_eq!(notify.count("STOPPING=1"), 0, "STOPPING before any signal");
    let control = stack.control.as_mut().unwrap();
    control.signal("-TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let status = control.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "control exit: {status:?}"
    );
    assert_no_panic(&log);
    assert_no_panic(&bridge_log);
}

/// A two-party call through colibri2 with connected peers.
fn call(stack: &Stack, peers: &Peers) -> Vec<Peer> {
    colibri2_call(
        stack,
        peers,
        MEETING,
        &create_body(MEETING, &["alice", "bob"]),
    )
    .1
}

#[test]
fn sigterm_during_a_call_drains_then_both_exit_cleanly() {
    let mut stack = empty_stack();
    let bridge_log = start_bridge(&mut stack, &[]);
    let notify = Notify::new(&stack.dir, "control");
    let np = notify.path().to_owned();
    let control_log = start_control(&mut stack, &[("NOTIFY_SOCKET", &np)]);
    stack.wait_healthy();
    let peers = Peers::new();
    let mut call = call(&stack, &peers);
    assert_eq!(exchange(&mut call, 0, 10), vec![10, 10]);

    stack.control.as_ref().unwrap().signal("-TERM");
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    // Draining: no new conference, the call carries on, the service stays up.
    let r = stack.focus(
        "POST",
        "/colibri/v2/conferences",
        &create_body("another", &["x"]),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.reason(), "GRACEFUL_SHUTDOWN");
    assert_eq!(exchange(&mut call, 100, 10), vec![10, 10]);
    assert!(
        stack
            .control
            .as_mut()
            .unwrap()
            .wait_exit(Duration::from_millis(500))
            .is_none(),
        "control exited while a call was on"
    );

    // The call ends: the control service exits 0.
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
        .wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "control did not exit 0 after the call ended: {status:?}"
    );

    // The bridge stops cleanly on SIGTERM too.
    let bridge = stack.bridge.as_mut().unwrap();
    bridge.signal("-TERM");
    let status = bridge.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "bridge exit: {status:?}"
    );
    assert!(read_log(&bridge_log).contains("viaduct-bridge stopped"));
    assert_no_panic(&bridge_log);
    assert_no_panic(&control_log);
}

/// `viaduct_…` identifiers in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("viaduct_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The series names a `/metrics` text can answer: every sample's name, every family
/// in a `# TYPE` line, and a histogram's `_bucket`, `_sum` and `_count`.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            out.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            out.insert(name.to_owned());
        }
    }
    out
}

#[test]
fn dashboard_and_alerts_query_only_metrics_a_live_control_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let alerts = std::fs::read_to_string(root.join("viaduct-alerts.yml")).unwrap();

    let mut stack = empty_stack();
    let bridge_log = start_bridge(&mut stack, &[]);
    let control_log = start_control(&mut stack, &[]);
    stack.wait_healthy();
    // A call, so the per-worker and DTLS series have samples too.
    let peers = Peers::new();
    let mut call = call(&stack, &peers);
    assert_eq!(exchange(&mut call, 0, 5), vec![5, 5]);
    std::thread::sleep(Duration::from_millis(500));
    let r = stack.get("/metrics");
    assert_eq!(r.status, 200);
    let have = exported(&r.body);

    for (what, text) in [("dashboard", &dashboard), ("alert rules", &alerts)] {
        let wanted = metric_names(text);
        assert!(
            wanted.len() > 3,
            "{what}: too few metrics found: {wanted:?}"
        );
        let missing: Vec<_> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        assert!(
            missing.is_empty(),
            "{what} queries metrics /metrics does not export: {missing:?}\nexported: {have:?}"
        );
    }
    drop(stack);
    assert_no_panic(&bridge_log);
    assert_no_panic(&control_log);
}

//! Two network namespaces joined by a veth pair, for running the bridge on AF_XDP: the
//! bridge's side (`a`, 10.77.0.1/24 and fd77::1/64) and the peers' side (`b`, .2 / ::2).
//! Created per test with unique names, deleted on drop (also when the test panics);
//! nothing is routed outside them. The calling thread can enter `b` with [`Netns::enter_peer_side`].

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

/// The bridge's addresses on its side of the pair.
pub const BRIDGE_V4: &str = "10.77.0.1";
pub const BRIDGE_V6: &str = "fd77::1";
/// Where peers bind on the other side.
pub const PEER_V4: &str = "10.77.0.2:0";
pub const PEER_V6: &str = "[fd77::2]:0";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Set in CI: missing AF_XDP support fails the tests instead of skipping them.
pub fn required() -> bool {
    std::env::var("VIADUCT_REQUIRE_XDP").is_ok_and(|v| v == "1")
}

/// Skip (return None after saying why) or, when [`required`], fail.
pub fn unavailable(why: &str) -> Option<Netns> {
    assert!(!required(), "VIADUCT_REQUIRE_XDP=1 but {why}");
    eprintln!("skipped: {why} (set VIADUCT_REQUIRE_XDP=1 to make this a failure)");
    None
}

/// A namespace pair and its veth.
#[derive(Debug)]
pub struct Netns {
    /// The bridge's namespace.
    pub a: String,
    /// The peers' namespace.
    pub b: String,
    /// The bridge's interface (in `a`).
    pub va: String,
    /// The peers' interface (in `b`).
    pub vb: String,
    /// The thread's namespace before [`Netns::enter_peer_side`], restored on drop.
    home: Option<File>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Create the pair with `queues` rx/tx queues on each veth end, or explain why not
    /// (None: skipped; panics instead when [`required`]).
    pub fn create(queues: u32) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            return unavailable("AF_XDP tests need root (network namespaces, BPF)");
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let ns = Self {
            a: format!("viaduct-xa-{tag}"),
            b: format!("viaduct-xb-{tag}"),
            va: format!("vxa{tag}"),
            vb: format!("vxb{tag}"),
            home: None,
        };
        let q = queues.to_string();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.a],
            vec!["netns", "add", &ns.b],
            vec![
                "link",
                "add",
                &ns.va,
                "netns",
                &ns.a,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &ns.vb,
                "netns",
                &ns.b,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ],
            vec!["-n", &ns.a, "addr", "add", "10.77.0.1/24", "dev", &ns.va],
            vec!["-n", &ns.b, "addr", "add", "10.77.0.2/24", "dev", &ns.vb],
            vec![
                "-n",
                &ns.a,
                "addr",
                "add",
                "fd77::1/64",
                "dev",
                &ns.va,
                "nodad",
            ],
            vec![
                "-n",
                &ns.b,
                "addr",
                "add",
                "fd77::2/64",
                "dev",
                &ns.vb,
                "nodad",
            ],
            vec!["-n", &ns.a, "link", "set", "lo", "up"],
            vec!["-n", &ns.b, "link", "set", "lo", "up"],
            vec!["-n", &ns.a, "link", "set", &ns.va, "up"],
            vec!["-n", &ns.b, "link", "set", &ns.vb, "up"],
        ];
        for step in &steps {
            if let Err(e) = ip(step) {
                // `ns` drops here and removes whatever was made.
                return unavailable(&format!("cannot set up network namespaces: {e}"));
            }
        }
        Some(ns)
    }

    /// Move the calling thread into the peers' namespace (sockets it creates from now on
    /// live there); the thread goes home when this guard drops.
    pub fn enter_peer_side(&mut self) {
        let home = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(format!("/var/run/netns/{}", self.b)).expect("open peer netns");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into the peer namespace");
        self.home.get_or_insert(home);
    }

    /// `ip netns exec A` before a command, to run it on the bridge's side.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.a.clone()]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            let _ = setns(&home, CloneFlags::CLONE_NEWNET);
        }
        // Deleting a namespace deletes the veth end in it, and so the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

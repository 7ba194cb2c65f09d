//! Test harness: runs `viaduct-bridge` as a process on loopback, speaks the bridge link
//! to it, and connects synthetic peers through ICE, DTLS and SRTP. With
//! `VIADUCT_TEST_XDP=1` (or [`Net::Xdp`]) the bridge runs on AF_XDP in a network namespace
//! and the test thread's peers in another ([`netns`]).
#![allow(dead_code)]

pub mod netns;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use viaduct_bridge::command::client::{Client, ClientError};
use viaduct_bridge::command::protocol::{
    EndpointAllocation, ErrorCode, Event, FromBridge, MediaKind, MediaSource, Reply, RequestBody,
    StatsSnapshot,
};
use viaduct_bridge::dtls::{self, DtlsHandle, Identity, Role};
use viaduct_bridge::peer::{Incoming, Peer};
use viaduct_bridge::srtp::Profile;

/// Where a test's bridge and peers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Both on loopback, the bridge on the backend the test names.
    Loopback,
    /// The bridge on AF_XDP in its own namespace, the peers across a veth pair.
    Xdp,
}

impl Net {
    /// `Xdp` when `VIADUCT_TEST_XDP=1` (the suite re-run on AF_XDP), else `Loopback`.
    pub fn from_env() -> Self {
        if std::env::var("VIADUCT_TEST_XDP").is_ok_and(|v| v == "1") {
            Net::Xdp
        } else {
            Net::Loopback
        }
    }
}

/// The backend a bridge started with `backend` reports under [`Net::from_env`].
pub fn expected_backend(backend: &str) -> &str {
    match Net::from_env() {
        Net::Xdp => "xdp",
        Net::Loopback => backend,
    }
}

/// Where peers bind (an unspecified port) next to a bridge bound to `bind`, in the current run.
pub fn peer_bind(v6: bool) -> &'static str {
    match (Net::from_env(), v6) {
        (Net::Xdp, false) => netns::PEER_V4,
        (Net::Xdp, true) => netns::PEER_V6,
        (Net::Loopback, false) => "127.0.0.1:0",
        (Net::Loopback, true) => "[::1]:0",
    }
}

/// A `viaduct-bridge` child process, killed (by its PID) on drop.
pub struct Bridge {
    child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
    /// The namespaces of an AF_XDP run (removed after the child is gone).
    pub netns: Option<netns::Netns>,
}

impl Bridge {
    /// Start a bridge for the current run ([`Net::from_env`]); under AF_XDP the calling
    /// thread moves to the peers' namespace. Panics when AF_XDP is asked for but missing.
    pub fn start(backend: &str, extra: &[&str]) -> Self {
        Self::start_in(Net::from_env(), backend, extra).expect("AF_XDP test setup")
    }

    /// Start a bridge on `net`; None when AF_XDP is unavailable (said on stderr; a
    /// failure instead when `VIADUCT_REQUIRE_XDP=1`).
    pub fn start_in(net: Net, backend: &str, extra: &[&str]) -> Option<Self> {
        let mut ns = match net {
            Net::Loopback => None,
            Net::Xdp => Some(netns::Netns::create(1)?),
        };
        let v6 = extra.iter().any(|a| a.contains(':'));
        let mut extra: Vec<&str> = extra.to_vec();
        let iface;
        let mut backend = backend;
        if let Some(ns) = &ns {
            // Same flags, but on AF_XDP, bound on the veth end.
            if let Some(i) = extra.iter().position(|a| *a == "--bind") {
                extra.drain(i..i + 2);
            }
            iface = ns.va.clone();
            let bind = if v6 {
                netns::BRIDGE_V6
            } else {
                netns::BRIDGE_V4
            };
            extra.extend_from_slice(&["--bind", bind, "--xdp-iface", &iface]);
            backend = "xdp";
        }
        let dir = std::env::temp_dir().join(format!(
            "viaduct-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("bridge.sock");
        let mut args = vec![
            "--cores",
            "1",
            "--no-pin",
            "--port-base",
            "0",
            "--io-backend",
            backend,
            "--log",
            "warn",
        ];
        if !extra.contains(&"--bind") {
            args.extend_from_slice(&["--bind", "127.0.0.1"]);
        }
        args.extend_from_slice(&extra);
        let bin = env!("CARGO_BIN_EXE_viaduct-bridge");
        let mut command = match &ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(ns.exec_prefix()).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(&args)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start viaduct-bridge");
        if let Some(ns) = &mut ns {
            ns.enter_peer_side();
        }
        Some(Self {
            child,
            socket,
            dir,
            netns: ns,
        })
    }

    /// Connects to the command socket, waiting for the bridge to open it.
    pub fn link(&mut self) -> Link {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = Client::connect(&self.socket, Duration::ZERO) {
                return Link(c);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("viaduct-bridge exited early: {status}");
            }
            assert!(Instant::now() < deadline, "bridge socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The bridge's PID (`ip netns exec` execs it, so under AF_XDP too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// The controller's side of the bridge link: the library client, with panicking
/// helpers and the error shape tests compare against.
pub struct Link(pub Client);

impl Link {
    pub fn send_line(&mut self, line: &str) {
        self.0.send_line(line).unwrap();
    }

    pub fn read(&mut self) -> FromBridge {
        self.0.read().expect("read from bridge")
    }

    pub fn request(&mut self, body: RequestBody) -> Result<Reply, (ErrorCode, String)> {
        match self.0.request(body) {
            Ok(r) => Ok(r),
            Err(ClientError::Refused { code, message }) => Err((code, message)),
            Err(e) => panic!("bridge link: {e}"),
        }
    }

    pub fn stats(&mut self) -> StatsSnapshot {
        self.0.stats().expect("stats")
    }

    pub fn wait_event(&mut self, pred: impl FnMut(&Event) -> bool) -> Event {
        self.0.wait_event(pred).expect("event")
    }
}

/// A running call: a bridge, its link and connected peers in one conference.
pub struct Call {
    pub bridge: Bridge,
    pub link: Link,
    pub peers: Vec<Peer>,
    pub allocations: Vec<EndpointAllocation>,
    pub dtls: DtlsHandle,
    pub identity: Arc<Identity>,
    pub profile: Profile,
    /// Next RTP sequence number per peer.
    seq: Vec<u16>,
    /// Where peers bind.
    pub loopback: &'static str,
}

pub fn ssrc_of(i: usize) -> u32 {
    0x1000_0000 + i as u32
}

impl Call {
    pub fn start(backend: &str, profile: Profile, peers: usize) -> Self {
        Self::start_on(backend, profile, peers, "127.0.0.1")
    }

    /// A call with the bridge bound to `bind` and the peers on the same family's loopback.
    pub fn start_on(backend: &str, profile: Profile, peers: usize, bind: &str) -> Self {
        Self::start_in(Net::from_env(), backend, profile, peers, bind).expect("AF_XDP test setup")
    }

    /// A call on `net` (None: AF_XDP unavailable and not required; see [`Bridge::start_in`]).
    pub fn start_in(
        net: Net,
        backend: &str,
        profile: Profile,
        peers: usize,
        bind: &str,
    ) -> Option<Self> {
        let mut bridge = Bridge::start_in(net, backend, &["--bind", bind])?;
        let backend = if net == Net::Xdp { "xdp" } else { backend };
        let mut link = bridge.link();
        match link.request(RequestBody::Hello) {
            Ok(Reply::Hello { io_backend, .. }) => {
                assert!(backend == "auto" || io_backend == backend, "{io_backend}")
            }
            other => panic!("hello: {other:?}"),
        }
        link.request(RequestBody::CreateConference {
            conference: "call".into(),
        })
        .expect("create conference");
        let identity = Arc::new(Identity::generate().unwrap());
        let dtls =
            dtls::spawn_with_profiles(identity.clone(), Role::Client, "peer-dtls", &[profile])
                .unwrap();
        let mut call = Self {
            bridge,
            link,
            peers: Vec::new(),
            allocations: Vec::new(),
            dtls,
            identity,
            profile,
            seq: Vec::new(),
            loopback: match (net, bind.contains(':')) {
                (Net::Xdp, false) => netns::PEER_V4,
                (Net::Xdp, true) => netns::PEER_V6,
                (Net::Loopback, true) => "[::1]:0",
                (Net::Loopback, false) => "127.0.0.1:0",
            },
        };
        for i in 0..peers {
            call.add_peer(&format!("ep{i}"));
        }
        Some(call)
    }

    /// Allocates an endpoint, signals a new peer's credentials and connects it.
    pub fn add_peer(&mut self, id: &str) {
        let i = self.peers.len();
        let alloc = match self.link.request(RequestBody::CreateEndpoint {
            conference: "call".into(),
            endpoint: id.into(),
        }) {
            Ok(Reply::EndpointCreated(a)) => a,
            other => panic!("create endpoint: {other:?}"),
        };
        let mut peer = Peer::bind(
            self.loopback.parse().unwrap(),
            self.dtls.clone(),
            self.identity.clone(),
        )
        .unwrap();
        self.link
            .request(RequestBody::UpdateEndpoint {
                conference: "call".into(),
                endpoint: id.into(),
                ice: Some(peer.ice_credentials()),
                fingerprint: Some(peer.fingerprint()),
                sources: Some(vec![MediaSource {
                    kind: MediaKind::Audio,
                    ssrcs: vec![ssrc_of(i)],
                    groups: vec![],
                    name: None,
                }]),
                force_mute: None,
            })
            .expect("update endpoint");
        let got = peer
            .connect(&alloc, Duration::from_secs(10))
            .expect("peer connects");
        assert_eq!(got, self.profile);
        let want = id.to_owned();
        self.link.wait_event(
            |e| matches!(e, Event::EndpointConnected { endpoint, .. } if *endpoint == want),
        );
        self.peers.push(peer);
        self.allocations.push(alloc);
        self.seq.push(1);
    }

    /// Every peer sends `count` RTP packets and one SRTCP sender report; every peer must
    /// receive exactly the others' payloads and reports. Returns per-peer refusals seen.
    pub fn exchange(&mut self, count: usize) {
        let n = self.peers.len();
        for (i, p) in self.peers.iter_mut().enumerate() {
            for _ in 0..count {
                let seq = self.seq[i];
                self.seq[i] = seq.wrapping_add(1);
                let payload = payload_of(i, seq);
                p.send_rtp(ssrc_of(i), seq, u32::from(seq) * 960, false, &payload)
                    .unwrap();
            }
            let mut sr = [0u8; 28];
            let len =
                viaduct_bridge::rtcp::write_sr(&mut sr, ssrc_of(i), 1, 2, count as u32, 0).unwrap();
            p.send_rtcp(&sr[..len]).unwrap();
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            let mut want: Vec<(u32, Vec<u8>)> = Vec::new();
            for j in (0..n).filter(|&j| j != i) {
                let last = self.seq[j];
                for k in 0..count as u16 {
                    let seq = last.wrapping_sub(count as u16).wrapping_add(k);
                    want.push((ssrc_of(j), payload_of(j, seq)));
                }
            }
            let mut got = Vec::new();
            let mut reports = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while (got.len() < want.len() || reports < n - 1) && Instant::now() < deadline {
                match p.recv(Duration::from_millis(100)).unwrap() {
                    Some(Incoming::Rtp { ssrc, payload, .. }) => got.push((ssrc, payload)),
                    Some(Incoming::Rtcp(c)) => {
                        let first = viaduct_bridge::rtcp::iter(&c).next().unwrap().unwrap();
                        assert_eq!(first.packet_type(), viaduct_bridge::rtcp::SR);
                        reports += 1;
                    }
                    Some(Incoming::Refused(e)) => panic!("peer {i} refused a packet: {e}"),
                    Some(Incoming::Control) | None => {}
                }
            }
            // Nothing extra may follow.
            while let Some(m) = p.recv(Duration::from_millis(30)).unwrap() {
                match m {
                    Incoming::Rtp { ssrc, payload, .. } => got.push((ssrc, payload)),
                    Incoming::Rtcp(_) => reports += 1,
                    _ => {}
                }
            }
            got.sort();
            want.sort();
            assert_eq!(got.len(), want.len(), "peer {i}: wrong number of packets");
            assert!(got == want, "peer {i}: payloads differ");
            assert_eq!(reports, n - 1, "peer {i}: sender reports");
        }
    }

    pub fn next_seq(&mut self, i: usize) -> u16 {
        let s = self.seq[i];
        self.seq[i] = s.wrapping_add(1);
        s
    }
}

pub fn payload_of(sender: usize, seq: u16) -> Vec<u8> {
    let mut p = format!("peer {sender} packet {seq} ").into_bytes();
    p.resize(160, b'.');
    p
}

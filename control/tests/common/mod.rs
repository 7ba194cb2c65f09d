//! Harness for end-to-end tests: runs real `viaduct-bridge` and `viaduct-control`
//! processes on loopback, talks HTTP to the control service with a tiny client, and
//! connects synthetic peers from colibri2 transports.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use viaduct_bridge::command::protocol::{
    Candidate, EndpointAllocation, Fingerprint, IceCredentials,
};
use viaduct_bridge::dtls::{self, DtlsHandle, Identity, Role};
use viaduct_bridge::peer::{Incoming, Peer};

pub const SECRET: &str = "test-focus-secret";

static BUILD: Once = Once::new();

/// The `viaduct-bridge` binary next to this test's own target directory, built if it
/// is missing or stale (cargo decides; a no-op when fresh).
pub fn bridge_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            // All of the workspace's binaries: the same feature set as the test build,
            // so this is a no-op after `cargo test --workspace` or nextest.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building viaduct-bridge failed");
    });
    dir.join("viaduct-bridge")
}

/// A child process killed (by its PID) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bridge and a control service, in a private temp directory.
pub struct Stack {
    pub dir: PathBuf,
    pub bridge: Option<Proc>,
    pub control: Option<Proc>,
    pub http: SocketAddr,
    pub socket: PathBuf,
    pub db: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Stack {
    pub fn new(with_bridge: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "viaduct-e2e-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (free_port() as u128)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("bridge.sock");
        let mut stack = Self {
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            db: dir.join("records.sqlite"),
            socket,
            dir,
            bridge: None,
            control: None,
        };
        if with_bridge {
            stack.start_bridge();
        }
        stack.start_control(&[]);
        stack
    }

    pub fn start_bridge(&mut self) {
        let child = Command::new(bridge_bin())
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
            ])
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start viaduct-bridge");
        self.bridge = Some(Proc(child));
    }

    pub fn start_control(&mut self, extra: &[&str]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_viaduct-control"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--focus-secret",
                SECRET,
                "--stats-interval-ms",
                "200",
                "--shutdown-delay",
                "0",
                "--log",
                "warn",
            ])
            .arg("--bridge-socket")
            .arg(&self.socket)
            .arg("--db")
            .arg(&self.db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start viaduct-control");
        // It prints the address it bound (an ephemeral port: no two tests can collide).
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read control's stdout");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("control did not say where it listens: {line:?}"));
        self.http = addr;
        self.control = Some(Proc(child));
    }

    /// Waits until `/about/health` is 200 (bridge link up).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.get("/about/health").status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "control never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<&str>,
        content_type: Option<&str>,
    ) -> Response {
        http(self.http, method, path, body, auth, content_type)
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, None, None)
    }

    pub fn focus(&self, method: &str, path: &str, body: &Value) -> Response {
        self.request(
            method,
            path,
            Some(&body.to_string()),
            Some(SECRET),
            Some("application/json"),
        )
    }

    pub fn stats(&self) -> Value {
        let r = self.get("/colibri/stats");
        assert_eq!(r.status, 200);
        r.json()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.control.take();
        self.bridge.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn reason(&self) -> String {
        self.json()["reason"].as_str().unwrap_or("").to_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
    content_type: Option<&str>,
) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect to control");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body: ignore write errors.
    let _ = s.write_all(body.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The client side of peers: one DTLS thread for all.
pub struct Peers {
    pub dtls: DtlsHandle,
    pub identity: Arc<Identity>,
}

impl Peers {
    pub fn new() -> Self {
        let identity = Arc::new(Identity::generate().unwrap());
        let dtls = dtls::spawn(identity.clone(), Role::Client, "e2e-dtls").unwrap();
        Self { dtls, identity }
    }

    pub fn peer(&self) -> Peer {
        Peer::bind(
            "127.0.0.1:0".parse().unwrap(),
            self.dtls.clone(),
            self.identity.clone(),
        )
        .unwrap()
    }
}

/// The colibri2 `transport` of a created endpoint as the peer library's allocation.
pub fn allocation_from_colibri2(meeting: &str, endpoint: &Value) -> EndpointAllocation {
    let t = &endpoint["transport"]["transport"];
    let fp = &t["fingerprints"][0];
    EndpointAllocation {
        conference: meeting.into(),
        endpoint: endpoint["id"].as_str().unwrap().into(),
        worker: 0,
        ice: IceCredentials {
            ufrag: t["ufrag"].as_str().unwrap().into(),
            pwd: t["pwd"].as_str().unwrap().into(),
        },
        fingerprint: Fingerprint {
            hash: fp["hash"].as_str().unwrap().into(),
            value: fp["fingerprint"].as_str().unwrap().into(),
            setup: fp["setup"].as_str().map(Into::into),
        },
        candidates: t["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Candidate {
                foundation: c["foundation"].as_str().unwrap().into(),
                component: c["component"].as_str().unwrap().parse().unwrap(),
                protocol: c["protocol"].as_str().unwrap().into(),
                priority: c["priority"].as_str().unwrap().parse().unwrap(),
                ip: c["ip"].as_str().unwrap().into(),
                port: c["port"].as_str().unwrap().parse().unwrap(),
                typ: c["type"].as_str().unwrap().into(),
            })
            .collect(),
    }
}

/// The colibri2 update a focus sends after the client's answer.
pub fn answer(peer: &Peer, id: &str, ssrc: u32) -> Value {
    let ice = peer.ice_credentials();
    let fp = peer.fingerprint();
    json!({
        "id": id,
        "transport": {"transport": {
            "ufrag": ice.ufrag, "pwd": ice.pwd, "rtcp-mux": true,
            "fingerprints": [{"fingerprint": fp.value, "hash": "sha-256", "setup": "active"}]
        }},
        "sources": [{"type": "audio", "id": format!("{id}-a0"), "sources": [{"ssrc": ssrc, "name": format!("{id}-a0")}]}]
    })
}

/// A minimal colibri2 body creating conference `meeting` with endpoints `ids`.
pub fn create_body(meeting: &str, ids: &[&str]) -> Value {
    json!({
        "meeting-id": meeting, "name": "room@muc.example", "create": true,
        "endpoints": ids.iter().map(|id| json!({"create": true, "id": id})).collect::<Vec<_>>()
    })
}

/// POSTs `body` (a colibri2 create), then for each created endpoint answers with a new
/// peer's transport and audio SSRC `1000 + i` and connects the peer through the bridge.
/// Returns the POST's reply and the connected peers, in endpoint order.
pub fn colibri2_call(
    stack: &Stack,
    peers: &Peers,
    meeting: &str,
    body: &Value,
) -> (Value, Vec<Peer>) {
    let r = stack.focus("POST", "/colibri/v2/conferences", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    let mut out = Vec::new();
    for (i, ep) in created["endpoints"].as_array().unwrap().iter().enumerate() {
        let id = ep["id"].as_str().unwrap();
        let mut peer = peers.peer();
        let r = stack.focus(
            "PATCH",
            &format!("/colibri/v2/conferences/{meeting}"),
            &json!({"meeting-id": meeting, "endpoints": [answer(&peer, id, 1000 + i as u32)]}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        peer.connect(
            &allocation_from_colibri2(meeting, ep),
            Duration::from_secs(10),
        )
        .expect("peer connects through the bridge");
        out.push(peer);
    }
    (created, out)
}

/// Sends `n` packets from each peer to the other and returns how many each received.
pub fn exchange(peers: &mut [Peer], seq0: u16, n: u16) -> Vec<usize> {
    for (i, p) in peers.iter_mut().enumerate() {
        for k in 0..n {
            let seq = seq0.wrapping_add(k);
            p.send_rtp(
                1000 + i as u32,
                seq,
                u32::from(seq) * 960,
                false,
                format!("{i}:{seq}").as_bytes(),
            )
            .unwrap();
        }
    }
    let mut got = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        let other = 1 - i;
        let mut count = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while count < n as usize && Instant::now() < deadline {
            if let Some(Incoming::Rtp { ssrc, seq, payload }) =
                p.recv(Duration::from_millis(100)).unwrap()
            {
                assert_eq!(ssrc, 1000 + other as u32);
                assert_eq!(payload, format!("{other}:{seq}").into_bytes());
                count += 1;
            }
        }
        got.push(count);
    }
    got
}

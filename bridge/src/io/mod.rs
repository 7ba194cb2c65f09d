//! The I/O seam between a worker and its UDP socket: the [`Backend`] trait, the [`TxBatch`]
//! of datagrams to send, and [`open`], which picks io_uring ([`uring`]) or
//! recvmmsg/sendmmsg ([`mmsg`]) behind it; [`Opener`] adds AF_XDP ([`xdp`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

pub mod gso;
pub mod mmsg;
pub mod socket;
pub mod uring;
pub mod xdp;

pub use socket::bind_udp;

/// Largest datagram a slot holds (RTP/RTCP/STUN/DTLS over a 1500 MTU fits easily).
pub const MAX_DATAGRAM: usize = 2048;

/// Most datagrams one [`Backend::recv`] call hands over: enough to amortise the syscall,
/// small enough that the worker gets back to its timers and send queue promptly.
pub const RECV_BATCH: usize = 64;

/// Longest single wait a backend hands to the kernel; a longer `recv` timeout is clamped
/// (it then just returns 0 early), which keeps huge Durations from overflowing `time_t`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Which backend is actually running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// io_uring: multishot recvmsg into provided buffers, batched sendmsg.
    Uring,
    /// recvmmsg/sendmmsg with poll for waiting.
    Mmsg,
    /// AF_XDP in copy mode (generic XDP, or a driver without zero-copy).
    Xdp,
    /// AF_XDP in zero-copy mode.
    #[serde(rename = "xdp-zc")]
    XdpZeroCopy,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "uring",
            BackendKind::Mmsg => "mmsg",
            BackendKind::Xdp => "xdp",
            BackendKind::XdpZeroCopy => "xdp-zc",
        })
    }
}

/// Which backend the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IoChoice {
    /// The measured winner, mmsg (over the benchmark's runs io_uring did not beat it: a
    /// median of about 0.97 of its forwarding per CPU-second; see `BENCHMARKS.md`), with
    /// AF_XDP first when `--xdp-iface` is set (see [`Opener`]).
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// AF_XDP on `--xdp-iface`, or fail (see [`Opener`]).
    Xdp,
}

impl fmt::Display for IoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Mmsg => "mmsg",
            IoChoice::Xdp => "xdp",
        })
    }
}

impl FromStr for IoChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(IoChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(IoChoice::Uring),
            "mmsg" => Ok(IoChoice::Mmsg),
            "xdp" | "af_xdp" | "af-xdp" => Ok(IoChoice::Xdp),
            other => Err(format!(
                "unknown I/O backend {other:?} (expected auto, uring, mmsg or xdp)"
            )),
        }
    }
}

/// Datagrams queued for sending: a fixed set of MAX_DATAGRAM-byte slots allocated once
/// (stable addresses: one `Box<[u8]>` of `capacity * MAX_DATAGRAM`), each with a length
/// and a destination.
pub struct TxBatch {
    data: Box<[u8]>,
    lens: Box<[u16]>,
    dsts: Box<[SocketAddr]>,
    len: usize,
}

impl fmt::Debug for TxBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxBatch")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .finish()
    }
}

impl TxBatch {
    /// A batch of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let unspecified = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        TxBatch {
            data: vec![0u8; capacity * MAX_DATAGRAM].into_boxed_slice(),
            lens: vec![0u16; capacity].into_boxed_slice(),
            dsts: vec![unspecified; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// How many datagrams the batch holds when full.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// No free slot left.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// The next free slot's whole buffer (MAX_DATAGRAM bytes) to write a datagram into,
    /// or None when full.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.len * MAX_DATAGRAM;
        Some(&mut self.data[start..start + MAX_DATAGRAM])
    }

    /// Queue the datagram just written into [`slot`](Self::slot): its length and destination.
    ///
    /// # Panics
    /// When the batch is full or `len > MAX_DATAGRAM` (both are caller bugs).
    pub fn commit(&mut self, len: usize, dst: SocketAddr) {
        assert!(!self.is_full(), "TxBatch::commit on a full batch");
        assert!(
            len <= MAX_DATAGRAM,
            "TxBatch::commit: {len} bytes exceeds MAX_DATAGRAM"
        );
        // MAX_DATAGRAM fits in u16, checked by the assert above.
        self.lens[self.len] = len as u16;
        self.dsts[self.len] = dst;
        self.len += 1;
    }

    /// Convenience: copy `data` into the next slot and commit; false when full (or when
    /// `data` is longer than MAX_DATAGRAM, which is never sent).
    pub fn push(&mut self, data: &[u8], dst: SocketAddr) -> bool {
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        let Some(slot) = self.slot() else {
            return false;
        };
        slot[..data.len()].copy_from_slice(data);
        self.commit(data.len(), dst);
        true
    }

    /// The `i`-th queued datagram and its destination.
    ///
    /// # Panics
    /// When `i >= len()`.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        assert!(i < self.len, "TxBatch::get({i}) beyond len {}", self.len);
        let start = i * MAX_DATAGRAM;
        (
            &self.data[start..start + usize::from(self.lens[i])],
            self.dsts[i],
        )
    }

    /// Forget every queued datagram (the slots stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// What a worker needs from its socket. Object-safe (an AF_XDP backend will come later
/// behind it).
pub trait Backend {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// The socket's bound address.
    fn local_addr(&self) -> SocketAddr;

    /// Wait at most `timeout` for datagrams (return at once if some are already there),
    /// then hand each, in place and mutable, with its source address, to `on_datagram`.
    /// Returns how many were handed over (0 on timeout). Handles a batch (up to
    /// [`RECV_BATCH`]) per call.
    fn recv(
        &mut self,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr),
    ) -> std::io::Result<usize>;

    /// Send every datagram in `tx` and clear it. Returns how many the kernel took; the
    /// rest were dropped (socket buffer full after a short retry) and the caller counts
    /// them. Never blocks long.
    fn send(&mut self, tx: &mut TxBatch) -> std::io::Result<usize>;

    /// Syscalls made so far (submits/enters, or recvmmsg/sendmmsg/poll calls), for
    /// benchmarks.
    fn syscalls(&self) -> u64;

    /// Datagrams the kernel dropped so far because the backend's receive ring was full
    /// or had no free buffer (AF_XDP's socket statistics; 0 for backends without such
    /// a ring). One syscall: for stats, not for the hot path.
    fn ring_drops(&self) -> u64 {
        0
    }
}

/// Open the chosen backend on a bound socket, in the thread that will use it. Auto is
/// mmsg here (AF_XDP is [`Opener`]'s to try first).
pub fn open(choice: IoChoice, socket: UdpSocket) -> std::io::Result<Box<dyn Backend>> {
    match choice {
        IoChoice::Xdp => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the xdp backend is opened through io::Opener (it needs --xdp-iface)",
        )),
        IoChoice::Uring => Ok(Box::new(uring::UringBackend::open(socket)?)),
        IoChoice::Mmsg | IoChoice::Auto => Ok(Box::new(mmsg::MmsgBackend::open(socket)?)),
    }
}

/// Opens each worker's backend for a configured choice: attaches the XDP program once
/// (explicit `xdp`, or `auto` with an XDP interface), then opens one AF_XDP socket per
/// worker; `auto` falls back to [`open`] (mmsg) with one warning when AF_XDP cannot be
/// had. Cheap to clone into each worker thread.
#[derive(Clone, Debug)]
pub struct Opener {
    choice: IoChoice,
    xdp: Option<std::sync::Arc<xdp::Attached>>,
}

impl Opener {
    /// Prepare for `workers` workers bound to `bind`; an explicit `xdp` that cannot attach
    /// is an error, `auto` only logs and carries on without it.
    pub fn prepare(
        choice: IoChoice,
        config: &xdp::XdpConfig,
        bind: IpAddr,
        workers: usize,
    ) -> std::io::Result<Self> {
        let xdp = match choice {
            IoChoice::Xdp => Some(xdp::attach(config, bind, workers)?),
            IoChoice::Auto if config.iface.is_some() => match xdp::attach(config, bind, workers) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "AF_XDP unavailable, falling back to mmsg");
                    None
                }
            },
            _ => None,
        };
        Ok(Self { choice, xdp })
    }

    /// Open worker `worker`'s backend on its bound socket, in the thread that will use it.
    pub fn open(&self, worker: usize, socket: UdpSocket) -> std::io::Result<Box<dyn Backend>> {
        let Some(attached) = &self.xdp else {
            return open(self.choice, socket);
        };
        match attached.open(worker, socket) {
            Ok(b) => Ok(b),
            Err((e, _)) if self.choice == IoChoice::Xdp => Err(e),
            Err((e, socket)) => {
                tracing::warn!(worker, error = %e, "AF_XDP socket unavailable, falling back to mmsg");
                open(IoChoice::Auto, socket)
            }
        }
    }
}

/// Add context to an I/O error while keeping its kind (and so its errno meaning).
pub(crate) fn context(err: std::io::Error, what: impl fmt::Display) -> std::io::Error {
    std::io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// An `errno` value as an error with context.
pub(crate) fn errno_error(errno: i32, what: impl fmt::Display) -> std::io::Error {
    context(std::io::Error::from_raw_os_error(errno), what)
}

/// A destination in the form the kernel takes, built without unsafe code; the backends
/// point `msg_name` at the variant's struct.
#[derive(Clone, Copy)]
pub(crate) enum RawAddr {
    /// For an AF_INET socket.
    V4(libc::sockaddr_in),
    /// For an AF_INET6 socket (IPv4 destinations mapped to ::ffff:a.b.c.d).
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    /// A placeholder for preallocated arrays.
    pub(crate) const EMPTY: RawAddr = RawAddr::V4(libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    });

    /// `dst` encoded for a socket of the given family (`v6_socket`), or None when it cannot
    /// be reached from it (an IPv6 destination on an IPv4 socket).
    pub(crate) fn new(dst: SocketAddr, v6_socket: bool) -> Option<RawAddr> {
        match (dst, v6_socket) {
            (SocketAddr::V4(a), false) => Some(RawAddr::V4(sockaddr_in(a))),
            (SocketAddr::V4(a), true) => Some(RawAddr::V6(sockaddr_in6(SocketAddrV6::new(
                a.ip().to_ipv6_mapped(),
                a.port(),
                0,
                0,
            )))),
            (SocketAddr::V6(a), true) => Some(RawAddr::V6(sockaddr_in6(a))),
            (SocketAddr::V6(a), false) => a
                .ip()
                .to_ipv4_mapped()
                .map(|ip| RawAddr::V4(sockaddr_in(SocketAddrV4::new(ip, a.port())))),
        }
    }

    /// Pointer and length for `msg_name`.
    pub(crate) fn as_name(&self) -> (*const libc::c_void, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_in6(a: SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_flowinfo: a.flowinfo().to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        sin6_scope_id: a.scope_id(),
    }
}

/// Decode a kernel-filled `sockaddr_in`/`sockaddr_in6` from its bytes (native layout),
/// turning IPv4-mapped IPv6 (::ffff:a.b.c.d) into a plain V4 address.
pub(crate) fn sockaddr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    match family {
        libc::AF_INET if b.len() >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if b.len() >= 28 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flowinfo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let scope_id = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            let ip = Ipv6Addr::from(octets);
            Some(normalize(SocketAddr::V6(SocketAddrV6::new(
                ip, port, flowinfo, scope_id,
            ))))
        }
        _ => None,
    }
}

/// IPv4-mapped IPv6 source addresses become plain V4 ones; anything else is unchanged.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Both backends, so every behavioural test runs over each.
    const CHOICES: [IoChoice; 2] = [IoChoice::Uring, IoChoice::Mmsg];

    /// Socket buffers for test sockets: enough for every burst below.
    const TEST_BUFFER: usize = 4 << 20;

    /// Upper bound on any wait in these tests, so a bug fails instead of hanging.
    const TEST_DEADLINE: Duration = Duration::from_secs(5);

    fn open_on(choice: IoChoice, addr: &str) -> Option<Box<dyn Backend>> {
        let socket = match bind_udp(addr.parse().unwrap(), TEST_BUFFER) {
            Ok(s) => s,
            Err(e) if addr.contains(':') && addr.starts_with('[') => {
                eprintln!("skipping {addr}: {e}");
                return None;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        };
        let backend = open(choice, socket).unwrap_or_else(|e| panic!("open {choice}: {e}"));
        let expected = match choice {
            IoChoice::Mmsg => BackendKind::Mmsg,
            _ => BackendKind::Uring,
        };
        assert_eq!(backend.kind(), expected);
        Some(backend)
    }

    /// Receive until `n` datagrams arrived (or the deadline): (payload, source) pairs and
    /// the number of recv calls that delivered something.
    fn recv_n(b: &mut dyn Backend, n: usize) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        let mut got = Vec::new();
        let mut calls = 0;
        let deadline = Instant::now() + TEST_DEADLINE;
        while got.len() < n && Instant::now() < deadline {
            let k = b
                .recv(Duration::from_millis(100), &mut |d, src| {
                    got.push((d.to_vec(), src))
                })
                .unwrap();
            assert!(k <= RECV_BATCH, "recv handed over {k} > RECV_BATCH");
            if k > 0 {
                calls += 1;
            }
        }
        (got, calls)
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    fn echo(choice: IoChoice, addr: &str) {
        let (Some(mut server), Some(mut client)) = (open_on(choice, addr), open_on(choice, addr))
        else {
            return;
        };
        let server_addr = server.local_addr();
        let client_addr = client.local_addr();
        const N: usize = 120;
        const ROUND: usize = 40;
        let sizes: Vec<usize> = (0..N).map(|i| (i * 397) % MAX_DATAGRAM + 1).collect();
        let mut tx = TxBatch::new(ROUND);
        for round in 0..N / ROUND {
            for (i, &size) in sizes.iter().enumerate().skip(round * ROUND).take(ROUND) {
                assert!(tx.push(&payload(i, size), server_addr));
            }
            assert_eq!(client.send(&mut tx).unwrap(), ROUND, "{choice} client send");
            assert!(tx.is_empty());

            let (got, _) = recv_n(server.as_mut(), ROUND);
            assert_eq!(got.len(), ROUND, "{choice} server got");
            for (data, src) in &got {
                assert_eq!(*src, client_addr, "{choice} source address");
                assert!(tx.push(data, *src));
            }
            assert_eq!(server.send(&mut tx).unwrap(), ROUND, "{choice} server send");

            let (back, _) = recv_n(client.as_mut(), ROUND);
            assert_eq!(back.len(), ROUND, "{choice} client got");
            for (k, (data, src)) in back.iter().enumerate() {
                let i = round * ROUND + k;
                assert_eq!(*src, server_addr);
                assert_eq!(data.len(), sizes[i], "{choice} size of #{i}");
                assert_eq!(*data, payload(i, sizes[i]), "{choice} content of #{i}");
            }
        }
        assert!(client.syscalls() > 0 && server.syscalls() > 0);
    }

    /// A fan-out batch (each packet to two receivers, like the worker's) goes out as
    /// segmented runs where the kernel has UDP_SEGMENT: every receiver still gets each of
    /// its datagrams whole, separately and in order.
    fn segmented_fan_out(choice: IoChoice) {
        let (Some(mut client), Some(mut a), Some(mut b)) = (
            open_on(choice, "127.0.0.1:0"),
            open_on(choice, "127.0.0.1:0"),
            open_on(choice, "127.0.0.1:0"),
        ) else {
            return;
        };
        // Five video packets, an audio packet, two more video packets and an oversized
        // one: runs of equal size with a shorter last, and a datagram that goes alone.
        let sizes = [1200, 1200, 1200, 1200, 1200, 150, 1200, 1200, 1800];
        let mut tx = TxBatch::new(2 * sizes.len());
        for (i, &size) in sizes.iter().enumerate() {
            assert!(tx.push(&payload(i, size), a.local_addr()));
            assert!(tx.push(&payload(100 + i, size), b.local_addr()));
        }
        let before = client.syscalls();
        assert_eq!(client.send(&mut tx).unwrap(), 2 * sizes.len(), "{choice}");
        let calls = client.syscalls() - before;
        assert!(calls >= 1, "{choice}: {calls} syscalls");
        for (rx, base) in [(&mut a, 0), (&mut b, 100)] {
            let (got, _) = recv_n(rx.as_mut(), sizes.len());
            assert_eq!(got.len(), sizes.len(), "{choice}");
            for (i, (data, src)) in got.iter().enumerate() {
                assert_eq!(*src, client.local_addr(), "{choice}");
                assert_eq!(*data, payload(base + i, sizes[i]), "{choice}: datagram {i}");
            }
        }
    }

    #[test]
    fn segmented_fan_out_arrives_whole_and_in_order() {
        for choice in CHOICES {
            segmented_fan_out(choice);
        }
    }

    #[test]
    fn echo_v4() {
        for choice in CHOICES {
            echo(choice, "127.0.0.1:0");
        }
    }

    #[test]
    fn echo_v6() {
        for choice in CHOICES {
            echo(choice, "[::1]:0");
        }
    }

    #[test]
    fn large_batch_in_one_call() {
        for choice in CHOICES {
            let mut server = open_on(choice, "127.0.0.1:0").unwrap();
            let mut client = open_on(choice, "127.0.0.1:0").unwrap();
            const N: usize = 300; // more than one send chunk (256)
            let mut tx = TxBatch::new(N);
            for i in 0..N {
                let mut d = payload(i, 100);
                d[..4].copy_from_slice(&(i as u32).to_be_bytes());
                assert!(tx.push(&d, server.local_addr()));
            }
            assert!(tx.is_full());
            assert_eq!(client.send(&mut tx).unwrap(), N, "{choice}");
            let (got, calls) = recv_n(server.as_mut(), N);
            assert_eq!(got.len(), N, "{choice}");
            // More datagrams than one recv batch: several calls were needed.
            assert!(calls >= N.div_ceil(RECV_BATCH), "{choice}: {calls} calls");
            let mut seen = vec![false; N];
            for (d, src) in got {
                assert_eq!(src, client.local_addr());
                let i = u32::from_be_bytes(d[..4].try_into().unwrap()) as usize;
                assert!(!seen[i], "{choice}: duplicate #{i}");
                seen[i] = true;
            }
        }
    }

    #[test]
    fn recv_times_out() {
        for choice in CHOICES {
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let start = Instant::now();
            let n = b
                .recv(Duration::from_millis(50), &mut |_, _| {
                    panic!("no datagram expected")
                })
                .unwrap();
            let took = start.elapsed();
            assert_eq!(n, 0);
            assert!(
                took >= Duration::from_millis(45),
                "{choice}: returned after {took:?}"
            );
            assert!(
                took < Duration::from_secs(1),
                "{choice}: returned after {took:?}"
            );
            let start = Instant::now();
            assert_eq!(b.recv(Duration::ZERO, &mut |_, _| {}).unwrap(), 0);
            assert!(start.elapsed() < Duration::from_millis(20));
        }
    }

    #[test]
    fn recv_returns_at_once_when_data_waits() {
        for choice in CHOICES {
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.send_to(b"ping", b.local_addr()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            let start = Instant::now();
            let mut got = Vec::new();
            let n = b
                .recv(Duration::from_secs(2), &mut |d, src| {
                    got.push((d.to_vec(), src))
                })
                .unwrap();
            assert_eq!(n, 1, "{choice}");
            assert!(start.elapsed() < Duration::from_millis(500));
            assert_eq!(got, vec![(b"ping".to_vec(), peer.local_addr().unwrap())]);
        }
    }

    #[test]
    fn dual_stack_reports_v4_source() {
        for choice in CHOICES {
            let Some(mut server) = open_on(choice, "[::]:0") else {
                continue;
            };
            let port = server.local_addr().port();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(TEST_DEADLINE)).unwrap();
            peer.send_to(b"hello", ("127.0.0.1", port)).unwrap();
            let (got, _) = recv_n(server.as_mut(), 1);
            assert_eq!(got.len(), 1, "{choice}");
            let src = got[0].1;
            assert!(src.is_ipv4(), "{choice}: source {src} should be plain V4");
            assert_eq!(src, peer.local_addr().unwrap());
            // And a reply to a V4 address goes out of the IPv6 socket (mapped).
            let mut tx = TxBatch::new(4);
            assert!(tx.push(b"world", src));
            assert_eq!(server.send(&mut tx).unwrap(), 1, "{choice}");
            let mut buf = [0u8; 64];
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"world");
            assert_eq!(from.port(), port);
        }
    }

    #[test]
    fn oversized_datagram_dropped() {
        for choice in CHOICES {
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.send_to(&[7u8; MAX_DATAGRAM + 100], b.local_addr())
                .unwrap();
            peer.send_to(&[9u8; MAX_DATAGRAM], b.local_addr()).unwrap();
            let (got, _) = recv_n(b.as_mut(), 1);
            assert_eq!(got.len(), 1, "{choice}");
            assert_eq!(got[0].0, vec![9u8; MAX_DATAGRAM], "{choice}");
            assert_eq!(
                b.recv(Duration::from_millis(20), &mut |_, _| {}).unwrap(),
                0
            );
        }
    }

    #[test]
    fn unreachable_family_dropped_not_fatal() {
        for choice in CHOICES {
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut tx = TxBatch::new(4);
            assert!(tx.push(b"x", "[2001:db8::1]:9".parse().unwrap()));
            assert!(tx.push(b"y", peer.local_addr().unwrap()));
            assert_eq!(b.send(&mut tx).unwrap(), 1, "{choice}");
            assert!(tx.is_empty());
            peer.set_read_timeout(Some(TEST_DEADLINE)).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(peer.recv_from(&mut buf).unwrap().0, 1);
            assert_eq!(buf[0], b'y');
        }
    }

    /// More datagrams than the io_uring backend has provided buffers, all waiting before
    /// the first recv: the multishot receive runs dry (ENOBUFS), must be re-armed, and
    /// everything the socket kept is still delivered.
    #[test]
    fn survives_buffer_exhaustion() {
        for choice in CHOICES {
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            const N: usize = 1500;
            for i in 0..N {
                peer.send_to(&(i as u32).to_be_bytes(), b.local_addr())
                    .unwrap();
            }
            // Let the receive side run dry before the first recv.
            std::thread::sleep(Duration::from_millis(20));
            let (got, _) = recv_n(b.as_mut(), N);
            assert_eq!(got.len(), N, "{choice}");
            let (got, _) = {
                peer.send_to(b"after", b.local_addr()).unwrap();
                recv_n(b.as_mut(), 1)
            };
            assert_eq!(got[0].0, b"after", "{choice}");
        }
    }

    /// Datagrams arriving while the io_uring backend waits for its sends are stashed and
    /// delivered by the next recv, in order.
    #[test]
    fn interleaved_send_and_recv() {
        for choice in CHOICES {
            let mut a = open_on(choice, "127.0.0.1:0").unwrap();
            let mut b = open_on(choice, "127.0.0.1:0").unwrap();
            let mut tx = TxBatch::new(64);
            let mut expected = 0u32;
            let mut next_to_send = 0u32;
            for _ in 0..20 {
                for _ in 0..50 {
                    tx.push(&next_to_send.to_be_bytes(), a.local_addr());
                    next_to_send += 1;
                    if tx.is_full() {
                        b.send(&mut tx).unwrap();
                    }
                }
                b.send(&mut tx).unwrap();
                // `a` sends too (to b) before reading, so its receives land meanwhile.
                assert!(tx.push(b"noise", b.local_addr()));
                a.send(&mut tx).unwrap();
                let (got, _) = recv_n(a.as_mut(), 50);
                for (d, _) in got {
                    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), expected);
                    expected += 1;
                }
            }
            assert_eq!(expected, next_to_send, "{choice}");
            let (noise, _) = recv_n(b.as_mut(), 20);
            assert_eq!(noise.len(), 20, "{choice}");
        }
    }

    /// Rough single-thread echo throughput of each backend (run by hand:
    /// `cargo test -p viaduct-bridge --release --lib io::tests::echo_throughput -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn echo_throughput() {
        const BATCH: usize = 64;
        const SIZE: usize = 1200;
        const RUN: Duration = Duration::from_secs(2);
        for choice in CHOICES {
            let mut server = open_on(choice, "127.0.0.1:0").unwrap();
            let mut client = open_on(choice, "127.0.0.1:0").unwrap();
            let (server_addr, client_addr) = (server.local_addr(), client.local_addr());
            let mut tx = TxBatch::new(BATCH);
            let mut echo_tx = TxBatch::new(BATCH);
            let start = Instant::now();
            let mut echoed = 0u64;
            let mut lost = 0u64;
            while start.elapsed() < RUN {
                while tx.push(&[0x80; SIZE], server_addr) {}
                lost += (BATCH - client.send(&mut tx).unwrap()) as u64;
                let mut pending = 0;
                for _ in 0..8 {
                    pending += server
                        .recv(Duration::from_millis(5), &mut |d, src| {
                            echo_tx.push(d, src);
                        })
                        .unwrap();
                    if pending >= BATCH {
                        break;
                    }
                }
                server.send(&mut echo_tx).unwrap();
                let mut back = 0;
                for _ in 0..8 {
                    back += client
                        .recv(Duration::from_millis(5), &mut |_, _| {})
                        .unwrap();
                    if back >= pending {
                        break;
                    }
                }
                lost += (BATCH - back) as u64;
                echoed += back as u64;
            }
            let secs = start.elapsed().as_secs_f64();
            let calls = server.syscalls() + client.syscalls();
            eprintln!(
                "{choice}: {:.0} echoes/s ({SIZE} B, batches of {BATCH}), {:.3} syscalls per datagram, {lost} lost, to {client_addr}",
                echoed as f64 / secs,
                calls as f64 / (2.0 * echoed as f64),
            );
        }
    }

    #[test]
    fn tx_batch_slots() {
        let dst: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut tx = TxBatch::new(2);
        assert_eq!(
            (tx.capacity(), tx.len(), tx.is_empty(), tx.is_full()),
            (2, 0, true, false)
        );
        let slot = tx.slot().unwrap();
        assert_eq!(slot.len(), MAX_DATAGRAM);
        slot[..3].copy_from_slice(b"abc");
        tx.commit(3, dst);
        assert_eq!(tx.get(0), (&b"abc"[..], dst));
        assert!(tx.push(b"de", dst));
        assert!(tx.is_full());
        assert!(tx.slot().is_none());
        assert!(!tx.push(b"f", dst));
        assert_eq!(tx.get(1).0, b"de");
        // Slot buffers stay put across clear.
        let before = tx.get(0).0.as_ptr();
        tx.clear();
        assert!(tx.is_empty());
        assert!(tx.push(&[1; MAX_DATAGRAM], dst));
        assert_eq!(tx.get(0).0.as_ptr(), before);
        assert!(!tx.push(&[1; MAX_DATAGRAM + 1], dst));
        assert_eq!(tx.len(), 1);
    }

    #[test]
    #[should_panic]
    fn tx_batch_commit_when_full_panics() {
        let mut tx = TxBatch::new(1);
        tx.commit(1, "127.0.0.1:1".parse().unwrap());
        tx.commit(1, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn io_choice_parse_display_serde() {
        for (s, c) in [
            ("auto", IoChoice::Auto),
            ("uring", IoChoice::Uring),
            ("mmsg", IoChoice::Mmsg),
            ("xdp", IoChoice::Xdp),
        ] {
            assert_eq!(s.parse::<IoChoice>().unwrap(), c);
            assert_eq!(c.to_string(), s);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
        }
        assert!("epoll".parse::<IoChoice>().is_err());
        assert_eq!(IoChoice::default(), IoChoice::Auto);
        assert_eq!(
            serde_json::to_string(&BackendKind::Uring).unwrap(),
            "\"uring\""
        );
        for k in [
            BackendKind::Uring,
            BackendKind::Mmsg,
            BackendKind::Xdp,
            BackendKind::XdpZeroCopy,
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
    }

    #[test]
    fn auto_opens_a_backend() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 0).unwrap();
        let b = open(IoChoice::Auto, socket).unwrap();
        assert_eq!(b.kind(), BackendKind::Mmsg);
    }

    #[test]
    fn sockaddr_round_trip() {
        let v4: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:99".parse().unwrap();
        for (addr, v6_socket) in [(v4, false), (v4, true), (v6, true)] {
            let raw = RawAddr::new(addr, v6_socket).unwrap();
            let bytes: Vec<u8> = match raw {
                RawAddr::V4(a) => [
                    &a.sin_family.to_ne_bytes()[..],
                    &a.sin_port.to_ne_bytes(),
                    &a.sin_addr.s_addr.to_ne_bytes(),
                ]
                .concat(),
                RawAddr::V6(a) => [
                    &a.sin6_family.to_ne_bytes()[..],
                    &a.sin6_port.to_ne_bytes(),
                    &a.sin6_flowinfo.to_ne_bytes(),
                    &a.sin6_addr.s6_addr,
                    &a.sin6_scope_id.to_ne_bytes(),
                ]
                .concat(),
            };
            assert_eq!(matches!(raw, RawAddr::V6(_)), v6_socket);
            assert_eq!(sockaddr_from_bytes(&bytes), Some(addr));
        }
        assert!(RawAddr::new(v6, false).is_none());
    }
}

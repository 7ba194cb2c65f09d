//! AF_XDP sockets (xdpilone rings over an mmap'd UMEM), one per queue ([`Xsk`]): receive
//! frames are parsed in place and handed over, sent datagrams are framed in place in free
//! UMEM frames. A bridge worker's [`XskBackend`] serves one port and sends what the fast
//! path cannot take (next hop unknown, other family, too large) through the worker's
//! kernel UDP socket (the [`MmsgBackend`] slow path), which also receives whatever the
//! XDP program passes to the kernel for that port. A load generator's [`XskPorts`] serves
//! a port range (one per synthetic peer) and has no slow path.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;
use xdpilone::{
    DeviceQueue, Errno, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User,
};

use super::frame::{self, Route};
use super::neigh::Neighbours;
use super::{Attached, FRAME_SIZE};
use crate::io::mmsg::MmsgBackend;
use crate::io::{normalize, Backend, BackendKind, TxBatch, MAX_WAIT, RECV_BATCH};

/// While the AF_XDP ring keeps delivering, the kernel socket (slow path) is also read
/// every this many `recv` calls: rare traffic (fragments, a packet on the wrong queue)
/// is not starved, and a busy loop pays about one extra syscall per 16 calls for it.
const KERNEL_POLL_EVERY: u32 = 16;

/// A neighbour-table miss re-reads the kernel's table at most this often: a dump per
/// miss would turn a flood from unknown addresses into a netlink flood.
const NEIGH_REFRESH: Duration = Duration::from_secs(1);

/// Wake-ups (sendto) per `send` at most: copy mode transmits at most 32 frames per call
/// (the kernel's TX_BATCH_SIZE), so this bounds one send to about 32 × 64 frames.
const MAX_TX_KICKS: u32 = 64;

/// Slots of the slow-path batch; a fuller one is flushed mid-send.
const SLOW_SLOTS: usize = 256;

/// An anonymous, page-aligned mapping for the UMEM.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(crate::io::context(
                io::Error::last_os_error(),
                format_args!("mmap of a {len}-byte UMEM"),
            ));
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// `len` bytes at `offset`, or None when out of bounds.
    ///
    /// # Safety
    /// The caller must own the frame holding `offset..offset + len` (taken from the receive
    /// ring and not yet given back to the fill ring, or on the free transmit list), so that
    /// the kernel neither reads nor writes it meanwhile, and must not create two views of it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes(&self, offset: u64, len: usize) -> Option<&mut [u8]> {
        let offset = usize::try_from(offset).ok()?;
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) of a live mapping we own; exclusivity is the
        // caller's promise (see `# Safety`).
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), len) })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; the rings and UMEM that used
        // it were dropped before (field order in XskBackend).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The rings of one AF_XDP socket.
struct Rings {
    rx: RingRx,
    tx: RingTx,
    device: DeviceQueue,
    user: User,
    _socket: Socket,
    _umem: Umem,
}

fn errno(e: Errno, what: &str) -> io::Error {
    crate::io::context(io::Error::from_raw_os_error(e.get_raw().abs()), what)
}

impl Rings {
    fn create(info: &IfInfo, area: &Area, frames: u32, zero_copy: bool) -> io::Result<Self> {
        let half = frames / 2;
        let config = UmemConfig {
            fill_size: half,
            complete_size: half,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is a page-aligned mapping of `frames * FRAME_SIZE` bytes that
        // outlives the UMEM (XskBackend drops its rings before its area).
        let umem = unsafe { Umem::new(config, area.as_slice_ptr()) }
            .map_err(|e| memlock_error(e, area.len))?;
        let socket = Socket::with_shared(info, &umem).map_err(|e| errno(e, "AF_XDP socket"))?;
        let device = umem
            .fq_cq(&socket)
            .map_err(|e| errno(e, "AF_XDP fill/completion rings"))?;
        let mode = if zero_copy {
            SocketConfig::XDP_BIND_ZEROCOPY
        } else {
            SocketConfig::XDP_BIND_COPY
        };
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: NonZeroU32::new(half),
                    tx_size: NonZeroU32::new(half),
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP | mode,
                },
            )
            .map_err(|e| errno(e, "AF_XDP rx/tx rings"))?;
        let rx = user
            .map_rx()
            .map_err(|e| errno(e, "mapping the AF_XDP rx ring"))?;
        let tx = user
            .map_tx()
            .map_err(|e| errno(e, "mapping the AF_XDP tx ring"))?;
        umem.bind(&user).map_err(|e| {
            errno(
                e,
                if zero_copy {
                    "binding the AF_XDP socket in zero-copy mode"
                } else {
                    "binding the AF_XDP socket"
                },
            )
        })?;
        Ok(Self {
            rx,
            tx,
            device,
            user,
            _socket: socket,
            _umem: umem,
        })
    }
}

/// UMEM registration failed: say what RLIMIT_MEMLOCK allows when that is the likely cause.
fn memlock_error(e: Errno, bytes: usize) -> io::Error {
    let raw = e.get_raw().abs();
    let err = io::Error::from_raw_os_error(raw);
    if ![libc::ENOBUFS, libc::ENOMEM, libc::EPERM].contains(&raw) {
        return crate::io::context(err, "registering the UMEM");
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live local the kernel fills.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0 {
        if lim.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            format!("{} bytes", lim.rlim_cur)
        }
    } else {
        "unknown".to_owned()
    };
    io::Error::new(
        err.kind(),
        format!(
            "registering a {} MiB UMEM failed ({err}); RLIMIT_MEMLOCK is {limit}: raise it (LimitMEMLOCK= in the unit, ulimit -l), grant CAP_IPC_LOCK, or lower --xdp-frames",
            bytes >> 20
        ),
    )
}

/// The kernel's drop counters for one AF_XDP socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// No free frame in the fill ring, or a frame too large for one.
    pub rx_dropped: u64,
    /// The receive ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (the drops among them are in
    /// `rx_dropped`).
    pub fill_ring_empty: u64,
}

impl KernelDrops {
    /// Datagrams lost on the way in.
    pub fn dropped(&self) -> u64 {
        self.rx_dropped + self.rx_ring_full
    }
}

/// One AF_XDP socket on one queue, with what both of its users need: the UMEM and its
/// rings, the free transmit frames and the neighbour table. [`XskBackend`] (a bridge
/// worker, one port, a kernel slow path) and [`XskPorts`] (a load generator, a port
/// range) are built on it.
struct Xsk {
    // Field order is drop order: the rings and UMEM go before the memory they use.
    rings: Rings,
    area: Area,
    attached: Arc<Attached>,
    queue: u32,
    xsk_fd: RawFd,
    /// Transmit frames (UMEM offsets) not in any ring.
    free_tx: Vec<u64>,
    /// Receive frames consumed this call, to give back to the fill ring.
    refill: Vec<u64>,
    /// Descriptors of one transmit round.
    descs: Vec<XdpDesc>,
    mac: [u8; 6],
    ifindex: u32,
    neighbours: Neighbours,
    last_refresh: Option<Instant>,
    ip_id: u16,
    zero_copy: bool,
    syscalls: u64,
    /// Datagrams by path, logged when the socket closes.
    paths: Paths,
}

/// How many datagrams took which path.
#[derive(Clone, Copy, Debug, Default)]
struct Paths {
    rx_xsk: u64,
    rx_kernel: u64,
    rx_declined: u64,
    tx_xsk: u64,
    tx_kernel: u64,
}

impl Xsk {
    /// Create the socket on `queue`, put every receive frame in the fill ring and read the
    /// neighbour table. Nothing is steered to it until the caller registers its ports.
    fn open(attached: Arc<Attached>, queue: u32) -> io::Result<Self> {
        let frames = attached.config.frames;
        let area = Area::new(attached.config.umem_bytes())?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(attached.iface.ifindex)
            .map_err(|e| errno(e, "interface index"))?;
        info.set_queue(queue);
        let mut made = None;
        if attached.program.native {
            match Rings::create(&info, &area, frames, true) {
                Ok(r) => made = Some((r, true)),
                Err(e) => tracing::debug!(error = %e, "zero-copy unavailable, using copy mode"),
            }
        }
        let (rings, zero_copy) = match made {
            Some(m) => m,
            None => (Rings::create(&info, &area, frames, false)?, false),
        };
        let half = frames / 2;
        let mut xsk = Self {
            xsk_fd: rings.user.as_raw_fd(),
            rings,
            area,
            queue,
            free_tx: (half..frames)
                .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
                .collect(),
            refill: Vec::with_capacity(RECV_BATCH),
            descs: Vec::with_capacity(half as usize),
            mac: attached.iface.mac,
            ifindex: attached.iface.ifindex,
            neighbours: Neighbours::new(attached.iface.ifindex),
            last_refresh: None,
            ip_id: 0,
            zero_copy,
            syscalls: 0,
            paths: Paths::default(),
            attached,
        };
        // Every receive frame starts in the fill ring.
        let filled = {
            let mut fill = xsk.rings.device.fill(half);
            let n = fill.insert((0..half).map(|i| u64::from(i) * u64::from(FRAME_SIZE)));
            fill.commit();
            n
        };
        if filled != half {
            tracing::warn!(filled, half, "fill ring took fewer frames than expected");
        }
        if let Err(e) = xsk.neighbours.refresh() {
            tracing::warn!(error = %e, "reading the neighbour table failed; MACs will be learned from received frames");
        }
        xsk.last_refresh = Some(Instant::now());
        Ok(xsk)
    }

    fn kind(&self) -> BackendKind {
        if self.zero_copy {
            BackendKind::XdpZeroCopy
        } else {
            BackendKind::Xdp
        }
    }

    /// Move completed transmit frames back to the free list.
    fn reap(&mut self) {
        let mut done = self.rings.device.complete(self.free_tx.capacity() as u32);
        while let Some(addr) = done.read() {
            self.free_tx.push(addr);
        }
        done.release();
    }

    /// Hand every frame waiting in the receive ring (up to a batch) to `on_frame` with its
    /// parsed addresses, then give the frames back to the fill ring. Returns how many
    /// datagrams were delivered.
    fn drain(&mut self, on_frame: &mut dyn FnMut(&mut [u8], &frame::Received)) -> usize {
        let mut delivered = 0;
        {
            let Self {
                rings,
                area,
                refill,
                neighbours,
                ifindex,
                paths,
                ..
            } = self;
            let mut rx = rings.rx.receive(RECV_BATCH as u32);
            while let Some(desc) = rx.read() {
                refill.push(desc.addr - desc.addr % u64::from(FRAME_SIZE));
                // SAFETY: this frame came out of the receive ring, so the kernel is done
                // with it until we put it back in the fill ring below; only this view exists.
                let Some(bytes) = (unsafe { area.bytes(desc.addr, desc.len as usize) }) else {
                    continue;
                };
                let Ok(r) = frame::parse(bytes, *ifindex) else {
                    paths.rx_declined += 1;
                    continue;
                };
                if neighbours.get(&r.src.ip()) != Some(r.src_mac) {
                    neighbours.learn(r.src.ip(), r.src_mac);
                }
                on_frame(&mut bytes[r.payload..r.payload + r.len], &r);
                delivered += 1;
            }
            rx.release();
            paths.rx_xsk += delivered as u64;
        }
        if !self.refill.is_empty() {
            // Retried like a transmit (see `transmit`): a stale cached view gives short inserts.
            let mut n = 0;
            while n < self.refill.len() {
                let mut fill = self.rings.device.fill((self.refill.len() - n) as u32);
                let k = fill.insert(self.refill[n..].iter().copied()) as usize;
                fill.commit();
                if k == 0 {
                    break;
                }
                n += k;
            }
            self.refill.drain(..n);
            if self.rings.device.needs_wakeup() {
                self.syscalls += 1;
                self.rings.device.wake();
            }
        }
        delivered
    }

    /// Wait up to `timeout` for the AF_XDP socket or `also` (a kernel socket); true when
    /// one is readable.
    fn wait(&mut self, also: Option<RawFd>, timeout: Duration) -> io::Result<bool> {
        let timeout = timeout.min(MAX_WAIT);
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(self.xsk_fd), pollfd(also.unwrap_or(-1))];
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let nfds = if also.is_some() { 2 } else { 1 };
        self.syscalls += 1;
        // SAFETY: `fds` and `ts` are live locals for the call and `nfds` is at most their
        // length; a null sigmask leaves the mask alone.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), nfds, &ts, std::ptr::null()) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        Err(crate::io::context(err, "xdp: ppoll"))
    }

    /// The next hop for `dst`, reading the kernel's table again (rate-limited) on a miss.
    fn next_hop(&mut self, dst: &SocketAddr) -> Option<[u8; 6]> {
        if let Some(mac) = self.neighbours.get(&dst.ip()) {
            return Some(mac);
        }
        let now = Instant::now();
        if self
            .last_refresh
            .is_none_or(|t| now.duration_since(t) >= NEIGH_REFRESH)
        {
            self.last_refresh = Some(now);
            if let Err(e) = self.neighbours.refresh() {
                tracing::debug!(error = %e, "neighbour table refresh failed");
            }
            return self.neighbours.get(&dst.ip());
        }
        None
    }

    /// Frame `data` from `src` to `dst` in a free transmit frame and queue it for the next
    /// [`transmit`](Self::transmit) (which runs first when no frame is free). False when
    /// this datagram cannot take the fast path (other family, too large, next hop
    /// unknown, no frame free): the caller sends it some other way or counts it.
    fn push(&mut self, data: &[u8], src: SocketAddr, dst: SocketAddr) -> bool {
        let hlen = frame::header_len(&dst.ip());
        if dst.is_ipv4() != src.is_ipv4() || hlen + data.len() > FRAME_SIZE as usize {
            return false;
        }
        let Some(dst_mac) = self.next_hop(&dst) else {
            return false;
        };
        if self.free_tx.is_empty() {
            self.transmit();
            self.reap();
        }
        let Some(addr) = self.free_tx.pop() else {
            return false;
        };
        // SAFETY: `addr` was on the free list: in no ring, so the kernel does not touch it
        // until we queue it, and this is the only view of it.
        let Some(buf) = (unsafe { self.area.bytes(addr, FRAME_SIZE as usize) }) else {
            return false;
        };
        buf[hlen..hlen + data.len()].copy_from_slice(data);
        let route = Route {
            src_mac: self.mac,
            dst_mac,
            src,
            dst,
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        match frame::write_headers(buf, &route, data.len(), self.ip_id) {
            Some(len) => {
                self.descs.push(XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                });
                true
            }
            None => {
                self.free_tx.push(addr);
                false
            }
        }
    }

    /// Put the collected descriptors on the transmit ring and kick the kernel; frames the
    /// ring did not take go back to the free list. Returns how many were queued.
    fn transmit(&mut self) -> usize {
        if self.descs.is_empty() {
            return 0;
        }
        // xdpilone serves a reservation from its cached view of the kernel's consumer and
        // refreshes that view only when it shows no room at all: a short insert is retried
        // (then with a fresh view) until the ring is really full.
        let mut n = 0;
        while n < self.descs.len() {
            let mut w = self.rings.tx.transmit((self.descs.len() - n) as u32);
            let k = w.insert(self.descs[n..].iter().copied()) as usize;
            w.commit();
            if k == 0 {
                break;
            }
            n += k;
        }
        for d in &self.descs[n..] {
            self.free_tx.push(d.addr);
        }
        self.descs.clear();
        self.paths.tx_xsk += n as u64;
        // Copy mode sends at most 32 frames per wake-up; zero-copy drivers only need one
        // when they ask for it.
        let mut kicks = 0;
        while self.rings.tx.needs_wakeup() && self.rings.tx.pending() > 0 && kicks < MAX_TX_KICKS {
            self.rings.tx.wake();
            self.syscalls += 1;
            kicks += 1;
            if self.zero_copy {
                break;
            }
        }
        n
    }

    /// The kernel's counters for this socket.
    fn kernel_drops(&self) -> Option<KernelDrops> {
        let s = self.rings.user.statistics_v2().ok()?;
        Some(KernelDrops {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            fill_ring_empty: s.rx_fill_ring_empty_descs,
        })
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // Stop steering to a socket that is going away; the kernel removes the socket from
        // the XSKMAP itself when it closes.
        let _ = self.attached.program.register(self.queue, None, None);
        let p = self.paths;
        let drops = self.kernel_drops();
        tracing::info!(
            queue = self.queue,
            rx_xsk = p.rx_xsk,
            rx_kernel = p.rx_kernel,
            rx_declined = p.rx_declined,
            tx_xsk = p.tx_xsk,
            tx_kernel = p.tx_kernel,
            xsk_rx_dropped = drops.map(|d| d.rx_dropped),
            xsk_rx_ring_full = drops.map(|d| d.rx_ring_full),
            xsk_fill_ring_empty = drops.map(|d| d.fill_ring_empty),
            neighbours = self.neighbours.len(),
            "AF_XDP socket closed"
        );
    }
}

/// One worker's AF_XDP backend.
pub(super) struct XskBackend {
    xsk: Xsk,
    /// The worker's kernel UDP socket (always set once `open` returns).
    kernel: Option<MmsgBackend>,
    kernel_fd: RawFd,
    /// Datagrams for the kernel path, filled by `send`.
    slow: TxBatch,
    local: SocketAddr,
    calls: u32,
}

impl XskBackend {
    #[allow(clippy::result_large_err)]
    pub(super) fn open(
        attached: Arc<Attached>,
        worker: usize,
        socket: UdpSocket,
    ) -> Result<Self, (io::Error, UdpSocket)> {
        let local = match socket.local_addr() {
            Ok(a) => normalize(a),
            Err(e) => return Err((e, socket)),
        };
        if local.ip() != attached.bind && !(local.ip().is_unspecified()) {
            let e = io::Error::other(format!(
                "socket bound to {local}, XDP program matches {}",
                attached.bind
            ));
            return Err((e, socket));
        }
        let local = SocketAddr::new(attached.bind, local.port());
        let queue = attached.config.queue + worker as u32;
        let xsk = match Xsk::open(attached, queue) {
            Ok(x) => x,
            Err(e) => return Err((e, socket)),
        };
        let port = local.port();
        if let Err(e) = xsk
            .attached
            .program
            .register(queue, Some(port..=port), Some(xsk.xsk_fd))
        {
            return Err((e, socket));
        }
        // A duplicate of the socket to hand back should MmsgBackend::open fail after
        // taking the original (it practically never does).
        let spare = match socket.try_clone() {
            Ok(s) => s,
            Err(e) => return Err((e, socket)),
        };
        let kernel_fd = socket.as_raw_fd();
        let kernel = match MmsgBackend::open(socket) {
            Ok(k) => k,
            Err(e) => return Err((e, spare)),
        };
        drop(spare);
        let a = &xsk.attached;
        tracing::info!(
            worker,
            iface = %a.iface.name,
            queue,
            %local,
            mode = if xsk.zero_copy { "zero-copy" } else { "copy" },
            xdp = if a.program.native { "native" } else { "generic" },
            umem_mib = a.config.umem_bytes() >> 20,
            "AF_XDP socket ready"
        );
        Ok(Self {
            xsk,
            kernel: Some(kernel),
            kernel_fd,
            slow: TxBatch::new(SLOW_SLOTS),
            local,
            calls: 0,
        })
    }

    /// Whatever the kernel socket has, without waiting.
    fn kernel_recv(
        &mut self,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        let n = match &mut self.kernel {
            Some(k) => k.recv(Duration::ZERO, on_datagram)?,
            None => 0,
        };
        self.xsk.paths.rx_kernel += n as u64;
        Ok(n)
    }

    /// Queue `data` for the kernel path, flushing the slow batch when it is full.
    fn slow_push(&mut self, data: &[u8], dst: SocketAddr) -> io::Result<()> {
        if self.slow.is_full() {
            self.slow_flush()?;
        }
        self.slow.push(data, dst);
        Ok(())
    }

    fn slow_flush(&mut self) -> io::Result<()> {
        let n = match &mut self.kernel {
            Some(k) if !self.slow.is_empty() => k.send(&mut self.slow)?,
            _ => 0,
        };
        self.xsk.paths.tx_kernel += n as u64;
        Ok(())
    }

    /// Datagrams handed to the kernel so far, by either path.
    fn sent_total(&self) -> u64 {
        self.xsk.paths.tx_xsk + self.xsk.paths.tx_kernel
    }
}

impl Backend for XskBackend {
    fn kind(&self) -> BackendKind {
        self.xsk.kind()
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(
        &mut self,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        self.xsk.reap();
        self.calls = self.calls.wrapping_add(1);
        let mut on_frame = |payload: &mut [u8], r: &frame::Received| on_datagram(payload, r.src);
        let mut n = self.xsk.drain(&mut on_frame);
        if n == 0 || self.calls.is_multiple_of(KERNEL_POLL_EVERY) {
            n += self.kernel_recv(on_datagram)?;
        }
        if n == 0 && !timeout.is_zero() && self.xsk.wait(Some(self.kernel_fd), timeout)? {
            let mut on_frame =
                |payload: &mut [u8], r: &frame::Received| on_datagram(payload, r.src);
            n += self.xsk.drain(&mut on_frame);
            n += self.kernel_recv(on_datagram)?;
        }
        Ok(n)
    }

    fn send(&mut self, tx: &mut TxBatch) -> io::Result<usize> {
        self.xsk.reap();
        let before = self.sent_total();
        let mut result = Ok(());
        for i in 0..tx.len() {
            let (data, dst) = tx.get(i);
            let dst = normalize(dst);
            if !self.xsk.push(data, self.local, dst) {
                result = self.slow_push(data, dst);
                if result.is_err() {
                    break;
                }
            }
        }
        self.xsk.transmit();
        if result.is_ok() {
            result = self.slow_flush();
        }
        tx.clear();
        result?;
        Ok((self.sent_total() - before) as usize)
    }

    fn ring_drops(&self) -> u64 {
        self.xsk.kernel_drops().map_or(0, |d| d.dropped())
    }

    fn syscalls(&self) -> u64 {
        self.xsk.syscalls + self.kernel.as_ref().map_or(0, |k| k.syscalls())
    }
}

/// An AF_XDP socket serving a range of local UDP ports on one queue, without a kernel
/// slow path: what a load generator with many peers on one address needs (every peer's
/// port steered to one socket, each datagram sent from the peer's own port). Datagrams
/// the fast path cannot take (next hop unknown, other family, no frame free) are refused
/// and the caller counts them.
pub struct XskPorts {
    xsk: Xsk,
    ip: std::net::IpAddr,
}

impl std::fmt::Debug for XskPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPorts")
            .field("queue", &self.xsk.queue)
            .field("ip", &self.ip)
            .finish()
    }
}

impl XskPorts {
    pub(super) fn open(
        attached: Arc<Attached>,
        worker: usize,
        ports: std::ops::RangeInclusive<u16>,
    ) -> io::Result<Self> {
        if *ports.start() == 0 || ports.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AF_XDP port range {ports:?} is empty or starts at 0"),
            ));
        }
        let queue = attached.config.queue + worker as u32;
        let ip = attached.bind;
        let xsk = Xsk::open(attached, queue)?;
        xsk.attached
            .program
            .register(queue, Some(ports.clone()), Some(xsk.xsk_fd))?;
        tracing::info!(
            iface = %xsk.attached.iface.name,
            queue,
            %ip,
            ports = ?ports,
            mode = if xsk.zero_copy { "zero-copy" } else { "copy" },
            xdp = if xsk.attached.program.native { "native" } else { "generic" },
            "AF_XDP port-range socket ready"
        );
        Ok(Self { xsk, ip })
    }

    /// Copy or zero-copy mode.
    pub fn kind(&self) -> BackendKind {
        self.xsk.kind()
    }

    /// Wait at most `timeout` for datagrams (not at all when some are there), then hand
    /// each, in place, to `on_datagram` with its source and the local port it was sent
    /// to. Returns how many were handed over; a batch (up to [`RECV_BATCH`]) per call.
    pub fn recv(
        &mut self,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr, u16),
    ) -> io::Result<usize> {
        self.xsk.reap();
        let mut on_frame =
            |payload: &mut [u8], r: &frame::Received| on_datagram(payload, r.src, r.dst.port());
        let mut n = self.xsk.drain(&mut on_frame);
        if n == 0 && !timeout.is_zero() && self.xsk.wait(None, timeout)? {
            n = self.xsk.drain(&mut on_frame);
        }
        Ok(n)
    }

    /// Frame `data` from local port `src_port` to `dst` and queue it; false when it
    /// cannot go (next hop unknown, other family, too large, no frame free). Queued
    /// frames leave at the next [`flush`](Self::flush), or earlier when frames run out.
    pub fn push(&mut self, src_port: u16, dst: SocketAddr, data: &[u8]) -> bool {
        let dst = normalize(dst);
        self.xsk.push(data, SocketAddr::new(self.ip, src_port), dst)
    }

    /// Hand every queued frame to the kernel; returns how many the ring took.
    pub fn flush(&mut self) -> usize {
        let n = self.xsk.transmit();
        self.xsk.reap();
        n
    }

    /// Syscalls made so far (wake-ups and polls).
    pub fn syscalls(&self) -> u64 {
        self.xsk.syscalls
    }

    /// The kernel's drop counters for this socket.
    pub fn kernel_drops(&self) -> Option<KernelDrops> {
        self.xsk.kernel_drops()
    }
}

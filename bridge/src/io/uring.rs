//! The io_uring backend: one ring per worker, one multishot `recvmsg` feeding a registered
//! provided-buffer ring, and one `sendmsg` SQE per queued datagram submitted in one go.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::gso::{self, Plan, SendArrays};
use super::{
    context, errno_error, sockaddr_from_bytes, Backend, BackendKind, TxBatch, MAX_DATAGRAM,
    MAX_WAIT, RECV_BATCH,
};

/// Submission-queue entries (the completion queue gets twice as many). Must hold a full
/// send chunk ([`TX_SLOTS`]) plus its cancels plus the receive re-arm; the CQ (2048) must
/// hold every buffer's CQE ([`RECV_BUFS`]) plus a send chunk's, so it never overflows.
const RING_ENTRIES: u32 = 1024;

/// Provided receive buffers (a power of two, as the kernel requires): about 1024 datagrams
/// of slack between the kernel and a worker that is busy elsewhere, ~2 MiB per worker.
const RECV_BUFS: u16 = 1024;

/// Buffer group id of the provided-buffer ring (one group per ring, so 0).
const BGID: u16 = 0;

/// Size of `struct io_uring_recvmsg_out` (namelen, controllen, payloadlen, flags: four
/// u32), which the kernel writes at the start of every multishot recvmsg buffer.
const RECVMSG_OUT_LEN: usize = 16;

/// Room reserved for the source address after that header: a `sockaddr_in6`, which also
/// fits a `sockaddr_in`.
const NAME_ROOM: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Where the payload starts in a receive buffer (no control data is requested).
const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_ROOM;

/// Bytes of each buffer offered to the kernel: a datagram longer than MAX_DATAGRAM comes
/// back with MSG_TRUNC and is dropped, as with the mmsg backend.
const RECV_BUF_USED: usize = PAYLOAD_OFFSET + MAX_DATAGRAM;

/// Stride between receive buffers: RECV_BUF_USED rounded up to a cache line so no two
/// buffers share one.
const RECV_BUF_STRIDE: usize = RECV_BUF_USED.next_multiple_of(64);

/// Size of one provided-buffer ring entry (`struct io_uring_buf`: addr u64, len u32,
/// bid u16, resv u16; the first entry's resv is the ring's tail).
const BUF_RING_ENTRY_LEN: usize = 16;

/// Send SQEs (messages) per submit; a larger [`TxBatch`] goes out in chunks of this size. Also the
/// size of the backend's msghdr/iovec/sockaddr arrays.
const TX_SLOTS: usize = 256;

/// Datagrams (iovecs) per send chunk: a chunk also ends when its messages hold this many.
const TX_IOVS: usize = 1024;

/// Datagrams the send plan has room for without allocating (the worker's batch size).
const PLAN_CAPACITY: usize = 4096;

/// How long one `send` may wait, once, for sends the kernel could not complete inline
/// (socket buffer full) before cancelling them and counting them as dropped.
const SEND_RETRY_WAIT: Duration = Duration::from_millis(1);

/// Per-attempt wait for cancelled requests to report back (they do so promptly).
const CANCEL_WAIT: Duration = Duration::from_millis(10);

/// Attempts at a bounded wait (cancellation, submit retries) before giving up.
const MAX_ATTEMPTS: u32 = 8;

// Compile-time checks of the sizing rules above.
const _: () = {
    assert!(RECV_BUFS.is_power_of_two());
    assert!(RECV_BUF_STRIDE >= RECV_BUF_USED);
    // The buffers after the ring entries stay page aligned as a block.
    assert!((RECV_BUFS as usize * BUF_RING_ENTRY_LEN).is_multiple_of(4096));
    // A send chunk plus its cancels plus the re-arm fit the SQ...
    assert!(2 * TX_SLOTS < RING_ENTRIES as usize);
    // ...and every buffer's CQE plus a chunk's fit the CQ (twice the SQ).
    assert!(RECV_BUFS as usize + 2 * TX_SLOTS < 2 * RING_ENTRIES as usize);
};

// user_data layout: bits 56..63 say what the request is (one of the UD_* kinds below),
// bits 32..55 carry the send generation, bits 0..31 the send slot.

/// Mask of the kind byte.
const UD_KIND_MASK: u64 = 0xff << 56;
/// The one multishot `recvmsg` (no payload bits).
const UD_RECV: u64 = 1 << 56;
/// A `sendmsg` of one TxBatch datagram: `UD_SEND | generation << 32 | slot`. The
/// generation (bumped per chunk) keeps a late CQE from being credited to a later chunk.
const UD_SEND: u64 = 2 << 56;
/// An `AsyncCancel`; its own CQE carries nothing we need and is ignored.
const UD_CANCEL: u64 = 3 << 56;
/// Mask of the 24-bit send generation (after shifting right by 32).
const UD_GEN_MASK: u64 = 0xff_ffff;
/// Mask of the send slot.
const UD_SLOT_MASK: u64 = 0xffff_ffff;

/// The provided-buffer ring and its buffers, in one anonymous mapping: first RECV_BUFS
/// ring entries (page aligned, as the kernel requires), then RECV_BUFS buffers of
/// RECV_BUF_STRIDE bytes.
struct BufRing {
    base: NonNull<u8>,
    map_len: usize,
    /// Our copy of the tail the kernel reads; the kernel owns entries from its head up to it.
    tail: u16,
    /// Buffers written behind `tail` but not yet published.
    staged: u16,
    /// Keep the mapping on drop: set when the kernel might still write into it.
    leak: bool,
}

impl BufRing {
    const RING_BYTES: usize = RECV_BUFS as usize * BUF_RING_ENTRY_LEN;

    fn new() -> io::Result<Self> {
        let map_len = Self::RING_BYTES + RECV_BUFS as usize * RECV_BUF_STRIDE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing does
        // not alias any existing memory; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(context(
                io::Error::last_os_error(),
                format_args!("io_uring: mmap {map_len} bytes of receive buffers"),
            ));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "io_uring: mmap returned null")
        })?;
        Ok(BufRing {
            base,
            map_len,
            tail: 0,
            staged: 0,
            leak: false,
        })
    }

    fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    fn entries(&self) -> *mut types::BufRingEntry {
        self.base.as_ptr().cast()
    }

    /// Buffer `bid` (the RECV_BUF_USED bytes offered to the kernel).
    ///
    /// # Safety
    /// The caller must own buffer `bid`: the kernel handed it over in a CQE and it has not
    /// been given back with [`recycle`](Self::recycle) since.
    unsafe fn buffer(&mut self, bid: u16) -> &mut [u8] {
        let offset = Self::RING_BYTES + usize::from(bid) * RECV_BUF_STRIDE;
        debug_assert!(bid < RECV_BUFS);
        // SAFETY: bid < RECV_BUFS (`reap` stashes no other id), so the range lies inside the
        // mapping; the caller guarantees
        // the kernel is not writing it, and `&mut self` that nothing else in Rust is.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset), RECV_BUF_USED) }
    }

    /// Put buffer `bid` back behind the tail (visible to the kernel after `publish`).
    fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < RECV_BUFS);
        let idx = usize::from(self.tail.wrapping_add(self.staged) & (RECV_BUFS - 1));
        let addr = self.base.as_ptr() as u64
            + (Self::RING_BYTES + usize::from(bid) * RECV_BUF_STRIDE) as u64;
        // SAFETY: idx < RECV_BUFS so the entry is inside the ring; it lies beyond the tail,
        // where the kernel does not read; only addr/len/bid are written, never the resv
        // field that doubles as the tail in entry 0.
        unsafe {
            let entry = &mut *self.entries().add(idx);
            entry.set_addr(addr);
            entry.set_len(RECV_BUF_USED as u32);
            entry.set_bid(bid);
        }
        self.staged += 1;
    }

    /// Make every recycled buffer visible to the kernel with one tail store.
    fn publish(&mut self) {
        if self.staged == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(self.staged);
        self.staged = 0;
        // SAFETY: the ring base is page aligned and its first entry initialised (mapping is
        // zero-filled); the tail is a u16 the kernel reads atomically, so an AtomicU16 view
        // of it with a release store orders the entry writes above before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries()).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: the mapping came from mmap in `new` with this length and nothing refers
        // to it any more: the owner drops the ring (and with it the kernel's registration)
        // first, and sets `leak` when a request might still write into it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

/// Receive completions taken off the CQ but not yet handed over (each holds one buffer, so
/// RECV_BUFS entries always suffice): fixed-capacity FIFO of (buffer id, CQE result).
struct Stash {
    items: Box<[(u16, u32)]>,
    head: usize,
    len: usize,
}

impl Stash {
    fn new(capacity: usize) -> Self {
        Stash {
            items: vec![(0, 0); capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bid: u16, len: u32) -> bool {
        if self.len == self.items.len() {
            return false;
        }
        let idx = (self.head + self.len) % self.items.len();
        self.items[idx] = (bid, len);
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<(u16, u32)> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head];
        self.head = (self.head + 1) % self.items.len();
        self.len -= 1;
        Some(item)
    }
}

/// io_uring backend. Not `Send`: it must stay on the thread that opened it (the ring may be
/// set up SINGLE_ISSUER).
pub struct UringBackend {
    // Drop order matters: `ring` (closing the io_uring fd) drops before `bufs` unmaps the
    // memory registered with it.
    ring: IoUring,
    bufs: BufRing,
    /// Owned for the backend's lifetime (`fd` is its descriptor).
    _socket: UdpSocket,
    /// The socket's fd, cached for SQEs.
    fd: RawFd,
    local: SocketAddr,
    /// The socket is AF_INET6 (IPv4 peers appear as ::ffff:a.b.c.d).
    v6: bool,
    /// Template for the multishot recvmsg: only msg_namelen (NAME_ROOM) and
    /// msg_controllen (0) matter; boxed so its address never changes.
    recv_msghdr: Box<libc::msghdr>,
    /// The multishot recvmsg is live (its last CQE had IORING_CQE_F_MORE).
    armed: bool,
    stash: Stash,
    /// Last hard error reported by the multishot recvmsg, surfaced by the next `recv`.
    recv_error: Option<i32>,
    /// What `tx_hdrs` point at (slot `j`'s message is its message `j`).
    tx: SendArrays,
    tx_hdrs: Box<[libc::msghdr]>,
    /// How this batch becomes messages.
    plan: Plan,
    /// Runs of datagrams go out as one segmented message.
    gso: bool,
    /// Slot `j` of the current chunk has a sendmsg in flight.
    tx_inflight: Box<[bool]>,
    /// How many slots are in flight.
    inflight: usize,
    /// Datagrams of the current chunk the kernel took.
    tx_ok: usize,
    /// Generation of the current chunk (see UD_SEND).
    tx_gen: u64,
    syscalls: u64,
}

impl UringBackend {
    /// Open on a bound UDP socket, in the thread that will use it.
    pub fn open(socket: UdpSocket) -> io::Result<Self> {
        let local = socket
            .local_addr()
            .map_err(|e| context(e, "io_uring: local_addr"))?;
        let ring = build_ring()?;
        check_ring(&ring)?;
        let bufs = BufRing::new()?;
        // SAFETY: the ring memory is page aligned, RECV_BUFS entries long, and lives in
        // `bufs`, which the backend keeps until after the ring is closed (field order).
        let registered = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), RECV_BUFS, BGID, 0)
        };
        registered.map_err(|e| {
            context(
                e,
                "io_uring: register provided-buffer ring (needs Linux 5.19)",
            )
        })?;

        // SAFETY: msghdr is plain old data; all-zero is null pointers and zero lengths.
        let mut recv_msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msghdr.msg_namelen = NAME_ROOM as libc::socklen_t;
        recv_msghdr.msg_controllen = 0;

        let gso = gso::supported(&socket);
        let mut backend = UringBackend {
            ring,
            bufs,
            fd: socket.as_raw_fd(),
            _socket: socket,
            local,
            v6: local.is_ipv6(),
            recv_msghdr,
            armed: false,
            stash: Stash::new(usize::from(RECV_BUFS)),
            recv_error: None,
            tx: SendArrays::new(TX_SLOTS, TX_IOVS),
            // SAFETY: as above, all-zero msghdrs are valid.
            tx_hdrs: vec![unsafe { std::mem::zeroed::<libc::msghdr>() }; TX_SLOTS]
                .into_boxed_slice(),
            plan: Plan::with_capacity(PLAN_CAPACITY),
            gso,
            tx_inflight: vec![false; TX_SLOTS].into_boxed_slice(),
            inflight: 0,
            tx_ok: 0,
            tx_gen: 0,
            syscalls: 0,
        };
        for bid in 0..RECV_BUFS {
            backend.bufs.recycle(bid);
        }
        backend.bufs.publish();

        // Arm the multishot receive and give the kernel a chance to refuse it at once (a
        // kernel before 6.0 fails it with EINVAL).
        let probe = backend
            .arm()
            .and_then(|()| backend.wait(Duration::ZERO))
            .map(|()| backend.reap());
        let failure = match probe {
            Err(e) => Some(e),
            Ok(()) => backend.recv_error.take().map(|errno| {
                errno_error(
                    errno,
                    "io_uring: multishot recvmsg refused (needs Linux 6.0)",
                )
            }),
        };
        if let Some(e) = failure {
            // Dropping the backend cancels and unregisters (Drop).
            return Err(e);
        }
        backend.syscalls = 0;
        Ok(backend)
    }

    fn fd(&self) -> RawFd {
        self.fd
    }

    /// Queue the multishot recvmsg if it is not live (it is submitted by the next enter).
    fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        let entry = opcode::RecvMsgMulti::new(types::Fd(self.fd()), &*self.recv_msghdr, BGID)
            .build()
            .user_data(UD_RECV);
        // SAFETY: the msghdr is boxed in `self` (stable, outlives the request); the buffers
        // come from the registered buffer ring, which outlives the io_uring instance.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring: submission queue full"))?;
        }
        self.armed = true;
        Ok(())
    }

    /// Submit queued SQEs without waiting.
    fn submit(&mut self) -> io::Result<()> {
        self.syscalls += 1;
        self.ring
            .submit()
            .map(drop)
            .map_err(|e| context(e, "io_uring: submit"))
    }

    /// Submit queued SQEs and wait up to `timeout` for at least one completion (EXT_ARG
    /// timeout: no timeout SQE needed). Timeouts and signals are not errors.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.wait_for(1, timeout)
    }

    fn wait_for(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.min(MAX_WAIT);
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        self.syscalls += 1;
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // ETIME: timed out; EINTR: a signal; EBUSY: CQ backlog, reaping clears it.
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) => Ok(()),
                _ => Err(context(e, "io_uring: enter")),
            },
        }
    }

    /// Drain the CQ: receive completions go to the stash (or their buffer straight back),
    /// send completions are credited to the current chunk, cancel completions ignored.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let user_data = cqe.user_data();
            let result = cqe.result();
            let flags = cqe.flags();
            match user_data & UD_KIND_MASK {
                UD_RECV => {
                    if !cqueue::more(flags) {
                        self.armed = false;
                    }
                    match cqueue::buffer_select(flags) {
                        Some(bid) => {
                            let kept = result >= 0
                                && bid < RECV_BUFS
                                && self.stash.push(bid, result as u32);
                            if !kept && bid < RECV_BUFS {
                                self.bufs.recycle(bid);
                            }
                        }
                        None => {
                            // No buffer: an error. ENOBUFS (ring ran dry) and ECANCELED
                            // just mean "re-arm".
                            if result < 0 && result != -libc::ENOBUFS && result != -libc::ECANCELED
                            {
                                self.recv_error = Some(-result);
                            }
                        }
                    }
                }
                UD_SEND => {
                    let gen = (user_data >> 32) & UD_GEN_MASK;
                    let slot = (user_data & UD_SLOT_MASK) as usize;
                    if gen == self.tx_gen && slot < TX_SLOTS && self.tx_inflight[slot] {
                        self.tx_inflight[slot] = false;
                        self.inflight -= 1;
                        if result >= 0 {
                            self.tx_ok += self.tx.count(slot);
                        } else if self.tx.count(slot) > 1
                            && [-libc::EIO, -libc::EINVAL].contains(&result)
                            && self.gso
                        {
                            // The route's device cannot take segmented sends after all.
                            tracing::warn!(
                                errno = -result,
                                "UDP segmentation refused: sending one datagram per message from now on"
                            );
                            self.gso = false;
                        }
                    }
                }
                _ => {} // UD_CANCEL
            }
        }
        self.bufs.publish();
    }

    /// Send the planned messages from `first` on, as many as one chunk holds (TX_SLOTS
    /// messages, TX_IOVS datagrams): returns (next message, datagrams the kernel took).
    /// On return no send of this chunk is in flight.
    fn send_chunk(
        &mut self,
        tx: &TxBatch,
        first: usize,
        waited: &mut bool,
    ) -> io::Result<(usize, usize)> {
        // The arrays first, then msghdrs pointing at them, so no pointer outlives a write.
        let (next, mut count) = self.tx.fill(&self.plan, tx, first, self.v6);
        for (j, h) in self.tx_hdrs[..count].iter_mut().enumerate() {
            self.tx.point(j, h);
        }
        if count == 0 {
            return Ok((next, 0));
        }

        self.tx_gen = (self.tx_gen + 1) & UD_GEN_MASK;
        self.tx_ok = 0;
        let fd = self.fd();
        let hdrs = self.tx_hdrs.as_ptr();
        {
            let sq = self.ring.submission();
            let room = sq.capacity() - sq.len();
            drop(sq);
            if room < count {
                self.submit()?;
            }
        }
        let mut sq = self.ring.submission();
        for j in 0..count {
            let entry = opcode::SendMsg::new(types::Fd(fd), hdrs.wrapping_add(j))
                .build()
                .user_data(UD_SEND | (self.tx_gen << 32) | j as u64);
            // SAFETY: the msghdr, its iovecs, name and control message live in `self`
            // (boxed, not touched until this chunk's CQEs are all back, which this function
            // waits for), and the payload is borrowed from `tx` for the whole call.
            if unsafe { sq.push(&entry) }.is_err() {
                // Cannot happen: room was made above. Count the rest as dropped.
                count = j;
                break;
            }
            self.tx_inflight[j] = true;
        }
        drop(sq);
        self.inflight = count;

        self.submit_all()?;
        self.reap();
        if self.inflight > 0 {
            // Some sends went async (socket buffer full): give them one short wait.
            if !*waited {
                *waited = true;
                let deadline = Instant::now() + SEND_RETRY_WAIT;
                for _ in 0..MAX_ATTEMPTS {
                    let now = Instant::now();
                    if self.inflight == 0 || now >= deadline {
                        break;
                    }
                    self.wait_for(self.inflight, deadline - now)?;
                    self.reap();
                }
            }
            if self.inflight > 0 {
                self.cancel_inflight_sends()?;
            }
        }
        Ok((next, self.tx_ok))
    }

    /// Submit until the SQ is empty (bounded): the SQEs reference the caller's TxBatch, so
    /// they must not linger past this call.
    fn submit_all(&mut self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            if self.ring.submission().is_empty() {
                return Ok(());
            }
            match self.submit() {
                Ok(()) => last = None,
                Err(e) => {
                    // EBUSY (CQ backlog), EAGAIN (kernel memory), EINTR: reap and retry.
                    self.reap();
                    last = Some(e);
                }
            }
        }
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        Err(last.unwrap_or_else(|| io::Error::other("io_uring: could not submit sends")))
    }

    /// Cancel every send of the current chunk still in flight and wait (bounded) for their
    /// CQEs; they count as dropped.
    fn cancel_inflight_sends(&mut self) -> io::Result<()> {
        let mut sq = self.ring.submission();
        for j in 0..TX_SLOTS {
            if self.tx_inflight[j] {
                let target = UD_SEND | (self.tx_gen << 32) | j as u64;
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(UD_CANCEL);
                // SAFETY: a cancel references no memory.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
            }
        }
        drop(sq);
        for _ in 0..MAX_ATTEMPTS {
            self.wait_for(self.inflight, CANCEL_WAIT)?;
            self.reap();
            if self.inflight == 0 {
                return Ok(());
            }
        }
        // Sends only read memory, so one that never reports back cannot corrupt anything;
        // forget it (the generation keeps its late CQE from being miscounted).
        self.tx_inflight.iter_mut().for_each(|f| *f = false);
        self.inflight = 0;
        Ok(())
    }

    /// Cancel the multishot receive and wait for it to end, then unregister the buffers.
    /// If that cannot be confirmed, the buffer memory is leaked rather than unmapped.
    fn shutdown(&mut self) {
        if self.armed {
            let entry = opcode::AsyncCancel::new(UD_RECV)
                .build()
                .user_data(UD_CANCEL);
            // SAFETY: a cancel references no memory.
            let _ = unsafe { self.ring.submission().push(&entry) };
            for _ in 0..MAX_ATTEMPTS {
                if self.wait(CANCEL_WAIT).is_err() {
                    break;
                }
                self.reap();
                if !self.armed {
                    break;
                }
            }
        }
        if self.armed || self.ring.submitter().unregister_buf_ring(BGID).is_err() {
            self.bufs.leak = true;
        }
        self.armed = false;
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if !self.bufs.leak {
            self.shutdown();
        }
    }
}

/// Build the ring: SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN | TASKRUN_FLAG (Linux 6.1)
/// when the kernel takes it, else COOP_TASKRUN (5.19), else plain. TASKRUN_FLAG lets `recv`
/// see that deferred work (arrived datagrams) is pending without a syscall.
fn build_ring() -> io::Result<IoUring> {
    let attempts: [fn() -> io::Result<IoUring>; 3] = [
        || {
            IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(RING_ENTRIES)
        },
        || IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES),
        || IoUring::builder().build(RING_ENTRIES),
    ];
    let mut last = None;
    for attempt in attempts {
        match attempt() {
            Ok(ring) => return Ok(ring),
            // Refused flags give EINVAL; anything else (ENOSYS, EPERM from
            // kernel.io_uring_disabled or seccomp, ENOMEM) will not get better.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(context(e, "io_uring: setup")),
        }
    }
    Err(context(
        last.unwrap_or_else(|| io::Error::other("no attempt")),
        "io_uring: setup",
    ))
}

/// The features this backend relies on, checked up front so that opening fails clearly.
fn check_ring(ring: &IoUring) -> io::Result<()> {
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring: no IORING_FEAT_EXT_ARG (needs Linux 5.11)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| context(e, "io_uring: probe opcodes"))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring: opcode {name} not supported"),
            ));
        }
    }
    Ok(())
}

impl Backend for UringBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(
        &mut self,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        if self.stash.is_empty() {
            // Completions already in the CQ need no syscall.
            self.reap();
        }
        if self.stash.is_empty() {
            self.arm()?;
            if self.ring.submission().taskrun() {
                // Deferred task work is pending (IORING_SQ_TASKRUN), i.e. datagrams have
                // most likely arrived: run it without waiting, asking for a whole batch so
                // the kernel keeps re-running the multishot past its 32-per-run fairness
                // limit instead of returning after the first run.
                self.wait_for(RECV_BATCH, Duration::ZERO)?;
                self.reap();
            }
            if self.stash.is_empty() {
                self.wait(timeout)?;
                self.reap();
            }
        }
        let mut delivered = 0;
        for _ in 0..RECV_BATCH {
            let Some((bid, len)) = self.stash.pop() else {
                break;
            };
            // SAFETY: the kernel handed `bid` over in a CQE and it is recycled only below.
            let buf = unsafe { self.bufs.buffer(bid) };
            let len = (len as usize).min(buf.len());
            let parsed = types::RecvMsgOut::parse(&buf[..len], &self.recv_msghdr)
                .ok()
                .filter(|out| !out.is_payload_truncated() && !out.is_name_data_truncated())
                .and_then(|out| {
                    sockaddr_from_bytes(out.name_data()).map(|src| (src, out.payload_data().len()))
                });
            if let Some((src, payload_len)) = parsed {
                on_datagram(&mut buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload_len], src);
                delivered += 1;
            }
            self.bufs.recycle(bid);
        }
        self.bufs.publish();
        if delivered == 0 {
            if let Some(errno) = self.recv_error.take() {
                return Err(errno_error(errno, "io_uring: multishot recvmsg"));
            }
        }
        Ok(delivered)
    }

    fn send(&mut self, tx: &mut TxBatch) -> io::Result<usize> {
        self.plan.build(tx, self.gso);
        let total = self.plan.messages().len();
        let mut sent = 0;
        let mut waited = false;
        let mut next = 0;
        let result = loop {
            if next >= total {
                break Ok(sent);
            }
            match self.send_chunk(tx, next, &mut waited) {
                Ok((end, n)) => {
                    sent += n;
                    next = end;
                }
                Err(e) => break Err(e),
            }
        };
        tx.clear();
        result
    }

    fn syscalls(&self) -> u64 {
        self.syscalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::bind_udp;

    fn backend() -> UringBackend {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        UringBackend::open(socket).unwrap()
    }

    /// Ring runs dry: the multishot ends with ENOBUFS, the rest waits in the stash, and the
    /// receive is re-armed once the stash has drained.
    #[test]
    fn enobufs_then_rearm() {
        let mut b = backend();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let n = usize::from(RECV_BUFS) + 200;
        for i in 0..n {
            peer.send_to(&(i as u32).to_be_bytes(), b.local_addr())
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        // Take completions without handing them over, so no buffer goes back: the kernel
        // fills at most 32 buffers per wake-up of the multishot (its fairness limit), so
        // this takes a few rounds.
        for _ in 0..200 {
            if !b.armed {
                break;
            }
            b.wait(Duration::from_millis(10)).unwrap();
            b.reap();
        }
        assert!(!b.armed, "multishot should have ended for lack of buffers");
        assert_eq!(b.stash.len, usize::from(RECV_BUFS));
        // Draining the stash costs no syscalls.
        let before = b.syscalls();
        let mut got = 0;
        for _ in 0..usize::from(RECV_BUFS) / RECV_BATCH {
            let k = b
                .recv(Duration::from_secs(1), &mut |_, _| got += 1)
                .unwrap();
            assert_eq!(k, RECV_BATCH);
        }
        assert_eq!(b.syscalls(), before);
        assert!(b.stash.is_empty());
        for _ in 0..100 {
            if got == n {
                break;
            }
            b.recv(Duration::from_millis(100), &mut |_, _| got += 1)
                .unwrap();
        }
        assert_eq!(got, n);
        assert!(b.armed);
    }

    /// Completions already in the CQ (or stash) are delivered without entering the kernel.
    #[test]
    fn ready_completions_skip_the_syscall() {
        let mut b = backend();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            peer.send_to(b"x", b.local_addr()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        // Run task work and post the CQEs, without reaping them.
        b.wait(Duration::ZERO).unwrap();
        let before = b.syscalls();
        let mut got = 0;
        let n = b
            .recv(Duration::from_secs(1), &mut |_, _| got += 1)
            .unwrap();
        assert_eq!((n, got), (3, 3));
        assert_eq!(b.syscalls(), before);
    }

    /// Opening and dropping repeatedly (with datagrams still buffered) frees everything.
    #[test]
    fn open_drop_cycles() {
        for _ in 0..32 {
            let mut b = backend();
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.send_to(b"x", b.local_addr()).unwrap();
            peer.send_to(b"y", b.local_addr()).unwrap();
            b.wait(Duration::from_millis(10)).unwrap();
            b.reap();
            drop(b);
        }
    }
}

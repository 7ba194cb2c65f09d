//! The portable backend: `recvmmsg`/`sendmmsg` on a non-blocking UDP socket, with `ppoll`
//! only when the socket has nothing to read (or no room to write). Sends are segmented
//! ([`gso`](super::gso)) when the kernel has `UDP_SEGMENT`.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::gso::{self, Plan, SendArrays};
use super::{
    context, sockaddr_from_bytes, Backend, BackendKind, TxBatch, MAX_DATAGRAM, MAX_WAIT, RECV_BATCH,
};

/// Messages per `sendmmsg` call; a larger [`TxBatch`] goes out in chunks of this size.
/// Well under the kernel's UIO_MAXIOV (1024) limit on `vlen`.
const TX_CHUNK: usize = 256;

/// Datagrams (iovecs) per `sendmmsg` call: a chunk also ends when its messages hold this many.
const TX_IOVS: usize = 1024;

/// Datagrams the send plan has room for without allocating (the worker's batch size).
const PLAN_CAPACITY: usize = 4096;

/// How long one `send` may wait, once, for room in a full socket buffer before dropping
/// the rest of the batch: long enough for the NIC queue to drain a little, short enough
/// not to stall the worker's receive side.
const SEND_RETRY_WAIT: Duration = Duration::from_millis(1);

/// Interrupted calls retried within one `send` before the rest of the batch is dropped
/// (keeps the loop bounded under a signal storm).
const MAX_EINTR_RETRIES: u32 = 8;

/// recvmmsg/sendmmsg backend. Every array is allocated at open; `recv` and `send` only
/// rewrite pointers and lengths in place.
pub struct MmsgBackend {
    socket: UdpSocket,
    local: SocketAddr,
    /// The socket is AF_INET6 (IPv4 peers appear as ::ffff:a.b.c.d).
    v6: bool,
    /// RECV_BATCH receive buffers of MAX_DATAGRAM bytes each.
    rx_data: Box<[u8]>,
    rx_names: Box<[libc::sockaddr_storage]>,
    rx_iovs: Box<[libc::iovec]>,
    rx_hdrs: Box<[libc::mmsghdr]>,
    /// What `tx_hdrs` point at.
    tx: SendArrays,
    tx_hdrs: Box<[libc::mmsghdr]>,
    /// How this batch becomes messages.
    plan: Plan,
    /// Runs of datagrams go out as one segmented message.
    gso: bool,
    syscalls: u64,
}

/// What one `sendmmsg` attempt left us to do.
enum SendOutcome {
    /// `n` datagrams were taken.
    Sent(usize),
    /// The socket buffer is full.
    WouldBlock,
    /// A signal interrupted the call.
    Interrupted,
    /// The first message was refused for a reason of its own (unreachable, too big...):
    /// the errno.
    Refused(i32),
}

impl MmsgBackend {
    /// Take over a bound (non-blocking) UDP socket.
    pub fn open(socket: UdpSocket) -> io::Result<Self> {
        socket
            .set_nonblocking(true)
            .map_err(|e| context(e, "mmsg: set O_NONBLOCK"))?;
        let local = socket
            .local_addr()
            .map_err(|e| context(e, "mmsg: local_addr"))?;
        Ok(MmsgBackend {
            local,
            v6: local.is_ipv6(),
            rx_data: vec![0u8; RECV_BATCH * MAX_DATAGRAM].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            rx_names: vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; RECV_BATCH]
                .into_boxed_slice(),
            rx_iovs: vec![empty_iovec(); RECV_BATCH].into_boxed_slice(),
            rx_hdrs: vec![empty_mmsghdr(); RECV_BATCH].into_boxed_slice(),
            tx: SendArrays::new(TX_CHUNK, TX_IOVS),
            tx_hdrs: vec![empty_mmsghdr(); TX_CHUNK].into_boxed_slice(),
            plan: Plan::with_capacity(PLAN_CAPACITY),
            gso: gso::supported(&socket),
            socket,
            syscalls: 0,
        })
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// One non-blocking `recvmmsg` into the receive arrays: how many messages came in
    /// (0 when none were waiting).
    fn recvmmsg(&mut self) -> io::Result<usize> {
        // Pointers are re-derived on every call (cheap: RECV_BATCH entries) so that none
        // outlives a Rust borrow of the arrays it points into; this also resets the
        // in/out `msg_namelen`.
        let data = self.rx_data.as_mut_ptr();
        let names = self.rx_names.as_mut_ptr();
        for i in 0..RECV_BATCH {
            self.rx_iovs[i] = libc::iovec {
                iov_base: data.wrapping_add(i * MAX_DATAGRAM).cast(),
                iov_len: MAX_DATAGRAM,
            };
        }
        let iovs = self.rx_iovs.as_mut_ptr();
        for (i, h) in self.rx_hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        self.syscalls += 1;
        // SAFETY: rx_hdrs holds RECV_BATCH initialised mmsghdrs whose name and iovec
        // pointers (set just above) point into rx_names/rx_iovs/rx_data, which are owned by
        // `self`, sized to match, and not otherwise borrowed during the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd(),
                self.rx_hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            _ => Err(context(err, "mmsg: recvmmsg")),
        }
    }

    /// Wait up to `timeout` for `events` on the socket; true when ready.
    fn wait(&mut self, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
        let timeout = timeout.min(MAX_WAIT);
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        self.syscalls += 1;
        // SAFETY: `pfd` and `ts` are live locals for the duration of the call; a null
        // sigmask means "leave the mask alone".
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc > 0 {
            return Ok(true);
        }
        if rc == 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => Ok(false),
            _ => Err(context(err, "mmsg: ppoll")),
        }
    }

    /// One `sendmmsg` of `tx_hdrs[off..count]`.
    fn sendmmsg(&mut self, off: usize, count: usize) -> io::Result<SendOutcome> {
        self.syscalls += 1;
        // SAFETY: tx_hdrs[off..count] were filled by `send` in this call with pointers into
        // the send arrays `tx` (owned by `self`) and into the caller's TxBatch slots, all of
        // which stay borrowed and unmoved until this returns; the kernel only reads them
        // (plus `msg_len`, which it writes).
        let n = unsafe {
            libc::sendmmsg(
                self.fd(),
                self.tx_hdrs.as_mut_ptr().add(off),
                (count - off) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            return Ok(SendOutcome::Sent(n as usize));
        }
        if n == 0 {
            // Not expected for a non-empty vector; treat like a full buffer so the loop ends.
            return Ok(SendOutcome::WouldBlock);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Ok(SendOutcome::WouldBlock),
            Some(libc::EINTR) => Ok(SendOutcome::Interrupted),
            Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                Err(context(err, "mmsg: sendmmsg"))
            }
            Some(errno) => Ok(SendOutcome::Refused(errno)),
            None => Ok(SendOutcome::Refused(0)),
        }
    }

    /// Send the planned messages from `first` on, as many as one `sendmmsg` vector holds
    /// (TX_CHUNK messages, TX_IOVS datagrams); returns (next message, datagrams taken,
    /// keep_going).
    fn send_chunk(
        &mut self,
        tx: &TxBatch,
        first: usize,
        waited: &mut bool,
    ) -> io::Result<(usize, usize, bool)> {
        // The arrays first, then msghdrs pointing at them, so no pointer outlives a write.
        let (end, count) = self.tx.fill(&self.plan, tx, first, self.v6);
        for (j, h) in self.tx_hdrs[..count].iter_mut().enumerate() {
            self.tx.point(j, &mut h.msg_hdr);
            h.msg_len = 0;
        }

        let mut off = 0;
        let mut sent = 0;
        let mut interrupts = 0;
        while off < count {
            match self.sendmmsg(off, count)? {
                SendOutcome::Sent(n) => {
                    sent += (off..off + n).map(|j| self.tx.count(j)).sum::<usize>();
                    off += n;
                }
                SendOutcome::Refused(errno) => {
                    if self.tx.count(off) > 1 && [libc::EIO, libc::EINVAL].contains(&errno) {
                        // The route's device cannot take segmented sends after all.
                        tracing::warn!(
                            errno,
                            "UDP segmentation refused: sending one datagram per message from now on"
                        );
                        self.gso = false;
                    }
                    off += 1;
                }
                SendOutcome::Interrupted => {
                    interrupts += 1;
                    if interrupts > MAX_EINTR_RETRIES {
                        return Ok((end, sent, false));
                    }
                }
                SendOutcome::WouldBlock => {
                    if *waited {
                        return Ok((end, sent, false));
                    }
                    *waited = true;
                    if !self.wait(libc::POLLOUT, SEND_RETRY_WAIT)? {
                        return Ok((end, sent, false));
                    }
                }
            }
        }
        Ok((end, sent, true))
    }
}

impl Backend for MmsgBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Mmsg
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(
        &mut self,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        let mut n = self.recvmmsg()?;
        if n == 0 && !timeout.is_zero() {
            if !self.wait(libc::POLLIN, timeout)? {
                return Ok(0);
            }
            n = self.recvmmsg()?;
        }
        let mut delivered = 0;
        for i in 0..n {
            let h = &self.rx_hdrs[i].msg_hdr;
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                continue; // larger than MAX_DATAGRAM: not ours to relay
            }
            let len = (self.rx_hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            let namelen =
                (h.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: sockaddr_storage is plain old data, and the kernel filled its first
            // `namelen` bytes; the view lasts only for this parse.
            let name = unsafe {
                std::slice::from_raw_parts(
                    (&self.rx_names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                    namelen,
                )
            };
            let Some(src) = sockaddr_from_bytes(name) else {
                continue;
            };
            let start = i * MAX_DATAGRAM;
            on_datagram(&mut self.rx_data[start..start + len], src);
            delivered += 1;
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
                Ok((end, n, keep_going)) => {
                    sent += n;
                    next = end;
                    if !keep_going {
                        break Ok(sent);
                    }
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

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and pointers); all-zero means null
    // pointers and zero lengths, which is valid.
    unsafe { std::mem::zeroed() }
}

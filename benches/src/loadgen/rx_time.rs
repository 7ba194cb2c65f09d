//! Receiving with the kernel's arrival timestamp (SO_TIMESTAMPNS), so that a packet's
//! one-way latency is measured to the moment it reached the peer's socket, not to the
//! moment the load generator's thread got round to it: the load generator's own
//! queueing must not count against the bridge. The load generator's one I/O backend.
//! With [`enable_gro`] a receive may also hold a whole run of datagrams the sender
//! segmented (`UDP_SEGMENT`), kept whole by the kernel (`UDP_GRO`) instead of split at
//! delivery; [`RxBatch::segment`] says where to cut it.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Control-message room for a `struct timespec` timestamp and a `UDP_GRO` segment size.
const CONTROL_LEN: usize = 64;

/// Largest message one receive slot takes: a whole segmented run.
pub const MAX_MESSAGE: usize = 65_536;

/// Asks the kernel to hand over a segmented run as one message, cut by
/// [`RxBatch::segment`] (best effort: false when the kernel lacks `UDP_GRO`). On loopback
/// this also spares the *sender's* core the segmentation at delivery, as a NIC with UDP
/// segmentation offload would on the wire.
pub fn enable_gro(socket: &impl AsRawFd) -> bool {
    set_flag(socket, libc::SOL_UDP, libc::UDP_GRO)
}

/// Asks the kernel to stamp every datagram `socket` receives (best effort).
pub fn enable(socket: &impl AsRawFd) -> bool {
    set_flag(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Sets the int socket option `level`/`name` to 1; true when the kernel took it.
fn set_flag(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: `on` outlives the call and its size is passed; the fd is open (borrowed
    // from a live socket).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// From a control buffer: the SCM_TIMESTAMPNS stamp (ns) and the UDP_GRO segment size.
fn parse_control(mut control: &[u8]) -> (Option<u64>, Option<usize>) {
    let (mut stamp, mut segment) = (None, None);
    while let Some((len, level, typ, data)) = next_cmsg(control) {
        if level == libc::SOL_SOCKET && typ == libc::SCM_TIMESTAMPNS && data.len() >= 16 {
            let sec = i64::from_ne_bytes(data[..8].try_into().unwrap_or_default());
            let nsec = i64::from_ne_bytes(data[8..16].try_into().unwrap_or_default());
            stamp = Some((sec as u64) * 1_000_000_000 + nsec as u64);
        }
        if level == libc::SOL_UDP && typ == libc::UDP_GRO && data.len() >= 4 {
            let size = i32::from_ne_bytes(data[..4].try_into().unwrap_or_default());
            segment = usize::try_from(size).ok().filter(|&s| s > 0);
        }
        let step = len.div_ceil(8) * 8;
        let Some(rest) = control.get(step..) else {
            break;
        };
        control = rest;
    }
    (stamp, segment)
}

/// The first control message: (cmsg_len, level, type, data).
fn next_cmsg(control: &[u8]) -> Option<(usize, i32, i32, &[u8])> {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then data,
    // each message aligned to size_t.
    const HDR: usize = std::mem::size_of::<usize>() + 8;
    if control.len() < HDR {
        return None;
    }
    let len = usize::from_ne_bytes(control[..8].try_into().ok()?);
    let level = i32::from_ne_bytes(control[8..12].try_into().ok()?);
    let typ = i32::from_ne_bytes(control[12..16].try_into().ok()?);
    if len < HDR || len > control.len() {
        return None;
    }
    Some((len, level, typ, &control[HDR..len]))
}

/// Datagrams one [`RxBatch::recv`] call takes at most.
pub const BATCH: usize = 32;

/// Receive buffers for `recvmmsg`: [`BATCH`] messages with their arrival stamps per
/// system call, allocated once per receiving thread.
pub struct RxBatch {
    /// BATCH slots of MAX_MESSAGE bytes.
    data: Vec<u8>,
    control: Vec<[u8; CONTROL_LEN]>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    lens: [usize; BATCH],
    stamps: [Option<u64>; BATCH],
    segments: [Option<usize>; BATCH],
    count: usize,
}

impl Default for RxBatch {
    fn default() -> Self {
        Self {
            data: vec![0u8; BATCH * MAX_MESSAGE],
            control: vec![[0u8; CONTROL_LEN]; BATCH],
            // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes
            // are a valid (empty) value; they are filled in before every call.
            iov: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            // SAFETY: as above.
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lens: [0; BATCH],
            stamps: [None; BATCH],
            segments: [None; BATCH],
            count: 0,
        }
    }
}

impl RxBatch {
    /// One non-blocking `recvmmsg` on `fd`: how many datagrams arrived (0 is reported
    /// as `WouldBlock`).
    pub fn recv(&mut self, fd: &impl AsRawFd) -> std::io::Result<usize> {
        let data = self.data.as_mut_ptr();
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                iov_base: data.wrapping_add(i * MAX_MESSAGE).cast(),
                iov_len: MAX_MESSAGE,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[i].as_mut_ptr().cast();
            h.msg_controllen = CONTROL_LEN as _;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: `msgs` holds BATCH headers whose iovecs and control pointers point
        // into `data` and `control`, which live as long as `self` and are not touched
        // until the call returns; the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        for i in 0..n {
            self.lens[i] = (self.msgs[i].msg_len as usize).min(MAX_MESSAGE);
            // `msg_controllen` is usize on glibc and u32 on musl.
            #[allow(clippy::unnecessary_cast)]
            let clen = (self.msgs[i].msg_hdr.msg_controllen as usize).min(CONTROL_LEN);
            (self.stamps[i], self.segments[i]) = parse_control(&self.control[i][..clen]);
        }
        self.count = n;
        Ok(n)
    }

    /// Message `i` of the last call and its arrival stamp (ns since the Unix epoch): one
    /// datagram, or with GRO a run of them to cut every [`segment`](Self::segment) bytes.
    pub fn get(&mut self, i: usize) -> (&mut [u8], Option<u64>) {
        let len = self.lens[i];
        let start = i * MAX_MESSAGE;
        (&mut self.data[start..start + len], self.stamps[i])
    }

    /// Where message `i` of the last call is cut into datagrams: its GRO segment size, or
    /// its whole length (at least 1).
    pub fn segment(&self, i: usize) -> usize {
        self.segments[i].unwrap_or(self.lens[i]).max(1)
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_are_received_with_stamps() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable(&b));
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for i in 0..40u8 {
            a.send_to(&[i; 100], b.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = Box::<RxBatch>::default();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let Ok(n) = rx.recv(&b) else { break };
            for i in 0..n {
                let (d, stamp) = rx.get(i);
                assert_eq!(d.len(), 100);
                let stamp = stamp.expect("kernel timestamp");
                assert!(stamp >= before && stamp < before + 1_000_000_000);
                seen.push(d[0]);
            }
        }
        assert_eq!(seen, (0..40).collect::<Vec<u8>>());
        assert!(rx.recv(&b).is_err(), "WouldBlock when empty");
    }

    /// A segmented run sent by the bridge's backend reaches a GRO socket as one message,
    /// cut back into the datagrams that were sent, stamps and all.
    #[test]
    fn gro_keeps_a_segmented_run_whole() {
        use viaduct_bridge::io::{self, IoChoice, TxBatch};
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        assert!(enable(&b));
        if !enable_gro(&b) {
            eprintln!("skipped: no UDP_GRO");
            return;
        }
        let socket = io::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let mut sender = io::open(IoChoice::Mmsg, socket).unwrap();
        let mut tx = TxBatch::new(8);
        let sizes = [1000, 1000, 1000, 400];
        for (i, &n) in sizes.iter().enumerate() {
            assert!(tx.push(&vec![i as u8; n], b.local_addr().unwrap()));
        }
        assert_eq!(sender.send(&mut tx).unwrap(), sizes.len());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = Box::<RxBatch>::default();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut messages = 0;
        while let Ok(n) = rx.recv(&b) {
            for i in 0..n {
                messages += 1;
                let seg = rx.segment(i);
                let (d, stamp) = rx.get(i);
                assert!(stamp.is_some());
                got.extend(d.chunks(seg).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(got.len(), sizes.len());
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; sizes[i]], "datagram {i}");
        }
        assert!(
            messages < sizes.len(),
            "the run came as one message ({messages})"
        );
    }
}

//! Binding a worker's UDP socket: large kernel buffers, non-blocking, and dual-stack for
//! IPv6 so that `[::]` serves IPv4 too. No SO_REUSEADDR: for UDP it would let a second
//! bridge (or an ephemeral bind) share the port and steal its packets.
#![allow(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::context;

/// Bind a worker's UDP socket: socket2, large SO_RCVBUF/SO_SNDBUF
/// (`buffer_bytes`; the *FORCE variants first, which bypass `net.core.[rw]mem_max` when
/// privileged, falling back silently to the plain ones), non-blocking; for an IPv6 address
/// IPV6_V6ONLY=false so `[::]` serves IPv4 too.
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| context(e, format_args!("create UDP socket for {addr}")))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(false)
            .map_err(|e| context(e, format_args!("IPV6_V6ONLY=0 on {addr}")))?;
    }
    if buffer_bytes > 0 {
        // Buffer sizes are best effort: the kernel clamps the plain options to its limits,
        // and a smaller buffer only means earlier drops under a burst.
        if !set_force(&socket, libc::SO_RCVBUFFORCE, buffer_bytes) {
            let _ = socket.set_recv_buffer_size(buffer_bytes);
        }
        if !set_force(&socket, libc::SO_SNDBUFFORCE, buffer_bytes) {
            let _ = socket.set_send_buffer_size(buffer_bytes);
        }
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| context(e, format_args!("O_NONBLOCK on {addr}")))?;
    socket
        .bind(&addr.into())
        .map_err(|e| context(e, format_args!("bind UDP {addr}")))?;
    Ok(socket.into())
}

/// `setsockopt(SOL_SOCKET, opt, bytes)` for a *FORCE option (needs CAP_NET_ADMIN); true
/// when the kernel took it.
fn set_force(socket: &Socket, opt: libc::c_int, bytes: usize) -> bool {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the lifetime of `socket`, and `value` is a live c_int whose
    // exact size is passed as optlen; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_v4_nonblocking_with_buffers() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let local = s.local_addr().unwrap();
        assert!(local.is_ipv4());
        assert_ne!(local.port(), 0);
        let s2 = Socket::from(s);
        assert!(s2.nonblocking().unwrap());
        assert!(!s2.reuse_address().unwrap());
        // A second bind of the same port fails instead of sharing it.
        assert!(bind_udp(local, 0).is_err());
        // Either the FORCE variant or the clamped plain one: never below the default.
        assert!(s2.recv_buffer_size().unwrap() > 0);
    }

    #[test]
    fn binds_v6_dual_stack() {
        let Ok(s) = bind_udp("[::]:0".parse().unwrap(), 1 << 20) else {
            eprintln!("IPv6 unavailable, skipping");
            return;
        };
        let s2 = Socket::from(s);
        assert!(!s2.only_v6().unwrap());
    }
}

//! Loading `xdp/redirect.bpf.c` (compiled by build.rs) with aya, attaching it through a
//! bpf_link (so it detaches when the process exits, even on a crash), and registering
//! each AF_XDP socket and its port range in its maps. No packet handling here.

use std::io;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::os::fd::RawFd;
use std::sync::Mutex;

use aya::maps::{Array, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};

use super::neigh::Interface;
use super::XdpMode;

/// The compiled program.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.bpf.o"));

/// The loaded, attached program and its maps.
pub(super) struct Program {
    ebpf: Mutex<Ebpf>,
    /// Attached in native (driver) mode, as opposed to generic.
    pub(super) native: bool,
}

/// An aya error with its whole cause chain (the errno is usually at the bottom).
fn error(what: &str, e: &dyn std::error::Error) -> io::Error {
    let mut text = format!("{what}: {e}");
    let mut kind = io::ErrorKind::Other;
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        if let Some(io) = s.downcast_ref::<io::Error>() {
            kind = io.kind();
        }
        source = s.source();
    }
    if kind == io::ErrorKind::PermissionDenied || text.contains("Operation not permitted") {
        text.push_str(
            " (AF_XDP needs CAP_NET_ADMIN and CAP_BPF to attach, CAP_NET_RAW for the sockets)",
        );
    }
    io::Error::new(kind, text)
}

impl Program {
    /// Load and attach on `iface`, matching datagrams for `bind`.
    pub(super) fn attach(iface: &Interface, bind: IpAddr, mode: XdpMode) -> io::Result<Self> {
        let (family, addr4, addr6): (u32, u32, [u32; 4]) = match bind {
            IpAddr::V4(a) => (4, u32::from_ne_bytes(a.octets()), [0; 4]),
            IpAddr::V6(a) => {
                let o = a.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                (6, 0, [w(0), w(4), w(8), w(12)])
            }
        };
        let mut ebpf = EbpfLoader::new()
            .set_global("family", &family, true)
            .set_global("addr4", &addr4, true)
            .set_global("addr6", &addr6, true)
            .load(OBJECT)
            .map_err(|e| error("loading the XDP program", &e))?;
        let program: &mut Xdp = ebpf
            .program_mut("viaduct_redirect")
            .ok_or_else(|| {
                io::Error::other("XDP program viaduct_redirect missing from the object")
            })?
            .try_into()
            .map_err(|e| error("XDP program", &e))?;
        program
            .load()
            .map_err(|e| error("loading the XDP program into the kernel", &e))?;
        let tries: &[(XdpFlags, bool)] = match mode {
            XdpMode::Auto => &[(XdpFlags::DRV_MODE, true), (XdpFlags::SKB_MODE, false)],
            XdpMode::Native => &[(XdpFlags::DRV_MODE, true)],
            XdpMode::Generic => &[(XdpFlags::SKB_MODE, false)],
        };
        let mut last = None;
        for &(flags, native) in tries {
            match program.attach(&iface.name, flags) {
                Ok(_) => {
                    return Ok(Self {
                        ebpf: Mutex::new(ebpf),
                        native,
                    })
                }
                Err(e) => {
                    let what = format!(
                        "attaching XDP to {} in {} mode",
                        iface.name,
                        if native { "native" } else { "generic" }
                    );
                    last = Some(error(&what, &e));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no XDP attach mode to try")))
    }

    /// Steer `ports` (inclusive; None: stop steering) on `queue` to the AF_XDP socket `fd`.
    pub(super) fn register(
        &self,
        queue: u32,
        ports: Option<RangeInclusive<u16>>,
        fd: Option<RawFd>,
    ) -> io::Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = fd {
            let map = ebpf
                .map_mut("xsks")
                .ok_or_else(|| io::Error::other("xsks map missing"))?;
            let mut xsks = XskMap::try_from(map).map_err(|e| error("xsks map", &e))?;
            xsks.set(queue, fd, 0)
                .map_err(|e| error("registering the AF_XDP socket", &e))?;
        }
        let map = ebpf
            .map_mut("queue_ports")
            .ok_or_else(|| io::Error::other("queue_ports map missing"))?;
        let mut ports_map: Array<_, u32> =
            Array::try_from(map).map_err(|e| error("queue_ports map", &e))?;
        // The program reads the range as `first | last << 16`; 0 steers nothing.
        let value = ports.map_or(0, |r| u32::from(*r.start()) | u32::from(*r.end()) << 16);
        ports_map
            .set(queue, value, 0)
            .map_err(|e| error("registering the socket's ports", &e))
    }
}

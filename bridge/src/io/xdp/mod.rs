//! The AF_XDP (kernel bypass) backend: an XDP program sends the bridge's UDP datagrams to
//! one AF_XDP socket per worker (worker *i* ↔ NIC queue `queue + i`), and the worker
//! parses and builds Ethernet/IP/UDP itself; everything else stays with the kernel, and
//! so does each worker's ordinary UDP socket, used as the slow path. Built only with the
//! cargo feature `xdp` (it needs clang); without it, asking for it is a clear error.

use std::fmt;
use std::net::{IpAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;

use super::Backend;

pub mod frame;
pub mod neigh;
#[cfg(feature = "xdp")]
mod program;
#[cfg(feature = "xdp")]
mod xsk;
#[cfg(feature = "xdp")]
pub use xsk::{KernelDrops, XskPorts};

/// Default UMEM frames per worker (2 KiB each: 8 MiB; half receive, half send).
pub const DEFAULT_FRAMES: u32 = 4096;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode when the driver has it, else generic.
    #[default]
    Auto,
    /// Native (driver) mode or fail; zero-copy is tried in this mode only.
    Native,
    /// Generic (SKB) mode: works on any interface, copy mode only.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" | "driver" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?} (expected auto, native or generic)"
            )),
        }
    }
}

/// The AF_XDP settings (`--xdp-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface the bridge's address lives on; `auto` tries AF_XDP only when set.
    pub iface: Option<String>,
    /// Worker 0's NIC queue; worker i uses `queue + i`.
    pub queue: u32,
    /// UMEM frames per worker (a power of two, 64 or more).
    pub frames: u32,
    /// How the program is attached.
    pub mode: XdpMode,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            iface: None,
            queue: 0,
            frames: DEFAULT_FRAMES,
            mode: XdpMode::Auto,
        }
    }
}

impl XdpConfig {
    /// Bytes of UMEM one worker registers (what RLIMIT_MEMLOCK must allow, per worker).
    pub fn umem_bytes(&self) -> usize {
        self.frames as usize * FRAME_SIZE as usize
    }

    /// Range checks, for config validation.
    pub fn validate(&self) -> Result<(), String> {
        if self.frames < 64 || !self.frames.is_power_of_two() || self.frames > 1 << 20 {
            return Err(format!(
                "xdp-frames {} must be a power of two in 64..=1048576",
                self.frames
            ));
        }
        Ok(())
    }
}

/// UMEM frame (chunk) size: a 1500-byte MTU frame plus the kernel's 256-byte headroom fits.
pub const FRAME_SIZE: u32 = 2048;

/// Whether this build has the AF_XDP backend.
pub const fn compiled_in() -> bool {
    cfg!(feature = "xdp")
}

/// The XDP program attached to an interface, shared by the workers; it detaches (bpf_link)
/// when the last worker's backend and the opener are gone, or when the process exits.
#[cfg_attr(not(feature = "xdp"), allow(dead_code))] // never built without the feature
pub struct Attached {
    #[cfg(feature = "xdp")]
    program: program::Program,
    iface: neigh::Interface,
    bind: IpAddr,
    config: XdpConfig,
}

impl fmt::Debug for Attached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attached")
            .field("iface", &self.iface.name)
            .field("bind", &self.bind)
            .finish()
    }
}

/// Load the program and attach it to `config.iface` for the bridge's address `bind`,
/// after checking that the interface has a queue for each of `workers`.
pub fn attach(config: &XdpConfig, bind: IpAddr, workers: usize) -> std::io::Result<Arc<Attached>> {
    use std::io::{Error, ErrorKind};
    let Some(name) = config.iface.as_deref() else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the xdp backend needs --xdp-iface",
        ));
    };
    if bind.is_unspecified() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the xdp backend needs a specific --bind address (the one on the XDP interface), not a wildcard",
        ));
    }
    config
        .validate()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
    if !compiled_in() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this viaduct-bridge was built without AF_XDP (cargo feature `xdp`)",
        ));
    }
    let iface = neigh::Interface::lookup(name)?;
    let last = u64::from(config.queue) + workers as u64;
    if last > u64::from(iface.rx_queues) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name} has {} receive queue(s) but {workers} worker(s) need queues {}..{}: add queues (ethtool -L {name} combined N; veth: numrxqueues) or lower --cores/--xdp-queue",
                iface.rx_queues,
                config.queue,
                last - 1
            ),
        ));
    }
    #[cfg(feature = "xdp")]
    {
        let program = program::Program::attach(&iface, bind, config.mode)?;
        tracing::info!(
            iface = %iface.name,
            mode = if program.native { "native" } else { "generic" },
            %bind,
            "XDP program attached"
        );
        Ok(Arc::new(Attached {
            program,
            iface,
            bind,
            config: config.clone(),
        }))
    }
    #[cfg(not(feature = "xdp"))]
    {
        let _ = (iface, bind);
        unreachable!("checked by compiled_in above")
    }
}

impl Attached {
    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface.name
    }

    /// Open worker `worker`'s AF_XDP socket on queue `queue + worker`, with `socket` (bound
    /// to the worker's port) kept as its slow path; on failure the socket comes back.
    #[allow(clippy::result_large_err)]
    pub fn open(
        self: &Arc<Self>,
        worker: usize,
        socket: UdpSocket,
    ) -> Result<Box<dyn Backend>, (std::io::Error, UdpSocket)> {
        #[cfg(feature = "xdp")]
        {
            xsk::XskBackend::open(self.clone(), worker, socket)
                .map(|b| Box::new(b) as Box<dyn Backend>)
        }
        #[cfg(not(feature = "xdp"))]
        {
            let _ = worker;
            Err((
                std::io::Error::from(std::io::ErrorKind::Unsupported),
                socket,
            ))
        }
    }
}

#[cfg(feature = "xdp")]
impl Attached {
    /// Open an AF_XDP socket on queue `queue + worker` for every UDP port in `ports` of
    /// the attached address (a load generator's peers), without a kernel slow path.
    pub fn open_ports(
        self: &Arc<Self>,
        worker: usize,
        ports: std::ops::RangeInclusive<u16>,
    ) -> std::io::Result<XskPorts> {
        XskPorts::open(self.clone(), worker, ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_config() {
        for (s, m) in [
            ("auto", XdpMode::Auto),
            ("native", XdpMode::Native),
            ("generic", XdpMode::Generic),
        ] {
            assert_eq!(s.parse::<XdpMode>().unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        assert_eq!("skb".parse::<XdpMode>().unwrap(), XdpMode::Generic);
        assert!("hw".parse::<XdpMode>().is_err());
        let c = XdpConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.umem_bytes(), 8 << 20);
        assert!(XdpConfig {
            frames: 100,
            ..c.clone()
        }
        .validate()
        .is_err());
        assert!(XdpConfig { frames: 32, ..c }.validate().is_err());
    }

    #[test]
    fn attach_refuses_clearly() {
        let bind: IpAddr = "10.0.0.1".parse().unwrap();
        let none = attach(&XdpConfig::default(), bind, 1).unwrap_err();
        assert!(none.to_string().contains("--xdp-iface"), "{none}");
        let cfg = XdpConfig {
            iface: Some("viaduct-nosuch0".into()),
            ..XdpConfig::default()
        };
        let wildcard = attach(&cfg, "0.0.0.0".parse().unwrap(), 1).unwrap_err();
        assert!(wildcard.to_string().contains("--bind"), "{wildcard}");
        let missing = attach(&cfg, bind, 1).unwrap_err();
        let text = missing.to_string();
        assert!(
            text.contains("viaduct-nosuch0") || text.contains("without AF_XDP"),
            "{text}"
        );
    }
}

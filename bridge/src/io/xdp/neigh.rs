//! Next-hop MACs for the AF_XDP backend: the kernel's neighbour table (an `RTM_GETNEIGH`
//! dump over raw rtnetlink, the `ip neigh` equivalent) plus MACs learned from received
//! frames, and the interface facts read from sysfs. No ARP/ND of its own: a destination
//! with no known MAC goes through the kernel socket, whose send makes the kernel resolve it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::io::context;

/// Most destinations remembered; past this, new ones take the kernel path (bounded
/// memory, and no allocation on the hot path once the table has its capacity).
pub const MAX_NEIGHBOURS: usize = 8192;

/// What we need to know about the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
    /// Its MAC.
    pub mac: [u8; 6],
    /// How many receive queues it has.
    pub rx_queues: u32,
}

impl Interface {
    /// Read `/sys/class/net/NAME/{ifindex,address,queues}`.
    pub fn lookup(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let base = std::path::Path::new("/sys/class/net").join(name);
        let read = |f: &str| {
            std::fs::read_to_string(base.join(f))
                .map(|s| s.trim().to_owned())
                .map_err(|e| context(e, format_args!("interface {name}: reading {f}")))
        };
        let ifindex = read("ifindex")?.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("interface {name}: bad ifindex"),
            )
        })?;
        let mac = parse_mac(&read("address")?).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("interface {name}: not an Ethernet interface"),
            )
        })?;
        let rx_queues = std::fs::read_dir(base.join("queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        Ok(Self {
            name: name.to_owned(),
            ifindex,
            mac,
            rx_queues,
        })
    }
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// IP → next-hop MAC on one interface.
pub struct Neighbours {
    ifindex: u32,
    table: HashMap<IpAddr, [u8; 6]>,
    /// Reused for every dump.
    buf: Vec<u8>,
    seq: u32,
}

impl std::fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbours")
            .field("ifindex", &self.ifindex)
            .field("len", &self.table.len())
            .finish()
    }
}

// rtnetlink constants (linux/rtnetlink.h, linux/neighbour.h, linux/netlink.h).
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT: a usable MAC.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
const NLMSG_HDR: usize = 16;
const NDMSG_LEN: usize = 12;

impl Neighbours {
    /// An empty table for `ifindex` (capacity reserved up front).
    pub fn new(ifindex: u32) -> Self {
        Self {
            ifindex,
            table: HashMap::with_capacity(MAX_NEIGHBOURS),
            buf: vec![0u8; 64 << 10],
            seq: 0,
        }
    }

    /// The MAC to send to `ip` through, if known.
    pub fn get(&self, ip: &IpAddr) -> Option<[u8; 6]> {
        self.table.get(ip).copied()
    }

    /// Remember that frames from `ip` came from `mac` (the peer itself or its router).
    pub fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if self.table.len() < MAX_NEIGHBOURS || self.table.contains_key(&ip) {
            self.table.insert(ip, mac);
        }
    }

    /// How many destinations are known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Nothing known.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Merge the kernel's neighbour table for our interface (usable entries only).
    /// Returns how many entries were read.
    pub fn refresh(&mut self) -> io::Result<usize> {
        // SAFETY: plain socket(2) call; the result is checked before it is wrapped.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(context(io::Error::last_os_error(), "netlink socket"));
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDR + NDMSG_LEN];
        req[0..4].copy_from_slice(&((NLMSG_HDR + NDMSG_LEN) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        req[NLMSG_HDR] = libc::AF_UNSPEC as u8;
        // SAFETY: a zeroed sockaddr_nl is valid; nl_family set below, pid 0 = the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `req` and `kernel` are live locals whose sizes are passed; the kernel only reads them.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(context(io::Error::last_os_error(), "netlink RTM_GETNEIGH"));
        }
        let mut entries = 0;
        loop {
            // SAFETY: `buf` is owned, initialised and `buf.len()` bytes long; the kernel writes at most that.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(context(e, "netlink recv"));
            }
            let (found, done) =
                parse_dump(&self.buf[..n as usize], self.ifindex, &mut |ip, mac| {
                    if self.table.len() < MAX_NEIGHBOURS || self.table.contains_key(&ip) {
                        self.table.insert(ip, mac);
                    }
                })?;
            entries += found;
            if done || n == 0 {
                return Ok(entries);
            }
        }
    }
}

/// Parse one datagram of an RTM_GETNEIGH dump; calls `on_entry` for each usable entry on
/// `ifindex`. Returns (entries seen, dump finished).
fn parse_dump(
    mut b: &[u8],
    ifindex: u32,
    on_entry: &mut dyn FnMut(IpAddr, [u8; 6]),
) -> io::Result<(usize, bool)> {
    let mut found = 0;
    while b.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink: bad message length",
            ));
        }
        let msg = &b[NLMSG_HDR..len];
        match kind {
            NLMSG_DONE => return Ok((found, true)),
            NLMSG_ERROR => {
                let errno = msg
                    .get(..4)
                    .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                    .unwrap_or(0);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                return Ok((found, true));
            }
            RTM_NEWNEIGH if msg.len() >= NDMSG_LEN => {
                let idx = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
                let state = u16::from_ne_bytes([msg[8], msg[9]]);
                if idx as u32 == ifindex && state & NUD_USABLE != 0 {
                    let (mut dst, mut mac) = (None, None);
                    let mut attrs = &msg[NDMSG_LEN..];
                    while attrs.len() >= 4 {
                        let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                        let atype = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
                        if alen < 4 || alen > attrs.len() {
                            break;
                        }
                        let v = &attrs[4..alen];
                        match (atype, v.len()) {
                            (NDA_DST, 4) => {
                                dst = Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
                            }
                            (NDA_DST, 16) => {
                                dst = <[u8; 16]>::try_from(v)
                                    .ok()
                                    .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
                            }
                            (NDA_LLADDR, 6) => mac = <[u8; 6]>::try_from(v).ok(),
                            _ => {}
                        }
                        let step = ((alen + 3) & !3).min(attrs.len());
                        attrs = &attrs[step..];
                    }
                    if let (Some(ip), Some(mac)) = (dst, mac) {
                        on_entry(ip, mac);
                        found += 1;
                    }
                }
            }
            _ => {}
        }
        let next = (len + 3) & !3;
        b = &b[next.min(b.len())..];
    }
    Ok((found, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn neigh(ifindex: i32, state: u16, ip: &[u8], mac: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; NDMSG_LEN];
        body[0] = if ip.len() == 4 { 2 } else { 10 };
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..10].copy_from_slice(&state.to_ne_bytes());
        body.extend(attr(NDA_DST, ip));
        body.extend(attr(NDA_LLADDR, mac));
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn dump_parse_keeps_usable_entries_of_our_interface() {
        let mut d = Vec::new();
        d.extend(neigh(3, 0x02, &[10, 77, 0, 2], &[2, 0, 0, 0, 0, 2]));
        d.extend(neigh(4, 0x02, &[10, 77, 0, 3], &[2, 0, 0, 0, 0, 3])); // other interface
        d.extend(neigh(3, 0x01, &[10, 77, 0, 4], &[2, 0, 0, 0, 0, 4])); // INCOMPLETE
        let v6: Ipv6Addr = "fd77::2".parse().unwrap();
        d.extend(neigh(3, 0x04, &v6.octets(), &[2, 0, 0, 0, 0, 6]));
        let mut got = Vec::new();
        let (n, done) = parse_dump(&d, 3, &mut |ip, mac| got.push((ip, mac))).unwrap();
        assert_eq!((n, done), (2, false));
        assert_eq!(
            got[0],
            (IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), [2, 0, 0, 0, 0, 2])
        );
        assert_eq!(got[1], (IpAddr::V6(v6), [2, 0, 0, 0, 0, 6]));
        let mut done_msg = vec![0u8; 20];
        done_msg[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done_msg[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert_eq!(parse_dump(&done_msg, 3, &mut |_, _| {}).unwrap(), (0, true));
        assert!(parse_dump(&d[..20], 3, &mut |_, _| {}).is_err());
    }

    #[test]
    fn kernel_dump_works_here() {
        // The loopback interface has no neighbours, but the dump itself must succeed.
        let mut n = Neighbours::new(1);
        n.refresh().unwrap();
        n.learn("10.0.0.1".parse().unwrap(), [1; 6]);
        assert_eq!(n.get(&"10.0.0.1".parse().unwrap()), Some([1; 6]));
    }
}

//! The media phase on AF_XDP (`viaduct-loadgen --io xdp`): after ICE and DTLS on the
//! peers' ordinary sockets, one pinned thread sends every peer's packets and receives
//! everything the bridge forwards through a single AF_XDP socket that the XDP program
//! steers all the peers' ports to. Over a veth pair the kernel then delivers the
//! bridge's output with a copy into this UMEM instead of running its UDP receive path
//! (which veth runs on the sending core: the bridge's), so the bridge's core pays for
//! its own work only. For the same reason the thread never waits in `poll` on the socket:
//! a waiter makes every delivered frame wake it, and the wake-ups ran on the bridge's
//! core (`sock_def_readable`, 11% of that core's profile at 100 participants with
//! generic XDP). It drains the ring, then sleeps to the next send or for one
//! turn (`engine::TURN`, 250 µs) at most. Arrival is stamped when a frame is taken from
//! the ring, so up to a turn of waiting is counted as latency: the figure errs high.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use viaduct_bridge::io::xdp::XdpConfig;

use super::engine::{Live, Participant, WorkerResult};
use super::start::Place;

/// Runs `group` for the scenario on AF_XDP (see the module doc) on the calling thread.
pub(super) fn worker(
    group: Vec<(f64, Participant)>,
    config: &XdpConfig,
    place: Place<'_>,
    duration: Duration,
    sample: u64,
    live: &Arc<Live>,
) -> Result<WorkerResult> {
    #[cfg(feature = "xdp")]
    {
        run(group, config, place, duration, sample, live)
    }
    #[cfg(not(feature = "xdp"))]
    {
        let _ = (group, config, place, duration, sample, live);
        bail!("this viaduct-loadgen was built without AF_XDP (cargo feature `xdp`)")
    }
}

/// The peers' common address and the range of their ports.
#[cfg(feature = "xdp")]
fn ports_of(
    group: &[(f64, Participant)],
) -> Result<(std::net::IpAddr, std::ops::RangeInclusive<u16>)> {
    let mut ip = None;
    let (mut lo, mut hi) = (u16::MAX, 0u16);
    for (_, p) in group {
        let a = p.parts.socket.local_addr()?;
        if *ip.get_or_insert(a.ip()) != a.ip() {
            bail!("AF_XDP media needs every peer on one address");
        }
        lo = lo.min(a.port());
        hi = hi.max(a.port());
    }
    match ip {
        Some(ip) if ip.is_unspecified() => {
            bail!("AF_XDP media needs --local-ip (the address on --xdp-iface)")
        }
        Some(ip) => Ok((ip, lo..=hi)),
        None => bail!("no participants"),
    }
}

#[cfg(feature = "xdp")]
fn run(
    group: Vec<(f64, Participant)>,
    config: &XdpConfig,
    place: Place<'_>,
    duration: Duration,
    sample: u64,
    live: &Arc<Live>,
) -> Result<WorkerResult> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;
    use std::time::Instant;

    use anyhow::Context as _;
    use viaduct_bridge::io::xdp;

    use super::engine::{
        histogram, next_due, on_packet, send_due, ReceiverResult, SendBuf, SendTally, Sender,
        Shared, GRACE, TURN,
    };

    let (ip, ports) = ports_of(&group)?;
    let attached = xdp::attach(config, ip, 1).context("attaching XDP for the load generator")?;
    let mut xsk = attached
        .open_ports(0, ports.clone())
        .context("opening the load generator's AF_XDP socket")?;
    let first = *ports.start();
    // Local port → receiver; u32::MAX: not a peer's.
    let mut by_port = vec![u32::MAX; usize::from(ports.end() - first) + 1];
    let mut senders = Vec::with_capacity(group.len());
    let mut receivers = Vec::with_capacity(group.len());
    for (spread, p) in group {
        let port = p.parts.socket.local_addr()?.port();
        by_port[usize::from(port - first)] = receivers.len() as u32;
        receivers.push((
            p.parts.inbound,
            ReceiverResult {
                index: p.index,
                conference: p.conference,
                ..Default::default()
            },
        ));
        senders.push(Sender::new(
            p.index,
            p.parts.socket,
            p.parts.bridge,
            p.parts.outbound,
            p.plan,
            spread,
        ));
    }
    let shared = Rc::new(RefCell::new(Shared {
        latency: histogram(),
        seconds: Vec::new(),
    }));
    let no_map = HashMap::new();
    let mut tally = SendTally::default();
    let mut unmatched = 0u64;
    let mut buf = SendBuf::default();
    // The clock starts once every load thread is set up (attaching took the longest).
    let epoch = place.arrive().at;
    for s in &mut senders {
        s.start(epoch);
    }
    let send_until = epoch + duration;
    let receive_until = send_until + GRACE;
    loop {
        let now = Instant::now();
        if now >= receive_until {
            break;
        }
        let sending = now < send_until;
        if sending {
            send_due(
                &mut senders,
                now,
                epoch,
                &mut buf,
                &mut tally,
                live,
                &mut |s, d, seg| {
                    d.chunks(seg.max(1))
                        .filter(|p| !xsk.push(s.port, s.bridge, p))
                        .count()
                        == 0
                },
            );
            xsk.flush();
        }
        let next = if sending {
            next_due(&senders, send_until)
        } else {
            receive_until
        };
        // Drain the ring without waiting, until it is empty or a send is due.
        loop {
            let got = xsk.recv(Duration::ZERO, &mut |pkt, _src, port| {
                let arrival_ns = epoch.elapsed().as_nanos() as u64;
                let slot = port
                    .checked_sub(first)
                    .and_then(|i| by_port.get(usize::from(i)))
                    .copied()
                    .unwrap_or(u32::MAX);
                let Some((inbound, rx)) = receivers.get_mut(slot as usize) else {
                    unmatched += 1;
                    return;
                };
                on_packet(pkt, arrival_ns, inbound, rx, &no_map, sample, &shared, live);
            })?;
            if got == 0 || (sending && Instant::now() >= next) {
                break;
            }
        }
        // Then sleep to the next send or the next turn, never in poll (see the module doc).
        let wake = next.min(Instant::now() + TURN);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let drops = xsk.kernel_drops();
    tracing::info!(
        kind = %xsk.kind(),
        syscalls = xsk.syscalls(),
        unmatched,
        rx_dropped = drops.map(|d| d.rx_dropped),
        rx_ring_full = drops.map(|d| d.rx_ring_full),
        fill_ring_empty = drops.map(|d| d.fill_ring_empty),
        "load generator's AF_XDP socket done"
    );
    drop(xsk);
    drop(attached);
    let shared = Rc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("receivers still running"))?
        .into_inner();
    Ok(WorkerResult {
        receivers: receivers.into_iter().map(|(_, r)| r).collect(),
        sent: tally.sent,
        send_failures: tally.failures,
        latency: shared.latency,
        seconds: shared.seconds,
    })
}

//! `udp-reflector`: the physical reference for Viaduct's forwarding figures — a no-crypto
//! UDP reflector with the same batching as the bridge's worker, to measure the raw
//! loopback limit of a machine. Two modes:
//!
//! `udp-reflector serve --bind 127.0.0.1:PORT --io-backend mmsg|uring|xdp [--core N]
//! [--seconds S] [--xdp-iface IFACE] [--xdp-mode auto|native|generic]` runs one thread (pinned to core N) over one socket from
//! [`viaduct_bridge::io::bind_udp`] (16 MiB buffers) and the bridge's own backend (AF_XDP
//! on IFACE queue 0 with `xdp`, built with `--features xdp`: the raw AF_XDP reference). Each
//! datagram's bytes 8..12 are read as an RTP SSRC; its conference is `ssrc >> 16`. The
//! first datagram from a source address makes that address a member of the conference
//! (the only allocation: a new map entry); every datagram is then copied into one
//! [`TxBatch`] slot per *other* member, and the batch goes out in one send call after each
//! receive batch, segmented as the bridge's are, as in the bridge's worker loop (minus
//! ICE, DTLS and SRTP). It stops on
//! SIGINT/SIGTERM or after `--seconds` (default 600) and prints its counters as one JSON
//! line.
//!
//! `udp-reflector load --target 127.0.0.1:PORT --conferences C --participants P
//! [--audio-pps 50] [--audio-bytes 120] [--video-pps 150] [--video-bytes 1200]
//! [--video-fps 30] [--seconds 5] [--core N] [--reflector-pid PID] [--local ADDR] [--gro true|false]` opens C×P std UDP
//! sockets on 127.0.0.1 (or ADDR, which then allows a non-loopback target), one per participant, and from one thread (pinned to core N) sends each
//! participant's audio and video streams as plain RTP-shaped datagrams (12-byte header,
//! version 2, SSRC = `conference << 16 | participant << 4 | stream`, the send time in the
//! payload; `--*-bytes` is the whole datagram) paced evenly with phases staggered over
//! each stream's interval; video goes out as frames (`--video-fps`, 0 for packet by
//! packet), each frame's packets in one segmented send as `viaduct-loadgen` sends them, while
//! draining each socket with non-blocking `recvmmsg` every 2 ms, an eighth of them per
//! turn (with `--gro true` the sockets take the reflector's segmented runs whole, as
//! `viaduct-loadgen --gro`'s do; anything shorter than 20 bytes is counted as foreign).
//! A warm-up datagram per participant lets the reflector learn the membership before the
//! measured window. It prints one JSON line: sent, send failures, received, expected
//! (sent × (P−1)), loss ratio, forwarded (received) pps, one-way latency percentiles (to
//! the kernel's arrival stamps, so the polling delay is not counted), its own CPU seconds
//! and, with `--reflector-pid`, the reflector's CPU seconds over the window from
//! /proc/PID/stat.
//!
//! Loopback only (or the project's own test namespaces with `--local`); every loop is
//! bounded in time and count.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use viaduct_benches::loadgen::{rx_time, traffic};
use viaduct_bridge::io::{self, IoChoice, TxBatch, MAX_DATAGRAM};

/// Send slots per loop turn, as the bridge's worker has.
const TX_SLOTS: usize = viaduct_bridge::worker::TX_SLOTS;
/// Longest wait for datagrams when nothing is queued, as the bridge's worker has.
const TICK: Duration = viaduct_bridge::worker::TICK;
/// Most packets in a video frame (one segmented send).
const MAX_FRAME_PACKETS: usize = 64;
/// Most bytes in a video frame (one segmented send stays under 64 KiB).
const MAX_FRAME_BYTES: usize = 60_000;
/// Upper bound of any run, in seconds.
const MAX_SECONDS: u64 = 3600;
/// Most participants the load side opens sockets for.
const MAX_PARTICIPANTS_TOTAL: usize = 4000;
/// Most latency samples kept (one u32 each).
const MAX_LATENCY_SAMPLES: usize = 8 << 20;
/// Most datagrams read from one socket per loop turn.
const DRAIN_PER_SOCKET: usize = 256;
/// Shortest load-side loop turn: the pacing granularity.
const TURN: Duration = Duration::from_micros(250);
/// The load side drains each socket every this many turns (2 ms): a turn drains one
/// slice of the sockets in rotation, so the receive work (and the sends that wait for
/// it on this one thread) stays as even as before. Every socket polled every turn,
/// most `recvmmsg` calls found it empty (3.3M calls for 1.7M datagrams at 190
/// participants). The kernel's arrival stamps keep the wait out of the latency.
const DRAIN_EVERY: usize = 8;
/// Time given to the reflector to learn every participant before the measured window.
const WARMUP: Duration = Duration::from_millis(300);
/// Time after the last send to collect datagrams still in flight.
const GRACE: Duration = Duration::from_millis(300);

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    let flags = Flags::parse(argv)?;
    match mode.as_str() {
        "serve" => serve(&flags),
        "load" => load(&flags),
        _ => bail!(
            "usage: udp-reflector serve --bind ADDR --io-backend mmsg|uring [--core N] [--seconds S]\n\
             \x20      udp-reflector load --target ADDR --conferences C --participants P [--audio-pps 50] \
             [--audio-bytes 120] [--video-pps 150] [--video-bytes 1200] [--video-fps 30] [--seconds S] [--core N] [--reflector-pid PID]"
        ),
    }
}

/// `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Flags> {
        let mut map = HashMap::new();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument {flag:?}");
            };
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Flags(map))
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
        }
    }

    fn required<T: std::str::FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self
            .str(name)
            .with_context(|| format!("--{name} is required"))?;
        v.parse()
            .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}"))
    }

    fn check_known(&self, known: &[&str]) -> Result<()> {
        for name in self.0.keys() {
            if !known.contains(&name.as_str()) {
                bail!("unknown flag --{name}");
            }
        }
        Ok(())
    }
}

/// Pin the calling thread to core `id`, or fail.
fn pin(id: Option<usize>) -> Result<()> {
    let Some(id) = id else { return Ok(()) };
    let core = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == id)
        .with_context(|| format!("no core {id}"))?;
    if !core_affinity::set_for_current(core) {
        bail!("cannot pin to core {id}");
    }
    Ok(())
}

/// A flag set by SIGINT or SIGTERM (a small thread waits for them).
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let handlers = signal(SignalKind::terminate())
                    .and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
                let (mut term, mut int) = match handlers {
                    Ok(h) => {
                        let _ = ready_tx.send(Ok(()));
                        h
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                flag.store(true, Ordering::Relaxed);
            });
        })?;
    ready_rx.recv().context("signal thread")??;
    Ok(stop)
}

/// User+system CPU seconds of a process, from /proc/<pid>/stat (USER_HZ = 100).
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).context("bad stat")?.parse::<f64>()?
        + f.get(12).context("bad stat")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

// ---------------------------------------------------------------------------------------
// serve

/// Who is in which conference: learned from the first datagram of each source address.
#[derive(Default)]
struct Membership {
    /// Source address → its conference id.
    member_of: HashMap<SocketAddr, u32>,
    /// Conference id → its members, in arrival order.
    members: HashMap<u32, Vec<SocketAddr>>,
}

impl Membership {
    /// The members of `src`'s conference (learning `src` into conference `conference` if
    /// it is new; allocation only then).
    fn conference_of(&mut self, src: SocketAddr, conference: u32) -> &[SocketAddr] {
        let conf = *self.member_of.entry(src).or_insert_with(|| {
            self.members.entry(conference).or_default().push(src);
            conference
        });
        self.members.get(&conf).map_or(&[], Vec::as_slice)
    }
}

#[derive(Default)]
struct ServeCounters {
    received: u64,
    forwarded: u64,
    drop_malformed: u64,
    drop_tx_full: u64,
    drop_send_failed: u64,
    send_errors: u64,
    recv_errors: u64,
    loop_turns: u64,
}

fn serve(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "bind",
        "io-backend",
        "core",
        "seconds",
        "xdp-iface",
        "xdp-mode",
    ])?;
    let bind: SocketAddr = flags.required("bind")?;
    let choice: IoChoice = flags.get("io-backend", IoChoice::Mmsg)?;
    if choice == IoChoice::Auto {
        bail!("--io-backend must be mmsg, uring or xdp");
    }
    let xdp = io::xdp::XdpConfig {
        iface: flags.str("xdp-iface").map(str::to_owned),
        mode: flags.get("xdp-mode", io::xdp::XdpMode::Auto)?,
        ..io::xdp::XdpConfig::default()
    };
    let core: Option<usize> = flags.str("core").map(str::parse).transpose()?;
    let seconds = flags.get("seconds", 600u64)?.clamp(1, MAX_SECONDS);
    let stop = stop_on_signal()?;
    pin(core)?;
    let socket = io::bind_udp(bind, 16 << 20).with_context(|| format!("binding {bind}"))?;
    let mut backend = io::Opener::prepare(choice, &xdp, bind.ip(), 1)
        .and_then(|o| o.open(0, socket))
        .context("opening the I/O backend")?;
    let local = backend.local_addr();
    eprintln!(
        "udp-reflector: serving on {local} ({}), core {core:?}, up to {seconds} s",
        backend.kind()
    );

    let mut tx = TxBatch::new(TX_SLOTS);
    let mut membership = Membership::default();
    let mut c = ServeCounters::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut first_packet: Option<Instant> = None;
    let mut last_packet = start;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        c.loop_turns += 1;
        let timeout = if tx.is_empty() { TICK } else { Duration::ZERO };
        let result = backend.recv(timeout, &mut |buf, src| {
            c.received += 1;
            let Some(ssrc) = buf.get(8..12) else {
                c.drop_malformed += 1;
                return;
            };
            let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
            for &dst in membership.conference_of(src, ssrc >> 16) {
                if dst == src {
                    continue;
                }
                let Some(slot) = tx.slot() else {
                    c.drop_tx_full += 1;
                    continue;
                };
                slot[..buf.len()].copy_from_slice(buf);
                tx.commit(buf.len(), dst);
            }
        });
        match result {
            Ok(0) => {}
            Ok(_) => {
                let now = Instant::now();
                first_packet.get_or_insert(now);
                last_packet = now;
            }
            Err(_) => c.recv_errors += 1,
        }
        if !tx.is_empty() {
            let queued = tx.len();
            match backend.send(&mut tx) {
                Ok(sent) => {
                    c.forwarded += sent as u64;
                    c.drop_send_failed += (queued - sent.min(queued)) as u64;
                }
                Err(_) => {
                    c.send_errors += 1;
                    c.drop_send_failed += queued as u64;
                    tx.clear();
                }
            }
        }
    }
    let active = first_packet.map_or(0.0, |f| (last_packet - f).as_secs_f64());
    let line = json!({
        "mode": "serve",
        "bind": local.to_string(),
        "io_backend": backend.kind().to_string(),
        "core": core,
        "seconds": start.elapsed().as_secs_f64(),
        "active_seconds": active,
        "received": c.received,
        "forwarded": c.forwarded,
        "drops": {
            "malformed": c.drop_malformed,
            "tx_full": c.drop_tx_full,
            "send_failed": c.drop_send_failed,
        },
        "send_errors": c.send_errors,
        "recv_errors": c.recv_errors,
        "members": membership.member_of.len(),
        "conferences": membership.members.len(),
        "loop_turns": c.loop_turns,
        "syscalls": backend.syscalls(),
        "max_datagram": MAX_DATAGRAM,
    });
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// load

/// One RTP stream of one participant.
struct Stream {
    socket: usize,
    ssrc: u32,
    payload_type: u8,
    bytes: usize,
    /// Datagrams per send: a video frame's packets, or 1.
    per_send: usize,
    interval: Duration,
    /// Offset from the window's start of the next send.
    next: Duration,
    seq: u16,
}

/// A datagram of `bytes` bytes: RTP header (V=2), then the send time in µs since `t0`.
fn write_packet(buf: &mut [u8], s: &Stream, micros: u64) -> usize {
    let n = s.bytes.clamp(20, buf.len());
    buf[0] = 0x80;
    buf[1] = s.payload_type;
    buf[2..4].copy_from_slice(&s.seq.to_be_bytes());
    let ts = ((micros / 1000) as u32).wrapping_mul(90);
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
    buf[12..20].copy_from_slice(&micros.to_be_bytes());
    n
}

/// `n` non-blocking sockets on 127.0.0.1 with 4 MiB buffers ([`io::bind_udp`]), each on a
/// port of its own. `bind_udp` sets SO_REUSEADDR, with which the kernel may hand out an
/// ephemeral port that another SO_REUSEADDR socket (an earlier participant, or the
/// reflector itself) already has; two participants on one port would share its datagrams,
/// so such sockets are set aside until every participant has a port of its own.
fn participant_sockets(
    n: usize,
    target: SocketAddr,
    local: std::net::IpAddr,
) -> Result<Vec<UdpSocket>> {
    let mut ports = std::collections::HashSet::from([target.port()]);
    let mut sockets = Vec::with_capacity(n);
    let mut set_aside = Vec::new();
    for _ in 0..(4 * n + 16) {
        if sockets.len() == n {
            return Ok(sockets);
        }
        let socket = io::bind_udp(SocketAddr::new(local, 0), 4 << 20)?;
        if ports.insert(socket.local_addr()?.port()) {
            sockets.push(socket);
        } else {
            set_aside.push(socket);
        }
    }
    if sockets.len() == n {
        return Ok(sockets);
    }
    bail!("could not bind {n} UDP sockets on distinct ports");
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

#[derive(Default)]
struct LoadCounters {
    sent: u64,
    send_failures: u64,
    received: u64,
    foreign: u64,
    recv_errors: u64,
    loop_turns: u64,
    recv_calls: u64,
}

fn load(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "target",
        "conferences",
        "participants",
        "audio-pps",
        "audio-bytes",
        "video-pps",
        "video-bytes",
        "video-fps",
        "seconds",
        "core",
        "reflector-pid",
        "local",
        "gro",
    ])?;
    let target: SocketAddr = flags.required("target")?;
    let conferences: usize = flags.required("conferences")?;
    let participants: usize = flags.required("participants")?;
    let audio_pps: f64 = flags.get("audio-pps", 50.0)?;
    let audio_bytes: usize = flags.get("audio-bytes", 120)?;
    let video_pps: f64 = flags.get("video-pps", 150.0)?;
    let video_bytes: usize = flags.get("video-bytes", 1200)?;
    let video_fps: f64 = flags.get("video-fps", 30.0)?;
    let seconds: f64 = flags.get("seconds", 5.0)?;
    let core: Option<usize> = flags.str("core").map(str::parse).transpose()?;
    let reflector_pid = flags.str("reflector-pid");
    let local: Option<std::net::IpAddr> = flags.str("local").map(str::parse).transpose()?;
    let gro: bool = flags.get("gro", false)?;
    if !target.ip().is_loopback() && local.is_none_or(|l| l.is_loopback()) {
        bail!("--target must be a loopback address (or give --local, an address that reaches it)");
    }
    let local = local.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    if !(2..=4096).contains(&participants) || !(1..=65535).contains(&conferences) {
        bail!("need 2..=4096 participants and 1..=65535 conferences");
    }
    if conferences * participants > MAX_PARTICIPANTS_TOTAL {
        bail!("at most {MAX_PARTICIPANTS_TOTAL} participants in all");
    }
    if !(0.1..=MAX_SECONDS as f64).contains(&seconds) {
        bail!("--seconds must be in 0.1..={MAX_SECONDS}");
    }
    for (name, pps, bytes) in [
        ("audio", audio_pps, audio_bytes),
        ("video", video_pps, video_bytes),
    ] {
        if !(0.0..=100_000.0).contains(&pps) || !(20..=MAX_DATAGRAM).contains(&bytes) {
            bail!("--{name}-pps must be 0..=100000 and --{name}-bytes 20..={MAX_DATAGRAM}");
        }
    }
    // Packets per video frame, all sent in one segmented send.
    let frame_packets = if video_fps > 0.0 && video_pps > 0.0 {
        (video_pps / video_fps).round().max(1.0) as usize
    } else {
        1
    };
    if !(0.0..=1000.0).contains(&video_fps)
        || frame_packets > MAX_FRAME_PACKETS
        || frame_packets * video_bytes > MAX_FRAME_BYTES
    {
        bail!(
            "--video-fps must be 0..=1000, with at most {MAX_FRAME_PACKETS} packets and \
             {MAX_FRAME_BYTES} bytes a frame (--video-pps / --video-fps packets of --video-bytes)"
        );
    }
    pin(core)?;

    // One socket per participant: large buffers, non-blocking, each on its own port.
    let total = conferences * participants;
    let sockets = participant_sockets(total, target, local)?;
    let mut stamped = true;
    for sock in &sockets {
        if gro {
            rx_time::enable_gro(sock);
        }
        stamped &= rx_time::enable(sock);
    }
    let mut batch = Box::<rx_time::RxBatch>::default();
    let mut streams = Vec::new();
    for conf in 0..conferences {
        for p in 0..participants {
            let socket = conf * participants + p;
            let ssrc_base = ((conf as u32) << 16) | ((p as u32 & 0xfff) << 4);
            for (stream, pt, pps, bytes, per_send) in [
                (0u32, 111u8, audio_pps, audio_bytes, 1),
                (1, 96, video_pps, video_bytes, frame_packets),
            ] {
                if pps > 0.0 {
                    streams.push(Stream {
                        socket,
                        ssrc: ssrc_base | stream,
                        payload_type: pt,
                        bytes,
                        per_send,
                        interval: Duration::from_secs_f64(per_send as f64 / pps),
                        next: Duration::ZERO,
                        seq: 0,
                    });
                }
            }
        }
    }
    // Stagger the streams' phases evenly over their intervals, so the aggregate is smooth.
    let n_streams = streams.len().max(1);
    for (i, s) in streams.iter_mut().enumerate() {
        s.next = s.interval.mul_f64(i as f64 / n_streams as f64);
    }

    let mut buf = vec![0u8; MAX_FRAME_BYTES.max(MAX_DATAGRAM)];
    let mut rx = vec![0u8; MAX_DATAGRAM + 1];
    let mut c = LoadCounters::default();
    let mut latencies: Vec<u32> = Vec::with_capacity(MAX_LATENCY_SAMPLES.min(1 << 20));

    // Warm-up: one datagram per participant so the reflector knows every member before
    // the window; then drain what it forwarded (not counted).
    let warm_start = Instant::now();
    let mut last_socket = usize::MAX;
    for s in &streams {
        if s.socket != last_socket {
            last_socket = s.socket;
            let n = write_packet(&mut buf, s, 0);
            let _ = sockets[s.socket].send_to(&buf[..n], target);
        }
    }
    while warm_start.elapsed() < WARMUP {
        for sock in &sockets {
            for _ in 0..DRAIN_PER_SOCKET {
                if sock.recv_from(&mut rx).is_err() {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let self_cpu0 = cpu_seconds("self")?;
    let refl_cpu0 = reflector_pid.map(cpu_seconds).transpose()?;
    let t0 = Instant::now();
    let t0_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let window = Duration::from_secs_f64(seconds);
    let slice = sockets.len().div_ceil(DRAIN_EVERY);
    let hard_stop = window + GRACE;
    loop {
        c.loop_turns += 1;
        let now = t0.elapsed();
        let turn_start = now;
        if now >= hard_stop {
            break;
        }
        // Send everything due (at most 100k datagrams per stream and turn, should the loop
        // ever fall far behind).
        if now < window {
            for s in streams.iter_mut() {
                let mut burst = 0;
                while s.next <= now && s.next < window && burst < 100_000 {
                    let micros = t0.elapsed().as_micros() as u64;
                    let mut len = 0;
                    let mut segment = 0;
                    for _ in 0..s.per_send {
                        segment = write_packet(&mut buf[len..], s, micros);
                        len += segment;
                        s.seq = s.seq.wrapping_add(1);
                    }
                    let packets = s.per_send as u64;
                    if traffic::send_segmented(&sockets[s.socket], target, &buf[..len], segment) {
                        c.sent += packets;
                    } else {
                        c.send_failures += packets;
                    }
                    s.next += s.interval;
                    burst += 1;
                }
            }
        }
        // Drain this turn's slice of the sockets (all of them once sending is over), a
        // recvmmsg batch at a time (with GRO, each message may be a run the reflector
        // sent segmented).
        let mut backlog = false;
        let (first, count) = if now < window {
            (c.loop_turns as usize % DRAIN_EVERY * slice, slice)
        } else {
            (0, sockets.len())
        };
        for sock in sockets.iter().skip(first).take(count) {
            let mut drained = false;
            for _ in 0..DRAIN_PER_SOCKET.div_ceil(rx_time::BATCH) {
                c.recv_calls += 1;
                match batch.recv(sock) {
                    Ok(n) => {
                        let picked_up = t0.elapsed().as_micros() as u64;
                        for i in 0..n {
                            let segment = batch.segment(i);
                            let (run, stamp) = batch.get(i);
                            let at = match stamp.filter(|_| stamped) {
                                Some(ns) => ns.saturating_sub(t0_unix_ns) / 1000,
                                None => picked_up,
                            };
                            for d in run.chunks(segment) {
                                if d.len() < 20 {
                                    c.foreign += 1;
                                    continue;
                                }
                                c.received += 1;
                                let sent_at =
                                    u64::from_be_bytes(d[12..20].try_into().unwrap_or([0; 8]));
                                if latencies.len() < MAX_LATENCY_SAMPLES {
                                    latencies
                                        .push(at.saturating_sub(sent_at).min(u64::from(u32::MAX))
                                            as u32);
                                }
                            }
                        }
                        if n < rx_time::BATCH {
                            drained = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(_) => {
                        c.recv_errors += 1;
                        drained = true;
                        break;
                    }
                }
            }
            backlog |= !drained;
        }
        // One turn per TURN at most (unless a socket still has a backlog): datagrams
        // queue in the sockets meanwhile, so each turn's empty reads are amortised over
        // many datagrams, and sends due in between go out at the next turn.
        let turn_end = turn_start + TURN;
        let now = t0.elapsed();
        if !backlog && turn_end > now {
            std::thread::sleep(turn_end - now);
        }
    }
    let refl_cpu = match (reflector_pid, refl_cpu0) {
        (Some(pid), Some(c0)) => Some(cpu_seconds(pid)? - c0),
        _ => None,
    };
    let self_cpu = cpu_seconds("self")? - self_cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let expected = c.sent * (participants as u64 - 1);
    let loss = if expected == 0 {
        0.0
    } else {
        (1.0 - c.received as f64 / expected as f64).max(0.0)
    };
    let offered_pps = conferences as f64 * participants as f64 * (audio_pps + video_pps);
    let line = json!({
        "mode": "load",
        "target": target.to_string(),
        "conferences": conferences,
        "participants_per_conference": participants,
        "participants": total,
        "seconds": seconds,
        "elapsed_seconds": elapsed,
        "offered_pps": offered_pps,
        "sent": c.sent,
        "send_failures": c.send_failures,
        "received": c.received,
        "expected": expected,
        "loss_ratio": loss,
        "forwarded_pps": c.received as f64 / seconds,
        "foreign": c.foreign,
        "recv_errors": c.recv_errors,
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "p999": percentile(&latencies, 0.999),
            "max": percentile(&latencies, 1.0),
            "samples": latencies.len(),
        },
        "load_cpu_seconds": self_cpu,
        "load_cpu_share": self_cpu / elapsed,
        "load_loop_turns": c.loop_turns,
        "load_recv_calls": c.recv_calls,
        "reflector_cpu_seconds": refl_cpu,
        "reflector_cpu_share": refl_cpu.map(|s| s / elapsed),
        "forwarded_per_reflector_cpu_second": refl_cpu.map(|s| c.received as f64 / s.max(1e-9)),
    });
    println!("{line}");
    Ok(())
}

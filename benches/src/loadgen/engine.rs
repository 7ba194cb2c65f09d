//! Running synthetic peers: connect them (through a [`Target`]: a Viaduct focus or
//! Janus's API; then ICE, DTLS), then on a few
//! pinned threads send each peer's audio and video on schedule and receive everything
//! the bridge forwards, counting every packet by its clear RTP header, timing it by its
//! send-time extension, and decrypting a sample to check authentication and payload.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use viaduct_bridge::dtls::{DtlsHandle, Identity};
use viaduct_bridge::peer::{Peer, PeerParts};
use viaduct_bridge::srtp::{Context, SrtpError};

use super::focus::{self, Focus};
use super::janus::Janus;
use super::start::{Place, StartLine};
use super::traffic::{self, Plan};

/// After senders stop, receivers wait this long for packets in flight.
pub(super) const GRACE: Duration = Duration::from_millis(500);

/// The first packets of every stream are always decrypted and checked.
const ALWAYS_CHECK_FIRST: u64 = 8;

/// Audio packet interval (Opus 20 ms frames).
const AUDIO_PERIOD: Duration = Duration::from_millis(20);

/// Shortest turn of a receiving thread; each turn drains one slice of its sockets in
/// rotation, so every socket is drained once per [`DRAIN_EVERY`] turns (2 ms) and the
/// work is spread evenly. Polled back to back, most `recvmmsg` calls found a socket empty
/// (1.0M calls in 3 s for 252k datagrams/s at 140 participants); now a few datagrams
/// gather per socket, and the kernel's arrival stamps keep the wait out of the latency.
pub(super) const TURN: Duration = Duration::from_micros(250);

/// Turns between two drains of the same socket.
const DRAIN_EVERY: usize = 8;

/// Largest latency recorded, microseconds (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Conferences.
    pub conferences: usize,
    /// Participants per conference.
    pub participants: usize,
    /// Participants per conference whose audio carries voice.
    pub audio_senders: usize,
    /// Video bitrate per participant (0: audio only).
    pub video_kbps: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Three simulcast layers instead of one.
    pub simulcast: bool,
    /// Sending time.
    pub duration: Duration,
    /// Participants joined per second during ramp-up (0: as fast as possible).
    pub join_rate: f64,
    /// Cores of the load generator's own threads.
    pub cores: Vec<usize>,
    /// Decrypt one packet in this many.
    pub sample: u64,
    /// Allow candidates that are not loopback.
    pub allow_remote: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Send and receive media through AF_XDP on this interface instead of the peers'
    /// kernel sockets (one thread; see [`super::xdp`]).
    pub xdp: Option<viaduct_bridge::io::xdp::XdpConfig>,
    /// Kernel sockets take a segmented run from the bridge whole (`UDP_GRO`), as a NIC
    /// with segmentation offload would spare the bridge's core the splitting.
    pub gro: bool,
}

/// A connected synthetic participant.
pub struct Participant {
    /// Global index (SSRCs derive from it).
    pub index: u32,
    /// Its conference number.
    pub conference: usize,
    /// Socket, keys, bridge address (what it sends on, and receives on unless
    /// `receive` is set).
    pub parts: PeerParts,
    /// What it sends.
    pub plan: Plan,
    /// A separate PeerConnection it receives on (a Janus subscriber).
    pub receive: Option<PeerParts>,
    /// SSRCs as they arrive → the senders' SSRCs (empty: the SFU keeps SSRCs).
    pub ssrc_map: HashMap<u32, u32>,
}

/// How peers get their remote transport and how their sources are announced.
pub enum Target {
    /// A Viaduct bridge, through a focus (colibri2 or the bridge's command socket):
    /// one PeerConnection per participant, sources announced by the focus.
    Viaduct(Focus),
    /// A Janus VideoRoom, through Janus's HTTP API: SDP offers and answers, a publisher
    /// and a subscriber PeerConnection per participant.
    Janus(Box<Janus>),
}

impl Target {
    /// Ends a conference (errors ignored: cleanup).
    pub fn expire_conference(&mut self, id: &str) {
        match self {
            Self::Viaduct(f) => f.expire_conference(id),
            Self::Janus(j) => j.expire_room(id),
        }
    }
}

/// What peers are made of: DTLS threads of both roles, the certificate, and the
/// address their sockets bind to.
pub struct PeerKit {
    /// DTLS client thread (the usual role).
    pub client: DtlsHandle,
    /// DTLS server thread (when the remote's SDP says `a=setup:active`).
    pub server: DtlsHandle,
    /// Our certificate.
    pub identity: Arc<Identity>,
    /// Local address of the peers' sockets.
    pub local_ip: IpAddr,
}

fn check_loopback(addr: SocketAddr, allow_remote: bool) -> Result<()> {
    if !allow_remote && !addr.ip().is_loopback() {
        bail!("the focus returned {addr}, which is not loopback: refusing to send there without --allow-remote");
    }
    Ok(())
}

fn bar(progress: bool, len: u64, msg: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg.to_owned());
    b
}

/// Allocates the scenario's conferences on `target` (ids `{prefix}-{n}`) and connects
/// every participant through ICE and DTLS.
pub fn connect(
    target: &mut Target,
    s: &Scenario,
    prefix: &str,
    kit: &PeerKit,
) -> Result<Vec<Participant>> {
    let total = s.conferences * s.participants;
    let progress = bar(s.progress, total as u64, "joining");
    let pace = (s.join_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / s.join_rate));
    let started = Instant::now();
    let mut before_join = |index: u32| {
        if let Some(pace) = pace {
            let due = started + pace * index;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    };
    let mut joined = || progress.inc(1);
    let mut out = Vec::with_capacity(total);
    for c in 0..s.conferences {
        let conf = format!("{prefix}-{c}");
        match target {
            Target::Viaduct(focus) => {
                focus.create_conference(&conf)?;
                for p in 0..s.participants {
                    let index = (c * s.participants + p) as u32;
                    before_join(index);
                    out.push(connect_viaduct(focus, s, &conf, c, p, index, kit)?);
                    joined();
                }
            }
            Target::Janus(j) => {
                out.extend(j.connect_conference(&conf, c, s, kit, &mut before_join, &mut joined)?)
            }
        }
    }
    progress.finish_and_clear();
    Ok(out)
}

fn connect_viaduct(
    focus: &mut Focus,
    s: &Scenario,
    conf: &str,
    c: usize,
    p: usize,
    index: u32,
    kit: &PeerKit,
) -> Result<Participant> {
    let endpoint = format!("p{index}");
    let alloc = focus.create_endpoint(conf, &endpoint)?;
    for cand in &alloc.candidates {
        if let Ok(ip) = cand.ip.parse() {
            check_loopback(SocketAddr::new(ip, cand.port), s.allow_remote)?;
        }
    }
    let plan = Plan::new(p < s.audio_senders, s.video_kbps, s.fps, s.simulcast);
    let video: Vec<u32> = plan
        .video_layers
        .iter()
        .map(|&(stream, _)| traffic::ssrc(index, stream))
        .collect();
    let mut peer = Peer::bind(
        SocketAddr::new(kit.local_ip, 0),
        kit.client.clone(),
        kit.identity.clone(),
    )?;
    focus.update_endpoint(
        conf,
        &endpoint,
        peer.ice_credentials(),
        peer.fingerprint(),
        focus::sources(traffic::ssrc(index, traffic::AUDIO), &video),
    )?;
    peer.connect(&alloc, Duration::from_secs(10))
        .with_context(|| format!("connecting {endpoint} of {conf}"))?;
    let parts = peer.into_parts()?;
    check_loopback(parts.bridge, s.allow_remote)?;
    Ok(Participant {
        index,
        conference: c,
        parts,
        plan,
        receive: None,
        ssrc_map: HashMap::new(),
    })
}

/// One received stream at one receiver.
#[derive(Clone, Debug, Default)]
pub struct StreamRx {
    /// Packets counted.
    pub received: u64,
    /// Interarrival jitter (RFC 3550 6.4.1), nanoseconds.
    pub jitter_ns: f64,
    last_transit: Option<i64>,
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct ReceiverResult {
    /// The receiver's global index.
    pub index: u32,
    /// Its conference.
    pub conference: usize,
    /// Per SSRC.
    pub streams: HashMap<u32, StreamRx>,
    /// Packets decrypted and checked.
    pub checked: u64,
    /// Sampled packets that did not authenticate.
    pub auth_failures: u64,
    /// Sampled packets whose payload did not match its header.
    pub payload_mismatches: u64,
    /// Sampled packets refused as replays (duplicates from the bridge).
    pub replays: u64,
    /// RTCP and other non-RTP datagrams.
    pub other: u64,
}

impl ReceiverResult {
    /// Adds what the same receiver saw on another of its PeerConnections.
    fn merge(&mut self, other: ReceiverResult) {
        for (ssrc, st) in other.streams {
            let mine = self.streams.entry(ssrc).or_default();
            mine.received += st.received;
            mine.jitter_ns = mine.jitter_ns.max(st.jitter_ns);
        }
        self.checked += other.checked;
        self.auth_failures += other.auth_failures;
        self.payload_mismatches += other.payload_mismatches;
        self.replays += other.replays;
        self.other += other.other;
    }
}

/// A peer's socket made ready for draining (large buffers, non-blocking, and with `gro`
/// segmented runs kept whole).
fn receive_socket(socket: std::net::UdpSocket, gro: bool) -> Result<std::net::UdpSocket> {
    // Room for bursts while this thread serves other peers (best effort).
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(1 << 20);
    socket.set_nonblocking(true)?;
    if gro {
        super::rx_time::enable_gro(&socket);
    }
    Ok(socket)
}

/// Per-second figures of the whole run.
#[derive(Clone, Debug)]
pub struct Second {
    /// Packets received in that second.
    pub received: u64,
    /// Latency histogram of that second, microseconds.
    pub latency: Histogram<u64>,
}

/// A run's raw results.
pub struct RunResult {
    /// Per receiver.
    pub receivers: Vec<ReceiverResult>,
    /// Packets sent per SSRC.
    pub sent: HashMap<u32, u64>,
    /// Sends the kernel refused.
    pub send_failures: u64,
    /// All latencies, microseconds.
    pub latency: Histogram<u64>,
    /// Per second since the start.
    pub seconds: Vec<Second>,
    /// Wall time of the sending phase.
    pub duration: Duration,
    /// The participants' plans, by index, and their conferences.
    pub plans: Vec<(u32, usize, Plan)>,
    /// The SRTP profiles DTLS negotiated (each once).
    pub profiles: Vec<String>,
}

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Live counters the progress display reads.
#[derive(Debug, Default)]
pub struct Live {
    /// Packets sent.
    pub sent: AtomicU64,
    /// Packets received.
    pub received: AtomicU64,
}

/// Runs connected participants for the scenario's duration on the scenario's cores.
pub fn run(participants: Vec<Participant>, s: &Scenario) -> Result<RunResult> {
    let plans: Vec<(u32, usize, Plan)> = participants
        .iter()
        .map(|p| (p.index, p.conference, p.plan.clone()))
        .collect();
    let mut profiles: Vec<String> = Vec::new();
    for p in &participants {
        for parts in std::iter::once(&p.parts).chain(&p.receive) {
            let name = format!("{:?}", parts.profile);
            if !profiles.contains(&name) {
                profiles.push(name);
            }
        }
    }
    if s.xdp.is_some() {
        if s.cores.len() > 1 {
            bail!(
                "with AF_XDP the load generator runs one thread: give one core, not {:?}",
                s.cores
            );
        }
        if participants.iter().any(|p| p.receive.is_some()) {
            bail!("AF_XDP media is for Viaduct targets (one PeerConnection per peer)");
        }
    }
    let cores = if s.cores.is_empty() {
        vec![usize::MAX]
    } else {
        s.cores.clone()
    };
    // Each participant with its place among all of them, which spreads its streams'
    // phases (see `Sender::new`) evenly across the workers too.
    let total = participants.len().max(1);
    let mut groups: Vec<Vec<(f64, Participant)>> = (0..cores.len()).map(|_| Vec::new()).collect();
    for (i, p) in participants.into_iter().enumerate() {
        groups[i % cores.len()].push((i as f64 / total as f64, p));
    }
    let live = Arc::new(Live::default());
    // The workers and this thread; the clock starts when every worker is set up.
    let start = Arc::new(StartLine::new(cores.len() + 1));
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    for (group, core) in groups.into_iter().zip(cores.iter().copied()) {
        let pin = core_ids.iter().find(|c| c.id == core).copied();
        let live = live.clone();
        let line = start.clone();
        let sample = s.sample.max(1);
        let duration = s.duration;
        let xdp = s.xdp.clone();
        let gro = s.gro;
        let spawned = std::thread::Builder::new()
            .name(format!("loadgen-{core}"))
            .spawn(move || -> Result<WorkerResult> {
                let place = line.place();
                if let Some(c) = pin {
                    core_affinity::set_for_current(c);
                }
                if let Some(config) = &xdp {
                    return super::xdp::worker(group, config, place, duration, sample, &live);
                }
                worker(group, pin.map(|c| c.id), place, duration, sample, gro, live)
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Neither this worker, the ones after it nor this thread will arrive.
                start.excuse(cores.len() - handles.len() + 1);
                return Err(e.into());
            }
        }
    }
    let epoch = start.arrive().at;
    let send_until = epoch + s.duration;
    // Progress while running.
    let progress = bar(s.progress, s.duration.as_secs().max(1), "running");
    while Instant::now() < send_until + GRACE {
        std::thread::sleep(Duration::from_millis(250));
        let secs = epoch.elapsed().as_secs();
        progress.set_position(secs.min(s.duration.as_secs()));
        progress.set_message(format!(
            "sent {} recv {}",
            live.sent.load(Ordering::Relaxed),
            live.received.load(Ordering::Relaxed)
        ));
    }
    progress.finish_and_clear();
    let mut result = RunResult {
        receivers: Vec::new(),
        sent: HashMap::new(),
        send_failures: 0,
        latency: histogram(),
        seconds: Vec::new(),
        duration: s.duration,
        plans,
        profiles,
    };
    for h in handles {
        let w = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        result.receivers.extend(w.receivers);
        for (ssrc, n) in w.sent {
            *result.sent.entry(ssrc).or_default() += n;
        }
        result.send_failures += w.send_failures;
        let _ = result.latency.add(&w.latency);
        for (i, sec) in w.seconds.into_iter().enumerate() {
            if result.seconds.len() <= i {
                result.seconds.push(Second {
                    received: 0,
                    latency: histogram(),
                });
            }
            result.seconds[i].received += sec.received;
            let _ = result.seconds[i].latency.add(&sec.latency);
        }
    }
    Ok(result)
}

pub(super) struct WorkerResult {
    pub(super) receivers: Vec<ReceiverResult>,
    pub(super) sent: HashMap<u32, u64>,
    pub(super) send_failures: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) seconds: Vec<Second>,
}

pub(super) struct Shared {
    pub(super) latency: Histogram<u64>,
    pub(super) seconds: Vec<Second>,
}

/// One participant's sending side: its socket (which also names its port), keys, plan
/// and schedule.
pub(super) struct Sender {
    pub(super) index: u32,
    /// Kept open so its port stays ours.
    pub(super) socket: std::net::UdpSocket,
    /// The socket's local port (what AF_XDP frames are sent from).
    #[cfg_attr(not(feature = "xdp"), allow(dead_code))]
    pub(super) port: u16,
    pub(super) bridge: SocketAddr,
    outbound: Context,
    plan: Plan,
    /// Its place among all the run's senders (see [`Sender::new`]).
    spread: f64,
    next_audio: Instant,
    next_frame: Instant,
    seq: [u64; 4],
}

impl Sender {
    /// A sender whose streams start at `spread` (0 ≤ spread < 1, its place among all the
    /// run's senders) of their own periods: audio of [`AUDIO_PERIOD`], video of one frame
    /// interval. So the run's audio packets and frames arrive evenly spread, as
    /// independent clients' would, instead of clustering in part of a frame interval.
    /// Nothing is due before [`start`](Self::start).
    pub(super) fn new(
        index: u32,
        socket: std::net::UdpSocket,
        bridge: SocketAddr,
        outbound: Context,
        plan: Plan,
        spread: f64,
    ) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Self {
            index,
            port: socket.local_addr().map_or(0, |a| a.port()),
            socket,
            bridge,
            outbound,
            plan,
            spread: spread.clamp(0.0, 1.0),
            next_audio: far,
            next_frame: far,
            seq: [0; 4],
        }
    }

    /// Schedule the first packets from the run's epoch.
    pub(super) fn start(&mut self, epoch: Instant) {
        self.next_audio = epoch + AUDIO_PERIOD.mul_f64(self.spread);
        self.next_frame = epoch + self.plan.frame_period().mul_f64(self.spread);
    }
}

/// A socket the worker drains, and what it has seen.
struct Receiving {
    socket: std::net::UdpSocket,
    /// The kernel stamps arrivals (SO_TIMESTAMPNS).
    stamped: bool,
    inbound: Context,
    rx: ReceiverResult,
    /// SSRCs as they arrive → the senders' SSRCs.
    map: HashMap<u32, u32>,
}

/// Runs `group` with the peers' kernel sockets: a sending thread, and this thread draining
/// its receive sockets with non-blocking `recvmmsg`, a slice per [`TURN`] (sooner when a
/// socket had more than a batch waiting). The sockets are never registered with epoll: a
/// waiting socket costs every datagram delivered to it a wake-up callback, which loopback
/// and veth run on the *sending* core, so the bridge's core would pay for the load
/// generator's readiness events (as much as a tenth of its profile). Arrival times come
/// from the kernel's stamps, so the polling delay is not counted as latency.
#[allow(clippy::too_many_arguments)]
fn worker(
    group: Vec<(f64, Participant)>,
    core: Option<usize>,
    place: Place<'_>,
    duration: Duration,
    sample: u64,
    gro: bool,
    live: Arc<Live>,
) -> Result<WorkerResult> {
    let shared = Rc::new(RefCell::new(Shared {
        latency: histogram(),
        seconds: Vec::new(),
    }));
    let mut senders = Vec::new();
    let mut receiving = Vec::new();
    let mut sessions = Vec::new();
    for (spread, p) in group {
        let PeerParts {
            socket,
            bridge,
            outbound,
            inbound,
            session,
            ..
        } = p.parts;
        sessions.push(session);
        let send_socket = socket.try_clone()?;
        senders.push(Sender::new(
            p.index,
            send_socket,
            bridge,
            outbound,
            p.plan,
            spread,
        ));
        let mut listen = |socket, inbound, map| -> Result<()> {
            let socket = receive_socket(socket, gro)?;
            receiving.push(Receiving {
                stamped: super::rx_time::enable(&socket),
                socket,
                inbound,
                rx: ReceiverResult {
                    index: p.index,
                    conference: p.conference,
                    ..Default::default()
                },
                map,
            });
            Ok(())
        };
        // A separate receiving PeerConnection: the sending one then only gets RTCP,
        // still drained (and counted as other).
        match p.receive {
            Some(r) => {
                listen(socket, inbound, HashMap::new())?;
                sessions.push(r.session);
                listen(r.socket, r.inbound, p.ssrc_map)?;
            }
            None => listen(socket, inbound, HashMap::new())?,
        }
    }
    // Sending runs on its own thread (pinned like this one), so that a burst of
    // receiving does not hold sends back and turn them into bursts for the bridge.
    let pin = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| Some(c.id) == core);
    let sender_live = live.clone();
    let epoch = place.arrive();
    let (epoch_unix_ns, epoch) = (epoch.unix_ns, epoch.at);
    let send_until = epoch + duration;
    for s in &mut senders {
        s.start(epoch);
    }
    let sender = std::thread::Builder::new()
        .name("loadgen-send".into())
        .spawn(move || {
            if let Some(c) = pin {
                core_affinity::set_for_current(c);
            }
            send(&mut senders, epoch, send_until, &sender_live)
        })?;
    let mut batch = Box::<super::rx_time::RxBatch>::default();
    let until = send_until + GRACE;
    let slice = receiving.len().div_ceil(DRAIN_EVERY);
    let mut turn = 0usize;
    loop {
        let turn_start = Instant::now();
        if turn_start >= until {
            break;
        }
        let mut backlog = false;
        let first = turn % DRAIN_EVERY * slice;
        turn += 1;
        for r in receiving.iter_mut().skip(first).take(slice) {
            // Drain what is there, a recvmmsg batch at a time.
            while let Ok(n) = batch.recv(&r.socket) {
                for i in 0..n {
                    let segment = batch.segment(i);
                    let (run, stamp) = batch.get(i);
                    let arrival_ns = match stamp.filter(|_| r.stamped) {
                        Some(t) => t.saturating_sub(epoch_unix_ns),
                        None => epoch.elapsed().as_nanos() as u64,
                    };
                    for pkt in run.chunks_mut(segment) {
                        on_packet(
                            pkt,
                            arrival_ns,
                            &mut r.inbound,
                            &mut r.rx,
                            &r.map,
                            sample,
                            &shared,
                            &live,
                        );
                    }
                }
                if n < super::rx_time::BATCH {
                    break;
                }
                backlog = true;
            }
        }
        let next = turn_start + TURN;
        let now = Instant::now();
        if !backlog && next > now {
            std::thread::sleep(next - now);
        }
    }
    let mut results: Vec<ReceiverResult> = Vec::new();
    for r in receiving {
        match results.last_mut() {
            Some(last) if last.index == r.rx.index => last.merge(r.rx),
            _ => results.push(r.rx),
        }
    }
    let (sent, send_failures) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?;
    drop(sessions);
    let shared = Rc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("receivers still running"))?
        .into_inner();
    Ok(WorkerResult {
        receivers: results,
        sent,
        send_failures,
        latency: shared.latency,
        seconds: shared.seconds,
    })
}

fn send(
    senders: &mut [Sender],
    epoch: Instant,
    until: Instant,
    live: &Live,
) -> (HashMap<u32, u64>, u64) {
    let mut tally = SendTally::default();
    let mut buf = SendBuf::default();
    loop {
        // Sleep to the next packet that is due (at most 1 ms, to notice the end).
        let next = next_due(senders, until).min(Instant::now() + Duration::from_millis(1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        if now >= until {
            break;
        }
        send_due(
            senders,
            now,
            epoch,
            &mut buf,
            &mut tally,
            live,
            &mut send_run,
        );
    }
    (tally.sent, tally.failures)
}

/// Packets sent per SSRC, and sends refused.
#[derive(Default)]
pub(super) struct SendTally {
    pub(super) sent: HashMap<u32, u64>,
    pub(super) failures: u64,
}

/// When the next packet of any sender is due (`until` when none is).
pub(super) fn next_due(senders: &[Sender], until: Instant) -> Instant {
    senders
        .iter()
        .map(|s| {
            if s.plan.video_layers.is_empty() {
                s.next_audio
            } else {
                s.next_audio.min(s.next_frame)
            }
        })
        .min()
        .unwrap_or(until)
}

/// Builds, protects and hands to `emit` (true: sent) every packet due by `now`.
pub(super) fn send_due(
    senders: &mut [Sender],
    now: Instant,
    epoch: Instant,
    buf: &mut SendBuf,
    tally: &mut SendTally,
    live: &Live,
    emit: &mut dyn FnMut(&Sender, &[u8], usize) -> bool,
) {
    for s in senders.iter_mut() {
        while s.next_audio <= now {
            let level = if s.plan.speaker { 0x80 | 20 } else { 127 };
            let seq = s.seq[0];
            s.seq[0] += 1;
            let ssrc = traffic::ssrc(s.index, traffic::AUDIO);
            let packet = Packet {
                pt: traffic::PT_AUDIO,
                marker: true,
                ext_seq: seq,
                ts: (seq as u32).wrapping_mul(960),
                ssrc,
                level,
                payload: s.plan.audio_bytes,
            };
            let ok = match protect(s, &mut buf.scratch, &packet, epoch) {
                Some(n) => emit(s, &buf.scratch[..n], n),
                None => false,
            };
            tally.count(ssrc, ok, live, 1);
            s.next_audio += AUDIO_PERIOD;
        }
        let frame_period = s.plan.frame_period();
        while !s.plan.video_layers.is_empty() && s.next_frame <= now {
            let ts = (s.next_frame - epoch).as_millis() as u32 * 90;
            for li in 0..s.plan.video_layers.len() {
                let (stream, bytes) = s.plan.video_layers[li];
                let ssrc = traffic::ssrc(s.index, stream);
                let packets = bytes.div_ceil(traffic::MAX_VIDEO_PAYLOAD).max(1);
                let mut left = bytes;
                // The frame's packets go out as segmented runs (all alike in size but the
                // last), one send each instead of one per packet.
                let mut run = Run::default();
                for k in 0..packets {
                    let size = left.min(traffic::MAX_VIDEO_PAYLOAD);
                    left -= size;
                    let seq = s.seq[stream as usize];
                    s.seq[stream as usize] += 1;
                    let packet = Packet {
                        pt: traffic::PT_VIDEO,
                        marker: k + 1 == packets,
                        ext_seq: seq,
                        ts,
                        ssrc,
                        level: 0,
                        payload: size,
                    };
                    let Some(n) = protect(s, &mut buf.scratch, &packet, epoch) else {
                        tally.count(ssrc, false, live, 1);
                        continue;
                    };
                    if !run.fits(n) {
                        let ok = emit(s, &buf.run[..run.bytes], run.segment);
                        tally.count(ssrc, ok, live, run.count);
                        run = Run::default();
                    }
                    buf.run[run.bytes..run.bytes + n].copy_from_slice(&buf.scratch[..n]);
                    run.add(n);
                }
                if run.count > 0 {
                    let ok = emit(s, &buf.run[..run.bytes], run.segment);
                    tally.count(ssrc, ok, live, run.count);
                }
            }
            s.next_frame += frame_period;
        }
    }
}

/// Most packets in one segmented send, and most bytes.
const RUN_PACKETS: usize = 64;
const RUN_BYTES: usize = 60_000;

/// The sending side's buffers: one packet being built, and the run it joins.
pub(super) struct SendBuf {
    scratch: Box<[u8]>,
    run: Box<[u8]>,
}

impl Default for SendBuf {
    fn default() -> Self {
        Self {
            scratch: vec![0u8; 2048].into_boxed_slice(),
            run: vec![0u8; RUN_BYTES].into_boxed_slice(),
        }
    }
}

/// A run of packets being gathered for one segmented send.
#[derive(Default)]
struct Run {
    /// Packets in it.
    count: u64,
    /// Bytes in it.
    bytes: usize,
    /// The first packet's length; every other is as long but the last.
    segment: usize,
    /// A shorter packet has joined: it must be the last.
    closed: bool,
}

impl Run {
    fn fits(&self, n: usize) -> bool {
        self.count == 0
            || (!self.closed
                && n <= self.segment
                && (self.count as usize) < RUN_PACKETS
                && self.bytes + n <= RUN_BYTES)
    }

    fn add(&mut self, n: usize) {
        if self.count == 0 {
            self.segment = n;
        } else if n < self.segment {
            self.closed = true;
        }
        self.count += 1;
        self.bytes += n;
    }
}

/// Sends `data` from `s`'s socket to the bridge: one datagram, or with `segment` shorter
/// than `data` a run of datagrams of that size (the last may be shorter) in one
/// `UDP_SEGMENT` message. Should the kernel refuse segmentation, the datagrams go one by
/// one. True when all were sent.
pub(super) fn send_run(s: &Sender, data: &[u8], segment: usize) -> bool {
    traffic::send_segmented(&s.socket, s.bridge, data, segment)
}

impl SendTally {
    fn count(&mut self, ssrc: u32, ok: bool, live: &Live, packets: u64) {
        if ok {
            *self.sent.entry(ssrc).or_default() += packets;
            live.sent.fetch_add(packets, Ordering::Relaxed);
        } else {
            self.failures += packets;
        }
    }
}

/// One RTP packet to build.
struct Packet {
    pt: u8,
    marker: bool,
    ext_seq: u64,
    ts: u32,
    ssrc: u32,
    level: u8,
    payload: usize,
}

/// Builds packet `p` of `s` in `out` and protects it; its length, or None.
fn protect(s: &mut Sender, out: &mut [u8], p: &Packet, epoch: Instant) -> Option<usize> {
    let sent_ns = epoch.elapsed().as_nanos() as u64;
    let len = traffic::write_packet(
        out,
        p.pt,
        p.marker,
        p.ext_seq as u16,
        p.ts,
        p.ssrc,
        p.level,
        sent_ns,
        p.ext_seq,
        p.payload,
    );
    s.outbound.protect_rtp(out, len).ok()
}

/// Counts one received datagram. The stream is the sender's SSRC (through `map` when
/// the SFU rewrites SSRCs). Latency comes from the clear send-time extension; an SFU
/// that strips unknown extensions (Janus) makes every packet decrypted, for the send
/// time in its payload.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_packet(
    pkt: &mut [u8],
    now_ns: u64,
    inbound: &mut Context,
    rx: &mut ReceiverResult,
    map: &HashMap<u32, u32>,
    sample: u64,
    shared: &Rc<RefCell<Shared>>,
    live: &Live,
) {
    let n = pkt.len();
    if n < 12 || !(128..=191).contains(&pkt[0]) || viaduct_bridge::rtp::is_rtcp(pkt) {
        rx.other += 1;
        return;
    }
    let wire_ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
    let rewritten = !map.is_empty();
    let ssrc = map.get(&wire_ssrc).copied().unwrap_or(wire_ssrc);
    live.received.fetch_add(1, Ordering::Relaxed);
    let stream = rx.streams.entry(ssrc).or_default();
    stream.received += 1;
    let mut sent_ns = traffic::send_time(pkt);
    if sent_ns.is_none()
        || stream.received <= ALWAYS_CHECK_FIRST
        || stream.received.is_multiple_of(sample)
    {
        rx.checked += 1;
        match inbound.unprotect_rtp(pkt) {
            Ok(len) => {
                let plain = &mut pkt[..len];
                if rewritten {
                    plain[8..12].copy_from_slice(&ssrc.to_be_bytes());
                }
                match traffic::check_payload(plain, !rewritten) {
                    Some(t) => sent_ns = sent_ns.or(Some(t)),
                    None => rx.payload_mismatches += 1,
                }
            }
            Err(SrtpError::Replayed) => rx.replays += 1,
            Err(_) => rx.auth_failures += 1,
        }
    }
    if let Some(sent_ns) = sent_ns {
        let transit = now_ns as i64 - sent_ns as i64;
        if let Some(last) = stream.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            stream.jitter_ns += (d - stream.jitter_ns) / 16.0;
        }
        stream.last_transit = Some(transit);
        let us = (transit.max(1) as u64 / 1000).clamp(1, MAX_LATENCY_US);
        let mut sh = shared.borrow_mut();
        let _ = sh.latency.record(us);
        let second = (now_ns / 1_000_000_000) as usize;
        while sh.seconds.len() <= second {
            sh.seconds.push(Second {
                received: 0,
                latency: histogram(),
            });
        }
        sh.seconds[second].received += 1;
        let _ = sh.seconds[second].latency.record(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_takes_equal_packets_and_one_shorter_last() {
        let mut run = Run::default();
        for n in [1300, 1300, 1300] {
            assert!(run.fits(n));
            run.add(n);
        }
        assert!(!run.fits(1400), "a longer packet starts a new run");
        assert!(run.fits(200));
        run.add(200);
        assert!(!run.fits(200), "nothing after the shorter last packet");
        assert_eq!((run.count, run.bytes, run.segment), (4, 4100, 1300));
        let mut full = Run::default();
        for _ in 0..RUN_PACKETS {
            full.add(100);
        }
        assert!(!full.fits(100), "at most RUN_PACKETS packets");
    }
}

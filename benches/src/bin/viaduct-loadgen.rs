//! `viaduct-loadgen`: synthetic WebRTC peers against a Viaduct bridge (or, for
//! comparison, a Janus VideoRoom). It allocates conferences as a focus (through the
//! control service's colibri2 API, or directly on the bridge's command socket) or
//! through Janus's HTTP API, connects every peer through ICE and DTLS, sends SRTP
//! audio and video on schedule, and reports forwarded packets per second, loss,
//! latency, jitter and CPU as a table and as JSON; `--find-capacity` searches for the
//! largest load within bounds. Loopback only unless `--allow-remote`; always bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use viaduct_benches::loadgen::capacity::{self, Bounds};
use viaduct_benches::loadgen::engine::{self, PeerKit, Scenario, Target};
use viaduct_benches::loadgen::focus::Focus;
use viaduct_benches::loadgen::janus::{self, Janus};
use viaduct_benches::loadgen::{cpu_seconds, plot, report, steal_ratio, steal_ticks};
use viaduct_bridge::dtls::{self, Identity, Role};

#[derive(Debug, Parser)]
#[command(
    name = "viaduct-loadgen",
    version,
    about = "Synthetic WebRTC peers that load and measure a Viaduct bridge (or a Janus VideoRoom)"
)]
struct Args {
    /// The SFU: `viaduct` (give --control or --bridge-socket) or `janus` (--janus-url).
    #[arg(long, value_enum, default_value_t = TargetKind::Viaduct)]
    target: TargetKind,
    /// Janus's HTTP API, for --target janus.
    #[arg(long, default_value = "http://127.0.0.2:8088/janus")]
    janus_url: String,
    /// Local address of the peers' sockets (default 127.0.0.1; 127.0.0.2 for Janus,
    /// whose libnice on 127.0.0.2 cannot reach 127.0.0.1; with --allow-remote, one that
    /// reaches the bridge, e.g. on a veth in a test namespace).
    #[arg(long, visible_alias = "local")]
    local_ip: Option<std::net::IpAddr>,
    /// The control service to allocate through (colibri2), e.g. http://127.0.0.1:8080.
    #[arg(long, conflicts_with = "bridge_socket")]
    control: Option<String>,
    /// Focus secret for --control.
    #[arg(long, env = "VIADUCT_FOCUS_SECRET", hide_env_values = true)]
    focus_secret: Option<String>,
    /// Allocate directly on the bridge's command socket instead (data-plane-only runs).
    #[arg(long)]
    bridge_socket: Option<PathBuf>,
    /// Conferences.
    #[arg(long, default_value_t = 1)]
    conferences: usize,
    /// Participants per conference.
    #[arg(long, default_value_t = 3)]
    participants: usize,
    /// Participants per conference whose audio carries voice (default: all).
    #[arg(long)]
    audio_senders: Option<usize>,
    /// Video bitrate per participant, kbps (0: audio only).
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Send video as three simulcast layers (10/25/65% of the bitrate).
    #[arg(long)]
    simulcast: bool,
    /// Seconds of sending (per trial with --find-capacity); at most 600.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Participants joined per second during ramp-up (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    join_rate: f64,
    /// Cores for the load generator's threads: a list like 1 or 2,3 (one thread each).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Decrypt and check one received packet in this many (plus the first of each stream).
    #[arg(long, default_value_t = 16)]
    sample: u64,
    /// The bridge's (or Janus's) process id, to report its CPU time.
    #[arg(long)]
    bridge_pid: Option<u32>,
    /// Bridge cores, for per-core figures.
    #[arg(long, default_value_t = 1)]
    bridge_cores: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Plot (SVG or PNG) of throughput and latency over time, or of the capacity search.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Search for the most participants that hold the loss and latency bounds.
    #[arg(long)]
    find_capacity: bool,
    /// With --find-capacity: most participants to try.
    #[arg(long, default_value_t = 1000)]
    max_participants: usize,
    /// With --find-capacity: loss bound (ratio).
    #[arg(long, default_value_t = 0.001)]
    loss_bound: f64,
    /// With --find-capacity: p99 latency bound, ms.
    #[arg(long, default_value_t = 5.0)]
    p99_bound_ms: f64,
    /// Allow a bridge whose candidates are not loopback.
    #[arg(long)]
    allow_remote: bool,
    /// How media goes out and comes in after ICE and DTLS: the peers' kernel sockets, or
    /// one AF_XDP socket on --xdp-iface for all of them (one thread; the build needs the
    /// cargo feature `xdp`; needs --local-ip, the address on that interface).
    #[arg(long, value_enum, default_value_t = LoadIo::Kernel)]
    io: LoadIo,
    /// With --io kernel: the peers take the bridge's segmented runs whole (UDP_GRO), as
    /// if a NIC with segmentation offload split them on the wire. By default the kernel
    /// splits them at delivery, which loopback and veth do on the bridge's core, as the
    /// kernel does at the device for a NIC without that offload.
    #[arg(long)]
    gro: bool,
    /// With --io xdp: the interface the peers' address is on.
    #[arg(long)]
    xdp_iface: Option<String>,
    /// With --io xdp: the receive queue to use.
    #[arg(long, default_value_t = 0)]
    xdp_queue: u32,
    /// With --io xdp: UMEM frames (a power of two).
    #[arg(long, default_value_t = viaduct_bridge::io::xdp::DEFAULT_FRAMES)]
    xdp_frames: u32,
    /// With --io xdp: attach mode (auto, native, generic).
    #[arg(long, default_value = "auto")]
    xdp_mode: viaduct_bridge::io::xdp::XdpMode,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LoadIo {
    /// Each peer's own UDP socket.
    Kernel,
    /// One AF_XDP socket for every peer.
    Xdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TargetKind {
    /// viaduct-bridge, through a focus.
    Viaduct,
    /// Janus's VideoRoom plugin, through its HTTP API.
    Janus,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        // webrtc-dtls warns of every DTLS 1.3 extension in a ClientHello: noise.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,webrtc_dtls=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.participants < 2 {
        bail!("--participants must be at least 2 (someone has to receive)");
    }
    if args.duration == 0 || args.duration > 600 {
        bail!("--duration must be 1-600 seconds");
    }
    let mut target = match (args.target, &args.control, &args.bridge_socket) {
        (TargetKind::Janus, None, None) => {
            let (addr, _) = janus::parse_url(&args.janus_url)?;
            if !args.allow_remote && !addr.ip().is_loopback() {
                bail!(
                    "{} is not loopback: refusing without --allow-remote",
                    args.janus_url
                );
            }
            if args.simulcast {
                bail!("--target janus sends one video layer: drop --simulcast");
            }
            Target::Janus(Box::new(Janus::connect(&args.janus_url)?))
        }
        (TargetKind::Janus, _, _) => {
            bail!("--target janus takes --janus-url, not --control or --bridge-socket")
        }
        (TargetKind::Viaduct, Some(url), None) => {
            let secret = args
                .focus_secret
                .as_deref()
                .context("--control needs --focus-secret (or VIADUCT_FOCUS_SECRET)")?;
            let f = Focus::control(url, secret)?;
            if let Focus::Control { addr, .. } = &f {
                if !args.allow_remote && !addr.ip().is_loopback() {
                    bail!("{url} is not loopback: refusing without --allow-remote");
                }
            }
            Target::Viaduct(f)
        }
        (TargetKind::Viaduct, None, Some(path)) => Target::Viaduct(Focus::bridge(path)?),
        _ => bail!("give --control URL or --bridge-socket PATH (or --target janus)"),
    };
    let local_ip = args.local_ip.unwrap_or(match args.target {
        TargetKind::Viaduct => [127, 0, 0, 1].into(),
        TargetKind::Janus => [127, 0, 0, 2].into(),
    });
    let xdp = match args.io {
        LoadIo::Kernel => None,
        LoadIo::Xdp => {
            if args.xdp_iface.is_none() || args.local_ip.is_none() {
                bail!("--io xdp needs --xdp-iface and --local-ip (the address on it)");
            }
            if args.target == TargetKind::Janus {
                bail!("--io xdp is for --target viaduct");
            }
            let config = viaduct_bridge::io::xdp::XdpConfig {
                iface: args.xdp_iface.clone(),
                queue: args.xdp_queue,
                frames: args.xdp_frames,
                mode: args.xdp_mode,
            };
            config.validate().map_err(anyhow::Error::msg)?;
            Some(config)
        }
    };
    let scenario = Scenario {
        conferences: args.conferences.max(1),
        participants: args.participants,
        audio_senders: args
            .audio_senders
            .unwrap_or(args.participants)
            .min(args.participants),
        video_kbps: args.video_kbps,
        fps: args.fps.clamp(1, 120),
        simulcast: args.simulcast,
        duration: Duration::from_secs(args.duration),
        join_rate: args.join_rate.max(0.0),
        cores: args.cores.clone(),
        sample: args.sample.max(1),
        allow_remote: args.allow_remote,
        progress: !args.quiet,
        xdp,
        gro: args.gro,
    };
    let identity = Arc::new(Identity::generate()?);
    let kit = PeerKit {
        client: dtls::spawn(identity.clone(), Role::Client, "loadgen-dtls")?,
        server: dtls::spawn(identity.clone(), Role::Server, "loadgen-dtls-s")?,
        identity: identity.clone(),
        local_ip,
    };
    let run_id = format!("lg{}", std::process::id());
    let mut trial_no = 0;
    let mut trial = |conferences: usize| -> Result<report::Report> {
        trial_no += 1;
        let s = Scenario {
            conferences,
            ..scenario.clone()
        };
        let prefix = format!("{run_id}-t{trial_no}");
        let peers = engine::connect(&mut target, &s, &prefix, &kit);
        let result = peers.and_then(|peers| {
            let bridge0 = args.bridge_pid.and_then(|p| cpu_seconds(&p.to_string()));
            let self0 = cpu_seconds("self");
            let steal0 = steal_ticks();
            let r = engine::run(peers, &s)?;
            let steal = steal0
                .zip(steal_ticks())
                .and_then(|(a, b)| steal_ratio(a, b));
            let bridge = bridge0
                .zip(args.bridge_pid.and_then(|p| cpu_seconds(&p.to_string())))
                .map(|(a, b)| b - a);
            let own = self0.zip(cpu_seconds("self")).map(|(a, b)| b - a);
            let mut report = report::build(&r, &s, bridge, own);
            report.machine_steal_ratio = steal;
            Ok(report)
        });
        for c in 0..conferences {
            target.expire_conference(&format!("{prefix}-{c}"));
        }
        let r = result?;
        if args.find_capacity && !args.quiet {
            eprintln!(
                "trial {trial_no}: {} participants, loss {:.4}%, p99 {:.3} ms, {:.0} pps, VM steal {:.1}%",
                r.participants,
                r.loss_ratio * 100.0,
                r.latency_ms.p99,
                r.forwarded_pps,
                100.0 * r.machine_steal_ratio.unwrap_or(0.0)
            );
        }
        Ok(r)
    };
    let report = if args.find_capacity {
        let bounds = Bounds {
            loss: args.loss_bound,
            p99_ms: args.p99_bound_ms,
            max_conferences: (args.max_participants / args.participants).max(1),
            max_trials: 20,
            bridge_cores: args.bridge_cores,
        };
        let (cap, mut best) =
            capacity::search(scenario.conferences, args.participants, bounds, &mut trial)?;
        best.capacity = Some(cap);
        best
    } else {
        trial(scenario.conferences)?
    };
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot::write(path, &report)?;
    }
    // A run whose packets fail authentication or do not match is a failed run.
    if report.auth_failures > 0 || report.payload_mismatches > 0 {
        bail!(
            "{} packets failed authentication and {} did not match their payload",
            report.auth_failures,
            report.payload_mismatches
        );
    }
    Ok(())
}

//! `relay-pps`: a first forwarded-packets-per-second figure for one pinned bridge
//! worker. Starts `viaduct-bridge` (release build) pinned to one core with the chosen
//! backend, connects a conference of synthetic peers through ICE/DTLS from this process
//! (pinned to another core), then has every peer send SRTP as fast as one thread can,
//! and reads the bridge's own counters and CPU time. Loopback only; bounded in time.
//!
//! Usage: `relay-pps [--backend uring|mmsg] [--participants 10] [--seconds 5]
//!         [--bridge-core 0] [--load-core 1] [--payload 1000] [--bridge PATH]`

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use viaduct_bridge::command::client::Client as Link;
use viaduct_bridge::command::protocol::{Event, Reply, RequestBody, StatsSnapshot};
use viaduct_bridge::dtls::{self, Identity, Role};
use viaduct_bridge::peer::Peer;

struct Args {
    backend: String,
    participants: usize,
    seconds: u64,
    bridge_core: usize,
    load_core: usize,
    payload: usize,
    bridge: PathBuf,
}

fn args() -> Result<Args> {
    let mut a = Args {
        backend: "uring".into(),
        participants: 10,
        seconds: 5,
        bridge_core: 0,
        load_core: 1,
        payload: 1000,
        bridge: PathBuf::from("target/release/viaduct-bridge"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--backend" => a.backend = v,
            "--participants" => a.participants = v.parse()?,
            "--seconds" => a.seconds = v.parse::<u64>()?.clamp(1, 60),
            "--bridge-core" => a.bridge_core = v.parse()?,
            "--load-core" => a.load_core = v.parse()?,
            "--payload" => a.payload = v.parse::<usize>()?.clamp(16, 1200),
            "--bridge" => a.bridge = v.into(),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.participants < 2 {
        bail!("--participants must be at least 2");
    }
    Ok(a)
}

struct Bridge(Child);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User+system CPU seconds of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // Clock ticks: USER_HZ is 100 on Linux whatever the kernel's HZ.
    Ok(ticks / 100.0)
}

fn stats(link: &mut Link) -> Result<StatsSnapshot> {
    Ok(link.stats()?)
}

fn main() -> Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("viaduct-relay-pps-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("bridge.sock");
    let child = Command::new(&a.bridge)
        .args([
            "--cores",
            &format!("{0}-{0}", a.bridge_core),
            "--bind",
            "127.0.0.1",
            "--port-base",
            "0",
        ])
        .args(["--io-backend", &a.backend, "--log", "warn", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release)",
                a.bridge.display()
            )
        })?;
    let pid = child.id();
    let _bridge = Bridge(child);
    if let Some(core) = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == a.load_core)
    {
        core_affinity::set_for_current(core);
    }
    let mut link = Link::connect(&socket, Duration::from_secs(20))?;
    link.request(RequestBody::CreateConference {
        conference: "pps".into(),
    })?;
    let identity = Arc::new(Identity::generate()?);
    let dtls = dtls::spawn(identity.clone(), Role::Client, "peer-dtls")?;
    let mut peers = Vec::new();
    for i in 0..a.participants {
        let endpoint = format!("p{i}");
        let Reply::EndpointCreated(alloc) = link.request(RequestBody::CreateEndpoint {
            conference: "pps".into(),
            endpoint: endpoint.clone(),
        })?
        else {
            bail!("no allocation");
        };
        let mut peer = Peer::bind("127.0.0.1:0".parse()?, dtls.clone(), identity.clone())?;
        link.request(RequestBody::UpdateEndpoint {
            conference: "pps".into(),
            endpoint: endpoint.clone(),
            ice: Some(peer.ice_credentials()),
            fingerprint: Some(peer.fingerprint()),
            sources: None,
            force_mute: None,
        })?;
        peer.connect(&alloc, Duration::from_secs(10))?;
        link.wait_event(
            |e| matches!(e, Event::EndpointConnected { endpoint: x, .. } if *x == endpoint),
        )?;
        peers.push(peer);
    }
    let payload = vec![0x5au8; a.payload];
    let sockets: Vec<UdpSocket> = peers
        .iter()
        .map(|p| p.socket().try_clone())
        .collect::<Result<_, _>>()?;
    let bridge_addr = peers[0].bridge_addr().context("no bridge address")?;
    // Receivers are not drained: their sockets overflow, which the kernel drops at the
    // receiving socket. Forwarded = what the bridge's sends handed to the kernel.
    let before = stats(&mut link)?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut sent = 0u64;
    let deadline = t0 + Duration::from_secs(a.seconds);
    let mut seq = 0u16;
    while Instant::now() < deadline {
        for _ in 0..64 {
            seq = seq.wrapping_add(1);
            for (i, p) in peers.iter_mut().enumerate() {
                let pkt =
                    p.protect_rtp(0x100 + i as u32, seq, u32::from(seq) * 90, false, &payload)?;
                let _ = sockets[i].send_to(&pkt, bridge_addr);
                sent += 1;
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_seconds(pid)? - cpu0;
    let after = stats(&mut link)?;
    let fwd = after.totals.packets_out - before.totals.packets_out;
    let inn = after.totals.rtp_in - before.totals.rtp_in;
    let w = &after.workers[0];
    let syscalls = w.syscalls - before.workers[0].syscalls;
    let turns = w.loop_turns - before.workers[0].loop_turns;
    let d = after.totals.drops;
    println!(
        "backend={} participants={} sent={} wall={:.2}s rtp_in={} forwarded={} forwarded_pps={:.0} bridge_cpu={:.2}s ({:.0}% of one core) fwd_per_cpu_s={:.0} syscalls={} ({:.3}/fwd) loop_turns={} drops(auth={},replay={},queue={},send={})",
        after.io_backend, a.participants, sent, wall, inn, fwd, fwd as f64 / wall, cpu, 100.0 * cpu / wall,
        fwd as f64 / cpu.max(1e-9), syscalls, syscalls as f64 / fwd.max(1) as f64, turns,
        d.srtp_auth, d.srtp_replay, d.queue_full, d.send_failed
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

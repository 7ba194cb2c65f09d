//! Starting the bridge: the DTLS identity and thread, one pinned worker thread per
//! configured core (each binding its own socket and opening its backend), and the
//! command socket. The binary calls [`start`]; so can tests.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crossbeam::channel::{bounded, Sender};

use crate::command::protocol::Counters;
use crate::command::server::{Server, ServerConfig, WorkerLink};
use crate::config::Config;
use crate::dtls::{self, Identity, Role};
use crate::io;
use crate::worker::{Command, Worker, WorkerState, DTLS_OUTPUT_QUEUE};

/// Commands queued for one worker.
const COMMAND_QUEUE: usize = 1024;

/// Events queued from all workers to the command server.
const EVENT_QUEUE: usize = 4096;

/// A running bridge.
pub struct Running {
    workers: Vec<(Sender<Command>, JoinHandle<()>)>,
    /// The workers' backend (`uring`, `mmsg`, `xdp` or `xdp-zc`).
    pub io_backend: String,
    /// The workers' UDP ports, by index.
    pub ports: Vec<u16>,
    /// The command server.
    pub server: Server,
    /// The DTLS certificate fingerprint.
    pub fingerprint: String,
    /// Per worker, its loop-turn count, published on every timer tick (see
    /// [`Worker::with_heartbeat`]): a watchdog reads these.
    pub heartbeats: Vec<Arc<AtomicU64>>,
}

/// What [`Running::stop`] found and did.
#[derive(Clone, Debug, Default)]
pub struct StopReport {
    /// Conferences expired at shutdown.
    pub conferences: usize,
    /// Endpoints expired at shutdown.
    pub endpoints: usize,
    /// The workers' counters summed (from the last stats before stopping).
    pub totals: Counters,
    /// Workers that did not answer in time.
    pub unresponsive: usize,
}

/// How long [`Running::stop`] waits for one worker's answer.
const STOP_WAIT: Duration = Duration::from_secs(2);

impl Running {
    /// A clean stop: expires every conference (and so every endpoint), collects each
    /// worker's final counters, then stops the workers and waits for them. A worker that
    /// does not answer within a bounded time is counted and left to the process exit.
    pub fn stop(self) -> StopReport {
        let mut report = StopReport::default();
        for (tx, _) in &self.workers {
            let (reply, answer) = bounded(1);
            if tx.send(Command::ListState { reply }).is_err() {
                report.unresponsive += 1;
                continue;
            }
            let Ok(conferences) = answer.recv_timeout(STOP_WAIT) else {
                report.unresponsive += 1;
                continue;
            };
            for conference in conferences {
                let (reply, answer) = bounded(1);
                let sent = tx.send(Command::ExpireConference {
                    conference: conference.conference.clone(),
                    reply,
                });
                if sent.is_ok() && matches!(answer.recv_timeout(STOP_WAIT), Ok(Ok(()))) {
                    report.conferences += 1;
                    report.endpoints += conference.endpoints.len();
                }
            }
            let (reply, answer) = bounded(1);
            if tx.send(Command::Stats { reply }).is_ok() {
                if let Ok((w, _, _)) = answer.recv_timeout(STOP_WAIT) {
                    report.totals.add(&w.counters);
                }
            }
        }
        let responsive = report.unresponsive == 0;
        for (tx, _) in &self.workers {
            let _ = tx.send(Command::Shutdown);
        }
        if responsive {
            for (_, h) in self.workers {
                let _ = h.join();
            }
        }
        report
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(self) {
        for (tx, _) in &self.workers {
            let _ = tx.send(Command::Shutdown);
        }
        for (_, h) in self.workers {
            let _ = h.join();
        }
    }
}

/// Starts everything `config` describes.
pub fn start(config: &Config) -> Result<Running> {
    let identity = match &config.certificate {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading certificate {}", path.display()))?;
            Identity::from_pem(&pem)
                .with_context(|| format!("loading certificate {}", path.display()))?
        }
        None => Identity::generate().context("generating the DTLS certificate")?,
    };
    let identity = Arc::new(identity);
    let fingerprint = identity.fingerprint().to_owned();
    let dtls = dtls::spawn(identity, Role::Server, "dtls").context("starting the DTLS thread")?;
    let (event_tx, event_rx) = bounded(EVENT_QUEUE);
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let opener = io::Opener::prepare(
        config.io_backend,
        &config.xdp,
        config.bind,
        config.cores.workers(),
    )
    .with_context(|| format!("preparing the {} I/O backend", config.io_backend))?;

    let mut workers = Vec::new();
    let mut links = Vec::new();
    let mut ports = Vec::new();
    let mut backend_name = String::new();
    let mut heartbeats = Vec::new();
    for i in 0..config.cores.workers() {
        let addr = config.worker_addr(i);
        let socket = io::bind_udp(addr, config.socket_buffer)
            .with_context(|| format!("binding worker {i} to {addr}"))?;
        let port = socket.local_addr()?.port();
        let (cmd_tx, cmd_rx) = bounded(COMMAND_QUEUE);
        let (dtls_tx, dtls_rx) = bounded(DTLS_OUTPUT_QUEUE);
        let (ready_tx, ready_rx) = bounded(1);
        let state = WorkerState::new(
            i,
            Some(dtls.clone()),
            dtls_tx,
            Some(event_tx.clone()),
            config.consent_timeout,
        );
        let core = config.cores.core_of(i);
        let pin = config
            .pin
            .then(|| core_ids.iter().find(|c| c.id == core).copied())
            .flatten();
        if config.pin && pin.is_none() {
            tracing::warn!(worker = i, core, "no such core; worker not pinned");
        }
        let choice = config.io_backend;
        let opener = opener.clone();
        let heartbeat = Arc::new(AtomicU64::new(0));
        let beat = heartbeat.clone();
        heartbeats.push(heartbeat);
        let handle = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                if let Some(core) = pin {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(worker = i, "pinning failed");
                    }
                }
                // The backend is opened in the thread that uses it (io_uring's
                // SINGLE_ISSUER wants that).
                let backend = match opener.open(i, socket) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(backend.kind()));
                Worker::new(state, backend, cmd_rx, dtls_rx)
                    .with_heartbeat(beat)
                    .run();
            })
            .with_context(|| format!("spawning worker {i}"))?;
        let kind = ready_rx
            .recv()
            .context("worker died while starting")?
            .with_context(|| format!("opening the {choice} backend for worker {i}"))?;
        backend_name = kind.to_string();
        tracing::info!(worker = i, %addr, port, core = ?pin.map(|c| c.id), backend = %backend_name, "worker started");
        links.push(WorkerLink {
            commands: cmd_tx.clone(),
            port,
        });
        ports.push(port);
        workers.push((cmd_tx, handle));
    }
    drop(event_tx);
    let server = Server::start(
        &config.socket,
        ServerConfig {
            advertise: config.candidate_addresses(),
            fingerprint: fingerprint.clone(),
            io_backend: backend_name.clone(),
        },
        links,
        event_rx,
    )
    .with_context(|| format!("opening the command socket {}", config.socket.display()))?;
    tracing::info!(socket = %config.socket.display(), %fingerprint, "command socket ready");
    Ok(Running {
        workers,
        io_backend: backend_name,
        ports,
        server,
        fingerprint,
        heartbeats,
    })
}

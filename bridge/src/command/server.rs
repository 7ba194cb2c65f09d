//! The bridge link's server: a Unix socket that reads one JSON request a line, asks the
//! workers, answers with the request's id, and broadcasts worker events to every
//! connected controller. A bad line gets an error response; the connection carries on.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{bounded, unbounded, Receiver, Sender};
use rand::distributions::{Alphanumeric, DistString};

use super::protocol::{
    Candidate, EndpointAllocation, ErrorCode, Event, Fingerprint, FromBridge, IceCredentials,
    Reply, Request, RequestBody, StateSnapshot, StatsSnapshot, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use crate::worker::{Command, CommandError};

/// How long the server waits for a worker to answer a command.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// The command socket's file mode: read/write for its owner and group only.
pub const SOCKET_MODE: u32 = 0o660;

/// Lines queued for one controller before it is considered stuck and disconnected.
const WRITER_QUEUE: usize = 4096;

/// RFC 8445 5.1.2.1 host candidate priority: type preference 126, local preference
/// 65535, component 1.
pub const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// The server's view of a worker.
#[derive(Clone, Debug)]
pub struct WorkerLink {
    /// Its command channel.
    pub commands: Sender<Command>,
    /// Its UDP port.
    pub port: u16,
}

/// What the server needs to know to allocate endpoints.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses put in host candidates.
    pub advertise: Vec<IpAddr>,
    /// The DTLS certificate's SHA-256 fingerprint.
    pub fingerprint: String,
    /// The workers' backend name.
    pub io_backend: String,
}

type ConnId = u64;

enum HubMsg {
    Open {
        conn: ConnId,
        writer: Sender<String>,
    },
    Line {
        conn: ConnId,
        line: Result<String, String>,
    },
    Closed {
        conn: ConnId,
    },
}

struct ConferenceEntry {
    worker: usize,
    endpoints: HashSet<String>,
}

/// The server: listens, and runs the hub that owns the registry.
pub struct Server {
    path: PathBuf,
}

impl Server {
    /// Binds `path` (replacing a stale socket file) and starts the listener and hub
    /// threads. `events` are the workers' events; `dtls_stats` reports handshake
    /// outcomes for the stats request.
    pub fn start(
        path: &Path,
        config: ServerConfig,
        workers: Vec<WorkerLink>,
        events: Receiver<Event>,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        // Owner and group (the control service's, under systemd) may connect; no one else.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        let (hub_tx, hub_rx) = unbounded();
        let hub = Hub {
            config: Arc::new(config),
            workers,
            registry: HashMap::new(),
            writers: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("command-hub".into())
            .spawn(move || hub.run(hub_rx, events))?;
        std::thread::Builder::new()
            .name("command-listen".into())
            .spawn(move || accept_loop(listener, hub_tx))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn accept_loop(listener: UnixListener, hub: Sender<HubMsg>) {
    let mut next: ConnId = 1;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "command socket accept failed");
                continue;
            }
        };
        let conn = next;
        next += 1;
        if let Err(e) = serve(conn, stream, hub.clone()) {
            tracing::warn!(error = %e, "could not serve a controller connection");
        }
    }
}

fn serve(conn: ConnId, stream: UnixStream, hub: Sender<HubMsg>) -> std::io::Result<()> {
    let mut write_half = stream.try_clone()?;
    let (wtx, wrx) = bounded::<String>(WRITER_QUEUE);
    std::thread::Builder::new()
        .name(format!("command-w{conn}"))
        .spawn(move || {
            for line in wrx {
                if write_half.write_all(line.as_bytes()).is_err()
                    || write_half.write_all(b"\n").is_err()
                {
                    break;
                }
            }
            let _ = write_half.shutdown(std::net::Shutdown::Both);
        })?;
    let _ = hub.send(HubMsg::Open { conn, writer: wtx });
    std::thread::Builder::new()
        .name(format!("command-r{conn}"))
        .spawn(move || {
            tracing::info!(conn, "controller connected");
            let mut reader = BufReader::new(stream);
            while let Ok(Some(line)) = read_line(&mut reader) {
                if hub.send(HubMsg::Line { conn, line }).is_err() {
                    break;
                }
            }
            tracing::info!(conn, "controller disconnected");
            let _ = hub.send(HubMsg::Closed { conn });
        })?;
    Ok(())
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; a longer one is skipped to its end and
/// reported as `Err`. `Ok(None)` at end of stream.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
        // Skip the rest of the oversized line.
        loop {
            let mut rest = Vec::new();
            let m = reader
                .by_ref()
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut rest)?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(format!(
            "line longer than {MAX_LINE_BYTES} bytes"
        ))));
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(Some(Ok(s.trim_end().to_owned()))),
        Err(_) => Ok(Some(Err("line is not UTF-8".to_owned()))),
    }
}

struct Hub {
    config: Arc<ServerConfig>,
    workers: Vec<WorkerLink>,
    registry: HashMap<String, ConferenceEntry>,
    writers: HashMap<ConnId, Sender<String>>,
}

impl Hub {
    fn run(mut self, rx: Receiver<HubMsg>, events: Receiver<Event>) {
        loop {
            crossbeam::select! {
                recv(rx) -> msg => match msg {
                    Ok(HubMsg::Open { conn, writer }) => { self.writers.insert(conn, writer); }
                    Ok(HubMsg::Closed { conn }) => { self.writers.remove(&conn); }
                    Ok(HubMsg::Line { conn, line }) => {
                        let reply = match line {
                            Ok(l) if l.trim().is_empty() => continue,
                            Ok(l) => self.on_line(&l),
                            Err(e) => FromBridge::Error { id: None, code: ErrorCode::BadRequest, message: e },
                        };
                        self.send_to(conn, &reply);
                    }
                    Err(_) => return,
                },
                recv(events) -> ev => match ev {
                    Ok(event) => self.on_event(event),
                    Err(_) => return,
                },
            }
        }
    }

    fn send_to(&mut self, conn: ConnId, msg: &FromBridge) {
        let Ok(line) = serde_json::to_string(msg) else {
            return;
        };
        if let Some(w) = self.writers.get(&conn) {
            if w.try_send(line).is_err() {
                tracing::warn!(conn, "controller not reading; dropping it");
                self.writers.remove(&conn);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        if let Event::EndpointExpired {
            conference,
            endpoint,
            ..
        } = &event
        {
            if let Some(c) = self.registry.get_mut(conference) {
                c.endpoints.remove(endpoint);
            }
        }
        let Ok(line) = serde_json::to_string(&FromBridge::Event { event }) else {
            return;
        };
        self.writers.retain(|_, w| w.try_send(line.clone()).is_ok());
    }

    fn on_line(&mut self, line: &str) -> FromBridge {
        let request: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                let id = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
                return FromBridge::Error {
                    id,
                    code: ErrorCode::BadRequest,
                    message: format!("bad request: {e}"),
                };
            }
        };
        let id = request.id;
        match self.on_request(request.body) {
            Ok(result) => FromBridge::Response { id, result },
            Err((code, message)) => FromBridge::Error {
                id: Some(id),
                code,
                message,
            },
        }
    }

    fn ask<T>(
        &self,
        worker: usize,
        make: impl FnOnce(Sender<T>) -> Command,
    ) -> Result<T, CommandError> {
        let (tx, rx) = bounded(1);
        let link = self
            .workers
            .get(worker)
            .ok_or((ErrorCode::Unavailable, format!("no worker {worker}")))?;
        link.commands
            .send(make(tx))
            .map_err(|_| (ErrorCode::Unavailable, format!("worker {worker} stopped")))?;
        rx.recv_timeout(WORKER_TIMEOUT).map_err(|_| {
            (
                ErrorCode::Unavailable,
                format!("worker {worker} did not answer"),
            )
        })
    }

    fn conference(&self, id: &str) -> Result<&ConferenceEntry, CommandError> {
        self.registry
            .get(id)
            .ok_or_else(|| (ErrorCode::ConferenceNotFound, format!("no conference {id}")))
    }

    fn on_request(&mut self, body: RequestBody) -> Result<Reply, CommandError> {
        match body {
            RequestBody::Hello => Ok(Reply::Hello {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                io_backend: self.config.io_backend.clone(),
                workers: self.workers.len(),
            }),
            RequestBody::CreateConference { conference } => {
                if conference.is_empty() || conference.len() > 256 {
                    return Err((
                        ErrorCode::InvalidArgument,
                        "conference id must be 1-256 bytes".into(),
                    ));
                }
                if self.registry.contains_key(&conference) {
                    return Err((
                        ErrorCode::ConferenceAlreadyExists,
                        format!("conference {conference} exists"),
                    ));
                }
                let worker = self.least_loaded();
                let c = conference.clone();
                self.ask(worker, |reply| Command::CreateConference {
                    conference: c,
                    reply,
                })??;
                self.registry.insert(
                    conference.clone(),
                    ConferenceEntry {
                        worker,
                        endpoints: HashSet::new(),
                    },
                );
                tracing::info!(%conference, worker, "conference created");
                Ok(Reply::ConferenceCreated { conference, worker })
            }
            RequestBody::CreateEndpoint {
                conference,
                endpoint,
            } => {
                if endpoint.is_empty() || endpoint.len() > 256 {
                    return Err((
                        ErrorCode::InvalidArgument,
                        "endpoint id must be 1-256 bytes".into(),
                    ));
                }
                let entry = self.conference(&conference)?;
                if entry.endpoints.contains(&endpoint) {
                    return Err((
                        ErrorCode::EndpointAlreadyExists,
                        format!("endpoint {endpoint} exists"),
                    ));
                }
                let worker = entry.worker;
                let allocation = self.allocate(&conference, &endpoint, worker);
                let a = allocation.clone();
                self.ask(worker, |reply| Command::CreateEndpoint {
                    allocation: a,
                    reply,
                })??;
                if let Some(c) = self.registry.get_mut(&conference) {
                    c.endpoints.insert(endpoint);
                }
                Ok(Reply::EndpointCreated(allocation))
            }
            RequestBody::UpdateEndpoint {
                conference,
                endpoint,
                ice,
                fingerprint,
                sources,
                force_mute,
            } => {
                let worker = self.conference(&conference)?.worker;
                self.ask(worker, |reply| Command::UpdateEndpoint {
                    conference,
                    endpoint,
                    ice,
                    fingerprint,
                    sources,
                    force_mute,
                    reply,
                })??;
                Ok(Reply::Done)
            }
            RequestBody::ExpireEndpoint {
                conference,
                endpoint,
            } => {
                let worker = self.conference(&conference)?.worker;
                let (c, e) = (conference.clone(), endpoint.clone());
                self.ask(worker, |reply| Command::ExpireEndpoint {
                    conference: c,
                    endpoint: e,
                    reply,
                })??;
                if let Some(c) = self.registry.get_mut(&conference) {
                    c.endpoints.remove(&endpoint);
                }
                Ok(Reply::Done)
            }
            RequestBody::ExpireConference { conference } => {
                let worker = self.conference(&conference)?.worker;
                let c = conference.clone();
                self.ask(worker, |reply| Command::ExpireConference {
                    conference: c,
                    reply,
                })??;
                self.registry.remove(&conference);
                tracing::info!(%conference, "conference expired");
                Ok(Reply::Done)
            }
            RequestBody::Stats => Ok(Reply::Stats(Box::new(self.stats()?))),
            RequestBody::ListState => {
                let mut conferences = Vec::new();
                for w in 0..self.workers.len() {
                    conferences.extend(self.ask(w, |reply| Command::ListState { reply })?);
                }
                conferences.sort_by(|a, b| a.conference.cmp(&b.conference));
                Ok(Reply::State(StateSnapshot { conferences }))
            }
        }
    }

    fn stats(&self) -> Result<StatsSnapshot, CommandError> {
        let mut snap = StatsSnapshot {
            io_backend: self.config.io_backend.clone(),
            ..Default::default()
        };
        for w in 0..self.workers.len() {
            let (ws, eps, (ok, failed)) = self.ask(w, |reply| Command::Stats { reply })?;
            snap.conferences += ws.conferences;
            snap.endpoints += ws.endpoints;
            snap.totals.add(&ws.counters);
            snap.dtls_succeeded += ok;
            snap.dtls_failed += failed;
            snap.workers.push(ws);
            snap.endpoint_stats.extend(eps);
        }
        Ok(snap)
    }

    fn least_loaded(&self) -> usize {
        let mut load = vec![(0usize, 0usize); self.workers.len()];
        for c in self.registry.values() {
            if let Some(l) = load.get_mut(c.worker) {
                l.0 += c.endpoints.len();
                l.1 += 1;
            }
        }
        (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0)
    }

    fn allocate(&self, conference: &str, endpoint: &str, worker: usize) -> EndpointAllocation {
        let mut rng = rand::thread_rng();
        let port = self.workers.get(worker).map(|w| w.port).unwrap_or(0);
        let candidates = self
            .config
            .advertise
            .iter()
            .enumerate()
            .map(|(i, ip)| Candidate {
                foundation: format!("{}", i + 1),
                component: 1,
                protocol: "udp".into(),
                priority: HOST_PRIORITY - i as u32,
                ip: ip.to_string(),
                port,
                typ: "host".into(),
            })
            .collect();
        EndpointAllocation {
            conference: conference.to_owned(),
            endpoint: endpoint.to_owned(),
            worker,
            ice: IceCredentials {
                ufrag: Alphanumeric.sample_string(&mut rng, 8),
                pwd: Alphanumeric.sample_string(&mut rng, 24),
            },
            fingerprint: Fingerprint {
                hash: "sha-256".into(),
                value: self.config.fingerprint.clone(),
                setup: Some("passive".into()),
            },
            candidates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_and_skipped() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"id\":1}\n");
        let mut r = BufReader::new(&input[..]);
        assert!(matches!(read_line(&mut r), Ok(Some(Err(_)))));
        assert_eq!(
            read_line(&mut r).unwrap(),
            Some(Ok("{\"id\":1}".to_owned()))
        );
        assert_eq!(read_line(&mut r).unwrap(), None);
    }
}

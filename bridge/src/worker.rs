//! One data-plane worker: a pinned thread that owns a UDP socket (through an I/O
//! backend), reads the clock once per batch, and moves every datagram through
//! classify → endpoint (ICE / DTLS / SRTP) → forwarding policy → encrypt → send batch.
//! [`WorkerState`] is the per-packet logic without the socket, so tests and benchmarks
//! drive it directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};

use crate::command::protocol::{
    ConferenceState, EndpointAllocation, EndpointState, EndpointStats, ErrorCode, Event,
    Fingerprint, ForceMute, IceCredentials, MediaKind, MediaSource, WorkerStats,
};
use crate::conference::Conference;
use crate::dtls::{self, DtlsHandle, SessionId};
use crate::endpoint::{DtlsState, Endpoint, EARLY_DTLS_RECORDS};
use crate::forward::{self, RtcpRoute};
use crate::ice::{lite, stun};
use crate::io::{Backend, TxBatch};
use crate::srtp::{SessionKeys, SrtpError};
use crate::{rtcp, rtp};

/// Longest a worker sleeps in its backend when idle: bounds how late it notices a
/// command or a timer.
pub const TICK: Duration = Duration::from_millis(10);

/// How often consent and handshake timers are checked.
const TIMER_PERIOD: Duration = Duration::from_millis(250);

/// Send slots per worker: one receive batch (64) fanned out to a 50-person conference
/// fits, with room for STUN and DTLS.
pub const TX_SLOTS: usize = 4096;

/// Sender reports of one RTCP compound noted for round-trip times (a sender reports
/// on each of its streams; more are relayed but not noted).
const MAX_SENDER_REPORTS: usize = 4;

/// DTLS outputs (records, keys) a worker buffers before the DTLS thread's sends drop.
pub const DTLS_OUTPUT_QUEUE: usize = 1024;

/// A worker's result for a failed command.
pub type CommandError = (ErrorCode, String);

/// What the command server asks of a worker.
pub enum Command {
    /// Place a conference here.
    CreateConference {
        /// Its id.
        conference: String,
        /// Answer.
        reply: Sender<Result<(), CommandError>>,
    },
    /// Create an endpoint with the given allocation.
    CreateEndpoint {
        /// What was allocated for it (ids, ICE credentials, candidates).
        allocation: EndpointAllocation,
        /// Answer.
        reply: Sender<Result<(), CommandError>>,
    },
    /// Remote side of an endpoint.
    UpdateEndpoint {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// Remote ICE credentials.
        ice: Option<IceCredentials>,
        /// Remote certificate fingerprint.
        fingerprint: Option<Fingerprint>,
        /// Media sources.
        sources: Option<Vec<MediaSource>>,
        /// Force-mute.
        force_mute: Option<ForceMute>,
        /// Answer.
        reply: Sender<Result<(), CommandError>>,
    },
    /// Remove an endpoint.
    ExpireEndpoint {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// Answer.
        reply: Sender<Result<(), CommandError>>,
    },
    /// Remove a conference.
    ExpireConference {
        /// Conference id.
        conference: String,
        /// Answer.
        reply: Sender<Result<(), CommandError>>,
    },
    /// Counters.
    Stats {
        /// Answer.
        reply: Sender<(WorkerStats, Vec<EndpointStats>, (u64, u64))>,
    },
    /// Everything held.
    ListState {
        /// Answer.
        reply: Sender<Vec<ConferenceState>>,
    },
    /// Leave the loop.
    Shutdown,
}

/// A fast hasher for the per-packet address lookup (FNV-1a over the key's bytes);
/// the keys are socket addresses, not attacker-chosen in bulk (unbound sources are
/// looked up but never inserted).
#[derive(Default, Clone, Copy)]
pub struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FnvHasher>>;

/// The per-packet state of one worker: endpoints, conferences and counters. Takes
/// `now` and bytes, queues what to send in a [`TxBatch`]; owns no socket.
pub struct WorkerState {
    index: usize,
    endpoints: Vec<Option<Endpoint>>,
    free_slots: Vec<usize>,
    conferences: Vec<Option<Conference>>,
    conference_ids: HashMap<String, usize>,
    by_addr: FastMap<SocketAddr, usize>,
    by_ufrag: HashMap<Vec<u8>, usize>,
    by_serial: HashMap<SessionId, usize>,
    next_serial: SessionId,
    dtls: Option<DtlsHandle>,
    dtls_out: Sender<dtls::Output>,
    events: Option<Sender<Event>>,
    consent_timeout: Duration,
    /// The worker's own counters (all traffic, including drops with no endpoint).
    pub counters: crate::command::protocol::Counters,
    /// DTLS handshakes completed and failed.
    pub dtls_results: (u64, u64),
}

impl WorkerState {
    /// A worker's state. `dtls` is the handshake thread (None in benchmarks that
    /// install keys directly); `dtls_out` is where that thread answers; `events` is
    /// where endpoint events go.
    pub fn new(
        index: usize,
        dtls: Option<DtlsHandle>,
        dtls_out: Sender<dtls::Output>,
        events: Option<Sender<Event>>,
        consent_timeout: Duration,
    ) -> Self {
        Self {
            index,
            endpoints: Vec::with_capacity(1024),
            free_slots: Vec::with_capacity(1024),
            conferences: Vec::with_capacity(256),
            conference_ids: HashMap::with_capacity(256),
            by_addr: FastMap::with_capacity_and_hasher(1024, Default::default()),
            by_ufrag: HashMap::with_capacity(1024),
            by_serial: HashMap::with_capacity(1024),
            next_serial: ((index as u64) << 48) + 1,
            dtls,
            dtls_out,
            events,
            consent_timeout,
            counters: Default::default(),
            dtls_results: (0, 0),
        }
    }

    /// Number of conferences.
    pub fn conference_count(&self) -> usize {
        self.conferences.iter().flatten().count()
    }

    /// Number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.iter().flatten().count()
    }

    fn emit(&self, event: Event) {
        if let Some(tx) = &self.events {
            if tx.try_send(event).is_err() {
                tracing::warn!(worker = self.index, "event queue full, event dropped");
            }
        }
    }

    // ---- commands -------------------------------------------------------------------

    /// Places a conference on this worker.
    pub fn create_conference(&mut self, id: &str) -> Result<usize, CommandError> {
        if self.conference_ids.contains_key(id) {
            return Err((
                ErrorCode::ConferenceAlreadyExists,
                format!("conference {id} exists"),
            ));
        }
        let conf = Conference::new(id.to_owned());
        let slot = match self.conferences.iter().position(Option::is_none) {
            Some(s) => {
                self.conferences[s] = Some(conf);
                s
            }
            None => {
                self.conferences.push(Some(conf));
                self.conferences.len() - 1
            }
        };
        self.conference_ids.insert(id.to_owned(), slot);
        Ok(slot)
    }

    fn conference_slot(&self, id: &str) -> Result<usize, CommandError> {
        self.conference_ids
            .get(id)
            .copied()
            .ok_or_else(|| (ErrorCode::ConferenceNotFound, format!("no conference {id}")))
    }

    fn endpoint_slot(&self, conference: &str, endpoint: &str) -> Result<usize, CommandError> {
        let conf = self.conference_slot(conference)?;
        self.conferences[conf]
            .as_ref()
            .and_then(|c| {
                c.members
                    .iter()
                    .copied()
                    .find(|&m| self.endpoints[m].as_ref().is_some_and(|e| e.id == endpoint))
            })
            .ok_or_else(|| {
                (
                    ErrorCode::UnknownEndpoint,
                    format!("no endpoint {endpoint} in {conference}"),
                )
            })
    }

    /// Creates an endpoint from its allocation; returns its slot.
    pub fn create_endpoint(
        &mut self,
        allocation: EndpointAllocation,
    ) -> Result<usize, CommandError> {
        let conf = self.conference_slot(&allocation.conference)?;
        if self
            .endpoint_slot(&allocation.conference, &allocation.endpoint)
            .is_ok()
        {
            return Err((
                ErrorCode::EndpointAlreadyExists,
                format!("endpoint {} exists", allocation.endpoint),
            ));
        }
        let ufrag = allocation.ice.ufrag.as_bytes().to_vec();
        if self.by_ufrag.contains_key(&ufrag) {
            return Err((ErrorCode::InvalidArgument, "ICE ufrag collision".into()));
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let ep = Endpoint::new(allocation.endpoint.clone(), conf, serial, allocation);
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.endpoints[s] = Some(ep);
                s
            }
            None => {
                self.endpoints.push(Some(ep));
                self.endpoints.len() - 1
            }
        };
        self.by_ufrag.insert(ufrag, slot);
        self.by_serial.insert(serial, slot);
        if let Some(c) = self.conferences[conf].as_mut() {
            c.join(slot);
        }
        Ok(slot)
    }

    /// Applies the controller's view of the remote side.
    pub fn update_endpoint(
        &mut self,
        conference: &str,
        endpoint: &str,
        ice: Option<IceCredentials>,
        fingerprint: Option<Fingerprint>,
        sources: Option<Vec<MediaSource>>,
        force_mute: Option<ForceMute>,
    ) -> Result<(), CommandError> {
        let slot = self.endpoint_slot(conference, endpoint)?;
        if let Some(fp) = &fingerprint {
            if !fp.hash.eq_ignore_ascii_case("sha-256") {
                return Err((
                    ErrorCode::InvalidArgument,
                    format!("fingerprint hash {} not supported (use sha-256)", fp.hash),
                ));
            }
        }
        let Some(ep) = self.endpoints[slot].as_mut() else {
            return Err((ErrorCode::UnknownEndpoint, endpoint.to_owned()));
        };
        if let Some(ice) = ice {
            ep.remote_ice = Some(ice);
        }
        if let Some(fp) = fingerprint {
            ep.remote_fingerprint = Some(fp.value);
            let early = std::mem::take(&mut ep.early_dtls);
            if !early.is_empty() && ep.dtls == DtlsState::Idle {
                if let Some(dtls) = &self.dtls {
                    let fp = ep.remote_fingerprint.as_deref().unwrap_or_default();
                    if dtls.start(ep.serial, fp, self.dtls_out.clone()).is_ok() {
                        ep.dtls = DtlsState::Handshaking {
                            since: Instant::now(),
                        };
                        for record in &early {
                            if dtls.datagram(ep.serial, record).is_err() {
                                self.counters.drops.queue_full += 1;
                            }
                        }
                    }
                }
            }
        }
        if let Some(sources) = sources {
            let conf = ep.conference;
            if let Some(c) = self.conferences[conf].as_mut() {
                for s in &sources {
                    for &ssrc in &s.ssrcs {
                        c.declare_ssrc(ssrc, slot, s.kind);
                    }
                }
            }
            ep.sources = sources;
        }
        if let Some(mute) = force_mute {
            ep.force_mute = mute;
        }
        Ok(())
    }

    /// Removes an endpoint by ids.
    pub fn expire_endpoint(
        &mut self,
        conference: &str,
        endpoint: &str,
    ) -> Result<(), CommandError> {
        let slot = self.endpoint_slot(conference, endpoint)?;
        self.remove_endpoint(slot);
        Ok(())
    }

    fn remove_endpoint(&mut self, slot: usize) -> Option<Endpoint> {
        let ep = self.endpoints.get_mut(slot)?.take()?;
        if let Some(addr) = ep.addr {
            if self.by_addr.get(&addr) == Some(&slot) {
                self.by_addr.remove(&addr);
            }
        }
        self.by_ufrag.remove(ep.local_ice.ufrag.as_bytes());
        self.by_serial.remove(&ep.serial);
        if let Some(c) = self.conferences[ep.conference].as_mut() {
            c.leave(slot);
        }
        if let Some(d) = &self.dtls {
            let _ = d.close(ep.serial);
        }
        self.free_slots.push(slot);
        Some(ep)
    }

    /// Removes a conference and its endpoints; returns the removed endpoints' ids.
    pub fn expire_conference(&mut self, conference: &str) -> Result<Vec<String>, CommandError> {
        let conf = self.conference_slot(conference)?;
        let members = self.conferences[conf]
            .as_ref()
            .map(|c| c.members.clone())
            .unwrap_or_default();
        let mut gone = Vec::with_capacity(members.len());
        for m in members {
            if let Some(ep) = self.remove_endpoint(m) {
                gone.push(ep.id);
            }
        }
        self.conferences[conf] = None;
        self.conference_ids.remove(conference);
        Ok(gone)
    }

    /// Worker and endpoint counters.
    pub fn stats(&self) -> (WorkerStats, Vec<EndpointStats>) {
        let mut eps = Vec::with_capacity(self.endpoints.len());
        for ep in self.endpoints.iter().flatten() {
            let conf = self.conferences[ep.conference]
                .as_ref()
                .map(|c| c.id.as_str())
                .unwrap_or("");
            eps.push(ep.stats(conf));
        }
        let worker = WorkerStats {
            worker: self.index,
            conferences: self.conference_count(),
            endpoints: eps.len(),
            connected_endpoints: eps.iter().filter(|e| e.connected).count(),
            counters: self.counters,
            ..Default::default()
        };
        (worker, eps)
    }

    /// Every conference and endpoint held.
    pub fn list_state(&self) -> Vec<ConferenceState> {
        self.conferences
            .iter()
            .flatten()
            .map(|c| ConferenceState {
                conference: c.id.clone(),
                worker: self.index,
                endpoints: c
                    .members
                    .iter()
                    .filter_map(|&m| self.endpoints[m].as_ref())
                    .map(|e| EndpointState {
                        endpoint: e.id.clone(),
                        allocation: e.allocation.clone(),
                        connected: e.is_connected(),
                        sources: e.sources.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// For benchmarks and tests: binds endpoint `slot` to `addr` and installs keys as
    /// if ICE and DTLS had completed.
    pub fn force_connect(
        &mut self,
        slot: usize,
        addr: SocketAddr,
        keys: &SessionKeys,
    ) -> Result<(), SrtpError> {
        let Some(ep) = self.endpoints.get_mut(slot).and_then(Option::as_mut) else {
            return Err(SrtpError::BadKey);
        };
        ep.install_keys(keys)?;
        ep.addr = Some(addr);
        self.by_addr.insert(addr, slot);
        Ok(())
    }

    // ---- timers ---------------------------------------------------------------------

    /// Expires endpoints whose consent lapsed, and reports endpoints that ICE never
    /// bound within the consent timeout (they stay allocated until expired).
    pub fn on_timer(&mut self, now: Instant) {
        let timeout = self.consent_timeout;
        let mut ice_failed = Vec::new();
        for ep in self.endpoints.iter_mut().flatten() {
            if ep.addr.is_some() || ep.ice_failed {
                continue;
            }
            match ep.ice_deadline {
                None => ep.ice_deadline = Some(now + timeout),
                Some(t) if now >= t => {
                    ep.ice_failed = true;
                    ice_failed.push((ep.conference, ep.id.clone()));
                }
                Some(_) => {}
            }
        }
        for (conf, endpoint) in ice_failed {
            let conference = self.conferences[conf]
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_default();
            tracing::info!(worker = self.index, %conference, %endpoint, "no ICE check arrived");
            self.emit(Event::EndpointFailed {
                conference,
                endpoint,
                reason: "ice-timeout".into(),
            });
        }
        let expired: Vec<usize> = self
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.as_ref()
                    .filter(|e| e.consent.expired(now, timeout))
                    .map(|_| i)
            })
            .collect();
        for slot in expired {
            if let Some(ep) = self.remove_endpoint(slot) {
                let conference = self.conferences[ep.conference]
                    .as_ref()
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                tracing::info!(worker = self.index, %conference, endpoint = %ep.id, "consent expired");
                self.emit(Event::EndpointExpired {
                    conference,
                    endpoint: ep.id,
                    reason: "consent-expired".into(),
                });
            }
        }
    }

    // ---- DTLS results ---------------------------------------------------------------

    /// Applies what the DTLS thread produced: records to send, keys, failures.
    pub fn on_dtls(&mut self, out: dtls::Output, tx: &mut TxBatch) {
        let id = match &out {
            dtls::Output::Transmit { id, .. }
            | dtls::Output::Connected { id, .. }
            | dtls::Output::Failed { id, .. } => *id,
        };
        let Some(&slot) = self.by_serial.get(&id) else {
            return;
        };
        let Some(ep) = self.endpoints[slot].as_mut() else {
            return;
        };
        let conference = self.conferences[ep.conference]
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        match out {
            dtls::Output::Transmit { data, .. } => {
                if let Some(addr) = ep.addr {
                    if tx.push(&data, addr) {
                        ep.counters.packets_out += 1;
                        ep.counters.bytes_out += data.len() as u64;
                    } else {
                        self.counters.drops.queue_full += 1;
                    }
                }
            }
            dtls::Output::Connected { keys, took, .. } => {
                if let Err(e) = ep.install_keys(&keys) {
                    ep.dtls = DtlsState::Failed;
                    self.dtls_results.1 += 1;
                    let reason = format!("SRTP setup failed: {e}");
                    let endpoint = ep.id.clone();
                    self.emit(Event::EndpointFailed {
                        conference,
                        endpoint,
                        reason,
                    });
                    return;
                }
                self.dtls_results.0 += 1;
                let event = Event::EndpointConnected {
                    conference,
                    endpoint: ep.id.clone(),
                    profile: keys.profile,
                    handshake_ms: took.as_millis() as u64,
                };
                tracing::info!(worker = self.index, endpoint = %ep.id, profile = keys.profile.name(), "endpoint connected");
                self.emit(event);
            }
            dtls::Output::Failed { reason, .. } => {
                ep.dtls = DtlsState::Failed;
                self.dtls_results.1 += 1;
                tracing::info!(worker = self.index, endpoint = %ep.id, %reason, "DTLS failed");
                let endpoint = ep.id.clone();
                self.emit(Event::EndpointFailed {
                    conference,
                    endpoint,
                    reason,
                });
            }
        }
    }

    // ---- the per-packet path --------------------------------------------------------

    /// Handles one received datagram (RFC 7983 demux on the first byte), queueing any
    /// replies and forwarded packets in `tx`. Every refusal is a counted drop.
    pub fn on_datagram(&mut self, now: Instant, buf: &mut [u8], src: SocketAddr, tx: &mut TxBatch) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += buf.len() as u64;
        let Some(&first) = buf.first() else {
            self.counters.drops.malformed += 1;
            return;
        };
        if stun::is_stun(first) {
            self.on_stun(now, buf, src, tx);
            return;
        }
        let Some(&slot) = self.by_addr.get(&src) else {
            self.counters.drops.unbound_source += 1;
            return;
        };
        match first {
            20..=63 => self.on_dtls_record(now, slot, buf),
            128..=191 => {
                if rtp::is_rtcp(buf) {
                    self.on_rtcp(now, slot, buf, tx);
                } else {
                    self.on_rtp(slot, buf, tx);
                }
            }
            _ => self.counters.drops.malformed += 1,
        }
    }

    fn on_stun(&mut self, now: Instant, buf: &[u8], src: SocketAddr, tx: &mut TxBatch) {
        let Ok(msg) = stun::StunMessage::parse(buf) else {
            self.counters.drops.stun_malformed += 1;
            return;
        };
        if !msg.is_binding_request() {
            // Indications (keepalives) and stray responses: nothing to do.
            if msg.class() != stun::Class::Indication {
                self.counters.drops.stun_malformed += 1;
            }
            return;
        }
        let Some(slot) = lite::local_ufrag(&msg).and_then(|u| self.by_ufrag.get(u).copied()) else {
            self.counters.drops.stun_malformed += 1;
            return;
        };
        let Some(ep) = self.endpoints[slot].as_mut() else {
            return;
        };
        let remote_ufrag = ep.remote_ice.as_ref().map(|i| i.ufrag.as_bytes());
        let Ok(nominated) = lite::check_request(&msg, ep.local_ice.pwd.as_bytes(), remote_ufrag)
        else {
            self.counters.drops.stun_integrity += 1;
            ep.counters.drops.stun_integrity += 1;
            return;
        };
        ep.counters.packets_in += 1;
        ep.counters.bytes_in += buf.len() as u64;
        // Bind on the first valid check; move on a nominating check from elsewhere.
        if ep.addr.is_none() || (nominated && ep.addr != Some(src)) {
            if let Some(old) = ep.addr.replace(src) {
                self.by_addr.remove(&old);
            }
            self.by_addr.insert(src, slot);
        }
        if ep.addr == Some(src) {
            ep.consent.refresh(now);
        }
        let Some(out) = tx.slot() else {
            self.counters.drops.queue_full += 1;
            return;
        };
        match stun::write_binding_success(
            out,
            msg.transaction_id(),
            src,
            ep.local_ice.pwd.as_bytes(),
        ) {
            Ok(n) => {
                tx.commit(n, src);
                ep.counters.packets_out += 1;
                ep.counters.bytes_out += n as u64;
            }
            Err(_) => self.counters.drops.queue_full += 1,
        }
    }

    fn on_dtls_record(&mut self, now: Instant, slot: usize, buf: &[u8]) {
        let Some(ep) = self.endpoints[slot].as_mut() else {
            return;
        };
        ep.counters.packets_in += 1;
        ep.counters.bytes_in += buf.len() as u64;
        let Some(dtls) = &self.dtls else {
            return;
        };
        match ep.dtls {
            DtlsState::Idle => {
                let Some(fp) = &ep.remote_fingerprint else {
                    if ep.early_dtls.len() < EARLY_DTLS_RECORDS {
                        ep.early_dtls.push(buf.to_vec());
                    } else {
                        self.counters.drops.dtls_no_fingerprint += 1;
                        ep.counters.drops.dtls_no_fingerprint += 1;
                    }
                    return;
                };
                if dtls.start(ep.serial, fp, self.dtls_out.clone()).is_err() {
                    self.counters.drops.queue_full += 1;
                    return;
                }
                ep.dtls = DtlsState::Handshaking { since: now };
            }
            DtlsState::Failed => return,
            DtlsState::Handshaking { .. } | DtlsState::Connected => {}
        }
        if dtls.datagram(ep.serial, buf).is_err() {
            self.counters.drops.queue_full += 1;
        }
    }

    fn count_srtp_error(&mut self, slot: usize, e: SrtpError) {
        let (w, ep) = (&mut self.counters.drops, self.endpoints[slot].as_mut());
        let bump = |d: &mut crate::command::protocol::Drops| match e {
            SrtpError::AuthFailed => d.srtp_auth += 1,
            SrtpError::Replayed => d.srtp_replay += 1,
            _ => d.malformed += 1,
        };
        bump(w);
        if let Some(ep) = ep {
            bump(&mut ep.counters.drops);
        }
    }

    /// Authenticates, replay-checks and decrypts an SRTP (`rtcp == false`) or SRTCP
    /// packet from endpoint `slot` in place; returns the plaintext length and the
    /// endpoint's conference, or counts the drop.
    fn unprotect(&mut self, slot: usize, buf: &mut [u8], rtcp: bool) -> Option<(usize, usize)> {
        let ep = self.endpoints[slot].as_mut()?;
        let Some(inbound) = ep.inbound.as_mut() else {
            self.counters.drops.not_connected += 1;
            ep.counters.drops.not_connected += 1;
            return None;
        };
        let opened = if rtcp {
            inbound.unprotect_rtcp(buf)
        } else {
            inbound.unprotect_rtp(buf)
        };
        let len = match opened {
            Ok(n) => n,
            Err(e) => {
                self.count_srtp_error(slot, e);
                return None;
            }
        };
        ep.counters.packets_in += 1;
        ep.counters.bytes_in += buf.len() as u64;
        if rtcp {
            ep.counters.rtcp_in += 1;
            self.counters.rtcp_in += 1;
        } else {
            ep.counters.rtp_in += 1;
            self.counters.rtp_in += 1;
        }
        Some((len, ep.conference))
    }

    fn on_rtp(&mut self, slot: usize, buf: &mut [u8], tx: &mut TxBatch) {
        let Some((len, conf)) = self.unprotect(slot, buf, false) else {
            return;
        };
        let plain = &buf[..len];
        let Ok(header) = rtp::RtpHeader::parse(plain) else {
            self.counters.drops.malformed += 1;
            return;
        };
        let Some(c) = self.conferences[conf].as_mut() else {
            return;
        };
        let received = c.on_rtp(header.ssrc(), header.sequence(), slot);
        let kind = received.kind;
        self.counters.rtp_expected += received.expected;
        if let Some(ep) = self.endpoints[slot].as_mut() {
            ep.counters.rtp_expected += received.expected;
            let muted = match kind {
                Some(MediaKind::Audio) => {
                    ep.counters.audio_in += 1;
                    ep.force_mute.audio
                }
                Some(MediaKind::Video) => {
                    ep.counters.video_in += 1;
                    ep.force_mute.video
                }
                None => false,
            };
            if muted {
                ep.counters.drops.muted += 1;
                self.counters.drops.muted += 1;
                return;
            }
        }
        for to in forward::rtp_receivers(&c.members, slot) {
            relay(
                &mut self.endpoints,
                &mut self.counters,
                to,
                plain,
                tx,
                false,
            );
        }
    }

    fn on_rtcp(&mut self, now: Instant, slot: usize, buf: &mut [u8], tx: &mut TxBatch) {
        let Some((len, conf)) = self.unprotect(slot, buf, true) else {
            return;
        };
        let plain = &buf[..len];
        let Some(c) = self.conferences[conf].as_ref() else {
            return;
        };
        let Some(ep) = self.endpoints[slot].as_mut() else {
            return;
        };
        // What receivers report about the streams the bridge forwards them: loss, and
        // the round trip when a block names a sender report forwarded to this endpoint.
        let mut reports = crate::command::protocol::Counters::default();
        // Sender reports in the compound, to note on each endpoint they are relayed to.
        let mut senders = [(0u32, 0u64); MAX_SENDER_REPORTS];
        let mut n_senders = 0;
        for packet in rtcp::iter(plain).flatten() {
            if let (Some(ssrc), Some(info)) = (packet.sender_ssrc(), packet.sender_info()) {
                // Only the sender's own streams: a report claiming another's SSRC
                // could plant LSRs for it.
                if n_senders < MAX_SENDER_REPORTS && c.owner(ssrc) == Some(slot) {
                    senders[n_senders] = (ssrc, info.ntp);
                    n_senders += 1;
                }
            }
            for b in packet.report_blocks() {
                if c.owner(b.ssrc).is_some_and(|o| o != slot) {
                    reports.report_blocks += 1;
                    reports.report_fraction_lost += u64::from(b.fraction_lost);
                    if let Some(rtt) = ep.rtt.on_report_block(b.ssrc, b.lsr, b.dlsr, now) {
                        reports.rtt_samples += 1;
                        reports.rtt_micros += rtt.as_micros() as u64;
                    }
                }
            }
        }
        self.counters.add(&reports);
        ep.counters.add(&reports);
        let senders = &senders[..n_senders];
        let relay_to = |to: usize| {
            if let Some(receiver) = self.endpoints.get_mut(to).and_then(Option::as_mut) {
                for &(ssrc, ntp) in senders {
                    receiver.rtt.on_sender_report_forwarded(ssrc, ntp, now);
                }
            }
            relay(&mut self.endpoints, &mut self.counters, to, plain, tx, true);
        };
        match forward::route_rtcp(plain, slot, |ssrc| c.owner(ssrc)) {
            RtcpRoute::Everyone => forward::rtp_receivers(&c.members, slot).for_each(relay_to),
            RtcpRoute::Only { targets, len } => targets[..len].iter().copied().for_each(relay_to),
        }
    }
}

/// Encrypts `plain` for endpoint `to` straight into the next send slot and queues it.
fn relay(
    endpoints: &mut [Option<Endpoint>],
    counters: &mut crate::command::protocol::Counters,
    to: usize,
    plain: &[u8],
    tx: &mut TxBatch,
    rtcp: bool,
) {
    let Some(ep) = endpoints.get_mut(to).and_then(Option::as_mut) else {
        return;
    };
    let (Some(addr), Some(out)) = (ep.addr, ep.outbound.as_mut()) else {
        return;
    };
    let Some(slot) = tx.slot() else {
        counters.drops.queue_full += 1;
        ep.counters.drops.queue_full += 1;
        return;
    };
    let Some(dst) = slot.get_mut(..plain.len()) else {
        counters.drops.malformed += 1;
        return;
    };
    dst.copy_from_slice(plain);
    let sealed = if rtcp {
        out.protect_rtcp(slot, plain.len())
    } else {
        out.protect_rtp(slot, plain.len())
    };
    match sealed {
        Ok(n) => {
            tx.commit(n, addr);
            ep.counters.packets_out += 1;
            ep.counters.bytes_out += n as u64;
        }
        Err(_) => counters.drops.malformed += 1,
    }
}

/// A running worker's loop: the backend, the send batch, the state and the channels.
pub struct Worker {
    state: WorkerState,
    backend: Box<dyn Backend>,
    tx: TxBatch,
    commands: Receiver<Command>,
    dtls_rx: Receiver<dtls::Output>,
    loop_turns: u64,
    heartbeat: Option<Arc<AtomicU64>>,
}

impl Worker {
    /// A worker over an opened backend.
    pub fn new(
        state: WorkerState,
        backend: Box<dyn Backend>,
        commands: Receiver<Command>,
        dtls_rx: Receiver<dtls::Output>,
    ) -> Self {
        Self {
            state,
            backend,
            tx: TxBatch::new(TX_SLOTS),
            commands,
            dtls_rx,
            loop_turns: 0,
            heartbeat: None,
        }
    }

    /// Publishes the loop-turn count to `heartbeat` on every timer tick (250 ms), so a
    /// watchdog can tell a live worker from a stuck one without asking it.
    pub fn with_heartbeat(mut self, heartbeat: Arc<AtomicU64>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Runs until [`Command::Shutdown`] or the command channel closes.
    #[allow(clippy::disallowed_methods)] // the worker owns the clock
    pub fn run(mut self) {
        let mut next_timer = Instant::now() + TIMER_PERIOD;
        loop {
            self.loop_turns += 1;
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown) => return,
                    Ok(cmd) => self.on_command(cmd),
                    Err(crossbeam::channel::TryRecvError::Empty) => break,
                    Err(crossbeam::channel::TryRecvError::Disconnected) => return,
                }
            }
            while let Ok(out) = self.dtls_rx.try_recv() {
                self.state.on_dtls(out, &mut self.tx);
            }
            let now = Instant::now();
            if now >= next_timer {
                self.state.on_timer(now);
                next_timer = now + TIMER_PERIOD;
                if let Some(h) = &self.heartbeat {
                    h.store(self.loop_turns, Ordering::Relaxed);
                }
            }
            let timeout = if self.tx.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            let (state, tx, dtls_rx) = (&mut self.state, &mut self.tx, &self.dtls_rx);
            let mut batch_now = None;
            let result = self.backend.recv(timeout, &mut |buf, src| {
                let now = match batch_now {
                    Some(now) => now,
                    None => {
                        // Woken by datagrams: first apply handshakes that finished while
                        // the worker waited, so a peer's first SRTP packets right after
                        // its handshake find their keys (one channel poll per batch).
                        while let Ok(out) = dtls_rx.try_recv() {
                            state.on_dtls(out, tx);
                        }
                        *batch_now.insert(Instant::now())
                    }
                };
                state.on_datagram(now, buf, src, tx);
            });
            if let Err(e) = result {
                tracing::warn!(worker = self.state.index, error = %e, "receive failed");
            }
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.tx.is_empty() {
            return;
        }
        let queued = self.tx.len();
        let mut bytes = 0u64;
        for i in 0..queued {
            bytes += self.tx.get(i).0.len() as u64;
        }
        match self.backend.send(&mut self.tx) {
            Ok(sent) => {
                self.state.counters.packets_out += sent as u64;
                self.state.counters.bytes_out += bytes;
                self.state.counters.drops.send_failed += (queued - sent.min(queued)) as u64;
            }
            Err(e) => {
                self.state.counters.drops.send_failed += queued as u64;
                self.tx.clear();
                tracing::warn!(worker = self.state.index, error = %e, "send failed");
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let s = &mut self.state;
        match cmd {
            Command::CreateConference { conference, reply } => {
                let _ = reply.send(s.create_conference(&conference).map(|_| ()));
            }
            Command::CreateEndpoint { allocation, reply } => {
                let _ = reply.send(s.create_endpoint(allocation).map(|_| ()));
            }
            Command::UpdateEndpoint {
                conference,
                endpoint,
                ice,
                fingerprint,
                sources,
                force_mute,
                reply,
            } => {
                let _ = reply.send(s.update_endpoint(
                    &conference,
                    &endpoint,
                    ice,
                    fingerprint,
                    sources,
                    force_mute,
                ));
            }
            Command::ExpireEndpoint {
                conference,
                endpoint,
                reply,
            } => {
                let _ = reply.send(s.expire_endpoint(&conference, &endpoint));
            }
            Command::ExpireConference { conference, reply } => {
                let _ = reply.send(s.expire_conference(&conference).map(|_| ()));
            }
            Command::Stats { reply } => {
                let (mut w, eps) = s.stats();
                w.port = self.backend.local_addr().port();
                w.io_backend = self.backend.kind().to_string();
                w.loop_turns = self.loop_turns;
                w.syscalls = self.backend.syscalls();
                w.counters.drops.xdp_rx = self.backend.ring_drops();
                let _ = reply.send((w, eps, s.dtls_results));
            }
            Command::ListState { reply } => {
                let _ = reply.send(s.list_state());
            }
            Command::Shutdown => {}
        }
    }
}

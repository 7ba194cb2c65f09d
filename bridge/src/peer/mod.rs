//! The client half of a call, for tests and the load generator: ICE as the controlling
//! agent (binding requests with USE-CANDIDATE, and answers to the remote's own checks
//! when it is a full ICE agent), a DTLS handshake through a [`DtlsHandle`] (client
//! against the bridge; client or server against other SFUs, as the SDP's `a=setup`
//! says), then SRTP/SRTCP both ways over one blocking UDP socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};
use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;

use crate::command::protocol::{EndpointAllocation, Fingerprint, IceCredentials};
use crate::dtls::{self, DtlsHandle, Identity};
use crate::ice::stun::{self, StunMessage};
use crate::rtp;
use crate::srtp::{Context, Profile, SrtpError};

/// Largest datagram a peer reads.
const RECV_BUF: usize = 2048;

/// Interval between connectivity checks while ICE is in progress.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Priority a peer puts in its checks (a host candidate's, RFC 8445 5.1.2.1).
const PEER_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// The peer's ICE tie-breaker: the largest, so that a full ICE agent that also thinks
/// it controls (the offerer, RFC 8445 6.1.1) yields the role (RFC 8445 7.3.1.1) and a
/// peer never has to switch to controlled. An ICE-lite bridge ignores it.
const TIEBREAKER: u64 = u64::MAX;

/// After ICE succeeds against a full agent, how long the peer keeps answering its
/// checks before starting DTLS, so the agent has seen its own check succeed and
/// accepts the first flight.
const FULL_ICE_LINGER: Duration = Duration::from_millis(20);

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Why a peer could not connect or receive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Socket trouble.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The allocation has no usable candidate.
    #[error("no usable candidate")]
    NoCandidate,
    /// ICE did not complete in time.
    #[error("ICE timed out")]
    IceTimeout,
    /// DTLS failed.
    #[error("DTLS failed: {0}")]
    Dtls(String),
    /// DTLS did not complete in time.
    #[error("DTLS timed out")]
    DtlsTimeout,
    /// Media before the handshake.
    #[error("not connected")]
    NotConnected,
    /// SRTP refused a packet.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpError),
}

/// What arrived on a connected peer's socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An RTP packet that authenticated: its header fields and payload.
    Rtp {
        /// SSRC.
        ssrc: u32,
        /// Sequence number.
        seq: u16,
        /// Payload (after the header).
        payload: Vec<u8>,
    },
    /// An RTCP compound that authenticated, decrypted.
    Rtcp(Vec<u8>),
    /// A STUN or DTLS message (handled internally).
    Control,
    /// An SRTP/SRTCP packet that did not authenticate or was replayed.
    Refused(SrtpError),
}

/// A connected peer taken apart, for load tools that drive many peers from their own
/// loops: its socket, the bridge's address and both SRTP directions.
pub struct PeerParts {
    /// The peer's socket.
    pub socket: UdpSocket,
    /// The bridge address ICE chose.
    pub bridge: SocketAddr,
    /// Encrypts what the peer sends.
    pub outbound: Context,
    /// Decrypts what the peer receives.
    pub inbound: Context,
    /// The negotiated profile.
    pub profile: Profile,
    /// Closes the peer's DTLS session when dropped.
    pub session: DtlsSession,
}

/// Ends a peer's DTLS session on its DTLS thread when dropped.
pub struct DtlsSession {
    dtls: DtlsHandle,
    id: dtls::SessionId,
}

impl Drop for DtlsSession {
    fn drop(&mut self) {
        let _ = self.dtls.close(self.id);
    }
}

/// One synthetic participant.
pub struct Peer {
    socket: UdpSocket,
    bridge: Option<SocketAddr>,
    local_ice: IceCredentials,
    remote_ice: Option<IceCredentials>,
    identity: Arc<Identity>,
    dtls: DtlsHandle,
    session: dtls::SessionId,
    dtls_tx: Sender<dtls::Output>,
    dtls_rx: Receiver<dtls::Output>,
    tiebreaker: u64,
    remote_full_ice: bool,
    answered_checks: u64,
    early_dtls: Vec<Vec<u8>>,
    outbound: Option<Context>,
    inbound: Option<Context>,
    profile: Option<Profile>,
    buf: Vec<u8>,
}

impl Peer {
    /// A peer on a fresh UDP socket bound to `local` (use port 0), whose DTLS client
    /// runs on `dtls` (a handle from [`dtls::spawn`] with [`dtls::Role::Client`] and
    /// `identity`).
    pub fn bind(
        local: SocketAddr,
        dtls: DtlsHandle,
        identity: Arc<Identity>,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        let mut rng = rand::thread_rng();
        let (dtls_tx, dtls_rx) = bounded(256);
        Ok(Self {
            socket,
            bridge: None,
            local_ice: IceCredentials {
                ufrag: Alphanumeric.sample_string(&mut rng, 8),
                pwd: Alphanumeric.sample_string(&mut rng, 24),
            },
            remote_ice: None,
            identity,
            dtls,
            session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            dtls_tx,
            dtls_rx,
            tiebreaker: TIEBREAKER,
            remote_full_ice: false,
            answered_checks: 0,
            early_dtls: Vec::new(),
            outbound: None,
            inbound: None,
            profile: None,
            buf: vec![0u8; RECV_BUF],
        })
    }

    /// Moves the peer to a fresh socket on `local` (a network change) keeping its ICE
    /// and SRTP state; send a nominating check ([`Peer::send_check`]) so the bridge
    /// follows.
    pub fn rebind(&mut self, local: SocketAddr) -> std::io::Result<()> {
        self.socket = UdpSocket::bind(local)?;
        Ok(())
    }

    /// The socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The bridge address ICE chose.
    pub fn bridge_addr(&self) -> Option<SocketAddr> {
        self.bridge
    }

    /// The socket, for tests that send raw bytes.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Takes a connected peer apart (see [`PeerParts`]).
    pub fn into_parts(self) -> Result<PeerParts, PeerError> {
        match (self.bridge, self.outbound, self.inbound, self.profile) {
            (Some(bridge), Some(outbound), Some(inbound), Some(profile)) => Ok(PeerParts {
                socket: self.socket,
                bridge,
                outbound,
                inbound,
                profile,
                session: DtlsSession {
                    dtls: self.dtls,
                    id: self.session,
                },
            }),
            _ => Err(PeerError::NotConnected),
        }
    }

    /// Our ICE credentials, to signal to the bridge.
    pub fn ice_credentials(&self) -> IceCredentials {
        self.local_ice.clone()
    }

    /// Our certificate fingerprint, to signal to the bridge (`setup: active`).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            hash: "sha-256".into(),
            value: self.identity.fingerprint().to_owned(),
            setup: Some("active".into()),
        }
    }

    /// Runs the handshake on another DTLS thread: one of the other role, when the
    /// remote's SDP answered `a=setup:active` and the peer must be the DTLS server.
    /// Call before [`Peer::connect`].
    pub fn use_dtls(&mut self, dtls: DtlsHandle) {
        self.dtls = dtls;
    }

    /// Says the remote is a full ICE agent (Janus, a browser), not ICE-lite: it sends its
    /// own checks, which the peer always answers; with this set, [`Peer::connect`] also
    /// waits for the first of them before starting DTLS.
    pub fn set_remote_full_ice(&mut self, full: bool) {
        self.remote_full_ice = full;
    }

    /// Binding requests from the remote the peer has answered.
    pub fn answered_checks(&self) -> u64 {
        self.answered_checks
    }

    /// The negotiated SRTP profile, once connected.
    pub fn profile(&self) -> Option<Profile> {
        self.profile
    }

    /// Runs ICE against the allocation's first candidate of our address family, then the
    /// DTLS client handshake; installs SRTP contexts.
    pub fn connect(
        &mut self,
        alloc: &EndpointAllocation,
        timeout: Duration,
    ) -> Result<Profile, PeerError> {
        let local = self.socket.local_addr()?;
        let bridge = alloc
            .candidates
            .iter()
            .filter_map(|c| Some(SocketAddr::new(c.ip.parse().ok()?, c.port)))
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or(PeerError::NoCandidate)?;
        self.bridge = Some(bridge);
        self.remote_ice = Some(alloc.ice.clone());
        let deadline = Instant::now() + timeout;
        self.run_ice(deadline)?;
        self.run_dtls(&alloc.fingerprint.value, deadline)
    }

    fn username(&self) -> String {
        let remote = self
            .remote_ice
            .as_ref()
            .map(|r| r.ufrag.as_str())
            .unwrap_or("");
        format!("{remote}:{}", self.local_ice.ufrag)
    }

    /// Sends one connectivity check (also what keeps consent fresh).
    pub fn send_check(&mut self, nominate: bool) -> Result<[u8; 12], PeerError> {
        let bridge = self.bridge.ok_or(PeerError::NotConnected)?;
        let pwd = self
            .remote_ice
            .as_ref()
            .map(|r| r.pwd.clone())
            .unwrap_or_default();
        let txid: [u8; 12] = rand::thread_rng().gen();
        let mut out = [0u8; 512];
        let n = stun::write_binding_request(
            &mut out,
            &txid,
            self.username().as_bytes(),
            pwd.as_bytes(),
            PEER_PRIORITY,
            self.tiebreaker,
            nominate,
        )
        .map_err(|_| PeerError::NoCandidate)?;
        self.socket.send_to(&out[..n], bridge)?;
        Ok(txid)
    }

    fn run_ice(&mut self, deadline: Instant) -> Result<(), PeerError> {
        let pwd = self
            .remote_ice
            .as_ref()
            .map(|r| r.pwd.clone())
            .unwrap_or_default();
        let mut sent = Vec::new();
        let mut succeeded = false;
        while Instant::now() < deadline {
            if !succeeded {
                sent.push(self.send_check(true)?);
            }
            let until = (Instant::now() + CHECK_INTERVAL).min(deadline);
            while Instant::now() < until && !self.ice_done(succeeded) {
                let Some((n, from)) = self.recv_raw(until)? else {
                    break;
                };
                if Some(from) != self.bridge {
                    continue;
                }
                if self.answer_check(n, from)? || self.keep_early_dtls(n) {
                    continue;
                }
                let Ok(msg) = StunMessage::parse(&self.buf[..n]) else {
                    continue;
                };
                if msg.class() == stun::Class::Success
                    && sent.contains(msg.transaction_id())
                    && msg.verify_integrity(pwd.as_bytes())
                {
                    succeeded = true;
                }
            }
            if self.ice_done(succeeded) {
                if self.remote_full_ice {
                    self.linger(Instant::now() + FULL_ICE_LINGER)?;
                }
                return Ok(());
            }
        }
        Err(PeerError::IceTimeout)
    }

    /// Our check succeeded and, against a full ICE agent, we answered one of its own.
    fn ice_done(&self, succeeded: bool) -> bool {
        succeeded && (!self.remote_full_ice || self.answered_checks > 0)
    }

    /// Answers the remote's checks (and keeps early DTLS records) until `until`.
    fn linger(&mut self, until: Instant) -> Result<(), PeerError> {
        while let Some((n, from)) = self.recv_raw(until)? {
            if Some(from) == self.bridge && !self.answer_check(n, from)? {
                self.keep_early_dtls(n);
            }
        }
        Ok(())
    }

    /// Keeps a DTLS record that arrives before our handshake starts (a full ICE agent
    /// that is the DTLS client sends its ClientHello as soon as its own check
    /// succeeds), to hand to DTLS then instead of waiting for a retransmission.
    fn keep_early_dtls(&mut self, n: usize) -> bool {
        if n == 0 || !(20..=63).contains(&self.buf[0]) {
            return false;
        }
        if self.early_dtls.len() < 16 {
            self.early_dtls.push(self.buf[..n].to_vec());
        }
        true
    }

    /// If the `n` bytes in the buffer are a binding request for us (USERNAME
    /// `ours:theirs`, MESSAGE-INTEGRITY with our password), answers it (RFC 8445 7.3)
    /// and returns true.
    fn answer_check(&mut self, n: usize, from: SocketAddr) -> Result<bool, PeerError> {
        if n == 0 || !stun::is_stun(self.buf[0]) {
            return Ok(false);
        }
        let Ok(msg) = StunMessage::parse(&self.buf[..n]) else {
            return Ok(false);
        };
        if !msg.is_binding_request() {
            return Ok(false);
        }
        let ours = format!("{}:", self.local_ice.ufrag);
        let for_us = msg
            .username()
            .is_some_and(|u| u.starts_with(ours.as_bytes()));
        if !for_us || !msg.verify_integrity(self.local_ice.pwd.as_bytes()) {
            return Ok(true);
        }
        let txid = *msg.transaction_id();
        let mut out = [0u8; 512];
        if let Ok(len) =
            stun::write_binding_success(&mut out, &txid, from, self.local_ice.pwd.as_bytes())
        {
            self.socket.send_to(&out[..len], from)?;
            self.answered_checks += 1;
        }
        Ok(true)
    }

    fn run_dtls(
        &mut self,
        remote_fingerprint: &str,
        deadline: Instant,
    ) -> Result<Profile, PeerError> {
        let bridge = self.bridge.ok_or(PeerError::NotConnected)?;
        self.dtls
            .start(self.session, remote_fingerprint, self.dtls_tx.clone())
            .map_err(|e| PeerError::Dtls(e.to_string()))?;
        for record in std::mem::take(&mut self.early_dtls) {
            let _ = self.dtls.datagram(self.session, &record);
        }
        while Instant::now() < deadline {
            while let Ok(out) = self.dtls_rx.try_recv() {
                match out {
                    dtls::Output::Transmit { data, .. } => {
                        self.socket.send_to(&data, bridge)?;
                    }
                    dtls::Output::Connected { keys, .. } => {
                        self.outbound = Some(keys.outbound()?);
                        self.inbound = Some(keys.inbound()?);
                        self.profile = Some(keys.profile);
                        return Ok(keys.profile);
                    }
                    dtls::Output::Failed { reason, .. } => return Err(PeerError::Dtls(reason)),
                }
            }
            let until = (Instant::now() + Duration::from_millis(5)).min(deadline);
            if let Some((n, from)) = self.recv_raw(until)? {
                if Some(from) == self.bridge && (20..=63).contains(&self.buf[0]) {
                    let _ = self.dtls.datagram(self.session, &self.buf[..n]);
                } else if Some(from) == self.bridge {
                    self.answer_check(n, from)?;
                }
            }
        }
        Err(PeerError::DtlsTimeout)
    }

    fn recv_raw(&mut self, until: Instant) -> Result<Option<(usize, SocketAddr)>, PeerError> {
        let wait = until.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(None);
        }
        self.socket.set_read_timeout(Some(wait))?;
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) if n > 0 => Ok(Some((n, from))),
            Ok(_) => Ok(None),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Builds, encrypts and sends an RTP packet; returns the SRTP bytes sent.
    pub fn send_rtp(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Vec<u8>, PeerError> {
        let packet = self.protect_rtp(ssrc, seq, ts, marker, payload)?;
        let bridge = self.bridge.ok_or(PeerError::NotConnected)?;
        self.socket.send_to(&packet, bridge)?;
        Ok(packet)
    }

    /// Builds and encrypts an RTP packet without sending it.
    pub fn protect_rtp(
        &mut self,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Vec<u8>, PeerError> {
        let out = self.outbound.as_mut().ok_or(PeerError::NotConnected)?;
        let mut pkt = vec![0u8; 12 + payload.len() + out.profile().rtp_overhead()];
        let h = rtp::write_header(&mut pkt, 111, marker, seq, ts, ssrc, None)
            .map_err(|_| PeerError::Srtp(SrtpError::BufferTooSmall))?;
        pkt[h..h + payload.len()].copy_from_slice(payload);
        let n = out.protect_rtp(&mut pkt, h + payload.len())?;
        pkt.truncate(n);
        Ok(pkt)
    }

    /// Encrypts and sends an RTCP compound (plaintext in `compound`).
    pub fn send_rtcp(&mut self, compound: &[u8]) -> Result<(), PeerError> {
        let out = self.outbound.as_mut().ok_or(PeerError::NotConnected)?;
        let mut pkt = vec![0u8; compound.len() + out.profile().rtcp_overhead()];
        pkt[..compound.len()].copy_from_slice(compound);
        let n = out.protect_rtcp(&mut pkt, compound.len())?;
        let bridge = self.bridge.ok_or(PeerError::NotConnected)?;
        self.socket.send_to(&pkt[..n], bridge)?;
        Ok(())
    }

    /// Sends bytes as they are to the bridge (for tests of bad input).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), PeerError> {
        let bridge = self.bridge.ok_or(PeerError::NotConnected)?;
        self.socket.send_to(bytes, bridge)?;
        Ok(())
    }

    /// Waits up to `timeout` for one datagram from the bridge and decrypts it. `None`
    /// on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Incoming>, PeerError> {
        let until = Instant::now() + timeout;
        loop {
            while let Ok(out) = self.dtls_rx.try_recv() {
                if let (dtls::Output::Transmit { data, .. }, Some(b)) = (out, self.bridge) {
                    self.socket.send_to(&data, b)?;
                }
            }
            let Some((n, from)) = self.recv_raw(until)? else {
                return Ok(None);
            };
            if Some(from) != self.bridge {
                continue;
            }
            if self.answer_check(n, from)? {
                return Ok(Some(Incoming::Control));
            }
            return Ok(Some(self.classify(n)));
        }
    }

    fn classify(&mut self, n: usize) -> Incoming {
        let first = self.buf[0];
        if (20..=63).contains(&first) {
            let _ = self.dtls.datagram(self.session, &self.buf[..n]);
            return Incoming::Control;
        }
        if !(128..=191).contains(&first) {
            return Incoming::Control;
        }
        let Some(inbound) = self.inbound.as_mut() else {
            return Incoming::Refused(SrtpError::BadKey);
        };
        let pkt = &mut self.buf[..n];
        if rtp::is_rtcp(pkt) {
            return match inbound.unprotect_rtcp(pkt) {
                Ok(len) => Incoming::Rtcp(pkt[..len].to_vec()),
                Err(e) => Incoming::Refused(e),
            };
        }
        match inbound.unprotect_rtp(pkt) {
            Ok(len) => match rtp::RtpHeader::parse(&pkt[..len]) {
                Ok(h) => Incoming::Rtp {
                    ssrc: h.ssrc(),
                    seq: h.sequence(),
                    payload: h.payload().to_vec(),
                },
                Err(_) => Incoming::Refused(SrtpError::Malformed),
            },
            Err(e) => Incoming::Refused(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        let identity = Arc::new(Identity::generate().unwrap());
        let dtls = dtls::spawn(identity.clone(), dtls::Role::Client, "peer-test").unwrap();
        Peer::bind("127.0.0.1:0".parse().unwrap(), dtls, identity).unwrap()
    }

    /// A full ICE agent's check to the peer gets a success response with our integrity
    /// and its own address mapped; one with the wrong password or user is not answered.
    #[test]
    fn answers_checks_from_a_full_agent() {
        let mut p = peer();
        let remote = UdpSocket::bind("127.0.0.1:0").unwrap();
        remote
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        p.bridge = Some(remote.local_addr().unwrap());
        let ours = p.ice_credentials();
        let to = p.local_addr().unwrap();
        let check = |user: &str, pwd: &str, txid: [u8; 12]| {
            let mut out = [0u8; 512];
            let n = stun::write_binding_request(
                &mut out,
                &txid,
                user.as_bytes(),
                pwd.as_bytes(),
                1,
                7,
                false,
            )
            .unwrap();
            remote.send_to(&out[..n], to).unwrap();
        };
        check(&format!("{}:them", ours.ufrag), "wrong-password", [1; 12]);
        check(&format!("other:{}", ours.ufrag), &ours.pwd, [2; 12]);
        check(&format!("{}:them", ours.ufrag), &ours.pwd, [3; 12]);
        for _ in 0..3 {
            assert_eq!(
                p.recv(Duration::from_millis(300)).unwrap(),
                Some(Incoming::Control)
            );
        }
        assert_eq!(p.answered_checks(), 1);
        let mut buf = [0u8; 512];
        let (n, from) = remote.recv_from(&mut buf).unwrap();
        assert_eq!(from, to);
        let msg = StunMessage::parse(&buf[..n]).unwrap();
        assert_eq!(msg.class(), stun::Class::Success);
        assert_eq!(msg.transaction_id(), &[3; 12]);
        assert!(msg.verify_integrity(ours.pwd.as_bytes()));
        assert_eq!(msg.xor_mapped_address(), Some(remote.local_addr().unwrap()));
        assert!(remote.recv_from(&mut buf).is_err(), "answered a bad check");
    }
}

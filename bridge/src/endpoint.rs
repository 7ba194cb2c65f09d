//! One participant on a worker: its ICE credentials and bound address, DTLS progress,
//! SRTP contexts and counters. Plain state; the worker drives it.

use std::net::SocketAddr;
use std::time::Instant;

use crate::command::protocol::{
    Counters, EndpointAllocation, EndpointStats, ForceMute, IceCredentials, MediaSource,
};
use crate::dtls::SessionId;
use crate::ice::lite::Consent;
use crate::rtt::Rtt;
use crate::srtp::{self, Profile, SessionKeys};

/// Where an endpoint's DTLS handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsState {
    /// No record seen yet.
    Idle,
    /// Records are flowing to the DTLS thread.
    Handshaking {
        /// When the first record arrived.
        since: Instant,
    },
    /// Keys installed.
    Connected,
    /// The handshake failed; media is refused until the endpoint is expired.
    Failed,
}

/// One participant.
pub struct Endpoint {
    /// The controller's id for it.
    pub id: String,
    /// Its conference's slot in the worker.
    pub conference: usize,
    /// Worker-unique serial, names its DTLS session.
    pub serial: SessionId,
    /// Our ICE credentials.
    pub local_ice: IceCredentials,
    /// The participant's ICE credentials, once signalled.
    pub remote_ice: Option<IceCredentials>,
    /// The participant's certificate fingerprint, once signalled.
    pub remote_fingerprint: Option<String>,
    /// What was allocated (returned again in list-state).
    pub allocation: EndpointAllocation,
    /// Declared media sources.
    pub sources: Vec<MediaSource>,
    /// Media the bridge drops instead of forwarding.
    pub force_mute: ForceMute,
    /// The address ICE bound it to.
    pub addr: Option<SocketAddr>,
    /// Consent freshness.
    pub consent: Consent,
    /// DTLS progress.
    pub dtls: DtlsState,
    /// Negotiated profile.
    pub profile: Option<Profile>,
    /// Decrypts what the participant sends.
    pub inbound: Option<srtp::Context>,
    /// Encrypts what we send to the participant.
    pub outbound: Option<srtp::Context>,
    /// Its counters.
    pub counters: Counters,
    /// Round trip to it, from the sender reports forwarded to it and its reports back.
    pub rtt: Rtt,
    /// When ICE must have bound it (set by the first timer tick after creation).
    pub ice_deadline: Option<Instant>,
    /// ICE failure already reported.
    pub ice_failed: bool,
    /// DTLS records that arrived before the controller told the remote fingerprint (a
    /// browser starts its handshake as soon as it has sent its answer, which may reach
    /// the bridge later): replayed when the fingerprint comes, so the handshake does
    /// not wait for the client's retransmission timer. At most
    /// [`EARLY_DTLS_RECORDS`] of them.
    pub early_dtls: Vec<Vec<u8>>,
}

/// How many DTLS records an endpoint holds while its remote fingerprint is unknown
/// (Chromium's ClientHello comes in two).
pub const EARLY_DTLS_RECORDS: usize = 4;

impl Endpoint {
    /// A freshly allocated endpoint.
    pub fn new(
        id: String,
        conference: usize,
        serial: SessionId,
        allocation: EndpointAllocation,
    ) -> Self {
        Self {
            id,
            conference,
            serial,
            local_ice: allocation.ice.clone(),
            remote_ice: None,
            remote_fingerprint: None,
            allocation,
            sources: Vec::new(),
            force_mute: ForceMute::default(),
            addr: None,
            consent: Consent::default(),
            dtls: DtlsState::Idle,
            profile: None,
            inbound: None,
            outbound: None,
            counters: Counters::default(),
            rtt: Rtt::default(),
            ice_deadline: None,
            ice_failed: false,
            early_dtls: Vec::new(),
        }
    }

    /// Installs the SRTP contexts from a finished handshake.
    pub fn install_keys(&mut self, keys: &SessionKeys) -> Result<(), srtp::SrtpError> {
        self.inbound = Some(keys.inbound()?);
        self.outbound = Some(keys.outbound()?);
        self.profile = Some(keys.profile);
        self.dtls = DtlsState::Connected;
        Ok(())
    }

    /// ICE bound and keys installed: media can flow both ways.
    pub fn is_connected(&self) -> bool {
        self.addr.is_some() && self.outbound.is_some()
    }

    /// Its stats line.
    pub fn stats(&self, conference: &str) -> EndpointStats {
        EndpointStats {
            conference: conference.to_owned(),
            endpoint: self.id.clone(),
            connected: self.is_connected(),
            remote: self.addr.map(|a| a.to_string()),
            counters: self.counters,
        }
    }
}

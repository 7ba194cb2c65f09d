//! Message types of the bridge link: one JSON object a line on a Unix socket, requests
//! with ids, responses that echo them, and unsolicited events. Shared by the bridge
//! (server) and the control service (client); parsing and I/O live elsewhere.

use serde::{Deserialize, Serialize};

use crate::srtp::Profile;

/// Version of the bridge link protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the bridge reads; a longer one is refused and the line skipped.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// A request from the controller.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Chosen by the controller, echoed in the response.
    pub id: u64,
    /// What is asked.
    #[serde(flatten)]
    pub body: RequestBody,
}

/// The requests the bridge understands, tagged by `"type"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RequestBody {
    /// Protocol and bridge version handshake; answered with [`Reply::Hello`].
    Hello,
    /// Create a conference; the bridge places it on a worker.
    CreateConference {
        /// The controller's id for it (a colibri2 meeting-id, say).
        conference: String,
    },
    /// Create an endpoint in a conference: the bridge generates ICE credentials and
    /// returns them with its DTLS fingerprint and host candidates.
    CreateEndpoint {
        /// Conference id.
        conference: String,
        /// The controller's id for the endpoint.
        endpoint: String,
    },
    /// Tell the bridge about the remote side of an endpoint. Absent fields are unchanged.
    UpdateEndpoint {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// The remote (participant's) ICE credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice: Option<IceCredentials>,
        /// The remote DTLS certificate fingerprint the handshake must match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
        /// The participant's media sources (replaces the previous list).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sources: Option<Vec<MediaSource>>,
        /// Force-mute: the bridge drops the endpoint's audio and/or video.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        force_mute: Option<ForceMute>,
    },
    /// Remove an endpoint.
    ExpireEndpoint {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
    },
    /// Remove a conference and all its endpoints.
    ExpireConference {
        /// Conference id.
        conference: String,
    },
    /// Counters of every worker and endpoint.
    Stats,
    /// Every conference and endpoint, for a controller that reconnects.
    ListState,
}

/// A line from the bridge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromBridge {
    /// A request succeeded.
    Response {
        /// The request's id.
        id: u64,
        /// What it produced.
        result: Reply,
    },
    /// A request failed (or a line could not be parsed: then `id` is whatever could be
    /// read from it, or absent).
    Error {
        /// The request's id, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// Something happened that nobody asked about.
    Event {
        /// What happened.
        event: Event,
    },
}

/// Results of successful requests, tagged by `"kind"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reply {
    /// Answer to [`RequestBody::Hello`].
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The bridge's crate version.
        version: String,
        /// The I/O backend the workers run on.
        io_backend: String,
        /// Number of workers.
        workers: usize,
    },
    /// A conference was created.
    ConferenceCreated {
        /// Conference id.
        conference: String,
        /// The worker it lives on.
        worker: usize,
    },
    /// An endpoint was created.
    EndpointCreated(EndpointAllocation),
    /// Update, expire: nothing to report but success.
    Done,
    /// Answer to [`RequestBody::Stats`].
    Stats(Box<StatsSnapshot>),
    /// Answer to [`RequestBody::ListState`].
    State(StateSnapshot),
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The line is not JSON, or not a request this bridge knows.
    BadRequest,
    /// A field has a value the bridge cannot use.
    InvalidArgument,
    /// No such conference.
    ConferenceNotFound,
    /// The conference id is taken.
    ConferenceAlreadyExists,
    /// No such endpoint.
    UnknownEndpoint,
    /// The endpoint id is taken in that conference.
    EndpointAlreadyExists,
    /// A worker is full or did not answer in time.
    Unavailable,
}

/// ICE credentials (RFC 8445 5.3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IceCredentials {
    /// Username fragment.
    pub ufrag: String,
    /// Password.
    pub pwd: String,
}

/// A DTLS certificate fingerprint (RFC 8122 5).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function; the bridge checks `sha-256`.
    pub hash: String,
    /// Colon-separated upper-case hex.
    pub value: String,
    /// DTLS setup role of the side the fingerprint belongs to (`active`, `passive`, `actpass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
}

/// What the bridge allocated for an endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointAllocation {
    /// Conference id.
    pub conference: String,
    /// Endpoint id.
    pub endpoint: String,
    /// The worker serving it.
    pub worker: usize,
    /// The bridge's ICE credentials for this endpoint (ICE-lite).
    pub ice: IceCredentials,
    /// The bridge's DTLS certificate fingerprint; the bridge is the DTLS server
    /// (`setup: passive`).
    pub fingerprint: Fingerprint,
    /// Host candidates on the worker's port.
    pub candidates: Vec<Candidate>,
}

/// An ICE candidate (RFC 8839 5.1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Candidate {
    /// Foundation.
    pub foundation: String,
    /// Component id (1: RTP; rtcp-mux is required).
    pub component: u16,
    /// `udp`.
    pub protocol: String,
    /// Priority (RFC 8445 5.1.2.1).
    pub priority: u32,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: u16,
    /// `host`.
    #[serde(rename = "type")]
    pub typ: String,
}

/// Which of an endpoint's media the bridge drops instead of forwarding.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForceMute {
    /// Drop its audio.
    #[serde(default)]
    pub audio: bool,
    /// Drop its video.
    #[serde(default)]
    pub video: bool,
}

/// Media kind of a source.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// A participant's media source: its SSRCs and how they group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaSource {
    /// Audio or video.
    pub kind: MediaKind,
    /// Every SSRC of the source (all simulcast layers and their RTX).
    pub ssrcs: Vec<u32>,
    /// SIM / FID groups (RFC 5576).
    #[serde(default)]
    pub groups: Vec<SsrcGroup>,
    /// Source name (e.g. `endpoint-v0`), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An ssrc-group (RFC 5576 4.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SsrcGroup {
    /// `SIM` or `FID`.
    pub semantics: String,
    /// Member SSRCs, in order.
    pub ssrcs: Vec<u32>,
}

/// Unsolicited news from the bridge.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// ICE and DTLS completed: media can flow.
    EndpointConnected {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// The negotiated SRTP profile.
        profile: Profile,
        /// Milliseconds from the DTLS handshake's start to its end.
        handshake_ms: u64,
    },
    /// The endpoint is gone (consent lapsed, or the conference expired).
    EndpointExpired {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// ICE or DTLS failed for the endpoint; it stays allocated until expired.
    EndpointFailed {
        /// Conference id.
        conference: String,
        /// Endpoint id.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Packet and byte counters with drops by reason.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets received and authenticated.
    pub rtp_in: u64,
    /// RTCP packets received and authenticated.
    pub rtcp_in: u64,
    /// RTP packets received on an SSRC declared as audio.
    #[serde(default)]
    pub audio_in: u64,
    /// RTP packets received on an SSRC declared as video.
    #[serde(default)]
    pub video_in: u64,
    /// RTP packets expected from the senders' sequence numbers (RFC 3550 A.3: how far
    /// each stream's highest sequence number advanced). `rtp_expected - rtp_in` over an
    /// interval is what was lost on the way in.
    #[serde(default)]
    pub rtp_expected: u64,
    /// SR/RR reception report blocks received about streams of the conference.
    #[serde(default)]
    pub report_blocks: u64,
    /// Sum of those blocks' fraction-lost fields (each /256): the mean over an interval
    /// is the loss receivers see on what the bridge forwards to them (end to end).
    #[serde(default)]
    pub report_fraction_lost: u64,
    /// Round trips measured from reception reports that name a sender report the bridge
    /// forwarded (see `rtt`).
    #[serde(default)]
    pub rtt_samples: u64,
    /// Sum of those round trips, microseconds: over an interval, the sum's growth over
    /// the samples' is the mean round trip between the bridge and its endpoints.
    #[serde(default)]
    pub rtt_micros: u64,
    /// Drops, by reason.
    pub drops: Drops,
}

/// Dropped datagrams by reason.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drops {
    /// From an address no endpoint is bound to.
    pub unbound_source: u64,
    /// STUN that does not parse, or is not a binding request for a known ufrag.
    pub stun_malformed: u64,
    /// STUN binding request whose MESSAGE-INTEGRITY or USERNAME does not check.
    pub stun_integrity: u64,
    /// SRTP/SRTCP whose authentication tag does not check.
    pub srtp_auth: u64,
    /// SRTP/SRTCP already received (replay window).
    pub srtp_replay: u64,
    /// Not STUN, DTLS or RTP/RTCP by its first byte, or a header that does not parse.
    pub malformed: u64,
    /// RTP/RTCP before the endpoint's DTLS handshake finished.
    pub not_connected: u64,
    /// DTLS from an endpoint whose remote fingerprint is not known yet.
    pub dtls_no_fingerprint: u64,
    /// Send queue or DTLS queue full.
    pub queue_full: u64,
    /// The kernel refused a send.
    pub send_failed: u64,
    /// Media of a force-muted endpoint.
    #[serde(default)]
    pub muted: u64,
    /// Dropped by the kernel on the way into the worker's AF_XDP socket: its receive
    /// ring full or no free frame (the worker fell behind, or stalled, for longer than
    /// its ring holds: `--xdp-frames`), or a frame too large for a UMEM frame. Kernel
    /// sockets buffer more and count their overflows in `/proc/net/udp` instead.
    #[serde(default)]
    pub xdp_rx: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Self) {
        self.packets_in += other.packets_in;
        self.bytes_in += other.bytes_in;
        self.packets_out += other.packets_out;
        self.bytes_out += other.bytes_out;
        self.rtp_in += other.rtp_in;
        self.rtcp_in += other.rtcp_in;
        self.audio_in += other.audio_in;
        self.video_in += other.video_in;
        self.rtp_expected += other.rtp_expected;
        self.report_blocks += other.report_blocks;
        self.report_fraction_lost += other.report_fraction_lost;
        self.rtt_samples += other.rtt_samples;
        self.rtt_micros += other.rtt_micros;
        let (d, o) = (&mut self.drops, &other.drops);
        d.unbound_source += o.unbound_source;
        d.stun_malformed += o.stun_malformed;
        d.stun_integrity += o.stun_integrity;
        d.srtp_auth += o.srtp_auth;
        d.srtp_replay += o.srtp_replay;
        d.malformed += o.malformed;
        d.not_connected += o.not_connected;
        d.dtls_no_fingerprint += o.dtls_no_fingerprint;
        d.queue_full += o.queue_full;
        d.send_failed += o.send_failed;
        d.muted += o.muted;
        d.xdp_rx += o.xdp_rx;
    }
}

/// One worker's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// The worker's UDP port.
    pub port: u16,
    /// `uring` or `mmsg`.
    pub io_backend: String,
    /// Conferences placed on it.
    pub conferences: usize,
    /// Endpoints on it.
    pub endpoints: usize,
    /// Endpoints with ICE and DTLS done.
    pub connected_endpoints: usize,
    /// Loop turns and syscalls, for judging batching.
    pub loop_turns: u64,
    /// Syscalls the backend made.
    pub syscalls: u64,
    /// Counters of the worker as a whole (including drops not tied to an endpoint).
    pub counters: Counters,
}

/// One endpoint's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStats {
    /// Conference id.
    pub conference: String,
    /// Endpoint id.
    pub endpoint: String,
    /// ICE and DTLS done.
    pub connected: bool,
    /// The remote address it is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Its counters: `*_in` from the participant, `*_out` to it.
    pub counters: Counters,
}

/// Answer to a stats request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// `uring` or `mmsg` (the workers' backend).
    pub io_backend: String,
    /// Conferences.
    pub conferences: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Sum of all workers.
    pub totals: Counters,
    /// DTLS handshakes that completed.
    pub dtls_succeeded: u64,
    /// DTLS handshakes that failed.
    pub dtls_failed: u64,
    /// Per worker.
    pub workers: Vec<WorkerStats>,
    /// Per endpoint.
    pub endpoint_stats: Vec<EndpointStats>,
}

/// Everything the bridge holds, for a reconnecting controller.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StateSnapshot {
    /// Conferences with their endpoints.
    pub conferences: Vec<ConferenceState>,
}

/// One conference in a [`StateSnapshot`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConferenceState {
    /// Conference id.
    pub conference: String,
    /// Its worker.
    pub worker: usize,
    /// Its endpoints.
    pub endpoints: Vec<EndpointState>,
}

/// One endpoint in a [`StateSnapshot`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointState {
    /// Endpoint id.
    pub endpoint: String,
    /// What the bridge allocated for it.
    pub allocation: EndpointAllocation,
    /// ICE and DTLS done.
    pub connected: bool,
    /// Its declared media sources.
    pub sources: Vec<MediaSource>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let line = r#"{"id":7,"type":"create-endpoint","conference":"c1","endpoint":"e1"}"#;
        let req: Request = serde_json::from_str(line).unwrap();
        assert_eq!(
            req,
            Request {
                id: 7,
                body: RequestBody::CreateEndpoint {
                    conference: "c1".into(),
                    endpoint: "e1".into()
                }
            }
        );
        let back = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&back).unwrap(), req);
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"type":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"id":"x","type":"stats"}"#).is_err());
    }

    #[test]
    fn bridge_lines_round_trip() {
        let msgs = [
            FromBridge::Response {
                id: 1,
                result: Reply::Done,
            },
            FromBridge::Error {
                id: Some(2),
                code: ErrorCode::ConferenceNotFound,
                message: "no conference c9".into(),
            },
            FromBridge::Event {
                event: Event::EndpointExpired {
                    conference: "c".into(),
                    endpoint: "e".into(),
                    reason: "consent".into(),
                },
            },
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<FromBridge>(&s).unwrap(), m, "{s}");
        }
    }
}

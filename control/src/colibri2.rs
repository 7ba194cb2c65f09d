//! Colibri2 over HTTP in Jitsi Videobridge's JSON wire format (`conference-modify` in,
//! `conference-modified` out; field names as JVB's Colibri2JSONSerializer writes them),
//! and its translation to and from the bridge link. No I/O here.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use viaduct_bridge::command::protocol::{
    EndpointAllocation, Fingerprint, ForceMute, IceCredentials, MediaKind, MediaSource, SsrcGroup,
};

/// A `conference-modify` request body.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConferenceModify {
    /// The conference (required; in PATCH it comes from the path).
    #[serde(default)]
    pub meeting_id: Option<String>,
    /// The conference's name (a MUC JID in Jitsi), informational.
    #[serde(default)]
    pub name: Option<String>,
    /// Create the conference.
    #[serde(default)]
    pub create: bool,
    /// Expire the conference.
    #[serde(default)]
    pub expire: bool,
    /// Endpoints to create, update or expire.
    #[serde(default)]
    pub endpoints: Vec<EndpointModify>,
    /// Relays (cascading): not supported; a non-empty list is refused.
    #[serde(default)]
    pub relays: Vec<Value>,
    /// Exports to transcribers/recorders: not supported; a non-empty list is refused.
    #[serde(default)]
    pub connects: Vec<Value>,
}

/// One endpoint in a `conference-modify`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointModify {
    /// Endpoint id.
    pub id: String,
    /// Create it.
    #[serde(default)]
    pub create: bool,
    /// Expire it.
    #[serde(default)]
    pub expire: bool,
    /// Its transport: the client's ICE credentials and DTLS fingerprint.
    #[serde(default)]
    pub transport: Option<TransportModify>,
    /// Its sources, with SSRCs and groups.
    #[serde(default)]
    pub sources: Option<Vec<Source>>,
    /// Force-mute.
    #[serde(default)]
    pub force_mute: Option<ForceMuteJson>,
    /// Accepted and ignored (the bridge relays every payload type).
    #[serde(default)]
    pub medias: Option<Value>,
    /// Accepted; last-N is not implemented yet (everyone is forwarded).
    #[serde(default)]
    pub initial_last_n: Option<Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub stats_id: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub muc_role: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
}

/// `transport` of an endpoint: the ICE-UDP transport and flags.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TransportModify {
    /// The client's ICE-UDP transport.
    #[serde(default)]
    pub transport: Option<IceUdpTransport>,
    /// Whether the bridge should be ICE-controlling; the bridge is ICE-lite and never
    /// controls, so `true` is accepted and has no effect.
    #[serde(default)]
    pub ice_controlling: Option<bool>,
    /// Accepted and ignored (every endpoint of a worker shares its port).
    #[serde(default)]
    pub use_unique_port: Option<bool>,
    /// SCTP data channels: not supported yet; ignored.
    #[serde(default)]
    pub sctp: Option<Value>,
}

/// An ICE-UDP transport (XEP-0176 in JSON).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct IceUdpTransport {
    /// ICE ufrag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufrag: Option<String>,
    /// ICE password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
    /// rtcp-mux (required: the bridge muxes RTP and RTCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp_mux: Option<bool>,
    /// DTLS fingerprints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<FingerprintJson>,
    /// Client candidates: accepted and ignored (ICE-lite learns addresses from checks).
    #[serde(default, skip_serializing)]
    pub candidates: Option<Value>,
}

/// A DTLS fingerprint as colibri2 writes it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct FingerprintJson {
    /// Colon-separated hex.
    pub fingerprint: String,
    /// `sha-256` (others are refused).
    pub hash: String,
    /// DTLS setup role of the side the fingerprint belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
}

/// A media source and its SSRCs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Source {
    /// `audio` or `video`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Source name, e.g. `79f0273d-v0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// SSRCs: plain numbers, or `{ssrc, name, parameters}` objects.
    #[serde(default)]
    pub sources: Vec<SsrcEntry>,
    /// SIM/FID groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssrc_groups: Vec<SsrcGroupJson>,
}

/// One SSRC of a source, in either of colibri2's spellings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SsrcEntry {
    /// `803354056`.
    Plain(u32),
    /// `{"ssrc": 803354056, "name": "…"}`.
    Described {
        /// The SSRC.
        ssrc: u32,
        /// Its name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Extra parameters (msid…), kept as they came.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameters: Option<Value>,
    },
}

impl SsrcEntry {
    fn ssrc(&self) -> u32 {
        match self {
            Self::Plain(s) | Self::Described { ssrc: s, .. } => *s,
        }
    }
}

/// An ssrc-group.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SsrcGroupJson {
    /// `SIM` or `FID`.
    pub semantics: String,
    /// Member SSRCs.
    pub sources: Vec<u32>,
}

/// `force-mute`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct ForceMuteJson {
    /// Drop the endpoint's audio.
    #[serde(default)]
    pub audio: bool,
    /// Drop the endpoint's video.
    #[serde(default)]
    pub video: bool,
}

impl From<ForceMuteJson> for ForceMute {
    fn from(m: ForceMuteJson) -> Self {
        Self {
            audio: m.audio,
            video: m.video,
        }
    }
}

/// A `conference-modified` response body.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ConferenceModified {
    /// Endpoints the request touched; created ones carry the bridge's transport.
    pub endpoints: Vec<EndpointModified>,
    /// The bridge's own (feedback) sources, when endpoints were created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<FeedbackSource>,
}

/// One endpoint in a response.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct EndpointModified {
    /// Endpoint id.
    pub id: String,
    /// The bridge's side of the transport (on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportModified>,
    /// Set when the endpoint was expired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expire: bool,
}

/// `transport` in a response.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TransportModified {
    /// The bridge's ICE-UDP transport.
    pub transport: BridgeTransport,
}

/// The bridge's ICE-UDP transport, as JVB writes it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BridgeTransport {
    /// `urn:xmpp:jingle:transports:ice-udp:1`.
    pub xmlns: String,
    /// ICE ufrag.
    pub ufrag: String,
    /// ICE password.
    pub pwd: String,
    /// Always true.
    pub rtcp_mux: bool,
    /// The bridge's certificate fingerprint.
    pub fingerprints: Vec<FingerprintJson>,
    /// Host candidates.
    pub candidates: Vec<CandidateJson>,
}

/// A candidate; JVB writes every number as a string.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CandidateJson {
    /// Foundation.
    pub foundation: String,
    /// `"1"`.
    pub component: String,
    /// `udp`.
    pub protocol: String,
    /// Priority.
    pub priority: String,
    /// Address.
    pub ip: String,
    /// Port.
    pub port: String,
    /// `host`.
    #[serde(rename = "type")]
    pub typ: String,
    /// `"0"`.
    pub generation: String,
    /// `"0"`.
    pub network: String,
    /// A unique id.
    pub id: String,
}

/// A bridge-owned source announced to the focus (JVB's `jvb-a0` / `jvb-v0`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct FeedbackSource {
    /// `audio` or `video`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `jvb-a0` / `jvb-v0`.
    pub id: String,
    /// Its SSRC.
    pub sources: Vec<FeedbackSsrc>,
}

/// One SSRC of a [`FeedbackSource`].
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct FeedbackSsrc {
    /// SSRC.
    pub ssrc: u32,
    /// Name.
    pub name: String,
}

/// A request the bridge cannot serve as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Colibri2Error {
    /// A value is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Asked for something Viaduct does not do.
    #[error("{0}")]
    NotImplemented(String),
}

/// The bridge's transport for a created endpoint.
pub fn transport_of(alloc: &EndpointAllocation) -> TransportModified {
    TransportModified {
        transport: BridgeTransport {
            xmlns: "urn:xmpp:jingle:transports:ice-udp:1".into(),
            ufrag: alloc.ice.ufrag.clone(),
            pwd: alloc.ice.pwd.clone(),
            rtcp_mux: true,
            fingerprints: vec![FingerprintJson {
                fingerprint: alloc.fingerprint.value.clone(),
                hash: alloc.fingerprint.hash.clone(),
                setup: alloc.fingerprint.setup.clone(),
            }],
            candidates: alloc
                .candidates
                .iter()
                .enumerate()
                .map(|(i, c)| CandidateJson {
                    foundation: c.foundation.clone(),
                    component: c.component.to_string(),
                    protocol: c.protocol.clone(),
                    priority: c.priority.to_string(),
                    ip: c.ip.clone(),
                    port: c.port.to_string(),
                    typ: c.typ.clone(),
                    generation: "0".into(),
                    network: "0".into(),
                    id: format!("{}-{}-{i}", alloc.endpoint, alloc.ice.ufrag),
                })
                .collect(),
        },
    }
}

/// The remote ICE credentials and fingerprint in an endpoint's `transport`, checked.
pub fn remote_transport(
    t: &TransportModify,
) -> Result<(Option<IceCredentials>, Option<Fingerprint>), Colibri2Error> {
    let Some(ice) = &t.transport else {
        return Ok((None, None));
    };
    if ice.rtcp_mux == Some(false) {
        return Err(Colibri2Error::NotImplemented("rtcp-mux is required".into()));
    }
    let creds = match (&ice.ufrag, &ice.pwd) {
        (Some(ufrag), Some(pwd)) => {
            // RFC 8445 5.3: ufrag 4+ characters, pwd 22+.
            if ufrag.len() < 4 || ufrag.len() > 256 || pwd.len() < 22 || pwd.len() > 256 {
                return Err(Colibri2Error::BadRequest(
                    "ICE ufrag must be 4-256 and pwd 22-256 characters".into(),
                ));
            }
            Some(IceCredentials {
                ufrag: ufrag.clone(),
                pwd: pwd.clone(),
            })
        }
        (None, None) => None,
        _ => {
            return Err(Colibri2Error::BadRequest(
                "ICE ufrag and pwd come together".into(),
            ))
        }
    };
    let fingerprint = match ice
        .fingerprints
        .iter()
        .find(|f| f.hash.eq_ignore_ascii_case("sha-256"))
    {
        Some(f) => {
            if f.setup.as_deref() == Some("passive") {
                return Err(Colibri2Error::NotImplemented(
                    "the bridge is the DTLS server: the client must be setup active (or actpass)"
                        .into(),
                ));
            }
            Some(Fingerprint {
                hash: "sha-256".into(),
                value: f.fingerprint.clone(),
                setup: f.setup.clone(),
            })
        }
        None if ice.fingerprints.is_empty() => None,
        None => {
            return Err(Colibri2Error::BadRequest(
                "only sha-256 fingerprints are supported".into(),
            ))
        }
    };
    Ok((creds, fingerprint))
}

/// Colibri2 sources as the bridge link's media sources.
pub fn media_sources(sources: &[Source]) -> Result<Vec<MediaSource>, Colibri2Error> {
    sources
        .iter()
        .map(|s| {
            let kind = match s.kind.to_ascii_lowercase().as_str() {
                "audio" => MediaKind::Audio,
                "video" => MediaKind::Video,
                other => {
                    return Err(Colibri2Error::BadRequest(format!(
                        "source type {other:?}: audio or video"
                    )))
                }
            };
            let ssrcs: Vec<u32> = s.sources.iter().map(SsrcEntry::ssrc).collect();
            for g in &s.ssrc_groups {
                if let Some(stray) = g.sources.iter().find(|x| !ssrcs.contains(x)) {
                    return Err(Colibri2Error::BadRequest(format!(
                        "ssrc-group {} names SSRC {stray} that is not among the source's SSRCs",
                        g.semantics
                    )));
                }
            }
            Ok(MediaSource {
                kind,
                ssrcs,
                groups: s
                    .ssrc_groups
                    .iter()
                    .map(|g| SsrcGroup {
                        semantics: g.semantics.clone(),
                        ssrcs: g.sources.clone(),
                    })
                    .collect(),
                name: s.id.clone(),
            })
        })
        .collect()
}

/// The bridge's feedback sources: fixed SSRCs per service instance, as JVB announces
/// `jvb-a0` and `jvb-v0`.
pub fn feedback_sources(audio_ssrc: u32, video_ssrc: u32) -> Vec<FeedbackSource> {
    vec![
        FeedbackSource {
            kind: "audio".into(),
            id: "jvb-a0".into(),
            sources: vec![FeedbackSsrc {
                ssrc: audio_ssrc,
                name: "jvb-a0".into(),
            }],
        },
        FeedbackSource {
            kind: "video".into(),
            id: "jvb-v0".into(),
            sources: vec![FeedbackSsrc {
                ssrc: video_ssrc,
                name: "jvb-v0".into(),
            }],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JVB's documented create request (jitsi-xmpp-extensions' serializer test).
    const CREATE: &str = r#"{ "meeting-id": "beccf2ed-5441-4bfe-96d0-f0cb9d5b3e6a", "name": "room@muc.example", "create": true,
      "rtcstats-enabled": false,
      "endpoints": [{
        "create": true, "id": "79f0273d", "stats-id": "Garett-w1o", "muc-role": "moderator",
        "medias": [{ "type": "audio",
          "payload-types": [{"name":"opus","id":"111","channels":"2","clockrate":"48000",
                             "parameters":{"useinbandfec":"1","minptime":"10"},
                             "rtcp-fbs":[{"type":"transport-cc"}]}],
          "rtp-hdrexts": [{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
          "extmap-allow-mixed": true }],
        "transport": { "ice-controlling": true, "use-unique-port": false,
                       "sctp": {"port": 5000, "role": "SERVER"} },
        "capabilities": ["source-names", "ssrc-rewriting", "private-address-connectivity"],
        "force-mute": {"audio": true, "video": false},
        "initial-last-n": {"value": 13},
        "sources": [{"type":"video","id":"79f0273d-v0","sources":[803354056]}] }] }"#;

    /// JVB's documented update with the client's answer and SIM/FID groups.
    const UPDATE: &str = r#"{ "meeting-id": "x", "endpoints": [{ "id": "79f0273e",
      "transport": {"transport": {"ufrag":"sXoJ","pwd":"0123456789abcdefghijkl","rtcp-mux":true,
         "fingerprints":[{"fingerprint":"BB:50:00","hash":"sha-256","setup":"active"}]}},
      "sources": [{"type":"video","id":"79f0273e-v0",
         "sources":[{"ssrc":437485591,"name":"79f0273e-v0"},{"ssrc":1565856603},{"ssrc":1153580044},{"ssrc":2958490935}],
         "ssrc-groups":[{"semantics":"SIM","sources":[437485591,1565856603,1153580044]},
                        {"semantics":"FID","sources":[437485591,2958490935]}]}] }] }"#;

    #[test]
    fn parses_jvb_create() {
        let m: ConferenceModify = serde_json::from_str(CREATE).unwrap();
        assert!(m.create);
        assert_eq!(
            m.meeting_id.as_deref(),
            Some("beccf2ed-5441-4bfe-96d0-f0cb9d5b3e6a")
        );
        let ep = &m.endpoints[0];
        assert!(ep.create);
        assert!(ep.force_mute.unwrap().audio);
        let src = media_sources(ep.sources.as_ref().unwrap()).unwrap();
        assert_eq!(src[0].kind, MediaKind::Video);
        assert_eq!(src[0].ssrcs, vec![803354056]);
        let (ice, fp) = remote_transport(ep.transport.as_ref().unwrap()).unwrap();
        assert!(ice.is_none() && fp.is_none());
    }

    #[test]
    fn parses_jvb_update_with_groups() {
        let m: ConferenceModify = serde_json::from_str(UPDATE).unwrap();
        let ep = &m.endpoints[0];
        let (ice, fp) = remote_transport(ep.transport.as_ref().unwrap()).unwrap();
        assert_eq!(ice.unwrap().ufrag, "sXoJ");
        assert_eq!(fp.unwrap().value, "BB:50:00");
        let src = media_sources(ep.sources.as_ref().unwrap()).unwrap();
        assert_eq!(src[0].ssrcs.len(), 4);
        assert_eq!(src[0].groups[0].semantics, "SIM");
        assert_eq!(src[0].groups[1].ssrcs, vec![437485591, 2958490935]);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let bad_group: Vec<Source> = serde_json::from_str(
            r#"[{"type":"video","sources":[1,2],"ssrc-groups":[{"semantics":"FID","sources":[1,9]}]}]"#,
        )
        .unwrap();
        assert!(media_sources(&bad_group).is_err());
        let bad_kind: Vec<Source> =
            serde_json::from_str(r#"[{"type":"data","sources":[1]}]"#).unwrap();
        assert!(media_sources(&bad_kind).is_err());
        let t: TransportModify = serde_json::from_str(
            r#"{"transport":{"ufrag":"abcd","pwd":"short","fingerprints":[]}}"#,
        )
        .unwrap();
        assert!(matches!(
            remote_transport(&t),
            Err(Colibri2Error::BadRequest(_))
        ));
        let t: TransportModify = serde_json::from_str(
            r#"{"transport":{"fingerprints":[{"fingerprint":"AA","hash":"sha-1"}]}}"#,
        )
        .unwrap();
        assert!(remote_transport(&t).is_err());
        let t: TransportModify =
            serde_json::from_str(r#"{"transport":{"rtcp-mux":false}}"#).unwrap();
        assert!(matches!(
            remote_transport(&t),
            Err(Colibri2Error::NotImplemented(_))
        ));
    }

    #[test]
    fn response_uses_jvb_field_names() {
        let alloc = EndpointAllocation {
            conference: "c".into(),
            endpoint: "e".into(),
            worker: 0,
            ice: IceCredentials {
                ufrag: "uf".into(),
                pwd: "pw".into(),
            },
            fingerprint: Fingerprint {
                hash: "sha-256".into(),
                value: "AA:BB".into(),
                setup: Some("passive".into()),
            },
            candidates: vec![viaduct_bridge::command::protocol::Candidate {
                foundation: "1".into(),
                component: 1,
                protocol: "udp".into(),
                priority: 2130706431,
                ip: "127.0.0.1".into(),
                port: 10000,
                typ: "host".into(),
            }],
        };
        let v = serde_json::to_value(EndpointModified {
            id: "e".into(),
            transport: Some(transport_of(&alloc)),
            expire: false,
        })
        .unwrap();
        let t = &v["transport"]["transport"];
        assert_eq!(t["xmlns"], "urn:xmpp:jingle:transports:ice-udp:1");
        assert_eq!(t["rtcp-mux"], true);
        assert_eq!(t["fingerprints"][0]["fingerprint"], "AA:BB");
        assert_eq!(t["candidates"][0]["port"], "10000");
        assert_eq!(t["candidates"][0]["priority"], "2130706431");
        assert_eq!(t["candidates"][0]["type"], "host");
        assert!(v.get("expire").is_none());
    }
}

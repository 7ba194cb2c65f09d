//! SDP for real browsers, sans-IO: the bridge side's offers (Unified Plan, one BUNDLE
//! group, ICE-lite, `setup:actpass`, rtcp-mux) and a small parser for the answers.
//!
//! Layout of every offer: m-line 0 (mid `0`) is the participant's own audio and m-line
//! 1 (mid `1`) its own video, both `recvonly` from the bridge's side; every later
//! m-line carries one remote source, `sendonly`, with its SSRCs, FID group and `msid`
//! (stream id = the remote endpoint id). An m-line whose source left becomes
//! `inactive` and is reused by the next source of its kind, so the SDP does not grow
//! forever. Every m-line offers the same codecs and header-extension ids: the bridge
//! forwards packets as their senders wrote them. No `transport-cc` (the bridge relays
//! feedback rather than terminating it) and no `mid`/`rid` header extensions (a
//! forwarded MID would steer a remote stream into the wrong transceiver).

use std::fmt::Write as _;

use viaduct_bridge::command::protocol::{
    Candidate, EndpointAllocation, Fingerprint, IceCredentials, MediaKind, MediaSource, SsrcGroup,
};

/// The mid of the participant's own audio m-line.
pub const OWN_AUDIO_MID: &str = "0";
/// The mid of the participant's own video m-line.
pub const OWN_VIDEO_MID: &str = "1";

/// Header extensions offered on every audio m-line: (id, URI).
const AUDIO_EXTENSIONS: &[(u8, &str)] = &[(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")];
/// Header extensions offered on every video m-line.
const VIDEO_EXTENSIONS: &[(u8, &str)] = &[
    (
        3,
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    ),
    (4, "urn:3gpp:video-orientation"),
];

/// Most SSRCs accepted in one answered m-line (3 simulcast layers with RTX fit).
const MAX_SSRCS_PER_SECTION: usize = 16;
/// Most m-lines accepted in an answer.
const MAX_SECTIONS: usize = 1024;

/// A remote participant's source as one receiver's offer names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSource {
    /// The endpoint that sends it (the `msid` stream id).
    pub endpoint: String,
    /// Its SSRCs and groups.
    pub source: MediaSource,
}

impl RemoteSource {
    fn kind(&self) -> MediaKind {
        self.source.kind
    }
}

/// One m-line after the participant's own two.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    kind: MediaKind,
    source: Option<RemoteSource>,
}

/// One participant's side of the negotiation: which remote source sits in which
/// m-line, and the offer's version.
#[derive(Clone, Debug)]
pub struct Negotiation {
    session_id: u64,
    version: u64,
    slots: Vec<Slot>,
}

impl Negotiation {
    /// A negotiation with no remote sources yet.
    pub fn new(session_id: u64) -> Self {
        Self {
            session_id,
            version: 0,
            slots: Vec::new(),
        }
    }

    /// Places `sources` (every remote source the participant should receive) into
    /// m-lines: a source keeps its m-line, a departed source's m-line goes inactive,
    /// and a new source takes the first inactive m-line of its kind or a new one.
    /// Returns whether anything changed (a new offer is due).
    pub fn update(&mut self, sources: &[RemoteSource]) -> bool {
        let before = self.slots.clone();
        let same = |a: &RemoteSource, b: &RemoteSource| {
            a.endpoint == b.endpoint && a.source.kind == b.source.kind
        };
        for slot in &mut self.slots {
            if let Some(current) = &slot.source {
                slot.source = sources.iter().find(|s| same(s, current)).cloned();
            }
        }
        for s in sources {
            if self
                .slots
                .iter()
                .any(|slot| slot.source.as_ref().is_some_and(|c| same(c, s)))
            {
                continue;
            }
            match self
                .slots
                .iter_mut()
                .find(|slot| slot.source.is_none() && slot.kind == s.kind())
            {
                Some(free) => free.source = Some(s.clone()),
                None => self.slots.push(Slot {
                    kind: s.kind(),
                    source: Some(s.clone()),
                }),
            }
        }
        self.slots != before
    }

    /// The number of m-lines the next offer has.
    pub fn m_lines(&self) -> usize {
        2 + self.slots.len()
    }

    /// Writes the next offer for the bridge's side of `alloc`.
    pub fn offer(&mut self, alloc: &EndpointAllocation) -> String {
        self.version += 1;
        let mut sdp = String::with_capacity(2048 + 1536 * self.slots.len());
        let mids: Vec<String> = (0..self.m_lines()).map(|i| i.to_string()).collect();
        let _ = write!(
            sdp,
            "v=0\r\no=- {} {} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\na=ice-lite\r\na=msid-semantic: WMS *\r\n",
            self.session_id,
            self.version,
            mids.join(" ")
        );
        media(
            &mut sdp,
            alloc,
            MediaKind::Audio,
            OWN_AUDIO_MID,
            "recvonly",
            None,
        );
        media(
            &mut sdp,
            alloc,
            MediaKind::Video,
            OWN_VIDEO_MID,
            "recvonly",
            None,
        );
        for (i, slot) in self.slots.iter().enumerate() {
            let mid = (i + 2).to_string();
            match &slot.source {
                Some(s) => media(&mut sdp, alloc, slot.kind, &mid, "sendonly", Some(s)),
                None => media(&mut sdp, alloc, slot.kind, &mid, "inactive", None),
            }
        }
        sdp
    }
}

fn media(
    sdp: &mut String,
    alloc: &EndpointAllocation,
    kind: MediaKind,
    mid: &str,
    direction: &str,
    source: Option<&RemoteSource>,
) {
    let first = alloc.candidates.first();
    let port = first.map_or(9, |c| c.port);
    let (family, ip) = match first {
        Some(c) if c.ip.contains(':') => ("IP6", c.ip.as_str()),
        Some(c) => ("IP4", c.ip.as_str()),
        None => ("IP4", "0.0.0.0"),
    };
    let (name, payloads, extensions) = match kind {
        MediaKind::Audio => ("audio", "111", AUDIO_EXTENSIONS),
        MediaKind::Video => ("video", "100 96 102 103", VIDEO_EXTENSIONS),
    };
    let _ = write!(
        sdp,
        "m={name} {port} UDP/TLS/RTP/SAVPF {payloads}\r\nc=IN {family} {ip}\r\n"
    );
    let _ = write!(
        sdp,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{} {}\r\na=setup:actpass\r\na=mid:{mid}\r\n",
        alloc.ice.ufrag, alloc.ice.pwd, alloc.fingerprint.hash, alloc.fingerprint.value
    );
    for (id, uri) in extensions {
        let _ = write!(sdp, "a=extmap:{id} {uri}\r\n");
    }
    let _ = write!(sdp, "a={direction}\r\n");
    if let Some(s) = source {
        let _ = write!(sdp, "a=msid:{} {}\r\n", s.endpoint, track_id(s));
    }
    sdp.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
    match kind {
        MediaKind::Audio => {
            sdp.push_str("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n")
        }
        MediaKind::Video => {
            for (pt, codec, fmtp) in [
                (100u8, "VP8/90000", None),
                (
                    102,
                    "H264/90000",
                    Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
                ),
            ] {
                let _ = write!(sdp, "a=rtpmap:{pt} {codec}\r\n");
                for fb in ["goog-remb", "ccm fir", "nack", "nack pli"] {
                    let _ = write!(sdp, "a=rtcp-fb:{pt} {fb}\r\n");
                }
                if let Some(f) = fmtp {
                    let _ = write!(sdp, "a=fmtp:{pt} {f}\r\n");
                }
            }
            sdp.push_str("a=rtpmap:96 rtx/90000\r\na=fmtp:96 apt=100\r\n");
            sdp.push_str("a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n");
        }
    }
    if let Some(s) = source {
        for g in &s.source.groups {
            let members: Vec<String> = g.ssrcs.iter().map(u32::to_string).collect();
            let _ = write!(
                sdp,
                "a=ssrc-group:{} {}\r\n",
                g.semantics,
                members.join(" ")
            );
        }
        for ssrc in &s.source.ssrcs {
            let _ = write!(
                sdp,
                "a=ssrc:{ssrc} cname:{}\r\na=ssrc:{ssrc} msid:{} {}\r\n",
                s.endpoint,
                s.endpoint,
                track_id(s)
            );
        }
    }
    for c in &alloc.candidates {
        candidate(sdp, c);
    }
    sdp.push_str("a=end-of-candidates\r\n");
}

fn track_id(s: &RemoteSource) -> String {
    match s.source.kind {
        MediaKind::Audio => format!("{}-audio", s.endpoint),
        MediaKind::Video => format!("{}-video", s.endpoint),
    }
}

fn candidate(sdp: &mut String, c: &Candidate) {
    let _ = write!(
        sdp,
        "a=candidate:{} {} {} {} {} {} typ {} generation 0\r\n",
        c.foundation, c.component, c.protocol, c.priority, c.ip, c.port, c.typ
    );
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Not SDP at all.
    #[error("not an SDP description: {0}")]
    Syntax(String),
    /// A required attribute is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An attribute has a value the bridge cannot use.
    #[error("bad {what}: {detail}")]
    Bad {
        /// Which attribute.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The answer does not match the offer's m-lines.
    #[error("the answer has {got} m-lines, the offer had {want}")]
    MLineCount {
        /// In the answer.
        got: usize,
        /// In the offer.
        want: usize,
    },
}

/// What the bridge needs from an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The participant's ICE credentials.
    pub ice: IceCredentials,
    /// The participant's DTLS certificate fingerprint (sha-256), with its role.
    pub fingerprint: Fingerprint,
    /// The participant's own sources (audio and video it sends).
    pub sources: Vec<MediaSource>,
}

#[derive(Debug, Default)]
struct Section {
    kind: String,
    mid: Option<String>,
    direction: Option<String>,
    ufrag: Option<String>,
    pwd: Option<String>,
    fingerprints: Vec<(String, String)>,
    setup: Option<String>,
    ssrcs: Vec<u32>,
    groups: Vec<SsrcGroup>,
}

/// Parses an answer to an offer of `m_lines` m-lines.
pub fn parse_answer(sdp: &str, m_lines: usize) -> Result<Answer, SdpError> {
    let mut session = Section::default();
    let mut sections: Vec<Section> = Vec::new();
    let mut first = true;
    for raw in sdp.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| SdpError::Syntax(format!("line {:?}", truncate(line))))?;
        if first {
            if key != "v" || value != "0" {
                return Err(SdpError::Syntax("it must start with v=0".into()));
            }
            first = false;
            continue;
        }
        match key {
            "m" => {
                if sections.len() >= MAX_SECTIONS {
                    return Err(SdpError::Syntax("too many m-lines".into()));
                }
                let kind = value.split(' ').next().unwrap_or("").to_owned();
                sections.push(Section {
                    kind,
                    ..Default::default()
                });
            }
            "a" => {
                let target = sections.last_mut().unwrap_or(&mut session);
                attribute(target, value)?;
            }
            _ => {}
        }
    }
    if first {
        return Err(SdpError::Syntax("empty".into()));
    }
    if sections.len() != m_lines {
        return Err(SdpError::MLineCount {
            got: sections.len(),
            want: m_lines,
        });
    }
    // BUNDLE: the transport is the first m-line's (or the session's).
    let lead = &sections[0];
    let ufrag = lead
        .ufrag
        .clone()
        .or_else(|| session.ufrag.clone())
        .ok_or(SdpError::Missing("a=ice-ufrag"))?;
    let pwd = lead
        .pwd
        .clone()
        .or_else(|| session.pwd.clone())
        .ok_or(SdpError::Missing("a=ice-pwd"))?;
    check_ice("ice-ufrag", &ufrag, 4)?;
    check_ice("ice-pwd", &pwd, 22)?;
    let fingerprints = if lead.fingerprints.is_empty() {
        &session.fingerprints
    } else {
        &lead.fingerprints
    };
    let (_, value) = fingerprints
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case("sha-256"))
        .ok_or(SdpError::Missing("a=fingerprint:sha-256"))?;
    check_fingerprint(value)?;
    let setup = lead
        .setup
        .clone()
        .or_else(|| session.setup.clone())
        .ok_or(SdpError::Missing("a=setup"))?;
    if setup != "active" {
        return Err(SdpError::Bad {
            what: "a=setup",
            detail: format!("{setup:?}: the bridge is the DTLS server, answer active"),
        });
    }
    let mut sources = Vec::new();
    for (mid, kind) in [
        (OWN_AUDIO_MID, MediaKind::Audio),
        (OWN_VIDEO_MID, MediaKind::Video),
    ] {
        let Some(section) = sections.iter().find(|s| s.mid.as_deref() == Some(mid)) else {
            return Err(SdpError::Missing("the m-lines with mid 0 and 1"));
        };
        let want = match kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        if section.kind != want {
            return Err(SdpError::Bad {
                what: "m-line",
                detail: format!("mid {mid} must be {want}"),
            });
        }
        let sending = matches!(section.direction.as_deref(), Some("sendonly" | "sendrecv"));
        if sending && !section.ssrcs.is_empty() {
            sources.push(MediaSource {
                kind,
                ssrcs: section.ssrcs.clone(),
                groups: section.groups.clone(),
                name: Some(format!("{want}-{mid}")),
            });
        }
    }
    Ok(Answer {
        ice: IceCredentials { ufrag, pwd },
        fingerprint: Fingerprint {
            hash: "sha-256".into(),
            value: value.to_ascii_uppercase(),
            setup: Some(setup),
        },
        sources,
    })
}

fn attribute(s: &mut Section, value: &str) -> Result<(), SdpError> {
    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
    match name {
        "mid" => s.mid = Some(arg.to_owned()),
        "sendrecv" | "sendonly" | "recvonly" | "inactive" => s.direction = Some(name.to_owned()),
        "ice-ufrag" => s.ufrag = Some(arg.to_owned()),
        "ice-pwd" => s.pwd = Some(arg.to_owned()),
        "setup" => s.setup = Some(arg.to_owned()),
        "fingerprint" => {
            let (hash, fp) = arg.split_once(' ').ok_or(SdpError::Bad {
                what: "a=fingerprint",
                detail: "expected 'hash value'".into(),
            })?;
            if s.fingerprints.len() < 8 {
                s.fingerprints.push((hash.to_owned(), fp.trim().to_owned()));
            }
        }
        "ssrc" => {
            let id = arg.split(' ').next().unwrap_or("");
            let ssrc = parse_ssrc(id)?;
            if !s.ssrcs.contains(&ssrc) {
                if s.ssrcs.len() >= MAX_SSRCS_PER_SECTION {
                    return Err(SdpError::Bad {
                        what: "a=ssrc",
                        detail: format!("more than {MAX_SSRCS_PER_SECTION} in one m-line"),
                    });
                }
                s.ssrcs.push(ssrc);
            }
        }
        "ssrc-group" => {
            let mut parts = arg.split(' ').filter(|p| !p.is_empty());
            let semantics = parts.next().unwrap_or("").to_owned();
            if !matches!(semantics.as_str(), "FID" | "SIM") {
                // FEC-FR and others: the bridge does not use them.
                return Ok(());
            }
            let ssrcs = parts.map(parse_ssrc).collect::<Result<Vec<_>, _>>()?;
            if ssrcs.len() < 2 || ssrcs.len() > MAX_SSRCS_PER_SECTION {
                return Err(SdpError::Bad {
                    what: "a=ssrc-group",
                    detail: format!("{semantics} needs 2-{MAX_SSRCS_PER_SECTION} SSRCs"),
                });
            }
            if s.groups.len() < MAX_SSRCS_PER_SECTION {
                s.groups.push(SsrcGroup { semantics, ssrcs });
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_ssrc(s: &str) -> Result<u32, SdpError> {
    s.parse().map_err(|_| SdpError::Bad {
        what: "a=ssrc",
        detail: format!("{:?} is not a 32-bit number", truncate(s)),
    })
}

/// RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/".
fn check_ice(what: &'static str, v: &str, min: usize) -> Result<(), SdpError> {
    let ok = (min..=256).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(SdpError::Bad {
            what,
            detail: format!("{min}-256 ice-chars expected"),
        })
    }
}

fn check_fingerprint(v: &str) -> Result<(), SdpError> {
    let ok = v.len() == 32 * 3 - 1
        && v.split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(SdpError::Bad {
            what: "a=fingerprint",
            detail: "sha-256 needs 32 colon-separated hex bytes".into(),
        })
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> EndpointAllocation {
        EndpointAllocation {
            conference: "c".into(),
            endpoint: "e".into(),
            worker: 0,
            ice: IceCredentials {
                ufrag: "brufrag1".into(),
                pwd: "bridgepasswordbridgepassword".into(),
            },
            fingerprint: Fingerprint {
                hash: "sha-256".into(),
                value: ["AB"; 32].join(":"),
                setup: Some("passive".into()),
            },
            candidates: vec![Candidate {
                foundation: "1".into(),
                component: 1,
                protocol: "udp".into(),
                priority: 2130706431,
                ip: "127.0.0.1".into(),
                port: 10000,
                typ: "host".into(),
            }],
        }
    }

    fn remote(endpoint: &str, kind: MediaKind, ssrc: u32) -> RemoteSource {
        let (ssrcs, groups) = match kind {
            MediaKind::Audio => (vec![ssrc], vec![]),
            MediaKind::Video => (
                vec![ssrc, ssrc + 1],
                vec![SsrcGroup {
                    semantics: "FID".into(),
                    ssrcs: vec![ssrc, ssrc + 1],
                }],
            ),
        };
        RemoteSource {
            endpoint: endpoint.into(),
            source: MediaSource {
                kind,
                ssrcs,
                groups,
                name: None,
            },
        }
    }

    #[test]
    fn offer_has_what_chrome_needs() {
        let mut n = Negotiation::new(42);
        n.update(&[
            remote("bob", MediaKind::Audio, 1000),
            remote("bob", MediaKind::Video, 2000),
        ]);
        let sdp = n.offer(&alloc());
        assert!(sdp.starts_with("v=0\r\no=- 42 1 IN IP4"));
        assert!(sdp.contains("a=group:BUNDLE 0 1 2 3\r\n"));
        assert!(sdp.contains("a=ice-lite\r\n"));
        assert_eq!(
            sdp.matches("m=audio 10000 UDP/TLS/RTP/SAVPF 111\r\n")
                .count(),
            2
        );
        assert_eq!(
            sdp.matches("m=video 10000 UDP/TLS/RTP/SAVPF 100 96 102 103\r\n")
                .count(),
            2
        );
        assert_eq!(sdp.matches("a=setup:actpass\r\n").count(), 4);
        assert_eq!(sdp.matches("a=recvonly\r\n").count(), 2);
        assert_eq!(sdp.matches("a=sendonly\r\n").count(), 2);
        assert!(sdp.contains("a=fmtp:96 apt=100\r\n"));
        assert!(sdp.contains("a=rtcp-fb:100 nack pli\r\n"));
        assert!(sdp.contains("a=rtcp-fb:100 ccm fir\r\n"));
        assert!(sdp.contains("a=rtcp-fb:100 goog-remb\r\n"));
        assert!(sdp.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
        assert!(sdp.contains("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"));
        assert!(sdp.contains("a=ssrc-group:FID 2000 2001\r\n"));
        assert!(sdp.contains("a=ssrc:2001 msid:bob bob-video\r\n"));
        assert!(sdp.contains("a=msid:bob bob-audio\r\n"));
        assert!(sdp
            .contains("a=candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host generation 0\r\n"));
        assert!(!sdp.contains("transport-cc"));
        assert!(!sdp.contains("sdes:mid"));
        assert!(!sdp.contains("rtp-stream-id"));
        // Every line ends in CRLF, and nothing is empty.
        assert!(sdp.ends_with("\r\n"));
        assert!(!sdp.contains("\r\n\r\n"));
    }

    #[test]
    fn departed_sources_free_their_m_lines_for_reuse() {
        let mut n = Negotiation::new(1);
        let (ba, bv) = (
            remote("bob", MediaKind::Audio, 10),
            remote("bob", MediaKind::Video, 20),
        );
        let (ca, cv) = (
            remote("cat", MediaKind::Audio, 30),
            remote("cat", MediaKind::Video, 40),
        );
        assert!(n.update(&[ba.clone(), bv.clone(), ca.clone(), cv.clone()]));
        assert_eq!(n.m_lines(), 6);
        assert!(!n.update(&[ba.clone(), bv.clone(), ca.clone(), cv.clone()]));
        // Bob leaves: his m-lines go inactive, the count stays.
        assert!(n.update(&[ca.clone(), cv.clone()]));
        let sdp = n.offer(&alloc());
        assert_eq!(sdp.matches("a=inactive\r\n").count(), 2);
        assert!(!sdp.contains("msid:bob"));
        assert_eq!(n.m_lines(), 6);
        // Dan joins: he takes Bob's m-lines (mids 2 and 3), not new ones.
        let (da, dv) = (
            remote("dan", MediaKind::Audio, 50),
            remote("dan", MediaKind::Video, 60),
        );
        assert!(n.update(&[ca, cv, da, dv]));
        assert_eq!(n.m_lines(), 6);
        let sdp = n.offer(&alloc());
        let mid2 = sdp.split("a=mid:2\r\n").nth(1).unwrap();
        assert!(mid2.starts_with("a=extmap:1") && mid2.contains("msid:dan dan-audio"));
        assert!(!sdp.contains("a=inactive"));
        assert!(sdp.starts_with("v=0\r\no=- 1 2 "), "version grows");
    }

    /// An answer as Chromium writes it (trimmed), for the offer above with one remote
    /// participant.
    fn chrome_answer() -> String {
        [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1 2 3",
            "a=msid-semantic: WMS",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:Xk3f",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=ice-options:trickle",
            "a=fingerprint:sha-256 12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0",
            "a=setup:active",
            "a=mid:0",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=sendonly",
            "a=msid:- 7c1e",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=ssrc:1111 cname:abc",
            "a=ssrc:1111 msid:- 7c1e",
            "m=video 9 UDP/TLS/RTP/SAVPF 100 96",
            "c=IN IP4 0.0.0.0",
            "a=ice-ufrag:Xk3f",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=fingerprint:sha-256 12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0:12:34:56:78:9A:BC:DE:F0",
            "a=setup:active",
            "a=mid:1",
            "a=sendonly",
            "a=ssrc-group:FID 2222 3333",
            "a=ssrc:2222 cname:abc",
            "a=ssrc:3333 cname:abc",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=mid:2",
            "a=recvonly",
            "m=video 9 UDP/TLS/RTP/SAVPF 100 96",
            "a=mid:3",
            "a=recvonly",
            "",
        ]
        .join("\r\n")
    }

    #[test]
    fn parses_a_chrome_answer() {
        let a = parse_answer(&chrome_answer(), 4).unwrap();
        assert_eq!(a.ice.ufrag, "Xk3f");
        assert_eq!(a.fingerprint.hash, "sha-256");
        assert!(a.fingerprint.value.starts_with("12:34:56"));
        assert_eq!(a.fingerprint.setup.as_deref(), Some("active"));
        assert_eq!(a.sources.len(), 2);
        assert_eq!(a.sources[0].kind, MediaKind::Audio);
        assert_eq!(a.sources[0].ssrcs, vec![1111]);
        assert_eq!(a.sources[1].ssrcs, vec![2222, 3333]);
        assert_eq!(a.sources[1].groups[0].semantics, "FID");
        // LF-only line ends parse too.
        let lf = chrome_answer().replace("\r\n", "\n");
        assert_eq!(parse_answer(&lf, 4).unwrap(), a);
    }

    #[test]
    fn refuses_bad_answers_with_a_reason() {
        let a = chrome_answer();
        assert!(matches!(parse_answer("hello", 4), Err(SdpError::Syntax(_))));
        assert!(matches!(parse_answer("", 4), Err(SdpError::Syntax(_))));
        assert_eq!(
            parse_answer(&a, 6),
            Err(SdpError::MLineCount { got: 4, want: 6 })
        );
        assert!(matches!(
            parse_answer(&a.replace("a=setup:active", "a=setup:passive"), 4),
            Err(SdpError::Bad {
                what: "a=setup",
                ..
            })
        ));
        assert!(matches!(
            parse_answer(&a.replace("a=ice-ufrag:Xk3f", "a=ice-ufrag:x y"), 4),
            Err(SdpError::Bad {
                what: "ice-ufrag",
                ..
            })
        ));
        assert!(matches!(
            parse_answer(&a.replace("sha-256 12:34", "sha-256 ZZ:34"), 4),
            Err(SdpError::Bad {
                what: "a=fingerprint",
                ..
            })
        ));
        assert_eq!(
            parse_answer(
                &a.replace("a=fingerprint:sha-256", "a=fingerprint:sha-1"),
                4
            ),
            Err(SdpError::Missing("a=fingerprint:sha-256"))
        );
        assert!(matches!(
            parse_answer(
                &a.replace("a=ssrc:1111 cname", "a=ssrc:99999999999 cname"),
                4
            ),
            Err(SdpError::Bad { what: "a=ssrc", .. })
        ));
        assert!(matches!(
            parse_answer(&a.replace("a=mid:1", "a=mid:9"), 4),
            Err(SdpError::Missing(_))
        ));
        // Garbage bytes in place of lines.
        assert!(parse_answer("v=0\r\n\u{0}\u{1}garbage", 4).is_err());
        // A receive-only participant sends nothing: no sources, still fine.
        let recv_only = a.replace("a=sendonly", "a=inactive");
        assert!(parse_answer(&recv_only, 4).unwrap().sources.is_empty());
    }
}

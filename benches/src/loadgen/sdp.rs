//! The little SDP a synthetic peer needs to talk to an SFU that signals with offers and
//! answers (Janus): write a publisher's BUNDLE offer (Opus + VP8, `sendonly`, one host
//! candidate, declared SSRCs) and a subscriber's `recvonly` answer to the SFU's offer,
//! and read the SFU's side (ICE credentials, fingerprint, `a=setup`, candidates, and per
//! m-line its mid, kind, payload type and SSRC). Nothing more than that.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Result};

use super::traffic;

/// Our side of a PeerConnection as the SDP carries it.
#[derive(Clone, Debug)]
pub struct Local {
    /// ICE username fragment.
    pub ufrag: String,
    /// ICE password.
    pub pwd: String,
    /// SHA-256 certificate fingerprint.
    pub fingerprint: String,
    /// Our one host candidate.
    pub candidate: SocketAddr,
}

/// One m-line of a parsed description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video` or `application`.
    pub kind: String,
    /// Port (0: rejected or disabled).
    pub port: u16,
    /// `a=mid`.
    pub mid: String,
    /// Payload types, in order.
    pub payloads: Vec<u8>,
    /// `a=rtpmap` lines' values (`96 VP8/90000`), in order.
    pub rtpmaps: Vec<String>,
    /// The media SSRC: the first of an FID group, else the first `a=ssrc`.
    pub ssrc: Option<u32>,
    /// `sendrecv`, `sendonly`, `recvonly` or `inactive`.
    pub direction: String,
}

/// A parsed description (the SFU's offer or answer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// ICE username fragment (first seen, session or media level).
    pub ufrag: String,
    /// ICE password.
    pub pwd: String,
    /// `sha-256` fingerprint.
    pub fingerprint: String,
    /// `a=setup` (`active`, `passive`, `actpass`).
    pub setup: String,
    /// UDP candidates (component 1), deduplicated, in order.
    pub candidates: Vec<SocketAddr>,
    /// The m-lines.
    pub media: Vec<Media>,
}

/// Parses an SDP; fails when ICE credentials, a sha-256 fingerprint or m-lines are
/// missing.
pub fn parse(sdp: &str) -> Result<Description> {
    let mut d = Description::default();
    let mut fid_primary: Option<u32> = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(cur) = d.media.last_mut() {
                if let Some(p) = fid_primary.take() {
                    cur.ssrc = Some(p);
                }
            }
            let mut f = m.split_whitespace();
            let kind = f.next().unwrap_or("").to_owned();
            let port = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let payloads = f.skip(1).filter_map(|p| p.parse().ok()).collect();
            d.media.push(Media {
                kind,
                port,
                payloads,
                direction: "sendrecv".into(),
                ..Default::default()
            });
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let media = d.media.last_mut();
        match name {
            "ice-ufrag" if d.ufrag.is_empty() => d.ufrag = value.to_owned(),
            "ice-pwd" if d.pwd.is_empty() => d.pwd = value.to_owned(),
            "fingerprint" if d.fingerprint.is_empty() => {
                if let Some(("sha-256", fp)) = value.split_once(' ') {
                    d.fingerprint = fp.trim().to_owned();
                }
            }
            "setup" if d.setup.is_empty() => d.setup = value.to_owned(),
            "candidate" => {
                let f: Vec<&str> = value.split_whitespace().collect();
                if f.len() >= 8 && f[1] == "1" && f[2].eq_ignore_ascii_case("udp") {
                    if let (Ok(ip), Ok(port)) = (f[4].parse(), f[5].parse()) {
                        let a = SocketAddr::new(ip, port);
                        if !d.candidates.contains(&a) {
                            d.candidates.push(a);
                        }
                    }
                }
            }
            "mid" => {
                if let Some(m) = media {
                    m.mid = value.to_owned();
                }
            }
            "rtpmap" => {
                if let Some(m) = media {
                    m.rtpmaps.push(value.to_owned());
                }
            }
            "ssrc" => {
                if let Some(m) = media {
                    if m.ssrc.is_none() {
                        m.ssrc = value.split_whitespace().next().and_then(|s| s.parse().ok());
                    }
                }
            }
            "ssrc-group" => {
                if let Some(rest) = value.strip_prefix("FID ") {
                    fid_primary = rest.split_whitespace().next().and_then(|s| s.parse().ok());
                }
            }
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => {
                if let Some(m) = media {
                    m.direction = name.to_owned();
                }
            }
            _ => {}
        }
    }
    if let (Some(cur), Some(p)) = (d.media.last_mut(), fid_primary) {
        cur.ssrc = Some(p);
    }
    if d.ufrag.is_empty() || d.pwd.is_empty() {
        bail!("no ICE credentials in the SDP");
    }
    if d.fingerprint.is_empty() {
        bail!("no sha-256 fingerprint in the SDP");
    }
    if d.media.is_empty() {
        bail!("no m-lines in the SDP");
    }
    Ok(d)
}

fn head(out: &mut String, session: u64, ip: &str, bundle: &[&str]) {
    let _ = writeln!(out, "v=0\r\no=- {session} 2 IN IP4 {ip}\r\ns=-\r\nt=0 0");
    let _ = writeln!(
        out,
        "a=group:BUNDLE {}\r\na=msid-semantic: WMS *",
        bundle.join(" ")
    );
}

fn transport(out: &mut String, l: &Local, setup: &str, candidate: bool) {
    let _ = writeln!(out, "c=IN IP4 {}", l.candidate.ip());
    let _ = writeln!(out, "a=ice-ufrag:{}\r\na=ice-pwd:{}", l.ufrag, l.pwd);
    let _ = writeln!(
        out,
        "a=fingerprint:sha-256 {}\r\na=setup:{setup}",
        l.fingerprint
    );
    if candidate {
        let _ = writeln!(
            out,
            "a=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates",
            l.candidate.ip(),
            l.candidate.port()
        );
    }
}

/// A publisher's offer: `a=setup:actpass`, audio (Opus, mid 0, audio-level extension)
/// and, if `video_ssrc` is given, video (VP8, mid 1), both `sendonly`, BUNDLEd, with
/// rtcp-mux and their SSRCs declared (an SFU demultiplexes by them).
pub fn publisher_offer(
    l: &Local,
    session: u64,
    audio_ssrc: u32,
    video_ssrc: Option<u32>,
) -> String {
    let mids: &[&str] = if video_ssrc.is_some() {
        &["0", "1"]
    } else {
        &["0"]
    };
    let mut s = String::new();
    head(&mut s, session, &l.candidate.ip().to_string(), mids);
    let port = l.candidate.port();
    let _ = writeln!(s, "m=audio {port} UDP/TLS/RTP/SAVPF {}", traffic::PT_AUDIO);
    transport(&mut s, l, "actpass", true);
    let _ = writeln!(s, "a=mid:0\r\na=sendonly\r\na=rtcp-mux");
    let _ = writeln!(
        s,
        "a=extmap:{} urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        traffic::EXT_AUDIO_LEVEL
    );
    let _ = writeln!(
        s,
        "a=rtpmap:{0} opus/48000/2\r\na=fmtp:{0} minptime=10;useinbandfec=1",
        traffic::PT_AUDIO
    );
    let _ = writeln!(
        s,
        "a=ssrc:{audio_ssrc} cname:lg{session}\r\na=ssrc:{audio_ssrc} msid:lg{session} a0"
    );
    if let Some(v) = video_ssrc {
        let _ = writeln!(s, "m=video {port} UDP/TLS/RTP/SAVPF {}", traffic::PT_VIDEO);
        transport(&mut s, l, "actpass", false);
        let _ = writeln!(s, "a=mid:1\r\na=sendonly\r\na=rtcp-mux");
        let _ = writeln!(s, "a=rtpmap:{0} VP8/90000\r\na=rtcp-fb:{0} nack\r\na=rtcp-fb:{0} nack pli\r\na=rtcp-fb:{0} ccm fir", traffic::PT_VIDEO);
        let _ = writeln!(
            s,
            "a=ssrc:{v} cname:lg{session}\r\na=ssrc:{v} msid:lg{session} v0"
        );
    }
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A subscriber's answer to the SFU's offer: every audio/video m-line with a port is
/// accepted `recvonly` with its first payload type, the rest rejected (port 0);
/// `a=setup:active` (we are the DTLS client).
pub fn subscriber_answer(l: &Local, session: u64, offer: &Description) -> Result<String> {
    let accepted: Vec<&Media> = offer
        .media
        .iter()
        .filter(|m| m.port != 0 && (m.kind == "audio" || m.kind == "video"))
        .collect();
    if accepted.is_empty() {
        bail!("the offer has no audio or video to receive");
    }
    let bundle: Vec<&str> = accepted.iter().map(|m| m.mid.as_str()).collect();
    let mut s = String::new();
    head(&mut s, session, &l.candidate.ip().to_string(), &bundle);
    let mut first = true;
    for m in &offer.media {
        let ok = m.port != 0 && (m.kind == "audio" || m.kind == "video");
        let pt = m.payloads.first().copied();
        if !ok || pt.is_none() {
            let proto = if m.kind == "application" {
                "UDP/DTLS/SCTP webrtc-datachannel"
            } else {
                "UDP/TLS/RTP/SAVPF 0"
            };
            let _ = writeln!(
                s,
                "m={} 0 {proto}\r\nc=IN IP4 0.0.0.0\r\na=mid:{}\r\na=inactive",
                m.kind, m.mid
            );
            continue;
        }
        let pt = pt.ok_or_else(|| anyhow!("no payload type"))?;
        let _ = writeln!(
            s,
            "m={} {} UDP/TLS/RTP/SAVPF {pt}",
            m.kind,
            l.candidate.port()
        );
        transport(&mut s, l, "active", first);
        first = false;
        let _ = writeln!(s, "a=mid:{}\r\na=recvonly\r\na=rtcp-mux", m.mid);
        let prefix = format!("{pt} ");
        if let Some(map) = m.rtpmaps.iter().find(|r| r.starts_with(&prefix)) {
            let _ = writeln!(s, "a=rtpmap:{map}");
        }
    }
    Ok(s.replace("\r\n", "\n").replace('\n', "\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            ufrag: "uf".into(),
            pwd: "pw".into(),
            fingerprint: "AB:CD".into(),
            candidate: "127.0.0.2:4000".parse().unwrap(),
        }
    }

    #[test]
    fn offer_parses_back() {
        let o = publisher_offer(&local(), 9, 0x10, Some(0x11));
        assert!(o.contains("a=setup:actpass\r\n"));
        let d = parse(&o).unwrap();
        assert_eq!(d.ufrag, "uf");
        assert_eq!(d.fingerprint, "AB:CD");
        assert_eq!(d.candidates, vec!["127.0.0.2:4000".parse().unwrap()]);
        assert_eq!(d.media.len(), 2);
        assert_eq!(d.media[0].ssrc, Some(0x10));
        assert_eq!(d.media[1].ssrc, Some(0x11));
        assert_eq!(d.media[1].payloads, vec![traffic::PT_VIDEO]);
        assert_eq!(d.media[1].direction, "sendonly");
    }

    /// The shape of a Janus multistream subscriber offer (RTX FID group, a data channel).
    #[test]
    fn answer_to_an_sfu_offer() {
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=VideoRoom 1\r\nt=0 0\r\n\
            a=group:BUNDLE 0 1 2\r\na=fingerprint:sha-256 11:22\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.2\r\na=sendonly\r\na=mid:0\r\n\
            a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:jU\r\na=ice-pwd:jP\r\na=setup:actpass\r\n\
            a=ssrc:555 cname:janus\r\n\
            a=candidate:1 1 udp 2015363327 127.0.0.2 20403 typ host\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:97 rtx/90000\r\na=ssrc-group:FID 777 778\r\na=ssrc:778 cname:janus\r\na=ssrc:777 cname:janus\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let d = parse(offer).unwrap();
        assert_eq!((d.ufrag.as_str(), d.pwd.as_str()), ("jU", "jP"));
        assert_eq!(d.setup, "actpass");
        assert_eq!(d.fingerprint, "11:22");
        assert_eq!(d.candidates, vec!["127.0.0.2:20403".parse().unwrap()]);
        assert_eq!(d.media[0].ssrc, Some(555));
        assert_eq!(d.media[1].ssrc, Some(777));
        let a = subscriber_answer(&local(), 3, &d).unwrap();
        assert!(a.contains("a=group:BUNDLE 0 1\r\n"), "{a}");
        assert!(a.contains("m=video 4000 UDP/TLS/RTP/SAVPF 96\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:96 VP8/90000\r\n"), "{a}");
        assert!(a.contains("m=application 0 "), "{a}");
        assert!(a.contains("a=setup:active\r\n"), "{a}");
        assert_eq!(a.matches("a=candidate:").count(), 1);
        let back = parse(&a).unwrap();
        assert_eq!(back.media[1].direction, "recvonly");
    }
}

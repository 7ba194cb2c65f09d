//! The load generator as a focus: allocates conferences and endpoints either through
//! the control service's colibri2 API (as a Jicofo-like focus would) or directly on
//! the bridge's command socket (data-plane-only runs).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use viaduct_bridge::command::client::Client;
use viaduct_bridge::command::protocol::{
    Candidate, EndpointAllocation, Fingerprint, IceCredentials, MediaKind, MediaSource, Reply,
    RequestBody, SsrcGroup,
};

use crate::http;

/// Where allocations are made.
pub enum Focus {
    /// The control service's colibri2 API.
    Control {
        /// Its address.
        addr: SocketAddr,
        /// The focus bearer secret.
        secret: String,
    },
    /// The bridge's command socket.
    Bridge(Box<Client>),
}

impl Focus {
    /// A focus on the control service at `url` (`http://host:port`).
    pub fn control(url: &str, secret: &str) -> Result<Self> {
        Ok(Self::Control {
            addr: http::parse_base(url)?,
            secret: secret.to_owned(),
        })
    }

    /// A focus on the bridge's command socket.
    pub fn bridge(path: &Path) -> Result<Self> {
        Ok(Self::Bridge(Box::new(
            Client::connect(path, Duration::from_secs(10))
                .with_context(|| format!("connecting to {}", path.display()))?,
        )))
    }

    fn colibri(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let Self::Control { addr, secret } = self else {
            bail!("not a control focus");
        };
        let r = http::request(*addr, method, path, Some(&body.to_string()), Some(secret))?;
        if r.status != 200 {
            bail!("{method} {path}: HTTP {}: {}", r.status, r.body);
        }
        serde_json::from_str(&r.body).context("colibri2 response is not JSON")
    }

    /// Creates a conference.
    pub fn create_conference(&mut self, id: &str) -> Result<()> {
        match self {
            Self::Control { .. } => {
                self.colibri(
                    "POST",
                    "/colibri/v2/conferences",
                    &json!({"meeting-id": id, "name": id, "create": true}),
                )?;
            }
            Self::Bridge(c) => {
                c.request(RequestBody::CreateConference {
                    conference: id.into(),
                })?;
            }
        }
        Ok(())
    }

    /// Creates an endpoint; returns what the bridge allocated.
    pub fn create_endpoint(
        &mut self,
        conference: &str,
        endpoint: &str,
    ) -> Result<EndpointAllocation> {
        match self {
            Self::Control { .. } => {
                let v = self.colibri(
                    "PATCH",
                    &format!("/colibri/v2/conferences/{conference}"),
                    &json!({"endpoints": [{"id": endpoint, "create": true, "transport": {"ice-controlling": true}}]}),
                )?;
                allocation_from_colibri2(conference, &v["endpoints"][0])
            }
            Self::Bridge(c) => match c.request(RequestBody::CreateEndpoint {
                conference: conference.into(),
                endpoint: endpoint.into(),
            })? {
                Reply::EndpointCreated(a) => Ok(a),
                other => bail!("unexpected reply {other:?}"),
            },
        }
    }

    /// Signals the peer's ICE credentials, fingerprint and sources.
    pub fn update_endpoint(
        &mut self,
        conference: &str,
        endpoint: &str,
        ice: IceCredentials,
        fingerprint: Fingerprint,
        sources: Vec<MediaSource>,
    ) -> Result<()> {
        match self {
            Self::Control { .. } => {
                let srcs: Vec<Value> = sources
                    .iter()
                    .map(|s| {
                        json!({
                            "type": match s.kind { MediaKind::Audio => "audio", MediaKind::Video => "video" },
                            "id": s.name,
                            "sources": s.ssrcs,
                            "ssrc-groups": s.groups.iter().map(|g| json!({"semantics": g.semantics, "sources": g.ssrcs})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                self.colibri(
                    "PATCH",
                    &format!("/colibri/v2/conferences/{conference}"),
                    &json!({"endpoints": [{"id": endpoint, "transport": {"transport": {
                        "ufrag": ice.ufrag, "pwd": ice.pwd, "rtcp-mux": true,
                        "fingerprints": [{"fingerprint": fingerprint.value, "hash": "sha-256", "setup": "active"}]}},
                        "sources": srcs}]}),
                )?;
            }
            Self::Bridge(c) => {
                c.request(RequestBody::UpdateEndpoint {
                    conference: conference.into(),
                    endpoint: endpoint.into(),
                    ice: Some(ice),
                    fingerprint: Some(fingerprint),
                    sources: Some(sources),
                    force_mute: None,
                })?;
            }
        }
        Ok(())
    }

    /// Expires a conference (errors ignored: cleanup).
    pub fn expire_conference(&mut self, id: &str) {
        let _ = match self {
            Self::Control { .. } => self
                .colibri(
                    "PATCH",
                    &format!("/colibri/v2/conferences/{id}"),
                    &json!({"expire": true}),
                )
                .map(|_| ()),
            Self::Bridge(c) => c
                .request(RequestBody::ExpireConference {
                    conference: id.into(),
                })
                .map(|_| ())
                .map_err(Into::into),
        };
    }
}

/// The sources a synthetic participant declares: audio, and video as one SSRC or three
/// simulcast layers in a SIM group.
pub fn sources(audio_ssrc: u32, video_ssrcs: &[u32]) -> Vec<MediaSource> {
    let mut v = vec![MediaSource {
        kind: MediaKind::Audio,
        ssrcs: vec![audio_ssrc],
        groups: vec![],
        name: Some(format!("{audio_ssrc:x}-a0")),
    }];
    if !video_ssrcs.is_empty() {
        v.push(MediaSource {
            kind: MediaKind::Video,
            ssrcs: video_ssrcs.to_vec(),
            groups: if video_ssrcs.len() > 1 {
                vec![SsrcGroup {
                    semantics: "SIM".into(),
                    ssrcs: video_ssrcs.to_vec(),
                }]
            } else {
                vec![]
            },
            name: Some(format!("{audio_ssrc:x}-v0")),
        });
    }
    v
}

/// A colibri2 endpoint's `transport` as an allocation the peer library connects to.
pub fn allocation_from_colibri2(conference: &str, ep: &Value) -> Result<EndpointAllocation> {
    let t = &ep["transport"]["transport"];
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("missing field in {t}"))
    };
    let fp = &t["fingerprints"][0];
    let candidates = t["candidates"]
        .as_array()
        .ok_or_else(|| anyhow!("no candidates in {t}"))?
        .iter()
        .map(|c| {
            Ok(Candidate {
                foundation: s(&c["foundation"])?,
                component: s(&c["component"])?.parse()?,
                protocol: s(&c["protocol"])?,
                priority: s(&c["priority"])?.parse()?,
                ip: s(&c["ip"])?,
                port: s(&c["port"])?.parse()?,
                typ: s(&c["type"])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EndpointAllocation {
        conference: conference.into(),
        endpoint: s(&ep["id"])?,
        worker: 0,
        ice: IceCredentials {
            ufrag: s(&t["ufrag"])?,
            pwd: s(&t["pwd"])?,
        },
        fingerprint: Fingerprint {
            hash: s(&fp["hash"])?,
            value: s(&fp["fingerprint"])?,
            setup: fp["setup"].as_str().map(Into::into),
        },
        candidates,
    })
}

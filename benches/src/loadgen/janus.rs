//! The load generator against Janus: the same synthetic peers, signalled through Janus's
//! HTTP API and its VideoRoom plugin. One Janus session for the run (kept alive every
//! 25 s), one room per conference. Each participant has two PeerConnections, as a
//! Janus multistream client does: a publisher (our offer, Janus's answer; Janus
//! normally answers `a=setup:active`, so the peer is the DTLS server there) and one
//! subscriber receiving every other publisher's audio and video (Janus's offer, our
//! `recvonly` answer, the peer the DTLS client). Janus rewrites SSRCs, sequence numbers
//! and header extensions on the way, so the subscriber's offer and the `attached`
//! event's stream list give the map from Janus's SSRCs back to the senders'.
//! Teardown: `leave`, room `destroy`, `detach`, session `destroy`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use viaduct_bridge::command::protocol::{
    Candidate, EndpointAllocation, Fingerprint, IceCredentials,
};
use viaduct_bridge::peer::Peer;

use super::engine::{Participant, PeerKit, Scenario};
use super::sdp;
use super::traffic::{self, Plan};
use crate::http;

/// Interval of the session keepalive (Janus's default session timeout is 60 s).
const KEEPALIVE: Duration = Duration::from_secs(25);

/// Longest wait for an asynchronous VideoRoom event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a subscriber waits for a just-connected feed to be subscribable.
const FEED_WAIT: Duration = Duration::from_secs(5);

/// VideoRoom's error code for an unknown (or not yet active) feed.
const NO_SUCH_FEED: &str = "\"error_code\":428";

/// ICE + DTLS time limit per PeerConnection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscription's streams: its mid → (the publisher's feed, the feed's mid).
pub type StreamMap = HashMap<String, (u64, String)>;

struct Room {
    id: u64,
    handles: Vec<u64>,
}

/// A Janus session on its HTTP API.
pub struct Janus {
    addr: SocketAddr,
    base: String,
    session: u64,
    admin: u64,
    next_tx: u64,
    next_room: u64,
    pending: Vec<Value>,
    rooms: HashMap<String, Room>,
    stop: Arc<AtomicBool>,
    keepalive: Option<std::thread::JoinHandle<()>>,
}

/// `http://host:port/path` split into the address and the path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, "janus"));
    let addr = http::parse_base(&format!("http://{host}"))?;
    Ok((addr, format!("/{}", path.trim_end_matches('/'))))
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Result<Value> {
    let r = http::request(addr, "POST", path, Some(&body.to_string()), None)?;
    if r.status != 200 {
        bail!("POST {path}: HTTP {}: {}", r.status, r.body);
    }
    let v: Value = serde_json::from_str(&r.body).context("Janus answered with no JSON")?;
    if v["janus"] == "error" {
        bail!("Janus error on {path}: {}", v["error"]);
    }
    Ok(v)
}

impl Janus {
    /// Creates a session on the Janus at `url` (e.g. `http://127.0.0.2:8088/janus`),
    /// attaches a VideoRoom handle for managing rooms, and starts the keepalive.
    pub fn connect(url: &str) -> Result<Self> {
        let (addr, base) = parse_url(url)?;
        let v = post(addr, &base, &json!({"janus": "create", "transaction": "c"}))
            .with_context(|| format!("creating a Janus session at {url}"))?;
        let session = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no session id in {v}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let keepalive = {
            let stop = stop.clone();
            let path = format!("{base}/{session}");
            std::thread::Builder::new()
                .name("janus-keepalive".into())
                .spawn(move || {
                    let mut next = Instant::now() + KEEPALIVE;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        if Instant::now() >= next {
                            let _ = post(
                                addr,
                                &path,
                                &json!({"janus": "keepalive", "transaction": "k"}),
                            );
                            next = Instant::now() + KEEPALIVE;
                        }
                    }
                })?
        };
        let mut j = Self {
            addr,
            base,
            session,
            admin: 0,
            next_tx: 1,
            next_room: (u64::from(std::process::id()) << 16) + 1,
            pending: Vec::new(),
            rooms: HashMap::new(),
            stop,
            keepalive: Some(keepalive),
        };
        j.admin = j.attach()?;
        Ok(j)
    }

    fn tx(&mut self) -> String {
        self.next_tx += 1;
        format!("t{}", self.next_tx)
    }

    fn attach(&mut self) -> Result<u64> {
        let tx = self.tx();
        let v = post(
            self.addr,
            &format!("{}/{}", self.base, self.session),
            &json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": tx}),
        )?;
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no handle id in {v}"))
    }

    /// Sends a VideoRoom request on `handle` (with an SDP if given); returns the
    /// plugin's data and the JSEP of the answer (waiting for the event if Janus acks).
    fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<(Value, Option<Value>)> {
        let tx = self.tx();
        let mut req = json!({"janus": "message", "body": body, "transaction": tx});
        if let Some(j) = jsep {
            req["jsep"] = j;
        }
        let path = format!("{}/{}/{handle}", self.base, self.session);
        let v = post(self.addr, &path, &req)?;
        let v = match v["janus"].as_str() {
            Some("success") => v,
            Some("ack") => self.event(&tx)?,
            _ => bail!("unexpected Janus reply {v}"),
        };
        let data = v["plugindata"]["data"].clone();
        if data.get("error_code").is_some() {
            bail!("VideoRoom error: {}", data);
        }
        Ok((data, v.get("jsep").cloned()))
    }

    /// The event answering transaction `tx` (long-polling the session; other events are
    /// kept for their own waiters or dropped if they answer nothing).
    fn event(&mut self, tx: &str) -> Result<Value> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(i) = self.pending.iter().position(|e| e["transaction"] == tx) {
                return Ok(self.pending.swap_remove(i));
            }
            if Instant::now() > deadline {
                bail!("no Janus event for transaction {tx}");
            }
            let path = format!("{}/{}?maxev=20", self.base, self.session);
            let r = http::request(self.addr, "GET", &path, None, None)?;
            if r.status != 200 {
                bail!("GET {path}: HTTP {}: {}", r.status, r.body);
            }
            let v: Value = serde_json::from_str(&r.body).context("Janus event is not JSON")?;
            let events = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for e in events {
                if e["janus"] == "event" && e.get("transaction").is_some() {
                    self.pending.push(e);
                }
            }
        }
    }

    /// Creates the room of conference `conf` for `publishers` publishers.
    pub fn create_room(&mut self, conf: &str, publishers: usize) -> Result<u64> {
        let id = self.next_room;
        self.next_room += 1;
        let body = json!({
            "request": "create", "room": id, "description": conf, "is_private": true,
            "publishers": publishers, "bitrate": 0, "fir_freq": 0,
            "audiocodec": "opus", "videocodec": "vp8", "notify_joining": false,
            "audiolevel_event": false,
        });
        let admin = self.admin;
        self.message(admin, body, None)
            .with_context(|| format!("creating the room of {conf}"))?;
        self.rooms.insert(
            conf.to_owned(),
            Room {
                id,
                handles: Vec::new(),
            },
        );
        Ok(id)
    }

    fn room(&self, conf: &str) -> Result<u64> {
        self.rooms
            .get(conf)
            .map(|r| r.id)
            .ok_or_else(|| anyhow!("no room for {conf}"))
    }

    fn new_handle(&mut self, conf: &str) -> Result<u64> {
        let h = self.attach()?;
        if let Some(r) = self.rooms.get_mut(conf) {
            r.handles.push(h);
        }
        Ok(h)
    }

    /// Joins conference `conf` as publisher `feed` with an SDP offer; returns the answer.
    pub fn publish(&mut self, conf: &str, feed: u64, offer: &str) -> Result<String> {
        let room = self.room(conf)?;
        let h = self.new_handle(conf)?;
        let (data, jsep) = self.message(
            h,
            json!({"request": "joinandconfigure", "room": room, "ptype": "publisher",
                   "id": feed, "display": format!("p{feed}")}),
            Some(json!({"type": "offer", "sdp": offer})),
        )?;
        if data["videoroom"] != "joined" {
            bail!("publisher {feed} did not join: {data}");
        }
        jsep.and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("no SDP answer for publisher {feed}"))
    }

    /// Subscribes (one multistream PeerConnection) to every stream of `feeds`; returns
    /// the handle, Janus's SDP offer, and per mid the feed and the feed's mid.
    pub fn subscribe(&mut self, conf: &str, feeds: &[u64]) -> Result<(u64, String, StreamMap)> {
        let room = self.room(conf)?;
        let h = self.new_handle(conf)?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let body =
            json!({"request": "join", "room": room, "ptype": "subscriber", "streams": streams});
        // A feed becomes subscribable once Janus has seen its PeerConnection come up,
        // a moment after our side of the handshake finished: retry "No such feed".
        let deadline = Instant::now() + FEED_WAIT;
        let (data, jsep) = loop {
            match self.message(h, body.clone(), None) {
                Err(e) if e.to_string().contains(NO_SUCH_FEED) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        if data["videoroom"] != "attached" {
            bail!("subscriber did not attach: {data}");
        }
        let offer = jsep
            .and_then(|j| j["sdp"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("no SDP offer for a subscriber"))?;
        let mut mids = HashMap::new();
        for s in data["streams"].as_array().into_iter().flatten() {
            if let (Some(mid), Some(feed), Some(feed_mid)) = (
                s["mid"].as_str(),
                s["feed_id"].as_u64(),
                s["feed_mid"].as_str(),
            ) {
                mids.insert(mid.to_owned(), (feed, feed_mid.to_owned()));
            }
        }
        Ok((h, offer, mids))
    }

    /// Starts a subscription with our SDP answer.
    pub fn start(&mut self, handle: u64, answer: &str) -> Result<()> {
        let (data, _) = self.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        )?;
        if data["started"] != "ok" {
            bail!("subscription did not start: {data}");
        }
        Ok(())
    }

    /// Ends a conference: every handle leaves and is detached, the room is destroyed
    /// (errors ignored: cleanup).
    pub fn expire_room(&mut self, conf: &str) {
        let Some(room) = self.rooms.remove(conf) else {
            return;
        };
        for &h in &room.handles {
            let tx = self.tx();
            let path = format!("{}/{}/{h}", self.base, self.session);
            let _ = post(
                self.addr,
                &path,
                &json!({"janus": "message", "body": {"request": "leave"}, "transaction": tx}),
            );
        }
        let admin = self.admin;
        let _ = self.message(admin, json!({"request": "destroy", "room": room.id}), None);
        for &h in &room.handles {
            let tx = self.tx();
            let path = format!("{}/{}/{h}", self.base, self.session);
            let _ = post(
                self.addr,
                &path,
                &json!({"janus": "detach", "transaction": tx}),
            );
        }
        // Events of the handles just closed answer no one.
        self.pending.clear();
    }

    /// Connects conference number `c` (`conf`): every participant publishes (its
    /// PeerConnection connected before the next joins), then every participant
    /// subscribes to all the others. `before_join(index)` paces joins; `joined()` is
    /// called once per participant fully connected.
    pub fn connect_conference(
        &mut self,
        conf: &str,
        c: usize,
        s: &Scenario,
        kit: &PeerKit,
        before_join: &mut dyn FnMut(u32),
        joined: &mut dyn FnMut(),
    ) -> Result<Vec<Participant>> {
        if s.simulcast {
            bail!("the Janus target sends one video layer: drop --simulcast");
        }
        self.create_room(conf, s.participants)?;
        let mut out = Vec::with_capacity(s.participants);
        for p in 0..s.participants {
            let index = (c * s.participants + p) as u32;
            before_join(index);
            let plan = Plan::new(p < s.audio_senders, s.video_kbps, s.fps, s.simulcast);
            let audio = traffic::ssrc(index, traffic::AUDIO);
            let video = plan
                .video_layers
                .first()
                .map(|&(st, _)| traffic::ssrc(index, st));
            let mut peer = Peer::bind(
                SocketAddr::new(kit.local_ip, 0),
                kit.client.clone(),
                kit.identity.clone(),
            )?;
            let offer = sdp::publisher_offer(&local(&peer, kit)?, u64::from(index), audio, video);
            let answer = sdp::parse(&self.publish(conf, feed(index), &offer)?)
                .with_context(|| format!("Janus's answer to publisher {index}"))?;
            tracing::debug!(index, setup = %answer.setup, "Janus answered the publisher");
            if answer.setup == "active" {
                peer.use_dtls(kit.server.clone());
            }
            let parts = connect(peer, conf, index, &answer, s.allow_remote)
                .with_context(|| format!("connecting publisher {index} of {conf}"))?;
            out.push(Participant {
                index,
                conference: c,
                parts,
                plan,
                receive: None,
                ssrc_map: HashMap::new(),
            });
        }
        let feeds: Vec<u64> = out.iter().map(|p| feed(p.index)).collect();
        for p in &mut out {
            let others: Vec<u64> = feeds
                .iter()
                .copied()
                .filter(|&f| f != feed(p.index))
                .collect();
            let (handle, offer, mids) = self.subscribe(conf, &others)?;
            let offer = sdp::parse(&offer)
                .with_context(|| format!("Janus's offer to subscriber {}", p.index))?;
            let peer = Peer::bind(
                SocketAddr::new(kit.local_ip, 0),
                kit.client.clone(),
                kit.identity.clone(),
            )?;
            let answer = sdp::subscriber_answer(&local(&peer, kit)?, u64::from(p.index), &offer)?;
            self.start(handle, &answer)?;
            for m in &offer.media {
                let (Some(ssrc), Some((f, feed_mid))) = (m.ssrc, mids.get(&m.mid)) else {
                    continue;
                };
                let stream = if feed_mid == "0" { traffic::AUDIO } else { 1 };
                p.ssrc_map
                    .insert(ssrc, traffic::ssrc((*f - 1) as u32, stream));
            }
            tracing::debug!(index = p.index, "subscriber started");
            p.receive = Some(
                connect(peer, conf, p.index, &offer, s.allow_remote)
                    .with_context(|| format!("connecting subscriber {} of {conf}", p.index))?,
            );
            joined();
        }
        Ok(out)
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let confs: Vec<String> = self.rooms.keys().cloned().collect();
        for c in confs {
            self.expire_room(&c);
        }
        let tx = self.tx();
        let _ = post(
            self.addr,
            &format!("{}/{}/{}", self.base, self.session, self.admin),
            &json!({"janus": "detach", "transaction": tx}),
        );
        let _ = post(
            self.addr,
            &format!("{}/{}", self.base, self.session),
            &json!({"janus": "destroy", "transaction": "d"}),
        );
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.keepalive.take() {
            let _ = k.join();
        }
    }
}

/// Publisher feed ids: the participant's global index + 1 (Janus refuses 0).
fn feed(index: u32) -> u64 {
    u64::from(index) + 1
}

fn local(peer: &Peer, kit: &PeerKit) -> Result<sdp::Local> {
    let ice = peer.ice_credentials();
    Ok(sdp::Local {
        ufrag: ice.ufrag,
        pwd: ice.pwd,
        fingerprint: kit.identity.fingerprint().to_owned(),
        candidate: peer.local_addr()?,
    })
}

/// ICE (answering Janus's checks too) and DTLS to the far side of `d`.
fn connect(
    mut peer: Peer,
    conf: &str,
    index: u32,
    d: &sdp::Description,
    allow_remote: bool,
) -> Result<viaduct_bridge::peer::PeerParts> {
    let local_v4 = peer.local_addr()?.is_ipv4();
    let candidates: Vec<Candidate> = d
        .candidates
        .iter()
        .filter(|a| a.is_ipv4() == local_v4)
        .map(|a| Candidate {
            foundation: "1".into(),
            component: 1,
            protocol: "udp".into(),
            priority: 1,
            ip: a.ip().to_string(),
            port: a.port(),
            typ: "host".into(),
        })
        .collect();
    for a in &d.candidates {
        if !allow_remote && !a.ip().is_loopback() {
            bail!("Janus offered {a}, which is not loopback: refusing without --allow-remote");
        }
    }
    let alloc = EndpointAllocation {
        conference: conf.into(),
        endpoint: format!("p{index}"),
        worker: 0,
        ice: IceCredentials {
            ufrag: d.ufrag.clone(),
            pwd: d.pwd.clone(),
        },
        fingerprint: Fingerprint {
            hash: "sha-256".into(),
            value: d.fingerprint.clone(),
            setup: Some(d.setup.clone()),
        },
        candidates,
    };
    peer.set_remote_full_ice(true);
    let t = Instant::now();
    let profile = peer.connect(&alloc, CONNECT_TIMEOUT)?;
    tracing::debug!(index, ?profile, took = ?t.elapsed(), "connected to Janus");
    Ok(peer.into_parts()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (a, p) = parse_url("http://127.0.0.2:8088/janus").unwrap();
        assert_eq!(a, "127.0.0.2:8088".parse().unwrap());
        assert_eq!(p, "/janus");
        assert_eq!(parse_url("http://127.0.0.2:8088").unwrap().1, "/janus");
        assert!(parse_url("https://x:1/janus").is_err());
    }
}

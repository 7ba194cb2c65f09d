//! Participants end to end, without a browser: real `viaduct-bridge` and
//! `viaduct-control` processes, WebSocket clients that join rooms with JWTs, answer
//! the server's SDP offers, and synthetic peers (the bridge's peer library) that run
//! ICE, DTLS and SRTP to the addresses those offers name. Also every refusal: bad
//! tokens before the upgrade, bad messages after it.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Peers, Stack};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use viaduct_bridge::command::protocol::{
    Candidate, EndpointAllocation, Fingerprint, IceCredentials,
};
use viaduct_bridge::peer::{Incoming, Peer};

const APP: &str = "test-app";
const JWT_SECRET: &str = "test-jwt-secret-0123456789";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn stack() -> Stack {
    let mut s = Stack::new(true);
    // Replace the default control with one that verifies participants' tokens.
    s.control.take();
    s.start_control(&["--jwt-app-id", APP, "--jwt-app-secret", JWT_SECRET]);
    s.wait_healthy();
    s
}

fn token(room: &str, name: &str, moderator: bool) -> String {
    viaduct_control::auth::mint(
        JWT_SECRET,
        &viaduct_control::auth::Mint {
            app_id: APP,
            room,
            name,
            moderator,
            ttl_s: 600,
        },
    )
    .unwrap()
}

async fn connect(stack: &Stack, token: &str) -> Socket {
    let url = format!("ws://{}/ws?token={token}", stack.http);
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next JSON message, skipping control frames; panics after 10 s.
async fn next(ws: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("no websocket error");
        match msg {
            Ws::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Ws::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// The next message of `kind`, skipping others.
async fn next_of(ws: &mut Socket, kind: &str) -> Value {
    for _ in 0..500 {
        let m = next(ws).await;
        if m["type"] == kind {
            return m;
        }
    }
    panic!("no {kind} message");
}

async fn send(ws: &mut Socket, v: Value) {
    ws.send(Ws::Text(v.to_string().into())).await.unwrap();
}

/// The bridge's transport as the offer names it.
fn allocation_from_offer(sdp: &str) -> EndpointAllocation {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(&format!("a={name}:")))
            .unwrap_or_else(|| panic!("no a={name}"))
            .trim()
            .to_owned()
    };
    let fp = attr("fingerprint");
    let (hash, value) = fp.split_once(' ').unwrap();
    let candidates = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .take(1)
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            Candidate {
                foundation: f[0].into(),
                component: f[1].parse().unwrap(),
                protocol: f[2].into(),
                priority: f[3].parse().unwrap(),
                ip: f[4].into(),
                port: f[5].parse().unwrap(),
                typ: f[7].into(),
            }
        })
        .collect();
    EndpointAllocation {
        conference: String::new(),
        endpoint: String::new(),
        worker: 0,
        ice: IceCredentials {
            ufrag: attr("ice-ufrag"),
            pwd: attr("ice-pwd"),
        },
        fingerprint: Fingerprint {
            hash: hash.into(),
            value: value.into(),
            setup: None,
        },
        candidates,
    }
}

/// An answer as a browser writes one: own audio (`ssrc`) and video (`ssrc + 1`, RTX
/// `ssrc + 2`) on mids 0 and 1, every other m-line receive-only.
fn answer_for(offer: &str, peer: &Peer, ssrc: u32) -> String {
    let ice = peer.ice_credentials();
    let fp = peer.fingerprint();
    let kinds: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|m| m.split(' ').next().unwrap())
        .collect();
    let mut s = String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    for (i, kind) in kinds.iter().enumerate() {
        s += &format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:active\r\na=mid:{i}\r\n",
            ice.ufrag, ice.pwd, fp.value
        );
        match i {
            0 => s += &format!("a=sendonly\r\na=ssrc:{ssrc} cname:x\r\n"),
            1 => {
                s += &format!(
                    "a=sendonly\r\na=ssrc-group:FID {} {}\r\na=ssrc:{} cname:x\r\na=ssrc:{} cname:x\r\n",
                    ssrc + 1,
                    ssrc + 2,
                    ssrc + 1,
                    ssrc + 2
                )
            }
            _ => s += "a=recvonly\r\n",
        }
    }
    s
}

/// A participant: its socket, endpoint id, peer and audio SSRC.
struct Member {
    ws: Socket,
    endpoint: String,
    peer: Option<Peer>,
    ssrc: u32,
    /// Remote m-lines in use in the latest answered offer.
    sendonly: usize,
}

/// Joins, answers the first offer and connects the peer through the bridge.
async fn join(stack: &Stack, peers: &Peers, room: &str, name: &str, moderator: bool) -> Member {
    let mut ws = connect(stack, &token(room, name, moderator)).await;
    send(&mut ws, json!({"type": "join", "name": name})).await;
    let joined = next_of(&mut ws, "joined").await;
    assert_eq!(joined["room"], room);
    assert_eq!(joined["name"], name);
    let endpoint = joined["endpoint"].as_str().unwrap().to_owned();
    let offer = next_of(&mut ws, "offer").await;
    let sdp = offer["sdp"].as_str().unwrap().to_owned();
    let peer = peers.peer();
    let ssrc = 10_000 + rand_ssrc();
    send(
        &mut ws,
        json!({"type": "answer", "sdp": answer_for(&sdp, &peer, ssrc), "revision": offer["revision"]}),
    )
    .await;
    let sendonly = sdp.matches("a=sendonly").count();
    let alloc = allocation_from_offer(&sdp);
    let peer = tokio::task::spawn_blocking(move || {
        let mut peer = peer;
        peer.connect(&alloc, Duration::from_secs(10))
            .expect("ICE and DTLS through the offer's candidate");
        peer
    })
    .await
    .unwrap();
    Member {
        ws,
        endpoint,
        peer: Some(peer),
        ssrc,
        sendonly,
    }
}

fn rand_ssrc() -> u32 {
    (std::process::id() * 7919 + Instant::now().elapsed().subsec_nanos()) % 1_000_000 * 8
}

/// Answers offers until one names `want` remote m-lines in use (`sendonly`).
async fn settle(m: &mut Member, want: usize) {
    if m.sendonly == want {
        return;
    }
    for _ in 0..10 {
        let offer = next_of(&mut m.ws, "offer").await;
        let sdp = offer["sdp"].as_str().unwrap();
        let answer = answer_for(sdp, m.peer.as_ref().unwrap(), m.ssrc);
        send(
            &mut m.ws,
            json!({"type": "answer", "sdp": answer, "revision": offer["revision"]}),
        )
        .await;
        m.sendonly = sdp.matches("a=sendonly").count();
        if m.sendonly == want {
            return;
        }
    }
    panic!("offers never settled on {want} remote m-lines");
}

/// Sends `n` audio packets from `from` and counts those `to` receives from it.
async fn media(from: &mut Member, to: &mut Member, seq0: u16, n: u16) -> usize {
    let (mut a, mut b) = (from.peer.take().unwrap(), to.peer.take().unwrap());
    let ssrc = from.ssrc;
    let (a, b, got) = tokio::task::spawn_blocking(move || {
        for k in 0..n {
            let seq = seq0.wrapping_add(k);
            a.send_rtp(ssrc, seq, u32::from(seq) * 960, false, b"opus")
                .unwrap();
        }
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && got < n as usize {
            if let Some(Incoming::Rtp { ssrc: s, .. }) = b.recv(Duration::from_millis(50)).unwrap()
            {
                if s == ssrc {
                    got += 1;
                }
            }
        }
        (a, b, got)
    })
    .await
    .unwrap();
    from.peer = Some(a);
    to.peer = Some(b);
    got
}

/// Waits (up to 5 s) until the control service's sampled stats show `n` endpoints.
async fn wait_endpoints(stack: &Stack, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let have = stack.stats()["endpoints"].as_i64().unwrap_or(-1);
        if have == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{have} endpoints on the bridge, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_carries_media_chat_mute_kick_and_leave() {
    let stack = stack();
    let peers = Peers::new();
    let mut ann = join(&stack, &peers, "standup", "Ann", true).await;
    let mut bob = join(&stack, &peers, "standup", "Bob", false).await;
    let joined = next_of(&mut ann.ws, "participant-joined").await;
    assert_eq!(joined["participant"]["endpoint"], bob.endpoint.as_str());
    assert_eq!(joined["participant"]["role"], "participant");
    // Each is offered the other's audio and video.
    settle(&mut ann, 2).await;
    settle(&mut bob, 2).await;
    assert!(media(&mut ann, &mut bob, 1, 20).await >= 18, "Ann → Bob");
    assert!(media(&mut bob, &mut ann, 1, 20).await >= 18, "Bob → Ann");

    // Chat reaches everyone; a late joiner gets the history.
    send(&mut bob.ws, json!({"type": "chat", "text": "hello room"})).await;
    for ws in [&mut ann.ws, &mut bob.ws] {
        let chat = next_of(ws, "chat").await;
        assert_eq!(chat["message"]["text"], "hello room");
        assert_eq!(chat["message"]["name"], "Bob");
    }
    let mut cat = connect(&stack, &token("standup", "Cat", false)).await;
    send(&mut cat, json!({"type": "join"})).await;
    let joined = next_of(&mut cat, "joined").await;
    assert_eq!(joined["chat"][0]["text"], "hello room");
    assert_eq!(joined["participants"].as_array().unwrap().len(), 2);
    assert_eq!(joined["role"], "participant");
    let cat_id = joined["endpoint"].as_str().unwrap().to_owned();
    wait_endpoints(&stack, 3).await;

    // A participant cannot kick; the moderator can mute and kick.
    send(&mut bob.ws, json!({"type": "kick", "target": ann.endpoint})).await;
    assert_eq!(next_of(&mut bob.ws, "error").await["code"], "forbidden");
    send(
        &mut ann.ws,
        json!({"type": "mute", "target": bob.endpoint, "audio": true}),
    )
    .await;
    let muted = next_of(&mut bob.ws, "muted").await;
    assert_eq!(muted["by"], ann.endpoint.as_str());
    assert_eq!(muted["audio"], true);
    let updated = next_of(&mut ann.ws, "participant-updated").await;
    assert_eq!(updated["participant"]["audio_muted"], true);
    assert_eq!(
        media(&mut bob, &mut ann, 100, 20).await,
        0,
        "the bridge drops a force-muted source"
    );
    // Bob unmutes himself: forwarding resumes.
    send(&mut bob.ws, json!({"type": "mute", "audio": false})).await;
    next_of(&mut ann.ws, "participant-updated").await;
    assert!(media(&mut bob, &mut ann, 200, 20).await >= 18);

    send(&mut ann.ws, json!({"type": "kick", "target": cat_id})).await;
    assert_eq!(
        next_of(&mut cat, "kicked").await["by"],
        ann.endpoint.as_str()
    );
    for ws in [&mut ann.ws, &mut bob.ws] {
        let left = next_of(ws, "participant-left").await;
        assert_eq!(left["endpoint"], cat_id.as_str());
        assert_eq!(left["reason"], "kicked");
    }

    // Bob's socket closes: Ann is told, the bridge drops his endpoint.
    drop(bob.ws);
    let left = next_of(&mut ann.ws, "participant-left").await;
    assert_eq!(left["endpoint"], bob.endpoint.as_str());
    wait_endpoints(&stack, 1).await;
    // Ann leaves: the room's conference goes.
    send(&mut ann.ws, json!({"type": "leave"})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.stats()["conferences"].as_i64() != Some(0) {
        assert!(Instant::now() < deadline, "conference not expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn signed(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn bad_tokens_are_refused_before_the_upgrade() {
    let stack = stack();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": APP, "aud": "jitsi", "sub": "*", "room": "r", "exp": now + 600,
                        "context": {"user": {"name": "Eve"}}});
    let mut expired = claims.clone();
    expired["exp"] = (now - 600).into();
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = "someone-else".into();
    let cases = [
        ("/ws".to_owned(), 401, "missing_token"),
        (
            format!("/ws?token={}", signed(&claims, "not-the-secret-at-all")),
            401,
            "bad_signature",
        ),
        (
            format!("/ws?token={}", signed(&expired, JWT_SECRET)),
            401,
            "expired",
        ),
        (
            format!("/ws?token={}", signed(&other_issuer, JWT_SECRET)),
            401,
            "wrong_issuer",
        ),
        (
            format!("/ws?token={}&room=other", signed(&claims, JWT_SECRET)),
            403,
            "room_mismatch",
        ),
        (
            format!(
                "/ws?token={}.{}.",
                b64(&json!({"alg": "none"})),
                b64(&claims)
            ),
            401,
            "alg_none",
        ),
        ("/ws?token=garbage".to_owned(), 401, "malformed_token"),
    ];
    for (path, status, code) in cases {
        let r = stack.get(&path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.contains(code), "{path}: {}", r.body);
    }
    // Dev tokens are off in jwt mode.
    assert_eq!(stack.get("/dev/token?room=r").status, 403);
    // A good token without an upgrade gets the upgrade's own refusal, not a 401.
    let r = stack.get(&format!("/ws?token={}", signed(&claims, JWT_SECRET)));
    assert!(r.status >= 400 && r.status != 401, "{}", r.status);
    // The refusals are counted.
    let metrics = stack.get("/metrics").body;
    assert!(
        metrics.contains("viaduct_signalling_refused_total{reason=\"bad_signature\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_the_call_goes_on() {
    let stack = stack();
    let peers = Peers::new();
    let mut ann = join(&stack, &peers, "r2", "Ann", true).await;
    let mut bob = join(&stack, &peers, "r2", "Bob", false).await;
    settle(&mut ann, 2).await;
    settle(&mut bob, 2).await;

    // Before join: nothing but join.
    let mut eve = connect(&stack, &token("r2", "Eve", false)).await;
    send(&mut eve, json!({"type": "chat", "text": "hi"})).await;
    assert_eq!(next(&mut eve).await["code"], "not_joined");
    // Malformed, unknown, server-only, binary, oversized.
    eve.send(Ws::Text("{not json".into())).await.unwrap();
    assert_eq!(next(&mut eve).await["code"], "bad_message");
    send(&mut eve, json!({"type": "launch-missiles"})).await;
    assert_eq!(next(&mut eve).await["code"], "bad_message");
    send(&mut eve, json!({"type": "join", "name": "Eve"})).await;
    next_of(&mut eve, "joined").await;
    // Eve's offer stays unanswered until the end.
    let offer = next_of(&mut eve, "offer").await;
    send(&mut eve, json!({"type": "kicked", "by": "x"})).await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "bad_message");
    eve.send(Ws::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(next_of(&mut eve, "error").await["code"], "bad_message");
    let big = "x".repeat(200 * 1024);
    send(&mut eve, json!({"type": "chat", "text": big})).await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "too_large");
    send(&mut eve, json!({"type": "chat", "text": "y".repeat(1001)})).await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "bad_message");
    send(
        &mut eve,
        json!({"type": "mute", "target": ann.endpoint, "audio": true}),
    )
    .await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "forbidden");
    send(
        &mut eve,
        json!({"type": "answer", "sdp": "v=0", "revision": 999}),
    )
    .await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "stale_answer");

    // A flood: the rate limit answers, the others hear at most the allowed share.
    for i in 0..80 {
        send(
            &mut eve,
            json!({"type": "chat", "text": format!("spam {i}")}),
        )
        .await;
    }
    let mut limited = 0;
    for _ in 0..200 {
        let m = next(&mut eve).await;
        if m["type"] == "error" && m["code"] == "rate_limited" {
            limited += 1;
            if limited >= 20 {
                break;
            }
        }
    }
    assert!(limited >= 20, "rate limit answered {limited} times");

    // A garbage answer: an error, and only Eve's endpoint goes.
    send(
        &mut eve,
        json!({"type": "answer", "sdp": "v=0\r\nm=garbage\r\n\u{1}", "revision": offer["revision"]}),
    )
    .await;
    loop {
        // (Skipping what is left of the flood's refusals.)
        let code = next_of(&mut eve, "error").await["code"].clone();
        if code != "rate_limited" {
            assert_eq!(code, "bad_answer");
            break;
        }
    }
    let left = next_of(&mut ann.ws, "participant-left").await;
    assert_eq!(left["reason"], "expired");
    // The others' call goes on.
    assert!(media(&mut ann, &mut bob, 1, 20).await >= 18);
    send(&mut ann.ws, json!({"type": "ping"})).await;
    next_of(&mut ann.ws, "pong").await;
    let metrics = stack.get("/metrics").body;
    for reason in ["bad_message", "too_large", "rate_limited", "bad_answer"] {
        assert!(
            metrics.contains(&format!(
                "viaduct_signalling_messages_dropped_total{{reason=\"{reason}\"}}"
            )),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let mut stack = Stack::new(true);
    let config = stack.dir.join("control.toml");
    std::fs::write(&config, "[signalling]\nidle-timeout-s = 5\n").unwrap();
    stack.control.take();
    stack.start_control(&[
        "--jwt-app-id",
        APP,
        "--jwt-app-secret",
        JWT_SECRET,
        "--config",
        config.to_str().unwrap(),
    ]);
    stack.wait_healthy();
    let mut ws = connect(&stack, &token("quiet", "Zed", false)).await;
    send(&mut ws, json!({"type": "join"})).await;
    next_of(&mut ws, "joined").await;
    // Read nothing (so the server's pings go unanswered) for longer than the timeout.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Ws::Close(_)))) => break true,
            Ok(Some(Ok(_))) => continue,
            Err(_) => break false,
        }
    };
    assert!(closed, "the idle connection is still open");
    wait_endpoints(&stack, 0).await;
}

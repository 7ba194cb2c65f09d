//! Participants' signalling over a WebSocket (`GET /ws`): the token is checked before
//! the upgrade (401/403 with a reason), then one task per connection runs the
//! session: join a room, server-initiated offers answered one at a time (no glare),
//! mute, kick, chat, leave. Every message is one JSON object of the [`Message`] enum.
//! Limits per connection: message size, a rate limit on mutating messages, an idle
//! timeout. A closed socket leaves the room: the endpoint is expired on the bridge and
//! the others are told and renegotiated.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use viaduct_bridge::command::protocol::{EndpointAllocation, ForceMute};

use crate::app::{ApiError, AppState};
use crate::auth::{AuthError, AuthMode, Identity};
use crate::focus::{self, EndpointUpdate};
use crate::room::{ChatMessage, CloseReason, Member, Participant, Role, Room};
use crate::sdp::{self, Negotiation};

/// Messages queued per connection before further ones are dropped (and counted).
const QUEUE: usize = 256;
/// How often the server pings an open connection (more often if the idle timeout is
/// shorter than three of these).
const PING_EVERY: Duration = Duration::from_secs(15);
/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Rate-limited messages beyond the limit, within one window, before the connection
/// is closed.
const FLOOD_CLOSE_AFTER: u32 = 200;

/// Every signalling message, both directions, tagged by `"type"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    /// Client: enter the room named by the token (first message).
    Join {
        /// Display name (default: the token's `context.user.name`).
        #[serde(default)]
        name: Option<String>,
    },
    /// Server: you are in.
    Joined {
        /// Your endpoint id.
        endpoint: String,
        /// The room.
        room: String,
        /// Your display name.
        name: String,
        /// Your role.
        role: Role,
        /// Everyone else.
        participants: Vec<Participant>,
        /// The room's latest chat messages, oldest first.
        chat: Vec<ChatMessage>,
    },
    /// Server: an SDP offer; answer it with the same revision.
    Offer {
        /// The SDP.
        sdp: String,
        /// Its revision.
        revision: u64,
    },
    /// Client: the answer to the offer of `revision`.
    Answer {
        /// The SDP.
        sdp: String,
        /// The offer's revision.
        revision: u64,
    },
    /// Server: someone joined.
    ParticipantJoined {
        /// Who.
        participant: Participant,
    },
    /// Server: someone's mute state changed.
    ParticipantUpdated {
        /// Who, now.
        participant: Participant,
    },
    /// Server: someone left.
    ParticipantLeft {
        /// Their endpoint id.
        endpoint: String,
        /// `left`, `kicked`, `disconnected` or `expired`.
        reason: String,
    },
    /// Client: mute yourself (no target), or, as a moderator, mute `target` (an
    /// endpoint id, or `*` for everyone else).
    Mute {
        /// Whom to mute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// Audio muted?
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<bool>,
        /// Video muted?
        #[serde(default, skip_serializing_if = "Option::is_none")]
        video: Option<bool>,
    },
    /// Server: a moderator muted you; the bridge no longer forwards what is muted.
    Muted {
        /// The moderator's endpoint id.
        by: String,
        /// Audio is muted.
        audio: bool,
        /// Video is muted.
        video: bool,
    },
    /// Client (moderator): remove `target` from the room.
    Kick {
        /// Its endpoint id.
        target: String,
    },
    /// Server: a moderator removed you; the socket closes.
    Kicked {
        /// The moderator's endpoint id.
        by: String,
    },
    /// Client: send `text` to the room. Server: `message` was sent to the room.
    Chat {
        /// Client: the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Server: the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<ChatMessage>,
    },
    /// Client: leave the room (the socket closes).
    Leave,
    /// Client: are you there?
    Ping,
    /// Server: yes.
    Pong,
    /// Server: a message was refused.
    Error {
        /// Machine-readable reason.
        code: String,
        /// Human-readable detail.
        message: String,
    },
}

impl Message {
    fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
        }
    }

    fn to_text(&self) -> Arc<str> {
        // Serializing these plain types cannot fail.
        Arc::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Query of `GET /ws`.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// The JWT (or in `Authorization: Bearer`).
    pub token: Option<String>,
    /// The room, when the token admits to any (`room: "*"`).
    pub room: Option<String>,
}

/// Verifies a participant's token for a room, as the configured mode says.
pub fn authenticate(
    state: &AppState,
    token: Option<&str>,
    room: Option<&str>,
) -> Result<Identity, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    let verifier = state
        .auth
        .verifier
        .as_ref()
        .ok_or(AuthError::WrongAlgorithm("(no keys are configured)".into()))?;
    verifier.verify(token, room)
}

fn auth_error(e: &AuthError) -> ApiError {
    let (status, reason) = if e.is_forbidden() {
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    } else {
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    };
    ApiError::new(status, reason, format!("{} ({})", e, e.code()))
}

/// `GET /ws`: checks the token, then upgrades.
pub async fn upgrade(
    State(state): State<AppState>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = q.token.as_deref().or(bearer);
    let identity = match authenticate(&state, token, q.room.as_deref()) {
        Ok(id) => id,
        Err(e) => {
            tracing::info!(reason = e.code(), "participant refused: {e}");
            state.metrics.signalling_refused(e.code());
            return auth_error(&e).into_response();
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limits = &state.config.signalling;
    // Beyond the protocol limit the library closes the socket; between the two, the
    // session answers with an error and goes on.
    ws.max_message_size(limits.max_message_bytes * 4)
        .max_frame_size(limits.max_message_bytes * 4)
        .on_upgrade(move |socket| run(socket, state, identity))
        .into_response()
}

/// Token-bucket limit on mutating messages.
struct RateLimit {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
    excess: u32,
}

impl RateLimit {
    fn new(messages: u32, window: Duration) -> Self {
        let capacity = f64::from(messages);
        Self {
            capacity,
            per_second: capacity / window.as_secs_f64(),
            tokens: capacity,
            last: Instant::now(),
            excess: 0,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            if self.tokens >= self.capacity - 1.0 {
                self.excess = 0;
            }
            true
        } else {
            self.excess += 1;
            false
        }
    }
}

/// One joined participant's session state.
struct Joined {
    room: String,
    meeting_id: String,
    endpoint: String,
    role: Role,
    alloc: EndpointAllocation,
    negotiation: Negotiation,
    /// The revision of the offer awaiting an answer.
    outstanding: Option<u64>,
    /// A change arrived while an offer was outstanding.
    again: bool,
    revision: u64,
    /// What the bridge was last told of the remote transport.
    remote: Option<(String, String)>,
}

/// How a session ended, as the others are told.
enum Ending {
    Left,
    Disconnected,
    Kicked,
    Expired,
}

impl Ending {
    fn reason(&self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Disconnected => "disconnected",
            Self::Kicked => "kicked",
            Self::Expired => "expired",
        }
    }
}

struct Session {
    state: AppState,
    identity: Identity,
    joined: Option<Joined>,
    out: mpsc::Sender<Arc<str>>,
    renegotiate: Arc<Notify>,
    close: watch::Sender<Option<CloseReason>>,
    limit: RateLimit,
}

async fn run(mut socket: WebSocket, state: AppState, identity: Identity) {
    state.metrics.signalling_connection(1);
    let limits = state.config.signalling.clone();
    let (out, mut out_rx) = mpsc::channel::<Arc<str>>(QUEUE);
    let (close, mut close_rx) = watch::channel(None);
    let renegotiate = Arc::new(Notify::new());
    let mut session = Session {
        state: state.clone(),
        identity,
        joined: None,
        out,
        renegotiate: renegotiate.clone(),
        close,
        limit: RateLimit::new(limits.rate_limit_messages, limits.rate_limit_window),
    };
    let mut ping = tokio::time::interval(PING_EVERY.min(limits.idle_timeout / 3));
    ping.tick().await;
    let mut last_seen = Instant::now();
    let ending = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let msg = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!("websocket error: {e}");
                        break Ending::Disconnected;
                    }
                    None => break Ending::Disconnected,
                };
                last_seen = Instant::now();
                let text = match msg {
                    WsMessage::Text(t) => t,
                    WsMessage::Binary(_) => {
                        session.reply(&Message::error("bad_message", "binary frames are not part of the protocol"));
                        continue;
                    }
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                    WsMessage::Close(_) => break Ending::Disconnected,
                };
                if text.len() > limits.max_message_bytes {
                    state.metrics.signalling_dropped("too_large");
                    session.reply(&Message::error(
                        "too_large",
                        format!("messages are at most {} bytes", limits.max_message_bytes),
                    ));
                    continue;
                }
                match session.on_text(text.as_str()).await {
                    Flow::Continue => {}
                    Flow::Close(ending) => break ending,
                }
            }
            Some(text) = out_rx.recv() => {
                if socket.send(WsMessage::Text(text.as_ref().into())).await.is_err() {
                    break Ending::Disconnected;
                }
            }
            _ = renegotiate.notified(), if session.joined.is_some() => {
                session.offer_if_due().await;
            }
            changed = close_rx.changed() => {
                let reason = if changed.is_ok() { close_rx.borrow().clone() } else { None };
                match reason {
                    Some(CloseReason::Kicked { by }) => {
                        let _ = socket.send(text_of(&Message::Kicked { by })).await;
                        break Ending::Kicked;
                    }
                    Some(CloseReason::Expired(why)) => {
                        let _ = socket.send(text_of(&Message::error("expired", format!("the bridge expired your endpoint: {why}")))).await;
                        break Ending::Expired;
                    }
                    None => {}
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > limits.idle_timeout {
                    tracing::info!("signalling connection idle: closing");
                    break Ending::Disconnected;
                }
                if socket.send(WsMessage::Ping(Default::default())).await.is_err() {
                    break Ending::Disconnected;
                }
            }
        }
    };
    // Flush what is queued (a last error, say), then close.
    while let Ok(text) = out_rx.try_recv() {
        if socket
            .send(WsMessage::Text(text.as_ref().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = match ending {
        Ending::Kicked | Ending::Expired => 4000,
        _ => 1000,
    };
    let _ = socket
        .send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: ending.reason().into(),
        })))
        .await;
    session.leave(&ending).await;
    state.metrics.signalling_connection(-1);
}

fn text_of(m: &Message) -> WsMessage {
    WsMessage::Text(m.to_text().as_ref().into())
}

enum Flow {
    Continue,
    Close(Ending),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Session {
    /// Queues a message for this connection.
    fn reply(&self, m: &Message) {
        if self.out.try_send(m.to_text()).is_err() {
            self.state.rooms.count_dropped(1);
        }
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let msg: Message = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                self.state.metrics.signalling_dropped("bad_message");
                self.reply(&Message::error(
                    "bad_message",
                    format!("not a message: {e}"),
                ));
                return Flow::Continue;
            }
        };
        let mutating = matches!(
            msg,
            Message::Join { .. }
                | Message::Mute { .. }
                | Message::Kick { .. }
                | Message::Chat { .. }
                | Message::Leave
        );
        if mutating && !self.limit.allow(Instant::now()) {
            self.state.metrics.signalling_dropped("rate_limited");
            if self.limit.excess > FLOOD_CLOSE_AFTER {
                tracing::warn!("signalling flood: closing the connection");
                return Flow::Close(Ending::Disconnected);
            }
            self.reply(&Message::error(
                "rate_limited",
                "too many messages: slow down",
            ));
            return Flow::Continue;
        }
        if self.joined.is_none() && !matches!(msg, Message::Join { .. } | Message::Ping) {
            self.reply(&Message::error("not_joined", "send join first"));
            return Flow::Continue;
        }
        match msg {
            Message::Join { name } => self.join(name).await,
            Message::Answer { sdp, revision } => return self.answer(&sdp, revision).await,
            Message::Mute {
                target: None,
                audio,
                video,
            } => self.mute_self(audio, video).await,
            Message::Mute {
                target: Some(target),
                audio,
                video,
            } => self.mute_other(&target, audio, video).await,
            Message::Kick { target } => self.kick(&target),
            Message::Chat { text, .. } => self.chat(text),
            Message::Leave => return Flow::Close(Ending::Left),
            Message::Ping => self.reply(&Message::Pong),
            _ => self.reply(&Message::error(
                "bad_message",
                "that message type is sent by the server only",
            )),
        }
        Flow::Continue
    }

    async fn join(&mut self, name: Option<String>) {
        if self.joined.is_some() {
            self.reply(&Message::error("bad_message", "already joined"));
            return;
        }
        let name = name
            .or_else(|| self.identity.name.clone())
            .map(|n| n.trim().chars().take(MAX_NAME_CHARS).collect::<String>())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Guest".into());
        let room = self.identity.room.clone();
        let meeting_id = crate::room::meeting_id(&room);
        let state = self.state.clone();
        let _membership = state.rooms.membership.lock().await;
        let (exists, full) = {
            let rooms = state.rooms.lock();
            let r = rooms.get(&room);
            (
                r.is_some(),
                r.is_some_and(|r| r.members.len() >= state.config.signalling.max_participants),
            )
        };
        if full {
            self.reply(&Message::error("room_full", "the room is full"));
            return;
        }
        if !exists {
            // A conference left over from before a restart of this service has no
            // sessions any more: replace it.
            if state.inner().conferences.contains_key(&meeting_id) {
                let _ = focus::expire_conference(&state, &meeting_id, "signalling").await;
            }
            if let Err(e) =
                focus::create_conference(&state, &meeting_id, Some(room.clone()), "signalling")
                    .await
            {
                self.reply(&Message::error("unavailable", e.message));
                return;
            }
            state.rooms.lock().insert(room.clone(), Room::new(&room));
        }
        let endpoint = format!("{:08x}", rand::random::<u32>());
        let alloc = match focus::create_endpoint(&state, &meeting_id, &endpoint, "signalling").await
        {
            Ok(a) => a,
            Err(e) => {
                self.reply(&Message::error("unavailable", e.message));
                self.drop_room_if_empty(&room).await;
                return;
            }
        };
        let role = if self.identity.moderator {
            Role::Moderator
        } else {
            Role::Participant
        };
        let info = Participant {
            endpoint: endpoint.clone(),
            name: name.clone(),
            role,
            audio_muted: false,
            video_muted: false,
            avatar: self.identity.avatar.clone(),
        };
        let joined_msg = {
            let mut rooms = state.rooms.lock();
            let Some(r) = rooms.get_mut(&room) else {
                return;
            };
            let joined = Message::Joined {
                endpoint: endpoint.clone(),
                room: room.clone(),
                name,
                role,
                participants: r.others(&endpoint),
                chat: r.chat.iter().cloned().collect(),
            };
            let dropped = r.broadcast(
                &Message::ParticipantJoined {
                    participant: info.clone(),
                }
                .to_text(),
                None,
            );
            state.rooms.count_dropped(dropped);
            r.members.insert(
                endpoint.clone(),
                Member {
                    info,
                    sources: Vec::new(),
                    force: ForceMute::default(),
                    tx: self.out.clone(),
                    renegotiate: self.renegotiate.clone(),
                    close: self.close.clone(),
                },
            );
            joined
        };
        tracing::info!(%room, %endpoint, ?role, "participant joined");
        self.reply(&joined_msg);
        self.joined = Some(Joined {
            room,
            meeting_id,
            endpoint,
            role,
            alloc,
            negotiation: Negotiation::new(rand::random::<u32>().into()),
            outstanding: None,
            again: false,
            revision: 0,
            remote: None,
        });
        self.renegotiate.notify_one();
    }

    /// Sends a new offer if the remote sources changed (or none was sent yet), unless
    /// one is awaiting its answer.
    async fn offer_if_due(&mut self) {
        let Some(j) = self.joined.as_mut() else {
            return;
        };
        if j.outstanding.is_some() {
            j.again = true;
            return;
        }
        let sources = self
            .state
            .rooms
            .lock()
            .get(&j.room)
            .map(|r| r.sources_for(&j.endpoint))
            .unwrap_or_default();
        let changed = j.negotiation.update(&sources);
        if !changed && j.revision > 0 {
            return;
        }
        let sdp = j.negotiation.offer(&j.alloc);
        j.revision += 1;
        j.outstanding = Some(j.revision);
        let revision = j.revision;
        self.reply(&Message::Offer { sdp, revision });
    }

    async fn answer(&mut self, sdp: &str, revision: u64) -> Flow {
        let Some(j) = self.joined.as_mut() else {
            return Flow::Continue;
        };
        if j.outstanding != Some(revision) {
            self.reply(&Message::error(
                "stale_answer",
                format!("no offer {revision} is awaiting an answer"),
            ));
            return Flow::Continue;
        }
        let answer = match sdp::parse_answer(sdp, j.negotiation.m_lines()) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(endpoint = %j.endpoint, "bad answer: {e}");
                self.state.metrics.signalling_dropped("bad_answer");
                self.reply(&Message::error("bad_answer", e.to_string()));
                return Flow::Close(Ending::Expired);
            }
        };
        j.outstanding = None;
        let remote = (answer.ice.ufrag.clone(), answer.fingerprint.value.clone());
        let new_transport = j.remote.as_ref() != Some(&remote);
        let sources_changed = {
            let rooms = self.state.rooms.lock();
            rooms
                .get(&j.room)
                .and_then(|r| r.members.get(&j.endpoint))
                .is_some_and(|m| m.sources != answer.sources)
        };
        let update = EndpointUpdate {
            ice: new_transport.then(|| answer.ice.clone()),
            fingerprint: new_transport.then(|| answer.fingerprint.clone()),
            sources: sources_changed.then(|| answer.sources.clone()),
            force_mute: None,
        };
        let (meeting_id, endpoint) = (j.meeting_id.clone(), j.endpoint.clone());
        if let Err(e) = focus::update_endpoint(
            &self.state,
            &meeting_id,
            &endpoint,
            update,
            false,
            "signalling",
        )
        .await
        {
            self.reply(&Message::error("bad_answer", e.message));
            return Flow::Close(Ending::Expired);
        }
        let Some(j) = self.joined.as_mut() else {
            return Flow::Continue;
        };
        j.remote = Some(remote);
        if sources_changed {
            let mut rooms = self.state.rooms.lock();
            if let Some(r) = rooms.get_mut(&j.room) {
                if let Some(m) = r.members.get_mut(&j.endpoint) {
                    m.sources = answer.sources;
                }
                r.renegotiate_others(&j.endpoint);
            }
        }
        if std::mem::take(&mut j.again) {
            self.renegotiate.notify_one();
        }
        Flow::Continue
    }

    async fn mute_self(&mut self, audio: Option<bool>, video: Option<bool>) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        let (room, endpoint, meeting_id) =
            (j.room.clone(), j.endpoint.clone(), j.meeting_id.clone());
        // Unmuting yourself lifts a moderator's force-mute of that kind.
        let lift = {
            let mut rooms = self.state.rooms.lock();
            let Some(m) = rooms
                .get_mut(&room)
                .and_then(|r| r.members.get_mut(&endpoint))
            else {
                return;
            };
            let before = m.force;
            if audio == Some(false) {
                m.force.audio = false;
            }
            if video == Some(false) {
                m.force.video = false;
            }
            (m.force != before).then_some(m.force)
        };
        if let Some(force) = lift {
            let update = EndpointUpdate {
                force_mute: Some(force),
                ..Default::default()
            };
            if let Err(e) = focus::update_endpoint(
                &self.state,
                &meeting_id,
                &endpoint,
                update,
                false,
                "signalling",
            )
            .await
            {
                self.reply(&Message::error("unavailable", e.message));
                return;
            }
        }
        self.update_participant(&room, &endpoint, audio, video);
    }

    /// Applies mute flags to a member and tells the room.
    fn update_participant(
        &self,
        room: &str,
        endpoint: &str,
        audio: Option<bool>,
        video: Option<bool>,
    ) {
        let mut rooms = self.state.rooms.lock();
        let Some(r) = rooms.get_mut(room) else {
            return;
        };
        let Some(m) = r.members.get_mut(endpoint) else {
            return;
        };
        let before = m.info.clone();
        if let Some(a) = audio {
            m.info.audio_muted = a;
        }
        if let Some(v) = video {
            m.info.video_muted = v;
        }
        if m.info != before {
            let text = Message::ParticipantUpdated {
                participant: m.info.clone(),
            }
            .to_text();
            let dropped = r.broadcast(&text, None);
            self.state.rooms.count_dropped(dropped);
        }
    }

    async fn mute_other(&mut self, target: &str, audio: Option<bool>, video: Option<bool>) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        if j.role != Role::Moderator {
            self.reply(&Message::error("forbidden", "only moderators mute others"));
            return;
        }
        if audio == Some(false) || video == Some(false) {
            self.reply(&Message::error(
                "forbidden",
                "moderators can mute others, not unmute them",
            ));
            return;
        }
        let (audio, video) = (audio == Some(true), video == Some(true));
        if !audio && !video {
            self.reply(&Message::error(
                "bad_message",
                "mute what? set audio and/or video",
            ));
            return;
        }
        let (room, me, meeting_id) = (j.room.clone(), j.endpoint.clone(), j.meeting_id.clone());
        let targets: Vec<(String, ForceMute)> = {
            let rooms = self.state.rooms.lock();
            let Some(r) = rooms.get(&room) else {
                return;
            };
            r.members
                .iter()
                .filter(|(id, _)| {
                    if target == "*" {
                        id.as_str() != me
                    } else {
                        id.as_str() == target
                    }
                })
                .map(|(id, m)| {
                    (
                        id.clone(),
                        ForceMute {
                            audio: m.force.audio || audio,
                            video: m.force.video || video,
                        },
                    )
                })
                .collect()
        };
        if targets.is_empty() && target != "*" {
            self.reply(&Message::error(
                "unknown_target",
                format!("no participant {target} in this room"),
            ));
            return;
        }
        for (id, force) in targets {
            let update = EndpointUpdate {
                force_mute: Some(force),
                ..Default::default()
            };
            if let Err(e) =
                focus::update_endpoint(&self.state, &meeting_id, &id, update, false, "moderator")
                    .await
            {
                self.reply(&Message::error("unavailable", e.message));
                continue;
            }
            {
                let mut rooms = self.state.rooms.lock();
                if let Some(m) = rooms.get_mut(&room).and_then(|r| r.members.get_mut(&id)) {
                    m.force = force;
                    let _ = m.tx.try_send(
                        Message::Muted {
                            by: me.clone(),
                            audio: force.audio,
                            video: force.video,
                        }
                        .to_text(),
                    );
                }
            }
            self.update_participant(&room, &id, audio.then_some(true), video.then_some(true));
            tracing::info!(%room, by = %me, target = %id, audio, video, "moderator muted");
        }
    }

    fn kick(&mut self, target: &str) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        if j.role != Role::Moderator {
            self.reply(&Message::error("forbidden", "only moderators kick"));
            return;
        }
        if target == j.endpoint {
            self.reply(&Message::error("bad_message", "use leave to leave"));
            return;
        }
        let found = {
            let rooms = self.state.rooms.lock();
            rooms
                .get(&j.room)
                .and_then(|r| r.members.get(target))
                .map(|m| {
                    m.close.send_replace(Some(CloseReason::Kicked {
                        by: j.endpoint.clone(),
                    }))
                })
                .is_some()
        };
        if found {
            tracing::info!(room = %j.room, by = %j.endpoint, %target, "moderator kicked");
            self.state.record(
                crate::records::Event::now(crate::records::EventKind::Kicked)
                    .with_meeting(j.meeting_id.clone())
                    .with_endpoint(target.to_owned())
                    .with_actor("moderator")
                    .with_detail(format!("by {}", j.endpoint)),
            );
        } else {
            self.reply(&Message::error(
                "unknown_target",
                format!("no participant {target} in this room"),
            ));
        }
    }

    fn chat(&mut self, text: Option<String>) {
        let Some(j) = self.joined.as_ref() else {
            return;
        };
        let max = self.state.config.signalling.max_chat_chars;
        let text = text.unwrap_or_default();
        let text = text.trim();
        if text.is_empty() || text.chars().count() > max {
            self.reply(&Message::error(
                "bad_message",
                format!("chat text must be 1-{max} characters"),
            ));
            return;
        }
        let keep = self.state.config.signalling.chat_history;
        let mut rooms = self.state.rooms.lock();
        let Some(r) = rooms.get_mut(&j.room) else {
            return;
        };
        let name = r
            .members
            .get(&j.endpoint)
            .map(|m| m.info.name.clone())
            .unwrap_or_default();
        let message = ChatMessage {
            from: j.endpoint.clone(),
            name,
            text: text.to_owned(),
            ts: now_ms(),
        };
        r.chat.push_back(message.clone());
        while r.chat.len() > keep {
            r.chat.pop_front();
        }
        let dropped = r.broadcast(
            &Message::Chat {
                text: None,
                message: Some(message),
            }
            .to_text(),
            None,
        );
        self.state.rooms.count_dropped(dropped);
    }

    /// Leaves the room: the member goes, the others are told and renegotiate, the
    /// endpoint is expired on the bridge, and an empty room's conference too.
    async fn leave(&mut self, ending: &Ending) {
        let Some(j) = self.joined.take() else {
            return;
        };
        let state = self.state.clone();
        let _membership = state.rooms.membership.lock().await;
        {
            let mut rooms = state.rooms.lock();
            if let Some(r) = rooms.get_mut(&j.room) {
                r.members.remove(&j.endpoint);
                let dropped = r.broadcast(
                    &Message::ParticipantLeft {
                        endpoint: j.endpoint.clone(),
                        reason: ending.reason().into(),
                    }
                    .to_text(),
                    None,
                );
                state.rooms.count_dropped(dropped);
                r.renegotiate_others(&j.endpoint);
            }
        }
        let actor = match ending {
            Ending::Kicked => "moderator",
            _ => "signalling",
        };
        if let Err(e) = focus::expire_endpoint(&state, &j.meeting_id, &j.endpoint, actor).await {
            // Already gone (the bridge expired it) or the bridge is away: nothing to undo.
            tracing::debug!(endpoint = %j.endpoint, "expiring endpoint: {}", e.message);
        }
        tracing::info!(room = %j.room, endpoint = %j.endpoint, reason = ending.reason(), "participant left");
        self.drop_room_if_empty_locked(&j.room).await;
    }

    async fn drop_room_if_empty(&self, room: &str) {
        self.drop_room_if_empty_locked(room).await;
    }

    /// Expires an empty room's conference (the caller holds the membership lock).
    async fn drop_room_if_empty_locked(&self, room: &str) {
        let gone = {
            let mut rooms = self.state.rooms.lock();
            match rooms.get(room) {
                Some(r) if r.members.is_empty() => rooms.remove(room),
                _ => None,
            }
        };
        if let Some(r) = gone {
            if let Err(e) = focus::expire_conference(&self.state, &r.meeting_id, "signalling").await
            {
                tracing::debug!(room, "expiring conference: {}", e.message);
            }
        }
    }
}

/// Closes the sessions whose endpoints the bridge expired or failed, and, after the
/// bridge link reconnects, those whose conference the bridge no longer has.
pub async fn follow_bridge(state: AppState) {
    use crate::link::LinkEvent;
    use viaduct_bridge::command::protocol::Event as BridgeEvent;
    let mut events = state.link.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let close = |conference: &str, endpoint: &str, why: String| {
            let rooms = state.rooms.lock();
            if let Some(m) = rooms
                .values()
                .find(|r| r.meeting_id == conference)
                .and_then(|r| r.members.get(endpoint))
            {
                m.close.send_replace(Some(CloseReason::Expired(why)));
            }
        };
        match event {
            LinkEvent::Bridge(BridgeEvent::EndpointExpired {
                conference,
                endpoint,
                reason,
            })
            | LinkEvent::Bridge(BridgeEvent::EndpointFailed {
                conference,
                endpoint,
                reason,
            }) => close(&conference, &endpoint, reason),
            LinkEvent::Connected(snapshot) => {
                let rooms = state.rooms.lock();
                for r in rooms.values() {
                    if !snapshot
                        .conferences
                        .iter()
                        .any(|c| c.conference == r.meeting_id)
                    {
                        for m in r.members.values() {
                            m.close.send_replace(Some(CloseReason::Expired(
                                "the bridge restarted".into(),
                            )));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Query of `GET /dev/token`.
#[derive(Debug, Deserialize)]
pub struct DevTokenQuery {
    /// The room.
    pub room: String,
    /// Display name.
    pub name: Option<String>,
    /// Moderator role.
    #[serde(default)]
    pub moderator: bool,
}

/// `GET /dev/token?room=R&name=N&moderator=true`: in dev mode, a token for anyone
/// who asks (the API listens on loopback only); 403 otherwise.
pub async fn dev_token(
    State(state): State<AppState>,
    Query(q): Query<DevTokenQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (AuthMode::Dev, Some(secret)) = (state.config.auth, state.auth.dev_secret.as_deref())
    else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "dev tokens are off: the service runs with --auth jwt",
        ));
    };
    let room =
        crate::auth::normalize_room(&q.room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name = q.name.unwrap_or_else(|| "Guest".into());
    let token = crate::auth::mint(
        secret,
        &crate::auth::Mint {
            app_id: &state.auth.app_id,
            room: &room,
            name: name.trim(),
            moderator: q.moderator,
            ttl_s: 6 * 3600,
        },
    )
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNSPECIFIED",
            e.to_string(),
        )
    })?;
    Ok(axum::Json(serde_json::json!({ "token": token })))
}

/// `GET /api/config`: what the demo page needs to know.
pub async fn page_config(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "auth": state.config.auth.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_their_type_tag() {
        let m: Message = serde_json::from_str(r#"{"type":"join","name":"Ann"}"#).unwrap();
        assert_eq!(
            m,
            Message::Join {
                name: Some("Ann".into())
            }
        );
        let m: Message =
            serde_json::from_str(r#"{"type":"mute","target":"*","audio":true}"#).unwrap();
        assert!(
            matches!(m, Message::Mute { target: Some(t), audio: Some(true), video: None } if t == "*")
        );
        let text = Message::ParticipantLeft {
            endpoint: "e1".into(),
            reason: "kicked".into(),
        }
        .to_text();
        assert_eq!(
            &*text,
            r#"{"type":"participant-left","endpoint":"e1","reason":"kicked"}"#
        );
        let chat = Message::Chat {
            text: None,
            message: Some(ChatMessage {
                from: "a".into(),
                name: "A".into(),
                text: "hi".into(),
                ts: 1,
            }),
        }
        .to_text();
        assert_eq!(
            &*chat,
            r#"{"type":"chat","message":{"from":"a","name":"A","text":"hi","ts":1}}"#
        );
        assert!(serde_json::from_str::<Message>(r#"{"type":"nonsense"}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"name":"x"}"#).is_err());
    }

    #[test]
    fn rate_limit_refills_over_its_window() {
        let mut r = RateLimit::new(3, Duration::from_secs(3));
        let t = Instant::now();
        assert!(r.allow(t) && r.allow(t) && r.allow(t));
        assert!(!r.allow(t));
        assert_eq!(r.excess, 1);
        assert!(r.allow(t + Duration::from_millis(1100)));
        assert!(!r.allow(t + Duration::from_millis(1100)));
    }
}

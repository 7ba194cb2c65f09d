//! Rooms: the participants connected over WebSocket to each named room, their media
//! sources and mute state, and the room's bounded chat history. A room is one bridge
//! conference (meeting id `room:<name>`), allocated through the same code as the
//! colibri2 API. Sessions reach each other only through here: messages go into each
//! member's bounded queue (a full queue drops and counts), renegotiation and closing
//! are flags that never block.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use viaduct_bridge::command::protocol::{ForceMute, MediaSource};

use crate::sdp::RemoteSource;

/// The bridge conference id of a room.
pub fn meeting_id(room: &str) -> String {
    format!("room:{room}")
}

/// A participant as others see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Participant {
    /// Endpoint id (unique in the room).
    pub endpoint: String,
    /// Display name.
    pub name: String,
    /// `moderator` or `participant`.
    pub role: Role,
    /// Audio muted (by itself or by a moderator).
    pub audio_muted: bool,
    /// Video muted.
    pub video_muted: bool,
    /// The token's `context.user.avatar`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// What a participant may do.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May mute others and kick.
    Moderator,
    /// May chat and mute itself.
    Participant,
}

/// A chat message as kept and sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Sender's endpoint id.
    pub from: String,
    /// Sender's display name.
    pub name: String,
    /// The text.
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// Why a session is told to close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A moderator removed it.
    Kicked {
        /// The moderator's endpoint id.
        by: String,
    },
    /// The bridge expired its endpoint (consent lapsed, ICE or DTLS failed, bridge
    /// restarted).
    Expired(String),
}

/// One connected participant.
#[derive(Debug)]
pub struct Member {
    /// What others see.
    pub info: Participant,
    /// Its own media sources, from its latest answer.
    pub sources: Vec<MediaSource>,
    /// What the bridge drops of it on a moderator's request.
    pub force: ForceMute,
    /// Its outgoing message queue (JSON text).
    pub tx: mpsc::Sender<Arc<str>>,
    /// Set when its offer must be redone.
    pub renegotiate: Arc<Notify>,
    /// Set when it must close.
    pub close: watch::Sender<Option<CloseReason>>,
}

/// One room.
#[derive(Debug)]
pub struct Room {
    /// The bridge conference.
    pub meeting_id: String,
    /// Members by endpoint id.
    pub members: BTreeMap<String, Member>,
    /// The latest chat messages, oldest first.
    pub chat: VecDeque<ChatMessage>,
}

impl Room {
    /// An empty room.
    pub fn new(name: &str) -> Self {
        Self {
            meeting_id: meeting_id(name),
            members: BTreeMap::new(),
            chat: VecDeque::new(),
        }
    }

    /// Every other member's sources, as `endpoint`'s offer names them.
    pub fn sources_for(&self, endpoint: &str) -> Vec<RemoteSource> {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != endpoint)
            .flat_map(|(id, m)| {
                m.sources.iter().map(move |s| RemoteSource {
                    endpoint: id.clone(),
                    source: s.clone(),
                })
            })
            .collect()
    }

    /// Everyone but `endpoint`, as others see them.
    pub fn others(&self, endpoint: &str) -> Vec<Participant> {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != endpoint)
            .map(|(_, m)| m.info.clone())
            .collect()
    }

    /// Queues `text` for every member but `except`; returns how many queues were full.
    pub fn broadcast(&self, text: &Arc<str>, except: Option<&str>) -> u64 {
        let mut dropped = 0;
        for (id, m) in &self.members {
            if Some(id.as_str()) == except {
                continue;
            }
            if m.tx.try_send(text.clone()).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Asks every member but `except` to renegotiate.
    pub fn renegotiate_others(&self, except: &str) {
        for (id, m) in &self.members {
            if id != except {
                m.renegotiate.notify_one();
            }
        }
    }
}

/// Every room, behind one lock (never held across an await).
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    /// Serializes joins and leaves, so a room's conference is created and expired once.
    pub membership: tokio::sync::Mutex<()>,
    /// Messages dropped because a member's queue was full.
    pub dropped: AtomicU64,
}

impl Rooms {
    /// The rooms behind the lock (a poisoned lock is recovered: the data is plain).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts messages a full queue dropped.
    pub fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(dropped = n, "signalling queue full: messages dropped");
        }
    }

    /// Participants connected in every room.
    pub fn participants(&self) -> usize {
        self.lock().values().map(|r| r.members.len()).sum()
    }
}

//! Conference lifecycle and audit records in an embedded SQLite file: written off the
//! request path by a dedicated writer thread fed through a bounded channel (full queue =
//! dropped event, never a blocked caller), read back through a separate read-only connection.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// Schema version kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i32 = 1;
/// Default capacity of the writer queue.
pub const DEFAULT_CAPACITY: usize = 4096;
/// At most this many queued messages are written in one transaction.
const MAX_BATCH: usize = 512;
/// Minimum interval between two "queue full" warnings.
const WARN_INTERVAL_MS: u64 = 1000;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conferences (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id         TEXT    NOT NULL,
    name               TEXT,
    created_at_ms      INTEGER NOT NULL,
    expired_at_ms      INTEGER,
    peak_participants  INTEGER NOT NULL DEFAULT 0,
    participants_total INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conferences_by_meeting ON conferences (meeting_id, id);
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    conference_id INTEGER REFERENCES conferences (id),
    at_ms         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    meeting_id    TEXT,
    endpoint      TEXT,
    actor         TEXT,
    detail        TEXT
);
CREATE INDEX IF NOT EXISTS events_by_conference ON events (conference_id, at_ms, id);
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms, id);
";

/// Errors of opening or reading the records database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    #[error("records database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("records database i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("records database schema version {found} is newer than supported version {supported}")]
    SchemaTooNew { found: i32, supported: i32 },
    #[error("records database holds an unknown event kind {0:?}")]
    UnknownKind(String),
}

/// What happened (serde: snake_case strings in the DB `kind` column and in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ConferenceCreated,
    ConferenceExpired,
    EndpointJoined,
    EndpointConnected,
    EndpointLeft,
    EndpointExpired,
    EndpointFailed,
    ForceMute,
    DrainEnabled,
    DrainDisabled,
    GracefulShutdown,
    BridgeReconnected,
    Kicked,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 13] = [
        EventKind::ConferenceCreated,
        EventKind::ConferenceExpired,
        EventKind::EndpointJoined,
        EventKind::EndpointConnected,
        EventKind::EndpointLeft,
        EventKind::EndpointExpired,
        EventKind::EndpointFailed,
        EventKind::ForceMute,
        EventKind::DrainEnabled,
        EventKind::DrainDisabled,
        EventKind::GracefulShutdown,
        EventKind::BridgeReconnected,
        EventKind::Kicked,
    ];

    /// The snake_case name (as stored in the DB and serialized in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ConferenceCreated => "conference_created",
            EventKind::ConferenceExpired => "conference_expired",
            EventKind::EndpointJoined => "endpoint_joined",
            EventKind::EndpointConnected => "endpoint_connected",
            EventKind::EndpointLeft => "endpoint_left",
            EventKind::EndpointExpired => "endpoint_expired",
            EventKind::EndpointFailed => "endpoint_failed",
            EventKind::ForceMute => "force_mute",
            EventKind::DrainEnabled => "drain_enabled",
            EventKind::DrainDisabled => "drain_disabled",
            EventKind::GracefulShutdown => "graceful_shutdown",
            EventKind::BridgeReconnected => "bridge_reconnected",
            EventKind::Kicked => "kicked",
        }
    }

    /// The inverse of [`EventKind::as_str`].
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record to write. `at_ms` is Unix time in milliseconds (the caller supplies it, so
/// tests can control it).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub at_ms: i64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Who asked: "focus", "operator", "bridge".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Reason etc. (for `ConferenceCreated`: the conference name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event with only a time and a kind; fill the rest with the `with_*` methods.
    pub fn new(at_ms: i64, kind: EventKind) -> Event {
        Event {
            at_ms,
            kind,
            meeting_id: None,
            endpoint: None,
            actor: None,
            detail: None,
        }
    }

    /// An event stamped with the current time ([`now_ms`]).
    pub fn now(kind: EventKind) -> Event {
        Event::new(now_ms(), kind)
    }

    pub fn with_meeting(mut self, meeting_id: impl Into<String>) -> Event {
        self.meeting_id = Some(meeting_id.into());
        self
    }

    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Event {
        self.endpoint = Some(endpoint.into());
        self
    }

    pub fn with_actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A conference's record as the read API returns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConferenceRecord {
    pub meeting_id: String,
    pub name: Option<String>,
    pub created_at_ms: i64,
    pub expired_at_ms: Option<i64>,
    /// `expired_at_ms - created_at_ms`, or None while running.
    pub duration_ms: Option<i64>,
    pub peak_participants: u32,
    /// Distinct endpoints that joined.
    pub participants_total: u32,
    /// In time order; empty in [`Records::recent`].
    pub events: Vec<Event>,
}

/// What the writer thread receives.
enum Msg {
    Event(Event),
    Participants {
        meeting_id: String,
        current: u32,
    },
    Flush(SyncSender<()>),
    Shutdown,
    /// Test hook: the writer acknowledges, then waits until `release` yields or closes.
    #[cfg(test)]
    Stall {
        ack: SyncSender<()>,
        release: Receiver<()>,
    },
}

/// Drop accounting shared by every handle.
#[derive(Debug)]
struct Shared {
    dropped: AtomicU64,
    /// Milliseconds since `epoch` of the last warning, `u64::MAX` if none yet.
    last_warn_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn note_dropped(&self, why: &'static str) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= WARN_INTERVAL_MS;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(dropped_total = total, "records: {why}, event dropped");
        }
    }
}

/// A cheap clonable handle for writing records; never blocks.
#[derive(Clone, Debug)]
pub struct RecordWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

impl RecordWriter {
    /// Non-blocking: queue the event for the writer thread (dropped and counted if the
    /// queue is full or the writer has stopped).
    pub fn record(&self, event: Event) {
        self.send(Msg::Event(event));
    }

    /// Also non-blocking: the current participant count of a conference changed (the
    /// writer keeps `peak_participants` = max).
    pub fn participants(&self, meeting_id: &str, current: u32) {
        self.send(Msg::Participants {
            meeting_id: meeting_id.to_owned(),
            current,
        });
    }

    /// Events dropped so far (shared by every handle of the same [`Records`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.shared.note_dropped("writer queue full"),
            Err(TrySendError::Disconnected(_)) => self.shared.note_dropped("writer stopped"),
        }
    }
}

/// The records database: owns the writer thread and the read connection.
pub struct Records {
    writer: RecordWriter,
    reader: Mutex<Connection>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Opens (creating parent directories and the schema if needed; WAL mode; schema
    /// version in `PRAGMA user_version`) and starts the writer thread.
    pub fn open(path: &Path) -> Result<Records, RecordsError> {
        Records::open_with_capacity(path, DEFAULT_CAPACITY)
    }

    /// [`Records::open`] with a given writer queue capacity (tests use a tiny one).
    pub fn open_with_capacity(path: &Path, capacity: usize) -> Result<Records, RecordsError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "records: could not switch the database to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn)?;

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(BUSY_TIMEOUT)?;

        let (tx, rx) = mpsc::sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name("records-writer".into())
            .spawn(move || writer_loop(conn, rx))?;
        Ok(Records {
            writer: RecordWriter {
                tx,
                shared: Arc::new(Shared {
                    dropped: AtomicU64::new(0),
                    last_warn_ms: AtomicU64::new(u64::MAX),
                    epoch: Instant::now(),
                }),
            },
            reader: Mutex::new(reader),
            thread: Some(thread),
        })
    }

    /// A cheap clonable handle for writing.
    pub fn writer(&self) -> RecordWriter {
        self.writer.clone()
    }

    /// The most recent conference with this meeting id, with all its events in time
    /// order. None if never seen.
    pub fn conference(&self, meeting_id: &str) -> Result<Option<ConferenceRecord>, RecordsError> {
        let mut conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let found = tx
            .prepare_cached(
                "SELECT id, meeting_id, name, created_at_ms, expired_at_ms, \
                        peak_participants, participants_total \
                 FROM conferences WHERE meeting_id = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![meeting_id], conference_row)
            .optional()?;
        let Some((id, mut record)) = found else {
            return Ok(None);
        };
        let mut stmt = tx.prepare_cached(
            "SELECT at_ms, kind, meeting_id, endpoint, actor, detail \
             FROM events WHERE conference_id = ?1 ORDER BY at_ms, id",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (at_ms, kind, meeting_id, endpoint, actor, detail) = row?;
            let kind = EventKind::from_name(&kind).ok_or(RecordsError::UnknownKind(kind))?;
            record.events.push(Event {
                at_ms,
                kind,
                meeting_id,
                endpoint,
                actor,
                detail,
            });
        }
        Ok(Some(record))
    }

    /// Recent conferences (newest first), at most `limit`, without events.
    pub fn recent(&self, limit: usize) -> Result<Vec<ConferenceRecord>, RecordsError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT id, meeting_id, name, created_at_ms, expired_at_ms, \
                    peak_participants, participants_total \
             FROM conferences ORDER BY id DESC LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![limit], conference_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.1);
        }
        Ok(out)
    }

    /// Waits until every event sent so far is written (for tests and shutdown). Returns
    /// at once if the writer thread has stopped.
    pub fn flush(&self) {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        // A blocking send: the writer is always draining, so this waits at most for one batch.
        if self.writer.tx.send(Msg::Flush(reply_tx)).is_ok() {
            let _ = reply_rx.recv();
        }
    }

    /// Events dropped because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.writer.dropped()
    }

    /// Test hook: stall the writer thread until the returned sender is dropped or sends.
    #[cfg(test)]
    fn stall(&self) -> SyncSender<()> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel(1);
        self.writer
            .tx
            .send(Msg::Stall {
                ack: ack_tx,
                release: release_rx,
            })
            .expect("writer running");
        ack_rx.recv().expect("writer stalled");
        release_tx
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        // Everything queued before the shutdown message is still written. If the writer
        // has died, the send fails at once; otherwise it drains, so this cannot hang.
        let _ = self.writer.tx.send(Msg::Shutdown);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("records: writer thread panicked");
            }
        }
    }
}

/// `(row id, record without events)` from a `conferences` row.
fn conference_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ConferenceRecord)> {
    let created_at_ms: i64 = r.get(3)?;
    let expired_at_ms: Option<i64> = r.get(4)?;
    let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok((
        r.get(0)?,
        ConferenceRecord {
            meeting_id: r.get(1)?,
            name: r.get(2)?,
            created_at_ms,
            expired_at_ms,
            duration_ms: expired_at_ms.map(|e| e.saturating_sub(created_at_ms)),
            peak_participants: count(r.get(5)?),
            participants_total: count(r.get(6)?),
            events: Vec::new(),
        },
    ))
}

/// Creates or checks the schema (idempotent).
fn migrate(conn: &mut Connection) -> Result<(), RecordsError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(RecordsError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// The writer thread: blocks for one message, drains whatever else is queued, writes the
/// batch in one transaction, then answers flushes. Ends on `Shutdown` or when every
/// sender is gone.
fn writer_loop(mut conn: Connection, rx: Receiver<Msg>) {
    loop {
        let Ok(first) = rx.recv() else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut shutdown = false;
        if let Err(e) = write_batch(&mut conn, batch, &mut flushes, &mut shutdown) {
            tracing::error!(error = %e, "records: writing a batch failed");
        }
        for reply in flushes {
            let _ = reply.send(());
        }
        if shutdown {
            return;
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: Vec<Msg>,
    flushes: &mut Vec<SyncSender<()>>,
    shutdown: &mut bool,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for msg in batch {
        match msg {
            Msg::Event(event) => {
                if let Err(e) = write_event(&tx, &event) {
                    tracing::error!(error = %e, kind = %event.kind, "records: writing an event failed");
                }
            }
            Msg::Participants {
                meeting_id,
                current,
            } => {
                if let Err(e) = write_participants(&tx, &meeting_id, current) {
                    tracing::error!(error = %e, "records: updating participants failed");
                }
            }
            Msg::Flush(reply) => flushes.push(reply),
            Msg::Shutdown => {
                // Anything after the shutdown message is not written.
                *shutdown = true;
                break;
            }
            #[cfg(test)]
            Msg::Stall { ack, release } => {
                let _ = ack.send(());
                let _ = release.recv();
            }
        }
    }
    tx.commit()
}

/// The newest non-expired conference row for a meeting id.
fn open_conference(conn: &Connection, meeting_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT id FROM conferences WHERE meeting_id = ?1 AND expired_at_ms IS NULL \
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![meeting_id], |r| r.get(0))
    .optional()
}

/// The newest conference row for a meeting id, expired or not.
fn latest_conference(conn: &Connection, meeting_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT id FROM conferences WHERE meeting_id = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![meeting_id], |r| r.get(0))
    .optional()
}

fn write_event(conn: &Connection, event: &Event) -> rusqlite::Result<()> {
    let conference_id = match &event.meeting_id {
        None => None,
        Some(meeting_id) => match event.kind {
            EventKind::ConferenceCreated => {
                conn.prepare_cached(
                    "INSERT INTO conferences (meeting_id, name, created_at_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![meeting_id, event.detail, event.at_ms])?;
                Some(conn.last_insert_rowid())
            }
            EventKind::ConferenceExpired => match open_conference(conn, meeting_id)? {
                Some(id) => {
                    conn.prepare_cached("UPDATE conferences SET expired_at_ms = ?2 WHERE id = ?1")?
                        .execute(params![id, event.at_ms])?;
                    Some(id)
                }
                // Already expired (or never created): attach to the newest row, if any.
                None => latest_conference(conn, meeting_id)?,
            },
            EventKind::EndpointJoined => match open_conference(conn, meeting_id)? {
                Some(id) => {
                    // participants_total counts distinct endpoints; an anonymous join counts once each.
                    let seen: bool = match &event.endpoint {
                        None => false,
                        Some(endpoint) => conn
                            .prepare_cached(
                                "SELECT EXISTS (SELECT 1 FROM events WHERE conference_id = ?1 \
                                 AND kind = ?2 AND endpoint = ?3)",
                            )?
                            .query_row(
                                params![id, EventKind::EndpointJoined.as_str(), endpoint],
                                |r| r.get(0),
                            )?,
                    };
                    if !seen {
                        conn.prepare_cached(
                            "UPDATE conferences SET participants_total = participants_total + 1 \
                             WHERE id = ?1",
                        )?
                        .execute(params![id])?;
                    }
                    Some(id)
                }
                None => latest_conference(conn, meeting_id)?,
            },
            _ => match open_conference(conn, meeting_id)? {
                Some(id) => Some(id),
                None => latest_conference(conn, meeting_id)?,
            },
        },
    };
    conn.prepare_cached(
        "INSERT INTO events (conference_id, at_ms, kind, meeting_id, endpoint, actor, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        conference_id,
        event.at_ms,
        event.kind.as_str(),
        event.meeting_id,
        event.endpoint,
        event.actor,
        event.detail,
    ])?;
    Ok(())
}

fn write_participants(conn: &Connection, meeting_id: &str, current: u32) -> rusqlite::Result<()> {
    if let Some(id) = open_conference(conn, meeting_id)? {
        conn.prepare_cached(
            "UPDATE conferences SET peak_participants = MAX(peak_participants, ?2) WHERE id = ?1",
        )?
        .execute(params![id, current])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A unique temp directory, removed on drop. Declare it before the `Records` so the
    /// database is closed first.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            TempDir(std::env::temp_dir().join(format!(
                "viaduct-records-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )))
        }

        /// A database path in a not-yet-existing subdirectory (exercises create_dir_all).
        fn db(&self) -> PathBuf {
            self.0.join("sub").join("records.sqlite")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ev(at_ms: i64, kind: EventKind, meeting: &str) -> Event {
        Event::new(at_ms, kind).with_meeting(meeting)
    }

    #[test]
    fn kind_names_match_serde() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::from_name("nope"), None);
    }

    #[test]
    fn lifecycle() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        w.record(
            ev(1_000, EventKind::ConferenceCreated, "m1")
                .with_actor("focus")
                .with_detail("room one"),
        );
        for (i, ep) in ["a", "b", "c"].into_iter().enumerate() {
            let i = i as i64;
            w.record(ev(1_100 + i, EventKind::EndpointJoined, "m1").with_endpoint(ep));
            w.participants("m1", u32::try_from(i + 1).unwrap());
        }
        // A rejoin of "a" is not a new participant.
        w.record(ev(1_150, EventKind::EndpointJoined, "m1").with_endpoint("a"));
        w.record(ev(1_200, EventKind::EndpointLeft, "m1").with_endpoint("b"));
        w.participants("m1", 2);
        w.record(
            ev(1_300, EventKind::EndpointExpired, "m1")
                .with_endpoint("c")
                .with_detail("ice timeout"),
        );
        w.participants("m1", 1);
        records.flush();

        let running = records.conference("m1").unwrap().unwrap();
        assert_eq!(running.expired_at_ms, None);
        assert_eq!(running.duration_ms, None);

        w.record(ev(61_000, EventKind::ConferenceExpired, "m1").with_actor("bridge"));
        // Out of time order on purpose: read back sorted by time.
        w.record(ev(1_250, EventKind::ForceMute, "m1").with_actor("operator"));
        records.flush();

        let c = records.conference("m1").unwrap().unwrap();
        assert_eq!(c.meeting_id, "m1");
        assert_eq!(c.name.as_deref(), Some("room one"));
        assert_eq!(c.created_at_ms, 1_000);
        assert_eq!(c.expired_at_ms, Some(61_000));
        assert_eq!(c.duration_ms, Some(60_000));
        assert_eq!(c.peak_participants, 3);
        assert_eq!(c.participants_total, 3);
        let kinds: Vec<(i64, EventKind)> = c.events.iter().map(|e| (e.at_ms, e.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1_000, EventKind::ConferenceCreated),
                (1_100, EventKind::EndpointJoined),
                (1_101, EventKind::EndpointJoined),
                (1_102, EventKind::EndpointJoined),
                (1_150, EventKind::EndpointJoined),
                (1_200, EventKind::EndpointLeft),
                (1_250, EventKind::ForceMute),
                (1_300, EventKind::EndpointExpired),
                (61_000, EventKind::ConferenceExpired),
            ]
        );
        assert_eq!(c.events[0].actor.as_deref(), Some("focus"));
        assert_eq!(c.events[7].detail.as_deref(), Some("ice timeout"));
        assert_eq!(c.events[7].endpoint.as_deref(), Some("c"));
        assert_eq!(records.dropped(), 0);

        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["duration_ms"], 60_000);
        assert_eq!(json["peak_participants"], 3);
        assert_eq!(json["events"][0]["kind"], "conference_created");
    }

    #[test]
    fn meeting_id_reuse_keeps_both_rows() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        w.record(ev(1_000, EventKind::ConferenceCreated, "m").with_detail("first"));
        w.record(ev(1_100, EventKind::EndpointJoined, "m").with_endpoint("x"));
        w.participants("m", 1);
        w.record(ev(2_000, EventKind::ConferenceExpired, "m"));
        w.record(ev(3_000, EventKind::ConferenceCreated, "m").with_detail("second"));
        w.record(ev(3_100, EventKind::EndpointJoined, "m").with_endpoint("y"));
        w.record(ev(3_200, EventKind::EndpointJoined, "m").with_endpoint("z"));
        w.participants("m", 2);
        records.flush();

        let c = records.conference("m").unwrap().unwrap();
        assert_eq!(c.name.as_deref(), Some("second"));
        assert_eq!(c.created_at_ms, 3_000);
        assert_eq!(c.expired_at_ms, None);
        assert_eq!(c.participants_total, 2);
        assert_eq!(c.peak_participants, 2);
        assert_eq!(c.events.len(), 3);

        let all = records.recent(10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name.as_deref(), Some("second"));
        assert_eq!(all[1].name.as_deref(), Some("first"));
        assert_eq!(all[1].duration_ms, Some(1_000));
        assert_eq!(all[1].participants_total, 1);
        assert_eq!(all[1].peak_participants, 1);
    }

    #[test]
    fn recent_newest_first_with_limit() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        for i in 0..5 {
            w.record(ev(
                1_000 * i,
                EventKind::ConferenceCreated,
                &format!("m{i}"),
            ));
            w.record(ev(
                1_000 * i + 1,
                EventKind::EndpointJoined,
                &format!("m{i}"),
            ));
        }
        records.flush();
        let recent = records.recent(3).unwrap();
        let ids: Vec<&str> = recent.iter().map(|c| c.meeting_id.as_str()).collect();
        assert_eq!(ids, ["m4", "m3", "m2"]);
        assert!(recent.iter().all(|c| c.events.is_empty()));
        assert_eq!(records.recent(0).unwrap().len(), 0);
        assert_eq!(records.recent(100).unwrap().len(), 5);
    }

    #[test]
    fn unknown_meeting_is_none() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        assert_eq!(records.conference("nope").unwrap(), None);
        assert!(records.recent(10).unwrap().is_empty());
        // Events for a meeting never created are kept but belong to no conference.
        records
            .writer()
            .record(ev(5, EventKind::EndpointJoined, "ghost"));
        records.flush();
        assert_eq!(records.conference("ghost").unwrap(), None);
    }

    fn count_events(path: &Path, sql: &str) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn events_without_meeting_are_stored() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        w.record(Event::new(10, EventKind::DrainEnabled).with_actor("operator"));
        w.record(Event::new(20, EventKind::BridgeReconnected).with_actor("bridge"));
        w.record(Event::new(30, EventKind::GracefulShutdown));
        records.flush();
        assert_eq!(
            count_events(
                &tmp.db(),
                "SELECT COUNT(*) FROM events WHERE conference_id IS NULL AND meeting_id IS NULL"
            ),
            3
        );
        assert_eq!(
            count_events(
                &tmp.db(),
                "SELECT COUNT(*) FROM events WHERE kind = 'drain_enabled' AND actor = 'operator'"
            ),
            1
        );
    }

    #[test]
    fn reopen_keeps_data() {
        let tmp = TempDir::new();
        {
            let records = Records::open(&tmp.db()).unwrap();
            let w = records.writer();
            w.record(ev(1, EventKind::ConferenceCreated, "keep").with_detail("kept"));
            w.record(ev(2, EventKind::EndpointJoined, "keep").with_endpoint("e"));
            // No flush: dropping Records must still write what was queued.
        }
        for _ in 0..2 {
            let records = Records::open(&tmp.db()).unwrap();
            let c = records.conference("keep").unwrap().unwrap();
            assert_eq!(c.name.as_deref(), Some("kept"));
            assert_eq!(c.participants_total, 1);
            assert_eq!(c.events.len(), 2);
        }
        assert_eq!(
            count_events(&tmp.db(), "PRAGMA user_version"),
            i64::from(SCHEMA_VERSION)
        );
        let conn = Connection::open(tmp.db()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = TempDir::new();
        drop(Records::open(&tmp.db()).unwrap());
        let conn = Connection::open(tmp.db()).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        match Records::open(&tmp.db()) {
            Err(RecordsError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn full_queue_drops_instead_of_blocking() {
        let tmp = TempDir::new();
        let records = Records::open_with_capacity(&tmp.db(), 2).unwrap();
        let w = records.writer();
        let release = records.stall();
        let started = Instant::now();
        for i in 0..10 {
            w.record(Event::new(i, EventKind::DrainEnabled));
        }
        w.participants("m", 3);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "record() blocked"
        );
        assert_eq!(records.dropped(), 9);
        assert_eq!(w.dropped(), 9);
        drop(release);
        records.flush();
        assert_eq!(count_events(&tmp.db(), "SELECT COUNT(*) FROM events"), 2);
        // Room again after the writer caught up.
        w.record(Event::new(100, EventKind::DrainDisabled));
        records.flush();
        assert_eq!(count_events(&tmp.db(), "SELECT COUNT(*) FROM events"), 3);
        assert_eq!(records.dropped(), 9);
    }

    #[test]
    fn writer_outliving_records_does_not_block() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        drop(records);
        w.record(Event::new(1, EventKind::DrainEnabled));
        assert_eq!(w.dropped(), 1);
    }

    #[test]
    fn quotes_and_unicode_round_trip() {
        let tmp = TempDir::new();
        let records = Records::open(&tmp.db()).unwrap();
        let w = records.writer();
        let meeting = "o'brien\"; DROP TABLE events; -- 会議 🎉";
        let name = "Ünïcødé 'room' \"x\" \\ \n tab\t";
        w.record(ev(1, EventKind::ConferenceCreated, meeting).with_detail(name));
        w.record(
            ev(2, EventKind::EndpointFailed, meeting)
                .with_endpoint("ép'1")
                .with_actor("focus")
                .with_detail("reason: \"dtls\" ✗ %s ?1"),
        );
        records.flush();
        let c = records.conference(meeting).unwrap().unwrap();
        assert_eq!(c.meeting_id, meeting);
        assert_eq!(c.name.as_deref(), Some(name));
        assert_eq!(c.events.len(), 2);
        assert_eq!(c.events[1].endpoint.as_deref(), Some("ép'1"));
        assert_eq!(
            c.events[1].detail.as_deref(),
            Some("reason: \"dtls\" ✗ %s ?1")
        );
        assert_eq!(c.events[1].meeting_id.as_deref(), Some(meeting));
        let json = serde_json::to_string(&c.events[1]).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.events[1]);
    }
}

//! The bridge link from the control side: one task keeps a connection to the bridge's
//! command socket, reconnecting with backoff; requests are matched to answers by id;
//! after every (re)connect it fetches the bridge's state so the service can reconcile,
//! and it forwards the bridge's events. While the bridge is unreachable, requests fail
//! at once with [`LinkError::Down`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use viaduct_bridge::command::protocol::{
    ErrorCode, Event, FromBridge, Reply, Request, RequestBody, StateSnapshot,
};

/// How long a request waits for the bridge's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Requests waiting for the link task.
const REQUEST_QUEUE: usize = 256;

/// Longest line accepted from the bridge (stats of thousands of endpoints fit).
const MAX_LINE: usize = 64 << 20;

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The bridge is not connected.
    #[error("bridge unreachable")]
    Down,
    /// The bridge did not answer in time.
    #[error("bridge did not answer in time")]
    Timeout,
    /// The bridge refused the request.
    #[error("{message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

/// What the link task reports.
#[derive(Clone, Debug)]
pub enum LinkEvent {
    /// (Re)connected; the bridge's state as it is now.
    Connected(Box<StateSnapshot>),
    /// The connection was lost.
    Disconnected,
    /// An event from the bridge.
    Bridge(Event),
}

struct Call {
    body: RequestBody,
    reply: oneshot::Sender<Result<Reply, LinkError>>,
}

/// A handle on the link task.
#[derive(Clone, Debug)]
pub struct Link {
    calls: mpsc::Sender<Call>,
    up: Arc<AtomicBool>,
    events: broadcast::Sender<LinkEvent>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

impl Link {
    /// Starts the link task for the socket at `path` (on the current runtime).
    pub fn spawn(path: PathBuf) -> Self {
        let (calls, rx) = mpsc::channel(REQUEST_QUEUE);
        let (events, _) = broadcast::channel(1024);
        let up = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(path, rx, up.clone(), events.clone()));
        Self { calls, up, events }
    }

    /// Whether the bridge is connected now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, body: RequestBody) -> Result<Reply, LinkError> {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(Call { body, reply: tx })
            .await
            .map_err(|_| LinkError::Down)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(LinkError::Down),
            Err(_) => Err(LinkError::Timeout),
        }
    }
}

async fn run(
    path: PathBuf,
    mut calls: mpsc::Receiver<Call>,
    up: Arc<AtomicBool>,
    events: broadcast::Sender<LinkEvent>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut was_up = false;
    loop {
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                tracing::info!(socket = %path.display(), "bridge link connected");
                let result = serve(stream, &mut calls, &up, &events).await;
                up.store(false, Ordering::Relaxed);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "bridge link lost");
                }
                let _ = events.send(LinkEvent::Disconnected);
                was_up = true;
            }
            Err(e) => {
                if was_up {
                    tracing::debug!(error = %e, "bridge not reachable yet");
                } else {
                    tracing::debug!(error = %e, socket = %path.display(), "waiting for the bridge");
                }
            }
        }
        // Refuse requests while waiting to reconnect.
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                call = calls.recv() => match call {
                    Some(c) => { let _ = c.reply.send(Err(LinkError::Down)); }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn serve(
    stream: UnixStream,
    calls: &mut mpsc::Receiver<Call>,
    up: &AtomicBool,
    events: &broadcast::Sender<LinkEvent>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // A reader task turns lines into messages, so the loop below selects only over
    // channels (cancel-safe).
    let (msg_tx, mut messages) = mpsc::channel::<std::io::Result<FromBridge>>(1024);
    let reader = tokio::spawn(read_messages(read, msg_tx));
    let result = serve_messages(&mut write, &mut messages, calls, up, events).await;
    reader.abort();
    result
}

async fn read_messages(
    read: tokio::net::unix::OwnedReadHalf,
    out: mpsc::Sender<std::io::Result<FromBridge>>,
) {
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        if n == 0 {
            let _ = out
                .send(Err(std::io::ErrorKind::UnexpectedEof.into()))
                .await;
            return;
        }
        if buf.last() != Some(&b'\n') && buf.len() >= MAX_LINE {
            let _ = out
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "line from the bridge too long",
                )))
                .await;
            return;
        }
        match serde_json::from_slice::<FromBridge>(&buf) {
            Ok(m) => {
                if out.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "bad line from the bridge"),
        }
    }
}

async fn serve_messages(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    messages: &mut mpsc::Receiver<std::io::Result<FromBridge>>,
    calls: &mut mpsc::Receiver<Call>,
    up: &AtomicBool,
    events: &broadcast::Sender<LinkEvent>,
) -> std::io::Result<()> {
    let mut next_id: u64 = 1;
    let mut pending: HashMap<u64, oneshot::Sender<Result<Reply, LinkError>>> = HashMap::new();

    // The state first, so the service reconciles before serving requests.
    let state_id = next_id;
    next_id += 1;
    write_request(write, state_id, &RequestBody::ListState).await?;
    let state = loop {
        match messages.recv().await {
            None => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Some(Err(e)) => return Err(e),
            Some(Ok(FromBridge::Response {
                id,
                result: Reply::State(s),
            })) if id == state_id => break s,
            Some(Ok(FromBridge::Event { event })) => {
                let _ = events.send(LinkEvent::Bridge(event));
            }
            Some(Ok(other)) => tracing::debug!(?other, "ignored while fetching state"),
        }
    };
    up.store(true, Ordering::Relaxed);
    let _ = events.send(LinkEvent::Connected(Box::new(state)));

    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { return Ok(()) };
                let id = next_id;
                next_id += 1;
                // Forget callers that gave up (timed out).
                pending.retain(|_, tx| !tx.is_closed());
                pending.insert(id, call.reply);
                if let Err(e) = write_request(write, id, &call.body).await {
                    fail_all(&mut pending);
                    return Err(e);
                }
            }
            msg = messages.recv() => match msg {
                None => { fail_all(&mut pending); return Err(std::io::ErrorKind::UnexpectedEof.into()); }
                Some(Err(e)) => { fail_all(&mut pending); return Err(e); }
                Some(Ok(FromBridge::Response { id, result })) => {
                    if let Some(tx) = pending.remove(&id) { let _ = tx.send(Ok(result)); }
                }
                Some(Ok(FromBridge::Error { id: Some(id), code, message })) => {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Err(LinkError::Refused { code, message }));
                    }
                }
                Some(Ok(FromBridge::Error { id: None, code, message })) => {
                    tracing::warn!(?code, %message, "bridge reported an error");
                }
                Some(Ok(FromBridge::Event { event })) => { let _ = events.send(LinkEvent::Bridge(event)); }
            }
        }
    }
}

fn fail_all(pending: &mut HashMap<u64, oneshot::Sender<Result<Reply, LinkError>>>) {
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(LinkError::Down));
    }
}

async fn write_request(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    id: u64,
    body: &RequestBody,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(&Request {
        id,
        body: body.clone(),
    })
    .map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

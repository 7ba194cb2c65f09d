//! The service's shared state and its HTTP router: which routes need the focus secret,
//! the error type every handler returns (JSON with a colibri2 reason and the right
//! status), and the task that follows the bridge link (reconcile on connect, events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;
use viaduct_bridge::command::protocol::{
    ErrorCode, Event as BridgeEvent, ForceMute, StateSnapshot,
};

use crate::config::Config;
use crate::link::{Link, LinkError, LinkEvent};
use crate::metrics::Metrics;
use crate::records::{Event, EventKind, RecordWriter, Records};
use crate::stats::Sampled;
use crate::{focus, ops, signalling, stats, web};

/// The OpenAPI document of the HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Where the service is in JVB's shutdown state machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    #[default]
    Running,
    /// No new conferences; existing ones go on; exit when the last endpoint leaves.
    GracefulShutdown,
    /// About to exit.
    ShuttingDown,
}

/// A conference as the service knows it.
#[derive(Clone, Debug)]
pub struct ConferenceInfo {
    /// The focus's name for it.
    pub name: Option<String>,
    /// When it was created (or first seen after a reconnect).
    pub created: Instant,
    /// Its endpoints.
    pub endpoints: HashMap<String, EndpointInfo>,
    /// Most endpoints at once.
    pub peak: usize,
}

/// An endpoint as the service knows it.
#[derive(Clone, Debug, Default)]
pub struct EndpointInfo {
    /// Its force-mute state.
    pub force_mute: ForceMute,
    /// ICE and DTLS done.
    pub connected: bool,
}

/// Lifetime counters (JVB's `total_*`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Conferences created.
    pub conferences_created: u64,
    /// Conferences expired.
    pub conferences_completed: u64,
    /// Sum of finished conferences' durations.
    pub conference_seconds: f64,
    /// Endpoints created.
    pub participants: u64,
    /// Endpoints that connected (ICE and DTLS).
    pub ice_succeeded: u64,
    /// Endpoints whose ICE never completed.
    pub ice_failed: u64,
    /// Endpoints whose DTLS failed.
    pub dtls_failed: u64,
}

/// Mutable state behind one lock (never held across an await).
#[derive(Debug, Default)]
pub struct Inner {
    /// Conferences by meeting id.
    pub conferences: HashMap<String, ConferenceInfo>,
    /// Drain mode.
    pub drain: bool,
    /// Shutdown phase.
    pub phase: Phase,
    /// The latest sample of the bridge's counters.
    pub last: Option<Sampled>,
    /// Lifetime counters.
    pub totals: Totals,
}

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub config: Arc<Config>,
    /// The bridge link.
    pub link: Link,
    /// The records database (reads).
    pub records: Arc<Records>,
    /// The records writer.
    pub writer: RecordWriter,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Mutable state.
    pub inner: Arc<Mutex<Inner>>,
    /// The bridge's feedback SSRCs (audio, video) announced to the focus.
    pub feedback: (u32, u32),
    /// Set to true to stop serving and exit.
    pub exit: watch::Sender<bool>,
    /// Participant authentication.
    pub auth: Arc<crate::auth::AuthState>,
    /// Participants' rooms.
    pub rooms: Arc<crate::room::Rooms>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// The state behind the lock (a poisoned lock is recovered: the data is plain).
    pub fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes an audit record (off the request path).
    pub fn record(&self, event: Event) {
        self.writer.record(event);
    }
}

/// An error as every handler returns it: a status and a JSON body
/// `{"reason": "...", "message": "..."}` with colibri2's reasons where they apply.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    reason: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with this status, reason and message.
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    /// 400 with reason `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            reason: self.reason,
            message: &self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Down | LinkError::Timeout => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNSPECIFIED",
                format!("bridge unavailable: {e}"),
            ),
            LinkError::Refused { code, message } => {
                let (status, reason) = match code {
                    ErrorCode::ConferenceNotFound => {
                        (StatusCode::NOT_FOUND, "CONFERENCE_NOT_FOUND")
                    }
                    ErrorCode::ConferenceAlreadyExists => {
                        (StatusCode::CONFLICT, "CONFERENCE_ALREADY_EXISTS")
                    }
                    ErrorCode::UnknownEndpoint => (StatusCode::NOT_FOUND, "UNKNOWN_ENDPOINT"),
                    ErrorCode::EndpointAlreadyExists => {
                        (StatusCode::CONFLICT, "ENDPOINT_ALREADY_EXISTS")
                    }
                    ErrorCode::BadRequest | ErrorCode::InvalidArgument => {
                        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
                    }
                    ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNSPECIFIED"),
                };
                Self::new(status, reason, message)
            }
        }
    }
}

/// `Json<T>` whose rejections (malformed JSON, wrong types, wrong content type, too
/// large) are [`ApiError`]s with the rejection's status.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => {
                let status = rejection.status();
                let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "PAYLOAD_TOO_LARGE"
                } else {
                    "BAD_REQUEST"
                };
                Err(ApiError::new(status, reason, rejection.body_text()))
            }
        }
    }
}

/// Constant-time comparison of two byte strings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_focus(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing bearer token",
        )
        .into_response();
    };
    let ok = state
        .config
        .focus_secrets
        .iter()
        .fold(false, |ok, s| ok | same(s.as_bytes(), token.as_bytes()));
    if !ok {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "wrong bearer token",
        )
        .into_response();
    }
    next.run(req).await
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let focus = Router::new()
        .route(
            "/colibri/v2/conferences",
            post(focus::create).get(focus::not_implemented),
        )
        .route(
            "/colibri/v2/conferences/{meeting_id}",
            patch(focus::modify).get(focus::not_implemented),
        )
        .route("/conferences", get(focus::recent_records))
        .route("/conferences/{meeting_id}", get(focus::record))
        .route("/colibri/drain/enable", post(ops::drain_enable))
        .route("/colibri/drain/disable", post(ops::drain_disable))
        .route("/colibri/shutdown", post(ops::shutdown))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_focus));
    let open = Router::new()
        .route("/colibri/stats", get(stats::colibri_stats))
        .route("/metrics", get(stats::metrics))
        .route("/about/health", get(ops::health))
        .route("/about/version", get(ops::version))
        .route("/colibri/drain", get(ops::drain_get))
        .route("/openapi.json", get(openapi))
        .route("/ws", get(signalling::upgrade))
        .route("/dev/token", get(signalling::dev_token))
        .route("/api/config", get(signalling::page_config))
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/style.css", get(web::style));
    Router::new()
        .merge(focus)
        .merge(open)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

/// Follows the bridge link: reconciles on every (re)connect, applies events.
pub async fn follow_link(state: AppState) {
    let mut events = state.link.subscribe();
    let mut connected_before = false;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "link events lagged");
                continue;
            }
            Err(_) => return,
        };
        match event {
            LinkEvent::Connected(snapshot) => {
                reconcile(&state, &snapshot);
                state.metrics.set_link_up(true);
                if connected_before {
                    state.metrics.link_reconnected();
                    state.record(Event::now(EventKind::BridgeReconnected).with_actor("bridge"));
                }
                connected_before = true;
            }
            LinkEvent::Disconnected => state.metrics.set_link_up(false),
            LinkEvent::Bridge(e) => on_bridge_event(&state, e),
        }
    }
}

/// Makes the service's view match the bridge's: conferences and endpoints the bridge
/// has are kept or adopted; those it lost (it restarted) are closed.
pub fn reconcile(state: &AppState, snapshot: &StateSnapshot) {
    let now = Instant::now();
    let mut inner = state.inner();
    let on_bridge: HashMap<&str, _> = snapshot
        .conferences
        .iter()
        .map(|c| (c.conference.as_str(), c))
        .collect();
    let lost: Vec<String> = inner
        .conferences
        .keys()
        .filter(|k| !on_bridge.contains_key(k.as_str()))
        .cloned()
        .collect();
    for id in lost {
        if let Some(c) = inner.conferences.remove(&id) {
            inner.totals.conferences_completed += 1;
            inner.totals.conference_seconds += c.created.elapsed().as_secs_f64();
        }
        state.record(
            Event::now(EventKind::ConferenceExpired)
                .with_meeting(id)
                .with_actor("bridge")
                .with_detail("not on the bridge after reconnect"),
        );
    }
    for (id, c) in on_bridge {
        let entry = inner
            .conferences
            .entry(id.to_owned())
            .or_insert_with(|| ConferenceInfo {
                name: None,
                created: now,
                endpoints: HashMap::new(),
                peak: 0,
            });
        let keep: HashMap<String, EndpointInfo> = c
            .endpoints
            .iter()
            .map(|e| {
                let old = entry
                    .endpoints
                    .get(&e.endpoint)
                    .cloned()
                    .unwrap_or_default();
                (
                    e.endpoint.clone(),
                    EndpointInfo {
                        connected: e.connected,
                        ..old
                    },
                )
            })
            .collect();
        entry.endpoints = keep;
        entry.peak = entry.peak.max(entry.endpoints.len());
    }
    tracing::info!(
        conferences = inner.conferences.len(),
        "reconciled with the bridge"
    );
}

fn on_bridge_event(state: &AppState, event: BridgeEvent) {
    match event {
        BridgeEvent::EndpointConnected {
            conference,
            endpoint,
            profile,
            handshake_ms,
        } => {
            state.metrics.endpoint_connected();
            state.metrics.observe_handshake(handshake_ms);
            {
                let mut inner = state.inner();
                inner.totals.ice_succeeded += 1;
                if let Some(e) = inner
                    .conferences
                    .get_mut(&conference)
                    .and_then(|c| c.endpoints.get_mut(&endpoint))
                {
                    e.connected = true;
                }
            }
            state.record(
                Event::now(EventKind::EndpointConnected)
                    .with_meeting(conference)
                    .with_endpoint(endpoint)
                    .with_actor("bridge")
                    .with_detail(format!("{} in {handshake_ms} ms", profile.name())),
            );
        }
        BridgeEvent::EndpointExpired {
            conference,
            endpoint,
            reason,
        } => {
            let count = {
                let mut inner = state.inner();
                inner.conferences.get_mut(&conference).map(|c| {
                    c.endpoints.remove(&endpoint);
                    c.endpoints.len()
                })
            };
            if let Some(n) = count {
                state.writer.participants(&conference, n as u32);
            }
            state.record(
                Event::now(EventKind::EndpointExpired)
                    .with_meeting(conference)
                    .with_endpoint(endpoint)
                    .with_actor("bridge")
                    .with_detail(reason),
            );
        }
        BridgeEvent::EndpointFailed {
            conference,
            endpoint,
            reason,
        } => {
            state.metrics.endpoint_failed(&reason);
            {
                let mut inner = state.inner();
                if reason == "ice-timeout" {
                    inner.totals.ice_failed += 1;
                } else {
                    inner.totals.dtls_failed += 1;
                }
            }
            state.record(
                Event::now(EventKind::EndpointFailed)
                    .with_meeting(conference)
                    .with_endpoint(endpoint)
                    .with_actor("bridge")
                    .with_detail(reason),
            );
        }
    }
}

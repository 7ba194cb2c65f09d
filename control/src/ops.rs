//! Operations: health, version, drain, and graceful shutdown following Jitsi
//! Videobridge's state machine (running → graceful shutdown: no new conferences →
//! shutting down once the last endpoint has left → exit after a delay).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::app::{ApiError, ApiJson, AppState, Phase};
use crate::records::{Event, EventKind};

/// `GET /about/health`: 200 with an empty body when the bridge link is up; 503 with the
/// reason otherwise.
pub async fn health(State(state): State<AppState>) -> Response {
    if !state.link.is_up() {
        return (StatusCode::SERVICE_UNAVAILABLE, "bridge link down\n").into_response();
    }
    if state.inner().phase == Phase::ShuttingDown {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    StatusCode::OK.into_response()
}

/// `GET /about/version`.
pub async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "name": "viaduct",
        "version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
    }))
}

/// `GET /colibri/drain`.
pub async fn drain_get(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "drain": state.inner().drain }))
}

fn set_drain(state: &AppState, on: bool) -> Json<serde_json::Value> {
    let changed = {
        let mut inner = state.inner();
        std::mem::replace(&mut inner.drain, on) != on
    };
    if changed {
        tracing::info!(drain = on, "drain mode changed");
        let kind = if on {
            EventKind::DrainEnabled
        } else {
            EventKind::DrainDisabled
        };
        state.record(Event::now(kind).with_actor("operator"));
    }
    Json(json!({ "drain": on }))
}

/// `POST /colibri/drain/enable`: no new conferences; existing ones carry on.
pub async fn drain_enable(State(state): State<AppState>) -> Json<serde_json::Value> {
    set_drain(&state, true)
}

/// `POST /colibri/drain/disable`.
pub async fn drain_disable(State(state): State<AppState>) -> Json<serde_json::Value> {
    set_drain(&state, false)
}

/// Body of `POST /colibri/shutdown`.
#[derive(Debug, Deserialize)]
pub struct ShutdownRequest {
    /// Graceful (wait for the last endpoint) or at once.
    #[serde(rename = "graceful-shutdown")]
    pub graceful_shutdown: bool,
}

/// `POST /colibri/shutdown` with `{"graceful-shutdown": true|false}`.
pub async fn shutdown(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ShutdownRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if req.graceful_shutdown {
        begin_graceful_shutdown(&state, "operator");
    } else {
        tracing::warn!("immediate shutdown requested");
        state.record(
            Event::now(EventKind::GracefulShutdown)
                .with_actor("operator")
                .with_detail("immediate"),
        );
        state.inner().phase = Phase::ShuttingDown;
        let _ = state.exit.send(true);
    }
    Ok(Json(json!({ "graceful-shutdown": req.graceful_shutdown })))
}

/// Enters graceful shutdown (from the API or SIGTERM).
pub fn begin_graceful_shutdown(state: &AppState, actor: &str) {
    let first = {
        let mut inner = state.inner();
        let first = inner.phase == Phase::Running;
        if first {
            inner.phase = Phase::GracefulShutdown;
        }
        first
    };
    if first {
        tracing::info!(%actor, "graceful shutdown: no new conferences; exiting when the last endpoint leaves");
        state.record(Event::now(EventKind::GracefulShutdown).with_actor(actor));
    }
    check_shutdown(state);
}

/// Moves graceful shutdown on when no endpoint is left, and exits after the delay.
pub fn check_shutdown(state: &AppState) {
    let proceed = {
        let mut inner = state.inner();
        let empty = inner.conferences.values().all(|c| c.endpoints.is_empty())
            && inner
                .last
                .as_ref()
                .is_none_or(|l| l.sample.snapshot.endpoints == 0);
        if inner.phase == Phase::GracefulShutdown && empty {
            inner.phase = Phase::ShuttingDown;
            true
        } else {
            false
        }
    };
    if proceed {
        let delay = state.config.shutdown_delay;
        tracing::info!(?delay, "no endpoints left: shutting down");
        let exit = state.exit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = exit.send(true);
        });
    }
}

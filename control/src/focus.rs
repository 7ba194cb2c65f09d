//! The focus's API: colibri2 `POST /colibri/v2/conferences` and `PATCH
//! /colibri/v2/conferences/{meeting-id}` carried out on the bridge, and the read API
//! for conference records. Validation happens before the bridge is touched.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use viaduct_bridge::command::protocol::{
    EndpointAllocation, Fingerprint, ForceMute, IceCredentials, MediaSource, Reply, RequestBody,
};

use crate::app::{ApiError, ApiJson, AppState, ConferenceInfo, EndpointInfo, Phase};
use crate::colibri2::{
    self, Colibri2Error, ConferenceModified, ConferenceModify, EndpointModified,
};
use crate::records::{Event, EventKind};

/// Most endpoints one request may touch.
const MAX_ENDPOINTS_PER_REQUEST: usize = 1000;

impl From<Colibri2Error> for ApiError {
    fn from(e: Colibri2Error) -> Self {
        match e {
            Colibri2Error::BadRequest(m) => ApiError::bad_request(m),
            Colibri2Error::NotImplemented(m) => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "FEATURE_NOT_IMPLEMENTED", m)
            }
        }
    }
}

fn check_supported(req: &ConferenceModify) -> Result<(), ApiError> {
    if !req.relays.is_empty() {
        return Err(
            Colibri2Error::NotImplemented("relays (cascading) are not supported".into()).into(),
        );
    }
    if !req.connects.is_empty() {
        return Err(
            Colibri2Error::NotImplemented("connects (exports) are not supported".into()).into(),
        );
    }
    if req.endpoints.len() > MAX_ENDPOINTS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ENDPOINTS_PER_REQUEST} endpoints per request"
        )));
    }
    for e in &req.endpoints {
        if e.id.is_empty() || e.id.len() > 256 {
            return Err(ApiError::bad_request("endpoint id must be 1-256 bytes"));
        }
        // Check transports and sources up front, so a bad one changes nothing.
        if let Some(t) = &e.transport {
            colibri2::remote_transport(t)?;
        }
        if let Some(s) = &e.sources {
            colibri2::media_sources(s)?;
        }
    }
    Ok(())
}

/// `POST /colibri/v2/conferences`: create a conference (and endpoints).
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ConferenceModify>,
) -> Result<Json<ConferenceModified>, ApiError> {
    let Some(meeting_id) = req.meeting_id.clone() else {
        return Err(ApiError::bad_request("meeting-id is required"));
    };
    if meeting_id.is_empty() || meeting_id.len() > 256 {
        return Err(ApiError::bad_request("meeting-id must be 1-256 bytes"));
    }
    check_supported(&req)?;
    if !req.create {
        if state.inner().conferences.contains_key(&meeting_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFERENCE_ALREADY_EXISTS",
                format!("conference {meeting_id} exists"),
            ));
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CONFERENCE_NOT_FOUND",
            format!("conference {meeting_id} does not exist and create is not set"),
        ));
    }
    create_conference(&state, &meeting_id, req.name.clone(), "focus").await?;
    apply(&state, &meeting_id, &req).await.map(Json)
}

/// Creates a conference on the bridge and records it, unless the service is draining
/// or shutting down or the id is taken. The focus API and participants' rooms share it.
pub(crate) async fn create_conference(
    state: &AppState,
    meeting_id: &str,
    name: Option<String>,
    actor: &'static str,
) -> Result<(), ApiError> {
    {
        let inner = state.inner();
        if inner.phase != Phase::Running {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "GRACEFUL_SHUTDOWN",
                "the bridge is shutting down: no new conferences",
            ));
        }
        if inner.drain {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "GRACEFUL_SHUTDOWN",
                "the bridge is draining: no new conferences",
            ));
        }
        if inner.conferences.contains_key(meeting_id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "CONFERENCE_ALREADY_EXISTS",
                format!("conference {meeting_id} exists"),
            ));
        }
    }
    state
        .link
        .request(RequestBody::CreateConference {
            conference: meeting_id.to_owned(),
        })
        .await?;
    {
        let mut inner = state.inner();
        inner.conferences.insert(
            meeting_id.to_owned(),
            ConferenceInfo {
                name: name.clone(),
                created: Instant::now(),
                endpoints: HashMap::new(),
                peak: 0,
            },
        );
        inner.totals.conferences_created += 1;
    }
    state.metrics.conference_created();
    let mut ev = Event::now(EventKind::ConferenceCreated)
        .with_meeting(meeting_id.to_owned())
        .with_actor(actor);
    if let Some(name) = name {
        ev = ev.with_detail(name);
    }
    state.record(ev);
    tracing::info!(%meeting_id, actor, "conference created");
    Ok(())
}

/// `PATCH /colibri/v2/conferences/{meeting-id}`: create, update and expire endpoints,
/// or expire the conference.
pub async fn modify(
    State(state): State<AppState>,
    Path(meeting_id): Path<String>,
    ApiJson(req): ApiJson<ConferenceModify>,
) -> Result<Json<ConferenceModified>, ApiError> {
    if let Some(body_id) = &req.meeting_id {
        if *body_id != meeting_id {
            return Err(ApiError::bad_request(
                "meeting-id in the body differs from the path",
            ));
        }
    }
    check_supported(&req)?;
    if !state.inner().conferences.contains_key(&meeting_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CONFERENCE_NOT_FOUND",
            format!("no conference {meeting_id}"),
        ));
    }
    if req.create {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "CONFERENCE_ALREADY_EXISTS",
            format!("conference {meeting_id} exists"),
        ));
    }
    apply(&state, &meeting_id, &req).await.map(Json)
}

/// `GET` on the colibri2 collection or a conference: not implemented, as in JVB.
pub async fn not_implemented() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "FEATURE_NOT_IMPLEMENTED",
        "listing conferences over colibri2 is not implemented; see /conferences",
    )
}

async fn apply(
    state: &AppState,
    meeting_id: &str,
    req: &ConferenceModify,
) -> Result<ConferenceModified, ApiError> {
    let mut out = ConferenceModified::default();
    let mut created_any = false;
    for ep in &req.endpoints {
        if ep.expire {
            expire_endpoint(state, meeting_id, &ep.id, "focus").await?;
            out.endpoints.push(EndpointModified {
                id: ep.id.clone(),
                transport: None,
                expire: true,
            });
            continue;
        }
        let mut modified = EndpointModified {
            id: ep.id.clone(),
            ..Default::default()
        };
        if ep.create {
            let alloc = create_endpoint(state, meeting_id, &ep.id, "focus").await?;
            modified.transport = Some(colibri2::transport_of(&alloc));
            created_any = true;
        } else if !knows_endpoint(state, meeting_id, &ep.id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "UNKNOWN_ENDPOINT",
                format!("no endpoint {} in {meeting_id}", ep.id),
            ));
        }
        let (ice, fingerprint) = match &ep.transport {
            Some(t) => colibri2::remote_transport(t)?,
            None => (None, None),
        };
        let update = EndpointUpdate {
            ice,
            fingerprint,
            sources: ep
                .sources
                .as_deref()
                .map(colibri2::media_sources)
                .transpose()?,
            force_mute: ep.force_mute.map(ForceMute::from),
        };
        update_endpoint(state, meeting_id, &ep.id, update, ep.create, "focus").await?;
        out.endpoints.push(modified);
    }
    if created_any {
        out.sources = colibri2::feedback_sources(state.feedback.0, state.feedback.1);
    }
    if req.expire {
        expire_conference(state, meeting_id, "focus").await?;
    }
    Ok(out)
}

fn knows_endpoint(state: &AppState, meeting_id: &str, endpoint: &str) -> bool {
    state
        .inner()
        .conferences
        .get(meeting_id)
        .is_some_and(|c| c.endpoints.contains_key(endpoint))
}

/// Allocates an endpoint on the bridge (ICE credentials, fingerprint, candidates) and
/// records it.
pub(crate) async fn create_endpoint(
    state: &AppState,
    meeting_id: &str,
    endpoint: &str,
    actor: &'static str,
) -> Result<EndpointAllocation, ApiError> {
    if knows_endpoint(state, meeting_id, endpoint) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ENDPOINT_ALREADY_EXISTS",
            format!("endpoint {endpoint} exists"),
        ));
    }
    let reply = state
        .link
        .request(RequestBody::CreateEndpoint {
            conference: meeting_id.to_owned(),
            endpoint: endpoint.to_owned(),
        })
        .await?;
    let Reply::EndpointCreated(alloc) = reply else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UNSPECIFIED",
            "unexpected reply from the bridge",
        ));
    };
    let count = {
        let mut inner = state.inner();
        inner.totals.participants += 1;
        inner.conferences.get_mut(meeting_id).map(|c| {
            c.endpoints
                .insert(endpoint.to_owned(), EndpointInfo::default());
            c.peak = c.peak.max(c.endpoints.len());
            c.endpoints.len()
        })
    };
    state.record(
        Event::now(EventKind::EndpointJoined)
            .with_meeting(meeting_id)
            .with_endpoint(endpoint.to_owned())
            .with_actor(actor),
    );
    if let Some(n) = count {
        state.writer.participants(meeting_id, n as u32);
    }
    Ok(alloc)
}

/// What an endpoint update changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct EndpointUpdate {
    /// The participant's ICE credentials.
    pub ice: Option<IceCredentials>,
    /// The participant's DTLS fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// The participant's sources.
    pub sources: Option<Vec<MediaSource>>,
    /// Force-mute.
    pub force_mute: Option<ForceMute>,
}

/// Tells the bridge about the remote side of an endpoint and records force-mutes
/// (`created`: the endpoint is new, so its first force-mute state is recorded too).
pub(crate) async fn update_endpoint(
    state: &AppState,
    meeting_id: &str,
    endpoint: &str,
    update: EndpointUpdate,
    created: bool,
    actor: &'static str,
) -> Result<(), ApiError> {
    let EndpointUpdate {
        ice,
        fingerprint,
        sources,
        force_mute,
    } = update;
    if ice.is_none() && fingerprint.is_none() && sources.is_none() && force_mute.is_none() {
        return Ok(());
    }
    state
        .link
        .request(RequestBody::UpdateEndpoint {
            conference: meeting_id.to_owned(),
            endpoint: endpoint.to_owned(),
            ice,
            fingerprint,
            sources,
            force_mute,
        })
        .await?;
    if let Some(mute) = force_mute {
        let changed = {
            let mut inner = state.inner();
            inner
                .conferences
                .get_mut(meeting_id)
                .and_then(|c| c.endpoints.get_mut(endpoint))
                .map(|e| std::mem::replace(&mut e.force_mute, mute) != mute)
                .unwrap_or(false)
        };
        if changed || created {
            state.record(
                Event::now(EventKind::ForceMute)
                    .with_meeting(meeting_id)
                    .with_endpoint(endpoint.to_owned())
                    .with_actor(actor)
                    .with_detail(format!("audio={} video={}", mute.audio, mute.video)),
            );
        }
    }
    Ok(())
}

/// Removes an endpoint from the bridge and records its leaving.
pub(crate) async fn expire_endpoint(
    state: &AppState,
    meeting_id: &str,
    endpoint: &str,
    actor: &'static str,
) -> Result<(), ApiError> {
    state
        .link
        .request(RequestBody::ExpireEndpoint {
            conference: meeting_id.to_owned(),
            endpoint: endpoint.to_owned(),
        })
        .await?;
    forget_endpoint(state, meeting_id, endpoint);
    state.record(
        Event::now(EventKind::EndpointLeft)
            .with_meeting(meeting_id)
            .with_endpoint(endpoint.to_owned())
            .with_actor(actor),
    );
    Ok(())
}

fn forget_endpoint(state: &AppState, meeting_id: &str, endpoint: &str) {
    let count = {
        let mut inner = state.inner();
        inner.conferences.get_mut(meeting_id).map(|c| {
            c.endpoints.remove(endpoint);
            c.endpoints.len()
        })
    };
    if let Some(n) = count {
        state.writer.participants(meeting_id, n as u32);
    }
}

/// Removes a conference and all its endpoints from the bridge and records it.
pub(crate) async fn expire_conference(
    state: &AppState,
    meeting_id: &str,
    actor: &'static str,
) -> Result<(), ApiError> {
    state
        .link
        .request(RequestBody::ExpireConference {
            conference: meeting_id.to_owned(),
        })
        .await?;
    let gone = {
        let mut inner = state.inner();
        let gone = inner.conferences.remove(meeting_id);
        if let Some(c) = &gone {
            inner.totals.conferences_completed += 1;
            inner.totals.conference_seconds += c.created.elapsed().as_secs_f64();
        }
        gone
    };
    if let Some(c) = gone {
        state
            .metrics
            .conference_expired(c.created.elapsed().as_secs_f64());
    }
    state.writer.participants(meeting_id, 0);
    state.record(
        Event::now(EventKind::ConferenceExpired)
            .with_meeting(meeting_id)
            .with_actor(actor),
    );
    tracing::info!(%meeting_id, actor, "conference expired");
    Ok(())
}

/// Runs a read of the records database on the blocking pool, after the writer has
/// caught up; failures become 500s.
async fn read_records<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&crate::records::Records) -> Result<T, crate::records::RecordsError>
        + Send
        + 'static,
) -> Result<T, ApiError> {
    let records = state.records.clone();
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNSPECIFIED", e);
    tokio::task::spawn_blocking(move || {
        records.flush();
        read(&records)
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(|e| internal(e.to_string()))
}

/// `GET /conferences/{meeting-id}`: the newest record of a conference, with its events.
pub async fn record(
    State(state): State<AppState>,
    Path(meeting_id): Path<String>,
) -> Result<Json<crate::records::ConferenceRecord>, ApiError> {
    let id = meeting_id.clone();
    match read_records(&state, move |r| r.conference(&id)).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "CONFERENCE_NOT_FOUND",
            format!("no record of conference {meeting_id}"),
        )),
    }
}

/// Query of `GET /conferences`.
#[derive(Debug, Deserialize)]
pub struct RecentQuery {
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// `GET /conferences?limit=N`: the newest conference records, without events.
pub async fn recent_records(
    State(state): State<AppState>,
    Query(q): Query<RecentQuery>,
) -> Result<Json<Vec<crate::records::ConferenceRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(50).min(1000);
    Ok(Json(read_records(&state, move |r| r.recent(limit)).await?))
}

//! This server's own sessions API, and `start`: the one path every dialect takes to a live session
//! (admission through Quota, a Session actor, its room).

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::authenticate;
use super::body::{self, max_len};
use super::error::{ApiError, ApiResult};
use super::views;
use crate::actors::quota::Admit;
use crate::actors::registry::{LiveSession, Lookup, Register};
use crate::actors::render_pool::{Acquire, Release, RenderError};
use crate::actors::session::messages::{AwaitLive, EndReason, SessionError, Stop};
use crate::actors::session::{Session, SessionAgent};
use crate::actors::webhooks::SessionWebhook;
use crate::ids;
use crate::livekit::RoomAccess;
use crate::state::AppState;
use crate::store::entities::{agent, session};
use crate::store::now_ms;
use crate::store::sessions::{Admission, SessionFilter};

/// Everything a dialect decided about a session it wants started.
pub struct StartRequest {
    pub account_id: String,
    pub agent: agent::Model,
    pub revision: i64,
    pub source: &'static str,
    pub link_id: Option<String>,
    pub aspect_ratio: String,
    pub client_user_ref: Option<String>,
    pub metadata: Option<Value>,
    pub env: Option<Value>,
    pub tag: Option<String>,
    pub webhook: Option<SessionWebhook>,
    pub max_duration_seconds: Option<i64>,
}

pub enum StartMode {
    /// Answer once the room exists and the session is live (or refuse with 502).
    WaitLive,
    /// Answer once admitted (`queued`); the start goes on in the background (VideoSDK).
    Queued,
}

pub struct Started {
    pub row: session::Model,
    pub access: Option<RoomAccess>,
}

/// The agent must exist, be the caller's, and be ready (with the avatar generation made).
pub fn ensure_ready(agent: &agent::Model) -> ApiResult<()> {
    if agent.status != "ready" {
        return Err(ApiError::conflict(format!(
            "Agent `{}` is not ready (status: {}).",
            agent.id, agent.status
        )));
    }
    if agent.model_asset_id.is_none() {
        return Err(ApiError::conflict(format!(
            "Agent `{}` has no avatar model; generate it again.",
            agent.id
        )));
    }
    Ok(())
}

pub async fn start(state: &AppState, req: StartRequest, mode: StartMode) -> ApiResult<Started> {
    // Admission runs to its end even if the client goes away mid-request: stopped half-way it
    // would leave a render slot or a concurrency count held with no session to release it.
    let (row, addr) = actix_web::rt::spawn(admit(state.clone(), req))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "admission task failed");
            ApiError::internal()
        })??;
    match mode {
        StartMode::Queued => Ok(Started { row, access: None }),
        StartMode::WaitLive => match addr.send(AwaitLive).await {
            Ok(Ok(access)) => {
                let row = state.store.session(&row.id).await?.unwrap_or(row);
                Ok(Started {
                    row,
                    access: Some(access),
                })
            }
            Ok(Err(SessionError::RoomCreationFailed(why))) => {
                tracing::warn!(session = %row.id, %why, "room creation failed");
                Err(ApiError::bad_gateway(
                    "room_creation_failed",
                    "The room could not be created; nothing was charged.",
                ))
            }
            Ok(Err(e)) => {
                tracing::warn!(session = %row.id, error = %e, "session did not go live");
                Err(ApiError::bad_gateway(
                    "orchestrator_error",
                    format!("The session did not start: {e}."),
                ))
            }
            Err(_) => {
                // The actor already ended (and stopped) before it could be asked: the row says why.
                let ended = state.store.session(&row.id).await?;
                if ended.as_ref().and_then(|r| r.end_reason.as_deref())
                    == Some("room_creation_failed")
                {
                    return Err(ApiError::bad_gateway(
                        "room_creation_failed",
                        "The room could not be created; nothing was charged.",
                    ));
                }
                tracing::error!(session = %row.id, "session ended before it went live");
                Err(ApiError::bad_gateway(
                    "orchestrator_error",
                    "The session did not start.",
                ))
            }
        },
    }
}

/// A render slot, the quota's yes (one transaction), the Session actor and its registration.
async fn admit(state: AppState, req: StartRequest) -> ApiResult<(session::Model, Addr<Session>)> {
    let state = &state;
    let settings = &state.settings.sessions;
    let account = state
        .store
        .account(&req.account_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Account no longer exists."))?;
    // The request may ask for less than the account allows, never more.
    let account_max = account
        .max_session_seconds
        .unwrap_or(settings.default_max_duration_seconds as i64);
    let max_duration = req
        .max_duration_seconds
        .map_or(account_max, |asked| asked.min(account_max));
    let now = now_ms();
    let id = ids::session_id();
    let suffix = &id["sess_".len()..];
    let row = session::Model {
        id: id.clone(),
        account_id: req.account_id,
        agent_id: req.agent.id.clone(),
        agent_revision: req.revision,
        source: req.source.to_string(),
        link_id: req.link_id,
        state: "queued".into(),
        room_name: format!("room_{suffix}"),
        agent_identity: settings.agent_identity.clone(),
        user_identity: format!("user_{}", &suffix[..12]),
        aspect_ratio: req.aspect_ratio,
        client_user_ref: req.client_user_ref,
        metadata: req.metadata.map(|m| m.to_string()),
        env: req.env.map(|e| e.to_string()),
        tag: req.tag,
        webhook: req
            .webhook
            .map(|w| serde_json::to_string(&w).unwrap_or_default()),
        max_duration_seconds: max_duration,
        idle_timeout_seconds: settings.idle_timeout_seconds as i64,
        node_id: state.node_id.clone(),
        heartbeat_at: Some(now),
        created_at: now,
        started_at: None,
        ended_at: None,
        updated_at: now,
        end_reason: None,
        failure_reason: None,
        billed_seconds: 0,
    };
    // A render slot first: with none free the start is refused before the quota is touched.
    let lease = match state
        .render_pool
        .send(Acquire {
            session_id: id.clone(),
        })
        .await
    {
        Ok(Ok(lease)) => lease,
        Ok(Err(RenderError::NoCapacity)) => {
            return Err(ApiError::too_many(
                "no_capacity",
                "Every render slot of this server is busy.",
                settings.retry_after_seconds,
            ))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "render pool refused");
            return Err(ApiError::internal());
        }
        Err(e) => {
            tracing::error!(error = %e, "render pool unreachable");
            return Err(ApiError::internal());
        }
    };
    let admission = match state.quota.send(Admit(row)).await {
        Ok(Ok(admission)) => admission,
        Ok(Err(e)) => {
            state.render_pool.do_send(Release(lease));
            return Err(e.into());
        }
        Err(e) => {
            state.render_pool.do_send(Release(lease));
            tracing::error!(error = %e, "quota unreachable");
            return Err(ApiError::internal());
        }
    };
    if !matches!(admission, Admission::Admitted(_)) {
        state.render_pool.do_send(Release(lease.clone()));
    }
    let row = match admission {
        Admission::Admitted(row) => *row,
        Admission::LinkUnavailable => {
            return Err(ApiError::forbidden(
                "link_inactive",
                "This link is no longer active (revoked, expired or used up).",
            ))
        }
        Admission::InsufficientBalance => {
            return Err(ApiError::insufficient_balance(
                "No session minutes left on this account.",
            ))
        }
        Admission::ConcurrencyLimit => {
            return Err(ApiError::too_many(
                "concurrency_limit",
                format!(
                    "The account's limit of {} concurrent sessions is reached.",
                    account.concurrency_limit
                ),
                settings.retry_after_seconds,
            ))
        }
    };
    let deps = state.session_deps.clone();
    let actor_row = row.clone();
    let agent = SessionAgent {
        system_prompt: req.agent.system_prompt.clone(),
        model_asset_id: req.agent.model_asset_id.clone().unwrap_or_default(),
        voice_agent: req
            .agent
            .voice_agent
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok()),
    };
    let addr = Session::start_in_arbiter(&state.sessions_arbiter, move |_| {
        Session::new(actor_row, agent, Some(lease), deps)
    });
    state.registry.do_send(Register(LiveSession {
        session_id: row.id.clone(),
        agent_id: row.agent_id.clone(),
        room_name: row.room_name.clone(),
        addr: addr.clone(),
    }));
    Ok((row, addr))
}

/// Ends a session if its actor runs here, then answers the stored row.
pub async fn stop(state: &AppState, row: session::Model) -> ApiResult<session::Model> {
    if !row.is_ended() {
        if let Ok(Some(live)) = state
            .registry
            .send(Lookup {
                session_id: row.id.clone(),
            })
            .await
        {
            let _ = live.addr.send(Stop(EndReason::StoppedByApi)).await;
        }
    }
    Ok(state.store.session(&row.id).await?.unwrap_or(row))
}

/// AgentHuman's aspect ratios; anything else means the default, as its page says.
pub fn aspect_ratio(value: Option<&str>) -> String {
    match value {
        Some(v @ ("4:3" | "3:4" | "1:1")) => v.to_string(),
        _ => "4:3".to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    agent_id: String,
    aspect_ratio: Option<String>,
    client_user_ref: Option<String>,
    metadata: Option<serde_json::Map<String, Value>>,
    max_duration_seconds: Option<i64>,
    webhook: Option<WebhookBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    events: Option<Vec<String>>,
}

const OWN_EVENTS: [&str; 5] = [
    "session.starting",
    "session.started",
    "session.stopping",
    "session.stopped",
    "session.failed",
];

pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let body: CreateBody = body::json(payload, 64 * 1024).await?;
    if let Some(r) = &body.aspect_ratio {
        if !["4:3", "3:4", "1:1"].contains(&r.as_str()) {
            return Err(ApiError::invalid_field(
                "aspect_ratio",
                "must be one of 4:3, 3:4, 1:1",
            ));
        }
    }
    if let Some(r) = &body.client_user_ref {
        max_len("client_user_ref", r, 256)?;
    }
    if let Some(m) = &body.metadata {
        if Value::Object(m.clone()).to_string().len() > 16 * 1024 {
            return Err(ApiError::invalid_field(
                "metadata",
                "must be at most 16 KiB of JSON",
            ));
        }
    }
    if let Some(d) = body.max_duration_seconds {
        if !(1..=86_400).contains(&d) {
            return Err(ApiError::invalid_field(
                "max_duration_seconds",
                "must be between 1 and 86400",
            ));
        }
    }
    let webhook = match body.webhook {
        Some(w) => {
            state
                .policy
                .parse(&w.url)
                .map_err(|why| ApiError::invalid_field("webhook.url", why))?;
            if let Some(events) = &w.events {
                if let Some((i, _)) = events
                    .iter()
                    .enumerate()
                    .find(|(_, e)| !OWN_EVENTS.contains(&e.as_str()))
                {
                    return Err(ApiError::invalid_field(
                        &format!("webhook.events[{i}]"),
                        format!("must be one of {}", OWN_EVENTS.join(", ")),
                    ));
                }
            }
            Some(SessionWebhook {
                url: w.url,
                events: w.events,
            })
        }
        None => None,
    };
    let agent = state
        .store
        .agent_of(&principal.account_id, &body.agent_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&body.agent_id))?;
    ensure_ready(&agent)?;
    let started = start(
        &state,
        StartRequest {
            account_id: principal.account_id,
            revision: agent.revision,
            agent,
            source: "api",
            link_id: None,
            aspect_ratio: aspect_ratio(body.aspect_ratio.as_deref()),
            client_user_ref: body.client_user_ref,
            metadata: body.metadata.map(Value::Object),
            env: None,
            tag: None,
            webhook,
            max_duration_seconds: body.max_duration_seconds,
        },
        StartMode::WaitLive,
    )
    .await?;
    // unwrap-free: WaitLive always carries the access on success.
    let access = started.access.ok_or_else(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "session_id": started.row.id,
        "livekit_url": access.url,
        "participant_token": access.user_token,
        "agent_identity": started.row.agent_identity,
        "room_name": started.row.room_name,
        "status": started.row.state,
        "control_url": state.urls.control(&started.row.id),
    })))
}

pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let row = state
        .store
        .session_of(&principal.account_id, &path)
        .await?
        .ok_or_else(|| ApiError::session_not_found(&path))?;
    Ok(
        HttpResponse::Ok()
            .json(json!({"success": true, "data": views::session(&row, &state.urls)})),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    agent_id: Option<String>,
    limit: Option<u64>,
}

const STATES: [&str; 6] = [
    "queued", "starting", "live", "stopping", "stopped", "failed",
];

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::validation(format!("Invalid query string: {e}")))?
        .into_inner();
    if let Some(s) = &query.status {
        if !STATES.contains(&s.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                format!("must be one of {}", STATES.join(", ")),
            ));
        }
    }
    let filter = SessionFilter {
        state: query.status,
        agent_id: query.agent_id,
        limit: query.limit.unwrap_or(100),
    };
    let rows = state
        .store
        .sessions_of(&principal.account_id, filter)
        .await?;
    let data: Vec<_> = rows
        .iter()
        .map(|r| views::session(r, &state.urls))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"success": true, "data": data})))
}

pub async fn stop_route(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let row = state
        .store
        .session_of(&principal.account_id, &path)
        .await?
        .ok_or_else(|| ApiError::session_not_found(&path))?;
    let row = stop(&state, row).await?;
    Ok(
        HttpResponse::Ok()
            .json(json!({"success": true, "data": views::session(&row, &state.urls)})),
    )
}

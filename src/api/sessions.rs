//! This server's own sessions API, and `start`: the one path every dialect takes to a live session
//! (admission through Quota, a Session actor, its room).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::authenticate;
use super::body::{self, max_len};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::reply::{Data, SessionAccess};
use crate::actors::service::{SessionService, SessionsError, StartError};
pub use crate::actors::service::{StartMode, StartRequest, Started};
use crate::domain::events::SessionWebhook;
use crate::domain::ids::SessionId;
use crate::domain::session::{EndReason, SessionState};
use crate::domain::time::now_ms;
use crate::domain::views::SessionView;
use crate::livekit::BorrowedRoom;
use crate::state::AppState;
use crate::store::entities::agent;
use crate::store::sessions::SessionFilter;

/// A start's refusal in this server's error shape (dialects re-spell it where theirs differs).
pub fn start_error(state: &AppState, e: StartError) -> ApiError {
    refusal(e, state.settings.sessions.retry_after_seconds)
}

fn refusal(e: StartError, retry_after: u64) -> ApiError {
    match e {
        StartError::AgentNotReady { agent_id, status } => ApiError::conflict(format!(
            "Agent `{agent_id}` is not ready (status: {status})."
        )),
        StartError::NoAvatarModel(agent_id) => ApiError::conflict(format!(
            "Agent `{agent_id}` has no avatar model; generate it again."
        )),
        StartError::AccountGone => ApiError::unauthorized("Account no longer exists."),
        StartError::NoCapacity => {
            ApiError::too_many("no_capacity", "Every render slot is busy.", retry_after)
        }
        StartError::LinkInactive => ApiError::forbidden(
            "link_inactive",
            "This link is no longer active (revoked, expired or used up).",
        ),
        StartError::InsufficientBalance => {
            ApiError::insufficient_balance("No session minutes left on this account.")
        }
        StartError::ConcurrencyLimit(limit) => ApiError::too_many(
            "concurrency_limit",
            format!("The account's limit of {limit} concurrent sessions is reached."),
            retry_after,
        ),
        StartError::RoomCreationFailed => ApiError::bad_gateway(
            "room_creation_failed",
            "The room could not be created; nothing was charged.",
        ),
        StartError::NotStarted => {
            ApiError::bad_gateway("orchestrator_error", "The session did not start.")
        }
        StartError::Busy => {
            let mut e = ApiError::unavailable(
                "The server is starting many sessions right now; try again shortly.",
            );
            e.retry_after_seconds = Some(1);
            e
        }
        StartError::Unavailable(detail) => {
            tracing::error!(%detail, "a start found a dependency unavailable");
            ApiError::unavailable("The server cannot start sessions right now; try again shortly.")
        }
        StartError::Store(e) => e.into(),
    }
}

impl From<SessionsError> for ApiError {
    fn from(e: SessionsError) -> Self {
        match e {
            SessionsError::Unavailable => {
                tracing::error!("the registry does not answer");
                ApiError::unavailable(
                    "The server cannot reach its sessions right now; try again shortly.",
                )
            }
            SessionsError::NodeUnavailable(node) => {
                tracing::warn!(%node, "the session's node does not answer");
                ApiError::unavailable(
                    "The node running this session does not answer; try again shortly.",
                )
            }
            SessionsError::Store(e) => e.into(),
        }
    }
}

/// Starts a session for a dialect handler, in this server's error shape.
pub async fn start(state: &AppState, req: StartRequest, mode: StartMode) -> ApiResult<Started> {
    state
        .sessions
        .start(req, mode)
        .await
        .map_err(|e| start_error(state, e))
}

/// The agent must be ready before a dialect builds its start request.
pub fn ensure_ready(agent: &agent::Model) -> ApiResult<()> {
    SessionService::check_ready(agent).map_err(|e| refusal(e, 0))
}

/// AgentHuman's aspect ratios; anything else means the default, as its page says.
pub fn aspect_ratio(value: Option<&str>) -> String {
    match value {
        Some(v @ ("4:3" | "3:4" | "1:1")) => v.to_string(),
        _ => "4:3".to_string(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSessionRequest)]
struct CreateBody {
    agent_id: String,
    /// 4:3 (default), 3:4 or 1:1.
    aspect_ratio: Option<String>,
    /// Up to 256 characters.
    client_user_ref: Option<String>,
    /// Up to 16 KiB of JSON, stored with the session.
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, Value>>,
    /// 1 to 86400; default the account's or the server's.
    max_duration_seconds: Option<i64>,
    webhook: Option<WebhookBody>,
    /// Your own LiveKit room: the avatar joins it with this token instead of a room of this
    /// server's (LiveKit Agents' avatar, bring your own room).
    room: Option<RoomBody>,
    /// `room`: the room's agent speaks through the avatar (LiveKit Agents' avatar protocol), no
    /// voice of this server's; `agent` (default): the agent's own voice.
    voice: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BorrowedRoomRequest)]
struct RoomBody {
    /// `wss://…` (or `ws://`, `https://`, `http://`): your LiveKit server.
    livekit_url: String,
    /// The avatar's token, minted with your LiveKit keys: `kind: agent`, a `video` grant that
    /// joins the room and may publish, and `lk.publish_on_behalf` naming your agent.
    livekit_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SessionWebhookRequest)]
struct WebhookBody {
    /// Where the session's events are POSTed (signed with the account's webhook secret).
    url: String,
    /// `session.starting|started|stopping|stopped|failed`; all when absent.
    events: Option<Vec<String>>,
}

/// The link start-session body, plus where the session is and how to steer it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartedSession {
    #[serde(flatten)]
    pub access: SessionAccess,
    /// In a room you brought: the avatar's identity there (no participant token is minted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_identity: Option<String>,
    pub room_name: String,
    pub status: String,
    /// The session's control WebSocket.
    pub control_url: String,
}

/// A short-lived token for one session's control and preview channels.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObserverToken {
    pub success: bool,
    pub session_id: String,
    pub token: String,
    /// Seconds.
    pub expires_in: u64,
    pub control_url: String,
}

const OWN_EVENTS: [&str; 5] = [
    "session.starting",
    "session.started",
    "session.stopping",
    "session.stopped",
    "session.failed",
];

/// `POST /v1/sessions`: starts a session and answers when it is live.
#[utoipa::path(post, path = "/v1/sessions", tag = "Sessions", operation_id = "create_session",
    request_body = CreateBody,
    responses(
        (status = 200, body = StartedSession, description = "The session is live."),
        (status = 402, body = ErrorBody, description = "`insufficient_balance`."),
        (status = 404, body = ErrorBody, description = "`agent_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the agent is not ready."),
        (status = 429, body = ErrorBody, description = "`concurrency_limit` or `no_capacity`, with `retry_after_seconds`."),
        (status = 502, body = ErrorBody, description = "`room_creation_failed` or `orchestrator_error`."),
    ))]
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
    let voice_from_room = match body.voice.as_deref() {
        None | Some("agent") => false,
        Some("room") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "voice",
                "must be `agent` or `room`",
            ))
        }
    };
    let room = match &body.room {
        Some(room) => Some(borrowed_room(&state, room)?),
        None if voice_from_room => {
            return Err(ApiError::invalid_field(
                "voice",
                "`room` needs a room of yours (room.livekit_url and room.livekit_token)",
            ))
        }
        None => None,
    };
    let agent = state
        .store
        .agent_of(&principal.account_id, &body.agent_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&body.agent_id))?;
    ensure_ready(&agent)?;
    let borrowed = room.is_some();
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
            room,
            voice_from_room,
        },
        StartMode::WaitLive,
    )
    .await?;
    // unwrap-free: WaitLive always carries the access on success.
    let access = started.access.ok_or_else(ApiError::internal)?;
    let control_url = state.urls.control(&started.row.id);
    Ok(HttpResponse::Ok().json(StartedSession {
        access: SessionAccess {
            success: true,
            session_id: started.row.id,
            livekit_url: access.url,
            participant_token: access.user_token,
            agent_identity: started.row.agent_identity.clone(),
        },
        participant_identity: borrowed.then_some(started.row.agent_identity),
        room_name: started.row.room_name,
        status: started.row.state.to_string(),
        control_url,
    }))
}

/// A room the caller brings, read before anything is started: a token that could never join is
/// refused naming why (400 `invalid_request`).
fn borrowed_room(state: &AppState, room: &RoomBody) -> ApiResult<BorrowedRoom> {
    max_len("room.livekit_url", &room.livekit_url, 2048)?;
    max_len("room.livekit_token", &room.livekit_token, 16 * 1024)?;
    let room = BorrowedRoom::parse(&room.livekit_url, &room.livekit_token, now_ms()).map_err(
        |problem| {
            ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid_request",
                problem.to_string(),
            )
        },
    )?;
    if !state.settings.livekit.ffi_library_path().exists() {
        return Err(ApiError::unavailable(
            "This server cannot join LiveKit rooms: LiveKit's FFI library is not installed (make setup).",
        ));
    }
    Ok(room)
}

/// `GET /v1/sessions/{id}`.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "Sessions", operation_id = "get_session",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, body = Data<SessionView>, description = "The session."),
        (status = 404, body = ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let row = own_session(&state, &principal.account_id, &path).await?;
    Ok(HttpResponse::Ok().json(Data::new(row.view(&state.urls))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only sessions in this state (`queued`, `starting`, `live`, `stopping`, `stopped`, `failed`).
    status: Option<String>,
    /// Only this agent's sessions.
    agent_id: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<u64>,
}

/// `GET /v1/sessions`: the account's sessions, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "Sessions", operation_id = "list_sessions",
    params(ListQuery),
    responses((status = 200, body = Data<Vec<SessionView>>, description = "The sessions.")))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::validation(format!("Invalid query string: {e}")))?
        .into_inner();
    let wanted = match query.status.as_deref().map(|s| (s, SessionState::parse(s))) {
        None => None,
        Some((_, Some(state))) => Some(state),
        Some((_, None)) => {
            let names: Vec<_> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::invalid_field(
                "status",
                format!("must be one of {}", names.join(", ")),
            ));
        }
    };
    let filter = SessionFilter {
        state: wanted,
        agent_id: query.agent_id,
        limit: query.limit.unwrap_or(100),
    };
    let rows = state
        .store
        .sessions_of(&principal.account_id, filter)
        .await?;
    let data: Vec<_> = rows.iter().map(|r| r.view(&state.urls)).collect();
    Ok(HttpResponse::Ok().json(Data::new(data)))
}

/// `POST /v1/sessions/{id}/stop`: ends the session (`stopped_by_api`) and bills it.
#[utoipa::path(post, path = "/v1/sessions/{id}/stop", tag = "Sessions", operation_id = "stop_session",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, body = Data<SessionView>, description = "The ended session."),
        (status = 404, body = ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn stop_route(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let id = SessionId::parse(&path).ok_or_else(|| ApiError::session_not_found(&path))?;
    let row = state
        .sessions
        .stop_own(&principal.account_id, id.as_str(), EndReason::StoppedByApi)
        .await?
        .ok_or_else(|| ApiError::session_not_found(&path))?;
    Ok(HttpResponse::Ok().json(Data::new(row.view(&state.urls))))
}

/// How long a console token opens a session's channels (a channel once open stays open).
const OBSERVER_TOKEN_SECONDS: u64 = 600;

/// `POST /v1/sessions/{id}/token`: a short-lived token for the session's control and preview
/// channels. Browsers cannot put headers on a WebSocket, and an API key in a URL ends up in logs;
/// this token opens one session's channels for ten minutes, and no LiveKit room.
#[utoipa::path(post, path = "/v1/sessions/{id}/token", tag = "Sessions", operation_id = "session_token",
    params(("id" = String, Path, description = "The session's id.")),
    responses(
        (status = 200, body = ObserverToken, description = "A token for `?token=` on the control and preview channels."),
        (status = 404, body = ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let row = own_session(&state, &principal.account_id, &path).await?;
    let token = state
        .rooms
        .observer_token(
            &row.room_name,
            &row.user_identity,
            std::time::Duration::from_secs(OBSERVER_TOKEN_SECONDS),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot mint an observer token");
            ApiError::internal()
        })?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(ObserverToken {
            success: true,
            control_url: state.urls.control(&row.id),
            session_id: row.id,
            token,
            expires_in: OBSERVER_TOKEN_SECONDS,
        }))
}

/// The caller's session `raw`: a malformed id names no session, and costs no look-up.
pub async fn own_session(
    state: &AppState,
    account_id: &str,
    raw: &str,
) -> ApiResult<crate::store::entities::session::Model> {
    let id = SessionId::parse(raw).ok_or_else(|| ApiError::session_not_found(raw))?;
    state
        .store
        .session_of(account_id, id.as_str())
        .await?
        .ok_or_else(|| ApiError::session_not_found(raw))
}

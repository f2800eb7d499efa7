//! Upgrades to the control channels, authorised before any socket opens: no credentials, or a
//! token of another session, is refused with 401/403 at the upgrade.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::authenticate;
use super::error::{ApiError, ApiResult};
use crate::actors::registry::LiveSession;
use crate::actors::session::messages::MediaTap;
use crate::state::AppState;
use crate::store::entities::session;
use crate::ws::control::{self, Scope};
use crate::ws::preview;
use crate::ws::relay::{self, Remote, TapError};

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn upgrade(result: Result<HttpResponse, actix_web::Error>) -> ApiResult<HttpResponse> {
    result.map_err(|e| ApiError::validation(format!("Not a WebSocket upgrade: {e}")))
}

/// A participant token `req` carries: `?token=` (WebSockets cannot send headers), or an
/// `Authorization: Bearer` token that this server's rooms signed (WHEP).
fn participant_token(req: &HttpRequest, state: &AppState) -> Option<String> {
    if let Some(token) = web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token)
    {
        return Some(token);
    }
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    // A VideoSDK JWT is an API credential, not a room's token: that one goes to `authenticate`.
    state.rooms.verify(bearer).map(|_| bearer.to_string())
}

/// The session `req` may open: with the API key of the session's account, or with the session's
/// own participant token (which opens this session and no other).
pub async fn authorize_session(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
) -> ApiResult<session::Model> {
    if crate::domain::ids::SessionId::parse(id).is_none() {
        return Err(ApiError::session_not_found(id));
    }
    match participant_token(req, state) {
        Some(token) => {
            let claims = state
                .rooms
                .verify(&token)
                .ok_or_else(|| ApiError::unauthorized("Invalid or expired token."))?;
            state
                .store
                .session(id)
                .await?
                .filter(|row| row.room_name == claims.video.room && row.user_identity == claims.sub)
                .ok_or_else(|| {
                    ApiError::forbidden("auth_failed", "This token does not open this session.")
                })
        }
        None => {
            let principal = authenticate(req, state).await?;
            state
                .store
                .session_of(&principal.account_id, id)
                .await?
                .ok_or_else(|| ApiError::session_not_found(id))
        }
    }
}

async fn live(state: &AppState, row: &session::Model) -> ApiResult<Option<LiveSession>> {
    Ok(state.sessions.live(&row.id).await?)
}

/// The session's node relays it here, when it runs on another node (`None` when it runs nowhere:
/// then the row, read again, has the last word). A node that does not answer is 503.
async fn relayed(
    state: &AppState,
    row: &mut session::Model,
    media: bool,
) -> ApiResult<Option<(Remote, Option<serde_json::Value>)>> {
    if row.is_ended() || row.node_id == state.node_id || state.sessions.cluster().is_none() {
        return Ok(None);
    }
    match relay::tap_session(state, &row.node_id, &row.id, media).await {
        Ok(Some(tapped)) => Ok(Some(tapped)),
        Ok(None) => {
            if let Some(fresh) = state.store.session(&row.id).await? {
                *row = fresh;
            }
            Ok(None)
        }
        Err(TapError::Unavailable) => Err(ApiError::unavailable(
            "The node running this session does not answer; try again shortly.",
        )),
    }
}

/// `GET /v1/sessions/{id}/control`: a WebSocket of the session's commands and events.
#[utoipa::path(get, path = "/v1/sessions/{id}/control", tag = "Control", operation_id = "session_control",
    params(("id" = String, Path, description = "The session's id."),
        ("token" = Option<String>, Query, description = "The session's participant token or an observer token, instead of the API key.")),
    responses((status = 101, description = "Switching Protocols: JSON text frames (API.md, \"WebSocket control channel\")."),
        (status = 404, body = crate::api::error::ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn session(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let mut row = authorize_session(&req, &state, &path).await?;
    let scope = match live(&state, &row).await? {
        Some(live) => Scope::Session(live),
        None => match relayed(&state, &mut row, false).await? {
            Some((remote, _)) => Scope::Relayed {
                agent_id: row.agent_id.clone(),
                room_name: row.room_name.clone(),
                remote: Box::new(remote),
            },
            None => Scope::Ended(Box::new(row.status())),
        },
    };
    upgrade(control::start(
        scope,
        state.get_ref().clone(),
        &req,
        payload,
    ))
}

/// `GET /v1/sessions/{id}/preview`: the session's frames and audio (binary) and events (text).
/// A session that has ended answers its final status and closes, as the control channel does.
#[utoipa::path(get, path = "/v1/sessions/{id}/preview", tag = "Control", operation_id = "session_preview",
    params(("id" = String, Path, description = "The session's id."),
        ("token" = Option<String>, Query, description = "The session's participant token or an observer token, instead of the API key.")),
    responses((status = 101, description = "Switching Protocols: binary messages `0x01`+JPEG frame and `0x02`+PCM (s16le, 16 kHz, mono), JSON text for metadata."),
        (status = 404, body = crate::api::error::ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn preview(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let mut row = authorize_session(&req, &state, &path).await?;
    let app = state.get_ref().clone();
    let here = live(&state, &row).await?;
    if here.is_none() {
        if let Some((remote, hello)) = relayed(&state, &mut row, true).await? {
            return upgrade(preview::start_relayed(remote, hello, app, &req, payload));
        }
    }
    let tapped = match here {
        Some(live) => match live.addr.send(MediaTap).await {
            Ok(Ok(streams)) => Some((live, streams)),
            _ => None,
        },
        None => None,
    };
    upgrade(match tapped {
        Some((live, streams)) => preview::start(live, streams, app, &req, payload),
        None => control::start(Scope::Ended(Box::new(row.status())), app, &req, payload),
    })
}

/// `GET /v1/agents/{code}/control`: the API key; every live session of the agent.
#[utoipa::path(get, path = "/v1/agents/{code}/control", tag = "Control", operation_id = "agent_control",
    params(("code" = String, Path, description = "The agent's id.")),
    responses((status = 101, description = "Switching Protocols: JSON text frames (API.md, \"WebSocket control channel\")."),
        (status = 404, body = crate::api::error::ErrorBody, description = "`agent_not_found`."),
    ))]
pub async fn agent(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let agent = state
        .store
        .agent_of(&principal.account_id, &path)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&path))?;
    upgrade(control::start(
        Scope::Agent(agent.id),
        state.get_ref().clone(),
        &req,
        payload,
    ))
}

//! Upgrades to the control channels, authorised before any socket opens: no credentials, or a
//! token of another session, is refused with 401/403 at the upgrade.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::authenticate;
use super::error::{ApiError, ApiResult};
use crate::actors::registry::Lookup;
use crate::state::AppState;
use crate::ws::control::{self, Scope};

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn upgrade(result: Result<HttpResponse, actix_web::Error>) -> ApiResult<HttpResponse> {
    result.map_err(|e| ApiError::validation(format!("Not a WebSocket upgrade: {e}")))
}

/// `GET /v1/sessions/{id}/control`: the API key of the session's account, or `?token=` with the
/// session's own participant token (which opens this session and no other).
pub async fn session(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let token = web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().token);
    let row = match token {
        Some(token) => {
            let claims = state
                .rooms
                .verify(&token)
                .ok_or_else(|| ApiError::unauthorized("Invalid or expired token."))?;
            state
                .store
                .session(&path)
                .await?
                .filter(|row| row.room_name == claims.video.room && row.user_identity == claims.sub)
                .ok_or_else(|| {
                    ApiError::forbidden("auth_failed", "This token does not open this session.")
                })?
        }
        None => {
            let principal = authenticate(&req, &state).await?;
            state
                .store
                .session_of(&principal.account_id, &path)
                .await?
                .ok_or_else(|| ApiError::session_not_found(&path))?
        }
    };
    let live = state
        .registry
        .send(Lookup {
            session_id: row.id.clone(),
        })
        .await
        .ok()
        .flatten();
    let scope = match live {
        Some(live) => Scope::Session(live),
        None => Scope::Ended(json!({
            "type": "status",
            "session_id": row.id,
            "agent_id": row.agent_id,
            "room_name": row.room_name,
            "state": row.state,
            "end_reason": row.end_reason,
        })),
    };
    upgrade(control::start(
        scope,
        state.get_ref().clone(),
        &req,
        payload,
    ))
}

/// `GET /v1/agents/{code}/control`: the API key; every live session of the agent.
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

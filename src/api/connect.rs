//! Ojin's dialect (`seeds/003_…`): public connect, authorised by the browser's `Origin` against the
//! agent's allowlist, with CORS preflight answered for allowed origins only.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{self, max_len};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::limits::Limited;
use super::sessions::{ensure_ready, start, StartMode, StartRequest};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ConnectRequest)]
struct ConnectBody {
    /// A published agent that allows the request's `Origin`.
    agent_id: String,
    /// The caller's own reference for the user, up to 256 characters.
    client_user_ref: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Connected {
    pub session_id: String,
    /// Where the browser joins the room.
    pub room_url: String,
    /// The browser's token for the room.
    pub token: String,
}

/// Whether `origin` (None: no Origin header) passes the allowlist `allowed`.
/// Entries are `*`, a full origin (`https://app.example.com`) or a hostname (`app.example.com`).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let Some(origin) = origin else { return false };
    let Ok(parsed) = url::Url::parse(origin) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or_default();
    let normalized = parsed.origin().ascii_serialization();
    allowed.iter().any(|entry| {
        if entry.contains("://") {
            url::Url::parse(entry).is_ok_and(|e| e.origin().ascii_serialization() == normalized)
        } else {
            entry.eq_ignore_ascii_case(host)
        }
    })
}

fn origin(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty() && *o != "null")
}

/// `POST /v1/public/agents/connect`: a session for a browser, authorised by its `Origin`.
#[utoipa::path(post, path = "/v1/public/agents/connect", tag = "Ojin", operation_id = "connect",
    security(()),
    request_body = ConnectBody,
    responses(
        (status = 200, body = Connected, description = "The session is live; join its room."),
        (status = 402, body = ErrorBody, description = "`insufficient_balance`."),
        (status = 403, body = ErrorBody, description = "`agent_unpublished`, or `auth_failed` when the origin is not allowed."),
        (status = 404, body = ErrorBody, description = "`agent_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the agent is not ready."),
        (status = 429, body = ErrorBody, description = "`concurrency_limit`, `no_capacity` or `rate_limited`."),
        (status = 502, body = ErrorBody, description = "`room_creation_failed` or `orchestrator_error`."),
    ))]
pub async fn connect(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    state.limits.check_ip(Limited::Connect, &req)?;
    let origin = origin(&req).map(str::to_string);
    let body: ConnectBody = body::json(payload, 16 * 1024).await?;
    state.limits.check_key(Limited::Connect, &body.agent_id)?;
    if let Some(r) = &body.client_user_ref {
        max_len("client_user_ref", r, 256)?;
    }
    let agent = state
        .store
        .agent(&body.agent_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&body.agent_id))?;
    if !agent.published {
        return Err(ApiError::forbidden(
            "agent_unpublished",
            "This agent is not published.",
        ));
    }
    let allowed: Vec<String> = serde_json::from_str(&agent.allowed_origins).unwrap_or_default();
    if !origin_allowed(&allowed, origin.as_deref()) {
        return Err(ApiError::forbidden(
            "auth_failed",
            "This origin is not allowed to start sessions with this agent.",
        ));
    }
    ensure_ready(&agent)?;
    let started = start(
        &state,
        StartRequest {
            account_id: agent.account_id.clone(),
            revision: agent.revision,
            agent,
            source: "connect",
            link_id: None,
            aspect_ratio: "4:3".into(),
            client_user_ref: body.client_user_ref,
            metadata: None,
            env: None,
            tag: None,
            webhook: None,
            max_duration_seconds: None,
            room: None,
            voice_from_room: false,
        },
        StartMode::WaitLive,
    )
    .await?;
    let access = started.access.ok_or_else(ApiError::internal)?;
    let mut response = HttpResponse::Ok();
    if let Some(origin) = origin {
        response
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::VARY, "Origin"));
    }
    Ok(response.json(Connected {
        session_id: started.row.id,
        room_url: access.url,
        token: access.user_token,
    }))
}

/// `OPTIONS /v1/public/agents/connect`: allowed if some published agent allows this origin.
#[utoipa::path(options, path = "/v1/public/agents/connect", tag = "Ojin", operation_id = "connect_preflight",
    security(()),
    params(("Origin" = String, Header, description = "The page's origin.")),
    responses(
        (status = 204, description = "Allowed: `Access-Control-Allow-Origin` names the origin."),
        (status = 403, body = ErrorBody, description = "`auth_failed`: no published agent allows this origin."),
        (status = 429, body = ErrorBody, description = "`rate_limited`."),
    ))]
pub async fn preflight(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    state.limits.check_ip(Limited::Preflight, &req)?;
    let Some(origin) = origin(&req) else {
        return Err(ApiError::forbidden(
            "auth_failed",
            "A CORS preflight needs an Origin header.",
        ));
    };
    let allowed = state
        .store
        .public_agents_origins()
        .await?
        .into_iter()
        .any(|list| {
            let list: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
            origin_allowed(&list, Some(origin))
        });
    if !allowed {
        return Err(ApiError::forbidden(
            "auth_failed",
            "This origin is not allowed.",
        ));
    }
    Ok(HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .insert_header((header::VARY, "Origin"))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowlist_rules() {
        assert!(origin_allowed(&list(&["*"]), None));
        assert!(!origin_allowed(&list(&[]), Some("https://a.com")));
        assert!(!origin_allowed(&list(&["a.com"]), None));
        assert!(origin_allowed(&list(&["a.com"]), Some("https://a.com")));
        assert!(origin_allowed(
            &list(&["https://a.com"]),
            Some("https://a.com")
        ));
        assert!(!origin_allowed(
            &list(&["https://a.com"]),
            Some("http://a.com")
        ));
        assert!(!origin_allowed(
            &list(&["a.com"]),
            Some("https://evil-a.com")
        ));
        assert!(!origin_allowed(
            &list(&["a.com"]),
            Some("https://a.com.evil.net")
        ));
    }
}

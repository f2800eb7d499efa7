//! AgentHuman's dialect (`seeds/001_…`, `000_…`): shareable links, and starting a session with one.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::authenticate;
use super::body::{self, max_len};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::limits::Limited;
use super::reply::SessionAccess;
use super::sessions::{aspect_ratio, ensure_ready, start, StartMode, StartRequest};
use crate::domain::ids;
use crate::domain::ids::LinkId;
use crate::domain::link::LinkStatus;
use crate::domain::views::LinkView;
use crate::state::AppState;
use crate::store::entities::link;
use crate::store::links::effective_status;
use crate::store::now_ms;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateLinkRequest)]
struct CreateBody {
    /// The agent the link starts sessions with.
    agent_id: String,
    /// Default: "Link <date>".
    name: Option<String>,
    /// ISO 8601, in the future.
    expires_at: Option<String>,
    /// How many sessions the link may start; a positive integer.
    use_limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = LinkStartRequest)]
struct StartBody {
    /// The link's id: the credential.
    link_id: String,
    /// 4:3 (default), 3:4 or 1:1; anything else means 4:3.
    aspect_ratio: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkReply {
    pub success: bool,
    pub link: LinkView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub success: bool,
    pub links: Vec<LinkView>,
}

impl LinkReply {
    fn new(link: LinkView) -> Self {
        Self {
            success: true,
            link,
        }
    }
}

/// `POST /v1/links`: a shareable link that starts sessions with an agent.
#[utoipa::path(post, path = "/v1/links", tag = "AgentHuman", operation_id = "create_link",
    request_body = CreateBody,
    responses(
        (status = 200, body = LinkReply, description = "The link; `url` is its room page."),
        (status = 404, body = ErrorBody, description = "`agent_not_found`."),
    ))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let body: CreateBody = body::json(payload, 64 * 1024).await?;
    let now = now_ms();
    let name = match body.name {
        Some(n) if n.trim().is_empty() => {
            return Err(ApiError::invalid_field("name", "must not be empty"))
        }
        Some(n) => {
            max_len("name", &n, 200)?;
            n
        }
        None => format!("Link {}", chrono::Utc::now().format("%Y-%m-%d %H:%M")),
    };
    let expires_at = match body.expires_at {
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    ApiError::invalid_field(
                        "expires_at",
                        "must be an ISO 8601 timestamp like 2030-01-31T10:00:00Z",
                    )
                })?
                .timestamp_millis();
            if at <= now {
                return Err(ApiError::invalid_field(
                    "expires_at",
                    "must be in the future",
                ));
            }
            Some(at)
        }
        None => None,
    };
    if let Some(limit) = body.use_limit {
        if !(1..=1_000_000_000).contains(&limit) {
            return Err(ApiError::invalid_field(
                "use_limit",
                "must be a positive integer",
            ));
        }
    }
    let agent = state
        .store
        .agent_of(&principal.account_id, &body.agent_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&body.agent_id))?;
    let link = state
        .store
        .create_link(link::Model {
            id: ids::link_id(),
            account_id: principal.account_id,
            agent_id: agent.id.clone(),
            name,
            status: LinkStatus::Active,
            uses: 0,
            use_limit: body.use_limit,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok(HttpResponse::Ok().json(LinkReply::new(link.view(Some(&agent), &state.urls))))
}

/// `GET /v1/links`: the account's links.
#[utoipa::path(get, path = "/v1/links", tag = "AgentHuman", operation_id = "list_links",
    responses((status = 200, body = LinkList, description = "The account's links.")))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let links = state.store.links_of(&principal.account_id).await?;
    let mut data = Vec::with_capacity(links.len());
    for l in &links {
        let agent = state.store.agent(&l.agent_id).await?;
        data.push(l.view(agent.as_ref(), &state.urls));
    }
    Ok(HttpResponse::Ok().json(LinkList {
        success: true,
        links: data,
    }))
}

fn link_not_found(id: &str) -> ApiError {
    ApiError::not_found("link_not_found", format!("No link `{id}`."))
}

/// `GET /v1/links/{id}`.
#[utoipa::path(get, path = "/v1/links/{id}", tag = "AgentHuman", operation_id = "get_link",
    params(("id" = String, Path, description = "The link's id.")),
    responses(
        (status = 200, body = LinkReply, description = "The link."),
        (status = 404, body = ErrorBody, description = "`link_not_found`."),
    ))]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let link = state
        .store
        .link_of(&principal.account_id, &path)
        .await?
        .ok_or_else(|| link_not_found(&path))?;
    let agent = state.store.agent(&link.agent_id).await?;
    Ok(HttpResponse::Ok().json(LinkReply::new(link.view(agent.as_ref(), &state.urls))))
}

/// `DELETE /v1/links/{id}`: revokes the link (its status becomes `revoked`).
#[utoipa::path(delete, path = "/v1/links/{id}", tag = "AgentHuman", operation_id = "revoke_link",
    params(("id" = String, Path, description = "The link's id.")),
    responses(
        (status = 200, body = LinkReply, description = "The revoked link."),
        (status = 404, body = ErrorBody, description = "`link_not_found`."),
    ))]
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let link = state
        .store
        .revoke_link(&principal.account_id, &path)
        .await?
        .ok_or_else(|| link_not_found(&path))?;
    let agent = state.store.agent(&link.agent_id).await?;
    Ok(HttpResponse::Ok().json(LinkReply::new(link.view(agent.as_ref(), &state.urls))))
}

/// `POST /v1/links/start-session`. No API key: the link id is the credential. Refusals are counted
/// by code: they are what the visitors of room pages run into.
#[utoipa::path(post, path = "/v1/links/start-session", tag = "AgentHuman", operation_id = "start_session_with_link",
    security(()),
    request_body = StartBody,
    responses(
        (status = 200, body = SessionAccess, description = "The session is live; join its room."),
        (status = 402, body = ErrorBody, description = "`insufficient_balance`: no minutes left."),
        (status = 403, body = ErrorBody, description = "`link_inactive`: revoked, expired or used up."),
        (status = 404, body = ErrorBody, description = "`link_not_found` or `agent_not_found`."),
        (status = 409, body = ErrorBody, description = "`conflict`: the agent is not ready."),
        (status = 429, body = ErrorBody, description = "`concurrency_limit`, `no_capacity` or `rate_limited`, with `retry_after_seconds`."),
        (status = 502, body = ErrorBody, description = "`room_creation_failed` or `orchestrator_error`."),
    ))]
pub async fn start_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let result = start_with_link(&req, &state, payload).await;
    if let Err(e) = &result {
        state
            .metrics
            .link_start_failures
            .with_label_values(&[e.code])
            .inc();
    }
    result
}

async fn start_with_link(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    state.limits.check_ip(Limited::LinkStart, req)?;
    let body: StartBody = body::json(payload, 16 * 1024).await?;
    if LinkId::parse(&body.link_id).is_none() {
        return Err(ApiError::invalid_field(
            "link_id",
            "must be a link id (lnk_…)",
        ));
    }
    state.limits.check_key(Limited::LinkStart, &body.link_id)?;
    let link = state
        .store
        .link(&body.link_id)
        .await?
        .ok_or_else(|| link_not_found(&body.link_id))?;
    match effective_status(&link) {
        LinkStatus::Active => {}
        LinkStatus::Revoked => {
            return Err(ApiError::forbidden(
                "link_inactive",
                "This link has been revoked.",
            ))
        }
        LinkStatus::Expired => {
            return Err(ApiError::forbidden(
                "link_inactive",
                "This link has expired.",
            ))
        }
        LinkStatus::Exhausted => {
            return Err(ApiError::forbidden(
                "link_inactive",
                "This link has reached its use limit.",
            ))
        }
    }
    let agent = state
        .store
        .agent_of(&link.account_id, &link.agent_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&link.agent_id))?;
    ensure_ready(&agent)?;
    if agent.image_asset_id.is_none() {
        return Err(ApiError::conflict("The link's agent has no avatar image."));
    }
    let started = start(
        state,
        StartRequest {
            account_id: link.account_id.clone(),
            revision: agent.revision,
            agent,
            source: "link",
            link_id: Some(link.id.clone()),
            aspect_ratio: aspect_ratio(body.aspect_ratio.as_deref()),
            client_user_ref: None,
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
    Ok(HttpResponse::Ok().json(SessionAccess {
        success: true,
        session_id: started.row.id,
        livekit_url: access.url,
        participant_token: access.user_token,
        agent_identity: started.row.agent_identity,
    }))
}

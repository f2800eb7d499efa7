//! VideoSDK's dialect (`seeds/004_…`): deployment sessions. `deploymentId` names an agent, `tag` a
//! revision of it (`v1`, `v2`, …; latest by default). The start answers `queued` at once.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::authenticate;
use super::body;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::sessions::{ensure_ready, start, StartMode, StartRequest};
use crate::domain::events::SessionWebhook;
use crate::domain::session::EndReason;
use crate::state::AppState;
use crate::store::entities::session;
use crate::store::iso;

const EVENTS: [&str; 5] = [
    "ai-deployment-session-starting",
    "ai-deployment-session-started",
    "ai-deployment-session-stopping",
    "ai-deployment-session-stopped",
    "ai-deployment-session-failed",
];

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeploymentStartRequest)]
struct StartBody {
    /// The agent's id.
    deployment_id: String,
    /// A revision of the agent (`v1`, `v2`, …); default the latest.
    tag: Option<String>,
    /// String values: the voice agent's variables.
    #[schema(value_type = Option<Object>)]
    env: Option<Map<String, Value>>,
    /// Stored with the session.
    #[schema(value_type = Option<Object>)]
    meta_data: Option<Map<String, Value>>,
    webhook: Option<WebhookBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeploymentWebhook)]
struct WebhookBody {
    /// Where the session's events are POSTed.
    end_point: String,
    /// `ai-deployment-session-starting|started|stopping|stopped|failed`; all when absent.
    events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = DeploymentEndRequest)]
struct EndBody {
    session_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSession {
    pub session_id: String,
    /// `queued` when started; the session's state after.
    pub status: String,
    pub deployment_id: String,
    pub tag: Option<String>,
    pub start: String,
    pub created_at: String,
    pub updated_at: String,
    pub end_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentReply {
    pub message: String,
    pub data: DeploymentSession,
}

fn data(row: &session::Model, deployment_id: &str) -> DeploymentSession {
    DeploymentSession {
        session_id: row.id.clone(),
        status: row.state.to_string(),
        deployment_id: deployment_id.to_string(),
        tag: row.tag.clone(),
        start: iso(row.created_at),
        created_at: iso(row.created_at),
        updated_at: iso(row.updated_at),
        end_reason: row.end_reason.clone(),
    }
}

/// `POST /ai/v1/ai-deployment-sessions/start`: answers `queued` at once; webhooks follow the session.
#[utoipa::path(post, path = "/ai/v1/ai-deployment-sessions/start", tag = "VideoSDK", operation_id = "start_deployment_session",
    request_body = StartBody,
    responses(
        (status = 200, body = DeploymentReply, description = "Queued."),
        (status = 402, body = ErrorBody, description = "`insufficient_balance`."),
        (status = 404, body = ErrorBody, description = "`agent_not_found`: no such deployment."),
        (status = 409, body = ErrorBody, description = "`conflict`: the agent is not ready."),
        (status = 429, body = ErrorBody, description = "`concurrency_limit` or `no_capacity`."),
    ))]
pub async fn start_route(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let body: StartBody = body::json(payload, 64 * 1024).await?;
    for (field, map) in [("env", &body.env), ("metaData", &body.meta_data)] {
        if map
            .as_ref()
            .is_some_and(|m| Value::Object(m.clone()).to_string().len() > 16 * 1024)
        {
            return Err(ApiError::invalid_field(
                field,
                "must be at most 16 KiB of JSON",
            ));
        }
    }
    if let Some(env) = &body.env {
        if let Some((key, _)) = env.iter().find(|(_, v)| !v.is_string()) {
            return Err(ApiError::invalid_field(
                &format!("env.{key}"),
                "must be a string",
            ));
        }
    }
    let webhook = match body.webhook {
        Some(w) => {
            state
                .policy
                .parse(&w.end_point)
                .map_err(|why| ApiError::invalid_field("webhook.endPoint", why))?;
            if let Some(events) = &w.events {
                if let Some((i, _)) = events
                    .iter()
                    .enumerate()
                    .find(|(_, e)| !EVENTS.contains(&e.as_str()))
                {
                    return Err(ApiError::invalid_field(
                        &format!("webhook.events[{i}]"),
                        format!("must be one of {}", EVENTS.join(", ")),
                    ));
                }
            }
            Some(SessionWebhook {
                url: w.end_point,
                events: w.events,
            })
        }
        None => None,
    };
    let agent = state
        .store
        .agent_of(&principal.account_id, &body.deployment_id)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(&body.deployment_id))?;
    ensure_ready(&agent)?;
    let (revision, tag) = match &body.tag {
        Some(tag) => {
            let number = tag
                .strip_prefix('v')
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid_field("tag", "must name a revision like v1"))?;
            let rev = state
                .store
                .agent_revision(&agent.id, number)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "tag",
                        format!(
                            "deployment has no revision {tag} (latest is v{})",
                            agent.revision
                        ),
                    )
                })?;
            (rev.revision, tag.clone())
        }
        None => (agent.revision, format!("v{}", agent.revision)),
    };
    let deployment_id = agent.id.clone();
    let started = start(
        &state,
        StartRequest {
            account_id: principal.account_id,
            agent,
            revision,
            source: "deployment",
            link_id: None,
            aspect_ratio: "16:9".into(),
            client_user_ref: None,
            metadata: body.meta_data.map(Value::Object),
            env: body.env.map(Value::Object),
            tag: Some(tag),
            webhook,
            max_duration_seconds: None,
            room: None,
            voice_from_room: false,
        },
        StartMode::Queued,
    )
    .await?;
    Ok(HttpResponse::Ok().json(DeploymentReply {
        message: "Session started successfully".into(),
        data: data(&started.row, &deployment_id),
    }))
}

/// `POST /ai/v1/ai-deployment-sessions/end`.
#[utoipa::path(post, path = "/ai/v1/ai-deployment-sessions/end", tag = "VideoSDK", operation_id = "end_deployment_session",
    request_body = EndBody,
    responses(
        (status = 200, body = DeploymentReply, description = "Ended."),
        (status = 404, body = ErrorBody, description = "`session_not_found`."),
    ))]
pub async fn end_route(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let body: EndBody = body::json(payload, 16 * 1024).await?;
    let row = state
        .store
        .session_of(&principal.account_id, &body.session_id)
        .await?
        .filter(|s| s.source == "deployment")
        .ok_or_else(|| ApiError::session_not_found(&body.session_id))?;
    let row = state.sessions.stop(row, EndReason::StoppedByApi).await?;
    let deployment_id = row.agent_id.clone();
    Ok(HttpResponse::Ok().json(DeploymentReply {
        message: "Session ended successfully".into(),
        data: data(&row, &deployment_id),
    }))
}

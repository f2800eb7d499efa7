//! VideoSDK's dialect (`seeds/004_…`): deployment sessions. `deploymentId` names an agent, `tag` a
//! revision of it (`v1`, `v2`, …; latest by default). The start answers `queued` at once.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::authenticate;
use super::body;
use super::error::{ApiError, ApiResult};
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    deployment_id: String,
    tag: Option<String>,
    env: Option<Map<String, Value>>,
    meta_data: Option<Map<String, Value>>,
    webhook: Option<WebhookBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody {
    end_point: String,
    events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndBody {
    session_id: String,
}

fn data(row: &session::Model, deployment_id: &str) -> Value {
    json!({
        "sessionId": row.id,
        "status": row.state,
        "deploymentId": deployment_id,
        "tag": row.tag,
        "start": iso(row.created_at),
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "endReason": row.end_reason,
    })
}

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
        },
        StartMode::Queued,
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "message": "Session started successfully",
        "data": data(&started.row, &deployment_id),
    })))
}

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
    Ok(HttpResponse::Ok().json(json!({
        "message": "Session ended successfully",
        "data": data(&row, &deployment_id),
    })))
}

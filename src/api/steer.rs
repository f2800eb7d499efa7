//! bitHuman's speak and add-context (`seeds/002_…`): words and knowledge for an agent's live
//! sessions, on whichever node they run. Error codes on these routes are upper case.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::agents::bithuman;
use super::auth::authenticate;
use super::body::{self, max_len};
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::actors::session::commands::Directive;
use crate::state::AppState;

/// How many live sessions took the words or the knowledge.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivered {
    pub agent_code: String,
    /// `speak` or `add_context`.
    pub context_type: String,
    pub delivered_to_rooms: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SpeakRequest)]
struct SpeakBody {
    /// What the avatar says.
    message: String,
    /// Only the session in this room (its `room_name`).
    room_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = AddContextRequest)]
struct ContextBody {
    /// Knowledge for the agent, or (with `type: speak`) words to say.
    context: String,
    /// `add_context` (default) or `speak`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only the session in this room (its `room_name`).
    room_id: Option<String>,
}

/// Sends to every live session of the agent (or the one in `room_id`); answers how many took it.
async fn fan_out(
    state: &AppState,
    account_id: &str,
    code: &str,
    room_id: Option<String>,
    directive: Directive,
) -> ApiResult<usize> {
    let agent = state
        .store
        .agent_of(account_id, code)
        .await?
        .ok_or_else(|| ApiError::agent_not_found(code))?;
    let delivered = state
        .sessions
        .deliver_to_agent(&agent.id, room_id.as_deref(), &directive)
        .await?;
    if delivered == 0 {
        let where_ = room_id
            .map(|r| format!(" in room `{r}`"))
            .unwrap_or_default();
        return Err(ApiError::not_found(
            "no_active_rooms",
            format!("Agent `{code}` has no active session{where_}."),
        ));
    }
    let kind = match directive {
        Directive::Speak { .. } => "speak",
        _ => "add_context",
    };
    state
        .metrics
        .fanout_deliveries
        .with_label_values(&[kind])
        .inc_by(delivered as u64);
    Ok(delivered)
}

fn spoken_text(field: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    max_len(field, text, crate::ws::protocol::MAX_TEXT_CHARS)
}

/// `POST /v1/agent/{code}/speak`: every live session of the agent (or the one in `room_id`) says it.
#[utoipa::path(post, path = "/v1/agent/{code}/speak", tag = "bitHuman", operation_id = "speak",
    params(("code" = String, Path, description = "The agent's id.")),
    request_body = SpeakBody,
    responses(
        (status = 200, body = Delivered, description = "Delivered."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`, or `NO_ACTIVE_ROOMS` when no live session took it."),
    ))]
pub async fn speak(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            let body: SpeakBody = body::json(payload, 64 * 1024).await?;
            spoken_text("message", &body.message)?;
            let n = fan_out(
                &state,
                &principal.account_id,
                &path,
                body.room_id,
                Directive::Speak {
                    text: body.message,
                    interrupt: false,
                },
            )
            .await?;
            Ok(HttpResponse::Ok().json(Delivered {
                agent_code: path.into_inner(),
                context_type: "speak".into(),
                delivered_to_rooms: n,
            }))
        }
        .await,
    )
}

/// `POST /v1/agent/{code}/add-context`: knowledge, or (`type: speak`) words to say.
#[utoipa::path(post, path = "/v1/agent/{code}/add-context", tag = "bitHuman", operation_id = "add_context",
    params(("code" = String, Path, description = "The agent's id.")),
    request_body = ContextBody,
    responses(
        (status = 200, body = Delivered, description = "Delivered."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`, or `NO_ACTIVE_ROOMS` when no live session took it."),
    ))]
pub async fn add_context(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            let body: ContextBody = body::json(payload, 64 * 1024).await?;
            spoken_text("context", &body.context)?;
            let (kind, directive) = match body.kind.as_deref().unwrap_or("add_context") {
                "add_context" => ("add_context", Directive::AddContext(body.context)),
                "speak" => (
                    "speak",
                    Directive::Speak {
                        text: body.context,
                        interrupt: false,
                    },
                ),
                _ => {
                    return Err(ApiError::invalid_field(
                        "type",
                        "must be add_context or speak",
                    ))
                }
            };
            let n = fan_out(
                &state,
                &principal.account_id,
                &path,
                body.room_id,
                directive,
            )
            .await?;
            Ok(HttpResponse::Ok().json(Delivered {
                agent_code: path.into_inner(),
                context_type: kind.into(),
                delivered_to_rooms: n,
            }))
        }
        .await,
    )
}

//! bitHuman's dialect (`seeds/002_…`): validate, generate, status, get, update, list, delete; and
//! the assets their URLs point at. Error codes on these routes are upper case.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::authenticate;
use super::body::{self, max_len};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::limits::Limited;
use super::reply::Data;
use crate::actors::session::messages::PromptUpdated;
use crate::domain::agent::VoiceAgent;
use crate::domain::ids;
use crate::domain::views::AgentView;
use crate::jobs::generation::{self, MediaSource, Sources};
use crate::state::AppState;
use crate::store::agents::{AgentChanges, CreateAgent, NewAgent};

const MAX_PROMPT: usize = 20_000;

/// Clients send base64 with and without padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A voice-agent config a client gave: a provider this server speaks, and an agent id for it.
fn check_voice_agent(voice: &VoiceAgent) -> ApiResult<()> {
    {
        let provider = voice.provider.to_ascii_lowercase();
        if !matches!(provider.as_str(), "elevenlabs" | "local") {
            return Err(ApiError::invalid_field(
                "voice_agent.provider",
                "must be ElevenLabs or local",
            ));
        }
        if voice.agent_id.trim().is_empty() && provider == "elevenlabs" {
            return Err(ApiError::invalid_field(
                "voice_agent.agent_id",
                "must not be empty",
            ));
        }
        max_len("voice_agent.agent_id", &voice.agent_id, 256)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GenerateAgentRequest)]
struct GenerateBody {
    /// The agent's system prompt.
    prompt: Option<String>,
    /// A photo with one face: an http(s) URL or base64 (optionally a data: URL). None: the
    /// operator's default portrait.
    image: Option<String>,
    /// Stored with the agent (URL or base64).
    video: Option<String>,
    /// Stored with the agent (URL or base64).
    audio: Option<String>,
    /// 16:9 (default), 9:16 or 1:1.
    aspect_ratio: Option<String>,
    /// 16:9, 9:16 or 1:1.
    video_aspect_ratio: Option<String>,
    /// A custom id, `[A-Za-z0-9_-]{3,64}`; else one is made.
    agent_id: Option<String>,
    /// Seconds, up to 600.
    duration: Option<f64>,
    name: Option<String>,
    voice_agent: Option<VoiceAgent>,
    allowed_origins: Option<Vec<String>>,
    published: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateAgentRequest)]
struct UpdateBody {
    /// Live sessions of the agent get the new prompt (a new revision).
    system_prompt: Option<String>,
    name: Option<String>,
    allowed_origins: Option<Vec<String>>,
    published: Option<bool>,
    /// `null` removes the voice agent.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<VoiceAgent>)]
    voice_agent: Option<Option<VoiceAgent>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// bitHuman's routes spell error codes in upper case.
pub(super) fn bithuman<T>(result: ApiResult<T>) -> ApiResult<T> {
    result.map_err(ApiError::upper)
}

pub fn check_origins(field: &str, origins: &[String]) -> ApiResult<String> {
    if origins.len() > 100 {
        return Err(ApiError::invalid_field(field, "at most 100 origins"));
    }
    for (i, origin) in origins.iter().enumerate() {
        let ok = origin == "*"
            || (!origin.is_empty()
                && origin.len() <= 255
                && !origin.contains(char::is_whitespace)
                && (origin.contains("://") == url::Url::parse(origin).is_ok()));
        if !ok {
            return Err(ApiError::invalid_field(
                &format!("{field}[{i}]"),
                "must be `*`, a hostname or an origin like https://example.com",
            ));
        }
    }
    // unwrap: a Vec<String> always serializes.
    Ok(serde_json::to_string(origins).unwrap())
}

/// An `image`/`video`/`audio` value: an http(s) URL, or base64 (optionally a data: URL).
fn media(state: &AppState, field: &str, value: Option<String>) -> ApiResult<Option<MediaSource>> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let value = value.trim();
    if value.starts_with("http://") || value.starts_with("https://") {
        let url = state
            .policy
            .parse(value)
            .map_err(|why| ApiError::invalid_field(field, why))?;
        return Ok(Some(MediaSource::Url(url)));
    }
    let encoded = match value.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(";base64,")
            .map(|(_, data)| data)
            .ok_or_else(|| {
                ApiError::invalid_field(field, "data URL must be base64 (data:<type>;base64,...)")
            })?,
        None => value,
    };
    let max = state.settings.agents.max_image_bytes;
    if encoded.len() / 4 * 3 > max + 3 {
        return Err(ApiError::too_large(format!(
            "`{field}` decodes to more than the {max} bytes allowed."
        )));
    }
    let cleaned: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = LENIENT_BASE64
        .decode(cleaned.as_bytes())
        .map_err(|_| ApiError::invalid_field(field, "must be an http(s) URL or base64 data"))?;
    if bytes.len() > max {
        return Err(ApiError::too_large(format!(
            "`{field}` decodes to more than the {max} bytes allowed."
        )));
    }
    Ok(Some(MediaSource::Inline(bytes)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Validated {
    pub valid: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationStarted {
    pub success: bool,
    /// "Agent generation started".
    pub message: String,
    pub agent_id: String,
    /// `processing`: poll the status route until `ready` or `failed`.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentUpdated {
    pub agent_code: String,
    pub updated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDeleted {
    pub success: bool,
    pub agent_code: String,
    pub deleted: bool,
}

/// `POST /v1/validate`: whether the key is good. No side effects.
#[utoipa::path(post, path = "/v1/validate", tag = "bitHuman", operation_id = "validate",
    responses((status = 200, body = Validated, description = "The key is valid.")))]
pub async fn validate(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    bithuman(authenticate(&req, &state).await)?;
    Ok(HttpResponse::Ok().json(Validated { valid: true }))
}

/// `POST /v1/agent/generate`: answers at once; generation runs in the background (poll the status).
#[utoipa::path(post, path = "/v1/agent/generate", tag = "bitHuman", operation_id = "generate_agent",
    request_body = GenerateBody,
    responses(
        (status = 200, body = GenerationStarted, description = "Generation started; 250 credits debited."),
        (status = 402, body = ErrorBody, description = "Not enough credits."),
        (status = 409, body = ErrorBody, description = "An agent with this custom `agent_id` exists."),
        (status = 429, body = ErrorBody, description = "Rate limited."),
    ))]
pub async fn generate(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    bithuman(generate_inner(req, state, payload).await)
}

async fn generate_inner(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    state.limits.check_ip(Limited::Generate, &req)?;
    let principal = authenticate(&req, &state).await?;
    state
        .limits
        .check_key(Limited::Generate, &principal.account_id)?;
    let body: GenerateBody = body::json(payload, state.settings.server.max_body_bytes).await?;
    let prompt = body.prompt.unwrap_or_default();
    max_len("prompt", &prompt, MAX_PROMPT)?;
    let name = body.name.unwrap_or_else(|| "Agent".to_string());
    max_len("name", &name, 200)?;
    for (field, value) in [
        ("aspect_ratio", &body.aspect_ratio),
        ("video_aspect_ratio", &body.video_aspect_ratio),
    ] {
        if let Some(v) = value {
            if !["16:9", "9:16", "1:1"].contains(&v.as_str()) {
                return Err(ApiError::invalid_field(
                    field,
                    "must be one of 16:9, 9:16, 1:1",
                ));
            }
        }
    }
    if let Some(d) = body.duration {
        if !(d.is_finite() && d > 0.0 && d <= 600.0) {
            return Err(ApiError::invalid_field(
                "duration",
                "must be a number of seconds between 0 and 600",
            ));
        }
    }
    let id = match body.agent_id {
        Some(id) if ids::is_valid_custom_agent_id(&id) => id,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "agent_id",
                "must match [A-Za-z0-9_-]{3,64}",
            ))
        }
        None => ids::agent_id(),
    };
    if let Some(voice) = &body.voice_agent {
        check_voice_agent(voice)?;
    }
    let origins = check_origins("allowed_origins", &body.allowed_origins.unwrap_or_default())?;
    let sources = Sources {
        image: media(&state, "image", body.image)?,
        video: media(&state, "video", body.video)?,
        audio: media(&state, "audio", body.audio)?,
    };
    let new = NewAgent {
        id: id.clone(),
        account_id: principal.account_id,
        name,
        system_prompt: prompt,
        voice_agent: body
            .voice_agent
            .map(|v| serde_json::to_string(&v).unwrap_or_default()),
        allowed_origins: origins,
        published: body.published.unwrap_or(true),
        aspect_ratio: body.aspect_ratio.unwrap_or_else(|| "16:9".into()),
        credits: state.settings.agents.generation_credits,
    };
    match state.store.create_agent(new).await? {
        CreateAgent::Created(agent) => {
            generation::spawn(state.get_ref().clone(), agent.id.clone(), sources);
            Ok(HttpResponse::Ok().json(GenerationStarted {
                success: true,
                message: "Agent generation started".into(),
                agent_id: agent.id,
                status: agent.status.to_string(),
            }))
        }
        CreateAgent::InsufficientCredits { needed } => Err(ApiError::insufficient_balance(
            format!("Not enough credits: generation costs {needed}."),
        )),
        CreateAgent::Duplicate => Err(ApiError::conflict(format!(
            "An agent `{id}` already exists."
        ))),
    }
}

/// `GET /v1/agent/status/{agent_id}`: a generation's progress (the agent, as `GET /v1/agent/{code}`).
#[utoipa::path(get, path = "/v1/agent/status/{agent_id}", tag = "bitHuman", operation_id = "agent_status",
    params(("agent_id" = String, Path, description = "The agent's id.")),
    responses(
        (status = 200, body = Data<AgentView>, description = "The agent and its generation's progress."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`."),
    ))]
pub async fn status(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    get(req, state, path).await
}

/// `GET /v1/agent/{code}`: the agent.
#[utoipa::path(get, path = "/v1/agent/{code}", tag = "bitHuman", operation_id = "get_agent",
    params(("code" = String, Path, description = "The agent's id.")),
    responses(
        (status = 200, body = Data<AgentView>, description = "The agent."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`."),
    ))]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            let agent = state
                .store
                .agent_of(&principal.account_id, &path)
                .await?
                .ok_or_else(|| ApiError::agent_not_found(&path))?;
            Ok(HttpResponse::Ok().json(Data::new(agent.view(&state.urls))))
        }
        .await,
    )
}

/// `GET /v1/agents`: the account's agents.
#[utoipa::path(get, path = "/v1/agents", tag = "bitHuman", operation_id = "list_agents",
    responses((status = 200, body = Data<Vec<AgentView>>, description = "The account's agents, newest first.")))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            let agents = state.store.agents_of(&principal.account_id).await?;
            let data: Vec<_> = agents.iter().map(|a| a.view(&state.urls)).collect();
            Ok(HttpResponse::Ok().json(Data::new(data)))
        }
        .await,
    )
}

/// `POST /v1/agent/{code}`: changes the agent; live sessions get the new prompt.
#[utoipa::path(post, path = "/v1/agent/{code}", tag = "bitHuman", operation_id = "update_agent",
    params(("code" = String, Path, description = "The agent's id.")),
    request_body = UpdateBody,
    responses(
        (status = 200, body = AgentUpdated, description = "Updated."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`."),
    ))]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            let body: UpdateBody = body::json(payload, 256 * 1024).await?;
            if let Some(p) = &body.system_prompt {
                max_len("system_prompt", p, MAX_PROMPT)?;
            }
            if let Some(n) = &body.name {
                max_len("name", n, 200)?;
            }
            if let Some(Some(v)) = &body.voice_agent {
                check_voice_agent(v)?;
            }
            let origins = match &body.allowed_origins {
                Some(o) => Some(check_origins("allowed_origins", o)?),
                None => None,
            };
            let changes = AgentChanges {
                system_prompt: body.system_prompt,
                name: body.name,
                allowed_origins: origins,
                published: body.published,
                voice_agent: body
                    .voice_agent
                    .map(|v| v.map(|v| serde_json::to_string(&v).unwrap_or_default())),
            };
            let agent = state
                .store
                .update_agent(&principal.account_id, &path, changes)
                .await?
                .ok_or_else(|| ApiError::agent_not_found(&path))?;
            let live = state.sessions.of_agent(&agent.id).await?;
            let update = PromptUpdated {
                system_prompt: agent.system_prompt.clone(),
                revision: agent.revision,
            };
            for session in live {
                session.addr.do_send(update.clone());
            }
            Ok(HttpResponse::Ok().json(AgentUpdated {
                agent_code: agent.id,
                updated: true,
            }))
        }
        .await,
    )
}

/// `DELETE /v1/agent/{code}`.
#[utoipa::path(delete, path = "/v1/agent/{code}", tag = "bitHuman", operation_id = "delete_agent",
    params(("code" = String, Path, description = "The agent's id.")),
    responses(
        (status = 200, body = AgentDeleted, description = "Deleted."),
        (status = 404, body = ErrorBody, description = "`AGENT_NOT_FOUND`."),
    ))]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    bithuman(
        async {
            let principal = authenticate(&req, &state).await?;
            if !state
                .store
                .delete_agent(&principal.account_id, &path)
                .await?
            {
                return Err(ApiError::agent_not_found(&path));
            }
            Ok(HttpResponse::Ok().json(AgentDeleted {
                success: true,
                agent_code: path.into_inner(),
                deleted: true,
            }))
        }
        .await,
    )
}

/// `GET /v1/assets/{id}`: the stored bytes, for the key of the account that owns them.
#[utoipa::path(get, path = "/v1/assets/{id}", tag = "bitHuman", operation_id = "get_asset",
    params(("id" = String, Path, description = "An asset id from an agent's `*_url`.")),
    responses(
        (status = 200, description = "The bytes, with their content type (image/jpeg, image/png, application/json, …).", content_type = "application/octet-stream", body = crate::api::reply::Binary),
        (status = 404, body = ErrorBody, description = "`asset_not_found`."),
    ))]
pub async fn asset(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = authenticate(&req, &state).await?;
    let asset = state
        .store
        .asset(&path)
        .await?
        .filter(|a| a.account_id == principal.account_id)
        .ok_or_else(|| {
            ApiError::not_found("asset_not_found", format!("No asset `{}`.", path.as_str()))
        })?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header(("Cache-Control", "private, max-age=3600"))
        .body(asset.data))
}

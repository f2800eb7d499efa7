//! How stored rows look to clients (and in webhook bodies): one renderer per object.

use serde_json::{json, Value};

use crate::store::entities::{agent, link, session};
use crate::store::{iso, iso_opt, links::effective_status};

/// What rendering needs beyond the row: where this server and its rooms are reached.
#[derive(Clone, Debug)]
pub struct Urls {
    pub public_base_url: String,
    pub room_url: String,
}

impl Urls {
    pub fn asset(&self, id: &Option<String>) -> Value {
        match id {
            Some(id) => json!(format!("{}/v1/assets/{id}", self.public_base_url)),
            None => Value::Null,
        }
    }

    pub fn link(&self, id: &str) -> String {
        format!("{}/s/{id}", self.public_base_url)
    }

    pub fn control(&self, session_id: &str) -> String {
        let ws = self
            .public_base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        format!("{ws}/v1/sessions/{session_id}/control")
    }
}

/// Stored JSON text back to a value; a stored value that does not parse is shown as null.
pub fn parse_json(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// The framed crop once generation made it; the uploaded image until then.
fn avatar_url(a: &agent::Model, urls: &Urls) -> Value {
    match &a.avatar_asset_id {
        Some(_) => urls.asset(&a.avatar_asset_id),
        None => urls.asset(&a.image_asset_id),
    }
}

pub fn agent(a: &agent::Model, urls: &Urls) -> Value {
    let image = urls.asset(&a.image_asset_id);
    json!({
        "agent_id": a.id,
        "status": a.status,
        "progress": a.progress,
        "progress_msg": a.progress_msg,
        "current_step": a.current_step,
        "error_message": a.error_message,
        "system_prompt": a.system_prompt,
        "image_url": image,
        "video_url": urls.asset(&a.video_asset_id),
        "model_url": urls.asset(&a.model_asset_id),
        "name": a.name,
        "avatar_image_url": avatar_url(a, urls),
        "voice_agent": parse_json(&a.voice_agent),
        "allowed_origins": parse_json(&Some(a.allowed_origins.clone())),
        "published": a.published,
        "aspect_ratio": a.aspect_ratio,
        "revision": format!("v{}", a.revision),
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
    })
}

/// The agent as nested in a link (AgentHuman's shape).
pub fn link_agent(a: &agent::Model, urls: &Urls) -> Value {
    json!({
        "agent_id": a.id,
        "name": a.name,
        "avatar_image_url": avatar_url(a, urls),
        "created_at": iso(a.created_at),
        "voice_agent": parse_json(&a.voice_agent),
    })
}

pub fn link(l: &link::Model, a: Option<&agent::Model>, urls: &Urls) -> Value {
    json!({
        "link_id": l.id,
        "name": l.name,
        "url": urls.link(&l.id),
        "agent": a.map(|a| link_agent(a, urls)).unwrap_or(json!({"agent_id": l.agent_id})),
        "status": effective_status(l),
        "uses": l.uses,
        "use_limit": l.use_limit,
        "created_at": iso(l.created_at),
        "expires_at": iso_opt(l.expires_at),
    })
}

pub fn session(s: &session::Model, urls: &Urls) -> Value {
    json!({
        "session_id": s.id,
        "agent_id": s.agent_id,
        "status": s.state,
        "source": s.source,
        "link_id": s.link_id,
        "room_name": s.room_name,
        "agent_identity": s.agent_identity,
        "livekit_url": urls.room_url,
        "control_url": urls.control(&s.id),
        "aspect_ratio": s.aspect_ratio,
        "client_user_ref": s.client_user_ref,
        "metadata": parse_json(&s.metadata),
        "tag": s.tag,
        "agent_revision": format!("v{}", s.agent_revision),
        "max_duration_seconds": s.max_duration_seconds,
        "idle_timeout_seconds": s.idle_timeout_seconds,
        "created_at": iso(s.created_at),
        "started_at": iso_opt(s.started_at),
        "ended_at": iso_opt(s.ended_at),
        "end_reason": s.end_reason,
        "failure_reason": s.failure_reason,
        "billed_seconds": s.billed_seconds,
    })
}

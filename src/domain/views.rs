//! How sessions, agents and links look to clients and in webhook bodies: one shape per object,
//! built from the stored rows by `store` and serialized as is by the HTTP boundary and the outbox.

use serde::Serialize;
use serde_json::Value;

/// Where this server and its rooms are reached: the base of every URL a view carries.
#[derive(Clone, Debug)]
pub struct Urls {
    pub public_base_url: String,
    /// What clients connect to for media: LiveKit's URL, or this server's for the local room.
    pub room_url: String,
}

impl Urls {
    pub fn asset(&self, id: Option<&str>) -> Option<String> {
        id.map(|id| format!("{}/v1/assets/{id}", self.public_base_url))
    }

    /// A link's room page.
    pub fn link(&self, id: &str) -> String {
        format!("{}/s/{id}", self.public_base_url)
    }

    fn ws_base(&self) -> String {
        self.public_base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    }

    pub fn control(&self, session_id: &str) -> String {
        format!("{}/v1/sessions/{session_id}/control", self.ws_base())
    }

    /// The WHEP endpoint of a session's local room.
    pub fn rtc(&self, session_id: &str) -> String {
        format!("{}/v1/sessions/{session_id}/rtc", self.public_base_url)
    }
}

/// A session as `GET /v1/sessions/{id}` answers it and webhooks carry it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub agent_id: String,
    pub status: String,
    pub source: String,
    pub link_id: Option<String>,
    pub room_name: String,
    pub agent_identity: String,
    /// Where clients connect for media: LiveKit's URL, or this server's for the local room.
    pub livekit_url: String,
    pub control_url: String,
    pub aspect_ratio: String,
    pub client_user_ref: Option<String>,
    /// What the start request's `metadata` (or `metaData`) held.
    pub metadata: Value,
    pub tag: Option<String>,
    pub agent_revision: String,
    pub max_duration_seconds: i64,
    pub idle_timeout_seconds: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub billed_seconds: i64,
}

/// An agent as bitHuman's status and get routes answer it (AgentHuman's fields included).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    pub status: String,
    pub progress: f64,
    pub progress_msg: String,
    pub current_step: Option<String>,
    pub error_message: Option<String>,
    pub system_prompt: String,
    pub image_url: Option<String>,
    pub video_url: Option<String>,
    pub model_url: Option<String>,
    pub name: String,
    pub avatar_image_url: Option<String>,
    #[schema(value_type = Option<crate::domain::agent::VoiceAgent>)]
    pub voice_agent: Value,
    #[schema(value_type = Vec<String>)]
    pub allowed_origins: Value,
    pub published: bool,
    pub aspect_ratio: String,
    pub revision: String,
    pub created_at: String,
    pub updated_at: String,
}

/// The agent as nested in a link (AgentHuman's shape).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkAgentView {
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub avatar_image_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain::agent::VoiceAgent>)]
    pub voice_agent: Option<Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    pub link_id: String,
    pub name: String,
    pub url: String,
    pub agent: LinkAgentView,
    pub status: String,
    pub uses: i64,
    pub use_limit: Option<i64>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

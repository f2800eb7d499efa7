//! What an agent is made of, as stored and as the session uses it.

use serde::{Deserialize, Serialize};

named_states! {
    /// Where an agent's generation is: `processing → generating → completed → ready`, or `failed`.
    pub enum AgentStatus {
        Processing = "processing",
        Generating = "generating",
        Completed = "completed",
        Ready = "ready",
        Failed = "failed",
    }
}

/// The agent's conversational voice: `{provider, agent_id, auth_method}`. It is the request body's
/// shape and the stored column's (`agents.voice_agent`), so a stored value reads back as it was given.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoiceAgent {
    /// `elevenlabs` (a conversational agent) or `local` (the built-in voice).
    pub provider: String,
    /// The provider's agent id.
    pub agent_id: String,
    /// `public` (default) or `signed`.
    #[serde(default = "AuthMethod::default_public")]
    pub auth_method: AuthMethod,
}

impl VoiceAgent {
    /// ElevenLabs' conversational agents (any spelling); anything else is the local TTS.
    pub fn is_elevenlabs(&self) -> bool {
        self.provider.eq_ignore_ascii_case("elevenlabs")
    }
}

/// How a conversation with the provider's agent is opened: a public agent id, or a signed URL
/// fetched with the operator's API key.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Public,
    Signed,
}

impl AuthMethod {
    fn default_public() -> Self {
        AuthMethod::Public
    }
}

/// The model asset as stored and served (`model_url`): the crop it belongs to, and its geometry
/// (`M`, the renderer's avatar model, flattened beside it).
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelAsset<S, M> {
    pub avatar_asset_id: S,
    #[serde(flatten)]
    pub model: M,
}

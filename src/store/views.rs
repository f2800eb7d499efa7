//! Stored rows as clients see them: each row type renders its one view (`domain::views`).

use serde_json::Value;

use super::entities::{agent, link, session};
use super::links::effective_status;
use crate::domain::events::SessionStatus;
use crate::domain::time::{iso, iso_opt};
use crate::domain::views::{AgentView, LinkAgentView, LinkView, SessionView, Urls};

/// Stored JSON text back to a value; a stored value that does not parse is shown as null.
pub fn parse_json(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

impl session::Model {
    pub fn view(&self, urls: &Urls) -> SessionView {
        SessionView {
            session_id: self.id.clone(),
            agent_id: self.agent_id.clone(),
            status: self.state.to_string(),
            source: self.source.clone(),
            link_id: self.link_id.clone(),
            room_name: self.room_name.clone(),
            agent_identity: self.agent_identity.clone(),
            livekit_url: self
                .livekit_url
                .clone()
                .unwrap_or_else(|| urls.room_url.clone()),
            control_url: urls.control(&self.id),
            aspect_ratio: self.aspect_ratio.clone(),
            client_user_ref: self.client_user_ref.clone(),
            metadata: parse_json(self.metadata.as_deref()),
            tag: self.tag.clone(),
            agent_revision: format!("v{}", self.agent_revision),
            max_duration_seconds: self.max_duration_seconds,
            idle_timeout_seconds: self.idle_timeout_seconds,
            created_at: iso(self.created_at),
            started_at: iso_opt(self.started_at),
            ended_at: iso_opt(self.ended_at),
            end_reason: self.end_reason.clone(),
            failure_reason: self.failure_reason.clone(),
            billed_seconds: self.billed_seconds,
        }
    }
}

impl session::Model {
    /// The status of a session as its row records it (its actor gone, or on another node).
    pub fn status(&self) -> SessionStatus {
        SessionStatus::ended(
            &self.id,
            &self.agent_id,
            &self.room_name,
            self.state,
            self.billed_seconds,
            self.end_reason.clone(),
        )
    }
}

impl agent::Model {
    /// The framed crop once generation made it; the uploaded image until then.
    pub fn avatar_url(&self, urls: &Urls) -> Option<String> {
        urls.asset(
            self.avatar_asset_id
                .as_deref()
                .or(self.image_asset_id.as_deref()),
        )
    }

    pub fn view(&self, urls: &Urls) -> AgentView {
        AgentView {
            agent_id: self.id.clone(),
            status: self.status.to_string(),
            progress: self.progress,
            progress_msg: self.progress_msg.clone(),
            current_step: self.current_step.clone(),
            error_message: self.error_message.clone(),
            system_prompt: self.system_prompt.clone(),
            image_url: urls.asset(self.image_asset_id.as_deref()),
            video_url: urls.asset(self.video_asset_id.as_deref()),
            model_url: urls.asset(self.model_asset_id.as_deref()),
            name: self.name.clone(),
            avatar_image_url: self.avatar_url(urls),
            voice_agent: parse_json(self.voice_agent.as_deref()),
            allowed_origins: parse_json(Some(&self.allowed_origins)),
            published: self.published,
            aspect_ratio: self.aspect_ratio.clone(),
            revision: format!("v{}", self.revision),
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
        }
    }

    /// The agent as nested in a link (AgentHuman's shape).
    pub fn link_view(&self, urls: &Urls) -> LinkAgentView {
        LinkAgentView {
            agent_id: self.id.clone(),
            name: Some(self.name.clone()),
            avatar_image_url: Some(self.avatar_url(urls)),
            created_at: Some(iso(self.created_at)),
            voice_agent: Some(parse_json(self.voice_agent.as_deref())),
        }
    }
}

impl link::Model {
    /// `agent`: the link's agent, when it still exists (else only its id is shown).
    pub fn view(&self, agent: Option<&agent::Model>, urls: &Urls) -> LinkView {
        LinkView {
            link_id: self.id.clone(),
            name: self.name.clone(),
            url: urls.link(&self.id),
            agent: agent.map(|a| a.link_view(urls)).unwrap_or(LinkAgentView {
                agent_id: self.agent_id.clone(),
                name: None,
                avatar_image_url: None,
                created_at: None,
                voice_agent: None,
            }),
            status: effective_status(self).to_string(),
            uses: self.uses,
            use_limit: self.use_limit,
            created_at: iso(self.created_at),
            expires_at: iso_opt(self.expires_at),
        }
    }
}

//! What the consumer hands the client and gets back: the settings, the conversation to initiate,
//! the events, and the errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Secret;
use crate::voice::tts::Phoneme;

/// Where ElevenLabs is and how to behave when it is not there.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    /// `https://api.elevenlabs.io`: the signed-URL endpoint lives under it. Tests point it at the fake.
    pub http_base: String,
    /// `wss://api.elevenlabs.io`: public agents are reached under it.
    pub ws_base: String,
    /// The operator's `xi-api-key`; required for signed agents, sent nowhere but the signed-URL
    /// endpoint.
    pub api_key: Option<Secret>,
    /// The first wait after a failure.
    pub initial_backoff: Duration,
    /// The longest wait between tries; a connection that stayed up this long resets the backoff.
    pub max_backoff: Duration,
    /// Bounds the signed-URL request, the WebSocket handshake, and the wait for
    /// `conversation_initiation_metadata`, each.
    pub connect_timeout: Duration,
    /// Capacity of the events channel.
    pub event_buffer: usize,
    /// Agent audio the client holds for a consumer that is behind, before dropping the oldest.
    pub max_backlog_audio: Duration,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            http_base: "https://api.elevenlabs.io".into(),
            ws_base: "wss://api.elevenlabs.io".into(),
            api_key: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            event_buffer: 64,
            max_backlog_audio: Duration::from_secs(60),
        }
    }
}

/// How the agent is reached: its own access setting at ElevenLabs (public, or a signed URL per
/// connection fetched with the API key); the agent's stored voice config says which.
pub use crate::domain::agent::AuthMethod;

/// A dynamic variable's value: ElevenLabs accepts strings, numbers and booleans only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DynamicValue {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl From<String> for DynamicValue {
    fn from(value: String) -> Self {
        DynamicValue::String(value)
    }
}

impl From<&str> for DynamicValue {
    fn from(value: &str) -> Self {
        DynamicValue::String(value.to_string())
    }
}

impl From<bool> for DynamicValue {
    fn from(value: bool) -> Self {
        DynamicValue::Bool(value)
    }
}

impl From<i64> for DynamicValue {
    fn from(value: i64) -> Self {
        DynamicValue::Number(value.into())
    }
}

impl TryFrom<Value> for DynamicValue {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(s) => Ok(DynamicValue::String(s)),
            Value::Number(n) => Ok(DynamicValue::Number(n)),
            Value::Bool(b) => Ok(DynamicValue::Bool(b)),
            other => Err(format!(
                "must be a string, number or boolean, not {}",
                json_kind(&other)
            )),
        }
    }
}

/// What to say when connecting: the agent, how to reach it, and what to initiate it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub agent_id: String,
    pub auth: AuthMethod,
    /// Overrides the agent's system prompt (`conversation_config_override.agent.prompt.prompt`);
    /// the agent must allow that override at ElevenLabs. `None` sends no override.
    pub prompt: Option<String>,
    /// Sent as `dynamic_variables`, for `{{name}}` placeholders in the agent's configuration.
    pub dynamic_variables: BTreeMap<String, DynamicValue>,
}

impl Conversation {
    pub fn new(agent_id: impl Into<String>, auth: AuthMethod) -> Self {
        Self {
            agent_id: agent_id.into(),
            auth,
            prompt: None,
            dynamic_variables: BTreeMap::new(),
        }
    }

    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    pub fn with_variable(
        mut self,
        name: impl Into<String>,
        value: impl Into<DynamicValue>,
    ) -> Self {
        self.dynamic_variables.insert(name.into(), value.into());
        self
    }

    /// Adds every entry of a JSON object (a session's env, say); a value that is not a string,
    /// number or boolean is refused with its name.
    pub fn with_variables_json(
        mut self,
        variables: &serde_json::Map<String, Value>,
    ) -> Result<Self, ElevenLabsError> {
        for (name, value) in variables {
            let value = DynamicValue::try_from(value.clone()).map_err(|why| {
                ElevenLabsError::Config(format!("dynamic variable {name:?} {why}"))
            })?;
            self.dynamic_variables.insert(name.clone(), value);
        }
        Ok(self)
    }

    /// The first message of every connection.
    pub fn initiation_message(&self) -> Value {
        let mut message = json!({
            "type": "conversation_initiation_client_data",
            "dynamic_variables": self.dynamic_variables,
        });
        if let Some(prompt) = &self.prompt {
            message["conversation_config_override"] =
                json!({ "agent": { "prompt": { "prompt": prompt } } });
        }
        message
    }
}

/// What the conversation reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A conversation is up (`conversation_initiation_metadata` arrived). After a reconnection
    /// this is a new conversation with a new id.
    Connected { conversation_id: String },
    /// No conversation now; the next try starts in `retry_in`. `attempt` counts the failures since
    /// the last connection that stayed up (1 for the first).
    Disconnected {
        reason: String,
        retry_in: Duration,
        attempt: u32,
    },
    /// Agent speech, 16 kHz mono, never of an interrupted turn (see the module doc); with the
    /// phonemes said in it (at sample offsets into `pcm`) where ElevenLabs sent its alignment and
    /// its text could be read (see `alignment`).
    Audio {
        event_id: u64,
        pcm: Vec<i16>,
        said: Option<Arc<[Phoneme]>>,
    },
    /// The user interrupted the agent: discard unplayed audio with an event id ≤ `event_id`.
    Interrupted { event_id: u64 },
    /// What the agent says, as text (arrives with its first audio).
    AgentResponse(String),
    /// The agent's last response as cut by an interruption.
    AgentResponseCorrection { original: String, corrected: String },
    /// What the user said, as ElevenLabs understood it.
    UserTranscript(String),
    /// The consumer fell behind the backlog's bounds and these were dropped; delivered right
    /// before the first event after the gap.
    Dropped {
        audio_events: u64,
        audio_samples: u64,
        other_events: u64,
    },
    /// Something ElevenLabs sent could not be used (bad audio, malformed event, unsupported
    /// format), or a held turn had to be dropped. The conversation goes on.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElevenLabsError {
    #[error("invalid ElevenLabs settings: {0}")]
    Config(String),
    #[error("the ElevenLabs conversation has ended")]
    Closed,
    #[error("the ElevenLabs conversation is not keeping up; try again later")]
    Busy,
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiation_carries_prompt_and_variables_and_omits_an_absent_prompt() {
        let env = serde_json::json!({"name": "Ada", "age": 36, "vip": true});
        let conversation = Conversation::new("agent_1", AuthMethod::Public)
            .with_prompt("Be brief.")
            .with_variables_json(env.as_object().unwrap())
            .unwrap();
        assert_eq!(
            conversation.initiation_message(),
            json!({
                "type": "conversation_initiation_client_data",
                "conversation_config_override": {"agent": {"prompt": {"prompt": "Be brief."}}},
                "dynamic_variables": {"name": "Ada", "age": 36, "vip": true},
            })
        );
        let bare = Conversation::new("agent_1", AuthMethod::Public).initiation_message();
        assert!(bare.get("conversation_config_override").is_none(), "{bare}");
        assert_eq!(bare["dynamic_variables"], json!({}));

        let nested = serde_json::json!({"ok": "x", "bad": {"a": 1}});
        let refused = Conversation::new("a", AuthMethod::Public)
            .with_variables_json(nested.as_object().unwrap())
            .unwrap_err();
        assert!(refused.to_string().contains("\"bad\""), "{refused}");
    }
}

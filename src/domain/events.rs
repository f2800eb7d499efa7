//! What a session tells the world: lifecycle events (webhooks) and the events and status its
//! channel clients receive. These are values; `ws::protocol` alone turns them into wire frames, and
//! the webhook outbox alone names lifecycle events.

use serde::{Deserialize, Serialize};

use super::session::{ChildKind, SessionState};

/// A step of a session's life that webhooks report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    Starting,
    Started,
    Stopping,
    Stopped,
    Failed,
}

/// Whose names a session's webhook events carry: this server's own (`session.started`), or
/// VideoSDK's for its deployment sessions (`ai-deployment-session-started`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventNaming {
    Own,
    VideoSdk,
}

impl EventNaming {
    /// Sessions started through VideoSDK's dialect (`source = "deployment"`) keep its names.
    pub fn of_source(source: &str) -> Self {
        if source == "deployment" {
            EventNaming::VideoSdk
        } else {
            EventNaming::Own
        }
    }
}

impl LifecycleEvent {
    fn suffix(self) -> &'static str {
        match self {
            LifecycleEvent::Starting => "starting",
            LifecycleEvent::Started => "started",
            LifecycleEvent::Stopping => "stopping",
            LifecycleEvent::Stopped => "stopped",
            LifecycleEvent::Failed => "failed",
        }
    }

    pub fn name(self, naming: EventNaming) -> String {
        match naming {
            EventNaming::Own => format!("session.{}", self.suffix()),
            EventNaming::VideoSdk => format!("ai-deployment-session-{}", self.suffix()),
        }
    }
}

named_states! {
    /// A webhook delivery in the outbox: `pending` until it is `delivered`, or `failed` after its
    /// last attempt.
    pub enum WebhookStatus {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
    }
}

/// A session's own webhook endpoint, as given at start and stored on its row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionWebhook {
    pub url: String,
    /// Only these event names; all when absent.
    pub events: Option<Vec<String>>,
}

/// What the renderer draws for a session, once it is attached to a device.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Where the mouth moves in the frame: `[x, y, w, h]`.
    pub mouth_region: [f32; 4],
    pub fps: u32,
    pub device: String,
}

/// The voice provider's connection, as the voice bridge last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceStatus {
    pub provider: &'static str,
    pub connected: bool,
    /// Whether the provider hears the user (a conversational agent does; the local TTS does not).
    pub listening: bool,
    pub detail: String,
}

/// The session's presence in its room, when a transport joins one (the LiveKit participant).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoomStatus {
    pub joined: bool,
    pub published: bool,
    pub participants: usize,
}

/// Everything a channel client learns about a session at once: sent on connect and on every
/// change. The one definition of the status shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStatus {
    pub session_id: String,
    pub agent_id: String,
    pub room_name: String,
    pub state: SessionState,
    pub speaking: bool,
    pub users: usize,
    pub clients: usize,
    pub viewers: usize,
    pub billed_seconds: i64,
    /// Restarts so far, by `ChildKind::index`.
    pub restarts: [u32; 3],
    pub video: Option<VideoInfo>,
    pub voice: Option<VoiceStatus>,
    pub room: Option<RoomStatus>,
    pub end_reason: Option<String>,
}

impl SessionStatus {
    /// The status of a session whose actor is gone: what its row says.
    pub fn ended(
        session_id: &str,
        agent_id: &str,
        room_name: &str,
        state: SessionState,
        billed_seconds: i64,
        end_reason: Option<String>,
    ) -> Self {
        Self {
            session_id: session_id.to_string(),
            agent_id: agent_id.to_string(),
            room_name: room_name.to_string(),
            state,
            speaking: false,
            users: 0,
            clients: 0,
            viewers: 0,
            billed_seconds,
            restarts: [0; 3],
            video: None,
            voice: None,
            room: None,
            end_reason,
        }
    }

    pub fn restarts_of(&self, kind: ChildKind) -> u32 {
        self.restarts[kind.index()]
    }
}

/// Who is speaking: a `speak` the session was told, or the conversational agent's own turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechSource {
    Speak { utterance: u64 },
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Agent,
    User,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Agent => "agent",
            Speaker::User => "user",
        }
    }
}

/// What a session emits to its channel clients.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    Status(Box<SessionStatus>),
    SpeechStarted {
        session_id: String,
        source: SpeechSource,
        /// The words of a `speak` (captions); the agent's own words come as transcripts.
        text: Option<String>,
    },
    SpeechEnded {
        session_id: String,
        source: SpeechSource,
        interrupted: bool,
    },
    /// A `speak` could not be said (its synthesis failed).
    SpeechFailed {
        session_id: String,
        utterance: u64,
        message: String,
    },
    ContextAdded {
        session_id: String,
        text: String,
        entries: usize,
    },
    Transcript {
        session_id: String,
        speaker: Speaker,
        text: String,
    },
    MinutesLow {
        session_id: String,
        seconds_remaining: i64,
    },
    ChildRestarted {
        session_id: String,
        child: ChildKind,
        restarts: u32,
        reason: String,
    },
}

impl SessionEvent {
    /// The name clients match on (the frame's `type`), also the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionEvent::Status(_) => "status",
            SessionEvent::SpeechStarted { .. } => "speech_started",
            SessionEvent::SpeechEnded { .. } => "speech_ended",
            SessionEvent::SpeechFailed { .. } => "error",
            SessionEvent::ContextAdded { .. } => "context_added",
            SessionEvent::Transcript { .. } => "transcript",
            SessionEvent::MinutesLow { .. } => "minutes_low",
            SessionEvent::ChildRestarted { child, .. } => match child {
                ChildKind::Room => "room_restarted",
                ChildKind::Renderer => "renderer_restarted",
                ChildKind::Voice => "voice_restarted",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_per_dialect() {
        assert_eq!(
            LifecycleEvent::Started.name(EventNaming::Own),
            "session.started"
        );
        assert_eq!(
            LifecycleEvent::Stopped.name(EventNaming::of_source("deployment")),
            "ai-deployment-session-stopped"
        );
        assert_eq!(EventNaming::of_source("link"), EventNaming::Own);
    }
}

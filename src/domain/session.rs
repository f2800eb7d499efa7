//! A session's states, why it ends, and the children it supervises.

use std::fmt;

named_states! {
    /// `queued → starting → live → stopping → stopped`, or `failed`. The transitions are the session
    /// actor's state machine (`actors::session::state`); this is the value every layer shows.
    pub enum SessionState {
        Queued = "queued",
        Starting = "starting",
        Live = "live",
        Stopping = "stopping",
        Stopped = "stopped",
        Failed = "failed",
    }
}

impl SessionState {
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Stopped | SessionState::Failed)
    }
}

/// Why a session ended; stored as `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    StoppedByApi,
    StoppedByClient,
    MaxDuration,
    IdleTimeout,
    MinutesExhausted,
    RoomClosed,
    RoomCreationFailed,
    RoomFailed,
    RendererFailed,
    VoiceFailed,
    Shutdown,
    NodeLost,
}

impl EndReason {
    pub const ALL: [EndReason; 12] = [
        EndReason::StoppedByApi,
        EndReason::StoppedByClient,
        EndReason::MaxDuration,
        EndReason::IdleTimeout,
        EndReason::MinutesExhausted,
        EndReason::RoomClosed,
        EndReason::RoomCreationFailed,
        EndReason::RoomFailed,
        EndReason::RendererFailed,
        EndReason::VoiceFailed,
        EndReason::Shutdown,
        EndReason::NodeLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::StoppedByApi => "stopped_by_api",
            EndReason::StoppedByClient => "stopped_by_client",
            EndReason::MaxDuration => "max_duration",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MinutesExhausted => "minutes_exhausted",
            EndReason::RoomClosed => "room_closed",
            EndReason::RoomCreationFailed => "room_creation_failed",
            EndReason::RoomFailed => "room_failed",
            EndReason::RendererFailed => "renderer_failed",
            EndReason::VoiceFailed => "voice_failed",
            EndReason::Shutdown => "shutdown",
            EndReason::NodeLost => "node_lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The children a session supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Room,
    Renderer,
    Voice,
}

impl ChildKind {
    pub const ALL: [ChildKind; 3] = [ChildKind::Room, ChildKind::Renderer, ChildKind::Voice];

    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Room => "room",
            ChildKind::Renderer => "renderer",
            ChildKind::Voice => "voice",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// How a session ends when this child fails past its restart budget.
    pub fn failure(self) -> EndReason {
        match self {
            ChildKind::Room => EndReason::RoomFailed,
            ChildKind::Renderer => EndReason::RendererFailed,
            ChildKind::Voice => EndReason::VoiceFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &s in SessionState::ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(s));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(r));
        }
        for k in ChildKind::ALL {
            assert_eq!(ChildKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SessionState::parse("dancing"), None);
    }
}

//! Messages of the Session actor: from handlers and the registry (inbound), and from its children.

use actix::prelude::*;
use tokio::sync::mpsc;

pub use crate::domain::events::SessionEvent;
pub use crate::domain::session::{ChildKind, EndReason};
use crate::livekit::RoomAccess;
use crate::store::entities::session as session_row;

/// The session is over and everything it held is released: forget it. (The session's last word
/// to the registry; defined here so the session needs nothing of the registry but a recipient.)
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub session_id: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("room could not be created: {0}")]
    RoomCreationFailed(String),
    #[error("session failed: {0}")]
    Failed(String),
    #[error("session ended before it went live")]
    Ended,
    #[error("session did not answer in time")]
    Timeout,
    #[error("session is not live (state: {0})")]
    NotLive(&'static str),
}

/// Resolves once the session is live (with the room's access) or has failed.
#[derive(Message)]
#[rtype(result = "Result<WentLive, SessionError>")]
pub struct AwaitLive;

/// A session went live, and its row says so: the room's access, and when (its `started_at`), so
/// the start's answer needs no second read of the row.
#[derive(Debug, Clone)]
pub struct WentLive {
    pub access: RoomAccess,
    pub at_ms: i64,
}

/// Ends the session; resolves when everything it held is released, with its ended row as written
/// (`None` if the write was not seen: the row says).
#[derive(Message)]
#[rtype(result = "Option<session_row::Model>")]
pub struct Stop(pub EndReason);

/// A (non-agent) participant joined the LiveKit room: the idle timer stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ParticipantJoined {
    pub identity: String,
}

/// A participant left; with no user left, the idle timer starts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ParticipantLeft {
    pub identity: String,
}

/// A client opened one of the session's local channels (local room mode presence).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientAttached;

/// A client closed one of the session's local channels.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientDetached;

/// The agent's prompt changed: live sessions take the new revision.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct PromptUpdated {
    pub system_prompt: String,
    pub revision: i64,
}

/// What a session's actor knows now (for status and tests).
#[derive(Message)]
#[rtype(result = "SessionSnapshot")]
pub struct Snapshot;

#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub state: &'static str,
    pub users: usize,
    pub clients: usize,
    pub billed_seconds: i64,
    pub system_prompt: String,
    pub room_restarts: u32,
    pub renderer_restarts: u32,
}

/// From the Renderer child.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum RendererReady {
    /// Attached to its device's worker; frames of this size follow.
    Attached {
        device: String,
        width: u32,
        height: u32,
        /// Where the mouth moves in the frame: `[x, y, w, h]`.
        mouth: [f32; 4],
    },
    /// The first frame is out.
    FirstFrame { after: std::time::Duration },
}

/// Makes a child fail as if it crashed: for operators checking supervision, and for tests.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct InjectFault(pub ChildKind);

/// Makes the render worker of this session's device panic in its next tick, outside any one
/// frame's render: every session on that device goes through its renderer restart.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct InjectWorkerPanic;

/// The session's media, for a preview client: its frames, its audio and what they are.
#[derive(Message)]
#[rtype(result = "Result<MediaStreams, SessionError>")]
pub struct MediaTap;

pub struct MediaStreams {
    pub frames: tokio::sync::broadcast::Receiver<crate::media::VideoFrame>,
    pub audio: tokio::sync::broadcast::Receiver<crate::voice::Voiced>,
    /// What the frames are, once the renderer is attached.
    pub video: Option<crate::domain::events::VideoInfo>,
    /// Counts the preview clients that want JPEG frames: the renderer encodes JPEG only for them.
    pub wants: std::sync::Arc<crate::media::FrameWants>,
}

/// From the Room child: the avatar's presence in its room changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomUpdate(pub crate::domain::events::RoomStatus);

/// From the Room child: the user's voice (16 kHz mono), for the voice bridge.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UserAudio(pub crate::voice::PcmChunk);

/// From the Room child: the room exists and tokens are minted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomReady(pub RoomAccess);

/// From a child: it died and will do nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub kind: ChildKind,
    pub reason: String,
}

/// From the VoiceBridge child.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum VoiceEvent {
    SpeechStarted {
        utterance: u64,
    },
    SpeechEnded {
        utterance: u64,
        interrupted: bool,
    },
    SpeechFailed {
        utterance: u64,
        error: String,
    },
    /// The conversational agent's own turn started or ended.
    AgentSpeech {
        speaking: bool,
        interrupted: bool,
    },
    /// What the agent said or heard, as text.
    Transcript {
        speaker: crate::domain::events::Speaker,
        text: String,
    },
    /// What was playing was cut (an interrupt, the agent interrupted): queues downstream of the
    /// voice (a transport's audio buffer) should drop what they hold.
    Cut,
    /// The provider's connection: up, or down and retrying; and whether it hears the user.
    Provider {
        provider: &'static str,
        connected: bool,
        listening: bool,
        detail: String,
    },
    /// How a room agent's segment is playing: for the agent (its RPCs), through the Room child.
    AgentPlayback(PlaybackNotice),
}

/// The room's agent speaking through the avatar (LiveKit Agents' `lk.audio_stream`), from the
/// Room child to the session, which hands it to its VoiceBridge in the order it came.
#[derive(Message, Debug, PartialEq)]
#[rtype(result = "()")]
pub enum AgentAudio {
    /// More of a segment (one byte stream), 16 kHz mono; the first (maybe empty) opens it.
    Segment { segment: u64, pcm: Vec<i16> },
    /// The segment's stream closed.
    End { segment: u64 },
    /// The agent called `lk.clear_buffer`: drop every segment not yet played.
    Clear,
}

/// What the agent is told of its segments (`lk.playback_started`, `lk.playback_finished`), from
/// the VoiceBridge to the Room child through the session.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub enum PlaybackNotice {
    Started {
        segment: u64,
    },
    /// Exactly once per segment.
    Finished {
        segment: u64,
        position_seconds: f64,
        interrupted: bool,
    },
}

/// Make the avatar say `text` (queued after what it is saying, unless `interrupt`).
/// Answers the utterance id; refused unless the session is live.
#[derive(Message)]
#[rtype(result = "Result<u64, SessionError>")]
pub struct Speak {
    pub text: String,
    pub interrupt: bool,
}

/// Give the avatar knowledge; kept in the session's context and reported as `context_added`.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct AddContext {
    pub text: String,
}

/// Cut what the avatar is saying.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct InterruptSpeech;

/// What a session sends a channel client: an event (shared by every subscriber), or the end.
#[derive(Debug, Clone)]
pub enum Outbound {
    Event(std::sync::Arc<SessionEvent>),
    /// The session is over: close the channel normally.
    Close,
}

/// A channel client's subscription to a session's events. The session sends its current status
/// at once; a client that cannot keep up (its bounded channel full) is dropped. `owns` marks a
/// per-session channel: it counts as a present client, and is closed when the session ends.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Subscribe {
    pub subscriber: u64,
    pub sender: mpsc::Sender<Outbound>,
    pub owns: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub subscriber: u64,
}

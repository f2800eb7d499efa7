//! What the avatar's owner hears of its room: [`RoomEvent`] (and [`RpcInvocation`]), as the
//! dispatcher thread makes them.

use std::collections::HashMap;

use crate::proto;

/// What happens in the room, as the avatar's owner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A remote participant is in the room (also sent once for each one already there at join).
    /// `agent`: it joined as LiveKit's participant kind `agent` (a LiveKit Agents worker).
    ParticipantJoined {
        identity: String,
        agent: bool,
    },
    ParticipantLeft {
        identity: String,
    },
    /// Received audio of one remote microphone, mono at `AvatarOptions::audio_sample_rate`, in
    /// 20 ms pieces (the library resamples).
    UserAudio {
        identity: String,
        pcm: Vec<i16>,
    },
    /// The connection dropped and the library is retrying (first resuming, then rejoining).
    Reconnecting,
    Reconnected,
    /// The room is gone for good: `reason` is LiveKit's `DisconnectReason` in snake_case, e.g.
    /// `room_deleted`, `participant_removed`, `duplicate_identity`, `server_shutdown`, or
    /// `unknown_reason` (what the library reports when the server went away and every retry
    /// failed). Close the room after it.
    Disconnected {
        reason: String,
    },
    /// A remote participant opened a byte stream on one of
    /// [`AvatarOptions::byte_stream_topics`](crate::AvatarOptions::byte_stream_topics); its chunks follow in order, then its close.
    ByteStreamOpened {
        stream_id: String,
        identity: String,
        topic: String,
        name: String,
        mime_type: String,
        attributes: HashMap<String, String>,
    },
    ByteStreamChunk {
        stream_id: String,
        bytes: Vec<u8>,
    },
    /// The sender closed the stream (`error: None`), or it broke off.
    ByteStreamClosed {
        stream_id: String,
        error: Option<String>,
    },
    /// A remote participant called one of the methods registered with
    /// [`AvatarRoom::register_rpc_method`](crate::AvatarRoom::register_rpc_method): answer it with [`AvatarRoom::respond_rpc`](crate::AvatarRoom::respond_rpc) within
    /// `response_timeout_ms`.
    RpcInvocation(RpcInvocation),
}

/// One call of a registered RPC method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcInvocation {
    pub invocation_id: u64,
    pub method: String,
    pub caller_identity: String,
    pub payload: String,
    pub response_timeout_ms: u32,
}

/// LiveKit's `DisconnectReason`, as it appears in [`RoomEvent::Disconnected`].
pub(crate) fn disconnect_reason_name(reason: i32) -> &'static str {
    use proto::DisconnectReason as D;
    match D::try_from(reason).unwrap_or(D::UnknownReason) {
        D::UnknownReason => "unknown_reason",
        D::ClientInitiated => "client_initiated",
        D::DuplicateIdentity => "duplicate_identity",
        D::ServerShutdown => "server_shutdown",
        D::ParticipantRemoved => "participant_removed",
        D::RoomDeleted => "room_deleted",
        D::StateMismatch => "state_mismatch",
        D::JoinFailure => "join_failure",
        D::Migration => "migration",
        D::SignalClose => "signal_close",
        D::RoomClosed => "room_closed",
        D::UserUnavailable => "user_unavailable",
        D::UserRejected => "user_rejected",
        D::SipTrunkFailure => "sip_trunk_failure",
        D::ConnectionTimeout => "connection_timeout",
        D::MediaFailure => "media_failure",
        D::AgentError => "agent_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_reasons_have_stable_names() {
        assert_eq!(
            disconnect_reason_name(proto::DisconnectReason::RoomDeleted as i32),
            "room_deleted"
        );
        assert_eq!(disconnect_reason_name(9999), "unknown_reason");
    }
}

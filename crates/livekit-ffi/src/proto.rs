//! (One file past 600 lines: the protocol's messages, declarations only, kept together as the
//! `.proto` it mirrors is.)
//!
//! The messages of LiveKit's FFI protocol (package `livekit.proto`, proto2) that this crate sends
//! or reads, written by hand with prost's derives: no protoc, no build script, no copied `.proto`.
//!
//! Only the fields and oneof variants used here are declared; prost skips the rest of what the
//! library sends as unknown fields, so an event this crate does not know decodes to `None`. Every
//! declared field must have the number, type and label of the library's own schema:
//! `tests/schema.rs` checks this file against the `FileDescriptorSet` extracted from the wheel
//! (`.setup/livekit/ffi.fds`). Names follow prost-build's conventions (`RoomEOS` → `RoomEos`,
//! nested messages in a snake_case module) so that test can pair them.
//!
//! Field numbers differ between a request and its response in places (`ready_for_room_event` is
//! 83 in `FfiRequest` but 82 in `FfiResponse`; `audio_stream_from_participant` 32/31): always take
//! them from the schema, never by analogy.

// Names are prost-build's for this schema (`LOG_ERROR` of `LogLevel` is `LogError`), so that they
// can be paired with the library's by name.
#![allow(clippy::enum_variant_names)]

// ---------------------------------------------------------------------------------------------
// ffi.proto: the envelopes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct FfiRequest {
    #[prost(
        oneof = "ffi_request::Message",
        tags = "3, 4, 5, 6, 8, 15, 16, 21, 22, 25, 26, 27, 28, 38, 39, 41, 54, 83"
    )]
    pub message: Option<ffi_request::Message>,
}

pub mod ffi_request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "3")]
        Connect(super::ConnectRequest),
        #[prost(message, tag = "4")]
        Disconnect(super::DisconnectRequest),
        #[prost(message, tag = "5")]
        PublishTrack(super::PublishTrackRequest),
        #[prost(message, tag = "6")]
        UnpublishTrack(super::UnpublishTrackRequest),
        #[prost(message, tag = "8")]
        SetSubscribed(super::SetSubscribedRequest),
        #[prost(message, tag = "15")]
        CreateVideoTrack(super::CreateVideoTrackRequest),
        #[prost(message, tag = "16")]
        CreateAudioTrack(super::CreateAudioTrackRequest),
        #[prost(message, tag = "21")]
        NewVideoSource(super::NewVideoSourceRequest),
        #[prost(message, tag = "22")]
        CaptureVideoFrame(super::CaptureVideoFrameRequest),
        #[prost(message, tag = "25")]
        NewAudioStream(super::NewAudioStreamRequest),
        #[prost(message, tag = "26")]
        NewAudioSource(super::NewAudioSourceRequest),
        #[prost(message, tag = "27")]
        CaptureAudioFrame(super::CaptureAudioFrameRequest),
        #[prost(message, tag = "28")]
        ClearAudioBuffer(super::ClearAudioBufferRequest),
        #[prost(message, tag = "38")]
        PerformRpc(super::PerformRpcRequest),
        #[prost(message, tag = "39")]
        RegisterRpcMethod(super::RegisterRpcMethodRequest),
        #[prost(message, tag = "41")]
        RpcMethodInvocationResponse(super::RpcMethodInvocationResponseRequest),
        #[prost(message, tag = "54")]
        ByteReadIncremental(super::ByteStreamReaderReadIncrementalRequest),
        #[prost(message, tag = "83")]
        ReadyForRoomEvent(super::ReadyForRoomEventRequest),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FfiResponse {
    #[prost(
        oneof = "ffi_response::Message",
        tags = "3, 4, 5, 6, 8, 15, 16, 21, 22, 25, 26, 27, 28, 37, 38, 40, 53, 82"
    )]
    pub message: Option<ffi_response::Message>,
}

pub mod ffi_response {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "3")]
        Connect(super::ConnectResponse),
        #[prost(message, tag = "4")]
        Disconnect(super::DisconnectResponse),
        #[prost(message, tag = "5")]
        PublishTrack(super::PublishTrackResponse),
        #[prost(message, tag = "6")]
        UnpublishTrack(super::UnpublishTrackResponse),
        #[prost(message, tag = "8")]
        SetSubscribed(super::SetSubscribedResponse),
        #[prost(message, tag = "15")]
        CreateVideoTrack(super::CreateVideoTrackResponse),
        #[prost(message, tag = "16")]
        CreateAudioTrack(super::CreateAudioTrackResponse),
        #[prost(message, tag = "21")]
        NewVideoSource(super::NewVideoSourceResponse),
        #[prost(message, tag = "22")]
        CaptureVideoFrame(super::CaptureVideoFrameResponse),
        #[prost(message, tag = "25")]
        NewAudioStream(super::NewAudioStreamResponse),
        #[prost(message, tag = "26")]
        NewAudioSource(super::NewAudioSourceResponse),
        #[prost(message, tag = "27")]
        CaptureAudioFrame(super::CaptureAudioFrameResponse),
        #[prost(message, tag = "28")]
        ClearAudioBuffer(super::ClearAudioBufferResponse),
        #[prost(message, tag = "37")]
        PerformRpc(super::PerformRpcResponse),
        #[prost(message, tag = "38")]
        RegisterRpcMethod(super::RegisterRpcMethodResponse),
        #[prost(message, tag = "40")]
        RpcMethodInvocationResponse(super::RpcMethodInvocationResponseResponse),
        #[prost(message, tag = "53")]
        ByteReadIncremental(super::ByteStreamReaderReadIncrementalResponse),
        #[prost(message, tag = "82")]
        ReadyForRoomEvent(super::ReadyForRoomEventResponse),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FfiEvent {
    #[prost(
        oneof = "ffi_event::Message",
        tags = "1, 4, 5, 7, 9, 10, 13, 18, 20, 23, 24, 28"
    )]
    pub message: Option<ffi_event::Message>,
}

pub mod ffi_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "1")]
        RoomEvent(super::RoomEvent),
        #[prost(message, tag = "4")]
        AudioStreamEvent(super::AudioStreamEvent),
        #[prost(message, tag = "5")]
        Connect(super::ConnectCallback),
        #[prost(message, tag = "7")]
        Disconnect(super::DisconnectCallback),
        #[prost(message, tag = "9")]
        PublishTrack(super::PublishTrackCallback),
        #[prost(message, tag = "10")]
        UnpublishTrack(super::UnpublishTrackCallback),
        #[prost(message, tag = "13")]
        CaptureAudioFrame(super::CaptureAudioFrameCallback),
        #[prost(message, tag = "18")]
        Logs(super::LogBatch),
        #[prost(message, tag = "20")]
        Panic(super::Panic),
        #[prost(message, tag = "23")]
        PerformRpc(super::PerformRpcCallback),
        #[prost(message, tag = "24")]
        RpcMethodInvocation(super::RpcMethodInvocationEvent),
        #[prost(message, tag = "28")]
        ByteStreamReaderEvent(super::ByteStreamReaderEvent),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogBatch {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<LogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    #[prost(enumeration = "LogLevel", required, tag = "1")]
    pub level: i32,
    #[prost(string, required, tag = "2")]
    pub target: String,
    #[prost(uint32, optional, tag = "5")]
    pub line: Option<u32>,
    #[prost(string, required, tag = "6")]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum LogLevel {
    LogError = 0,
    LogWarn = 1,
    LogInfo = 2,
    LogDebug = 3,
    LogTrace = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Panic {
    #[prost(string, required, tag = "1")]
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// handle.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct FfiOwnedHandle {
    #[prost(uint64, required, tag = "1")]
    pub id: u64,
}

// ---------------------------------------------------------------------------------------------
// room.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectRequest {
    #[prost(string, required, tag = "1")]
    pub url: String,
    #[prost(string, required, tag = "2")]
    pub token: String,
    #[prost(message, required, tag = "3")]
    pub options: RoomOptions,
    #[prost(uint64, optional, tag = "4")]
    pub request_async_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomOptions {
    #[prost(bool, optional, tag = "1")]
    pub auto_subscribe: Option<bool>,
    #[prost(bool, optional, tag = "2")]
    pub adaptive_stream: Option<bool>,
    #[prost(bool, optional, tag = "3")]
    pub dynacast: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConnectCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
    #[prost(oneof = "connect_callback::Message", tags = "2, 3")]
    pub message: Option<connect_callback::Message>,
}

pub mod connect_callback {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(string, tag = "2")]
        Error(String),
        #[prost(message, tag = "3")]
        Result(Result),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParticipantWithTracks {
        #[prost(message, required, tag = "1")]
        pub participant: super::OwnedParticipant,
        #[prost(message, repeated, tag = "2")]
        pub publications: Vec<super::OwnedTrackPublication>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Result {
        #[prost(message, required, tag = "1")]
        pub room: super::OwnedRoom,
        #[prost(message, required, tag = "2")]
        pub local_participant: super::OwnedParticipant,
        #[prost(message, repeated, tag = "3")]
        pub participants: Vec<ParticipantWithTracks>,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DisconnectRequest {
    #[prost(uint64, required, tag = "1")]
    pub room_handle: u64,
    #[prost(uint64, optional, tag = "2")]
    pub request_async_id: Option<u64>,
    #[prost(enumeration = "DisconnectReason", optional, tag = "3")]
    pub reason: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DisconnectResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DisconnectCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishTrackRequest {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(uint64, required, tag = "2")]
    pub track_handle: u64,
    #[prost(message, required, tag = "3")]
    pub options: TrackPublishOptions,
    #[prost(uint64, optional, tag = "4")]
    pub request_async_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishTrackResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishTrackCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
    #[prost(oneof = "publish_track_callback::Message", tags = "2, 3")]
    pub message: Option<publish_track_callback::Message>,
}

pub mod publish_track_callback {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(string, tag = "2")]
        Error(String),
        #[prost(message, tag = "3")]
        Publication(super::OwnedTrackPublication),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadyForRoomEventRequest {
    #[prost(uint64, required, tag = "1")]
    pub room_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadyForRoomEventResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnpublishTrackRequest {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(string, required, tag = "2")]
    pub track_sid: String,
    #[prost(bool, required, tag = "3")]
    pub stop_on_unpublish: bool,
    #[prost(uint64, optional, tag = "4")]
    pub request_async_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnpublishTrackResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnpublishTrackCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
    #[prost(string, optional, tag = "2")]
    pub error: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSubscribedRequest {
    #[prost(bool, required, tag = "1")]
    pub subscribe: bool,
    #[prost(uint64, required, tag = "2")]
    pub publication_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSubscribedResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VideoEncoding {
    #[prost(uint64, required, tag = "1")]
    pub max_bitrate: u64,
    #[prost(double, required, tag = "2")]
    pub max_framerate: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioEncoding {
    #[prost(uint64, required, tag = "1")]
    pub max_bitrate: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackPublishOptions {
    #[prost(message, optional, tag = "1")]
    pub video_encoding: Option<VideoEncoding>,
    #[prost(message, optional, tag = "2")]
    pub audio_encoding: Option<AudioEncoding>,
    #[prost(enumeration = "VideoCodec", optional, tag = "3")]
    pub video_codec: Option<i32>,
    #[prost(bool, optional, tag = "4")]
    pub dtx: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub red: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub simulcast: Option<bool>,
    #[prost(enumeration = "TrackSource", optional, tag = "7")]
    pub source: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomInfo {
    #[prost(string, optional, tag = "1")]
    pub sid: Option<String>,
    #[prost(string, required, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedRoom {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: RoomInfo,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedBuffer {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomEvent {
    #[prost(uint64, required, tag = "1")]
    pub room_handle: u64,
    #[prost(
        oneof = "room_event::Message",
        tags = "2, 3, 7, 8, 9, 10, 22, 23, 24, 26, 27, 34, 35, 43, 45"
    )]
    pub message: Option<room_event::Message>,
}

pub mod room_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "2")]
        ParticipantConnected(super::ParticipantConnected),
        #[prost(message, tag = "3")]
        ParticipantDisconnected(super::ParticipantDisconnected),
        #[prost(message, tag = "7")]
        TrackPublished(super::TrackPublished),
        #[prost(message, tag = "8")]
        TrackUnpublished(super::TrackUnpublished),
        #[prost(message, tag = "9")]
        TrackSubscribed(super::TrackSubscribed),
        #[prost(message, tag = "10")]
        TrackUnsubscribed(super::TrackUnsubscribed),
        #[prost(message, tag = "22")]
        Disconnected(super::Disconnected),
        #[prost(message, tag = "23")]
        Reconnecting(super::Reconnecting),
        #[prost(message, tag = "24")]
        Reconnected(super::Reconnected),
        #[prost(message, tag = "26")]
        Eos(super::RoomEos),
        #[prost(message, tag = "27")]
        DataPacketReceived(super::DataPacketReceived),
        #[prost(message, tag = "34")]
        ByteStreamOpened(super::ByteStreamOpened),
        #[prost(message, tag = "35")]
        TextStreamOpened(super::TextStreamOpened),
        #[prost(message, tag = "43")]
        DataTrackPublished(super::DataTrackPublished),
        #[prost(message, tag = "45")]
        LocalTrackRepublished(super::LocalTrackRepublished),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ParticipantConnected {
    #[prost(message, required, tag = "1")]
    pub info: OwnedParticipant,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ParticipantDisconnected {
    #[prost(string, required, tag = "1")]
    pub participant_identity: String,
    #[prost(enumeration = "DisconnectReason", required, tag = "2")]
    pub disconnect_reason: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalTrackRepublished {
    #[prost(uint64, required, tag = "1")]
    pub publication_handle: u64,
    #[prost(string, required, tag = "2")]
    pub previous_sid: String,
    #[prost(message, required, tag = "3")]
    pub info: TrackPublicationInfo,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackPublished {
    #[prost(string, required, tag = "1")]
    pub participant_identity: String,
    #[prost(message, required, tag = "2")]
    pub publication: OwnedTrackPublication,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackUnpublished {
    #[prost(string, required, tag = "1")]
    pub participant_identity: String,
    #[prost(string, required, tag = "2")]
    pub publication_sid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackSubscribed {
    #[prost(string, required, tag = "1")]
    pub participant_identity: String,
    #[prost(message, required, tag = "2")]
    pub track: OwnedTrack,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackUnsubscribed {
    #[prost(string, required, tag = "1")]
    pub participant_identity: String,
    #[prost(string, required, tag = "2")]
    pub track_sid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserPacket {
    #[prost(message, required, tag = "1")]
    pub data: OwnedBuffer,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DataPacketReceived {
    #[prost(string, required, tag = "2")]
    pub participant_identity: String,
    #[prost(oneof = "data_packet_received::Value", tags = "4")]
    pub value: Option<data_packet_received::Value>,
}

pub mod data_packet_received {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "4")]
        User(super::UserPacket),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Disconnected {
    #[prost(enumeration = "DisconnectReason", required, tag = "1")]
    pub reason: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reconnecting {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reconnected {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomEos {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamOpened {
    #[prost(message, required, tag = "1")]
    pub reader: OwnedByteStreamReader,
    #[prost(string, required, tag = "2")]
    pub participant_identity: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TextStreamOpened {
    #[prost(message, required, tag = "1")]
    pub reader: OwnedTextStreamReader,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DataTrackPublished {
    #[prost(message, required, tag = "1")]
    pub track: OwnedRemoteDataTrack,
}

// ---------------------------------------------------------------------------------------------
// participant.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct ParticipantInfo {
    #[prost(string, required, tag = "1")]
    pub sid: String,
    #[prost(string, required, tag = "2")]
    pub name: String,
    #[prost(string, required, tag = "3")]
    pub identity: String,
    #[prost(map = "string, string", tag = "6")]
    pub attributes: std::collections::HashMap<String, String>,
    #[prost(enumeration = "ParticipantKind", required, tag = "7")]
    pub kind: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum ParticipantKind {
    Standard = 0,
    Ingress = 1,
    Egress = 2,
    Sip = 3,
    Agent = 4,
    Connector = 5,
    Bridge = 6,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedParticipant {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: ParticipantInfo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum DisconnectReason {
    UnknownReason = 0,
    ClientInitiated = 1,
    DuplicateIdentity = 2,
    ServerShutdown = 3,
    ParticipantRemoved = 4,
    RoomDeleted = 5,
    StateMismatch = 6,
    JoinFailure = 7,
    Migration = 8,
    SignalClose = 9,
    RoomClosed = 10,
    UserUnavailable = 11,
    UserRejected = 12,
    SipTrunkFailure = 13,
    ConnectionTimeout = 14,
    MediaFailure = 15,
    AgentError = 16,
}

// ---------------------------------------------------------------------------------------------
// track.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateVideoTrackRequest {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(uint64, required, tag = "2")]
    pub source_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateVideoTrackResponse {
    #[prost(message, required, tag = "1")]
    pub track: OwnedTrack,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateAudioTrackRequest {
    #[prost(string, required, tag = "1")]
    pub name: String,
    #[prost(uint64, required, tag = "2")]
    pub source_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateAudioTrackResponse {
    #[prost(message, required, tag = "1")]
    pub track: OwnedTrack,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackPublicationInfo {
    #[prost(string, required, tag = "1")]
    pub sid: String,
    #[prost(string, required, tag = "2")]
    pub name: String,
    #[prost(enumeration = "TrackKind", required, tag = "3")]
    pub kind: i32,
    #[prost(enumeration = "TrackSource", required, tag = "4")]
    pub source: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedTrackPublication {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: TrackPublicationInfo,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackInfo {
    #[prost(string, required, tag = "1")]
    pub sid: String,
    #[prost(string, required, tag = "2")]
    pub name: String,
    #[prost(enumeration = "TrackKind", required, tag = "3")]
    pub kind: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedTrack {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: TrackInfo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum TrackKind {
    KindUnknown = 0,
    KindAudio = 1,
    KindVideo = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum TrackSource {
    SourceUnknown = 0,
    SourceCamera = 1,
    SourceMicrophone = 2,
    SourceScreenshare = 3,
    SourceScreenshareAudio = 4,
}

// ---------------------------------------------------------------------------------------------
// video_frame.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewVideoSourceRequest {
    #[prost(enumeration = "VideoSourceType", required, tag = "1")]
    pub r#type: i32,
    #[prost(message, required, tag = "2")]
    pub resolution: VideoSourceResolution,
    #[prost(bool, optional, tag = "3")]
    pub is_screencast: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewVideoSourceResponse {
    #[prost(message, required, tag = "1")]
    pub source: OwnedVideoSource,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VideoSourceResolution {
    #[prost(uint32, required, tag = "1")]
    pub width: u32,
    #[prost(uint32, required, tag = "2")]
    pub height: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedVideoSource {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CaptureVideoFrameRequest {
    #[prost(uint64, required, tag = "1")]
    pub source_handle: u64,
    #[prost(message, required, tag = "2")]
    pub buffer: VideoBufferInfo,
    #[prost(int64, required, tag = "3")]
    pub timestamp_us: i64,
    #[prost(enumeration = "VideoRotation", required, tag = "4")]
    pub rotation: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CaptureVideoFrameResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VideoBufferInfo {
    #[prost(enumeration = "VideoBufferType", required, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, required, tag = "2")]
    pub width: u32,
    #[prost(uint32, required, tag = "3")]
    pub height: u32,
    #[prost(uint64, required, tag = "4")]
    pub data_ptr: u64,
    #[prost(uint32, optional, tag = "6")]
    pub stride: Option<u32>,
    #[prost(message, repeated, tag = "7")]
    pub components: Vec<video_buffer_info::ComponentInfo>,
}

pub mod video_buffer_info {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ComponentInfo {
        #[prost(uint64, required, tag = "1")]
        pub data_ptr: u64,
        #[prost(uint32, required, tag = "2")]
        pub stride: u32,
        #[prost(uint32, required, tag = "3")]
        pub size: u32,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum VideoCodec {
    Vp8 = 0,
    H264 = 1,
    Av1 = 2,
    Vp9 = 3,
    H265 = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum VideoRotation {
    VideoRotation0 = 0,
    VideoRotation90 = 1,
    VideoRotation180 = 2,
    VideoRotation270 = 3,
}

/// Only the planar format this crate captures; the library knows ten more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum VideoBufferType {
    I420 = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum VideoSourceType {
    VideoSourceNative = 0,
    VideoSourceEncoded = 1,
}

// ---------------------------------------------------------------------------------------------
// audio_frame.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewAudioSourceRequest {
    #[prost(enumeration = "AudioSourceType", required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub options: Option<AudioSourceOptions>,
    #[prost(uint32, optional, tag = "3")]
    pub sample_rate: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub num_channels: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pub queue_size_ms: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioSourceOptions {
    #[prost(bool, required, tag = "1")]
    pub echo_cancellation: bool,
    #[prost(bool, required, tag = "2")]
    pub noise_suppression: bool,
    #[prost(bool, required, tag = "3")]
    pub auto_gain_control: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewAudioSourceResponse {
    #[prost(message, required, tag = "1")]
    pub source: OwnedAudioSource,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedAudioSource {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CaptureAudioFrameRequest {
    #[prost(uint64, required, tag = "1")]
    pub source_handle: u64,
    #[prost(message, required, tag = "2")]
    pub buffer: AudioFrameBufferInfo,
    #[prost(uint64, optional, tag = "3")]
    pub request_async_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CaptureAudioFrameResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CaptureAudioFrameCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
    #[prost(string, optional, tag = "2")]
    pub error: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClearAudioBufferRequest {
    #[prost(uint64, required, tag = "1")]
    pub source_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClearAudioBufferResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioFrameBufferInfo {
    #[prost(uint64, required, tag = "1")]
    pub data_ptr: u64,
    #[prost(uint32, required, tag = "2")]
    pub num_channels: u32,
    #[prost(uint32, required, tag = "3")]
    pub sample_rate: u32,
    #[prost(uint32, required, tag = "4")]
    pub samples_per_channel: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedAudioFrameBuffer {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: AudioFrameBufferInfo,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewAudioStreamRequest {
    #[prost(uint64, required, tag = "1")]
    pub track_handle: u64,
    #[prost(enumeration = "AudioStreamType", required, tag = "2")]
    pub r#type: i32,
    #[prost(uint32, optional, tag = "3")]
    pub sample_rate: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub num_channels: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub frame_size_ms: Option<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NewAudioStreamResponse {
    #[prost(message, required, tag = "1")]
    pub stream: OwnedAudioStream,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedAudioStream {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioStreamEvent {
    #[prost(uint64, required, tag = "1")]
    pub stream_handle: u64,
    #[prost(oneof = "audio_stream_event::Message", tags = "2, 3")]
    pub message: Option<audio_stream_event::Message>,
}

pub mod audio_stream_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "2")]
        FrameReceived(super::AudioFrameReceived),
        #[prost(message, tag = "3")]
        Eos(super::AudioStreamEos),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioFrameReceived {
    #[prost(message, required, tag = "1")]
    pub frame: OwnedAudioFrameBuffer,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AudioStreamEos {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum AudioSourceType {
    AudioSourceNative = 0,
    AudioSourcePlatform = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
pub enum AudioStreamType {
    AudioStreamNative = 0,
    AudioStreamHtml = 1,
}

// ---------------------------------------------------------------------------------------------
// data_stream.proto: reading the byte streams a remote participant sends (LiveKit Agents sends
// its speech to an avatar as one), and the handles of text streams and data tracks, which this
// crate releases unread.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedByteStreamReader {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
    #[prost(message, required, tag = "2")]
    pub info: ByteStreamInfo,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamInfo {
    #[prost(string, required, tag = "1")]
    pub stream_id: String,
    #[prost(string, required, tag = "3")]
    pub mime_type: String,
    #[prost(string, required, tag = "4")]
    pub topic: String,
    #[prost(uint64, optional, tag = "5")]
    pub total_length: Option<u64>,
    #[prost(map = "string, string", tag = "6")]
    pub attributes: std::collections::HashMap<String, String>,
    #[prost(string, required, tag = "7")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamReaderReadIncrementalRequest {
    #[prost(uint64, required, tag = "1")]
    pub reader_handle: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamReaderReadIncrementalResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamReaderEvent {
    #[prost(uint64, required, tag = "1")]
    pub reader_handle: u64,
    #[prost(oneof = "byte_stream_reader_event::Detail", tags = "2, 3")]
    pub detail: Option<byte_stream_reader_event::Detail>,
}

pub mod byte_stream_reader_event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Detail {
        #[prost(message, tag = "2")]
        ChunkReceived(super::ByteStreamReaderChunkReceived),
        #[prost(message, tag = "3")]
        Eos(super::ByteStreamReaderEos),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamReaderChunkReceived {
    #[prost(bytes = "vec", required, tag = "1")]
    pub content: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteStreamReaderEos {
    #[prost(message, optional, tag = "1")]
    pub error: Option<StreamError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamError {
    #[prost(string, required, tag = "1")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedTextStreamReader {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OwnedRemoteDataTrack {
    #[prost(message, required, tag = "1")]
    pub handle: FfiOwnedHandle,
}

// ---------------------------------------------------------------------------------------------
// rpc.proto
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcError {
    #[prost(uint32, required, tag = "1")]
    pub code: u32,
    #[prost(string, required, tag = "2")]
    pub message: String,
    #[prost(string, optional, tag = "3")]
    pub data: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerformRpcRequest {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(string, required, tag = "2")]
    pub destination_identity: String,
    #[prost(string, required, tag = "3")]
    pub method: String,
    #[prost(string, required, tag = "4")]
    pub payload: String,
    #[prost(uint32, optional, tag = "5")]
    pub response_timeout_ms: Option<u32>,
    #[prost(uint64, optional, tag = "6")]
    pub request_async_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerformRpcResponse {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerformRpcCallback {
    #[prost(uint64, required, tag = "1")]
    pub async_id: u64,
    #[prost(string, optional, tag = "2")]
    pub payload: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub error: Option<RpcError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRpcMethodRequest {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(string, required, tag = "2")]
    pub method: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRpcMethodResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcMethodInvocationEvent {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(uint64, required, tag = "2")]
    pub invocation_id: u64,
    #[prost(string, required, tag = "3")]
    pub method: String,
    #[prost(string, required, tag = "4")]
    pub request_id: String,
    #[prost(string, required, tag = "5")]
    pub caller_identity: String,
    #[prost(string, required, tag = "6")]
    pub payload: String,
    #[prost(uint32, required, tag = "7")]
    pub response_timeout_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcMethodInvocationResponseRequest {
    #[prost(uint64, required, tag = "1")]
    pub local_participant_handle: u64,
    #[prost(uint64, required, tag = "2")]
    pub invocation_id: u64,
    #[prost(string, optional, tag = "3")]
    pub payload: Option<String>,
    #[prost(message, optional, tag = "4")]
    pub error: Option<RpcError>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcMethodInvocationResponseResponse {
    #[prost(string, optional, tag = "1")]
    pub error: Option<String>,
}

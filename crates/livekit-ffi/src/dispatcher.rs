//! The thread that turns the library's events into answers and room events.
//! (One file past 600 lines: every event kind is released or handed on here, by the one thread
//! that owns the handles; split, the release of a handle would be two files apart from its use.)
//!
//! One thread for the process, fed by the callback (raw event bytes) and by this crate (room
//! removal), in one FIFO. Being the only consumer, it owns every room's remote-side bookkeeping
//! (the handles of remote publications, tracks and audio streams) without locks, and it can set up
//! an audio stream for a newly subscribed track before it looks at the next event, so no frame of
//! that stream can arrive before the stream is known.
//!
//! Answers to async requests are matched by async id. Callers pick the id themselves
//! (`request_async_id`) and register their waiter before making the request, so an answer can
//! never arrive first. An answer nobody waits for any more (the caller timed out or was dropped)
//! still has its handles released here; an orphaned connect also disconnects its room.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};

use prost::Message as _;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::events::{disconnect_reason_name, RoomEvent, RpcInvocation};
use crate::ffi::{self, FfiLibrary, Input, OwnedHandle};
use crate::proto::{self, ffi_event, ffi_request, ffi_response, room_event};
use crate::shared::{RoomHandle, RoomShared};
use crate::{LkError, RpcErrorCode};

/// Someone waiting for the event that answers an async request.
pub(crate) enum Waiter {
    Callback(oneshot::Sender<ffi_event::Message>),
    /// A connect is answered here only after the room is registered and the library has been told
    /// it may start sending room events (`ready_for_room_event`), so no room event is missed.
    Connect {
        reply: oneshot::Sender<Result<Connected, LkError>>,
        events: tokio_mpsc::UnboundedSender<RoomEvent>,
        shared: Arc<RoomShared>,
    },
}

/// What a successful connect hands to its caller.
pub(crate) struct Connected {
    pub room: RoomHandle,
    pub local_participant: OwnedHandle,
}

fn waiters() -> &'static Mutex<HashMap<u64, Waiter>> {
    static WAITERS: OnceLock<Mutex<HashMap<u64, Waiter>>> = OnceLock::new();
    WAITERS.get_or_init(Default::default)
}

pub(crate) fn register(async_id: u64, waiter: Waiter) {
    waiters()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(async_id, waiter);
}

/// Forgets a waiter (its caller gave up); a late answer is then released as an orphan.
pub(crate) fn unregister(async_id: u64) {
    waiters()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&async_id);
}

fn take_waiter(async_id: u64) -> Option<Waiter> {
    waiters()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&async_id)
}

pub(crate) fn run(input: mpsc::Receiver<Input>) {
    let mut dispatcher = Dispatcher::default();
    while let Ok(message) = input.recv() {
        // The library is set before it is initialized, so before the first event.
        let Some(lib) = ffi::loaded() else { continue };
        match message {
            Input::Event(bytes) => match proto::FfiEvent::decode(bytes.as_slice()) {
                Ok(event) => dispatcher.on_event(lib, event),
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable event from the LiveKit FFI library")
                }
            },
            Input::RemoveRoom { room, done } => {
                if let Some(state) = dispatcher.rooms.remove(&room) {
                    dispatcher.streams.retain(|_, (owner, _)| *owner != room);
                    dispatcher.readers.retain(|_, owner| *owner != room);
                    dispatcher.participants.remove(&state.local_participant);
                    drop(state);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

#[derive(Default)]
struct Dispatcher {
    rooms: HashMap<u64, RoomState>,
    /// Audio stream handle → (room handle, identity of the participant it carries).
    streams: HashMap<u64, (u64, String)>,
    /// Byte stream reader handle → room handle.
    readers: HashMap<u64, u64>,
    /// Local participant handle → room handle (RPC invocations name the local participant).
    participants: HashMap<u64, u64>,
}

/// The remote side of one room, as far as this crate keeps it.
struct RoomState {
    events: tokio_mpsc::UnboundedSender<RoomEvent>,
    shared: Arc<RoomShared>,
    /// Remote microphone publications we subscribed to, by track sid.
    microphones: HashMap<String, RemotePublication>,
    /// Their subscribed tracks and the 16 kHz mono streams read from them, by track sid.
    audio: HashMap<String, RemoteAudio>,
    local_participant: u64,
    /// Byte streams being read, by reader handle: the handle and the stream's id.
    readers: HashMap<u64, (OwnedHandle, String)>,
}

struct RemotePublication {
    identity: String,
    _handle: OwnedHandle,
}

/// Field order is drop order: the stream goes before its track.
struct RemoteAudio {
    identity: String,
    stream: OwnedHandle,
    _track: OwnedHandle,
}

impl RoomState {
    fn emit(&self, event: RoomEvent) {
        // The owner may have stopped listening; its room still runs until it closes it.
        let _ = self.events.send(event);
    }

    /// Starts reading a byte stream on an accepted topic (its chunks come as reader events) and
    /// tells the owner; any other stream's reader is released unread, as the library expects of
    /// a client that does not read it. Answers the reader's handle when it is being read.
    fn read_byte_stream(
        &mut self,
        lib: &FfiLibrary,
        opened: proto::ByteStreamOpened,
    ) -> Option<u64> {
        let reader = OwnedHandle::new(opened.reader.handle.id)?;
        let info = opened.reader.info;
        if !self.shared.byte_stream_topics.contains(&info.topic) {
            return None;
        }
        let read = ffi_request::Message::ByteReadIncremental(
            proto::ByteStreamReaderReadIncrementalRequest {
                reader_handle: reader.id(),
            },
        );
        if let Err(e) = lib.request(read) {
            tracing::warn!(error = %e, topic = %info.topic, "could not read a byte stream");
            return None;
        }
        let id = reader.id();
        self.readers.insert(id, (reader, info.stream_id.clone()));
        self.emit(RoomEvent::ByteStreamOpened {
            stream_id: info.stream_id,
            identity: opened.participant_identity,
            topic: info.topic,
            name: info.name,
            mime_type: info.mime_type,
            attributes: info.attributes,
        });
        Some(id)
    }

    fn add_publication(
        &mut self,
        lib: &FfiLibrary,
        identity: &str,
        publication: proto::OwnedTrackPublication,
    ) {
        let Some(handle) = OwnedHandle::new(publication.handle.id) else {
            return;
        };
        let info = publication.info;
        let is_microphone = info.kind == proto::TrackKind::KindAudio as i32
            && info.source == proto::TrackSource::SourceMicrophone as i32;
        if !is_microphone || !self.shared.receive_microphones {
            return; // its handle is released here: nothing else of a remote participant is read
        }
        // Rooms are joined without auto-subscribe, so the avatar receives (and decodes) only what
        // it uses: microphones, never a user's camera.
        let request = ffi_request::Message::SetSubscribed(proto::SetSubscribedRequest {
            subscribe: true,
            publication_handle: handle.id(),
        });
        if let Err(e) = lib.request(request) {
            tracing::warn!(error = %e, track = %info.sid, %identity, "could not subscribe to a microphone");
            return;
        }
        self.microphones.insert(
            info.sid,
            RemotePublication {
                identity: identity.to_string(),
                _handle: handle,
            },
        );
    }

    fn forget_track(&mut self, sid: &str, streams: &mut HashMap<u64, (u64, String)>) {
        if let Some(audio) = self.audio.remove(sid) {
            streams.remove(&audio.stream.id());
        }
    }

    fn forget_participant(&mut self, identity: &str, streams: &mut HashMap<u64, (u64, String)>) {
        let sids: Vec<String> = self
            .audio
            .iter()
            .filter(|(_, a)| a.identity == identity)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in sids {
            self.forget_track(&sid, streams);
        }
        self.microphones.retain(|_, p| p.identity != identity);
    }
}

impl Dispatcher {
    fn on_event(&mut self, lib: &FfiLibrary, event: proto::FfiEvent) {
        use ffi_event::Message as E;
        // An event of a kind this crate does not declare decodes to `None`: nothing to do.
        let Some(message) = event.message else { return };
        match message {
            E::Logs(batch) => forward_logs(batch),
            E::Panic(panic) => {
                tracing::error!(message = %panic.message, "the LiveKit FFI library reported a panic")
            }
            E::Connect(callback) => self.on_connect(lib, callback),
            E::RoomEvent(event) => self.on_room_event(lib, event),
            E::AudioStreamEvent(event) => self.on_audio_stream_event(event),
            E::Disconnect(ref cb) => answer(cb.async_id, message),
            E::PublishTrack(ref cb) => answer(cb.async_id, message),
            E::UnpublishTrack(ref cb) => answer(cb.async_id, message),
            E::CaptureAudioFrame(ref cb) => answer(cb.async_id, message),
            E::PerformRpc(ref cb) => answer(cb.async_id, message),
            E::RpcMethodInvocation(invocation) => self.on_rpc_invocation(lib, invocation),
            E::ByteStreamReaderEvent(event) => self.on_byte_stream_event(event),
        }
    }

    fn on_connect(&mut self, lib: &FfiLibrary, callback: proto::ConnectCallback) {
        use proto::connect_callback::Message as C;
        let waiter = take_waiter(callback.async_id);
        let result = match callback.message {
            Some(C::Result(result)) => result,
            Some(C::Error(error)) => {
                if let Some(Waiter::Connect { reply, .. }) = waiter {
                    let _ = reply.send(Err(LkError::Connect(error)));
                }
                return;
            }
            None => {
                if let Some(Waiter::Connect { reply, .. }) = waiter {
                    let _ = reply.send(Err(LkError::UnexpectedResponse("connect")));
                }
                return;
            }
        };
        let room = RoomHandle::new(result.room.handle.id);
        let local_participant = OwnedHandle::new(result.local_participant.handle.id);
        let (
            Some(Waiter::Connect {
                reply,
                events,
                shared,
            }),
            Some(room),
            Some(local_participant),
        ) = (waiter, room, local_participant)
        else {
            // Nobody waits (or the answer is malformed): the handles drop here, and the room's
            // drop disconnects it.
            for p in result.participants {
                drop(OwnedHandle::new(p.participant.handle.id));
                for publication in p.publications {
                    drop(OwnedHandle::new(publication.handle.id));
                }
            }
            return;
        };

        let mut state = RoomState {
            events,
            shared,
            microphones: HashMap::new(),
            audio: HashMap::new(),
            local_participant: local_participant.id(),
            readers: HashMap::new(),
        };
        for p in result.participants {
            drop(OwnedHandle::new(p.participant.handle.id));
            let agent = is_agent(&p.participant.info);
            let identity = p.participant.info.identity;
            state.emit(RoomEvent::ParticipantJoined {
                identity: identity.clone(),
                agent,
            });
            for publication in p.publications {
                state.add_publication(lib, &identity, publication);
            }
        }
        self.participants.insert(local_participant.id(), room.id());
        self.rooms.insert(room.id(), state);
        // Until this request the library holds the room's events back; without it, it closes the
        // room after 15 s and reports a panic.
        let ready = ffi_request::Message::ReadyForRoomEvent(proto::ReadyForRoomEventRequest {
            room_handle: room.id(),
        });
        if let Err(e) = lib.request(ready) {
            tracing::warn!(error = %e, "ready_for_room_event failed");
        }
        // If the caller is gone, `Connected` drops here and its room disconnects.
        let _ = reply.send(Ok(Connected {
            room,
            local_participant,
        }));
    }

    fn on_room_event(&mut self, lib: &FfiLibrary, event: proto::RoomEvent) {
        use room_event::Message as R;
        let Some(message) = event.message else { return };
        let Some(room) = self.rooms.get_mut(&event.room_handle) else {
            release_room_event_handles(message);
            return;
        };
        match message {
            R::ParticipantConnected(p) => {
                drop(OwnedHandle::new(p.info.handle.id));
                room.emit(RoomEvent::ParticipantJoined {
                    agent: is_agent(&p.info.info),
                    identity: p.info.info.identity,
                });
            }
            R::ByteStreamOpened(opened) => {
                let room_id = event.room_handle;
                if let Some(reader) = room.read_byte_stream(lib, opened) {
                    self.readers.insert(reader, room_id);
                }
            }
            R::ParticipantDisconnected(p) => {
                room.forget_participant(&p.participant_identity, &mut self.streams);
                room.emit(RoomEvent::ParticipantLeft {
                    identity: p.participant_identity,
                });
            }
            R::TrackPublished(t) => {
                room.add_publication(lib, &t.participant_identity, t.publication)
            }
            R::TrackUnpublished(t) => {
                room.forget_track(&t.publication_sid, &mut self.streams);
                room.microphones.remove(&t.publication_sid);
            }
            R::TrackSubscribed(t) => {
                let Some(track) = OwnedHandle::new(t.track.handle.id) else {
                    return;
                };
                let sid = t.track.info.sid;
                if t.track.info.kind != proto::TrackKind::KindAudio as i32
                    || !room.microphones.contains_key(&sid)
                {
                    return;
                }
                let sample_rate = room.shared.user_audio_sample_rate;
                // The library resamples and downmixes to what is asked here.
                let request = ffi_request::Message::NewAudioStream(proto::NewAudioStreamRequest {
                    track_handle: track.id(),
                    r#type: proto::AudioStreamType::AudioStreamNative as i32,
                    sample_rate: Some(sample_rate),
                    num_channels: Some(1),
                    frame_size_ms: Some(20),
                });
                let stream = match lib.request(request) {
                    Ok(ffi_response::Message::NewAudioStream(r)) => {
                        OwnedHandle::new(r.stream.handle.id)
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, track = %sid, "could not open an audio stream");
                        None
                    }
                };
                if let Some(stream) = stream {
                    self.streams.insert(
                        stream.id(),
                        (event.room_handle, t.participant_identity.clone()),
                    );
                    // A second subscription of the same sid replaces (and releases) the first.
                    if let Some(old) = room.audio.insert(
                        sid,
                        RemoteAudio {
                            identity: t.participant_identity,
                            stream,
                            _track: track,
                        },
                    ) {
                        self.streams.remove(&old.stream.id());
                    }
                }
            }
            R::TrackUnsubscribed(t) => room.forget_track(&t.track_sid, &mut self.streams),
            R::Disconnected(d) => {
                room.shared.disconnected.store(true, Ordering::Release);
                room.emit(RoomEvent::Disconnected {
                    reason: disconnect_reason_name(d.reason).to_string(),
                });
            }
            R::Reconnecting(_) => room.emit(RoomEvent::Reconnecting),
            R::Reconnected(_) => {
                room.shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                room.emit(RoomEvent::Reconnected);
            }
            // The library stopped forwarding this room's events (it closed).
            R::Eos(_) => room.shared.disconnected.store(true, Ordering::Release),
            R::LocalTrackRepublished(r) => room.shared.republished(r),
            other => release_room_event_handles(other),
        }
    }

    /// A registered method was called: the room's owner answers. A call for a room this crate no
    /// longer knows is answered here, so the caller is not left waiting for its timeout.
    fn on_rpc_invocation(&mut self, lib: &FfiLibrary, invocation: proto::RpcMethodInvocationEvent) {
        let room = self
            .participants
            .get(&invocation.local_participant_handle)
            .and_then(|room| self.rooms.get(room));
        match room {
            Some(room) => room.emit(RoomEvent::RpcInvocation(RpcInvocation {
                invocation_id: invocation.invocation_id,
                method: invocation.method,
                caller_identity: invocation.caller_identity,
                payload: invocation.payload,
                response_timeout_ms: invocation.response_timeout_ms,
            })),
            None => {
                let refuse = proto::RpcMethodInvocationResponseRequest {
                    local_participant_handle: invocation.local_participant_handle,
                    invocation_id: invocation.invocation_id,
                    payload: None,
                    error: Some(proto::RpcError {
                        code: RpcErrorCode::UnsupportedMethod as u32,
                        message: "the participant is leaving".into(),
                        data: None,
                    }),
                };
                let _ = lib.request(ffi_request::Message::RpcMethodInvocationResponse(refuse));
            }
        }
    }

    fn on_byte_stream_event(&mut self, event: proto::ByteStreamReaderEvent) {
        use proto::byte_stream_reader_event::Detail;
        let Some(room) = self
            .readers
            .get(&event.reader_handle)
            .and_then(|room| self.rooms.get_mut(room))
        else {
            return;
        };
        let Some((_, stream_id)) = room.readers.get(&event.reader_handle) else {
            return;
        };
        match event.detail {
            Some(Detail::ChunkReceived(chunk)) => room.emit(RoomEvent::ByteStreamChunk {
                stream_id: stream_id.clone(),
                bytes: chunk.content,
            }),
            Some(Detail::Eos(eos)) => {
                let stream_id = stream_id.clone();
                // The reader's handle is released with its entry: the stream is over.
                room.readers.remove(&event.reader_handle);
                self.readers.remove(&event.reader_handle);
                room.emit(RoomEvent::ByteStreamClosed {
                    stream_id,
                    error: eos.error.map(|e| e.description),
                });
            }
            None => {}
        }
    }

    fn on_audio_stream_event(&mut self, event: proto::AudioStreamEvent) {
        use proto::audio_stream_event::Message as A;
        match event.message {
            Some(A::FrameReceived(received)) => {
                // The samples live in the library under this handle until it is dropped; a frame of
                // a stream already forgotten still has to be released.
                let frame = OwnedHandle::new(received.frame.handle.id);
                let Some((room_id, identity)) = self.streams.get(&event.stream_handle) else {
                    return;
                };
                let Some(room) = self.rooms.get(room_id) else {
                    return;
                };
                let info = received.frame.info;
                let Some(pcm) = frame.as_ref().and_then(|_| copy_mono(&info)) else {
                    return;
                };
                room.shared
                    .stats
                    .user_audio_samples
                    .fetch_add(pcm.len() as u64, Ordering::Relaxed);
                room.emit(RoomEvent::UserAudio {
                    identity: identity.clone(),
                    pcm,
                });
                drop(frame);
            }
            Some(A::Eos(_)) => {
                self.streams.remove(&event.stream_handle);
            }
            None => {}
        }
    }
}

/// The samples of one received frame, as mono (the stream is opened mono; a frame with more
/// channels is averaged rather than trusted).
fn copy_mono(info: &proto::AudioFrameBufferInfo) -> Option<Vec<i16>> {
    let channels = info.num_channels as usize;
    let frames = info.samples_per_channel as usize;
    // Ten seconds of 48 kHz stereo is far beyond any frame the library sends; refuse nonsense
    // rather than read it.
    if info.data_ptr == 0 || channels == 0 || frames == 0 || channels * frames > 960_000 {
        return None;
    }
    if !info
        .data_ptr
        .is_multiple_of(std::mem::align_of::<i16>() as u64)
    {
        return None;
    }
    // SAFETY: the library keeps `channels * frames` interleaved i16 samples at `data_ptr` while the
    // frame's handle is alive, and the caller holds it.
    let samples =
        unsafe { std::slice::from_raw_parts(info.data_ptr as *const i16, channels * frames) };
    if channels == 1 {
        return Some(samples.to_vec());
    }
    Some(
        samples
            .chunks_exact(channels)
            .map(|frame| (frame.iter().map(|&s| s as i32).sum::<i32>() / channels as i32) as i16)
            .collect(),
    )
}

/// Hands an async answer to its waiter, or releases what it carries when nobody waits.
fn answer(async_id: u64, message: ffi_event::Message) {
    let unclaimed = match take_waiter(async_id) {
        Some(Waiter::Callback(tx)) => tx.send(message).err(),
        Some(Waiter::Connect { .. }) | None => Some(message),
    };
    if let Some(ffi_event::Message::PublishTrack(cb)) = unclaimed {
        if let Some(proto::publish_track_callback::Message::Publication(p)) = cb.message {
            drop(OwnedHandle::new(p.handle.id));
        }
    }
}

/// Events of a room nobody owns (any more), or kinds this crate ignores: only their handles
/// matter, and they are released.
fn release_room_event_handles(message: room_event::Message) {
    use room_event::Message as R;
    let id = match message {
        R::ParticipantConnected(p) => p.info.handle.id,
        R::TrackPublished(t) => t.publication.handle.id,
        R::TrackSubscribed(t) => t.track.handle.id,
        R::DataPacketReceived(d) => match d.value {
            Some(proto::data_packet_received::Value::User(u)) => u.data.handle.id,
            None => 0,
        },
        R::ByteStreamOpened(b) => b.reader.handle.id,
        R::TextStreamOpened(t) => t.reader.handle.id,
        R::DataTrackPublished(d) => d.track.handle.id,
        // Republishing keeps (or replaces) a handle the owner already holds.
        R::LocalTrackRepublished(_)
        | R::ParticipantDisconnected(_)
        | R::TrackUnpublished(_)
        | R::TrackUnsubscribed(_)
        | R::Disconnected(_)
        | R::Reconnecting(_)
        | R::Reconnected(_)
        | R::Eos(_) => 0,
    };
    drop(OwnedHandle::new(id));
}

fn is_agent(info: &proto::ParticipantInfo) -> bool {
    info.kind == proto::ParticipantKind::Agent as i32
}

fn forward_logs(batch: proto::LogBatch) {
    use proto::LogLevel;
    for record in batch.records {
        let target = record.target.as_str();
        let message = record.message.as_str();
        match LogLevel::try_from(record.level).unwrap_or(LogLevel::LogTrace) {
            LogLevel::LogError => {
                tracing::error!(target: "livekit_ffi", lib_target = target, "{message}")
            }
            LogLevel::LogWarn => {
                tracing::warn!(target: "livekit_ffi", lib_target = target, "{message}")
            }
            LogLevel::LogInfo => {
                tracing::info!(target: "livekit_ffi", lib_target = target, "{message}")
            }
            LogLevel::LogDebug => {
                tracing::debug!(target: "livekit_ffi", lib_target = target, "{message}")
            }
            LogLevel::LogTrace => {
                tracing::trace!(target: "livekit_ffi", lib_target = target, "{message}")
            }
        }
    }
}

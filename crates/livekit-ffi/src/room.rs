//! The avatar's side of a room: join and publish, capture, interrupt, close.
//! (One file: every operation below goes through the same handle bookkeeping, which must stay in
//! one place for handles to be released exactly once; the unit tests follow from line 591.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::dispatcher::{self, Connected, Waiter};
use crate::events::RoomEvent;
use crate::ffi::{self, FfiLibrary, Input, OwnedHandle};
use crate::proto::{self, ffi_event, ffi_request, ffi_response};
use crate::shared::{LocalPublication, RoomHandle, RoomShared, StatsCounters};
use crate::LkError;

/// What the avatar publishes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarOptions {
    /// Size of the frames given to [`AvatarRoom::capture_video_i420`] (the encoder's hint; a frame
    /// of another size is still accepted).
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// VP8's ceiling in bits per second.
    pub max_video_bitrate: u64,
    /// Sample rate of the published audio and of [`RoomEvent::UserAudio`]; a multiple of 100 (the
    /// library works in 10 ms frames). 16000 for this project.
    pub audio_sample_rate: u32,
    /// The library's audio queue, a multiple of 10 ms. Captures return at once while less than this
    /// is queued, so it is also how far audio may run ahead of real time (and of the video); an
    /// interrupt drops all of it.
    pub audio_queue_ms: u32,
    /// Subscribe to every remote microphone and deliver it as [`RoomEvent::UserAudio`]. Off for an
    /// avatar whose voice is the room's own agent: it listens to nobody.
    pub receive_microphones: bool,
    /// Byte streams on these topics are read and delivered as [`RoomEvent::ByteStreamOpened`],
    /// `ByteStreamChunk` and `ByteStreamClosed`; streams on any other topic are released unread.
    pub byte_stream_topics: Vec<String>,
}

impl AvatarOptions {
    fn validate(&self) -> Result<(), LkError> {
        let invalid = |what: String| Err(LkError::InvalidArgument(what));
        if self.width == 0 || self.height == 0 || self.width > 8192 || self.height > 8192 {
            return invalid(format!(
                "video size {}x{} (1..=8192 each)",
                self.width, self.height
            ));
        }
        if self.fps == 0 || self.fps > 120 {
            return invalid(format!("fps {} (1..=120)", self.fps));
        }
        if self.max_video_bitrate == 0 {
            return invalid("max_video_bitrate 0".into());
        }
        if !(8000..=48000).contains(&self.audio_sample_rate)
            || !self.audio_sample_rate.is_multiple_of(100)
        {
            return invalid(format!(
                "audio_sample_rate {} (8000..=48000, a multiple of 100)",
                self.audio_sample_rate
            ));
        }
        // The library asserts (panics) on a queue that is not a multiple of 10 ms; 0 would switch
        // it to a mode that takes exactly 10 ms per capture.
        if self.audio_queue_ms == 0
            || !self.audio_queue_ms.is_multiple_of(10)
            || self.audio_queue_ms > 10_000
        {
            return invalid(format!(
                "audio_queue_ms {} (10..=10000, a multiple of 10)",
                self.audio_queue_ms
            ));
        }
        Ok(())
    }
}

/// Counters for metrics, since join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    pub video_frames_captured: u64,
    pub audio_samples_captured: u64,
    pub user_audio_samples_received: u64,
    pub reconnects: u64,
}

/// The avatar in its room, publishing a camera track (VP8) and a microphone track.
pub struct AvatarRoom {
    pub(crate) lib: Arc<FfiLibrary>,
    opts: AvatarOptions,
    pub(crate) shared: Arc<RoomShared>,
    /// The answer of the capture in flight: the library refuses a second capture while one waits
    /// for room in its queue, so each capture first waits for the previous one, even one whose
    /// caller was cancelled.
    audio_in_flight: tokio::sync::Mutex<Option<(u64, oneshot::Receiver<ffi_event::Message>)>>,
    // Handles, released in this order (field order).
    video_track: OwnedHandle,
    audio_track: OwnedHandle,
    video_source: OwnedHandle,
    audio_source: OwnedHandle,
    pub(crate) local_participant: OwnedHandle,
    room: RoomHandle,
}

impl std::fmt::Debug for AvatarRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvatarRoom")
            .field("room_handle", &self.room.id())
            .field("opts", &self.opts)
            .finish()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
const UNPUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Joins the room at `url` with `token` (the avatar's participant token), then publishes the video
/// and audio tracks. Remote microphones are subscribed as they appear and arrive as
/// [`RoomEvent::UserAudio`]. Needs a tokio runtime with the time driver (any flavour).
pub async fn join(
    lib: &Arc<FfiLibrary>,
    url: &str,
    token: &str,
    opts: AvatarOptions,
) -> Result<(AvatarRoom, mpsc::UnboundedReceiver<RoomEvent>), LkError> {
    opts.validate()?;
    if url.is_empty() || token.is_empty() {
        return Err(LkError::InvalidArgument("empty url or token".into()));
    }

    let shared = Arc::new(RoomShared {
        stats: StatsCounters::default(),
        disconnected: AtomicBool::new(false),
        user_audio_sample_rate: opts.audio_sample_rate,
        receive_microphones: opts.receive_microphones,
        byte_stream_topics: opts.byte_stream_topics.clone(),
        clear_generation: AtomicU64::new(0),
        publications: Mutex::new(Vec::new()),
    });
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let async_id = ffi::next_async_id();
    let (reply_tx, reply_rx) = oneshot::channel();
    dispatcher::register(
        async_id,
        Waiter::Connect {
            reply: reply_tx,
            events: events_tx,
            shared: shared.clone(),
        },
    );
    let connect = ffi_request::Message::Connect(proto::ConnectRequest {
        url: url.to_string(),
        token: token.to_string(),
        options: proto::RoomOptions {
            // Only microphones are subscribed, explicitly (see the dispatcher).
            auto_subscribe: Some(false),
            adaptive_stream: Some(false),
            dynacast: Some(false),
        },
        request_async_id: Some(async_id),
    });
    if let Err(e) = lib.request(connect) {
        dispatcher::unregister(async_id);
        return Err(e);
    }
    let Connected {
        room,
        local_participant,
    } = wait(reply_rx, async_id, CONNECT_TIMEOUT, "the room connection").await??;

    // Sources and tracks only now: the library makes each with the WebRTC factory of the moment,
    // which exists while a room does. Made before the room, each would get a factory of its own
    // that dies at once, and tearing those down later crashed the process.
    let video_source = match lib.request(ffi_request::Message::NewVideoSource(
        proto::NewVideoSourceRequest {
            r#type: proto::VideoSourceType::VideoSourceNative as i32,
            resolution: proto::VideoSourceResolution {
                width: opts.width,
                height: opts.height,
            },
            is_screencast: Some(false),
        },
    ))? {
        ffi_response::Message::NewVideoSource(r) => owned(r.source.handle.id, "new_video_source")?,
        _ => return Err(LkError::UnexpectedResponse("new_video_source")),
    };
    let video_track = match lib.request(ffi_request::Message::CreateVideoTrack(
        proto::CreateVideoTrackRequest {
            name: "avatar-video".into(),
            source_handle: video_source.id(),
        },
    ))? {
        ffi_response::Message::CreateVideoTrack(r) => {
            owned(r.track.handle.id, "create_video_track")?
        }
        _ => return Err(LkError::UnexpectedResponse("create_video_track")),
    };
    let audio_source = match lib.request(ffi_request::Message::NewAudioSource(
        proto::NewAudioSourceRequest {
            r#type: proto::AudioSourceType::AudioSourceNative as i32,
            // Synthetic speech: no echo cancellation, noise suppression or gain control.
            options: Some(proto::AudioSourceOptions {
                echo_cancellation: false,
                noise_suppression: false,
                auto_gain_control: false,
            }),
            sample_rate: Some(opts.audio_sample_rate),
            num_channels: Some(1),
            queue_size_ms: Some(opts.audio_queue_ms),
        },
    ))? {
        ffi_response::Message::NewAudioSource(r) => owned(r.source.handle.id, "new_audio_source")?,
        _ => return Err(LkError::UnexpectedResponse("new_audio_source")),
    };
    let audio_track = match lib.request(ffi_request::Message::CreateAudioTrack(
        proto::CreateAudioTrackRequest {
            name: "avatar-audio".into(),
            source_handle: audio_source.id(),
        },
    ))? {
        ffi_response::Message::CreateAudioTrack(r) => {
            owned(r.track.handle.id, "create_audio_track")?
        }
        _ => return Err(LkError::UnexpectedResponse("create_audio_track")),
    };

    let avatar = AvatarRoom {
        lib: lib.clone(),
        opts,
        shared,
        audio_in_flight: tokio::sync::Mutex::new(None),
        room,
        local_participant,
        video_track,
        audio_track,
        video_source,
        audio_source,
    };
    let video = proto::TrackPublishOptions {
        video_encoding: Some(proto::VideoEncoding {
            max_bitrate: avatar.opts.max_video_bitrate,
            max_framerate: f64::from(avatar.opts.fps),
        }),
        video_codec: Some(proto::VideoCodec::Vp8 as i32),
        // One layer: the avatar is one small picture; simulcast would encode it three times.
        simulcast: Some(false),
        source: Some(proto::TrackSource::SourceCamera as i32),
        ..Default::default()
    };
    avatar
        .publish("video", avatar.video_track.id(), video)
        .await?;
    let audio = proto::TrackPublishOptions {
        source: Some(proto::TrackSource::SourceMicrophone as i32),
        ..Default::default()
    };
    avatar
        .publish("audio", avatar.audio_track.id(), audio)
        .await?;
    Ok((avatar, events_rx))
}

impl AvatarRoom {
    async fn publish(
        &self,
        kind: &'static str,
        track_handle: u64,
        options: proto::TrackPublishOptions,
    ) -> Result<(), LkError> {
        let publish = |async_id| {
            ffi_request::Message::PublishTrack(proto::PublishTrackRequest {
                local_participant_handle: self.local_participant.id(),
                track_handle,
                options,
                request_async_id: Some(async_id),
            })
        };
        let answer = call(&self.lib, publish, PUBLISH_TIMEOUT, "a track publication").await?;
        let ffi_event::Message::PublishTrack(callback) = answer else {
            return Err(LkError::UnexpectedResponse("publish_track"));
        };
        match callback.message {
            Some(proto::publish_track_callback::Message::Publication(p)) => {
                let handle = owned(p.handle.id, "publish_track")?;
                self.shared
                    .publications
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(LocalPublication {
                        kind,
                        sid: p.info.sid,
                        handle,
                    });
                Ok(())
            }
            Some(proto::publish_track_callback::Message::Error(reason)) => {
                Err(LkError::Publish { kind, reason })
            }
            None => Err(LkError::UnexpectedResponse("publish_track")),
        }
    }

    /// Hands one I420 frame to the encoder. Returns at once: the library copies the planes, so the
    /// buffers can be reused right away. Planes are tightly packed (strides `width` and
    /// `(width + 1) / 2`).
    pub fn capture_video_i420(
        &self,
        width: u32,
        height: u32,
        y: &[u8],
        u: &[u8],
        v: &[u8],
        timestamp_us: i64,
    ) -> Result<(), LkError> {
        if width == 0 || height == 0 || width > 8192 || height > 8192 {
            return Err(LkError::InvalidArgument(format!(
                "frame size {width}x{height}"
            )));
        }
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        // The library copies exactly stride * rows bytes per plane and panics on any other length.
        if y.len() != w * h || u.len() != cw * ch || v.len() != cw * ch {
            return Err(LkError::InvalidArgument(format!(
                "I420 planes of {width}x{height} must be {}, {} and {} bytes, not {}, {} and {}",
                w * h,
                cw * ch,
                cw * ch,
                y.len(),
                u.len(),
                v.len()
            )));
        }
        if self.shared.disconnected.load(Ordering::Acquire) {
            return Err(LkError::Disconnected);
        }
        let component = |plane: &[u8], stride: usize| proto::video_buffer_info::ComponentInfo {
            data_ptr: plane.as_ptr() as u64,
            stride: stride as u32,
            size: plane.len() as u32,
        };
        let capture = proto::CaptureVideoFrameRequest {
            source_handle: self.video_source.id(),
            buffer: proto::VideoBufferInfo {
                r#type: proto::VideoBufferType::I420 as i32,
                width,
                height,
                data_ptr: y.as_ptr() as u64,
                stride: None,
                components: vec![component(y, w), component(u, cw), component(v, cw)],
            },
            timestamp_us,
            rotation: proto::VideoRotation::VideoRotation0 as i32,
        };
        match self
            .lib
            .request(ffi_request::Message::CaptureVideoFrame(capture))?
        {
            ffi_response::Message::CaptureVideoFrame(_) => {
                self.shared
                    .stats
                    .video_frames
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(LkError::UnexpectedResponse("capture_video_frame")),
        }
    }

    /// Queues mono samples at `audio_sample_rate`. Resolves once the library has taken all of them,
    /// which is immediate while its queue has room and otherwise paces the caller to real time.
    /// An interrupt ([`Self::clear_audio_buffer`]) during the call drops the samples not yet taken
    /// and returns `Ok`.
    pub async fn capture_audio(&self, pcm: &[i16]) -> Result<(), LkError> {
        let mut in_flight = self.audio_in_flight.lock().await;
        let generation = self.shared.clear_generation.load(Ordering::Acquire);
        // Pieces no longer than the queue: the library accepts a capture only while its queue
        // holds at most that much, and each piece is a point where an interrupt takes effect.
        let piece = (self.opts.audio_queue_ms as usize * self.opts.audio_sample_rate as usize
            / 1000)
            .max(1);
        let timeout = Duration::from_millis(2 * u64::from(self.opts.audio_queue_ms) + 5_000);
        for samples in pcm.chunks(piece) {
            if let Some((async_id, previous)) = in_flight.as_mut() {
                let async_id = *async_id;
                let answer = wait(previous, async_id, timeout, "an audio capture").await;
                *in_flight = None;
                check_capture(answer?)?;
            }
            if self.shared.clear_generation.load(Ordering::Acquire) != generation {
                return Ok(());
            }
            if self.shared.disconnected.load(Ordering::Acquire) {
                return Err(LkError::Disconnected);
            }
            let async_id = ffi::next_async_id();
            let (tx, rx) = oneshot::channel();
            dispatcher::register(async_id, Waiter::Callback(tx));
            let capture = proto::CaptureAudioFrameRequest {
                source_handle: self.audio_source.id(),
                buffer: proto::AudioFrameBufferInfo {
                    data_ptr: samples.as_ptr() as u64,
                    num_channels: 1,
                    sample_rate: self.opts.audio_sample_rate,
                    samples_per_channel: samples.len() as u32,
                },
                request_async_id: Some(async_id),
            };
            // The samples are copied during this call; only the answer is awaited.
            if let Err(e) = self
                .lib
                .request(ffi_request::Message::CaptureAudioFrame(capture))
            {
                dispatcher::unregister(async_id);
                return Err(e);
            }
            *in_flight = Some((async_id, rx));
            self.shared
                .stats
                .audio_samples
                .fetch_add(samples.len() as u64, Ordering::Relaxed);
        }
        if let Some((async_id, last)) = in_flight.as_mut() {
            let async_id = *async_id;
            let answer = wait(last, async_id, timeout, "an audio capture").await;
            *in_flight = None;
            check_capture(answer?)?;
        }
        Ok(())
    }

    /// Interrupt: the audio queued in the library is dropped at once (the track plays silence
    /// from its next 10 ms frame), and a `capture_audio` in progress stops feeding.
    pub fn clear_audio_buffer(&self) -> Result<(), LkError> {
        self.shared.clear_generation.fetch_add(1, Ordering::AcqRel);
        let clear = proto::ClearAudioBufferRequest {
            source_handle: self.audio_source.id(),
        };
        match self
            .lib
            .request(ffi_request::Message::ClearAudioBuffer(clear))?
        {
            ffi_response::Message::ClearAudioBuffer(_) => Ok(()),
            _ => Err(LkError::UnexpectedResponse("clear_audio_buffer")),
        }
    }

    pub fn stats(&self) -> RoomStats {
        let s = &self.shared.stats;
        RoomStats {
            video_frames_captured: s.video_frames.load(Ordering::Relaxed),
            audio_samples_captured: s.audio_samples.load(Ordering::Relaxed),
            user_audio_samples_received: s.user_audio_samples.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Whether the library has reported the room gone (see [`RoomEvent::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        self.shared.disconnected.load(Ordering::Acquire)
    }

    /// Leaves the room: unpublishes both tracks, disconnects, then releases every handle of the
    /// room (remote ones included) before returning. The first error is returned after all steps
    /// ran; the handles are released either way.
    pub async fn close(mut self) -> Result<(), LkError> {
        let mut first_error = None;
        let room_handle = self.room.id();
        let connected = !self.shared.disconnected.load(Ordering::Acquire);
        let publications = std::mem::take(
            &mut *self
                .shared
                .publications
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if connected {
            for publication in &publications {
                let unpublish = |async_id| {
                    ffi_request::Message::UnpublishTrack(proto::UnpublishTrackRequest {
                        local_participant_handle: self.local_participant.id(),
                        track_sid: publication.sid.clone(),
                        stop_on_unpublish: true,
                        request_async_id: Some(async_id),
                    })
                };
                match call(&self.lib, unpublish, UNPUBLISH_TIMEOUT, "an unpublish").await {
                    Ok(ffi_event::Message::UnpublishTrack(cb)) => {
                        if let Some(reason) = cb.error {
                            tracing::warn!(kind = publication.kind, %reason, "unpublish failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        {
            let disconnect = |async_id| {
                ffi_request::Message::Disconnect(proto::DisconnectRequest {
                    room_handle,
                    request_async_id: Some(async_id),
                    reason: Some(proto::DisconnectReason::ClientInitiated as i32),
                })
            };
            if let Err(e) = call(&self.lib, disconnect, DISCONNECT_TIMEOUT, "the disconnect").await
            {
                first_error.get_or_insert(e);
            }
        }
        self.shared.disconnected.store(true, Ordering::Release);
        // The remote handles live on the dispatcher thread; wait until it has let them go.
        let (done_tx, done_rx) = oneshot::channel();
        let removed = ffi::send_input(Input::RemoveRoom {
            room: room_handle,
            done: Some(done_tx),
        });
        if removed.is_ok() && done_rx.await.is_err() {
            first_error.get_or_insert(LkError::DispatcherGone);
        }
        drop(publications);
        self.room.closed = true;
        // `self` drops here: tracks, sources, local participant and room handle, in field order.
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn check_capture(answer: ffi_event::Message) -> Result<(), LkError> {
    match answer {
        ffi_event::Message::CaptureAudioFrame(cb) => match cb.error {
            Some(e) => Err(LkError::Capture(e)),
            None => Ok(()),
        },
        _ => Err(LkError::UnexpectedResponse("capture_audio_frame")),
    }
}

fn owned(id: u64, what: &'static str) -> Result<OwnedHandle, LkError> {
    OwnedHandle::new(id).ok_or(LkError::UnexpectedResponse(what))
}

/// One async request: registers its waiter under a fresh async id, sends it, awaits the answer.
pub(crate) async fn call(
    lib: &FfiLibrary,
    request: impl FnOnce(u64) -> ffi_request::Message,
    timeout: Duration,
    what: &'static str,
) -> Result<ffi_event::Message, LkError> {
    let async_id = ffi::next_async_id();
    let (tx, rx) = oneshot::channel();
    dispatcher::register(async_id, Waiter::Callback(tx));
    if let Err(e) = lib.request(request(async_id)) {
        dispatcher::unregister(async_id);
        return Err(e);
    }
    wait(rx, async_id, timeout, what).await
}

async fn wait<F, T>(
    rx: F,
    async_id: u64,
    timeout: Duration,
    what: &'static str,
) -> Result<T, LkError>
where
    F: std::future::Future<Output = Result<T, oneshot::error::RecvError>>,
{
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(LkError::DispatcherGone),
        Err(_) => {
            dispatcher::unregister(async_id);
            Err(LkError::Timeout {
                what,
                secs: timeout.as_secs(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> AvatarOptions {
        AvatarOptions {
            width: 512,
            height: 512,
            fps: 25,
            max_video_bitrate: 800_000,
            audio_sample_rate: 16_000,
            audio_queue_ms: 200,
            receive_microphones: true,
            byte_stream_topics: Vec::new(),
        }
    }

    #[test]
    fn options_are_checked_before_the_library_sees_them() {
        assert!(opts().validate().is_ok());
        for bad in [
            AvatarOptions {
                audio_queue_ms: 15,
                ..opts()
            },
            AvatarOptions {
                audio_queue_ms: 0,
                ..opts()
            },
            AvatarOptions {
                audio_sample_rate: 22_050,
                ..opts()
            },
            AvatarOptions { width: 0, ..opts() },
            AvatarOptions { fps: 0, ..opts() },
            AvatarOptions {
                max_video_bitrate: 0,
                ..opts()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LkError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    /// The room is shared between tasks and its futures run on any runtime (compile-time check).
    #[allow(dead_code)]
    fn futures_are_send(lib: &Arc<FfiLibrary>, room: AvatarRoom) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        send_sync(&room);
        send(&join(lib, "", "", opts()));
        send(&room.capture_audio(&[]));
        send(&room.close());
    }
}

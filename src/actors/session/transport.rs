//! The session's media transport, owned by its Room child: the one seam through which the avatar's
//! frames and voice leave and the user's voice comes in.
//! - **LiveKit participant** (LiveKit configured): the avatar joins its room through LiveKit's own
//!   FFI library, publishes a camera track (the renderer's frames as I420) and a microphone track
//!   (the voice), and hears every remote microphone. It renders for the room whether or not
//!   anyone watches a preview.
//! - **Local room** (no LiveKit): the server is the WebRTC peer of each browser viewer (WHEP);
//!   the session is encoded once and the packets go to every viewer; frames are taken only while
//!   someone views.
//!
//! Each runs as a few tasks on the session's arbiter that move media between the session's
//! broadcast channels and the transport; what they learn (participants, user audio, viewers,
//! connection trouble) comes back to the Room child as [`TransportEvent`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use avs_livekit_ffi::{AvatarOptions, AvatarRoom, FfiLibrary, LkError, RoomEvent};
use avs_rtc::{MediaSession, RtcError, RtcServer, ViewerId};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::agent_link::{self, AgentLink, LinkAction, AUDIO_STREAM_TOPIC, RPC_CLEAR_BUFFER};
use super::messages::{AgentAudio, PlaybackNotice};
use crate::media::{FrameWants, VideoFrame, Want};
use crate::metrics::Metrics;
use crate::voice::{PcmChunk, Voiced};

/// What a transport tells its Room child.
#[derive(Debug)]
pub enum TransportEvent {
    ParticipantJoined(String),
    ParticipantLeft(String),
    /// 20 ms of the user's voice, 16 kHz mono.
    UserAudio(PcmChunk),
    /// Browser viewers of the local room now connected.
    Viewers(usize),
    Reconnecting,
    Reconnected,
    /// The connection is gone for good (the library gave up).
    Disconnected(String),
    /// The room is over and will not come back: deleted, the avatar removed from it, or (in a
    /// room the caller brought) its agent gone. The session ends `room_closed`.
    Closed(String),
    /// The room's agent speaking through the avatar (LiveKit Agents).
    AgentAudio(AgentAudio),
}

/// The session's media channels, as a transport takes them.
#[derive(Clone)]
pub struct MediaTaps {
    pub frames: broadcast::Sender<VideoFrame>,
    pub audio: broadcast::Sender<Voiced>,
    pub wants: Arc<FrameWants>,
}

pub enum Transport {
    LiveKit(Box<LiveKitParticipant>),
    Local(LocalRoom),
}

impl Transport {
    /// Tells the room's agent how its speech plays (LiveKit Agents), where there is one.
    pub fn notify(&self, notice: PlaybackNotice) {
        if let Transport::LiveKit(p) = self {
            p.notify(notice);
        }
    }

    /// Drops what the voice has queued but not yet sent (an interrupt is heard at once).
    pub fn clear_audio(&self) {
        if let Transport::LiveKit(p) = self {
            if let Err(e) = p.room.clear_audio_buffer() {
                tracing::debug!(error = %e, "clear_audio_buffer failed");
            }
        }
        // The local room sends audio as it plays: there is no queue to clear.
    }

    /// Leaves: unpublishes and disconnects (LiveKit), or closes every viewer (local room).
    pub async fn close(self) {
        match self {
            Transport::LiveKit(p) => p.close().await,
            Transport::Local(l) => l.close().await,
        }
    }
}

fn abort_all(tasks: &mut Vec<JoinHandle<()>>) -> Vec<JoinHandle<()>> {
    for task in tasks.iter() {
        task.abort();
    }
    std::mem::take(tasks)
}

// ---------------------------------------------------------------------------------------------
// LiveKit
// ---------------------------------------------------------------------------------------------

pub struct LiveKitParticipant {
    room: Arc<AvatarRoom>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Metrics,
    /// To the room's agent, when it speaks through the avatar.
    notices: Option<mpsc::UnboundedSender<PlaybackNotice>>,
}

/// How the avatar joins: the library, where, as whom, and how its video is encoded.
pub struct LiveKitJoin {
    pub library: Arc<FfiLibrary>,
    pub url: String,
    pub token: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub max_video_bitrate: u64,
    /// The room's agent is the voice (LiveKit Agents' avatar protocol): its audio streams are
    /// taken, nobody's microphone is. `Some(None)`: the agent is whoever joins as one.
    pub agent_voice: Option<Option<String>>,
}

impl LiveKitParticipant {
    /// Joins the room and publishes both tracks; media starts flowing at once.
    pub async fn join(
        join: LiveKitJoin,
        taps: MediaTaps,
        events: mpsc::UnboundedSender<TransportEvent>,
        metrics: Metrics,
    ) -> Result<Self, LkError> {
        let opts = AvatarOptions {
            width: join.width,
            height: join.height,
            fps: join.fps,
            max_video_bitrate: join.max_video_bitrate,
            audio_sample_rate: crate::voice::SAMPLE_RATE,
            // A small queue: it is how far the voice may run ahead of the face, and what an
            // interrupt has to drop.
            audio_queue_ms: 200,
            receive_microphones: join.agent_voice.is_none(),
            byte_stream_topics: match join.agent_voice {
                Some(_) => vec![AUDIO_STREAM_TOPIC.to_string()],
                None => Vec::new(),
            },
        };
        let (room, room_events) =
            avs_livekit_ffi::join(&join.library, &join.url, &join.token, opts).await?;
        let room = Arc::new(room);
        let link = match join.agent_voice {
            Some(expected) => {
                room.register_rpc_method(RPC_CLEAR_BUFFER)?;
                Some(AgentLink::new(expected, metrics.clone()))
            }
            None => None,
        };
        metrics.livekit_published.inc();
        let mut tasks = vec![
            actix_web::rt::spawn(publish_video(room.clone(), taps.clone(), metrics.clone())),
            actix_web::rt::spawn(publish_audio(room.clone(), taps.audio.subscribe())),
        ];
        let mut notices = None;
        if let Some(link) = &link {
            let (tx, rx) = mpsc::unbounded_channel();
            notices = Some(tx);
            tasks.push(actix_web::rt::spawn(agent_link::notify_agent(
                room.clone(),
                rx,
                link.agent(),
                metrics.clone(),
            )));
        }
        tasks.push(actix_web::rt::spawn(forward_room_events(
            room.clone(),
            room_events,
            link,
            events,
            metrics.clone(),
        )));
        Ok(Self {
            room,
            tasks,
            metrics,
            notices,
        })
    }

    /// Tells the room's agent how one of its segments plays.
    pub fn notify(&self, notice: PlaybackNotice) {
        if let Some(notices) = &self.notices {
            let _ = notices.send(notice);
        }
    }

    async fn close(mut self) {
        for task in abort_all(&mut self.tasks) {
            let _ = task.await;
        }
        self.metrics.livekit_published.dec();
        match Arc::try_unwrap(self.room) {
            Ok(room) => {
                if let Err(e) = room.close().await {
                    tracing::warn!(error = %e, "leaving the LiveKit room failed");
                }
            }
            // Its handles are released when the last copy drops.
            Err(_) => tracing::warn!("the LiveKit room is still shared at close"),
        }
    }
}

async fn publish_video(room: Arc<AvatarRoom>, taps: MediaTaps, metrics: Metrics) {
    let _want = Want::i420(&taps.wants);
    let mut frames = taps.frames.subscribe();
    let epoch = Instant::now();
    loop {
        match frames.recv().await {
            Ok(frame) => {
                let Some(i420) = &frame.i420 else { continue };
                let (y, u, v) = i420.planes();
                let at = frame.captured.saturating_duration_since(epoch).as_micros() as i64;
                match room.capture_video_i420(i420.width, i420.height, y, u, v, at) {
                    Ok(()) => metrics.livekit_video_frames.inc(),
                    Err(e) => tracing::debug!(error = %e, "video frame not captured"),
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn publish_audio(room: Arc<AvatarRoom>, mut audio: broadcast::Receiver<Voiced>) {
    loop {
        match audio.recv().await {
            // Paced by the library's queue: this waits while it is full.
            Ok(chunk) => {
                if let Err(e) = room.capture_audio(&chunk.pcm).await {
                    tracing::debug!(error = %e, "audio not captured");
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn forward_room_events(
    room: Arc<AvatarRoom>,
    mut room_events: mpsc::UnboundedReceiver<RoomEvent>,
    mut link: Option<AgentLink>,
    events: mpsc::UnboundedSender<TransportEvent>,
    metrics: Metrics,
) {
    while let Some(event) = room_events.recv().await {
        if let Some(link) = &mut link {
            for action in link.on_event(&event) {
                let event = match action {
                    LinkAction::Audio(audio) => TransportEvent::AgentAudio(audio),
                    LinkAction::AgentLeft(identity) => {
                        TransportEvent::Closed(format!("the agent {identity} left the room"))
                    }
                    LinkAction::Answer {
                        invocation_id,
                        method,
                        result,
                    } => {
                        if let Err(e) = room.respond_rpc(invocation_id, result) {
                            tracing::warn!(error = %e, %method, "an RPC was not answered");
                        }
                        continue;
                    }
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        }
        let event = match event {
            RoomEvent::ParticipantJoined { identity, .. } => {
                TransportEvent::ParticipantJoined(identity)
            }
            RoomEvent::ParticipantLeft { identity } => TransportEvent::ParticipantLeft(identity),
            RoomEvent::UserAudio { pcm, .. } => {
                metrics
                    .livekit_user_audio_seconds
                    .inc_by(pcm.len() as f64 / crate::voice::SAMPLE_RATE as f64);
                TransportEvent::UserAudio(pcm.into())
            }
            RoomEvent::Reconnecting => TransportEvent::Reconnecting,
            RoomEvent::Reconnected => {
                metrics.livekit_reconnects.inc();
                TransportEvent::Reconnected
            }
            // Gone for good: a deleted room, or the avatar removed from it, does not come back.
            RoomEvent::Disconnected { reason }
                if matches!(
                    reason.as_str(),
                    "room_deleted" | "participant_removed" | "room_closed"
                ) =>
            {
                TransportEvent::Closed(reason)
            }
            RoomEvent::Disconnected { reason } => TransportEvent::Disconnected(reason),
            // The protocol's own events were the link's.
            RoomEvent::ByteStreamOpened { .. }
            | RoomEvent::ByteStreamChunk { .. }
            | RoomEvent::ByteStreamClosed { .. }
            | RoomEvent::RpcInvocation(_) => continue,
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The local room
// ---------------------------------------------------------------------------------------------

pub struct LocalRoom {
    media: Arc<MediaSession>,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalRoom {
    pub fn open(
        rtc: &RtcServer,
        session_id: &str,
        (width, height, fps): (u32, u32, u32),
        taps: MediaTaps,
        events: mpsc::UnboundedSender<TransportEvent>,
    ) -> Result<Self, RtcError> {
        let media = Arc::new(rtc.open_session(session_id, width, height, fps)?);
        let mut tasks = vec![
            actix_web::rt::spawn(send_video(media.clone(), taps.clone())),
            actix_web::rt::spawn(send_audio(media.clone(), taps.audio.subscribe())),
            actix_web::rt::spawn(count_viewers(media.clone(), events.clone())),
        ];
        if let Some(mut microphone) = media.take_microphone() {
            tasks.push(actix_web::rt::spawn(async move {
                while let Some(chunk) = microphone.recv().await {
                    if events
                        .send(TransportEvent::UserAudio(chunk.into()))
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        Ok(Self { media, tasks })
    }

    /// The media session, for answering offers and trickle off the Room child's own turn.
    pub fn media(&self) -> Arc<MediaSession> {
        self.media.clone()
    }

    pub fn leave(&self, viewer: ViewerId) -> bool {
        self.media.leave(viewer)
    }

    async fn close(mut self) {
        for task in abort_all(&mut self.tasks) {
            let _ = task.await;
        }
        // Dropping the last copy closes every viewer and stops the encoder.
    }
}

/// Frames go to the encoder only while someone views: unviewed, the renderer is not asked for
/// them (no subscription, no I420).
async fn send_video(media: Arc<MediaSession>, taps: MediaTaps) {
    loop {
        while media.viewers() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _want = Want::i420(&taps.wants);
        let mut frames = taps.frames.subscribe();
        while media.viewers() > 0 {
            match frames.recv().await {
                Ok(frame) => {
                    if let Some(i420) = &frame.i420 {
                        let (y, u, v) = i420.planes();
                        if let Err(e) = media.push_video_i420(y, u, v, frame.captured) {
                            tracing::debug!(error = %e, "frame not sent");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

async fn send_audio(media: Arc<MediaSession>, mut audio: broadcast::Receiver<Voiced>) {
    loop {
        match audio.recv().await {
            // The voice plays in real time: this chunk starts playing now.
            Ok(chunk) => media.push_audio(&chunk.pcm, Instant::now()),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn count_viewers(media: Arc<MediaSession>, events: mpsc::UnboundedSender<TransportEvent>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = media.viewers();
        if now != last {
            last = now;
            if events.send(TransportEvent::Viewers(now)).is_err() {
                return;
            }
        }
    }
}

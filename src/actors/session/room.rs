//! The Room child: creates the session's room (LiveKit's RoomService or the local room), mints
//! tokens, and owns the session's media transport (the avatar as a LiveKit participant, or the
//! local room's WebRTC viewers). It reports who is there and what the user says to its Session;
//! when the room or the connection is lost for good it exits, and the session's restart policy
//! decides. Closing leaves the room (unpublish, disconnect) and then deletes it, in that order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use avs_livekit_ffi::FfiLibrary;
use avs_rtc::{RtcError, RtcServer, ViewerId};
use tokio::sync::{mpsc, oneshot};

use super::messages::{
    AgentAudio, ChildExited, ChildKind, EndReason, ParticipantJoined, ParticipantLeft,
    PlaybackNotice, RoomReady, RoomUpdate, Stop, UserAudio,
};
use super::transport::{
    LiveKitJoin, LiveKitParticipant, LocalRoom, MediaTaps, Transport, TransportEvent,
};
use crate::domain::events::RoomStatus;
use crate::livekit::{BorrowedRoom, RoomAccess, RoomBackend};
use crate::metrics::Metrics;

/// Where a Room child reports, and what it needs to make the room and its media.
pub struct RoomSpec {
    pub backend: Arc<RoomBackend>,
    pub session_id: String,
    pub room_name: String,
    pub user_identity: String,
    pub agent_identity: String,
    pub token_ttl: Duration,
    pub check_interval: Duration,
    pub taps: MediaTaps,
    /// The frame size and rate once the renderer knows them (`None` until then).
    pub video: Option<(u32, u32, u32)>,
    pub livekit: Option<Arc<FfiLibrary>>,
    /// Where LiveKit's FFI library is, for a room the caller brought to a server that has no
    /// LiveKit of its own (loaded then, once per process).
    pub livekit_library: PathBuf,
    /// The caller's own room: joined with its token, neither created nor deleted here.
    pub borrowed: Option<BorrowedRoom>,
    /// The room's agent is the avatar's voice (LiveKit Agents).
    pub agent_voice: bool,
    pub rtc: Option<RtcServer>,
    pub max_video_bitrate: u64,
    pub max_side: u32,
    pub fps: u32,
    pub metrics: Metrics,
    pub session: Recipient<RoomUpdate>,
    pub ready: Recipient<RoomReady>,
    pub exited: Recipient<ChildExited>,
    pub joined: Recipient<ParticipantJoined>,
    pub left: Recipient<ParticipantLeft>,
    pub heard: Recipient<UserAudio>,
    pub agent_audio: Recipient<AgentAudio>,
    /// The room is over for good: the session ends `room_closed`.
    pub closed: Recipient<Stop>,
}

/// Where an offer's answer goes.
type AnswerTo = oneshot::Sender<Result<(ViewerId, String), RtcError>>;

pub struct Room {
    spec: RoomSpec,
    access: Option<RoomAccess>,
    transport: Option<Transport>,
    events: mpsc::UnboundedSender<TransportEvent>,
    /// Offers that came before the local room could open (the frame size not known yet).
    waiting_offers: Vec<(String, AnswerTo)>,
    status: RoomStatus,
    /// Consecutive failed health checks; one miss may be a blip.
    misses: u32,
    dead: bool,
}

impl Room {
    pub fn new(spec: RoomSpec) -> (Self, mpsc::UnboundedReceiver<TransportEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let room = Self {
            spec,
            access: None,
            transport: None,
            events,
            waiting_offers: Vec::new(),
            status: RoomStatus::default(),
            misses: 0,
            dead: false,
        };
        (room, rx)
    }

    /// Starts the child, its transport's events flowing into it.
    pub fn launch(spec: RoomSpec) -> Addr<Room> {
        let (room, events) = Room::new(spec);
        Room::create(|ctx| {
            ctx.add_stream(futures_util::stream::unfold(events, |mut rx| async move {
                rx.recv().await.map(|event| (event, rx))
            }));
            room
        })
    }

    fn die(&mut self, ctx: &mut Context<Self>, reason: String) {
        if std::mem::replace(&mut self.dead, true) {
            return;
        }
        self.spec.exited.do_send(ChildExited {
            kind: ChildKind::Room,
            reason,
        });
        // The connection goes with the child (its handles are released when the room drops).
        if let Some(transport) = self.transport.take() {
            actix_web::rt::spawn(transport.close());
        }
        ctx.stop();
    }

    fn report(&self) {
        self.spec.session.do_send(RoomUpdate(self.status.clone()));
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let backend = self.spec.backend.clone();
        let name = self.spec.room_name.clone();
        ctx.spawn(
            async move { backend.exists(&name).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(true) => act.misses = 0,
                    Ok(false) => act.die(ctx, "the room disappeared".into()),
                    Err(e) => {
                        act.misses += 1;
                        if act.misses >= 2 {
                            tracing::warn!(room = %act.spec.room_name, error = %e, "room check failed");
                            act.die(ctx, "the room service does not answer".into());
                        }
                    }
                }),
        );
    }

    /// The avatar joins its LiveKit room with its own token and publishes its tracks.
    fn join_livekit(&mut self, ctx: &mut Context<Self>, library: Arc<FfiLibrary>) {
        let Some(access) = &self.access else { return };
        let (width, height, fps) =
            self.spec
                .video
                .unwrap_or((self.spec.max_side, self.spec.max_side, self.spec.fps));
        let join = LiveKitJoin {
            library,
            url: access.url.clone(),
            token: access.agent_token.clone(),
            width,
            height,
            fps,
            max_video_bitrate: self.spec.max_video_bitrate,
            agent_voice: self
                .spec
                .agent_voice
                .then(|| self.spec.borrowed.as_ref().and_then(|b| b.agent.clone())),
        };
        let borrowed = self.spec.borrowed.is_some();
        let joining = LiveKitParticipant::join(
            join,
            self.spec.taps.clone(),
            self.events.clone(),
            self.spec.metrics.clone(),
        );
        ctx.wait(joining.into_actor(self).map(move |result, act, ctx| match result {
            Ok(participant) => {
                act.transport = Some(Transport::LiveKit(Box::new(participant)));
                act.status.joined = true;
                act.status.published = true;
                act.report();
                // A room the caller brought is ready once the avatar is in it: a room that cannot
                // be joined fails the start before anything is billed.
                if borrowed {
                    if let Some(access) = act.access.clone() {
                        act.spec.ready.do_send(RoomReady(access));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(room = %act.spec.room_name, error = %e, "the avatar could not join its room");
                act.die(ctx, format!("the avatar could not join the room: {e}"));
            }
        }));
    }

    /// The caller's room: the avatar joins it with the caller's token (LiveKit's FFI library is
    /// loaded now if this server has no LiveKit of its own).
    fn join_borrowed(&mut self, ctx: &mut Context<Self>, room: BorrowedRoom) {
        self.access = Some(RoomAccess {
            url: room.url.clone(),
            user_token: String::new(),
            agent_token: room.token.clone(),
        });
        if let Some(library) = self.spec.livekit.clone() {
            return self.join_livekit(ctx, library);
        }
        let path = self.spec.livekit_library.clone();
        let load = actix_web::rt::task::spawn_blocking(move || FfiLibrary::load(&path));
        ctx.wait(load.into_actor(self).map(|loaded, act, ctx| match loaded {
            Ok(Ok(library)) => {
                act.spec.livekit = Some(library.clone());
                act.join_livekit(ctx, library);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "LiveKit's FFI library could not be loaded");
                act.die(
                    ctx,
                    "LiveKit's FFI library is not available on this server".into(),
                );
            }
            Err(e) => act.die(ctx, format!("loading LiveKit's FFI library failed: {e}")),
        }));
    }

    /// The local room's media (its encoder, its thread, its UDP routes) opens when the first
    /// viewer offers, once the frame size is known: a session nobody views costs no encoder.
    /// Offers that came before it are answered.
    fn open_local(&mut self, ctx: &mut Context<Self>) {
        let (Some(rtc), Some(video), None) = (&self.spec.rtc, self.spec.video, &self.transport)
        else {
            return;
        };
        if self.waiting_offers.is_empty() || self.access.is_none() {
            return;
        }
        match LocalRoom::open(
            rtc,
            &self.spec.session_id,
            video,
            self.spec.taps.clone(),
            self.events.clone(),
        ) {
            Ok(local) => {
                self.transport = Some(Transport::Local(local));
                for (offer, reply) in std::mem::take(&mut self.waiting_offers) {
                    self.answer(ctx, offer, reply);
                }
            }
            Err(e) => {
                tracing::error!(session = %self.spec.session_id, error = %e, "the local room could not open");
                self.die(ctx, "the local room could not open".into());
            }
        }
    }

    fn answer(&mut self, ctx: &mut Context<Self>, offer: String, reply: AnswerTo) {
        let Some(Transport::Local(local)) = &self.transport else {
            let _ = reply.send(Err(RtcError::SessionClosed));
            return;
        };
        let media = local.media();
        ctx.spawn(
            async move {
                let _ = reply.send(media.accept(&offer).await);
            }
            .into_actor(self),
        );
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(room) = self.spec.borrowed.clone() {
            return self.join_borrowed(ctx, room);
        }
        let backend = self.spec.backend.clone();
        let name = self.spec.room_name.clone();
        let ttl = self.spec.token_ttl;
        let (user, agent) = (
            self.spec.user_identity.clone(),
            self.spec.agent_identity.clone(),
        );
        let create = async move {
            backend.create(&name, ttl).await?;
            backend.access(&name, &user, &agent, ttl)
        };
        ctx.wait(create.into_actor(self).map(|result, act, ctx| match result {
            Ok(access) => {
                act.access = Some(access.clone());
                act.spec.ready.do_send(RoomReady(access));
                if act.spec.backend.is_livekit() {
                    ctx.run_interval(act.spec.check_interval, |act, ctx| act.check(ctx));
                    if let Some(library) = act.spec.livekit.clone() {
                        act.join_livekit(ctx, library);
                    }
                } else {
                    // The local room is this server: the avatar is in it and publishes from now.
                    act.status.joined = true;
                    act.status.published = true;
                    act.report();
                    act.open_local(ctx);
                }
            }
            Err(e) => {
                tracing::warn!(room = %act.spec.room_name, error = %e, "room creation failed");
                act.die(ctx, format!("the room could not be created: {e}"));
            }
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for (_, reply) in self.waiting_offers.drain(..) {
            let _ = reply.send(Err(RtcError::SessionClosed));
        }
        if let Some(transport) = self.transport.take() {
            actix_web::rt::spawn(transport.close());
        }
    }
}

impl StreamHandler<TransportEvent> for Room {
    fn handle(&mut self, event: TransportEvent, ctx: &mut Self::Context) {
        match event {
            TransportEvent::ParticipantJoined(identity) => {
                self.status.participants += 1;
                self.report();
                self.spec.joined.do_send(ParticipantJoined { identity });
            }
            TransportEvent::ParticipantLeft(identity) => {
                self.status.participants = self.status.participants.saturating_sub(1);
                self.report();
                self.spec.left.do_send(ParticipantLeft { identity });
            }
            TransportEvent::UserAudio(pcm) => self.spec.heard.do_send(UserAudio(pcm)),
            TransportEvent::Viewers(n) => {
                self.status.participants = n;
                self.report();
            }
            TransportEvent::Reconnecting => {
                self.status.joined = false;
                self.report();
            }
            TransportEvent::Reconnected => {
                self.status.joined = true;
                self.report();
            }
            TransportEvent::AgentAudio(audio) => self.spec.agent_audio.do_send(audio),
            TransportEvent::Closed(reason) => {
                tracing::info!(room = %self.spec.room_name, %reason, "the room is over");
                self.status = RoomStatus::default();
                self.report();
                self.dead = true;
                self.spec.closed.do_send(Stop(EndReason::RoomClosed));
            }
            TransportEvent::Disconnected(reason) => {
                self.status = RoomStatus::default();
                self.report();
                self.die(
                    ctx,
                    format!("the avatar's connection to its room ended: {reason}"),
                );
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The child holds a sender itself: the stream ends only with the child.
    }
}

/// Deletes the room after leaving it (best effort: a room already gone is fine), and stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseRoom;

impl Handler<CloseRoom> for Room {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: CloseRoom, _: &mut Self::Context) -> Self::Result {
        self.dead = true;
        let transport = self.transport.take();
        let backend = self.spec.backend.clone();
        let name = self.spec.room_name.clone();
        // The caller's room is theirs: the avatar leaves it, nothing more.
        let owned = self.spec.borrowed.is_none();
        Box::pin(
            async move {
                if let Some(transport) = transport {
                    transport.close().await;
                }
                if owned {
                    if let Err(e) = backend.delete(&name).await {
                        tracing::warn!(room = %name, error = %e, "room delete failed");
                    }
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// The renderer attached: the frame size the local room encodes at.
#[derive(Message)]
#[rtype(result = "()")]
pub struct VideoSize {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Handler<VideoSize> for Room {
    type Result = ();

    fn handle(&mut self, msg: VideoSize, ctx: &mut Self::Context) {
        self.spec.video = Some((msg.width, msg.height, msg.fps));
        if self.access.is_some() {
            self.open_local(ctx);
        }
    }
}

impl Handler<PlaybackNotice> for Room {
    type Result = ();

    fn handle(&mut self, notice: PlaybackNotice, _: &mut Self::Context) {
        match &self.transport {
            Some(transport) => transport.notify(notice),
            // Between a lost connection and the next: the agent's session is over or will resume
            // its own bookkeeping on the new connection.
            None => tracing::debug!(?notice, "a playback notice with no room to send it in"),
        }
    }
}

/// Drop the voice the transport has queued (an interrupt).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearAudio;

impl Handler<ClearAudio> for Room {
    type Result = ();

    fn handle(&mut self, _: ClearAudio, _: &mut Self::Context) {
        if let Some(transport) = &self.transport {
            transport.clear_audio();
        }
    }
}

/// A browser's WHEP offer for the local room: answers the viewer and the answer SDP.
#[derive(Message)]
#[rtype(result = "Result<(ViewerId, String), RtcError>")]
pub struct Offer(pub String);

/// How long an offer may wait for the local room to open.
const OFFER_WAIT: Duration = Duration::from_secs(5);

impl Handler<Offer> for Room {
    type Result = ResponseFuture<Result<(ViewerId, String), RtcError>>;

    fn handle(&mut self, Offer(sdp): Offer, ctx: &mut Self::Context) -> Self::Result {
        if self.spec.rtc.is_none() {
            return Box::pin(async { Err(RtcError::SessionClosed) });
        }
        let (tx, rx) = oneshot::channel();
        if self.transport.is_some() {
            self.answer(ctx, sdp, tx);
        } else {
            self.waiting_offers.push((sdp, tx));
            self.open_local(ctx);
        }
        Box::pin(async move {
            match tokio::time::timeout(OFFER_WAIT, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(RtcError::SessionClosed),
                Err(_) => Err(RtcError::Stopped),
            }
        })
    }
}

/// Trickle ICE for a viewer of the local room.
#[derive(Message)]
#[rtype(result = "Result<(), RtcError>")]
pub struct Trickle {
    pub viewer: ViewerId,
    pub fragment: String,
}

impl Handler<Trickle> for Room {
    type Result = ResponseActFuture<Self, Result<(), RtcError>>;

    fn handle(&mut self, msg: Trickle, _: &mut Self::Context) -> Self::Result {
        let Some(Transport::Local(local)) = &self.transport else {
            return Box::pin(fut::ready(Err(RtcError::SessionClosed)));
        };
        let media = local.media();
        Box::pin(async move { media.patch(msg.viewer, &msg.fragment).await }.into_actor(self))
    }
}

/// A viewer leaves the local room; answers whether it was there.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct LeaveViewer(pub ViewerId);

impl Handler<LeaveViewer> for Room {
    type Result = bool;

    fn handle(&mut self, LeaveViewer(viewer): LeaveViewer, _: &mut Self::Context) -> bool {
        match &self.transport {
            Some(Transport::Local(local)) => local.leave(viewer),
            _ => false,
        }
    }
}

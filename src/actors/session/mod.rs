//! One actor per live session. It supervises its children (the Room, the Renderer on its render
//! slot, the VoiceBridge), restarting a failed one under its `RestartPolicy`, bills its time to
//! the second, enforces its maximum duration and idle timeout itself, and releases what it holds
//! (slot, concurrency count, link use, room, minutes) in one place, exactly once.
//!
//! The actor is one struct whose behaviour is split by concern:
//! - this file: the actor's state, its start, and the questions it answers (`AwaitLive`, `Stop`,
//!   `Snapshot`, `MediaTap`);
//! - `supervision`: spawning the children, restarting them, going live when the room is ready;
//! - `billing`: the per-second bill and the minutes-low warning;
//! - `presence`: who is there (room participants, channel clients) and the idle timer;
//! - `fanout`: channel subscribers, the status, and the typed events they receive;
//! - [`commands`]: speak, add context, interrupt (and [`commands::deliver`], which fans one out);
//! - `ending`: the one way out, as named steps (bill, release, notify).

pub mod agent_link;
pub mod messages;
pub mod renderer;
pub mod restart;
pub mod room;
pub mod state;
pub mod transport;
pub mod viewers;
pub mod voice;

pub mod commands;

mod billing;
mod ending;
mod fanout;
mod presence;
mod supervision;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{broadcast, oneshot};

use crate::actors::render_pool::{RenderPool, SlotLease};
use crate::actors::webhooks::{Emit, Webhooks};
use crate::config::Settings;
use crate::domain::agent::VoiceAgent;
use crate::domain::events::{LifecycleEvent, VideoInfo, VoiceStatus};
use crate::livekit::{BorrowedRoom, RoomAccess, RoomBackend};
use crate::media::{FrameWants, VideoFrame};
use crate::metrics::Metrics;
use crate::store::entities::session as session_row;
use crate::store::Store;
use crate::voice::Voiced;
use messages::*;
use restart::RestartPolicy;
use state::{Event, State};

/// A running session as the registry and the channels know it.
#[derive(Clone)]
pub struct LiveSession {
    pub session_id: String,
    pub account_id: String,
    pub agent_id: String,
    pub room_name: String,
    pub addr: Addr<Session>,
}

/// What every session needs from the rest of the system.
pub struct SessionDeps {
    pub store: Store,
    pub billing: Addr<crate::actors::billing::Billing>,
    /// Where a session says it is gone.
    pub registry: Recipient<Unregister>,
    pub webhooks: Addr<Webhooks>,
    pub rooms: Arc<RoomBackend>,
    pub render_pool: Addr<RenderPool>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    /// For voice providers (ElevenLabs' signed URLs).
    pub http: reqwest::Client,
    /// Syntheses shared by every session (a fanned-out `speak` is synthesised once).
    pub tts: crate::voice::tts::TtsCache,
    /// LiveKit's FFI library, when LiveKit is configured: the avatar joins its rooms through it.
    pub livekit: Option<Arc<avs_livekit_ffi::FfiLibrary>>,
    /// The local room's WebRTC engine, when LiveKit is not configured.
    pub rtc: Option<avs_rtc::RtcServer>,
}

/// What a session takes from its agent when it starts.
pub struct SessionAgent {
    pub system_prompt: String,
    /// The avatar the renderer draws (generation made it).
    pub model_asset_id: String,
    /// The agent's conversational voice; none: the local TTS alone.
    pub voice_agent: Option<VoiceAgent>,
    /// The caller's own LiveKit room, when it brought one.
    pub room: Option<BorrowedRoom>,
    /// The room's agent speaks through the avatar (LiveKit Agents): no provider of ours.
    pub voice_from_room: bool,
}

/// The children and what they hold: one place for supervision's bookkeeping.
struct Children {
    room: Option<Addr<room::Room>>,
    renderer: Option<Addr<renderer::Renderer>>,
    voice: Option<Addr<voice::VoiceBridge>>,
    /// The render slot; taken (and released) by `end`.
    lease: Option<SlotLease>,
    /// Restart budgets and counts, by `ChildKind::index`.
    policies: [RestartPolicy; 3],
    restarts: [u32; 3],
}

/// The session's media, shared by every consumer (the preview, the room's transports); the
/// channels outlive renderer and voice restarts.
struct Media {
    frames: broadcast::Sender<VideoFrame>,
    /// What the voice says: 16 kHz PCM for the renderer, the preview and the room.
    audio: broadcast::Sender<Voiced>,
    /// Preview clients that want JPEG; the render worker encodes JPEG only while there are some.
    wants: Arc<FrameWants>,
    /// Known once the renderer attached.
    video: Option<VideoInfo>,
    first_frame_seen: bool,
}

/// Who is in the session: room participants, the local room's viewers and channel clients keep
/// it from idling out.
#[derive(Default)]
struct Presence {
    users: HashSet<String>,
    clients: usize,
    viewers: usize,
    /// The avatar in its room, as the Room child last reported.
    room: Option<crate::domain::events::RoomStatus>,
    idle_timer: Option<SpawnHandle>,
}

/// When the session went live (billing counts from there), and whether it was warned.
#[derive(Default)]
struct Billing {
    live_since: Option<Instant>,
    /// The same instant on the wall clock (ms since the epoch): the row's `started_at`, from which
    /// the final total is counted to its `ended_at`.
    live_at_ms: Option<i64>,
    minutes_low_sent: bool,
}

/// What the avatar says and knows.
#[derive(Default)]
struct Speech {
    /// Added context, newest last (the oldest go first past `commands::MAX_CONTEXT`).
    context: Vec<String>,
    /// The words of utterances not yet over, for the captions of `speech_started`, and when each
    /// was asked for (its speak → speech_started latency is measured).
    words: std::collections::HashMap<u64, (String, Instant)>,
    next_utterance: u64,
    speaking: Option<u64>,
    voice_status: Option<VoiceStatus>,
}

impl Speech {
    /// Queued utterances are dropped by an interrupt without a word of their end: forget them.
    fn forget_unsaid(&mut self) {
        let speaking = self.speaking;
        self.words.retain(|id, _| Some(*id) == speaking);
    }
}

/// A channel client's subscription (see [`fanout`]).
struct Subscriber {
    id: u64,
    sender: tokio::sync::mpsc::Sender<Outbound>,
    owns: bool,
}

pub struct Session {
    row: session_row::Model,
    deps: Arc<SessionDeps>,
    state: State,
    system_prompt: String,
    model_asset_id: String,
    voice_agent: Option<VoiceAgent>,
    /// The caller's room, when it brought one (see [`SessionAgent::room`]).
    borrowed: Option<BorrowedRoom>,
    voice_from_room: bool,
    children: Children,
    media: Media,
    presence: Presence,
    billing: Billing,
    speech: Speech,
    subscribers: Vec<Subscriber>,
    access: Option<RoomAccess>,
    live_waiters: Vec<oneshot::Sender<Result<WentLive, SessionError>>>,
    end_waiters: Vec<oneshot::Sender<Option<session_row::Model>>>,
    requested_at: Instant,
    /// Set once `end` runs: the one way out.
    ending: bool,
    /// Why it ended, for an `AwaitLive` that arrives after the fact.
    outcome: Option<SessionError>,
}

impl Session {
    pub fn new(
        row: session_row::Model,
        agent: SessionAgent,
        lease: Option<SlotLease>,
        deps: Arc<SessionDeps>,
    ) -> Self {
        let s = &deps.settings.sessions;
        let policy = RestartPolicy::new(
            s.max_child_restarts,
            Duration::from_secs(s.child_restart_window_seconds),
        );
        Self {
            row,
            deps,
            state: State::Queued,
            system_prompt: agent.system_prompt,
            model_asset_id: agent.model_asset_id,
            voice_agent: agent.voice_agent,
            borrowed: agent.room,
            voice_from_room: agent.voice_from_room,
            children: Children {
                room: None,
                renderer: None,
                voice: None,
                lease,
                policies: [policy.clone(), policy.clone(), policy],
                restarts: [0; 3],
            },
            media: Media {
                frames: broadcast::channel(4).0,
                audio: broadcast::channel(256).0,
                wants: Arc::new(FrameWants::default()),
                video: None,
                first_frame_seen: false,
            },
            presence: Presence::default(),
            billing: Billing::default(),
            speech: Speech {
                next_utterance: 1,
                ..Default::default()
            },
            subscribers: Vec::new(),
            access: None,
            live_waiters: Vec::new(),
            end_waiters: Vec::new(),
            requested_at: Instant::now(),
            ending: false,
            outcome: None,
        }
    }

    fn transition(&mut self, event: Event) -> bool {
        match self.state.next(event) {
            Ok(next) => {
                tracing::debug!(session = %self.row.id, from = %self.state, to = %next, "session state");
                self.state = next;
                true
            }
            Err(e) => {
                tracing::warn!(session = %self.row.id, ?e, "ignored session event");
                false
            }
        }
    }

    /// Writes the current state through to the database, then announces it; in order, because
    /// `ctx.wait` holds other messages back until the write is done. (Call it at most once per
    /// handler: actix polls the newest `ctx.wait` future first.)
    fn persist_state(&mut self, ctx: &mut Context<Self>, event: Option<LifecycleEvent>) {
        self.persist_state_then(ctx, event, |_, _| {});
    }

    /// As `persist_state`, then runs `then` once the write is done.
    fn persist_state_then(
        &mut self,
        ctx: &mut Context<Self>,
        event: Option<LifecycleEvent>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        self.broadcast_status();
        let store = self.deps.store.clone();
        let webhooks = self.deps.webhooks.clone();
        let id = self.row.id.clone();
        let state = self.state;
        let at = match (self.state, self.billing.live_at_ms) {
            (State::Live, Some(live_at)) => live_at,
            _ => crate::domain::time::now_ms(),
        };
        ctx.wait(
            async move {
                if let Err(e) = store.set_session_state(&id, state, at).await {
                    tracing::error!(session = %id, error = %e, "state write failed");
                }
                if let Some(event) = event {
                    webhooks.do_send(Emit {
                        session_id: id,
                        event,
                    });
                }
            }
            .into_actor(self)
            .map(move |_, act, ctx| then(act, ctx)),
        );
    }

    /// What `persist_state` says once its write is done, for a state the row already holds.
    fn announce(&mut self, event: Option<LifecycleEvent>) {
        self.broadcast_status();
        if let Some(event) = event {
            self.deps.webhooks.do_send(Emit {
                session_id: self.row.id.clone(),
                event,
            });
        }
    }

    fn refuse_unless_live(&self) -> Result<(), SessionError> {
        if self.state == State::Live && !self.ending {
            Ok(())
        } else {
            Err(SessionError::NotLive(self.state.as_str()))
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.transition(Event::Start);
        if matches!(self.row.state, State::Starting | State::Live) {
            // Admitted as `starting` (or `live`, see `go_live`) already: announce it without
            // writing it again.
            self.announce(Some(LifecycleEvent::Starting));
        } else {
            self.persist_state(ctx, Some(LifecycleEvent::Starting));
        }
        self.spawn_room(ctx);
        // The renderer gets ready while the room is made: the first frame is not a second step.
        self.spawn_renderer(ctx);
        self.spawn_voice(ctx);
    }
}

impl Handler<MediaTap> for Session {
    type Result = Result<MediaStreams, SessionError>;

    fn handle(&mut self, _: MediaTap, _: &mut Self::Context) -> Self::Result {
        if self.ending || self.state.is_terminal() {
            return Err(SessionError::NotLive(self.state.as_str()));
        }
        Ok(MediaStreams {
            frames: self.media.frames.subscribe(),
            audio: self.media.audio.subscribe(),
            video: self.media.video.clone(),
            wants: self.media.wants.clone(),
        })
    }
}

impl Handler<AwaitLive> for Session {
    type Result = ResponseFuture<Result<WentLive, SessionError>>;

    fn handle(&mut self, _: AwaitLive, _: &mut Self::Context) -> Self::Result {
        if let (State::Live, Some(access), Some(at_ms)) =
            (self.state, &self.access, self.billing.live_at_ms)
        {
            let access = access.clone();
            return Box::pin(async move { Ok(WentLive { access, at_ms }) });
        }
        if self.ending || self.state.is_terminal() {
            let outcome = self.outcome.clone().unwrap_or(SessionError::Ended);
            return Box::pin(async move { Err(outcome) });
        }
        let (tx, rx) = oneshot::channel();
        self.live_waiters.push(tx);
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(SessionError::Ended),
                Err(_) => Err(SessionError::Timeout),
            }
        })
    }
}

impl Handler<Stop> for Session {
    type Result = ResponseFuture<Option<session_row::Model>>;

    fn handle(&mut self, Stop(reason): Stop, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.end_waiters.push(tx);
        self.end(ctx, reason, None);
        Box::pin(async move { rx.await.ok().flatten() })
    }
}

impl Handler<Snapshot> for Session {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionSnapshot {
            state: self.state.as_str(),
            users: self.presence.users.len(),
            clients: self.presence.clients,
            billed_seconds: self.live_seconds(),
            system_prompt: self.system_prompt.clone(),
            room_restarts: self.children.restarts[ChildKind::Room.index()],
            renderer_restarts: self.children.restarts[ChildKind::Renderer.index()],
        })
    }
}

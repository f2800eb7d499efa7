//! One actor per live session. It supervises its children (the Room, the Renderer on its render
//! slot, the VoiceBridge), restarting a failed one under its `RestartPolicy`, bills its time to
//! the second, enforces its maximum duration and idle timeout itself, and releases what it holds
//! (slot, concurrency count, link use, room, minutes) in one place (`end`), exactly once.

pub mod messages;
pub mod renderer;
pub mod restart;
pub mod room;
pub mod state;
pub mod voice;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};

use crate::actors::quota::{Bill, Finish, Quota};
use crate::actors::registry::{Registry, Unregister};
use crate::actors::render_pool::{Release, RenderPool, SlotLease};
use crate::actors::webhooks::{Emit, LifecycleEvent, Webhooks};
use crate::api::agents::{AuthMethod, VoiceAgent};
use crate::config::Settings;
use crate::livekit::{RoomAccess, RoomBackend};
use crate::media::VideoFrame;
use crate::metrics::Metrics;
use crate::store::entities::session as session_row;
use crate::store::Store;
use crate::voice::elevenlabs;
use messages::*;
use renderer::{Renderer, RendererSpec};
use restart::{Decision, RestartPolicy};
use room::{CloseRoom, Room};
use state::{Event, State};
use voice::{ElevenLabsSpec, ProviderSpec, VoiceBridge};

use crate::voice::PcmChunk;

/// Entries of added context a session keeps (the oldest go first).
const MAX_CONTEXT: usize = 200;
/// Balance below which channel clients hear `minutes_low`.
const MINUTES_LOW_MS: i64 = 60_000;

struct Subscriber {
    id: u64,
    recipient: Recipient<Outbound>,
    owns: bool,
}

/// What a client asks of live sessions, on a control channel or through the REST fan-out.
#[derive(Debug, Clone)]
pub enum Directive {
    Speak { text: String, interrupt: bool },
    AddContext(String),
    Interrupt,
    Stop(EndReason),
}

/// Sends `directive` to every one of `targets` at once; answers how many took it.
pub async fn deliver(
    targets: impl IntoIterator<Item = Addr<Session>>,
    directive: &Directive,
) -> usize {
    let sends = targets.into_iter().map(|session| async move {
        match directive.clone() {
            Directive::Speak { text, interrupt } => {
                matches!(session.send(Speak { text, interrupt }).await, Ok(Ok(_)))
            }
            Directive::AddContext(text) => {
                matches!(session.send(AddContext { text }).await, Ok(Ok(())))
            }
            Directive::Interrupt => matches!(session.send(InterruptSpeech).await, Ok(Ok(()))),
            Directive::Stop(reason) => {
                session.do_send(Stop(reason));
                true
            }
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .filter(|took| *took)
        .count()
}

/// What every session needs from the rest of the system.
pub struct SessionDeps {
    pub store: Store,
    pub quota: Addr<Quota>,
    pub registry: Addr<Registry>,
    pub webhooks: Addr<Webhooks>,
    pub rooms: Arc<RoomBackend>,
    pub render_pool: Addr<RenderPool>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    /// For voice providers (ElevenLabs' signed URLs).
    pub http: reqwest::Client,
    /// Syntheses shared by every session (a fanned-out `speak` is synthesised once).
    pub tts: crate::voice::tts::TtsCache,
}

/// What a session takes from its agent when it starts.
pub struct SessionAgent {
    pub system_prompt: String,
    /// The avatar the renderer draws (generation made it).
    pub model_asset_id: String,
    /// The agent's conversational voice; none: the local TTS alone.
    pub voice_agent: Option<VoiceAgent>,
}

pub struct Session {
    row: session_row::Model,
    deps: Arc<SessionDeps>,
    state: State,
    system_prompt: String,
    model_asset_id: String,
    voice_agent: Option<VoiceAgent>,
    /// `{"provider", "connected", "detail"}` as the VoiceBridge last reported.
    voice_status: Value,
    room: Option<Addr<Room>>,
    /// Restart budgets and counts, by `ChildKind::index`.
    restarts: [RestartPolicy; 3],
    restart_counts: [u32; 3],
    /// The render slot; taken (and released) by `end`.
    lease: Option<SlotLease>,
    renderer: Option<Addr<Renderer>>,
    /// The renderer's frames, for every consumer (preview, room); outlives renderer restarts.
    frames: broadcast::Sender<VideoFrame>,
    /// `{"width", "height", "fps", "device"}` once the renderer attached.
    video: Value,
    first_frame_seen: bool,
    access: Option<RoomAccess>,
    live_waiters: Vec<oneshot::Sender<Result<RoomAccess, SessionError>>>,
    end_waiters: Vec<oneshot::Sender<()>>,
    requested_at: Instant,
    live_since: Option<Instant>,
    /// Seconds sent to billing so far (counted when sent, so the final bill never double-counts).
    billed_seconds: i64,
    idle_timer: Option<SpawnHandle>,
    users: HashSet<String>,
    clients: usize,
    /// Set once `end` runs: the one way out.
    ending: bool,
    /// Why it ended, for an `AwaitLive` that arrives after the fact.
    outcome: Option<SessionError>,
    voice: Option<Addr<VoiceBridge>>,
    /// The session's audio: what the voice says, for every consumer (preview, renderer, room).
    audio: broadcast::Sender<PcmChunk>,
    subscribers: Vec<Subscriber>,
    context: Vec<String>,
    next_utterance: u64,
    speaking: Option<u64>,
    minutes_low_sent: bool,
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
            voice_status: Value::Null,
            room: None,
            restarts: [policy.clone(), policy.clone(), policy],
            restart_counts: [0; 3],
            lease,
            renderer: None,
            frames: broadcast::channel(4).0,
            video: Value::Null,
            first_frame_seen: false,
            access: None,
            live_waiters: Vec::new(),
            end_waiters: Vec::new(),
            requested_at: Instant::now(),
            live_since: None,
            billed_seconds: 0,
            idle_timer: None,
            users: HashSet::new(),
            clients: 0,
            ending: false,
            outcome: None,
            voice: None,
            audio: broadcast::channel(256).0,
            subscribers: Vec::new(),
            context: Vec::new(),
            next_utterance: 1,
            speaking: None,
            minutes_low_sent: false,
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

    /// The `status` frame: sent on connect and on every state change.
    fn status(&self) -> Value {
        json!({
            "type": "status",
            "session_id": self.row.id,
            "agent_id": self.row.agent_id,
            "room_name": self.row.room_name,
            "state": self.state.as_str(),
            "speaking": self.speaking.is_some(),
            "users": self.users.len(),
            "clients": self.clients,
            "billed_seconds": self.billed_seconds,
            "room_restarts": self.restart_counts[ChildKind::Room.index()],
            "renderer_restarts": self.restart_counts[ChildKind::Renderer.index()],
            "voice_restarts": self.restart_counts[ChildKind::Voice.index()],
            "video": self.video,
            "voice": self.voice_status,
            "end_reason": self.outcome.as_ref().and_then(|_| self.row.end_reason.clone()),
        })
    }

    /// Sends a frame to every channel client; one whose bounded mailbox is full (a slow reader)
    /// or gone is dropped here, so it can neither slow the session nor grow without bound.
    fn broadcast(&mut self, frame: Value) {
        if self.subscribers.is_empty() {
            return;
        }
        let text: std::sync::Arc<str> = frame.to_string().into();
        let mut dropped_owners = 0;
        let metrics = self.deps.metrics.clone();
        self.subscribers.retain(
            |s| match s.recipient.try_send(Outbound::Frame(text.clone())) {
                Ok(()) => true,
                Err(e) => {
                    if matches!(e, SendError::Full(_)) {
                        metrics.ws_evictions.inc();
                    }
                    dropped_owners += s.owns as usize;
                    false
                }
            },
        );
        if dropped_owners > 0 {
            self.clients = self.clients.saturating_sub(dropped_owners);
        }
    }

    fn broadcast_status(&mut self) {
        let status = self.status();
        self.broadcast(status);
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
        let state = self.state.as_str();
        ctx.wait(
            async move {
                if let Err(e) = store.set_session_state(&id, state).await {
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

    fn spawn_room(&mut self, ctx: &mut Context<Self>) {
        let s = &self.deps.settings.sessions;
        let room = Room::new(
            self.deps.rooms.clone(),
            self.row.room_name.clone(),
            self.row.user_identity.clone(),
            self.row.agent_identity.clone(),
            Duration::from_secs(self.row.max_duration_seconds.max(60) as u64 + 300),
            Duration::from_millis(s.room_check_interval_ms),
            ctx.address().recipient(),
            ctx.address().recipient(),
        );
        self.room = Some(room.start());
    }

    fn spawn_renderer(&mut self, ctx: &mut Context<Self>) {
        let Some(lease) = self.lease.clone() else {
            return;
        };
        let spec = RendererSpec {
            pool: self.deps.render_pool.clone(),
            lease,
            session_id: self.row.id.clone(),
            model_asset_id: self.model_asset_id.clone(),
            aspect_ratio: self.row.aspect_ratio.clone(),
            audio: self.audio.clone(),
            frames: self.frames.clone(),
            ready: ctx.address().recipient(),
            exited: ctx.address().recipient(),
        };
        self.renderer = Some(Renderer::new(spec).start());
    }

    fn spawn_voice(&mut self, ctx: &mut Context<Self>) {
        let settings = &self.deps.settings.voice;
        let provider = match &self.voice_agent {
            Some(agent) if agent.provider.eq_ignore_ascii_case("elevenlabs") => {
                let auth = match agent.auth_method {
                    AuthMethod::Public => elevenlabs::AuthMethod::Public,
                    AuthMethod::Signed => elevenlabs::AuthMethod::Signed,
                };
                let mut conversation = elevenlabs::Conversation::new(agent.agent_id.clone(), auth)
                    .with_prompt(self.system_prompt.clone());
                // The session's `env` reaches the agent as its dynamic variables.
                if let Some(env) =
                    self.row.env.as_deref().and_then(|e| {
                        serde_json::from_str::<serde_json::Map<String, Value>>(e).ok()
                    })
                {
                    match conversation.clone().with_variables_json(&env) {
                        Ok(with_env) => conversation = with_env,
                        Err(e) => {
                            tracing::warn!(session = %self.row.id, error = %e, "env not passed to the voice agent")
                        }
                    }
                }
                ProviderSpec::ElevenLabs(Box::new(ElevenLabsSpec {
                    config: elevenlabs::ElevenLabsConfig {
                        http_base: settings.elevenlabs_http_base.clone(),
                        ws_base: settings.elevenlabs_ws_base.clone(),
                        api_key: (!settings.elevenlabs_api_key.is_empty())
                            .then(|| settings.elevenlabs_api_key.clone()),
                        ..Default::default()
                    },
                    conversation,
                    http: self.deps.http.clone(),
                }))
            }
            _ => ProviderSpec::Local,
        };
        let voice = VoiceBridge::new(
            settings.espeak_voice.clone(),
            self.deps.tts.clone(),
            provider,
            ctx.address().recipient(),
            ctx.address().recipient(),
            self.audio.clone(),
        );
        self.voice = Some(voice.start());
    }

    fn spawn_child(&mut self, kind: ChildKind, ctx: &mut Context<Self>) {
        match kind {
            ChildKind::Room => self.spawn_room(ctx),
            ChildKind::Renderer => self.spawn_renderer(ctx),
            ChildKind::Voice => self.spawn_voice(ctx),
        }
    }

    fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if self.idle_timer.is_some() || self.ending {
            return;
        }
        let after = Duration::from_secs(self.row.idle_timeout_seconds.max(1) as u64);
        self.idle_timer = Some(ctx.run_later(after, |act, ctx| {
            act.idle_timer = None;
            act.end(ctx, EndReason::IdleTimeout, None);
        }));
    }

    fn disarm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle_timer.take() {
            ctx.cancel_future(handle);
        }
    }

    fn present(&self) -> bool {
        !self.users.is_empty() || self.clients > 0
    }

    fn bill_tick(&mut self, ctx: &mut Context<Self>) {
        if self.ending {
            return;
        }
        self.billed_seconds += 1;
        let bill = Bill {
            account_id: self.row.account_id.clone(),
            session_id: self.row.id.clone(),
            seconds: 1,
        };
        ctx.spawn(
            self.deps
                .quota
                .send(bill)
                .into_actor(self)
                .map(|reply, act, ctx| match reply {
                    Ok(Ok(balance_ms)) if balance_ms <= 0 => {
                        act.end(ctx, EndReason::MinutesExhausted, None)
                    }
                    Ok(Ok(balance_ms)) => {
                        if balance_ms < MINUTES_LOW_MS && !act.minutes_low_sent {
                            act.minutes_low_sent = true;
                            let frame = json!({"type": "minutes_low", "session_id": act.row.id, "seconds_remaining": balance_ms / 1000});
                            act.broadcast(frame);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(session = %act.row.id, error = %e, "billing failed")
                    }
                    Err(e) => {
                        tracing::error!(session = %act.row.id, error = %e, "quota unreachable")
                    }
                }),
        );
    }

    /// The one way out. Stops billing and timers, bills the last part-second, closes the room,
    /// releases the concurrency slot (and, if it never started, the link use) in one database
    /// write, announces the end, and stops. Runs once whatever asks for it.
    fn end(&mut self, ctx: &mut Context<Self>, reason: EndReason, failure: Option<String>) {
        if self.ending {
            return;
        }
        self.ending = true;
        self.disarm_idle_timer(ctx);
        if let Some(voice) = self.voice.take() {
            voice.do_send(voice::Shutdown);
        }
        // The slot is free at once; its worker detaches, and the Renderer child, its notices
        // channel closed, stops.
        self.renderer = None;
        if let Some(lease) = self.lease.take() {
            self.deps.render_pool.do_send(Release(lease));
        }
        let failed = failure.is_some();
        self.outcome = Some(match (reason, &failure) {
            (EndReason::RoomCreationFailed, Some(f)) => SessionError::RoomCreationFailed(f.clone()),
            (_, Some(f)) => SessionError::Failed(f.clone()),
            _ => SessionError::Ended,
        });
        // Written inside the release future below, not with a second `ctx.wait`: actix runs the
        // newest wait first, and the release ends by stopping the actor.
        let announce_stopping = if failed {
            self.transition(Event::Fail);
            false
        } else {
            self.transition(Event::Stop)
        };
        let final_seconds = self
            .live_since
            .map(|t| (t.elapsed().as_secs_f64().round() as i64 - self.billed_seconds).max(0))
            .unwrap_or(0);
        self.billed_seconds += final_seconds;
        let never_started = self.live_since.is_none();
        let deps = self.deps.clone();
        let row = self.row.clone();
        let room = self.room.take();
        let failure_reason = failure.clone();
        let release = async move {
            if announce_stopping {
                if let Err(e) = deps
                    .store
                    .set_session_state(&row.id, State::Stopping.as_str())
                    .await
                {
                    tracing::error!(session = %row.id, error = %e, "state write failed");
                }
                deps.webhooks.do_send(Emit {
                    session_id: row.id.clone(),
                    event: LifecycleEvent::Stopping,
                });
            }
            if final_seconds > 0 {
                let bill = Bill {
                    account_id: row.account_id.clone(),
                    session_id: row.id.clone(),
                    seconds: final_seconds,
                };
                match deps.quota.send(bill).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(session = %row.id, error = %e, "final bill failed")
                    }
                    Err(e) => tracing::error!(session = %row.id, error = %e, "quota unreachable"),
                }
            }
            let closed = match room {
                Some(room) => room.send(CloseRoom).await.is_ok(),
                None => false,
            };
            if !closed && !never_started {
                // The child is already gone: delete the room here so nothing is left behind.
                if let Err(e) = deps.rooms.delete(&row.room_name).await {
                    tracing::warn!(session = %row.id, error = %e, "room delete failed");
                }
            }
            let finish = Finish {
                row: row.clone(),
                state: if failed { "failed" } else { "stopped" },
                end_reason: reason.as_str(),
                failure_reason,
                refund_link: never_started,
            };
            match deps.quota.send(finish).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(session = %row.id, error = %e, "final session write failed")
                }
                Err(e) => tracing::error!(session = %row.id, error = %e, "quota unreachable"),
            }
            deps.webhooks.do_send(Emit {
                session_id: row.id.clone(),
                event: if failed {
                    LifecycleEvent::Failed
                } else {
                    LifecycleEvent::Stopped
                },
            });
            deps.registry.do_send(Unregister {
                session_id: row.id.clone(),
            });
        };
        ctx.wait(release.into_actor(self).map(move |_, act, ctx| {
            if !failed {
                act.transition(Event::Released);
            }
            let metrics = &act.deps.metrics;
            metrics
                .sessions_ended
                .with_label_values(&[reason.as_str()])
                .inc();
            if act.live_since.is_some() {
                metrics.sessions_live.dec();
            }
            act.row.end_reason = Some(reason.as_str().to_string());
            act.broadcast_status();
            for s in act.subscribers.drain(..).filter(|s| s.owns) {
                let _ = s.recipient.try_send(Outbound::Close);
            }
            let error = act.outcome.clone().unwrap_or(SessionError::Ended);
            for waiter in act.live_waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            for waiter in act.end_waiters.drain(..) {
                let _ = waiter.send(());
            }
            ctx.stop();
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.transition(Event::Start);
        self.persist_state(ctx, Some(LifecycleEvent::Starting));
        self.spawn_room(ctx);
        // The renderer gets ready while the room is made: the first frame is not a second step.
        self.spawn_renderer(ctx);
        self.spawn_voice(ctx);
    }
}

impl Handler<RoomReady> for Session {
    type Result = ();

    fn handle(&mut self, RoomReady(access): RoomReady, ctx: &mut Self::Context) {
        if self.ending {
            return;
        }
        self.access = Some(access.clone());
        if self.state != State::Starting {
            // A restarted room child: the session stays live.
            tracing::info!(session = %self.row.id, "room restored");
            self.broadcast_status();
            return;
        }
        self.transition(Event::RoomReady);
        self.live_since = Some(Instant::now());
        let metrics = &self.deps.metrics;
        metrics.sessions_live.inc();
        metrics
            .session_start_seconds
            .observe(self.requested_at.elapsed().as_secs_f64());
        // Waiters hear "live" once the database says so too.
        self.persist_state_then(ctx, Some(LifecycleEvent::Started), move |act, _| {
            for waiter in act.live_waiters.drain(..) {
                let _ = waiter.send(Ok(access.clone()));
            }
        });
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.bill_tick(ctx));
        let max = Duration::from_secs(self.row.max_duration_seconds.max(1) as u64);
        ctx.run_later(max, |act, ctx| act.end(ctx, EndReason::MaxDuration, None));
        if !self.present() {
            self.arm_idle_timer(ctx);
        }
    }
}

impl Handler<ChildExited> for Session {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        if self.ending {
            return;
        }
        let kind = msg.kind;
        tracing::warn!(session = %self.row.id, child = kind.as_str(), reason = %msg.reason, "child exited");
        match kind {
            ChildKind::Room if self.state == State::Starting => {
                return self.end(ctx, EndReason::RoomCreationFailed, Some(msg.reason));
            }
            ChildKind::Room => self.room = None,
            ChildKind::Renderer => self.renderer = None,
            ChildKind::Voice => self.voice = None,
        }
        match self.restarts[kind.index()].on_failure(Instant::now()) {
            Decision::Restart { after } => {
                self.deps
                    .metrics
                    .child_restarts
                    .with_label_values(&[kind.as_str()])
                    .inc();
                self.restart_counts[kind.index()] += 1;
                let restarts = self.restart_counts[kind.index()];
                let frame = match kind {
                    ChildKind::Renderer => {
                        json!({"type": "renderer_restarted", "session_id": self.row.id, "restarts": restarts, "reason": msg.reason})
                    }
                    ChildKind::Room => {
                        json!({"type": "room_restarted", "session_id": self.row.id, "restarts": restarts, "reason": msg.reason})
                    }
                    ChildKind::Voice => {
                        json!({"type": "voice_restarted", "session_id": self.row.id, "restarts": restarts, "reason": msg.reason})
                    }
                };
                self.broadcast(frame);
                self.broadcast_status();
                ctx.run_later(after, move |act, ctx| {
                    if !act.ending {
                        act.spawn_child(kind, ctx);
                    }
                });
            }
            Decision::Escalate => {
                let reason = format!("{} failed too often: {}", kind.as_str(), msg.reason);
                let end_reason = match kind {
                    ChildKind::Room => EndReason::RoomFailed,
                    ChildKind::Renderer => EndReason::RendererFailed,
                    ChildKind::Voice => EndReason::VoiceFailed,
                };
                self.end(ctx, end_reason, Some(reason));
            }
        }
    }
}

impl Handler<RendererReady> for Session {
    type Result = ();

    fn handle(&mut self, msg: RendererReady, _: &mut Self::Context) {
        match msg {
            RendererReady::Attached {
                device,
                width,
                height,
                mouth,
            } => {
                self.video = json!({
                    "width": width,
                    "height": height,
                    "mouth_region": mouth,
                    "fps": self.deps.settings.render.fps,
                    "device": device,
                });
                self.broadcast_status();
            }
            RendererReady::FirstFrame { .. } => {
                if !std::mem::replace(&mut self.first_frame_seen, true) {
                    self.deps
                        .metrics
                        .render_first_frame_seconds
                        .observe(self.requested_at.elapsed().as_secs_f64());
                }
            }
        }
    }
}

impl Handler<InjectFault> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, InjectFault(kind): InjectFault, ctx: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        match kind {
            ChildKind::Renderer => match &self.renderer {
                Some(renderer) => renderer.do_send(renderer::Crash),
                None => return Err(SessionError::Failed("no renderer is running".into())),
            },
            ChildKind::Voice => {
                // The bridge stops as if its provider died, and reports it the same way.
                if let Some(voice) = self.voice.take() {
                    voice.do_send(voice::Shutdown);
                }
                ctx.address().do_send(ChildExited {
                    kind,
                    reason: "voice fault injected".into(),
                });
            }
            ChildKind::Room => {
                return Err(SessionError::Failed(
                    "a room fails when LiveKit loses it; delete the room there to test that".into(),
                ))
            }
        }
        Ok(())
    }
}

impl Handler<MediaTap> for Session {
    type Result = Result<MediaStreams, SessionError>;

    fn handle(&mut self, _: MediaTap, _: &mut Self::Context) -> Self::Result {
        if self.ending || self.state.is_terminal() {
            return Err(SessionError::NotLive(self.state.as_str()));
        }
        Ok(MediaStreams {
            frames: self.frames.subscribe(),
            audio: self.audio.subscribe(),
            video: self.video.clone(),
        })
    }
}

impl Handler<AwaitLive> for Session {
    type Result = ResponseFuture<Result<RoomAccess, SessionError>>;

    fn handle(&mut self, _: AwaitLive, _: &mut Self::Context) -> Self::Result {
        if let (State::Live, Some(access)) = (self.state, &self.access) {
            let access = access.clone();
            return Box::pin(async move { Ok(access) });
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
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Stop(reason): Stop, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.end_waiters.push(tx);
        self.end(ctx, reason, None);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<ParticipantJoined> for Session {
    type Result = ();

    fn handle(&mut self, msg: ParticipantJoined, ctx: &mut Self::Context) {
        if msg.identity == self.row.agent_identity {
            return;
        }
        self.users.insert(msg.identity);
        self.disarm_idle_timer(ctx);
    }
}

impl Handler<ParticipantLeft> for Session {
    type Result = ();

    fn handle(&mut self, msg: ParticipantLeft, ctx: &mut Self::Context) {
        self.users.remove(&msg.identity);
        if self.state == State::Live && !self.present() {
            self.arm_idle_timer(ctx);
        }
    }
}

impl Handler<ClientAttached> for Session {
    type Result = ();

    fn handle(&mut self, _: ClientAttached, ctx: &mut Self::Context) {
        self.clients += 1;
        self.disarm_idle_timer(ctx);
    }
}

impl Handler<ClientDetached> for Session {
    type Result = ();

    fn handle(&mut self, _: ClientDetached, ctx: &mut Self::Context) {
        self.clients = self.clients.saturating_sub(1);
        if self.state == State::Live && !self.present() {
            self.arm_idle_timer(ctx);
        }
    }
}

impl Handler<PromptUpdated> for Session {
    type Result = ();

    fn handle(&mut self, msg: PromptUpdated, _: &mut Self::Context) {
        tracing::info!(session = %self.row.id, revision = msg.revision, "prompt updated");
        if let Some(voice) = &self.voice {
            voice.do_send(voice::SetPrompt {
                prompt: msg.system_prompt.clone(),
            });
        }
        self.system_prompt = msg.system_prompt;
    }
}

impl Handler<Snapshot> for Session {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(SessionSnapshot {
            state: self.state.as_str(),
            users: self.users.len(),
            clients: self.clients,
            billed_seconds: self.billed_seconds,
            system_prompt: self.system_prompt.clone(),
            room_restarts: self.restart_counts[ChildKind::Room.index()],
            renderer_restarts: self.restart_counts[ChildKind::Renderer.index()],
        })
    }
}

impl Session {
    fn refuse_unless_live(&self) -> Result<(), SessionError> {
        if self.state == State::Live && !self.ending {
            Ok(())
        } else {
            Err(SessionError::NotLive(self.state.as_str()))
        }
    }
}

impl Handler<Speak> for Session {
    type Result = Result<u64, SessionError>;

    fn handle(&mut self, msg: Speak, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        if let Some(voice) = &self.voice {
            voice.do_send(voice::Say {
                utterance,
                text: msg.text,
                interrupt: msg.interrupt,
            });
        }
        Ok(utterance)
    }
}

impl Handler<AddContext> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: AddContext, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        if self.context.len() == MAX_CONTEXT {
            self.context.remove(0);
        }
        self.context.push(msg.text.clone());
        if let Some(voice) = &self.voice {
            voice.do_send(voice::AddContext {
                text: msg.text.clone(),
            });
        }
        let frame = json!({"type": "context_added", "session_id": self.row.id, "text": msg.text, "entries": self.context.len()});
        self.broadcast(frame);
        Ok(())
    }
}

impl Handler<InterruptSpeech> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, _: InterruptSpeech, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        if let Some(voice) = &self.voice {
            voice.do_send(voice::Interrupt);
        }
        Ok(())
    }
}

impl Handler<VoiceEvent> for Session {
    type Result = ();

    fn handle(&mut self, event: VoiceEvent, _: &mut Self::Context) {
        let id = self.row.id.clone();
        let frame = match event {
            VoiceEvent::SpeechStarted { utterance } => {
                self.speaking = Some(utterance);
                json!({"type": "speech_started", "session_id": id, "source": "speak", "utterance_id": utterance})
            }
            VoiceEvent::SpeechEnded {
                utterance,
                interrupted,
            } => {
                self.speaking = None;
                json!({"type": "speech_ended", "session_id": id, "source": "speak", "utterance_id": utterance, "interrupted": interrupted})
            }
            VoiceEvent::SpeechFailed { utterance, error } => {
                self.speaking = None;
                tracing::warn!(session = %id, %error, "speech failed");
                json!({"type": "error", "session_id": id, "utterance_id": utterance, "code": "speech_failed", "message": error})
            }
            VoiceEvent::AgentSpeech { speaking: true, .. } => {
                json!({"type": "speech_started", "session_id": id, "source": "agent"})
            }
            VoiceEvent::AgentSpeech {
                speaking: false,
                interrupted,
            } => {
                json!({"type": "speech_ended", "session_id": id, "source": "agent", "interrupted": interrupted})
            }
            VoiceEvent::Transcript { role, text } => {
                json!({"type": "transcript", "session_id": id, "role": role, "text": text})
            }
            VoiceEvent::Provider {
                provider,
                connected,
                detail,
            } => {
                self.voice_status =
                    json!({"provider": provider, "connected": connected, "detail": detail});
                self.deps.metrics.actor_message("session", "voice_event");
                return self.broadcast_status();
            }
        };
        self.deps.metrics.actor_message("session", "voice_event");
        self.broadcast(frame);
    }
}

impl Handler<Subscribe> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        if self.ending || self.state.is_terminal() {
            return Err(SessionError::NotLive(self.state.as_str()));
        }
        let status: std::sync::Arc<str> = self.status().to_string().into();
        let _ = msg.recipient.try_send(Outbound::Frame(status));
        if msg.owns {
            self.clients += 1;
            self.disarm_idle_timer(ctx);
        }
        self.subscribers.push(Subscriber {
            id: msg.subscriber,
            recipient: msg.recipient,
            owns: msg.owns,
        });
        Ok(())
    }
}

impl Handler<Unsubscribe> for Session {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Self::Context) {
        let before = self.subscribers.len();
        let mut owned = 0;
        self.subscribers.retain(|s| {
            let keep = s.id != msg.subscriber;
            owned += (!keep && s.owns) as usize;
            keep
        });
        if before != self.subscribers.len() && owned > 0 {
            self.clients = self.clients.saturating_sub(owned);
            if self.state == State::Live && !self.present() {
                self.arm_idle_timer(ctx);
            }
        }
    }
}

impl Session {
    /// A receiver of the session's audio (16 kHz PCM chunks), for a media consumer.
    pub fn audio(&self) -> broadcast::Receiver<PcmChunk> {
        self.audio.subscribe()
    }
}

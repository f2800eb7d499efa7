//! The session's children: spawned at start, restarted under their `RestartPolicy` when they die,
//! escalated into the session's failure past it. The Room child's readiness is what makes the
//! session live.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::messages::*;
use super::renderer::{self, Renderer, RendererSpec};
use super::restart::Decision;
use super::room::{Room, RoomSpec, VideoSize};
use super::state::{Event, State};
use super::transport::MediaTaps;
use super::voice::{self, ElevenLabsSpec, ProviderSpec, VoiceBridge};
use super::Session;
use crate::domain::events::{LifecycleEvent, VideoInfo};
use crate::voice::elevenlabs;

impl Session {
    pub(super) fn spawn_room(&mut self, ctx: &mut Context<Self>) {
        let settings = &self.deps.settings;
        let me = ctx.address();
        let spec = RoomSpec {
            backend: self.deps.rooms.clone(),
            session_id: self.row.id.clone(),
            room_name: self.row.room_name.clone(),
            user_identity: self.row.user_identity.clone(),
            agent_identity: self.row.agent_identity.clone(),
            token_ttl: Duration::from_secs(self.row.max_duration_seconds.max(60) as u64 + 300),
            check_interval: Duration::from_millis(settings.sessions.room_check_interval_ms),
            taps: MediaTaps {
                frames: self.media.frames.clone(),
                audio: self.media.audio.clone(),
                wants: self.media.wants.clone(),
            },
            video: self
                .media
                .video
                .as_ref()
                .map(|v| (v.width, v.height, v.fps)),
            livekit: self.deps.livekit.clone(),
            livekit_library: settings.livekit.ffi_library_path(),
            borrowed: self.borrowed.clone(),
            agent_voice: self.voice_from_room,
            rtc: self.deps.rtc.clone(),
            max_video_bitrate: settings.media.video_bitrate_bps,
            max_side: settings.render.max_side,
            fps: settings.render.fps,
            metrics: self.deps.metrics.clone(),
            session: me.clone().recipient(),
            ready: me.clone().recipient(),
            exited: me.clone().recipient(),
            joined: me.clone().recipient(),
            left: me.clone().recipient(),
            heard: me.clone().recipient(),
            agent_audio: me.clone().recipient(),
            closed: me.recipient(),
        };
        self.children.room = Some(Room::launch(spec));
    }

    pub(super) fn spawn_renderer(&mut self, ctx: &mut Context<Self>) {
        let Some(lease) = self.children.lease.clone() else {
            return;
        };
        let spec = RendererSpec {
            pool: self.deps.render_pool.clone(),
            lease,
            session_id: self.row.id.clone(),
            model_asset_id: self.model_asset_id.clone(),
            aspect_ratio: self.row.aspect_ratio.clone(),
            audio: self.media.audio.clone(),
            frames: self.media.frames.clone(),
            wants: self.media.wants.clone(),
            ready: ctx.address().recipient(),
            exited: ctx.address().recipient(),
        };
        self.children.renderer = Some(Renderer::new(spec).start());
    }

    /// The agent's voice: its ElevenLabs conversational agent, or the local TTS alone.
    fn voice_provider(&self) -> ProviderSpec {
        let settings = &self.deps.settings.voice;
        if self.voice_from_room {
            return ProviderSpec::Room;
        }
        let Some(agent) = self.voice_agent.as_ref().filter(|a| a.is_elevenlabs()) else {
            return ProviderSpec::Local;
        };
        let mut conversation =
            elevenlabs::Conversation::new(agent.agent_id.clone(), agent.auth_method)
                .with_prompt(self.system_prompt.clone());
        // The session's `env` reaches the agent as its dynamic variables.
        if let Some(env) = self.row.env.as_deref().and_then(|e| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(e).ok()
        }) {
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

    pub(super) fn spawn_voice(&mut self, ctx: &mut Context<Self>) {
        let voice = VoiceBridge::new(
            self.deps.settings.voice.espeak_voice.clone(),
            self.deps.tts.clone(),
            self.voice_provider(),
            ctx.address().recipient(),
            ctx.address().recipient(),
            self.media.audio.clone(),
        );
        self.children.voice = Some(voice.start());
    }

    fn spawn_child(&mut self, kind: ChildKind, ctx: &mut Context<Self>) {
        match kind {
            ChildKind::Room => self.spawn_room(ctx),
            ChildKind::Renderer => self.spawn_renderer(ctx),
            ChildKind::Voice => self.spawn_voice(ctx),
        }
    }

    /// The room is up: the session goes live, is billed from now, and its timers start. A row
    /// admitted `live` (a room that is ready at once: the local room) says so already, with its
    /// `started_at`: billed from then, and not written again.
    fn go_live(&mut self, ctx: &mut Context<Self>) {
        self.transition(Event::RoomReady);
        let admitted_live = (self.row.state == State::Live)
            .then_some(self.row.started_at)
            .flatten();
        self.start_billing(ctx, admitted_live);
        let metrics = &self.deps.metrics;
        metrics.sessions_live.inc();
        metrics
            .session_start_seconds
            .observe(self.requested_at.elapsed().as_secs_f64());
        // Waiters hear "live" once the database says so too.
        let wake = |act: &mut Self, _: &mut Context<Self>| {
            if let (Some(access), Some(at_ms)) = (act.access.clone(), act.billing.live_at_ms) {
                for waiter in act.live_waiters.drain(..) {
                    let _ = waiter.send(Ok(WentLive {
                        access: access.clone(),
                        at_ms,
                    }));
                }
            }
        };
        if admitted_live.is_some() {
            self.announce(Some(LifecycleEvent::Started));
            wake(self, ctx);
        } else {
            self.persist_state_then(ctx, Some(LifecycleEvent::Started), wake);
        }
        let max = Duration::from_secs(self.row.max_duration_seconds.max(1) as u64);
        ctx.run_later(max, |act, ctx| act.end(ctx, EndReason::MaxDuration, None));
        if !self.present() {
            self.arm_idle_timer(ctx);
        }
    }
}

impl Handler<RoomReady> for Session {
    type Result = ();

    fn handle(&mut self, RoomReady(access): RoomReady, ctx: &mut Self::Context) {
        if self.ending {
            return;
        }
        self.access = Some(access);
        if self.state != State::Starting {
            // A restarted room child: the session stays live.
            tracing::info!(session = %self.row.id, "room restored");
            self.broadcast_status();
            return;
        }
        self.go_live(ctx);
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
            ChildKind::Room => self.children.room = None,
            ChildKind::Renderer => self.children.renderer = None,
            ChildKind::Voice => self.children.voice = None,
        }
        match self.children.policies[kind.index()].on_failure(Instant::now()) {
            Decision::Restart { after } => {
                self.deps
                    .metrics
                    .child_restarts
                    .with_label_values(&[kind.as_str()])
                    .inc();
                self.children.restarts[kind.index()] += 1;
                let restarts = self.children.restarts[kind.index()];
                self.emit(SessionEvent::ChildRestarted {
                    session_id: self.row.id.clone(),
                    child: kind,
                    restarts,
                    reason: msg.reason,
                });
                self.broadcast_status();
                ctx.run_later(after, move |act, ctx| {
                    if !act.ending {
                        act.spawn_child(kind, ctx);
                    }
                });
            }
            Decision::Escalate => {
                let reason = format!("{} failed too often: {}", kind.as_str(), msg.reason);
                self.end(ctx, kind.failure(), Some(reason));
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
                let fps = self.deps.settings.render.fps;
                self.media.video = Some(VideoInfo {
                    width,
                    height,
                    mouth_region: mouth,
                    fps,
                    device,
                });
                if let Some(room) = &self.children.room {
                    room.do_send(VideoSize { width, height, fps });
                }
                self.broadcast_status();
            }
            RendererReady::FirstFrame { after } => {
                if !std::mem::replace(&mut self.media.first_frame_seen, true) {
                    // From the moment its frames were first wanted (nothing is drawn for
                    // nobody); the start itself is `avs_session_start_seconds`.
                    self.deps
                        .metrics
                        .render_first_frame_seconds
                        .observe(after.as_secs_f64());
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
            ChildKind::Renderer => match &self.children.renderer {
                Some(renderer) => renderer.do_send(renderer::Crash::Frame),
                None => return Err(SessionError::Failed("no renderer is running".into())),
            },
            ChildKind::Voice => {
                // The bridge stops as if its provider died, and reports it the same way.
                if let Some(voice) = self.children.voice.take() {
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

impl Handler<InjectWorkerPanic> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, _: InjectWorkerPanic, _: &mut Self::Context) -> Self::Result {
        self.refuse_unless_live()?;
        match &self.children.renderer {
            Some(renderer) => {
                renderer.do_send(renderer::Crash::Worker);
                Ok(())
            }
            None => Err(SessionError::Failed("no renderer is running".into())),
        }
    }
}

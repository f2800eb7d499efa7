//! Who is in the session: participants of its room (LiveKit's webhooks, or the room transport
//! directly) and clients of its channels. With nobody there, the idle timer runs; someone arriving
//! cancels it.

use std::time::Duration;

use actix::prelude::*;

use super::messages::*;
use super::state::State;
use super::Session;

impl Session {
    pub(super) fn present(&self) -> bool {
        !self.presence.users.is_empty() || self.presence.clients > 0 || self.presence.viewers > 0
    }

    pub(super) fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if self.presence.idle_timer.is_some() || self.ending {
            return;
        }
        let after = Duration::from_secs(self.row.idle_timeout_seconds.max(1) as u64);
        self.presence.idle_timer = Some(ctx.run_later(after, |act, ctx| {
            act.presence.idle_timer = None;
            act.end(ctx, EndReason::IdleTimeout, None);
        }));
    }

    pub(super) fn disarm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.presence.idle_timer.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Someone left: with nobody left in a live session, the countdown starts.
    pub(super) fn someone_left(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Live && !self.present() {
            self.arm_idle_timer(ctx);
        }
    }
}

impl Handler<ParticipantJoined> for Session {
    type Result = ();

    fn handle(&mut self, msg: ParticipantJoined, ctx: &mut Self::Context) {
        if msg.identity == self.row.agent_identity {
            return;
        }
        if self.presence.users.insert(msg.identity) {
            self.broadcast_status();
        }
        self.disarm_idle_timer(ctx);
    }
}

impl Handler<ParticipantLeft> for Session {
    type Result = ();

    fn handle(&mut self, msg: ParticipantLeft, ctx: &mut Self::Context) {
        if self.presence.users.remove(&msg.identity) {
            self.broadcast_status();
        }
        self.someone_left(ctx);
    }
}

impl Handler<RoomUpdate> for Session {
    type Result = ();

    fn handle(&mut self, RoomUpdate(status): RoomUpdate, ctx: &mut Self::Context) {
        if !self.deps.rooms.is_livekit() {
            // The local room's participants are its browser viewers.
            let before = self.presence.viewers;
            self.presence.viewers = status.participants;
            if self.presence.viewers > before {
                self.disarm_idle_timer(ctx);
            } else if self.presence.viewers < before {
                self.someone_left(ctx);
            }
        }
        self.presence.room = Some(status);
        self.broadcast_status();
    }
}

impl Handler<UserAudio> for Session {
    type Result = ();

    fn handle(&mut self, UserAudio(pcm): UserAudio, _: &mut Self::Context) {
        if let Some(voice) = &self.children.voice {
            voice.do_send(super::voice::Hear(pcm));
        }
    }
}

impl Handler<ClientAttached> for Session {
    type Result = ();

    fn handle(&mut self, _: ClientAttached, ctx: &mut Self::Context) {
        self.presence.clients += 1;
        self.disarm_idle_timer(ctx);
    }
}

impl Handler<ClientDetached> for Session {
    type Result = ();

    fn handle(&mut self, _: ClientDetached, ctx: &mut Self::Context) {
        self.presence.clients = self.presence.clients.saturating_sub(1);
        self.someone_left(ctx);
    }
}

impl Handler<AgentAudio> for Session {
    type Result = ();

    fn handle(&mut self, audio: AgentAudio, _: &mut Self::Context) {
        // In order, to the voice: a clear must not overtake the audio it drops.
        if let Some(voice) = &self.children.voice {
            voice.do_send(audio);
        }
    }
}

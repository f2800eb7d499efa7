//! The Room child: creates the session's room (LiveKit's RoomService or the local room), mints
//! tokens, watches that the room still exists, and deletes it when told to close.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{ChildExited, ChildKind, RoomReady};
use crate::livekit::RoomBackend;

pub struct Room {
    pub backend: Arc<RoomBackend>,
    pub room_name: String,
    pub user_identity: String,
    pub agent_identity: String,
    pub token_ttl: Duration,
    pub check_interval: Duration,
    pub ready: Recipient<RoomReady>,
    pub exited: Recipient<ChildExited>,
    /// Consecutive failed health checks; one miss may be a blip.
    misses: u32,
}

impl Room {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: Arc<RoomBackend>,
        room_name: String,
        user_identity: String,
        agent_identity: String,
        token_ttl: Duration,
        check_interval: Duration,
        ready: Recipient<RoomReady>,
        exited: Recipient<ChildExited>,
    ) -> Self {
        Self {
            backend,
            room_name,
            user_identity,
            agent_identity,
            token_ttl,
            check_interval,
            ready,
            exited,
            misses: 0,
        }
    }

    fn die(&self, ctx: &mut Context<Self>, reason: String) {
        self.exited.do_send(ChildExited {
            kind: ChildKind::Room,
            reason,
        });
        ctx.stop();
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        let backend = self.backend.clone();
        let name = self.room_name.clone();
        ctx.wait(
            async move { backend.exists(&name).await }
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(true) => act.misses = 0,
                    Ok(false) => act.die(ctx, format!("room {} disappeared", act.room_name)),
                    Err(e) => {
                        act.misses += 1;
                        if act.misses >= 2 {
                            act.die(ctx, e.to_string());
                        }
                    }
                }),
        );
    }
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let backend = self.backend.clone();
        let name = self.room_name.clone();
        let ttl = self.token_ttl;
        let (user, agent) = (self.user_identity.clone(), self.agent_identity.clone());
        let create = async move {
            backend.create(&name, ttl).await?;
            backend.access(&name, &user, &agent, ttl)
        };
        ctx.wait(
            create
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(access) => {
                        act.ready.do_send(RoomReady(access));
                        if act.backend.is_livekit() {
                            ctx.run_interval(act.check_interval, |act, ctx| act.check(ctx));
                        }
                    }
                    Err(e) => act.die(ctx, e.to_string()),
                }),
        );
    }
}

/// Deletes the room (best effort: a room already gone is fine) and stops the child.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseRoom;

impl Handler<CloseRoom> for Room {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: CloseRoom, _: &mut Self::Context) -> Self::Result {
        let backend = self.backend.clone();
        let name = self.room_name.clone();
        Box::pin(
            async move {
                if let Err(e) = backend.delete(&name).await {
                    tracing::warn!(room = %name, error = %e, "room delete failed");
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

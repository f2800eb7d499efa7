//! The one way out. Whatever ends a session (the API, a client, its timers, its balance, its
//! room, a child past its restart budget, a drain), `end` runs once and in named steps:
//! stop the children and free the slot; then, in order and off the actor's message flow,
//! announce `stopping`, bill the last part-second, close the room, make the one guarded write
//! that releases the concurrency count (and, if it never started, the link use), notify the
//! webhooks and the registry; then tell the clients and stop.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::*;
use super::room::{CloseRoom, Room};
use super::state::{Event, State};
use super::voice;
use super::{Session, SessionDeps};
use crate::actors::quota::{Bill, Finish};
use crate::actors::render_pool::Release;
use crate::actors::webhooks::Emit;
use crate::domain::events::LifecycleEvent;
use crate::store::entities::session as session_row;

/// What the release steps need, taken from the actor when it starts ending.
struct Teardown {
    deps: Arc<SessionDeps>,
    row: session_row::Model,
    reason: EndReason,
    failure: Option<String>,
    announce_stopping: bool,
    final_seconds: i64,
    room: Option<Addr<Room>>,
    never_started: bool,
}

impl Teardown {
    async fn run(self) {
        if self.announce_stopping {
            self.announce_stopping().await;
        }
        self.bill_final().await;
        self.close_room().await;
        self.finish().await;
        self.notify();
    }

    async fn announce_stopping(&self) {
        let id = &self.row.id;
        if let Err(e) = self
            .deps
            .store
            .set_session_state(id, State::Stopping.as_str())
            .await
        {
            tracing::error!(session = %id, error = %e, "state write failed");
        }
        self.deps.webhooks.do_send(Emit {
            session_id: id.clone(),
            event: LifecycleEvent::Stopping,
        });
    }

    async fn bill_final(&self) {
        if self.final_seconds <= 0 {
            return;
        }
        let bill = Bill {
            account_id: self.row.account_id.clone(),
            session_id: self.row.id.clone(),
            seconds: self.final_seconds,
        };
        match self.deps.quota.send(bill).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(session = %self.row.id, error = %e, "final bill failed"),
            Err(e) => tracing::error!(session = %self.row.id, error = %e, "quota unreachable"),
        }
    }

    async fn close_room(&self) {
        let closed = match &self.room {
            Some(room) => room.send(CloseRoom).await.is_ok(),
            None => false,
        };
        if !closed && !self.never_started {
            // The child is already gone: delete the room here so nothing is left behind.
            if let Err(e) = self.deps.rooms.delete(&self.row.room_name).await {
                tracing::warn!(session = %self.row.id, error = %e, "room delete failed");
            }
        }
    }

    async fn finish(&self) {
        let finish = Finish {
            row: self.row.clone(),
            state: if self.failed() { "failed" } else { "stopped" },
            end_reason: self.reason.as_str(),
            failure_reason: self.failure.clone(),
            refund_link: self.never_started,
        };
        match self.deps.quota.send(finish).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(session = %self.row.id, error = %e, "final session write failed")
            }
            Err(e) => tracing::error!(session = %self.row.id, error = %e, "quota unreachable"),
        }
    }

    fn notify(&self) {
        self.deps.webhooks.do_send(Emit {
            session_id: self.row.id.clone(),
            event: if self.failed() {
                LifecycleEvent::Failed
            } else {
                LifecycleEvent::Stopped
            },
        });
        self.deps.registry.do_send(Unregister {
            session_id: self.row.id.clone(),
        });
    }

    fn failed(&self) -> bool {
        self.failure.is_some()
    }
}

impl Session {
    /// Ends the session (once; later calls do nothing). `failure` makes it `failed` with that
    /// reason (kept in the log and the row, never shown to clients beyond the end reason).
    pub(super) fn end(
        &mut self,
        ctx: &mut Context<Self>,
        reason: EndReason,
        failure: Option<String>,
    ) {
        if self.ending {
            return;
        }
        self.ending = true;
        self.stop_children(ctx);
        let failed = failure.is_some();
        self.outcome = Some(match (reason, &failure) {
            (EndReason::RoomCreationFailed, Some(f)) => SessionError::RoomCreationFailed(f.clone()),
            (_, Some(f)) => SessionError::Failed(f.clone()),
            _ => SessionError::Ended,
        });
        // `stopping` is written inside the release below, not with a second `ctx.wait`: actix
        // runs the newest wait first, and the release ends by stopping the actor.
        let announce_stopping = if failed {
            self.transition(Event::Fail);
            false
        } else {
            self.transition(Event::Stop)
        };
        let release = Teardown {
            deps: self.deps.clone(),
            row: self.row.clone(),
            reason,
            failure,
            announce_stopping,
            final_seconds: self.take_final_seconds(),
            room: self.children.room.take(),
            never_started: self.billing.live_since.is_none(),
        };
        ctx.wait(
            release
                .run()
                .into_actor(self)
                .map(move |_, act, ctx| act.ended(ctx, reason, failed)),
        );
    }

    /// The voice goes quiet and the render slot is free at once; the Renderer child, its
    /// notices channel closed by the release, stops on its own.
    fn stop_children(&mut self, ctx: &mut Context<Self>) {
        self.disarm_idle_timer(ctx);
        if let Some(voice) = self.children.voice.take() {
            voice.do_send(voice::Shutdown);
        }
        self.children.renderer = None;
        if let Some(lease) = self.children.lease.take() {
            self.deps.render_pool.do_send(Release(lease));
        }
    }

    /// Everything is released: count it, tell the clients and waiters, and stop.
    fn ended(&mut self, ctx: &mut Context<Self>, reason: EndReason, failed: bool) {
        if !failed {
            self.transition(Event::Released);
        }
        let metrics = &self.deps.metrics;
        metrics
            .sessions_ended
            .with_label_values(&[reason.as_str()])
            .inc();
        if self.billing.live_since.is_some() {
            metrics.sessions_live.dec();
        }
        self.row.end_reason = Some(reason.as_str().to_string());
        self.broadcast_status();
        self.close_subscribers();
        let error = self.outcome.clone().unwrap_or(SessionError::Ended);
        for waiter in self.live_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        for waiter in self.end_waiters.drain(..) {
            let _ = waiter.send(());
        }
        ctx.stop();
    }
}

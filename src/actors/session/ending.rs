//! The one way out. Whatever ends a session (the API, a client, its timers, its balance, its
//! room, a child past its restart budget, a drain), `end` runs once and in named steps:
//! stop the children and free the slot; then, in order and off the actor's message flow,
//! announce `stopping` (to the webhooks only: the row goes from `live` to its end in one write),
//! close the room, make the one guarded write that bills the last part-second and releases the
//! concurrency count (and, if it never started, the link use), notify the webhooks and the
//! registry; then tell the clients and stop.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::messages::*;
use super::room::{CloseRoom, Room};
use super::state::{Event, State};
use super::voice;
use super::{Session, SessionDeps};
use crate::actors::billing::Finish;
use crate::actors::render_pool::Release;
use crate::actors::webhooks::Emit;
use crate::domain::events::LifecycleEvent;
use crate::store::billing::FinalLine;
use crate::store::entities::session as session_row;

/// What the release steps need, taken from the actor when it starts ending.
struct Teardown {
    deps: Arc<SessionDeps>,
    row: session_row::Model,
    reason: EndReason,
    failure: Option<String>,
    announce_stopping: bool,
    live_since: Option<Instant>,
    /// When it went live on the wall clock (the row's `started_at`).
    live_at_ms: Option<i64>,
    /// When the end was asked for (the row's `ended_at`): the live time billed stops here.
    ended_at_ms: i64,
    room: Option<Addr<Room>>,
}

impl Teardown {
    /// Answers the ended row as the final write left it (`None` if that write was not seen).
    async fn run(self) -> Option<session_row::Model> {
        if self.announce_stopping {
            self.announce_stopping();
        }
        self.close_room().await;
        let row = self.finish().await;
        self.notify();
        row
    }

    /// `stopping` goes to the session's clients (the status broadcast) and its webhook, not to
    /// the row: the row goes from `live` to `stopped` in the batched final write, one statement
    /// fewer on every stop's path (the stop's answer waits for that write anyway).
    fn announce_stopping(&self) {
        self.deps.webhooks.do_send(Emit {
            session_id: self.row.id.clone(),
            event: LifecycleEvent::Stopping,
        });
    }

    async fn close_room(&self) {
        let closed = match &self.room {
            Some(room) => room.send(CloseRoom).await.is_ok(),
            None => false,
        };
        if !closed && self.live_since.is_some() {
            // The child is already gone: delete the room here so nothing is left behind.
            if let Err(e) = self.deps.rooms.delete(&self.row.room_name).await {
                tracing::warn!(session = %self.row.id, error = %e, "room delete failed");
            }
        }
    }

    /// The one write that settles the last seconds and releases the concurrency count (and link
    /// use), batched with other endings by the Billing actor.
    async fn finish(&self) -> Option<session_row::Model> {
        let finish = Finish {
            line: FinalLine {
                session_id: self.row.id.clone(),
                account_id: self.row.account_id.clone(),
                link_id: self.row.link_id.clone(),
                total_seconds: None,
                state: if self.failed() {
                    State::Failed
                } else {
                    State::Stopped
                },
                end_reason: self.reason.as_str(),
                failure_reason: self.failure.clone(),
                refund_link: self.live_since.is_none(),
                ended_at: self.ended_at_ms,
            },
            live_at_ms: self.live_at_ms,
        };
        match self.deps.billing.send(finish).await {
            Ok(row) => row,
            Err(_) => {
                tracing::error!(session = %self.row.id, "billing unreachable: the session's end is not written");
                None
            }
        }
    }

    fn notify(&self) {
        // `node_lost` here means another node ended the row and sent its webhook.
        if self.reason != EndReason::NodeLost {
            self.deps.webhooks.do_send(Emit {
                session_id: self.row.id.clone(),
                event: if self.failed() {
                    LifecycleEvent::Failed
                } else {
                    LifecycleEvent::Stopped
                },
            });
        }
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
        // `stopping` is announced inside the release below, not with a second `ctx.wait`: actix
        // runs the newest wait first, and the release ends by stopping the actor.
        let announce_stopping = if failed {
            self.transition(Event::Fail);
            false
        } else {
            // A drain ends every session of the node at once: no `stopping` webhook for each. A
            // session another node ended (`node_lost`) has its row and its webhooks written
            // already.
            self.transition(Event::Stop)
                && !matches!(reason, EndReason::Shutdown | EndReason::NodeLost)
        };
        let release = Teardown {
            deps: self.deps.clone(),
            row: self.row.clone(),
            reason,
            failure,
            announce_stopping,
            live_since: self.billing.live_since,
            live_at_ms: self.billing.live_at_ms,
            ended_at_ms: crate::domain::time::now_ms(),
            room: self.children.room.take(),
        };
        ctx.wait(
            release
                .run()
                .into_actor(self)
                .map(move |row, act, ctx| act.ended(ctx, reason, failed, row)),
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
    fn ended(
        &mut self,
        ctx: &mut Context<Self>,
        reason: EndReason,
        failed: bool,
        row: Option<session_row::Model>,
    ) {
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
            let _ = waiter.send(row.clone());
        }
        ctx.stop();
    }
}

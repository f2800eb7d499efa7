//! The Renderer child: holds nothing but its session's place on a render device. It gets the
//! session's base frame from the RenderPool (shared per avatar), attaches the session's audio and
//! frame channels to its slot's worker, and reports the first frame, or a failure, to the Session.
//! The frames themselves never pass through an actor.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};

use super::messages::{ChildExited, ChildKind, RendererReady};
use crate::actors::render_pool::{
    Attach, Detach, Prepare, RenderNotice, RenderPool, SlotLease, FAULT_FRAME, FAULT_WORKER_PANIC,
};
use crate::media::{FrameWants, VideoFrame};
use crate::voice::Voiced;

/// Make rendering fail as if it crashed (fault injection for operators and tests): this session's
/// next frame, or its device's whole worker (a panic in its tick).
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub enum Crash {
    Frame,
    Worker,
}

pub struct Renderer {
    pool: Addr<RenderPool>,
    lease: SlotLease,
    session_id: String,
    model_asset_id: String,
    aspect_ratio: String,
    audio: broadcast::Sender<Voiced>,
    frames: broadcast::Sender<VideoFrame>,
    wants: Arc<FrameWants>,
    ready: Recipient<RendererReady>,
    exited: Recipient<ChildExited>,
    fault: Arc<AtomicU8>,
    dead: bool,
}

/// What a Renderer needs from its Session.
pub struct RendererSpec {
    pub pool: Addr<RenderPool>,
    pub lease: SlotLease,
    pub session_id: String,
    pub model_asset_id: String,
    pub aspect_ratio: String,
    pub audio: broadcast::Sender<Voiced>,
    pub frames: broadcast::Sender<VideoFrame>,
    pub wants: Arc<FrameWants>,
    pub ready: Recipient<RendererReady>,
    pub exited: Recipient<ChildExited>,
}

impl Renderer {
    pub fn new(spec: RendererSpec) -> Self {
        Self {
            pool: spec.pool,
            lease: spec.lease,
            session_id: spec.session_id,
            model_asset_id: spec.model_asset_id,
            aspect_ratio: spec.aspect_ratio,
            audio: spec.audio,
            frames: spec.frames,
            wants: spec.wants,
            ready: spec.ready,
            exited: spec.exited,
            fault: Arc::new(AtomicU8::new(0)),
            dead: false,
        }
    }

    fn die(&mut self, ctx: &mut Context<Self>, reason: String) {
        if std::mem::replace(&mut self.dead, true) {
            return;
        }
        self.exited.do_send(ChildExited {
            kind: ChildKind::Renderer,
            reason,
        });
        ctx.stop();
    }
}

impl Actor for Renderer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let prepare = Prepare {
            model_asset_id: self.model_asset_id.clone(),
            aspect_ratio: self.aspect_ratio.clone(),
        };
        let pool = self.pool.clone();
        ctx.wait(pool.send(prepare).into_actor(self).map(|reply, act, ctx| {
            let prepared = match reply {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(e)) => return act.die(ctx, e.to_string()),
                Err(_) => return act.die(ctx, "the render pool is gone".into()),
            };
            let (width, height) = (prepared.width() as u32, prepared.height() as u32);
            let r = prepared.model().mouth.region;
            let mouth = [r.x, r.y, r.w, r.h];
            let (tx, rx) = mpsc::unbounded_channel();
            let attach = Attach {
                lease: act.lease.clone(),
                session_id: act.session_id.clone(),
                prepared,
                audio: act.audio.subscribe(),
                frames: act.frames.clone(),
                notices: tx,
                fault: act.fault.clone(),
                wants: act.wants.clone(),
            };
            ctx.add_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|notice| (notice, rx))
            }));
            ctx.wait(act.pool.send(attach).into_actor(act).map(
                move |reply, act, ctx| match reply {
                    Ok(Ok(())) => act.ready.do_send(RendererReady::Attached {
                        device: act.lease.label.clone(),
                        width,
                        height,
                        mouth,
                    }),
                    Ok(Err(e)) => act.die(ctx, e.to_string()),
                    Err(_) => act.die(ctx, "the render pool is gone".into()),
                },
            ));
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pool.do_send(Detach {
            slot: self.lease.slot,
        });
    }
}

impl StreamHandler<RenderNotice> for Renderer {
    fn handle(&mut self, notice: RenderNotice, ctx: &mut Self::Context) {
        match notice {
            RenderNotice::FirstFrame { after } => {
                self.ready.do_send(RendererReady::FirstFrame { after });
            }
            RenderNotice::Failed(reason) => self.die(ctx, reason),
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The worker dropped our channel without a word: it is gone, or we were detached.
    }
}

impl Handler<Crash> for Renderer {
    type Result = ();

    fn handle(&mut self, crash: Crash, _: &mut Self::Context) {
        let fault = match crash {
            Crash::Frame => FAULT_FRAME,
            Crash::Worker => FAULT_WORKER_PANIC,
        };
        self.fault.store(fault, Ordering::Relaxed);
    }
}

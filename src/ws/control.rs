//! The control channel: one actor per WebSocket connection (actix-web-actors; the glue lives in this
//! module alone, so a later move to actix-ws touches nothing else). A connection is scoped to one
//! session, or to every live session of an agent, including sessions that start later.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::json;

use super::protocol::{self, Command, FrameError};
use crate::actors::registry::{LiveSession, Unwatch, WatchAgent};
use crate::actors::session::messages::{
    EndReason, Outbound, SessionAppeared, Subscribe, Unsubscribe,
};
use crate::actors::session::{deliver, Directive, Session};
use crate::state::AppState;

#[derive(Clone)]
pub enum Scope {
    Session(LiveSession),
    Agent(String),
    /// A session that has already ended: its final status is sent, then the channel closes.
    Ended(serde_json::Value),
}

pub struct ControlSocket {
    scope: Scope,
    state: AppState,
    id: u64,
    sessions: HashMap<String, Addr<Session>>,
    last_heard: Instant,
}

pub fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ControlSocket {
    pub fn new(scope: Scope, state: AppState) -> Self {
        Self {
            scope,
            state,
            id: next_id(),
            sessions: HashMap::new(),
            last_heard: Instant::now(),
        }
    }

    fn channel(&self) -> &'static str {
        match self.scope {
            Scope::Session(_) | Scope::Ended(_) => "session",
            Scope::Agent(_) => "agent",
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, frame: serde_json::Value) {
        let kind = frame["type"].as_str().unwrap_or("unknown").to_string();
        self.state
            .metrics
            .ws_frames
            .with_label_values(&["out", &kind])
            .inc();
        ctx.text(frame.to_string());
    }

    fn subscribe(&mut self, live: LiveSession, ctx: &mut ws::WebsocketContext<Self>) {
        let owns = matches!(self.scope, Scope::Session(_));
        let request = Subscribe {
            subscriber: self.id,
            recipient: ctx.address().recipient(),
            owns,
        };
        self.sessions
            .insert(live.session_id.clone(), live.addr.clone());
        let session_id = live.session_id;
        ctx.wait(live.addr.send(request).into_actor(self).map(move |reply, act, ctx| {
            if !matches!(reply, Ok(Ok(()))) {
                act.sessions.remove(&session_id);
                if owns {
                    // The session ended between look-up and subscription: say so and close.
                    act.send(ctx, json!({"type": "status", "session_id": session_id, "state": "stopped"}));
                    ctx.close(Some(ws::CloseCode::Normal.into()));
                    ctx.stop();
                }
            }
        }));
    }

    /// Runs a command against every session in scope; answers `ack` with how many took it.
    fn command(&mut self, command: Command, ctx: &mut ws::WebsocketContext<Self>) {
        let id = command.id().map(str::to_string);
        let targets: Vec<Addr<Session>> = self.sessions.values().cloned().collect();
        let metrics = self.state.metrics.clone();
        let directive = match command {
            Command::Speak {
                text, interrupt, ..
            } => Directive::Speak { text, interrupt },
            Command::AddContext { text, .. } => Directive::AddContext(text),
            Command::Interrupt { .. } => Directive::Interrupt,
            Command::Stop { .. } => Directive::Stop(EndReason::StoppedByClient),
            // Answered by the socket itself (`pong`); never delivered.
            Command::Ping { .. } => return,
        };
        let work = async move {
            let delivered = deliver(targets, &directive).await;
            metrics
                .fanout_deliveries
                .with_label_values(&["ws"])
                .inc_by(delivered as u64);
            delivered
        };
        // `wait` keeps acks in the order the commands came.
        ctx.wait(work.into_actor(self).map(move |delivered, act, ctx| {
            act.send(ctx, protocol::ack(id.as_deref(), delivered));
        }));
    }

    fn refuse(&self, ctx: &mut ws::WebsocketContext<Self>, error: FrameError) {
        self.send(ctx, protocol::error_frame(&error));
    }
}

impl super::Heard for ControlSocket {
    fn last_heard(&self) -> Instant {
        self.last_heard
    }
}

impl Actor for ControlSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        super::keep_alive(ctx, &self.state.settings.ws, self.channel());
        self.state
            .metrics
            .ws_connections
            .with_label_values(&[self.channel()])
            .inc();
        match self.scope.clone() {
            Scope::Session(live) => self.subscribe(live, ctx),
            Scope::Ended(status) => {
                self.send(ctx, status);
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
            Scope::Agent(agent_id) => {
                let watch = WatchAgent {
                    agent_id,
                    watcher: self.id,
                    recipient: ctx.address().recipient(),
                };
                ctx.wait(
                    self.state
                        .registry
                        .send(watch)
                        .into_actor(self)
                        .map(|live, act, ctx| {
                            for session in live.unwrap_or_default() {
                                act.subscribe(session, ctx);
                            }
                        }),
                );
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.state
            .metrics
            .ws_connections
            .with_label_values(&[self.channel()])
            .dec();
        for session in self.sessions.values() {
            session.do_send(Unsubscribe {
                subscriber: self.id,
            });
        }
        if let Scope::Agent(_) = self.scope {
            self.state.registry.do_send(Unwatch { watcher: self.id });
        }
    }
}

impl Handler<Outbound> for ControlSocket {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame(text) => ctx.text(&*text),
            Outbound::Close => {
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }
}

impl Handler<SessionAppeared> for ControlSocket {
    type Result = ();

    fn handle(&mut self, SessionAppeared(live): SessionAppeared, ctx: &mut Self::Context) {
        self.subscribe(live, ctx);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for ControlSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                // Oversized or malformed at the WebSocket level: the codec cannot resync.
                tracing::info!(error = %e, "control channel protocol error");
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
                return;
            }
        };
        match msg {
            ws::Message::Text(text) => {
                let command = match protocol::parse(&text) {
                    Ok(command) => command,
                    Err(e) => return self.refuse(ctx, e),
                };
                let kind = match &command {
                    Command::Speak { .. } => "speak",
                    Command::AddContext { .. } => "add_context",
                    Command::Interrupt { .. } => "interrupt",
                    Command::Stop { .. } => "stop",
                    Command::Ping { .. } => "ping",
                };
                self.state
                    .metrics
                    .ws_frames
                    .with_label_values(&["in", kind])
                    .inc();
                match command {
                    Command::Ping { id } => self.send(ctx, protocol::pong(id.as_deref())),
                    Command::Stop { id } if matches!(self.scope, Scope::Agent(_)) => self.refuse(
                        ctx,
                        FrameError {
                            code: "not_allowed",
                            message: "`stop` ends one session: send it on that session's channel."
                                .into(),
                            id,
                        },
                    ),
                    command => self.command(command, ctx),
                }
            }
            ws::Message::Binary(_) => self.refuse(
                ctx,
                FrameError {
                    code: "binary_not_supported",
                    message: "Send JSON text frames.".into(),
                    id: None,
                },
            ),
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(_) => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}

/// Starts a control channel on `req` (the upgrade is already authorised by the caller).
pub fn start(
    scope: Scope,
    state: AppState,
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    ws::WsResponseBuilder::new(ControlSocket::new(scope, state), req, payload)
        .frame_size(protocol::MAX_FRAME_BYTES * 4)
        .start()
}

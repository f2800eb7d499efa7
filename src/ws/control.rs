//! The control channel: one task per WebSocket connection, scoped to one session, or to every live
//! session of an agent (including sessions that start later). Commands are answered by `ack` in the
//! order they came, while events keep flowing.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Instant;

use actix::prelude::*;
use actix_ws::{AggregatedMessage, CloseCode, Session as Socket};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::protocol::{self, Command, FrameError};
use super::relay::{Frame, Remote};
use super::{close_reason, next_id, Heartbeat};
use crate::actors::registry::{LiveSession, Unwatch, WatchAgent};
use crate::actors::session::commands::{deliver, Directive};
use crate::actors::session::messages::{EndReason, Outbound, Subscribe, Unsubscribe};
use crate::actors::session::Session;
use crate::domain::events::SessionStatus;
use crate::state::AppState;

pub enum Scope {
    Session(LiveSession),
    /// A session another node runs: its events come relayed from there (`super::relay`), its
    /// commands go there.
    Relayed {
        agent_id: String,
        room_name: String,
        remote: Box<Remote>,
    },
    Agent(String),
    /// A session that has already ended: its final status is sent, then the channel closes.
    Ended(Box<SessionStatus>),
}

impl Scope {
    fn channel(&self) -> &'static str {
        match self {
            Scope::Session(_) | Scope::Relayed { .. } | Scope::Ended(_) => "session",
            Scope::Agent(_) => "agent",
        }
    }
}

type Ack = Pin<Box<dyn std::future::Future<Output = Value>>>;

/// Who a channel's commands go to: the sessions it subscribed to here, or (relayed, or an agent's
/// channel on one of several nodes) the agent's sessions wherever they run, or one room's.
#[derive(Clone)]
enum Targets {
    Here,
    Everywhere {
        agent_id: String,
        room: Option<String>,
    },
}

struct Channel {
    scope: &'static str,
    targets: Targets,
    state: AppState,
    socket: Socket,
    id: u64,
    sessions: HashMap<String, Addr<Session>>,
    /// A per-session channel holds this weakly: once its session drops it (a reader too slow),
    /// the inbox ends and the channel closes. An agent channel holds it for sessions to come.
    events: Events,
}

enum Events {
    Strong(mpsc::Sender<Outbound>),
    Weak(mpsc::WeakSender<Outbound>),
}

impl Events {
    fn sender(&self) -> Option<mpsc::Sender<Outbound>> {
        match self {
            Events::Strong(tx) => Some(tx.clone()),
            Events::Weak(tx) => tx.upgrade(),
        }
    }
}

/// How a channel's loop goes on after one step.
enum Next {
    Continue,
    Close(Option<actix_ws::CloseReason>),
}

impl Channel {
    async fn send(&mut self, frame: Value) -> bool {
        let kind = frame["type"].as_str().unwrap_or("unknown").to_string();
        self.state
            .metrics
            .ws_frames
            .with_label_values(&["out", &kind])
            .inc();
        self.socket.text(frame.to_string()).await.is_ok()
    }

    /// Subscribes to `live`'s events; a per-session channel whose session is already gone says so
    /// and closes.
    async fn subscribe(&mut self, live: LiveSession) -> Next {
        let owns = self.scope == "session";
        let Some(sender) = self.events.sender() else {
            return Next::Close(None);
        };
        let request = Subscribe {
            subscriber: self.id,
            sender,
            owns,
        };
        let reply = live.addr.send(request).await;
        if matches!(reply, Ok(Ok(()))) {
            self.sessions.insert(live.session_id, live.addr);
            return Next::Continue;
        }
        if owns {
            // The session ended between look-up and subscription: its row has the last word.
            let ended = match self.state.store.session(&live.session_id).await {
                Ok(Some(row)) => row.status(),
                _ => SessionStatus::ended(
                    &live.session_id,
                    &live.agent_id,
                    &live.room_name,
                    crate::domain::session::SessionState::Stopped,
                    0,
                    None,
                ),
            };
            self.send(protocol::status_frame(&ended)).await;
            return Next::Close(close_reason(CloseCode::Normal, "session ended"));
        }
        Next::Continue
    }

    /// A command for the sessions in scope, as a future answering its `ack`.
    fn command(&self, command: Command) -> Ack {
        let received = Instant::now();
        let kind = command.kind();
        let id = command.id().map(str::to_string);
        let here: Vec<Addr<Session>> = match self.targets {
            Targets::Here => self.sessions.values().cloned().collect(),
            Targets::Everywhere { .. } => Vec::new(),
        };
        let targets = self.targets.clone();
        let sessions = self.state.sessions.clone();
        let metrics = self.state.metrics.clone();
        let directive = match command {
            Command::Speak {
                text, interrupt, ..
            } => Directive::Speak { text, interrupt },
            Command::AddContext { text, .. } => Directive::AddContext(text),
            Command::Interrupt { .. } => Directive::Interrupt,
            Command::Stop { .. } => Directive::Stop(EndReason::StoppedByClient),
            Command::Ping { id } => {
                return Box::pin(async move {
                    let pong = protocol::pong(id.as_deref());
                    metrics
                        .control_ack
                        .with_label_values(&[kind])
                        .observe(received.elapsed().as_secs_f64());
                    pong
                });
            }
        };
        Box::pin(async move {
            let delivered = match targets {
                Targets::Here => deliver(here, &directive).await,
                Targets::Everywhere { agent_id, room } => sessions
                    .deliver_to_agent(&agent_id, room.as_deref(), &directive)
                    .await
                    .unwrap_or(0),
            };
            metrics
                .fanout_deliveries
                .with_label_values(&["ws"])
                .inc_by(delivered as u64);
            let ack = protocol::ack(id.as_deref(), delivered);
            metrics
                .control_ack
                .with_label_values(&[kind])
                .observe(received.elapsed().as_secs_f64());
            ack
        })
    }

    /// One frame from the client: a command to run (its ack queued in order), or a refusal.
    async fn received(
        &mut self,
        message: AggregatedMessage,
        acks: &mut FuturesOrdered<Ack>,
    ) -> Next {
        match message {
            AggregatedMessage::Text(text) => {
                let command = match protocol::parse(&text) {
                    Ok(command) => command,
                    Err(e) => return self.refuse(e).await,
                };
                self.state
                    .metrics
                    .ws_frames
                    .with_label_values(&["in", command.kind()])
                    .inc();
                if let (Command::Stop { id }, "agent") = (&command, self.scope) {
                    let refusal = FrameError {
                        code: "not_allowed",
                        message: "`stop` ends one session: send it on that session's channel."
                            .into(),
                        id: id.clone(),
                    };
                    return self.refuse(refusal).await;
                }
                acks.push_back(self.command(command));
                Next::Continue
            }
            AggregatedMessage::Binary(_) => {
                self.refuse(FrameError {
                    code: "binary_not_supported",
                    message: "Send JSON text frames.".into(),
                    id: None,
                })
                .await
            }
            AggregatedMessage::Ping(bytes) => {
                let _ = self.socket.pong(&bytes).await;
                Next::Continue
            }
            AggregatedMessage::Pong(_) => Next::Continue,
            AggregatedMessage::Close(reason) => Next::Close(reason),
        }
    }

    async fn refuse(&mut self, error: FrameError) -> Next {
        if self.send(protocol::error_frame(&error)).await {
            Next::Continue
        } else {
            Next::Close(None)
        }
    }

    async fn outbound(&mut self, outbound: Option<Outbound>) -> Next {
        match outbound {
            Some(Outbound::Event(event)) => {
                self.state
                    .metrics
                    .ws_frames
                    .with_label_values(&["out", event.kind()])
                    .inc();
                let text = protocol::event_frame(&event).to_string();
                if self.socket.text(text).await.is_err() {
                    return Next::Close(None);
                }
                Next::Continue
            }
            Some(Outbound::Close) => Next::Close(close_reason(CloseCode::Normal, "session ended")),
            // Every session dropped our sender (a reader too slow for them): nothing more comes.
            None => Next::Close(close_reason(CloseCode::Policy, "too slow")),
        }
    }

    /// A frame relayed from another node: events as they are, the end as the end.
    async fn relayed(&mut self, frame: Frame) -> Next {
        match frame {
            Frame::Text { kind, text } => {
                self.state
                    .metrics
                    .ws_frames
                    .with_label_values(&["out", &kind])
                    .inc();
                if self.socket.text(text).await.is_err() {
                    return Next::Close(None);
                }
                Next::Continue
            }
            Frame::Binary(_) => Next::Continue,
            Frame::Close(reason) => Next::Close(reason),
        }
    }

    fn leave(&self) {
        for session in self.sessions.values() {
            session.do_send(Unsubscribe {
                subscriber: self.id,
            });
        }
        if self.scope == "agent" {
            self.state.registry.do_send(Unwatch { watcher: self.id });
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
    let (response, socket, stream) = actix_ws::handle(req, payload)?;
    let stream = stream
        .max_frame_size(protocol::MAX_FRAME_BYTES * 4)
        .aggregate_continuations()
        .max_continuation_size(protocol::MAX_FRAME_BYTES * 4);
    actix_web::rt::spawn(run(scope, state, socket, stream));
    Ok(response)
}

/// The next frame a relay brought; never, without one.
async fn relayed(remote: &mut Option<Box<Remote>>) -> Frame {
    match remote {
        Some(remote) => remote.next().await,
        None => std::future::pending().await,
    }
}

async fn run(
    scope: Scope,
    state: AppState,
    socket: Socket,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let channel_name = scope.channel();
    let metrics = state.metrics.clone();
    metrics
        .ws_connections
        .with_label_values(&[channel_name])
        .inc();
    let (events_tx, mut inbox) = mpsc::channel(state.settings.ws.mailbox_capacity.max(1));
    let events = match scope {
        Scope::Agent(_) => Events::Strong(events_tx.clone()),
        _ => Events::Weak(events_tx.downgrade()),
    };
    let targets = match &scope {
        Scope::Relayed {
            agent_id,
            room_name,
            ..
        } => Targets::Everywhere {
            agent_id: agent_id.clone(),
            room: Some(room_name.clone()),
        },
        Scope::Agent(agent_id) if state.sessions.cluster().is_some() => Targets::Everywhere {
            agent_id: agent_id.clone(),
            room: None,
        },
        _ => Targets::Here,
    };
    let mut heartbeat = Heartbeat::new(&state.settings.ws);
    let mut channel = Channel {
        scope: channel_name,
        targets,
        id: next_id(),
        socket,
        sessions: HashMap::new(),
        events,
        state,
    };
    let (appeared_tx, mut appeared) = mpsc::unbounded_channel();
    let mut acks: FuturesOrdered<Ack> = FuturesOrdered::new();
    let mut remote = None;
    let mut watched = None;
    // A relayed session's events come from its node only: nothing here sends on `inbox`.
    let events_here = !matches!(scope, Scope::Relayed { .. });
    let mut next = match scope {
        Scope::Session(live) => channel.subscribe(live).await,
        Scope::Relayed { remote: r, .. } => {
            remote = Some(r);
            Next::Continue
        }
        Scope::Ended(status) => {
            channel.send(protocol::status_frame(&status)).await;
            Next::Close(close_reason(CloseCode::Normal, "session ended"))
        }
        Scope::Agent(agent_id) => {
            let watch = WatchAgent {
                agent_id: agent_id.clone(),
                watcher: channel.id,
                appeared: appeared_tx,
            };
            let live = channel.state.registry.send(watch).await.unwrap_or_default();
            for session in live {
                channel.subscribe(session).await;
            }
            // The agent's sessions on the other nodes, relayed.
            remote = super::relay::tap_agent(&channel.state, &agent_id)
                .await
                .map(Box::new);
            watched = Some(agent_id);
            Next::Continue
        }
    };
    // From here the session (or, for an agent channel, `events`) holds the only senders.
    drop(events_tx);
    while let Next::Continue = next {
        next = tokio::select! {
            message = stream.next() => match message {
                Some(Ok(message)) => {
                    heartbeat.heard();
                    channel.received(message, &mut acks).await
                }
                Some(Err(e)) => {
                    // Oversized or malformed at the WebSocket level: the codec cannot resync.
                    tracing::info!(error = %e, "control channel protocol error");
                    Next::Close(close_reason(CloseCode::Size, &e.to_string()))
                }
                None => Next::Close(None),
            },
            Some(ack) = acks.next(), if !acks.is_empty() => {
                if channel.send(ack).await { Next::Continue } else { Next::Close(None) }
            },
            // Events wait while an ack is owed: a client hears `ack` before what its command caused.
            outbound = inbox.recv(), if acks.is_empty() && events_here => {
                channel.outbound(outbound).await
            },
            frame = relayed(&mut remote), if acks.is_empty() => channel.relayed(frame).await,
            Some(live) = appeared.recv() => channel.subscribe(live).await,
            _ = heartbeat.tick() => {
                // Nodes that joined since are tapped for the agent's sessions there; those of
                // nodes gone silent are announced ended once a survivor wrote it.
                if let (Some(remote), Some(agent_id)) = (remote.as_mut(), watched.as_deref()) {
                    remote.watch_nodes(&channel.state, agent_id).await;
                }
                if heartbeat.beat(&mut channel.socket, channel_name).await {
                    Next::Continue
                } else {
                    Next::Close(close_reason(CloseCode::Policy, "heartbeat timeout"))
                }
            },
        };
    }
    channel.leave();
    metrics
        .ws_connections
        .with_label_values(&[channel_name])
        .dec();
    if let Next::Close(reason) = next {
        let _ = channel.socket.close(reason).await;
    }
}

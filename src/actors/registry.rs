//! The Registry actor: session id → running Session, agent → its live sessions, room → session.
//! It answers for this node; forwarding to the node that owns a session (over NATS) belongs here.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

pub use super::session::messages::Unregister;
use super::session::messages::{EndReason, Stop};
pub use super::session::LiveSession;
use crate::metrics::Metrics;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Register(pub LiveSession);

#[derive(Message)]
#[rtype(result = "Option<LiveSession>")]
pub struct Lookup {
    pub session_id: String,
}

#[derive(Message)]
#[rtype(result = "Option<LiveSession>")]
pub struct LookupRoom {
    pub room_name: String,
}

/// Every live session of an agent on this node.
#[derive(Message)]
#[rtype(result = "Vec<LiveSession>")]
pub struct AgentSessions {
    pub agent_id: String,
}

#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveCount;

/// Ends every session with `shutdown`, waiting at most `grace` for them to write their end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub grace: Duration,
}

/// An agent's channel asks to hear of the agent's sessions: answers those live now, and sends
/// each that starts later on `appeared`.
#[derive(Message)]
#[rtype(result = "Vec<LiveSession>")]
pub struct WatchAgent {
    pub agent_id: String,
    pub watcher: u64,
    pub appeared: mpsc::UnboundedSender<LiveSession>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    pub watcher: u64,
}

#[derive(Default)]
pub struct Registry {
    sessions: HashMap<String, LiveSession>,
    by_agent: HashMap<String, HashSet<String>>,
    by_room: HashMap<String, String>,
    watchers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<LiveSession>)>>,
    metrics: Option<Metrics>,
}

impl Registry {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..Default::default()
        }
    }

    /// The live sessions of an agent on this node.
    fn of_agent(&self, agent_id: &str) -> Vec<LiveSession> {
        self.by_agent
            .get(agent_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.sessions.get(id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count(&self, message: &str) {
        if let Some(m) = &self.metrics {
            m.actor_message("registry", message);
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Register> for Registry {
    type Result = ();

    fn handle(&mut self, Register(live): Register, _: &mut Self::Context) {
        self.count("register");
        self.by_agent
            .entry(live.agent_id.clone())
            .or_default()
            .insert(live.session_id.clone());
        self.by_room
            .insert(live.room_name.clone(), live.session_id.clone());
        if let Some(watchers) = self.watchers.get_mut(&live.agent_id) {
            // A watcher whose channel is gone drops out here, as well as by `Unwatch`.
            watchers.retain(|(_, appeared)| appeared.send(live.clone()).is_ok());
        }
        self.sessions.insert(live.session_id.clone(), live);
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.count("unregister");
        if let Some(live) = self.sessions.remove(&msg.session_id) {
            self.by_room.remove(&live.room_name);
            if let Some(set) = self.by_agent.get_mut(&live.agent_id) {
                set.remove(&live.session_id);
                if set.is_empty() {
                    self.by_agent.remove(&live.agent_id);
                }
            }
        }
    }
}

impl Handler<Lookup> for Registry {
    type Result = Option<LiveSession>;

    fn handle(&mut self, msg: Lookup, _: &mut Self::Context) -> Self::Result {
        self.count("lookup");
        self.sessions.get(&msg.session_id).cloned()
    }
}

impl Handler<LookupRoom> for Registry {
    type Result = Option<LiveSession>;

    fn handle(&mut self, msg: LookupRoom, _: &mut Self::Context) -> Self::Result {
        self.count("lookup_room");
        self.by_room
            .get(&msg.room_name)
            .and_then(|id| self.sessions.get(id))
            .cloned()
    }
}

impl Handler<AgentSessions> for Registry {
    type Result = Vec<LiveSession>;

    fn handle(&mut self, msg: AgentSessions, _: &mut Self::Context) -> Self::Result {
        self.count("agent_sessions");
        self.of_agent(&msg.agent_id)
    }
}

impl Handler<WatchAgent> for Registry {
    type Result = Vec<LiveSession>;

    fn handle(&mut self, msg: WatchAgent, _: &mut Self::Context) -> Self::Result {
        self.count("watch_agent");
        self.watchers
            .entry(msg.agent_id.clone())
            .or_default()
            .push((msg.watcher, msg.appeared));
        self.of_agent(&msg.agent_id)
    }
}

impl Handler<Unwatch> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unwatch, _: &mut Self::Context) {
        self.count("unwatch");
        self.watchers.retain(|_, list| {
            list.retain(|(id, _)| *id != msg.watcher);
            !list.is_empty()
        });
    }
}

impl Handler<LiveCount> for Registry {
    type Result = usize;

    fn handle(&mut self, _: LiveCount, _: &mut Self::Context) -> usize {
        self.sessions.len()
    }
}

impl Handler<Drain> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        self.count("drain");
        let addrs: Vec<_> = self.sessions.values().map(|s| s.addr.clone()).collect();
        Box::pin(async move {
            let stops = addrs
                .into_iter()
                .map(|addr| addr.send(Stop(EndReason::Shutdown)));
            let _ = tokio::time::timeout(msg.grace, futures_util::future::join_all(stops)).await;
        })
    }
}

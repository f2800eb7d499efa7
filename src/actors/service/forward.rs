//! The session service across nodes: what a node asks of the node that runs a session, and how it
//! answers. A session's actor runs on one node (its row's `node_id`); a stop or a fan-out that
//! reaches another node is forwarded there over the cluster (`crate::cluster`), and a node that
//! does not answer within the timeout makes the request fail with `NodeUnavailable` (503).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{SessionService, SessionsError};
use crate::actors::session::commands::{deliver, Directive};
use crate::actors::session::messages::{EndReason, Stop};
use crate::store::entities::session;

/// The topic of the requests about running sessions (`crate::cluster`).
const SESSIONS: &str = "sessions";

/// A request one node forwards to the node running the sessions it is about.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Forwarded {
    /// End this session (if its actor runs there) and answer when it has ended.
    Stop {
        session_id: String,
        reason: EndReason,
    },
    /// Send `directive` to the agent's sessions there (only the one in `room` when given).
    Deliver {
        agent_id: String,
        room: Option<String>,
        directive: Directive,
    },
}

impl Forwarded {
    fn kind(&self) -> &'static str {
        match self {
            Forwarded::Stop { .. } => "stop",
            Forwarded::Deliver { .. } => "deliver",
        }
    }
}

/// How many sessions took a forwarded request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Taken {
    pub sessions: usize,
}

impl SessionService {
    /// Ends a session wherever its actor runs (here, or on its node over the cluster), then
    /// answers the stored row (as the final write left it, when that ran here).
    pub async fn stop(
        &self,
        row: session::Model,
        reason: EndReason,
    ) -> Result<session::Model, SessionsError> {
        if !row.is_ended() {
            if let Some(live) = self.live(&row.id).await? {
                if let Ok(Some(ended)) = live.addr.send(Stop(reason)).await {
                    return Ok(ended);
                }
            } else if row.node_id != self.node_id {
                let request = Forwarded::Stop {
                    session_id: row.id.clone(),
                    reason,
                };
                self.forward(&row.node_id, &request).await?;
            }
        }
        Ok(self.store.session(&row.id).await?.unwrap_or(row))
    }

    /// Ends the account's session `id`: one running here is found in the registry, without a read
    /// of its row first; elsewhere its row says where it runs. `None`: the account has no such
    /// session.
    pub async fn stop_own(
        &self,
        account_id: &str,
        id: &str,
        reason: EndReason,
    ) -> Result<Option<session::Model>, SessionsError> {
        if let Some(live) = self.live(id).await? {
            if live.account_id == account_id {
                if let Ok(Some(ended)) = live.addr.send(Stop(reason)).await {
                    return Ok(Some(ended));
                }
            }
        }
        match self.store.session_of(account_id, id).await? {
            Some(row) => self.stop(row, reason).await.map(Some),
            None => Ok(None),
        }
    }

    /// Sends `directive` to every live session of the agent (or the one in `room`) on every node;
    /// answers how many took it. A node that does not answer counts none. With a `room`, only the
    /// node running that room's session is involved (none other is asked).
    pub async fn deliver_to_agent(
        &self,
        agent_id: &str,
        room: Option<&str>,
        directive: &Directive,
    ) -> Result<usize, SessionsError> {
        if self.cluster.is_none() {
            return self.delivered_here(agent_id, room, directive).await;
        }
        let nodes = self.store.nodes_running_agent(agent_id, room).await?;
        let here = if nodes.contains(&self.node_id) {
            self.delivered_here(agent_id, room, directive).await?
        } else {
            0
        };
        let asks = nodes
            .iter()
            .filter(|node| **node != self.node_id)
            .map(|node| async move {
                let request = Forwarded::Deliver {
                    agent_id: agent_id.to_string(),
                    room: room.map(str::to_string),
                    directive: directive.clone(),
                };
                match self.forward(node, &request).await {
                    Ok(taken) => taken.sessions,
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "a node did not take a fan-out");
                        0
                    }
                }
            });
        let there: usize = futures_util::future::join_all(asks).await.into_iter().sum();
        Ok(here + there)
    }

    async fn delivered_here(
        &self,
        agent_id: &str,
        room: Option<&str>,
        directive: &Directive,
    ) -> Result<usize, SessionsError> {
        let targets = self
            .of_agent(agent_id)
            .await?
            .into_iter()
            .filter(|s| room.is_none_or(|room| room == s.room_name))
            .map(|s| s.addr);
        Ok(deliver(targets, directive).await)
    }

    /// Asks `node`, counted and timed by kind and outcome.
    async fn forward(&self, node: &str, request: &Forwarded) -> Result<Taken, SessionsError> {
        let Some(cluster) = &self.cluster else {
            return Err(SessionsError::NodeUnavailable(node.to_string()));
        };
        let started = Instant::now();
        let answer = cluster.ask::<_, Taken>(node, SESSIONS, request).await;
        let outcome = if answer.is_ok() { "ok" } else { "no_answer" };
        self.deps
            .metrics
            .forwarded(request.kind(), outcome, started.elapsed());
        answer.map_err(|e| {
            tracing::warn!(%node, error = %e, "forwarded request not answered");
            SessionsError::NodeUnavailable(node.to_string())
        })
    }

    /// Answers the requests other nodes forward here, until the cluster connection ends.
    pub async fn serve_forwarded(self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        cluster
            .serve(SESSIONS, move |request: Forwarded| {
                let service = self.clone();
                async move {
                    let sessions = match request {
                        Forwarded::Stop { session_id, reason } => {
                            match service.live(&session_id).await {
                                Ok(Some(live)) => {
                                    let _ = live.addr.send(Stop(reason)).await;
                                    1
                                }
                                _ => 0,
                            }
                        }
                        Forwarded::Deliver {
                            agent_id,
                            room,
                            directive,
                        } => service
                            .delivered_here(&agent_id, room.as_deref(), &directive)
                            .await
                            .unwrap_or(0),
                    };
                    Taken { sessions }
                }
            })
            .await;
    }
}

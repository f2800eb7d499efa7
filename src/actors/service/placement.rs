//! Placement across nodes. Every node advertises its free render slots and live sessions
//! (`cluster.advertise_interval_ms`); a start that finds no free slot on the node it reached is
//! placed on the node with the most free slots, which runs the same admission there (one
//! conditional write in the shared database, so racing starts on any nodes never pass a limit).
//! A start is refused `no_capacity` only when no node admits it for want of a slot.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{SessionService, StartError, StartMode, StartRequest, Started};
use crate::actors::registry::LiveCount;
use crate::actors::render_pool::PoolStatus;
use crate::cluster::{Advert, ClusterError};
use crate::domain::events::SessionWebhook;
use crate::livekit::{BorrowedRoom, RoomAccess};

/// The topic of the starts placed on another node (`crate::cluster`).
const STARTS: &str = "starts";

/// A start another node placed here: its request, the agent by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlacedStart {
    account_id: String,
    agent_id: String,
    revision: i64,
    source: String,
    link_id: Option<String>,
    aspect_ratio: String,
    client_user_ref: Option<String>,
    metadata: Option<Value>,
    env: Option<Value>,
    tag: Option<String>,
    webhook: Option<SessionWebhook>,
    max_duration_seconds: Option<i64>,
    queued: bool,
    #[serde(default)]
    room: Option<BorrowedRoom>,
    #[serde(default)]
    voice_from_room: bool,
}

impl PlacedStart {
    pub fn of(req: &StartRequest, mode: StartMode) -> Self {
        Self {
            account_id: req.account_id.clone(),
            agent_id: req.agent.id.clone(),
            revision: req.revision,
            source: req.source.to_string(),
            link_id: req.link_id.clone(),
            aspect_ratio: req.aspect_ratio.clone(),
            client_user_ref: req.client_user_ref.clone(),
            metadata: req.metadata.clone(),
            env: req.env.clone(),
            tag: req.tag.clone(),
            webhook: req.webhook.clone(),
            max_duration_seconds: req.max_duration_seconds,
            queued: matches!(mode, StartMode::Queued),
            room: req.room.clone(),
            voice_from_room: req.voice_from_room,
        }
    }
}

/// How a placed start went.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Placed {
    Started {
        session_id: String,
        access: Option<RoomAccess>,
    },
    Refused {
        refusal: Refusal,
    },
}

/// A `StartError` on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
enum Refusal {
    AgentNotReady { agent_id: String, status: String },
    NoAvatarModel { agent_id: String },
    AccountGone,
    NoCapacity,
    LinkInactive,
    InsufficientBalance,
    ConcurrencyLimit { limit: i64 },
    RoomCreationFailed,
    NotStarted,
    Busy,
    Unavailable,
}

impl From<StartError> for Refusal {
    fn from(e: StartError) -> Self {
        match e {
            StartError::AgentNotReady { agent_id, status } => {
                Refusal::AgentNotReady { agent_id, status }
            }
            StartError::NoAvatarModel(agent_id) => Refusal::NoAvatarModel { agent_id },
            StartError::AccountGone => Refusal::AccountGone,
            StartError::NoCapacity => Refusal::NoCapacity,
            StartError::LinkInactive => Refusal::LinkInactive,
            StartError::InsufficientBalance => Refusal::InsufficientBalance,
            StartError::ConcurrencyLimit(limit) => Refusal::ConcurrencyLimit { limit },
            StartError::RoomCreationFailed => Refusal::RoomCreationFailed,
            StartError::NotStarted => Refusal::NotStarted,
            StartError::Busy => Refusal::Busy,
            StartError::Unavailable(why) => {
                tracing::warn!(%why, "placed start refused");
                Refusal::Unavailable
            }
            StartError::Store(e) => {
                tracing::warn!(error = %e, "placed start refused");
                Refusal::Unavailable
            }
        }
    }
}

impl From<Refusal> for StartError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::AgentNotReady { agent_id, status } => {
                StartError::AgentNotReady { agent_id, status }
            }
            Refusal::NoAvatarModel { agent_id } => StartError::NoAvatarModel(agent_id),
            Refusal::AccountGone => StartError::AccountGone,
            Refusal::NoCapacity => StartError::NoCapacity,
            Refusal::LinkInactive => StartError::LinkInactive,
            Refusal::InsufficientBalance => StartError::InsufficientBalance,
            Refusal::ConcurrencyLimit { limit } => StartError::ConcurrencyLimit(limit),
            Refusal::RoomCreationFailed => StartError::RoomCreationFailed,
            Refusal::NotStarted => StartError::NotStarted,
            Refusal::Busy => StartError::Busy,
            Refusal::Unavailable => StartError::Unavailable("the placed node".into()),
        }
    }
}

/// The dialects' sources, as the `&'static str` a `StartRequest` holds.
fn source(name: &str) -> &'static str {
    match name {
        "connect" => "connect",
        "deployment" => "deployment",
        "link" => "link",
        _ => "api",
    }
}

impl SessionService {
    /// How long another node counts as present after its last advert.
    fn peer_ttl(&self) -> Duration {
        Duration::from_millis(self.settings.cluster.advertise_interval_ms.max(1) * 3)
    }

    /// What this node advertises: its free render slots (on devices alive; none once it drains)
    /// and live sessions.
    pub async fn advert(&self) -> Advert {
        let devices = self.render_pool.send(PoolStatus).await.unwrap_or_default();
        let free_slots = match self.draining.load(Ordering::Acquire) {
            true => 0,
            false => devices
                .iter()
                .filter(|d| d.alive)
                .map(|d| d.slots.saturating_sub(d.in_use))
                .sum(),
        };
        let live_sessions = self.registry.send(LiveCount).await.unwrap_or(0);
        Advert {
            node_id: self.node_id.clone(),
            free_slots,
            live_sessions,
        }
    }

    /// Advertises this node to the others every interval and hears theirs; answers the starts
    /// placed here. Runs until the process ends.
    pub async fn join_cluster(self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        actix_web::rt::spawn(cluster.clone().hear_adverts());
        let service = self.clone();
        actix_web::rt::spawn(cluster.clone().serve(STARTS, move |placed: PlacedStart| {
            let service = service.clone();
            async move { service.start_placed(placed).await }
        }));
        let period = Duration::from_millis(self.settings.cluster.advertise_interval_ms.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let advert = self.advert().await;
            cluster.advertise(&advert).await;
            let peers = cluster.peers().alive(self.peer_ttl());
            let nodes = std::iter::once(&advert).chain(&peers);
            self.deps.metrics.cluster_nodes(
                nodes.map(|node| (node.node_id.as_str(), node.free_slots, node.live_sessions)),
            );
        }
    }

    /// The nodes heard from lately (not this one), those with the most free slots first.
    pub fn peers(&self) -> Vec<Advert> {
        self.cluster
            .as_ref()
            .map(|c| c.peers().alive(self.peer_ttl()))
            .unwrap_or_default()
    }

    /// Starts a session here, or, with no render slot free here, on another node that has one.
    pub async fn start(&self, req: StartRequest, mode: StartMode) -> Result<Started, StartError> {
        let elsewhere = self.cluster.as_ref().map(|_| PlacedStart::of(&req, mode));
        match (self.start_here(req, mode).await, elsewhere) {
            (Err(StartError::NoCapacity), Some(placed)) => self.place_elsewhere(placed).await,
            (result, _) => result,
        }
    }

    /// Places a start that found no free slot here on another node, the freest first; answers
    /// `NoCapacity` when no node admits it for want of a slot.
    pub(super) async fn place_elsewhere(&self, placed: PlacedStart) -> Result<Started, StartError> {
        let Some(cluster) = &self.cluster else {
            return Err(StartError::NoCapacity);
        };
        let timeout = Duration::from_millis(self.settings.cluster.start_timeout_ms.max(1));
        // The freest first; a node whose advert says full is asked last (it may have freed a
        // slot since).
        for peer in self.peers() {
            let started = Instant::now();
            let answer = cluster
                .ask_within::<_, Placed>(&peer.node_id, STARTS, &placed, timeout)
                .await;
            let outcome = match &answer {
                Ok(Placed::Started { .. }) => "ok",
                Ok(Placed::Refused { .. }) => "refused",
                Err(_) => "no_answer",
            };
            self.deps
                .metrics
                .forwarded("start", outcome, started.elapsed());
            match answer {
                Ok(Placed::Started { session_id, access }) => {
                    let row = self
                        .store
                        .session(&session_id)
                        .await?
                        .ok_or(StartError::NotStarted)?;
                    return Ok(Started { row, access });
                }
                // Full since its advert, or busy: the next node may have room.
                Ok(Placed::Refused {
                    refusal: Refusal::NoCapacity | Refusal::Busy,
                }) => continue,
                Ok(Placed::Refused { refusal }) => return Err(refusal.into()),
                // Gone: nothing was started there.
                Err(ClusterError::NotListening(_)) => continue,
                // It may yet start the session: asking another could start it twice.
                Err(e) => {
                    tracing::warn!(node = %peer.node_id, error = %e, "placed start not answered");
                    return Err(StartError::Unavailable(format!("node {}", peer.node_id)));
                }
            }
        }
        Err(StartError::NoCapacity)
    }

    /// Runs a start another node placed here (never placed again: no slot here is `NoCapacity`).
    async fn start_placed(&self, placed: PlacedStart) -> Placed {
        let agent = match self.store.agent(&placed.agent_id).await {
            Ok(Some(agent)) if agent.account_id == placed.account_id => agent,
            Ok(_) => {
                return Placed::Refused {
                    refusal: Refusal::AgentNotReady {
                        agent_id: placed.agent_id,
                        status: "deleted".into(),
                    },
                }
            }
            Err(e) => {
                return Placed::Refused {
                    refusal: StartError::Store(e).into(),
                }
            }
        };
        let mode = if placed.queued {
            StartMode::Queued
        } else {
            StartMode::WaitLive
        };
        let request = StartRequest {
            account_id: placed.account_id,
            agent,
            revision: placed.revision,
            source: source(&placed.source),
            link_id: placed.link_id,
            aspect_ratio: placed.aspect_ratio,
            client_user_ref: placed.client_user_ref,
            metadata: placed.metadata,
            env: placed.env,
            tag: placed.tag,
            webhook: placed.webhook,
            max_duration_seconds: placed.max_duration_seconds,
            room: placed.room,
            voice_from_room: placed.voice_from_room,
        };
        match self.start_here(request, mode).await {
            Ok(started) => Placed::Started {
                session_id: started.row.id,
                access: started.access,
            },
            Err(e) => Placed::Refused { refusal: e.into() },
        }
    }
}

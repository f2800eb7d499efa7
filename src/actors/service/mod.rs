//! The session service: the one path every dialect takes to start or stop a session. `start` owns
//! admission from end to end (a render slot, the quota's conditional write, the Session actor on
//! one of the session arbiters, its registration) and gives back everything it took on every way
//! it can fail, answering a typed [`StartError`]; the HTTP boundary only maps that to its dialect's
//! error spelling.
//!
//! One service in one folder: this file (the service, admission, and what it answers), its
//! placement on other nodes (`placement.rs`: where a start goes when this node is full, and the
//! cluster's adverts), and what it forwards to the node running a session (`forward.rs`: stops and
//! fan-outs).

mod forward;
mod placement;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::Value;

use crate::actors::quota::{Admit, Quota};
use crate::actors::registry::{AgentSessions, Drain, Lookup, LookupRoom, Register, Registry};
use crate::actors::render_pool::{Acquire, Release, RenderError, RenderPool, SlotLease};
use crate::actors::session::messages::{AwaitLive, EndReason, SessionError, WentLive};
use crate::actors::session::{LiveSession, Session, SessionAgent, SessionDeps};
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::domain::agent::AgentStatus;
use crate::domain::agent::VoiceAgent;
use crate::domain::events::SessionWebhook;
use crate::domain::ids;
use crate::domain::session::SessionState;
use crate::domain::time::now_ms;
use crate::livekit::{BorrowedRoom, RoomAccess};
use crate::store::entities::{agent, session};
use crate::store::sessions::{Admission, DurationCap};
use crate::store::{Store, StoreError};

/// Everything a dialect decided about a session it wants started.
pub struct StartRequest {
    pub account_id: String,
    pub agent: agent::Model,
    pub revision: i64,
    pub source: &'static str,
    pub link_id: Option<String>,
    pub aspect_ratio: String,
    pub client_user_ref: Option<String>,
    pub metadata: Option<Value>,
    pub env: Option<Value>,
    pub tag: Option<String>,
    pub webhook: Option<SessionWebhook>,
    pub max_duration_seconds: Option<i64>,
    /// A room the caller brings (its LiveKit URL and the avatar's token); `None`: this server's.
    pub room: Option<BorrowedRoom>,
    /// The room's own agent is the avatar's voice (LiveKit Agents' avatar protocol): no voice
    /// bridge provider, the agent's audio streams are played instead. Only with `room`.
    pub voice_from_room: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum StartMode {
    /// Answer once the room exists and the session is live (or refuse).
    WaitLive,
    /// Answer once admitted (`queued`); the start goes on in the background (VideoSDK).
    Queued,
}

pub struct Started {
    pub row: session::Model,
    pub access: Option<RoomAccess>,
}

/// Why a start was refused. Nothing is held when one of these comes back.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("agent {agent_id} is not ready (status: {status})")]
    AgentNotReady { agent_id: String, status: String },
    #[error("agent {0} has no avatar model")]
    NoAvatarModel(String),
    #[error("the account no longer exists")]
    AccountGone,
    #[error("no render slot is free")]
    NoCapacity,
    #[error("the link is no longer active")]
    LinkInactive,
    #[error("no minutes left")]
    InsufficientBalance,
    #[error("the account's limit of {0} concurrent sessions is reached")]
    ConcurrencyLimit(i64),
    #[error("the room could not be created")]
    RoomCreationFailed,
    #[error("the session did not start")]
    NotStarted,
    /// Too many starts are being admitted on this node right now: try again shortly.
    #[error("too many starts are in progress")]
    Busy,
    /// A part of this server that a start needs does not answer (an actor, the database).
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a question about running sessions (or a stop) could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error("the registry does not answer")]
    Unavailable,
    /// The node running the session did not answer a forwarded request.
    #[error("node {0} does not answer")]
    NodeUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The arbiters sessions run on, handed out round-robin: sessions (their children, voice
/// players and provider tasks with them) spread over the cores instead of sharing one thread.
pub struct ArbiterPool {
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl ArbiterPool {
    /// `size` arbiters; 0 means one per core.
    pub fn new(size: usize) -> Self {
        let size = if size == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            size
        };
        Self {
            arbiters: (0..size).map(|_| Arbiter::new().handle()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    pub fn next(&self) -> &ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        &self.arbiters[i]
    }
}

impl Drop for ArbiterPool {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

#[derive(Clone)]
pub struct SessionService {
    store: Store,
    settings: Arc<Settings>,
    quota: Addr<Quota>,
    registry: Addr<Registry>,
    render_pool: Addr<RenderPool>,
    deps: Arc<SessionDeps>,
    arbiters: Arc<ArbiterPool>,
    /// Permits of the starts being admitted (`sessions.max_pending_starts`).
    pending: Arc<tokio::sync::Semaphore>,
    node_id: String,
    /// The other nodes, when this is one of several (`cluster.nats_url`).
    cluster: Option<Cluster>,
    /// Set once this node leaves (SIGTERM): it starts nothing more, and places starts elsewhere.
    draining: Arc<AtomicBool>,
}

impl SessionService {
    pub fn new(
        deps: Arc<SessionDeps>,
        quota: Addr<Quota>,
        registry: Addr<Registry>,
        node_id: String,
        cluster: Option<Cluster>,
    ) -> Self {
        let arbiters = ArbiterPool::new(deps.settings.sessions.arbiters);
        let pending = tokio::sync::Semaphore::new(deps.settings.sessions.max_pending_starts.max(1));
        Self {
            store: deps.store.clone(),
            settings: deps.settings.clone(),
            quota,
            registry,
            render_pool: deps.render_pool.clone(),
            deps,
            arbiters: Arc::new(arbiters),
            pending: Arc::new(pending),
            node_id,
            cluster,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// This node leaves: no start is admitted here any more (each is placed on another node, or
    /// refused `no_capacity`), and its sessions end with `shutdown`, waiting at most `grace`.
    pub async fn drain(&self, grace: std::time::Duration) {
        self.draining.store(true, Ordering::Release);
        let _ = self.registry.send(Drain { grace }).await;
    }

    /// The agent must be ready, with the avatar generation made.
    pub fn check_ready(agent: &agent::Model) -> Result<(), StartError> {
        if agent.status != AgentStatus::Ready {
            return Err(StartError::AgentNotReady {
                agent_id: agent.id.clone(),
                status: agent.status.to_string(),
            });
        }
        if agent.model_asset_id.is_none() {
            return Err(StartError::NoAvatarModel(agent.id.clone()));
        }
        Ok(())
    }

    /// Starts a session on this node.
    async fn start_here(&self, req: StartRequest, mode: StartMode) -> Result<Started, StartError> {
        Self::check_ready(&req.agent)?;
        if self.draining.load(Ordering::Acquire) {
            return Err(StartError::NoCapacity);
        }
        // Back-pressure: a node already admitting its share says so at once instead of queueing
        // the start behind the others (held until the session is live, or refused).
        let Ok(_permit) = self.pending.clone().try_acquire_owned() else {
            self.deps
                .metrics
                .admissions_rejected
                .with_label_values(&["busy"])
                .inc();
            return Err(StartError::Busy);
        };
        // Admission runs to its end even if the caller goes away mid-request: stopped half-way
        // it would leave a render slot or a concurrency count held with no session to release it.
        let service = self.clone();
        // A start that waits for live is written as `starting` at once (one write fewer on the
        // start path), or as `live` where its room is ready the moment its actor makes it (the
        // local room is this server's: the session is billed from the admission, and the start
        // writes nothing more); a queued one shows `queued` until its actor starts.
        let initial = match mode {
            StartMode::WaitLive if req.room.is_none() && !self.deps.rooms.is_livekit() => {
                SessionState::Live
            }
            StartMode::WaitLive => SessionState::Starting,
            StartMode::Queued => SessionState::Queued,
        };
        let (row, addr) = actix_web::rt::spawn(async move { service.admit(req, initial).await })
            .await
            .map_err(|e| StartError::Unavailable(format!("admission task: {e}")))??;
        match mode {
            StartMode::Queued => Ok(Started { row, access: None }),
            StartMode::WaitLive => self.await_live(row, addr).await,
        }
    }

    async fn await_live(
        &self,
        row: session::Model,
        addr: Addr<Session>,
    ) -> Result<Started, StartError> {
        match addr.send(AwaitLive).await {
            Ok(Ok(WentLive { access, at_ms })) => {
                // What the session's `live` write made of the row, without reading it.
                Ok(Started {
                    row: row.with_state(SessionState::Live, at_ms),
                    access: Some(access),
                })
            }
            Ok(Err(SessionError::RoomCreationFailed(why))) => {
                tracing::warn!(session = %row.id, %why, "room creation failed");
                Err(StartError::RoomCreationFailed)
            }
            Ok(Err(e)) => {
                tracing::warn!(session = %row.id, error = %e, "session did not go live");
                Err(StartError::NotStarted)
            }
            Err(_) => {
                // The actor already ended (and stopped) before it could be asked: the row says why.
                let ended = self.store.session(&row.id).await?;
                if ended.as_ref().and_then(|r| r.end_reason.as_deref())
                    == Some(EndReason::RoomCreationFailed.as_str())
                {
                    return Err(StartError::RoomCreationFailed);
                }
                tracing::error!(session = %row.id, "session ended before it went live");
                Err(StartError::NotStarted)
            }
        }
    }

    /// The session row a start would write, in state `initial` (`queued` or `starting`).
    fn new_row(&self, req: &StartRequest, initial: SessionState) -> session::Model {
        let settings = &self.settings.sessions;
        let now = now_ms();
        let id = ids::session_id();
        let suffix = &id["sess_".len()..];
        // A room the caller brings keeps its own name, and the avatar the identity its token gives.
        let (room_name, agent_identity, livekit_url) = match &req.room {
            Some(room) => (
                room.room.clone(),
                room.identity.clone(),
                Some(room.url.clone()),
            ),
            None => (
                format!("room_{suffix}"),
                settings.agent_identity.clone(),
                None,
            ),
        };
        session::Model {
            room_name,
            user_identity: format!("user_{}", &suffix[..12]),
            id: id.clone(),
            account_id: req.account_id.clone(),
            agent_id: req.agent.id.clone(),
            agent_revision: req.revision,
            source: req.source.to_string(),
            link_id: req.link_id.clone(),
            state: initial,
            agent_identity,
            livekit_url,
            aspect_ratio: req.aspect_ratio.clone(),
            client_user_ref: req.client_user_ref.clone(),
            metadata: req.metadata.as_ref().map(Value::to_string),
            env: req.env.as_ref().map(Value::to_string),
            tag: req.tag.clone(),
            webhook: req
                .webhook
                .as_ref()
                .and_then(|w| serde_json::to_string(w).ok()),
            // The admission sets it from the account's cap.
            max_duration_seconds: 0,
            idle_timeout_seconds: settings.idle_timeout_seconds as i64,
            node_id: self.node_id.clone(),
            heartbeat_at: Some(now),
            created_at: now,
            started_at: (initial == SessionState::Live).then_some(now),
            ended_at: None,
            updated_at: now,
            end_reason: None,
            failure_reason: None,
            billed_seconds: 0,
        }
    }

    /// A render slot, the quota's yes (one transaction), the Session actor and its registration;
    /// the slot goes back on every way out but the last.
    async fn admit(
        &self,
        req: StartRequest,
        initial: SessionState,
    ) -> Result<(session::Model, Addr<Session>), StartError> {
        // The request may ask for less than the account allows, never more: the admission,
        // which reads the account as it takes the slot, sets the row's cap.
        let cap = DurationCap {
            asked_seconds: req.max_duration_seconds,
            default_seconds: self.settings.sessions.default_max_duration_seconds as i64,
        };
        let row = self.new_row(&req, initial);
        // A render slot first: with none free the start is refused before the quota is touched.
        let lease = self.acquire_slot(&row.id).await?;
        let refused = match self.quota.send(Admit(row, cap)).await {
            Ok(Ok(Admission::Admitted(row))) => return Ok(self.spawn(*row, &req, lease)),
            Ok(Ok(Admission::LinkUnavailable)) => StartError::LinkInactive,
            Ok(Ok(Admission::InsufficientBalance)) => StartError::InsufficientBalance,
            Ok(Ok(Admission::ConcurrencyLimit(limit))) => StartError::ConcurrencyLimit(limit),
            Ok(Ok(Admission::AccountGone)) => StartError::AccountGone,
            Ok(Err(e)) => StartError::Store(e),
            Err(e) => StartError::Unavailable(format!("quota: {e}")),
        };
        self.render_pool.do_send(Release(lease));
        Err(refused)
    }

    /// The admitted session's actor, on the next arbiter, registered.
    fn spawn(
        &self,
        row: session::Model,
        req: &StartRequest,
        lease: SlotLease,
    ) -> (session::Model, Addr<Session>) {
        let agent = SessionAgent {
            system_prompt: req.agent.system_prompt.clone(),
            model_asset_id: req.agent.model_asset_id.clone().unwrap_or_default(),
            voice_agent: req
                .agent
                .voice_agent
                .as_deref()
                .and_then(|v| serde_json::from_str::<VoiceAgent>(v).ok()),
            room: req.room.clone(),
            voice_from_room: req.voice_from_room,
        };
        let deps = self.deps.clone();
        let actor_row = row.clone();
        let addr = Session::start_in_arbiter(self.arbiters.next(), move |_| {
            Session::new(actor_row, agent, Some(lease), deps)
        });
        self.registry.do_send(Register(LiveSession {
            session_id: row.id.clone(),
            account_id: row.account_id.clone(),
            agent_id: row.agent_id.clone(),
            room_name: row.room_name.clone(),
            addr: addr.clone(),
        }));
        (row, addr)
    }

    async fn acquire_slot(&self, session_id: &str) -> Result<SlotLease, StartError> {
        let acquire = Acquire {
            session_id: session_id.to_string(),
        };
        match self.render_pool.send(acquire).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(RenderError::NoCapacity)) => Err(StartError::NoCapacity),
            Ok(Err(e)) => Err(StartError::Unavailable(format!("render pool: {e}"))),
            Err(e) => Err(StartError::Unavailable(format!("render pool: {e}"))),
        }
    }

    /// The running session `id`, if its actor runs on this node.
    pub async fn live(&self, session_id: &str) -> Result<Option<LiveSession>, SessionsError> {
        self.registry
            .send(Lookup {
                session_id: session_id.to_string(),
            })
            .await
            .map_err(|_| SessionsError::Unavailable)
    }

    /// Every session of an agent running on this node.
    pub async fn of_agent(&self, agent_id: &str) -> Result<Vec<LiveSession>, SessionsError> {
        self.registry
            .send(AgentSessions {
                agent_id: agent_id.to_string(),
            })
            .await
            .map_err(|_| SessionsError::Unavailable)
    }

    /// The session running in `room_name` on this node.
    pub async fn in_room(&self, room_name: &str) -> Result<Option<LiveSession>, SessionsError> {
        self.registry
            .send(LookupRoom {
                room_name: room_name.to_string(),
            })
            .await
            .map_err(|_| SessionsError::Unavailable)
    }

    /// The other nodes, when this is one of several.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn arbiters(&self) -> usize {
        self.arbiters.len()
    }
}

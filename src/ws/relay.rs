//! Channels across nodes. A control, agent or preview channel opened on a node that does not run
//! the session taps the node that does (`crate::cluster`, topic `channels`): that node subscribes
//! to the session (or to every session of the agent there, those that start later included) and
//! relays what a local channel would send, as ready frames, to a subject the asking node listens
//! on. Commands go the other way as forwarded deliveries (`SessionService::deliver_to_agent`).
//!
//! A relay pings its listener every `cluster.advertise_interval_ms` and ends when nothing answers
//! (the channel closed, or its node is gone); a tapped session's channel closes when the relay
//! falls silent (the session's node is gone). An agent's channel stays open when a node it tapped
//! stops advertising: each of the agent's sessions that ran there is announced ended (`node_lost`)
//! once a surviving node has written its end, as a local session's end would be.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use actix_ws::{CloseCode, CloseReason};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{close_reason, next_id, protocol};
use crate::actors::registry::{LiveSession, Unwatch, WatchAgent};
use crate::actors::session::messages::{MediaTap, Outbound, Subscribe, Unsubscribe};
use crate::actors::session::Session;
use crate::cluster::Cluster;
use crate::domain::session::EndReason;
use crate::media::Want;
use crate::state::AppState;

/// The topic of channel taps between nodes.
const CHANNELS: &str = "channels";

/// The first byte of each relayed message.
const TEXT: u8 = b'T';
const BINARY: u8 = b'B';
const ENDED: u8 = b'C';
const TOO_SLOW: u8 = b'S';

/// What one node asks of the node running sessions, for a channel opened on it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tap {
    /// Relay this session's events (and its media, for a preview) to `inbox`.
    Session {
        session_id: String,
        inbox: String,
        media: bool,
    },
    /// Relay the events of the agent's sessions here (those that start later too) to `inbox`.
    Agent { agent_id: String, inbox: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Tapped {
    /// False when the session does not run there (any more).
    live: bool,
    /// A preview's first frame.
    hello: Option<Value>,
}

/// A frame a relay brought, for the channel's socket.
pub enum Frame {
    /// An event's frame, and its `type`.
    Text {
        kind: String,
        text: String,
    },
    Binary(Vec<u8>),
    Close(Option<CloseReason>),
}

/// What another node relays to a channel here. A task of its own reads the relay: it answers the
/// relay's pings at once (whatever the channel is busy with), and hands the frames over through a
/// bounded queue the channel drains.
pub struct Remote {
    frames: mpsc::Receiver<Frame>,
    cluster: Cluster,
    inbox: String,
    /// The nodes an agent's channel has tapped (those since fallen silent included: a node is
    /// tapped once per channel).
    tapped: HashSet<String>,
    /// Tapped nodes that fell silent, and the agent's sessions there whose end is not yet written.
    lost: HashMap<String, Vec<String>>,
    /// Where the ends of a silent node's sessions join the relayed frames.
    ends: mpsc::Sender<Frame>,
}

fn ping_interval(state: &AppState) -> Duration {
    Duration::from_millis(state.settings.cluster.advertise_interval_ms.max(1))
}

fn node_unavailable() -> Frame {
    Frame::Close(close_reason(CloseCode::Away, "node unavailable"))
}

impl Remote {
    /// Listens on a fresh inbox; with `silence`, the channel is closed when nothing (no ping, no
    /// frame) came for that long.
    async fn open(state: &AppState, silence: Option<Duration>) -> Option<Self> {
        let cluster = state.sessions.cluster()?;
        let inbox = cluster.new_inbox();
        let messages = cluster.subscribe(inbox.clone()).await.ok()?;
        let (tx, frames) = mpsc::channel(state.settings.ws.mailbox_capacity.max(1));
        actix_web::rt::spawn(read(messages, cluster.clone(), tx.clone(), silence));
        Some(Self {
            frames,
            cluster: cluster.clone(),
            inbox,
            tapped: HashSet::new(),
            lost: HashMap::new(),
            ends: tx,
        })
    }

    /// The next frame.
    pub async fn next(&mut self) -> Frame {
        self.frames.recv().await.unwrap_or_else(node_unavailable)
    }

    /// For an agent's channel, once a beat: taps every node heard from that it has not tapped yet,
    /// and announces the sessions of tapped nodes gone silent as their ends are written.
    pub async fn watch_nodes(&mut self, state: &AppState, agent_id: &str) {
        let alive = alive_nodes(state);
        let fell_silent: Vec<String> = self
            .tapped
            .iter()
            .filter(|node| !alive.contains(*node) && !self.lost.contains_key(*node))
            .cloned()
            .collect();
        for node in fell_silent {
            match state.store.unended_on_node(agent_id, &node).await {
                Ok(rows) => {
                    tracing::info!(%node, sessions = rows.len(), "an agent channel's node fell silent");
                    self.lost
                        .insert(node, rows.into_iter().map(|row| row.id).collect());
                }
                // Read again at the next beat.
                Err(e) => {
                    tracing::warn!(%node, error = %e, "agent channel: a silent node's sessions")
                }
            }
        }
        self.announce_ends(state).await;
        self.tap_new_nodes(&alive, agent_id).await;
    }

    /// Queues the end of each session of a silent node that another node has written (`node_lost`);
    /// one its own node ended (it was only slow) came through the relay already.
    async fn announce_ends(&mut self, state: &AppState) {
        for pending in self.lost.values_mut() {
            let mut waiting = Vec::new();
            for id in pending.drain(..) {
                match state.store.session(&id).await {
                    Ok(Some(row)) if row.ended_at.is_none() => waiting.push(id),
                    Ok(Some(row))
                        if row.end_reason.as_deref() == Some(EndReason::NodeLost.as_str()) =>
                    {
                        let frame = Frame::Text {
                            kind: "status".into(),
                            text: protocol::status_frame(&row.status()).to_string(),
                        };
                        match self.ends.try_send(frame) {
                            Ok(()) => {}
                            // The channel drains its queue between beats: the next one sends it.
                            Err(mpsc::error::TrySendError::Full(_)) => waiting.push(id),
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "agent channel: a silent node's session");
                        waiting.push(id);
                    }
                }
            }
            *pending = waiting;
        }
    }

    /// Taps every node heard from (`alive`) that this channel has not tapped yet.
    async fn tap_new_nodes(&mut self, alive: &HashSet<String>, agent_id: &str) {
        for node in alive {
            if self.tapped.contains(node) {
                continue;
            }
            let tap = Tap::Agent {
                agent_id: agent_id.to_string(),
                inbox: self.inbox.clone(),
            };
            match self.cluster.ask::<_, Tapped>(node, CHANNELS, &tap).await {
                Ok(_) => {
                    self.tapped.insert(node.clone());
                }
                Err(e) => tracing::warn!(%node, error = %e, "agent channel tap"),
            }
        }
    }
}

/// Reads a relay until the channel is gone: pings answered, frames queued. A channel that does not
/// drain its queue is closed as too slow (preview media is skipped instead, as live media is).
async fn read(
    mut messages: impl Stream<Item = async_nats::Message> + Unpin,
    cluster: Cluster,
    frames: mpsc::Sender<Frame>,
    silence: Option<Duration>,
) {
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = tokio::time::sleep(silence.unwrap_or(Duration::from_secs(86_400))), if silence.is_some() => {
                let _ = frames.try_send(node_unavailable());
                return;
            }
            _ = frames.closed() => return,
        };
        let Some(message) = message else {
            let _ = frames.try_send(node_unavailable());
            return;
        };
        if message.reply.is_some() {
            cluster.reply(&message).await;
            continue;
        }
        let Some(frame) = decode(&message.payload) else {
            continue;
        };
        let media = matches!(frame, Frame::Binary(_));
        match frames.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) if media => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The channel takes its queued frames first, then this end.
                let _ = frames
                    .send(Frame::Close(close_reason(CloseCode::Policy, "too slow")))
                    .await;
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// A relayed message as a frame for the socket (`None`: not one this node knows).
fn decode(payload: &[u8]) -> Option<Frame> {
    let (kind, body) = payload.split_first()?;
    Some(match *kind {
        TEXT => {
            // `kind` + b'\n' + the frame.
            let text = String::from_utf8_lossy(body);
            let (kind, text) = text.split_once('\n').unwrap_or(("unknown", &text));
            Frame::Text {
                kind: kind.to_string(),
                text: text.to_string(),
            }
        }
        BINARY => Frame::Binary(body.to_vec()),
        ENDED => Frame::Close(close_reason(CloseCode::Normal, "session ended")),
        TOO_SLOW => Frame::Close(close_reason(CloseCode::Policy, "too slow")),
        _ => return None,
    })
}

/// Why a session's node could not be tapped.
#[derive(Debug)]
pub enum TapError {
    /// No cluster, or the node did not answer.
    Unavailable,
}

/// Taps `node` for the session's events (and media, with `media`): `None` when the session does
/// not run there; with media, the preview's first frame too.
pub async fn tap_session(
    state: &AppState,
    node: &str,
    session_id: &str,
    media: bool,
) -> Result<Option<(Remote, Option<Value>)>, TapError> {
    let cluster = state.sessions.cluster().ok_or(TapError::Unavailable)?;
    let silence = ping_interval(state) * 3 + cluster.timeout();
    let remote = Remote::open(state, Some(silence))
        .await
        .ok_or(TapError::Unavailable)?;
    let tap = Tap::Session {
        session_id: session_id.to_string(),
        inbox: remote.inbox.clone(),
        media,
    };
    let tapped: Tapped = cluster.ask(node, CHANNELS, &tap).await.map_err(|e| {
        tracing::warn!(%node, error = %e, "session channel tap");
        TapError::Unavailable
    })?;
    if !tapped.live {
        return Ok(None);
    }
    Ok(Some((remote, tapped.hello)))
}

/// The nodes heard from lately.
fn alive_nodes(state: &AppState) -> HashSet<String> {
    state
        .sessions
        .peers()
        .into_iter()
        .map(|peer| peer.node_id)
        .collect()
}

/// Taps every other node for the agent's sessions there; `None` without a cluster.
pub async fn tap_agent(state: &AppState, agent_id: &str) -> Option<Remote> {
    let mut remote = Remote::open(state, None).await?;
    remote.tap_new_nodes(&alive_nodes(state), agent_id).await;
    Some(remote)
}

/// Answers the taps other nodes send this one, until the cluster connection ends.
pub async fn serve(state: AppState) {
    let Some(cluster) = state.sessions.cluster().cloned() else {
        return;
    };
    cluster
        .clone()
        .serve(CHANNELS, move |tap: Tap| {
            let (state, cluster) = (state.clone(), cluster.clone());
            async move {
                match tap {
                    Tap::Session {
                        session_id,
                        inbox,
                        media,
                    } => relay_session(state, cluster, &session_id, inbox, media).await,
                    Tap::Agent { agent_id, inbox } => {
                        let listener = Listener::new(&state, cluster, inbox);
                        actix_web::rt::spawn(relay_agent(state, listener, agent_id));
                        Tapped {
                            live: true,
                            hello: None,
                        }
                    }
                }
            }
        })
        .await;
}

/// Where a relay sends, and whether anything still listens there.
struct Listener {
    cluster: Cluster,
    inbox: String,
    /// Fires when the listener stopped answering pings.
    gone: oneshot::Receiver<()>,
}

impl Listener {
    fn new(state: &AppState, cluster: Cluster, inbox: String) -> Self {
        let (tx, gone) = oneshot::channel();
        let (pinger, subject, period) = (cluster.clone(), inbox.clone(), ping_interval(state));
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            while !tx.is_closed() {
                tick.tick().await;
                if !pinger.answers(subject.clone()).await {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        Self {
            cluster,
            inbox,
            gone,
        }
    }

    async fn send(&self, kind: u8, body: &[u8]) -> bool {
        let mut message = Vec::with_capacity(body.len() + 1);
        message.push(kind);
        message.extend_from_slice(body);
        self.cluster.publish(self.inbox.clone(), message).await
    }

    /// An outbound of a session subscription, relayed; false once the relay should end.
    async fn outbound(&self, outbound: Option<Outbound>) -> bool {
        match outbound {
            Some(Outbound::Event(event)) => {
                let frame = format!("{}\n{}", event.kind(), protocol::event_frame(&event));
                self.send(TEXT, frame.as_bytes()).await
            }
            Some(Outbound::Close) => {
                self.send(ENDED, b"").await;
                false
            }
            None => {
                self.send(TOO_SLOW, b"").await;
                false
            }
        }
    }
}

/// Subscribes to the session here (its media too, with `media`) and relays to `inbox` in a task.
async fn relay_session(
    state: AppState,
    cluster: Cluster,
    session_id: &str,
    inbox: String,
    media: bool,
) -> Tapped {
    let not_live = Tapped {
        live: false,
        hello: None,
    };
    let Ok(Some(live)) = state.sessions.live(session_id).await else {
        return not_live;
    };
    let streams = match media {
        true => match live.addr.send(MediaTap).await {
            Ok(Ok(streams)) => Some(streams),
            _ => return not_live,
        },
        false => None,
    };
    let id = next_id();
    let (tx, events) = mpsc::channel(state.settings.ws.mailbox_capacity.max(1));
    // The remote channel counts as a present client of its session, as a local one does.
    let subscribe = Subscribe {
        subscriber: id,
        sender: tx,
        owns: true,
    };
    if !matches!(live.addr.send(subscribe).await, Ok(Ok(()))) {
        return not_live;
    }
    let hello = streams
        .as_ref()
        .map(|streams| protocol::hello(session_id, streams));
    let listener = Listener::new(&state, cluster, inbox);
    actix_web::rt::spawn(relay_one(listener, live.addr, id, events, streams));
    Tapped { live: true, hello }
}

async fn relay_one(
    mut listener: Listener,
    session: Addr<Session>,
    id: u64,
    mut events: mpsc::Receiver<Outbound>,
    streams: Option<crate::actors::session::messages::MediaStreams>,
) {
    // The renderer encodes JPEG for as long as a preview relay lives.
    let _jpeg = streams.as_ref().map(|s| Want::jpeg(&s.wants));
    let (mut frames, mut audio, mut media_on) = match streams {
        Some(s) => (Some(s.frames), Some(s.audio), true),
        None => (None, None, false),
    };
    loop {
        let go_on = tokio::select! {
            outbound = events.recv() => listener.outbound(outbound).await,
            frame = recv(&mut frames), if media_on => match frame {
                Some(frame) => match &frame.jpeg {
                    Some(jpeg) => listener.send(BINARY, &protocol::video_message(jpeg)).await,
                    None => true,
                },
                None => { media_on = false; true }
            },
            chunk = recv(&mut audio), if media_on => match chunk {
                Some(chunk) => listener.send(BINARY, &protocol::audio_message(&chunk.pcm)).await,
                None => { media_on = false; true }
            },
            _ = &mut listener.gone => false,
        };
        if !go_on {
            break;
        }
    }
    session.do_send(Unsubscribe { subscriber: id });
}

/// The next item of a live broadcast, skipping what a slow relay missed; `None` once it closed.
async fn recv<T: Clone>(receiver: &mut Option<broadcast::Receiver<T>>) -> Option<T> {
    let receiver = receiver.as_mut()?;
    loop {
        match receiver.recv().await {
            Ok(item) => return Some(item),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Relays the events of the agent's sessions here, those that start later too, until the
/// listener is gone.
async fn relay_agent(state: AppState, mut listener: Listener, agent_id: String) {
    let id = next_id();
    let (tx, mut events) = mpsc::channel(state.settings.ws.mailbox_capacity.max(1));
    let (appeared_tx, mut appeared) = mpsc::unbounded_channel();
    let watch = WatchAgent {
        agent_id,
        watcher: id,
        appeared: appeared_tx,
    };
    let mut sessions: HashMap<String, Addr<Session>> = HashMap::new();
    let subscribe = |live: LiveSession| {
        let request = Subscribe {
            subscriber: id,
            sender: tx.clone(),
            owns: false,
        };
        async move { matches!(live.addr.send(request).await, Ok(Ok(()))).then_some(live) }
    };
    for live in state.registry.send(watch).await.unwrap_or_default() {
        if let Some(live) = subscribe(live).await {
            sessions.insert(live.session_id, live.addr);
        }
    }
    loop {
        tokio::select! {
            Some(outbound) = events.recv() => {
                // An agent's channel stays open when one of its sessions ends.
                if let Outbound::Event(_) = outbound {
                    if !listener.outbound(Some(outbound)).await {
                        break;
                    }
                }
            }
            Some(live) = appeared.recv() => {
                if let Some(live) = subscribe(live).await {
                    sessions.insert(live.session_id, live.addr);
                }
            }
            _ = &mut listener.gone => break,
        }
    }
    for session in sessions.values() {
        session.do_send(Unsubscribe { subscriber: id });
    }
    state.registry.do_send(Unwatch { watcher: id });
}

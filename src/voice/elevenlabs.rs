//! ElevenLabs Conversational AI over its WebSocket protocol: one conversation with one agent,
//! driven by a task that reconnects on its own, behind a small handle and a channel of events.
//!
//! ```text
//! let (handle, mut events) = elevenlabs::start(config, conversation, http)?;
//! handle.contextual_update("The user opened the pricing page.")?;
//! while let Some(event) = events.recv().await { /* ProviderEvent::Audio { pcm, .. } is 16 kHz */ }
//! handle.close().await; // or drop(handle): the task stops either way
//! ```
//!
//! API:
//! - [`start`]`(ElevenLabsConfig, Conversation, reqwest::Client) -> Result<(ElevenLabsHandle,
//!   mpsc::Receiver<ProviderEvent>), ElevenLabsError>`; call it inside a Tokio runtime (an actix
//!   arbiter is one). It only validates and spawns; connecting happens in the task.
//! - [`ElevenLabsHandle`]: `contextual_update(text)`, `user_message(text)`, `user_activity()`,
//!   `user_audio(&[i16])` (16 kHz), `set_prompt(Option<String>)`, `is_finished()`, and
//!   `close().await`. The send methods are synchronous and never wait: they queue for the task and
//!   fail with [`ElevenLabsError::Busy`] or [`ElevenLabsError::Closed`].
//! - [`ProviderEvent`]: `Connected`, `Disconnected`, `Audio` (16 kHz mono), `Interrupted`,
//!   `AgentResponse`, `AgentResponseCorrection`, `UserTranscript`, `Dropped`, `Error`.
//!
//! The protocol (ElevenLabs' public docs and SDKs): a public agent is reached at
//! `{ws_base}/v1/convai/conversation?agent_id=…`; a signed (private) agent through a URL that
//! `GET {http_base}/v1/convai/conversation/get-signed-url?agent_id=…` with `xi-api-key` returns,
//! fetched anew for every connection. The client speaks first with
//! `conversation_initiation_client_data` (the prompt override, only when there is a prompt, and the
//! dynamic variables); the server answers `conversation_initiation_metadata` (conversation id and
//! audio formats), then streams `audio`, `agent_response`, `user_transcript`, `interruption`,
//! `ping`… The client answers every `ping` with a `pong` itself, and answers a `client_tool_call`
//! with an error result (this client offers no tools; a silent ignore would leave the agent
//! waiting for one).
//!
//! Decisions worth knowing:
//! - **Interruptions.** After `interruption` with event id N, agent audio with an event id ≤ N is
//!   dropped inside the client, including audio still waiting in the backlog (below). Audio the
//!   consumer already received precedes the `Interrupted` event in the channel: on `Interrupted`,
//!   the consumer discards what it holds and has not played. Event ids are per conversation: a new
//!   connection starts over.
//! - **Bounded events, no silent loss.** Events go through a bounded channel
//!   (`event_buffer`); behind it the task keeps a backlog so that it can go on answering pings
//!   while the consumer is slow. A consumer that keeps up, even in bursts, loses nothing: the
//!   backlog holds up to `max_backlog_audio` of agent audio (an answer arrives faster than real
//!   time) and [`MAX_BACKLOG_EVENTS`] events. Past either bound the oldest audio (then the oldest
//!   other event; never the newest event) is dropped and counted, and the consumer receives one
//!   [`ProviderEvent::Dropped`] with the counts before the next event it reads. Memory per
//!   conversation is thereby bounded however long the consumer stops reading.
//! - **Reconnection.** Any failure (signed-URL request refused or unreachable, handshake refused,
//!   no `conversation_initiation_metadata` within `connect_timeout`, the socket dropping or being
//!   closed by the server) is reported as [`ProviderEvent::Disconnected`] with the wait before the
//!   next try: exponential from `initial_backoff` to `max_backoff`, each wait drawn uniformly from
//!   its upper half. A connection that stayed up for `max_backoff` resets the backoff, so a server
//!   that accepts and drops at once is still retried slowly. The client never gives up by itself:
//!   the consumer decides when `attempt` is high enough and closes. Each new connection sends the
//!   initiation data again (with the prompt as last set), so it is a new conversation at
//!   ElevenLabs; its id comes with `Connected`.
//! - **While disconnected**, contextual updates and user messages are held (at most
//!   [`MAX_HELD_TURNS`], the oldest dropped with an `Error` event) and sent once the next
//!   conversation is up; user audio and user activity are stale by then and are discarded.
//! - **Prompt updates mid-call.** The protocol has none: the prompt is fixed at initiation.
//!   `set_prompt` changes what the next (re)connection sends and sends nothing now; to tell the
//!   live conversation, send a `contextual_update` as well, or close and start anew.
//! - **Closing.** `close().await` sends a close frame (1000) and waits up to [`CLOSE_GRACE`] for
//!   the task; dropping the handle aborts the task at once (the socket is dropped without a close
//!   frame). Dropping the events receiver also ends the conversation: nobody listens any more.
//! - **Audio formats.** `pcm_<rate>` is decoded as s16le mono and resampled to 16 kHz (linear,
//!   continuous across chunks); `ulaw_8000` is G.711 µ-law. Any other format is reported once as
//!   an `Error`, and that connection's audio is dropped. User audio is converted to the agent's
//!   `user_input_audio_format` the same way.
//! - **Secrets.** The API key is sent only to the signed-URL endpoint; the signed URL carries a
//!   token, so neither appears in events or logs.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use super::SAMPLE_RATE;
use crate::config::Secret;

/// Events the backlog holds at most, audio included (see the module doc).
pub const MAX_BACKLOG_EVENTS: usize = 1024;
/// Contextual updates and user messages held while disconnected.
pub const MAX_HELD_TURNS: usize = 64;
/// How long `close()` waits for the task to say goodbye before aborting it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Commands queued from the handle to the task before `Busy`.
const COMMAND_BUFFER: usize = 256;
/// The Python SDK's limit; bounds what one frame can make the client allocate.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// An error body from the signed-URL endpoint is read up to this much.
const MAX_ERROR_BODY: usize = 64 << 10;

// ---------------------------------------------------------------------------------------------
// Configuration and the conversation
// ---------------------------------------------------------------------------------------------

/// Where ElevenLabs is and how to behave when it is not there.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    /// `https://api.elevenlabs.io`: the signed-URL endpoint lives under it. Tests point it at the fake.
    pub http_base: String,
    /// `wss://api.elevenlabs.io`: public agents are reached under it.
    pub ws_base: String,
    /// The operator's `xi-api-key`; required for signed agents, sent nowhere but the signed-URL
    /// endpoint.
    pub api_key: Option<Secret>,
    /// The first wait after a failure.
    pub initial_backoff: Duration,
    /// The longest wait between tries; a connection that stayed up this long resets the backoff.
    pub max_backoff: Duration,
    /// Bounds the signed-URL request, the WebSocket handshake, and the wait for
    /// `conversation_initiation_metadata`, each.
    pub connect_timeout: Duration,
    /// Capacity of the events channel.
    pub event_buffer: usize,
    /// Agent audio the client holds for a consumer that is behind, before dropping the oldest.
    pub max_backlog_audio: Duration,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            http_base: "https://api.elevenlabs.io".into(),
            ws_base: "wss://api.elevenlabs.io".into(),
            api_key: None,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            event_buffer: 64,
            max_backlog_audio: Duration::from_secs(60),
        }
    }
}

/// How the agent is reached: its own access setting at ElevenLabs (public, or a signed URL per
/// connection fetched with the API key); the agent's stored voice config says which.
pub use crate::domain::agent::AuthMethod;

/// A dynamic variable's value: ElevenLabs accepts strings, numbers and booleans only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DynamicValue {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl From<String> for DynamicValue {
    fn from(value: String) -> Self {
        DynamicValue::String(value)
    }
}

impl From<&str> for DynamicValue {
    fn from(value: &str) -> Self {
        DynamicValue::String(value.to_string())
    }
}

impl From<bool> for DynamicValue {
    fn from(value: bool) -> Self {
        DynamicValue::Bool(value)
    }
}

impl From<i64> for DynamicValue {
    fn from(value: i64) -> Self {
        DynamicValue::Number(value.into())
    }
}

impl TryFrom<Value> for DynamicValue {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(s) => Ok(DynamicValue::String(s)),
            Value::Number(n) => Ok(DynamicValue::Number(n)),
            Value::Bool(b) => Ok(DynamicValue::Bool(b)),
            other => Err(format!(
                "must be a string, number or boolean, not {}",
                json_kind(&other)
            )),
        }
    }
}

/// What to say when connecting: the agent, how to reach it, and what to initiate it with.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub agent_id: String,
    pub auth: AuthMethod,
    /// Overrides the agent's system prompt (`conversation_config_override.agent.prompt.prompt`);
    /// the agent must allow that override at ElevenLabs. `None` sends no override.
    pub prompt: Option<String>,
    /// Sent as `dynamic_variables`, for `{{name}}` placeholders in the agent's configuration.
    pub dynamic_variables: BTreeMap<String, DynamicValue>,
}

impl Conversation {
    pub fn new(agent_id: impl Into<String>, auth: AuthMethod) -> Self {
        Self {
            agent_id: agent_id.into(),
            auth,
            prompt: None,
            dynamic_variables: BTreeMap::new(),
        }
    }

    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    pub fn with_variable(
        mut self,
        name: impl Into<String>,
        value: impl Into<DynamicValue>,
    ) -> Self {
        self.dynamic_variables.insert(name.into(), value.into());
        self
    }

    /// Adds every entry of a JSON object (a session's env, say); a value that is not a string,
    /// number or boolean is refused with its name.
    pub fn with_variables_json(
        mut self,
        variables: &serde_json::Map<String, Value>,
    ) -> Result<Self, ElevenLabsError> {
        for (name, value) in variables {
            let value = DynamicValue::try_from(value.clone()).map_err(|why| {
                ElevenLabsError::Config(format!("dynamic variable {name:?} {why}"))
            })?;
            self.dynamic_variables.insert(name.clone(), value);
        }
        Ok(self)
    }

    /// The first message of every connection.
    pub fn initiation_message(&self) -> Value {
        let mut message = json!({
            "type": "conversation_initiation_client_data",
            "dynamic_variables": self.dynamic_variables,
        });
        if let Some(prompt) = &self.prompt {
            message["conversation_config_override"] =
                json!({ "agent": { "prompt": { "prompt": prompt } } });
        }
        message
    }
}

// ---------------------------------------------------------------------------------------------
// Events, errors, the handle
// ---------------------------------------------------------------------------------------------

/// What the conversation reports, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A conversation is up (`conversation_initiation_metadata` arrived). After a reconnection
    /// this is a new conversation with a new id.
    Connected { conversation_id: String },
    /// No conversation now; the next try starts in `retry_in`. `attempt` counts the failures since
    /// the last connection that stayed up (1 for the first).
    Disconnected {
        reason: String,
        retry_in: Duration,
        attempt: u32,
    },
    /// Agent speech, 16 kHz mono, never of an interrupted turn (see the module doc).
    Audio { event_id: u64, pcm: Vec<i16> },
    /// The user interrupted the agent: discard unplayed audio with an event id ≤ `event_id`.
    Interrupted { event_id: u64 },
    /// What the agent says, as text (arrives with its first audio).
    AgentResponse(String),
    /// The agent's last response as cut by an interruption.
    AgentResponseCorrection { original: String, corrected: String },
    /// What the user said, as ElevenLabs understood it.
    UserTranscript(String),
    /// The consumer fell behind the backlog's bounds and these were dropped; delivered right
    /// before the first event after the gap.
    Dropped {
        audio_events: u64,
        audio_samples: u64,
        other_events: u64,
    },
    /// Something ElevenLabs sent could not be used (bad audio, malformed event, unsupported
    /// format), or a held turn had to be dropped. The conversation goes on.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElevenLabsError {
    #[error("invalid ElevenLabs settings: {0}")]
    Config(String),
    #[error("the ElevenLabs conversation has ended")]
    Closed,
    #[error("the ElevenLabs conversation is not keeping up; try again later")]
    Busy,
}

enum Command {
    Send(Outgoing),
    SetPrompt(Option<String>),
    Close,
}

/// A client event the consumer asked for.
#[derive(Debug, Clone, PartialEq)]
enum Outgoing {
    ContextualUpdate(String),
    UserMessage(String),
    UserActivity,
    UserAudio(Vec<i16>),
}

/// The consumer's side of a conversation. Not `Clone`: dropping it ends the conversation.
pub struct ElevenLabsHandle {
    commands: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
}

impl ElevenLabsHandle {
    fn command(&self, command: Command) -> Result<(), ElevenLabsError> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ElevenLabsError::Busy,
            mpsc::error::TrySendError::Closed(_) => ElevenLabsError::Closed,
        })
    }

    /// Tells the agent something without making it answer (`contextual_update`).
    pub fn contextual_update(&self, text: impl Into<String>) -> Result<(), ElevenLabsError> {
        self.command(Command::Send(Outgoing::ContextualUpdate(text.into())))
    }

    /// A typed user turn the agent answers (`user_message`).
    pub fn user_message(&self, text: impl Into<String>) -> Result<(), ElevenLabsError> {
        self.command(Command::Send(Outgoing::UserMessage(text.into())))
    }

    /// Tells the agent the user is there, so it holds back (`user_activity`).
    pub fn user_activity(&self) -> Result<(), ElevenLabsError> {
        self.command(Command::Send(Outgoing::UserActivity))
    }

    /// User speech, 16 kHz mono (`user_audio_chunk`); discarded while disconnected.
    pub fn user_audio(&self, pcm: &[i16]) -> Result<(), ElevenLabsError> {
        self.command(Command::Send(Outgoing::UserAudio(pcm.to_vec())))
    }

    /// The prompt the next (re)connection initiates with; the live conversation is not told.
    pub fn set_prompt(&self, prompt: Option<String>) -> Result<(), ElevenLabsError> {
        self.command(Command::SetPrompt(prompt))
    }

    /// Whether the task has ended (closed, or its events receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }

    /// Ends the conversation with a close frame and waits (at most [`CLOSE_GRACE`]) for the task.
    pub async fn close(mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        if self.commands.try_send(Command::Close).is_err() {
            task.abort();
        }
        if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }
}

impl Drop for ElevenLabsHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Validates the settings and starts the conversation's task; it connects in the background and
/// reports through the returned receiver. Must be called inside a Tokio runtime.
pub fn start(
    config: ElevenLabsConfig,
    conversation: Conversation,
    http: reqwest::Client,
) -> Result<(ElevenLabsHandle, mpsc::Receiver<ProviderEvent>), ElevenLabsError> {
    let endpoints = Endpoints::new(&config, &conversation)?;
    let (command_tx, command_rx) = mpsc::channel(COMMAND_BUFFER);
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer);
    let max_audio_samples =
        (config.max_backlog_audio.as_millis() as u64 * SAMPLE_RATE as u64 / 1000) as usize;
    let ctx = Ctx {
        config,
        endpoints,
        http,
        tls: None,
    };
    let io = Io {
        commands: command_rx,
        events: event_tx,
        backlog: Backlog::new(max_audio_samples, MAX_BACKLOG_EVENTS),
        held: VecDeque::new(),
        conversation,
    };
    let task = tokio::spawn(run(ctx, io));
    Ok((
        ElevenLabsHandle {
            commands: command_tx,
            task: Some(task),
        },
        event_rx,
    ))
}

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Endpoints {
    /// `{ws_base}/v1/convai/conversation?agent_id=…`
    public: Url,
    /// `{http_base}/v1/convai/conversation/get-signed-url?agent_id=…`
    signed_url: Url,
}

impl Endpoints {
    fn new(
        config: &ElevenLabsConfig,
        conversation: &Conversation,
    ) -> Result<Self, ElevenLabsError> {
        let agent_id = conversation.agent_id.trim();
        if agent_id.is_empty() {
            return Err(ElevenLabsError::Config("agent_id must not be empty".into()));
        }
        if conversation.auth == AuthMethod::Signed
            && config.api_key.as_ref().is_none_or(|key| key.is_empty())
        {
            return Err(ElevenLabsError::Config(
                "a signed agent needs the ElevenLabs API key".into(),
            ));
        }
        if config.initial_backoff.is_zero() || config.initial_backoff > config.max_backoff {
            return Err(ElevenLabsError::Config(
                "initial_backoff must be positive and at most max_backoff".into(),
            ));
        }
        if config.event_buffer == 0 || config.connect_timeout.is_zero() {
            return Err(ElevenLabsError::Config(
                "event_buffer and connect_timeout must be positive".into(),
            ));
        }
        Ok(Self {
            public: endpoint(
                "ws_base",
                &config.ws_base,
                &["ws", "wss"],
                "/v1/convai/conversation",
                agent_id,
            )?,
            signed_url: endpoint(
                "http_base",
                &config.http_base,
                &["http", "https"],
                "/v1/convai/conversation/get-signed-url",
                agent_id,
            )?,
        })
    }
}

fn endpoint(
    field: &str,
    base: &str,
    schemes: &[&str],
    path: &str,
    agent_id: &str,
) -> Result<Url, ElevenLabsError> {
    let mut url = Url::parse(base)
        .map_err(|e| ElevenLabsError::Config(format!("{field} is not a URL ({e})")))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none() {
        return Err(ElevenLabsError::Config(format!(
            "{field} must be a {} URL with a host",
            schemes.join(" or ")
        )));
    }
    let joined = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.query_pairs_mut()
        .clear()
        .append_pair("agent_id", agent_id);
    Ok(url)
}

/// What the task reads but never changes.
struct Ctx {
    config: ElevenLabsConfig,
    endpoints: Endpoints,
    http: reqwest::Client,
    /// Built on the first `wss://` connection.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The task's ties to the consumer.
struct Io {
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ProviderEvent>,
    backlog: Backlog,
    /// Text turns waiting for the next conversation.
    held: VecDeque<Outgoing>,
    conversation: Conversation,
}

/// How one connection ended.
enum Flow {
    /// Closed by the consumer, or nobody listens any more.
    Stop,
    Lost {
        reason: String,
        /// It had been up for `max_backoff`: start the backoff over.
        stable: bool,
    },
}

fn lost(reason: impl Into<String>) -> Flow {
    Flow::Lost {
        reason: reason.into(),
        stable: false,
    }
}

async fn run(mut ctx: Ctx, mut io: Io) {
    let agent_id = io.conversation.agent_id.clone();
    let mut attempt: u32 = 0;
    loop {
        let flow = connect_and_converse(&mut ctx, &mut io).await;
        let (reason, stable) = match flow {
            Flow::Stop => break,
            Flow::Lost { reason, stable } => (reason, stable),
        };
        if stable {
            attempt = 0;
        }
        attempt = attempt.saturating_add(1);
        let retry_in = backoff_delay(
            ctx.config.initial_backoff,
            ctx.config.max_backoff,
            attempt,
            rand::thread_rng().gen::<f64>(),
        );
        tracing::warn!(agent_id = %agent_id, attempt, ?retry_in, %reason, "ElevenLabs conversation down");
        io.backlog.push(ProviderEvent::Disconnected {
            reason,
            retry_in,
            attempt,
        });
        if io.serve(tokio::time::sleep(retry_in)).await.is_none() {
            break;
        }
    }
    tracing::debug!(agent_id = %agent_id, "ElevenLabs conversation task ended");
}

/// The wait before try `attempt` (1-based): `initial · 2^(attempt-1)` capped at `max`, then
/// scaled into its upper half by `jitter` ∈ [0, 1).
fn backoff_delay(initial: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let ceiling = initial.saturating_mul(1u32 << doublings).min(max);
    ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

async fn connect_and_converse(ctx: &mut Ctx, io: &mut Io) -> Flow {
    let timeout = ctx.config.connect_timeout;
    let url = match io.conversation.auth {
        AuthMethod::Public => ctx.endpoints.public.clone(),
        AuthMethod::Signed => {
            let fetch = tokio::time::timeout(timeout, fetch_signed_url(ctx));
            match io.serve(fetch).await {
                None => return Flow::Stop,
                Some(Err(_)) => {
                    return lost(format!("signed URL request timed out after {timeout:?}"))
                }
                Some(Ok(Err(reason))) => return lost(reason),
                Some(Ok(Ok(url))) => url,
            }
        }
    };
    let connector = if url.scheme() == "wss" {
        match tls_config(&mut ctx.tls) {
            Ok(tls) => Connector::Rustls(tls),
            Err(reason) => return lost(reason),
        }
    } else {
        Connector::Plain
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    // Nagle off: audio and pongs are small and late is wrong.
    let handshake = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config),
            true,
            Some(connector),
        ),
    );
    let ws = match io.serve(handshake).await {
        None => return Flow::Stop,
        Some(Err(_)) => return lost(format!("WebSocket handshake timed out after {timeout:?}")),
        // The error never contains the URL (and so never a signed URL's token).
        Some(Ok(Err(e))) => return lost(format!("WebSocket connection failed: {e}")),
        Some(Ok(Ok((ws, _response)))) => ws,
    };
    io.converse(&ctx.config, ws).await
}

/// `GET …/get-signed-url` with the API key; the `signed_url` it answers, or why not.
async fn fetch_signed_url(ctx: &Ctx) -> Result<Url, String> {
    let key = ctx
        .config
        .api_key
        .as_ref()
        .map(Secret::expose)
        .unwrap_or_default();
    let response = ctx
        .http
        .get(ctx.endpoints.signed_url.clone())
        .header("xi-api-key", key)
        .send()
        .await
        .map_err(|e| format!("signed URL request failed: {}", e.without_url()))?;
    let status = response.status();
    let body = crate::net::read_limited(response, MAX_ERROR_BODY)
        .await
        .map_err(|e| format!("signed URL response unreadable: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "signed URL request refused: HTTP {} ({})",
            status.as_u16(),
            error_detail(&body)
        ));
    }
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("signed URL response is not JSON ({e})"))?;
    let raw = parsed
        .get("signed_url")
        .and_then(Value::as_str)
        .ok_or("signed URL response has no signed_url")?;
    let url = Url::parse(raw).map_err(|e| format!("signed_url is not a URL ({e})"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err("signed_url is not a ws:// or wss:// URL".into());
    }
    Ok(url)
}

/// ElevenLabs' error bodies: `{"detail": {"status", "message"}}`, `{"detail": "…"}`, or
/// FastAPI's `{"detail": [{"msg", …}]}`.
fn error_detail(body: &[u8]) -> String {
    let text = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            "no body".to_string()
        } else {
            text.chars().take(200).collect()
        }
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return text();
    };
    match value.get("detail") {
        Some(Value::String(detail)) => detail.clone(),
        Some(Value::Object(detail)) => {
            let field = |name| detail.get(name).and_then(Value::as_str);
            match (field("status"), field("message")) {
                (Some(status), Some(message)) => format!("{status}: {message}"),
                (Some(one), None) | (None, Some(one)) => one.to_string(),
                (None, None) => text(),
            }
        }
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.get("msg").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; "),
        _ => text(),
    }
}

/// A rustls client config on ring with Mozilla's roots, as `net::http_client` builds its own (the
/// process installs no default crypto provider).
fn tls_config(
    cache: &mut Option<Arc<rustls::ClientConfig>>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    if let Some(tls) = cache {
        return Ok(tls.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = Arc::new(tls);
    *cache = Some(tls.clone());
    Ok(tls)
}

impl Io {
    /// Serves the consumer (commands, event delivery) while `work` runs; `None` when the
    /// conversation must stop instead.
    async fn serve<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return None,
                    Some(Command::SetPrompt(prompt)) => self.conversation.prompt = prompt,
                    Some(Command::Send(outgoing)) => hold(&mut self.held, &mut self.backlog, outgoing),
                },
                permit = self.events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop() {
                            permit.send(event);
                        }
                    }
                    Err(_) => return None,
                },
                _ = self.events.closed() => return None,
                output = &mut work => return Some(output),
            }
        }
    }

    /// One connection, from the initiation data to its end.
    async fn converse(&mut self, config: &ElevenLabsConfig, ws: Ws) -> Flow {
        let (mut sink, mut stream) = ws.split();
        let init = self.conversation.initiation_message().to_string();
        if let Err(e) = sink.send(Message::text(init)).await {
            return lost(format!(
                "sending conversation_initiation_client_data failed: {e}"
            ));
        }
        let mut protocol = Protocol::new();
        let deadline = Instant::now() + config.connect_timeout;
        let mut up_since: Option<Instant> = None;
        let stable = |up_since: Option<Instant>| {
            up_since.is_some_and(|since| since.elapsed() >= config.max_backoff)
        };
        loop {
            let mut outbound: Vec<String> = Vec::new();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => {
                        say_goodbye(&mut sink).await;
                        return Flow::Stop;
                    }
                    Some(Command::SetPrompt(prompt)) => self.conversation.prompt = prompt,
                    Some(Command::Send(outgoing)) if up_since.is_some() => {
                        outbound.extend(protocol.encode(&outgoing));
                    }
                    Some(Command::Send(outgoing)) => hold(&mut self.held, &mut self.backlog, outgoing),
                },
                permit = self.events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop() {
                            permit.send(event);
                        }
                    }
                    Err(_) => {
                        say_goodbye(&mut sink).await;
                        return Flow::Stop;
                    }
                },
                _ = self.events.closed() => {
                    say_goodbye(&mut sink).await;
                    return Flow::Stop;
                }
                _ = tokio::time::sleep_until(deadline), if up_since.is_none() => {
                    return lost(format!(
                        "no conversation_initiation_metadata within {:?}",
                        config.connect_timeout
                    ));
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        for action in protocol.on_server_message(&text) {
                            match action {
                                Action::Reply(reply) => outbound.push(reply),
                                Action::Emit(event) => {
                                    let connected = matches!(event, ProviderEvent::Connected { .. });
                                    self.backlog.push(event);
                                    if connected && up_since.is_none() {
                                        up_since = Some(Instant::now());
                                        for held in std::mem::take(&mut self.held) {
                                            outbound.extend(protocol.encode(&held));
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Flow::Lost {
                            reason: describe_close(frame.as_ref()),
                            stable: stable(up_since),
                        };
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        tracing::debug!(len = bytes.len(), "ElevenLabs sent a binary frame; ignored");
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Flow::Lost {
                            reason: format!("connection lost: {e}"),
                            stable: stable(up_since),
                        };
                    }
                    None => {
                        return Flow::Lost {
                            reason: "connection closed without a close frame".into(),
                            stable: stable(up_since),
                        };
                    }
                },
            }
            for text in outbound {
                if let Err(e) = sink.send(Message::text(text)).await {
                    return Flow::Lost {
                        reason: format!("sending failed: {e}"),
                        stable: stable(up_since),
                    };
                }
            }
        }
    }
}

/// Keeps a text turn for the next conversation; audio and activity are stale by then.
fn hold(held: &mut VecDeque<Outgoing>, backlog: &mut Backlog, outgoing: Outgoing) {
    match outgoing {
        Outgoing::ContextualUpdate(_) | Outgoing::UserMessage(_) => {
            if held.len() >= MAX_HELD_TURNS {
                held.pop_front();
                backlog.push(ProviderEvent::Error(format!(
                    "not connected: dropped the oldest of {MAX_HELD_TURNS} held messages"
                )));
            }
            held.push_back(outgoing);
        }
        Outgoing::UserActivity | Outgoing::UserAudio(_) => {
            tracing::trace!("not connected: user audio or activity discarded");
        }
    }
}

/// A normal close frame, bounded: a peer that stopped reading must not hold the task.
async fn say_goodbye(sink: &mut SplitSink<Ws, Message>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE / 2, sink.send(Message::Close(Some(frame)))).await;
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => {
            format!(
                "ElevenLabs closed the connection ({})",
                u16::from(frame.code)
            )
        }
        Some(frame) => format!(
            "ElevenLabs closed the connection ({}: {})",
            u16::from(frame.code),
            frame.reason.as_str()
        ),
        None => "ElevenLabs closed the connection".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol of one connection, without I/O
// ---------------------------------------------------------------------------------------------

/// What a server message asks of the task.
#[derive(Debug, PartialEq)]
enum Action {
    Emit(ProviderEvent),
    /// A client event to send now (pong, tool result).
    Reply(String),
}

/// One connection's protocol state: the conversation id, the audio formats, the interruption.
struct Protocol {
    conversation_id: Option<String>,
    output: Decoder,
    input: Encoder,
    /// Audio at or below this event id belongs to an interrupted turn.
    last_interrupt: u64,
}

impl Protocol {
    fn new() -> Self {
        Self {
            conversation_id: None,
            // What ElevenLabs uses unless the agent says otherwise; replaced by the metadata.
            output: Decoder::new(AudioFormat::Pcm(SAMPLE_RATE)),
            input: Encoder::new(AudioFormat::Pcm(SAMPLE_RATE)),
            last_interrupt: 0,
        }
    }

    /// A client event for what the consumer asked.
    fn encode(&mut self, outgoing: &Outgoing) -> Option<String> {
        let message = match outgoing {
            Outgoing::ContextualUpdate(text) => json!({"type": "contextual_update", "text": text}),
            Outgoing::UserMessage(text) => json!({"type": "user_message", "text": text}),
            Outgoing::UserActivity => json!({"type": "user_activity"}),
            Outgoing::UserAudio(pcm) => {
                let bytes = self.input.encode(pcm)?;
                if bytes.is_empty() {
                    return None;
                }
                // The one client event without a `type`: that is the wire format.
                json!({"user_audio_chunk": base64::engine::general_purpose::STANDARD.encode(bytes)})
            }
        };
        Some(message.to_string())
    }

    fn on_server_message(&mut self, text: &str) -> Vec<Action> {
        let message: Value = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => {
                return vec![Action::Emit(ProviderEvent::Error(format!(
                    "ElevenLabs sent a message that is not JSON ({e})"
                )))]
            }
        };
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        match self.handle(kind, &message) {
            Ok(actions) => actions,
            Err(what) => vec![Action::Emit(ProviderEvent::Error(format!(
                "malformed {kind} event from ElevenLabs: {what}"
            )))],
        }
    }

    fn handle(&mut self, kind: &str, message: &Value) -> Result<Vec<Action>, String> {
        let event = |field: &str| message.get(field).ok_or(format!("no {field}"));
        let emit = |event| Ok(vec![Action::Emit(event)]);
        match kind {
            "conversation_initiation_metadata" => {
                let event = event("conversation_initiation_metadata_event")?;
                let id = string_at(event, "conversation_id")?;
                if self.conversation_id.is_some() {
                    tracing::debug!("second conversation_initiation_metadata ignored");
                    return Ok(vec![]);
                }
                self.conversation_id = Some(id.clone());
                let mut actions = vec![Action::Emit(ProviderEvent::Connected {
                    conversation_id: id,
                })];
                let format_of = |field| event.get(field).and_then(Value::as_str);
                if let Some(name) = format_of("agent_output_audio_format") {
                    match AudioFormat::parse(name) {
                        Some(format) => self.output = Decoder::new(format),
                        None => {
                            self.output = Decoder::unsupported();
                            actions.push(Action::Emit(ProviderEvent::Error(format!(
                                "unsupported agent_output_audio_format {name:?}: \
                                 this conversation's audio is dropped"
                            ))));
                        }
                    }
                }
                if let Some(name) = format_of("user_input_audio_format") {
                    match AudioFormat::parse(name) {
                        Some(format) => self.input = Encoder::new(format),
                        None => {
                            self.input = Encoder::unsupported();
                            actions.push(Action::Emit(ProviderEvent::Error(format!(
                                "unsupported user_input_audio_format {name:?}: \
                                 user audio is not sent"
                            ))));
                        }
                    }
                }
                Ok(actions)
            }
            "audio" => {
                let event = event("audio_event")?;
                let event_id = event_id_at(event)?;
                if event_id <= self.last_interrupt {
                    tracing::trace!(event_id, "audio of an interrupted turn dropped");
                    return Ok(vec![]);
                }
                let encoded = string_at(event, "audio_base_64")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| format!("audio_base_64 is not base64 ({e})"))?;
                match self.output.decode(&bytes) {
                    Some(pcm) if !pcm.is_empty() => emit(ProviderEvent::Audio { event_id, pcm }),
                    // Unsupported format (reported once), or too short to yield a sample yet.
                    _ => Ok(vec![]),
                }
            }
            "interruption" => {
                let event_id = event_id_at(event("interruption_event")?)?;
                self.last_interrupt = self.last_interrupt.max(event_id);
                // The next turn is a new stream: no interpolation across the cut.
                self.output.reset();
                emit(ProviderEvent::Interrupted { event_id })
            }
            "ping" => {
                let event_id = event_id_at(event("ping_event")?)?;
                Ok(vec![Action::Reply(
                    json!({"type": "pong", "event_id": event_id}).to_string(),
                )])
            }
            "agent_response" => {
                let text = string_at(event("agent_response_event")?, "agent_response")?;
                emit(ProviderEvent::AgentResponse(text.trim().to_string()))
            }
            "agent_response_correction" => {
                let event = event("agent_response_correction_event")?;
                emit(ProviderEvent::AgentResponseCorrection {
                    original: string_at(event, "original_agent_response")?
                        .trim()
                        .to_string(),
                    corrected: string_at(event, "corrected_agent_response")?
                        .trim()
                        .to_string(),
                })
            }
            "user_transcript" => {
                let text = string_at(event("user_transcription_event")?, "user_transcript")?;
                emit(ProviderEvent::UserTranscript(text.trim().to_string()))
            }
            "client_tool_call" => {
                let call = event("client_tool_call")?;
                let id = string_at(call, "tool_call_id")?;
                let name = call.get("tool_name").and_then(Value::as_str).unwrap_or("?");
                tracing::debug!(tool = name, "client tool call refused: no client tools");
                Ok(vec![Action::Reply(
                    json!({
                        "type": "client_tool_result",
                        "tool_call_id": id,
                        "result": format!("Client tool {name} is not available"),
                        "is_error": true,
                    })
                    .to_string(),
                )])
            }
            other => {
                // vad_score, internal_tentative_agent_response, agent_tool_response, and
                // whatever ElevenLabs adds next.
                tracing::debug!(kind = other, "ElevenLabs event ignored");
                Ok(vec![])
            }
        }
    }
}

fn string_at(event: &Value, field: &str) -> Result<String, String> {
    event
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(format!("no string {field}"))
}

/// Event ids are integers; tolerate them as numeric strings too.
fn event_id_at(event: &Value) -> Result<u64, String> {
    let value = event.get("event_id").ok_or("no event_id")?;
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or(format!("event_id {value} is not a non-negative integer"))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------------------------

/// ElevenLabs' `*_audio_format` values this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AudioFormat {
    /// `pcm_<rate>`: s16le mono.
    Pcm(u32),
    /// `ulaw_8000`: G.711 µ-law at 8 kHz.
    Ulaw8000,
}

impl AudioFormat {
    fn parse(name: &str) -> Option<Self> {
        if name == "ulaw_8000" {
            return Some(AudioFormat::Ulaw8000);
        }
        let rate: u32 = name.strip_prefix("pcm_")?.parse().ok()?;
        (4_000..=192_000)
            .contains(&rate)
            .then_some(AudioFormat::Pcm(rate))
    }

    fn rate(self) -> u32 {
        match self {
            AudioFormat::Pcm(rate) => rate,
            AudioFormat::Ulaw8000 => 8_000,
        }
    }
}

/// Agent audio in its format → 16 kHz samples.
struct Decoder {
    format: Option<AudioFormat>,
    resampler: Resampler,
}

impl Decoder {
    fn new(format: AudioFormat) -> Self {
        Self {
            format: Some(format),
            resampler: Resampler::new(format.rate(), SAMPLE_RATE),
        }
    }

    fn unsupported() -> Self {
        Self {
            format: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
        }
    }

    fn reset(&mut self) {
        self.resampler.reset();
    }

    /// `None` when the format is unsupported (already reported once).
    fn decode(&mut self, bytes: &[u8]) -> Option<Vec<i16>> {
        let samples: Vec<i16> = match self.format? {
            AudioFormat::Pcm(_) => {
                if !bytes.len().is_multiple_of(2) {
                    tracing::debug!(len = bytes.len(), "odd PCM chunk; last byte dropped");
                }
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect()
            }
            AudioFormat::Ulaw8000 => bytes.iter().map(|&b| ulaw_to_linear(b)).collect(),
        };
        Some(self.resampler.process(&samples))
    }
}

/// 16 kHz user samples → the agent's input format.
struct Encoder {
    format: Option<AudioFormat>,
    resampler: Resampler,
}

impl Encoder {
    fn new(format: AudioFormat) -> Self {
        Self {
            format: Some(format),
            resampler: Resampler::new(SAMPLE_RATE, format.rate()),
        }
    }

    fn unsupported() -> Self {
        Self {
            format: None,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
        }
    }

    fn encode(&mut self, pcm: &[i16]) -> Option<Vec<u8>> {
        let format = self.format?;
        let samples = self.resampler.process(pcm);
        Some(match format {
            AudioFormat::Pcm(_) => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            AudioFormat::Ulaw8000 => samples.iter().map(|&s| linear_to_ulaw(s)).collect(),
        })
    }
}

/// Linear-interpolation resampling of a stream that comes in chunks: positions are exact
/// integers (in 1/`to` of an input sample), and the last sample of a chunk is kept to interpolate
/// into the next, so chunking changes nothing.
struct Resampler {
    from: u32,
    to: u32,
    /// The previous chunk's last sample, index 0 of the next virtual buffer.
    prev: Option<i16>,
    /// The next output's position in the virtual buffer, in 1/`to` units.
    pos: u64,
}

impl Resampler {
    fn new(from: u32, to: u32) -> Self {
        Self {
            from,
            to,
            prev: None,
            pos: 0,
        }
    }

    fn reset(&mut self) {
        self.prev = None;
        self.pos = 0;
    }

    fn process(&mut self, input: &[i16]) -> Vec<i16> {
        if self.from == self.to || input.is_empty() {
            return input.to_vec();
        }
        let offset = usize::from(self.prev.is_some());
        let len = input.len() + offset;
        let at = |i: usize| -> i64 {
            if i < offset {
                self.prev.map_or(0, i64::from)
            } else {
                i64::from(input[i - offset])
            }
        };
        let to = u64::from(self.to);
        let mut out = Vec::with_capacity(input.len() * self.to as usize / self.from as usize + 1);
        while ((self.pos / to) as usize) + 1 < len {
            let i = (self.pos / to) as usize;
            let frac = (self.pos % to) as i64;
            let to = to as i64;
            let num = at(i) * (to - frac) + at(i + 1) * frac;
            // Round half away from zero, in integers.
            let value = if num >= 0 {
                (num + to / 2) / to
            } else {
                (num - to / 2) / to
            };
            out.push(value.clamp(i16::MIN as i64, i16::MAX as i64) as i16);
            self.pos += u64::from(self.from);
        }
        self.prev = input.last().copied();
        self.pos -= (len as u64 - 1) * to;
        out
    }
}

/// G.711 µ-law to linear.
fn ulaw_to_linear(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = i32::from(byte & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }) as i16
}

/// Linear to G.711 µ-law.
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    let biased = magnitude.min(CLIP) + BIAS;
    // The highest set bit is between 7 and 14 here.
    let exponent = (15 - (biased as u16).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (biased >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

// ---------------------------------------------------------------------------------------------
// The backlog
// ---------------------------------------------------------------------------------------------

fn is_audio(event: &ProviderEvent) -> bool {
    matches!(event, ProviderEvent::Audio { .. })
}

/// Events waiting for room in the channel, with the bounds and drop accounting of the module doc.
struct Backlog {
    queue: VecDeque<ProviderEvent>,
    audio_samples: usize,
    max_audio_samples: usize,
    max_events: usize,
    dropped_audio_events: u64,
    dropped_audio_samples: u64,
    dropped_other_events: u64,
}

impl Backlog {
    fn new(max_audio_samples: usize, max_events: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            audio_samples: 0,
            max_audio_samples,
            max_events: max_events.max(1),
            dropped_audio_events: 0,
            dropped_audio_samples: 0,
            dropped_other_events: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && !self.has_dropped()
    }

    fn has_dropped(&self) -> bool {
        self.dropped_audio_events + self.dropped_other_events > 0
    }

    fn push(&mut self, event: ProviderEvent) {
        if let ProviderEvent::Interrupted { event_id } = event {
            self.purge_interrupted(event_id);
        }
        if let ProviderEvent::Audio { pcm, .. } = &event {
            self.audio_samples += pcm.len();
        }
        self.queue.push_back(event);
        // The newest event always stays: it is next in line once the consumer reads again, and a
        // single chunk larger than the bound must not be lost to a consumer that keeps up.
        while self.audio_samples > self.max_audio_samples {
            let older = self.queue.len() - 1;
            match self.queue.iter().take(older).position(is_audio) {
                Some(i) => self.drop_at(i),
                None => break,
            }
        }
        while self.queue.len() > self.max_events {
            let older = self.queue.len() - 1;
            let i = self
                .queue
                .iter()
                .take(older)
                .position(is_audio)
                .unwrap_or(0);
            self.drop_at(i);
        }
    }

    /// Drops one event and counts it for the `Dropped` notice.
    fn drop_at(&mut self, i: usize) {
        match self.queue.remove(i) {
            Some(ProviderEvent::Audio { pcm, .. }) => {
                self.audio_samples -= pcm.len();
                self.dropped_audio_events += 1;
                self.dropped_audio_samples += pcm.len() as u64;
            }
            Some(_) => self.dropped_other_events += 1,
            None => {}
        }
    }

    /// Audio of the interrupted turn that is still here, back to the current connection's start.
    fn purge_interrupted(&mut self, event_id: u64) {
        let mut i = self.queue.len();
        while i > 0 {
            i -= 1;
            match &self.queue[i] {
                ProviderEvent::Connected { .. } => break,
                ProviderEvent::Audio { event_id: id, pcm } if *id <= event_id => {
                    self.audio_samples -= pcm.len();
                    self.queue.remove(i);
                }
                _ => {}
            }
        }
    }

    fn pop(&mut self) -> Option<ProviderEvent> {
        if self.has_dropped() {
            let notice = ProviderEvent::Dropped {
                audio_events: self.dropped_audio_events,
                audio_samples: self.dropped_audio_samples,
                other_events: self.dropped_other_events,
            };
            self.dropped_audio_events = 0;
            self.dropped_audio_samples = 0;
            self.dropped_other_events = 0;
            return Some(notice);
        }
        let event = self.queue.pop_front()?;
        if let ProviderEvent::Audio { pcm, .. } = &event {
            self.audio_samples -= pcm.len();
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio(event_id: u64, n: usize) -> ProviderEvent {
        ProviderEvent::Audio {
            event_id,
            pcm: vec![event_id as i16; n],
        }
    }

    #[test]
    fn initiation_carries_prompt_and_variables_and_omits_an_absent_prompt() {
        let env = serde_json::json!({"name": "Ada", "age": 36, "vip": true});
        let conversation = Conversation::new("agent_1", AuthMethod::Public)
            .with_prompt("Be brief.")
            .with_variables_json(env.as_object().unwrap())
            .unwrap();
        assert_eq!(
            conversation.initiation_message(),
            json!({
                "type": "conversation_initiation_client_data",
                "conversation_config_override": {"agent": {"prompt": {"prompt": "Be brief."}}},
                "dynamic_variables": {"name": "Ada", "age": 36, "vip": true},
            })
        );
        let bare = Conversation::new("agent_1", AuthMethod::Public).initiation_message();
        assert!(bare.get("conversation_config_override").is_none(), "{bare}");
        assert_eq!(bare["dynamic_variables"], json!({}));

        let nested = serde_json::json!({"ok": "x", "bad": {"a": 1}});
        let refused = Conversation::new("a", AuthMethod::Public)
            .with_variables_json(nested.as_object().unwrap())
            .unwrap_err();
        assert!(refused.to_string().contains("\"bad\""), "{refused}");
    }

    #[test]
    fn endpoints_join_the_bases_and_settings_are_checked() {
        let config = ElevenLabsConfig {
            http_base: "http://127.0.0.1:9/prefix/".into(),
            ws_base: "ws://127.0.0.1:9".into(),
            api_key: Some(Secret::new("k")),
            ..Default::default()
        };
        let conversation = Conversation::new("agent a&b", AuthMethod::Signed);
        let endpoints = Endpoints::new(&config, &conversation).unwrap();
        assert_eq!(
            endpoints.public.as_str(),
            "ws://127.0.0.1:9/v1/convai/conversation?agent_id=agent+a%26b"
        );
        assert_eq!(
            endpoints.signed_url.as_str(),
            "http://127.0.0.1:9/prefix/v1/convai/conversation/get-signed-url?agent_id=agent+a%26b"
        );

        let no_key = ElevenLabsConfig {
            api_key: None,
            ..config.clone()
        };
        assert!(Endpoints::new(&no_key, &conversation).is_err());
        assert!(Endpoints::new(&no_key, &Conversation::new("a", AuthMethod::Public)).is_ok());
        let bad_ws = ElevenLabsConfig {
            ws_base: "https://api.elevenlabs.io".into(),
            ..config.clone()
        };
        assert!(Endpoints::new(&bad_ws, &conversation).is_err());
        assert!(Endpoints::new(&config, &Conversation::new(" ", AuthMethod::Signed)).is_err());
    }

    #[test]
    fn backoff_doubles_to_the_cap_within_its_upper_half() {
        let (initial, max) = (Duration::from_millis(200), Duration::from_secs(10));
        assert_eq!(backoff_delay(initial, max, 1, 0.999_999).as_millis(), 199);
        assert_eq!(
            backoff_delay(initial, max, 1, 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff_delay(initial, max, 3, 0.0),
            Duration::from_millis(400)
        );
        assert_eq!(backoff_delay(initial, max, 7, 1.0), max);
        assert_eq!(backoff_delay(initial, max, 500, 0.0), max / 2);
        assert_eq!(backoff_delay(initial, max, 0, 1.0), initial);
    }

    #[test]
    fn audio_formats() {
        assert_eq!(
            AudioFormat::parse("pcm_16000"),
            Some(AudioFormat::Pcm(16_000))
        );
        assert_eq!(
            AudioFormat::parse("pcm_44100"),
            Some(AudioFormat::Pcm(44_100))
        );
        assert_eq!(AudioFormat::parse("ulaw_8000"), Some(AudioFormat::Ulaw8000));
        for bad in ["mp3_44100_128", "pcm_", "pcm_0", "pcm_x", "ulaw_16000", ""] {
            assert_eq!(AudioFormat::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resampling_is_continuous_across_chunks() {
        // A ramp at 24 kHz is a ramp at 16 kHz: output k sits at input 1.5k.
        let ramp: Vec<i16> = (0..480).map(|i| i * 3).collect();
        let whole = Resampler::new(24_000, 16_000).process(&ramp);
        assert_eq!(&whole[..4], &[0, 5, 9, 14]); // 4.5 rounds away from zero
        let mut chunked = Resampler::new(24_000, 16_000);
        let pieces: Vec<i16> = ramp.chunks(7).flat_map(|c| chunked.process(c)).collect();
        assert_eq!(pieces, whole);
        assert!((318..=320).contains(&whole.len()), "{}", whole.len());
        // Upsampling 8 → 16 kHz doubles, interpolating midpoints.
        assert_eq!(
            Resampler::new(8_000, 16_000).process(&[0, 100, -100]),
            vec![0, 50, 100, 0]
        );
        assert_eq!(Resampler::new(16_000, 16_000).process(&[1, 2]), vec![1, 2]);
    }

    #[test]
    fn ulaw_round_trips_the_g711_table() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(ulaw_to_linear(0xf0), 120);
        for byte in 0..=255u8 {
            let linear = ulaw_to_linear(byte);
            // 0x7f is µ-law's negative zero: it comes back as 0xff.
            let expected = if byte == 0x7f { 0xff } else { byte };
            assert_eq!(
                linear_to_ulaw(linear),
                expected,
                "byte {byte:#x} → {linear}"
            );
        }
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
    }

    fn metadata(output: &str) -> String {
        json!({
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": {
                "conversation_id": "conv_1",
                "agent_output_audio_format": output,
                "user_input_audio_format": "pcm_16000",
            }
        })
        .to_string()
    }

    fn audio_message(event_id: Value, samples: &[i16]) -> String {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        json!({"type": "audio", "audio_event": {
            "audio_base_64": base64::engine::general_purpose::STANDARD.encode(bytes),
            "event_id": event_id,
        }})
        .to_string()
    }

    #[test]
    fn protocol_drops_interrupted_audio_and_answers_pings() {
        let mut protocol = Protocol::new();
        assert_eq!(
            protocol.on_server_message(&metadata("pcm_16000")),
            vec![Action::Emit(ProviderEvent::Connected {
                conversation_id: "conv_1".into()
            })]
        );
        assert_eq!(
            protocol.on_server_message(&audio_message(json!(1), &[1, -2, 3])),
            vec![Action::Emit(ProviderEvent::Audio {
                event_id: 1,
                pcm: vec![1, -2, 3]
            })]
        );
        let interruption = json!({"type": "interruption", "interruption_event": {"event_id": 2}});
        assert_eq!(
            protocol.on_server_message(&interruption.to_string()),
            vec![Action::Emit(ProviderEvent::Interrupted { event_id: 2 })]
        );
        assert!(protocol
            .on_server_message(&audio_message(json!("2"), &[7]))
            .is_empty());
        assert_eq!(
            protocol
                .on_server_message(&audio_message(json!(3), &[9]))
                .len(),
            1
        );
        let ping = json!({"type": "ping", "ping_event": {"event_id": 5, "ping_ms": null}});
        let pong = protocol.on_server_message(&ping.to_string());
        let [Action::Reply(pong)] = &pong[..] else {
            panic!("{pong:?}")
        };
        assert_eq!(
            serde_json::from_str::<Value>(pong).unwrap(),
            json!({"type": "pong", "event_id": 5})
        );
        for ignored in [
            json!({"type": "vad_score", "vad_score_event": {"vad_score": 0.9}}),
            json!({"type": "internal_tentative_agent_response"}),
            json!({"type": "something_new", "x": 1}),
        ] {
            assert!(protocol.on_server_message(&ignored.to_string()).is_empty());
        }
        let malformed = protocol.on_server_message(r#"{"type":"audio","audio_event":{}}"#);
        assert!(
            matches!(&malformed[..], [Action::Emit(ProviderEvent::Error(e))] if e.contains("event_id")),
            "{malformed:?}"
        );
        let tool = json!({"type": "client_tool_call", "client_tool_call": {
            "tool_name": "open_door", "tool_call_id": "t1", "parameters": {}}});
        let reply = protocol.on_server_message(&tool.to_string());
        let [Action::Reply(reply)] = &reply[..] else {
            panic!("{reply:?}")
        };
        let reply: Value = serde_json::from_str(reply).unwrap();
        assert_eq!(reply["type"], "client_tool_result");
        assert_eq!(reply["tool_call_id"], "t1");
        assert_eq!(reply["is_error"], true);
    }

    #[test]
    fn protocol_reports_an_unsupported_format_once_and_drops_its_audio() {
        let mut protocol = Protocol::new();
        let actions = protocol.on_server_message(&metadata("mp3_44100_128"));
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(&actions[1], Action::Emit(ProviderEvent::Error(e)) if e.contains("mp3")));
        assert!(protocol
            .on_server_message(&audio_message(json!(1), &[1, 2]))
            .is_empty());
    }

    #[test]
    fn backlog_bounds_audio_and_reports_what_it_dropped() {
        let mut backlog = Backlog::new(10, 100);
        backlog.push(ProviderEvent::Connected {
            conversation_id: "c".into(),
        });
        for id in 1..=4 {
            backlog.push(audio(id, 4));
        }
        // 16 samples > 10: the two oldest went.
        assert_eq!(
            backlog.pop(),
            Some(ProviderEvent::Dropped {
                audio_events: 2,
                audio_samples: 8,
                other_events: 0
            })
        );
        assert!(matches!(
            backlog.pop(),
            Some(ProviderEvent::Connected { .. })
        ));
        assert_eq!(backlog.pop(), Some(audio(3, 4)));
        assert_eq!(backlog.pop(), Some(audio(4, 4)));
        assert_eq!(backlog.pop(), None);
        assert!(backlog.is_empty());

        // A single chunk over the bound still goes to a consumer that keeps up.
        let mut tiny = Backlog::new(10, 100);
        tiny.push(audio(1, 50));
        assert_eq!(tiny.pop(), Some(audio(1, 50)));
        tiny.push(audio(2, 50));
        tiny.push(audio(3, 50));
        assert!(matches!(
            tiny.pop(),
            Some(ProviderEvent::Dropped {
                audio_events: 1,
                ..
            })
        ));
        assert_eq!(tiny.pop(), Some(audio(3, 50)));

        let mut few = Backlog::new(1000, 2);
        for text in ["a", "b", "c"] {
            few.push(ProviderEvent::UserTranscript(text.into()));
        }
        assert!(matches!(
            few.pop(),
            Some(ProviderEvent::Dropped {
                other_events: 1,
                ..
            })
        ));
        assert_eq!(few.pop(), Some(ProviderEvent::UserTranscript("b".into())));
    }

    #[test]
    fn backlog_purges_the_interrupted_turn_of_the_current_connection_only() {
        let mut backlog = Backlog::new(1000, 100);
        backlog.push(audio(5, 1)); // an earlier connection's
        backlog.push(ProviderEvent::Connected {
            conversation_id: "c2".into(),
        });
        for id in 1..=4 {
            backlog.push(audio(id, 1));
        }
        backlog.push(ProviderEvent::Interrupted { event_id: 3 });
        let left: Vec<_> = std::iter::from_fn(|| backlog.pop()).collect();
        assert_eq!(
            left,
            vec![
                audio(5, 1),
                ProviderEvent::Connected {
                    conversation_id: "c2".into()
                },
                audio(4, 1),
                ProviderEvent::Interrupted { event_id: 3 },
            ]
        );
        assert_eq!(backlog.audio_samples, 0);
    }

    #[test]
    fn error_details_are_read_from_elevenlabs_bodies() {
        assert_eq!(
            error_detail(br#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#),
            "invalid_api_key: Invalid API key"
        );
        assert_eq!(error_detail(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(
            error_detail(br#"{"detail":[{"loc":["query","agent_id"],"msg":"field required"}]}"#),
            "field required"
        );
        assert_eq!(error_detail(b"bad gateway"), "bad gateway");
        assert_eq!(error_detail(b""), "no body");
    }
}

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
//!
//! Layout: `types` (settings, conversation, events, errors), `protocol` (one connection's
//! messages, without I/O), `audio` (the agent's audio formats), `backlog` (what is kept while the
//! consumer or the connection is not there), `connection` (the task: signed URL, connecting,
//! backoff, the select loop), and here the handle.

pub mod alignment;
mod audio;
mod backlog;
mod connection;
mod protocol;
mod types;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use backlog::{MAX_BACKLOG_EVENTS, MAX_HELD_TURNS};
pub use connection::CLOSE_GRACE;
pub use types::{
    AuthMethod, Conversation, DynamicValue, ElevenLabsConfig, ElevenLabsError, ProviderEvent,
};

use connection::{Command, Endpoints};
use protocol::Outgoing;

/// Commands queued from the handle to the task before `Busy`.
const COMMAND_BUFFER: usize = 256;

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
    let task = connection::spawn(config, endpoints, conversation, http, command_rx, event_tx);
    Ok((
        ElevenLabsHandle {
            commands: command_tx,
            task: Some(task),
        },
        event_rx,
    ))
}

//! `FakeElevenLabs`: ElevenLabs' Conversational AI as a client sees it, on one loopback port the
//! way `api.elevenlabs.io` serves both parts:
//!
//! - `GET /v1/convai/conversation/get-signed-url?agent_id=…` (also the older `get_signed_url`)
//!   with `xi-api-key`: `{"signed_url": "ws://…/v1/convai/conversation?agent_id=…&
//!   conversation_signature=…"}`. A missing key is 401 `needs_authorization`, a wrong one 401
//!   `invalid_api_key`, both as `{"detail": {"status", "message"}}`; a missing `agent_id` is
//!   FastAPI's 422 `{"detail": [{"loc", "msg", "type"}]}`; an unknown agent 404.
//! - The conversation WebSocket at `/v1/convai/conversation?agent_id=…[&conversation_signature=…]`.
//!   Like the real service it completes the upgrade and then refuses with a close frame (1008,
//!   policy violation, and a reason): for an unknown agent, for a signed agent without a valid
//!   signature for it, and for a first message that is not `conversation_initiation_client_data`
//!   (or whose dynamic variables are not strings, numbers or booleans). The exact reason texts are
//!   this fake's; the shape (1008 plus a sentence) is ElevenLabs'. Otherwise it answers
//!   `conversation_initiation_metadata` with a fresh `conv_…` id and the agent's audio formats,
//!   records every client event, and sends what the test scripts through [`FakeConversation`].
//!
//! On demand it refuses the next upgrades with HTTP 503 (before the upgrade, as a load balancer
//! would), closes a conversation with a given code, or drops its TCP connection without a close
//! frame. Everything stops when the fake is stopped or dropped.
//!
//! (One file past 600 lines: one fake service; its HTTP half, its WebSocket half and the handles
//! tests script it with share one state, and each half is read against the other.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CONVERSATION_PATH: &str = "/v1/convai/conversation";
const SIGNED_URL_PATHS: [&str; 2] = [
    "/v1/convai/conversation/get-signed-url",
    "/v1/convai/conversation/get_signed_url",
];
/// How long the fake waits for a request head, or for the first WebSocket message.
const CLIENT_PATIENCE: Duration = Duration::from_secs(10);

/// An agent's access setting at ElevenLabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Reachable only through a signed URL.
    Signed,
}

#[derive(Debug, Clone)]
struct Agent {
    access: Access,
    output_format: String,
    input_format: String,
}

/// One call of the signed-URL endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedUrlRequest {
    pub agent_id: Option<String>,
    /// The `xi-api-key` header as received.
    pub api_key: Option<String>,
    pub status: u16,
}

/// How the fake answered one WebSocket upgrade.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Refused with HTTP 503 before upgrading (`refuse_next`).
    Refused,
    /// Upgraded, then closed with this code and reason (unknown agent, bad signature, bad init).
    Closed { code: u16, reason: String },
    /// Upgraded and a conversation started.
    Accepted,
}

/// One WebSocket upgrade request.
#[derive(Debug, Clone)]
pub struct UpgradeAttempt {
    /// When the request arrived; compare two to see a client's backoff.
    pub at: Instant,
    pub agent_id: Option<String>,
    /// It carried a `conversation_signature`.
    pub signed: bool,
    pub outcome: Outcome,
}

/// Everything a conversation's client sent, in the order it arrived.
#[derive(Debug, Clone, Default)]
pub struct ConversationRecord {
    pub conversation_id: String,
    pub agent_id: String,
    /// It was opened with a valid signed URL.
    pub signed: bool,
    /// `conversation_initiation_client_data`, exactly as received.
    pub init: Value,
    pub contextual_updates: Vec<String>,
    pub user_messages: Vec<String>,
    /// `event_id`s of the `pong`s.
    pub pongs: Vec<u64>,
    pub user_activity: usize,
    /// Every `user_audio_chunk`, decoded as s16le and concatenated.
    pub user_audio: Vec<i16>,
    /// Any other client event (a `client_tool_result`, say), or a text frame that was not JSON.
    pub other: Vec<Value>,
    /// The `type` of each client message in arrival order (`user_audio_chunk` for audio).
    pub received: Vec<String>,
    /// The client's close frame, if it sent one.
    pub client_close: Option<(u16, String)>,
    /// The connection is gone (either side ended it).
    pub ended: bool,
}

impl ConversationRecord {
    /// `conversation_config_override.agent.prompt.prompt`.
    pub fn prompt(&self) -> Option<&str> {
        self.init
            .pointer("/conversation_config_override/agent/prompt/prompt")
            .and_then(Value::as_str)
    }

    pub fn dynamic_variables(&self) -> Option<&serde_json::Map<String, Value>> {
        self.init
            .get("dynamic_variables")
            .and_then(Value::as_object)
    }
}

/// What a test asks a live conversation to do.
enum Script {
    Send(Message),
    Close(u16, String),
    Drop,
}

struct Slot {
    record: ConversationRecord,
    script: mpsc::UnboundedSender<Script>,
}

#[derive(Default)]
struct State {
    agents: BTreeMap<String, Agent>,
    /// Issued `conversation_signature`s → the agent each was issued for.
    signatures: BTreeMap<String, String>,
    refuse_next: usize,
    signed_url_requests: Vec<SignedUrlRequest>,
    attempts: Vec<UpgradeAttempt>,
    conversations: Vec<Slot>,
    /// Every connection task, so that stopping the fake ends them all.
    tasks: Vec<AbortHandle>,
}

struct Shared {
    api_key: String,
    port: u16,
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("fake ElevenLabs state lock poisoned by a panicking test")
    }

    /// Changes the state and wakes whoever waits on it.
    fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let result = change(&mut self.lock());
        self.changed.notify_waiters();
        result
    }

    /// Waits until `probe` finds something, or `timeout` passes.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between is not missed.
            notified.as_mut().enable();
            if let Some(found) = probe(&self.lock()) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

pub struct FakeElevenLabs {
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FakeElevenLabs {
    /// Starts the fake on a free loopback port; `api_key` is the one valid `xi-api-key`. Call
    /// from inside a Tokio (or actix) runtime.
    pub async fn start(api_key: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free loopback port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            port,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Self { shared, accept }
    }

    /// `http://127.0.0.1:PORT`, for `ElevenLabsConfig::http_base`.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// `ws://127.0.0.1:PORT`, for `ElevenLabsConfig::ws_base`.
    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}", self.shared.port)
    }

    /// Adds (or replaces) an agent speaking `pcm_16000` both ways.
    pub fn add_agent(&self, agent_id: &str, access: Access) {
        self.shared.update(|state| {
            state.agents.insert(
                agent_id.to_string(),
                Agent {
                    access,
                    output_format: "pcm_16000".into(),
                    input_format: "pcm_16000".into(),
                },
            )
        });
    }

    /// The formats the agent's metadata announces (`agent_output_audio_format`,
    /// `user_input_audio_format`). The fake sends whatever bytes a test gives it: matching the
    /// format is the test's business.
    pub fn set_audio_formats(&self, agent_id: &str, output: &str, input: &str) {
        self.shared.update(|state| {
            let agent = state
                .agents
                .get_mut(agent_id)
                .unwrap_or_else(|| panic!("set_audio_formats: no agent {agent_id:?}"));
            agent.output_format = output.to_string();
            agent.input_format = input.to_string();
        });
    }

    /// The next `n` WebSocket upgrades get HTTP 503.
    pub fn refuse_next(&self, n: usize) {
        self.shared.update(|state| state.refuse_next = n);
    }

    pub fn signed_url_requests(&self) -> Vec<SignedUrlRequest> {
        self.shared.lock().signed_url_requests.clone()
    }

    /// Every WebSocket upgrade request, refused ones included, in order.
    pub fn attempts(&self) -> Vec<UpgradeAttempt> {
        self.shared.lock().attempts.clone()
    }

    /// Every conversation that got as far as its initiation data, in order.
    pub fn conversations(&self) -> Vec<ConversationRecord> {
        self.shared
            .lock()
            .conversations
            .iter()
            .map(|slot| slot.record.clone())
            .collect()
    }

    /// The `index`-th conversation (0-based), once its initiation data has arrived. Panics after
    /// `timeout`.
    pub async fn conversation(&self, index: usize, timeout: Duration) -> FakeConversation {
        let found = self
            .shared
            .wait_until(timeout, |state| {
                (state.conversations.len() > index).then_some(())
            })
            .await;
        assert!(
            found.is_some(),
            "no conversation #{index} within {timeout:?}; attempts so far: {:?}",
            self.attempts()
        );
        FakeConversation {
            shared: self.shared.clone(),
            index,
        }
    }

    /// Waits for at least `n` upgrade attempts; panics after `timeout`.
    pub async fn wait_for_attempts(&self, n: usize, timeout: Duration) -> Vec<UpgradeAttempt> {
        self.shared
            .wait_until(timeout, |state| {
                (state.attempts.len() >= n).then(|| state.attempts.clone())
            })
            .await
            .unwrap_or_else(|| panic!("fewer than {n} upgrade attempts within {timeout:?}"))
    }

    /// Waits for at least `n` signed-URL requests; panics after `timeout`.
    pub async fn wait_for_signed_url_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<SignedUrlRequest> {
        self.shared
            .wait_until(timeout, |state| {
                (state.signed_url_requests.len() >= n).then(|| state.signed_url_requests.clone())
            })
            .await
            .unwrap_or_else(|| panic!("fewer than {n} signed-URL requests within {timeout:?}"))
    }

    /// Stops accepting, ends every connection, and waits until the port is let go.
    pub async fn stop(mut self) {
        self.abort_all();
        let _ = (&mut self.accept).await;
    }

    fn abort_all(&self) {
        self.accept.abort();
        for task in self.shared.lock().tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// A live conversation, scripted by the test: what the agent sends, and when the line goes.
pub struct FakeConversation {
    shared: Arc<Shared>,
    index: usize,
}

impl FakeConversation {
    fn script(&self, script: Script) {
        let sender = self.shared.lock().conversations[self.index].script.clone();
        // A conversation that already ended has nobody to send to; the test sees that in its
        // record.
        let _ = sender.send(script);
    }

    /// Any server event, as given.
    pub fn send_json(&self, event: Value) {
        self.script(Script::Send(Message::text(event.to_string())))
    }

    /// An `audio` event carrying `samples` as s16le.
    pub fn send_audio(&self, event_id: u64, samples: &[i16]) {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.send_audio_bytes(event_id, &bytes);
    }

    /// An `audio` event carrying `bytes` as they are (µ-law, say).
    pub fn send_audio_bytes(&self, event_id: u64, bytes: &[u8]) {
        self.send_json(json!({
            "type": "audio",
            "audio_event": {
                "audio_base_64": base64::engine::general_purpose::STANDARD.encode(bytes),
                "event_id": event_id,
            }
        }));
    }

    /// An `audio` event of `samples` (s16le at `rate`, the agent's output format) saying `text`, with the character alignment
    /// ElevenLabs sends beside it (`chars`, `char_start_times_ms`, `char_durations_ms`, from
    /// the start of this event's audio): here the characters share its duration evenly.
    pub fn send_spoken(&self, event_id: u64, samples: &[i16], rate: u32, text: &str) {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let total_ms = samples.len() as u64 * 1000 / u64::from(rate);
        let each = total_ms / chars.len().max(1) as u64;
        let starts: Vec<u64> = (0..chars.len() as u64).map(|i| i * each).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.send_json(json!({
            "type": "audio",
            "audio_event": {
                "audio_base_64": base64::engine::general_purpose::STANDARD.encode(bytes),
                "event_id": event_id,
                "alignment": {
                    "chars": chars,
                    "char_start_times_ms": starts,
                    "char_durations_ms": vec![each; chars.len()],
                },
            }
        }));
    }

    pub fn interrupt(&self, event_id: u64) {
        self.send_json(json!({
            "type": "interruption",
            "interruption_event": { "event_id": event_id }
        }));
    }

    pub fn ping(&self, event_id: u64, ping_ms: Option<u64>) {
        self.send_json(json!({
            "type": "ping",
            "ping_event": { "event_id": event_id, "ping_ms": ping_ms }
        }));
    }

    pub fn agent_response(&self, text: &str) {
        self.send_json(json!({
            "type": "agent_response",
            "agent_response_event": { "agent_response": text }
        }));
    }

    pub fn agent_response_correction(&self, original: &str, corrected: &str) {
        self.send_json(json!({
            "type": "agent_response_correction",
            "agent_response_correction_event": {
                "original_agent_response": original,
                "corrected_agent_response": corrected,
            }
        }));
    }

    pub fn user_transcript(&self, text: &str) {
        self.send_json(json!({
            "type": "user_transcript",
            "user_transcription_event": { "user_transcript": text }
        }));
    }

    /// Ends the conversation with a close frame.
    pub fn close(&self, code: u16, reason: &str) {
        self.script(Script::Close(code, reason.to_string()));
    }

    /// Drops the TCP connection without a close frame, as a network failure would.
    pub fn drop_connection(&self) {
        self.script(Script::Drop);
    }

    pub fn record(&self) -> ConversationRecord {
        self.shared.lock().conversations[self.index].record.clone()
    }

    /// Waits until the record satisfies `done`; panics naming `what` after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&ConversationRecord) -> bool,
    ) -> ConversationRecord {
        let index = self.index;
        self.shared
            .wait_until(timeout, |state| {
                let record = &state.conversations[index].record;
                done(record).then(|| record.clone())
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{what}: not within {timeout:?}; conversation so far: {:?}",
                    self.record()
                )
            })
    }
}

/// `n` samples of a sine at `freq` Hz sampled at `rate`, peaking at `amplitude`.
pub fn sine(n: usize, freq: f64, rate: u32, amplitude: i16) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            (amplitude as f64 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task = tokio::spawn(serve_connection(shared.clone(), stream));
        shared.lock().tasks.push(task.abort_handle());
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    /// Lower-cased names.
    headers: BTreeMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads the request head (the client sends nothing more before an answer).
async fn read_head(stream: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 << 10 {
            return None;
        }
        let n = tokio::time::timeout(CLIENT_PATIENCE, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query: url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers,
    })
}

async fn respond(stream: &mut TcpStream, status: u16, reason: &str, body: &Value) {
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection(shared: Arc<Shared>, mut stream: TcpStream) {
    let Some(request) = read_head(&mut stream).await else {
        return;
    };
    if SIGNED_URL_PATHS.contains(&request.path.as_str()) {
        signed_url(&shared, &mut stream, &request).await;
    } else if request.path == CONVERSATION_PATH {
        conversation(shared, stream, request).await;
    } else {
        respond(
            &mut stream,
            404,
            "Not Found",
            &json!({"detail": "Not Found"}),
        )
        .await;
    }
}

async fn signed_url(shared: &Shared, stream: &mut TcpStream, request: &Request) {
    let agent_id = request.query.get("agent_id").cloned();
    let api_key = request.header("xi-api-key").map(str::to_string);
    let (status, reason, body) = if request.method != "GET" {
        (
            405,
            "Method Not Allowed",
            json!({"detail": "Method Not Allowed"}),
        )
    } else if api_key.is_none() {
        (
            401,
            "Unauthorized",
            json!({"detail": {
                "status": "needs_authorization",
                "message": "Neither authorization header nor xi-api-key received, please provide one.",
            }}),
        )
    } else if api_key.as_deref() != Some(shared.api_key.as_str()) {
        (
            401,
            "Unauthorized",
            json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}),
        )
    } else {
        match &agent_id {
            None => (
                422,
                "Unprocessable Entity",
                json!({"detail": [{
                    "loc": ["query", "agent_id"],
                    "msg": "field required",
                    "type": "value_error.missing",
                }]}),
            ),
            Some(id) if !shared.lock().agents.contains_key(id) => (
                404,
                "Not Found",
                json!({"detail": {
                    "status": "agent_not_found",
                    "message": format!("Agent {id} not found"),
                }}),
            ),
            Some(id) => {
                let signature = random_token(40);
                shared.update(|state| state.signatures.insert(signature.clone(), id.clone()));
                let mut url = url::Url::parse(&format!(
                    "ws://127.0.0.1:{}{CONVERSATION_PATH}",
                    shared.port
                ))
                .expect("a loopback URL parses");
                url.query_pairs_mut()
                    .append_pair("agent_id", id)
                    .append_pair("conversation_signature", &signature);
                (200, "OK", json!({"signed_url": url.as_str()}))
            }
        }
    };
    shared.update(|state| {
        state.signed_url_requests.push(SignedUrlRequest {
            agent_id,
            api_key,
            status,
        })
    });
    respond(stream, status, reason, &body).await;
}

// ---------------------------------------------------------------------------------------------
// The conversation WebSocket
// ---------------------------------------------------------------------------------------------

async fn conversation(shared: Arc<Shared>, mut stream: TcpStream, request: Request) {
    let key = request.header("sec-websocket-key").map(str::to_string);
    let upgrade = request
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true, "GET") = (key, upgrade, request.method.as_str()) else {
        respond(
            &mut stream,
            400,
            "Bad Request",
            &json!({"detail": "WebSocket upgrade expected"}),
        )
        .await;
        return;
    };
    let agent_id = request.query.get("agent_id").cloned();
    let signature = request.query.get("conversation_signature").cloned();
    let attempt = |outcome| UpgradeAttempt {
        at: Instant::now(),
        agent_id: agent_id.clone(),
        signed: signature.is_some(),
        outcome,
    };
    let refused = shared.update(|state| {
        let refused = state.refuse_next > 0;
        if refused {
            state.refuse_next -= 1;
            state.attempts.push(attempt(Outcome::Refused));
        }
        refused
    });
    if refused {
        respond(
            &mut stream,
            503,
            "Service Unavailable",
            &json!({"detail": "Service Unavailable"}),
        )
        .await;
        return;
    }

    let accept = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if stream.write_all(accept.as_bytes()).await.is_err() {
        return;
    }
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;

    // Which agent, and may this client talk to it?
    let verdict = {
        let state = shared.lock();
        match agent_id.as_ref().map(|id| (id, state.agents.get(id))) {
            None => Err("agent_id is required".to_string()),
            Some((id, None)) => Err(format!("Agent {id} does not exist")),
            Some((id, Some(agent))) => {
                let signed_for_it = signature
                    .as_ref()
                    .and_then(|s| state.signatures.get(s))
                    .is_some_and(|signed_agent| signed_agent == id);
                if signature.is_some() && !signed_for_it {
                    Err("Invalid conversation signature".to_string())
                } else if agent.access == Access::Signed && !signed_for_it {
                    Err(format!(
                        "Agent {id} requires authorization: use a signed URL"
                    ))
                } else {
                    Ok((id.clone(), agent.clone(), signed_for_it))
                }
            }
        }
    };
    let (agent_id, agent, signed) = match verdict {
        Ok(found) => found,
        Err(reason) => {
            shared.update(|state| {
                state.attempts.push(attempt(Outcome::Closed {
                    code: 1008,
                    reason: reason.clone(),
                }))
            });
            close(&mut ws, 1008, &reason).await;
            return;
        }
    };

    // The client speaks first.
    let first = tokio::time::timeout(CLIENT_PATIENCE, ws.next()).await;
    let init = match first {
        Ok(Some(Ok(Message::Text(text)))) => check_init(&text),
        Ok(Some(Ok(_))) => Err(NOT_INIT.to_string()),
        // Gone, or silent: nothing to tell it.
        _ => {
            shared.update(|state| {
                state.attempts.push(attempt(Outcome::Closed {
                    code: 1006,
                    reason: "the client sent nothing".into(),
                }))
            });
            return;
        }
    };
    let init = match init {
        Ok(init) => init,
        Err(reason) => {
            shared.update(|state| {
                state.attempts.push(attempt(Outcome::Closed {
                    code: 1008,
                    reason: reason.clone(),
                }))
            });
            close(&mut ws, 1008, &reason).await;
            return;
        }
    };

    let conversation_id = format!("conv_{}", random_token(24));
    let (script_tx, mut script) = mpsc::unbounded_channel();
    let index = shared.update(|state| {
        state.attempts.push(attempt(Outcome::Accepted));
        state.conversations.push(Slot {
            record: ConversationRecord {
                conversation_id: conversation_id.clone(),
                agent_id,
                signed,
                init,
                received: vec!["conversation_initiation_client_data".into()],
                ..Default::default()
            },
            script: script_tx,
        });
        state.conversations.len() - 1
    });
    let metadata = json!({
        "type": "conversation_initiation_metadata",
        "conversation_initiation_metadata_event": {
            "conversation_id": conversation_id,
            "agent_output_audio_format": agent.output_format,
            "user_input_audio_format": agent.input_format,
        }
    });
    let (mut sink, mut stream) = ws.split();
    if sink.send(Message::text(metadata.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                command = script.recv() => match command {
                    Some(Script::Send(message)) => {
                        if sink.send(message).await.is_err() {
                            break;
                        }
                    }
                    Some(Script::Close(code, reason)) => {
                        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        break;
                    }
                    Some(Script::Drop) | None => break,
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        shared.update(|state| record(&mut state.conversations[index].record, &text));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        shared.update(|state| {
                            state.conversations[index].record.client_close = Some(
                                frame.map_or((1005, String::new()), |f| {
                                    (u16::from(f.code), f.reason.to_string())
                                }),
                            )
                        });
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    }
    // Dropping both halves drops the socket.
    drop((sink, stream));
    shared.update(|state| state.conversations[index].record.ended = true);
}

const NOT_INIT: &str = "The first message must be conversation_initiation_client_data";

/// The initiation data as ElevenLabs would take it, or why it closes the conversation.
fn check_init(text: &str) -> Result<Value, String> {
    let init: Value = serde_json::from_str(text).map_err(|_| NOT_INIT.to_string())?;
    if init.get("type").and_then(Value::as_str) != Some("conversation_initiation_client_data") {
        return Err(NOT_INIT.into());
    }
    match init.get("dynamic_variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(variables)) => {
            for (name, value) in variables {
                if !(value.is_string() || value.is_number() || value.is_boolean()) {
                    return Err(format!(
                        "Invalid dynamic variable {name}: only strings, numbers and booleans are allowed"
                    ));
                }
            }
        }
        Some(_) => return Err("dynamic_variables must be an object".into()),
    }
    match init.get("conversation_config_override") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(init),
        Some(_) => Err("conversation_config_override must be an object".into()),
    }
}

/// Files one client message in the record.
fn record(record: &mut ConversationRecord, text: &str) {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        record.received.push("(not JSON)".into());
        record.other.push(Value::String(text.to_string()));
        return;
    };
    if let Some(chunk) = message.get("user_audio_chunk").and_then(Value::as_str) {
        record.received.push("user_audio_chunk".into());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(chunk)
            .expect("user_audio_chunk is base64");
        record.user_audio.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        return;
    }
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("(no type)")
        .to_string();
    let text_field = || {
        message
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match kind.as_str() {
        "contextual_update" => record.contextual_updates.push(text_field()),
        "user_message" => record.user_messages.push(text_field()),
        "user_activity" => record.user_activity += 1,
        "pong" => record.pongs.push(
            message
                .get("event_id")
                .and_then(Value::as_u64)
                .expect("a pong carries the ping's event_id"),
        ),
        _ => record.other.push(message.clone()),
    }
    record.received.push(kind);
}

async fn close(ws: &mut WebSocketStream<TcpStream>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    // Let the client answer, as a server completing the closing handshake does.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
